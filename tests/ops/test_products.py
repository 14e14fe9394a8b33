"""The fused backend's products on oneDNN (CPU float32) against MKL and float64.

The products are checked one by one against float64 matrix products, then the whole
fused backend in float32 with oneDNN against the same with torch.mm (HDETACH_ONEDNN=0)
and against the float64 reference, for one model and a population.
"""

from __future__ import annotations

import pytest
import torch

import hdetach
from hdetach.ops.fused import products
from hdetach.ops.fused.products import add_outer_, block_product, product, uses_onednn

pytestmark = pytest.mark.skipif(
    not products.ONEDNN_LINEAR, reason="this torch has no oneDNN linear kernel"
)
K, S, B, X, Y = 3, 4, 5, 6, 8


@pytest.fixture(params=["onednn", "mkl"])
def kernel(request, monkeypatch):
    monkeypatch.setenv("HDETACH_ONEDNN", "1" if request.param == "onednn" else "0")
    assert uses_onednn(torch.ones(1)) == (request.param == "onednn")
    return request.param


def test_auto_uses_onednn_on_one_thread_only(monkeypatch):
    monkeypatch.delenv("HDETACH_ONEDNN", raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert uses_onednn(torch.ones(1))
        assert not uses_onednn(torch.ones(1, dtype=torch.float64))
        torch.set_num_threads(2)
        assert not uses_onednn(torch.ones(1))
        monkeypatch.setenv("HDETACH_ONEDNN", "1")
        assert uses_onednn(torch.ones(1))
    finally:
        torch.set_num_threads(threads)


def _randn(*shape):
    return torch.randn(*shape, generator=_randn.gen)


_randn.gen = torch.Generator().manual_seed(0)


def _close(actual: torch.Tensor, expected64: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("members", [None, K], ids=["one-model", "population"])
@pytest.mark.parametrize("accumulate", ["none", "other", "in-place"])
def test_product(kernel, members, accumulate):
    rows = B * (members or 1)
    a = _randn(rows, X)
    weight = _randn(Y, X) if members is None else _randn(members, Y, X)
    out, add = torch.empty(rows, Y), _randn(rows, Y)
    add64 = add.double()
    add = {"none": None, "other": add, "in-place": out.copy_(add)}[accumulate]
    result = product(a, weight, out=out, add=add)
    assert result is out
    w64 = weight.double()
    expected = (
        a.double() @ w64.t()
        if members is None
        else (a.double().view(members, B, X) @ w64.transpose(1, 2)).reshape(rows, Y)
    )
    _close(out, expected + (0 if accumulate == "none" else add64))


@pytest.mark.parametrize("members", [None, K], ids=["one-model", "population"])
def test_block_product_with_bias(kernel, members):
    rows = B * (members or 1)
    a = _randn(S, rows, X)
    weight = _randn(Y, X) if members is None else _randn(members, Y, X)
    bias = _randn(Y) if members is None else _randn(members, Y)
    out = torch.empty(S, rows, Y)
    block_product(a, weight, out=out, bias=bias)
    if members is None:
        expected = a.double() @ weight.double().t() + bias.double()
    else:
        per_member = a.double().view(S, members, B, X)
        expected = torch.einsum("skbx,kyx->skby", per_member, weight.double())
        expected = (expected + bias.double()[None, :, None]).reshape(S, rows, Y)
    _close(out, expected)


@pytest.mark.parametrize("members", [None, K], ids=["one-model", "population"])
def test_add_outer(kernel, members):
    rows = B * (members or 1)
    d, v = _randn(S, rows, Y), _randn(S, rows, X)
    acc = _randn(Y, X) if members is None else _randn(members, Y, X)
    start = acc.double()
    add_outer_(acc, d, v)
    if members is None:
        expected = start + d.double().flatten(0, 1).t() @ v.double().flatten(0, 1)
    else:
        d_k, v_k = (t.double().view(S, members, B, -1) for t in (d, v))
        expected = start + torch.einsum("skby,skbx->kyx", d_k, v_k)
    _close(acc, expected)


@pytest.mark.parametrize("proj_size", [0, 3])
def test_fused_float32_on_onednn_equals_mkl_and_float64(monkeypatch, proj_size):
    """The whole fused backend (masks, projection) in float32 with each kernel."""
    torch.manual_seed(0)
    module = hdetach.LSTM(4, 7, num_layers=2, proj_size=proj_size, backend="fused")
    x = torch.randn(9, 3, 4)
    mask = torch.rand(2, 9, 3) < 0.5
    results = {}
    for kernel, dtype in (("1", torch.float32), ("0", torch.float32), ("1", torch.float64)):
        monkeypatch.setenv("HDETACH_ONEDNN", kernel)
        model = module.to(dtype)
        model.zero_grad()
        out, (h_n, c_n) = model(x.to(dtype), detach_mask=mask)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results[(kernel, dtype)] = [out, h_n, c_n, *(p.grad.clone() for p in model.parameters())]
    names = ["out", "h_n", "c_n", *(name for name, _ in module.named_parameters())]
    for name, onednn, mkl, f64 in zip(names, *results.values()):
        torch.testing.assert_close(onednn.double(), f64, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(mkl.double(), f64, rtol=1e-4, atol=1e-5, msg=name)


def test_population_float32_on_onednn_equals_float64(monkeypatch):
    """A population's fused path in float32 (per-member oneDNN products) against float64."""
    monkeypatch.setenv("HDETACH_ONEDNN", "1")
    torch.manual_seed(0)
    population = hdetach.PopulationLSTM(3, 4, 7, num_layers=2, proj_size=3, backend="fused")
    x = torch.randn(3, 9, 2, 4)
    mask = torch.rand(3, 2, 9, 2) < 0.5
    results = []
    for dtype in (torch.float32, torch.float64):
        model = population.to(dtype)
        model.zero_grad()
        out, (h_n, c_n) = model(x.to(dtype), detach_mask=mask)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, *(p.grad.clone() for p in model.parameters())])
    names = ["out", "h_n", "c_n", *(name for name, _ in population.named_parameters())]
    for name, f32, f64 in zip(names, *results):
        torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-5, msg=name)
