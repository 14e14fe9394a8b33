"""The compiled CPU recurrence: chosen when asked, and the fallback to the eager steps."""

from __future__ import annotations

import warnings

import pytest
import torch

import hdetach.ops.fused.backward as fused_backward_module
import hdetach.ops.fused.lstm as fused_module
from hdetach.functional import lstm_layer
from hdetach.ops.fused import cpu_kernel


def _problem(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    steps, batch, inputs, hidden = 6, 3, 2, 4
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    args = [
        rand(steps, batch, inputs),
        rand(batch, hidden),
        rand(batch, hidden),
        rand(4 * hidden, inputs),
        rand(4 * hidden, hidden),
        rand(4 * hidden),
        rand(4 * hidden),
    ]
    for a in args:
        a.requires_grad_()
    mask = torch.tensor([False, True, False, False, True, False])
    return args, mask


def _fwd_bwd(args, mask):
    out, h_n, c_n = lstm_layer(*args, detach_mask=mask, backend="fused")
    loss = out.square().sum() + h_n.sum() + c_n.sum()
    return [out, h_n, c_n, *torch.autograd.grad(loss, args)]


def _eager_steps_forbidden(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the eager steps ran")

    monkeypatch.setattr(fused_module, "_chunk_steps", forbidden)
    monkeypatch.setattr(fused_backward_module, "_chunk_backward", forbidden)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_setting_runs_the_compiled_steps(cpu_kernel, dtype, monkeypatch):
    if cpu_kernel != "compiled":
        pytest.skip("checks the compiled kernel")
    args, mask = _problem(dtype)
    _eager_steps_forbidden(monkeypatch)
    for result in _fwd_bwd(args, mask):
        assert torch.isfinite(result).all()


def test_where_it_cannot_be_built_the_eager_steps_run_after_one_warning(monkeypatch):
    monkeypatch.setattr(
        cpu_kernel,
        "_state",
        {"ops": None, "error": "no compiler", "build_s": None, "warned": set()},
    )
    args, mask = _problem()
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "python")
    expected = _fwd_bwd(args, mask)
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "auto")
    with pytest.warns(RuntimeWarning, match="no compiler"):
        first = _fwd_bwd(args, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one notice, not one per call
        second = _fwd_bwd(args, mask)
    for a, b, e in zip(first, second, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
        torch.testing.assert_close(b, e, rtol=0, atol=0)
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "compiled")
    with pytest.raises(RuntimeError, match="unavailable: no compiler"):
        _fwd_bwd(args, mask)


def test_other_dtypes_run_the_eager_steps_after_one_warning(monkeypatch):
    monkeypatch.setattr(
        cpu_kernel, "_state", {"ops": None, "error": None, "build_s": None, "warned": set()}
    )
    monkeypatch.setattr(cpu_kernel, "compiled_ops", lambda: pytest.fail("no build for bfloat16"))
    x = torch.zeros(3, 2, 4, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="bfloat16 runs the fused backend's eager steps"):
        assert not cpu_kernel.uses_compiled(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpu_kernel.uses_compiled(x)


def test_a_bad_setting_is_refused(monkeypatch):
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "fast")
    with pytest.raises(ValueError, match="HDETACH_CPU_KERNEL must be one of"):
        cpu_kernel.uses_compiled(torch.zeros(1))
