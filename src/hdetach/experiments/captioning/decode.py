"""Greedy and beam-search decoding for any model with ``start`` and ``step`` (see models).

Both return (B, L) word ids without <start>: at most ``max_len`` words, then <end>, then
<pad> (id 0) to the common length. Neither ever emits <pad> or <start> as a word.
"""

from __future__ import annotations

import torch

from hdetach.experiments.captioning.data import SPECIALS

PAD_ID, START_ID, END_ID = (SPECIALS.index(t) for t in ("<pad>", "<start>", "<end>"))


def _reorder(tensors: tuple, index: torch.Tensor) -> tuple:
    return tuple(t.index_select(0, index) for t in tensors)


def _allowed(scores: torch.Tensor, last: bool) -> torch.Tensor:
    """(B, V) scores with the words that cannot come next ruled out: <pad> and <start>,
    and after max_len words everything but <end>."""
    scores = scores.clone()
    scores[:, [PAD_ID, START_ID]] = float("-inf")
    if last:
        scores[:, :END_ID] = float("-inf")
        scores[:, END_ID + 1 :] = float("-inf")
    return scores


@torch.no_grad()
def greedy(model, images: torch.Tensor, max_len: int) -> torch.Tensor:
    """The most likely word at every step. images: the model's (B, ...) features."""
    state, memory = model.start(images)
    words = torch.full((images.shape[0],), START_ID, dtype=torch.long, device=images.device)
    done = torch.zeros_like(words, dtype=torch.bool)
    out = []
    for t in range(max_len + 1):  # max_len words, then <end>
        logits, state = model.step(words, state, memory)
        words = _allowed(logits, t == max_len).argmax(-1).masked_fill(done, PAD_ID)
        out.append(words)
        done |= words == END_ID
        if done.all():
            break
    return torch.stack(out, dim=1)


@torch.no_grad()
def beam_search(model, images: torch.Tensor, beam: int, max_len: int) -> torch.Tensor:
    """The highest total log-probability caption found keeping ``beam`` hypotheses per
    image (all images decoded together as B * beam rows)."""
    B, device = images.shape[0], images.device
    state, memory = model.start(images)
    rows = torch.arange(B, device=device).repeat_interleave(beam)  # row -> image
    state, memory = _reorder(state, rows), _reorder(memory, rows)
    # Only the first hypothesis is alive at the start, so the beams do not repeat it.
    scores = torch.full((B, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    words = torch.full((B * beam,), START_ID, dtype=torch.long, device=device)
    done = torch.zeros(B * beam, dtype=torch.bool, device=device)
    history = torch.empty(B * beam, 0, dtype=torch.long, device=device)
    for t in range(max_len + 1):
        logits, state = model.step(words, state, memory)
        logp = _allowed(logits.log_softmax(-1), t == max_len)
        # A finished hypothesis continues with <pad> at no cost, keeping its score.
        logp[done] = float("-inf")
        logp[done, PAD_ID] = 0.0
        V = logp.shape[-1]
        total = (scores.view(B, beam, 1) + logp.view(B, beam, V)).view(B, beam * V)
        scores, flat = total.topk(beam, dim=-1)
        origin = (flat // V + torch.arange(B, device=device).unsqueeze(1) * beam).view(-1)
        words = (flat % V).view(-1)
        history = torch.cat([history[origin], words.unsqueeze(1)], dim=1)
        state = _reorder(state, origin)
        done = done[origin] | (words == END_ID) | (words == PAD_ID)
        if done.all():
            break
    best = scores.argmax(-1) + torch.arange(B, device=device) * beam
    return history[best]


def decode(model, images: torch.Tensor, beam: int, max_len: int) -> torch.Tensor:
    """Greedy for ``beam == 1``, beam search otherwise."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1; got {beam}")
    return (
        greedy(model, images, max_len) if beam == 1 else beam_search(model, images, beam, max_len)
    )
