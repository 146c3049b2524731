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

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FeatureConfig
from ..errors import AudioError, DataError
from ..features.frontend import LogMel, fit_length
from ..files import sha256_file
from .audio_io import load_audio
from .cache import CacheSpec, Entry, FeatureCache, Source, fast_key, quantize
from .discover import Clip, Skipped

CHUNK = 16
"""Files per task sent to a worker process."""
IN_FLIGHT = 3
"""Tasks queued per worker: keeps the workers busy while bounding finished, unread results."""

PARENT_POLL_S = 0.25
"""How often a worker checks that the process that started it is still alive (seconds)."""
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: a signal the kernel sends this process when its parent dies."""

R = TypeVar("R")
T = TypeVar("T")


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


def resolve_workers(workers: int) -> int:
    """``0`` means every core this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _worker_init(parent: int) -> None:
    """Set up a decoding worker started by process ``parent``.

    One intra-op thread (the processes are the parallelism); Ctrl+C ignored (the parent
    handles it and shuts the pool down); and the worker dies with its parent, so a parent
    killed with SIGKILL leaves no orphaned worker holding hundreds of MB.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this process as soon as process ``parent`` (its parent) is gone.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    everywhere, a daemon thread checks every ``PARENT_POLL_S`` seconds that the parent is
    still this process's parent (an orphan is re-parented) and exits if not.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="audiogate-parent-watch",
                     daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _ordered_map(fn: Callable[[Sequence[str]], list[R]], paths: Sequence[str], *,
                 workers: int, bar: tqdm) -> Iterator[R]:
    """``fn`` over chunks of ``paths`` in ``workers`` processes; results one per path, in
    order. At most ``IN_FLIGHT`` chunks per worker are pending at any time."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    n_workers = min(resolve_workers(workers), max(1, len(chunks)))
    if n_workers == 1:
        for chunk in chunks:
            yield from fn(chunk)
            bar.update(len(chunk))
        return
    with ProcessPoolExecutor(max_workers=n_workers, initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        pending: deque[Future[list[R]]] = deque()
        sent = 0
        try:
            while pending or sent < len(chunks):
                while sent < len(chunks) and len(pending) < IN_FLIGHT * n_workers:
                    pending.append(pool.submit(fn, chunks[sent]))
                    sent += 1
                done = pending.popleft().result()
                yield from done
                bar.update(len(done))
        except BaseException:  # Ctrl+C or a closed consumer: drop the queued work
            pool.shutdown(wait=True, cancel_futures=True)
            raise


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
    results = list(_ordered_map(fn, [c.path for c in clips], workers=workers, bar=bar))
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


@functools.lru_cache(maxsize=4)
def _frontend(cfg: FeatureConfig) -> LogMel:
    return LogMel(cfg)


def _digest_or_none(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _cache_chunk(paths: Sequence[str], spec: CacheSpec) -> list[tuple[Source, Entry | None]]:
    """Hash, decode and featurise ``paths`` (runs in a worker process)."""
    cfg = spec.features
    n_read = max(spec.n_keep, cfg.n_samples)
    out: list[tuple[Source, Entry | None]] = []
    decoded: list[tuple[int, np.ndarray]] = []
    for path in paths:
        key = fast_key(path) or (path, -1, -1)
        try:
            y = load_audio(path, sr=cfg.sr, max_seconds=n_read / cfg.sr + 0.1)
            digest = sha256_file(path)
        except AudioError as exc:  # remembered only for a file that can be hashed
            out.append((Source(key, _digest_or_none(path), exc.reason), None))
            continue
        except OSError as exc:
            out.append((Source(key, None, f"cannot read ({exc.strerror or exc})"), None))
            continue
        decoded.append((len(out), y))
        out.append((Source(key, digest), None))
    if decoded:
        waves = np.stack([fit_length(y, n_samples=cfg.n_samples) for _, y in decoded])
        with torch.no_grad():
            feats = _frontend(cfg)(torch.from_numpy(waves)).numpy()
        for (i, y), f in zip(decoded, feats, strict=True):
            wave, scale = quantize(y[:spec.n_keep]) if spec.n_keep else (None, 1.0)
            source = out[i][0]
            out[i] = (source, Entry(str(source.digest), min(y.size, n_read), scale, wave, f))
    return out


def cache_clips(clips: Sequence[Clip], *, cache: FeatureCache, workers: int = 0,
                progress: bool = True, desc: str = "decode") -> tuple[ClipSet, list[Skipped]]:
    """Bring every clip into ``cache`` (decoding only those it lacks, in ``workers``
    processes) and return the usable ones as a :class:`ClipSet`, in input order.

    A read-only cache must hold every clip already (another process filled it): a missing
    one raises :class:`~audiogate.errors.DataError`.
    """
    sources: list[Source | None] = []
    todo: list[int] = []
    for i, clip in enumerate(clips):
        key = fast_key(clip.path)
        sources.append(cache.source(key) if key else None)
        if sources[-1] is None:
            todo.append(i)
    if cache.read_only and todo:
        raise DataError(f"{len(todo)} clip(s) are not in the feature cache {cache.folder} "
                        f"(first: {clips[todo[0]].path}); every process must see the same "
                        "data and cache at the same paths (a shared file system)")
    bar = tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo,
               leave=False)
    fn = functools.partial(_cache_chunk, spec=cache.spec)
    try:
        for i, (source, entry) in zip(todo, _ordered_map(
                fn, [clips[i].path for i in todo], workers=workers, bar=bar), strict=True):
            cache.add(source, entry)
            sources[i] = source
    finally:
        cache.flush()
        bar.close()
    return _clip_set(clips, sources, cache)


def sort_out(clips: Sequence[Clip], sources: Sequence[Source | None],
             lookup: Callable[[str], T | None], *,
             missing: str) -> tuple[list[Clip], list[T], list[Skipped]]:
    """Split ``clips`` by their worker's ``sources``: those whose digest ``lookup`` finds
    (kept, with what it found) and the rest (skipped: the worker's reason, else ``missing``)."""
    kept: list[Clip] = []
    found: list[T] = []
    skipped: list[Skipped] = []
    for clip, source in zip(clips, sources, strict=True):
        hit = lookup(source.digest) if source and source.digest else None
        if source is None or source.reason is not None or hit is None:
            skipped.append(Skipped(clip.path, source.reason if source and source.reason
                                   else missing))
        else:
            kept.append(clip)
            found.append(hit)
    return kept, found, skipped


def _clip_set(clips: Sequence[Clip], sources: Sequence[Source | None],
              cache: FeatureCache) -> tuple[ClipSet, list[Skipped]]:
    kept, refs, skipped = sort_out(clips, sources, cache.locate, missing="could not be cached")
    ref_array = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
    return ClipSet(clips=kept, labels=np.asarray([c.label for c in kept], dtype=np.int64),
                   lengths=cache.lengths(ref_array), refs=ref_array, cache=cache), skipped
