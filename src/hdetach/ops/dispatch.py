"""Which implementation runs a call: the one place that resolves ``backend="auto"``."""

from __future__ import annotations

import torch

from hdetach import settings
from hdetach.choices import BACKENDS
from hdetach.ops.checks import check_choice
from hdetach.ops.fused import cpu_kernel
from hdetach.ops.triton.support import triton_unsupported_reason

# Training without a mask on one or two CPU threads: the compiled recurrence beat or tied
# torch's kernel in every measured shape with T * B at or above this and H at or above
# FUSED_MIN_HIDDEN (0.43x to 0.94x of its time on one thread, 0.47x to 1.03x on two), and
# lost in most shapes below (benchmarks/native-vs-fused-cpu.md, quiet machine, 2026-12-06).
FUSED_MIN_ROWS_X_STEPS = 10_000
FUSED_MIN_HIDDEN = 64
FUSED_MAX_THREADS = 2  # the most measured: the project's machines have two cores


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

    1. Nothing detached: ``"native"`` (torch's own kernel: cuDNN, oneDNN), except for
       training on the CPU on one or two threads (a sweep's processes run one each) with
       steps * batch >= ``FUSED_MIN_ROWS_X_STEPS`` and hidden_size >= ``FUSED_MIN_HIDDEN``,
       where ``"fused"`` on the compiled recurrence was faster (``_fused_beats_native``;
       ``benchmarks/native-vs-fused-cpu.md``: 0.43x to 0.94x of torch's time there on one
       thread, 0.57x at T = 784, B = 100, H = 128). Both compute the same LSTM, equal to
       float rounding; ``backend="native"`` asks for torch's kernel whatever the shape.
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
        fused = _fused_beats_native(device, dtype, steps * batch, hidden_size)
        return "fused" if fused else "native"
    if settings.triton_in_auto() and triton_unsupported_reason(*sizes, members=members) is None:
        return "triton"
    return "fused"


def _fused_beats_native(
    device: torch.device, dtype: torch.dtype, rows_x_steps: int, hidden_size: int
) -> bool:
    """Where ``"auto"`` runs ``"fused"`` with nothing detached: the measured case only.

    Training (grad enabled) on the CPU, one or two torch threads, float32 or float64, a
    call of at least ``FUSED_MIN_ROWS_X_STEPS`` rows x steps and ``FUSED_MIN_HIDDEN``
    hidden units, and the compiled recurrence available (``HDETACH_CPU_KERNEL`` not
    ``python``, the extension built). Inference stays on torch's kernel (oneDNN's forward
    was faster in most measured shapes), and so do more threads (not measured), autocast
    (torch's own dtype rules), tracing by torch.compile and torch.func transforms (where
    ``"fused"`` runs its slower eager steps).
    """
    if (
        device.type != "cpu"
        or dtype not in cpu_kernel.DTYPES
        or rows_x_steps < FUSED_MIN_ROWS_X_STEPS
        or hidden_size < FUSED_MIN_HIDDEN
        or not torch.is_grad_enabled()
        or torch.get_num_threads() > FUSED_MAX_THREADS
        or cpu_autocast_dtype() is not None
        or torch.compiler.is_compiling()
        or torch._C._functorch.peek_interpreter_stack() is not None
        or settings.cpu_kernel() == "python"
    ):
        return False
    return cpu_kernel.compiled_ops() is not None


def cpu_autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype in force, or None where CPU autocast is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    else:
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if enabled else None
