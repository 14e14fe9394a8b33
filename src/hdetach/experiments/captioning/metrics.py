"""Caption metrics through pycocoevalcap (the COCO caption evaluation toolkit), and the
image-blind baseline.

The toolkit's PTB tokenizer and METEOR run on Java. Where ``java`` is missing, captions
are tokenized by a plain lowercase/punctuation split instead, METEOR (and SPICE) are
left out, and the result says so under "notes".
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections import Counter

from hdetach.experiments.data.download import DataError

PUNCTUATION = re.compile(r"[^\w\s]")  # what the PTB tokenizer's caption cleanup removes
BLIND_CANDIDATES = 50  # the most frequent training captions tried as the constant caption


def require_toolkit() -> None:
    """A clear error, before any work, where the COCO caption toolkit is not installed."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise DataError(
            "captioning metrics need the COCO caption toolkit: pip install pycocoevalcap"
        ) from None


def java_available() -> bool:
    return shutil.which("java") is not None


def _simple_tokenize(captions: dict) -> dict:
    return {
        k: [" ".join(PUNCTUATION.sub(" ", c.lower()).split()) for c in v]
        for k, v in captions.items()
    }


def _scorers(java: bool, spice: bool) -> list:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scorers = [(Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"])]
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append((Meteor(), ["METEOR"]))
    scorers += [(Rouge(), ["ROUGE-L"]), (Cider(), ["CIDEr"])]
    if java and spice:
        from pycocoevalcap.spice.spice import Spice

        scorers.append((Spice(), ["SPICE"]))
    return scorers


def score_captions(refs: dict[int, list[str]], preds: dict[int, str], spice: bool = False) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE if asked) of ``preds`` against
    ``refs`` (raw captions by image id, the same ids in both), as the toolkit computes them.
    Returns {"metrics": {name: value}, "images": n, "notes": [...]}."""
    if set(refs) != set(preds):
        missing = sorted(set(refs) ^ set(preds))
        raise ValueError(
            f"predictions and references differ in {len(missing)} image ids, e.g. {missing[0]}"
        )
    java = java_available()
    gts = {i: [{"caption": c} for c in refs[i]] for i in refs}
    res = {i: [{"caption": preds[i]}] for i in refs}
    notes = []
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    else:
        gts = _simple_tokenize({i: [d["caption"] for d in v] for i, v in gts.items()})
        res = _simple_tokenize({i: [d["caption"] for d in v] for i, v in res.items()})
        notes.append(
            "java not found: BLEU, ROUGE-L and CIDEr use a plain tokenizer instead of the PTB "
            "tokenizer; METEOR and SPICE not computed"
        )
    metrics = {}
    for scorer, names in _scorers(java, spice):
        with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its n-gram counts
            score, _ = scorer.compute_score(gts, res)
        values = score if isinstance(score, list) else [score]
        metrics.update({n: float(v) for n, v in zip(names, values)})
    return {"metrics": metrics, "images": len(refs), "notes": notes}


def cider(refs: dict[int, list[str]], preds: dict[int, str]) -> float:
    """CIDEr-D of already tokenized captions (space-separated words), e.g. for validation,
    where the references are the split file's tokens: no tokenizer, no Java."""
    from pycocoevalcap.cider.cider import Cider

    return float(Cider().compute_score(refs, {i: [preds[i]] for i in refs})[0])


def image_blind_caption(train_captions: list[str], val_refs: dict[int, list[str]]) -> str:
    """The best caption that ignores the image: of the most frequent training captions,
    the one with the highest validation CIDEr when given for every image."""
    frequent = [c for c, _ in Counter(train_captions).most_common(BLIND_CANDIDATES)]
    return max(frequent, key=lambda c: cider(val_refs, dict.fromkeys(val_refs, c)))
