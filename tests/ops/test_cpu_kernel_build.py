"""The compiled CPU recurrence's build as installs see it: two copies of the package on one
machine share one build, and a first use prints nothing of torch's CUDA search.

Each load runs in a fresh process (torch remembers builds per process), with its own copy of
the package on PYTHONPATH and one extensions folder for all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hdetach
from hdetach.ops.fused import cpu_kernel

pytestmark = pytest.mark.slow  # one compile of the kernel: 30 to 80 s on two cores

PACKAGE = Path(hdetach.__file__).parent
CUDA_NOTICE = "No CUDA runtime is found"

LOAD = """
from hdetach.ops.fused import cpu_kernel
assert cpu_kernel.compiled_ops() is not None, cpu_kernel.unavailable_reason()
print(cpu_kernel.__file__)
"""


def _run(code: str, install: Path | None, extensions: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports hdetach from ``install`` (a folder holding
    a copy of the package), building into ``extensions``."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)}
    env["PYTHONPATH"] = str(install) if install is not None else ""
    env.pop("HDETACH_CPU_KERNEL", None)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )


def _load(install: Path, extensions: Path) -> str:
    """Load the kernel from ``install`` in a fresh process; return what it wrote to stderr."""
    result = _run(LOAD, install, extensions)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(install)  # this install's copy ran
    return result.stderr


def _build_outputs(extensions: Path) -> dict[str, int]:
    """Every object and library built under ``extensions``, with its modification time."""
    built = [*extensions.rglob("*.o"), *extensions.rglob("*.so"), *extensions.rglob("*.pyd")]
    return {str(p.relative_to(extensions)): p.stat().st_mtime_ns for p in built}


@pytest.fixture(scope="module")
def two_installs(tmp_path_factory) -> tuple[Path, Path, Path, str]:
    """Two copies of the package (two checkouts of one source) and one extensions folder,
    where the first copy has built the kernel: (first, second, extensions, what that build
    wrote to stderr)."""
    reason = cpu_kernel.unavailable_reason()
    if reason is not None:
        pytest.skip(f"the compiled CPU recurrence cannot be built here: {reason}")
    root = tmp_path_factory.mktemp("installs")
    installs = []
    for name in ("first", "second"):
        shutil.copytree(
            PACKAGE, root / name / "hdetach", ignore=shutil.ignore_patterns("__pycache__")
        )
        installs.append(root / name)
    extensions = root / "extensions"
    build_stderr = _load(installs[0], extensions)
    return installs[0], installs[1], extensions, build_stderr


def test_two_installs_of_one_source_share_one_build(two_installs):
    first, second, extensions, _ = two_installs
    built = _build_outputs(extensions)
    assert built, f"nothing was built under {extensions}"
    for install in (second, first, second):  # alternating loads, as two checkouts in turn
        _load(install, extensions)
        assert _build_outputs(extensions) == built, f"{install.name} rebuilt the kernel"


def test_building_and_loading_print_no_cuda_runtime_notice(two_installs):
    first, _, extensions, build_stderr = two_installs
    plain = _run("import torch.utils.cpp_extension", None, extensions)
    if CUDA_NOTICE not in plain.stderr:
        pytest.skip("torch's extension builder prints no CUDA notice here (no CUDA build)")
    assert CUDA_NOTICE not in build_stderr
    assert CUDA_NOTICE not in _load(first, extensions)
