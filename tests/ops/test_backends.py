"""The core op against the reference backend and against an independent loop."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import assert_all_close, grads_of

import hdetach.ops.fused.lstm as fused_module
from hdetach.functional import lstm_layer, lstm_recurrence

NAMES = ["out", "h_n", "c_n", "d_x", "d_h0", "d_c0", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"]


def random_problem(
    seed: int, steps: int, batch: int, inputs: int, hidden: int, dtype=torch.float64
):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    tensors = {
        "x": rand(steps, batch, inputs),
        "h0": rand(batch, hidden) * 0.5,
        "c0": rand(batch, hidden) * 0.5,
        "w_ih": rand(4 * hidden, inputs) * 0.5,
        "w_hh": rand(4 * hidden, hidden) * 0.5,
        "b_ih": rand(4 * hidden) * 0.3,
        "b_hh": rand(4 * hidden) * 0.3,
    }
    weights = {  # random cotangents, so every output's gradient path is exercised
        "out": rand(steps, batch, hidden),
        "h_n": rand(batch, hidden),
        "c_n": rand(batch, hidden),
    }
    for t in tensors.values():
        t.requires_grad_()
    return tensors, weights, gen


def packed_sizes(gen: torch.Generator, steps: int, batch: int) -> list[int]:
    """Random non-increasing batch sizes starting at ``batch`` (PackedSequence layout)."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen).sort(descending=True).values
    lengths[0] = steps
    return [int((lengths > t).sum()) for t in range(steps)]


def layer_inputs(tensors: dict) -> list[torch.Tensor]:
    """The tensors of ``random_problem`` in ``lstm_layer``'s argument order."""
    return [tensors[n] for n in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]


def run(tensors, weights, backend, mask, path, sizes, through_layer: bool):
    t = tensors
    if through_layer:
        out, h_n, c_n = lstm_layer(
            *layer_inputs(t),
            mask,
            path,
            sizes,
            backend,
        )
    else:
        gates_x = torch.nn.functional.linear(t["x"], t["w_ih"], t["b_ih"] + t["b_hh"])
        out, h_n, c_n = lstm_recurrence(
            gates_x, t["h0"], t["c0"], t["w_hh"], mask, path, sizes, backend
        )
    loss = sum(
        (value * weights[name]).sum() for name, value in zip(("out", "h_n", "c_n"), (out, h_n, c_n))
    )
    return [out, h_n, c_n] + grads_of(loss, list(t.values()))


CASES = list(itertools.product(["none", "batch", "sample", "all"], ["h", "c"], [False, True]))


@pytest.mark.parametrize("mask_kind,path,packed", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_matches_reference(cpu_kernel, mask_kind, path, packed, seed, monkeypatch):
    gen = torch.Generator().manual_seed(100 + seed)
    steps, batch, inputs, hidden = (
        int(torch.randint(lo, hi, (1,), generator=gen))
        for lo, hi in ((2, 13), (1, 6), (1, 5), (1, 7))
    )
    tensors, weights, gen = random_problem(seed, steps, batch, inputs, hidden)
    # Small chunks so that chunk boundaries fall inside the sequence.
    monkeypatch.setattr(fused_module, "CHUNK_BYTES", 3 * batch * 4 * hidden * 8)
    # Every step drawn independently: a mask reused across steps would be caught.
    mask = {
        "none": None,
        "batch": torch.rand(steps, generator=gen) < 0.5,
        "sample": torch.rand(steps, batch, generator=gen) < 0.5,
        "all": torch.ones(steps, dtype=torch.bool),
    }[mask_kind]
    sizes = packed_sizes(gen, steps, batch) if packed else None
    expected = run(tensors, weights, "reference", mask, path, sizes, through_layer=False)
    for through_layer in (False, True):
        actual = run(tensors, weights, "fused", mask, path, sizes, through_layer)
        assert_all_close(actual, expected, NAMES, rtol=1e-10, atol=1e-12)


def test_all_true_mask_equals_a_loop_that_detaches_every_step(cpu_kernel):
    tensors, weights, _ = random_problem(3, 6, 3, 2, 4)
    t = tensors
    h, c, outs = t["h0"], t["c0"], []
    for step in range(6):
        z = t["x"][step] @ t["w_ih"].T + t["b_ih"] + t["b_hh"] + h.detach() @ t["w_hh"].T
        i, f, g, o = z.chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        outs.append(h)
    loss = (
        (torch.stack(outs) * weights["out"]).sum()
        + (h * weights["h_n"]).sum()
        + (c * weights["c_n"]).sum()
    )
    expected = [torch.stack(outs), h, c] + grads_of(loss, list(t.values()))
    for backend in ("reference", "fused"):
        actual = run(tensors, weights, backend, torch.ones(6, dtype=torch.bool), "h", None, True)
        assert_all_close(actual, expected, NAMES, rtol=1e-10, atol=1e-12)
    # h-detach must change the gradient, or the comparison above proves little.
    plain = run(tensors, weights, "fused", None, "h", None, True)
    assert not torch.allclose(plain[7], expected[7])


@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_fused(cpu_kernel, packed):
    # Finite differences see the forward function, whose true gradient h-detach
    # modifies: gradcheck applies without a mask only (masks are checked above).
    tensors, _, gen = random_problem(5, 4, 3, 2, 3)
    sizes = [3, 2, 2, 1] if packed else None

    def f(*args):
        return lstm_layer(*args, batch_sizes=sizes, backend="fused")

    assert torch.autograd.gradcheck(f, tuple(layer_inputs(tensors)))


def test_backward_twice_with_retain_graph(cpu_kernel):
    tensors, weights, _ = random_problem(7, 5, 3, 2, 4)
    t = tensors
    out, h_n, c_n = lstm_layer(
        *layer_inputs(t),
        torch.tensor([True, False, True, False, False]),
        backend="fused",
    )
    loss = (out * weights["out"]).sum() + (c_n * weights["c_n"]).sum()
    first = torch.autograd.grad(loss, list(t.values()), retain_graph=True)
    second = torch.autograd.grad(loss, list(t.values()))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_grad_forward_matches_grad_forward(cpu_kernel, monkeypatch):
    monkeypatch.setattr(fused_module, "CHUNK_BYTES", 1)  # one step per chunk, buffers reused
    tensors, _, gen = random_problem(8, 7, 4, 3, 5)
    t = tensors
    sizes = packed_sizes(gen, 7, 4)
    args = layer_inputs(t)
    for s in (None, sizes):
        with_grad = lstm_layer(*args, batch_sizes=s, backend="fused")
        with torch.no_grad():
            without = lstm_layer(*[a.detach() for a in args], batch_sizes=s, backend="fused")
        for a, b in zip(with_grad, without):
            torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_matches_torch_lstm_without_detach(cpu_kernel, dtype):
    torch.manual_seed(0)
    native = torch.nn.LSTM(3, 6, dtype=dtype)
    x = torch.randn(20, 4, 3, dtype=dtype, requires_grad=True)
    out, (h_n, c_n) = native(x)
    cotangent = torch.randn_like(out)
    params = list(native.parameters())
    expected = [out, h_n[0], c_n[0]] + grads_of((out * cotangent).sum() + h_n.sum(), [x, *params])
    zeros = torch.zeros(4, 6, dtype=dtype)
    out2, h2, c2 = lstm_layer(x, zeros, zeros, *params, backend="fused")
    actual = [out2, h2, c2] + grads_of((out2 * cotangent).sum() + h2.sum(), [x, *params])
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    assert_all_close(
        actual,
        expected,
        ["out", "h_n", "c_n", "d_x", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"],
        **tol,
    )


def _autograd_nodes(root) -> list[str]:
    """Names of every node in the backward graph below ``root`` (a grad_fn)."""
    seen, stack, names = set(), [root], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def test_the_loops_over_time_take_each_per_step_gradient_in_one_piece():
    """Indexing a (T, ...) tensor at every step gives autograd T full-size gradients to
    add up, a backward quadratic in T (minutes at T = 784); the loops unbind it once."""
    from hdetach.ops.fused.differentiable import differentiable_backward
    from hdetach.ops.reference import reference_lstm_recurrence

    tensors, weights, _ = random_problem(0, steps=30, batch=2, inputs=3, hidden=4)
    gates_x = (tensors["x"] @ tensors["w_ih"].T).detach().requires_grad_()
    mask = torch.arange(30) % 3 == 0
    out, _, _ = reference_lstm_recurrence(
        gates_x, tensors["h0"], tensors["c0"], tensors["w_hh"], mask
    )
    reference_nodes = _autograd_nodes(out.grad_fn)

    d_out = weights["out"].clone().requires_grad_()  # double backward: d_out is an input
    inputs = [gates_x, tensors["h0"], tensors["c0"], None, tensors["w_hh"], None, None]
    grads = (d_out, weights["h_n"], weights["c_n"])
    d_x = differentiable_backward(inputs, [True] * 7, grads, mask, "h", None)[0]
    differentiable_nodes = _autograd_nodes(d_x.grad_fn)

    for nodes in (reference_nodes, differentiable_nodes):
        assert "SelectBackward0" not in nodes
        assert "UnbindBackward0" in nodes
    assert differentiable_nodes.count("UnbindBackward0") == 2  # gates_x and d_out
