"""The live loop: a source's blocks through a :class:`~audiogate.deploy.listen.Listener` to the
actions, until the stream ends, Ctrl+C or SIGTERM.

* The stream ends (a file, stdin closed): what is open is decided; exit status 0.
* A gap (a microphone lost, ``--reconnect``): what is open is decided, listening goes on.
* SIGTERM (a service manager stopping it): what is open is decided; exit status 0.
* Ctrl+C: what is open is decided, exit status 130; a second Ctrl+C meanwhile ends the
  process at once (:func:`audiogate.console.cli_interrupts`): the open segment is dropped.

The actions get every event; they are closed at the end, each waiting a bounded time for its
queued work (:meth:`~audiogate.deploy.actions.CommandAction.close`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any

import numpy as np

from ..console import EXIT_ABORTED, mark_interrupted
from .listen import Event, Listener

log = logging.getLogger(__name__)

Action = Callable[[Event], Any]


class Terminated(BaseException):
    """SIGTERM arrived: stop listening, decide what is open, exit 0. A BaseException, as
    KeyboardInterrupt is: code that catches Exception (a logging handler the signal
    interrupted) must not swallow it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    mark_interrupted()
    raise Terminated


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the duration (elsewhere
    nothing is installed)."""
    try:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _emit(events: Sequence[Event], actions: Sequence[Action]) -> None:
    for event in events:
        for action in actions:
            action(event)


def run_listener(listener: Listener, source: Iterable[np.ndarray | None],
                 actions: Sequence[Action], *,
                 on_start: Callable[[], None] | None = None) -> int:
    """Feed ``source`` to ``listener``, every event to every action; the exit status (0, or
    130 after Ctrl+C). ``on_start`` is called once the signals are handled (it may announce
    that listening began). A source's error propagates after what was open is decided."""
    status = 0
    try:
        with sigterm_stops():
            try:
                if on_start is not None:
                    on_start()
                for block in source:
                    if block is None:
                        _emit(listener.flush(), actions)
                    else:
                        _emit(listener.feed(block), actions)
            except KeyboardInterrupt:
                log.warning("interrupted: deciding what was heard last (Ctrl+C again to drop "
                            "it)")
                status = EXIT_ABORTED
            except Terminated:
                log.warning("terminated (SIGTERM): deciding what was heard last")
            finally:
                _emit(listener.flush(), actions)
    finally:
        for action in actions:
            close = getattr(action, "close", None)
            if close is not None:
                close()
    return status
