"""The fused backend's fast backward pass.

It walks time once carrying dh and dc: five operations a step into preallocated
buffers, the gate derivatives that do not depend on the recurrence computed for a
chunk of steps at once, and the weight gradients as one large product per chunk. Its
in-place kernels cannot themselves be differentiated: ``differentiable.py`` serves
the backward where it must be (``create_graph=True``, ``torch.func`` transforms).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hdetach.ops.fused import cpu_kernel
from hdetach.ops.fused.buffer_pool import POOL
from hdetach.ops.fused.products import add_outer_, block_product, product
from hdetach.ops.members import members_of, rows_sum
from hdetach.ops.packed import rows_at, steps_of

GRAD_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")


def fused_backward(
    inputs, needs, out, activations, grads, detach_mask, detach_path, batch_sizes, compiled=False
):
    """Gradients of (x, h0, c0, w_ih, w_hh, bias, w_hr), None where not needed.

    ``compiled``: each chunk's steps run in one call of the compiled recurrence
    (``cpu_kernel.py``); the weight gradients are the same large products either way.
    """
    x, h0, c0, w_ih, w_hh, bias, w_hr = inputs
    bounds, saved = activations
    d_out, d_h_n, d_c_n = grads
    steps, batch, _ = out.shape
    hidden = c0.shape[1]
    result = {
        "x": x.new_empty(x.shape) if needs[0] else None,
        "w_ih": torch.zeros_like(w_ih) if needs[3] else None,
        "w_hh": torch.zeros_like(w_hh) if needs[4] else None,
        "bias": torch.zeros_like(bias) if needs[5] else None,
        "w_hr": torch.zeros_like(w_hr) if needs[6] else None,
    }
    # Running gradients w.r.t. the state entering the current step, taking in d_out of
    # the step before as they go; inactive rows (packed input) carry theirs untouched.
    state = {
        "dh": d_h_n.clone(memory_format=torch.contiguous_format),
        "dc": d_c_n.clone(memory_format=torch.contiguous_format),
    }
    largest = max(e - s for s, e in bounds)
    buffers = {"dz": POOL.take((largest, batch, 4 * hidden), out)}
    if not compiled:  # the compiled steps write every active row and make these factors
        buffers["dz"].zero_()
        buffers["coef"] = POOL.take((largest, batch, 5 * hidden), out)
    if w_hr is not None:  # the total dh of each step (for dW_hr) and dm = dh W_hr
        buffers["dh_steps"] = POOL.take((largest, batch, h0.shape[1]), out)
        buffers["dm"] = POOL.take((batch, hidden), out)
    cuts = _detached_steps(detach_mask, steps, out.dtype, members_of(w_hh))
    if compiled:
        compiled_cuts = _compiled_cuts(cuts, steps, members_of(w_hh))
        d_out = d_out.contiguous()
    else:  # the backward's products dz W_hh and dh W_hr, as products.py takes them
        w_hh_back = w_hh.transpose(-2, -1).contiguous()
        w_hr_back = None if w_hr is None else w_hr.transpose(-2, -1).contiguous()
    for j in range(len(bounds) - 1, -1, -1):
        start, end = bounds[j]
        chunk = {name: chunks[j] for name, chunks in saved.items()}
        c_before = c0 if j == 0 else saved["cells"][j - 1][-1]
        if compiled:
            dz = _compiled_chunk_backward(
                start, end, chunk, c_before, d_out, w_hh, w_hr, state, buffers, compiled_cuts,
                detach_path == "h", batch_sizes, result["bias"],
            )  # fmt: skip
            # torch's addmm takes dz^T as it is (oneDNN would copy it first).
            _weight_grads(result, start, end, dz, x, h0, w_ih, out, chunk, buffers, True)
            continue
        dz = _chunk_backward(
            start, end, chunk, c_before, out, d_out, w_hh_back, w_hr_back, state, buffers, cuts,
            detach_path == "h", batch_sizes,
        )  # fmt: skip
        _weight_grads(result, start, end, dz, x, h0, w_ih, out, chunk, buffers)
    POOL.give_back(buffers.values())
    dh, dc = state["dh"], state["dc"]
    grads_in = {**result, "h0": dh if needs[1] else None, "c0": dc if needs[2] else None}
    return [grads_in[name] for name in GRAD_NAMES]


def _detached_steps(detach_mask: Tensor | None, steps: int, dtype, members: int) -> tuple:
    """(per step: whether the whole batch is detached, or for a population a tuple of K
    such flags, one per member's rows; (T, B, 1) keep factors or None), read once on the host.

    A step detached for the whole batch (or member) needs no recurrent product there.
    """
    if detach_mask is None:
        return [False] * steps, None
    if detach_mask.dim() == 1:
        return detach_mask.tolist(), None
    whole = detach_mask.all(dim=1).tolist()
    if members > 1:
        per_member = detach_mask.unflatten(1, (members, -1))  # (T, K, B)
        member_whole = per_member.all(dim=2)
        if bool((member_whole | ~per_member.any(dim=2)).all()):
            # Each member detaches all its rows or none at each step (its own "batch"
            # scope): per-member flags replace the keep factors.
            return [all(f) or tuple(f) for f in member_whole.tolist()], None
    return whole, (~detach_mask).to(dtype).unsqueeze(-1)


def _compiled_cuts(cuts: tuple, steps: int, members: int) -> tuple[Tensor, Tensor | None]:
    """``_detached_steps``' answer for the compiled steps: (T, K) uint8, whether member k
    (K = 1: the whole batch) is detached at t; (T, B) keep factors or None."""
    whole, keep = cuts
    rows = [list(f) if isinstance(f, tuple) else [bool(f)] * members for f in whole]
    cut = torch.tensor(rows, dtype=torch.uint8).reshape(steps, members)
    return cut, None if keep is None else keep.squeeze(-1).contiguous()


def _compiled_chunk_backward(
    start,
    end,
    chunk,
    c_before,
    d_out,
    w_hh,
    w_hr,
    state,
    buffers,
    cuts,
    detach_h,
    batch_sizes,
    d_bias,
) -> Tensor:
    """``_chunk_backward`` in one call of the compiled recurrence; returns the chunk's
    gate gradients dz (end - start, B, 4H).
    The bias gradient ``d_bias`` (if not None) takes the chunk's share as dz is made."""
    size = end - start
    dz = buffers["dz"][:size]
    dh_steps = None
    if w_hr is not None:
        dh_steps = buffers["dh_steps"][:size]
        if batch_sizes is not None:
            dh_steps.zero_()  # inactive rows add nothing to dW_hr
    if batch_sizes is not None:
        dz.zero_()
    cut, keep = cuts
    cpu_kernel.compiled_ops().backward_chunk(
        chunk["gates"], chunk["cells"], chunk["tanh_cells"], c_before.contiguous(), d_out, w_hh,
        w_hr, state["dh"], state["dc"], dz, dh_steps, buffers.get("dm"), d_bias, cut, keep,
        detach_h, batch_sizes or [], start,
    )  # fmt: skip
    return dz


def _chunk_backward(
    start,
    end,
    chunk,
    c_before,
    out,
    d_out,
    w_hh_back,
    w_hr_back,
    state,
    buffers,
    cuts,
    detach_h,
    batch_sizes,
) -> Tensor:
    """Walk steps [start, end) backwards; return the chunk's gate gradients dz (K, B, 4H)."""
    steps, batch, _ = out.shape
    hidden = c_before.shape[1]
    whole_batch_detached, keep = cuts
    size = end - start
    sizes = None if batch_sizes is None else batch_sizes[start:end]
    dz, coef = buffers["dz"][:size], buffers["coef"][:size]
    if batch_sizes is not None:
        dz.zero_()
    m = out[start:end] if w_hr_back is None else chunk["pre_projection"]
    _gate_derivatives(coef, chunk["gates"], chunk["cells"], chunk["tanh_cells"], m, c_before)
    dz_, dz_ifg, dz_o = (
        steps_of(part, sizes) for part in (dz, dz[..., : 3 * hidden], dz[..., 3 * hidden :])
    )
    coef_ifg, coef_o, coef_c, f = (
        steps_of(part, sizes)
        for part in (
            coef[..., : 3 * hidden],
            coef[..., 3 * hidden : 4 * hidden],
            coef[..., 4 * hidden :],
            chunk["gates"][..., hidden : 2 * hidden],
        )
    )
    dh_steps = None
    if w_hr_back is not None:
        dh_steps = buffers["dh_steps"][:size]
        if batch_sizes is not None:
            dh_steps.zero_()  # inactive rows add nothing to dW_hr
    dh, dc = state["dh"], state["dc"]
    for k in range(size - 1, -1, -1):
        t = start + k
        n = dz_[k].shape[0]
        # Rows whose last step is t take d_out[t] here; the others took it with the
        # recurrent product of step t + 1 below.
        ended = 0 if t == steps - 1 else rows_at(batch_sizes, t + 1, batch)
        if ended < n:
            dh[ended:n] += d_out[t, ended:n]
        dh_t, dc_t = (dh, dc) if n == batch else (dh[:n], dc[:n])
        dm_t = dh_t  # the gradient reaching m_t = o_t * tanh(c_t)
        if w_hr_back is not None:
            dh_steps[k, :n] = dh_t
            dm_t = product(dh_t, w_hr_back, out=buffers["dm"][:n])
        dc_t.addcmul_(dm_t, coef_c[k])
        torch.mul(dm_t, coef_o[k], out=dz_o[k])
        torch.mul(
            coef_ifg[k].view(n, 3, hidden), dc_t.unsqueeze(1), out=dz_ifg[k].view(n, 3, hidden)
        )
        # Into the state entering step t; dh also takes d_out[t - 1] in the same op.
        d_out_before = d_out[t - 1, :n] if t > 0 else torch.zeros_like(dh_t)
        cut = (whole_batch_detached[t], None if keep is None else keep[t, :n])
        _into_state_before(dh_t, dc_t, dz_[k], f[k], w_hh_back, d_out_before, cut, detach_h)
    return dz


def _into_state_before(dh_t, dc_t, dz_t, f_t, w_hh_back, d_out_before, cut, detach_h) -> None:
    """Turn dh_t, dc_t (in place) into the gradients reaching h_{t-1}, c_{t-1}.

    ``cut``: (whole batch detached at t, or per-member flags; per-row keep factors (n, 1)
    or None); the detached path receives nothing, and a step detached for the whole
    batch (or member) on path h skips the recurrent product there.
    """
    whole_batch, keep = cut
    if isinstance(whole_batch, tuple):  # a population whose members detach differently
        _into_state_before_by_member(
            dh_t, dc_t, dz_t, f_t, w_hh_back, d_out_before, whole_batch, detach_h
        )
    elif detach_h:
        dc_t.mul_(f_t)
        if whole_batch:
            dh_t.copy_(d_out_before)
        elif keep is None:
            product(dz_t, w_hh_back, out=dh_t, add=d_out_before)
        else:
            product(dz_t, w_hh_back, out=dh_t)
            dh_t.mul_(keep).add_(d_out_before)
    else:
        product(dz_t, w_hh_back, out=dh_t, add=d_out_before)
        if whole_batch:
            dc_t.zero_()
        else:
            dc_t.mul_(f_t)
            if keep is not None:
                dc_t.mul_(keep)


def _into_state_before_by_member(dh_t, dc_t, dz_t, f_t, w_hh_back, d_out_before, cuts, detach_h):
    """``_into_state_before`` where member k's rows are all detached (cuts[k]) or none.

    On path h each member's product is its own (a batched product costs as much as the
    members' products one by one on a CPU), so the detached members' are skipped.
    """
    dc_t.mul_(f_t)
    rows = dh_t.shape[0] // len(cuts)
    for k, cut in enumerate(cuts):
        part = slice(k * rows, (k + 1) * rows)
        if not detach_h:
            product(dz_t[part], w_hh_back[k], out=dh_t[part], add=d_out_before[part])
            if cut:
                dc_t[part].zero_()
        elif cut:
            dh_t[part].copy_(d_out_before[part])
        else:
            product(dz_t[part], w_hh_back[k], out=dh_t[part], add=d_out_before[part])


def _weight_grads(result, start, end, dz, x, h0, w_ih, out, chunk, buffers, compiled=False):
    """Add one chunk's share of the weight and input gradients: large products.

    ``compiled``: the products on torch's addmm (see ``block_product``), and the bias
    gradient already taken by the compiled steps.
    """
    size = end - start
    onednn = False if compiled else None
    if result["w_hh"] is not None:
        # sum_t dz_t^T h_{t-1}, h_{t-1} being out[t-1] (or h0 at t = 0)
        if start == 0:
            add_outer_(result["w_hh"], dz[0], h0, onednn)
            if size > 1:
                add_outer_(result["w_hh"], dz[1:], out[: size - 1], onednn)
        else:
            add_outer_(result["w_hh"], dz, out[start - 1 : end - 1], onednn)
    if result["w_hr"] is not None:  # sum_t dh_t^T m_t
        add_outer_(result["w_hr"], buffers["dh_steps"][:size], chunk["pre_projection"], onednn)
    if result["bias"] is not None and not compiled:
        members = result["bias"].shape[0] if result["bias"].dim() == 2 else 1  # (K, 4H)
        result["bias"] += rows_sum(dz, members)
    if w_ih is None:
        if result["x"] is not None:
            result["x"][start:end] = dz
    else:
        if result["w_ih"] is not None:
            add_outer_(result["w_ih"], dz, x[start:end], onednn)
        if result["x"] is not None:  # dz W_ih
            w_ih_back = w_ih.transpose(-2, -1).contiguous()
            block_product(dz, w_ih_back, out=result["x"][start:end], onednn=onednn)


def _gate_derivatives(
    coef: Tensor, gates: Tensor, cells: Tensor, tanh_cells: Tensor, m: Tensor, c_before: Tensor
) -> None:
    """Fill ``coef`` (K, B, 5H) with the factors of the backward that skip the recurrence.

    For a chunk of K steps with activations ``gates`` (K, B, 4H), cells, tanh(cells) and
    m = o tanh(c) (K, B, H; the output without projection), and ``c_before`` the cell
    state entering the chunk (B, H): dz_i = dc g i(1-i), dz_f = dc c_{t-1} f(1-f),
    dz_g = dc i(1-g^2), dz_o = dm tanh(c) o(1-o), and dm reaches c through
    o (1 - tanh(c)^2) = o - m tanh(c): coef = [g i(1-i), c_{t-1} f(1-f), i(1-g^2),
    tanh(c) o(1-o), o - m tanh(c)]. Eight operations.
    """
    i, f, g, o = gates.chunk(4, 2)
    ci, cf, cg, co, ch = coef.chunk(5, 2)
    torch.addcmul(gates, gates, gates, value=-1, out=coef[..., : 4 * i.shape[2]])  # s - s^2
    ci.mul_(g)
    cf[1:].mul_(cells[:-1])
    cf[0].mul_(c_before)
    torch.mul(g, g, out=cg)
    torch.addcmul(i, i, cg, value=-1, out=cg)
    co.mul_(tanh_cells)
    torch.addcmul(o, m, tanh_cells, value=-1, out=ch)
