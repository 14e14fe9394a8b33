"""Batched gradients with detach masks on the CPU: ``torch.autograd.grad(...,
is_grads_batched=True)`` and gradcheck's ``check_batched_grad``, for hdetach.LSTM on every
backend that runs on the CPU (fused on both CPU kernels, reference) and hdetach.LSTMCell."""

from __future__ import annotations

import pytest
import torch

import hdetach

F64 = torch.float64
STEPS, BATCH, INPUTS, HIDDEN = 5, 3, 2, 3
VECTORS = 4  # cotangents in one batched call


def _mask(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A fixed bool mask of ``shape`` that detaches some steps and keeps others."""
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.4
    assert mask.any() and not mask.all()
    return mask


# id: (hdetach.LSTM options, explicit detach mask)
CONFIGS = {
    "one-layer": ({}, torch.tensor([False, True, False, True, True])),
    "two-layer-bidirectional-per-example": (
        {"num_layers": 2, "bidirectional": True},
        _mask((4, STEPS, BATCH), 1),
    ),
    "projection-per-example": ({"proj_size": 2}, _mask((STEPS, BATCH), 2)),
    "c-detach": ({"detach_path": "c"}, torch.tensor([True, False, True, False, False])),
}


def _lstm(backend: str, options: dict) -> hdetach.LSTM:
    """An hdetach.LSTM in float64 whose weights depend only on the seed, not the backend."""
    module = hdetach.LSTM(INPUTS, HIDDEN, dtype=F64, p_detach=0.25, backend=backend, **options)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen, dtype=F64) * 0.5)
    return module


def _inputs(module: hdetach.LSTM) -> list[torch.Tensor]:
    """x (L, N, I), h0, c0, all requiring grad."""
    gen = torch.Generator().manual_seed(4)
    states = module.num_layers * (2 if module.bidirectional else 1)
    shapes = [(STEPS, BATCH, INPUTS), (states, BATCH, module.proj_size or HIDDEN)]
    shapes.append((states, BATCH, HIDDEN))
    return [torch.randn(s, generator=gen, dtype=F64).requires_grad_() for s in shapes]


def _vjps(outputs, wrt, cotangents, batched: bool) -> list[torch.Tensor]:
    """The VJPs of ``outputs`` with each row of ``cotangents`` (VECTORS, *output shape):
    in one batched call, or one ``torch.autograd.grad`` per row, stacked."""
    if batched:
        return list(torch.autograd.grad(outputs, wrt, cotangents, is_grads_batched=True))
    rows = [
        torch.autograd.grad(outputs, wrt, [v[k] for v in cotangents], retain_graph=True)
        for k in range(VECTORS)
    ]
    return [torch.stack(per_input) for per_input in zip(*rows)]


def _lstm_vjps(backend: str, options: dict, mask, batched: bool) -> list[torch.Tensor]:
    module = _lstm(backend, options)
    x, h0, c0 = _inputs(module)
    out, (h_n, c_n) = module(x, (h0, c0), detach_mask=mask)
    gen = torch.Generator().manual_seed(5)
    cotangents = [torch.randn(VECTORS, *t.shape, generator=gen, dtype=F64) for t in (out, h_n, c_n)]
    return _vjps((out, h_n, c_n), [x, h0, c0, *module.parameters()], cotangents, batched)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("config", CONFIGS)
def test_batched_vjps_equal_per_row_vjps_of_the_reference(cpu_kernel, backend, config):
    options, mask = CONFIGS[config]
    batched = _lstm_vjps(backend, options, mask, batched=True)
    expected = _lstm_vjps("reference", options, mask, batched=False)
    for actual, wanted in zip(batched, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-10, atol=1e-12)
    # The mask matters here: without it W_hh's gradients differ.
    plain = _lstm_vjps("reference", options, torch.zeros_like(mask), batched=False)
    assert not torch.allclose(expected[4], plain[4])


def _lstm_function(module: hdetach.LSTM, mask: torch.Tensor):
    """(x, *parameters) -> (out, h_n, c_n) of ``module`` with ``mask``, for gradcheck."""
    names = [name for name, _ in module.named_parameters()]

    def f(x, *parameters):
        weights = dict(zip(names, parameters, strict=True))
        call = torch.func.functional_call(module, weights, (x,), {"detach_mask": mask})
        out, (h_n, c_n) = call
        return out, h_n, c_n

    return f


def _first_layer_kept(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (2 * D, L, ...) with nothing detached in the first layer (rows [0, D))."""
    kept = mask.clone()
    kept[: mask.shape[0] // 2] = False
    return kept


# Two layers each, the first detaching nothing (see the test).
TWO_LAYERS = {
    "bidirectional-per-example": (
        {"num_layers": 2, "bidirectional": True},
        _first_layer_kept(_mask((4, STEPS, BATCH), 1)),
    ),
    "projection": (
        {"num_layers": 2, "proj_size": 2},
        torch.tensor([[False] * STEPS, [True, False, False, True, False]]),
    ),
}


@pytest.mark.parametrize("config", TWO_LAYERS)
def test_gradgradcheck_with_batched_grad(cpu_kernel, config):
    # gradgradcheck compares the derivative of h-detach's gradient with finite differences
    # of it, and its check_batched_grad takes that derivative for a batch of vectors: the
    # batch reaches the first layer's fused backward at first order, through the second
    # layer's input. That backward gives h-detach's VJP, not the true one, so the check
    # is exact only where the first layer detaches nothing; the second layer does.
    options, mask = TWO_LAYERS[config]
    module = _lstm("fused", options)
    inputs = (_inputs(module)[0], *module.parameters())
    f = _lstm_function(module, mask)
    assert torch.autograd.gradgradcheck(f, inputs, check_batched_grad=True, fast_mode=True)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2}, {"proj_size": 2}], ids=str)
def test_gradcheck_with_batched_grad_where_detached_states_are_constant(
    cpu_kernel, backend, options
):
    # gradcheck compares with finite differences of the forward, which h-detach's gradient
    # is not; the two agree where every detached state depends on no checked input. Here
    # the first HEAD steps are constant and the steps detached enter steps 1 and HEAD.
    head = 2
    module = _lstm(backend, options)
    x = _inputs(module)[0].detach()
    mask = torch.tensor([False, True, True, False, False]).expand(module.num_layers, STEPS)
    parameters = [p.detach() for p in module.parameters()]
    f = _lstm_function(module, mask)

    def from_tail(tail):
        return f(torch.cat([x[:head], tail]), *parameters)

    tail = x[head:].clone().requires_grad_()
    assert torch.autograd.gradcheck(from_tail, (tail,), check_batched_grad=True)


def test_lstm_cell_batched_vjps_equal_per_row_vjps_of_the_reference():
    # hdetach.LSTMCell is torch's cell with the state detached by torch.where: compared
    # with a one-layer reference-backend LSTM of the same weights and per-example masks.
    mask = _mask((STEPS, BATCH), 6)
    cell = hdetach.LSTMCell(INPUTS, HIDDEN, dtype=F64, p_detach=0.25)
    reference = _lstm("reference", {})
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in reference.state_dict().items()})
    x, h0, c0 = _inputs(reference)
    h, c, outputs = h0[0], c0[0], []
    for t in range(STEPS):
        h, c = cell(x[t], (h, c), mask[t])
        outputs.append(h)
    gen = torch.Generator().manual_seed(7)
    shapes = [(STEPS, BATCH, HIDDEN), (1, BATCH, HIDDEN), (1, BATCH, HIDDEN)]
    cotangents = [torch.randn(VECTORS, *s, generator=gen, dtype=F64) for s in shapes]
    wrt = [x, h0, c0]
    cell_outputs = (torch.stack(outputs), h.unsqueeze(0), c.unsqueeze(0))
    batched = _vjps(cell_outputs, [*wrt, *cell.parameters()], cotangents, batched=True)
    out, (h_n, c_n) = reference(x, (h0, c0), detach_mask=mask)
    expected = _vjps((out, h_n, c_n), [*wrt, *reference.parameters()], cotangents, batched=False)
    for actual, wanted in zip(batched, expected, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=1e-10, atol=1e-12)
