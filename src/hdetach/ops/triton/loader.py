"""Where the triton backend comes from: imported on first use, for the GPU or the interpreter.

Triton decides when a kernel is decorated whether it is compiled for a GPU or run by
its CPU interpreter (``TRITON_INTERPRET=1``). So the kernels' module
(``kernels``) exists in two builds, each made on first use: the ordinary import
for CUDA tensors, and a private copy built for the interpreter, used for CPU tensors
while ``TRITON_INTERPRET=1`` is set at call time (the interpreter tests). The host code
(``lstm``) is one module that takes the kernels as an argument; ``triton_backend``
binds it to the build that fits the tensors. Nothing is reloaded, no switch is flipped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from hdetach.settings import triton_interpreting

_KERNELS = "hdetach.ops.triton.kernels"


@dataclass(frozen=True)
class TritonBackend:
    """The host code bound to one build of the kernels: what ``triton_backend`` returns."""

    kernels: ModuleType  # hdetach.ops.triton.kernels, compiled or interpreted
    # hdetach.ops.triton.lstm.triton_lstm_recurrence with kernels=kernels
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
    from hdetach.ops.triton import (
        lstm as triton_lstm,
    )  # imports triton: only once the backend is used

    kernels = _build_kernels(interpret)
    recurrence = functools.partial(triton_lstm.triton_lstm_recurrence, kernels=kernels)
    return TritonBackend(kernels, recurrence)


def triton_backend(device: torch.device) -> TritonBackend:
    """The triton backend for tensors on ``device`` (its kernels interpreted for the CPU)."""
    return _bind(device.type == "cpu" and triton_interpreting())
