"""``hdetach.LSTM``: ``torch.nn.LSTM`` with h-detach in its training gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from hdetach.choices import BACKENDS, DETACH_PATHS, DETACH_SCOPES, LAYER_MASKS
from hdetach.functional import draw_detach_masks, lstm, select_backend
from hdetach.nn.masks import OwnMaskStream, check_generator
from hdetach.nn.options import (
    Option,
    autocast_dtype,
    capture_error,
    check_p_detach,
    choice,
    graph_capture,
    script_error,
)
from hdetach.nn.refusals import check_lstm_inputs
from hdetach.ops.checks import check_choice
from hdetach.ops.packed import sequence_lengths

__all__ = ["LSTM", "DETACH_SCOPES", "LAYER_MASKS"]


class LSTM(OwnMaskStream, nn.LSTM):
    r"""A drop-in ``torch.nn.LSTM`` that trains with h-detach.

    For each element in the input sequence, each layer computes

    $$
    \begin{array}{ll}
        \tilde h_{t-1} = \mathrm{sg}(h_{t-1}) \text{ if } m_t \text{ else } h_{t-1} \\
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} \tilde h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} \tilde h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} \tilde h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} \tilde h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
    \end{array}
    $$

    where $\mathrm{sg}$ ("stop gradient") is the identity in the forward pass and
    has zero derivative, and $m_t \sim \mathrm{Bernoulli}(p_\mathrm{detach})$ is drawn per
    step (per step and example with ``detach_scope="sample"``). The forward values are
    exactly those of ``torch.nn.LSTM``; in training the gradient reaches the past from
    step t only through $c_{t-1}$ on the steps where $m_t$ is drawn. With
    ``detach_path="c"``, $c_{t-1}$ is blocked instead (the c-detach ablation).
    The mask is drawn only in training mode, with grad enabled and ``p_detach > 0``, on
    the input's device from ``generator``, or by default from a stream of the module's
    own that leaves torch's global generators untouched (so turning h-detach on changes
    no other random draw, dropout included) and that ``torch.manual_seed`` reproduces
    (``hdetach.nn.masks``); otherwise the module is a plain LSTM, and wherever nothing
    is detached the call is ``torch.nn.LSTM.forward`` itself (same kernels, autocast,
    tracing and export), but for training on one or two CPU threads with L x N >= 10,000
    and ``hidden_size`` >= 64, where the faster compiled recurrence computes the same
    LSTM, equal to float rounding (``backend="native"`` keeps torch's kernel there too;
    ``hdetach.functional.select_backend`` gives the rule).

    Constructor, parameters (names, shapes, initialisation), inputs and outputs are
    those of ``torch.nn.LSTM``; a state dict moves between the two key for key.

    Args:
        input_size: the number of features of the input $x_t$.
        hidden_size: the number of features of $h_t$ and $c_t$.
        num_layers: stacked LSTM layers, each reading the previous one's output.
            Default: 1.
        bias: if False, no $b_{ih}$ and $b_{hh}$. Default: True.
        batch_first: input and output as (N, L, ...) instead of (L, N, ...); the
            states keep (layers, N, ...). Default: False.
        dropout: dropout on each layer's output except the last. Default: 0.
        bidirectional: a second LSTM reads the sequence backwards. Default: False.
        proj_size: if > 0, $h_t$ is projected to this size by
            $W_{hr}$. Default: 0.
        device: where the parameters are made. Default: torch's default.
        dtype: the parameters' dtype. Default: torch's default.
        p_detach: probability per time step that $h_{t-1}$ enters the step as
            a constant for autograd. Default: 0.25 (0 gives the plain LSTM gradient).
        detach_scope: ``"batch"`` draws one decision per step for the whole minibatch
            (the paper); ``"sample"`` one per step per example. Default: ``"batch"``.
        detach_path: ``"h"`` blocks $h_{t-1}$ (h-detach); ``"c"`` blocks
            $c_{t-1}$ (c-detach). Default: ``"h"``.
        layer_masks: ``"shared"``: one draw serves every layer and direction;
            ``"independent"``: each layer and direction draws its own. Default:
            ``"shared"``.
        backend: ``"auto"``, ``"native"`` (torch's own kernels; nothing may be
            detached), ``"fused"``, ``"triton"`` or ``"reference"`` (see
            ``hdetach.functional.select_backend``). Default: ``"auto"``.
        generator: the ``torch.Generator`` (of the input's device) the masks are drawn
            from; None: the module's own stream. Not saved with the module. Default: None.

    Inputs: input, (h_0, c_0), detach_mask
        * **input**: tensor of shape $(L, H_{in})$ (unbatched),
          $(L, N, H_{in})$, or $(N, L, H_{in})$ with ``batch_first=True``;
          or a ``PackedSequence``.
        * **h_0**: $(D \cdot \mathrm{num\_layers}, N, H_{out})$ (no N when
          unbatched); zeros if not given.
        * **c_0**: $(D \cdot \mathrm{num\_layers}, N, H_{cell})$; zeros if not given.
        * **detach_mask** (optional, keyword or third): an explicit bool mask instead
          of the random draw, of shape $(L,)$, $(L, N)$,
          $(D \cdot \mathrm{num\_layers}, L)$ or
          $(D \cdot \mathrm{num\_layers}, L, N)$; ``detach_mask[..., t]`` True
          detaches the state entering the step that processes position t (for the
          reverse direction that state comes from position t + 1). For a
          ``PackedSequence``, N indexes the sequences in the order they were packed.

        where $N$ is the batch size, $L$ the sequence length, $D$ 2
        if bidirectional else 1, $H_{cell}$ = hidden_size and $H_{out}$ =
        proj_size if proj_size > 0 else hidden_size.

    Outputs: output, (h_n, c_n)
        * **output**: $(L, N, D \cdot H_{out})$ (batch first:
          $(N, L, D \cdot H_{out})$; unbatched: $(L, D \cdot H_{out})$), or a
          ``PackedSequence``: $h_t$ of the last layer at every step.
        * **h_n**: $(D \cdot \mathrm{num\_layers}, N, H_{out})$, the final hidden
          state of each layer and direction.
        * **c_n**: $(D \cdot \mathrm{num\_layers}, N, H_{cell})$, the final cell state.

    Tracing or exporting while detaching raises an error naming the way out;
    ``torch.jit.script`` is refused (see docs/compatibility.md).

    Examples:
        >>> import torch, hdetach
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> lstm = hdetach.LSTM(10, 20, num_layers=2, p_detach=0.25)
        >>> x = torch.randn(5, 3, 10)                       # (L, N, H_in)
        >>> h0, c0 = torch.zeros(2, 3, 20), torch.zeros(2, 3, 20)
        >>> output, (hn, cn) = lstm(x, (h0, c0))
        >>> output.shape, hn.shape, cn.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]), torch.Size([2, 3, 20]))
        >>> output.sum().backward()                        # the h-detach gradient
        >>> reference = torch.nn.LSTM(10, 20, num_layers=2)
        >>> reference.load_state_dict(lstm.state_dict())   # same keys, same shapes
        <All keys matched successfully>
        >>> torch.allclose(reference(x, (h0, c0))[0], output, atol=1e-6)  # same forward
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        p_detach: float = 0.25,
        detach_scope: str = "batch",
        detach_path: str = "h",
        layer_masks: str = "shared",
        backend: str = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        # Checked before any allocation; the attributes check again on every assignment.
        check_p_detach(p_detach)
        check_generator(generator)
        check_choice("detach_scope", detach_scope, DETACH_SCOPES)
        check_choice("detach_path", detach_path, DETACH_PATHS)
        check_choice("layer_masks", layer_masks, LAYER_MASKS)
        check_choice("backend", backend, BACKENDS)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device=device,
            dtype=dtype,
        )
        self.p_detach = p_detach
        self.detach_scope = detach_scope
        self.detach_path = detach_path
        self.layer_masks = layer_masks
        self.backend = backend
        self.generator = generator

    p_detach = Option(check_p_detach)
    detach_scope = choice("detach_scope", DETACH_SCOPES)
    detach_path = choice("detach_path", DETACH_PATHS)
    layer_masks = choice("layer_masks", LAYER_MASKS)
    backend = choice("backend", BACKENDS)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, p_detach={self.p_detach}, "
            f"detach_scope={self.detach_scope!r}, "
            f"detach_path={self.detach_path!r}, layer_masks={self.layer_masks!r}, "
            f"backend={self.backend!r}"
        )

    def _stream_weights(self) -> list[Tensor]:
        return self._flat_weights[:2]  # not getattr: that would run a parametrization

    @property
    def _num_states(self) -> int:
        return self.num_layers * (2 if self.bidirectional else 1)

    def _draws_masks(self) -> bool:
        return self.training and torch.is_grad_enabled() and self.p_detach > 0

    def __prepare_scriptable__(self) -> nn.LSTM:
        raise script_error("hdetach.LSTM")

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        detach_mask: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        capture = graph_capture()
        if capture is not None:
            # A captured graph is the forward pass, which is torch's: record torch's.
            if detach_mask is not None or self._draws_masks():
                raise capture_error(capture, "hdetach.LSTM")
            return super().forward(input, hx)
        packed = isinstance(input, PackedSequence)
        ragged = packed and bool(input.batch_sizes[0] != input.batch_sizes[-1])
        run_dtype = autocast_dtype(input.data if packed else input, ragged)
        check_lstm_inputs(self, input, hx, run_dtype)
        x, batched, batch_sizes, sorted_indices = self._time_major(input, run_dtype)
        steps, batch = x.shape[:2]
        h0, c0 = self._initial_state(hx, batch, batched, x, sorted_indices, run_dtype)
        if batch == 0:
            return super().forward(input, hx)  # no example, nothing to detach
        masks = self._detach_masks(detach_mask, steps, batch, batched, x.device, sorted_indices)
        backend = self._backend_for(x, masks)
        if backend == "native":
            return super().forward(input, hx)  # nothing to detach: torch's own kernels
        # Refreshed each call as torch.nn.LSTM.forward does, so that functional_call and
        # parametrizations (weight_norm, spectral_norm) act on the weights used here.
        self._update_flat_weights()
        weights = list(self._flat_weights)
        if run_dtype is not None:
            weights = [w.to(run_dtype) for w in weights]
        per_layer = len(weights) // self._num_states
        with torch.autocast(x.device.type, enabled=False):  # the casts are done above
            output, (h_n, c_n) = lstm(
                x,
                (h0, c0),
                [weights[k * per_layer : (k + 1) * per_layer] for k in range(self._num_states)],
                bidirectional=self.bidirectional,
                dropout=self.dropout,
                training=self.training,
                detach_masks=masks,
                detach_path=self.detach_path,
                batch_sizes=batch_sizes,
                backend=backend,
            )
        return self._in_input_layout(output, h_n, c_n, input, batched)

    def _backend_for(self, x: Tensor, masks) -> str:
        """The implementation that runs this call (``functional.select_backend`` decides)."""
        return select_backend(
            self.backend,
            device=x.device,
            dtype=x.dtype,
            steps=x.shape[0],
            batch=x.shape[1],
            hidden_size=self.hidden_size,
            detached=masks is not None,
            proj_size=self.proj_size,
        )

    def _in_input_layout(
        self, output: Tensor, h_n: Tensor, c_n: Tensor, input: Tensor | PackedSequence, batched
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """The time-major results in the layout of ``input`` (packed, unbatched, batch_first)."""
        if isinstance(input, PackedSequence):
            lengths = sequence_lengths(
                input.batch_sizes.tolist(), output.shape[1], torch.device("cpu")
            )
            data = pack_padded_sequence(output, lengths).data
            output = PackedSequence(
                data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
            if input.unsorted_indices is not None:
                h_n, c_n = (s.index_select(1, input.unsorted_indices) for s in (h_n, c_n))
        elif not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n)

    def _time_major(
        self, input: Tensor | PackedSequence, run_dtype: torch.dtype | None
    ) -> tuple[Tensor, bool, list[int] | None, Tensor | None]:
        """``input`` (checked by ``refusals.check_lstm_inputs``) as (T, B, I) in
        ``run_dtype`` (if not None), whether it was batched, the packed layout
        (batch_sizes) and sorted_indices."""
        if isinstance(input, PackedSequence):
            batch_sizes = input.batch_sizes.tolist()
            x, _ = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
            batched, sorted_indices = True, input.sorted_indices
        else:
            batch_sizes = sorted_indices = None
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        if run_dtype is not None:  # autocast: torch's LSTM computes in its dtype
            x = x.to(run_dtype)
        return x, batched, batch_sizes, sorted_indices

    def _initial_state(
        self,
        hx,
        batch: int,
        batched: bool,
        x: Tensor,
        sorted_indices: Tensor | None,
        run_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor]:
        """h0 (L * D, B, P) and c0 (L * D, B, H), P = proj_size or H, from ``hx`` (checked
        by ``refusals.check_lstm_inputs``) in the (sorted) batch order the recurrence uses, in
        ``run_dtype`` when autocast sets one."""
        sizes = (self.proj_size or self.hidden_size, self.hidden_size)
        shapes = [(self._num_states, batch, size) for size in sizes]
        if hx is None:
            return x.new_zeros(shapes[0]), x.new_zeros(shapes[1])
        states = []
        for state in hx:
            if run_dtype is not None:
                state = state.to(run_dtype)
            state = state if batched else state.unsqueeze(1)
            if sorted_indices is not None:
                state = state.index_select(1, sorted_indices)
            states.append(state)
        return states[0], states[1]

    def _detach_masks(
        self,
        mask: Tensor | None,
        steps: int,
        batch: int,
        batched: bool,
        device: torch.device,
        sorted_indices: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> list[Tensor] | None:
        """One mask per layer and direction, each (T,) or (T, B), or None for none; drawn
        from ``generator`` (default: the module's, ``_mask_generator``) when ``mask`` is None."""
        states = self._num_states
        if mask is None:
            if not self._draws_masks():
                return None
            per_layer = self.layer_masks == "independent"
            shape = (steps,) if self.detach_scope == "batch" else (steps, batch)
            shape = (states, *shape) if per_layer else shape
            generator = generator if generator is not None else self._mask_generator(device)
            mask = draw_detach_masks(self.p_detach, shape, device=device, generator=generator)
        else:
            per_layer = self._check_mask(mask, steps, batch, batched, device)
            if sorted_indices is not None and mask.dim() == 2 + per_layer:
                mask = mask.index_select(-1, sorted_indices)  # to the packed (sorted) order
        return list(mask.unbind(0)) if per_layer else [mask] * states

    def _check_mask(
        self, mask: Tensor, steps: int, batch: int, batched: bool, device: torch.device
    ) -> bool:
        """Validate an explicit mask; return whether it has a leading per-layer dimension."""
        states = self._num_states
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"detach_mask must be a torch.bool tensor, got {got}")
        if mask.device != device:
            raise ValueError(f"detach_mask must be on {device} like the input, got {mask.device}")
        shape = tuple(mask.shape)
        allowed = [(steps,), (states, steps)]
        if batched:
            allowed += [(steps, batch), (states, steps, batch)]
        if shape not in allowed:
            raise ValueError(
                f"detach_mask must have one of the shapes {allowed} ((T,), (L*D, T)"
                + (", (T, B), (L*D, T, B)" if batched else "")
                + f"), got {shape}"
            )
        if batched and (steps, batch) == (states, steps) == shape:
            raise ValueError(
                f"detach_mask of shape {shape} is ambiguous between (T, B) and (L*D, T); "
                f"pass a 3-D (L*D, T, B) mask of shape {(states, steps, batch)}"
            )
        return mask.dim() == 3 or (mask.dim() == 2 and not (batched and shape == (steps, batch)))
