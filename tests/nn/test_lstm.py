"""hdetach.LSTM against an independent per-example loop and against torch.nn.LSTM."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import assert_all_close, grads_of, oracle_lstm
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import hdetach

F64 = torch.float64


def make_pair(seed=0, **kwargs):
    """An hdetach.LSTM and a torch.nn.LSTM with identical weights."""
    torch.manual_seed(seed)
    ours = hdetach.LSTM(**kwargs)
    native = nn.LSTM(**{k: v for k, v in kwargs.items() if k in NATIVE_ARGS})
    native.load_state_dict(ours.state_dict())
    return ours, native


NATIVE_ARGS = {
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "dtype",
}

# Packed sequences' lengths. Sorting [6, 3, 5, 2] is a permutation that is its own inverse;
# sorting [3, 6, 5, 2] is a 3-cycle ([1, 2, 0, 3], inverse [2, 0, 1, 3]), so per-sample
# masks put in the packed order by the inverse permutation are caught.
SWAP, CYCLE = [6, 3, 5, 2], [3, 6, 5, 2]

# layers, bidirectional, batch_first, bias, packed lengths (None: not packed), with_hx
MODULE_CASES = [
    (1, False, False, True, None, False),
    (2, True, False, True, None, True),
    (2, False, True, False, None, True),
    (1, True, True, True, SWAP, False),
    (2, True, False, True, SWAP, True),
    (3, False, False, True, SWAP, True),
    (2, True, False, True, CYCLE, True),
]


def sequences_and_input(gen, lengths, input_size, batch_first, packed):
    seqs = [torch.randn(n, input_size, generator=gen, dtype=F64).requires_grad_() for n in lengths]
    if packed:
        return seqs, pack_sequence(seqs, enforce_sorted=False)
    x = torch.stack(seqs, dim=0 if batch_first else 1)
    return seqs, x


def outputs_per_example(output, batch_first, packed, lengths):
    if packed:
        padded, _ = pad_packed_sequence(output)
        return [padded[:n, b] for b, n in enumerate(lengths)]
    return [output[b] if batch_first else output[:, b] for b in range(len(lengths))]


@pytest.mark.parametrize(
    "layers,bidirectional,batch_first,bias,packed_lengths,with_hx", MODULE_CASES
)
@pytest.mark.parametrize("mask_shape", ["T", "TB", "LT", "LTB"])
@pytest.mark.parametrize("path", ["h", "c"])
@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_module_matches_oracle(
    cpu_kernel,
    layers,
    bidirectional,
    batch_first,
    bias,
    packed_lengths,
    with_hx,
    mask_shape,
    path,
    backend,
):
    packed = packed_lengths is not None
    gen = torch.Generator().manual_seed(layers * 7 + bidirectional + 2 * packed)
    input_size, hidden, batch, steps = 3, 4, 4, 6
    lengths = packed_lengths if packed else [steps] * batch
    states = layers * (2 if bidirectional else 1)
    torch.manual_seed(0)
    lstm = hdetach.LSTM(
        input_size,
        hidden,
        layers,
        bias,
        batch_first,
        0.0,
        bidirectional,
        dtype=F64,
        detach_path=path,
        backend=backend,
    )
    seqs, x = sequences_and_input(gen, lengths, input_size, batch_first, packed)
    scale = 1.0 if with_hx else 0.0
    h0, c0 = (scale * torch.randn(states, batch, hidden, generator=gen, dtype=F64) for _ in "hc")
    h0.requires_grad_(), c0.requires_grad_()
    full = torch.rand(states, steps, batch, generator=gen) < 0.5
    # The oracle takes (L*D, T, B); the module gets the same decisions in the tested shape.
    oracle_mask = {"T": full[:1, :, :1], "TB": full[:1], "LT": full[:, :, :1], "LTB": full}[
        mask_shape
    ].expand(states, steps, batch)
    mask = {
        "T": oracle_mask[0, :, 0],
        "TB": oracle_mask[0],
        "LT": oracle_mask[:, :, 0],
        "LTB": oracle_mask,
    }[mask_shape].contiguous()

    output, (h_n, c_n) = lstm(x, (h0, c0) if with_hx else None, detach_mask=mask)
    params = [
        list(lstm._flat_weights[k * (4 if bias else 2) : (k + 1) * (4 if bias else 2)])
        for k in range(states)
    ]
    expected_outs, expected_h, expected_c = oracle_lstm(
        params, seqs, h0, c0, oracle_mask, path, bidirectional
    )
    actual_outs = outputs_per_example(output, batch_first, packed, lengths)

    cotangents = [torch.randn(o.shape, generator=gen, dtype=F64) for o in expected_outs]
    g_h, g_c = (torch.randn(states, batch, hidden, generator=gen, dtype=F64) for _ in range(2))
    wrt = [*seqs, *((h0, c0) if with_hx else ()), *lstm.parameters()]

    def loss(outs, h, c):
        return (
            sum((o * g).sum() for o, g in zip(outs, cotangents)) + (h * g_h).sum() + (c * g_c).sum()
        )

    actual = [*actual_outs, h_n, c_n, *grads_of(loss(actual_outs, h_n, c_n), wrt)]
    expected = [
        *expected_outs,
        expected_h,
        expected_c,
        *grads_of(loss(expected_outs, expected_h, expected_c), wrt),
    ]
    names = [f"item{k}" for k in range(len(actual))]
    assert_all_close(actual, expected, names, rtol=1e-10, atol=1e-12)


TORCH_CASES = list(itertools.product([1, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("layers,bidirectional,batch_first,packed", TORCH_CASES)
def test_p0_matches_torch_lstm(cpu_kernel, layers, bidirectional, batch_first, packed):
    ours, native = make_pair(
        input_size=5,
        hidden_size=7,
        num_layers=layers,
        batch_first=batch_first,
        bidirectional=bidirectional,
        p_detach=0.0,
        backend="fused",
    )
    gen = torch.Generator().manual_seed(1)
    lengths = [9, 4, 7] if packed else [9, 9, 9]
    seqs = [torch.randn(n, 5, generator=gen) for n in lengths]
    if packed:
        x = pack_sequence(seqs, enforce_sorted=False)
    else:
        x = torch.stack(seqs, 0 if batch_first else 1).requires_grad_()
    states = layers * (2 if bidirectional else 1)
    hx = tuple(torch.randn(states, 3, 7, generator=gen).requires_grad_() for _ in range(2))
    results = []
    for module in (ours, native):
        out, (h, c) = module(x, hx)
        data = out.data if packed else out
        g = torch.randn(data.shape, generator=torch.Generator().manual_seed(2))
        loss = (data * g).sum() + h.sum() + (c * c).sum()
        wrt = [*hx, *module.parameters()] + ([] if packed else [x])
        results.append([data, h, c, *grads_of(loss, wrt)])
    assert_all_close(
        results[0], results[1], [f"item{k}" for k in range(len(results[0]))], rtol=1e-4, atol=1e-5
    )


def test_unbatched_input_matches_torch_lstm():
    ours, native = make_pair(
        input_size=2, hidden_size=3, num_layers=2, p_detach=0.0, backend="fused"
    )
    x = torch.randn(5, 2)
    hx = (torch.randn(2, 3), torch.randn(2, 3))
    for a, b in zip(ours(x, hx)[1] + (ours(x, hx)[0],), native(x, hx)[1] + (native(x, hx)[0],)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_same_init_parameters_and_state_dict_as_torch():
    torch.manual_seed(3)
    native = nn.LSTM(4, 5, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    ours = hdetach.LSTM(4, 5, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(native.state_dict())
    for (name, a), (_, b) in zip(ours.named_parameters(), native.named_parameters()):
        assert a.shape == b.shape and torch.equal(a, b), name
    assert "weight_hh_l1_reverse" in ours.state_dict()
    native.load_state_dict(ours.state_dict())
    ours.load_state_dict(native.state_dict())


def test_interlayer_dropout_is_applied_in_training_only():
    ours, native = make_pair(input_size=3, hidden_size=4, num_layers=2, dropout=1.0, p_detach=0.0)
    x = torch.randn(6, 2, 3)
    # Dropout of 1 zeroes the first layer's output: layer 2 then sees only zeros.
    second_layer = nn.LSTM(4, 4)
    second_layer.load_state_dict(
        {k.replace("_l1", "_l0"): v for k, v in ours.state_dict().items() if "_l1" in k}
    )
    expected, _ = second_layer(torch.zeros(6, 2, 4))
    torch.testing.assert_close(ours(x)[0], expected)
    ours.eval(), native.eval()
    torch.testing.assert_close(ours(x)[0], native(x)[0])


def detached_grads(lstm, x, **forward_kwargs):
    out, _ = lstm(x, **forward_kwargs)
    return torch.autograd.grad(out[-1].sum(), list(lstm.parameters()))


def test_drawn_mask_is_reproducible_and_changes_the_gradient():
    """A module's own mask stream is seeded from torch.manual_seed's seed (and the module's
    weights): the same program draws the same masks; a generator given replays them on
    one module when it is reseeded."""
    x = torch.randn(30, 3, 2)

    def seeded(**options):
        torch.manual_seed(11)
        return hdetach.LSTM(2, 8, p_detach=0.5, **options)

    first, second = detached_grads(seeded(), x), detached_grads(seeded(), x)
    lstm = seeded()
    lstm.p_detach = 0.0
    plain = detached_grads(lstm, x)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(first[1], plain[1])
    given = seeded(generator=torch.Generator())
    replays = []
    for _ in range(2):
        given.generator.manual_seed(5)
        replays.append(detached_grads(given, x))
    for a, b in zip(*replays):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(replays[0][1], first[1])  # another stream: other masks


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_p1_detaches_every_step(cpu_kernel, scope):
    lstm = hdetach.LSTM(2, 5, num_layers=2, p_detach=1.0, detach_scope=scope)
    x = torch.randn(7, 3, 2)
    every_step = detached_grads(lstm, x, detach_mask=torch.ones(7, dtype=torch.bool))
    for a, b in zip(detached_grads(lstm, x), every_step):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "layer_masks,scope", list(itertools.product(["shared", "independent"], ["batch", "sample"]))
)
def test_drawn_mask_shapes_follow_scope_and_layer_masks(layer_masks, scope):
    lstm = hdetach.LSTM(
        2,
        5,
        num_layers=2,
        bidirectional=True,
        p_detach=0.3,
        detach_scope=scope,
        layer_masks=layer_masks,
    )
    x = torch.randn(40, 3, 2)
    lstm.generator = torch.Generator().manual_seed(5)
    drawn = detached_grads(lstm, x)
    shape = (40,) if scope == "batch" else (40, 3)
    if layer_masks == "independent":
        shape = (4, *shape)
    explicit = torch.rand(shape, generator=torch.Generator().manual_seed(5)) < 0.3
    for a, b in zip(drawn, detached_grads(lstm, x, detach_mask=explicit)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_mask_in_eval_mode_or_without_grad():
    lstm = hdetach.LSTM(2, 6, p_detach=1.0)
    x = torch.randn(10, 2, 2)
    lstm.eval()
    eval_grads = detached_grads(lstm, x)
    lstm.train()
    lstm.p_detach = 0.0
    for a, b in zip(eval_grads, detached_grads(lstm, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    lstm.p_detach = 1.0
    with torch.no_grad():
        out, _ = lstm(x)
    torch.testing.assert_close(out, lstm(x)[0].detach())


# The types are torch.nn.LSTM's for the same inputs (tests/nn/test_torch_module_db.py
# compares them); the masks are hdetach's own arguments.
BAD_INPUTS = [
    (lambda m: m(torch.randn(5)), ValueError, "input must be a 3-D"),
    (lambda m: m(torch.randn(5, 2, 9)), RuntimeError, "input must have 3 features"),
    (
        lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64)),
        ValueError,
        "input must be torch.float32",
    ),
    (lambda m: m(torch.randn(0, 2, 3)), RuntimeError, "at least one time step"),
    (lambda m: m(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4),)), IndexError, "hx must be a tuple"),
    (
        lambda m: m(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4))),
        RuntimeError,
        "h_0 must have shape",
    ),
    (
        lambda m: m(torch.randn(5, 2, 3), detach_mask=torch.zeros(5)),
        TypeError,
        "detach_mask must be a torch.bool",
    ),
    (
        lambda m: m(torch.randn(5, 2, 3), detach_mask=torch.zeros(4, dtype=torch.bool)),
        ValueError,
        "detach_mask must have one of the shapes",
    ),
    (
        lambda m: m(torch.randn(5, 2, 3), detach_mask=torch.zeros(5, 3, dtype=torch.bool)),
        ValueError,
        "detach_mask must have one of the shapes",
    ),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_input_gets_a_clear_error(call, error, message):
    lstm = hdetach.LSTM(3, 4, num_layers=2)
    with pytest.raises(error, match=message):
        call(lstm)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"p_detach": 1.5}, ValueError, "p_detach must be in"),
        ({"p_detach": "0.2"}, TypeError, "p_detach must be a float"),
        ({"detach_scope": "step"}, ValueError, "detach_scope must be one of"),
        ({"detach_path": "x"}, ValueError, "detach_path must be one of"),
        ({"layer_masks": "own"}, ValueError, "layer_masks must be one of"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"proj_size": 5}, ValueError, "proj_size has to be smaller"),
    ],
)
def test_bad_options_get_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        hdetach.LSTM(3, 4, **kwargs)


def test_ambiguous_mask_shape_is_refused():
    lstm = hdetach.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="ambiguous"):
        lstm(torch.randn(2, 2, 3), detach_mask=torch.zeros(2, 2, dtype=torch.bool))


def test_setting_p_detach_is_validated():
    lstm = hdetach.LSTM(3, 4)
    with pytest.raises(ValueError, match="p_detach"):
        lstm.p_detach = -0.1


def test_the_lstm_docstring_example_runs():
    # The Example in hdetach.LSTM's docstring is what a user copies first: it must hold.
    import doctest

    import hdetach.nn.lstm

    result = doctest.testmod(hdetach.nn.lstm, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= 10 and result.failed == 0
