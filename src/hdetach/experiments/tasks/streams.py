"""The data streams' generators: each split of a task's data, and the order of the
training minibatches, drawn from a generator of its own."""

from __future__ import annotations

import numpy as np
import torch


def data_rng(seed: int, stream: str) -> torch.Generator:
    """A torch generator for one data stream (split), independent of the others and of
    the training RNGs, so that the data are fixed by the seed alone."""
    # Hash the pair through numpy's SeedSequence so (seed, stream) pairs never collide
    # the way seed + offset schemes do (seed 1's val set == seed 2's train set).
    key = [seed, *stream.encode()]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
