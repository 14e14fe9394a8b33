"""``hdetach.LSTMCell``: ``torch.nn.LSTMCell`` with h-detach, for hand-written loops."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from hdetach.choices import DETACH_PATHS, DETACH_SCOPES
from hdetach.functional import check_generator_device, draw_detach_masks
from hdetach.nn.masks import OwnMaskStream, check_generator
from hdetach.nn.options import (
    Option,
    capture_error,
    check_p_detach,
    choice,
    graph_capture,
    script_error,
)
from hdetach.nn.refusals import cell_state_pair, check_cell_inputs
from hdetach.ops.checks import check_choice


class LSTMCell(OwnMaskStream, nn.LSTMCell):
    """``torch.nn.LSTMCell`` whose incoming state can be cut from the gradient.

    In training mode with grad enabled, each call draws whether to detach the state it
    receives, with probability ``p_detach`` (one draw for the batch, or one per example
    with ``detach_scope="sample"``), from ``generator`` or by default the cell's own
    stream, which leaves torch's global generators untouched (``hdetach.nn.masks``, as
    ``hdetach.LSTM``). Where it detaches, h
    (``detach_path="h"``, h-detach) or c (``"c"``, c-detach) enters the step as a
    constant for autograd; the values computed are unchanged. ``forward(input, hx,
    detach)`` overrides the draw: ``detach`` is a bool, a 0-d bool tensor (the whole
    batch) or a (B,) bool tensor (per example). In eval mode, under ``torch.no_grad()``
    or without ``hx`` the cell is ``torch.nn.LSTMCell``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        p_detach: float = 0.25,
        detach_scope: str = "batch",
        detach_path: str = "h",
        generator: torch.Generator | None = None,
    ) -> None:
        check_p_detach(p_detach)
        check_generator(generator)
        check_choice("detach_scope", detach_scope, DETACH_SCOPES)
        check_choice("detach_path", detach_path, DETACH_PATHS)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.p_detach = p_detach
        self.detach_scope = detach_scope
        self.detach_path = detach_path
        self.generator = generator

    p_detach = Option(check_p_detach)
    detach_scope = choice("detach_scope", DETACH_SCOPES)
    detach_path = choice("detach_path", DETACH_PATHS)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, p_detach={self.p_detach}, "
            f"detach_scope={self.detach_scope!r}, detach_path={self.detach_path!r}"
        )

    def _stream_weights(self) -> list[Tensor]:
        # from _parameters: getattr would run a parametrization
        return [
            w
            for w in (self._parameters.get(n) for n in ("weight_ih", "weight_hh"))
            if w is not None
        ]

    def __prepare_scriptable__(self) -> nn.LSTMCell:
        raise script_error("hdetach.LSTMCell")

    def forward(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None = None,
        detach: bool | Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if detach is None:
            draws = self.training and torch.is_grad_enabled() and self.p_detach > 0
            draws = draws and hx is not None
        else:
            self._check_detach(detach, input)
            draws = False
        # Before the draw, which a capture could not record (nor read as a bool).
        capture = graph_capture()
        if capture is not None and (draws or (detach is not None and detach is not False)):
            raise capture_error(capture, "hdetach.LSTMCell")
        if detach is None:
            detach = self._draw(input) if draws else False
        if hx is None or detach is False:
            return super().forward(input, hx)
        if isinstance(detach, bool):  # the whole state, which keeps its shape: torch's
            h, c = cell_state_pair(hx, batched=input.dim() == 2)  # own forward checks it
        else:  # per example: a state of the wrong size would broadcast through the cut
            h, c = check_cell_inputs(self, input, hx)
        if self.detach_path == "h":
            h = _stop_gradient(h, detach)
        else:
            c = _stop_gradient(c, detach)
        return super().forward(input, (h, c))

    def _draw(self, input: Tensor) -> bool | Tensor:
        """One decision for the batch (batch scope, or an unbatched input) as a bool, or
        per example a (B,) bool tensor. The bool is read off the draw at once: a step not
        detached is then torch's own call, and a detached one cuts the whole state with
        ``detach()``, neither with a masking op of its own in the graph."""
        generator = self._mask_generator(input.device)
        if self.detach_scope == "sample" and input.dim() == 2:
            shape = (input.shape[0],)
            return draw_detach_masks(self.p_detach, shape, device=input.device, generator=generator)
        check_generator_device(self.generator, input.device)  # the user's, if given
        # The uniform draw_detach_masks would compare, compared as a Python float (with p
        # rounded to the draw's dtype, as the tensor comparison rounds it): a cell step is
        # a few tens of microseconds, and a bool tensor's comparison and conversion cost
        # about three times the draw itself.
        drawn = torch.rand((), device=input.device, generator=generator)
        return drawn.item() < _rounded(self.p_detach, drawn.dtype)

    @staticmethod
    def _check_detach(detach: bool | Tensor, input: Tensor) -> None:
        if isinstance(detach, Tensor):
            batch = input.shape[0] if input.dim() == 2 else None
            if detach.dtype != torch.bool or detach.shape not in ((), (batch,)):
                raise ValueError(
                    f"detach must be a bool, a 0-d bool tensor or a ({batch},) bool tensor, "
                    f"got {detach.dtype} of shape {tuple(detach.shape)}"
                )
        elif not isinstance(detach, bool):
            raise TypeError(f"detach must be a bool or a bool tensor, got {type(detach).__name__}")


@functools.lru_cache(maxsize=64)
def _rounded(p: float, dtype: torch.dtype) -> float:
    """``p`` as a tensor of ``dtype`` holds it (what a comparison with such a tensor uses)."""
    return torch.tensor(p, dtype=dtype).item()


def _stop_gradient(state: Tensor, detach: bool | Tensor) -> Tensor:
    if isinstance(detach, bool):
        return state.detach()
    return torch.where(detach.unsqueeze(-1), state.detach(), state)
