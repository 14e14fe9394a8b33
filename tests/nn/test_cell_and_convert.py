"""hdetach.LSTMCell, and convert/revert between torch.nn.LSTM and hdetach.LSTM."""

from __future__ import annotations

import pytest
import torch
from helpers import grads_of
from torch import nn

import hdetach


def unroll(cell, x, detach_at, state):
    h, c = state
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c), detach=detach_at[t])
    return h, c


@pytest.mark.parametrize("path", ["h", "c"])
def test_cell_detach_matches_the_sequence_module(path):
    torch.manual_seed(0)
    cell = hdetach.LSTMCell(3, 4, detach_path=path, dtype=torch.float64)
    lstm = hdetach.LSTM(3, 4, detach_path=path, dtype=torch.float64, backend="reference")
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    state = tuple(torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = torch.rand(6, 2) < 0.5
    h, c = unroll(cell, x, [mask[t] for t in range(6)], state)
    _, (h_n, c_n) = lstm(x, tuple(s.unsqueeze(0) for s in state), detach_mask=mask)
    expected = grads_of((h_n * 2).sum() + c_n.sum(), [*state, *lstm.parameters()])
    actual = grads_of((h * 2).sum() + c.sum(), [*state, *cell.parameters()])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_cell_without_detach_is_torch_cell():
    torch.manual_seed(1)
    cell = hdetach.LSTMCell(3, 4)
    native = nn.LSTMCell(3, 4)
    native.load_state_dict(cell.state_dict())
    x = torch.randn(5, 3)
    for a, b in zip(cell(x), native(x)):
        torch.testing.assert_close(a, b)
    h, c = cell(x, (torch.zeros(5, 4), torch.zeros(5, 4)), detach=True)
    torch.testing.assert_close(h, native(x)[0])


@pytest.mark.parametrize("detach", [1, torch.zeros(3, dtype=torch.bool), torch.zeros(5)])
def test_cell_bad_detach(detach):
    cell = hdetach.LSTMCell(3, 4)
    with pytest.raises((TypeError, ValueError), match="detach must be"):
        cell(torch.randn(5, 3), (torch.zeros(5, 4), torch.zeros(5, 4)), detach=detach)


class Captioner(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True)
        self.heads = nn.ModuleList([nn.LSTM(8, 8), nn.Linear(8, 10)])

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        out, _ = self.heads[0](out)
        return self.heads[1](out)


def test_convert_swaps_every_lstm_and_shares_parameters():
    torch.manual_seed(2)
    model = Captioner()
    tokens = torch.randint(0, 10, (3, 7))
    before = model(tokens)
    params_before = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    converted = hdetach.convert(model, p_detach=0.5, detach_scope="sample")
    assert converted is model
    assert isinstance(model.rnn, hdetach.LSTM) and isinstance(model.heads[0], hdetach.LSTM)
    assert model.rnn.p_detach == 0.5 and model.rnn.detach_scope == "sample"
    assert model.rnn.batch_first and model.rnn.num_layers == 2
    assert all(a is b for a, b in zip(model.parameters(), params_before))
    torch.testing.assert_close(model(tokens), before)
    # The optimizer built before the swap still updates the live weights.
    model(tokens).sum().backward()
    weight = model.rnn.weight_hh_l0.detach().clone()
    optimizer.step()
    assert not torch.equal(weight, model.rnn.weight_hh_l0)

    reverted = hdetach.revert(model)
    assert type(reverted.rnn) is nn.LSTM and type(reverted.heads[0]) is nn.LSTM
    assert all(a is b for a, b in zip(reverted.parameters(), params_before))


def test_convert_a_bare_lstm_and_keep_training_mode():
    lstm = nn.LSTM(2, 3).eval()
    ours = hdetach.convert(lstm)
    assert isinstance(ours, hdetach.LSTM) and not ours.training


@pytest.mark.parametrize("cls", [nn.LSTM, nn.LSTMCell])
def test_convert_and_revert_keep_what_the_user_attached(cls):
    """Hooks (all kinds, their handles still working), buffers and attributes survive
    convert and revert; only the parameters used to."""
    torch.manual_seed(0)
    old = cls(3, 4)
    calls = []
    handles = [
        old.register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m)))),
        old.register_forward_hook(lambda m, args, out: calls.append(("post", type(m)))),
        old.register_forward_hook(
            lambda m, args, kwargs, out: calls.append(("kwargs", type(m))), with_kwargs=True
        ),
        old.register_full_backward_hook(lambda m, gi, go: calls.append(("backward", type(m)))),
    ]
    old.register_buffer("scale", torch.tensor(2.0))
    old.register_buffer("scratch", torch.zeros(1), persistent=False)
    old.note = "mine"
    x = (torch.randn(5, 3) if cls is nn.LSTMCell else torch.randn(5, 2, 3)).requires_grad_()

    def attached(model: nn.Module, kind: type) -> None:
        calls.clear()
        model(x)[0].sum().backward()
        assert calls == [("pre", kind), ("post", kind), ("kwargs", kind), ("backward", kind)]
        assert model.note == "mine" and model.scale.item() == 2.0
        assert "scale" in model.state_dict() and "scratch" not in model.state_dict()

    converted = hdetach.convert(old)
    attached(converted, hdetach.LSTMCell if cls is nn.LSTMCell else hdetach.LSTM)
    reverted = hdetach.revert(converted)
    attached(reverted, cls)
    for handle in handles:
        handle.remove()
    calls.clear()
    converted(x)
    reverted(x)
    assert calls == []  # the user's handles removed the hooks from both
