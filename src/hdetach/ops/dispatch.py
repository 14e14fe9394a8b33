"""Which implementation runs a call: the one place that resolves ``backend="auto"``."""

from __future__ import annotations

import torch

from hdetach.ops.checks import check_choice
from hdetach.ops.triton_support import triton_unsupported_reason
from hdetach.settings import triton_in_auto

BACKENDS = ("auto", "native", "fused", "triton", "reference")


def select_backend(
    backend: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    steps: int,
    batch: int,
    hidden_size: int,
    detached: bool,
    proj_size: int = 0,
    members: int = 1,
) -> str:
    """The implementation that runs a call: "native", "fused", "triton" or "reference".

    ``detached``: some detach mask is given; ``batch``: all rows, shared by ``members``
    LSTMs in a population.
    An explicit backend is returned as given, or refused with the reason where it cannot
    run the call (``"native"`` with a mask; ``"triton"`` off CUDA, for float64, H > 1024
    or ``proj_size > 0``). ``"auto"`` resolves as follows:

    1. Nothing detached: ``"native"``, on every device, training or not. torch's own
       kernel (cuDNN, oneDNN) gives the same result and was faster than ``"fused"`` in
       every measured CPU shape (``benchmarks/native-vs-fused-cpu.md``: fused/native
       forward+backward 1.07x to 13x, T in {100, 784}, B in 1..256, H in 32..512).
    2. Something detached: ``"triton"`` where ``HDETACH_TRITON_AUTO=1`` and the kernels
       apply, else ``"fused"``.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "native" and detached:
        raise ValueError(
            'backend="native" runs torch\'s own LSTM kernel, which cannot detach: use "auto" '
            'or "fused" with a detach mask'
        )
    sizes = (device, dtype, steps, batch, hidden_size, proj_size)
    if backend == "triton":
        reason = triton_unsupported_reason(*sizes, members=members)
        if reason is not None:
            raise ValueError(f'backend="triton" cannot run this call: {reason}')
    if backend != "auto":
        return backend
    if not detached:
        return "native"
    if triton_in_auto() and triton_unsupported_reason(*sizes, members=members) is None:
        return "triton"
    return "fused"
