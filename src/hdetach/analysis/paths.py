"""Split an LSTM model's weight gradient into its cell-state path and its h path.

Every weight gradient of an LSTM is a sum over paths back through time. Some of them
reach the weight only along the cell state (c_t -> c_{t-1}, factor f_t); the others
pass at least once from h_{t-1} into the gates. Detaching h_{t-1} at *every* step keeps
exactly the first kind, so from one forward computation:

    full   = the ordinary gradient (nothing detached)
    cell   = the gradient with every step h-detached (cell-path contributions only)
    hidden = full - cell (the contributions that pass through h_{t-1} into the gates)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from hdetach.nn import LSTM, LSTMCell
from hdetach.rng import rng_state, set_rng_state

# Parameter groups of the summary; "lstm" is the union of the first three.
GROUPS = ("W_ih", "W_hh", "bias", "lstm", "other", "total")


def hdetach_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``hdetach.LSTM`` / ``hdetach.LSTMCell`` modules of ``model`` (name, module).

    Raises ValueError when there is none, or when a plain ``torch.nn`` LSTM sits beside
    them (its gradient could not be split, so the result would silently mix paths).
    """
    found, plain = [], []
    for name, module in model.named_modules():
        if isinstance(module, (LSTM, LSTMCell)):
            found.append((name, module))
        elif isinstance(module, (nn.LSTM, nn.LSTMCell)):
            plain.append(name or type(module).__name__)
    if plain:
        raise ValueError(
            f"model holds torch.nn LSTM modules ({', '.join(plain)}) whose gradient cannot be "
            "split; swap them with hdetach.convert(model) first"
        )
    if not found:
        raise ValueError(
            "model holds no hdetach.LSTM or hdetach.LSTMCell; use hdetach.convert(model) first"
        )
    return found


def _steps(input: Tensor | PackedSequence, batch_first: bool) -> int:
    if isinstance(input, PackedSequence):
        return len(input.batch_sizes)
    return input.shape[1] if batch_first and input.dim() == 3 else input.shape[0]


def _device(input: Tensor | PackedSequence) -> torch.device:
    return input.data.device if isinstance(input, PackedSequence) else input.device


@contextlib.contextmanager
def forced_h_detach(model: nn.Module, every_step: bool) -> Iterator[None]:
    """Within the block every hdetach module of ``model`` h-detaches every step or none.

    The modules' own ``p_detach`` and ``detach_path`` are overridden; any mask the caller
    passes is replaced. An explicit mask also keeps ``hdetach.LSTM`` off torch's native
    kernels, so both settings run the same implementation. Done by an instance attribute
    ``forward`` on each module, removed on exit; the modules' code is untouched.
    """
    modules = [module for _, module in hdetach_modules(model)]
    saved = [(m, m.__dict__.get("forward"), m.detach_path) for m in modules]

    def lstm_forward(module: LSTM) -> Callable:
        def forward(input, hx=None, detach_mask=None):
            steps = _steps(input, module.batch_first)
            mask = torch.full((steps,), every_step, dtype=torch.bool, device=_device(input))
            return type(module).forward(module, input, hx, mask)

        return forward

    def cell_forward(module: LSTMCell) -> Callable:
        def forward(input, hx=None, detach=False):  # the caller's ``detach`` is overridden
            return type(module).forward(module, input, hx, every_step)

        return forward

    try:
        for module in modules:
            module.detach_path = "h"
            make = lstm_forward if isinstance(module, LSTM) else cell_forward
            module.forward = make(module)
        yield
    finally:
        for module, forward, path in saved:
            module.__dict__.pop("forward", None)
            if forward is not None:
                module.forward = forward
            module.detach_path = path


@contextlib.contextmanager
def same_random_draws() -> Iterator[None]:
    """Run the block from the current state of every generator, and leave them as they were.

    Entering this twice in a row gives the block the same dropout (and data) draws twice,
    and the caller's random streams do not move.
    """
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@dataclass
class PathNorms:
    """Norms and angles of the three gradients over one parameter or a group of them."""

    full: float
    cell: float
    hidden: float
    ratio: float | None  # ||hidden|| / ||cell||; None where ||cell|| = 0
    cos_full_cell: float | None  # None where a norm is 0
    cos_cell_hidden: float | None

    @staticmethod
    def of(full: list[Tensor], cell: list[Tensor], hidden: list[Tensor]) -> PathNorms:
        def dot(a: list[Tensor], b: list[Tensor]) -> float:
            return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))

        n_full, n_cell, n_hidden = (math.sqrt(dot(g, g)) for g in (full, cell, hidden))

        def cos(a, b, na, nb):
            return dot(a, b) / (na * nb) if na > 0 and nb > 0 else None

        return PathNorms(
            full=n_full,
            cell=n_cell,
            hidden=n_hidden,
            ratio=n_hidden / n_cell if n_cell > 0 else None,
            cos_full_cell=cos(full, cell, n_full, n_cell),
            cos_cell_hidden=cos(cell, hidden, n_cell, n_hidden),
        )


@dataclass
class GradientPaths:
    """Per-parameter gradients (names as in ``model.named_parameters()``) by path."""

    full: dict[str, Tensor]
    cell: dict[str, Tensor]
    hidden: dict[str, Tensor]
    groups: dict[str, str]  # parameter name -> "W_ih", "W_hh", "bias" or "other"

    def norms(self, names: list[str]) -> PathNorms:
        return PathNorms.of(*([d[n] for n in names] for d in (self.full, self.cell, self.hidden)))

    def summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """{"params": {name: norms}, "groups": {group: norms}} as plain floats (JSON-ready).

        Groups: W_ih, W_hh, bias (of the hdetach modules), lstm (those three together),
        other (every other parameter) and total (all parameters).
        """
        members = {g: [n for n, k in self.groups.items() if k == g] for g in GROUPS}
        members["lstm"] = [n for n, k in self.groups.items() if k != "other"]
        members["total"] = list(self.groups)
        return {
            "params": {n: vars(self.norms([n])) for n in self.groups},
            "groups": {g: vars(self.norms(names)) for g, names in members.items() if names},
        }


def _parameter_groups(model: nn.Module) -> dict[str, str]:
    recurrent = {id(p) for _, m in hdetach_modules(model) for p in m.parameters()}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        local = name.rsplit(".", 1)[-1]
        if id(param) not in recurrent:
            groups[name] = "other"
        elif local.startswith("weight_ih"):
            groups[name] = "W_ih"
        elif local.startswith("weight_hh"):
            groups[name] = "W_hh"
        else:
            groups[name] = "bias"
    return groups


def checked_loss(loss_fn: Callable[[], Tensor]) -> Tensor:
    """``loss_fn()``, refused unless it is a scalar tensor."""
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError("loss_fn must return a scalar (0-d) tensor")
    return loss


def both_passes(model: nn.Module, run_pass: Callable[[bool], tuple[Tensor, Any]]):
    """``run_pass(every_step)`` for False (full) then True (cell), from the same random state.

    ``run_pass`` returns (loss, result); the two losses must be equal (the same forward
    computation), else RuntimeError. Returns the two results.
    """
    passes = []
    for every_step in (False, True):
        with same_random_draws():
            passes.append(run_pass(every_step))
    (loss_full, full), (loss_cell, cell) = passes
    if not torch.equal(loss_full, loss_cell):
        raise RuntimeError(
            f"loss_fn gave {loss_full.item()} and then {loss_cell.item()} from the same random "
            "state: it must compute the same forward pass each time it is called"
        )
    return full, cell


def gradient_paths(model: nn.Module, loss_fn: Callable[[], Tensor]) -> GradientPaths:
    """The gradient of ``loss_fn()`` w.r.t. ``model``'s parameters, split by path.

    ``loss_fn()`` takes no argument, runs ``model``'s forward and returns a scalar loss.
    It is called twice from the same random state (same dropout draws), once with no step
    detached and once with every step h-detached, in whatever mode (train/eval) the model
    is in. Parameters' ``.grad``, the model's mode and the global random generators are
    left as they were.
    """
    groups = _parameter_groups(model)
    names = list(groups)
    params = dict(model.named_parameters())

    def run_pass(every_step: bool) -> tuple[Tensor, dict[str, Tensor]]:
        with forced_h_detach(model, every_step), torch.enable_grad():
            loss = checked_loss(loss_fn)
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        zeros_for_unused = [
            torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)
        ]
        return loss.detach(), dict(zip(names, zeros_for_unused))

    full, cell = both_passes(model, run_pass)
    hidden = {n: full[n] - cell[n] for n in names}
    return GradientPaths(full, cell, hidden, groups)
