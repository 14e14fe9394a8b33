"""Independent oracles and comparison helpers shared by the tests.

The oracle below shares no code with the package: a per-example, per-position
Python loop that detaches with ``Tensor.detach()`` exactly where the mask says.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def interrupt_at(monkeypatch, call: int) -> None:
    """A real Ctrl-C (SIGINT) while the training loop fetches its call-th copying minibatch."""
    import os
    import signal

    from hdetach.experiments.tasks import copying

    original, calls = copying.CopyingTask.batch, [0]

    def interrupting_batch(self, split, idx):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, split, idx)

    monkeypatch.setattr(copying.CopyingTask, "batch", interrupting_batch)


def signal_sweep_at_checkpoint(argv: list, env: dict, run_dir, sig) -> tuple[int, str]:
    """Start the sweep ``argv`` in its own process group, send ``sig`` to the whole group
    (as a terminal does) once ``run_dir`` has its first checkpoint; (return code, stderr)."""
    import os
    import subprocess
    import time

    proc = subprocess.Popen(
        argv, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate()
    return proc.returncode, err


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
