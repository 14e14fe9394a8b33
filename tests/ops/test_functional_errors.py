"""The functional API refuses bad arguments with a clear error before any work.

Tensors that disagree (shapes, dtypes, devices) raise RuntimeError, as torch's own ops
do, torch.lstm among them; the options, the packed layout and the masks, hdetach's own
arguments, ValueError or TypeError.
"""

from __future__ import annotations

import pytest
import torch

from hdetach.functional import lstm, lstm_layer, lstm_recurrence, reverse_sequences

T, B, H = 4, 3, 2


def args(**override):
    base = {
        "gates_x": torch.randn(T, B, 4 * H),
        "h0": torch.zeros(B, H),
        "c0": torch.zeros(B, H),
        "weight_hh": torch.randn(4 * H, H),
    }
    base.update(override)
    return base


@pytest.mark.parametrize(
    "override,error,message",
    [
        ({"gates_x": torch.randn(T, 4 * H)}, ValueError, "gates_x must have shape"),
        ({"gates_x": torch.randn(T, B, 7)}, RuntimeError, r"\(T, B, 4H\)"),
        ({"h0": torch.zeros(B, H + 1)}, RuntimeError, "h0 must have shape"),
        ({"c0": torch.zeros(B + 1, H)}, RuntimeError, "c0 must have shape"),
        ({"weight_hh": torch.randn(4 * H, H + 1)}, RuntimeError, "weight_hh must have shape"),
        ({"h0": torch.zeros(B, H, dtype=torch.float64)}, RuntimeError, "h0 must be torch.float32"),
        ({"weight_hh": torch.randn(4 * H, H, device="meta")}, RuntimeError, "weight_hh must be"),
        ({"detach_mask": torch.zeros(T, dtype=torch.int64)}, TypeError, "torch.bool"),
        ({"detach_mask": torch.zeros(T + 1, dtype=torch.bool)}, ValueError, "must have shape"),
        ({"detach_mask": torch.zeros(T, dtype=torch.bool, device="meta")}, ValueError, "on cpu"),
        ({"detach_path": "both"}, ValueError, "detach_path must be one of"),
        ({"batch_sizes": [3, 3, 2]}, ValueError, "one entry per step"),
        ({"batch_sizes": [3, 2, 3, 1]}, ValueError, "non-increasing"),
        ({"batch_sizes": [2, 2, 1, 1]}, ValueError, "start at the batch size"),
        ({"backend": "cudnn"}, ValueError, "backend must be one of"),
    ],
)
def test_lstm_recurrence_bad_arguments(override, error, message):
    with pytest.raises(error, match=message):
        lstm_recurrence(**args(**override))


def test_lstm_layer_bad_arguments():
    x = torch.randn(T, B, 5)
    with pytest.raises(RuntimeError, match="weight_ih.shape"):
        lstm_layer(
            x, torch.zeros(B, H), torch.zeros(B, H), torch.randn(4 * H, 6), torch.randn(4 * H, H)
        )
    with pytest.raises(ValueError, match="both be given"):
        lstm_layer(
            x,
            torch.zeros(B, H),
            torch.zeros(B, H),
            torch.randn(4 * H, 5),
            torch.randn(4 * H, H),
            torch.zeros(4 * H),
        )


def test_lstm_bad_weights_and_masks():
    layer = [torch.randn(4 * H, 5), torch.randn(4 * H, H)]
    hx = (torch.zeros(2, B, H), torch.zeros(2, B, H))
    with pytest.raises(ValueError, match="weights must hold"):
        lstm(torch.randn(T, B, 5), hx, [layer])
    with pytest.raises(ValueError, match="detach_masks must hold"):
        lstm(torch.randn(T, B, 5), (hx[0][:1], hx[1][:1]), [layer], detach_masks=[None, None])
    # torch.nn.LSTM's check of the input's dtype against the first weight, and its type
    with pytest.raises(ValueError, match="dtype of the first layer's weight_ih, torch.float32"):
        lstm(torch.randn(T, B, 5, dtype=torch.float64), (hx[0][:1], hx[1][:1]), [layer])


def test_reverse_sequences_reverses_within_each_length():
    x = torch.arange(4 * 3).view(4, 3)  # (T, B): value = 3 t + b
    reversed_x = reverse_sequences(x, [3, 2, 2, 1])  # lengths 4, 3, 1
    assert reversed_x[:, 0].tolist() == [9, 6, 3, 0]
    assert reversed_x[:, 1].tolist() == [7, 4, 1, 10]
    assert reversed_x[:, 2].tolist() == [2, 5, 8, 11]
    assert torch.equal(reverse_sequences(reversed_x, [3, 2, 2, 1]), x)
