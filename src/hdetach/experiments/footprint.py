"""A run's memory, bounded from below before any work, so that ``config.resolve`` refuses
sizes the machine cannot hold in one line naming the options, instead of an allocation
traceback mid-run.

The bound counts only what a run must hold at once, in float32 (4 bytes):

* the model: every LSTM and read-out weight with its gradient and the optimizer's state
  (Adam: two moments; SGD with momentum and RMSprop: one buffer);
* one training step's activations: the LSTM's output, its cell states and its gates are
  all kept for the backward pass, at least 6 numbers per hidden unit, step, row and layer;
* the task's data where they are a large part (``Task.data_bytes``: the copying and
  adding tasks' fixed data; adding keeps whole sequences).

The task declares its shape and data (``tasks.definitions``); a task whose sizes only its
data tell (captioning's vocabulary and features) is not bounded. It is a lower bound: a
run it passes may still not fit, but a run it refuses cannot.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from hdetach.experiments.tasks.definitions import FLOAT_BYTES
from hdetach.experiments.tasks.registry import TASKS

GIB = 2**30
# Copies of each weight held at the optimizer's step: the weight, its gradient, the state.
COPIES = {"adam": 4, "sgd": 3, "rmsprop": 3}


def lower_bounds(d: dict[str, Any]) -> dict[str, int]:
    """Bytes a resolved sequence-task config (a dict of Config fields) needs at least:
    {"model", "activations", "data"}."""
    task = TASKS[d["task"]]
    length, inputs, outputs = task.shape(d)
    hidden, layers = d["hidden_size"], d["num_layers"]
    first = 4 * hidden * (inputs + hidden + 2)
    weights = first + (layers - 1) * 4 * hidden * (2 * hidden + 2) + outputs * (hidden + 1)
    return {
        "model": COPIES[d["optimizer"]] * weights * FLOAT_BYTES,
        "activations": 6 * length * d["batch_size"] * hidden * layers * FLOAT_BYTES,
        "data": task.data_bytes(d),
    }


def memory_of(device: str) -> int | None:
    """Total memory of the run's device in bytes (None where it cannot be read)."""
    try:
        if device.startswith("cuda"):
            return torch.cuda.get_device_properties(torch.device(device)).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError, AssertionError):
        return None


def shortfall(d: dict[str, Any]) -> str | None:
    """Why a resolved config cannot fit its device (the lower bound exceeds the device's
    total memory), naming the options behind the largest part; else None, and None for a
    task whose sizes only its data tell."""
    task = TASKS[d["task"]]
    shape = task.shape(d)
    total = memory_of(d["device"])
    if shape is None or total is None:
        return None
    needs = lower_bounds(d)
    if sum(needs.values()) <= total:
        return None
    blame = max(needs, key=needs.get)
    options = {
        "model": f"--hidden-size {d['hidden_size']} with --num-layers {d['num_layers']}",
        "activations": (
            f"--batch-size {d['batch_size']} x {shape[0]} steps"
            f"{' (--T ' + str(d['T']) + ')' if task.takes_T else ''}"
            f" x --hidden-size {d['hidden_size']} x --num-layers {d['num_layers']}"
        ),
        "data": f"--n-train {d['n_train']}, --n-val {d['n_val']} and --n-test {d['n_test']}",
    }[blame]
    return (
        f"{options} needs at least {sum(needs.values()) / GIB:.3g} GiB "
        f"({blame}: {needs[blame] / GIB:.3g} GiB), more than the {total / GIB:.3g} GiB of "
        f"{d['device']}; choose smaller sizes"
    )
