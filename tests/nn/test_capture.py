"""Graph capture (ONNX export, torch.export, TorchScript) and torch.compile.

Where nothing is detached (eval mode, no grad, p_detach = 0) hdetach.LSTM is
torch.nn.LSTM, so a captured graph is nn.LSTM's and computes what nn.LSTM does. A
captured graph cannot hold a modified gradient: capturing while detaching raises one
clear error that names the way out.
"""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from torch import nn

import hdetach

REVERT_HINT = r"hdetach\.revert\(model\)"

# These tests exercise torch's legacy capture APIs on purpose (torch.jit.trace, TorchScript
# ONNX export): their deprecation and tracer warnings are torch's, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size:UserWarning"),
    pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning"),
    pytest.mark.filterwarnings("ignore:It is recommended that constant folding:UserWarning"),
]


class Tagger(nn.Module):
    """A small model around a 2-layer bidirectional LSTM (written for torch.nn.LSTM)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
        self.head = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out)


def tagger_pair(p_detach=0.5):
    """The original model (torch.nn.LSTM) and a converted copy with the same weights."""
    torch.manual_seed(0)
    native = Tagger()
    ours = hdetach.convert(Tagger(), p_detach=p_detach)
    ours.load_state_dict(native.state_dict())
    return ours, native


def onnx_run(model_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def test_legacy_onnx_export_runs_at_other_lengths_like_torch_lstm():
    pytest.importorskip("onnx")
    ours, native = tagger_pair()
    ours.eval(), native.eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        ours,
        (torch.randn(6, 2, 3),),
        buffer,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "steps", 1: "batch"}},
    )
    x = torch.randn(11, 3, 3)  # another length and batch than traced
    with torch.no_grad():
        expected = native(x)
    torch.testing.assert_close(onnx_run(buffer.getvalue(), x), expected, rtol=1e-4, atol=1e-5)


def test_dynamo_onnx_export_matches_torch_lstm():
    pytest.importorskip("onnxscript")
    ours, native = tagger_pair()
    ours.eval(), native.eval()
    x = torch.randn(6, 2, 3)
    program = torch.onnx.export(ours, (x,), dynamo=True, verbose=False)
    buffer = io.BytesIO()
    program.save(buffer)
    with torch.no_grad():
        expected = native(x)
    torch.testing.assert_close(onnx_run(buffer.getvalue(), x), expected, rtol=1e-4, atol=1e-5)


def test_torch_export_in_eval_is_torch_lstms_graph():
    ours, native = tagger_pair()
    ours.eval(), native.eval()
    x = torch.randn(6, 2, 3)
    programs = [torch.export.export(m, (x,)) for m in (ours, native)]
    targets = [[str(n.target) for n in p.graph.nodes] for p in programs]
    assert targets[0] == targets[1] and "aten.lstm.input" in targets[0]
    torch.testing.assert_close(programs[0].module()(x), native(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "capture",
    [
        lambda m, x: torch.export.export(m, (x,)),
        lambda m, x: torch.jit.trace(m, (x,)),
        lambda m, x: torch.onnx.export(
            m, (x,), io.BytesIO(), dynamo=False, training=torch.onnx.TrainingMode.TRAINING
        ),
    ],
    ids=["torch.export", "jit.trace", "onnx-training"],
)
def test_capture_while_detaching_names_the_way_out(capture):
    ours, _ = tagger_pair()
    x = torch.randn(6, 2, 3)
    with pytest.raises(RuntimeError, match=REVERT_HINT):
        capture(ours, x)
    capture(hdetach.revert(ours), x)  # the way out works


def test_capture_with_an_explicit_mask_in_eval_is_refused():
    lstm = hdetach.LSTM(3, 5).eval()
    x, mask = torch.randn(6, 2, 3), torch.ones(6, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="an explicit mask"):
        torch.export.export(lstm, (x,), {"detach_mask": mask})


def test_legacy_onnx_export_of_a_training_model_exports_eval_like_torch():
    """torch.onnx.export puts the model in eval mode by default: no detach, no error."""
    pytest.importorskip("onnx")
    ours, native = tagger_pair()
    buffer = io.BytesIO()
    torch.onnx.export(ours, (torch.randn(6, 2, 3),), buffer, dynamo=False)
    assert ours.training  # restored afterwards, as for any module
    x = torch.randn(6, 2, 3)
    with torch.no_grad():
        expected = native.eval()(x)
    torch.testing.assert_close(onnx_run(buffer.getvalue(), x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_scripting_is_refused_and_the_reverted_copy_matches_torch(training):
    """TorchScript cannot compile the mask logic; the named way out gives nn.LSTM's script."""
    ours, native = tagger_pair()
    ours.train(training), native.train(training)
    with pytest.raises(RuntimeError, match=re.escape("hdetach.revert(copy.deepcopy(model))")):
        torch.jit.script(ours)
    assert isinstance(ours.rnn, hdetach.LSTM)  # the model is left as it was
    scripted = torch.jit.script(hdetach.revert(copy.deepcopy(ours)))
    assert isinstance(ours.rnn, hdetach.LSTM)
    x = torch.randn(9, 2, 3)
    torch.manual_seed(3)  # the same inter-layer dropout draws, if any
    actual = scripted(x)
    torch.manual_seed(3)
    torch.testing.assert_close(actual, native(x), rtol=0, atol=0)


def test_traced_eval_model_runs_with_grad_at_other_lengths():
    ours, native = tagger_pair()
    ours.eval(), native.eval()
    traced = torch.jit.trace(ours, (torch.randn(6, 2, 3),))
    x = torch.randn(10, 4, 3, requires_grad=True)
    actual = traced(x)
    expected = native(x)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    grads = [torch.autograd.grad(y.sum(), x)[0] for y in (actual, expected)]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_compiled_module_with_a_mask_matches_eager(cpu_kernel):
    torch.manual_seed(1)
    lstm = hdetach.LSTM(3, 5, num_layers=2, p_detach=0.5)
    x = torch.randn(7, 2, 3)
    mask = torch.rand(2, 7) < 0.5
    results = []
    for module in (lstm, torch.compile(lstm, backend="aot_eager")):
        out, (h, c) = module(x, detach_mask=mask)
        grads = torch.autograd.grad(out.sum() + c.sum(), list(lstm.parameters()))
        results.append([out, h, c, *grads])
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_torch_compile_traces_the_op_without_breaking_its_graph(cpu_kernel):
    # The buffer pool, the oneDNN choice and the functorch check stay out of the trace, and
    # the backward that reads the detach mask on the host gives way to the traceable one.
    lstm = hdetach.LSTM(3, 5, p_detach=0.5)
    x = torch.randn(7, 2, 3)

    def loss(x):
        out, (h, c) = lstm(x)
        return out.sum() + c.sum()

    explained = torch._dynamo.explain(loss)(x)
    assert explained.break_reasons == [], [str(b.reason)[:200] for b in explained.break_reasons]


class CellLoop(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = x.new_zeros(x.shape[1], 5)
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
        return h


def test_cell_capture_in_eval_is_torch_cell_and_refused_while_detaching():
    torch.manual_seed(2)
    native = CellLoop(nn.LSTMCell(3, 5))
    ours = hdetach.convert(copy.deepcopy(native), p_detach=0.5)
    x = torch.randn(4, 2, 3)
    with pytest.raises(RuntimeError, match=REVERT_HINT):
        torch.jit.trace(ours, (x,))
    with pytest.raises(RuntimeError, match=REVERT_HINT):
        torch.export.export(ours, (x,))
    ours.eval()
    traced = torch.jit.trace(ours, (x,))
    exported = torch.export.export(ours, (x,)).module()
    expected = native(x)
    torch.testing.assert_close(traced(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(exported(x), expected, rtol=0, atol=0)
