"""A captioning run's own settings, torch-free: they are options of ``hdetach caption
train`` (whose parser is built without torch) and the ``task_options`` of its config."""

from __future__ import annotations

from dataclasses import dataclass

from hdetach.experiments.options import option

MODELS = ("showtell", "attend")  # Show & Tell, Show, Attend & Tell (``models``)
MAX_WORDS = 16  # captions are cut to this many words
MIN_COUNT = 5  # a word enters the vocabulary when seen more than this many times


@dataclass
class CaptionOptions:
    """The captioning settings of a run (stored in its config as ``task_options``); each
    field is also an option of ``hdetach caption train``."""

    model: str = option("showtell", "showtell or attend (Show, Attend & Tell)")
    features: str | None = option(None, "the feature store (default DATA_DIR/features)")
    embed_size: int = option(512, "word embedding size")
    attention_size: int = option(512, "attention layer size")
    dropout: float = option(0.5, "dropout")
    min_count: int = option(MIN_COUNT, "a word is in the vocabulary when seen more than this often")
    max_words: int = option(MAX_WORDS, "captions cut to this many words")
    captions_per_image: int = option(5, "captions per image in a minibatch")
    val_beam: int = option(1, "beam size of the validation decoding (1: greedy)")
    standardize: bool = option(
        False, "features to zero mean, unit variance per channel (training-set statistics)"
    )
