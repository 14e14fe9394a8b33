"""The fused backend: one autograd node per layer and direction, with a hand-written backward.

Why this is fast on a CPU (and correct on any device):

* A step is a dozen small in-place operations into preallocated buffers: the
  recurrent product added onto the input projection (computed for a chunk of
  steps at once), one sigmoid for all four gates (tanh taken as 2 sigmoid(2x) - 1,
  several times cheaper on the CPU), the cell and the output.
* The backward walks time once carrying dh and dc: five operations a step. The
  gate derivatives that do not depend on the recurrence are computed for a whole
  chunk of steps at once. On a step detached for the whole batch the recurrent
  product ``dz @ W_hh`` is skipped entirely; for per-example masks the detached
  rows are zeroed.
* Weight gradients are large matrix products, one per chunk of steps.
* Work is done in chunks of a few MB, which stay in cache, and the chunks' buffers
  are reused from one minibatch to the next (``buffer_pool``) instead of being
  page-faulted in anew.

Gate order is PyTorch's (i, f, g, o): the gradients of i, f and g are all driven
by dc and form one contiguous block [0, 3H), o's by dh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hdetach.ops.buffer_pool import POOL

CHUNK_BYTES = 4 * 2**20


def _chunks(steps: int, row_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of steps whose (steps, B, 4H) gate block is about CHUNK_BYTES."""
    size = max(1, min(steps, CHUNK_BYTES // row_bytes))
    return [(s, min(s + size, steps)) for s in range(0, steps, size)]


def _steps(block: Tensor, sizes: Sequence[int] | None) -> Sequence[Tensor]:
    """Views of ``block[k]`` (K, B, ...) for each step, cut to the active rows when packed."""
    if sizes is None:
        return block.unbind(0)
    return [block[k, :n] for k, n in enumerate(sizes)]


def _tanh(x: Tensor, out: Tensor, one: Tensor, two: Tensor) -> Tensor:
    """tanh(x) into ``out`` as 2 sigmoid(2x) - 1: four fast kernels beat one slow one.

    ``one`` and ``two`` are 0-d tensors: a Python scalar costs a conversion per call.
    """
    torch.mul(x, two, out=out)
    return out.sigmoid_().mul_(two).sub_(one)


def _rows_at(batch_sizes: Sequence[int] | None, t: int, batch: int) -> int:
    return batch if batch_sizes is None else batch_sizes[t]


class FusedLSTM(torch.autograd.Function):
    """One layer, one direction: ``(x, h0, c0, w_ih, w_hh, bias) -> (out, h_n, c_n)``.

    ``x`` is (T, B, I) and the gates are ``x @ w_ih.T + bias + h @ w_hh.T``; with
    ``w_ih = None`` (and ``bias = None``), ``x`` is already the input's contribution
    to the gates, (T, B, 4H). Mask, path and packed layout as in ``lstm_recurrence``.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor | None,
        w_hh: Tensor,
        bias: Tensor | None,
        detach_mask: Tensor | None,
        detach_path: str,
        batch_sizes: tuple[int, ...] | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, _ = x.shape
        hidden = h0.shape[1]
        bounds = _chunks(steps, batch * 4 * hidden * x.element_size())
        new = torch.zeros if batch_sizes is not None else torch.empty
        like = {"dtype": x.dtype, "device": x.device}
        out = new(steps, batch, hidden, **like)
        # tanh is several times slower than sigmoid in PyTorch's CPU kernels, so tanh(z)
        # is taken as 2 sigmoid(2z) - 1: the g rows of the recurrent weight (here) and of
        # the input projection (per chunk) are doubled, and one sigmoid serves all gates.
        w_hh_t = w_hh.t().clone()
        w_hh_t[:, 2 * hidden : 3 * hidden] *= 2
        one, two = (torch.tensor(v, **like) for v in (1.0, 2.0))
        # Without a backward to serve, one chunk's buffers are reused for every chunk.
        keep_chunks = any(ctx.needs_input_grad)
        gate_chunks, cell_chunks, tanh_cell_chunks = [], [], []
        h_n, c_n = torch.empty_like(h0), torch.empty_like(c0)  # filled as rows finish
        h, c = h0, c0
        for start, end in bounds:
            size = end - start
            if keep_chunks or not gate_chunks:
                gates, cells, tanh_cells = (
                    POOL.take((size, batch, width), x) for width in (4 * hidden, hidden, hidden)
                )
                gate_chunks.append(gates)
                cell_chunks.append(cells)
                tanh_cell_chunks.append(tanh_cells)
                if batch_sizes is not None:  # rows past their end must hold finite values
                    cells.zero_()
                    tanh_cells.zero_()
            else:
                gates, cells, tanh_cells = (
                    chunks[0][:size] for chunks in (gate_chunks, cell_chunks, tanh_cell_chunks)
                )
            if w_ih is None:
                gates.copy_(x[start:end])
            elif bias is None:
                torch.mm(x[start:end].flatten(0, 1), w_ih.t(), out=gates.view(-1, 4 * hidden))
            else:
                torch.addmm(
                    bias, x[start:end].flatten(0, 1), w_ih.t(), out=gates.view(-1, 4 * hidden)
                )
            gates[..., 2 * hidden : 3 * hidden] *= 2
            sizes = None if batch_sizes is None else batch_sizes[start:end]
            # Per-step views, made once per chunk: the loop below is only the arithmetic.
            z, i, f, g, o = (_steps(part, sizes) for part in (gates, *gates.chunk(4, 2)))
            c_, tc_, h_ = (_steps(part, sizes) for part in (cells, tanh_cells, out[start:end]))
            for k in range(end - start):
                n = z[k].shape[0]
                if n < batch:
                    h, c = h[:n], c[:n]
                z[k].addmm_(h, w_hh_t)
                z[k].sigmoid_()
                g[k].mul_(two).sub_(one)
                torch.mul(f[k], c, out=c_[k])
                c_[k].addcmul_(i[k], g[k])
                _tanh(c_[k], tc_[k], one, two)
                torch.mul(o[k], tc_[k], out=h_[k])
                h, c = h_[k], c_[k]
                ended = 0 if start + k == steps - 1 else _rows_at(batch_sizes, start + k + 1, batch)
                if ended < n:  # rows [ended, n) have taken their last step
                    h_n[ended:n] = h[ended:n]
                    c_n[ended:n] = c[ended:n]

        POOL.give_back_when_freed(ctx, gate_chunks + cell_chunks + tanh_cell_chunks)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, out, detach_mask)
        # Chunk lists cannot go through save_for_backward; they are ours alone.
        ctx.chunks = (bounds, gate_chunks, cell_chunks, tanh_cell_chunks)
        ctx.detach_path = detach_path
        ctx.batch_sizes = batch_sizes
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        x, h0, c0, w_ih, w_hh, out, detach_mask = ctx.saved_tensors
        bounds, gate_chunks, cell_chunks, tanh_cell_chunks = ctx.chunks
        batch_sizes = ctx.batch_sizes
        steps, batch, hidden = out.shape
        needs_x, _, _, needs_w_ih, needs_w_hh, needs_bias = ctx.needs_input_grad[:6]

        # Which steps stop the gradient, read once on the host: a step detached for
        # the whole batch needs no recurrent product at all.
        keep = None
        whole_batch_detached = [False] * steps
        if detach_mask is not None:
            if detach_mask.dim() == 1:
                whole_batch_detached = detach_mask.tolist()
            else:
                whole_batch_detached = detach_mask.all(dim=1).tolist()
                keep = (~detach_mask).to(out.dtype).unsqueeze(-1)  # (T, B, 1)
        detach_h = ctx.detach_path == "h"

        d_x = x.new_empty(x.shape) if needs_x else None
        d_w_ih = torch.zeros_like(w_ih) if needs_w_ih else None
        d_w_hh = torch.zeros_like(w_hh) if needs_w_hh else None
        d_bias = out.new_zeros(4 * hidden) if needs_bias else None
        # Running gradients w.r.t. the state entering the current step, taking in
        # d_out of the step before as they go; rows that are inactive (packed input)
        # carry theirs through untouched.
        dh = d_h_n.clone()
        dc = d_c_n.clone()
        largest = max(e - s for s, e in bounds)
        dz_buffer = POOL.take((largest, batch, 4 * hidden), out).zero_()
        coef_buffer = POOL.take((largest, batch, 5 * hidden), out)

        for j in range(len(bounds) - 1, -1, -1):
            (start, end), gates, cells = bounds[j], gate_chunks[j], cell_chunks[j]
            size = end - start
            sizes = None if batch_sizes is None else batch_sizes[start:end]
            dz = dz_buffer[:size]
            if batch_sizes is not None:
                dz.zero_()
            coef = coef_buffer[:size]
            c_before = c0 if j == 0 else cell_chunks[j - 1][-1]
            _gate_derivatives(coef, gates, cells, tanh_cell_chunks[j], out[start:end], c_before)
            dz_, dz_ifg, dz_o = (
                _steps(part, sizes) for part in (dz, dz[..., : 3 * hidden], dz[..., 3 * hidden :])
            )
            coef_ifg, coef_o, coef_c, f = (
                _steps(part, sizes)
                for part in (
                    coef[..., : 3 * hidden],
                    coef[..., 3 * hidden : 4 * hidden],
                    coef[..., 4 * hidden :],
                    gates[..., hidden : 2 * hidden],
                )
            )
            for k in range(size - 1, -1, -1):
                t = start + k
                n = dz_[k].shape[0]
                # Rows whose last step is t take d_out[t] here; the others took it with
                # the recurrent product of step t + 1 below.
                ended = 0 if t == steps - 1 else _rows_at(batch_sizes, t + 1, batch)
                if ended < n:
                    dh[ended:n] += d_out[t, ended:n]
                dh_t, dc_t = (dh, dc) if n == batch else (dh[:n], dc[:n])
                dc_t.addcmul_(dh_t, coef_c[k])
                torch.mul(dh_t, coef_o[k], out=dz_o[k])
                torch.mul(
                    coef_ifg[k].view(n, 3, hidden),
                    dc_t.unsqueeze(1),
                    out=dz_ifg[k].view(n, 3, hidden),
                )
                # Into the state entering step t; dh also takes d_out[t - 1] in the same op.
                d_out_before = d_out[t - 1, :n] if t > 0 else torch.zeros_like(dh_t)
                if detach_h:
                    dc_t.mul_(f[k])
                    if whole_batch_detached[t]:
                        dh_t.copy_(d_out_before)
                    elif keep is None:
                        torch.addmm(d_out_before, dz_[k], w_hh, out=dh_t)
                    else:
                        torch.mm(dz_[k], w_hh, out=dh_t)
                        dh_t.mul_(keep[t, :n]).add_(d_out_before)
                else:
                    torch.addmm(d_out_before, dz_[k], w_hh, out=dh_t)
                    if whole_batch_detached[t]:
                        dc_t.zero_()
                    else:
                        dc_t.mul_(f[k])
                        if keep is not None:
                            dc_t.mul_(keep[t, :n])

            flat_dz = dz.flatten(0, 1)
            if d_w_hh is not None:
                # sum_t dz_t^T h_{t-1}, h_{t-1} being out[t-1] (or h0 at t = 0)
                if start == 0:
                    d_w_hh.addmm_(dz[0].t(), h0)
                    if size > 1:
                        d_w_hh.addmm_(dz[1:].flatten(0, 1).t(), out[: size - 1].flatten(0, 1))
                else:
                    d_w_hh.addmm_(flat_dz.t(), out[start - 1 : end - 1].flatten(0, 1))
            if d_bias is not None:
                d_bias += flat_dz.sum(0)
            if w_ih is None:
                if d_x is not None:
                    d_x[start:end] = dz
            else:
                if d_w_ih is not None:
                    d_w_ih.addmm_(flat_dz.t(), x[start:end].flatten(0, 1))
                if d_x is not None:
                    torch.mm(flat_dz, w_ih, out=d_x[start:end].view(-1, x.shape[2]))
        POOL.give_back([dz_buffer, coef_buffer])
        return d_x, dh, dc, d_w_ih, d_w_hh, d_bias, None, None, None


def _gate_derivatives(
    coef: Tensor, gates: Tensor, cells: Tensor, tanh_cells: Tensor, h: Tensor, c_before: Tensor
) -> None:
    """Fill ``coef`` (K, B, 5H) with the factors of the backward that skip the recurrence.

    For a chunk of K steps with activations ``gates`` (K, B, 4H), cells, tanh(cells) and
    outputs h (K, B, H), and ``c_before`` the cell state entering the chunk (B, H):
    dz_i = dc g i(1-i), dz_f = dc c_{t-1} f(1-f), dz_g = dc i(1-g^2), dz_o = dh tanh(c) o(1-o),
    and dh reaches c through o (1 - tanh(c)^2) = o - h tanh(c): coef = [g i(1-i),
    c_{t-1} f(1-f), i(1-g^2), tanh(c) o(1-o), o - h tanh(c)]. Eight operations.
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
    torch.addcmul(o, h, tanh_cells, value=-1, out=ch)
