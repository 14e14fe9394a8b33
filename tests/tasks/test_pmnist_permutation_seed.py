"""pmnist's pixel order comes from --perm-seed alone, not from --seed, through the task
factory the training loop uses (MNIST's arrays replaced by small fakes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hdetach.experiments.config import Config, resolve
from hdetach.experiments.tasks import make_task, mnist

N = 12  # images per split of the fake MNIST


@pytest.fixture
def fake_mnist(monkeypatch):
    """Image k's pixel j is (k + j) % 256: every pixel of every image is told apart."""
    pixels = (np.arange(N)[:, None] + np.arange(784)[None, :]) % 256
    arrays = {
        "train_images": np.tile(pixels, (6, 1)).astype(np.uint8),  # 5 N train, N val
        "train_labels": np.arange(6 * N, dtype=np.uint8) % 10,
        "test_images": pixels.astype(np.uint8),
        "test_labels": np.arange(N, dtype=np.uint8) % 10,
    }
    monkeypatch.setattr(mnist, "load_mnist", lambda data_dir=None, fetch=True: arrays)
    monkeypatch.setattr(mnist, "N_TRAIN", 5 * N)  # the last N training images validate
    return pixels


def pmnist(seed: int, perm_seed: int) -> mnist.MNISTTask:
    cfg = Config(
        task="pmnist", seed=seed, perm_seed=perm_seed, n_train=N, n_val=N, n_test=N,
        data_dir="unused", run_dir="unused",
    )  # fmt: skip
    return make_task(resolve(cfg))


def test_the_permutation_depends_on_perm_seed_only(fake_mnist):
    first = pmnist(seed=1, perm_seed=7)
    x, _ = first.batch("test", torch.arange(N))
    # the pixels the task feeds, in order, are the image's pixels in the permuted order
    expected = torch.from_numpy(fake_mnist).float()[:, mnist.pixel_permutation(7)] / 255
    torch.testing.assert_close(x.squeeze(-1), expected, rtol=0, atol=0)
    for seed in (0, 2, 123):  # another --seed: the same pixel order
        other, _ = pmnist(seed=seed, perm_seed=7).batch("test", torch.arange(N))
        assert torch.equal(other, x), f"--seed {seed} changed the permutation"
    moved, _ = pmnist(seed=1, perm_seed=8).batch("test", torch.arange(N))
    assert not torch.equal(moved, x)  # another --perm-seed: another order
