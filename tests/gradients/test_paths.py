"""gradient_paths against independent float64 references, and its invariants."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import grads_of, oracle_lstm
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import hdetach
from hdetach.analysis import forced_h_detach, gradient_paths

D = torch.float64


def _lstm_params(m: nn.LSTM) -> list[list[torch.Tensor]]:
    """Per layer and direction [w_ih, w_hh, b_ih, b_hh], in nn.LSTM's order."""
    per = len(m._flat_weights) // (m.num_layers * (2 if m.bidirectional else 1))
    w = m._flat_weights
    return [list(w[k : k + per]) for k in range(0, len(w), per)]


def _check_against_references(plain: nn.LSTM, sequences: list[torch.Tensor], packed: bool):
    """.full == torch.nn.LSTM's gradient; .cell == the oracle detaching h at every step."""
    torch.manual_seed(1)
    states = plain.num_layers * (2 if plain.bidirectional else 1)
    batch, steps = len(sequences), max(len(s) for s in sequences)
    readout = torch.randn(steps, batch, plain.hidden_size * (1 + plain.bidirectional), dtype=D)
    state_readout = torch.randn(states, batch, plain.hidden_size, dtype=D)

    def loss_of(padded_out, h_n, c_n):
        """padded_out (T, B, D*H), zero past each sequence's end."""
        return (padded_out * readout).sum() + (h_n * state_readout).sum() + c_n.pow(2).sum()

    def module_loss(module):
        if packed:
            out, (h_n, c_n) = module(pack_sequence(sequences, enforce_sorted=False))
            return loss_of(pad_packed_sequence(out, total_length=steps)[0], h_n, c_n)
        x = torch.stack(sequences, dim=1)
        out, (h_n, c_n) = module(x.transpose(0, 1) if plain.batch_first else x)
        return loss_of(out.transpose(0, 1) if plain.batch_first else out, h_n, c_n)

    model = hdetach.convert(copy.deepcopy(plain), p_detach=0.5)
    paths = gradient_paths(model, lambda: module_loss(model))

    full = grads_of(module_loss(plain), list(plain.parameters()))
    zeros = torch.zeros(states, batch, plain.hidden_size, dtype=D)
    every_step = torch.ones(states, steps, batch, dtype=torch.bool)
    outs, h_n, c_n = oracle_lstm(
        _lstm_params(plain), sequences, zeros, zeros, every_step, "h", plain.bidirectional
    )
    padded = torch.stack([nn.functional.pad(o, (0, 0, 0, steps - len(o))) for o in outs], dim=1)
    cell = grads_of(loss_of(padded, h_n, c_n), list(plain.parameters()))
    names = [n for n, _ in plain.named_parameters()]
    assert max(paths.hidden[n].abs().max() for n in names) > 1e-3  # the two paths differ
    for name, f, c in zip(names, full, cell, strict=True):
        torch.testing.assert_close(paths.full[name], f, msg=f"full {name}")
        torch.testing.assert_close(paths.cell[name], c, msg=f"cell {name}")
        torch.testing.assert_close(paths.hidden[name], f - c, msg=f"hidden {name}")


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first",
    [(1, False, False), (2, False, False), (1, True, False), (2, True, True), (1, False, True)],
)
def test_full_and_cell_match_references(layers, bidirectional, batch_first):
    torch.manual_seed(0)
    plain = nn.LSTM(3, 4, layers, bidirectional=bidirectional, batch_first=batch_first, dtype=D)
    sequences = [torch.randn(6, 3, dtype=D) for _ in range(3)]
    _check_against_references(plain, sequences, packed=False)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_input_matches_references(bidirectional):
    torch.manual_seed(0)
    plain = nn.LSTM(2, 3, 2, bidirectional=bidirectional, dtype=D)
    sequences = [torch.randn(n, 2, dtype=D) for n in (5, 2, 4)]
    _check_against_references(plain, sequences, packed=True)


class AroundLSTM(nn.Module):
    """Other layers around an LSTM: (T, B, 3) -> Linear -> tanh -> LSTM -> Linear."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 4, dtype=D)
        self.lstm = nn.LSTM(4, 5, 2, dtype=D)
        self.head = nn.Linear(5, 2, dtype=D)

    def forward(self, x):
        return self.head(self.lstm(torch.tanh(self.inp(x)))[0])


def test_converted_model_with_other_layers_matches_references():
    torch.manual_seed(0)
    plain = AroundLSTM()
    x, target = torch.randn(6, 3, 3, dtype=D), torch.randn(6, 3, 2, dtype=D)
    model = hdetach.convert(copy.deepcopy(plain))
    paths = gradient_paths(model, lambda: (model(x) - target).pow(2).sum())

    full = grads_of((plain(x) - target).pow(2).sum(), list(plain.parameters()))
    features = torch.tanh(plain.inp(x))
    zeros = torch.zeros(2, 3, 5, dtype=D)
    every_step = torch.ones(2, 6, 3, dtype=torch.bool)
    params = _lstm_params(plain.lstm)
    outs, _, _ = oracle_lstm(params, list(features.unbind(1)), zeros, zeros, every_step, "h", False)
    cell_loss = (plain.head(torch.stack(outs, dim=1)) - target).pow(2).sum()
    cell = grads_of(cell_loss, list(plain.parameters()))
    for (name, _), f, c in zip(plain.named_parameters(), full, cell, strict=True):
        torch.testing.assert_close(paths.full[name], f, msg=f"full {name}")
        torch.testing.assert_close(paths.cell[name], c, msg=f"cell {name}")
    assert paths.groups == {
        "inp.weight": "other",
        "inp.bias": "other",
        **{n: "W_ih" for n in ("lstm.weight_ih_l0", "lstm.weight_ih_l1")},
        **{n: "W_hh" for n in ("lstm.weight_hh_l0", "lstm.weight_hh_l1")},
        **{f"lstm.bias_{k}_l{i}": "bias" for i in (0, 1) for k in ("ih", "hh")},
        "head.weight": "other",
        "head.bias": "other",
    }


class CellLoop(nn.Module):
    """A hand-written loop over an LSTMCell that h-detaches its own way (every other step)."""

    def __init__(self, cell: nn.LSTMCell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        state, outs = None, []
        for t in range(x.shape[0]):
            if isinstance(self.cell, hdetach.LSTMCell):
                state = self.cell(x[t], state, detach=t % 2 == 1 and state is not None)
            else:
                state = self.cell(x[t], state)
            outs.append(state[0])
        return torch.stack(outs)


def _cell_loop_detached(cell: nn.LSTMCell, x):
    """Plain torch ops from the cell's weights, h_{t-1} detached at every step."""
    h = c = torch.zeros(x.shape[1], cell.hidden_size, dtype=D)
    outs = []
    for t in range(x.shape[0]):
        z = x[t] @ cell.weight_ih.T + h.detach() @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh
        i, f, g, o = z.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs)


def test_lstm_cell_loop_matches_references():
    torch.manual_seed(0)
    plain = nn.LSTMCell(3, 4, dtype=D)
    model = CellLoop(hdetach.LSTMCell(3, 4, dtype=D))
    model.cell.load_state_dict(plain.state_dict())
    x, readout = torch.randn(5, 2, 3, dtype=D), torch.randn(5, 2, 4, dtype=D)
    paths = gradient_paths(model, lambda: (model(x) * readout).sum())
    full = grads_of((CellLoop(plain)(x) * readout).sum(), list(plain.parameters()))
    cell = grads_of((_cell_loop_detached(plain, x) * readout).sum(), list(plain.parameters()))
    for (name, _), f, c in zip(plain.named_parameters(), full, cell, strict=True):
        torch.testing.assert_close(paths.full["cell." + name], f, msg=f"full {name}")
        torch.testing.assert_close(paths.cell["cell." + name], c, msg=f"cell {name}")


def _two_layer_dropout_model(seed: int = 0) -> tuple[nn.Module, callable]:
    torch.manual_seed(seed)
    model = hdetach.LSTM(3, 4, 2, dropout=0.5, p_detach=0.5)
    x = torch.randn(5, 2, 3)

    def loss_fn():
        return model(x)[0].pow(2).sum()

    return model, loss_fn


def test_zero_recurrent_weights_leave_no_hidden_path_even_with_dropout():
    model, loss_fn = _two_layer_dropout_model()
    with torch.no_grad():
        model.weight_hh_l0.zero_()
        model.weight_hh_l1.zero_()
    paths = gradient_paths(model, loss_fn)  # training mode: dropout between the layers
    assert model.training
    for name, g in paths.hidden.items():
        assert torch.equal(g, torch.zeros_like(g)), name
    assert paths.summary()["groups"]["total"]["ratio"] == 0.0


def test_one_step_from_zero_state_has_no_hidden_path():
    torch.manual_seed(0)
    model = hdetach.LSTM(3, 4, 2, bidirectional=True)
    x = torch.randn(1, 2, 3)
    paths = gradient_paths(model, lambda: model(x)[0].pow(2).sum())
    for name, g in paths.hidden.items():
        assert torch.equal(g, torch.zeros_like(g)), name


def test_the_modules_own_detach_settings_do_not_change_the_result():
    model, loss_fn = _two_layer_dropout_model()
    reference = gradient_paths(model, loss_fn)
    for options in (
        dict(p_detach=0.0),
        dict(p_detach=1.0),
        dict(detach_path="c"),
        dict(detach_scope="sample", layer_masks="independent"),
    ):
        for key, value in options.items():
            setattr(model, key, value)
        paths = gradient_paths(model, loss_fn)
        for name in reference.full:
            assert torch.equal(paths.full[name], reference.full[name]), (options, name)
            assert torch.equal(paths.cell[name], reference.cell[name]), (options, name)
    assert model.detach_path == "c"  # restored to what the module had


@pytest.mark.parametrize("training", [True, False])
def test_grad_mode_rng_and_forward_are_left_as_they_were(training):
    model, loss_fn = _two_layer_dropout_model()
    model.train(training)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    rng = torch.get_rng_state()
    gradient_paths(model, loss_fn)
    assert model.training == training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert "forward" not in vars(model)


def test_forward_is_restored_after_an_error():
    model, _ = _two_layer_dropout_model()
    with pytest.raises(RuntimeError, match="boom"), forced_h_detach(model, True):
        raise RuntimeError("boom")
    assert "forward" not in vars(model)


def test_a_loss_fn_that_changes_between_calls_is_refused():
    model, loss_fn = _two_layer_dropout_model()
    calls = []

    def drifting():
        calls.append(1)
        return loss_fn() * len(calls)

    with pytest.raises(RuntimeError, match="same forward pass"):
        gradient_paths(model, drifting)


def test_bad_models_and_losses_are_refused():
    with pytest.raises(ValueError, match="no hdetach.LSTM"):
        gradient_paths(nn.Linear(2, 2), lambda: torch.zeros(()))
    mixed = nn.ModuleList([hdetach.LSTM(2, 2), nn.LSTM(2, 2)])
    with pytest.raises(ValueError, match=r"torch.nn LSTM modules \(1\)"):
        gradient_paths(mixed, lambda: torch.zeros(()))
    model, loss_fn = _two_layer_dropout_model()
    with pytest.raises(ValueError, match="scalar"):
        gradient_paths(model, lambda: model(torch.randn(5, 2, 3))[0])
