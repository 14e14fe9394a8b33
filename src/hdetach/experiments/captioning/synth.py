"""A generated captioning data set in the real formats, so every command runs on it unchanged.

Each image is a scene of coloured shapes on a grey background: one object somewhere
(left, right, top, bottom, centre), two or three alike objects, or two different objects
side by side. Five captions per image are drawn from a small grammar with several
phrasings, so a good caption needs the image: its shapes, colours, sizes, count and layout.
Writes ``dataset_coco.json`` (Karpathy format), ``images/synth/*.jpg`` and
``annotations/captions_{train,val,test}.json`` (COCO format).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hdetach.experiments.captioning.data import SPLITS, coco_annotations, read_karpathy

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 180),
}
SIZES = {"small": (10, 14), "large": (24, 32)}  # radius range in pixels on a 224 canvas
PLACES = {"left": (0.22, 0.5), "right": (0.78, 0.5), "top": (0.5, 0.22), "bottom": (0.5, 0.78)}
PLACES["center"] = (0.5, 0.5)
NUMBERS = {2: "two", 3: "three"}
CANVAS = 224
IMAGE_FOLDER = "synth"


def _one(obj: dict, article: bool = True) -> str:
    words = [obj["size"], obj["colour"], obj["shape"]]
    return " ".join((["a"] if article else []) + words)


def _captions(scene: dict, rng: random.Random) -> list[str]:
    """Five different phrasings of the scene, drawn from its grammar."""
    objs, kind = scene["objects"], scene["kind"]
    if kind == "single":
        o, place = objs[0], scene["place"]
        where = "in the center" if place == "center" else f"on the {place}"
        options = [
            f"{_one(o)} {where}",
            f"there is {_one(o)} {where}",
            f"{_one(o)} {where} of the picture",
            f"a {o['colour']} {o['shape']} {where}",
            f"an image of {_one(o)}",
            f"{_one(o)} on a grey background",
            f"a {o['size']} {o['shape']} {where}",
        ]
    elif kind == "group":
        o, n = objs[0], NUMBERS[len(objs)]
        plural = o["shape"] + "s"
        options = [
            f"{n} {o['size']} {o['colour']} {plural}",
            f"there are {n} {o['colour']} {plural}",
            f"{n} {o['colour']} {plural} on a grey background",
            f"a picture of {n} {o['size']} {plural}",
            f"some {o['colour']} {plural}",
            f"{n} {plural} of the same colour",
        ]
    else:
        a, b = objs
        options = [
            f"{_one(a)} and {_one(b)}",
            f"{_one(a)} to the left of {_one(b)}",
            f"{_one(b)} to the right of {_one(a)}",
            f"a {a['colour']} {a['shape']} next to a {b['colour']} {b['shape']}",
            f"there is {_one(a)} and {_one(b)}",
            f"two shapes : a {a['colour']} {a['shape']} and a {b['colour']} {b['shape']}",
        ]
    return rng.sample(options, 5)


def _scene(rng: random.Random) -> dict:
    def obj() -> dict:
        return {
            "shape": rng.choice(SHAPES),
            "colour": rng.choice(list(COLOURS)),
            "size": rng.choice(list(SIZES)),
        }

    kind = rng.choice(("single", "group", "pair"))
    if kind == "single":
        place = rng.choice(list(PLACES))
        return {"kind": kind, "objects": [obj()], "place": place, "centres": [PLACES[place]]}
    if kind == "group":
        o, n = obj(), rng.choice((2, 3))
        columns = rng.sample([0.2, 0.5, 0.8], n)  # apart, so the objects never overlap
        centres = [(x, rng.uniform(0.25, 0.75)) for x in columns]
        return {"kind": kind, "objects": [o] * n, "centres": centres}
    a, b = obj(), obj()
    while (a["shape"], a["colour"]) == (b["shape"], b["colour"]):
        b = obj()
    return {"kind": kind, "objects": [a, b], "centres": [(0.25, 0.5), (0.75, 0.5)]}


def _draw(scene: dict, rng: random.Random):
    from PIL import Image as PILImage
    from PIL import ImageDraw

    grey = rng.randint(90, 170)
    img = PILImage.new("RGB", (CANVAS, CANVAS), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    for o, (cx, cy) in zip(scene["objects"], scene["centres"]):
        r = rng.uniform(*SIZES[o["size"]])
        x = cx * CANVAS + rng.uniform(-8, 8)
        y = cy * CANVAS + rng.uniform(-8, 8)
        colour = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[o["colour"]])
        box = (x - r, y - r, x + r, y + r)
        if o["shape"] == "circle":
            draw.ellipse(box, fill=colour)
        elif o["shape"] == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    return img


def make_synthetic(out: str | Path, n_images: int, n_val: int, n_test: int, seed: int = 0) -> Path:
    """Write the data set into ``out``; returns the path of its Karpathy split file."""
    if n_val + n_test >= n_images:
        raise ValueError(
            f"--images ({n_images}) must exceed --val + --test ({n_val} + {n_test}): "
            "some images must be left for training"
        )
    out = Path(out)
    (out / "images" / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    entries = []
    for i in range(n_images):
        split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        scene = _scene(rng)
        filename = f"synth_{i:06d}.jpg"
        _draw(scene, rng).save(out / "images" / IMAGE_FOLDER / filename, quality=90)
        sentences = [{"tokens": c.split(), "raw": c} for c in _captions(scene, rng)]
        entries.append(
            {
                "filepath": IMAGE_FOLDER,
                "filename": filename,
                "cocoid": i + 1,
                "imgid": i,
                "split": split,
                "sentences": sentences,
            }
        )
    split_file = out / "dataset_coco.json"
    split_file.write_text(json.dumps({"dataset": "synth", "images": entries}))
    images = read_karpathy(split_file)
    (out / "annotations").mkdir(exist_ok=True)
    for split in SPLITS:
        anns = coco_annotations([im for im in images if im.split == split])
        (out / "annotations" / f"captions_{split}.json").write_text(json.dumps(anns))
    return split_file
