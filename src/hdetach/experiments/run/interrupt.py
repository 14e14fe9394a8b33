"""Ctrl-C (SIGINT) and a scheduler's SIGTERM as a request to stop at a safe point, for the
training loop and the sweep driver; and the flag through which a sweep's driver forwards
its stop to its worker processes (``follow``)."""

from __future__ import annotations

import signal
import sys
from typing import Protocol

# SLURM at its time limit, docker stop, Kubernetes and systemd send SIGTERM to the process
# they started; a terminal sends SIGINT to its whole process group. Both mean the same.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Flag(Protocol):
    def is_set(self) -> bool: ...


_followed: Flag | None = None  # in a sweep's worker process: the driver's stop flag


def follow(flag: Flag | None) -> None:
    """In a worker process: every ``StopRequest`` here also counts as requested once
    ``flag`` (a multiprocessing Event its driver sets when it is asked to stop) is set.

    The driver alone gets a scheduler's signal, so it must pass the request on; a flag,
    unlike a signal sent on to a worker, cannot arrive in the moment between two runs and
    be lost: a run that starts after it was set stops before its first step."""
    global _followed
    _followed = flag


class StopRequest:
    """While active (``with``), SIGINT and SIGTERM set ``requested`` instead of ending the
    process, so the caller can stop where its state is consistent (after a step, before
    the next run). In a worker process it is also requested by the flag it ``follow``s.

    ``message`` is printed once, at the first request. With ``second_aborts`` a second
    signal raises KeyboardInterrupt at once (a signal after the flag is a first: a
    terminal's Ctrl-C reaches a worker directly, and its driver sets the flag as well).
    """

    def __init__(self, message: str, second_aborts: bool = False) -> None:
        self.message = message
        self.second_aborts = second_aborts
        self._requested = False
        self._signalled = False

    @property
    def requested(self) -> bool:
        if not self._requested and _followed is not None and _followed.is_set():
            self._request("stop requested")
        return self._requested

    def __enter__(self) -> StopRequest:
        self._old = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self._signalled and self.second_aborts:
            raise KeyboardInterrupt
        self._signalled = True
        if not self._requested:
            self._request("interrupt" if signum == signal.SIGINT else signal.Signals(signum).name)

    def _request(self, why: str) -> None:
        self._requested = True
        print(f"\n{why}: {self.message}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():  # None: a handler not set from Python
            signal.signal(sig, signal.SIG_DFL if old is None else old)
