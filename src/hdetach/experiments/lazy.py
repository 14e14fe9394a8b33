"""References to objects whose module is imported only when they are used: a task's
class that holds its data (``tasks.registry``), the function that carries out a
subcommand (``cli``). Written ``"package.module:name"``."""

from __future__ import annotations

import importlib
from typing import Any


def load(reference: str) -> Any:
    """The object that ``"package.module:name"`` names, its module imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
