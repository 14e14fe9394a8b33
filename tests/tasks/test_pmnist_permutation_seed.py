"""pmnist's pixel order comes from --perm-seed alone, not from --seed (with --perm-from-seed,
from --seed alone, as the authors draw it), through the task factory the training loop
uses (MNIST's arrays replaced by small fakes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import use_fake_mnist

from hdetach.experiments.config import Config, ConfigError, resolve
from hdetach.experiments.tasks import mnist
from hdetach.experiments.tasks.permutation import permutation_checksum
from hdetach.experiments.tasks.registry import make_task

N = 12  # images per split of the fake MNIST


@pytest.fixture
def fake_mnist(monkeypatch):
    """The test images of a fake MNIST (helpers.use_fake_mnist): image k's pixel j is
    (k + j) % 256, so every pixel of every image is told apart."""
    return use_fake_mnist(monkeypatch, N)


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


def test_perm_from_seed_draws_the_authors_permutation_per_seed(fake_mnist):
    """--perm-from-seed: seed s sees np.random.seed(s); np.random.permutation(784), the
    authors' draw, and the config records that permutation's seed and checksum."""
    orders = {}
    for seed in (0, 3, 400):
        cfg = resolve(
            Config(
                task="pmnist", seed=seed, perm_from_seed=True, n_train=N, n_val=N, n_test=N,
                data_dir="unused", run_dir="unused",
            )
        )  # fmt: skip
        np.random.seed(seed)
        authors = np.random.permutation(784)
        x, _ = make_task(cfg).batch("test", torch.arange(N))
        expected = torch.from_numpy(fake_mnist[:, authors]).float() / 255
        torch.testing.assert_close(x.squeeze(-1), expected, rtol=0, atol=0)
        assert cfg.perm_seed == seed
        assert cfg.perm_checksum == permutation_checksum(torch.from_numpy(authors))
        orders[seed] = cfg.perm_checksum
    assert len(set(orders.values())) == 3  # each seed its own order


def test_the_fixed_permutation_is_recorded_too(fake_mnist):
    a, b = (resolve(Config(task="pmnist", perm_seed=k, data_dir="u", run_dir="u")) for k in (7, 8))
    assert a.perm_checksum == permutation_checksum(mnist.pixel_permutation(7))
    assert a.perm_checksum != b.perm_checksum
    assert resolve(Config(task="mnist", data_dir="u", run_dir="u")).perm_checksum is None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(task="mnist", perm_from_seed=True), "--perm-from-seed is an option of pmnist"),
        (dict(task="pmnist", perm_from_seed=True, perm_seed=5, seed=1), "exclude each other"),
    ],
)
def test_perm_from_seed_refuses_what_it_cannot_mean(options, message):
    with pytest.raises(ConfigError, match=message):
        resolve(Config(data_dir="u", run_dir="u", **options))
