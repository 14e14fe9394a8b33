"""Greedy and beam-search decoding."""

from __future__ import annotations

import math

import torch

from hdetach.experiments.captioning.decode import END_ID, PAD_ID, START_ID, beam_search, greedy
from hdetach.experiments.captioning.models import DecoderSizes, ShowAttendTell, ShowTell


def test_beam_of_one_is_greedy():
    torch.manual_seed(0)
    sizes = DecoderSizes(vocab=9, feature_dim=6, embed=5, hidden=8, attention=4, dropout=0.0)
    for model, shape in ((ShowTell(sizes), (5, 6)), (ShowAttendTell(sizes), (5, 4, 6))):
        images = torch.randn(shape)
        torch.testing.assert_close(
            beam_search(model.eval(), images, 1, 6), greedy(model, images, 6)
        )


class TableModel:
    """A model whose next-word probabilities depend only on the previous word."""

    A, B, C = 4, 5, 6

    def __init__(self):
        p = torch.full((7, 7), 1e-6)
        p[START_ID, [self.A, self.B]] = torch.tensor([0.6, 0.4])  # greedy takes A
        p[self.A, [self.C, END_ID]] = torch.tensor([0.5, 0.5])  # A is a poor start
        p[self.C, END_ID] = 1.0
        p[self.B, END_ID] = 1.0  # B then <end>: 0.4 in all
        self.logp = (p / p.sum(1, keepdim=True)).log()

    def start(self, images):
        return (torch.zeros(images.shape[0], 1),), ()

    def step(self, words, state, memory):
        return self.logp[words], state

    def score(self, seq: list[int]) -> float:
        prev, total = START_ID, 0.0
        for w in seq:
            if w == PAD_ID:
                break
            total, prev = total + self.logp[prev, w].item(), w
        return total


def test_beam_search_finds_a_likelier_caption_than_greedy():
    model, images = TableModel(), torch.zeros(2, 3)
    g, b = greedy(model, images, 4)[0].tolist(), beam_search(model, images, 2, 4)[0].tolist()
    assert g[:2] == [TableModel.A, TableModel.C] or g[:2] == [TableModel.A, END_ID]
    assert b[:2] == [TableModel.B, END_ID]
    assert model.score(b) > model.score(g)
    assert math.isclose(model.score(b), math.log(0.4), rel_tol=1e-3)


def test_captions_end_after_max_len_words():
    torch.manual_seed(0)
    sizes = DecoderSizes(vocab=9, feature_dim=6, embed=5, hidden=8, attention=4, dropout=0.0)
    model = ShowTell(sizes).eval()
    with torch.no_grad():
        model.out.bias[END_ID] = -100.0  # never chooses to stop
    images = torch.randn(3, 6)
    for ids in (greedy(model, images, 4), beam_search(model, images, 3, 4)):
        assert ids.shape == (3, 5) and (ids[:, 4] == END_ID).all() and (ids[:, :4] != END_ID).all()
