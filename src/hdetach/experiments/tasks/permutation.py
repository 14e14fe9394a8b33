"""Permuted MNIST's pixel orders: which permutation a run uses, and its fingerprint.

Two ways to choose it. The fixed one (``--perm-seed N``) draws a permutation from its own
seed with torch, so every run of a study sees the same pixel order. The authors' script
instead seeds NumPy's global generator with the run's seed and draws
``np.random.permutation(784)``, so their seeds vary the permutation as well as the
weights; ``--perm-from-seed`` does exactly that (same generator, same draw), so that a run
of seed s sees the permutation the authors' seed s saw.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from hdetach.experiments.tasks.definitions import MNIST_PIXELS


def pixel_permutation(perm_seed: int, authors_draw: bool = False) -> torch.Tensor:
    """A permutation of the 784 pixel positions, int64, from ``perm_seed``: torch's
    ``randperm``, or with ``authors_draw`` NumPy's legacy ``permutation`` (the authors')."""
    if authors_draw:
        return torch.from_numpy(np.random.RandomState(perm_seed).permutation(MNIST_PIXELS))
    return torch.randperm(MNIST_PIXELS, generator=torch.Generator().manual_seed(perm_seed))


def permutation_checksum(perm: torch.Tensor) -> str:
    """A short fingerprint of a permutation (SHA-256 of its int64 little-endian values,
    16 hex digits), recorded in the run's config so that two runs' orders can be compared."""
    values = perm.to(torch.int64).numpy().astype("<i8")
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]
