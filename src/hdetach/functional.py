"""The functional API: h-detach LSTM for users who hold their own weights.

``lstm_recurrence`` is the core op (one layer, one direction); ``lstm_layer`` adds the
input projection and ``lstm`` stacks layers and directions the way ``torch.nn.LSTM``
does. All take the detach mask explicitly, so that a functional call is a pure function
of its arguments; ``draw_detach_masks`` draws one, from the generator given. Each public
function validates its arguments once, then ``select_backend`` (the one place that
resolves ``"auto"``) picks the implementation.

Populations: weights with a leading member dimension (W_hh of shape (K, 4H, P), and so
on) make a call run K independent LSTMs at once, member k owning rows
[k * B, (k + 1) * B) of the batch (of K * B rows) and of every state and mask. The
fused and triton backends batch the members' matrix products; "reference" and
"native" run them one after another.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hdetach.choices import BACKENDS, DETACH_PATHS
from hdetach.ops.checks import (
    check_batch_sizes,
    check_choice,
    check_detach_mask,
    check_no_packing_in_population,
    check_recurrence,
    check_same_dtype_and_device,
)
from hdetach.ops.dispatch import select_backend
from hdetach.ops.fused.lstm import fused_lstm_layer, fused_lstm_recurrence
from hdetach.ops.members import members_of, rows_linear
from hdetach.ops.native import native_lstm
from hdetach.ops.packed import sequence_lengths
from hdetach.ops.reference import reference_lstm_recurrence
from hdetach.ops.triton.loader import triton_backend

_check_choice = check_choice  # the module and the cell validate their options with it
__all__ = [
    "BACKENDS",
    "DETACH_PATHS",
    "check_detach_mask",
    "draw_detach_masks",
    "lstm",
    "lstm_layer",
    "lstm_recurrence",
    "reverse_sequences",
    "select_backend",
]


def draw_detach_masks(
    p_detach: float,
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A bool mask of ``shape``, each element True (detach) with probability ``p_detach``,
    drawn on ``device`` from ``generator`` (None: torch's global generator of that device;
    the modules pass their own stream, see ``hdetach.nn.masks``). Shapes as the functions
    here take them: (T,) or (T, B) per layer, (L * D, T[, B]) for a stack."""
    if not isinstance(device, torch.device):
        device = torch.device("cpu" if device is None else device)
    check_generator_device(generator, device)
    return torch.rand(tuple(shape), device=device, generator=generator) < p_detach


def check_generator_device(generator: torch.Generator | None, device: torch.device) -> None:
    """A clear error where masks on ``device`` would be drawn from another device's
    ``generator`` (torch's own names neither)."""
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is a {generator.device.type} generator, but the masks are drawn on "
            f"{device}: give a generator of the input's device"
        )


def lstm_recurrence(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | Tensor | None = None,
    backend: str = "auto",
    *,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over time, with the recurrent gradient cut where ``detach_mask`` says.

    Args:
        gates_x: (T, B, 4H) the input's contribution to the gates,
            ``x_t @ W_ih.T + b_ih + b_hh``, in PyTorch's gate order (i, f, g, o).
        h0: (B, P) initial output state, P = H without projection; c0: (B, H).
        weight_hh: (4H, P) recurrent weight.
        detach_mask: None, or bool (T,) (one decision per step for the whole batch) or
            (T, B) (per example). True at t: the state entering step t (h_{t-1} for
            ``detach_path="h"``, c_{t-1} for ``"c"``) is a constant for autograd.
            The forward pass is unaffected.
        detach_path: ``"h"`` (h-detach) or ``"c"`` (the c-detach ablation).
        batch_sizes: None, or T non-increasing ints starting at B (PackedSequence
            layout): at step t only the first ``batch_sizes[t]`` rows are active; the
            others keep their state and output zeros.
        backend: one of ``BACKENDS`` (see ``select_backend``). Without an input
            projection torch's own kernel does not apply: ``"native"`` runs ``"fused"``.
        weight_hr: None, or (P, H): the projection of ``torch.nn.LSTM(proj_size=P)``,
            ``h_t = W_hr (o_t * tanh(c_t))``.

    Returns:
        out (T, B, P), h_n (B, P), c_n (B, H).
    """
    if not isinstance(gates_x, Tensor) or gates_x.dim() != 3:
        got = tuple(gates_x.shape) if isinstance(gates_x, Tensor) else type(gates_x).__name__
        raise ValueError(f"gates_x must have shape (T, B, 4H), got {got}")
    tensors = {"gates_x": gates_x, "h0": h0, "c0": c0, "weight_hh": weight_hh}
    check_same_dtype_and_device("gates_x", {**tensors, "weight_hr": weight_hr})
    check_recurrence(gates_x.shape, h0, c0, weight_hh, weight_hr, detach_mask, gates_x.device)
    check_choice("detach_path", detach_path, DETACH_PATHS)
    steps, batch, four_hidden = gates_x.shape
    check_no_packing_in_population(batch_sizes, weight_hh)
    sizes = check_batch_sizes(batch_sizes, steps, batch)
    backend = select_backend(
        backend,
        device=gates_x.device,
        dtype=gates_x.dtype,
        steps=steps,
        batch=batch,
        hidden_size=four_hidden // 4,
        detached=detach_mask is not None,
        proj_size=0 if weight_hr is None else weight_hr.shape[-2],
        members=members_of(weight_hh),
    )
    args = (gates_x, h0, c0, weight_hh, detach_mask, detach_path, sizes)
    if backend == "reference":
        return reference_lstm_recurrence(*args, weight_hr=weight_hr)
    if backend == "triton":
        return triton_backend(gates_x.device).triton_lstm_recurrence(*args)
    return fused_lstm_recurrence(*args, weight_hr=weight_hr)


def _check_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, detach_mask, detach_path) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (T, B, I), got {got}")
    if w_ih.dim() != w_hh.dim() or x.shape[2] != w_ih.shape[-1]:
        raise RuntimeError(
            f"x must have shape (T, B, I) with I = weight_ih.shape[-1], and weight_ih as many "
            f"dimensions as weight_hh; got x {tuple(x.shape)}, weight_ih {tuple(w_ih.shape)} "
            f"and weight_hh {tuple(w_hh.shape)}"
        )
    if (b_ih is None) != (b_hh is None):
        raise ValueError("bias_ih and bias_hh must both be given or both be None")
    tensors = {"x": x, "h0": h0, "c0": c0, "weight_ih": w_ih, "weight_hh": w_hh}
    biases = {"bias_ih": b_ih, "bias_hh": b_hh, "weight_hr": w_hr}
    check_same_dtype_and_device("x", {**tensors, **biases})
    lead, four_hidden = tuple(w_ih.shape[:-2]), w_ih.shape[-2]  # lead: (K,) for a population
    for name, bias in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if bias is not None and tuple(bias.shape) != (*lead, four_hidden):
            raise RuntimeError(
                f"{name} must have shape {(*lead, four_hidden)}, got {tuple(bias.shape)}"
            )
    check_recurrence((*x.shape[:2], four_hidden), h0, c0, w_hh, w_hr, detach_mask, x.device)
    check_choice("detach_path", detach_path, DETACH_PATHS)


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | Tensor | None = None,
    backend: str = "auto",
    *,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over time from its input: ``lstm_recurrence`` with the projection.

    Args:
        x: (T, B, I), the layer's input.
        weight_ih: (4H, I).
        bias_ih: (4H,) or None; ``bias_hh`` too. The other arguments are as in
            ``lstm_recurrence``.

    Returns:
        out (T, B, P), h_n (B, P), c_n (B, H); P = H without ``weight_hr``.
    """
    args = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    _check_layer(*args, detach_mask, detach_path)
    steps, batch = x.shape[:2]
    check_no_packing_in_population(batch_sizes, weight_hh)
    sizes = check_batch_sizes(batch_sizes, steps, batch)
    backend = _select_for_layers(backend, x, weight_hh, weight_hr, [detach_mask])
    if backend == "native":
        weights = [
            [w for w in (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) if w is not None]
        ]
        out, (h_n, c_n) = native_lstm(x, (h0[None], c0[None]), weights, False, 0.0, False, sizes)
        return out, h_n[0], c_n[0]
    bias = None if bias_ih is None else bias_ih + bias_hh
    layer = (x, h0, c0, weight_ih, weight_hh, bias, weight_hr, detach_mask, detach_path, sizes)
    return _run_layer(*layer, backend)


def _select_for_layers(backend, x, weight_hh, weight_hr, masks) -> str:
    """``select_backend`` for a call whose every layer has the shapes of the first one."""
    steps, batch = x.shape[:2]
    return select_backend(
        backend,
        device=x.device,
        dtype=x.dtype,
        steps=steps,
        batch=batch,
        hidden_size=weight_hh.shape[-2] // 4,
        detached=any(mask is not None for mask in masks),
        proj_size=0 if weight_hr is None else weight_hr.shape[-2],
        members=members_of(weight_hh),
    )


def _run_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, mask, path, sizes, backend: str):
    """One validated layer on a resolved backend other than "native"."""
    if backend == "fused":
        return fused_lstm_layer(x, h0, c0, w_ih, w_hh, bias, mask, path, sizes, weight_hr=w_hr)
    gates_x = rows_linear(x, w_ih, bias)
    if backend == "reference":
        return reference_lstm_recurrence(gates_x, h0, c0, w_hh, mask, path, sizes, weight_hr=w_hr)
    # select_backend has refused "triton" for a projection
    return triton_backend(x.device).triton_lstm_recurrence(gates_x, h0, c0, w_hh, mask, path, sizes)


def reverse_sequences(x: Tensor, batch_sizes: Sequence[int] | None) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, ...) in time, within its own length.

    Padded positions stay where they are, so the result has the same packed layout.
    Applying it twice gives ``x`` back.
    """
    if batch_sizes is None:
        return x.flip(0)
    steps, batch = x.shape[:2]
    lengths = sequence_lengths(batch_sizes, batch, x.device)
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    return x.gather(0, index.view(steps, batch, *([1] * (x.dim() - 2))).expand_as(x))


def _unpack_weights(entry: Sequence[Tensor], k: int) -> tuple[Tensor | None, ...]:
    """(w_ih, w_hh, b_ih, b_hh, w_hr) from an entry of 2, 3, 4 or 5 tensors."""
    if len(entry) == 2:
        return (*entry, None, None, None)
    if len(entry) == 3:
        return (entry[0], entry[1], None, None, entry[2])
    if len(entry) in (4, 5):
        return (*entry, None) if len(entry) == 4 else tuple(entry)
    raise ValueError(
        f"weights[{k}] must be (w_ih, w_hh[, b_ih, b_hh][, w_hr]): 2 to 5 tensors, got {len(entry)}"
    )


def _check_stack(input, hx, weights, directions, detach_masks, detach_path) -> list[tuple]:
    """Validate a whole ``lstm`` call; return each entry's (w_ih, w_hh, b_ih, b_hh, w_hr)."""
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        raise TypeError("hx must be a tuple (h0, c0) of tensors")
    h0, c0 = hx
    if len(weights) == 0 or len(weights) % directions or len(weights) != h0.shape[0]:
        raise ValueError(
            f"weights must hold num_layers * {directions} entries matching hx's first "
            f"dimension {h0.shape[0]}, got {len(weights)}"
        )
    if detach_masks is not None and len(detach_masks) != len(weights):
        raise ValueError(
            f"detach_masks must hold one mask per layer and direction ({len(weights)}), "
            f"got {len(detach_masks)}"
        )
    if len({len(entry) for entry in weights}) != 1:
        raise ValueError("every entry of weights must hold the same kind of tensors")
    entries = [_unpack_weights(entry, k) for k, entry in enumerate(weights)]
    if input.dtype != entries[0][0].dtype:  # as torch.nn.LSTM checks it: a ValueError
        raise ValueError(
            f"input must have the dtype of the first layer's weight_ih, {entries[0][0].dtype}, "
            f"got {input.dtype}"
        )
    layer_input = input
    for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(entries):
        mask = None if detach_masks is None else detach_masks[k]
        _check_layer(layer_input, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, w_hr, mask, detach_path)
        if k % directions == directions - 1:  # the next layer's input: (T, B, D * P)
            state = h0.shape[2]
            layer_input = input.new_empty(1).expand(*input.shape[:2], directions * state)
    return entries


def _run_direction(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    entry: tuple[Tensor | None, ...],
    mask: Tensor | None,
    reverse: bool,
    detach_path: str,
    sizes: tuple[int, ...] | None,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer in one direction of ``lstm``; the reverse direction walks each sequence
    from its own last step, so its input, mask and output are reversed within lengths."""
    w_ih, w_hh, b_ih, b_hh, w_hr = entry
    if reverse:
        x = reverse_sequences(x, sizes)
        if mask is not None:
            if sizes is not None and mask.dim() == 1:
                mask = mask.unsqueeze(1).expand(x.shape[0], x.shape[1])
            mask = reverse_sequences(mask, sizes)
    bias = None if b_ih is None else b_ih + b_hh
    out, h, c = _run_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, mask, detach_path, sizes, backend)
    return (reverse_sequences(out, sizes) if reverse else out), h, c


def lstm(
    input: Tensor,
    hx: tuple[Tensor, Tensor],
    weights: Sequence[Sequence[Tensor]],
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    detach_masks: Sequence[Tensor | None] | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | None = None,
    backend: str = "auto",
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A multi-layer, optionally bidirectional h-detach LSTM over a time-major batch.

    Args:
        input: (T, B, I).
        hx: (h0, c0): h0 (L * D, B, P), c0 (L * D, B, H), D = 2 if bidirectional else 1,
            P = proj_size, or H without projection.
        weights: L * D entries in ``torch.nn.LSTM``'s order (layer 0 forward, layer 0
            reverse, layer 1 forward, ...), each the layer's slice of
            ``torch.nn.LSTM._flat_weights``; its length says what it holds, unambiguously:
            2 ``(w_ih, w_hh)``, 3 ``(w_ih, w_hh, w_hr)``, 4 ``(w_ih, w_hh, b_ih, b_hh)``,
            5 ``(w_ih, w_hh, b_ih, b_hh, w_hr)``; w_hh is (4H, P) and w_hr (P, H).
        dropout: dropout on the outputs of every layer but the last (when ``training``).
        detach_masks: None, or one mask per entry of ``weights`` (see ``lstm_recurrence``);
            for the reverse direction, position t of the mask is the step that processes
            time position t, whose incoming state comes from t + 1.
        batch_sizes: packed layout of ``input`` (see ``lstm_recurrence``); sequences are
            padded at the end, so the reverse direction starts at each one's last step.
        backend: one of ``BACKENDS``, resolved once for the whole call by
            ``select_backend``; ``"native"`` runs torch's own kernel (``torch._VF.lstm``,
            as ``torch.nn.LSTM`` does) and needs ``detach_masks`` None.

    Returns:
        output (T, B, D * P) and (h_n (L * D, B, P), c_n (L * D, B, H)).
    """
    if not isinstance(input, Tensor) or input.dim() != 3:
        got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input must have shape (T, B, I), got {got}")
    directions = 2 if bidirectional else 1
    entries = _check_stack(input, hx, weights, directions, detach_masks, detach_path)
    steps, batch = input.shape[:2]
    check_no_packing_in_population(batch_sizes, entries[0][1])
    sizes = check_batch_sizes(batch_sizes, steps, batch)
    masks = [None] * len(entries) if detach_masks is None else list(detach_masks)
    backend = _select_for_layers(backend, input, entries[0][1], entries[0][4], masks)
    if backend == "native":
        weights = [[w for w in entry if w is not None] for entry in entries]
        return native_lstm(input, tuple(hx), weights, bidirectional, dropout, training, sizes)
    h0, c0 = hx
    h_n, c_n = [], []
    layer_input = input
    for layer in range(len(entries) // directions):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            out, h, c = _run_direction(
                layer_input, h0[k], c0[k], entries[k], masks[k], direction == 1,
                detach_path, sizes, backend,
            )  # fmt: skip
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < len(entries) // directions - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, (torch.stack(h_n), torch.stack(c_n))
