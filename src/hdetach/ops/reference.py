"""The reference backend: autograd through a plain loop over time.

Slow and deliberately simple. Every other backend is tested against it, so it
follows the paper's description literally: at a detached step the state enters
the step through ``Tensor.detach()`` and autograd does the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hdetach.ops.members import rows_linear


def _stop_gradient_where(state: Tensor, detach: Tensor) -> Tensor:
    """``state`` (B, H) with the rows selected by ``detach`` (a 0-d or (B,) bool) detached."""
    return torch.where(detach.reshape(-1, 1), state.detach(), state)


def reference_lstm_recurrence(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: list[int] | None = None,
    *,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one LSTM layer over time, with autograd doing the backward pass.

    Same contract as :func:`hdetach.functional.lstm_recurrence` (arguments already validated).
    """
    hidden = c0.shape[1]
    rows = torch.arange(h0.shape[0], device=h0.device).unsqueeze(1)
    h, c = h0, c0
    outputs = []
    # unbind, not gates_x[t]: autograd gives each indexing its own full-size (T, B, 4H)
    # gradient, which made the backward quadratic in T (minutes at T = 784); unbind's
    # backward stacks the steps' gradients once.
    for t, gates_x_t in enumerate(gates_x.unbind(0)):
        h_in, c_in = h, c
        if detach_mask is not None:
            if detach_path == "h":
                h_in = _stop_gradient_where(h, detach_mask[t])
            else:
                c_in = _stop_gradient_where(c, detach_mask[t])
        z = gates_x_t + rows_linear(h_in, weight_hh)  # h_in @ W_hh^T, per member
        i = torch.sigmoid(z[:, :hidden])
        f = torch.sigmoid(z[:, hidden : 2 * hidden])
        g = torch.tanh(z[:, 2 * hidden : 3 * hidden])
        o = torch.sigmoid(z[:, 3 * hidden :])
        c_new = f * c_in + i * g
        h_new = o * torch.tanh(c_new)
        if weight_hr is not None:
            h_new = rows_linear(h_new, weight_hr)
        if batch_sizes is None:
            outputs.append(h_new)
        else:
            # Packed input: rows past their sequence's end keep their state and output zero.
            active = rows < batch_sizes[t]
            h_new = torch.where(active, h_new, h)
            c_new = torch.where(active, c_new, c)
            outputs.append(torch.where(active, h_new, torch.zeros_like(h_new)))
        h, c = h_new, c_new
    return torch.stack(outputs), h, c
