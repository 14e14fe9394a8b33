"""What ``hdetach.LSTM`` and ``hdetach.LSTMCell`` share: their options and when they step aside.

The options are validated whenever they are set (constructor or later assignment),
against the one list of choices each has (``hdetach.choices``, torch-free), which the
training config and the CLI import too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hdetach.ops.checks import check_choice
from hdetach.ops.dispatch import cpu_autocast_dtype


def check_p_detach(p_detach: float) -> float:
    if isinstance(p_detach, bool) or not isinstance(p_detach, (int, float)):
        raise TypeError(f"p_detach must be a float in [0, 1], got {type(p_detach).__name__}")
    if not 0.0 <= p_detach <= 1.0:
        raise ValueError(f"p_detach must be in [0, 1], got {p_detach}")
    return float(p_detach)


class Option:
    """A module attribute validated on every assignment by ``check(value) -> value``."""

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, module, owner: type | None = None):
        return self if module is None else getattr(module, self.slot)

    def __set__(self, module, value) -> None:
        setattr(module, self.slot, self.check(value))


def choice(name: str, choices: Sequence[str]) -> Option:
    """An ``Option`` that must be one of ``choices``."""

    def check(value: str) -> str:
        check_choice(name, value, choices)
        return value

    return Option(check)


# torch.compiler.is_exporting appeared in torch 2.5; before it, only torch.onnx said so.
_is_exporting = getattr(torch.compiler, "is_exporting", torch.onnx.is_in_onnx_export)


def graph_capture() -> str | None:
    """The name of the graph capture running now (tracing, export), or None in eager mode.

    A captured graph holds the forward computation only; h-detach's change to the
    gradient has no place in it, so the modules refuse to be captured while detaching.
    ``torch.compile`` is not a capture in this sense: it keeps autograd, and masks.
    """
    if torch.jit.is_tracing():
        return "torch.jit.trace (and torch.onnx.export(..., dynamo=False))"
    if _is_exporting():
        return "torch.export (and torch.onnx.export)"
    return None


def capture_error(capture: str, module: str) -> RuntimeError:
    return RuntimeError(
        f"{capture} cannot record h-detach's gradient, and {module} is detaching here "
        "(training mode with p_detach > 0, or an explicit mask). Capture the model in "
        "eval() mode, or call hdetach.revert(model) first to get plain torch.nn modules "
        "with the same parameters"
    )


def script_error(module: str) -> RuntimeError:
    """TorchScript cannot compile the modules' Python mask logic. (Handing it the torch.nn
    module instead through ``__prepare_scriptable__`` would swap it into the caller's
    model in place, silently ending h-detach there.)"""
    return RuntimeError(
        f"torch.jit.script cannot compile {module}: script a copy turned back into "
        "torch.nn modules with the same parameters, "
        "torch.jit.script(hdetach.revert(copy.deepcopy(model)))"
    )


def autocast_dtype(x: Tensor, ragged: bool) -> torch.dtype | None:
    """The dtype ``torch.nn.LSTM`` computes in under the current autocast, or None.

    On the CPU, autocast runs oneDNN's LSTM in the autocast dtype, except for a
    ``ragged`` packed sequence (of unequal lengths), which takes torch's generic kernel
    in the input's dtype. On CUDA, autocast's cuDNN RNN wrapper casts to float16
    whatever the autocast dtype. float64 is never cast.
    """
    if x.dtype == torch.float64:
        return None
    if x.device.type == "cpu":
        return None if ragged else cpu_autocast_dtype()
    if x.device.type == "cuda":
        enabled = (
            torch.is_autocast_enabled("cuda")
            if hasattr(torch, "get_autocast_dtype")
            else torch.is_autocast_enabled()
        )
        return torch.float16 if enabled and torch.backends.cudnn.enabled else None
    return None
