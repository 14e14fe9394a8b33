"""MNIST downloads end to end, from mirrors served on 127.0.0.1 by the standard library."""

import gzip
import http.server
import socket
import threading
import zlib
from pathlib import Path

import pytest
from helpers import MNIST_DIR, needs_mnist

from hdetach.experiments.tasks import mnist
from hdetach.experiments.tasks.mnist import FILES, DataError, download, load_mnist

pytestmark = needs_mnist

IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


class Mirror(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` ({name: bytes}) under any folder, as a faulty mirror might.

    The first ``server.cuts`` answers announce the whole body but stop halfway, with a
    Content-Length or chunked (``server.chunked``); ``server.ranges`` honours Range.
    """

    protocol_version = "HTTP/1.1"  # chunked transfer needs it

    def do_GET(self):
        server, name = self.server, self.path.rsplit("/", 1)[-1]
        server.requests.append((name, self.headers.get("Range")))
        self.close_connection = True
        if name not in server.files:
            self.send_error(404)
            return
        body, start = server.files[name], 0
        if server.ranges and self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        if server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if server.chunked:
            self.wfile.write(f"{len(rest):x}\r\n".encode())
        if server.cuts:
            server.cuts -= 1
            self.wfile.write(rest[: len(rest) // 2])  # then the connection closes
            return
        self.wfile.write(rest)
        if server.chunked:
            self.wfile.write(b"\r\n0\r\n\r\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def real_files():
    return {f.name: f.read_bytes() for f in MNIST_DIR.glob("*.gz")}


@pytest.fixture
def serve():
    """serve(files, cuts=0, ranges=False, chunked=False) -> a running mirror; .url is its folder."""
    servers = []

    def start(files, cuts=0, ranges=False, chunked=False):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
        server.files, server.cuts, server.ranges, server.chunked = files, cuts, ranges, chunked
        server.requests = []
        server.url = f"http://127.0.0.1:{server.server_address[1]}/mnist/"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _all_but(data_dir: Path, missing: str) -> Path:
    """``data_dir`` holding links to the real files except ``missing``."""
    data_dir.mkdir()
    for f in MNIST_DIR.glob("*.gz"):
        if f.name != missing:
            (data_dir / f.name).symlink_to(f)
    return data_dir


def _gzip_of_zeros(n_bytes: int) -> bytes:
    """A gzip bomb: ``n_bytes`` zeros, compressed about a thousandfold, built in pieces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [
        packer.compress(zeros[: min(len(zeros), n_bytes - i)])
        for i in range(0, n_bytes, len(zeros))
    ]
    return b"".join(parts) + packer.flush()


def test_download_all_four_files(tmp_path, serve, real_files):
    good = serve(real_files)
    served = download(tmp_path / "mnist", mirrors=(good.url,))
    assert served == {f"{name}.gz": f"{good.url}{name}.gz" for name in FILES}
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(real_files)
    a = load_mnist(tmp_path / "mnist", fetch=False)  # verifies every file again
    assert a["train_images"].shape == (60000, 784)
    assert download(tmp_path / "mnist", mirrors=(good.url,)) == {}  # nothing left to fetch


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_dropped_connection_moves_to_the_next_mirror(tmp_path, serve, real_files, framing):
    cutting = serve(real_files, cuts=99, chunked=framing == "chunked")  # ignores Range
    good = serve(real_files)
    data_dir, half = _all_but(tmp_path / "d", IMAGES), len(real_files[IMAGES]) // 2
    assert download(data_dir, mirrors=(cutting.url, good.url)) == {IMAGES: good.url + IMAGES}
    # the cut mirror was asked to resume from the bytes received, sent the whole file
    # again (it ignores Range), and was given up after 3 tries
    ranges = [r for _, r in cutting.requests]
    assert ranges[0] is None and len(ranges) == 4
    assert all(0 < int(r.removeprefix("bytes=").rstrip("-")) <= half for r in ranges[1:])
    assert (data_dir / IMAGES).read_bytes() == real_files[IMAGES]
    assert not list(data_dir.glob("*.part"))


def test_dropped_connection_resumes_with_a_range_request(tmp_path, serve, real_files):
    flaky = serve(real_files, cuts=1, ranges=True)
    data_dir = _all_but(tmp_path / "d", IMAGES)
    assert download(data_dir, mirrors=(flaky.url,)) == {IMAGES: flaky.url + IMAGES}
    half = len(real_files[IMAGES]) // 2
    assert flaky.requests == [(IMAGES, None), (IMAGES, f"bytes={half}-")]
    assert (data_dir / IMAGES).read_bytes() == real_files[IMAGES]


@pytest.mark.parametrize("fault", ["flipped byte", "gzip bomb"])
def test_bad_file_moves_to_the_next_mirror(tmp_path, serve, real_files, fault):
    raw = bytearray(gzip.decompress(real_files[LABELS]))
    raw[100] ^= 1
    bad_file = gzip.compress(bytes(raw)) if fault == "flipped byte" else _gzip_of_zeros(5 << 20)
    bad, good = serve({**real_files, LABELS: bad_file}), serve(real_files)
    data_dir = _all_but(tmp_path / "d", LABELS)
    assert download(data_dir, mirrors=(bad.url, good.url)) == {LABELS: good.url + LABELS}
    assert (data_dir / LABELS).read_bytes() == real_files[LABELS]


def test_all_mirrors_failing_is_one_clear_error(tmp_path, serve, real_files):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/mnist/"
    cutting = serve(real_files, cuts=99)
    corrupt = serve({LABELS: gzip.compress(b"not mnist")})
    empty = serve({})
    huge = serve({LABELS: _gzip_of_zeros(100 << 20)})  # over the transfer cap before unzipping
    data_dir = _all_but(tmp_path / "d", LABELS)
    mirrors = (cutting.url, corrupt.url, empty.url, huge.url, closed)
    with pytest.raises(DataError) as caught:
        download(data_dir, mirrors=mirrors)
    message = str(caught.value)
    assert "\n" not in message and LABELS in message and f"--data-dir {data_dir}" in message
    reasons = message.split(" (", 1)[1].split("; ")
    for mirror, reason in zip(mirrors, reasons, strict=False):
        assert reason.startswith(mirror + LABELS + ": ")
    assert "connection closed after 2258 of 4517 bytes" in reasons[0]
    assert "MD5" in reasons[1] and "404" in reasons[2]
    cap = mnist._max_gzip_size(FILES[LABELS.removesuffix(".gz")][1])
    assert f"more than the {cap} expected" in reasons[3] and "refused" in reasons[4]
    # nothing half-written is left, least of all under the real name
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(set(real_files) - {LABELS})
