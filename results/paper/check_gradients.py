"""Do the campaign's models get the right gradient at the weights they have reached?

For every run of a study (its ``last.pt``), one minibatch of training data and one fixed
detach mask (drawn with the run's p; none at p = 0): the gradient of every parameter as
the campaign computes it (a p = 0 run's own LSTM, the ``auto`` backend; the p > 0 runs
together as one ``PopulationLSTM``, as ``--engine population`` trains them), against the
reference backend in float64 (autograd through a plain loop over time that blocks h_{t-1}
on the masked steps; every backend's tests are against it). The reference in float32
gives the size of float32 rounding at those weights.

The tests check this on random weights; this checks it where the campaign's runs are
(large recurrent weights, saturated gates, a collapsed model).

Usage: python results/paper/check_gradients.py RUN_FOLDER_OF_A_STUDY DATA_DIR > out.md
"""

from __future__ import annotations

import copy
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from hdetach import PopulationLSTM
from hdetach.experiments.config import Config
from hdetach.experiments.model import make_model
from hdetach.experiments.run.checkpoint import load_checkpoint
from hdetach.experiments.tasks.registry import make_task


def reference_gradients(run: dict, x, y, dtype):
    """Loss and {name: gradient} of the run's model in ``dtype`` on the reference backend:
    autograd through a plain loop over time, h_{t-1} entering as a constant on the masked
    steps (``hdetach.ops.reference``, the oracle every backend is tested against)."""
    model = copy.deepcopy(run["model"]).to(dtype)
    model.zero_grad(set_to_none=True)  # the copy carries the campaign's gradients
    model.lstm.backend = "reference"
    out, _ = model.lstm(x.to(dtype), detach_mask=run["mask"])
    loss, _ = run["task"].loss_and_metrics(model.read_out(out), y)
    loss.backward()
    return loss.item(), {k: p.grad.double() for k, p in model.named_parameters()}


def campaign_gradients(runs, x, y):
    """{run: (loss, {name: gradient})} as the campaign computes them."""
    results = {}
    detaching = [r for r in runs if r["cfg"].p_detach > 0]
    outputs = {id(r): r["model"].lstm(x)[0] for r in runs if r["cfg"].p_detach == 0}
    if detaching:
        population = PopulationLSTM.from_members([r["model"].lstm for r in detaching])
        masks = torch.stack([r["mask"] for r in detaching])
        out, _ = population(torch.stack([x] * len(detaching)), detach_mask=masks)
        outputs.update({id(r): out_k for r, out_k in zip(detaching, out)})
    losses = [r["task"].loss_and_metrics(r["model"].read_out(outputs[id(r)]), y)[0] for r in runs]
    torch.stack(losses).sum().backward()  # one graph; members share no parameter
    for r, loss in zip(runs, losses):
        grads = {k: p.grad.double() for k, p in r["model"].named_parameters()}
        results[id(r)] = (loss.item(), grads)
    return results


def worst_relative_error(grads, reference) -> float:
    return max(((grads[k] - g).norm() / g.norm()).item() for k, g in reference.items())


def main(study: Path, data_dir: str) -> None:
    torch.set_num_threads(1)
    runs = []
    for folder in sorted(p.parent for p in study.glob("*/last.pt")):
        ckpt = load_checkpoint(folder / "last.pt")
        cfg = Config(**{**ckpt["config"], "data_dir": data_dir})
        task = make_task(cfg)
        model = make_model(cfg, task)
        model.load_state_dict(ckpt["model"])
        model.train()
        steps = task.batch("train", torch.arange(1))[0].shape[1]
        mask = torch.rand(steps, generator=torch.Generator().manual_seed(0)) < cfg.p_detach
        runs.append(dict(folder=folder, step=ckpt["step"], cfg=cfg, task=task, model=model,
                         mask=mask))  # fmt: skip
    if not runs:
        sys.exit(f"{study}: no run with a last.pt checkpoint")
    x, y = runs[0]["task"].batch("train", torch.arange(100))
    measured = campaign_gradients(runs, x, y)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"Gradients of the `{study.name}` runs at their last checkpoints, {when}, one "
        f"thread, torch {torch.__version__} (`results/paper/check_gradients.py`).\n"
    )
    print("| run | step | detached steps | loss | gradient error, campaign | float32 reference |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        loss64, g64 = reference_gradients(r, x, y, torch.float64)
        _, g32 = reference_gradients(r, x, y, torch.float32)
        loss, grads = measured[id(r)]
        print(
            f"| {r['folder'].name} | {r['step']:,} | {int(r['mask'].sum())} of {len(r['mask'])} | "
            f"{loss:.6f} (float64 {loss64:.6f}) | {worst_relative_error(grads, g64):.1e} | "
            f"{worst_relative_error(g32, g64):.1e} |"
        )
    print(
        "\nGradient error: the largest, over the parameters, of |g - g64| / |g64|, with "
        "g64 the float64 reference's gradient, on one minibatch (the first 100 training "
        "examples); the same mask for every run of one p."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
