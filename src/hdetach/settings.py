"""Every setting hdetach reads from the environment, in one place (docs/settings.md).

Each is read at each call, not at import, so that a test or a script can change it
between calls. The library's settings choose among correct implementations; none changes
what is computed beyond float rounding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") == "1"


def triton_in_auto() -> bool:
    """``HDETACH_TRITON_AUTO=1``: backend ``"auto"`` may pick the triton kernels on CUDA.

    Off by default until ``benchmarks/gpu_check.sh`` has shown the kernels correct and
    faster than ``"fused"`` on a GPU.
    """
    return _flag("HDETACH_TRITON_AUTO")


def triton_split_hidden() -> bool:
    """``HDETACH_TRITON_SPLIT_HIDDEN=1``: the triton kernels spread a batch tile's hidden
    units over several programs (a per-step barrier for less weight traffic; untimed on a
    GPU, so off by default)."""
    return _flag("HDETACH_TRITON_SPLIT_HIDDEN")


def triton_interpreting() -> bool:
    """``TRITON_INTERPRET=1`` (Triton's own switch): the triton kernels run on CPU tensors
    under Triton's interpreter (the kernels' tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


CPU_KERNELS = ("auto", "compiled", "python")


def cpu_kernel() -> str:
    """``HDETACH_CPU_KERNEL``: the fused backend's CPU steps. ``auto`` (unset): the compiled
    recurrence where it can be built, else the eager steps after one warning;
    ``compiled``: the compiled recurrence or an error; ``python``: the eager steps."""
    setting = os.environ.get("HDETACH_CPU_KERNEL", "auto")
    if setting not in CPU_KERNELS:
        raise ValueError(f"HDETACH_CPU_KERNEL must be one of {CPU_KERNELS}, got {setting!r}")
    return setting


def onednn_products() -> str:
    """``HDETACH_ONEDNN``: the fused backend's float32 CPU products. ``auto`` (unset):
    oneDNN when torch runs one thread, else torch.mm (MKL); ``1`` always oneDNN; ``0``
    never."""
    return os.environ.get("HDETACH_ONEDNN", "auto")


def checkpoint_minutes() -> float:
    """``HDETACH_CHECKPOINT_MINUTES`` (default 10): besides evaluations and stops, training
    writes ``last.pt`` once this many minutes have passed since it was last written (by an
    evaluation or by this timer; at the first step boundary after), so that a run killed
    between evaluations (SIGKILL, a lost machine) loses at most that much; ``0``: only at
    evaluations and on a stop. Where it is written does not change what is trained."""
    text = os.environ.get("HDETACH_CHECKPOINT_MINUTES", "10")
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not 0 <= minutes < float("inf"):
        raise ValueError(
            f"HDETACH_CHECKPOINT_MINUTES must be a number of minutes >= 0; got {text!r}"
        )
    return minutes


def mnist_data_dir() -> Path:
    """``$HDETACH_DATA/mnist`` where ``HDETACH_DATA`` is set, else ``<user cache>/hdetach/mnist``
    (``~/.cache/hdetach/mnist`` on Linux): where MNIST is read and downloaded to."""
    root = os.environ.get("HDETACH_DATA")
    if root:
        return Path(root).expanduser() / "mnist"
    return Path(platformdirs.user_cache_dir("hdetach")) / "mnist"


@contextlib.contextmanager
def overridden(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment for the duration of the block, then as before
    (the benchmarks time one implementation after another this way)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
