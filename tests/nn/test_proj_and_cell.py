"""proj_size, hdetach.LSTMCell's own draws, and convert/revert of cells and whole models."""

from __future__ import annotations

import pytest
import torch
from helpers import grads_of
from torch import nn
from torch.nn.utils import parametrizations
from torch.nn.utils.rnn import pack_sequence

import hdetach

F64 = torch.float64


def proj_inputs(packed: bool, batch_first: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    lengths = [7, 4, 6] if packed else [7, 7, 7]
    seqs = [torch.randn(n, 5, generator=gen, dtype=dtype) for n in lengths]
    if packed:
        return pack_sequence(seqs, enforce_sorted=False)
    return torch.stack(seqs, 0 if batch_first else 1).requires_grad_()


def run(module, x, hx, **kwargs):
    """Outputs and gradients (wrt hx, the weights and a plain input) of a fixed loss."""
    out, (h, c) = module(x, hx, **kwargs)
    data = out.data if isinstance(out, nn.utils.rnn.PackedSequence) else out
    g = torch.randn(data.shape, generator=torch.Generator().manual_seed(2), dtype=data.dtype)
    loss = (data * g).sum() + (h * h).sum() + c.sum()
    wrt = [*hx, *module.parameters()] + ([x] if isinstance(x, torch.Tensor) else [])
    return [data, h, c, *grads_of(loss, wrt)]


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first,packed",
    [(1, False, False, False), (2, True, True, False), (2, True, False, True)],
)
def test_proj_size_at_p0_matches_torch_lstm(layers, bidirectional, batch_first, packed):
    options = {"num_layers": layers, "bidirectional": bidirectional, "batch_first": batch_first}
    torch.manual_seed(0)
    native = nn.LSTM(5, 6, proj_size=3, **options)
    ours = hdetach.convert(nn.LSTM(5, 6, proj_size=3, **options), p_detach=0.0)
    ours.load_state_dict(native.state_dict())
    assert ours.weight_hr_l0.shape == (3, 6)
    x = proj_inputs(packed, batch_first)
    states = layers * (2 if bidirectional else 1)
    hx = (torch.randn(states, 3, 3).requires_grad_(), torch.randn(states, 3, 6).requires_grad_())
    expected = run(native, x, hx)
    # An all-False mask runs hdetach's own kernels (nothing detached: torch's gradient).
    for kwargs in ({}, {"detach_mask": torch.zeros(7, dtype=torch.bool)}):
        for a, e in zip(run(ours, x, hx, **kwargs), expected):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("path", ["h", "c"])
def test_proj_size_with_mask_matches_the_reference_backend(cpu_kernel, packed, path):
    modules = []
    for backend in ("fused", "reference"):
        torch.manual_seed(3)
        modules.append(
            hdetach.LSTM(
                5,
                6,
                2,
                proj_size=4,
                bidirectional=True,
                dtype=F64,
                detach_path=path,
                backend=backend,
            )
        )
    x = proj_inputs(packed, False, F64)
    hx = (torch.randn(4, 3, 4, dtype=F64), torch.randn(4, 3, 6, dtype=F64))
    hx = tuple(s.requires_grad_() for s in hx)
    mask = torch.rand(4, 7, 3) < 0.5
    actual, expected = (run(m, x, hx, detach_mask=mask) for m in modules)
    plain = run(modules[1], x, hx, detach_mask=torch.zeros_like(mask))
    assert not torch.allclose(expected[-1], plain[-1])  # the mask changed the gradient
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def cell_grads(cell, x, state):
    h, c = state
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
    return grads_of(h.sum() + c.sum(), list(cell.parameters()))


@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("path", ["h", "c"])
def test_cell_draws_its_own_decisions_like_explicit_ones(scope, path):
    torch.manual_seed(4)
    cell = hdetach.LSTMCell(3, 5, p_detach=0.5, detach_scope=scope, detach_path=path)
    x, state = torch.randn(12, 2, 3), (torch.randn(2, 5), torch.randn(2, 5))
    cell.generator = torch.Generator().manual_seed(5)
    drawn = cell_grads(cell, x, state)
    replay = torch.Generator().manual_seed(5)
    decisions = [
        torch.rand(() if scope == "batch" else (2,), generator=replay) < 0.5 for _ in range(12)
    ]
    h, c = state
    for t in range(12):
        h, c = cell(x[t], (h, c), detach=decisions[t])
    explicit = grads_of(h.sum() + c.sum(), list(cell.parameters()))
    cell.p_detach = 0.0
    plain = cell_grads(cell, x, state)
    for a, e in zip(drawn, explicit):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert not torch.allclose(drawn[1], plain[1])


def test_cell_draws_nothing_in_eval_or_without_grad_and_explicit_detach_overrides():
    torch.manual_seed(6)
    cell = hdetach.LSTMCell(3, 5, p_detach=1.0)
    native = nn.LSTMCell(3, 5)
    native.load_state_dict(cell.state_dict())
    x, state = torch.randn(6, 2, 3), (torch.randn(2, 5), torch.randn(2, 5))
    cell.eval()
    for a, e in zip(cell_grads(cell, x, state), cell_grads(native, x, state)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    cell.train()
    h, c = state
    for t in range(6):
        h, c = cell(x[t], (h, c), detach=False)  # overrides p_detach = 1
    expected = cell_grads(native, x, state)
    for a, e in zip(grads_of(h.sum() + c.sum(), list(cell.parameters())), expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    rng = torch.get_rng_state()
    with torch.no_grad():
        cell(x[0], state)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw


class Predictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(2, 4)
        self.rnn = nn.LSTM(4, 4, proj_size=2)
        self.head = nn.Linear(2, 1)


def test_convert_and_revert_cells_share_parameters():
    model = Predictor()
    params = list(model.parameters())
    hdetach.convert(model, p_detach=0.3, detach_scope="sample", layer_masks="independent")
    assert type(model.cell) is hdetach.LSTMCell and type(model.rnn) is hdetach.LSTM
    assert (model.cell.p_detach, model.cell.detach_scope) == (0.3, "sample")
    assert model.rnn.layer_masks == "independent" and model.rnn.proj_size == 2
    assert all(a is b for a, b in zip(model.parameters(), params))
    hdetach.revert(model)
    assert type(model.cell) is nn.LSTMCell and type(model.rnn) is nn.LSTM
    assert all(a is b for a, b in zip(model.parameters(), params))


@pytest.mark.parametrize(
    "prepare,options,error,message",
    [
        (lambda m: None, {"detach_scope": "typo"}, ValueError, "detach_scope must be one of"),
        (lambda m: None, {"p_detach": 2.0}, ValueError, "p_detach must be in"),
        (lambda m: None, {"dropout_mask": True}, TypeError, "dropout_mask"),
        (
            lambda m: parametrizations.weight_norm(m.rnn, "weight_hh_l0"),
            {},
            ValueError,
            "rnn has parametrizations",
        ),
    ],
)
def test_convert_checks_everything_before_converting_anything(prepare, options, error, message):
    model = Predictor()
    prepare(model)
    with pytest.raises(error, match=message):
        hdetach.convert(model, **options)
    assert type(model.cell) is nn.LSTMCell and not isinstance(model.rnn, hdetach.LSTM)


def test_a_module_reached_twice_is_converted_once():
    shared = nn.LSTM(2, 3)
    model = nn.ModuleDict({"a": shared, "b": shared})
    hdetach.convert(model)
    assert model["a"] is model["b"] and isinstance(model["a"], hdetach.LSTM)
