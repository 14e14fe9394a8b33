"""Where the triton backend comes from: imported on first use, for the GPU or the interpreter.

Triton decides when a kernel is decorated whether it is compiled for a GPU or run by
its CPU interpreter (``TRITON_INTERPRET=1``). So the kernels' module
(``triton_kernels``) exists in two builds, each made on first use: the ordinary import
for CUDA tensors, and a private copy built for the interpreter, used for CPU tensors
while ``TRITON_INTERPRET=1`` is set at call time (the interpreter tests). The host code
(``triton_lstm``) is one module that takes the kernels as an argument; ``triton_backend``
binds it to the build that fits the tensors. Nothing is reloaded, no switch is flipped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Beyond this the per-program weight traffic (4 H^2 elements per step, read by every
# program) makes a per-step cuBLAS product spread over the whole GPU the better choice.
MAX_HIDDEN = 1024
_KERNELS = "hdetach.ops.triton_kernels"


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set now (Triton's own switch, read at each call)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_unsupported_reason(
    device: torch.device,
    dtype: torch.dtype,
    steps: int,
    batch: int,
    hidden: int,
    proj_size: int,
    *,
    members: int = 1,
) -> str | None:
    """Why the triton kernels cannot run a layer of these sizes, or None where they can.

    ``batch``: all rows; ``members``: how many LSTMs share them (a population).
    """
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"its kernels run on CUDA tensors (CPU ones under TRITON_INTERPRET=1), got {device}"
    if dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        return f"its kernels take {names}, got {str(dtype).removeprefix('torch.')}"
    if hidden > MAX_HIDDEN:
        return f"its kernels take hidden sizes up to {MAX_HIDDEN}, got {hidden}"
    if proj_size:
        return "its kernels have no projection (proj_size > 0): use the fused backend"
    if steps * batch * 4 * hidden >= 2**31:
        return "its kernels index with int32: the gates must have fewer than 2^31 elements"
    if members * 4 * hidden * hidden >= 2**31:
        return "its kernels index with int32: the members' W_hh must have fewer than 2^31 elements"
    return None


@dataclass(frozen=True)
class TritonBackend:
    """The host code bound to one build of the kernels: what ``triton_backend`` returns."""

    kernels: ModuleType  # hdetach.ops.triton_kernels, compiled or interpreted
    # hdetach.ops.triton_lstm.triton_lstm_recurrence with kernels=kernels
    triton_lstm_recurrence: Callable[..., tuple[Tensor, Tensor, Tensor]]

    @property
    def interpreted(self) -> bool:
        """Whether the kernels run under Triton's CPU interpreter."""
        return self.kernels.INTERPRETED


@functools.cache
def _build_kernels(interpret: bool) -> ModuleType:
    import triton

    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = interpret  # whatever TRITON_INTERPRET says now
        if not interpret:
            return importlib.import_module(_KERNELS)
        spec = importlib.util.find_spec(_KERNELS)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@functools.cache
def _bind(interpret: bool) -> TritonBackend:
    from hdetach.ops import triton_lstm  # imports triton: only once the backend is used

    kernels = _build_kernels(interpret)
    recurrence = functools.partial(triton_lstm.triton_lstm_recurrence, kernels=kernels)
    return TritonBackend(kernels, recurrence)


def triton_backend(device: torch.device) -> TritonBackend:
    """The triton backend for tensors on ``device`` (its kernels interpreted for the CPU)."""
    return _bind(device.type == "cpu" and interpreting())
