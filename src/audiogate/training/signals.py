"""Safe stopping on Ctrl+C / SIGTERM: the first signal asks the loop to stop at its next safe
point (a batch boundary); a second Ctrl+C aborts at once (see :mod:`audiogate.console` for
what "at once" means in the command and in library use)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType

from ..console import mark_interrupted, say_now, second_interrupt

log = logging.getLogger(__name__)


class StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next safe point."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.reason is not None and signum == signal.SIGINT:
            second_interrupt()
        mark_interrupted()
        self.reason = f"interrupted ({name})"
        if log.isEnabledFor(logging.WARNING):  # no logging here: see console.say_now
            say_now(f"WARNING {log.name}: {name}: stopping at the next safe point; finished "
                    "epochs are saved (Ctrl+C again to abort now)")


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Install :class:`StopFlag` for SIGINT and SIGTERM for the duration (main thread only;
    elsewhere the flag is returned but no handler is installed)."""
    flag = StopFlag()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, flag)
    except ValueError:  # not the main thread: cannot install handlers
        old = {}
    try:
        yield flag
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
