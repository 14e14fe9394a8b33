"""CUDA checks of the fused backend (skipped where no GPU is present)."""

from __future__ import annotations

import pytest
import torch

import hdetach
from hdetach.functional import lstm_layer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def problem(steps, batch, inputs, hidden, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [
        (steps, batch, inputs),
        (batch, hidden),
        (batch, hidden),
        (4 * hidden, inputs),
        (4 * hidden, hidden),
        (4 * hidden,),
        (4 * hidden,),
    ]
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64) * 0.3 for s in shapes]
    mask = torch.rand(steps, batch, generator=gen) < 0.25
    return tensors, mask


def outputs_and_grads(tensors, mask, backend):
    tensors = [t.detach().requires_grad_() for t in tensors]
    out, h_n, c_n = lstm_layer(*tensors, detach_mask=mask, backend=backend)
    loss = out.float().square().sum() + h_n.float().sum() + c_n.float().sum()
    return [out, h_n, c_n, *torch.autograd.grad(loss, tensors)]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-3), (torch.bfloat16, 5e-2)])
def test_fused_on_cuda_matches_float64_reference(dtype, tolerance):
    tensors, mask = problem(784, 8, 1, 32)
    expected = outputs_and_grads(tensors, mask, "reference")
    actual = outputs_and_grads([t.to("cuda", dtype) for t in tensors], mask.cuda(), "fused")
    for a, e in zip(actual, expected):
        a = a.double().cpu()
        assert (a - e).norm() <= tolerance * e.norm() + 1e-6


def test_module_on_cuda_trains_with_drawn_masks():
    lstm = hdetach.LSTM(3, 16, num_layers=2, bidirectional=True, p_detach=0.25).cuda()
    out, _ = lstm(torch.randn(20, 4, 3, device="cuda"))
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())
