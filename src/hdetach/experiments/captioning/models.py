"""Show & Tell (Vinyals et al. 2015) and Show, Attend & Tell (Xu et al. 2015) decoders.

Both step an ``hdetach.LSTMCell`` (no biases) through the caption. h-detach: at each
training step, with probability ``lstm.p_detach`` (one draw for the batch, by the cell,
from torch's global generator), h_{t-1} enters the LSTM gates as a constant for autograd. In Show,
Attend & Tell the attention is computed from h_{t-1} *before* that cut: only the path
from h_{t-1} into the gates is blocked, the attention's gradient path stays.

Both share the decoding interface used by ``decode``::

    state, memory = model.start(images)        # images: the model's feature tensor
    logits, state = model.step(words, state, memory)   # words (B,) -> logits (B, V)

state and memory are tuples of tensors whose first dimension is the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import hdetach
from hdetach.experiments.captioning.options import MODELS


@dataclass
class DecoderSizes:
    vocab: int
    feature_dim: int  # C of the image features
    embed: int = 512
    hidden: int = 512
    attention: int = 512
    dropout: float = 0.5


class CaptionDecoder(nn.Module):
    """What both decoders share: word embedding, the LSTM cell, the output layer, the
    h-detach draw and teacher forcing."""

    uses_regions: bool  # True: reads the (B, R, C) region map; False: the (B, C) vector

    def __init__(self, sizes: DecoderSizes, lstm_input: int, p_detach: float):
        super().__init__()
        self.embed = nn.Embedding(sizes.vocab, sizes.embed)
        # The cell draws the h-detach decision itself at each call: one per step for the
        # batch, only in training with grad on. The training loop sets p_detach each epoch.
        self.lstm = hdetach.LSTMCell(lstm_input, sizes.hidden, bias=False, p_detach=p_detach)
        self.dropout = nn.Dropout(sizes.dropout)
        self.out = nn.Linear(sizes.hidden, sizes.vocab)

    def forward(self, batch) -> torch.Tensor:
        """Teacher forcing: ``batch.images`` (I, ...) features, ``batch.inputs`` (B, L) word
        ids starting with <start>, ``batch.image_of`` (B,) each caption's image row
        -> logits (B, L, V) predicting the next word at every position."""
        state, memory = self.start(batch.images)
        state = tuple(s[batch.image_of] for s in state)
        memory = tuple(m[batch.image_of] for m in memory)
        logits = []
        for t in range(batch.inputs.shape[1]):
            step_logits, state = self.step(batch.inputs[:, t], state, memory)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)


class ShowTell(CaptionDecoder):
    """The projected image vector is the LSTM's first input; then the caption's words."""

    uses_regions = False

    def __init__(self, sizes: DecoderSizes, p_detach: float = 0.0):
        super().__init__(sizes, sizes.embed, p_detach)
        self.project = nn.Linear(sizes.feature_dim, sizes.embed)

    def start(self, images: torch.Tensor) -> tuple[tuple, tuple]:
        """images (B, C) -> the state after reading the image; no memory."""
        h, c = self.lstm(self.dropout(self.project(images)))
        return (h, c), ()

    def step(self, words: torch.Tensor, state: tuple, memory: tuple) -> tuple[torch.Tensor, tuple]:
        h, c = self.lstm(self.dropout(self.embed(words)), state)
        return self.out(self.dropout(h)), (h, c)


class SoftAttention(nn.Module):
    """Additive attention over R regions: weights softmax(w . tanh(W_a a_i + W_h h))."""

    def __init__(self, feature_dim: int, hidden: int, size: int):
        super().__init__()
        self.keys = nn.Linear(feature_dim, size)
        self.query = nn.Linear(hidden, size)
        self.score = nn.Linear(size, 1)

    def forward(self, regions, keys, h) -> tuple[torch.Tensor, torch.Tensor]:
        """regions (B, R, C), keys (B, R, A), h (B, H) -> context (B, C), weights (B, R)."""
        weights = self.score(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(-1).softmax(-1)
        return (weights.unsqueeze(-1) * regions).sum(1), weights


class ShowAttendTell(CaptionDecoder):
    """At every step a gated soft-attention context over the regions, computed from the
    un-detached h_{t-1}, joins the word embedding as the LSTM's input. The initial state
    comes from the mean region vector."""

    uses_regions = True

    def __init__(self, sizes: DecoderSizes, p_detach: float = 0.0):
        super().__init__(sizes, sizes.embed + sizes.feature_dim, p_detach)
        self.attention = SoftAttention(sizes.feature_dim, sizes.hidden, sizes.attention)
        self.gate = nn.Linear(sizes.hidden, sizes.feature_dim)
        self.init_h = nn.Linear(sizes.feature_dim, sizes.hidden)
        self.init_c = nn.Linear(sizes.feature_dim, sizes.hidden)

    def start(self, images: torch.Tensor) -> tuple[tuple, tuple]:
        """images (B, R, C) -> initial (h, c) and memory (regions, attention keys)."""
        mean = images.mean(1)
        state = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        return state, (images, self.attention.keys(images))

    def step(self, words: torch.Tensor, state: tuple, memory: tuple) -> tuple[torch.Tensor, tuple]:
        h_prev, c_prev = state
        regions, keys = memory
        # The attention reads h_{t-1} before any detach: h-detach only cuts the gates' path.
        context, _ = self.attention(regions, keys, h_prev)
        context = torch.sigmoid(self.gate(h_prev)) * context
        x = torch.cat([self.dropout(self.embed(words)), context], dim=-1)
        h, c = self.lstm(x, (h_prev, c_prev))
        return self.out(self.dropout(h)), (h, c)


def make_decoder(kind: str, sizes: DecoderSizes, p_detach: float) -> CaptionDecoder:
    if kind == "showtell":
        return ShowTell(sizes, p_detach)
    if kind == "attend":
        return ShowAttendTell(sizes, p_detach)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {kind!r}")
