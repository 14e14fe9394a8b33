"""Drop-in fidelity of the fused backend: double backward, torch.func.grad and vmap."""

from __future__ import annotations

import pytest
import torch
from test_backends import layer_inputs, random_problem

from hdetach.functional import lstm_layer, lstm_recurrence

MASK = torch.tensor([False, True, False, True])


@pytest.mark.parametrize("path", ["h", "c"])
@pytest.mark.parametrize("mask", [None, MASK], ids=["p0", "fixed-mask"])
def test_gradgradcheck_fused(cpu_kernel, path, mask):
    # With a fixed mask the first derivative is h-detach's; gradgradcheck compares its
    # derivative with finite differences of it, so the mask is honoured at both orders
    # (autograd through the reference backend would not pass: there the detached state
    # is a constant, also for the second derivative).
    tensors, _, _ = random_problem(11, 4, 2, 2, 3)

    def f(*args):
        return lstm_layer(*args, detach_mask=mask, detach_path=path, backend="fused")

    if mask is None:
        assert torch.autograd.gradcheck(f, tuple(layer_inputs(tensors)))
    assert torch.autograd.gradgradcheck(f, tuple(layer_inputs(tensors)))


def test_gradgradcheck_fused_projection_packed_per_example_mask(cpu_kernel):
    gen = torch.Generator().manual_seed(14)
    steps, batch, hidden, proj = 4, 3, 3, 2
    shapes = [(steps, batch, 4 * hidden), (batch, proj), (batch, hidden), (4 * hidden, proj)]
    shapes.append((proj, hidden))
    inputs = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    mask = torch.rand(steps, batch, generator=gen) < 0.5

    def f(gates_x, h0, c0, w_hh, w_hr):
        return lstm_recurrence(
            gates_x, h0, c0, w_hh, mask, "h", [3, 2, 2, 1], "fused", weight_hr=w_hr
        )

    assert torch.autograd.gradgradcheck(f, tuple(inputs))


def test_create_graph_without_detach_matches_the_reference_backend(cpu_kernel):
    # Without a mask the reference backend's double backward is plain autograd's.
    tensors, weights, _ = random_problem(12, 5, 3, 2, 4)
    inputs = layer_inputs(tensors)
    results = {}
    for backend in ("fused", "reference"):
        out, h_n, c_n = lstm_layer(*inputs, backend=backend)
        loss = (out * weights["out"]).sum() + (c_n * weights["c_n"]).sum()
        grads = torch.autograd.grad(loss, inputs, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)  # a gradient penalty
        results[backend] = [*grads, *torch.autograd.grad(penalty, inputs)]
    for a, e in zip(results["fused"], results["reference"], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def _loss(weights, mask):
    def loss(*args):
        out, h_n, c_n = lstm_layer(*args, detach_mask=mask, backend="fused")
        return (out * weights["out"]).sum() + (h_n * weights["h_n"]).sum() + c_n.sum()

    return loss


@pytest.mark.parametrize("mask", [None, MASK], ids=["p0", "fixed-mask"])
def test_func_grad_equals_autograd(cpu_kernel, mask):
    tensors, weights, _ = random_problem(13, 4, 3, 2, 4)
    inputs = layer_inputs(tensors)
    loss = _loss(weights, mask)
    argnums = tuple(range(len(inputs)))
    functional = torch.func.grad(loss, argnums=argnums)(*(t.detach() for t in inputs))
    expected = torch.autograd.grad(loss(*inputs), inputs)
    for a, e in zip(functional, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    if mask is not None:  # detach is honoured: the gradient differs from the plain one
        plain = torch.func.grad(_loss(weights, None), argnums=argnums)(*inputs)
        assert not torch.allclose(functional[4], plain[4])


def test_vmap_forward_and_per_sample_gradients_with_a_mask(cpu_kernel):
    tensors, _, gen = random_problem(15, 5, 3, 2, 4)
    x, h0, c0, *weights = [t.detach() for t in layer_inputs(tensors)]
    xs = torch.randn(6, *x.shape, generator=gen, dtype=torch.float64)
    mask = torch.tensor([False, True, False, True, True])

    def loss(x, *weights, backend="fused"):
        out, _, c_n = lstm_layer(x, h0, c0, *weights, detach_mask=mask, backend=backend)
        return out.square().sum() + c_n.sum()

    outputs = torch.vmap(lambda x: lstm_layer(x, h0, c0, *weights, backend="fused")[0])(xs)
    per_sample = torch.vmap(torch.func.grad(loss, argnums=(1, 2)), in_dims=(0, *[None] * 4))(
        xs, *weights
    )
    for k, x_k in enumerate(xs):
        expected_out = lstm_layer(x_k, h0, c0, *weights, backend="reference")[0]
        torch.testing.assert_close(outputs[k], expected_out, rtol=1e-10, atol=1e-12)
        leaves = [w.clone().requires_grad_() for w in weights]
        expected = torch.autograd.grad(loss(x_k, *leaves, backend="reference"), leaves[:2])
        for a, e in zip((per_sample[0][k], per_sample[1][k]), expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
