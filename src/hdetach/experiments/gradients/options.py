"""What the weight-scale study measures (``weight_scale``), torch-free: the options of
``hdetach analyze``, whose parser is built without torch."""

from __future__ import annotations

from dataclasses import dataclass

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # the factors of W_hh


@dataclass
class StudySettings:
    """What the study measures; the model and data are those of ``hdetach train``."""

    task: str = "copy"
    T: int = 100
    input_encoding: str = "scalar"
    hidden_size: int = 128
    batch_size: int = 100
    scales: tuple[float, ...] = SCALES
    seeds: int = 10
    first: int = 10  # K: the early steps whose share of the input gradient is measured
    end_steps: int = 10  # readout-at-every-step tasks: the loss of the last steps only
    # float64: in float32 the cell-path gradient that reaches the first steps across a
    # gap of 100 is lost to rounding (its share comes out ten orders of magnitude off).
    dtype: str = "float64"
