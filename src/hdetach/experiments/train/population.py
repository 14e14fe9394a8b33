"""Population training: runs that differ only in per-run settings (seed, detach
probability, optimizer, learning rate, clipping) trained together in one process.

Each step's forward pass runs every member's LSTM as one ``hdetach.PopulationLSTM`` (one
batched computation over the members' own modules: ``PopulationForward``). Everything
else is the ordinary training loop's: one backward pass of the sum of the members'
losses (members share no parameter, so each gets exactly its own gradient), and per
member minibatches, clipping, divergence, optimizer step, evaluations, checkpoints,
summary. Each member writes an
ordinary run directory, and its results are those of the same run trained alone (on the
CPU, bitwise, with the same threads: the fused backend does each member's products in
its lone twin's shapes and order): member k draws its detach masks from a generator of
its own that starts where its lone twin's global generator would, and its checkpoint
saves that generator as the global one, so ``hdetach train --resume`` continues it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments.config import Config, ConfigError, flag
from hdetach.experiments.run.session import TrainingRun, build_run, run_config
from hdetach.experiments.tasks.registry import TRAIN_TASKS
from hdetach.experiments.train.loop import Batch, Callback, train_runs
from hdetach.nn.population import PopulationLSTM
from hdetach.rng import rng_state

__all__ = ["MAY_DIFFER", "check_member", "check_members", "shared_settings", "train_population"]

# What members may differ in: settings of each member's own data, optimizer and
# schedule of p that leave the batched computation's shapes alone. Everything else
# (task, sizes, layers, batch, steps, evaluations, detach options, backend, device) is shared.
MAY_DIFFER = (
    "seed",
    "p_detach",
    "anneal_epochs",
    "optimizer",
    "lr",
    "clip",
    "clip_value",
    "perm_seed",
    "perm_checksum",
    "n_train",
    "n_val",
    "n_test",
    "eval_batch_size",
    "run_dir",
)


def shared_settings(cfg: Config) -> dict[str, Any]:
    """The options of a resolved config that every member of its population must share."""
    return {k: v for k, v in cfg.to_dict().items() if k not in MAY_DIFFER}


def check_member(cfg: Config) -> None:
    """Refuse, in one line, a run that population training cannot train."""
    if cfg.task not in TRAIN_TASKS:
        raise ConfigError(
            f"population training takes the sequence tasks ({', '.join(TRAIN_TASKS)}); "
            f"got {cfg.task}"
        )
    if cfg.track_gradients:
        raise ConfigError(
            "population training does not track gradients; drop --track-gradients "
            "or train the run alone"
        )


def check_members(cfgs: Sequence[Config], steps: Sequence[int]) -> None:
    """Refuse, in one line naming the option, members that cannot train together:
    ``cfgs`` resolved, ``steps`` the step each one starts from."""
    if not cfgs:
        raise ConfigError("a population needs at least one member")
    for cfg in cfgs:
        check_member(cfg)
    first = shared_settings(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], start=1):
        for name, value in shared_settings(cfg).items():
            if value != first[name]:
                raise ConfigError(
                    f"population members must share {flag(name)}: member 0 has "
                    f"{first[name]!r}, member {k} has {value!r}"
                )
    if len(set(steps)) > 1:
        raise ConfigError(
            f"population members must resume from the same step; they are at {sorted(set(steps))}"
        )
    dirs = [str(Path(cfg.run_dir).resolve()) for cfg in cfgs]
    if len(set(dirs)) < len(dirs):
        raise ConfigError("population members must have distinct --run-dir folders")


def train_population(
    members: Sequence[Config | str | Path],
    progress: bool | None = False,
    callbacks: Sequence[Callback] = (),
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """Train runs together and return their summaries, as ``train`` returns each: a
    Config starts a fresh run, a folder resumes the run saved there (all at one step),
    trained to ``epochs`` in all if given.

    Every member is checked before any work (``check_members``). A member that diverges
    stops alone; Ctrl-C stops every member at a step boundary with its checkpoint.
    """
    for member in members:
        if isinstance(member, Config):
            check_member(member)  # before resolve(), which a caption config may not pass
    starts = [
        run_config(None, m, epochs) if isinstance(m, (str, Path)) else run_config(m, None)
        for m in members
    ]
    check_members(
        [cfg for cfg, _ in starts], [0 if ckpt is None else ckpt["step"] for _, ckpt in starts]
    )
    runs, generators = [], []
    try:
        for member, (cfg, ckpt) in zip(members, starts):
            runs.append(build_run(cfg, ckpt, Path(member if ckpt is not None else cfg.run_dir)))
            randomness = MemberRandomness(cfg.device)
            runs[-1].rng_source = randomness.state
            generators.append(randomness.generator)
        forward = PopulationForward(runs, generators)
    except BaseException:  # say a later member's folder is locked: let go of the others
        for run in runs:
            run.release()
        raise
    resumed = [ckpt is not None for _, ckpt in starts]
    return train_runs(runs, resumed, forward, progress, callbacks)


class MemberRandomness:
    """A member's random state, taken when its model has just been built (or restored):
    its own generator for the detach masks, and the other generators' states, which
    training leaves alone. ``state()`` is in ``hdetach.rng.rng_state``'s format, with
    the member's generator as the one a lone run draws its masks from."""

    def __init__(self, device: str) -> None:
        self.saved = rng_state()
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device)
        if self.device.type == "cpu":
            self.generator.set_state(torch.get_rng_state())
        else:
            self.index = self.device.index
            if self.index is None:
                self.index = torch.cuda.current_device()
            self.generator.set_state(torch.cuda.get_rng_state(self.index))

    def state(self) -> dict[str, Any]:
        state = dict(self.saved)
        if self.device.type == "cpu":
            state["torch"] = self.generator.get_state()
        else:
            state["cuda"] = list(state["cuda"])
            state["cuda"][self.index] = self.generator.get_state()
        return state


class PopulationForward:
    """The training loop's forward pass of the members still training, as one batched
    computation (a member that diverged is left out from then on).

    The members that detach at this step run as one ``PopulationLSTM``; the others run
    their own LSTM, exactly as they would alone (where nothing is detached ``"auto"``
    may pick torch's own kernel, which has no member dimension to batch over)."""

    def __init__(self, runs: list[TrainingRun], generators: list[torch.Generator]) -> None:
        self.generator_of = {id(run): g for run, g in zip(runs, generators)}
        self.populations: dict[tuple[int, ...], PopulationLSTM] = {}

    def _population(self, runs: list[TrainingRun]) -> PopulationLSTM:
        """These members' own LSTMs (not copies) as one population, kept while they last."""
        key = tuple(id(r) for r in runs)
        if key not in self.populations:
            lstm = PopulationLSTM.from_members([r.model.lstm for r in runs])
            lstm.generators = [self.generator_of[id(r)] for r in runs]
            self.populations[key] = lstm
        return self.populations[key]

    def _lstm_outputs(self, runs: list[TrainingRun], xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each member's LSTM output (B, L, hidden_size) for its input xs[k] (B, L, I)."""
        detaching = [k for k, run in enumerate(runs) if run.model.lstm.p_detach > 0]
        outputs = [
            None if k in detaching else run.model.lstm(xs[k])[0] for k, run in enumerate(runs)
        ]
        if detaching:
            lstm = self._population([runs[k] for k in detaching])
            out, _ = lstm(torch.stack([xs[k] for k in detaching]))  # (K, B, L, hidden_size)
            for k, out_k in zip(detaching, out):
                outputs[k] = out_k
        return outputs

    def __call__(
        self, runs: list[TrainingRun], batches: list[Batch]
    ) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        """Each member's loss and metrics: its LSTM's output, read out by its own model."""
        outputs = self._lstm_outputs(runs, [x for x, _ in batches])
        return [
            run.task.loss_and_metrics(run.model.read_out(out), y)
            for run, out, (_, y) in zip(runs, outputs, batches)
        ]
