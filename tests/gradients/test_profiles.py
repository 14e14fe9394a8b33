"""gradient_profiles against a float64 reference loop and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hdetach
from hdetach.analysis.profiles import gradient_profiles

D = torch.float64


def _reference_profiles(lstm: nn.LSTM, x, readout, detach_every_step: bool):
    """A plain loop from the weights; per step ||dL/dx_t||, ||dL/dh_t||, ||dL/dc_t||."""
    x = x.detach().requires_grad_()
    h = c = torch.zeros(x.shape[1], lstm.hidden_size, dtype=D)
    hs, cs = [], []
    for t in range(x.shape[0]):
        h_in = h.detach() if detach_every_step else h
        z = x[t] @ lstm.weight_ih_l0.T + h_in @ lstm.weight_hh_l0.T
        i, f, g, o = (z + lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    loss = (torch.stack(hs) * readout).sum() + cs[-1].pow(2).sum()
    grads = torch.autograd.grad(loss, [x, *hs, *cs])
    steps = x.shape[0]
    return {
        "x": torch.stack([g.norm() for g in grads[0]]),
        "h": torch.stack([g.norm() for g in grads[1 : 1 + steps]]),
        "c": torch.stack([g.norm() for g in grads[1 + steps :]]),
    }, grads


@pytest.mark.parametrize("layout", ["time-major", "batch-first", "unbatched"])
def test_one_layer_profiles_match_a_reference_loop(layout):
    torch.manual_seed(0)
    lstm = hdetach.LSTM(3, 4, batch_first=layout == "batch-first", dtype=D)
    batch = 1 if layout == "unbatched" else 2
    x, readout = torch.randn(6, batch, 3, dtype=D), torch.randn(6, batch, 4, dtype=D)

    def loss_fn():
        if layout == "unbatched":
            out, (_, c_n) = lstm(x.squeeze(1))
            return (out * readout.squeeze(1)).sum() + c_n.pow(2).sum()
        out, (_, c_n) = lstm(x.transpose(0, 1) if lstm.batch_first else x)
        out = out.transpose(0, 1) if lstm.batch_first else out
        return (out * readout).sum() + c_n.pow(2).sum()

    profiles = gradient_profiles(lstm, loss_fn)
    full, full_grads = _reference_profiles(lstm, x, readout, detach_every_step=False)
    cell, cell_grads = _reference_profiles(lstm, x, readout, detach_every_step=True)
    for quantity in ("x", "h", "c"):
        torch.testing.assert_close(profiles.norms["full"][quantity], full[quantity])
        torch.testing.assert_close(profiles.norms["cell"][quantity], cell[quantity])
    hidden_x = torch.stack([g.norm() for g in full_grads[0] - cell_grads[0]])
    torch.testing.assert_close(profiles.norms["hidden"]["x"], hidden_x)
    # The last step's h has no recurrent use, so its gradient does not depend on the path.
    assert profiles.norms["hidden"]["h"][-1] == 0
    assert profiles.norms["hidden"]["x"][0] > 1e-3


def test_input_profile_of_a_deep_bidirectional_lstm_matches_finite_differences():
    torch.manual_seed(0)
    lstm = hdetach.LSTM(2, 3, 2, bidirectional=True, dtype=D)
    x, readout = torch.randn(4, 2, 2, dtype=D), torch.randn(4, 2, 6, dtype=D)

    def loss_at(inputs):
        return (lstm(inputs)[0] * readout).sum()

    profiles = gradient_profiles(lstm, lambda: loss_at(x))
    assert set(profiles.norms["full"]) == {"x"}  # states are profiled for 1-layer LSTMs only
    eps, numeric = 1e-6, torch.zeros_like(x)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in x.shape)):
        step = torch.zeros_like(x)
        step[tuple(index)] = eps
        with torch.no_grad():
            numeric[tuple(index)] = (loss_at(x + step) - loss_at(x - step)) / (2 * eps)
    expected = torch.stack([g.norm() for g in numeric])
    torch.testing.assert_close(profiles.norms["full"]["x"], expected, rtol=1e-6, atol=1e-8)


def test_share_of_first_steps_and_a_model_around_the_lstm():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.lstm = hdetach.LSTM(1, 8, batch_first=True)
    x = torch.randn(3, 12, 1)
    profiles = gradient_profiles(model.lstm, lambda: model.lstm(x)[0][:, -1].sum())
    shares = profiles.share_of_first(4)
    squared = profiles.norms["cell"]["x"].square()
    assert shares["cell"] == pytest.approx(float(squared[:4].sum() / squared.sum()))
    assert set(shares) == {"full", "cell", "hidden"}
    assert all(0 < s < 1 for s in shares.values())


def test_bad_calls_are_refused():
    two = nn.ModuleList([hdetach.LSTM(1, 2), hdetach.LSTM(1, 2)])
    with pytest.raises(ValueError, match="name one with lstm="):
        gradient_profiles(two, lambda: torch.zeros(()))
    with pytest.raises(ValueError, match="lstm='2' is not"):
        gradient_profiles(two, lambda: torch.zeros(()), lstm="2")
    with pytest.raises(ValueError, match="never ran"):
        gradient_profiles(two, lambda: torch.zeros((), requires_grad=True), lstm="0")
    x = torch.randn(5, 1, 1)
    with pytest.raises(ValueError, match="once per loss_fn"):
        gradient_profiles(two, lambda: two[0](two[0](x)[0][..., :1])[0].sum(), lstm="0")
    assert "forward" not in vars(two[0])
