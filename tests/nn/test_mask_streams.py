"""Where the detach masks come from (hdetach.nn.masks): by default a stream of each
module's own, so that turning h-detach on, or converting a model, changes no other random
draw of the program (dropout, data order); a generator given instead; reproducible under
torch.manual_seed."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import hdetach
from hdetach.functional import draw_detach_masks


class Tagger(nn.Module):
    """Dropout inside the LSTM (between layers) and after it."""

    def __init__(self, lstm: nn.Module):
        super().__init__()
        self.lstm, self.drop, self.head = lstm, nn.Dropout(0.5), nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.drop(self.lstm(x)[0]))


def _lstm(cls=hdetach.LSTM, **options):
    return cls(4, 16, num_layers=2, dropout=0.5, **options)


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step; (its forward output, torch's generator state after it)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(x)
    out.square().mean().backward()
    optimizer.step()
    return out.detach(), torch.get_rng_state()


def test_changing_p_changes_no_other_random_draw():
    """p = 0, 0.25 and 0.9 from one seed: the same dropout, so the same forward values
    (one backend for all: bit for bit), and torch's generator in the same state after a
    step and after the next forward (whose weights the different gradients have moved)."""
    x = torch.randn(30, 3, 4)
    results = []
    for p in (0.0, 0.25, 0.9):
        torch.manual_seed(0)
        model = Tagger(_lstm(p_detach=p, backend="fused"))
        out, state = _step(model, x)
        model(x)
        results.append((out, state, torch.get_rng_state()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_a_converted_program_draws_what_the_unconverted_one_draws():
    """Converting draws nothing; training at p = 0.25 sees the unconverted program's
    dropout draws, and leaves torch's generator where the unconverted program does."""
    x = torch.randn(30, 3, 4)
    torch.manual_seed(0)
    plain = Tagger(_lstm(nn.LSTM))
    plain_out, plain_state = _step(plain, x)
    torch.manual_seed(0)
    model = Tagger(_lstm(nn.LSTM))
    before = torch.get_rng_state()
    model = hdetach.convert(model, p_detach=0.25)
    assert torch.equal(torch.get_rng_state(), before)
    out, state = _step(model, x)
    torch.testing.assert_close(out, plain_out)  # forward values: torch's, same dropout
    assert torch.equal(state, plain_state)


def test_a_cell_loop_draws_nothing_from_torch():
    torch.manual_seed(0)
    cell, x = hdetach.LSTMCell(4, 8, p_detach=0.5), torch.randn(20, 3, 4)
    state = (torch.zeros(3, 8), torch.zeros(3, 8))
    before = torch.get_rng_state()
    for t in range(20):
        state = cell(x[t], state)
    state[0].sum().backward()
    assert torch.equal(torch.get_rng_state(), before)


def _drawn(lstm: hdetach.LSTM, steps: int = 200) -> torch.Tensor:
    """The next masks the module draws for ``steps`` steps, (L * D, T)."""
    return torch.stack(lstm._detach_masks(None, steps, 1, True, torch.device("cpu"), None))


def test_the_own_stream_is_reproducible_under_manual_seed_and_distinct_per_module():
    def program(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        a, b = (hdetach.LSTM(4, 16, p_detach=0.5) for _ in range(2))
        return [_drawn(a), _drawn(a), _drawn(b)]

    first, again, other_seed = program(3), program(3), program(4)
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    assert not torch.equal(first[0], first[1])  # the stream goes on from draw to draw
    assert not torch.equal(first[0], first[2])  # two modules: two streams
    assert not torch.equal(first[0], other_seed[0])  # another seed: another stream


def test_a_generator_given_is_the_one_drawn_from_and_is_checked():
    lstm = hdetach.LSTM(4, 16, p_detach=0.5, generator=torch.Generator().manual_seed(7))
    expected = torch.rand(200, generator=torch.Generator().manual_seed(7)) < 0.5
    assert torch.equal(_drawn(lstm)[0], expected)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        hdetach.LSTM(4, 16, generator=7)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        hdetach.LSTMCell(4, 16).generator = "cpu"
    with pytest.raises(ValueError, match="give a generator of the input's device"):
        draw_detach_masks(0.5, (3,), device="meta", generator=torch.Generator())
    shared = torch.Generator().manual_seed(1)
    model = hdetach.convert(Tagger(_lstm(nn.LSTM)), generator=shared)
    assert model.lstm.generator is shared


def test_generators_are_program_state_not_saved_with_the_module():
    """A module pickles (and loads with weights_only=True) without its generator or
    stream; a copy starts its own stream anew."""
    lstm = hdetach.LSTM(4, 16, p_detach=0.5, generator=torch.Generator())
    _drawn(lstm)
    lstm.generator = None
    _drawn(lstm)  # its own stream now exists
    buffer = io.BytesIO()
    torch.save(lstm, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(hdetach.SAFE_GLOBALS):  # another test may clear them
        loaded = torch.load(buffer, weights_only=True)
    assert loaded.generator is None and copy.deepcopy(lstm).generator is None
    assert torch.equal(_drawn(loaded), _drawn(copy.deepcopy(loaded)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.7, 0.999999])
def test_the_cells_batch_decision_is_draw_detach_masks_decision(p, dtype):
    """The cell reads its batch decision off the uniform as a Python float (fast path);
    from the same generator state it decides what ``draw_detach_masks`` decides, at p not
    representable in the draw's dtype too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the dtype torch.rand draws in
    try:
        cell = hdetach.LSTMCell(3, 4, p_detach=p, generator=torch.Generator().manual_seed(5))
        generator = torch.Generator().manual_seed(5)
        x = torch.randn(2, 3)
        decided = [cell._draw(x) for _ in range(3000)]
        drawn = [bool(draw_detach_masks(p, (), generator=generator)) for _ in range(3000)]
    finally:
        torch.set_default_dtype(previous)
    assert all(isinstance(d, bool) for d in decided) and decided == drawn
    # and a generator of another device is refused there too, before anything is drawn
    cell = hdetach.LSTMCell(3, 4, generator=torch.Generator(), device="meta")
    with pytest.raises(ValueError, match="give a generator of the input's device"):
        cell._draw(torch.empty(2, 3, device="meta"))
