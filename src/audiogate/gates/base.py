"""What the gate kinds share to judge audio: decoding inputs, windowing clips, batching windows
through the model and pooling their probabilities into one verdict per clip.

:class:`WindowedGate` implements the instance side of :class:`~audiogate.core.gate.Gate`
around one method a kind supplies, :meth:`WindowedGate._batch_probabilities` (a batch of
fixed-length waveforms -> class probabilities); a kind whose unit is not a fixed window (a
voice gate judges a clip's speech whole) overrides :meth:`WindowedGate.clip_probabilities`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.decision import clip_windows
from ..core.gate import AudioInput, Enrolment, ExportReport, Gate, Prediction
from ..data.audio_io import to_mono_resampled
from ..data.decode import decode_clips
from ..data.discover import Clip
from ..errors import AudioError, ConfigError
from ..features.frontend import fit_length

BATCH = 64
"""Windows per forward pass."""
PREDICT_CHUNK = 64
"""Inputs decoded and held in memory at once by ``predict_many`` (at most ``max_clip_s`` of
audio each: about 40 MB at 10 s)."""


class WindowedGate(Gate):
    """Decoding, windowing, batching, verdicts. Subclasses supply :meth:`_batch_probabilities`
    (one batch of fixed-length waveforms -> class probabilities) and the rest of
    :class:`~audiogate.core.gate.Gate` (how the kind is made, saved and exported).

    A clip is judged over the first ``max_clip_s`` seconds: one model window when it fits,
    else windows every half window (:func:`~audiogate.core.decision.clip_windows`) whose
    probabilities are pooled by ``decision.pooling``. ``decision`` also holds the gate's
    threshold.
    """

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        """``[shape=(batch, features.n_samples)]`` float32 -> ``[shape=(batch, n_classes)]``."""
        raise NotImplementedError

    def probabilities(self, waves: np.ndarray) -> np.ndarray:
        """Waveforms at ``features.sr`` ``[shape=(batch, n)]`` -> ``[shape=(batch, n_classes)]``.

        Each row is cut or zero-padded to the model window (``features.n_samples``).
        """
        x = fit_length(np.asarray(waves, np.float32), n_samples=self.features.n_samples)
        out = [self._batch_probabilities(np.ascontiguousarray(x[i:i + BATCH]))
               for i in range(0, len(x), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def clip_probabilities(self, waves: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """Whole clips (each ``[shape=(n,)]`` at ``features.sr``, at most ``max_clip_s`` used)
        -> pooled probabilities ``[shape=(n_classes,)]`` and the number of windows, per clip.
        The windows of all clips go through the model together, in batches."""
        window, limit = self.features.n_samples, self.clip_limit
        pieces, owners = [], []
        for i, wave in enumerate(waves):
            y = wave[:limit]
            for start in clip_windows(n=y.size, window=window):
                pieces.append(fit_length(y[start:start + window], n_samples=window))
                owners.append(i)
        probs = self.probabilities(np.stack(pieces) if pieces else
                                   np.zeros((0, window), np.float32))
        index = np.asarray(owners, dtype=np.int64)
        return [(self.decision.pool(probs[index == i]), int((index == i).sum()))
                for i in range(len(waves))]

    def _verdict(self, source: str, probs: np.ndarray, n_windows: int) -> Prediction:
        k = int(self.decision.labels(probs[None])[0])
        pos = self.decision.positive
        return Prediction(source=source, label=self.classes[k], index=k,
                          probabilities={c: float(p) for c, p in zip(self.classes, probs,
                                                                     strict=True)},
                          score=None if pos is None else float(probs[pos]),
                          threshold=self.decision.threshold, n_windows=n_windows,
                          positive=self.decision.positive_class)

    def predict_many(self, items: Sequence[AudioInput], *, sr: int | None = None,
                     progress: bool = False) -> list[Prediction]:
        """Judge many files and/or arrays in batches; bad inputs get a Prediction with
        ``error`` set instead of stopping the rest. Order is kept. Inputs are decoded
        ``PREDICT_CHUNK`` at a time, so memory does not grow with the number of files."""
        out: list[Prediction] = []
        bar = tqdm(total=len(items), desc="predict", unit="file", disable=not progress,
                   leave=False)
        for start in range(0, len(items), PREDICT_CHUNK):
            out += self._predict_chunk(items[start:start + PREDICT_CHUNK], sr=sr)
            bar.update(min(PREDICT_CHUNK, len(items) - start))
        bar.close()
        return out

    def decode_inputs(self, items: Sequence[AudioInput], *,
                      sr: int | None) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Inputs -> their first :attr:`clip_limit` samples at ``features.sr``, by input
        index, and the reason each failed one could not be used (files are decoded in
        ``workers`` processes; arrays at ``sr`` are resampled)."""
        waves: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        files = [(i, str(x)) for i, x in enumerate(items) if not isinstance(x, np.ndarray)]
        for i, x in enumerate(items):
            if isinstance(x, np.ndarray):
                try:
                    if sr is None:
                        raise AudioError("<array>", "sr is required for array input")
                    waves[i] = to_mono_resampled(x, native_sr=sr,
                                                 sr=self.features.sr)[:self.clip_limit]
                except AudioError as exc:
                    errors[i] = exc.reason
        if files:
            arrays, bad = decode_clips([Clip(p, -1) for _, p in files], sr=self.features.sr,
                                       n_keep=self.clip_limit, workers=self.workers, progress=False)
            by_path = {c.path: w[:n] for c, w, n in zip(arrays.clips, arrays.waves,
                                                         arrays.lengths, strict=True)}
            reasons = {s.path: s.reason for s in bad}
            for i, p in files:
                if p in by_path:
                    waves[i] = by_path[p]
                else:
                    errors[i] = reasons[p]
        return waves, errors

    def _predict_chunk(self, items: Sequence[AudioInput], *,
                       sr: int | None) -> list[Prediction]:
        waves, errors = self.decode_inputs(items, sr=sr)
        order = sorted(waves)
        pooled = self.clip_probabilities([waves[i] for i in order])
        done = {i: self._verdict(source_name(items[i]), p, k)
                for i, (p, k) in zip(order, pooled, strict=True)}
        return [done[i] if i in done else
                Prediction(source=source_name(items[i]), label=None, index=None,
                           error=errors[i], positive=self.decision.positive_class)
                for i in range(len(items))]


class FixedGate(WindowedGate):
    """A gate run from an ONNX export by onnxruntime: fixed, so it is changed (enrolled),
    saved and exported from the checkpoint it came from (:attr:`fixed_because` says so)."""

    backend = "onnx"
    fixed_because = ("an ONNX export is fixed: change its checkpoint (.pt), then export it "
                     "again")

    def save(self, path: str | os.PathLike[str]) -> None:
        raise ConfigError(self.fixed_because)

    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> ExportReport:
        raise ConfigError(self.fixed_because)

    def enroll(self, name: str, items: Sequence[AudioInput], *, sr: int | None = None,
               replace_existing: bool = False) -> Enrolment:
        raise ConfigError(self.fixed_because)

    def remove(self, name: str) -> None:
        raise ConfigError(self.fixed_because)


def source_name(item: AudioInput) -> str:
    """How a verdict names its input: the path, or ``<array>``."""
    return "<array>" if isinstance(item, np.ndarray) else str(item)


