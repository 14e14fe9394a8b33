"""hdetach.LSTM where torch.nn.LSTM's users rely on its behaviour beyond plain calls.

Each test compares numbers with torch.nn.LSTM (or with an hdetach.LSTM holding the
same weights), not just the absence of an error.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch
from helpers import grads_of
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations
from torch.nn.utils.rnn import PackedSequence, pack_sequence

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


AUTOCAST_CASES = [(False, (7, 7, 7)), (True, (7, 7, 7)), (True, (7, 5, 3))]


@pytest.mark.parametrize("packed,lengths", AUTOCAST_CASES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_autocast_output_dtype_matches_torch_lstm(packed, lengths, with_mask, record_property):
    """torch computes in the autocast dtype, but for ragged packed sequences on the CPU.

    Where this CPU's oneDNN has no bfloat16 LSTM (it needs AVX-512 or AMX), torch.nn.LSTM
    refuses with a RuntimeError. The test then asks what the drop-in promises there:
    without a mask hdetach.LSTM *is* torch's call, so it refuses the same way; with a mask
    its own kernels run and it does better, computing what its explicit bfloat16 twin does.
    """
    ours, native = twin_lstms(input_size=3, hidden_size=8, num_layers=2)
    seqs = [torch.randn(n, 3) for n in lengths]
    ragged = len(set(lengths)) > 1
    x = pack_sequence(seqs) if packed else torch.stack(seqs, 1)  # time-major
    hx = tuple(torch.randn(2, 3, 8) for _ in "hc")
    kwargs = {"detach_mask": torch.rand(7) < 0.5} if with_mask else {}
    refusal = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        try:  # probed here, on this CPU, not assumed from its name
            expected = native(x, hx)
        except RuntimeError as e:
            refusal = e
    record_property("torch_refused", refusal is not None)
    if refusal is not None:
        assert not ragged  # ragged input keeps float32 in torch: it never reaches oneDNN
        _assert_refused_the_same_way_or_did_better(ours, x, hx, kwargs, refusal)
        return
    actual = _autocast_call(ours, x, hx, kwargs)
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


def _autocast_call(module, x, hx, kwargs):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x, hx, **kwargs)


def _assert_refused_the_same_way_or_did_better(ours, x, hx, kwargs, refusal):
    if not kwargs:  # nothing detached: torch.nn.LSTM.forward itself, same error
        with pytest.raises(type(refusal)) as raised:
            _autocast_call(ours, x, hx, kwargs)
        assert str(raised.value) == str(refusal)
        return
    out, (h, c) = _autocast_call(ours, x, hx, kwargs)
    low = hdetach.LSTM(3, 8, num_layers=2, p_detach=0.0, dtype=torch.bfloat16)
    low.load_state_dict(ours.state_dict())
    packed = isinstance(x, PackedSequence)
    x_low = PackedSequence(x.data.bfloat16(), x.batch_sizes) if packed else x.bfloat16()
    want, (want_h, want_c) = low(x_low, tuple(s.bfloat16() for s in hx), **kwargs)
    out, want = (out.data, want.data) if packed else (out, want)
    assert [t.dtype for t in (out, h, c)] == [torch.bfloat16] * 3  # torch's, where it can
    assert_lists_close([out, h, c], [want, want_h, want_c], rtol=0, atol=0)
    out.float().sum().backward()
    assert ours.weight_hh_l0.grad.dtype == torch.float32


def test_autocast_test_holds_where_onednn_has_no_bfloat16_lstm(tmp_path):
    """Runs the test above with oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA), as on a CPU
    whose oneDNN has no bfloat16 LSTM, so that its refusal branch runs on every machine."""
    report = tmp_path / "report.xml"
    test = f"{__file__}::test_autocast_output_dtype_matches_torch_lstm"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    done = subprocess.run(
        [*command, f"--junitxml={report}", "-o", "junit_family=xunit1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    refused = ElementTree.parse(report).findall(".//property[@name='torch_refused']")
    flags = [p.get("value") == "True" for p in refused]
    assert len(flags) == 2 * len(AUTOCAST_CASES)
    if not any(flags):
        pytest.skip("ONEDNN_MAX_CPU_ISA=AVX2 left oneDNN's bfloat16 LSTM in place on this CPU")
    assert sum(flags) == 4  # every case but the ragged ones reaches oneDNN


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
    # Importing hdetach trusted its classes: the torch.nn ones the model uses suffice.
    assert set(hdetach.SAFE_GLOBALS) <= set(torch.serialization.get_safe_globals())
    with torch.serialization.safe_globals([nn.Sequential, nn.Linear]):
        loaded = torch.load(path, weights_only=True)
    with torch.serialization.safe_globals([*hdetach.SAFE_GLOBALS, nn.Sequential, nn.Linear]):
        torch.load(path, weights_only=True)  # code written for the list still loads
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
