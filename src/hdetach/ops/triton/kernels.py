"""The triton backend's kernels: one persistent program per batch tile walks all T steps.

Why they are shaped this way (the recurrence, not arithmetic, bounds these sizes):

* Batch rows are independent through time, so the grid is one program per tile of
  ``BLOCK_B`` rows and each program walks all T steps by itself: one launch for the
  forward, one for the backward, no synchronisation between programs (by default).
  Inside a step, the program computes the four gate pre-activations for ``BLOCK_N``
  hidden units at a time, accumulating ``h_{t-1} @ W_hh^T`` over ``BLOCK_K``-wide
  slices, and applies the gate nonlinearities, the cell update and (backward) the
  detach mask in registers.
* W_hh is read every step; it is the same few hundred KiB at every step, so after the
  first step it is served from L2 (and L1 where it fits), never from DRAM.
* The running state (h, c forward; dh, dc backward) lives in float32 ping-pong
  buffers of shape (2, B, H): step t reads slot t % 2 and writes the other one, so a
  single CTA barrier per phase orders the steps, and it stays float32 whatever the
  activation dtype (a bfloat16 cell state would drift over hundreds of steps).
* The backward skips the recurrent product ``dz @ W_hh`` in a tile where every active
  row is detached at that step (path "h"): with a per-step mask shared by the batch
  that is every detached step, which is what makes h-detach's backward cheaper.
* A population of K independent LSTMs (K weight matrices, K * B rows) runs in the same
  launch: the member is grid axis 2, and each program offsets its weights and rows by
  its member's.
* With SPLIT > 1 (see ``lstm._config``) a batch tile's hidden units are spread
  over several programs (grid axis 1) that meet at a barrier on global-memory flags
  every step and exchange h (forward) and dz (backward) through L2. The backward skips
  the barrier, too, on steps that skip the product.

Triton decides when a kernel is decorated whether it is compiled for a GPU or run by
its CPU interpreter, so this module exists in two builds (see ``loader``): the
host code in ``lstm`` is handed the build that fits its tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Decided when the kernels are decorated: True in the build made for Triton's CPU
# interpreter, which runs them on CPU tensors.
INTERPRETED = bool(triton.knobs.runtime.interpret)

# The kernels call only Triton builtins and the helpers below, never the @jit functions
# of triton.language.standard (tl.sigmoid, tl.max, tl.zeros, ...): those are decorated
# when triton is first imported, so a test cannot switch them to the interpreter later.


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1): saturates to +-1 without overflow (e^{2x} -> inf gives 1).
    # Written out because libdevice's tanh is not available under the interpreter.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _minimum(a, b):
    return tl.minimum(a, b)


@triton.jit
def _sync_programs(flags_ptr, target, SPLIT: tl.constexpr):
    """Barrier among the SPLIT programs of one batch tile (grid axis 1), for the Nth time.

    ``flags_ptr``: their (SPLIT,) int32 progress flags, zero at launch; ``target`` = N.
    Each program publishes N with release semantics, then waits with acquire semantics
    until every flag reaches N (the pattern of a cooperative-groups grid sync). Flags are
    written by exchange, not incremented, so it does not matter how many threads of the
    program issue the atomic. Needs all programs resident at once (see ``_config``).
    """
    tl.debug_barrier()  # every thread's stores of this phase precede the release below
    tl.atomic_xchg(flags_ptr + tl.program_id(1), target, sem="release", scope="gpu")
    flags = flags_ptr + tl.arange(0, SPLIT)
    seen = tl.reduce(tl.atomic_add(flags, 0, sem="acquire", scope="gpu"), 0, _minimum)
    while seen < target:
        seen = tl.reduce(tl.atomic_add(flags, 0, sem="acquire", scope="gpu"), 0, _minimum)
    tl.debug_barrier()


@triton.jit
def _member_tile(weight_ptr, flags_ptr, B, H, BLOCK_B: tl.constexpr, SPLIT: tl.constexpr):
    """This program's rows of the batch, which of them exist, and its member's W_hh and flags.

    Grid axis 2 is the member, axis 0 the batch tile within it: a tile never straddles
    two members, so its rows all share one weight matrix (and its skip decisions).
    """
    member = tl.program_id(2)
    local_rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rows = member * B + local_rows
    weights = weight_ptr + member * 4 * H * H
    flags = flags_ptr + (member * tl.num_programs(0) + tl.program_id(0)) * SPLIT
    return rows, local_rows < B, weights, flags


@triton.jit
def lstm_forward_kernel(
    gates_x_ptr,  # (T, ROWS, 4H) input contribution to the gates
    weight_ptr,  # (members, 4H, H) W_hh of each member
    lengths_ptr,  # (ROWS,) int32 sequence lengths (PACKED only)
    out_ptr,  # (T, ROWS, H) outputs
    gates_ptr,  # (T, ROWS, 4H) gate activations i, f, g, o (SAVE only)
    cells_ptr,  # (T + 1, ROWS, H) cell states, [0] = c0 written by the host (SAVE only)
    h_state_ptr,  # (2, ROWS, H) float32 ping-pong h, [0] = h0
    c_state_ptr,  # (2, ROWS, H) float32 ping-pong c, [0] = c0
    flags_ptr,  # (members, batch tiles, SPLIT) int32 zeros: barrier flags (SPLIT > 1)
    T,
    B,  # rows of one member; member k owns rows [k B, (k + 1) B) of ROWS = members * B
    ROWS,
    H,
    HP: tl.constexpr,  # H rounded up to a power of two (>= 16)
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,  # programs sharing a batch tile, each owning HP / SPLIT hidden units
    SHARED_CACHE: tl.constexpr,  # cache modifier of loads of other programs' results
    PACKED: tl.constexpr,
    SAVE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    rows, row_ok, weight_ptr, flags_ptr = _member_tile(weight_ptr, flags_ptr, B, H, BLOCK_B, SPLIT)
    col0 = tl.program_id(1) * (HP // SPLIT)
    if PACKED:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    for t in range(T):
        h_in = h_state_ptr + (t % 2) * ROWS * H
        c_in = c_state_ptr + (t % 2) * ROWS * H
        h_next = h_state_ptr + ((t + 1) % 2) * ROWS * H
        c_next = c_state_ptr + ((t + 1) % 2) * ROWS * H
        step_4h = t * ROWS * 4 * H
        step_h = t * ROWS * H
        for n0 in range(col0, col0 + HP // SPLIT, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            tile_ok = row_ok[:, None] & (cols < H)[None, :]
            gx = gates_x_ptr + step_4h + rows[:, None] * 4 * H + cols[None, :]
            acc_i = tl.load(gx, mask=tile_ok, other=0.0).to(tl.float32)
            acc_f = tl.load(gx + H, mask=tile_ok, other=0.0).to(tl.float32)
            acc_g = tl.load(gx + 2 * H, mask=tile_ok, other=0.0).to(tl.float32)
            acc_o = tl.load(gx + 3 * H, mask=tile_ok, other=0.0).to(tl.float32)
            for k0 in range(0, HP, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                h_k = tl.load(
                    h_in + rows[:, None] * H + ks[None, :],
                    mask=row_ok[:, None] & (ks < H)[None, :],
                    other=0.0,
                    cache_modifier=SHARED_CACHE,
                ).to(weight_ptr.dtype.element_ty)
                # (BLOCK_K, BLOCK_N) slice of W_gate^T: element [k, n] is W[gate * H + n, k].
                w_t = weight_ptr + cols[None, :] * H + ks[:, None]
                w_ok = (ks < H)[:, None] & (cols < H)[None, :]
                acc_i = tl.dot(
                    h_k, tl.load(w_t, mask=w_ok, other=0.0), acc_i, input_precision=INPUT_PRECISION
                )
                acc_f = tl.dot(
                    h_k,
                    tl.load(w_t + H * H, mask=w_ok, other=0.0),
                    acc_f,
                    input_precision=INPUT_PRECISION,
                )
                acc_g = tl.dot(
                    h_k,
                    tl.load(w_t + 2 * H * H, mask=w_ok, other=0.0),
                    acc_g,
                    input_precision=INPUT_PRECISION,
                )
                acc_o = tl.dot(
                    h_k,
                    tl.load(w_t + 3 * H * H, mask=w_ok, other=0.0),
                    acc_o,
                    input_precision=INPUT_PRECISION,
                )
            i = _sigmoid(acc_i)
            f = _sigmoid(acc_f)
            g = _tanh(acc_g)
            o = _sigmoid(acc_o)
            state = rows[:, None] * H + cols[None, :]
            c_prev = tl.load(c_in + state, mask=tile_ok, other=0.0)
            c = f * c_prev + i * g
            h = o * _tanh(c)
            out = h
            if PACKED:
                # Rows past their sequence's end keep their state and output zeros.
                active = (row_ok & (t < length))[:, None]
                out = tl.where(active, h, 0.0)
                h = tl.where(active, h, tl.load(h_in + state, mask=tile_ok, other=0.0))
                c = tl.where(active, c, c_prev)
            tl.store(h_next + state, h, mask=tile_ok)
            tl.store(c_next + state, c, mask=tile_ok)
            tl.store(out_ptr + step_h + state, out.to(out_ptr.dtype.element_ty), mask=tile_ok)
            if SAVE:
                act = gates_ptr + step_4h + rows[:, None] * 4 * H + cols[None, :]
                dtype = gates_ptr.dtype.element_ty
                tl.store(act, i.to(dtype), mask=tile_ok)
                tl.store(act + H, f.to(dtype), mask=tile_ok)
                tl.store(act + 2 * H, g.to(dtype), mask=tile_ok)
                tl.store(act + 3 * H, o.to(dtype), mask=tile_ok)
                tl.store(cells_ptr + step_h + ROWS * H + state, c.to(dtype), mask=tile_ok)
        # The next step reads every column of h_next, written by other threads (SPLIT = 1:
        # of this CTA; SPLIT > 1: of the other programs of this batch tile too).
        if SPLIT > 1:
            _sync_programs(flags_ptr, t + 1, SPLIT)
        else:
            tl.debug_barrier()


@triton.jit
def lstm_backward_kernel(
    weight_ptr,  # (members, 4H, H) W_hh of each member
    gates_ptr,  # (T, ROWS, 4H) saved activations i, f, g, o
    cells_ptr,  # (T + 1, ROWS, H) saved cell states, [0] = c0
    d_out_ptr,  # (T, ROWS, H) gradient of the outputs
    mask_ptr,  # uint8 detach mask, indexed [t * mask_stride_t + row * mask_stride_b] (HAS_MASK)
    lengths_ptr,  # (ROWS,) int32 sequence lengths (PACKED only)
    d_gates_ptr,  # (T, ROWS, 4H) output: gradient of the gate pre-activations
    dh_state_ptr,  # (2, ROWS, H) float32 ping-pong dL/dh entering a step, [0] = dL/dh_n
    dc_state_ptr,  # (2, ROWS, H) float32 ping-pong dL/dc entering a step, [0] = dL/dc_n
    flags_ptr,  # (members, batch tiles, SPLIT) int32 zeros: barrier flags (SPLIT > 1)
    T,
    B,  # rows of one member, as in the forward kernel
    ROWS,
    H,
    mask_stride_t,
    mask_stride_b,
    HP: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,
    SHARED_CACHE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DETACH_H: tl.constexpr,  # detach path "h" (else "c")
    PACKED: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    rows, row_ok, weight_ptr, flags_ptr = _member_tile(weight_ptr, flags_ptr, B, H, BLOCK_B, SPLIT)
    col0 = tl.program_id(1) * (HP // SPLIT)
    if PACKED:
        length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    for s in range(T):
        t = T - 1 - s
        active = row_ok
        if PACKED:
            active = row_ok & (t < length)
        detached = rows < 0
        if HAS_MASK:
            detached = (
                tl.load(mask_ptr + t * mask_stride_t + rows * mask_stride_b, mask=row_ok, other=0)
                != 0
            )
        dh_in = dh_state_ptr + (s % 2) * ROWS * H
        dc_in = dc_state_ptr + (s % 2) * ROWS * H
        dh_next = dh_state_ptr + ((s + 1) % 2) * ROWS * H
        dc_next = dc_state_ptr + ((s + 1) % 2) * ROWS * H
        step_4h = t * ROWS * 4 * H
        step_h = t * ROWS * H

        # Phase 1, elementwise per block of hidden units: the gate gradients dz_t and the
        # gradient reaching c_{t-1}.
        for n0 in range(col0, col0 + HP // SPLIT, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            tile_ok = row_ok[:, None] & (cols < H)[None, :]
            state = rows[:, None] * H + cols[None, :]
            dh_carry = tl.load(dh_in + state, mask=tile_ok, other=0.0)
            dc_carry = tl.load(dc_in + state, mask=tile_ok, other=0.0)
            # Inactive (packed) rows output a constant zero: their d_out goes nowhere.
            dh = dh_carry + tl.load(
                d_out_ptr + step_h + state, mask=tile_ok & active[:, None], other=0.0
            ).to(tl.float32)
            act = gates_ptr + step_4h + rows[:, None] * 4 * H + cols[None, :]
            i = tl.load(act, mask=tile_ok, other=0.0).to(tl.float32)
            f = tl.load(act + H, mask=tile_ok, other=0.0).to(tl.float32)
            g = tl.load(act + 2 * H, mask=tile_ok, other=0.0).to(tl.float32)
            o = tl.load(act + 3 * H, mask=tile_ok, other=0.0).to(tl.float32)
            c_prev = tl.load(cells_ptr + step_h + state, mask=tile_ok, other=0.0).to(tl.float32)
            tanh_c = _tanh(
                tl.load(cells_ptr + step_h + ROWS * H + state, mask=tile_ok, other=0.0).to(
                    tl.float32
                )
            )
            dz_o = dh * tanh_c * o * (1.0 - o)
            dc = dc_carry + dh * o * (1.0 - tanh_c * tanh_c)
            dz_i = dc * g * i * (1.0 - i)
            dz_f = dc * c_prev * f * (1.0 - f)
            dz_g = dc * i * (1.0 - g * g)
            dc_prev = dc * f
            if not DETACH_H:
                dc_prev = tl.where(detached[:, None], 0.0, dc_prev)
            if PACKED:
                inactive = (~active)[:, None]
                dz_i = tl.where(inactive, 0.0, dz_i)
                dz_f = tl.where(inactive, 0.0, dz_f)
                dz_g = tl.where(inactive, 0.0, dz_g)
                dz_o = tl.where(inactive, 0.0, dz_o)
                dc_prev = tl.where(inactive, dc_carry, dc_prev)
            dz_out = d_gates_ptr + step_4h + rows[:, None] * 4 * H + cols[None, :]
            dtype = d_gates_ptr.dtype.element_ty
            tl.store(dz_out, dz_i.to(dtype), mask=tile_ok)
            tl.store(dz_out + H, dz_f.to(dtype), mask=tile_ok)
            tl.store(dz_out + 2 * H, dz_g.to(dtype), mask=tile_ok)
            tl.store(dz_out + 3 * H, dz_o.to(dtype), mask=tile_ok)
            tl.store(dc_next + state, dc_prev, mask=tile_ok)

        # Phase 2: the gradient reaching h_{t-1}, dz_t @ W_hh. Rows that are detached
        # (path "h") or inactive get none through the gates, so a tile with no other row
        # skips the product.
        through_gates = active
        if DETACH_H:
            through_gates = active & ~detached
        need_product = tl.reduce(through_gates.to(tl.int32), 0, _maximum) > 0
        # The product reads every column of dz_t, written by other threads (SPLIT = 1: of
        # this CTA; SPLIT > 1: of the other programs of this batch tile too). Without the
        # product nothing is read across programs, so they need not wait for each other.
        if SPLIT > 1:
            if need_product:
                _sync_programs(flags_ptr, s + 1, SPLIT)
        else:
            tl.debug_barrier()
        for m0 in range(col0, col0 + HP // SPLIT, BLOCK_N):
            cols = m0 + tl.arange(0, BLOCK_N)
            tile_ok = row_ok[:, None] & (cols < H)[None, :]
            acc = tl.full((BLOCK_B, BLOCK_N), 0.0, tl.float32)
            if need_product:
                for gate in tl.static_range(4):
                    for k0 in range(0, HP, BLOCK_K):
                        ks = k0 + tl.arange(0, BLOCK_K)
                        dz = tl.load(
                            d_gates_ptr + step_4h + rows[:, None] * 4 * H + gate * H + ks[None, :],
                            mask=row_ok[:, None] & (ks < H)[None, :],
                            other=0.0,
                            cache_modifier=SHARED_CACHE,
                        ).to(weight_ptr.dtype.element_ty)
                        # (BLOCK_K, BLOCK_N) slice of W_gate: element [k, m] is W[gate*H + k, m].
                        w = tl.load(
                            weight_ptr + (gate * H + ks[:, None]) * H + cols[None, :],
                            mask=(ks < H)[:, None] & (cols < H)[None, :],
                            other=0.0,
                        )
                        acc = tl.dot(dz, w, acc, input_precision=INPUT_PRECISION)
            dh_prev = tl.where(through_gates[:, None], acc, 0.0)
            if PACKED:
                # An inactive row's h passes through the step untouched.
                state = rows[:, None] * H + cols[None, :]
                dh_carry = tl.load(dh_in + state, mask=tile_ok, other=0.0)
                dh_prev = tl.where(active[:, None], dh_prev, dh_carry)
            tl.store(dh_next + rows[:, None] * H + cols[None, :], dh_prev, mask=tile_ok)
        # The next step reads dh_next and dc_next, written by other threads of this CTA;
        # other programs only ever read dz, which the next step writes for another t.
        tl.debug_barrier()
