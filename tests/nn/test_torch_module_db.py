"""hdetach's classes beside torch's, on torch's own test data and on inputs torch refuses.

``torch.testing._internal.common_modules.module_db`` is the data torch's
test/test_modules.py runs every module on: per module, sample inputs (constructor and
forward arguments) and error inputs (arguments torch refuses, with the exception it
raises). Its entries for ``nn.LSTM`` and ``nn.LSTMCell`` run here through both classes:

- each sample input, at p_detach=0, in training and eval mode, float32 and float64:
  the same outputs, and the same gradients of a scalar function of them with respect to
  the inputs and the parameters;
- each error input, in training and eval mode, at p_detach 0, 0.25 and 1 (where every
  call cuts: the cell's own checks run, not torch's): the same exception type.

Then inputs torch refuses that module_db does not hold (states of the wrong shape,
dtype or device, a wrong feature size, an empty sequence, packed sequences, a malformed
``hx``, autocast, weights swapped in by ``functional_call`` that reach
``hdetach.functional``) get the same comparison. The messages are hdetach's own
(``tests/nn/test_lstm.py`` checks some); only the types must be torch's.

The data lives in torch's internal testing package, which needs ``expecttest`` (in the
test extra); it is imported once, by a fixture, and skips with the reason where this
torch cannot provide it.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import hdetach

PAIRS = {nn.LSTM: hdetach.LSTM, nn.LSTMCell: hdetach.LSTMCell}
DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}
# Every option set runs in training and eval mode. p_detach=1 cuts at every call, so the
# cell's own checks run (at 0.25 they run on the calls that draw a cut); "sample" cuts
# per example, where a state of the wrong batch size would broadcast if not refused.
OPTIONS = [
    {"p_detach": 0.0},
    {"p_detach": 0.25},
    {"p_detach": 1.0},
    {"p_detach": 1.0, "detach_scope": "sample"},
]
MODES = {"train": True, "eval": False}


@pytest.fixture(scope="module")
def module_db_entries() -> dict:
    """module_db's ModuleInfo for nn.LSTM and nn.LSTMCell, by class.

    Importing torch's testing package freezes torch.backends' global flags (its own test
    runner wants them set only through context managers) and sets an environment
    variable: neither is let through, so the rest of the session runs as it would
    without this file.
    """
    environ = set(os.environ)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.backends, "disable_global_flags", lambda: None)
            from torch.testing._internal.common_modules import module_db
    except ImportError as e:
        pytest.skip(
            f"torch's module test data (torch.testing._internal.common_modules) cannot be "
            f"imported: {e}; it needs torch's test dependencies, expecttest among them"
        )
    finally:
        for name in set(os.environ) - environ:
            del os.environ[name]
    entries = {info.module_cls: info for info in module_db if info.module_cls in PAIRS}
    missing = [cls.__name__ for cls in PAIRS if cls not in entries]
    if missing:
        pytest.skip(f"this torch's module_db has no entry for {', '.join(missing)}")
    return entries


def _tensors(result) -> list[torch.Tensor]:
    """The tensors of a forward result (a tensor, a PackedSequence, nested tuples)."""
    if isinstance(result, PackedSequence):
        return [result.data]
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for item in result for t in _tensors(item)]


def _scalar(result) -> torch.Tensor:
    """A scalar that weighs every output element differently (fixed weights)."""
    generator = torch.Generator().manual_seed(0)
    return sum(
        (t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).sum()
        for t in _tensors(result)
    )


def _twins(cls, args, kwargs, options, training):
    """torch's module and hdetach's, built from the same arguments, same parameters."""
    torch.manual_seed(0)
    theirs = cls(*args, **kwargs).train(training)
    ours = PAIRS[cls](*args, **kwargs, **options).train(training)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _raised(function, *args, **kwargs) -> Exception | None:
    """What ``function(*args, **kwargs)`` raises, or None."""
    torch.manual_seed(0)  # the same draws (at p_detach=0.25) on every run
    try:
        function(*args, **kwargs)
    except Exception as e:
        return e
    return None


def _assert_same_refusal(theirs, ours, what: str) -> None:
    assert theirs is not None, f"{what}: torch accepts it (the case is meant to be refused)"
    assert type(ours) is type(theirs), (
        f"{what}: torch raises {type(theirs).__name__}: {theirs}\n"
        f"hdetach raises {type(ours).__name__}: {ours}"
        if ours is not None
        else f"{what}: torch raises {type(theirs).__name__}: {theirs}; hdetach accepts it"
    )


@pytest.mark.parametrize("cls", list(PAIRS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", list(MODES))
def test_sample_inputs_give_torchs_outputs_and_gradients_at_p0(module_db_entries, cls, dtype, mode):
    info, training = module_db_entries[cls], MODES[mode]
    samples = list(
        info.module_inputs_func(
            info, device="cpu", dtype=dtype, requires_grad=True, training=training
        )
    )
    assert samples
    for k, sample in enumerate(samples):
        constructor = sample.constructor_input
        what = f"{cls.__name__} sample {k} ({constructor.args}, {constructor.kwargs})"
        theirs, ours = _twins(
            cls,
            constructor.args,
            {**constructor.kwargs, "dtype": dtype},
            {"p_detach": 0.0},
            training,
        )
        args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
        inputs = [t for t in _tensors(args) if t.requires_grad]
        results = []
        for module in (theirs, ours):
            out = module(*args, **kwargs)
            wrt = inputs + list(module.parameters())
            grads = torch.autograd.grad(_scalar(out), wrt, allow_unused=True)
            results.append((_tensors(out), grads))
        (expected, expected_grads), (actual, actual_grads) = results
        tol = TOLERANCE[dtype]
        for name, a, b in (
            ("outputs", actual, expected),
            ("gradients", actual_grads, expected_grads),
        ):
            try:
                torch.testing.assert_close(a, b, rtol=tol, atol=tol)
            except AssertionError as e:
                raise AssertionError(f"{what}, {name}: {e}") from None


@pytest.mark.parametrize("cls", list(PAIRS), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_error_inputs_raise_torchs_exception_type(module_db_entries, cls, dtype, mode, options):
    info, training = module_db_entries[cls], MODES[mode]
    errors = list(
        info.module_error_inputs_func(
            info, device="cpu", dtype=dtype, requires_grad=False, training=training
        )
    )
    assert errors
    for k, error in enumerate(errors):
        sample = error.module_error_input
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        what = f"{cls.__name__} error input {k} ({error.error_on.name}: {error.error_regex})"
        if error.error_on.name == "CONSTRUCTION_ERROR":
            theirs = _raised(cls, *args, **kwargs)
            ours = _raised(PAIRS[cls], *args, **kwargs, **options)
        else:
            modules = _twins(cls, args, kwargs, options, training)
            forward = sample.forward_input
            theirs, ours = (_raised(m, *forward.args, **forward.kwargs) for m in modules)
        _assert_same_refusal(theirs, ours, what)
        assert isinstance(theirs, error.error_type), f"{what}: module_db expects {error.error_type}"


# Inputs torch refuses beyond module_db's, each (constructor kwargs, call on the module).
# Drawn from a generator of their own: collecting this file leaves torch's alone.
_GENERATOR = torch.Generator().manual_seed(0)
z = torch.zeros


def randn(*shape, **kwargs):
    return torch.randn(*shape, generator=_GENERATOR, **kwargs)


def _packed(*lengths, size=3, dtype=torch.float32, enforce_sorted=True):
    return pack_sequence(
        [torch.randn(n, size, dtype=dtype) for n in lengths], enforce_sorted=enforce_sorted
    )


def _autocast(call):
    def run(m):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return call(m)

    return run


def _swapped(name, tensor, x):
    """A call with a parameter swapped in by functional_call: at p_detach > 0 in
    training it reaches hdetach.functional's checks."""
    return lambda m: functional_call(m, {name: tensor}, (x,))


LSTM_KW = {"input_size": 3, "hidden_size": 4, "num_layers": 2}
x = randn(5, 2, 3)
hx = (z(2, 2, 4), z(2, 2, 4))
LSTM_REFUSALS = {
    "input 1-D": (LSTM_KW, lambda m: m(torch.randn(5))),
    "input 4-D": (LSTM_KW, lambda m: m(torch.randn(5, 2, 3, 1))),
    "input features": (LSTM_KW, lambda m: m(torch.randn(5, 2, 9))),
    "input features, unbatched": (LSTM_KW, lambda m: m(torch.randn(5, 9))),
    "input float64": (LSTM_KW, lambda m: m(x.double())),
    "input int64": (LSTM_KW, lambda m: m(x.long())),
    "input float64 and h_0 2-D": (LSTM_KW, lambda m: m(x.double(), (z(2, 4), hx[1]))),
    "input float64 and wrong features": (LSTM_KW, lambda m: m(torch.randn(5, 2, 9).double())),
    "no time step": (LSTM_KW, lambda m: m(torch.randn(0, 2, 3))),
    "no time step, unbatched": (LSTM_KW, lambda m: m(torch.randn(0, 3))),
    "no time step, batch_first": (
        {**LSTM_KW, "batch_first": True},
        lambda m: m(torch.randn(2, 0, 3)),
    ),
    "no time step and no example": (LSTM_KW, lambda m: m(torch.randn(0, 0, 3))),
    "no example, h_0 of one": (LSTM_KW, lambda m: m(torch.randn(5, 0, 3), (z(2, 1, 4),) * 2)),
    "hx of one state": (LSTM_KW, lambda m: m(x, hx[:1])),
    "hx of three states": (LSTM_KW, lambda m: m(x, (*hx, hx[0]))),
    "hx empty": (LSTM_KW, lambda m: m(x, ())),
    "hx a state tensor": (LSTM_KW, lambda m: m(x, z(2, 2, 4))),
    "hx a stacked tensor": (LSTM_KW, lambda m: m(x, z(2, 2, 2, 4))),
    "hx a tensor of one": (LSTM_KW, lambda m: m(x, z(1, 2, 2, 4))),
    "hx an int": (LSTM_KW, lambda m: m(x, 5)),
    "h_0 None": (LSTM_KW, lambda m: m(x, (None, hx[1]))),
    "h_0 layers": (LSTM_KW, lambda m: m(x, (z(1, 2, 4), hx[1]))),
    "h_0 batch": (LSTM_KW, lambda m: m(x, (z(2, 3, 4), hx[1]))),
    "c_0 features": (LSTM_KW, lambda m: m(x, (hx[0], z(2, 2, 5)))),
    "h_0 2-D, batched input": (LSTM_KW, lambda m: m(x, (z(2, 4), hx[1]))),
    "h_0 3-D, unbatched input": (LSTM_KW, lambda m: m(x[:, 0], (z(2, 1, 4),) * 2)),
    "h_0 shape, unbatched input": (LSTM_KW, lambda m: m(x[:, 0], (z(2, 5), z(2, 4)))),
    "h_0 float64": (LSTM_KW, lambda m: m(x, (hx[0].double(), hx[1]))),
    "c_0 float64": (LSTM_KW, lambda m: m(x, (hx[0], hx[1].double()))),
    "input on meta": (LSTM_KW, lambda m: m(x.to("meta"))),
    "h_0 on meta": (LSTM_KW, lambda m: m(x, (hx[0].to("meta"), hx[1]))),
    "proj_size, h_0 of hidden_size": (
        {**LSTM_KW, "proj_size": 2},
        lambda m: m(x, (z(2, 2, 4), z(2, 2, 4))),
    ),
    "bidirectional, h_0 layers": ({**LSTM_KW, "bidirectional": True}, lambda m: m(x, hx)),
    "batch_first, h_0 batch": (
        {**LSTM_KW, "batch_first": True},
        lambda m: m(torch.randn(3, 5, 3), hx),
    ),
    "packed float64": (LSTM_KW, lambda m: m(_packed(5, 3, dtype=torch.float64))),
    "packed features": (LSTM_KW, lambda m: m(_packed(5, 3, size=9))),
    "packed h_0 batch": (LSTM_KW, lambda m: m(_packed(5, 3), (z(2, 3, 4), hx[1]))),
    "packed h_0 features": (LSTM_KW, lambda m: m(_packed(5, 3), (z(2, 2, 5), hx[1]))),
    "packed h_0 2-D": (LSTM_KW, lambda m: m(_packed(5, 3), (z(2, 4), hx[1]))),
    "packed h_0 4-D": (LSTM_KW, lambda m: m(_packed(5, 3), (z(2, 2, 4, 1), hx[1]))),
    "packed h_0 float64": (LSTM_KW, lambda m: m(_packed(5, 3), (hx[0].double(), hx[1]))),
    "packed hx of one": (LSTM_KW, lambda m: m(_packed(5, 3), hx[:1])),
    "packed unsorted, hx of one": (
        LSTM_KW,
        lambda m: m(_packed(3, 5, enforce_sorted=False), hx[:1]),
    ),
    "packed hx a tensor": (LSTM_KW, lambda m: m(_packed(5, 3), z(2, 2, 4))),
    "autocast, input float64": (LSTM_KW, _autocast(lambda m: m(x.double()))),
    "autocast, input int64": (LSTM_KW, _autocast(lambda m: m(x.long()))),
    "autocast, h_0 float64": (LSTM_KW, _autocast(lambda m: m(x, (hx[0].double(), hx[1])))),
    "autocast, features": (LSTM_KW, _autocast(lambda m: m(torch.randn(5, 2, 9)))),
    "autocast, packed float64": (
        LSTM_KW,
        _autocast(lambda m: m(_packed(5, 3, dtype=torch.float64))),
    ),
    "functional_call, weight_ih_l0 float64": (
        LSTM_KW,
        _swapped("weight_ih_l0", randn(16, 3, dtype=torch.float64), x),
    ),
    "functional_call, weight_hh_l0 float64": (
        LSTM_KW,
        _swapped("weight_hh_l0", randn(16, 4, dtype=torch.float64), x),
    ),
    "functional_call, bias_ih_l0 size": (LSTM_KW, _swapped("bias_ih_l0", randn(15), x)),
    "functional_call, bias_hh_l1 float64": (
        LSTM_KW,
        _swapped("bias_hh_l1", randn(16, dtype=torch.float64), x),
    ),
    "functional_call, weight_hh_l0 on meta": (
        LSTM_KW,
        _swapped("weight_hh_l0", torch.empty(16, 4, device="meta"), x),
    ),
}

CELL_KW = {"input_size": 5, "hidden_size": 4}
xc = randn(3, 5)
hc = (z(3, 4), z(3, 4))
CELL_REFUSALS = {
    "input 3-D": (CELL_KW, lambda m: m(torch.randn(3, 1, 5), hc)),
    "input 0-D": (CELL_KW, lambda m: m(torch.tensor(1.0), hc)),
    "input features": (CELL_KW, lambda m: m(torch.randn(3, 6), hc)),
    "input features, unbatched": (CELL_KW, lambda m: m(torch.randn(6), (z(4), z(4)))),
    "h 3-D": (CELL_KW, lambda m: m(xc, (z(3, 1, 4), hc[1]))),
    "c 0-D": (CELL_KW, lambda m: m(xc, (hc[0], torch.tensor(0.0)))),
    "h features": (CELL_KW, lambda m: m(xc, (z(3, 5), hc[1]))),
    "c features": (CELL_KW, lambda m: m(xc, (hc[0], z(3, 5)))),
    "h batch": (CELL_KW, lambda m: m(xc, (z(2, 4), hc[1]))),
    "h and c batch of one": (CELL_KW, lambda m: m(xc, (z(1, 4), z(1, 4)))),
    "h batch of one": (CELL_KW, lambda m: m(xc, (z(1, 4), hc[1]))),
    "c batch": (CELL_KW, lambda m: m(xc, (hc[0], z(2, 4)))),
    "unbatched input, batched states": (CELL_KW, lambda m: m(xc[0], (z(1, 4), z(1, 4)))),
    "batched input, unbatched states": (CELL_KW, lambda m: m(xc, (z(4), z(4)))),
    "no example, states of one": (CELL_KW, lambda m: m(torch.randn(0, 5), (z(1, 4), z(1, 4)))),
    "input float64": (CELL_KW, lambda m: m(xc.double(), hc)),
    "h float64": (CELL_KW, lambda m: m(xc, (hc[0].double(), hc[1]))),
    "input on meta": (CELL_KW, lambda m: m(xc.to("meta"), hc)),
    "h on meta": (CELL_KW, lambda m: m(xc, (hc[0].to("meta"), hc[1]))),
    "hx of one state": (CELL_KW, lambda m: m(xc, hc[:1])),
    "hx of three states": (CELL_KW, lambda m: m(xc, (*hc, hc[0]))),
    "hx of one state, unbatched": (CELL_KW, lambda m: m(xc[0], (z(4),))),
    "hx empty": (CELL_KW, lambda m: m(xc, ())),
    "hx a tensor": (CELL_KW, lambda m: m(xc, z(3, 4))),
    "hx a stacked tensor": (CELL_KW, lambda m: m(xc, z(2, 3, 4))),
    "hx a 4-D tensor": (CELL_KW, lambda m: m(xc, z(2, 3, 4, 1))),
    "hx a tensor of one, unbatched": (CELL_KW, lambda m: m(xc[0], z(1, 4))),
    "hx a 0-D tensor": (CELL_KW, lambda m: m(xc, torch.tensor(1.0))),
    "hx an int": (CELL_KW, lambda m: m(xc, 3)),
    "h None": (CELL_KW, lambda m: m(xc, (None, hc[1]))),
}
REFUSALS = [
    (cls, name, kwargs, call)
    for cls, cases in ((nn.LSTM, LSTM_REFUSALS), (nn.LSTMCell, CELL_REFUSALS))
    for name, (kwargs, call) in cases.items()
]


@pytest.mark.parametrize(
    "cls,name,kwargs,call", REFUSALS, ids=[f"{c.__name__}-{n}" for c, n, *_ in REFUSALS]
)
def test_inputs_torch_refuses_raise_its_exception_type(cls, name, kwargs, call):
    for mode, training in MODES.items():
        theirs, _ = _twins(cls, (), kwargs, {}, training)
        expected = _raised(call, theirs)
        for options in OPTIONS:
            _, ours = _twins(cls, (), kwargs, options, training)
            actual = _raised(call, ours)
            _assert_same_refusal(expected, actual, f"{cls.__name__} {name}, {mode}, {options}")
