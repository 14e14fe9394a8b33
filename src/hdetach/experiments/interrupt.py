"""Ctrl-C as a request to stop at a safe point, for the training loop and the sweep driver."""

from __future__ import annotations

import signal
import sys


class StopRequest:
    """While active (``with``), SIGINT sets ``requested`` instead of raising, so the caller
    can stop where its state is consistent (after a step, before the next run).

    ``message`` is printed once, at the first Ctrl-C. With ``second_aborts`` a second
    Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self, message: str, second_aborts: bool = False) -> None:
        self.message = message
        self.second_aborts = second_aborts
        self.requested = False

    def __enter__(self) -> StopRequest:
        self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if self.second_aborts:
                raise KeyboardInterrupt
            return
        self.requested = True
        print(f"\ninterrupt: {self.message}", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)
