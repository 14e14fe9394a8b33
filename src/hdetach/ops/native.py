"""The "native" backend: torch's own LSTM kernel (oneDNN on CPU, cuDNN on CUDA).

Exact only when nothing is detached: it has no way to cut the recurrent gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from hdetach.ops.members import by_member, members_of
from hdetach.ops.packed import sequence_lengths


def native_lstm(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    weights: list[list[Tensor]],
    bidirectional: bool,
    dropout: float,
    training: bool,
    sizes: Sequence[int] | None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """torch's own multi-layer LSTM kernel (what ``torch.nn.LSTM`` runs) on the padded input.

    Arguments validated as in :func:`hdetach.functional.lstm`; ``weights`` holds each
    layer and direction's tensors in ``torch.nn.LSTM._flat_weights`` order, and ``sizes``
    the packed layout (non-increasing per-step batch sizes) or None. For a population
    (weights with a leading member dimension) the kernel, which has none, runs once per
    member on the member's rows and weights, and the results are put back in place.
    """
    members = members_of(weights[0][1])
    options = (bidirectional, dropout, training, sizes)
    if members == 1:
        return _native_lstm(input, hx, weights, *options)
    parts = [
        _native_lstm(
            by_member(input, members)[:, k],
            tuple(by_member(state, members)[:, k] for state in hx),
            [[w[k] for w in entry] for entry in weights],
            *options,
        )
        for k in range(members)
    ]
    output = torch.cat([out for out, _ in parts], dim=1)
    h_n, c_n = (torch.cat([state[i] for _, state in parts], dim=1) for i in (0, 1))
    return output, (h_n, c_n)


def _native_lstm(input, hx, weights, bidirectional, dropout, training, sizes):
    flat = [w for entry in weights for w in entry]
    has_biases = len(weights[0]) >= 4
    layers = len(weights) // (2 if bidirectional else 1)
    options = (has_biases, layers, dropout, training, bidirectional)
    if sizes is None:
        output, h_n, c_n = torch._VF.lstm(input, hx, flat, *options, False)
        return output, (h_n, c_n)
    lengths = sequence_lengths(sizes, input.shape[1], torch.device("cpu"))
    packed = pack_padded_sequence(input, lengths)
    data, h_n, c_n = torch._VF.lstm(packed.data, packed.batch_sizes, hx, flat, *options)
    output, _ = pad_packed_sequence(
        PackedSequence(data, packed.batch_sizes), total_length=len(sizes)
    )
    return output, (h_n, c_n)
