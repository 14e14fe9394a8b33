"""hdetach: a drop-in torch.nn.LSTM whose training gradient can be modified by h-detach.

This is the library: the op (``functional``, backends in ``ops``), the modules and the
gradient-path analysis. The paper's experiments and the ``hdetach`` command live in
``hdetach.experiments``, which the library never imports.

import hdetach
lstm = hdetach.LSTM(input_size, hidden_size, p_detach=0.25)   # like torch.nn.LSTM
model = hdetach.convert(model, p_detach=0.25)                 # or swap inside a model
population = hdetach.PopulationLSTM(8, input_size, hidden_size, p_detach=[0, 0.25] * 4)
paths = hdetach.gradient_paths(model, lambda: loss_of(model(x), y))  # cell vs h path
model = torch.load(path, weights_only=True)  # a whole saved model: hdetach's classes are trusted
"""

import importlib
import sys

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it from here

# What ``import hdetach`` gives, by the module that defines it.
_EXPORTS = {
    "LSTM": "hdetach.nn",
    "LSTMCell": "hdetach.nn",
    "PopulationLSTM": "hdetach.nn",
    "SAFE_GLOBALS": "hdetach.nn",
    "convert": "hdetach.nn",
    "revert": "hdetach.nn",
    "functional": "hdetach.functional",
    "gradient_paths": "hdetach.analysis",
    "gradient_profiles": "hdetach.analysis",
}
__all__ = [
    "LSTM",
    "LSTMCell",
    "PopulationLSTM",
    "SAFE_GLOBALS",
    "convert",
    "revert",
    "functional",
    "gradient_paths",
    "gradient_profiles",
    "__version__",
]


def _is_the_hdetach_command() -> bool:
    """Whether this process is the ``hdetach`` command: its console script (``sys.argv[0]``
    named hdetach, as pip writes it on any platform), or ``python -m hdetach`` (while the
    module given to -m is located, ``sys.argv[0]`` is "-m"; ``sys.orig_argv`` names it)."""
    script = sys.argv[0].replace("\\", "/").rpartition("/")[2] if sys.argv else ""
    for suffix in (".exe", "-script.pyw", "-script.py"):  # Windows launchers
        script = script.removesuffix(suffix)
    if script != "-m":
        return script == "hdetach"
    at = next((i for i, arg in enumerate(sys.orig_argv) if arg.startswith("-m")), None)
    if at is None:
        return False
    located = sys.orig_argv[at][2:] or "".join(sys.orig_argv[at + 1 : at + 2])  # -mX, -m X
    return located == "hdetach"


def __getattr__(name: str):
    """The exports, imported at first use: reached only where the import below was skipped."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hdetach' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return module if module.__name__ == f"hdetach.{name}" else getattr(module, name)


# Eager, with one exception. `import hdetach` imports the modules, and so trusts hdetach's
# classes in torch.load's weights_only unpickler (hdetach.nn registers SAFE_GLOBALS): code
# that loads a whole saved model right after `import hdetach` relies on it, which a package
# lazy for everyone (__getattr__ alone) would break. The one process that gains from
# laziness and loses nothing is the `hdetach` command itself: its --help, --version and
# option errors answer before torch is imported (over 2 s saved on a loaded 2-core
# machine); it imports what the chosen subcommand uses after parsing, the exports above
# come at first use, and hdetach.nn, when imported, registers the classes there as
# everywhere. Telling it by argv is narrow: only a script itself named hdetach, or
# `python -m hdetach`, is taken for the command.
if not _is_the_hdetach_command():
    from hdetach import functional
    from hdetach.analysis import gradient_paths, gradient_profiles
    from hdetach.nn import LSTM, SAFE_GLOBALS, LSTMCell, PopulationLSTM, convert, revert
