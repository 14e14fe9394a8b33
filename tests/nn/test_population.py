"""hdetach.PopulationLSTM: K members in one batched computation equal K separate LSTMs.

Every output and gradient is checked against the independent float64 per-example loop
of tests/helpers.py (run member by member with the member's own weights and mask) and
against K separate ``hdetach.LSTM`` calls.
"""

from __future__ import annotations

import copy

import pytest
import torch

import hdetach
from hdetach import PopulationLSTM
from tests.helpers import assert_all_close, grads_of, oracle_lstm, oracle_lstm_projected

F64 = torch.float64
K, T, B, IN, H = 3, 6, 2, 3, 5


def _population(backend: str, **options) -> PopulationLSTM:
    torch.manual_seed(0)
    return PopulationLSTM(K, IN, H, backend=backend, dtype=F64, **options)


def _params_of(member: hdetach.LSTM) -> list[list[torch.Tensor]]:
    n = len(member._flat_weights) // member._num_states
    return [member._flat_weights[k * n : (k + 1) * n] for k in range(member._num_states)]


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize(
    "options",
    [
        {"detach_path": "h"},
        {"detach_path": "c"},
        {"num_layers": 2, "bidirectional": True},
        {"proj_size": 2, "batch_first": True},
        {"num_layers": 2, "bias": False},
    ],
    ids=["h", "c", "2-layer-bi", "proj-batch_first", "no-bias"],
)
def test_members_outputs_and_gradients_equal_the_float64_loop(cpu_kernel, backend, options):
    pop = _population(backend, **options)
    first = pop.member(0)
    states, batch_first = first._num_states, first.batch_first
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(K, T, B, IN, generator=gen, dtype=F64)
    masks = torch.rand(K, states, T, B, generator=gen) < 0.5  # each member its own
    masks[1] = False  # one member never detaches, one detaches by whole steps
    masks[2] = masks[2, :, :, :1].expand(states, T, B)
    p = first.proj_size or H
    h0 = torch.randn(K, states, B, p, generator=gen, dtype=F64)
    c0 = torch.randn(K, states, B, H, generator=gen, dtype=F64)
    inputs = x.transpose(1, 2) if batch_first else x
    out, (h_n, c_n) = pop(inputs.requires_grad_(), (h0, c0), masks)
    out = out.transpose(1, 2) if batch_first else out
    d_out, d_h, d_c = (torch.randn(t.shape, generator=gen, dtype=F64) for t in (out, h_n, c_n))
    loss = (out * d_out).sum() + (h_n * d_h).sum() + (c_n * d_c).sum()
    params = [list(pop.member(k).parameters()) for k in range(K)]
    grads = grads_of(loss, [inputs, *(w for ws in params for w in ws)])
    oracle = oracle_lstm_projected if first.proj_size else oracle_lstm
    for k in range(K):
        member = pop.member(k)
        seqs = [x[k, :, b].clone().requires_grad_() for b in range(B)]
        h0k, c0k = h0[k].clone(), c0[k].clone()
        outs, h_e, c_e = oracle(
            _params_of(member), seqs, h0k, c0k, masks[k], member.detach_path, member.bidirectional
        )
        expected_out = torch.stack(outs, dim=1)
        assert_all_close([out[k], h_n[k], c_n[k]], [expected_out, h_e, c_e], ["out", "h_n", "c_n"])
        expected_loss = (
            (expected_out * d_out[k]).sum() + (h_e * d_h[k]).sum() + (c_e * d_c[k]).sum()
        )
        expected = grads_of(expected_loss, [*seqs, *params[k]])
        got_x = grads[0].transpose(1, 2)[k] if batch_first else grads[0][k]
        member_grads = grads[1 + k * len(params[0]) : 1 + (k + 1) * len(params[0])]
        names = ["x", *(name for name, _ in member.named_parameters())]
        assert_all_close(
            [got_x, *member_grads], [torch.stack(expected[:B], dim=1), *expected[B:]], names
        )


def test_drawn_masks_are_each_members_own_draws_from_its_generator():
    """Member k with generators[k] trains exactly as the lone LSTM drawing from torch's
    generator in the same state: what lets a population member equal its lone twin (the
    lab's runs draw from torch's generator)."""
    pop = _population("fused", num_layers=2, layer_masks="independent", p_detach=[0.0, 0.5, 0.9])
    pop.member(2).detach_scope = "sample"  # refused: the scope is shared
    with pytest.raises(ValueError, match="detach_scope"):
        PopulationLSTM.from_members(list(pop.members))
    pop.member(2).detach_scope = "batch"
    seeds = [torch.Generator().manual_seed(10 + k) for k in range(K)]
    pop.generators = [copy.deepcopy(g) for g in seeds]
    x = torch.randn(K, T, B, IN, dtype=F64)
    out, _ = pop(x)
    (out**2).sum().backward()
    for k in range(K):
        twin = copy.deepcopy(pop.member(k))
        twin.zero_grad()
        twin.generator = torch.default_generator
        torch.set_rng_state(seeds[k].get_state())
        twin_out, _ = twin(x[k])
        assert pop.generators[k].get_state().equal(torch.get_rng_state())  # same draws
        (twin_out**2).sum().backward()
        torch.testing.assert_close(out[k], twin_out)
        for (name, a), b in zip(pop.member(k).named_parameters(), twin.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_without_generators_each_member_draws_its_own_stream_as_it_would_alone():
    """By default a member draws from its module's own stream (hdetach.nn.masks): exactly
    the masks a copy of it draws alone, none from torch's generator, none like another's."""
    pop = _population("fused", p_detach=[0.5, 0.5, 0.5])
    x = torch.randn(K, T, B, IN, dtype=F64)
    twins = [copy.deepcopy(pop.member(k)) for k in range(K)]  # a copy's stream starts anew
    before = torch.get_rng_state()
    out, _ = pop(x)
    (out**2).sum().backward()
    assert torch.get_rng_state().equal(before)
    masks = []
    for k, twin in enumerate(twins):
        twin_out, _ = twin(x[k])
        (twin_out**2).sum().backward()
        torch.testing.assert_close(out[k], twin_out)
        for (name, a), b in zip(pop.member(k).named_parameters(), twin.parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=name)
        masks.append(copy.deepcopy(pop.member(k))._detach_masks(None, 64, B, True, x.device, None))
    assert not torch.equal(masks[0][0], masks[1][0])  # members' streams differ


def test_auto_on_a_cpu_runs_the_members_in_turn_with_the_batched_results():
    pop = _population("auto", p_detach=[0.0, 0.5, 0.9], num_layers=2)
    batched = copy.deepcopy(pop)
    for m in batched.members:
        m.backend = "fused"
    x = torch.randn(K, T, B, IN, dtype=F64)
    results = []
    for model in (pop, batched):
        model.generators = [torch.Generator().manual_seed(k) for k in range(K)]
        out, (h_n, c_n) = model(x)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, *(p.grad for p in model.parameters())])
    names = ["out", "h_n", "c_n", *(name for name, _ in pop.named_parameters())]
    assert_all_close(results[0], results[1], names)


def test_members_are_independent(cpu_kernel):
    pop = _population("fused", p_detach=0.5)
    out, _ = pop(torch.randn(K, T, B, IN, dtype=F64))
    out[0].sum().backward()
    assert any(w.grad.abs().sum() > 0 for w in pop.member(0).parameters())
    for k in range(1, K):
        assert all(w.grad is None or not w.grad.any() for w in pop.member(k).parameters())


def test_each_parameter_gets_a_gradient_of_its_own(cpu_kernel):
    """Clipping scales gradients in place: no two parameters may share a gradient tensor."""
    pop = _population("fused", p_detach=0.5, num_layers=2)
    out, _ = pop(torch.randn(K, T, B, IN, dtype=F64))
    out.sum().backward()
    grads = [p.grad for p in pop.parameters()]
    for i, a in enumerate(grads):
        for b in grads[i + 1 :]:
            assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() or (
                a.storage_offset() != b.storage_offset()
            )
    member = pop.member(0)
    before = member.bias_hh_l0.grad.clone()
    member.bias_ih_l0.grad.mul_(0.5)
    torch.testing.assert_close(member.bias_hh_l0.grad, before)


def test_member_is_a_plain_lstm_sharing_the_weights_and_from_members_shares_them_back():
    pop = _population("auto", p_detach=[0, 0.25, 0.5])
    member = pop.member(1)
    assert isinstance(member, hdetach.LSTM) and member.p_detach == 0.25
    plain = torch.nn.LSTM(IN, H, dtype=F64)
    plain.load_state_dict(member.state_dict())  # an ordinary LSTM state dict
    again = PopulationLSTM.from_members([pop.member(k) for k in range(K)])
    assert again.member(2) is pop.member(2)
    with torch.no_grad():
        member.weight_hh_l0.zero_()
    assert not again.member(1).weight_hh_l0.any()
    assert again.p_detach == [0, 0.25, 0.5]
    again.p_detach = 0.75
    assert pop.p_detach == [0.75] * K


def test_eval_mode_runs_each_member_as_torchs_lstm():
    pop = _population("auto", p_detach=0.5, num_layers=2).eval()
    x = torch.randn(K, T, B, IN, dtype=F64)
    out, (h_n, _) = pop(x)
    for k in range(K):
        plain = torch.nn.LSTM(IN, H, num_layers=2, dtype=F64)
        plain.load_state_dict(pop.member(k).state_dict())
        expected, (h_e, _) = plain(x[k])
        torch.testing.assert_close(out[k], expected)
        torch.testing.assert_close(h_n[k], h_e)


def test_double_backward_equals_the_members_own(cpu_kernel):
    """create_graph=True (gradient penalties) takes the differentiable backward, member by
    member the same as a lone model's (tests/ops/test_double_backward.py checks that one)."""
    pop = _population("fused", p_detach=0.5)
    x = torch.randn(K, T, B, IN, dtype=F64, requires_grad=True)
    mask = torch.rand(K, T, B) < 0.5
    out, _ = pop(x, detach_mask=mask)
    (g,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
    penalty = grads_of(g.square().sum(), list(pop.member(1).parameters()))
    member = copy.deepcopy(pop.member(1))
    x1 = x[1].detach().requires_grad_()
    out1, _ = member(x1, detach_mask=mask[1])
    (g1,) = torch.autograd.grad((out1**2).sum(), x1, create_graph=True)
    torch.testing.assert_close(g[1], g1)
    assert_all_close(
        penalty,
        grads_of(g1.square().sum(), list(member.parameters())),
        [name for name, _ in member.named_parameters()],
    )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: PopulationLSTM(0, IN, H), ValueError, "num_members"),
        (lambda: PopulationLSTM(K, IN, H, p_detach=[0.1, 0.2]), ValueError, "p_detach"),
        (lambda: PopulationLSTM(K, IN, H, p_detach=[0.1, 0.2, 1.5]), ValueError, "p_detach"),
        (
            lambda: PopulationLSTM.from_members([hdetach.LSTM(IN, H), hdetach.LSTM(IN, H + 1)]),
            ValueError,
            "hidden_size",
        ),
        (lambda: PopulationLSTM.from_members([torch.nn.LSTM(IN, H)]), TypeError, "hdetach.LSTM"),
    ],
    ids=["no-members", "p-count", "p-range", "mixed-sizes", "plain-lstm"],
)
def test_bad_construction_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda pop: pop(torch.randn(K + 1, T, B, IN)), "K = 3"),
        (lambda pop: pop(torch.randn(T, B, IN)), "K = 3"),
        (lambda pop: pop(torch.randn(K, T, B, IN + 1)), "features"),
        (lambda pop: pop(torch.randn(K, T, B, IN), detach_mask=torch.zeros(T, B, dtype=bool)), "K"),
        (lambda pop: pop(torch.randn(K, T, B, IN), (torch.zeros(1, B, H),) * 2), "h_0"),
    ],
    ids=["wrong-K", "3-D", "features", "mask-without-K", "hx-without-K"],
)
def test_bad_input_is_one_clear_error(call, match):
    pop = PopulationLSTM(K, IN, H)
    with pytest.raises((ValueError, TypeError), match=match):
        call(pop)
