"""Independent oracles and comparison helpers shared by the tests.

The oracle below shares no code with the package: a per-example, per-position
Python loop that detaches with ``Tensor.detach()`` exactly where the mask says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

# The MNIST files the project's machines keep beside the repository; the tests that read
# them skip where they are absent (a clone elsewhere).
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST in {MNIST_DIR}")


def oracle_lstm(
    params: list[list[Tensor]],
    sequences: list[Tensor],
    h0: Tensor,
    c0: Tensor,
    masks: Tensor,
    detach_path: str,
    bidirectional: bool,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """A multi-layer (bi)LSTM run one example at a time.

    params: per layer and direction [w_ih, w_hh, b_ih, b_hh] (biases may be missing).
    sequences: B tensors (T_b, I). h0, c0: (L*D, B, H). masks: bool (L*D, T, B), where
    masks[k, t, b] detaches the state entering the step that processes position t.
    Returns per-example outputs (T_b, D*H) and h_n, c_n (L*D, B, H).
    """
    directions = 2 if bidirectional else 1
    layers = len(params) // directions
    outputs = []
    h_n = [[None] * len(sequences) for _ in params]
    c_n = [[None] * len(sequences) for _ in params]
    for b, sequence in enumerate(sequences):
        layer_input = sequence
        for layer in range(layers):
            per_direction = []
            for d in range(directions):
                k = layer * directions + d
                w_ih, w_hh, *bias = params[k]
                h, c = h0[k, b], c0[k, b]
                length = layer_input.shape[0]
                positions = range(length) if d == 0 else range(length - 1, -1, -1)
                out = [None] * length
                for t in positions:
                    h_in, c_in = h, c
                    if bool(masks[k, t, b]):
                        if detach_path == "h":
                            h_in = h.detach()
                        else:
                            c_in = c.detach()
                    z = w_ih @ layer_input[t] + w_hh @ h_in
                    if bias:
                        z = z + bias[0] + bias[1]
                    i, f, g, o = z.chunk(4)
                    c = torch.sigmoid(f) * c_in + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    out[t] = h
                per_direction.append(torch.stack(out))
                h_n[k][b], c_n[k][b] = h, c
            layer_input = torch.cat(per_direction, dim=-1)
        outputs.append(layer_input)
    return outputs, _stack_states(h_n), _stack_states(c_n)


def _stack_states(rows: list[list[Tensor]]) -> Tensor:
    return torch.stack([torch.stack(row) for row in rows])


def grads_of(loss: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def assert_all_close(actual: list[Tensor], expected: list[Tensor], names: list[str], **tol) -> None:
    assert len(actual) == len(expected) == len(names)
    for a, e, name in zip(actual, expected, names):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tol)


def oracle_lstm_projected(
    params: list[list[Tensor]],
    sequences: list[Tensor],
    h0: Tensor,
    c0: Tensor,
    masks: Tensor,
    detach_path: str,
    bidirectional: bool,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """``oracle_lstm`` for ``torch.nn.LSTM(proj_size=P)``: h_t = W_hr (o_t * tanh(c_t)).

    params: per layer and direction [w_ih, w_hh, b_ih, b_hh, w_hr]. h0 (L*D, B, P),
    c0 (L*D, B, H). Returns per-example outputs (T_b, D*P) and h_n (L*D, B, P), c_n.
    """
    directions = 2 if bidirectional else 1
    outputs = []
    h_n = [[None] * len(sequences) for _ in params]
    c_n = [[None] * len(sequences) for _ in params]
    for b, sequence in enumerate(sequences):
        layer_input = sequence
        for layer in range(len(params) // directions):
            per_direction = []
            for d in range(directions):
                k = layer * directions + d
                w_ih, w_hh, b_ih, b_hh, w_hr = params[k]
                h, c = h0[k, b], c0[k, b]
                length = layer_input.shape[0]
                out = [None] * length
                for t in range(length) if d == 0 else range(length - 1, -1, -1):
                    h_in, c_in = h, c
                    if bool(masks[k, t, b]):
                        h_in, c_in = (h.detach(), c) if detach_path == "h" else (h, c.detach())
                    i, f, g, o = (w_ih @ layer_input[t] + b_ih + w_hh @ h_in + b_hh).chunk(4)
                    c = torch.sigmoid(f) * c_in + torch.sigmoid(i) * torch.tanh(g)
                    h = w_hr @ (torch.sigmoid(o) * torch.tanh(c))
                    out[t] = h
                per_direction.append(torch.stack(out))
                h_n[k][b], c_n[k][b] = h, c
            layer_input = torch.cat(per_direction, dim=-1)
        outputs.append(layer_input)
    return outputs, _stack_states(h_n), _stack_states(c_n)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``hdetach`` with ``argv`` in this process -> (exit code, stdout, stderr)."""
    from hdetach.experiments.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def interrupt_at(monkeypatch, call: int, task_class: type | None = None) -> None:
    """A real Ctrl-C (SIGINT) while the training loop fetches its call-th minibatch (any
    split) of ``task_class`` (default: the copying task)."""
    import os
    import signal

    from hdetach.experiments.tasks import copying

    task_class = task_class or copying.CopyingTask
    original, calls = task_class.batch, [0]

    def interrupting_batch(self, split, idx):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, idx)

    monkeypatch.setattr(task_class, "batch", interrupting_batch)


def use_fake_mnist(monkeypatch, n: int) -> np.ndarray:
    """MNIST's arrays replaced by small fakes: 6 n training images (the last n validate, as
    MNIST's last 10k do) and n test images, image k's pixel j being (k + j) % 256, so every
    pixel of every image is told apart (n <= 42). Returns the test images, (n, 784)."""
    from hdetach.experiments.tasks import mnist

    def images(count: int) -> np.ndarray:
        return ((np.arange(count)[:, None] + np.arange(784)[None, :]) % 256).astype(np.uint8)

    arrays = {
        "train_images": images(6 * n),
        "train_labels": np.arange(6 * n, dtype=np.uint8) % 10,
        "test_images": images(n),
        "test_labels": np.arange(n, dtype=np.uint8) % 10,
    }
    monkeypatch.setattr(mnist, "load_mnist", lambda data_dir=None, fetch=True: arrays)
    monkeypatch.setattr(mnist, "N_TRAIN", 5 * n)
    return arrays["test_images"]


def signal_sweep_at_checkpoint(
    argv: list, env: dict, ready, sig, within: float = 30.0, on_freeze=None
) -> tuple[int, str, list[int]]:
    """Start the command ``argv`` (a sweep, the demo, a training run) in a session of its
    own, as a scheduler does, and send ``sig`` (a signal, or several one second apart) to
    its main process alone, not its group (SLURM, docker stop, Kubernetes and systemd
    signal the process they started), once the file ``ready`` exists (a run's first
    checkpoint; the command is frozen from then until the first signal is sent, and
    ``on_freeze()``, if given, is called while it is). The command must end within
    ``within`` seconds of the last signal.
    (return code, stderr, the processes started under it that outlived it by 20 s)."""
    import os
    import signal
    import subprocess
    import tempfile
    import time

    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to find the command's processes")
    with tempfile.TemporaryFile("w+") as err:  # not a pipe: a leftover worker holds it open
        proc = subprocess.Popen(
            argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.time() + 120
        while not Path(ready).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, f"it ended before {ready} was written"
        # Freeze the command while the test looks around, so that on a loaded machine its
        # runs cannot finish between the checkpoint and the signal; the signal then waits
        # for SIGCONT and lands first (the group is frozen, but only the main is signalled).
        os.killpg(proc.pid, signal.SIGSTOP)
        started = _descendants(proc.pid)
        _wait_until_stopped(proc.pid)
        if on_freeze is not None:
            on_freeze()
        for i, one in enumerate(sig if isinstance(sig, (list, tuple)) else [sig]):
            time.sleep(1.0 if i else 0.0)
            os.kill(proc.pid, one)
            if i == 0:
                os.killpg(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what the test started
            proc.wait()
            raise AssertionError(f"still running {within} s after the signal") from None
        deadline = time.time() + 20
        while (left := [p for p, t in started.items() if _alive(p, t)]) and time.time() < deadline:
            time.sleep(0.1)
        for pid in left:  # found out; not left to run on
            os.kill(pid, signal.SIGKILL)
        err.seek(0)
        return proc.returncode, err.read(), left


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _descendants(pid: int) -> dict[int, str]:
    """The processes under ``pid`` (children, theirs...): pid -> start time, which tells a
    process from a later one given the same pid."""
    import os

    fields = {int(p): f for p in os.listdir("/proc") if p.isdigit() and (f := _stat(int(p)))}
    found, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, f in fields.items() if int(f[1]) in frontier and p not in found}
        found.update({p: fields[p][19] for p in frontier})
    return found


def _wait_until_stopped(group: int, within: float = 10.0) -> None:
    """Wait until every process of the process group is stopped (SIGSTOP is delivered
    asynchronously; processes started in groups of their own, as Ray's, are not waited on)."""
    import os
    import time

    deadline = time.time() + within
    while time.time() < deadline:
        fields = [f for p in os.listdir("/proc") if p.isdigit() and (f := _stat(int(p)))]
        if all(f[0] in "TtZX" for f in fields if int(f[2]) == group):
            return
        time.sleep(0.01)


def _alive(pid: int, start: str) -> bool:
    f = _stat(pid)
    return f is not None and f[19] == start and f[0] != "Z"


# Copying-task configs small enough to train in a fraction of a second (one thread).
TINY_COPY = dict(
    task="copy",
    T=5,
    input_encoding="onehot",
    hidden_size=32,
    epochs=3,
    steps_per_epoch=20,
    eval_every=15,
    n_train=500,
    n_val=200,
    batch_size=20,
)
SMALLEST_COPY = dict(
    task="copy",
    T=3,
    input_encoding="onehot",
    hidden_size=8,
    epochs=1,
    steps_per_epoch=4,
    n_train=50,
    n_val=20,
    batch_size=10,
)


def axes_drawn_by(module, monkeypatch) -> list:
    """Every matplotlib Axes that ``module`` makes through its ``subplots`` from now on,
    so that a test can read the lines a figure has, not just that a PNG was written."""
    drawn = []
    real = module.subplots

    def spy(*args, **kwargs):
        fig, ax = real(*args, **kwargs)
        drawn.append(ax)
        return fig, ax

    monkeypatch.setattr(module, "subplots", spy)
    return drawn


def require(module: str):
    """Import ``module`` or skip the calling test module saying why: missing, or present
    but failing as it loads (e.g. a torchvision built for another torch)."""
    import importlib

    import pytest

    try:
        return importlib.import_module(module)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        pytest.skip(f"{module} unusable here: {reason}", allow_module_level=True)
