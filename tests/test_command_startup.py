"""The ``hdetach`` command answers before torch is imported where it can (--help at every
level, --version, a bad option, a mistyped subcommand), while ``import hdetach`` in user
code stays what it was: every export there, and hdetach's classes trusted by
``torch.load(..., weights_only=True)``. Each case runs in a fresh process, through the
real entry path (``hdetach/__init__.py`` included), on this checkout's source. No timing
is asserted: what is checked is which modules the process imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hdetach

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
# Imported by Python at startup from the child's PYTHONPATH: at exit the child writes the
# names of the modules it had imported, whichever way (importlib's too, which
# -X importtime does not report).
RECORDER = """
import atexit, os, sys

def _record():
    with open(os.environ["RECORD_MODULES_TO"], "w") as f:
        f.write(" ".join(sys.modules))

atexit.register(_record)
"""

ANSWERED_AT_ONCE = [
    (["--help"], 0),
    (["--version"], 0),
    (["train", "--help"], 0),
    (["sweep", "--help"], 0),
    (["demo", "--help"], 0),
    (["transfer", "--help"], 0),
    (["report", "--help"], 0),
    (["analyze", "--help"], 0),
    (["caption", "--help"], 0),
    (["caption", "train", "--help"], 0),
    (["data", "--help"], 0),
    (["bench", "--help"], 0),
    (["train", "--bogus"], 2),
    (["train", "copy", "--clip", "max"], 2),
    (["bench", "--repeats", "0"], 2),
    (["trian"], 2),
    (["caption", "trian"], 2),
]


@pytest.fixture(scope="module")
def console_script(tmp_path_factory) -> Path:
    """The ``hdetach`` script as pip writes it for the entry point in pyproject.toml."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["hdetach"]
    module, function = entry.split(":")
    path = tmp_path_factory.mktemp("bin") / "hdetach"
    path.write_text(
        "import re\nimport sys\n"
        f"from {module} import {function}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({function}())\n"
    )
    return path


@pytest.fixture(scope="module")
def recorder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recorder")
    (folder / "sitecustomize.py").write_text(RECORDER)
    return folder


def imported_by(command: list[str], recorder: Path) -> tuple[subprocess.CompletedProcess, set]:
    """The finished process ``python COMMAND`` and the modules it had imported at exit."""
    record = recorder / "modules.txt"
    record.unlink(missing_ok=True)
    env = {
        **ENV,
        "PYTHONPATH": os.pathsep.join([str(recorder), ENV["PYTHONPATH"]]),
        "RECORD_MODULES_TO": str(record),
    }
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
    return done, set(record.read_text().split())


@pytest.mark.parametrize(
    "argv, code", ANSWERED_AT_ONCE, ids=[" ".join(a) for a, _ in ANSWERED_AT_ONCE]
)
@pytest.mark.parametrize("entry", ["console script", "python -m hdetach"])
def test_help_version_and_errors_answer_before_torch_is_imported(
    console_script, recorder, argv, code, entry
):
    command = [str(console_script)] if entry == "console script" else ["-m", "hdetach"]
    done, modules = imported_by([*command, *argv], recorder)
    assert done.returncode == code, done.stderr[-2000:]
    assert "hdetach.experiments.cli" in modules  # the command itself ran
    assert "torch" not in modules


def test_a_mistyped_subcommand_is_one_line_naming_the_closest(console_script, recorder):
    done, _ = imported_by([str(console_script), "trian"], recorder)
    assert done.stderr == "hdetach: error: unknown command 'trian' (did you mean 'train'?)\n"


def test_version_is_the_package_version(console_script, recorder):
    done, _ = imported_by([str(console_script), "--version"], recorder)
    assert done.stdout == f"hdetach {hdetach.__version__}\n"


def test_import_hdetach_trusts_its_classes_for_a_whole_saved_model(tmp_path):
    path = tmp_path / "lstm.pt"
    torch.save(hdetach.LSTM(3, 4, p_detach=0.25), path)
    code = (
        "import torch, hdetach\n"
        f"model = torch.load({str(path)!r}, weights_only=True)\n"
        "print(type(model).__module__, type(model).__name__, model.p_detach)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["hdetach.nn.lstm", "LSTM", "0.25"]


def test_in_the_command_the_exports_come_at_first_use(tmp_path):
    # The command's own process: the same objects, and the classes trusted once hdetach.nn
    # is imported, which using any of them does.
    path = tmp_path / "lstm.pt"
    torch.save(hdetach.LSTM(3, 4), path)
    code = (
        "import sys\n"
        "sys.argv[0] = '/usr/local/bin/hdetach'\n"
        "import hdetach\n"
        "assert 'torch' not in sys.modules and 'hdetach.nn' not in sys.modules\n"
        "exports = {name: getattr(hdetach, name) for name in hdetach.__all__}\n"
        "import torch, hdetach.analysis, hdetach.functional, hdetach.nn\n"
        "assert exports['LSTM'] is hdetach.nn.LSTM and exports['convert'] is hdetach.nn.convert\n"
        "assert exports['functional'] is hdetach.functional\n"
        "assert exports['gradient_paths'] is hdetach.analysis.gradient_paths\n"
        f"print(type(torch.load({str(path)!r}, weights_only=True)).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "LSTM"


def test_a_copy_run_loads_nothing_of_captioning(tmp_path, console_script, recorder):
    argv = [
        "train", "copy", "--T", "1", "--hidden-size", "4", "--epochs", "1",
        "--steps-per-epoch", "2", "--n-train", "10", "--n-val", "10", "--batch-size", "5",
        "--no-progress", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    done, modules = imported_by([str(console_script), *argv], recorder)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()
    assert "hdetach.experiments.tasks.copying" in modules
    assert not {m for m in modules if m.startswith("hdetach.experiments.captioning")}
