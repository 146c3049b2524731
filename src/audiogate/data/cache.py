"""On-disk cache of decoded clips and their clean log-mel features, read through memory maps.

Layout of one namespace (one feature config and stored waveform length)::

    <root>/<namespace>/spec.json           what the namespace holds, for people
    <root>/<namespace>/<shard>.waves.npy   int16, the clips end to end, each peak-scaled and
                                           at most n_keep samples long
    <root>/<namespace>/<shard>.feats.npy   float32 [shape=(rows, n_mels, fixed_length)]
    <root>/<namespace>/<shard>.json        the shard's index, written last
    <root>/<namespace>/views/<key>.npy     one subset's features, contiguous (val/test)

An entry is keyed by the SHA-256 of the file's bytes. A *source* record maps a file's fast
key (path, size, mtime) to that digest, so a second run costs one ``stat`` per file; an edited
file gets a new size or mtime and is hashed (and, if its bytes changed, decoded) again. A new
feature config or waveform length is a new namespace. Every file is written under a temporary
name and renamed, and a shard exists only once its index does: an interrupted run leaves no
partial entry and keeps the shards it finished. Memory stays bounded: at most ``SHARD_ROWS``
new rows are buffered, and reads go through memory maps that the OS pages in and out.

Waveforms are stored as int16 scaled to each clip's own peak: the quantisation noise sits about
96 dB below the clip's peak, under the front end's ``top_db`` floor (80 dB), whatever the clip's
level. Features are stored as computed (float32), so cached and fresh features are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import FeatureConfig
from ..errors import DataError
from ..files import atomic_write, to_json, write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bumped whenever the stored layout or the feature computation changes."""
SHARD_ROWS = 256
"""New entries buffered before a shard is written."""
INT16_FULL_SCALE = 32767
"""Largest int16 magnitude; a clip's peak is stored as this value."""
STALE_TMP_S = 3600.0
"""Temporary files older than this (seconds) are left-overs of a killed run and removed."""
VIEW_CHUNK = 256
"""Rows copied at a time when writing a contiguous view."""

FastKey = tuple[str, int, int]
"""``(path, size in bytes, mtime in ns)`` of a file."""


@dataclass(frozen=True)
class CacheSpec:
    """What each entry holds: clean features for ``features``, and the first ``n_keep``
    decoded samples (``n_keep = 0``: features only)."""

    features: FeatureConfig
    n_keep: int

    def namespace(self) -> str:
        """Folder name: a digest of the spec and of :data:`CACHE_VERSION`."""
        blob = to_json({"version": CACHE_VERSION, "features": asdict(self.features),
                        "n_keep": self.n_keep}, indent=None, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Source:
    """What one file gave: its content ``digest``, or the ``reason`` it is unusable."""

    key: FastKey
    digest: str | None
    reason: str | None = None


@dataclass(frozen=True)
class Entry:
    """One decoded clip: ``wave`` int16 ``[shape=(min(length, n_keep),)]`` (None when
    ``n_keep = 0``) times ``scale`` gives its samples; ``length`` counts the real ones read
    (at least up to ``n_keep``); ``feats`` ``[shape=(n_mels, fixed_length)]`` float32."""

    digest: str
    length: int
    scale: float
    wave: np.ndarray | None
    feats: np.ndarray


def fast_key(path: str) -> FastKey | None:
    """The file's fast key, or None if it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, int(st.st_size), int(st.st_mtime_ns))


def quantize(y: np.ndarray) -> tuple[np.ndarray, float]:
    """float ``[shape=(n,)]`` -> (int16 ``[shape=(n,)]``, scale); ``int16 * scale ~ y``."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    scale = peak / INT16_FULL_SCALE if peak > 0 else 1.0
    return np.round(y / scale).astype(np.int16), scale


@dataclass
class _Shard:
    name: str
    lengths: np.ndarray
    scales: np.ndarray
    offsets: np.ndarray
    """Start of each clip's samples in the shard's waves file (stored lengths summed)."""


class FeatureCache:
    """One namespace of the cache: look-ups, appends, and batched reads by ``(shard, row)``.

    ``temporary=True`` puts it in a fresh temporary folder, removed when the object goes
    away (the ``--no-cache`` mode: same bounded memory, nothing kept). ``read_only=True``
    opens what another process wrote and writes nothing: no new entries, no clean-up, and a
    missing contiguous view is assembled in memory instead of on disk.
    """

    def __init__(self, root: str | os.PathLike[str], spec: CacheSpec, *,
                 temporary: bool = False, read_only: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="audiogate-cache-") if temporary else None
        self.root = Path(self._tmp.name if self._tmp else root)
        self.spec, self.read_only = spec, read_only
        self.folder = self.root / spec.namespace()
        self._shards: list[_Shard] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._sources: dict[FastKey, Source] = {}
        self._new_entries: list[Entry] = []
        self._new_digests: set[str] = set()
        self._new_sources: list[Source] = []
        if read_only:
            if not self.folder.is_dir():
                raise DataError(f"feature cache {self.folder} not found; with several "
                                "machines, --cache-dir must be on a file system they share")
        else:
            self._make_folder()
            self._remove_stale()
        for index in sorted(self.folder.glob("shard-*.json")):
            self._register(index)

    def _make_folder(self) -> None:
        try:
            (self.folder / "views").mkdir(parents=True, exist_ok=True)
            spec = {"version": CACHE_VERSION, "features": asdict(self.spec.features),
                    "n_keep": self.spec.n_keep}
            write_bytes(self.folder / "spec.json", to_json(spec, indent=1).encode(),
                        durable=False)
        except OSError as exc:
            raise DataError(f"cannot write the feature cache in {self.root} ({exc}); "
                            "choose another --cache-dir or use --no-cache") from None

    def _remove_stale(self) -> None:
        now = time.time()
        for path in [*self.folder.glob("*.tmp"), *self.folder.glob("views/*.tmp")]:
            try:
                if now - path.stat().st_mtime > STALE_TMP_S:
                    path.unlink()
            except OSError:
                pass

    # ----- index -----
    def _register(self, index: Path) -> None:
        name = index.name[: -len(".json")]
        try:
            meta = json.loads(index.read_text())
            entries, sources = meta["entries"], meta["sources"]
            if entries and not self._data_present(name):
                raise ValueError("data file missing")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring damaged cache shard %s (%s)", index, exc)
            return
        shard_id = len(self._shards)
        lengths = np.asarray([e[1] for e in entries], np.int64)
        stored = np.minimum(lengths, self.spec.n_keep)
        self._shards.append(_Shard(name, lengths, np.asarray([e[2] for e in entries], np.float32),
                                   np.concatenate(([0], np.cumsum(stored)[:-1])).astype(np.int64)
                                   if len(stored) else stored))
        for row, (digest, _, _) in enumerate(entries):
            self._where.setdefault(digest, (shard_id, row))
        for path, size, mtime, digest, reason in sources:
            key = (path, int(size), int(mtime))
            self._sources[key] = Source(key, digest, reason)

    def _data_present(self, name: str) -> bool:
        names = [f"{name}.feats.npy"] + ([f"{name}.waves.npy"] if self.spec.n_keep else [])
        return all((self.folder / n).is_file() for n in names)

    def source(self, key: FastKey) -> Source | None:
        """The recorded source for ``key`` if its entry (or its failure) is usable."""
        src = self._sources.get(key)
        if src is None or (src.reason is None and src.digest not in self._where):
            return None
        return src

    def locate(self, digest: str) -> tuple[int, int] | None:
        """``(shard, row)`` of a stored entry (flushed ones only)."""
        return self._where.get(digest)

    def lengths(self, refs: np.ndarray) -> np.ndarray:
        """Real sample counts of entries ``refs`` ``[shape=(k, 2)]`` -> ``[shape=(k,)]``."""
        return np.asarray([self._shards[s].lengths[r] for s, r in refs], dtype=np.int64)

    # ----- writing -----
    def add(self, source: Source, entry: Entry | None) -> None:
        """Record what a file gave; store ``entry`` unless its digest is already stored.
        Failures are recorded only for files that could be read (decode errors)."""
        if self.read_only:
            raise DataError(f"feature cache {self.folder} is open read-only")
        if source.reason is not None and source.digest is None:
            return
        self._new_sources.append(source)
        if (entry is not None and entry.digest not in self._where
                and entry.digest not in self._new_digests):
            self._new_entries.append(entry)
            self._new_digests.add(entry.digest)
        if len(self._new_entries) >= SHARD_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered entries and sources as one new shard."""
        if not self._new_sources and not self._new_entries:
            return
        name = f"shard-{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        entries, sources = self._new_entries, self._new_sources
        if entries:
            _save_npy(self.folder / f"{name}.feats.npy",
                      np.stack([e.feats for e in entries]))
            if self.spec.n_keep:
                _save_npy(self.folder / f"{name}.waves.npy",
                          np.concatenate([e.wave for e in entries if e.wave is not None]))
        meta = {"version": CACHE_VERSION,
                "entries": [[e.digest, e.length, e.scale] for e in entries],
                "sources": [[*s.key, s.digest, s.reason] for s in sources]}
        write_bytes(self.folder / f"{name}.json", to_json(meta, indent=None).encode(),
                    durable=False)
        self._new_entries, self._new_sources, self._new_digests = [], [], set()
        self._register(self.folder / f"{name}.json")

    # ----- reading -----
    def waves(self, refs: np.ndarray, *, starts: np.ndarray | None = None,
              span: int | None = None) -> np.ndarray:
        """Decoded samples of entries ``refs`` ``[shape=(k, 2)]`` -> float32
        ``[shape=(k, span)]``: entry ``i``'s samples from ``starts[i]`` on (default 0), ``span``
        of them (default ``n_keep``), zero past its stored end. Only those samples are read."""
        n_keep = self.spec.n_keep
        if not n_keep:
            raise DataError("this cache holds features only (n_keep = 0), not waveforms")
        span = n_keep if span is None else span
        first_all = np.zeros(len(refs), np.int64) if starts is None else np.asarray(starts)
        out = np.zeros((len(refs), span), dtype=np.float32)
        for shard_id in np.unique(refs[:, 0]):
            sel = np.flatnonzero(refs[:, 0] == shard_id)
            shard = self._shards[shard_id]
            rows = refs[sel, 1]
            stored = np.minimum(shard.lengths[rows], n_keep)
            first = np.minimum(first_all[sel], stored)
            raw = np.zeros((len(sel), span), dtype=np.int16)
            _read_segments(self.folder / f"{shard.name}.waves.npy", shard.offsets[rows] + first,
                           np.minimum(stored - first, span), raw)
            out[sel] = raw * shard.scales[rows][:, None]
        return out

    def features(self, refs: np.ndarray) -> np.ndarray:
        """Clean features of entries ``refs`` ``[shape=(k, 2)]`` -> float32
        ``[shape=(k, n_mels, fixed_length)]``."""
        cfg = self.spec.features
        out = np.empty((len(refs), cfg.n_mels, cfg.fixed_length), dtype=np.float32)
        for shard_id in np.unique(refs[:, 0]):
            sel = np.flatnonzero(refs[:, 0] == shard_id)
            part = np.empty((len(sel), cfg.n_mels, cfg.fixed_length), dtype=np.float32)
            _read_rows(self.folder / f"{self._shards[shard_id].name}.feats.npy",
                       refs[sel, 1], part)
            out[sel] = part
        return out

    def feature_view(self, refs: np.ndarray) -> np.ndarray:
        """Features of ``refs`` as one contiguous, memory-mapped (copy-on-write) array
        ``[shape=(k, n_mels, fixed_length)]``; written once per distinct list of entries."""
        ids = "\n".join(f"{self._shards[s].name}:{r}" for s, r in refs)
        key = hashlib.sha256(ids.encode()).hexdigest()[:32]
        path = self.folder / "views" / f"{key}.npy"
        if self.read_only and not path.is_file():
            return self.features(refs)
        if not path.is_file():
            cfg = self.spec.features
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                      "fortran_order": False,
                      "shape": (len(refs), cfg.n_mels, cfg.fixed_length)}
            with atomic_write(path, durable=False) as fh:
                np.lib.format.write_array_header_1_0(fh, header)
                for i in range(0, len(refs), VIEW_CHUNK):
                    fh.write(self.features(refs[i:i + VIEW_CHUNK]).tobytes())
        return np.load(path, mmap_mode="c")


def _read_rows(path: Path, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows ``rows`` of the C-ordered ``.npy`` file ``path`` into ``out`` (its dtype and row
    shape), by positioned reads: the file data stays in the OS page cache, so this process's
    memory does not grow with the size of the cache (as it would through a memory map)."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        read_header(fh)
        start, row_bytes = fh.tell(), out[0].nbytes if len(out) else 0
        for i, row in enumerate(rows):
            fh.seek(start + int(row) * row_bytes)
            if fh.readinto(memoryview(out[i]).cast("B")) != row_bytes:
                raise DataError(f"feature cache file {path} is truncated; delete it to "
                                "rebuild that part of the cache")


def _read_segments(path: Path, offsets: np.ndarray, counts: np.ndarray, out: np.ndarray) -> None:
    """``counts[i]`` elements from ``offsets[i]`` of the 1-D ``.npy`` file ``path`` into the
    start of row ``i`` of ``out``, by positioned reads (see :func:`_read_rows`)."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        read_header(fh)
        start, size = fh.tell(), out.itemsize
        for i, (offset, count) in enumerate(zip(offsets.tolist(), counts.tolist(),
                                                strict=True)):
            fh.seek(start + offset * size)
            if fh.readinto(memoryview(out[i]).cast("B")[:count * size]) != count * size:
                raise DataError(f"feature cache file {path} is truncated; delete it to "
                                "rebuild that part of the cache")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, durable=False) as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(array))
