"""The memory bound behind the refusal of sizes no machine holds: it must be a lower
bound, or it would refuse runs that fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import MNIST_DIR, needs_mnist

from hdetach.experiments.config import Config, ConfigError, resolve
from hdetach.experiments.footprint import GIB, lower_bounds
from hdetach.experiments.model import make_model
from hdetach.experiments.tasks.registry import TASKS

# The forward pass of one training step in a fresh process: how much its resident memory
# grows while the pass's results (the loss, and what autograd keeps for the backward)
# are alive, in bytes. glibc's malloc is told to map every large block afresh and give
# it back when freed, so that memory freed earlier cannot hide what the pass holds.
FORWARD_HOLDS = """
import json, os, sys, torch
from hdetach.experiments.config import Config, resolve
from hdetach.experiments.run.session import open_run
from hdetach.experiments.train.loop import training_batch
torch.set_num_threads(1)
cfg = resolve(Config(**json.loads(sys.argv[1])))
run = open_run(cfg, None)
x, y = training_batch(run)
page = os.sysconf("SC_PAGE_SIZE")
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * page
before = resident()
loss, _ = run.task.loss_and_metrics(run.model(x), y)
print(resident() - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm (Linux)")
@pytest.mark.parametrize("p_detach", [0.0, 0.25])
def test_the_activation_bound_is_below_what_a_training_step_holds(tmp_path, p_detach):
    fields = dict(
        task="copy", T=500, hidden_size=256, batch_size=100, n_train=200, n_val=100,
        epochs=1, steps_per_epoch=1, p_detach=p_detach, run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    bound = lower_bounds(resolve(Config(**fields)).to_dict())["activations"]
    assert bound > 250 * 2**20  # large enough to stand out of the allocator's noise
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", FORWARD_HOLDS, json.dumps(fields)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= bound


def test_sizes_of_the_papers_experiments_pass():
    for task, T in (("copy", 300), ("mnist", None), ("adding", 750)):
        resolve(Config(task=task, T=T, run_dir="unused"))
    with pytest.raises(ConfigError, match="more than the"):
        resolve(Config(task="copy", hidden_size=2**20, run_dir="unused"))
    assert lower_bounds(resolve(Config(run_dir="unused")).to_dict())["model"] < GIB


TASK_CASES = [
    pytest.param(dict(task="copy", T=5, input_encoding="scalar"), id="copy-scalar"),
    pytest.param(dict(task="copy", T=5, input_encoding="onehot"), id="copy-onehot"),
    pytest.param(dict(task="adding", T=5), id="adding"),
    pytest.param(
        dict(task="pmnist", data_dir=str(MNIST_DIR), n_test=10), id="pmnist", marks=needs_mnist
    ),
]


@pytest.mark.parametrize("fields", TASK_CASES)
@pytest.mark.parametrize("optimizer,copies", [("adam", 4), ("sgd", 3), ("rmsprop", 3)])
def test_the_model_bound_counts_the_real_models_weights(fields, optimizer, copies):
    """Exactly: the weights of the model the run builds, each with its gradient and the
    optimizer's state (Adam two moments, SGD's momentum and RMSprop one buffer)."""
    from hdetach.experiments.tasks.registry import make_task

    cfg = resolve(
        Config(
            **fields, hidden_size=16, num_layers=2, optimizer=optimizer, n_train=10,
            n_val=10, run_dir="unused",
        )
    )  # fmt: skip
    task = make_task(cfg)
    weights = sum(p.numel() for p in make_model(cfg, task).parameters())
    assert lower_bounds(cfg.to_dict())["model"] == copies * weights * 4
    x, _ = task.batch("train", torch.arange(2))
    assert x.shape[1] == TASKS[cfg.task].shape(cfg.to_dict())[0]  # the length the activations count
