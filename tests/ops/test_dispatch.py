"""select_backend, the one place that resolves "auto", and the checks before any work."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import hdetach
from hdetach import settings
from hdetach.functional import BACKENDS, lstm, lstm_layer, lstm_recurrence, select_backend
from hdetach.ops.dispatch import FUSED_MIN_HIDDEN, FUSED_MIN_ROWS_X_STEPS
from hdetach.ops.fused import cpu_kernel


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


def test_without_triton_the_reason_installing_it_would_not_fix_comes_first(monkeypatch):
    """On torch's CPU-only build (no triton), CPU tensors are refused for being off CUDA,
    not for the missing package; CUDA tensors are refused for the package."""
    import hdetach.ops.triton.support as triton_support

    real_find_spec = triton_support.importlib.util.find_spec
    monkeypatch.setattr(
        triton_support.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "triton" else real_find_spec(name, *args),
    )
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"cannot run this call: its kernels run on CUDA"):
        choose("triton", detached=True)
    with pytest.raises(ValueError, match=r"take float32, bfloat16, float16, got float64"):
        choose("triton", device="cuda", dtype=torch.float64, detached=True)
    with pytest.raises(ValueError, match=r"the triton package is not installed"):
        choose("triton", device="cuda", detached=True)


def test_auto_without_detach_is_torch_kernel_for_small_calls_and_off_the_cpu():
    assert choose(device="cuda") == "native"
    assert choose() == "native"  # steps * batch = 40, far below the measured threshold


def choose_large(dtype=torch.float32, device="cpu", hidden_size=FUSED_MIN_HIDDEN):
    """A call just at FUSED_MIN_ROWS_X_STEPS, nothing detached."""
    steps = 100
    return select_backend(
        "auto", device=torch.device(device), dtype=dtype, steps=steps,
        batch=FUSED_MIN_ROWS_X_STEPS // steps, hidden_size=hidden_size, detached=False,
    )  # fmt: skip


def test_auto_without_detach_trains_large_one_thread_cpu_calls_on_the_compiled_kernel(
    one_thread, monkeypatch
):
    if cpu_kernel.unavailable_reason() is not None:
        assert choose_large() == "native"  # no compiled recurrence: torch's kernel
        pytest.skip(f"compiled CPU recurrence unavailable: {cpu_kernel.unavailable_reason()}")
    assert choose_large() == "fused"
    assert choose_large(torch.float64) == "fused"
    assert choose_large(hidden_size=FUSED_MIN_HIDDEN - 1) == "native"
    with torch.no_grad():
        assert choose_large() == "native"  # inference: oneDNN's forward was faster
    assert choose_large(torch.bfloat16) == "native"
    assert choose_large(device="cuda") == "native"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert choose_large() == "native"  # torch's own autocast rules
    seen = []
    torch.func.vmap(lambda t: seen.append(choose_large()) or t)(torch.zeros(2, 1))
    assert seen == ["native"]  # under a torch.func transform fused runs its eager steps
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert choose_large() == "native"
    monkeypatch.undo()
    monkeypatch.setenv("HDETACH_CPU_KERNEL", "python")
    assert choose_large() == "native"
    monkeypatch.undo()
    torch.set_num_threads(2)
    assert choose_large() == "fused"
    torch.set_num_threads(3)  # not measured (two cores): torch's kernel
    assert choose_large() == "native"


def test_p0_lstm_on_the_fused_rule_matches_a_float64_torch_lstm(one_thread):
    """Where auto runs fused with nothing detached, the module is still the plain LSTM:
    outputs and every gradient against torch.nn.LSTM in float64 (the oracle)."""
    torch.manual_seed(0)
    ours = hdetach.LSTM(3, FUSED_MIN_HIDDEN, num_layers=2, batch_first=True, p_detach=0.0)
    oracle = torch.nn.LSTM(3, FUSED_MIN_HIDDEN, num_layers=2, batch_first=True, dtype=torch.float64)
    oracle.load_state_dict(ours.state_dict())
    x = torch.randn(FUSED_MIN_ROWS_X_STEPS // 100, 100, 3)
    expected_backend = "native" if cpu_kernel.unavailable_reason() else "fused"
    assert ours._backend_for(x.transpose(0, 1), None) == expected_backend
    grad = torch.randn(x.shape[0], 100, FUSED_MIN_HIDDEN)
    out, (h_n, c_n) = ours(x)
    out_e, (h_e, c_e) = oracle(x.double())
    (out * grad).sum().backward()
    (out_e * grad.double()).sum().backward()
    for a, e in ((out, out_e), (h_n, h_e), (c_n, c_e)):
        torch.testing.assert_close(a, e.float(), rtol=1e-5, atol=1e-6)
    for (name, a), e in zip(ours.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(a.grad, e.grad.float(), rtol=1e-4, atol=1e-4, msg=name)


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
    with pytest.raises(RuntimeError, match="weight_hh must be torch.float32 on cpu like x"):
        lstm_layer(x, zeros, zeros, w_ih, w_hh.double())
    with pytest.raises(RuntimeError, match="h0 must be torch.float32 on cpu like gates_x"):
        lstm_recurrence(torch.randn(3, 2, 8), zeros.double(), zeros, w_hh)
    with pytest.raises(RuntimeError, match="weight_ih must be torch.float32 on cpu like x"):
        lstm(x, (zeros[None], zeros[None]), [(w_ih.to("meta"), w_hh)])
    with pytest.raises(RuntimeError, match="bias_hh must be"):
        lstm_layer(x, zeros, zeros, w_ih, w_hh, torch.zeros(8), torch.zeros(8, dtype=torch.float16))


def test_triton_settings_are_read_at_each_call(monkeypatch):
    pytest.importorskip("triton")
    from hdetach.ops.triton.loader import triton_backend
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
