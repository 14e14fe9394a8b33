"""Per-time-step gradient norms at one LSTM, by path: how far back each path carries the loss.

For one ``hdetach.LSTM`` inside a model: ||dL/dx_t|| (its input), and for a one-layer
unidirectional LSTM also ||dL/dh_t|| and ||dL/dc_t|| (total derivatives: every use of
the state), each from the full gradient, the cell path alone (every step h-detached)
and their difference. The state tensors are exposed exactly by running that LSTM one
step at a time with its own forward, the state carried from call to call through ``hx``;
the one path inside a step that this does not expose, c_t -> h_t, is added from its
local derivative o_t * (1 - tanh(c_t)^2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from hdetach.analysis.paths import both_passes, checked_loss, forced_h_detach, hdetach_modules
from hdetach.nn import LSTM

PATHS = ("full", "cell", "hidden")


@dataclass
class GradientProfiles:
    """Norms per time step, each a (T,) float64 tensor, keyed by path then quantity.

    ``norms["cell"]["x"][t]`` is ||dL/dx_t|| over the batch and features when only the
    cell path is kept. Quantities: "x", and "h", "c" for a one-layer unidirectional LSTM.
    """

    norms: dict[str, dict[str, Tensor]]

    def share_of_first(self, steps: int, quantity: str = "x") -> dict[str, float]:
        """Per path: the share of the squared gradient norm over all steps that lies on the
        first ``steps`` steps (sum_{t<steps} ||g_t||^2 / sum_t ||g_t||^2; 0 where all 0)."""
        shares = {}
        for path in PATHS:
            squared = self.norms[path][quantity].square()
            total = float(squared.sum())
            shares[path] = float(squared[:steps].sum()) / total if total > 0 else 0.0
        return shares


def _select(model: nn.Module, name: str | None) -> LSTM:
    lstms = {n: m for n, m in hdetach_modules(model) if isinstance(m, LSTM)}
    if name is None:
        if len(lstms) != 1:
            raise ValueError(
                f"model holds {len(lstms)} hdetach.LSTM modules; name one with lstm= "
                f"({', '.join(map(repr, lstms)) or 'none'})"
            )
        return next(iter(lstms.values()))
    if name not in lstms:
        raise ValueError(f"lstm={name!r} is not an hdetach.LSTM of the model; got {list(lstms)}")
    return lstms[name]


class _Recorder:
    """Tensors of one forward call of ``module``: its input and, stepwise, its states.

    Per step (state layout: (1, B, ...) batched, (1, ...) unbatched): ``x`` the input,
    ``out`` the output (in the module's layout), ``h``/``c`` the state passed on,
    ``h_prev`` the state received.
    """

    def __init__(self, module: LSTM, forced_forward: Callable):
        self.module, self.forced_forward = module, forced_forward
        self.stepwise = module.num_layers == 1 and not module.bidirectional
        self.x: Tensor | None = None
        self.steps: list[dict[str, Tensor | None]] = []

    def forward(self, input: Tensor, hx=None, detach_mask=None):
        if isinstance(input, PackedSequence):
            raise ValueError("gradient profiles need a padded tensor input, not a PackedSequence")
        if self.x is not None:
            raise ValueError("gradient profiles need the LSTM to run once per loss_fn call")
        # A leaf input (data) is made to require grad so that dL/dx exists; nothing above it
        # needs a gradient then, so the rest of the graph is unchanged.
        x = input if input.requires_grad else input.detach().requires_grad_()
        self.x = x
        forward = self.forced_forward  # every step detached, or none
        if not self.stepwise:
            return forward(x, hx)
        outputs, state = [], hx
        for x_t in self.time_major(x).split(1):
            h_prev = None if state is None else state[0]
            x_in = self.time_major(x_t)  # back to the module's layout
            out, state = forward(x_in, state)
            outputs.append(out)
            step = dict(x=x_t, out=out, h=state[0], c=state[1], h_prev=h_prev)
            self.steps.append(step)
        return torch.cat(outputs, dim=1 if self.batch_first_batched(x) else 0), state

    def batch_first_batched(self, x: Tensor) -> bool:
        return self.module.batch_first and x.dim() == 3

    def time_major(self, x: Tensor) -> Tensor:
        """(B, T, ...) <-> (T, B, ...) for a batch-first module; unchanged otherwise."""
        return x.transpose(0, 1) if self.batch_first_batched(x) else x

    @torch.no_grad()
    def dh_dc(self, step: dict[str, Tensor | None]) -> Tensor:
        """dh_t/dc_t = o_t * (1 - tanh(c_t)^2), elementwise, from the weights and the step."""
        m, hidden = self.module, self.module.hidden_size
        gate = slice(3 * hidden, 4 * hidden)  # the output gate in the order i, f, g, o
        z = step["x"] @ m.weight_ih_l0[gate].T
        if step["h_prev"] is not None:
            z = z + step["h_prev"] @ m.weight_hh_l0[gate].T
        if m.bias:
            z = z + m.bias_ih_l0[gate] + m.bias_hh_l0[gate]
        return torch.sigmoid(z) * (1 - torch.tanh(step["c"]).square())


@contextlib.contextmanager
def _recording(module: LSTM) -> Iterator[_Recorder]:
    forced = module.__dict__["forward"]  # set by forced_h_detach, which restores it later
    recorder = _Recorder(module, forced)
    module.forward = recorder.forward
    try:
        yield recorder
    finally:
        module.forward = forced


def _profile_pass(
    model: nn.Module, module: LSTM, loss_fn: Callable[[], Tensor], every_step: bool
) -> tuple[Tensor, dict[str, list[Tensor]]]:
    """The loss and per-step gradients: "x" a (T, ...) tensor; "h", "c" lists of T tensors."""
    with forced_h_detach(model, every_step), _recording(module) as rec, torch.enable_grad():
        loss = checked_loss(loss_fn)
        if rec.x is None:
            raise ValueError("loss_fn never ran the LSTM being profiled")
        tensors = [rec.x] + [step[k] for step in rec.steps for k in ("out", "h", "c")]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
    per_step = {"x": rec.time_major(grads[0])}
    if rec.stepwise:
        per_step["h"], per_step["c"] = [], []
        for t, step in enumerate(rec.steps):
            d_out, d_h, d_c_next = grads[1 + 3 * t : 4 + 3 * t]
            # Total derivatives: h_t is both the step's output and the state passed on; c_t
            # is passed on (to c_{t+1}) and also makes h_t inside the step.
            d_h_total = rec.time_major(d_out) + d_h
            per_step["h"].append(d_h_total)
            per_step["c"].append(d_c_next + d_h_total * rec.dh_dc(step))
    return loss.detach(), per_step


def _step_norms(per_step: Tensor | list[Tensor]) -> Tensor:
    return torch.stack([g.double().norm() for g in per_step])


def gradient_profiles(
    model: nn.Module, loss_fn: Callable[[], Tensor], lstm: str | None = None
) -> GradientProfiles:
    """Per-step gradient norms at the input (and states) of one ``hdetach.LSTM``, by path.

    ``loss_fn`` as in ``gradient_paths`` (called twice from the same random state, in the
    model's current mode); ``lstm`` names the module (default: the model's only one). Its
    input must be a padded tensor and it must run once per ``loss_fn`` call.
    """
    module = _select(model, lstm)
    full, cell = both_passes(
        model, lambda every_step: _profile_pass(model, module, loss_fn, every_step)
    )
    norms = {"full": {}, "cell": {}, "hidden": {}}
    for quantity in full:
        norms["full"][quantity] = _step_norms(full[quantity])
        norms["cell"][quantity] = _step_norms(cell[quantity])
        norms["hidden"][quantity] = _step_norms(
            [f - c for f, c in zip(full[quantity], cell[quantity])]
        )
    return GradientProfiles(norms)
