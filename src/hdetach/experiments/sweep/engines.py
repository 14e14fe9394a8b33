"""Where a sweep's runs execute: a local process pool, or Ray tasks on a cluster.

Both call ``run_one`` (or a function like it) with the run's config and its thread count
and hand back ``(name, summary)`` or ``(name, error text)``; the run's files are written to
its folder by the ordinary training loop, which neither engine changes. (The population
engine, ``sweep.population_engine``, trains several runs per process on the same pool.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from hdetach.experiments.config import Config, ConfigError
from hdetach.experiments.run.files import finite_or_none
from hdetach.experiments.run.folder import RunFolder
from hdetach.experiments.run.interrupt import SIGNALS, follow
from hdetach.experiments.train.loop import train

# A sweep task, one run of the grid: (name, config, threads) (not a learning task,
# ``tasks.Task``); an outcome: (name, summary or None, error text or None).
SweepTask = tuple[str, Config, int]
Outcome = tuple[str, dict[str, Any] | None, str | None]
NextTask = Callable[[], "SweepTask | None"]
RunFn = Callable[[Config, int], dict[str, Any]]


def plan(run_dir: Path, epochs: int | None = None) -> str:
    """What a run's folder needs: "done" (summary.json says diverged, or finished at
    ``epochs`` or more), "resume" (last.pt: interrupted, or finished short of ``epochs``)
    or "start"."""
    folder = RunFolder(run_dir)
    status = folder.status()
    if status == "diverged":
        return "done"
    if status == "finished" and (epochs is None or folder.trained_epochs() >= epochs):
        return "done"
    return "resume" if folder.last_checkpoint.is_file() else "start"


def run_one(cfg: Config, threads: int) -> dict[str, Any]:
    """Train, resume or just read one run; its summary. Its lines go to its folder's
    train.log."""

    folder = RunFolder(cfg.run_dir)
    todo = plan(folder.path, cfg.epochs)
    if todo == "done":
        return folder.read_summary()
    torch.set_num_threads(threads)
    with (
        folder.open_log() as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
    ):
        summary = (
            train(resume=folder.path, progress=False, epochs=cfg.epochs)
            if todo == "resume"
            else train(cfg, progress=False)
        )
    return finite_or_none(summary)  # as summary.json has it: NaN and infinities as None


def _attempt(fn: RunFn, name: str, cfg: Config, threads: int) -> Outcome:
    """Run ``fn``; an exception becomes the outcome's error text (its last line of trace)."""
    try:
        return name, fn(cfg, threads), None
    except Exception as e:  # a failed run is reported and retried, never fatal to the sweep
        return name, None, error_text(e)


def pack(folder: Path) -> bytes | None:
    """A run folder as gzipped tar bytes; None when it does not exist (yet)."""
    if not folder.is_dir():
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    """Write a packed run folder into ``folder`` (its files replace those there)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and escapes
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)


def attempt_shipped(
    fn: RunFn, name: str, cfg: Config, threads: int, sent: bytes | None
) -> tuple[Outcome, bytes | None]:
    """``_attempt`` in a folder of the worker's own, for workers that do not see the
    driver's disk: the driver's copy of the run folder (``sent``, to resume it) is unpacked
    there first, and the folder goes back packed, to be ``receive``d."""
    with tempfile.TemporaryDirectory(prefix="hdetach-run-") as tmp:
        here = Path(tmp) / "run"
        if sent is not None:
            unpack(sent, here)
        outcome = _attempt(fn, name, dataclasses.replace(cfg, run_dir=str(here)), threads)
        return outcome, pack(here)


def receive(cfg: Config, outcome: Outcome, packed: bytes | None) -> Outcome:
    """Unpack a folder that ``attempt_shipped`` sent back into the run's own folder; its
    config, summary and outcome then name that folder, not the worker's."""
    run_dir = Path(cfg.run_dir)
    if packed is not None:
        unpack(packed, run_dir)
    RunFolder(run_dir).relocate()
    name, summary, error = outcome
    return name, None if summary is None else {**summary, "run_dir": str(run_dir)}, error


def error_text(e: Exception) -> str:
    """An exception in one line: its type, message and where it was raised."""
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"


# The workers' start method: a fresh interpreter, which inherits no state of the driver's.
_CONTEXT = get_context("spawn")
_BUSY = threading.Lock()  # in a worker process: held while it runs a job


def _start_worker(stop: Any, driver: int) -> None:
    """Each worker process's start. A signal sent to the whole group (Ctrl-C in a terminal,
    SIGTERM to a job's every process) leaves an idle worker alone: the driver gets it too
    and ends the pool. A training run handles such a signal itself (``StopRequest``), and
    stops as well when the driver sets ``stop``, which is how a signal sent to the driver
    alone reaches it."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    follow(stop)
    threading.Thread(target=_watch_driver, args=(stop, driver), daemon=True).start()


def _watch_driver(stop: Any, driver: int) -> None:
    """Stop and exit once the driver is gone (killed, so it could not end the pool): the
    run in progress stops at its next step with a checkpoint, then the process exits; an
    idle one exits at once (it would wait for a job forever: its siblings hold the job
    queue open).

    A thread polling the parent's pid rather than prctl(PR_SET_PDEATHSIG): that is Linux
    alone, fires when the parent's *thread* that started the worker ends, and a signal
    would have to tell a training worker from an idle one all the same. Ten getppid calls
    a second cost nothing beside training."""
    while os.getppid() == driver:
        time.sleep(0.1)
    stop.set()
    with _BUSY:
        os._exit(1)


def _run_job(
    attempt: Callable[[Any, list[SweepTask]], list[Outcome]], fn: Any, job: list[SweepTask]
) -> list[Outcome]:
    """``attempt(fn, job)`` in a worker, marked busy (see ``_watch_driver``)."""
    with _BUSY:
        return attempt(fn, job)


def worker_pool(jobs: int, stop: Any) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes whose runs stop when ``stop`` (an Event) is set."""
    return ProcessPoolExecutor(
        jobs, mp_context=_CONTEXT, initializer=_start_worker, initargs=(stop, os.getpid())
    )


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor.kill_workers() comes with Python 3.14; until then, its table.
    for process in list((pool._processes or {}).values()):
        process.kill()


def local_engine(
    next_task: NextTask,
    jobs: int,
    fn: RunFn = run_one,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[Outcome]:
    """Run tasks in ``jobs`` spawned processes, asking for a task only when a process is
    free (so none starts after a stop). A process that dies fails its runs; the pool is
    replaced. Once ``stopping()``, the running runs stop at their next step."""

    def next_job() -> list[SweepTask] | None:
        task = next_task()
        return None if task is None else [task]

    return pool_engine(next_job, jobs, _attempt_each, fn, stopping)


def _attempt_each(fn: RunFn, tasks: list[SweepTask]) -> list[Outcome]:
    return [_attempt(fn, *task) for task in tasks]


# A job: tasks that one worker process takes on together; run by an attempt function,
# attempt(fn, tasks) -> one outcome per task (importable: it runs in the workers).
NextJob = Callable[[], "list[SweepTask] | None"]


def pool_engine(
    next_job: NextJob,
    jobs: int,
    attempt: Callable[[Any, list[SweepTask]], list[Outcome]],
    fn: Any,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[Outcome]:
    """Run jobs in ``jobs`` spawned processes, asking for a job only when a process is
    free. A process that dies fails its jobs' runs; the pool is replaced.

    Once ``stopping()`` the workers are told (a shared flag: the driver alone may have
    been signalled) and their runs stop at a step boundary with a checkpoint. If the
    engine ends otherwise (closed early, or an exception such as a second Ctrl-C), the
    workers are killed: their runs keep their last checkpoint, written atomically."""
    stop = _CONTEXT.Event()
    pool, pending = worker_pool(jobs, stop), {}
    try:
        while True:
            while len(pending) < jobs and (job := next_job()) is not None:
                pending[pool.submit(_run_job, attempt, fn, job)] = [name for name, _, _ in job]
            if not pending:
                return
            # a short timeout, to pass a stop on while every run is still training (the
            # flag is set here, not in the signal handler, which must take no lock)
            done, _ = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
            if stopping():
                stop.set()
            broken = False
            for future in done:
                names = pending.pop(future)
                try:
                    yield from future.result()
                except BrokenProcessPool:
                    broken = True
                    yield from ((name, None, "the worker process died") for name in names)
            if broken:
                for names in pending.values():
                    yield from ((name, None, "the worker process died") for name in names)
                pending.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = worker_pool(jobs, stop)
    except BaseException:
        _kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ray_engine(
    next_task: NextTask,
    address: str | None,
    stopping: Callable[[], bool],
    fn: RunFn = run_one,
    ship: bool = False,
) -> Iterator[Outcome]:
    """Run tasks as Ray tasks (one CPU per thread) on the cluster at ``address`` (or the
    Ray already initialised in this process). Ray schedules them as CPUs free up. The
    run folders live on a disk every node sees, or with ``ship`` on the driver's alone:
    each run then trains in a folder of its worker's, shipped there and back
    (``attempt_shipped``). On a stop, in-flight runs are cancelled once: Ray raises the
    cancellation in the task as a SIGINT, so a training run stops at its next step with a
    checkpoint and returns (shipped: its folder comes back). If the engine ends otherwise
    (a second Ctrl-C), their workers are killed: the runs resume from their last
    checkpoint (shipped: from the folder the driver last received)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError("--engine ray needs Ray: pip install 'hdetach[ray]'") from None
    if not ray.is_initialized():
        # ray.init replaces the SIGTERM handler with one that exits at once; the sweep's
        # own (a stop at a step boundary, as for Ctrl-C) is put back.
        handler = signal.getsignal(signal.SIGTERM)
        ray.init(address=address, log_to_driver=False)
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    remote = ray.remote(max_retries=0)(attempt_shipped if ship else _attempt)
    refs: dict[Any, tuple[str, Config]] = {}
    cancelled: set[Any] = set()
    try:
        while True:
            while (task := next_task()) is not None:
                name, cfg, threads = task
                sent = (pack(Path(cfg.run_dir)),) if ship else ()
                ref = remote.options(num_cpus=threads).remote(fn, name, cfg, threads, *sent)
                refs[ref] = name, cfg
            if not refs:
                return
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
            if stopping():
                for ref in refs.keys() - cancelled:  # once: a second is a second Ctrl-C
                    ray.cancel(ref)
                    cancelled.add(ref)
            for ref in done:
                name, cfg = refs.pop(ref)
                try:
                    got = ray.get(ref)
                except ray.exceptions.RayError as e:
                    yield name, None, f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
                    continue
                yield receive(cfg, *got) if ship else got
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)


def cores() -> int:
    """The CPU cores this process may run on."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n or 1


def layout(runs: int, jobs: int | None, threads: int | None) -> tuple[int, int]:
    """Runs at once and threads per run: by default as many runs at once as cores (or
    runs), and the cores shared among them."""
    jobs = jobs or min(cores(), runs)
    return jobs, threads or max(1, cores() // jobs)


def oversubscription(jobs: int, threads: int) -> str | None:
    """A warning when the runs' threads outnumber the cores that are free, else None.

    Each run's OpenMP threads spin while they wait for each other, so a run whose threads
    share a core with other work slows many times over, not twice: on a 2-core machine a
    2-thread pixel-MNIST step went from 0.23 s to 12 s with the other core busy. The
    machine's 1-minute load average stands for the work already running."""
    if threads == 1:
        return None  # one-thread runs share a core by turns, without spinning
    wanted, have = jobs * threads, cores()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    if wanted <= max(0, have - busy):
        return None
    where = f"{have} cores" + (f", about {busy} busy (load average)" if busy else "")
    return (
        f"warning: {jobs} runs x {threads} threads = {wanted} threads on {where}; runs whose "
        f"threads share a core slow down many times over; use --threads 1 or fewer --jobs"
    )
