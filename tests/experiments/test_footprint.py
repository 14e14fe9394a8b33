"""The memory bound behind the refusal of sizes no machine holds: it must be a lower
bound, or it would refuse runs that fit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hdetach.experiments.config import Config, ConfigError, resolve
from hdetach.experiments.footprint import GIB, lower_bounds

# One training step of a copying run in a fresh process: the growth of its peak resident
# memory over the step (the model, data and imports come before it), in bytes.
STEP_PEAK = """
import json, resource, sys, torch
from hdetach.experiments.config import Config, resolve
from hdetach.experiments.session import open_run
from hdetach.experiments.train import forward_backward
torch.set_num_threads(1)
cfg = resolve(Config(**json.loads(sys.argv[1])))
run = open_run(cfg, None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
forward_backward([run], [])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(after - before)
"""


@pytest.mark.parametrize("p_detach", [0.0, 0.25])
def test_the_activation_bound_is_below_what_a_training_step_takes(tmp_path, p_detach):
    fields = dict(
        task="copy", T=500, hidden_size=256, batch_size=100, n_train=200, n_val=100,
        epochs=1, steps_per_epoch=1, p_detach=p_detach, run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    bound = lower_bounds(resolve(Config(**fields)).to_dict(), 520)["activations"]
    assert bound > 250 * 2**20  # large enough to stand out of the allocator's noise
    done = subprocess.run(
        [sys.executable, "-c", STEP_PEAK, json.dumps(fields)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= bound


def test_sizes_of_the_papers_experiments_pass():
    for task, T in (("copy", 300), ("mnist", None), ("adding", 750)):
        resolve(Config(task=task, T=T, run_dir="unused"))
    with pytest.raises(ConfigError, match="more than the"):
        resolve(Config(task="copy", hidden_size=2**20, run_dir="unused"))
    assert lower_bounds(resolve(Config(run_dir="unused")).to_dict(), 120)["model"] < GIB
