"""proj_size > 0 (``weight_hr``) in every backend, against independent float64 oracles."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_all_close, grads_of, oracle_lstm_projected

import hdetach.ops.fused.lstm as fused_module
from hdetach.functional import lstm, lstm_recurrence

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _weights(gen, layers, directions, inputs, hidden, proj):
    """Per layer and direction [w_ih, w_hh, b_ih, b_hh, w_hr], float64, requiring grad."""
    params = []
    for layer in range(layers):
        size_in = inputs if layer == 0 else directions * proj
        for _ in range(directions):
            shapes = [(4 * hidden, size_in), (4 * hidden, proj), (4 * hidden,), (4 * hidden,)]
            shapes.append((proj, hidden))
            params.append(
                [(torch.randn(s, generator=gen, dtype=F64) * 0.5).requires_grad_() for s in shapes]
            )
    return params


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize(
    "bidirectional, packed, path, scope",
    [(False, False, "h", "batch"), (True, True, "h", "sample"), (True, False, "c", "sample")],
)
def test_projection_matches_a_per_example_oracle(
    cpu_kernel, backend, bidirectional, packed, path, scope
):
    gen = torch.Generator().manual_seed(31)
    layers, directions, steps, batch, inputs, hidden, proj = 2, 1 + bidirectional, 6, 3, 2, 5, 3
    params = _weights(gen, layers, directions, inputs, hidden, proj)
    states = layers * directions
    x = torch.randn(steps, batch, inputs, generator=gen, dtype=F64, requires_grad=True)
    h0 = (torch.randn(states, batch, proj, generator=gen, dtype=F64) * 0.5).requires_grad_()
    c0 = (torch.randn(states, batch, hidden, generator=gen, dtype=F64) * 0.5).requires_grad_()
    lengths = [6, 4, 2] if packed else [steps] * batch
    sizes = [sum(n > t for n in lengths) for t in range(steps)] if packed else None
    shape = (states, steps) if scope == "batch" else (states, steps, batch)
    masks = torch.rand(shape, generator=gen) < 0.4
    full_masks = masks if scope == "sample" else masks.unsqueeze(-1).expand(states, steps, batch)
    leaves = [x, h0, c0, *(w for entry in params for w in entry)]

    out, (h_n, c_n) = lstm(
        x, (h0, c0), params, bidirectional=bidirectional, detach_masks=list(masks),
        detach_path=path, batch_sizes=sizes, backend=backend,
    )  # fmt: skip
    cotangent = torch.randn(out.shape, generator=gen, dtype=F64)
    for b, n in enumerate(lengths):
        cotangent[n:, b] = 0  # padding carries no gradient in the oracle
    loss = (out * cotangent).sum() + (h_n * h_n).sum() + c_n.sum()
    actual = [out, h_n, c_n, *grads_of(loss, leaves)]

    sequences = [x[:n, b] for b, n in enumerate(lengths)]
    outs, h_e, c_e = oracle_lstm_projected(
        params, sequences, h0, c0, full_masks, path, bidirectional
    )
    padded = torch.zeros_like(out)
    for b, (o, n) in enumerate(zip(outs, lengths)):
        padded[:n, b] = o
    loss_e = (padded * cotangent).sum() + (h_e * h_e).sum() + c_e.sum()
    expected = [padded, h_e, c_e, *grads_of(loss_e, leaves)]
    names = ["out", "h_n", "c_n", "x", "h0", "c0"] + [f"w{k}" for k in range(len(leaves) - 3)]
    assert_all_close(actual, expected, names, **TIGHT)


@pytest.mark.parametrize("mask_kind", ["none", "batch", "sample"])
def test_fused_recurrence_with_projection_matches_reference(cpu_kernel, mask_kind, monkeypatch):
    gen = torch.Generator().manual_seed(32)
    steps, batch, hidden, proj = 9, 4, 6, 2
    monkeypatch.setattr(fused_module, "CHUNK_BYTES", 2 * batch * 4 * hidden * 8)  # 2-step chunks

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=F64) * 0.5).requires_grad_()

    leaves = [rand(steps, batch, 4 * hidden), rand(batch, proj), rand(batch, hidden)]
    leaves += [rand(4 * hidden, proj), rand(proj, hidden)]
    mask = {
        "none": None,
        "batch": torch.rand(steps, generator=gen) < 0.5,
        "sample": torch.rand(steps, batch, generator=gen) < 0.5,
    }[mask_kind]
    sizes = [4, 4, 3, 3, 3, 2, 2, 1, 1]
    cotangents = [torch.randn(s, generator=gen, dtype=F64) for s in [(steps, batch, proj)]]
    results = {}
    for backend in ("reference", "fused"):
        out, h_n, c_n = lstm_recurrence(*leaves[:4], mask, "h", sizes, backend, weight_hr=leaves[4])
        loss = (out * cotangents[0]).sum() + h_n.sum() + (c_n * c_n).sum()
        results[backend] = [out, h_n, c_n, *grads_of(loss, leaves)]
    names = ["out", "h_n", "c_n", "d_gates_x", "d_h0", "d_c0", "d_w_hh", "d_w_hr"]
    assert_all_close(results["fused"], results["reference"], names, **TIGHT)


@pytest.mark.parametrize("backend", ["fused", "reference", "native", "auto"])
def test_projection_without_detach_matches_torch_lstm(cpu_kernel, backend):
    torch.manual_seed(3)
    native = torch.nn.LSTM(3, 6, num_layers=2, proj_size=4, bidirectional=True, dtype=F64)
    x = torch.randn(8, 5, 3, dtype=F64, requires_grad=True)
    out, (h_n, c_n) = native(x)
    cotangent = torch.randn_like(out)
    params = list(native.parameters())

    def loss_of(out, h_n, c_n):
        return (out * cotangent).sum() + h_n.sum() + (c_n * c_n).sum()

    expected = [out, h_n, c_n, *grads_of(loss_of(out, h_n, c_n), [x, *params])]
    weights = native._flat_weights
    hx = (torch.zeros(4, 5, 4, dtype=F64), torch.zeros(4, 5, 6, dtype=F64))
    out2, (h2, c2) = lstm(
        x, hx, [weights[5 * k : 5 * k + 5] for k in range(4)], bidirectional=True, backend=backend
    )
    actual = [out2, h2, c2, *grads_of(loss_of(out2, h2, c2), [x, *params])]
    names = ["out", "h_n", "c_n", "x"] + [n for n in native._flat_weights_names]
    assert_all_close(actual, expected, names, **TIGHT)


def test_projection_weight_shapes_are_checked():
    x, h0, c0 = torch.randn(3, 2, 4), torch.zeros(2, 2), torch.zeros(2, 5)
    w_ih, w_hh = torch.randn(20, 4), torch.randn(20, 2)
    with pytest.raises(RuntimeError, match=r"weight_hr must have shape \(P, 5\)"):
        lstm(x, (h0[None], c0[None]), [(w_ih, w_hh, torch.randn(2, 4))])
    with pytest.raises(RuntimeError, match="h0 must have shape"):
        lstm(x, (c0[None], c0[None]), [(w_ih, w_hh, torch.randn(2, 5))])
    with pytest.raises(ValueError, match="2 to 5 tensors"):
        lstm(x, (h0[None], c0[None]), [(w_ih,)])
