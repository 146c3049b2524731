"""The on-disk cache: what is computed once from a file (its decoded audio and clean features,
or its speaker embedding) and kept for every later run.

An entry is keyed by the SHA-256 of the file's bytes; a *namespace* holds the entries of one
*spec*, everything the computation depends on (feature config, stored length; encoder and VAD
files and settings), so a change of any of them is a new namespace. Layout::

    <root>/<namespace>/spec.json               the spec, for people
    <root>/<namespace>/<shard>.<column>.npy    one array per column: a row of fixed shape per
                                               entry, or (ragged) the entries' values end to end
    <root>/<namespace>/<shard>.json            the shard's index, written last: per entry its
                                               digest and scalar fields, and the sources

A *source* record maps a file's fast key (path, size, mtime) to its digest (or the reason it
is unusable), so a second run costs one ``stat`` per file; an edited file gets a new size or
mtime and is hashed (and, if its bytes changed, computed) again. Every file is written under
a temporary name and renamed, and a shard exists only once its index does: an interrupted run
leaves no partial entry and keeps the shards it finished. Memory stays bounded: at most
``shard_rows`` new entries are buffered, and reads are positioned reads or memory maps.

:class:`ShardStore` is the store; :class:`~audiogate.data.cache.FeatureCache` and
:class:`~audiogate.speech.embeddings.EmbeddingCache` are its two kinds of entry.
:meth:`ShardStore.fill` brings clips in, computing what is missing in worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import AudioError, DataError
from ..files import atomic_write, sha256_file, to_json, write_bytes
from .audio_io import load_audio
from .discover import Clip, Skipped
from .workers import ordered_map

log = logging.getLogger(__name__)

STALE_TMP_S = 3600.0
"""Temporary files older than this (seconds) are left-overs of a killed run and removed."""

FastKey = tuple[str, int, int]
"""``(path, size in bytes, mtime in ns)`` of a file."""


@dataclass(frozen=True)
class Source:
    """What one file gave: its content ``digest``, or the ``reason`` it is unusable."""

    key: FastKey
    digest: str | None
    reason: str | None = None


@dataclass(frozen=True)
class Entry:
    """What one file's contents gave: ``fields``, scalars kept in the shard's index, and one
    array per column of the store."""

    digest: str
    fields: tuple[Any, ...]
    arrays: Mapping[str, np.ndarray]


Work = Callable[[Sequence[str]], list[tuple[Source, Entry | None]]]
"""What a worker process does with a chunk of file paths: one source (and entry) each."""


def fast_key(path: str) -> FastKey | None:
    """The file's fast key, or None if it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, int(st.st_size), int(st.st_mtime_ns))


def read_source(path: str, *, sr: int, max_seconds: float) -> tuple[Source, np.ndarray | None]:
    """Decode ``path`` (its first ``max_seconds`` at ``sr`` Hz) and hash its bytes, in a worker:
    the source and the samples, or the source with the reason it is unusable (kept only for a
    file that could be hashed, so a file that cannot be read at all is tried again)."""
    key = fast_key(path) or (path, -1, -1)
    try:
        y = load_audio(path, sr=sr, max_seconds=max_seconds)
        return Source(key, sha256_file(path)), y
    except AudioError as exc:
        try:
            digest: str | None = sha256_file(path)
        except OSError:
            digest = None
        return Source(key, digest, exc.reason), None
    except OSError as exc:
        return Source(key, None, f"cannot read ({exc.strerror or exc})"), None


@dataclass
class Shard:
    """One finished shard: its name and the index fields of its entries, row by row."""

    name: str
    fields: list[list[Any]]


class ShardStore:
    """One namespace of the cache (see the module docstring).

    ``spec``: what every entry depends on (JSON data; its digest names the namespace, after
    ``prefix``); ``columns``: the arrays of an entry, ``ragged`` the ones whose length varies
    (stored end to end). ``temporary=True`` puts it in a fresh temporary folder, removed with
    the object (nothing kept); ``read_only=True`` opens what another process wrote and writes
    nothing.
    """

    what = "cache"

    def __init__(self, root: str | os.PathLike[str], *, spec: Mapping[str, Any],
                 columns: Sequence[str], ragged: Sequence[str] = (), prefix: str = "",
                 shard_rows: int = 256, temporary: bool = False,
                 read_only: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="audiogate-cache-") if temporary else None
        self.root = Path(self._tmp.name if self._tmp else root)
        blob = to_json(dict(spec), indent=None, sort_keys=True)
        self.folder = self.root / (prefix + hashlib.sha256(blob.encode()).hexdigest()[:24])
        self.columns, self.ragged = tuple(columns), frozenset(ragged)
        self.shard_rows, self.read_only = shard_rows, read_only
        self.shards: list[Shard] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._sources: dict[FastKey, Source] = {}
        self._new_entries: list[Entry] = []
        self._new_digests: set[str] = set()
        self._new_sources: list[Source] = []
        if read_only:
            if not self.folder.is_dir():
                raise DataError(f"{self.what} {self.folder} not found; with several machines, "
                                "--cache-dir must be on a file system they share")
        else:
            self._make_folder(spec)
        for index in sorted(self.folder.glob("shard-*.json")):
            self._register(index)

    def _make_folder(self, spec: Mapping[str, Any]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_bytes(self.folder / "spec.json", to_json(dict(spec), indent=1).encode(),
                        durable=False)
        except OSError as exc:
            raise DataError(f"cannot write the {self.what} in {self.root} ({exc}); choose "
                            "another --cache-dir or use --no-cache") from None
        now = time.time()
        for path in self.folder.rglob("*.tmp"):
            try:
                if now - path.stat().st_mtime > STALE_TMP_S:
                    path.unlink()
            except OSError:
                pass

    # ----- index -----
    def column_path(self, shard: int | str, column: str) -> Path:
        """The file of ``column`` in shard ``shard`` (its number, or its name)."""
        name = self.shards[shard].name if isinstance(shard, int) else shard
        return self.folder / f"{name}.{column}.npy"

    def _register(self, index: Path) -> None:
        name = index.name[: -len(".json")]
        try:
            meta = json.loads(index.read_text())
            entries, sources = meta["entries"], meta["sources"]
            if entries and not all(self.column_path(name, c).is_file() for c in self.columns):
                raise ValueError("data file missing")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring damaged %s shard %s (%s)", self.what, index, exc)
            return
        shard_id = len(self.shards)
        self.shards.append(Shard(name, [list(e[1:]) for e in entries]))
        self._registered(shard_id)
        for row, entry in enumerate(entries):
            self._where.setdefault(entry[0], (shard_id, row))
        for path, size, mtime, digest, reason in sources:
            key = (path, int(size), int(mtime))
            self._sources[key] = Source(key, digest, reason)

    def _registered(self, shard: int) -> None:
        """A shard was added to the index (a kind of entry derives what it reads by)."""

    def source(self, key: FastKey) -> Source | None:
        """The recorded source for ``key`` if its entry (or its failure) is usable."""
        src = self._sources.get(key)
        if src is None or (src.reason is None and src.digest not in self._where):
            return None
        return src

    def digest_of(self, path: str) -> str | None:
        """The digest of the file at ``path`` as recorded (None if it is not, or changed)."""
        key = fast_key(path)
        source = self.source(key) if key else None
        return source.digest if source else None

    def locate(self, digest: str) -> tuple[int, int] | None:
        """``(shard, row)`` of a stored entry (flushed ones only)."""
        return self._where.get(digest)

    # ----- writing -----
    def add(self, source: Source, entry: Entry | None) -> None:
        """Record what a file gave; store ``entry`` unless its digest is already stored.
        Failures are recorded only for files that could be hashed."""
        if self.read_only:
            raise DataError(f"{self.what} {self.folder} is open read-only")
        if source.reason is not None and source.digest is None:
            return
        self._new_sources.append(source)
        if (entry is not None and entry.digest not in self._where
                and entry.digest not in self._new_digests):
            self._new_entries.append(entry)
            self._new_digests.add(entry.digest)
        if len(self._new_entries) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered entries and sources as one new shard."""
        if not self._new_sources and not self._new_entries:
            return
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        entries, sources = self._new_entries, self._new_sources
        if entries:
            for column in self.columns:
                arrays = [e.arrays[column] for e in entries]
                with atomic_write(self.column_path(name, column), durable=False) as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(
                        np.concatenate(arrays) if column in self.ragged else np.stack(arrays)))
        meta = {"entries": [[e.digest, *e.fields] for e in entries],
                "sources": [[*s.key, s.digest, s.reason] for s in sources]}
        write_bytes(self.folder / f"{name}.json", to_json(meta, indent=None).encode(),
                    durable=False)
        self._new_entries, self._new_sources, self._new_digests = [], [], set()
        self._register(self.folder / f"{name}.json")

    # ----- filling -----
    def fill(self, clips: Sequence[Clip], work: Work, *, workers: int = 0,
             progress: bool = True, desc: str = "decode") -> list[Source | None]:
        """Bring every clip into the store: ``work`` computes, in ``workers`` processes (0 =
        all cores), the ones it lacks. Returns each clip's source (None: it could not be
        read). A read-only store must hold every clip already."""
        sources: list[Source | None] = []
        todo: list[int] = []
        for i, clip in enumerate(clips):
            key = fast_key(clip.path)
            sources.append(self.source(key) if key else None)
            if sources[-1] is None:
                todo.append(i)
        if self.read_only and todo:
            raise DataError(f"{len(todo)} clip(s) are not in the {self.what} {self.folder} "
                            f"(first: {clips[todo[0]].path}); every process must see the same "
                            "data and cache at the same paths (a shared file system)")
        bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo,
                   leave=False)
        try:
            for i, (source, entry) in zip(todo, ordered_map(
                    work, [clips[i].path for i in todo], workers=workers, bar=bar), strict=True):
                self.add(source, entry)
                sources[i] = source
        finally:
            self.flush()
            bar.close()
        return sources

    def sort_out(self, clips: Sequence[Clip], sources: Sequence[Source | None], *,
                 missing: str) -> tuple[list[Clip], list[tuple[int, int]], list[Skipped]]:
        """The clips whose entry is stored, with its ``(shard, row)``, and the others, skipped
        with their reason (else ``missing``)."""
        kept: list[Clip] = []
        refs: list[tuple[int, int]] = []
        skipped: list[Skipped] = []
        for clip, source in zip(clips, sources, strict=True):
            ref = self.locate(source.digest) if source and source.digest else None
            if source is None or source.reason is not None or ref is None:
                skipped.append(Skipped(clip.path, source.reason if source and source.reason
                                       else missing))
            else:
                kept.append(clip)
                refs.append(ref)
        return kept, refs, skipped

    # ----- reading -----
    def read_rows(self, column: str, refs: np.ndarray, out: np.ndarray) -> None:
        """Rows ``refs`` ``[shape=(k, 2)]`` of a fixed-shape ``column`` into ``out`` (its dtype
        and row shape), by positioned reads: the file data stays in the OS page cache, so this
        process's memory does not grow with the size of the cache."""
        for shard in np.unique(refs[:, 0]):
            sel = np.flatnonzero(refs[:, 0] == shard)
            part = np.empty((len(sel), *out.shape[1:]), dtype=out.dtype)
            path = self.column_path(int(shard), column)
            with open(path, "rb") as fh:
                start = _data_start(fh)
                row_bytes = part[0].nbytes if len(part) else 0
                for i, row in enumerate(refs[sel, 1]):
                    fh.seek(start + int(row) * row_bytes)
                    if fh.readinto(memoryview(part[i]).cast("B")) != row_bytes:
                        raise self._truncated(path)
            out[sel] = part

    def read_segments(self, shard: int, column: str, offsets: np.ndarray, counts: np.ndarray,
                      out: np.ndarray) -> None:
        """``counts[i]`` values from ``offsets[i]`` of shard ``shard``'s ragged ``column`` into
        the start of row ``i`` of ``out``, by positioned reads (see :meth:`read_rows`)."""
        path = self.column_path(shard, column)
        with open(path, "rb") as fh:
            start, size = _data_start(fh), out.itemsize
            for i, (offset, count) in enumerate(zip(offsets.tolist(), counts.tolist(),
                                                    strict=True)):
                fh.seek(start + offset * size)
                if fh.readinto(memoryview(out[i]).cast("B")[:count * size]) != count * size:
                    raise self._truncated(path)

    def _truncated(self, path: Path) -> DataError:
        return DataError(f"{self.what} file {path} is truncated; delete it to rebuild that "
                         "part of the cache")


def _data_start(fh: Any) -> int:
    """Skip the header of the ``.npy`` file open in ``fh``; the offset of its data."""
    major, _ = np.lib.format.read_magic(fh)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    read_header(fh)
    return int(fh.tell())
