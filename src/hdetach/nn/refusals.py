"""What ``hdetach.LSTM`` and ``hdetach.LSTMCell`` refuse, with the exception types
``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` raise for it, so that code catching torch's
exceptions catches ours: checked before any work, in torch's order (an input with several
faults gets the type torch gives its first), with messages naming the argument and what
it must be. hdetach's own arguments (masks, options) are checked where they are used.
"""

from __future__ import annotations

from typing import NoReturn

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence


def check_lstm_inputs(
    lstm: nn.LSTM, input: Tensor | PackedSequence, hx, run_dtype: torch.dtype | None
) -> None:
    """Refuse what ``torch.nn.LSTM`` refuses, with the exception type it raises.

    In torch's order, so that an input with several faults gets the type torch gives
    its first: the input's dimensions and dtype are ValueErrors (torch's Python
    checks), the states' dimensions, the feature and state sizes RuntimeErrors (its
    Python checks), an empty sequence and disagreeing devices or state dtypes
    RuntimeErrors (its kernel's). A ``PackedSequence`` only its kernel checks: every
    refusal is a RuntimeError there, but for a state of fewer than 3 dimensions (an
    IndexError). The messages name the argument and what it must be.
    """
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    if not packed and input.dim() not in (2, 3):
        raise ValueError(
            "input must be a 3-D (T, B, input_size) tensor (batch_first: (B, T, "
            f"input_size)), a 2-D unbatched (T, input_size) tensor or a PackedSequence, "
            f"got {input.dim()}-D"
        )
    if isinstance(hx, Tensor) and not packed:
        _refuse_tensor_hx(lstm, input, hx, run_dtype)
    batched = packed or input.dim() == 3
    if packed:
        batch = int(input.batch_sizes[0])
    else:
        batch = input.shape[0 if lstm.batch_first else 1] if batched else 1
    sizes = (lstm.proj_size or lstm.hidden_size, lstm.hidden_size)
    shapes = [(lstm._num_states, batch, size) for size in sizes]
    if not batched:
        shapes = [(states, size) for states, _, size in shapes]
    states = () if hx is None else lstm_state_pair(hx, input)
    for name, state, shape in zip(("h_0", "c_0"), states, shapes):
        if state.dim() != len(shape):
            error = IndexError if packed and state.dim() < 3 else RuntimeError
            raise error(
                f"hx's {name} must have shape {shape} for this input "
                f"({'batched' if batched else 'unbatched'}), got {tuple(state.shape)}"
            )
    # The weight this call uses: functional_call swaps it into _parameters, which
    # _flat_weights follows only when forward refreshes it; getattr would run a
    # parametrization, whose last result stands in.
    weight = lstm._parameters.get(lstm._flat_weights_names[0])
    if weight is None:
        weight = lstm._flat_weights[0]
    runs_in = _dtype_under_autocast(data, run_dtype)
    if runs_in != (run_dtype or weight.dtype):
        error = RuntimeError if packed or _autocast_enabled() else ValueError
        raise error(
            f"input must be {weight.dtype} like the weights, got {data.dtype}: convert "
            f"the input (input.to({weight.dtype})) or the model (model.to({data.dtype}))"
            if run_dtype is None
            else f"input must be floating point for autocast to cast it, got {data.dtype}"
        )
    if data.shape[-1] != lstm.input_size:
        raise RuntimeError(
            f"input must have {lstm.input_size} features (input_size), got {data.shape[-1]}"
        )
    for name, state, shape in zip(("h_0", "c_0"), states, shapes):
        if tuple(state.shape) != shape:
            raise RuntimeError(f"hx's {name} must have shape {shape}, got {tuple(state.shape)}")
    if not packed and input.shape[1 if batched and lstm.batch_first else 0] == 0:
        raise RuntimeError("input must have at least one time step")
    if data.device != weight.device:
        raise RuntimeError(f"input must be on {weight.device} like the weights, got {data.device}")
    for name, state in zip(("h_0", "c_0"), states):
        if _dtype_under_autocast(state, run_dtype) != runs_in or state.device != data.device:
            raise RuntimeError(
                f"hx's {name} must be {data.dtype} on {data.device} like the input, "
                f"got {state.dtype} on {state.device}"
                + ("" if run_dtype is None else f" (under autocast to {run_dtype})")
            )


def _refuse_tensor_hx(lstm: nn.LSTM, input: Tensor, hx: Tensor, run_dtype) -> NoReturn:
    """A tensor for ``hx``: torch reads ``hx[0]`` and ``hx[1]`` as the states, and its
    kernel refuses the tensor if they pass its checks; raise the type it raises."""
    error = IndexError if hx.dim() == 0 or len(hx) < 2 else TypeError
    if error is TypeError:
        try:
            check_lstm_inputs(lstm, input, (hx[0], hx[1]), run_dtype)
        except Exception as refusal:
            error = type(refusal)
    raise error(
        f"hx must be a tuple (h_0, c_0) of two tensors, got a tensor of shape {tuple(hx.shape)}"
    )


def _dtype_under_autocast(tensor: Tensor, run_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype ``tensor`` has in torch's LSTM: autocast to ``run_dtype`` (if not None)
    casts floating-point tensors but float64 ones; the kernel refuses any other mix."""
    if run_dtype is not None and tensor.is_floating_point() and tensor.dtype != torch.float64:
        return run_dtype
    return tensor.dtype


def _autocast_enabled() -> bool:
    """Whether any autocast is on: then torch.nn.LSTM leaves the input's dtype to autocast."""
    return torch._C._is_any_autocast_enabled()


def lstm_state_pair(hx, input: Tensor | PackedSequence) -> tuple[Tensor, Tensor]:
    """``hx`` (not a tensor) as (h_0, c_0), or the exception ``torch.nn.LSTM`` raises for
    it. Torch reads ``hx[0]`` and ``hx[1]`` and asks them for their dimensions, but for a
    sorted packed batch, whose ``hx`` only its kernel reads: an IndexError for fewer than
    two states, an AttributeError for a state that is not a tensor; its kernel wants a
    tuple of two tensors (a RuntimeError for another number, else a TypeError)."""
    if _is_pair(hx):
        return hx[0], hx[1]
    message = f"hx must be a tuple (h_0, c_0) of two tensors, got {_described(hx)}"
    if not isinstance(hx, (tuple, list)):
        raise TypeError(message)
    indexed = not (isinstance(input, PackedSequence) and input.sorted_indices is None)
    if indexed and len(hx) < 2:
        raise IndexError(message)
    if indexed and not all(isinstance(state, Tensor) for state in hx[:2]):
        raise AttributeError(message)
    raise RuntimeError(message) if len(hx) != 2 else TypeError(message)


def check_cell_inputs(cell: nn.LSTMCell, input: Tensor, hx) -> tuple[Tensor, Tensor]:
    """``hx`` as (h, c) once ``input`` and ``hx`` pass ``torch.nn.LSTMCell``'s checks,
    made here, before a state is cut (where a per-example cut would broadcast a state
    of the wrong size), with the exception types torch raises: dimensions are
    ValueErrors (its Python checks), sizes RuntimeErrors (its kernel's). Dtypes and
    devices are left to torch, which checks them after the cut."""
    if input.dim() not in (1, 2):
        raise ValueError(
            "input must be 2-D (batch, input_size) or 1-D unbatched (input_size,), "
            f"got {input.dim()}-D"
        )
    states = cell_state_pair(hx, batched=input.dim() == 2)
    for name, state in zip(("h", "c"), states):
        if state.dim() not in (1, 2):
            raise ValueError(
                f"hx's {name} must be 2-D (batch, hidden_size) or 1-D unbatched "
                f"(hidden_size,), got {state.dim()}-D"
            )
    if input.shape[-1] != cell.input_size:
        raise RuntimeError(
            f"input must have {cell.input_size} features (input_size), got {input.shape[-1]}"
        )
    shape = (*input.shape[:-1], cell.hidden_size)
    for name, state in zip(("h", "c"), states):
        if state.shape != shape:
            raise RuntimeError(
                f"hx's {name} must have shape {shape} for an input of shape "
                f"{tuple(input.shape)}, got {tuple(state.shape)}"
            )
    return states


def cell_state_pair(hx, batched: bool) -> tuple[Tensor, Tensor]:
    """``hx`` as (h, c), or the exception ``torch.nn.LSTMCell`` raises for it: it asks
    every state it finds in ``hx`` for its dimensions (an AttributeError for one that is
    not a tensor, a ValueError for other than 1 or 2), then reads ``hx[0]`` and ``hx[1]``
    for an unbatched input (an IndexError for fewer) or hands ``hx`` to its kernel, which
    wants a tuple of two tensors (a RuntimeError for another number, a TypeError for a
    tensor). Anything else is a TypeError."""
    if _is_pair(hx):
        return hx[0], hx[1]
    message = f"hx must be a tuple (h, c) of two tensors, got {_described(hx)}"
    if not (isinstance(hx, (tuple, list)) or (isinstance(hx, Tensor) and hx.dim() > 0)):
        raise TypeError(message)
    for index, state in enumerate(hx):
        if not isinstance(state, Tensor):
            raise AttributeError(message)
        if state.dim() not in (1, 2):
            raise ValueError(f"{message}; hx[{index}] is {state.dim()}-D, not 1-D or 2-D")
    if not batched and len(hx) < 2:
        raise IndexError(message)
    raise TypeError(message) if isinstance(hx, Tensor) and batched else RuntimeError(message)


def _is_pair(hx) -> bool:
    """Whether ``hx`` is what both modules take: a tuple (or list) of two tensors."""
    return isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(s, Tensor) for s in hx)


def _described(hx) -> str:
    """What ``hx`` is, for a message: "a tensor of shape ...", "a tuple of 3 (...)"."""
    if isinstance(hx, Tensor):
        return f"a tensor of shape {tuple(hx.shape)}"
    if isinstance(hx, (tuple, list)):
        if not hx:
            return f"an empty {type(hx).__name__}"
        names = ", ".join(type(state).__name__ for state in hx)
        return f"a {type(hx).__name__} of {len(hx)} ({names})"
    return f"a {type(hx).__name__}"
