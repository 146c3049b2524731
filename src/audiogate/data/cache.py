"""The feature cache: each clip's decoded audio and clean log-mel features, read through
positioned reads and memory maps (one kind of entry of :mod:`audiogate.data.store`).

Layout of one namespace (one feature config and stored waveform length; see the store for the
rest)::

    <root>/<namespace>/<shard>.waves.npy   int16, the clips end to end, each peak-scaled and
                                           at most n_keep samples long
    <root>/<namespace>/<shard>.feats.npy   float32 [shape=(rows, n_mels, fixed_length)]
    <root>/<namespace>/<shard>.json        the shard's index: digest, length, scale per clip
    <root>/<namespace>/views/<key>.npy     one subset's features, contiguous (val/test)
    <root>/<namespace>/views/<key>.json    its size and SHA-256, written after it: a view is
                                           hashed before its first use in a process, and
                                           computed again if it fails (or has none)

Waveforms are stored as int16 scaled to each clip's own peak: the quantisation noise sits about
96 dB below the clip's peak, under the front end's ``top_db`` floor (80 dB), whatever the clip's
level. Features are stored as computed (float32), so cached and fresh features are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import FeatureConfig
from ..errors import DataError
from ..files import write_json
from .npy import FileCheck, digest_problems, size_problem, write_npy_chunks
from .store import Entry, ShardStore

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bumped whenever the stored layout or the feature computation changes."""
SHARD_ROWS = 256
"""New entries buffered before a shard is written."""
INT16_FULL_SCALE = 32767
"""Largest int16 magnitude; a clip's peak is stored as this value."""
VIEW_CHUNK = 256
"""Rows copied at a time when writing a contiguous view."""


@dataclass(frozen=True)
class CacheSpec:
    """What each entry holds: clean features for ``features``, and the first ``n_keep``
    decoded samples (``n_keep = 0``: features only)."""

    features: FeatureConfig
    n_keep: int

    def as_dict(self) -> dict[str, object]:
        return {"version": CACHE_VERSION, "features": asdict(self.features),
                "n_keep": self.n_keep}


def quantize(y: np.ndarray) -> tuple[np.ndarray, float]:
    """float ``[shape=(n,)]`` -> (int16 ``[shape=(n,)]``, scale); ``int16 * scale ~ y``."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    scale = peak / INT16_FULL_SCALE if peak > 0 else 1.0
    return np.round(y / scale).astype(np.int16), scale


def feature_entry(digest: str, *, y: np.ndarray, feats: np.ndarray, n_read: int,
                  n_keep: int) -> Entry:
    """The entry of one decoded clip ``y``: its real length (at most ``n_read``), its first
    ``n_keep`` samples as int16 with their scale, and its clean features."""
    arrays = {"feats": feats}
    scale = 1.0
    if n_keep:
        arrays["waves"], scale = quantize(y[:n_keep])
    return Entry(digest, (min(y.size, n_read), scale), arrays)


class FeatureCache(ShardStore):
    """One namespace of the feature cache: look-ups, appends, and batched reads by
    ``(shard, row)``. ``read_only``: a missing contiguous view is assembled in memory."""

    what = "feature cache"

    def __init__(self, root: str | os.PathLike[str], spec: CacheSpec, *,
                 temporary: bool = False, read_only: bool = False) -> None:
        self.spec = spec
        self._lengths: list[np.ndarray] = []
        self._scales: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._views_checked: set[str] = set()
        super().__init__(root, spec=spec.as_dict(), columns=("feats", "waves") if spec.n_keep
                         else ("feats",), ragged=("waves",), shard_rows=SHARD_ROWS,
                         temporary=temporary, read_only=read_only)
        if not read_only:
            (self.folder / "views").mkdir(exist_ok=True)

    def _registered(self, shard: int) -> None:
        fields = self.shards[shard].fields
        lengths = np.asarray([f[0] for f in fields], np.int64)
        stored = np.minimum(lengths, self.spec.n_keep)
        self._lengths.append(lengths)
        self._scales.append(np.asarray([f[1] for f in fields], np.float32))
        self._offsets.append(np.concatenate(([0], np.cumsum(stored)[:-1])).astype(np.int64)
                             if len(stored) else stored)

    def lengths(self, refs: np.ndarray) -> np.ndarray:
        """Real sample counts of entries ``refs`` ``[shape=(k, 2)]`` -> ``[shape=(k,)]``."""
        return np.asarray([self._lengths[s][r] for s, r in refs], dtype=np.int64)

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
        for shard in np.unique(refs[:, 0]):
            sel = np.flatnonzero(refs[:, 0] == shard)
            rows = refs[sel, 1]
            stored = np.minimum(self._lengths[shard][rows], n_keep)
            first = np.minimum(first_all[sel], stored)
            raw = np.zeros((len(sel), span), dtype=np.int16)
            self.read_segments(int(shard), "waves", self._offsets[shard][rows] + first,
                               np.minimum(stored - first, span), raw)
            out[sel] = raw * self._scales[shard][rows][:, None]
        return out

    def features(self, refs: np.ndarray) -> np.ndarray:
        """Clean features of entries ``refs`` ``[shape=(k, 2)]`` -> float32
        ``[shape=(k, n_mels, fixed_length)]``."""
        cfg = self.spec.features
        out = np.empty((len(refs), cfg.n_mels, cfg.fixed_length), dtype=np.float32)
        self.read_rows("feats", refs, out)
        return out

    def feature_view(self, refs: np.ndarray) -> np.ndarray:
        """Features of ``refs`` as one contiguous, memory-mapped (copy-on-write) array
        ``[shape=(k, n_mels, fixed_length)]``; written once per distinct list of entries, and
        checked against its size and SHA-256 before its first use in this process (computed
        again, with a warning, if it fails; a read-only cache reads the features instead)."""
        ids = "\n".join(f"{self.shards[s].name}:{r}" for s, r in refs)
        key = hashlib.sha256(ids.encode()).hexdigest()[:32]
        path = self.folder / "views" / f"{key}.npy"
        if key not in self._views_checked:
            problem = _view_problem(path)
            if problem is not None and self.read_only:
                if problem != "missing":
                    log.warning("%s view %s is damaged (%s); reading its features from the "
                                "shards", self.what, path, problem)
                return self.features(refs)
            if problem is not None:
                if problem != "missing":
                    log.warning("%s view %s is damaged (%s); computing it again", self.what,
                                path, problem)
                self._write_view(path, refs)
            self._views_checked.add(key)
        return np.load(path, mmap_mode="c")

    def _write_view(self, path: Path, refs: np.ndarray) -> None:
        cfg = self.spec.features
        chunks = (self.features(refs[i:i + VIEW_CHUNK]) for i in range(0, len(refs), VIEW_CHUNK))
        check = write_npy_chunks(path, dtype=np.dtype(np.float32),
                                 shape=(len(refs), cfg.n_mels, cfg.fixed_length), chunks=chunks)
        write_json(path.with_suffix(".json"), {"size": check[0], "sha256": check[1]})


def _view_problem(path: Path) -> str | None:
    """Why the view at ``path`` cannot be used as it is: ``missing`` (no view, or none of its
    check: written before checks were kept, or interrupted), or what its check found."""
    try:
        recorded = json.loads(path.with_suffix(".json").read_text())
        check: FileCheck = [int(recorded["size"]), str(recorded["sha256"])]
    except (OSError, ValueError, KeyError, TypeError):
        return "missing"
    if not path.is_file():
        return "missing"
    return size_problem(path, check) or digest_problems([(path, check)])[0]
