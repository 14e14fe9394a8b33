"""The functional API: h-detach LSTM for users who hold their own weights.

``lstm_recurrence`` is the core op (one layer, one direction); ``lstm`` stacks it
into layers and directions the way ``torch.nn.LSTM`` does. Both take the detach
mask explicitly: drawing it is the module's job, so that a functional call is a
pure function of its arguments.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from hdetach.ops import FusedLSTM, reference_lstm_recurrence
from hdetach.ops.packed import sequence_lengths

BACKENDS = ("auto", "reference", "fused", "triton")
DETACH_PATHS = ("h", "c")
# Set to True once benchmarks/gpu_check.sh has shown the triton kernels correct and faster
# than fused on a GPU (issue 4); until then "auto" never picks them.
TRITON_IN_AUTO = False


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_batch_sizes(batch_sizes: Sequence[int] | Tensor | None, steps: int, batch: int):
    """Validate the packed layout and return it as a tuple of ints (or None)."""
    if batch_sizes is None:
        return None
    sizes = tuple(int(n) for n in batch_sizes)
    if len(sizes) != steps:
        raise ValueError(f"batch_sizes must have one entry per step ({steps}), got {len(sizes)}")
    if sizes[0] != batch or any(b > a for a, b in zip(sizes, sizes[1:])) or sizes[-1] < 1:
        raise ValueError(
            f"batch_sizes must be non-increasing, start at the batch size {batch} and stay >= 1, "
            f"got {list(sizes)}"
        )
    return None if sizes[-1] == batch else sizes


def check_detach_mask(mask: Tensor | None, steps: int, batch: int, device: torch.device) -> None:
    """A per-layer mask: None, or bool of shape (T,) or (T, B) on ``device``."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"detach_mask must be a torch.bool tensor, got {got}")
    if tuple(mask.shape) not in ((steps,), (steps, batch)):
        raise ValueError(
            f"detach_mask must have shape ({steps},) or ({steps}, {batch}) "
            f"(steps[, batch]), got {tuple(mask.shape)}"
        )
    if mask.device != device:
        raise ValueError(f"detach_mask must be on {device} like the input, got {mask.device}")


def _check_recurrence_args(
    gates_shape, h0: Tensor, c0: Tensor, weight_hh: Tensor, detach_mask, detach_path, device
) -> None:
    """Shapes of the state and recurrent weight against the gates' (T, B, 4H), mask and path."""
    steps, batch, four_hidden = gates_shape
    if four_hidden % 4 or steps == 0:
        raise ValueError(
            f"the gates must have shape (T, B, 4H) with T >= 1, got {tuple(gates_shape)}"
        )
    hidden = four_hidden // 4
    for name, state in (("h0", h0), ("c0", c0)):
        if tuple(state.shape) != (batch, hidden):
            raise ValueError(
                f"{name} must have shape ({batch}, {hidden}), got {tuple(state.shape)}"
            )
    if tuple(weight_hh.shape) != (four_hidden, hidden):
        raise ValueError(
            f"weight_hh must have shape ({four_hidden}, {hidden}), got {tuple(weight_hh.shape)}"
        )
    _check_choice("detach_path", detach_path, DETACH_PATHS)
    check_detach_mask(detach_mask, steps, batch, device)


@functools.cache
def _triton_backend() -> ModuleType | None:
    """The triton backend's module, or None where triton is not installed (imported lazily)."""
    try:
        return importlib.import_module("hdetach.ops.triton_lstm")
    except ImportError:
        return None


def select_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Resolve ``"auto"`` to the fastest backend known to be correct for this device and dtype.

    That is ``"fused"`` for now: the triton kernels pass their tests under Triton's CPU
    interpreter but have not yet run on a GPU, so they stay opt-in (``backend="triton"``)
    until ``TRITON_IN_AUTO`` is set.
    """
    _check_choice("backend", backend, BACKENDS)
    if backend != "auto":
        return backend
    if TRITON_IN_AUTO and device.type == "cuda":
        triton_backend = _triton_backend()
        if triton_backend is not None and dtype in triton_backend.SUPPORTED_DTYPES:
            return "triton"
    return "fused"


def lstm_recurrence(
    gates_x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    detach_mask: Tensor | None = None,
    detach_path: str = "h",
    batch_sizes: Sequence[int] | Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over time, with the recurrent gradient cut where ``detach_mask`` says.

    Args:
        gates_x: (T, B, 4H) the input's contribution to the gates,
            ``x_t @ W_ih.T + b_ih + b_hh``, in PyTorch's gate order (i, f, g, o).
        h0, c0: (B, H) initial state.
        weight_hh: (4H, H) recurrent weight.
        detach_mask: None, or bool (T,) (one decision per step for the whole batch) or
            (T, B) (per example). True at t: the state entering step t (h_{t-1} for
            ``detach_path="h"``, c_{t-1} for ``"c"``) is a constant for autograd.
            The forward pass is unaffected.
        detach_path: ``"h"`` (h-detach) or ``"c"`` (the c-detach ablation).
        batch_sizes: None, or T non-increasing ints starting at B (PackedSequence
            layout): at step t only the first ``batch_sizes[t]`` rows are active; the
            others keep their state and output zeros.
        backend: ``"auto"``, ``"fused"``, ``"triton"`` (CUDA; falls back to ``"fused"``
            where its kernels do not apply) or ``"reference"``.

    Returns:
        out (T, B, H), h_n (B, H), c_n (B, H).
    """
    if gates_x.dim() != 3:
        raise ValueError(f"gates_x must have shape (T, B, 4H), got {tuple(gates_x.shape)}")
    _check_recurrence_args(
        gates_x.shape, h0, c0, weight_hh, detach_mask, detach_path, gates_x.device
    )
    steps, batch = gates_x.shape[:2]
    sizes = _check_batch_sizes(batch_sizes, steps, batch)
    backend = select_backend(backend, gates_x.device, gates_x.dtype)
    if backend == "reference":
        return reference_lstm_recurrence(
            gates_x, h0, c0, weight_hh, detach_mask, detach_path, sizes
        )
    if backend == "triton":
        triton_backend = _triton_backend()
        if triton_backend is None:
            raise ImportError('backend="triton" needs the triton package (pip install triton)')
        return triton_backend.triton_lstm_recurrence(
            gates_x, h0, c0, weight_hh, detach_mask, detach_path, sizes
        )
    return FusedLSTM.apply(gates_x, h0, c0, None, weight_hh, None, detach_mask, detach_path, sizes)


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
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over time from its input: ``lstm_recurrence`` with the projection.

    Args:
        x: (T, B, I). weight_ih: (4H, I); bias_ih, bias_hh: (4H,) or None.
        Others as in ``lstm_recurrence``.

    Returns:
        out (T, B, H), h_n (B, H), c_n (B, H).
    """
    if x.dim() != 3 or weight_ih.dim() != 2 or x.shape[2] != weight_ih.shape[1]:
        raise ValueError(
            f"x must have shape (T, B, I) with I = weight_ih.shape[1]; got x {tuple(x.shape)} "
            f"and weight_ih {tuple(weight_ih.shape)}"
        )
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be given or both be None")
    bias = None if bias_ih is None else bias_ih + bias_hh
    if select_backend(backend, x.device, x.dtype) != "fused":
        gates_x = F.linear(x, weight_ih, bias)
        return lstm_recurrence(
            gates_x, h0, c0, weight_hh, detach_mask, detach_path, batch_sizes, backend
        )
    # The fused op owns the projection: it computes it chunk by chunk (see ops/fused.py).
    gates_shape = (*x.shape[:2], weight_hh.shape[0])
    _check_recurrence_args(gates_shape, h0, c0, weight_hh, detach_mask, detach_path, x.device)
    sizes = _check_batch_sizes(batch_sizes, x.shape[0], x.shape[1])
    return FusedLSTM.apply(x, h0, c0, weight_ih, weight_hh, bias, detach_mask, detach_path, sizes)


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
        hx: (h0, c0), each (L * D, B, H), D = 2 if bidirectional else 1.
        weights: L * D tuples ``(w_ih, w_hh[, b_ih, b_hh])`` in ``torch.nn.LSTM``'s order
            (layer 0 forward, layer 0 reverse, layer 1 forward, ...).
        dropout: dropout on the outputs of every layer but the last (when ``training``).
        detach_masks: None, or one mask per entry of ``weights`` (see ``lstm_recurrence``);
            for the reverse direction, position t of the mask is the step that processes
            time position t, whose incoming state comes from t + 1.
        batch_sizes: packed layout of ``input`` (see ``lstm_recurrence``); sequences are
            padded at the end, so the reverse direction starts at each one's last step.

    Returns:
        output (T, B, D * H) and (h_n, c_n), each (L * D, B, H).
    """
    directions = 2 if bidirectional else 1
    h0, c0 = hx
    if len(weights) % directions or len(weights) != h0.shape[0]:
        raise ValueError(
            f"weights must hold num_layers * {directions} entries matching hx's first "
            f"dimension {h0.shape[0]}, got {len(weights)}"
        )
    if detach_masks is not None and len(detach_masks) != len(weights):
        raise ValueError(
            f"detach_masks must hold one mask per layer and direction ({len(weights)}), "
            f"got {len(detach_masks)}"
        )
    layers = len(weights) // directions
    steps, batch = input.shape[:2]
    sizes = _check_batch_sizes(batch_sizes, steps, batch)
    h_n, c_n = [], []
    layer_input = input
    for layer in range(layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            w_ih, w_hh, *biases = weights[k]
            mask = None if detach_masks is None else detach_masks[k]
            x = layer_input
            if direction == 1:
                x = reverse_sequences(x, sizes)
                if mask is not None:
                    if sizes is not None and mask.dim() == 1:
                        mask = mask.unsqueeze(1).expand(steps, batch)
                    mask = reverse_sequences(mask, sizes)
            b_ih, b_hh = biases if biases else (None, None)
            out, h, c = lstm_layer(
                x, h0[k], c0[k], w_ih, w_hh, b_ih, b_hh, mask, detach_path, sizes, backend
            )
            outputs.append(reverse_sequences(out, sizes) if direction == 1 else out)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, (torch.stack(h_n), torch.stack(c_n))
