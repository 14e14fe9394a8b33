"""The triton backend's member dimension: K independent LSTMs in one launch.

A population is a weight_hh of shape (K, 4H, H) and a batch of K * B rows, member k
owning rows [k B, (k + 1) B). Under Triton's CPU interpreter (as in test_triton.py) its
outputs and every gradient must equal K separate single-model calls on each member's
rows and weights, and the float64 reference run member by member.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")

import test_triton  # noqa: E402
from test_triton import NAMES, _problem, _relative_errors, _run  # noqa: E402

from hdetach.ops.reference import reference_lstm_recurrence  # noqa: E402
from hdetach.ops.triton.loader import TritonBackend  # noqa: E402
from hdetach.ops.triton.lstm import _config  # noqa: E402

interpreted = test_triton.interpreted  # the backend built for the interpreter (a fixture)


def _population(members: int, steps: int, batch: int, hidden: int, seed: int):
    """Float64 (gates_x (T, K B, 4H), h0, c0 (K B, H), W_hh (K, 4H, H)) and loss weights
    for out, h_n, c_n: each member an independent problem of test_triton's kind."""
    problems = [_problem(steps, batch, hidden, seed=seed + k) for k in range(members)]
    gates_x, h0, c0, weight_hh = zip(*(inputs for inputs, _ in problems), strict=True)
    d_out, d_h_n, d_c_n = zip(*(weights for _, weights in problems), strict=True)
    inputs = (torch.cat(gates_x, 1), torch.cat(h0), torch.cat(c0), torch.stack(weight_hh))
    return inputs, (torch.cat(d_out, 1), torch.cat(d_h_n), torch.cat(d_c_n))


def _population_mask(scope: str | None, steps: int, members: int, batch: int, seed: int):
    """None, one (T,) mask for every row, or (T, K B): each member its own (T, B) draw."""
    gen = torch.Generator().manual_seed(seed)
    if scope is None:
        return None
    if scope == "step":
        mask = torch.rand(steps, generator=gen) < 0.5
        mask[1], mask[2] = True, False  # a skipped product, and one that is not
        return mask
    per_member = [torch.rand(steps, batch, generator=gen) < 0.5 for _ in range(members)]
    per_member[0][1] = True  # path h: member 0's tile skips the product at step 1, no other
    return torch.cat(per_member, 1)


def _rows(k: int, batch: int) -> slice:
    return slice(k * batch, (k + 1) * batch)


def _member_problem(inputs, loss_weights, mask, k: int, batch: int):
    """Member k's own problem cut out of a population's: its rows and its W_hh."""
    rows = _rows(k, batch)
    gates_x, h0, c0, weight_hh = inputs
    d_out, d_h_n, d_c_n = loss_weights
    if mask is not None and mask.dim() == 2:
        mask = mask[:, rows]
    return (
        (gates_x[:, rows], h0[rows], c0[rows], weight_hh[k]),
        (d_out[:, rows], d_h_n[rows], d_c_n[rows]),
        mask,
    )


def _member_results(results: list[torch.Tensor], k: int, batch: int) -> list[torch.Tensor]:
    """Member k's out, h_n, c_n, d_gates_x, d_h0, d_c0, d_weight_hh from a population's."""
    rows = _rows(k, batch)
    out, h_n, c_n, d_gates_x, d_h0, d_c0, d_weight_hh = results
    return [out[:, rows], h_n[rows], c_n[rows], d_gates_x[:, rows], d_h0[rows], d_c0[rows],
            d_weight_hh[k]]  # fmt: skip


@pytest.mark.parametrize(
    "members, batch, hidden, scope, path, config",
    [
        (3, 2, 20, "row", "h", {}),
        (3, 3, 16, "row", "c", {}),
        (2, 3, 20, "step", "h", {}),
        (2, 2, 20, "step", "c", {}),
        (2, 2, 16, None, "h", {}),
        (1, 3, 20, "row", "h", {}),
        # Several batch tiles per member (the last one partial) and hidden-unit blocks.
        (2, 3, 20, "row", "h", {"BLOCK_B": 2, "BLOCK_N": 16, "BLOCK_K": 16}),
    ],
)
def test_population_matches_members_and_reference(
    interpreted: TritonBackend, members, batch, hidden, scope, path, config
):
    steps = 5
    inputs, loss_weights = _population(members, steps, batch, hidden, seed=20)
    mask = _population_mask(scope, steps, members, batch, seed=21)

    def triton_fn(mask):
        return lambda *args: interpreted.triton_lstm_recurrence(*args, mask, path, config=config)

    population = _run(triton_fn(mask), inputs, loss_weights, torch.float32)
    assert population[-1].shape == (members, 4 * hidden, hidden)
    for k in range(members):
        member_inputs, member_weights, member_mask = _member_problem(
            inputs, loss_weights, mask, k, batch
        )
        actual = _member_results(population, k, batch)
        alone = _run(triton_fn(member_mask), member_inputs, member_weights, torch.float32)
        for name, a, e in zip(NAMES, actual, alone, strict=True):
            torch.testing.assert_close(
                a, e, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}"
            )
        expected = _run(
            lambda *a, m=member_mask: reference_lstm_recurrence(*a, m, path),
            member_inputs,
            member_weights,
            torch.float64,
        )
        errors = _relative_errors(actual, expected)
        assert max(errors.values()) < 1e-5, (k, errors)


def test_members_are_independent(interpreted: TritonBackend):
    """Member 0's loss gives every other member exactly zero gradient, and changing
    another member's weights leaves member 0's outputs exactly as they were."""
    members, steps, batch, hidden = 3, 4, 2, 16
    inputs, _ = _population(members, steps, batch, hidden, seed=30)
    mask = _population_mask("row", steps, members, batch, seed=31)
    leaves = [x.float().requires_grad_() for x in inputs]
    out, h_n, c_n = interpreted.triton_lstm_recurrence(*leaves, mask, "h")
    first, others = _rows(0, batch), slice(batch, None)
    (out[:, first].sum() + h_n[first].square().sum() + c_n[first].sum()).backward()
    d_gates_x, d_h0, d_c0, d_weight_hh = (x.grad for x in leaves)
    assert d_weight_hh[0].abs().sum() > 0 and d_gates_x[:, first].abs().sum() > 0
    assert torch.all(d_weight_hh[1:] == 0)
    for grad in (d_gates_x[:, others], d_h0[others], d_c0[others]):
        assert torch.all(grad == 0)

    changed = [x.detach().clone() for x in leaves]
    changed[3][1:] *= 2.0
    with torch.no_grad():
        changed_out = interpreted.triton_lstm_recurrence(*changed, mask, "h")[0]
    assert torch.equal(changed_out[:, first], out[:, first].detach())
    assert not torch.equal(changed_out[:, others], out[:, others].detach())


def _bad_inputs(case: str):
    """Float32 population arguments (2 members of 3 rows, H = 16) spoiled as ``case`` says."""
    (gates_x, h0, c0, weight_hh), _ = _population(2, 3, 3, 16, seed=40)
    gates_x, h0, c0, weight_hh = (x.float() for x in (gates_x, h0, c0, weight_hh))
    mask, sizes = None, None
    if case == "packed":
        sizes = (6, 6, 4)
    elif case == "rows not a multiple":
        gates_x, h0, c0 = gates_x[:, :5], h0[:5], c0[:5]  # 2 members cannot share 5 rows
    elif case == "weight shape":
        weight_hh = weight_hh[:, :, :15]
    elif case == "weight dims":
        weight_hh = weight_hh[None]
    elif case == "no members":
        weight_hh = weight_hh[:0]
    elif case == "h0 rows":
        h0 = h0[:3]
    elif case == "mask of one member":
        mask = torch.zeros(3, 3, dtype=torch.bool)
    return (gates_x, h0, c0, weight_hh, mask, "h", sizes)


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("packed", ValueError, "batch_sizes must be None when weight_hh holds members"),
        (
            "rows not a multiple",
            ValueError,
            r"gates_x.shape\[1\] = 5\) must be a multiple of the 2 members",
        ),
        (
            "weight shape",
            RuntimeError,
            r"weight_hh must have shape \(64, 16\) .* got \(2, 64, 15\)",
        ),
        ("weight dims", RuntimeError, r"weight_hh must have shape .* got \(1, 2, 64, 16\)"),
        ("no members", RuntimeError, r"K >= 1 members, got \(0, 64, 16\)"),
        ("h0 rows", RuntimeError, r"h0 must have shape \(6, 16\)"),
        ("mask of one member", ValueError, r"detach_mask must have shape \(3,\) or \(3, 6\)"),
    ],
)
def test_population_refuses_bad_input(interpreted: TritonBackend, case, error, message):
    """Shapes that disagree: RuntimeErrors, as in torch's ops; the population's own
    layout and the mask: ValueErrors."""
    with pytest.raises(error, match=message):
        interpreted.triton_lstm_recurrence(*_bad_inputs(case))


def test_split_hidden_keeps_every_member_resident(monkeypatch):
    """Programs that meet at a barrier must all be resident at once: with members the
    split shrinks so that members * tiles * SPLIT programs fit on the SMs."""
    sms = SimpleNamespace(multi_processor_count=132)  # an H100
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: sms)
    cuda = torch.device("cuda")
    assert _config(128, 100, cuda, True)["SPLIT"] == 4  # 7 tiles x 4
    assert _config(128, 100, cuda, True, members=4)["SPLIT"] == 4  # 28 tiles x 4 = 112
    assert _config(128, 100, cuda, True, members=5)["SPLIT"] == 2  # 35 tiles x 2 = 70
    assert _config(128, 100, cuda, True, members=10)["SPLIT"] == 1  # 70 tiles x 2 > 132


def test_population_module_on_triton_equals_fused(interpreted: TritonBackend):
    """``hdetach.PopulationLSTM(backend="triton")`` end to end (input projection, per-member
    masks drawn from each member's generator) against the fused backend's results."""
    import copy

    from hdetach import PopulationLSTM

    torch.manual_seed(0)
    triton_pop = PopulationLSTM(3, 4, 16, p_detach=[0.0, 0.5, 0.9], backend="triton")
    fused_pop = copy.deepcopy(triton_pop)
    for m in fused_pop.members:
        m.backend = "fused"
    x = torch.randn(3, 5, 2, 4)
    results = []
    for pop in (triton_pop, fused_pop):
        pop.generators = [torch.Generator().manual_seed(k) for k in range(3)]
        out, (h_n, c_n) = pop(x)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, *(p.grad for p in pop.parameters())])
    names = ["out", "h_n", "c_n", *(name for name, _ in triton_pop.named_parameters())]
    for name, a, b in zip(names, *results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
