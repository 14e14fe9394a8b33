"""The functional API with a member dimension: weights (K, ...) run K LSTMs on K row blocks.

Each call is checked against the same function called once per member on its rows and
weights (the single-model paths are themselves checked against float64 oracles).
"""

from __future__ import annotations

import pytest
import torch

from hdetach.functional import lstm_layer, lstm_recurrence
from tests.helpers import assert_all_close, grads_of

F64 = torch.float64
K, T, B, IN, H, P = 3, 5, 2, 4, 3, 2


def _tensors(gen: torch.Generator, proj: bool) -> dict[str, torch.Tensor]:
    state = P if proj else H
    shapes = {
        "x": (T, K * B, IN),
        "h0": (K * B, state),
        "c0": (K * B, H),
        "w_ih": (K, 4 * H, IN),
        "w_hh": (K, 4 * H, state),
        "b_ih": (K, 4 * H),
        "b_hh": (K, 4 * H),
    }
    if proj:
        shapes["w_hr"] = (K, P, H)
    return {
        name: torch.randn(shape, generator=gen, dtype=F64).requires_grad_()
        for name, shape in shapes.items()
    }


def _member(t: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    rows = slice(k * B, (k + 1) * B)
    return {
        name: (v[:, rows] if name == "x" else v[rows] if name in ("h0", "c0") else v[k])
        for name, v in t.items()
    }


def _layer(t, mask, path, backend):
    return lstm_layer(
        t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], mask, path,
        backend=backend, weight_hr=t.get("w_hr"),
    )  # fmt: skip


def _recurrence(t, mask, path, backend):
    gates = t["x"] @ torch.ones(IN, 4 * H, dtype=F64)  # any differentiable gates_x
    return lstm_recurrence(
        gates, t["h0"], t["c0"], t["w_hh"], mask, path, backend=backend, weight_hr=t.get("w_hr")
    )


@pytest.mark.parametrize("function", [_layer, _recurrence], ids=["layer", "recurrence"])
@pytest.mark.parametrize(
    ("backend", "mask_kind"),
    [(b, m) for b in ("fused", "reference") for m in ("none", "steps", "rows")]
    + [("native", "none")],  # native cannot detach
)
@pytest.mark.parametrize("proj", [False, True], ids=["", "proj"])
@pytest.mark.parametrize("path", ["h", "c"])
def test_a_population_call_equals_one_call_per_member(
    cpu_kernel, function, backend, mask_kind, proj, path
):
    gen = torch.Generator().manual_seed(0)
    t = _tensors(gen, proj)
    mask = {
        "none": None,
        "steps": torch.rand(T, generator=gen) < 0.5,
        "rows": torch.rand(T, K * B, generator=gen) < 0.5,
    }[mask_kind]
    out, h_n, c_n = function(t, mask, path, backend)
    cotangents = [torch.randn(v.shape, generator=gen, dtype=F64) for v in (out, h_n, c_n)]
    loss = sum((v * g).sum() for v, g in zip((out, h_n, c_n), cotangents))
    grads = grads_of(loss, list(t.values()))
    for k in range(K):
        rows = slice(k * B, (k + 1) * B)
        member = {name: v.detach().clone().requires_grad_() for name, v in _member(t, k).items()}
        member_mask = None if mask is None or mask.dim() == 1 else mask[:, rows]
        member_mask = mask if mask is not None and mask.dim() == 1 else member_mask
        expected = function(member, member_mask, path, "reference" if mask is not None else backend)
        assert_all_close(
            [out[:, rows], h_n[rows], c_n[rows]], list(expected), ["out", "h_n", "c_n"]
        )
        member_loss = sum(
            (v * g[:, rows] if i == 0 else v * g[rows]).sum()
            for i, (v, g) in enumerate(zip(expected, cotangents))
        )
        member_grads = grads_of(member_loss, list(member.values()))
        got = [g for g in _member(dict(zip(t, grads)), k).values()]
        assert_all_close(got, member_grads, list(t))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            lambda t: t.update(h0=t["h0"][:-1], c0=t["c0"][:-1], x=t["x"][:, :-1]),
            ValueError,
            "K \\* B rows",
        ),
        (
            lambda t: t.update(b_ih=t["b_ih"][0]),
            RuntimeError,
            "bias_ih must have shape \\(3, 12\\)",
        ),
        (lambda t: t.update(w_ih=t["w_ih"][0]), RuntimeError, "as many dimensions"),
        (lambda t: t.update(w_hr=torch.zeros(P, H, dtype=F64)), RuntimeError, "weight_hr"),
    ],
    ids=["rows-not-K-blocks", "bias-without-K", "w_ih-without-K", "w_hr-without-K"],
)
def test_bad_population_shapes_are_one_clear_error(change, error, match):
    """Tensors whose shapes disagree: a RuntimeError, as in torch's ops; a batch that is
    not K blocks of rows breaks the population's own layout: a ValueError."""
    t = {name: v.detach() for name, v in _tensors(torch.Generator().manual_seed(0), False).items()}
    change(t)
    with pytest.raises(error, match=match):
        _layer(t, None, "h", "fused")


def test_packed_sequences_are_refused_in_a_population():
    t = _tensors(torch.Generator().manual_seed(0), False)
    with pytest.raises(ValueError, match="batch_sizes: packed sequences are not supported"):
        lstm_layer(
            t["x"], t["h0"], t["c0"], t["w_ih"], t["w_hh"], batch_sizes=[K * B] * (T - 1) + [1]
        )
