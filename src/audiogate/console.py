"""How the ``audiogate`` command treats its terminal: Ctrl+C, and C libraries' chatter.

* Ctrl+C (:func:`cli_interrupts`): the first Ctrl+C stops the command (a training run stops
  at its next safe point, see :mod:`audiogate.training.signals`; anything else unwinds and
  reports ``audiogate: aborted``); a second one, at any moment after the first, wherever the
  process is (the rest of an epoch, the final test report, a file being written, the
  interpreter shutting down), ends the process at once: it prints ``audiogate: aborted``,
  deletes the temporary files of unfinished writes (atomic writes keep every finished file
  whole) and exits with status 130. Used as a library, a second Ctrl+C raises
  ``KeyboardInterrupt`` instead, so a notebook kernel survives it.
* ``-q`` (:func:`native_stderr_silenced`): what C libraries write straight to file descriptor
  2 (libmpg123's "Note: Illegal Audio-MPEG-Header" for a broken MP3, through libsndfile) is
  dropped; Python's own messages (logging, warnings, tracebacks) still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

from .files import remove_temporaries

EXIT_ABORTED = 130
"""Exit status after Ctrl+C (128 + SIGINT), as shells report it."""
ABORTED = "audiogate: aborted"


class _Process:
    """How this process treats Ctrl+C (process-wide, like the signal handlers themselves)."""

    hard_abort = False
    """A second Ctrl+C ends the process at once (the command line), not KeyboardInterrupt."""
    interrupted = False
    """A first Ctrl+C or SIGTERM has been received."""


def say_now(text: str) -> None:
    """Write ``text`` and a newline to standard error with one ``os.write``: safe inside a
    signal handler, where the ``print`` or ``logging`` the signal interrupted may hold the
    buffered stream (writing to it again raises "reentrant call")."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced, e.g. captured
        fd = 2
    with contextlib.suppress(OSError):
        os.write(fd, f"{text}\n".encode())


def abort_now() -> NoReturn:
    """Print ``audiogate: aborted``, delete unfinished temporary files, exit 130 at once."""
    remove_temporaries()
    say_now(f"\n{ABORTED}")
    os._exit(EXIT_ABORTED)


def mark_interrupted() -> None:
    """Record a first Ctrl+C or SIGTERM: from now on a Ctrl+C aborts (see module doc)."""
    _Process.interrupted = True


def second_interrupt() -> NoReturn:
    """A Ctrl+C after the first: end the process at once (command line) or raise
    ``KeyboardInterrupt`` (library use)."""
    if _Process.hard_abort:
        abort_now()
    raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _Process.interrupted:
        second_interrupt()
    mark_interrupted()
    raise KeyboardInterrupt


@contextlib.contextmanager
def cli_interrupts() -> Iterator[None]:
    """Ctrl+C as the command treats it, for the duration (main thread only).

    On the way out the previous handling comes back, unless the command was interrupted:
    then the process is ending, and a Ctrl+C during the interpreter's shutdown must still end
    it at once rather than print a traceback.
    """
    old = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    _Process.hard_abort, _Process.interrupted = True, False
    try:
        yield
    finally:
        if not _Process.interrupted:
            signal.signal(signal.SIGINT, old)
            _Process.hard_abort = False


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Drop what C code writes to file descriptor 2 for the duration; ``sys.stderr`` (Python's
    messages) keeps writing to the terminal through a copy of the descriptor. Worker processes
    started meanwhile inherit both. A ``sys.stderr`` that is not file descriptor 2 (captured,
    e.g. by pytest) is left as it is."""
    try:
        own_fd = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own_fd = False
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    original = sys.stderr
    if own_fd:  # stays open: log handlers made meanwhile keep a reference to it
        sys.stderr = open(os.dup(saved), "w", buffering=1,  # noqa: SIM115
                          encoding=original.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr = original
