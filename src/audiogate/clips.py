"""Decode many files at once into fixed-length waveform arrays, in parallel.

Each file is decoded and resampled once; what the front end needs (the first ``n_keep``
samples, zero-padded) is kept with the clip's true length, so the padding can be told apart
from the sound. Files that fail to decode come back as skipped records, never as exceptions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .audio_io import load_audio
from .data import Clip, Skipped
from .errors import AudioError
from .features import fit_length

CHUNK = 16
"""Files per task sent to a worker process."""


@dataclass
class ClipArrays:
    """Decoded clips: ``waves`` ``[shape=(n, n_keep)]`` float32, ``lengths`` (samples) and
    ``labels`` ``[shape=(n,)]``, and the clips they came from (same order)."""

    clips: list[Clip]
    waves: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray


def _decode_one(path: str, sr: int, n_keep: int) -> tuple[np.ndarray, int] | str:
    try:
        y = load_audio(path, sr=sr, max_seconds=n_keep / sr + 0.1)
    except AudioError as exc:
        return exc.reason
    return fit_length(y, n_samples=n_keep), min(y.size, n_keep)


def _decode_chunk(paths: Sequence[str], sr: int,
                  n_keep: int) -> list[tuple[np.ndarray, int] | str]:
    return [_decode_one(p, sr, n_keep) for p in paths]


def resolve_workers(workers: int) -> int:
    """``0`` means every core this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def decode_clips(clips: Sequence[Clip], *, sr: int, n_keep: int, workers: int = 0,
                 progress: bool = True, desc: str = "decode") -> tuple[ClipArrays, list[Skipped]]:
    """Decode ``clips`` to ``n_keep`` samples each at ``sr`` Hz using ``workers`` processes."""
    paths = [c.path for c in clips]
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    n_workers = min(resolve_workers(workers), max(1, len(chunks)))
    bar = tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=False)
    results: list[tuple[np.ndarray, int] | str] = []
    if n_workers == 1:
        for chunk in chunks:
            results.extend(_decode_chunk(chunk, sr, n_keep))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for done in pool.map(_decode_chunk, chunks, [sr] * len(chunks),
                                 [n_keep] * len(chunks)):
                results.extend(done)
                bar.update(len(done))
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
