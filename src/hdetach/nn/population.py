"""``hdetach.PopulationLSTM``: K independent ``hdetach.LSTM``s run as one batched computation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hdetach.functional import lstm, select_backend
from hdetach.nn.lstm import LSTM

__all__ = ["PopulationLSTM"]

# What every member must share: the shapes that make one batched computation, and the
# options the kernels apply to all rows alike. p_detach may differ per member.
STRUCTURE = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "proj_size",
)
SHARED_OPTIONS = ("detach_scope", "detach_path", "layer_masks", "backend")


class PopulationLSTM(nn.Module):
    """K independent h-detach LSTMs (members) whose forward and backward run as one.

    Each member is an ordinary ``hdetach.LSTM`` holding its own parameters (so each can
    have its own optimizer, learning rate and gradient clipping, and its state dict is
    an ordinary LSTM state dict); the forward stacks their weights and runs every
    member's matrix products as one batched product per step. Member k's results equal
    ``member(k)`` applied to its own input, up to float rounding.

    Args:
        num_members: K.
        input_size: as ``torch.nn.LSTM``; the same for every member, as are
            ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``, ``dropout``,
            ``bidirectional``, ``proj_size``, ``device`` and ``dtype``.
        p_detach: a float for every member, or one value per member.
        detach_scope: as ``hdetach.LSTM``; shared by every member, as are
            ``detach_path``, ``layer_masks`` and ``backend``.

    Input (K, T, B, I), or (K, B, T, I) with ``batch_first``; ``hx`` = (h0 (K, L * D, B, P),
    c0 (K, L * D, B, H)). Outputs gain the same leading K dimension. ``detach_mask``:
    None or bool (K, ...) where ``detach_mask[k]`` is member k's mask in any shape
    ``hdetach.LSTM`` takes. Drawn masks: member k draws exactly what ``member(k)``
    would draw, from ``generators[k]`` if ``generators`` is set (else from torch's
    generator, member after member). Dropout between layers draws from torch's
    generator for all members at once. Packed sequences are not supported.
    """

    def __init__(
        self,
        num_members: int,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        p_detach: float | Sequence[float] = 0.25,
        detach_scope: str = "batch",
        detach_path: str = "h",
        layer_masks: str = "shared",
        backend: str = "auto",
    ) -> None:
        if not isinstance(num_members, int) or num_members < 1:
            raise ValueError(f"num_members must be an int >= 1, got {num_members!r}")
        ps = _per_member(p_detach, num_members)
        members = [
            LSTM(
                input_size,
                hidden_size,
                num_layers,
                bias,
                batch_first,
                dropout,
                bidirectional,
                proj_size,
                device,
                dtype,
                p_detach=p,
                detach_scope=detach_scope,
                detach_path=detach_path,
                layer_masks=layer_masks,
                backend=backend,
            )  # fmt: skip
            for p in ps
        ]
        super().__init__()
        self.members = nn.ModuleList(members)
        self.generators: list[torch.Generator] | None = None

    @classmethod
    def from_members(cls, members: Sequence[LSTM]) -> PopulationLSTM:
        """A population of these modules themselves (not copies): training it trains them.

        They must be ``hdetach.LSTM``s of one structure (sizes, layers, directions,
        projection, dtype, device) and the same detach scope, path, layer masks and backend.
        """
        members = list(members)
        if not members or not all(isinstance(m, LSTM) for m in members):
            raise TypeError("from_members needs a non-empty sequence of hdetach.LSTM modules")
        first = members[0]
        for k, m in enumerate(members[1:], start=1):
            for name in (*STRUCTURE, *SHARED_OPTIONS):
                if getattr(m, name) != getattr(first, name):
                    raise ValueError(
                        f"members must share {name}: member 0 has {getattr(first, name)!r}, "
                        f"member {k} has {getattr(m, name)!r}"
                    )
            w, w0 = m._flat_weights[0], first._flat_weights[0]
            if (w.dtype, w.device) != (w0.dtype, w0.device):
                raise ValueError(
                    f"members must share dtype and device: member 0 is {w0.dtype} on "
                    f"{w0.device}, member {k} {w.dtype} on {w.device}"
                )
        population = cls.__new__(cls)
        nn.Module.__init__(population)
        population.members = nn.ModuleList(members)
        population.generators = None
        return population

    def member(self, k: int) -> LSTM:
        """Member k: a standalone ``hdetach.LSTM`` holding (not copying) its weights."""
        return self.members[k]

    def __len__(self) -> int:
        return len(self.members)

    def __getattr__(self, name: str):
        if name in STRUCTURE or name in SHARED_OPTIONS:
            return getattr(self.members[0], name)
        return super().__getattr__(name)

    @property
    def p_detach(self) -> list[float]:
        return [m.p_detach for m in self.members]

    @p_detach.setter
    def p_detach(self, value: float | Sequence[float]) -> None:
        for m, p in zip(self.members, _per_member(value, len(self.members))):
            m.p_detach = p

    def extra_repr(self) -> str:
        return f"num_members={len(self.members)}"

    def forward(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None = None,
        detach_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        members, first = len(self.members), self.members[0]
        x = self._time_major(input)  # (T, K * B, I)
        steps, rows = x.shape[:2]
        batch = rows // members
        h0, c0 = self._initial_state(hx, batch, x)
        per_member = self._member_masks(detach_mask, steps, batch, x.device)
        for m in self.members:  # as torch.nn.LSTM.forward: parametrizations, functional_call
            m._update_flat_weights()
        with torch.autocast(x.device.type, enabled=False):  # computes in the input's dtype
            if first.backend == "auto" and x.device.type == "cpu":
                output, (h_n, c_n) = self._in_turn(x, h0, c0, per_member)
            else:
                masks = _combined(per_member, steps, batch, x.device)
                output, (h_n, c_n) = self._batched(x, h0, c0, masks)
        output = output.unflatten(1, (members, batch)).movedim(1, 0)  # (K, T, B, D * P)
        if first.batch_first:
            output = output.transpose(1, 2)
        h_n, c_n = (s.unflatten(1, (members, batch)).movedim(1, 0) for s in (h_n, c_n))
        return output, (h_n, c_n)

    def _entries(self, weights: Sequence[Tensor]) -> list[list[Tensor]]:
        """``functional.lstm``'s weights: per layer and direction, from flat ``weights``."""
        first = self.members[0]
        per_state = len(weights) // first._num_states
        return [
            list(weights[k * per_state : (k + 1) * per_state]) for k in range(first._num_states)
        ]

    def _options(self) -> dict:
        first = self.members[0]
        return dict(
            bidirectional=first.bidirectional,
            dropout=first.dropout,
            training=self.training,
            detach_path=first.detach_path,
        )

    def _batched(self, x: Tensor, h0: Tensor, c0: Tensor, masks: list[Tensor] | None):
        """All members as one computation: weights stacked (K, ...), rows in member blocks."""
        first, rows = self.members[0], x.shape[1]
        backend = select_backend(
            first.backend,
            device=x.device,
            dtype=x.dtype,
            steps=x.shape[0],
            batch=rows,
            hidden_size=first.hidden_size,
            detached=masks is not None,
            proj_size=first.proj_size,
            members=len(self.members),
        )
        stacked = [_stack(ws) for ws in zip(*(m._flat_weights for m in self.members))]
        return lstm(
            x, (h0, c0), self._entries(stacked), detach_masks=masks, backend=backend,
            **self._options(),
        )  # fmt: skip

    def _in_turn(self, x: Tensor, h0: Tensor, c0: Tensor, per_member: list):
        """Each member on its own rows, one after another, as it would run alone: what
        ``"auto"`` does on a CPU, where it was faster than the batched computation
        (``benchmarks/``: a batched step's larger working set leaves the CPU's caches)."""
        batch = x.shape[1] // len(self.members)
        results = []
        for k, member in enumerate(self.members):
            part = slice(k * batch, (k + 1) * batch)
            x_k, masks = x[:, part], per_member[k]
            results.append(
                lstm(
                    x_k,
                    (h0[:, part], c0[:, part]),
                    self._entries(member._flat_weights),
                    detach_masks=masks,
                    backend=member._backend_for(x_k, masks),
                    **self._options(),
                )  # fmt: skip
            )
        output = torch.cat([out for out, _ in results], dim=1)
        h_n, c_n = (torch.cat([state[i] for _, state in results], dim=1) for i in (0, 1))
        return output, (h_n, c_n)

    def _time_major(self, input: Tensor) -> Tensor:
        """Validate ``input``; return it as (T, K * B, I), member k's rows in block k."""
        members, first = len(self.members), self.members[0]
        layout = "(K, B, T, I)" if first.batch_first else "(K, T, B, I)"
        if not isinstance(input, Tensor) or input.dim() != 4 or input.shape[0] != members:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"input must have shape {layout} with K = {members}, got {got}")
        x = input.transpose(1, 2) if first.batch_first else input
        if x.shape[3] != first.input_size:
            raise ValueError(f"input must have {first.input_size} features, got {x.shape[3]}")
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise ValueError(f"input must have at least one step and one example, got {layout}")
        weight = first._flat_weights[0]
        if x.dtype != weight.dtype or x.device != weight.device:
            raise TypeError(
                f"input must be {weight.dtype} on {weight.device} like the weights, "
                f"got {x.dtype} on {x.device}"
            )
        return x.movedim(0, 1).flatten(1, 2)

    def _initial_state(self, hx, batch: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """h0 (L * D, K * B, P) and c0 (L * D, K * B, H) from hx in the (K, L * D, B, .) layout."""
        members, first = len(self.members), self.members[0]
        sizes = (first.proj_size or first.hidden_size, first.hidden_size)
        if hx is None:
            return tuple(x.new_zeros(first._num_states, members * batch, n) for n in sizes)
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("hx must be a tuple (h_0, c_0) of tensors")
        states = []
        for name, state, size in zip(("h_0", "c_0"), hx, sizes):
            expected = (members, first._num_states, batch, size)
            if not isinstance(state, Tensor) or tuple(state.shape) != expected:
                got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
                raise ValueError(f"hx's {name} must have shape {expected}, got {got}")
            if state.dtype != x.dtype or state.device != x.device:
                raise TypeError(f"hx's {name} must be {x.dtype} on {x.device} like the input")
            states.append(state.movedim(0, 1).flatten(1, 2))
        return states[0], states[1]

    def _member_masks(
        self, detach_mask: Tensor | None, steps: int, batch: int, device: torch.device
    ) -> list[list[Tensor] | None]:
        """Per member: its masks per layer and direction, each (T,) or (T, B), or None."""
        members = len(self.members)
        if detach_mask is not None and (
            not isinstance(detach_mask, Tensor) or detach_mask.shape[:1] != (members,)
        ):
            got = tuple(detach_mask.shape) if isinstance(detach_mask, Tensor) else detach_mask
            raise ValueError(f"detach_mask must have a leading dimension K = {members}, got {got}")
        generators = self.generators or [None] * members
        if len(generators) != members:
            raise ValueError(f"generators must hold one generator per member ({members})")
        return [
            m._detach_masks(
                None if detach_mask is None else detach_mask[k],
                steps,
                batch,
                True,
                device,
                None,
                generator=generators[k],
            )  # fmt: skip
            for k, m in enumerate(self.members)
        ]


def _combined(
    per_member: list[list[Tensor] | None], steps: int, batch: int, device: torch.device
) -> list[Tensor] | None:
    """One (T, K * B) mask per layer and direction, or None when no member detaches."""
    if all(masks is None for masks in per_member):
        return None
    states = len(next(masks for masks in per_member if masks is not None))
    none = torch.zeros(steps, batch, dtype=torch.bool, device=device)
    return [
        torch.cat(
            [
                none if masks is None else masks[s].reshape(steps, -1).expand(steps, batch)
                for masks in per_member
            ],
            dim=1,
        )
        for s in range(states)
    ]


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    """The members' tensors stacked, (K, ...). A stacked bias's gradient is cloned on its
    way back: the backends use b_ih + b_hh, whose two stacks would otherwise hand each
    member views of one tensor as the gradients of both its biases (and in-place clipping
    would scale it twice)."""
    stacked = torch.stack(list(tensors))
    if stacked.requires_grad and stacked.dim() == 2:
        stacked.register_hook(torch.clone)
    return stacked


def _per_member(p_detach: float | Sequence[float], members: int) -> list[float]:
    """One detach probability per member from a float or a sequence of K floats."""
    if isinstance(p_detach, (int, float)):
        return [float(p_detach)] * members
    ps = list(p_detach)
    if len(ps) != members:
        raise ValueError(f"p_detach must be a float or {members} values, got {len(ps)}")
    return ps
