"""One process at a time trains a run folder.

Two processes training one folder (the same sweep started twice, ``train --resume`` on a
run a sweep is training) would overwrite each other's checkpoints and metrics, and a
resume truncates ``metrics.jsonl`` to its checkpoint. The trainer holds an exclusive
``flock`` on ``train.lock`` in the folder; the system drops it when the process ends,
however it ends (SIGKILL included), so no stale lock is ever left behind. Where ``fcntl``
is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from hdetach.experiments.config import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

LOCK = "train.lock"


def lock_run(run_dir: Path) -> IO[str] | None:
    """Take the folder's lock for this process (the open file holds it; close it to let
    go); ConfigError naming the holder if another process has it."""
    if fcntl is None:
        return None
    file = open(run_dir / LOCK, "a+")  # noqa: SIM115 (held open: the lock lives with it)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid_in(file)
        file.close()
        raise ConfigError(
            f"{run_dir} is being trained by another process (pid {pid}); "
            "wait for it to end or stop it"
        ) from None
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def holder(run_dir: Path) -> str | None:
    """The pid (as written) of the process training ``run_dir`` now, or None."""
    if fcntl is None or not (run_dir / LOCK).is_file():
        return None
    with open(run_dir / LOCK) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(file)
        fcntl.flock(file, fcntl.LOCK_UN)
    return None


def _pid_in(file: IO[str]) -> str:
    with contextlib.suppress(OSError):
        file.seek(0)
        return file.read().strip() or "unknown"
    return "unknown"
