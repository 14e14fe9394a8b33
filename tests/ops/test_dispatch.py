"""select_backend, the one place that resolves "auto", and the checks before any work."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hdetach import settings
from hdetach.functional import BACKENDS, lstm, lstm_layer, lstm_recurrence, select_backend


def choose(backend="auto", device="cpu", dtype=torch.float32, detached=False):
    return select_backend(
        backend, device=torch.device(device), dtype=dtype, steps=10, batch=4, hidden_size=8,
        detached=detached,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["native", "fused", "reference"])
def test_explicit_backends_are_returned_as_given(backend):
    assert choose(backend) == backend
    if backend != "native":
        assert choose(backend, detached=True) == backend
    assert set(BACKENDS) == {"auto", "native", "fused", "triton", "reference"}


def test_bad_or_impossible_explicit_backends_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        choose("cudnn")
    with pytest.raises(ValueError, match='backend="native" .* cannot detach'):
        choose("native", detached=True)
    with pytest.raises(ValueError, match='backend="triton" cannot run this call: .*CUDA'):
        choose("triton", detached=True)  # CPU tensors without TRITON_INTERPRET=1


def test_auto_without_detach_is_torch_kernel():
    assert choose(device="cuda") == "native"
    assert choose() == "native"  # on the CPU, training or not (measured rule)


def test_auto_with_detach_is_fused_unless_triton_enabled(monkeypatch):
    assert choose(detached=True) == "fused"
    assert choose(device="cuda", detached=True) == "fused"
    monkeypatch.setenv("HDETACH_TRITON_AUTO", "1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert choose(detached=True) == "fused"  # the kernels do not apply to CPU tensors
    assert settings.triton_in_auto()


@pytest.mark.parametrize("packed", [False, True])
def test_lstm_auto_without_masks_is_exactly_torch_lstm(packed):
    torch.manual_seed(0)
    native = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 4, 3)
    lengths = torch.tensor([6, 5, 3, 1])
    if packed:
        out_e, (h_e, c_e) = native(pack_padded_sequence(x, lengths))
        out_e = pad_packed_sequence(out_e, total_length=6)[0]
    else:
        out_e, (h_e, c_e) = native(x)
    sizes = [int((lengths > t).sum()) for t in range(6)] if packed else None
    weights = native._flat_weights
    hx = (torch.zeros(4, 4, 5), torch.zeros(4, 4, 5))
    entries = [weights[4 * k : 4 * k + 4] for k in range(4)]
    for backend in ("auto", "native"):
        out, (h_n, c_n) = lstm(
            x, hx, entries, bidirectional=True, batch_sizes=sizes, backend=backend
        )
        for a, e in ((out, out_e), (h_n, h_e), (c_n, c_e)):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot detach"):
        lstm(
            x,
            hx,
            entries,
            bidirectional=True,
            backend="native",
            detach_masks=[None] * 3 + [torch.ones(6, dtype=torch.bool)],
        )


def test_lstm_recurrence_native_runs_fused():
    gates_x = torch.randn(3, 2, 8, requires_grad=True)
    zeros = torch.zeros(2, 2)
    out, _, _ = lstm_recurrence(gates_x, zeros, zeros, torch.randn(8, 2), backend="native")
    assert type(out.grad_fn).__name__ == "_FusedLSTMBackward"


def test_weights_and_inputs_must_share_dtype_and_device():
    x, zeros = torch.randn(3, 2, 4), torch.zeros(2, 2)
    w_ih, w_hh = torch.randn(8, 4), torch.randn(8, 2)
    with pytest.raises(TypeError, match="weight_hh must be torch.float32 on cpu like x"):
        lstm_layer(x, zeros, zeros, w_ih, w_hh.double())
    with pytest.raises(TypeError, match="h0 must be torch.float32 on cpu like gates_x"):
        lstm_recurrence(torch.randn(3, 2, 8), zeros.double(), zeros, w_hh)
    with pytest.raises(TypeError, match="weight_ih must be torch.float32 on cpu like x"):
        lstm(x, (zeros[None], zeros[None]), [(w_ih.to("meta"), w_hh)])
    with pytest.raises(TypeError, match="bias_hh must be"):
        lstm_layer(x, zeros, zeros, w_ih, w_hh, torch.zeros(8), torch.zeros(8, dtype=torch.float16))


def test_triton_settings_are_read_at_each_call(monkeypatch):
    pytest.importorskip("triton")
    from hdetach.ops.triton_loader import triton_backend
    from hdetach.settings import triton_split_hidden

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backend = triton_backend(torch.device("cuda"))  # the GPU build (imports; compiles nothing)
    assert not backend.interpreted
    monkeypatch.delenv("HDETACH_TRITON_SPLIT_HIDDEN", raising=False)
    assert not triton_split_hidden()
    monkeypatch.setenv("HDETACH_TRITON_SPLIT_HIDDEN", "1")
    assert triton_split_hidden()
    monkeypatch.setenv("HDETACH_TRITON_AUTO", "0")
    assert not settings.triton_in_auto()
