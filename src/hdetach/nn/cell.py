"""``hdetach.LSTMCell``: ``torch.nn.LSTMCell`` with ``detach``, for hand-written loops."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hdetach.functional import DETACH_PATHS, _check_choice


class LSTMCell(nn.LSTMCell):
    """``torch.nn.LSTMCell`` whose incoming state can be cut from the gradient.

    ``forward(input, hx=None, detach=False)``: ``detach`` is a bool, a 0-d bool tensor
    (the whole batch) or a (B,) bool tensor (per example). Where it is True, h
    (``detach_path="h"``, h-detach) or c (``"c"``, c-detach) enters the step as a
    constant for autograd; the values computed are unchanged.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        detach_path: str = "h",
    ) -> None:
        _check_choice("detach_path", detach_path, DETACH_PATHS)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.detach_path = detach_path

    def forward(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None = None,
        detach: bool | Tensor = False,
    ) -> tuple[Tensor, Tensor]:
        if isinstance(detach, Tensor):
            batch = input.shape[0] if input.dim() == 2 else None
            if detach.dtype != torch.bool or detach.shape not in ((), (batch,)):
                raise ValueError(
                    f"detach must be a bool, a 0-d bool tensor or a ({batch},) bool tensor, "
                    f"got {detach.dtype} of shape {tuple(detach.shape)}"
                )
        elif not isinstance(detach, bool):
            raise TypeError(f"detach must be a bool or a bool tensor, got {type(detach).__name__}")
        if hx is None or detach is False:
            return super().forward(input, hx)
        h, c = hx
        if self.detach_path == "h":
            h = _stop_gradient(h, detach)
        else:
            c = _stop_gradient(c, detach)
        return super().forward(input, (h, c))


def _stop_gradient(state: Tensor, detach: bool | Tensor) -> Tensor:
    if isinstance(detach, bool):
        return state.detach()
    return torch.where(detach.unsqueeze(-1), state.detach(), state)
