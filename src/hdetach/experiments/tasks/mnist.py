"""Sequential (pixel) MNIST and permuted MNIST, read from the standard IDX files.

No torchvision: the four gzipped IDX files are read with the standard library,
downloaded from public mirrors when missing, and verified by the MD5 of their
*decompressed* bytes (gzip wrappers differ between mirrors, the contents do not).
Decompression stops one byte past each file's known size, so a gzip bomb costs
no more memory than the real file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hdetach.experiments.data.download import DataError, fetch_first
from hdetach.experiments.tasks.definitions import (
    MNIST_SPLITS,
    MNIST_WIDTHS,
    PermutedMNIST,
    PixelMNIST,
)
from hdetach.experiments.tasks.permutation import permutation_checksum, pixel_permutation
from hdetach.settings import mnist_data_dir

# MD5 and size in bytes of the decompressed official files.
FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}
# Tried in order; all serve https (yann.lecun.com, the original, often answers 403).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)
N_TRAIN = MNIST_SPLITS["n_train"]  # the first N_TRAIN training images train, the rest validate


def _fix_hint(data_dir: Path) -> str:
    return (
        f"run `hdetach data mnist --data-dir {data_dir}` where the network is reachable, "
        f"or put the four MNIST *-ubyte.gz files in {data_dir}"
    )


def _find(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    return None


def _read_verified(path: Path, name: str) -> bytes:
    """Decompressed bytes of ``path``, gzipped or not; DataError unless they are ``name``'s.

    The error says what is wrong ("unreadable ...", "corrupt: ..."); callers say where.
    """
    md5, size = FILES[name]
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read(size + 1)  # decompresses no further than one byte too many
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"unreadable ({e})") from None
    if len(raw) > size:
        raise DataError(f"corrupt: it decompresses to more than the {size} bytes of {name}")
    if hashlib.md5(raw).hexdigest() != md5:
        raise DataError("corrupt: the MD5 of its decompressed bytes does not match")
    return raw


def _max_gzip_size(size: int) -> int:
    """More bytes than a gzip of ``size`` bytes can take (deflate adds under 0.1%)."""
    return size + size // 1000 + 1024


def download(data_dir: Path, mirrors: Sequence[str] = MIRRORS) -> dict[str, str]:
    """Fetch the files missing in ``data_dir``, each from the first mirror that serves it verified.

    Returns {file name: url it came from}. DataError names the file, every mirror's
    failure and the fix.
    """
    served = {}
    for name in FILES:
        if _find(data_dir, name) is not None:
            continue
        try:
            served[f"{name}.gz"] = fetch_first(
                [f"{mirror}{name}.gz" for mirror in mirrors],
                data_dir / f"{name}.gz",
                check=functools.partial(_read_verified, name=name),
                max_bytes=_max_gzip_size(FILES[name][1]),
            )
        except DataError as e:
            raise DataError(
                f"MNIST not found in {data_dir} and could not be downloaded: {e}; "
                + _fix_hint(data_dir)
            ) from None
    return served


def _parse_idx(raw: bytes) -> np.ndarray:
    """An IDX file of unsigned bytes -> ndarray of its declared shape."""
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError("not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    # copy: torch tensors made from it must own writable memory
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def load_mnist(data_dir: str | Path | None = None, fetch: bool = True) -> dict[str, np.ndarray]:
    """Verified MNIST arrays: train/test images (N, 784) uint8 and labels (N,) uint8.

    Keys: ``train_images, train_labels, test_images, test_labels``. Missing files
    are downloaded when ``fetch`` is true; anything missing or corrupt raises DataError.
    """
    data_dir = Path(data_dir) if data_dir is not None else mnist_data_dir()
    missing = [n for n in FILES if _find(data_dir, n) is None]
    if missing:
        if not fetch:
            raise DataError(
                f"MNIST files missing in {data_dir}: {', '.join(missing)}; " + _fix_hint(data_dir)
            )
        download(data_dir)
    arrays = {}
    for name in FILES:
        split, kind = name.split("-")[:2]
        path = _find(data_dir, name)
        try:
            raw = _read_verified(path, name)
        except DataError as e:
            raise DataError(f"MNIST file {path} is {e}; delete it and re-fetch") from None
        arr = _parse_idx(raw)
        key = f"{'train' if split == 'train' else 'test'}_{kind}"
        arrays[key] = arr.reshape(arr.shape[0], -1) if kind == "images" else arr
    return arrays


class MNISTTask(PixelMNIST):
    """Pixel-by-pixel MNIST: 784 steps of one pixel in [0, 1]; class from the last output.

    ``perm_seed=None`` is sequential MNIST (row-major), an integer gives permuted MNIST
    (with ``authors_draw``, the permutation the authors' script draws from that seed).
    """

    input_size, output_size = MNIST_WIDTHS

    def __init__(
        self,
        data_dir: str | Path | None,
        perm_seed: int | None,
        n_train: int,
        n_val: int,
        n_test: int,
        authors_draw: bool = False,
    ):
        a = load_mnist(data_dir)
        images, labels = torch.from_numpy(a["train_images"]), torch.from_numpy(a["train_labels"])
        self.data = {
            "train": (images[:N_TRAIN][:n_train], labels[:N_TRAIN][:n_train]),
            "val": (images[N_TRAIN:][:n_val], labels[N_TRAIN:][:n_val]),
            "test": (
                torch.from_numpy(a["test_images"])[:n_test],
                torch.from_numpy(a["test_labels"])[:n_test],
            ),
        }
        self.perm = None if perm_seed is None else pixel_permutation(perm_seed, authors_draw)

    @classmethod
    def from_config(cls, cfg: Any) -> MNISTTask:
        return cls(cfg.data_dir, None, cfg.n_train, cfg.n_val, cfg.n_test)

    def size(self, split: str) -> int:
        return self.data[split][1].shape[0]

    def batch(self, split: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.data[split]
        x = images[idx].float() / 255.0
        if self.perm is not None:
            x = x[:, self.perm]
        return x.unsqueeze(-1), labels[idx].long()

    def loss_and_metrics(self, out, y):
        loss = F.cross_entropy(out, y)
        acc = (out.argmax(-1) == y).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc}  # on the device: read when logging


class PermutedMNISTTask(MNISTTask, PermutedMNIST):
    """Permuted MNIST: the images of ``MNISTTask`` read in the permutation's order."""

    @classmethod
    def resolve(cls, d: dict[str, Any]) -> None:
        """``PermutedMNIST.resolve``, and the permutation's checksum in the config."""
        super().resolve(d)
        perm = pixel_permutation(d["perm_seed"], authors_draw=d["perm_from_seed"])
        d["perm_checksum"] = permutation_checksum(perm)

    @classmethod
    def from_config(cls, cfg: Any) -> PermutedMNISTTask:
        return cls(
            cfg.data_dir, cfg.perm_seed, cfg.n_train, cfg.n_val, cfg.n_test, cfg.perm_from_seed
        )
