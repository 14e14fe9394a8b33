"""Writing the lab's files: strict JSON (non-finite numbers as null) and atomic replacement
(a run folder's own files: ``folder``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def finite_or_none(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, numbers) with NaN and infinities replaced by None,
    so that it serialises as standard JSON, which has no literal for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    """Standard JSON: any non-finite number is written as null."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder,
    fsync it, then rename it over ``path``: a crash at any point leaves either the old
    file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented standard JSON."""
    text = to_json(obj, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
