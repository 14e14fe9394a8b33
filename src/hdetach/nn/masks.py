"""Where the modules' detach masks come from: a stream of each module's own, or a generator
the user gives.

Why not torch's global generator: a mask drawn from it moves every later draw of the
program, so turning h-detach on (or changing p) would also change the model's dropout,
the data order and any initialisation that follows, and a comparison of vanilla against
h-detach at one seed would differ in more than the gradient. So by default each module
draws from a generator of its own and only *reads* torch's global state: its stream is
seeded, at the module's first draw, from ``torch.initial_seed()`` (what
``torch.manual_seed`` set) and the module's weights at that moment. A program reseeded
with ``torch.manual_seed`` draws the same masks again; two modules draw different ones
(their weights differ); building or converting a module draws nothing.

The stream is program state, not model state: it is neither in the state dict (which
stays ``torch.nn.LSTM``'s) nor pickled with the module. For exact resumption of the masks,
pass a ``generator`` and save its ``get_state()`` beside the model.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

from hdetach.nn.options import Option

STREAMS = "_own_mask_streams"  # the attribute holding a module's own streams, per device


def check_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def stream_seed(weights: list[Tensor], device: torch.device) -> int:
    """The seed of a module's own stream on ``device``: a hash of torch's initial seed, the
    device and the bytes of ``weights`` (read only where they are plain values; under a
    torch.func transform or while torch.compile traces the weights are stand-ins)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(torch.initial_seed().to_bytes(8, "little"))
    digest.update(str(device).encode())
    if not torch.compiler.is_compiling():
        for w in weights:
            if w.device.type != "meta" and not is_functorch_wrapped_tensor(w):
                digest.update(w.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return int.from_bytes(digest.digest(), "little") >> 1  # manual_seed takes < 2**63


class OwnMaskStream:
    """Mixed into ``hdetach.LSTM`` and ``LSTMCell``: the ``generator`` option and the
    module's own stream where it is None. ``_stream_weights`` names the weights that seed it."""

    generator = Option(check_generator)

    def _stream_weights(self) -> list[Tensor]:
        raise NotImplementedError

    def _mask_generator(self, device: torch.device) -> torch.Generator:
        """The generator this module's masks on ``device`` are drawn from."""
        if self.generator is not None:
            return self.generator
        own = self.__dict__.setdefault(STREAMS, {})
        key = str(device)
        if key not in own:
            seed = stream_seed(self._stream_weights(), device)
            own[key] = torch.Generator(device=device).manual_seed(seed)
        return own[key]

    def __getstate__(self) -> dict:
        # Generators are program state (and not loadable with weights_only=True).
        state = dict(super().__getstate__())  # torch.nn.LSTM's drops its weak references
        state.pop(STREAMS, None)
        state["_generator"] = None
        return state
