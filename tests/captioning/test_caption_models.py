"""The decoders: shapes, and where h-detach cuts the gradient."""

from __future__ import annotations

import torch

from hdetach.experiments.captioning.models import DecoderSizes, ShowAttendTell, ShowTell
from hdetach.experiments.captioning.task import CaptionBatch

SIZES = DecoderSizes(vocab=11, feature_dim=6, embed=5, hidden=7, attention=4, dropout=0.0)


def _batch(regions: bool) -> CaptionBatch:
    g = torch.Generator().manual_seed(0)
    images = torch.randn((2, 9, 6) if regions else (2, 6), generator=g)
    inputs = torch.randint(0, 11, (6, 4), generator=g)
    return CaptionBatch(images, inputs, torch.tensor([0, 0, 0, 1, 1, 1]))


def test_teacher_forcing_shapes_and_no_biases_in_the_lstm():
    for model, regions in ((ShowTell(SIZES), False), (ShowAttendTell(SIZES), True)):
        assert model(_batch(regions)).shape == (6, 4, 11)
        assert model.lstm.bias is False and model.lstm.bias_ih is None


def _step_grad(model: ShowAttendTell, detach_lstm_input: bool) -> torch.Tensor:
    """d(sum of one step's logits)/d h_{t-1}; optionally h_{t-1} cut by hand from the gates."""
    torch.manual_seed(0)
    images = torch.randn(3, 9, 6)
    (h0, c0), memory = model.start(images)
    h_prev = h0.detach().requires_grad_()
    words = torch.tensor([1, 4, 5])
    if detach_lstm_input:  # the reference: attention and gate see h, the gates a constant
        model.lstm.p_detach = 0.0
        real_lstm = model.lstm.forward
        model.lstm.forward = lambda x, hx: real_lstm(x, (hx[0].detach(), hx[1]))
    logits, _ = model.step(words, (h_prev, c0.detach()), memory)
    (grad,) = torch.autograd.grad(logits.sum(), h_prev)
    return grad


def test_attention_reads_h_before_it_is_detached():
    """Under full detach, h_{t-1} still gets gradient through the attention, exactly as
    much as when the gates alone are given a detached copy by hand."""
    torch.manual_seed(1)
    model = ShowAttendTell(SIZES, p_detach=1.0).train()
    with torch.no_grad():
        model.gate.weight.zero_()  # the context gate ignores h: what is left is the attention
    grad_full_detach = _step_grad(model, detach_lstm_input=False)
    assert grad_full_detach.abs().sum() > 0
    torch.testing.assert_close(grad_full_detach, _step_grad(model, detach_lstm_input=True))
    vanilla = ShowAttendTell(SIZES, p_detach=0.0).train()
    vanilla.load_state_dict(model.state_dict())
    assert not torch.allclose(_step_grad(vanilla, False), grad_full_detach)  # gates' path added


def test_show_and_tell_full_detach_cuts_every_path_from_h():
    torch.manual_seed(0)
    model = ShowTell(SIZES, p_detach=1.0).train()
    (h0, c0), _ = model.start(torch.randn(2, 6))
    h_prev = h0.detach().requires_grad_()
    logits, _ = model.step(torch.tensor([1, 2]), (h_prev, c0.detach()), ())
    (grad,) = torch.autograd.grad(logits.sum(), h_prev, allow_unused=True)
    assert grad is None or not grad.any()  # the cell's drawn mask zeroes it, a bool drops it


def test_detach_changes_gradients_not_values_and_is_off_in_eval():
    torch.manual_seed(0)
    batch = _batch(regions=True)
    vanilla, detached = ShowAttendTell(SIZES, 0.0), ShowAttendTell(SIZES, 1.0)
    detached.load_state_dict(vanilla.state_dict())
    out_v, out_d = vanilla(batch), detached(batch)
    torch.testing.assert_close(out_v, out_d)
    g_v = torch.autograd.grad(out_v.square().sum(), vanilla.lstm.weight_hh)[0]
    g_d = torch.autograd.grad(out_d.square().sum(), detached.lstm.weight_hh)[0]
    assert not torch.allclose(g_v, g_d)
    # in eval nothing is detached: the gradient is the vanilla model's
    vanilla.eval(), detached.eval()
    g_v = torch.autograd.grad(vanilla(batch).square().sum(), vanilla.lstm.weight_hh)[0]
    g_d = torch.autograd.grad(detached(batch).square().sum(), detached.lstm.weight_hh)[0]
    torch.testing.assert_close(g_v, g_d)
