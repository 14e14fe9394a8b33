import gzip
import shutil
import struct
import tracemalloc
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MNIST_DIR, needs_mnist

from hdetach import settings
from hdetach.experiments.cli import main
from hdetach.experiments.tasks import mnist
from hdetach.experiments.tasks.mnist import (
    MIRRORS,
    DataError,
    MNISTTask,
    load_mnist,
    pixel_permutation,
)

# In CI the repository sits beside shared/; the data are optional, never downloaded here.


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def write_gzip_of_zeros(path: Path, n_bytes: int) -> Path:
    """A gzip bomb: ``n_bytes`` zeros compressed about a thousandfold, built in pieces."""
    packer, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(n_bytes // len(zeros)):
            f.write(packer.compress(zeros))
        f.write(packer.flush())
    return path


def test_parse_idx():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">HBB3I", 0, 8, 3, 2, 3, 4) + arr.tobytes()
    assert np.array_equal(mnist._parse_idx(raw), arr)
    with pytest.raises(DataError, match="IDX"):
        mnist._parse_idx(struct.pack(">HBB1I", 0, 0x0D, 1, 1) + b"\0\0\0\0")


def test_missing_data_is_a_clear_error(tmp_path, no_network):
    with pytest.raises(DataError, match="files missing.*hdetach data mnist"):
        load_mnist(tmp_path, fetch=False)
    with pytest.raises(DataError, match="could not be downloaded.*hdetach data mnist") as e:
        load_mnist(tmp_path / "sub")
    for mirror in MIRRORS:  # every mirror was tried, and its failure is named
        assert f"{mirror}train-images-idx3-ubyte.gz: network disabled" in str(e.value)
    assert not (tmp_path / "sub").exists()  # a failed download leaves nothing behind


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HDETACH_DATA", str(tmp_path))
    assert settings.mnist_data_dir() == tmp_path / "mnist"
    monkeypatch.delenv("HDETACH_DATA")
    assert settings.mnist_data_dir().name == "mnist"


@needs_mnist
def test_load_and_split():
    a = load_mnist(MNIST_DIR, fetch=False)
    assert a["train_images"].shape == (60000, 784) and a["test_images"].shape == (10000, 784)
    assert a["train_labels"].shape == (60000,) and a["train_labels"].max() == 9
    task = MNISTTask(MNIST_DIR, None, 50_000, 10_000, 10_000)
    assert [task.size(s) for s in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    # validation is the last 10k training images
    assert torch.equal(task.data["val"][0][0], torch.from_numpy(a["train_images"][50_000]))
    x, y = task.batch("train", torch.tensor([0, 1]))
    assert x.shape == (2, 784, 1) and x.min() >= 0 and x.max() <= 1 and y.tolist() == [5, 0]


@needs_mnist
def test_metrics_stay_on_the_device_as_tensors():
    """The loop reads metrics off the device only when it logs: no float per step."""
    task = MNISTTask(MNIST_DIR, None, 10, 10, 10)
    out = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]], requires_grad=True)
    loss, metrics = task.loss_and_metrics(out, torch.tensor([1, 2]))
    assert loss.requires_grad
    for value in metrics.values():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad
    assert metrics["acc"].item() == 0.5


@needs_mnist
def test_permuted_mnist_uses_its_own_fixed_permutation():
    assert torch.equal(pixel_permutation(0), pixel_permutation(0))
    assert not torch.equal(pixel_permutation(0), pixel_permutation(1))
    seq = MNISTTask(MNIST_DIR, None, 10, 10, 10)
    perm = MNISTTask(MNIST_DIR, 7, 10, 10, 10)
    xs, _ = seq.batch("test", torch.arange(3))
    xp, _ = perm.batch("test", torch.arange(3))
    assert torch.equal(xp, xs[:, pixel_permutation(7)])


@needs_mnist
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_file_is_caught(tmp_path, damage, no_network):
    for f in MNIST_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(target.read_bytes()))
    if damage == "flip":  # a valid gzip of the wrong contents: only the MD5 can tell
        raw[100] ^= 1
        target.write_bytes(gzip.compress(bytes(raw)))
    else:  # a cut-off download
        target.write_bytes(target.read_bytes()[:500])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*(corrupt|unreadable)"):
        load_mnist(tmp_path)


def test_known_sizes_are_the_real_files():
    assert {name: size for name, (_, size) in mnist.FILES.items()} == {
        "train-images-idx3-ubyte": 28 * 28 * 60_000 + 16,
        "train-labels-idx1-ubyte": 60_000 + 8,
        "t10k-images-idx3-ubyte": 28 * 28 * 10_000 + 16,
        "t10k-labels-idx1-ubyte": 10_000 + 8,
    }


def test_gzip_bomb_is_stopped_at_the_known_size(tmp_path):
    bomb = write_gzip_of_zeros(tmp_path / "t10k-labels-idx1-ubyte.gz", 100 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(
            DataError, match="corrupt: it decompresses to more than the 10008 bytes"
        ):
            mnist._read_verified(bomb, "t10k-labels-idx1-ubyte")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # decompressing it all would take 100 MiB


def test_oversized_uncompressed_file_is_rejected(tmp_path):
    big = tmp_path / "t10k-labels-idx1-ubyte"
    big.write_bytes(bytes(10_009))
    with pytest.raises(DataError, match="more than the 10008 bytes"):
        mnist._read_verified(big, "t10k-labels-idx1-ubyte")


@needs_mnist
def test_cli_data_rejects_a_bomb_in_one_line(tmp_path, capsys, no_network):
    for f in MNIST_DIR.glob("*.gz"):
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    write_gzip_of_zeros(tmp_path / "t10k-labels-idx1-ubyte.gz", 100 << 20)
    with pytest.raises(SystemExit) as e:
        main(["data", "mnist", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "t10k-labels-idx1-ubyte.gz is corrupt: it decompresses to more than" in err
