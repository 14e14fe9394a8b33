"""The triton backend: one persistent kernel per direction of time for a whole LSTM layer.

Why it is shaped this way (the recurrence, not arithmetic, bounds these sizes):

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
* The weight gradient is one large matrix product after the loop (cuBLAS), as in the
  fused backend.
* A population of K independent LSTMs (weight_hh of shape (K, 4H, H), a batch of K * B
  rows of which member k owns rows [k B, (k + 1) B)) runs in the same launch: the
  member is grid axis 2, and each program offsets its weights and rows by its member's.
  Small LSTMs leave most SMs idle alone; K of them fill K times as many programs. The
  weight gradient is then one batched product, member by member.
* Opt-in (``split_hidden=True`` or ``HDETACH_TRITON_SPLIT_HIDDEN=1``, CUDA only): a
  batch tile's hidden units are spread over several programs (grid axis 1) that meet
  at a barrier on global-memory flags every step, so that each SM reads a slice of
  W_hh per step rather than all of it, and a small batch still fills many SMs.
  Programs exchange h (forward) and dz (backward) through L2. The backward skips the
  barrier, too, on steps that skip the product.

Precision: float32 products use ``tl.dot(..., input_precision="tf32x3")`` by default:
three TF32 tensor-core products that together are accurate to about float32, so the
result stays within 1e-3 of a float64 reference over 784 steps. The products are
latency- and bandwidth-bound at these sizes, so the extra tensor-core work costs little.
``"tf32"`` (one product, what cuDNN uses for float32 by default; faster, ~1e-3
relative error per product) and ``"ieee"`` (CUDA cores, exact float32) can be chosen
with ``input_precision``. bfloat16/float16 operands always use the tensor cores with
float32 accumulation; gate arithmetic is float32 in every case.

Where the kernels do not apply (``triton_loader.triton_unsupported_reason``: not CUDA,
float64, H > 1024, a projection) they refuse with the reason; ``"auto"`` then picks
the fused backend.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from hdetach.ops.checks import check_detach_mask, check_shape
from hdetach.ops.packed import sequence_lengths
from hdetach.ops.triton_loader import triton_unsupported_reason

# Decided when the kernels are decorated: built for Triton's CPU interpreter, this module
# runs them on CPU tensors (see triton_loader, which makes that build on demand).
INTERPRETED = bool(triton.knobs.runtime.interpret)

FLOAT32_PRECISIONS = ("tf32x3", "tf32", "ieee")
BLOCK_B = 16  # smallest M of a tensor-core product; more rows per program, fewer programs


def split_hidden_from_environment() -> bool:
    """``HDETACH_TRITON_SPLIT_HIDDEN=1`` (read at each call): see ``_config``.

    Off by default until timed on a GPU: it trades a per-step barrier for less weight traffic.
    """
    return os.environ.get("HDETACH_TRITON_SPLIT_HIDDEN", "0") == "1"


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
def _lstm_forward_kernel(
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
def _lstm_backward_kernel(
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


def _interpreting(tensor: Tensor) -> bool:
    return INTERPRETED and tensor.device.type == "cpu"


def _config(
    hidden: int, batch: int, device: torch.device, split_hidden: bool = False, members: int = 1
) -> dict[str, int | str]:
    """Launch configuration for hidden size ``hidden`` and ``members`` batches of ``batch``.

    Not yet timed on a GPU.

    Tiles: ptxas (sm_90, compiled ahead of time without a GPU; float32 with tf32x3 and
    bfloat16; H = 32 ... 512) reports no register spills: per K step the four
    (BLOCK_B, BLOCK_N) float32 accumulators and the four (BLOCK_K, BLOCK_N) weight slices
    (split in two for tf32x3) stay in registers, and the unrolled loops keep several
    slices' loads in flight.

    With ``split_hidden`` (CUDA only) each batch tile's hidden units are spread over up to
    HP / 32 programs that meet at a barrier every step, so that each SM reads only its
    slice of W_hh per step instead of all of it; all programs (of every member) must be
    resident at once, hence at most one program per SM.
    """
    hp = max(16, triton.next_power_of_2(hidden))
    config: dict[str, int | str] = {
        "HP": hp,
        "BLOCK_B": BLOCK_B,
        "BLOCK_N": min(hp, 64),
        "BLOCK_K": min(hp, 32),
        "SPLIT": 1,
        "SHARED_CACHE": "",
        "num_warps": 8 if hp >= 64 else 4,
    }
    if split_hidden and device.type == "cuda":
        tiles = members * triton.cdiv(batch, BLOCK_B)
        programs = torch.cuda.get_device_properties(device).multi_processor_count
        split = max(1, hp // 32)
        while split > 1 and tiles * split > programs:
            split //= 2
        if split > 1:
            # Other programs' results are read from L2 (.cg): L1 is not coherent across SMs.
            config.update(BLOCK_N=hp // split, SPLIT=split, SHARED_CACHE=".cg", num_warps=4)
    return config


def _grid(rows: int, members: int, config: dict[str, int | str]) -> tuple[int, int, int]:
    """(batch tiles of one member, programs per tile, members)."""
    return (triton.cdiv(rows // members, config["BLOCK_B"]), config["SPLIT"], members)


def _flags(grid: tuple[int, int, int], like: Tensor) -> Tensor:
    """Zeroed barrier flags (members, tiles, SPLIT): one per program, empty when not split."""
    tiles, split, members = grid
    return like.new_zeros((members, tiles, split) if split > 1 else (0,), dtype=torch.int32)


def _weight_gradient(d_gates: Tensor, out: Tensor, h0: Tensor, members: int) -> Tensor:
    """(members, 4H, H): sum_t dz_t^T h_{t-1} of each member over its own rows.

    One batched product over all steps but the first, plus step 0 (h_{-1} = h0).
    (T, members * B, .) is viewed as members blocks of (T, B, .); with several members
    ``per_member`` copies them member-major, with one it is a view (a plain product).
    """
    batch = h0.shape[0] // members

    def per_member(x: Tensor) -> Tensor:  # (T, members * B, n) -> (members, T * B, n)
        steps, _, n = x.shape
        return x.view(steps, members, batch, n).transpose(0, 1).reshape(members, steps * batch, n)

    d_weight_hh = torch.bmm(per_member(d_gates[1:]).transpose(1, 2), per_member(out[:-1]))
    return d_weight_hh.baddbmm_(per_member(d_gates[:1]).transpose(1, 2), per_member(h0[None]))


def _members(weight_hh: Tensor) -> int:
    """How many LSTMs run together: weight_hh (4H, H) is one, (K, 4H, H) is K."""
    return 1 if weight_hh.dim() == 2 else weight_hh.shape[0]


class TritonLSTMRecurrence(torch.autograd.Function):
    """``(gates_x, h0, c0, weight_hh) -> (out, h_n, c_n)`` on the triton kernels."""

    @staticmethod
    def forward(
        ctx,
        gates_x: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        detach_mask: Tensor | None,
        detach_path: str,
        batch_sizes: tuple[int, ...] | None,
        config: dict[str, int | str],
        input_precision: str,
        save: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, four_hidden = gates_x.shape
        hidden = four_hidden // 4
        gates_x = gates_x.contiguous()
        weight_hh = weight_hh.contiguous()
        h_state = h0.new_empty(2, batch, hidden, dtype=torch.float32)
        c_state = torch.empty_like(h_state)
        h_state[0] = h0
        c_state[0] = c0
        out = torch.empty(steps, batch, hidden, device=gates_x.device, dtype=gates_x.dtype)
        if save:
            gates = torch.empty_like(gates_x)
            cells = gates_x.new_empty(steps + 1, batch, hidden)
            cells[0] = c0
        else:  # inference: the kernel writes only the outputs and the state
            gates = cells = gates_x.new_empty(0)
        lengths = (
            sequence_lengths(batch_sizes, batch, gates_x.device).int()
            if batch_sizes is not None
            else gates_x.new_empty(0, dtype=torch.int32)
        )
        config = dict(config)
        num_warps = config.pop("num_warps")
        members = _members(weight_hh)
        grid = _grid(batch, members, config)
        # num_stages=1 (both kernels): the software pipeliner must not prefetch the next
        # step's state across the barrier that orders the steps.
        # Triton launches on the current device, which need not be the tensors' one.
        with torch.cuda.device_of(gates_x):
            _lstm_forward_kernel[grid](
                gates_x, weight_hh, lengths, out, gates, cells, h_state, c_state,
                _flags(grid, h0), steps, batch // members, batch, hidden,
                PACKED=batch_sizes is not None, SAVE=save, INPUT_PRECISION=input_precision,
                num_warps=num_warps, num_stages=1, **config,
            )  # fmt: skip
        h_n = h_state[steps % 2].to(gates_x.dtype)
        c_n = c_state[steps % 2].to(gates_x.dtype)
        if save:
            ctx.save_for_backward(gates, cells, out, h0, weight_hh, lengths, detach_mask)
            ctx.detach_path = detach_path
            ctx.packed = batch_sizes is not None
            ctx.config = (config, num_warps)
            ctx.input_precision = input_precision
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, d_out: Tensor, d_h_n: Tensor, d_c_n: Tensor):
        gates, cells, out, h0, weight_hh, lengths, detach_mask = ctx.saved_tensors
        config, num_warps = ctx.config
        steps, batch, hidden = out.shape
        # Outputs the loss does not use arrive as None or as non-contiguous zeros.
        d_out = torch.zeros_like(out) if d_out is None else d_out.contiguous()
        dh_state = h0.new_zeros(2, batch, hidden, dtype=torch.float32)
        dc_state = torch.zeros_like(dh_state)
        if d_h_n is not None:
            dh_state[0] = d_h_n
        if d_c_n is not None:
            dc_state[0] = d_c_n
        if detach_mask is None:
            mask, stride_t, stride_b = gates.new_empty(0, dtype=torch.uint8), 0, 0
        else:
            mask = detach_mask.contiguous().view(torch.uint8)
            stride_t, stride_b = (1, 0) if mask.dim() == 1 else (batch, 1)
        d_gates = torch.empty_like(gates)
        members = _members(weight_hh)
        grid = _grid(batch, members, config)
        with torch.cuda.device_of(gates):
            _lstm_backward_kernel[grid](
                weight_hh, gates, cells, d_out, mask, lengths, d_gates, dh_state, dc_state,
                _flags(grid, h0), steps, batch // members, batch, hidden, stride_t, stride_b,
                HAS_MASK=detach_mask is not None, DETACH_H=ctx.detach_path == "h",
                PACKED=ctx.packed, INPUT_PRECISION=ctx.input_precision,
                num_warps=num_warps, num_stages=1, **config,
            )  # fmt: skip
        d_h0 = dh_state[steps % 2].to(h0.dtype)
        d_c0 = dc_state[steps % 2].to(h0.dtype)
        d_weight_hh = None
        if ctx.needs_input_grad[3]:
            d_weight_hh = _weight_gradient(d_gates, out, h0, members).view_as(weight_hh)
        return d_gates, d_h0, d_c0, d_weight_hh, None, None, None, None, None, None


def _check_population(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None,
    batch_sizes: tuple[int, ...] | None,
) -> None:
    """The layout of a population (weight_hh of three dimensions), before any work."""
    if weight_hh.dim() == 2:
        return
    steps, rows, four_hidden = gates_x.shape
    hidden = four_hidden // 4
    if (
        weight_hh.dim() != 3
        or weight_hh.shape[0] < 1
        or weight_hh.shape[1:] != (four_hidden, hidden)
    ):
        raise ValueError(
            f"weight_hh must have shape ({four_hidden}, {hidden}) (4H, H), or "
            f"(K, {four_hidden}, {hidden}) for K >= 1 members, got {tuple(weight_hh.shape)}"
        )
    members = weight_hh.shape[0]
    if batch_sizes is not None:
        raise ValueError(
            "batch_sizes must be None when weight_hh holds members (K, 4H, H): "
            "packed sequences are not supported in a population"
        )
    if rows % members:
        raise ValueError(
            f"the batch (gates_x.shape[1] = {rows}) must be a multiple of the {members} members "
            f"of weight_hh: member k owns rows [k B, (k + 1) B)"
        )
    check_shape("h0", h0, (rows, hidden))
    check_shape("c0", c0, (rows, hidden))
    check_detach_mask(detach_mask, steps, rows, gates_x.device)


def triton_lstm_recurrence(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: tuple[int, ...] | None = None,
    *,
    input_precision: str = "tf32x3",
    config: dict[str, int | str] | None = None,
    split_hidden: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer on the triton kernels, or one for each of K members at once.

    Same contract as :func:`hdetach.functional.lstm_recurrence`, without ``weight_hr``;
    shapes already validated for a single model. A population of K independent LSTMs
    is a weight_hh of shape (K, 4H, H) and a batch of K * B rows, member k owning rows
    [k B, (k + 1) B) of gates_x (T, K B, 4H), h0, c0 (K B, H), the outputs and a
    per-row mask (T, K B); a (T,) mask applies to every row; no ``batch_sizes``. The
    gradient of weight_hh is then (K, 4H, H), member k's from its own rows.
    Raises ``ValueError`` with the reason where the kernels do not apply.

    Args:
        input_precision: how float32 products use the tensor cores, one of
            ``FLOAT32_PRECISIONS`` (see the module docstring); ignored for 16-bit dtypes.
        config: entries overriding the launch configuration of ``_config`` (tests and
            tuning), e.g. ``{"BLOCK_N": 16, "BLOCK_K": 16}``: powers of two >= 16.
        split_hidden: spread a batch tile's hidden units over several programs (see
            ``_config``); None reads ``HDETACH_TRITON_SPLIT_HIDDEN``.
    """
    if input_precision not in FLOAT32_PRECISIONS:
        raise ValueError(
            f"input_precision must be one of {FLOAT32_PRECISIONS}, got {input_precision!r}"
        )
    _check_population(gates_x, h0, c0, weight_hh, detach_mask, batch_sizes)
    steps, batch, four_hidden = gates_x.shape
    members = _members(weight_hh)
    reason = triton_unsupported_reason(
        gates_x.device, gates_x.dtype, steps, batch, four_hidden // 4, 0, members=members
    )
    if reason is None and gates_x.device.type == "cpu" and not INTERPRETED:
        reason = "this build of the module is for CUDA (see triton_loader for the interpreter)"
    if reason is not None:
        raise ValueError(f'backend="triton" cannot run this call: {reason}')
    if split_hidden is None:
        split_hidden = split_hidden_from_environment()
    own_config = _config(four_hidden // 4, batch // members, gates_x.device, split_hidden, members)
    config = {**own_config, **(config or {})}
    if _interpreting(gates_x) and config["SPLIT"] != 1:
        raise ValueError("the interpreter runs programs one after another: SPLIT must be 1")
    if gates_x.dtype != torch.float32:
        input_precision = "tf32"  # the default; ignored for 16-bit operands
    save = torch.is_grad_enabled() and any(x.requires_grad for x in (gates_x, h0, c0, weight_hh))
    return TritonLSTMRecurrence.apply(
        gates_x, h0, c0, weight_hh, detach_mask, detach_path, batch_sizes,
        config, input_precision, save,
    )  # fmt: skip
