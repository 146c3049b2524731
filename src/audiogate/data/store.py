"""The on-disk cache: what is computed once from a file (its decoded audio and clean features,
or its speaker embedding) and kept for every later run.

An entry is keyed by the SHA-256 of the file's bytes; a *namespace* holds the entries of one
*spec*, everything the computation depends on (feature config, stored length; encoder and VAD
files and settings), so a change of any of them is a new namespace. Layout::

    <root>/<namespace>/spec.json               the spec, for people
    <root>/<namespace>/<shard>.<column>.npy    one array per column: a row of fixed shape per
                                               entry, or (ragged) the entries' values end to end
    <root>/<namespace>/<shard>.json            the shard's index, written last: per entry its
                                               digest and scalar fields, the sources, and the
                                               check: the SHA-256 of the entries, and the size
                                               and SHA-256 of each array file

A *source* record maps a file's fast key (path, size, mtime) to its digest (or the reason it
is unusable), so a second run costs one ``stat`` per file; an edited file gets a new size or
mtime and is hashed (and, if its bytes changed, computed) again. Every file is written under
a temporary name and renamed, and a shard exists only once its index does: an interrupted run
leaves no partial entry and keeps the shards it finished. Memory stays bounded: at most
``shard_rows`` new entries are buffered, and reads are positioned reads or memory maps.

The store does not trust its files. Opening it checks each index against its check (the
entries' SHA-256, each array file's size: one ``stat``); before :meth:`ShardStore.fill` uses a
shard, every byte of its arrays is hashed against the check, once per process and only for
the shards holding the clips asked for (0.4 s per GB from the page cache, 0.5 s from disk, on
2 cores: ``bench/cache_verify.py``). A shard that fails either is dropped with a warning, its
files deleted, and its clips decoded again. Shards written before checks were kept have only
their ``.npy`` headers checked against their sizes. A store opened read-only (the other
processes of a distributed run, once rank 0 has checked) checks sizes only, and skips a
damaged shard without deleting it.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import AudioError, DataError
from ..files import sha256_file, to_json, write_bytes
from .audio_io import load_audio
from .discover import Clip, Skipped
from .npy import (
    FileCheck,
    digest_problems,
    header_problem,
    read_npy_rows,
    read_npy_segments,
    size_problem,
    write_npy,
)
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
    """One finished shard: its name, and row by row its entries' digests and index fields;
    the sources its index recorded; its array files' checks (None: written before checks were
    kept); whether its bytes were hashed against them, and whether it was dropped."""

    name: str
    fields: list[list[Any]]
    digests: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    files: dict[str, FileCheck] | None = None
    verified: bool = False
    dropped: bool = False


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

    def _register(self, index: Path, *, verified: bool = False) -> None:
        """Add the shard of ``index`` if its index and its files' sizes match its check
        (else drop it); ``verified``: its bytes need no hashing (this process wrote them)."""
        name = index.name[: -len(".json")]
        try:
            meta = json.loads(index.read_text())
        except OSError as exc:  # perhaps passing (permissions, I/O): left as it is
            log.warning("cannot read %s shard %s (%s); ignoring it", self.what, index, exc)
            return
        except ValueError as exc:
            self._discard(name, f"unreadable index: {exc}")
            return
        try:
            entries, check = meta["entries"], meta.get("check")
            shard = Shard(name, [list(e[1:]) for e in entries],
                          digests=[str(e[0]) for e in entries],
                          sources=[Source((path, int(size), int(mtime)), digest, reason)
                                   for path, size, mtime, digest, reason in meta["sources"]],
                          files=None if check is None else dict(check["files"]),
                          verified=verified or check is None)
            problem = self._index_problem(shard, entries, check)
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"incomplete index: {exc!r}"
        if problem is not None:
            self._discard(name, problem)
            return
        shard_id = len(self.shards)
        self.shards.append(shard)
        self._registered(shard_id)
        self._map(shard_id)

    def _index_problem(self, shard: Shard, entries: list[Any],
                       check: dict[str, Any] | None) -> str | None:
        """What is wrong with a shard that its index and its files' sizes show (one ``stat``
        per file; a shard written before checks: its ``.npy`` headers)."""
        if not entries:
            return None
        if check is None:
            log.debug("%s shard %s was written before shards recorded their SHA-256: only its "
                      "sizes are checked", self.what, shard.name)
            return next(filter(None, (header_problem(
                self.column_path(shard.name, c), rows=None if c in self.ragged else len(entries))
                for c in self.columns)), None)
        if _entries_sha256(entries) != check["entries"]:
            return "its index's entries are not the ones written (their SHA-256 differs)"
        assert shard.files is not None
        return next(filter(None, (size_problem(self.column_path(shard.name, c), shard.files[c])
                                  for c in self.columns)), None)

    def _map(self, shard_id: int) -> None:
        shard = self.shards[shard_id]
        for row, digest in enumerate(shard.digests):
            self._where.setdefault(digest, (shard_id, row))
        for source in shard.sources:
            self._sources[source.key] = source

    def _discard(self, name: str, problem: str) -> None:
        """A shard that failed its check: deleted (index first) with a warning, so its
        clips are decoded again; only skipped in a read-only store."""
        if self.read_only:
            log.warning("%s shard %s is damaged (%s); skipping it", self.what,
                        self.folder / name, problem)
            return
        log.warning("%s shard %s is damaged (%s); dropped, its clips will be decoded again",
                    self.what, self.folder / name, problem)
        for path in [self.folder / f"{name}.json",
                     *(self.column_path(name, c) for c in self.columns)]:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s (%s)", path, exc)

    def verify(self, shards: Iterable[int]) -> bool:
        """Hash every byte of ``shards``' array files (those not hashed yet in this process)
        against their checks; drop the ones that fail (see :meth:`_discard`). Whether any was
        dropped."""
        todo = sorted({s for s in shards if not self.shards[s].verified
                       and not self.shards[s].dropped})
        files = [(s, self.column_path(s, c), (self.shards[s].files or {})[c])
                 for s in todo for c in self.columns]
        problems: dict[int, str] = {}
        for (s, _, _), problem in zip(files, digest_problems([(p, c) for _, p, c in files]),
                                      strict=True):
            if problem is not None:
                problems.setdefault(s, problem)
        for s in todo:
            self.shards[s].verified = s not in problems
            if s in problems:
                self.shards[s].dropped = True
                self._discard(self.shards[s].name, problems[s])
        if problems:  # remap what the dropped shards held, from the shards left
            self._where, self._sources = {}, {}
            for s, shard in enumerate(self.shards):
                if not shard.dropped:
                    self._map(s)
        return bool(problems)

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
        files: dict[str, FileCheck] = {}
        if entries:
            for column in self.columns:
                arrays = [e.arrays[column] for e in entries]
                files[column] = write_npy(self.column_path(name, column), np.concatenate(
                    arrays) if column in self.ragged else np.stack(arrays))
        rows = [[e.digest, *e.fields] for e in entries]
        meta = {"entries": rows, "sources": [[*s.key, s.digest, s.reason] for s in sources],
                "check": {"entries": _entries_sha256(rows), "files": files}}
        write_bytes(self.folder / f"{name}.json", to_json(meta, indent=None).encode(),
                    durable=False)
        self._new_entries, self._new_sources, self._new_digests = [], [], set()
        self._register(self.folder / f"{name}.json", verified=True)

    # ----- filling -----
    def fill(self, clips: Sequence[Clip], work: Work, *, workers: int = 0,
             progress: bool = True, desc: str = "decode") -> list[Source | None]:
        """Bring every clip into the store: ``work`` computes, in ``workers`` processes (0 =
        all cores), the ones it lacks. Returns each clip's source (None: it could not be
        read). A read-only store must hold every clip already."""
        keys = [fast_key(clip.path) for clip in clips]
        sources = [self.source(key) if key else None for key in keys]
        used = (self.locate(s.digest) if s is not None and s.digest else None for s in sources)
        if not self.read_only and self.verify(ref[0] for ref in used if ref is not None):
            sources = [self.source(key) if key else None for key in keys]  # some were dropped
        todo = [i for i, source in enumerate(sources) if source is None]
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
            if not read_npy_rows(path, refs[sel, 1], part):
                raise self._truncated(path)
            out[sel] = part

    def read_segments(self, shard: int, column: str, offsets: np.ndarray, counts: np.ndarray,
                      out: np.ndarray) -> None:
        """``counts[i]`` values from ``offsets[i]`` of shard ``shard``'s ragged ``column`` into
        the start of row ``i`` of ``out``, by positioned reads (see :meth:`read_rows`)."""
        path = self.column_path(shard, column)
        if not read_npy_segments(path, offsets, counts, out):
            raise self._truncated(path)

    def _truncated(self, path: Path) -> DataError:
        return DataError(f"{self.what} file {path} was truncated after it was checked; run "
                         "again: the damaged shard will be dropped and its clips decoded again")


def _entries_sha256(entries: list[Any]) -> str:
    """SHA-256 of a shard's index entries as JSON (what its check records)."""
    return hashlib.sha256(to_json(entries, indent=None).encode()).hexdigest()
