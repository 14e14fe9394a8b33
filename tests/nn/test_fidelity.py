"""hdetach.LSTM where torch.nn.LSTM's users rely on its behaviour beyond plain calls.

Each test compares numbers with torch.nn.LSTM (or with an hdetach.LSTM holding the
same weights), not just the absence of an error.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import grads_of
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations
from torch.nn.utils.rnn import pack_sequence

import hdetach
from hdetach.nn.lstm import DETACH_SCOPES, LAYER_MASKS


def twin_lstms(seed=0, **kwargs):
    """An hdetach.LSTM and a torch.nn.LSTM with identical weights (``kwargs`` of both)."""
    torch.manual_seed(seed)
    native = nn.LSTM(**kwargs)
    ours = hdetach.convert(nn.LSTM(**kwargs), p_detach=0.0)
    ours.load_state_dict(native.state_dict())
    return ours, native


def output_and_grads(module, x, wrt, **forward_kwargs):
    out, (h, c) = module(x, **forward_kwargs)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    loss = (out * cotangent).sum() + h.sum() + (c * c).sum()
    return [out, h, c, *grads_of(loss, wrt)]


def assert_lists_close(actual, expected, **tol):
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, msg=lambda m, k=k: f"item {k}: {m}", **tol)


def test_functional_call_in_training_uses_the_passed_parameters():
    torch.manual_seed(0)
    module = hdetach.LSTM(3, 5, num_layers=2, p_detach=0.5)
    loaded = hdetach.LSTM(3, 5, num_layers=2, p_detach=0.5)
    passed = {name: torch.randn_like(p).requires_grad_() for name, p in module.named_parameters()}
    loaded.load_state_dict(passed)
    x = torch.randn(6, 2, 3)
    mask = torch.rand(6) < 0.5

    out, (h, c) = functional_call(module, passed, (x,), {"detach_mask": mask})
    loss = out.sum() + (h * c).sum()
    own = torch.autograd.grad(loss, list(module.parameters()), allow_unused=True, retain_graph=True)
    assert all(g is None for g in own)  # the module's own weights took no part
    actual = [out, h, c, *grads_of(loss, list(passed.values()))]
    out, (h, c) = loaded(x, detach_mask=mask)
    expected = [out, h, c, *grads_of(out.sum() + (h * c).sum(), list(loaded.parameters()))]
    assert_lists_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["weight_norm", "spectral_norm"])
def test_weight_parametrization_matches_torch_lstm(norm):
    ours, native = twin_lstms(input_size=3, hidden_size=5, num_layers=2)
    for module in (ours, native):
        torch.manual_seed(1)  # spectral_norm draws its power-iteration start
        getattr(parametrizations, norm)(module, "weight_hh_l0")
    x = torch.randn(6, 2, 3)
    results = []
    for module, kwargs in ((ours, {"detach_mask": torch.zeros(6, dtype=torch.bool)}), (native, {})):
        # (an all-False mask runs hdetach's kernels, not torch's: nothing detached)
        wrt = list(module.parameters())
        results.append([output_and_grads(module, x, wrt, **kwargs) for _ in range(2)])
    assert_lists_close(results[0][0] + results[0][1], results[1][0] + results[1][1])
    originals = list(ours.parametrizations.weight_hh_l0.parameters())
    grads = torch.autograd.grad(ours(x)[0].sum(), originals)  # raises if one took no part
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "packed,lengths", [(False, (7, 7, 7)), (True, (7, 7, 7)), (True, (7, 5, 3))]
)
@pytest.mark.parametrize("with_mask", [False, True])
def test_autocast_output_dtype_matches_torch_lstm(packed, lengths, with_mask):
    """torch computes in the autocast dtype, but for ragged packed sequences on the CPU."""
    ours, native = twin_lstms(input_size=3, hidden_size=8, num_layers=2)
    seqs = [torch.randn(n, 3) for n in lengths]
    ragged = len(set(lengths)) > 1
    x = pack_sequence(seqs) if packed else torch.stack(seqs, 1)  # time-major
    hx = tuple(torch.randn(2, 3, 8) for _ in "hc")
    kwargs = {"detach_mask": torch.rand(7) < 0.5} if with_mask else {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = native(x, hx)
        actual = ours(x, hx, **kwargs)
    if packed:
        actual, expected = (actual[0].data, actual[1]), (expected[0].data, expected[1])
    actual, expected = [actual[0], *actual[1]], [expected[0], *expected[1]]
    assert [t.dtype for t in actual] == [t.dtype for t in expected]
    assert expected[0].dtype == (torch.float32 if ragged else torch.bfloat16)
    # Both compute in bfloat16 but round at different places (for ragged sequences torch
    # keeps float32 outputs but autocast runs its matrix products in bfloat16, ours stay
    # float32): a few units of bfloat16's 2**-8 relative precision apart after 7 steps.
    assert_lists_close(actual, expected, rtol=2**-6, atol=2**-6)
    actual[0].float().sum().backward()
    assert ours.weight_hh_l0.grad.dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_output_dtype_matches_torch_lstm(autocast_dtype):
    """cuDNN's autocast wrapper computes in float16, whatever the autocast dtype."""
    ours, native = twin_lstms(input_size=3, hidden_size=8, num_layers=2)
    ours.cuda(), native.cuda()
    x = torch.randn(7, 3, 3, device="cuda")
    with torch.autocast("cuda", dtype=autocast_dtype):
        expected = native(x)
        actual = ours(x, detach_mask=torch.rand(7, device="cuda") < 0.5)
    actual, expected = [actual[0], *actual[1]], [expected[0], *expected[1]]
    assert [t.dtype for t in actual] == [t.dtype for t in expected]
    assert_lists_close(actual, expected, rtol=2**-8, atol=2**-8)  # float16: 2**-11 steps


def test_autocast_cast_values_match_the_explicit_low_precision_model():
    """Under autocast with a mask, the result is the model's run in bfloat16, exactly."""
    torch.manual_seed(2)
    ours = hdetach.LSTM(3, 6, p_detach=0.0, backend="fused")
    low = hdetach.LSTM(3, 6, p_detach=0.0, backend="fused", dtype=torch.bfloat16)
    low.load_state_dict(ours.state_dict())
    x, mask = torch.randn(5, 2, 3), torch.rand(5) < 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = ours(x, detach_mask=mask)[0]
    torch.testing.assert_close(actual, low(x.bfloat16(), detach_mask=mask)[0], rtol=0, atol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_empty_batch_matches_torch_lstm(batch_first):
    ours, native = twin_lstms(input_size=3, hidden_size=4, num_layers=2, batch_first=batch_first)
    ours.p_detach = 0.5
    shape = (0, 5, 3) if batch_first else (5, 0, 3)
    results = []
    for module in (ours, native):
        x = torch.randn(shape, requires_grad=True)
        results.append(output_and_grads(module, x, [x, *module.parameters()]))
    for a, e in zip(*results):
        assert a.shape == e.shape
    assert_lists_close(results[0], results[1], rtol=0, atol=0)


def test_whole_model_loads_with_weights_only_and_safe_globals(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3))
    model.append(hdetach.LSTM(3, 4, p_detach=0.4, detach_scope="sample"))
    model.append(hdetach.LSTMCell(4, 4, p_detach=0.1, detach_path="c"))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with (
        torch.serialization.safe_globals([nn.Sequential, nn.Linear]),
        pytest.raises(Exception, match="hdetach.nn.lstm.LSTM"),
    ):
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals([*hdetach.SAFE_GLOBALS, nn.Sequential, nn.Linear]):
        loaded = torch.load(path, weights_only=True)
    assert (loaded[1].p_detach, loaded[1].detach_scope) == (0.4, "sample")
    assert (loaded[2].p_detach, loaded[2].detach_path) == (0.1, "c")
    x = torch.randn(5, 2, 2)
    mask = torch.rand(5) < 0.5
    torch.testing.assert_close(
        loaded[1](loaded[0](x), detach_mask=mask)[0], model[1](model[0](x), detach_mask=mask)[0]
    )


@pytest.mark.parametrize(
    "module,attribute,value,choices",
    [
        (hdetach.LSTM(2, 3), "detach_scope", "typo", DETACH_SCOPES),
        (hdetach.LSTM(2, 3), "layer_masks", "indep", LAYER_MASKS),
        (hdetach.LSTM(2, 3), "detach_path", "hc", ("h", "c")),
        (hdetach.LSTM(2, 3), "backend", "cudnn", hdetach.functional.BACKENDS),
        (hdetach.LSTMCell(2, 3), "detach_scope", "typo", DETACH_SCOPES),
        (hdetach.LSTMCell(2, 3), "detach_path", "x", ("h", "c")),
    ],
)
def test_options_are_validated_on_assignment(module, attribute, value, choices):
    before = getattr(module, attribute)
    with pytest.raises(ValueError, match=f"{attribute} must be one of"):
        setattr(module, attribute, value)
    assert getattr(module, attribute) == before
    for valid in choices:
        setattr(module, attribute, valid)
        assert getattr(module, attribute) == valid


def test_interlayer_dropout_with_detach_masks_matches_the_reference_stack(cpu_kernel):
    """Dropout between layers draws what a stack of one-layer reference modules draws."""
    torch.manual_seed(4)
    lstm = hdetach.LSTM(3, 5, num_layers=2, dropout=0.4, dtype=torch.float64, backend="fused")
    layers = [hdetach.LSTM(n, 5, dtype=torch.float64, backend="reference") for n in (3, 5)]
    for k, layer in enumerate(layers):
        layer.load_state_dict(
            {
                n.replace(f"_l{k}", "_l0"): p
                for n, p in lstm.state_dict().items()
                if n.endswith(f"_l{k}")
            }
        )
    x = torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
    masks = torch.rand(2, 8, 2) < 0.5
    torch.manual_seed(5)
    out, (h, c) = lstm(x, detach_mask=masks)
    actual = [out, h, c, *grads_of(out.sum() + h.sum(), [x, *lstm.parameters()])]
    torch.manual_seed(5)
    first, (h0, c0) = layers[0](x, detach_mask=masks[0])
    dropped = nn.functional.dropout(first, 0.4, training=True)
    out, (h1, c1) = layers[1](dropped, detach_mask=masks[1])
    h, c = torch.cat([h0, h1]), torch.cat([c0, c1])
    params = [p for layer in layers for p in layer.parameters()]
    expected = [out, h, c, *grads_of(out.sum() + h.sum(), [x, *params])]
    assert (dropped == 0).any() and (first != 0).all()
    assert_lists_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_deepcopy_is_independent_and_keeps_the_options():
    torch.manual_seed(6)
    lstm = hdetach.LSTM(3, 4, num_layers=2, p_detach=0.3, detach_path="c", backend="fused")
    twin = copy.deepcopy(lstm)
    assert (twin.p_detach, twin.detach_path, twin.backend) == (0.3, "c", "fused")
    x, mask = torch.randn(5, 2, 3), torch.rand(5) < 0.5
    expected = output_and_grads(lstm, x, list(lstm.parameters()), detach_mask=mask)
    actual = output_and_grads(twin, x, list(twin.parameters()), detach_mask=mask)
    assert_lists_close(actual, expected, rtol=0, atol=0)
    with torch.no_grad():
        twin.weight_hh_l1.add_(1.0)
    assert not torch.allclose(twin(x)[0], lstm(x)[0])
    assert_lists_close(
        output_and_grads(lstm, x, list(lstm.parameters()), detach_mask=mask),
        expected,
        rtol=0,
        atol=0,
    )


def test_threads_running_one_module_get_their_own_results(cpu_kernel):
    """Several threads train through one module at once (the fused op keeps no state)."""
    torch.manual_seed(7)
    lstm = hdetach.LSTM(3, 6, num_layers=2, p_detach=0.5)
    inputs = [torch.randn(9, 2, 3) for _ in range(4)]
    masks = [torch.rand(2, 9) < 0.5 for _ in range(4)]
    wrt = list(lstm.parameters())
    expected = [output_and_grads(lstm, x, wrt, detach_mask=m) for x, m in zip(inputs, masks)]
    with ThreadPoolExecutor(4) as pool:
        runs = [
            pool.submit(output_and_grads, lstm, x, wrt, detach_mask=m)
            for x, m in zip(inputs, masks)
            for _ in range(3)
        ]
        actual = [run.result() for run in runs]
    for k, result in enumerate(actual):  # float32, up to the order of a parallel sum
        assert_lists_close(result, expected[k // 3], rtol=1e-6, atol=1e-7)
