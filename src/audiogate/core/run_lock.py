"""One process per run folder: ``<run>/run.lock``, held for the run's life.

Two ``train`` runs given the same ``--name`` at once (or a ``--resume`` of a run still going)
would write the same ``best.pt``, ``last.pt`` and ``status.json``, and one of them would be
lost without a word. The process that makes or resumes a run folder takes an exclusive
``flock`` on its ``run.lock`` and keeps it until the run ends; a second one is refused, named
by the pid, host and start time the file holds. The kernel releases the lock of a process that
dies however it dies (``kill -9`` included), so a run killed before it could remove the file
leaves only its words: the next run takes the lock over and says whose it was.

Within one process, taking a lock it already holds is allowed (the folder is made, then the
run's status takes it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import to_json

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

NO_LOCK = -1
"""Held without a lock: the file system has none (a warning said so)."""
_HELD: dict[Path, int] = {}
"""Run folders whose lock this process holds, and the lock file's descriptor (or
:data:`NO_LOCK`)."""


def lock_run(root: Path) -> None:
    """Take ``root``'s lock for this process (already held: nothing to do); raise
    :class:`ConfigError` naming the holder if another live process has it. A lock file left by
    a process that ended without removing it is taken over with a warning naming it."""
    key = root.resolve()
    if key in _HELD:
        return
    path = key / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # a file system without locks (e.g. NFS mounted nolock)
            os.close(fd)
            log.warning("cannot lock run folder %s (%s): another run given the same folder "
                        "would not be refused", key, exc.strerror or exc)
            _HELD[key] = NO_LOCK
            return
        if not locked:
            holder = _holder(fd)
            os.close(fd)
            raise ConfigError(_in_use(key, holder))
        if _same_file(fd, path):
            break
        os.close(fd)  # released and removed between our open and our lock: open it anew
    left = _holder(fd)
    if left:
        log.warning("run folder %s: taking over the lock of %s, which ended without releasing "
                    "it (the run was killed); its status.json may still say running", key,
                    _who(left))
    os.ftruncate(fd, 0)
    os.pwrite(fd, to_json({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": _now()}, indent=None).encode(), 0)
    _HELD[key] = fd


def unlock_run(root: Path) -> None:
    """Release ``root``'s lock if this process holds it, removing the file."""
    key = root.resolve()
    fd = _HELD.pop(key, None)
    if fd is None or fd == NO_LOCK:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # if it cannot be removed, it names nobody
        (key / LOCK_NAME).unlink()  # removed while still held: nobody can have taken it
    os.close(fd)


def check_unlocked(root: Path) -> None:
    """Raise :class:`ConfigError` if another live process holds ``root``'s lock (checked
    before any work, so a second run is refused at once; :func:`lock_run` decides)."""
    key = root.resolve()
    if key in _HELD:
        return
    try:
        fd = os.open(key / LOCK_NAME, os.O_RDWR)
    except OSError:
        return  # no lock file (or none we can open): nobody holds it
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            raise ConfigError(_in_use(key, _holder(fd)))
    except OSError:
        pass  # a file system without locks: lock_run says so
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder ({} if empty or unreadable)."""
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _who(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} (started "
            f"{holder.get('started')})")


def _in_use(root: Path, holder: dict[str, Any]) -> str:
    return (f"run folder {root} is in use by another run: {_who(holder)}; wait for it to "
            "end, or start a new run with another --name")


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
