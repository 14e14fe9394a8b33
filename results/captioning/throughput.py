"""CPU throughput of the full-size captioning pipeline (the authors' sizes), for the
time estimates in docs/captioning.md. One thread; reports process (CPU) time per unit,
which a machine shared with other jobs inflates less than wall time.

    PYTHONPATH=src python results/captioning/throughput.py
"""

from __future__ import annotations

import json
import time

import torch

from hdetach.experiments.captioning.features import Backbone
from hdetach.experiments.captioning.models import DecoderSizes, make_decoder
from hdetach.experiments.captioning.task import CaptionBatch

VOCAB = 9487  # the Karpathy COCO vocabulary with words seen more than 5 times


def timed(fn, repeats: int) -> dict[str, float]:
    """Seconds per call of ``fn``, wall and process CPU, after one warm-up call."""
    fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return {
        "wall_s": (time.perf_counter() - wall) / repeats,
        "cpu_s": (time.process_time() - cpu) / repeats,
    }


def train_step_time(kind: str, feature_shape: tuple[int, ...]) -> dict[str, float]:
    """One Adam step of a full-size decoder on 10 images x 5 captions of 17 tokens."""
    model = make_decoder(kind, DecoderSizes(VOCAB, 2048), p_detach=0.25).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    image_of = torch.arange(10).repeat_interleave(5)
    batch = CaptionBatch(torch.randn(feature_shape), torch.randint(0, VOCAB, (50, 17)), image_of)
    target = torch.randint(0, VOCAB, (50, 17))

    def step():
        loss = torch.nn.functional.cross_entropy(model(batch).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, 3)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = Backbone("resnet152", "none", 14).eval()
    images = torch.randn(2, 3, 448, 448)
    per_batch = timed(lambda: net(images), 2)
    out = {"resnet152_448_per_image": {k: v / 2 for k, v in per_batch.items()}}
    out["showtell_512_train_step_10x5"] = train_step_time("showtell", (10, 2048))
    out["attend_512_train_step_10x5"] = train_step_time("attend", (10, 196, 2048))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
