"""hdetach.LSTM on configurations drawn by Hypothesis, against the float64 oracle.

Each example draws the module's shape and options (T, B, input and hidden size, layers,
direction, batch_first, bias, proj_size, packed lengths, initial state, dtype, backend),
how the gradient is cut (none, an explicit mask in each shape the module takes, or a
mask the module draws itself: p, detach_scope, layer_masks) and the path (h or c).
Outputs, final states and every gradient are compared with the per-example float64 loop
of ``helpers`` (``oracle_lstm``, ``oracle_lstm_projected``), run on the same values.
"""

from __future__ import annotations

import torch
from helpers import assert_all_close, grads_of, oracle_lstm, oracle_lstm_projected
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import hdetach

F64 = torch.float64
# float64 against float64: rounding only; float32: a few float32 ulps over <= 6 steps.
TOLERANCE = {F64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-4, "atol": 1e-5}}
MASK_SHAPES = ("T", "TB", "LT", "LTB")


@st.composite
def configurations(draw) -> dict:
    hidden = draw(st.integers(1, 5))
    steps = draw(st.integers(1, 6))
    batch = draw(st.integers(1, 4))
    packed = draw(st.booleans())
    lengths = [steps] * batch
    if packed:
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
        lengths[draw(st.integers(0, batch - 1))] = steps  # T is the longest sequence
    mode = draw(st.sampled_from(["none", "explicit", "drawn"]))
    scope = draw(st.sampled_from(["batch", "sample"]))
    if mode == "drawn" and packed:
        # A drawn per-sample mask over packed input follows the packing's sorted order,
        # an internal choice (i.i.d. draws make it immaterial): only "batch" is checked.
        scope = "batch"
    return dict(
        steps=steps,
        batch=batch,
        inputs=draw(st.integers(1, 4)),
        hidden=hidden,
        layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj=draw(st.integers(0, hidden - 1)),
        packed=packed,
        lengths=lengths,
        with_hx=draw(st.booleans()),
        dtype=draw(st.sampled_from([F64, torch.float32])),
        backend=draw(st.sampled_from(["auto", "fused", "reference"])),
        mode=mode,
        p=0.0 if mode == "none" else draw(st.floats(0.0, 1.0)),
        scope=scope,
        layer_masks=draw(st.sampled_from(["shared", "independent"])),
        mask_shape=draw(st.sampled_from(MASK_SHAPES)),
        path=draw(st.sampled_from(["h", "c"])),
        seed=draw(st.integers(0, 2**16)),
    )


def oracle_params(lstm: hdetach.LSTM, cfg: dict) -> tuple[list[list[torch.Tensor]], list]:
    """Per layer and direction, float64 copies of the module's weights in the oracle's
    order (missing biases as zeros for the projected oracle); and the copies to
    differentiate, in ``lstm.parameters()`` order."""
    copies = {n: p.detach().double().requires_grad_() for n, p in lstm.named_parameters()}
    params = []
    for layer in range(cfg["layers"]):
        for d in range(1 + cfg["bidirectional"]):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            entry = [copies[f"weight_ih_{sfx}"], copies[f"weight_hh_{sfx}"]]
            if cfg["bias"]:
                entry += [copies[f"bias_ih_{sfx}"], copies[f"bias_hh_{sfx}"]]
            elif cfg["proj"]:
                entry += [torch.zeros(4 * cfg["hidden"], dtype=F64)] * 2
            if cfg["proj"]:
                entry.append(copies[f"weight_hr_{sfx}"])
            params.append(entry)
    return params, list(copies.values())


def masks_for(cfg: dict, states: int, gen: torch.Generator):
    """(what the module is given, the oracle's (L*D, T, B) mask)."""
    steps, batch = cfg["steps"], cfg["batch"]
    if cfg["mode"] == "none":
        return None, torch.zeros(states, steps, batch, dtype=torch.bool)
    if cfg["mode"] == "drawn":
        shape = (steps,) if cfg["scope"] == "batch" else (steps, batch)
        if cfg["layer_masks"] == "independent":
            shape = (states, *shape)
        # the module's draw, reproduced: the generator it is given
        drawn = torch.rand(shape, generator=torch.Generator().manual_seed(cfg["seed"])) < cfg["p"]
        if cfg["layer_masks"] == "shared":
            drawn = drawn.expand(states, *shape)
        full = drawn if cfg["scope"] == "sample" else drawn.unsqueeze(-1)
        return None, full.expand(states, steps, batch)
    kind = cfg["mask_shape"]
    if kind in ("TB", "LT") and steps == batch == states:
        kind = "LTB"  # a 2-D mask would be ambiguous; the module refuses it (tested elsewhere)
    full = torch.rand(states, steps, batch, generator=gen) < 0.5
    oracle = {"T": full[:1, :, :1], "TB": full[:1], "LT": full[:, :, :1], "LTB": full}[kind]
    oracle = oracle.expand(states, steps, batch)
    given_ = {"T": oracle[0, :, 0], "TB": oracle[0], "LT": oracle[:, :, 0], "LTB": oracle}[kind]
    return given_.contiguous(), oracle


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(configurations())
def test_random_configurations_match_the_float64_oracle(cfg):
    dtype, states = cfg["dtype"], cfg["layers"] * (1 + cfg["bidirectional"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    lstm = hdetach.LSTM(
        cfg["inputs"], cfg["hidden"], cfg["layers"], cfg["bias"], cfg["batch_first"], 0.0,
        cfg["bidirectional"], cfg["proj"], dtype=dtype, p_detach=cfg["p"],
        detach_scope=cfg["scope"], detach_path=cfg["path"], layer_masks=cfg["layer_masks"],
        backend=cfg["backend"],
    )  # fmt: skip
    out_size = cfg["proj"] or cfg["hidden"]
    # The values are drawn in the module's dtype; the oracle gets exact float64 copies.
    seqs = [
        torch.randn(n, cfg["inputs"], generator=gen, dtype=dtype).requires_grad_()
        for n in cfg["lengths"]
    ]
    hx = [
        torch.randn(states, cfg["batch"], size, generator=gen, dtype=dtype).requires_grad_()
        for size in (out_size, cfg["hidden"])
    ]
    mask, oracle_mask = masks_for(cfg, states, gen)
    if cfg["packed"]:
        x = pack_sequence(seqs, enforce_sorted=False)
    else:
        x = torch.stack(seqs, 0 if cfg["batch_first"] else 1)
    directions = 1 + cfg["bidirectional"]
    cotangents = [
        torch.randn(n, directions * out_size, generator=gen, dtype=dtype) for n in cfg["lengths"]
    ]
    g_h, g_c = (torch.randn(h.shape, generator=gen, dtype=dtype) for h in hx)

    lstm.generator = torch.Generator().manual_seed(cfg["seed"])  # where it draws its mask
    output, (h_n, c_n) = lstm(x, tuple(hx) if cfg["with_hx"] else None, detach_mask=mask)
    if cfg["packed"]:
        padded, _ = pad_packed_sequence(output)
        outs = [padded[:n, b] for b, n in enumerate(cfg["lengths"])]
    else:
        time_major = output.transpose(0, 1) if cfg["batch_first"] else output
        outs = [time_major[:, b] for b in range(cfg["batch"])]

    params, weights = oracle_params(lstm, cfg)
    seqs64 = [s.detach().double().requires_grad_() for s in seqs]
    hx64 = [h.detach().double().requires_grad_() for h in hx]
    h0, c0 = hx64 if cfg["with_hx"] else [torch.zeros_like(h) for h in hx64]
    oracle = oracle_lstm_projected if cfg["proj"] else oracle_lstm
    expected_outs, expected_h, expected_c = oracle(
        params, seqs64, h0, c0, oracle_mask, cfg["path"], cfg["bidirectional"]
    )

    def loss(outs, h, c, double=False):
        cast = (lambda t: t.double()) if double else (lambda t: t)
        return (
            sum((o * cast(g)).sum() for o, g in zip(outs, cotangents))
            + (h * cast(g_h)).sum()
            + (c * cast(g_c)).sum()
        )

    wrt = [*seqs, *(hx if cfg["with_hx"] else ()), *lstm.parameters()]
    wrt64 = [*seqs64, *(hx64 if cfg["with_hx"] else ()), *weights]
    actual = [*outs, h_n, c_n, *grads_of(loss(outs, h_n, c_n), wrt)]
    expected = [
        *expected_outs,
        expected_h,
        expected_c,
        *grads_of(loss(expected_outs, expected_h, expected_c, double=True), wrt64),
    ]
    assert [a.dtype for a in actual] == [dtype] * len(actual)
    names = [f"item{k}" for k in range(len(actual))]
    assert_all_close([a.double() for a in actual], expected, names, **TOLERANCE[dtype])
