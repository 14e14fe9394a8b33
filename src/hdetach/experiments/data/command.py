"""``hdetach data`` carried out: MNIST fetched where missing and verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from hdetach.experiments.tasks.mnist import load_mnist
from hdetach.settings import mnist_data_dir


def run(a: argparse.Namespace) -> None:
    """Fetch what is missing, verify all of it, and say so."""
    d = Path(a.data_dir) if a.data_dir else mnist_data_dir()
    arrays = load_mnist(d)
    sizes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"MNIST verified in {d}: {sizes}")
