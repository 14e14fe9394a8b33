"""The fused backend's compiled CPU recurrence (``csrc/lstm_cpu.cpp``): build, load, choose.

The recurrence is a C++ extension built on first use by ``torch.utils.cpp_extension``
(into torch's extensions directory, ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``) and reused from there by every later process: a sweep's
workers load the one build. torch locks the build directory, so processes that start at
once wait for one build instead of each compiling. Nothing is compiled at install.

One build per source, flags, compiler and torch install, whichever checkout asks: torch
rebuilds whenever the ninja file it writes changes, and that file names the source's path,
so the source is compiled from a copy at a path fixed by its content (``_stable_source``),
not from the package's folder. Each torch install (each venv) gets its own build: the ninja
file names torch's include and library folders too.

``HDETACH_CPU_KERNEL`` (read at each call by ``hdetach.settings.cpu_kernel``):

* ``auto`` (default): the compiled recurrence for float32 and float64 CPU tensors; where
  it cannot be built or loaded (no compiler, another platform), the fused backend's
  eager steps run instead, after one warning.

Other dtypes (bfloat16, float16) run the eager steps under any setting, after one warning
per dtype.
* ``compiled``: the compiled recurrence, or an error saying why it cannot be built.
* ``python``: always the eager steps.

While torch.compile traces, and under torch.func transforms, the eager steps run
(the compiler traces them; the transforms need their own rules, see ``lstm.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor

from hdetach import settings

SOURCE = Path(__file__).parent / "csrc" / "lstm_cpu.cpp"
DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_state: dict = {"ops": None, "error": None, "build_s": None, "warned": set()}


def _compile_flags() -> list[str]:
    """-O3, and the widest vectors torch itself uses on this CPU: with AVX-512,
    x86-64-v4 and 512-bit vectors (the forward's gate pass is 1.7x faster than with AVX2
    on the AMD EPYC of benchmarks/); with AVX2, x86-64-v3. Not -march=native: a build is
    shared by the machines of one capability (its name says which, see _extension_name)."""
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    if platform.machine() not in ("x86_64", "AMD64"):
        return flags
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        flags += ["-march=x86-64-v4", "-mprefer-vector-width=512"]
    elif capability == "AVX2":
        flags.append("-march=x86-64-v3")
    return flags


def _extension_name(flags: list[str]) -> str:
    """A name per source, flags, compiler, Python and torch install: each gets its own build
    directory instead of rebuilding (and invalidating) another's, as torch would where any
    of them changed the ninja file of a shared one."""
    identity = [
        hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        " ".join(flags),
        os.environ.get("CXX", "c++"),  # the compiler torch's ninja file runs
        sysconfig.get_path("include"),
        torch.__version__,
        str(Path(torch.__file__).parent),
    ]
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    return f"hdetach_cpu_{digest}"


def _stable_source(extensions_root: Path) -> Path:
    """The kernel's source copied to ``<extensions_root>/hdetach_sources/<digest>/``, a path
    that its content alone fixes, so that every checkout hands torch the same path.

    Written once and never touched again: a newer modification time would rebuild. The copy
    appears whole or not at all (a hard link to a finished file), and a process that loses
    the race to create it keeps the winner's.
    """
    text = SOURCE.read_bytes()
    digest = hashlib.sha256(text).hexdigest()[:16]
    target = extensions_root / "hdetach_sources" / digest / SOURCE.name
    if target.is_file() and target.read_bytes() == text:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staged = tempfile.mkstemp(dir=target.parent, prefix=f".{SOURCE.name}.")
    try:
        with os.fdopen(handle, "wb") as staged_file:
            staged_file.write(text)
        if target.exists():  # a damaged copy: replace it whole
            os.replace(staged, target)
        else:
            with contextlib.suppress(FileExistsError):  # another process's copy: the same
                os.link(staged, target)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    return target


def _drop_cuda_runtime_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No CUDA runtime is found")


def _cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, imported without its "No CUDA runtime is found"
    warning: torch's CUDA build logs it at import on a machine without a GPU, though this
    CPU-only extension needs no CUDA. Only that record, only during this import."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    logger.addFilter(_drop_cuda_runtime_notice)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        logger.removeFilter(_drop_cuda_runtime_notice)
    return cpp_extension


def _build() -> None:
    """Build (or find built) and load the extension; registers ``torch.ops.hdetach_cpu``."""
    cpp_extension = _cpp_extension()
    flags = _compile_flags()
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    start = time.perf_counter()
    cpp_extension.load(
        name=_extension_name(flags),
        sources=[str(_stable_source(Path(root)))],
        extra_cflags=flags,
        is_python_module=False,
        verbose=False,
    )
    _state["build_s"] = time.perf_counter() - start


def compiled_ops() -> ModuleType | None:
    """``torch.ops.hdetach_cpu`` (forward_chunk, backward_chunk), built or loaded on the
    first call; None where that failed (the reason is in ``unavailable_reason``)."""
    if _state["ops"] is not None or _state["error"] is not None:
        return _state["ops"]
    with _lock:
        if _state["ops"] is None and _state["error"] is None:
            try:
                _build()
                _state["ops"] = torch.ops.hdetach_cpu
            except Exception as error:  # no compiler, no ninja, a failed build or load
                _state["error"] = f"{type(error).__name__}: {error}".strip()[:2000]
    return _state["ops"]


def unavailable_reason() -> str | None:
    """Why the compiled recurrence cannot be had in this process, or None."""
    compiled_ops()
    return _state["error"]


def build_seconds() -> float | None:
    """Seconds this process spent building or loading the extension (None: not yet)."""
    return _state["build_s"]


def uses_compiled(*tensors: Tensor | None) -> bool:
    """Whether the fused backend runs this call's recurrence on the compiled kernel.

    Never while torch.compile traces or for tensors of a torch.func transform; otherwise
    as ``HDETACH_CPU_KERNEL`` says, for float32 and float64 CPU tensors.
    """
    if torch.compiler.is_compiling():
        return False
    setting = settings.cpu_kernel()
    if setting == "python":
        return False
    first = tensors[0]
    if first.device.type != "cpu" or any(
        t is not None and is_functorch_wrapped_tensor(t) for t in tensors
    ):
        return False
    if first.dtype not in DTYPES:
        _notice(
            str(first.dtype),
            f"the compiled CPU recurrence runs float32 and float64; {first.dtype} runs the "
            "fused backend's eager steps",
        )
        return False
    if compiled_ops() is not None:
        return True
    if setting == "compiled":
        raise RuntimeError(
            f"HDETACH_CPU_KERNEL=compiled, but the compiled recurrence is unavailable: "
            f"{_state['error']}"
        )
    _notice(
        "build",
        "the compiled CPU recurrence could not be built or loaded; the fused backend runs "
        f"its eager steps instead (slower). Reason: {_state['error']}",
    )
    return False


def _notice(key: str, message: str) -> None:
    """Warn once per process and ``key``: each fallback is announced, not repeated."""
    if key not in _state["warned"]:
        _state["warned"].add(key)
        warnings.warn(f"hdetach: {message}", RuntimeWarning, stacklevel=4)
