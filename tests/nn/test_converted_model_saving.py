"""A converted model saved whole loads as the torch.nn model did: with
``torch.load(..., weights_only=True)`` under the torch.nn classes it uses, nothing more."""

from __future__ import annotations

import torch
from torch import nn

import hdetach


def test_a_converted_model_round_trips_with_only_its_torch_nn_classes_trusted(tmp_path):
    torch.manual_seed(4)
    model = nn.ModuleDict(
        {"embed": nn.Embedding(10, 4), "rnn": nn.LSTM(4, 5, 2), "cell": nn.LSTMCell(5, 3)}
    )
    hdetach.convert(model, p_detach=0.3, detach_scope="sample")  # the one changed line
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with torch.serialization.safe_globals([nn.ModuleDict, nn.Embedding]):
        loaded = torch.load(path, weights_only=True)
    assert type(loaded["rnn"]) is hdetach.LSTM and type(loaded["cell"]) is hdetach.LSTMCell
    assert (loaded["rnn"].p_detach, loaded["rnn"].detach_scope) == (0.3, "sample")
    tokens, mask = torch.randint(10, (6, 2)), torch.rand(6) < 0.5
    results = []
    for m in (model, loaded):
        out, _ = m["rnn"](m["embed"](tokens), detach_mask=mask)
        h, c = m["cell"](out[-1])
        loss = out.sum() + (h * c).sum()
        results.append([out, h, *torch.autograd.grad(loss, list(m.parameters()))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
