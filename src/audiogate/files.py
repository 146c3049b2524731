"""File helpers used everywhere a file is written or fingerprinted.

Every file audiogate writes goes through :func:`atomic_write`: a temporary file beside the
target, flushed and fsync-ed, then renamed over it. A crash, ``kill -9`` or a full disk leaves
either the old file or the new one, never half of one; a full disk is reported as one
:class:`DiskFullError` naming the file, the bytes it needed and the bytes free.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

HASH_CHUNK = 1 << 20
"""Bytes read at a time when hashing a file."""

_IN_PROGRESS: set[Path] = set()
"""Temporary files of the :func:`atomic_write` calls under way (see :func:`remove_temporaries`)."""

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The errors of a file system without room: no space left, or the user's quota exceeded."""

before_rename: Callable[[Path], None] | None = None
"""Test hook: called with the temporary file of each :func:`atomic_write` once the caller has
written its content, before it is flushed and renamed over the target (a test stops the
process there, in the middle of a write)."""


class DiskFullError(OSError):
    """A write found no room on its file system (``ENOSPC``, or a quota: ``EDQUOT``). Its
    message is one line: the file, the bytes it needed and the bytes free (see
    :func:`disk_full`)."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(path: Path, *, size: int | None, written: int) -> DiskFullError:
    """The :class:`DiskFullError` of a write of ``path`` that ran out of room: ``size``, the
    bytes it was writing (None: unknown, then at least the ``written`` ones), against the
    bytes its folder's file system has free now (the partial file removed)."""
    try:
        free = f"{human_bytes(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    if size is not None:
        needed = f"it needs {human_bytes(size)}, "
    else:  # a streamed write: only what got onto the disk before it filled is known
        needed = f"it needs more than {human_bytes(written)}, " if written else ""
    return DiskFullError(errno.ENOSPC, f"disk full: cannot write {path}: {needed}{free} on "
                         f"{path.parent}; free some space or write elsewhere", str(path))


def human_bytes(n: int) -> str:
    """``n`` bytes as people read it: ``512 B``, ``3.4 MiB``, ``1.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from (a library may wrap the ``OSError``,
    as ``torch.save`` does in a ``RuntimeError``), says the file system has no room."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = True,
                 size: int | None = None) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on success rename it over
    ``path``. On any exception the temporary file is removed and ``path`` is untouched; a
    full disk raises :class:`DiskFullError` instead of the error that said so.

    ``durable``: fsync the file and its folder, so the new content survives a power cut (off
    for bulk cache data that can be rebuilt). ``size``: the bytes about to be written, if known
    (a full disk's message says how many were needed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    _IN_PROGRESS.add(tmp)
    full = False
    written = 0
    try:
        with open(tmp, "wb") as fh:
            yield fh
            if before_rename is not None:
                before_rename(tmp)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        if not is_disk_full(exc):
            raise
        full = True
        with contextlib.suppress(OSError):
            written = tmp.stat().st_size
    finally:
        tmp.unlink(missing_ok=True)
        _IN_PROGRESS.discard(tmp)
    if full:
        raise disk_full(target, size=size, written=written) from None
    if durable:
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def remove_temporaries() -> None:
    """Delete the temporary files of writes under way, for a process about to end at once
    (``os._exit`` runs no ``finally``); their targets keep their previous content."""
    for tmp in list(_IN_PROGRESS):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, durable=durable, size=len(data)) as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes(path, text.encode())


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (JSON has no NaN or infinity),
    numpy scalars and arrays turned into plain numbers and lists, tuples into lists."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def to_json(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of ``value`` (see :func:`json_safe`); never emits ``NaN``. Every JSON
    audiogate writes or prints goes through here."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False, sort_keys=sort_keys)


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write strict JSON (:func:`to_json`) atomically."""
    write_text(path, to_json(value) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes. Raises ``OSError`` if it is unreadable or not a regular
    file (reading a FIFO or a device could block or never end)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
