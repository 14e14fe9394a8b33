"""Swap ``torch.nn.LSTM`` modules inside a model for ``hdetach.LSTM`` and back."""

from __future__ import annotations

from torch import nn

from hdetach.nn.lstm import LSTM


def _rebuild(old: nn.LSTM, cls: type[nn.LSTM], **options) -> nn.LSTM:
    """A ``cls`` with ``old``'s hyper-parameters that shares ``old``'s Parameter objects.

    Sharing (not copying) keeps an optimizer built before the swap pointing at the
    live weights. The new module is built on the meta device so nothing is allocated.
    """
    if old.proj_size:
        raise NotImplementedError("hdetach.LSTM does not support proj_size > 0")
    new = cls(
        old.input_size,
        old.hidden_size,
        old.num_layers,
        old.bias,
        old.batch_first,
        float(old.dropout),
        old.bidirectional,
        device="meta",
        dtype=old.weight_ih_l0.dtype,
        **options,
    )
    for name in old._flat_weights_names:
        setattr(new, name, getattr(old, name))
    new.train(old.training)
    return new


def _replace(model: nn.Module, wanted: type[nn.Module], make) -> nn.Module:
    """Replace every module of exactly type ``wanted`` (``model`` included) by ``make(module)``."""
    if type(model) is wanted:
        return make(model)
    for name, child in model.named_children():
        setattr(model, name, _replace(child, wanted, make))
    return model


def convert(model: nn.Module, p_detach: float = 0.25, **options) -> nn.Module:
    """Replace every ``torch.nn.LSTM`` in ``model`` by an ``hdetach.LSTM`` with the same weights.

    ``options`` are ``hdetach.LSTM``'s keyword options (``detach_scope``, ``detach_path``,
    ``layer_masks``, ``backend``). The model is changed in place and returned (a bare
    ``nn.LSTM`` passed in is returned converted). Parameters are shared, not copied.
    """
    return _replace(model, nn.LSTM, lambda old: _rebuild(old, LSTM, p_detach=p_detach, **options))


def revert(model: nn.Module) -> nn.Module:
    """Turn every ``hdetach.LSTM`` in ``model`` back into ``torch.nn.LSTM`` (export, cuDNN)."""

    def make(old: LSTM) -> nn.LSTM:
        new = _rebuild(old, nn.LSTM)
        if new.weight_ih_l0.is_cuda:
            new.flatten_parameters()  # cuDNN wants one contiguous weight buffer
        return new

    return _replace(model, LSTM, make)
