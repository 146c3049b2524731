"""Judge new audio with a trained model: everything here needs only a checkpoint.

>>> gate = audiogate.load("runs/demo/models/best.pt")          # doctest: +SKIP
>>> gate = audiogate.load("best.onnx")                         # doctest: +SKIP
>>> gate.predict("clip.wav").label                             # doctest: +SKIP
'allowed'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FeatureConfig
from ..data.audio_io import AUDIO_EXTENSIONS, to_mono_resampled
from ..data.decode import decode_clips
from ..data.discover import Clip, Skipped
from ..errors import AudioError, ConfigError
from ..features.frontend import fit_length
from ..training.checkpoint import Checkpoint, load_checkpoint
from .decision import Decision, clip_windows, judged_samples

BATCH = 64
"""Windows per forward pass."""
PREDICT_CHUNK = 64
"""Inputs decoded and held in memory at once by ``predict_many`` (at most ``max_clip_s`` of
audio each: about 40 MB at 10 s)."""

AudioInput = str | os.PathLike[str] | np.ndarray


@dataclass(frozen=True)
class Prediction:
    """The verdict on one input. ``error`` is set (and ``label`` is None) when it failed.

    For a two-class gate, ``score`` is ``P(positive)`` and ``threshold`` the decision
    threshold (None: the most probable class wins).
    """

    source: str
    label: str | None
    index: int | None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    score: float | None = None
    threshold: float | None = None
    n_windows: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float:
        """Probability of the predicted class (0 for a failed input)."""
        return self.probabilities.get(self.label, 0.0) if self.label else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "label": self.label, "index": self.index,
                "confidence": self.confidence, "probabilities": self.probabilities,
                "score": self.score, "threshold": self.threshold,
                "n_windows": self.n_windows, "error": self.error}


class BaseClassifier:
    """What every backend shares: decoding, windowing, batching, verdicts. Subclasses supply
    :meth:`_batch_probabilities` (one batch of fixed-length waveforms -> class probabilities).

    A clip is judged over the first ``max_clip_s`` seconds: one model window when it fits,
    else windows every half window (:func:`~audiogate.deploy.decision.clip_windows`) whose
    probabilities are pooled by ``decision.pooling``. ``decision`` also holds the gate's
    threshold.
    """

    backend = "none"
    scan_by_speech = False
    """Whether ``scan`` judges this model's recordings per speech segment by default (a voice
    gate) rather than window by window."""

    def __init__(self, *, classes: Sequence[str], features: FeatureConfig, epoch: int,
                 metrics: dict[str, Any], decision: Decision | None = None,
                 max_clip_s: float = 10.0, workers: int = 1) -> None:
        self.classes = tuple(classes)
        self.features = features
        self.epoch = epoch
        self.metrics = dict(metrics)
        self.decision = decision or Decision(self.classes)
        self.max_clip_s = max_clip_s
        self.workers = workers

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        """``[shape=(batch, features.n_samples)]`` float32 -> ``[shape=(batch, n_classes)]``."""
        raise NotImplementedError

    @property
    def clip_limit(self) -> int:
        """Samples of a clip that judge it (:func:`~.decision.judged_samples`)."""
        return judged_samples(window=self.features.n_samples, sr=self.features.sr,
                              max_clip_s=self.max_clip_s)

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold

    def with_threshold(self, threshold: float | None) -> BaseClassifier:
        """This classifier with another decision threshold (``None``: argmax)."""
        self.decision = replace(self.decision, threshold=threshold)
        return self

    def describe(self) -> dict[str, Any]:
        """Classes, feature config, epoch, validation metric, decision and backend."""
        return {"classes": list(self.classes), "features": asdict(self.features),
                "window_s": self.features.n_samples / self.features.sr,
                "max_clip_s": self.max_clip_s, "epoch": self.epoch,
                "val_f1": self.metrics.get("val_f1"), "metrics": self.metrics,
                **self.decision.describe(), "backend": self.backend}

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
                          threshold=self.decision.threshold, n_windows=n_windows)

    def predict(self, audio: AudioInput, *, sr: int | None = None) -> Prediction:
        """Judge one file or one array (``sr`` required for arrays).

        Raises :class:`~audiogate.errors.AudioError` if the input is unusable.
        """
        result = self.predict_many([audio], sr=sr)[0]
        if result.error is not None:
            raise AudioError(result.source, result.error)
        return result

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

    def _predict_chunk(self, items: Sequence[AudioInput], *,
                       sr: int | None) -> list[Prediction]:
        waves: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        files = [(i, str(x)) for i, x in enumerate(items) if not isinstance(x, np.ndarray)]
        for i, x in enumerate(items):
            if isinstance(x, np.ndarray):
                try:
                    if sr is None:
                        raise AudioError("<array>", "sr is required for array input")
                    waves[i] = to_mono_resampled(x, native_sr=sr, sr=self.features.sr)
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
        order = sorted(waves)
        pooled = self.clip_probabilities([waves[i] for i in order])
        done = {i: self._verdict(_name(items[i]), p, k)
                for i, (p, k) in zip(order, pooled, strict=True)}
        return [done[i] if i in done else
                Prediction(source=_name(items[i]), label=None, index=None, error=errors[i])
                for i in range(len(items))]


class Classifier(BaseClassifier):
    """A trained model plus its front end, rebuilt from a checkpoint alone (PyTorch)."""

    backend = "torch"

    def __init__(self, checkpoint: Checkpoint, *, workers: int = 1) -> None:
        config = checkpoint.config
        decision = Decision(checkpoint.classes, pooling=config.clip_pooling,
                            threshold=checkpoint.gate["threshold"] if checkpoint.gate else None)
        super().__init__(classes=checkpoint.classes, features=checkpoint.features,
                         epoch=checkpoint.epoch, metrics=checkpoint.metrics, decision=decision,
                         max_clip_s=config.max_clip_s, workers=workers)
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model()

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()


def _name(item: AudioInput) -> str:
    return "<array>" if isinstance(item, np.ndarray) else str(item)


BACKENDS = ("torch", "onnx")


def load(path: str | os.PathLike[str], *, backend: str | None = None,
         onnx: str | os.PathLike[str] | None = None, threshold: float | None = None,
         workers: int = 1) -> BaseClassifier:
    """A ready-to-use classifier from a checkpoint (``.pt``) or an ONNX export (``.onnx``).

    ``backend``: ``"torch"`` runs a checkpoint with PyTorch; ``"onnx"`` runs an export with
    onnxruntime (needs ``audiogate[onnx]``). ``None`` picks by the file: ONNX for ``.onnx``,
    PyTorch otherwise. With ``backend="onnx"`` and a checkpoint ``path``, the export is
    ``onnx`` (default: ``path`` with ``.onnx``) and it is refused unless it was exported from
    that very checkpoint. Every backend has the same ``predict``/``predict_many``/
    ``probabilities``. ``threshold`` replaces the gate's stored threshold (the operating point
    chosen on validation). ``workers``: decoding processes for ``predict_many`` over files.
    """
    gate = _load(Path(path), backend=backend, onnx=onnx, workers=workers)
    return gate if threshold is None else gate.with_threshold(threshold)


def _load(path: Path, *, backend: str | None, onnx: str | os.PathLike[str] | None,
          workers: int) -> BaseClassifier:
    is_onnx = path.suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from ..voice.checkpoint import is_voice_checkpoint  # local: voice gates load on demand

    if backend == "torch":
        if is_onnx:
            raise ConfigError(f"{path} is an ONNX export; load it with backend='onnx'")
        if is_voice_checkpoint(path):
            from ..voice.classifier import VoiceClassifier

            return VoiceClassifier.load(path, workers=workers)
        return Classifier(load_checkpoint(path), workers=workers)
    from ..voice.gate_export import is_voice_onnx, load_voice_onnx
    from .onnx import load_onnx  # local: onnxruntime is an optional dependency

    model = path if is_onnx else Path(onnx or path.with_suffix(".onnx"))
    source = None if is_onnx else path
    if is_voice_onnx(model):
        return load_voice_onnx(model, workers=workers, checkpoint=source)
    return load_onnx(model, workers=workers, checkpoint=source)


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Skipped]]:
    """Files as given, and audio files found recursively in folders (hidden ones skipped)."""
    files: list[str] = []
    skipped: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, names in os.walk(path, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(names):
                    if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                        files.append(str(Path(dirpath) / name))
        elif path.exists() or path.is_symlink():
            files.append(str(path))
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
    return files, skipped
