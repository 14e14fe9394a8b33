"""The fused backend's backward written with differentiable operations only.

The fast backward (``backward.py``) works in place and cannot itself be
differentiated. Where the backward must be (``create_graph=True``: double backward,
gradient penalties; ``torch.func`` transforms) this one runs instead. It cannot simply
differentiate the reference recurrence: there, a detached state enters the graph as a
constant, so the derivative of h-detach's gradient would lose that state's dependence
on the weights. Here the values come from a full forward recomputation and only the
gradient's path through the recurrence is cut, so the result is the exact derivative
of the h-detach gradient as a function of the inputs.
"""

from __future__ import annotations

import torch

from hdetach.ops.members import members_of, rows_linear, rows_outer, rows_sum, rows_times


def _forward_values(gates_x, h0, c0, w_hh, w_hr, batch_sizes):
    """Per step (h_{t-1}, c_{t-1}, activations i f g o, c_t, m_t, active rows), differentiably."""
    hidden = c0.shape[1]
    rows = torch.arange(h0.shape[0], device=h0.device).unsqueeze(1)
    h, c, values = h0, c0, []
    for t, gates_x_t in enumerate(gates_x.unbind(0)):  # unbind: see reference.py
        z = gates_x_t + rows_linear(h, w_hh)
        i, f, o = (torch.sigmoid(z[:, k * hidden : (k + 1) * hidden]) for k in (0, 1, 3))
        g = torch.tanh(z[:, 2 * hidden : 3 * hidden])
        c_new = f * c + i * g
        m = o * torch.tanh(c_new)
        h_new = m if w_hr is None else rows_linear(m, w_hr)
        active = None if batch_sizes is None else rows < batch_sizes[t]
        values.append((h, c, i, f, g, o, c_new, m, active))
        if active is not None:
            h_new, c_new = torch.where(active, h_new, h), torch.where(active, c_new, c)
        h, c = h_new, c_new
    return values


def differentiable_backward(inputs, needs, grads, detach_mask, detach_path, batch_sizes) -> list:
    """Gradients of (x, h0, c0, w_ih, w_hh, bias, w_hr), None where not needed."""
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    d_out, dh, dc = grads
    gates_x = x if w_ih is None else rows_linear(x, w_ih, bias)
    members = members_of(w_hh)
    values = _forward_values(gates_x, h0, c0, w_hh, w_hr, batch_sizes)
    dz_steps, dh_steps = [None] * len(values), [None] * len(values)
    d_out_steps = d_out.unbind(0)
    for t in range(len(values) - 1, -1, -1):
        h_prev, c_prev, i, f, g, o, c_t, m, active = values[t]
        d_out_t = d_out_steps[t]
        dh_t = dh + (d_out_t if active is None else torch.where(active, d_out_t, 0))
        dm = dh_t if w_hr is None else rows_times(dh_t, w_hr)
        tanh_c = torch.tanh(c_t)
        dc_t = dc + dm * o * (1 - tanh_c * tanh_c)
        dz = torch.cat(
            [dc_t * g * i * (1 - i), dc_t * c_prev * f * (1 - f), dc_t * i * (1 - g * g),
             dm * tanh_c * o * (1 - o)],
            dim=1,
        )  # fmt: skip
        dh_prev, dc_prev = rows_times(dz, w_hh), dc_t * f
        if detach_mask is not None:  # the cut: no gradient into the detached state
            keep = (~detach_mask[t]).to(dz.dtype).reshape(-1, 1)
            dh_prev, dc_prev = (
                (dh_prev * keep, dc_prev) if detach_path == "h" else (dh_prev, dc_prev * keep)
            )
        if active is not None:  # rows past their end pass their state through untouched
            dz, dh_t = torch.where(active, dz, 0), torch.where(active, dh_t, 0)
            dh_prev, dc_prev = torch.where(active, dh_prev, dh), torch.where(active, dc_prev, dc)
        dz_steps[t], dh_steps[t], dh, dc = dz, dh_t, dh_prev, dc_prev
    d_gates = torch.stack(dz_steps)  # (T, B, 4H)
    h_before = torch.stack([v[0] for v in values])  # h_{t-1} for each step
    result = {
        "h0": dh,
        "c0": dc,
        "w_hh": rows_outer(d_gates, h_before, members),
        "w_hr": None
        if w_hr is None
        else rows_outer(torch.stack(dh_steps), torch.stack([v[7] for v in values]), members),
        "x": d_gates if w_ih is None else rows_times(d_gates, w_ih),
        "w_ih": None if w_ih is None else rows_outer(d_gates, x, members),
        "bias": rows_sum(d_gates, members),
    }
    names = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")
    return [result[name] if need else None for name, need in zip(names, needs)]
