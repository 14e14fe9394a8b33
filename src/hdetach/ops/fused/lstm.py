"""The fused backend: one autograd node per layer and direction, with a hand-written backward.

Why this is fast on a CPU (and correct on any device):

* A step is a dozen small in-place operations into preallocated buffers: the
  recurrent product added onto the input projection (computed for a chunk of
  steps at once), one sigmoid for all four gates (tanh taken as 2 sigmoid(2x) - 1,
  several times cheaper on the CPU), the cell and the output.
* The backward (``backward.py``) walks time once carrying dh and dc: five
  operations a step. On a step detached for the whole batch the recurrent product
  ``dz @ W_hh`` is skipped entirely; for per-example masks the detached rows are zeroed.
* Weight gradients are large matrix products, one per chunk of steps.
* Work is done in chunks of a few MB, which stay in cache, and the chunks' buffers
  are reused from one minibatch to the next (``buffer_pool``) instead of being
  page-faulted in anew.
* On a CPU (float32, float64) each chunk's steps, forward and backward, run in one call
  of a compiled C++ recurrence (``cpu_kernel.py``, ``csrc/lstm_cpu.cpp``): per step one
  product and one fused pass over the gates instead of a dozen eager operations. The
  eager steps below remain for other devices and dtypes, torch.compile, torch.func,
  and where the extension cannot be built (``HDETACH_CPU_KERNEL``).

With a projection (``weight_hr``, P x H, as ``torch.nn.LSTM(proj_size=P)``) a step
also computes h_t = W_hr m_t from m_t = o_t * tanh(c_t), and the state carried
through time is h_t of size P.

Gate order is PyTorch's (i, f, g, o): the gradients of i, f and g are all driven
by dc and form one contiguous block [0, 3H), o's by dh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

from hdetach.ops.fused import cpu_kernel
from hdetach.ops.fused.backward import fused_backward
from hdetach.ops.fused.buffer_pool import POOL
from hdetach.ops.fused.differentiable import differentiable_backward
from hdetach.ops.fused.products import block_product, product, sigmoid_of_sum_
from hdetach.ops.members import members_of, rows_linear
from hdetach.ops.packed import rows_at, steps_of
from hdetach.ops.reference import reference_lstm_recurrence

CHUNK_BYTES = 4 * 2**20


def _chunks(steps: int, row_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of steps whose (steps, B, 4H) gate block is about CHUNK_BYTES."""
    size = max(1, min(steps, CHUNK_BYTES // row_bytes))
    return [(s, min(s + size, steps)) for s in range(0, steps, size)]


def _tanh(x: Tensor, out: Tensor, one: Tensor, two: Tensor) -> Tensor:
    """tanh(x) into ``out`` as 2 sigmoid(2x) - 1: four fast kernels beat one slow one.

    ``one`` and ``two`` are 0-d tensors: a Python scalar costs a conversion per call.
    """
    torch.mul(x, two, out=out)
    return out.sigmoid_().mul_(two).sub_(one)


def _take_chunk(saved: dict, size: int, batch: int, widths: dict[str, int], like: Tensor, packed):
    """Buffers (size, B, width) for one chunk's activations, appended to ``saved``'s lists."""
    buffers = {name: POOL.take((size, batch, width), like) for name, width in widths.items()}
    for name, buffer in buffers.items():
        saved[name].append(buffer)
        if packed and name != "gates":  # rows past their end must hold finite values
            buffer.zero_()
    return buffers


def _forward(x, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, save: bool, compiled: bool) -> tuple:
    """Outputs (out, h_n, c_n) and the activations (chunk bounds, pooled buffers).

    Without ``save`` one chunk's buffers are reused for every chunk: only the outputs count.
    ``compiled``: the steps of each chunk run in one call of the compiled recurrence
    (``cpu_kernel.py``), which takes tanh directly: nothing is doubled.
    """
    steps, batch, _ = x.shape
    hidden = c0.shape[1]
    # Chunks of the steps one member alone would take, so that a population member's
    # per-chunk products are its lone twin's.
    bounds = _chunks(steps, batch // members_of(w_hh) * 4 * hidden * x.element_size())
    like = {"dtype": x.dtype, "device": x.device}
    new = torch.zeros if batch_sizes is not None else torch.empty
    out = new(steps, batch, h0.shape[1], **like)
    # tanh is several times slower than sigmoid in PyTorch's CPU kernels, so tanh(z)
    # is taken as 2 sigmoid(2z) - 1: the g rows of the recurrent weight (here) and of
    # the input projection (per chunk) are doubled, and one sigmoid serves all gates.
    if compiled:  # it reads whole rows of the state through pointers
        h, c = h0.contiguous(), c0.contiguous()
    else:
        h, c = h0, c0
        w_hh_doubled = w_hh.clone()
        w_hh_doubled[..., 2 * hidden : 3 * hidden, :] *= 2
    widths = {"gates": 4 * hidden, "cells": hidden, "tanh_cells": hidden}
    if w_hr is not None:
        widths["pre_projection"] = hidden  # m_t = o_t * tanh(c_t)
    saved = {name: [] for name in widths}
    h_n, c_n = torch.empty_like(h0), torch.empty_like(c0)  # filled as rows finish
    for start, end in bounds:
        size = end - start
        if save or not saved["gates"]:
            buffers = _take_chunk(saved, size, batch, widths, x, batch_sizes is not None)
        else:  # without a backward to serve, one chunk's buffers serve every chunk
            buffers = {name: chunks[0][:size] for name, chunks in saved.items()}
        gates = buffers["gates"]
        if w_ih is None:
            gates.copy_(x[start:end])
        else:
            # The compiled path writes the input part in place with torch's addmm.
            block_product(
                x[start:end], w_ih, out=gates, bias=bias, onednn=False if compiled else None
            )
        if compiled:
            if not save:  # the reused cell buffer is written while c is read
                c = c.clone()
            cpu_kernel.compiled_ops().forward_chunk(
                gates, h, c, w_hh, w_hr, out, buffers["cells"], buffers["tanh_cells"],
                buffers.get("pre_projection"), h_n, c_n, batch_sizes or [], start,
            )  # fmt: skip
            h, c = out[end - 1], buffers["cells"][size - 1]
            continue
        gates[..., 2 * hidden : 3 * hidden] *= 2
        sizes = None if batch_sizes is None else batch_sizes[start:end]
        h, c = _chunk_steps(
            start, sizes, buffers, out, (h, c), (h_n, c_n), w_hh_doubled, w_hr, batch_sizes
        )
    return out, h_n, c_n, (bounds, saved)


def _chunk_steps(start, sizes, buffers, out, state, final, w_hh_doubled, w_hr, batch_sizes):
    """Run the steps of one chunk whose input part of the gates is in ``buffers["gates"]``.

    ``state``: (h, c) entering the chunk; returns the state leaving it. Rows that take
    their last step here are written into ``final`` = (h_n, c_n).
    """
    steps, batch, _ = out.shape
    gates = buffers["gates"]
    h, c = state
    h_n, c_n = final
    one, two = (torch.tensor(v, dtype=out.dtype, device=out.device) for v in (1.0, 2.0))
    # Per-step views, made once per chunk: the loop below is only the arithmetic.
    z, i, f, g, o = (steps_of(part, sizes) for part in (gates, *gates.chunk(4, 2)))
    end = start + gates.shape[0]
    c_, tc_, h_ = (
        steps_of(part, sizes) for part in (buffers["cells"], buffers["tanh_cells"], out[start:end])
    )
    m_ = h_ if w_hr is None else steps_of(buffers["pre_projection"], sizes)
    for k in range(gates.shape[0]):
        n = z[k].shape[0]
        if n < batch:
            h, c = h[:n], c[:n]
        sigmoid_of_sum_(z[k], h, w_hh_doubled)
        g[k].mul_(two).sub_(one)
        torch.mul(f[k], c, out=c_[k])
        c_[k].addcmul_(i[k], g[k])
        _tanh(c_[k], tc_[k], one, two)
        torch.mul(o[k], tc_[k], out=m_[k])
        if w_hr is not None:
            product(m_[k], w_hr, out=h_[k])
        h, c = h_[k], c_[k]
        ended = 0 if start + k == steps - 1 else rows_at(batch_sizes, start + k + 1, batch)
        if ended < n:  # rows [ended, n) have taken their last step
            h_n[ended:n] = h[ended:n]
            c_n[ended:n] = c[ended:n]
    return h, c


class _FusedLSTM(torch.autograd.Function):
    """``(x, h0, c0, w_ih, w_hh, bias, w_hr, ...) -> (out, h_n, c_n, activations)``.

    Reached through ``fused_lstm_layer`` and ``fused_lstm_recurrence`` only: with
    ``w_ih = None`` (and ``bias = None``), ``x`` is already the gates' input part.
    """

    @staticmethod
    def forward(
        x, h0, c0, w_ih, w_hh, bias, w_hr, detach_mask, detach_path, batch_sizes, save, compiled
    ):
        return _forward(x, h0, c0, w_ih, w_hh, bias, w_hr, batch_sizes, save, compiled)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, h0, c0, w_ih, w_hh, bias, w_hr, detach_mask, detach_path, batch_sizes, save, compiled = (
            inputs
        )
        out, _, _, activations = output
        ctx.compiled = compiled
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, bias, w_hr, out, detach_mask)
        ctx.detach_path = detach_path
        ctx.batch_sizes = batch_sizes
        # Chunk lists cannot go through save_for_backward; they are this node's alone,
        # and go back to the pool when the node is freed.
        ctx.activations = activations
        if activations is not None:  # None from the vmap rule below
            buffers = [b for chunks in activations[1].values() for b in chunks]
            POOL.give_back_when_freed(ctx, buffers)

    @staticmethod
    def vmap(info, in_dims, *inputs):
        """Under ``torch.func.vmap`` the in-place forward cannot run: the values come from
        the reference recurrence, vmapped; the backward then takes its differentiable path."""
        *tensors, detach_mask, detach_path, batch_sizes, _, _ = inputs

        def layer(x, h0, c0, w_ih, w_hh, bias, w_hr, detach_mask):
            gates_x = x if w_ih is None else rows_linear(x, w_ih, bias)
            return reference_lstm_recurrence(
                gates_x, h0, c0, w_hh, detach_mask, detach_path, batch_sizes, weight_hr=w_hr
            )

        outputs = torch.vmap(layer, in_dims=tuple(in_dims[:8]))(*tensors, detach_mask)
        return (*outputs, None), (0, 0, 0, None)

    @staticmethod
    def backward(ctx, d_out, d_h_n, d_c_n, _):
        x, h0, c0, w_ih, w_hh, bias, w_hr, out, detach_mask = ctx.saved_tensors
        inputs = (x, h0, c0, w_ih, w_hh, bias, w_hr)
        needs = ctx.needs_input_grad[:7]
        mask_and_layout = (detach_mask, ctx.detach_path, ctx.batch_sizes)
        if (
            torch.is_grad_enabled()
            or ctx.activations is None
            or torch.compiler.is_compiling()
            or _wrapped(d_out, d_h_n, d_c_n, x)
            or _batched_by_autograd(d_out, d_h_n, d_c_n)
        ):
            # Double backward (create_graph=True), a torch.func transform or batched
            # gradients: the in-place kernels of the fast backward are not differentiable
            # (see differentiable.py) and have no batching rule.
            # torch.compile: the fast backward reads the detach mask on the host, which
            # would break its graph; the differentiable one traces whole.
            grads = differentiable_backward(inputs, needs, (d_out, d_h_n, d_c_n), *mask_and_layout)
        else:
            grads = fused_backward(
                inputs, needs, out, ctx.activations, (d_out, d_h_n, d_c_n), *mask_and_layout,
                compiled=ctx.compiled,
            )  # fmt: skip
        return (*grads, None, None, None, None, None)


def _wrapped(*tensors: Tensor | None) -> bool:
    """Whether any tensor belongs to a torch.func transform (grad, vmap). While torch.compile
    traces, none does: the tensors it sees are its own stand-ins."""
    if torch.compiler.is_compiling():
        return False
    return any(t is not None and is_functorch_wrapped_tensor(t) for t in tensors)


# The dispatch key of the batched tensors of torch's older vmap (torch._vmap_internals),
# not torch.func's: autograd batches the gradients with it for
# torch.autograd.grad(..., is_grads_batched=True) and gradcheck's check_batched_grad.
# torch._C.DispatchKey does not list it, so it is looked up by name (None if torch drops it).
_LEGACY_BATCHED = torch._C._parse_dispatch_key("Batched")


def _batched_by_autograd(*grads: Tensor | None) -> bool:
    """Whether autograd runs this backward on a batch of gradients (``is_grads_batched``).

    Those are the older vmap's tensors, which ``_wrapped`` does not see; a few dispatch-key
    lookups, once per backward call."""
    if _LEGACY_BATCHED is None:
        return False
    return any(g is not None and torch._C._dispatch_keys(g).has(_LEGACY_BATCHED) for g in grads)


def _apply(x, h0, c0, w_ih, w_hh, bias, w_hr, detach_mask, detach_path, batch_sizes):
    tensors = (x, h0, c0, w_ih, w_hh, bias, w_hr)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    sizes = None if batch_sizes is None else tuple(batch_sizes)
    compiled = cpu_kernel.uses_compiled(*tensors, detach_mask)
    args = (*tensors, detach_mask, detach_path, sizes, save, compiled)
    if not save and not _wrapped(
        *tensors, detach_mask
    ):  # inference: no node, the buffers go straight back to the pool
        with torch.no_grad():
            out, h_n, c_n, (_, saved) = _forward(
                x, h0, c0, w_ih, w_hh, bias, w_hr, sizes, False, compiled
            )
        POOL.give_back([b for chunks in saved.values() for b in chunks])
        return out, h_n, c_n
    out, h_n, c_n, _ = _FusedLSTM.apply(*args)
    return out, h_n, c_n


def fused_lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor | None = None,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | None = None,
    *,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer from its input x (T, B, I), gates ``x @ weight_ih.T + bias + h @ weight_hh.T``.

    ``bias`` is b_ih + b_hh (4H,) or None. Contract of
    :func:`hdetach.functional.lstm_layer`, arguments already validated.
    """
    return _apply(
        x, h0, c0, weight_ih, weight_hh, bias, weight_hr, detach_mask, detach_path, batch_sizes
    )


def fused_lstm_recurrence(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | None = None,
    *,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer from the gates' input part gates_x (T, B, 4H).

    Contract of :func:`hdetach.functional.lstm_recurrence`, arguments already validated.
    """
    return _apply(
        gates_x, h0, c0, None, weight_hh, None, weight_hr, detach_mask, detach_path, batch_sizes
    )
