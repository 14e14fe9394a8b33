"""A run folder, the one module that knows its files, reads them and writes them::

    config.json       the run's full resolved config
    metrics.jsonl     one record per evaluation: training averages since the last one,
                      validation metrics, the best so far, throughput (tracked gradients)
    summary.json      how training ended: "finished" (with the best model's test
                      metrics) or "diverged"
    transfer.json     the best model's transfer-copying accuracies (``hdetach transfer``)
    last.pt, best.pt  checkpoints: their paths are here, their contents ``checkpoint``'s
    tb/               TensorBoard event files
    train.lock        held by the one process that trains the folder
    train.log         a sweep's run: its output lines

JSON is written standard (non-finite numbers as null) and atomically. A file that cannot
be read, or is not what hdetach writes there, raises RunFolderError naming the folder and
the file; a file not written yet reads as None (or no records).

One process at a time trains a folder: two (the same sweep started twice, ``train
--resume`` on a run a sweep is training) would overwrite each other's checkpoints and
metrics, and a resume truncates ``metrics.jsonl`` to its checkpoint. The trainer holds an
exclusive ``flock`` on ``train.lock``; the system drops it when the process ends, however
it ends (SIGKILL included), so no stale lock is ever left behind. Where ``fcntl`` is
missing (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any

from hdetach.experiments.config import ConfigError
from hdetach.experiments.run.files import atomic_write, to_json, write_json

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TRANSFER = "transfer.json"
LAST = "last.pt"
BEST = "best.pt"
TENSORBOARD = "tb"
LOCK = "train.lock"
LOG = "train.log"
FILES = (CONFIG, METRICS, SUMMARY, TRANSFER, LAST, BEST, TENSORBOARD, LOCK, LOG)


class RunFolderError(ConfigError):
    """A run folder's file that cannot be read or is not what hdetach writes there; the
    message names the folder and the file."""


class RunFolder:
    """The files of one run, in the folder at ``path`` (which need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @staticmethod
    def find(root: str | Path) -> list[Path]:
        """``root`` if it holds a run, else every run folder below it, sorted."""
        root = Path(root)
        if RunFolder(root).holds_run():
            return [root]
        return sorted(config.parent for config in root.rglob(CONFIG))

    def holds_run(self) -> bool:
        """Whether a run has been started here (its config.json is written first)."""
        return (self.path / CONFIG).is_file()

    @property
    def last_checkpoint(self) -> Path:
        """Written at every evaluation and between them: where training resumes."""
        return self.path / LAST

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint of the best validation so far: the run's model."""
        return self.path / BEST

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    # --- the JSON files
    def _read_json(self, name: str) -> Any:
        """The JSON object in file ``name``; None if there is no such file."""
        path = self.path / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RunFolderError(f"{self.path}: {name} cannot be read ({e.strerror})") from None
        try:
            value = json.loads(text)
        except ValueError as e:
            raise RunFolderError(f"{self.path}: {name} is not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise RunFolderError(f"{self.path}: {name} is not a JSON object")
        return value

    def read_config(self) -> dict[str, Any] | None:
        return self._read_json(CONFIG)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.path / CONFIG, config)

    def trained_epochs(self) -> float:
        """The length the run is trained to (its config.json); where that cannot be read,
        infinite: a finished run is never trained again on a guess."""
        with contextlib.suppress(RunFolderError):
            epochs = (self.read_config() or {}).get("epochs")
            if isinstance(epochs, (int, float)):
                return epochs
        return float("inf")

    def read_summary(self) -> dict[str, Any] | None:
        return self._read_json(SUMMARY)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)

    def remove_summary(self) -> None:
        """The run goes on (to another length): it has not ended."""
        (self.path / SUMMARY).unlink(missing_ok=True)

    def status(self) -> str | None:
        """How the run ended, as summary.json says ("finished", "diverged"); None where it
        has not (no summary) or its summary cannot be read (training it again rewrites it)."""
        with contextlib.suppress(RunFolderError):
            return (self.read_summary() or {}).get("status")
        return None

    def read_transfer(self) -> dict[str, Any] | None:
        return self._read_json(TRANSFER)

    def write_transfer(self, result: dict[str, Any]) -> None:
        write_json(self.path / TRANSFER, result)

    def relocate(self) -> None:
        """Record this folder as the run's ``run_dir`` in config.json and summary.json,
        after the run trained in another folder (a Ray worker's) and was copied here."""
        for name in (CONFIG, SUMMARY):
            if (saved := self._read_json(name)) is not None:
                write_json(self.path / name, {**saved, "run_dir": str(self.path)})

    # --- metrics.jsonl
    def _metric_lines(self) -> list[str]:
        return self._metrics_text().splitlines()

    def _metrics_text(self) -> str:
        try:
            return (self.path / METRICS).read_text()
        except FileNotFoundError:
            return ""
        except OSError as e:
            raise RunFolderError(f"{self.path}: {METRICS} cannot be read ({e.strerror})") from None

    def _record(self, line: str, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise RunFolderError(f"{self.path}: {METRICS} line {number} is not a metrics record")
        return record

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every evaluation's record, in order (none before the first)."""
        return [self._record(line, i) for i, line in enumerate(self._metric_lines(), 1)]

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(to_json(record) + "\n")

    def steps_recorded(self) -> int:
        """The step of the last evaluation recorded (0 before the first). Read while the
        run trains: a line being appended is not complete yet, and is skipped."""
        step = 0
        for i, line in enumerate(self._metric_lines(), 1):
            with contextlib.suppress(RunFolderError):
                step = self._record(line, i)["step"]
        return step

    def truncate_metrics(self, step: int) -> None:
        """Drop the records after ``step``: a resumed run writes them again, from the
        checkpoint at ``step`` on. A last line without its newline was cut short by a kill
        while it was appended, after that checkpoint: it goes too (a damaged line elsewhere
        is an error)."""
        text = self._metrics_text()
        lines = text.splitlines()
        complete = lines[:-1] if text and not text.endswith("\n") else lines
        kept = [ln for i, ln in enumerate(complete, 1) if self._record(ln, i)["step"] <= step]
        if len(kept) < len(lines):
            text = "".join(ln + "\n" for ln in kept).encode()
            atomic_write(self.path / METRICS, lambda f: f.write(text))

    def remove_metrics(self) -> None:
        """A fresh run: records left by an attempt that never saved a checkpoint go."""
        (self.path / METRICS).unlink(missing_ok=True)

    # --- the process that trains it
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def open_log(self) -> IO[str]:
        """train.log, for appending (the folder created if need be)."""
        self.create()
        return open(self.path / LOG, "a")  # noqa: SIM115 (the caller closes it)

    def lock(self) -> IO[str] | None:
        """Take the folder's lock for this process (the open file holds it; close it to
        let go); ConfigError naming the holder if another process has it."""
        if fcntl is None:
            return None
        file = open(self.path / LOCK, "a+")  # noqa: SIM115 (held open: the lock lives with it)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(file)
            file.close()
            raise ConfigError(
                f"{self.path} is being trained by another process (pid {pid}); "
                "wait for it to end or stop it"
            ) from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        return file

    def holder(self) -> str | None:
        """The pid (as written) of the process training the folder now, or None."""
        if fcntl is None or not (self.path / LOCK).is_file():
            return None
        with open(self.path / LOCK) as file:
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
