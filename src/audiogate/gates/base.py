"""What the gate kinds share to judge audio: decoding inputs, windowing clips, batching windows
through the model and pooling their probabilities into one verdict per clip.

:class:`WindowedGate` implements the instance side of :class:`~audiogate.core.gate.Gate`
around one method a kind supplies, :meth:`WindowedGate._batch_probabilities` (a batch of
fixed-length waveforms -> class probabilities); a kind whose unit is not a fixed window (a
voice gate judges a clip's speech whole) overrides :meth:`WindowedGate.clip_probabilities`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.decision import clip_windows
from ..core.gate import AudioInput, Enrolment, ExportReport, Gate, Prediction
from ..data.audio_io import to_mono_resampled
from ..data.decode import decode_stream
from ..data.workers import cores_left, processes_for
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
        ``error`` set instead of stopping the rest. Order is kept. Files are decoded by one
        pool of ``workers`` processes while the model judges the clips decoded before,
        ``PREDICT_CHUNK`` clips at a time, so memory does not grow with the number of
        files."""
        out: list[Prediction] = []
        bar = tqdm(total=len(items), desc="predict", unit="file", disable=not progress,
                   leave=False)
        chunk: list[tuple[int, np.ndarray | str]] = []
        files = sum(not isinstance(x, np.ndarray) for x in items)
        with cores_left(processes_for(files, workers=self.workers)):
            for i, decoded in enumerate(self._decoded(items, sr=sr)):
                chunk.append((i, decoded))
                if len(chunk) == PREDICT_CHUNK or i == len(items) - 1:
                    out += self._judge(chunk, items)
                    bar.update(len(chunk))
                    chunk = []
        bar.close()
        return out

    def _decoded(self, items: Sequence[AudioInput], *,
                 sr: int | None) -> Generator[np.ndarray | str, None, None]:
        """Each input's first :attr:`clip_limit` samples at ``features.sr``, or the reason
        it cannot be used, in order: files decoded in ``workers`` processes (one pool for
        all), arrays at ``sr`` resampled here."""
        files = decode_stream([str(x) for x in items if not isinstance(x, np.ndarray)],
                              sr=self.features.sr, limit=self.clip_limit,
                              workers=self.workers)
        with contextlib.closing(files):
            for x in items:
                if not isinstance(x, np.ndarray):
                    yield next(files)
                    continue
                try:
                    if sr is None:
                        raise AudioError("<array>", "sr is required for array input")
                    yield to_mono_resampled(x, native_sr=sr,
                                            sr=self.features.sr)[:self.clip_limit]
                except AudioError as exc:
                    yield exc.reason

    def decode_inputs(self, items: Sequence[AudioInput], *,
                      sr: int | None) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Inputs -> their first :attr:`clip_limit` samples at ``features.sr``, by input
        index, and the reason each failed one could not be used (files are decoded in
        ``workers`` processes; arrays at ``sr`` are resampled)."""
        waves: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, decoded in enumerate(self._decoded(items, sr=sr)):
            if isinstance(decoded, str):
                errors[i] = decoded
            else:
                waves[i] = decoded
        return waves, errors

    def _judge(self, chunk: Sequence[tuple[int, np.ndarray | str]],
               items: Sequence[AudioInput]) -> list[Prediction]:
        """Predictions of decoded inputs ``(index, samples or the reason they failed)``."""
        good = [(i, w) for i, w in chunk if not isinstance(w, str)]
        pooled = self.clip_probabilities([w for _, w in good])
        done = {i: self._verdict(source_name(items[i]), p, k)
                for (i, _), (p, k) in zip(good, pooled, strict=True)}
        return [done[i] if i in done else
                Prediction(source=source_name(items[i]), label=None, index=None,
                           error=str(w), positive=self.decision.positive_class)
                for i, w in chunk]


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


