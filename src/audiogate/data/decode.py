"""Decode many files at once, in parallel worker processes, into the cache or into memory.

Each file is decoded and resampled once; what the front end needs (the first ``n_keep``
samples, zero-padded) is kept with the clip's true length, so the padding can be told apart
from the sound. Files that fail to decode come back as skipped records, never as exceptions.

* :func:`cache_clips` (training): workers decode, hash and compute the clean log-mel features;
  the main process appends them to a :class:`~audiogate.data.cache.FeatureCache`, and the result,
  a :class:`ClipSet`, reads batches back through memory maps, so memory stays bounded.
* :func:`decode_clips` (prediction): waveforms of a list of files, in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FeatureConfig
from ..errors import AudioError
from ..features.frontend import LogMel, fit_length
from .audio_io import load_audio
from .cache import CacheSpec, FeatureCache, feature_entry
from .discover import Clip, Skipped
from .store import Entry, Source, read_source
from .workers import ordered_map


@dataclass
class ClipArrays:
    """Decoded clips in memory: ``waves`` ``[shape=(n, n_keep)]`` float32, ``lengths``
    (samples) and ``labels`` ``[shape=(n,)]``, and the clips they came from (same order)."""

    clips: list[Clip]
    waves: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray


@dataclass
class ClipSet:
    """Decoded clips held in a :class:`~audiogate.data.cache.FeatureCache`.

    ``labels`` and ``lengths`` (real samples) are ``[shape=(n,)]``; ``refs``
    ``[shape=(n, 2)]`` locates each clip's entry. Row ``i`` belongs to ``clips[i]``.
    """

    clips: list[Clip]
    labels: np.ndarray
    lengths: np.ndarray
    refs: np.ndarray
    cache: FeatureCache

    def __len__(self) -> int:
        return len(self.clips)

    def waves(self, rows: np.ndarray, *, starts: np.ndarray | None = None,
              span: int | None = None) -> np.ndarray:
        """float32 ``[shape=(len(rows), span)]``: each clip's samples from ``starts`` (default
        0), ``span`` of them (default ``n_keep``), zero-padded past the clip's end."""
        return self.cache.waves(self.refs[rows], starts=starts, span=span)

    def features(self, rows: np.ndarray) -> np.ndarray:
        """Clean log-mel features, float32 ``[shape=(len(rows), n_mels, fixed_length)]``."""
        return self.cache.features(self.refs[rows])

    def feature_matrix(self) -> np.ndarray:
        """All clean features, one memory-mapped array ``[shape=(n, n_mels, fixed_length)]``."""
        return self.cache.feature_view(self.refs)

    def subset(self, clips: Sequence[Clip]) -> ClipSet:
        """The rows of ``clips`` (each must be in this set), in that order."""
        index = {c.path: i for i, c in enumerate(self.clips)}
        rows = np.asarray([index[c.path] for c in clips], dtype=np.int64)
        return ClipSet(clips=list(clips), labels=self.labels[rows], lengths=self.lengths[rows],
                       refs=self.refs[rows].reshape(-1, 2), cache=self.cache)


def _decode_one(path: str, sr: int, n_keep: int) -> tuple[np.ndarray, int] | str:
    try:
        y = load_audio(path, sr=sr, max_seconds=n_keep / sr + 0.1)
    except AudioError as exc:
        return exc.reason
    return fit_length(y, n_samples=n_keep), min(y.size, n_keep)


def _decode_chunk(paths: Sequence[str], sr: int,
                  n_keep: int) -> list[tuple[np.ndarray, int] | str]:
    return [_decode_one(p, sr, n_keep) for p in paths]


def decode_clips(clips: Sequence[Clip], *, sr: int, n_keep: int, workers: int = 0,
                 progress: bool = True, desc: str = "decode") -> tuple[ClipArrays, list[Skipped]]:
    """Decode ``clips`` to ``n_keep`` samples each at ``sr`` Hz using ``workers`` processes."""
    bar = tqdm(total=len(clips), desc=desc, unit="file", disable=not progress, leave=False)
    fn = functools.partial(_decode_chunk, sr=sr, n_keep=n_keep)
    results = list(ordered_map(fn, [c.path for c in clips], workers=workers, bar=bar))
    bar.close()
    kept: list[Clip] = []
    waves: list[np.ndarray] = []
    lengths: list[int] = []
    skipped: list[Skipped] = []
    for clip, result in zip(clips, results, strict=True):
        if isinstance(result, str):
            skipped.append(Skipped(clip.path, result))
        else:
            kept.append(clip)
            waves.append(result[0])
            lengths.append(result[1])
    arrays = ClipArrays(
        clips=kept,
        waves=np.stack(waves) if waves else np.zeros((0, n_keep), np.float32),
        lengths=np.asarray(lengths, dtype=np.int64),
        labels=np.asarray([c.label for c in kept], dtype=np.int64),
    )
    return arrays, skipped


def _decode_unpadded(paths: Sequence[str], sr: int, limit: int) -> list[np.ndarray | str]:
    out: list[np.ndarray | str] = []
    for path in paths:
        try:
            out.append(load_audio(path, sr=sr, max_seconds=limit / sr + 0.1)[:limit])
        except AudioError as exc:
            out.append(exc.reason)
    return out


def decode_stream(paths: Sequence[str], *, sr: int, limit: int,
                  workers: int = 0) -> Generator[np.ndarray | str, None, None]:
    """Each of ``paths`` decoded at ``sr`` Hz (its first ``limit`` samples, not padded), or
    the reason it cannot be used, in order, as the ``workers`` processes (one pool for all of
    them) finish; only a few chunks per worker are held at once, so memory does not grow
    with the number of paths. Closing the iterator early stops the workers."""
    fn = functools.partial(_decode_unpadded, sr=sr, limit=limit)
    with tqdm(total=len(paths), disable=True) as bar:
        yield from ordered_map(fn, paths, workers=workers, bar=bar)


@functools.lru_cache(maxsize=4)
def _frontend(cfg: FeatureConfig) -> LogMel:
    return LogMel(cfg)


def _cache_chunk(paths: Sequence[str], spec: CacheSpec) -> list[tuple[Source, Entry | None]]:
    """Hash, decode and featurise ``paths`` (runs in a worker process)."""
    cfg = spec.features
    n_read = max(spec.n_keep, cfg.n_samples)
    out: list[tuple[Source, Entry | None]] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for path in paths:
        source, y = read_source(path, sr=cfg.sr, max_seconds=n_read / cfg.sr + 0.1)
        if y is not None:
            decoded.append((len(out), y))
        out.append((source, None))
    if decoded:
        waves = np.stack([fit_length(y, n_samples=cfg.n_samples) for _, y in decoded])
        with torch.no_grad():
            feats = _frontend(cfg)(torch.from_numpy(waves)).numpy()
        for (i, y), f in zip(decoded, feats, strict=True):
            source = out[i][0]
            out[i] = (source, feature_entry(str(source.digest), y=y, feats=f, n_read=n_read,
                                            n_keep=spec.n_keep))
    return out


def cache_clips(clips: Sequence[Clip], *, cache: FeatureCache, workers: int = 0,
                progress: bool = True, desc: str = "decode") -> tuple[ClipSet, list[Skipped]]:
    """Bring every clip into ``cache`` (decoding only those it lacks, in ``workers``
    processes) and return the usable ones as a :class:`ClipSet`, in input order.

    A read-only cache must hold every clip already (another process filled it): a missing
    one raises :class:`~audiogate.errors.DataError`.
    """
    sources = cache.fill(clips, functools.partial(_cache_chunk, spec=cache.spec),
                         workers=workers, progress=progress, desc=desc)
    kept, refs, skipped = cache.sort_out(clips, sources, missing="could not be cached")
    ref_array = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
    return ClipSet(clips=kept, labels=np.asarray([c.label for c in kept], dtype=np.int64),
                   lengths=cache.lengths(ref_array), refs=ref_array, cache=cache), skipped
