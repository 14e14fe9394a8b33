"""The triton backend's host code: launch configuration, autograd, checks.

One persistent kernel per direction of time runs a whole LSTM layer (the kernels and
why they are shaped so: ``kernels``). Here: which tiles and grid they get, the
float32 state buffers they update, the autograd Function around them, and the weight
gradient, which is one large matrix product after the loop (cuBLAS), as in the fused
backend. A population of K independent LSTMs (weight_hh of shape (K, 4H, H), a batch of
K * B rows of which member k owns rows [k B, (k + 1) B)) runs in the same launch: small
LSTMs leave most SMs idle alone; K of them fill K times as many programs. Its weight
gradient is one batched product, member by member.

The kernels come as an argument (``kernels``): Triton decides when a kernel is decorated
whether it is compiled or interpreted, so ``loader`` builds the kernels module
twice and binds this host code to the build that fits the tensors (nothing reloaded).

Opt-in (``split_hidden=True`` or ``HDETACH_TRITON_SPLIT_HIDDEN=1``, CUDA only): a batch
tile's hidden units are spread over several programs that meet at a barrier every
step, so that each SM reads a slice of W_hh per step rather than all of it, and a small
batch still fills many SMs (see ``_config``).

Precision: float32 products use ``tl.dot(..., input_precision="tf32x3")`` by default:
three TF32 tensor-core products that together are accurate to about float32, so the
result stays within 1e-3 of a float64 reference over 784 steps. The products are
latency- and bandwidth-bound at these sizes, so the extra tensor-core work costs little.
``"tf32"`` (one product, what cuDNN uses for float32 by default; faster, ~1e-3
relative error per product) and ``"ieee"`` (CUDA cores, exact float32) can be chosen
with ``input_precision``. bfloat16/float16 operands always use the tensor cores with
float32 accumulation; gate arithmetic is float32 in every case.

Where the kernels do not apply (``support.triton_unsupported_reason``: not CUDA,
float64, H > 1024, a projection) they refuse with the reason; ``"auto"`` then picks
the fused backend.
"""

from __future__ import annotations

from types import ModuleType

import torch
import triton
from torch import Tensor

from hdetach.ops.checks import check_detach_mask, check_shape
from hdetach.ops.packed import sequence_lengths
from hdetach.ops.triton.support import triton_unsupported_reason
from hdetach.settings import triton_split_hidden

FLOAT32_PRECISIONS = ("tf32x3", "tf32", "ieee")
BLOCK_B = 16  # smallest M of a tensor-core product; more rows per program, fewer programs


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
    """``(gates_x, h0, c0, weight_hh) -> (out, h_n, c_n)`` on the triton kernels ``kernels``."""

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
        kernels: ModuleType,
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
            kernels.lstm_forward_kernel[grid](
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
            ctx.kernels = kernels
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
            ctx.kernels.lstm_backward_kernel[grid](
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
        return d_gates, d_h0, d_c0, d_weight_hh, None, None, None, None, None, None, None


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
        raise RuntimeError(
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
    kernels: ModuleType,
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
        kernels: the build of ``hdetach.ops.triton.kernels`` to launch, compiled for CUDA
            or interpreted for the CPU (``loader.triton_backend`` binds it).
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
    if reason is None and gates_x.device.type == "cpu" and not kernels.INTERPRETED:
        reason = (
            "this build of the kernels is for CUDA (see ops/triton/loader.py for the interpreter)"
        )
    if reason is not None:
        raise ValueError(f'backend="triton" cannot run this call: {reason}')
    if split_hidden is None:
        split_hidden = triton_split_hidden()
    own_config = _config(four_hidden // 4, batch // members, gates_x.device, split_hidden, members)
    config = {**own_config, **(config or {})}
    if kernels.INTERPRETED and gates_x.device.type == "cpu" and config["SPLIT"] != 1:
        raise ValueError("the interpreter runs programs one after another: SPLIT must be 1")
    if gates_x.dtype != torch.float32:
        input_precision = "tf32"  # the default; ignored for 16-bit operands
    save = torch.is_grad_enabled() and any(x.requires_grad for x in (gates_x, h0, c0, weight_hh))
    return TritonLSTMRecurrence.apply(
        gates_x, h0, c0, weight_hh, detach_mask, detach_path, batch_sizes,
        config, input_precision, save, kernels,
    )  # fmt: skip
