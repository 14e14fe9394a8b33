"""Two small models written for torch.nn, in the style of public examples, converted.

At p_detach = 0 a converted model must train exactly like the original: same losses,
same weights after a few optimizer steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hdetach

pytestmark = pytest.mark.usefixtures("one_thread")


class WordLanguageModel(nn.Module):
    """Embedding, a 2-layer LSTM with dropout, and a decoder tied to the embedding."""

    def __init__(self, tokens: int = 40, width: int = 16, layers: int = 2, dropout: float = 0.3):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(tokens, width)
        self.rnn = nn.LSTM(width, width, layers, dropout=dropout)
        self.decoder = nn.Linear(width, tokens)
        self.decoder.weight = self.encoder.weight  # tied

    def forward(self, tokens, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return F.log_softmax(self.decoder(self.drop(output)), dim=-1), hidden


def train_language_model(model, data, steps=4, bptt=6, lr=2.0):
    """Truncated BPTT over ``data`` (T, B) with plain SGD and gradient clipping."""
    torch.manual_seed(11)  # the dropout draws
    batch = data.shape[1]
    hidden = (torch.zeros(2, batch, 16), torch.zeros(2, batch, 16))
    losses = []
    for step in range(steps):
        inputs = data[step * bptt : (step + 1) * bptt]
        targets = data[step * bptt + 1 : (step + 1) * bptt + 1]
        hidden = tuple(h.detach() for h in hidden)
        model.zero_grad()
        log_probs, hidden = model(inputs, hidden)
        loss = F.nll_loss(log_probs.view(-1, log_probs.shape[-1]), targets.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_tied_word_language_model_trains_like_the_original(backend):
    torch.manual_seed(0)
    original = WordLanguageModel()
    converted = hdetach.convert(copy.deepcopy(original), p_detach=0.0, backend=backend)
    assert converted.decoder.weight is converted.encoder.weight  # still tied
    data = torch.randint(0, 40, (30, 4), generator=torch.Generator().manual_seed(1))
    expected = train_language_model(original, data)
    actual = train_language_model(converted, data)
    assert expected[-1] != expected[0]  # it trained
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(converted.named_parameters(), original.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class SinePredictor(nn.Module):
    """Two stacked LSTMCells and a linear read-out, unrolled by hand; predicts ahead."""

    def __init__(self, hidden: int = 12):
        super().__init__()
        self.hidden = hidden
        self.cell1 = nn.LSTMCell(1, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, signal, future: int = 0):
        batch = signal.shape[0]
        h1, c1, h2, c2 = (signal.new_zeros(batch, self.hidden) for _ in range(4))
        outputs = []
        for value in signal.split(1, dim=1):
            h1, c1 = self.cell1(value, (h1, c1))
            h2, c2 = self.cell2(h1, (h2, c2))
            outputs.append(self.linear(h2))
        for _ in range(future):
            h1, c1 = self.cell1(outputs[-1], (h1, c1))
            h2, c2 = self.cell2(h1, (h2, c2))
            outputs.append(self.linear(h2))
        return torch.cat(outputs, dim=1)


def train_sine_predictor(model, steps=2):
    t = torch.arange(16, dtype=torch.float64) + 4 * torch.arange(3, dtype=torch.float64)[:, None]
    waves = torch.sin(t / 4.0)
    inputs, targets = waves[:, :-1], waves[:, 1:]
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.8, max_iter=4)
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = F.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    for _ in range(steps):
        losses.append(optimizer.step(closure).item())
    return losses, model(inputs[:, :8], future=4)


def test_lstmcell_sine_predictor_trains_like_the_original_with_lbfgs():
    torch.manual_seed(0)
    original = SinePredictor().double()
    converted = hdetach.convert(copy.deepcopy(original), p_detach=0.0)
    assert type(converted.cell1) is hdetach.LSTMCell
    expected_losses, expected_forecast = train_sine_predictor(original)
    losses, forecast = train_sine_predictor(converted)
    assert expected_losses[-1] < expected_losses[0]  # it trained
    torch.testing.assert_close(losses, expected_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(forecast, expected_forecast, rtol=1e-12, atol=1e-14)
    for a, b in zip(converted.parameters(), original.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
