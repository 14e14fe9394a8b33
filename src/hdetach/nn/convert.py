"""Swap ``torch.nn.LSTM``/``LSTMCell`` modules inside a model for hdetach's and back."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn
from torch.nn.utils import parametrize

from hdetach.nn.cell import LSTMCell
from hdetach.nn.lstm import LSTM
from hdetach.nn.masks import STREAMS

# The options hdetach.LSTMCell takes; the others (layer_masks, backend) are the LSTM's.
CELL_OPTIONS = ("p_detach", "detach_scope", "detach_path", "generator")


def _rebuild(old: nn.Module, cls: type[nn.Module], **options) -> nn.Module:
    """A ``cls`` with ``old``'s hyper-parameters that shares ``old``'s Parameter objects.

    Sharing (not copying) keeps an optimizer built before the swap pointing at the
    live weights. The new module is built on the meta device so nothing is allocated.
    """
    dtype = old.weight_ih_l0.dtype if isinstance(old, nn.LSTM) else old.weight_ih.dtype
    if isinstance(old, nn.LSTM):
        hyper = (
            old.num_layers,
            old.bias,
            old.batch_first,
            float(old.dropout),
            old.bidirectional,
            old.proj_size,
        )
    else:
        hyper = (old.bias,)
    new = cls(old.input_size, old.hidden_size, *hyper, device="meta", dtype=dtype, **options)
    for name, param in old._parameters.items():
        setattr(new, name, param)
    new.train(old.training)
    _carry_over(old, new, hyper)
    return new


def _carry_over(old: nn.Module, new: nn.Module, hyper: tuple) -> None:
    """What the user attached to ``old`` besides its parameters, onto ``new``: its hooks
    (the very dicts, so that the handles the user holds still remove them), buffers,
    submodules and attributes of its own (those a freshly built ``type(old)`` lacks)."""
    for key, value in old.__dict__.items():
        if "hook" in key:  # forward, pre-forward, backward, state-dict and load hooks
            new.__dict__[key] = value
    for name, buffer in old._buffers.items():
        new.register_buffer(name, buffer, persistent=name not in old._non_persistent_buffers_set)
    for name, module in old._modules.items():
        new.add_module(name, module)
    with warnings.catch_warnings():  # torch's warnings about these options were given once
        warnings.simplefilter("ignore")
        built = type(old)(old.input_size, old.hidden_size, *hyper, device="meta").__dict__
    for key, value in old.__dict__.items():
        if key not in built and key != STREAMS:  # a mask stream is the old module's own
            setattr(new, key, value)


def _swap(model: nn.Module, make: dict[type, Callable[[nn.Module], nn.Module]]) -> nn.Module:
    """Replace every module whose exact type is a key of ``make`` (``model`` included).

    Everything is checked before anything is replaced, so a model is never left half
    converted; a module reached twice is replaced by one new module.
    """
    targets = [m for m in model.modules() if type(m) in make]
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module) and type(module).__bases__[0] in make:
            raise ValueError(
                f"{name or 'the model'} has parametrizations (torch.nn.utils.parametrize): "
                "convert or revert the model before registering them"
            )
    new = {id(m): make[type(m)](m) for m in targets}
    if id(model) in new:
        return new[id(model)]
    for parent in model.modules():
        for name, child in list(parent._modules.items()):
            if id(child) in new:
                setattr(parent, name, new[id(child)])
    return model


def convert(model: nn.Module, p_detach: float = 0.25, **options) -> nn.Module:
    """Replace every ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` in ``model`` by
    ``hdetach.LSTM`` / ``hdetach.LSTMCell`` with the same parameters (shared, not copied),
    and the hooks, buffers and attributes the user attached to them.

    ``options`` are ``hdetach.LSTM``'s keyword options (``detach_scope``,
    ``detach_path``, ``layer_masks``, ``backend``, ``generator``); cells take
    ``detach_scope``, ``detach_path`` and ``generator``. With ``generator`` every
    converted module draws its masks from it; without, each from a stream of its own
    (``hdetach.nn.masks``): converting draws nothing from torch's generators, and
    training draws nothing from them that the unconverted model would not. The model
    is changed in place and returned (a bare module passed in is returned converted).
    Options and modules are all checked first: on an error nothing is converted.
    """
    # Building a meta-device module checks option names and values in one place.
    LSTM(1, 1, device="meta", p_detach=p_detach, **options)
    cell_options = {k: v for k, v in options.items() if k in CELL_OPTIONS}
    return _swap(
        model,
        {
            nn.LSTM: lambda old: _rebuild(old, LSTM, p_detach=p_detach, **options),
            nn.LSTMCell: lambda old: _rebuild(old, LSTMCell, p_detach=p_detach, **cell_options),
        },
    )


def revert(model: nn.Module) -> nn.Module:
    """Turn every ``hdetach.LSTM``/``LSTMCell`` in ``model`` back into the ``torch.nn``
    module with the same parameters (for export, scripting, cuDNN's training kernels)."""

    def to_torch_lstm(old: LSTM) -> nn.LSTM:
        new = _rebuild(old, nn.LSTM)
        if new.weight_ih_l0.is_cuda:
            new.flatten_parameters()  # cuDNN wants one contiguous weight buffer
        return new

    return _swap(model, {LSTM: to_torch_lstm, LSTMCell: lambda old: _rebuild(old, nn.LSTMCell)})
