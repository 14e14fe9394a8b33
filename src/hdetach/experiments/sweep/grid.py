"""A sweep's grid: base options, the options to cross and the seeds; its runs and their names.

Every value is checked with the ``Config`` field's type and ``resolve()`` before any run
starts, so a typo costs one line, not a half-finished sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from hdetach.experiments.config import Config, ConfigError, flag, option_type, resolve
from hdetach.experiments.run.files import write_json
from hdetach.experiments.run.folder import RunFolder, RunFolderError

RECORD = "sweep.json"
# Options a grid may not cross: where a run goes (the sweep names it), what it runs on,
# and the seed (given by ``seeds``); the task is the sweep's own.
NOT_CROSSABLE = ("run_dir", "device", "data_dir", "seed", "task", "total_steps")
_SAFE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # what a value may spell in a folder name


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {
        f.name: option_type(hints[f.name])
        for f in dataclasses.fields(Config)
        if "help" in f.metadata
    }


def parse_value(name: str, value: Any) -> Any:
    """``value`` (a command-line string or a TOML value) as the type of option ``name``."""
    types = _field_types()
    if name not in types:
        raise ConfigError(f"{name!r} is not a train option (one of {', '.join(types)})")
    kind = types[name]
    if kind is bool:  # a switch: true or false, in TOML or spelled so on the command line
        spelled = {"true": True, "false": False}
        value = spelled.get(value.lower(), value) if isinstance(value, str) else value
        if not isinstance(value, bool):
            raise ConfigError(f"{flag(name)} takes true or false; got {value!r}")
        return value
    if isinstance(value, str) and kind is not str:
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{flag(name)} takes {kind.__name__} values; got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{flag(name)} takes {kind.__name__} values; got {value!r}")
    return value


def value_text(value: Any) -> str:
    """How a value is spelled in a run's folder name: exact and round-trippable."""
    return repr(value) if isinstance(value, float) else str(value)


@dataclass
class Grid:
    """``base`` options for every run, ``axes`` (option -> values, crossed in this order)
    and the ``seeds`` each combination is run with."""

    task: str
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        self.base = {k: parse_value(k, v) for k, v in self.base.items()}
        for name, values in self.axes.items():
            if name in NOT_CROSSABLE:
                raise ConfigError(f"--grid {name}: cannot be crossed (use --seeds for seeds)")
            if not values:
                raise ConfigError(f"--grid {name}: no values")
            values[:] = [parse_value(name, v) for v in values]
            if len(set(map(value_text, values))) < len(values):
                raise ConfigError(f"--grid {name}: a value is repeated in {values}")
            for v in values:
                if not _SAFE.match(value_text(v)):
                    raise ConfigError(f"--grid {name}: value {v!r} cannot name a folder")
        for name in self.base:
            if name in ("run_dir", "seed", "task") or name in self.axes:
                raise ConfigError(f"{flag(name)}: set by the sweep, not a base option")
        if not all(map(_is_int, self.seeds)):
            raise ConfigError(f"--seeds must be ints; got {self.seeds}")
        if not self.seeds or len(set(self.seeds)) < len(self.seeds):
            raise ConfigError(f"--seeds must be distinct seeds; got {self.seeds}")

    def runs(self, out: Path) -> dict[str, Config]:
        """Every run of the grid, resolved (each checked), by folder name under ``out``."""
        names = list(self.axes)
        runs = {}
        for combo in itertools.product(*self.axes.values()):
            overrides = dict(zip(names, combo))
            for seed in self.seeds:
                name = ",".join(f"{k}={value_text(v)}" for k, v in overrides.items())
                name = f"{name},seed={seed}" if name else f"seed={seed}"
                cfg = Config(
                    task=self.task, **self.base, **overrides, seed=seed, run_dir=str(out / name)
                )
                runs[name] = resolve(cfg)
        return runs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MAX_SEEDS = 10_000  # a run folder per seed and combination: more is a typo, not a study


def parse_seeds(text: str) -> list[int]:
    """``--seeds 5`` (seeds 0..4), ``--seeds 0,3,7``, or ranges in the list: ``--seeds 3-5``
    (seeds 3, 4, 5), ``--seeds 2-2`` (seed 2 alone, e.g. the share of a sweep that a second
    machine or process trains in the same folder)."""

    def number(part: str) -> int:
        try:
            return int(part)
        except ValueError:
            raise ConfigError(
                f"--seeds takes a count, a comma list of ints or ranges A-B; got {text!r}"
            ) from None

    if "," not in text and "-" not in text:
        return _seed_range(text, 0, number(text) - 1)
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        seeds += _seed_range(part, number(first), number(last)) if dash else [number(part)]
    return seeds


def _seed_range(text: str, first: int, last: int) -> list[int]:
    """Seeds first..last, refused where the range is empty, reversed or too long."""
    if last < first:
        raise ConfigError(f"--seeds: {text!r} names no seeds (a count >= 1, a range A-B, A <= B)")
    if last - first + 1 > MAX_SEEDS:
        raise ConfigError(f"--seeds: {text!r} names more than {MAX_SEEDS} seeds")
    return list(range(first, last + 1))


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``--grid lr=1e-3,3e-3`` -> ("lr", ["1e-3", "3e-3"]); names use _ or -."""
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise ConfigError(f"--grid takes NAME=V1,V2,...; got {text!r}")
    return name.strip().lstrip("-").replace("-", "_"), [v.strip() for v in values.split(",")]


def load_toml(path: Path) -> dict[str, Any]:
    """A sweep file: ``task``, ``seeds`` (count or list), ``out``, ``[base]``, ``[grid]``."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"sweep file {path}: {e}") from None
    unknown = set(data) - {"task", "seeds", "out", "base", "grid"}
    if unknown:
        raise ConfigError(
            f"sweep file {path}: unknown keys {', '.join(sorted(unknown))} "
            "(expected task, seeds, out, [base], [grid])"
        )
    _check_file_shapes(path, data)
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_file_shapes(path: Path, data: dict[str, Any]) -> None:
    """The kinds of a sweep file's entries (the values are checked as options later)."""
    seeds = data.get("seeds", 1)
    if not (_is_int(seeds) or (isinstance(seeds, list) and all(map(_is_int, seeds)))):
        raise ConfigError(f"sweep file {path}: seeds must be a count or a list of ints")
    if _is_int(seeds) and not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(
            f"sweep file {path}: seeds must be a count from 1 to {MAX_SEEDS}; got {seeds}"
        )
    if not isinstance(data.get("out", ""), str):
        raise ConfigError(f"sweep file {path}: out must be a folder name (a string)")
    for table in ("base", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"sweep file {path}: {table} must be a table ([{table}])")
    for name, values in data.get("grid", {}).items():
        if not isinstance(values, list):
            raise ConfigError(f"sweep file {path}: [grid] {name} must be a list of values")


def prepare(out: Path, grid: Grid) -> dict[str, Config]:
    """The grid's runs in ``out``, with every config, the folder and its record checked
    before any work; then the record (``sweep.json``) is written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    runs = grid.runs(out)
    check_record(out, grid)
    check_existing(runs)
    write_record(out, grid)
    return runs


def check_record(out: Path, grid: Grid) -> None:
    """Refuse a grid whose task, base options or crossed options differ from those the
    folder's sweep was started with; new values and seeds extend it (recorded), and so
    does another ``--epochs`` (its runs are trained to the new length: check_existing)."""
    path = out / RECORD
    if path.is_file():
        old = json.loads(path.read_text())
        new = grid.to_dict()
        # Only an explicit --epochs changes the length: one left out is not a request for
        # the task's default (200 epochs for MNIST) on a finished study.
        same_but_length = "epochs" in new["base"] and (
            _without_epochs(old["base"]) == _without_epochs(new["base"])
        )
        differ = [k for k in ("task", "base") if old[k] != new[k]]
        if same_but_length and "base" in differ:
            differ.remove("base")
        if list(old["axes"]) != list(new["axes"]):
            differ.append("crossed options")
        if differ:
            had = "; ".join(f"{k} {_show(old, k)}" for k in differ)
            asked = "; ".join(f"{k} {_show(new, k)}" for k in differ)
            raise ConfigError(
                f"--out {out} holds a sweep with other settings ({had}; asked: {asked}); "
                "pick another --out"
            )


def check_existing(runs: dict[str, Config]) -> None:
    """Refuse a run folder whose saved config is not the run's (other than where it runs,
    and its length where the run can be trained on to a longer one)."""
    for cfg in runs.values():
        folder = RunFolder(cfg.run_dir)
        try:
            saved = folder.read_config()
        except RunFolderError as e:
            raise RunFolderError(f"{e}; move the folder away") from None
        if saved is None:
            continue
        wanted = {k: v for k, v in cfg.to_dict().items() if k not in ("run_dir", "device")}
        differ = [k for k, v in wanted.items() if _saved_value(saved, k, v) != v]
        if differ and set(differ) <= LENGTH and _lengthens(saved, cfg, folder.path):
            continue
        if differ:
            k = differ[0]
            raise ConfigError(
                f"{folder.path} holds a run with {k} {saved.get(k)!r}, not {wanted[k]!r}; "
                "move it away or pick another --out"
            )


LENGTH = {"epochs", "total_steps"}  # what another --epochs changes in a saved config
# Recorded by resolve() from options that are compared themselves: a run saved before the
# record existed is not told apart by its absence.
DERIVED = {"perm_checksum"}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}


def _saved_value(saved: dict[str, Any], key: str, wanted: Any) -> Any:
    """A saved config's ``key``, as this version reads a config saved before the option
    existed: at the option's default (a derived record: as this run records it)."""
    if key in saved:
        return saved[key]
    return wanted if key in DERIVED else DEFAULTS.get(key)


def _without_epochs(base: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != "epochs"}


def _lengthens(saved: dict[str, Any], cfg: Config, folder: Path) -> bool:
    """Whether the run saved in ``folder`` can be trained on to ``cfg``'s longer length;
    refuses the cases with_epochs refuses, in one line, before any run starts."""
    if cfg.epochs < saved["epochs"]:
        return False  # shorter than what is saved: the generic refusal
    if saved.get("anneal_epochs"):
        raise ConfigError(
            f"{folder} anneals h-detach over its last {saved['anneal_epochs']} epochs, so "
            f"its length ({saved['epochs']} epochs) cannot be changed; pick another --out"
        )
    return True


def write_record(out: Path, grid: Grid) -> None:
    """Record the grid, merged with the values and seeds already recorded there."""
    path = out / RECORD
    record = grid.to_dict()
    if path.is_file():
        old = json.loads(path.read_text())
        for name, values in old["axes"].items():
            record["axes"][name] = _union(values, record["axes"][name])
        record["seeds"] = _union(old["seeds"], record["seeds"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def _union(a: list, b: list) -> list:
    return a + [v for v in b if v not in a]


def _show(d: dict[str, Any], key: str) -> str:
    return json.dumps(list(d["axes"]) if key == "crossed options" else d[key])
