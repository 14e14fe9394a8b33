"""The package's shape: the library never imports the lab, and no module imports itself
back through others (function-local imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hdetach
from hdetach.experiments.options import CHOICES
from hdetach.experiments.tasks.registry import TASKS, TRAIN_TASKS, metric_direction, task_class

PACKAGE = Path(hdetach.__file__).parent
LAB = "hdetach.experiments"
ENTRY_POINT = "hdetach.__main__"  # ``python -m hdetach`` runs the lab's CLI by design


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every hdetach module that ``path`` imports anywhere in its body (the deepest module
    an import names: ``from hdetach.nn import lstm`` is hdetach.nn.lstm)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("hdetach"):
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs first: what it imports, and its parent
    packages (importing ``a.b.c`` runs ``a`` and ``a.b`` first). A package importing its
    own submodules is Python's usual layout, not a cycle, so those edges are left out;
    a package importing anything outside itself is kept (a task module importing the
    tasks package that imports the registry that imports the task module is a cycle)."""
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    for m in modules:
        if modules[m].name == "__init__.py":
            graph[m] = {n for n in graph[m] if not n.startswith(m + ".")}
    for m in modules:
        parts = m.split(".")
        graph[m] |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return graph


def test_the_import_walk_sees_function_local_imports():
    # The walk must see through functions, or a hidden cycle would pass.
    graph = _graph()
    assert "hdetach.experiments.gradients.tracking" in graph["hdetach.experiments.train.loop"]


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_library_never_imports_the_lab():
    graph = _graph()
    library = [m for m in graph if not m.startswith(LAB) and m != ENTRY_POINT]
    assert "hdetach.functional" in library and "hdetach.analysis.paths" in library
    offenders = {m: sorted(n for n in graph[m] if n.startswith(LAB)) for m in library}
    assert not {m: n for m, n in offenders.items() if n}


def test_import_hdetach_loads_no_lab_module():
    code = (
        "import sys, hdetach, hdetach.analysis\n"
        "print(hdetach.LSTM, hdetach.gradient_paths, hdetach.gradient_profiles)\n"
        f"print(sorted(m for m in sys.modules if m.startswith('{LAB}')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_one_task_registry_knows_every_task_and_its_metric_direction():
    assert set(TASKS) == set(CHOICES["task"]) == {*TRAIN_TASKS, "caption"}
    for name, cls in TASKS.items():
        assert cls.name == name
        assert metric_direction(cls.metric) is cls.higher_is_better
        assert issubclass(task_class(name), cls)  # the class holding its data
    assert metric_direction("cider") is True  # captioning's metric: larger is better


def _imported_by(module: str, graph: dict[str, set[str]]) -> set[str]:
    """Every hdetach module that importing ``module`` can run, however indirectly."""
    seen, todo = set(), [module]
    while todo:
        for n in graph[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    return seen


def test_the_tasks_import_neither_the_config_nor_the_model():
    # The dependencies point the other way: the config resolves options with the tasks'
    # definitions, and the model is built from a task's declared shape (model.make_model).
    graph = _graph()
    tasks = [m for m in graph if m.startswith(f"{LAB}.tasks")]
    assert f"{LAB}.tasks.registry" in tasks and f"{LAB}.tasks.copying" in tasks
    forbidden = {f"{LAB}.config", f"{LAB}.model"}
    offenders = {m: sorted(_imported_by(m, graph) & forbidden) for m in tasks}
    assert not {m: n for m, n in offenders.items() if n}


# Imported inside functions, and only there: the optional dependencies (extras), and the
# host code of the triton kernels, which imports triton itself.
# torch.utils.cpp_extension: torch's build tooling, loaded when the compiled CPU recurrence
# is first built (importing it probes for CUDA and setuptools, and logs).
OPTIONAL = (
    "torchvision",
    "PIL",
    "pycocoevalcap",
    "ray",
    "triton",
    "hdetach.ops.triton.lstm",
    "torch.utils.cpp_extension",
)


def test_function_local_imports_are_only_for_optional_dependencies():
    late = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names = [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    names = [f"{sub.module}.{a.name}" for a in sub.names]
                else:
                    continue
                late += [f"{name}:{sub.lineno} {n}" for n in names if not n.startswith(OPTIONAL)]
    assert not late, "function-local imports of required modules: " + ", ".join(late)


RUN_FOLDER = "hdetach.experiments.run.folder"


def test_only_the_run_folder_module_names_a_run_folders_files():
    """One reader and writer of run folders: no other module can open config.json,
    metrics.jsonl, the checkpoints... without naming them (a string that is the name, or a
    path ending in it); they ask ``RunFolder`` instead."""
    from hdetach.experiments.run.folder import FILES

    assert {"config.json", "metrics.jsonl", "summary.json", "last.pt", "train.lock"} <= set(FILES)
    named = []
    modules = _modules()
    assert RUN_FOLDER in modules
    for name, path in modules.items():
        if name == RUN_FOLDER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value.strip()
                if any(value == f or value.endswith("/" + f) for f in FILES):
                    named.append(f"{name}:{node.lineno} {value!r}")
    assert not named, "run-folder files named outside run/folder.py: " + ", ".join(named)
