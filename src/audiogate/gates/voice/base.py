"""What every voice gate backend shares: clips -> speech (VAD) -> encoder input -> score ->
``[P(not_allowed), P(allowed)]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...config import Config
from ...core.decision import Decision
from ...speech.embeddings import Embedder, EmbedSettings
from ...speech.encoder import HOP, N_FFT, N_MELS, PARTIAL_FRAMES, SAMPLE_RATE
from ..base import WindowedGate
from .checkpoint import KIND

VOICE_FEATURES = Config(sr=SAMPLE_RATE, n_mels=N_MELS, fixed_length=PARTIAL_FRAMES + 1,
                        n_fft=N_FFT, win_length=N_FFT, hop_length=HOP).features()
"""The front end a voice gate reports: 16 kHz, and a 1.6 s window (the encoder's partial
window), which the window scan uses; the encoder's own front end is fixed."""
NO_SPEECH = "no speech found (the VAD found no voice in it)"


class VoiceGateBase(WindowedGate):
    """What every voice gate backend shares: clips -> speech (VAD) -> encoder input ->
    score -> ``[P(not_allowed), P(allowed)]``. Subclasses supply :meth:`_score_used`."""

    kind = KIND
    scan_by_speech = True

    def __init__(self, *, settings: EmbedSettings, classes: Sequence[str],
                 decision: Decision, metrics: dict[str, Any], max_clip_s: float,
                 workers: int = 1) -> None:
        super().__init__(classes=classes, features=VOICE_FEATURES, epoch=None, metrics=metrics,
                         decision=decision, max_clip_s=max_clip_s, workers=workers)
        self.settings = settings
        self._embedder: Embedder | None = None

    def _make_embedder(self) -> Embedder:
        return Embedder(self.settings)

    @property
    def embedder(self) -> Embedder:
        """The speaker encoder and VAD, loaded on first use."""
        if self._embedder is None:
            self._embedder = self._make_embedder()
        return self._embedder

    @property
    def vad(self) -> bool:
        return self.settings.vad is not None

    def speech(self, waves: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """What the encoder gets of each clip (its speech, or the whole clip when the VAD
        finds none or is off) and the seconds of speech found (the clip's length, VAD off)."""
        speech = self.embedder.speech(waves)
        limit = self.embedder.max_samples
        used = [s if s.size else np.asarray(w[:limit], np.float32)
                for s, w in zip(speech, waves, strict=True)]
        return used, np.asarray([s.size / SAMPLE_RATE for s in speech])

    def _score_used(self, used: Sequence[np.ndarray]) -> np.ndarray:
        """Gate scores ``[shape=(n,)]`` of the encoder inputs ``used`` (see :meth:`speech`)."""
        raise NotImplementedError

    def scores(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Gate scores in [0, 1] ``[shape=(n,)]`` of 16 kHz clips (0 without speech)."""
        if not waves:
            return np.zeros(0)
        used, speech_s = self.speech(waves)
        scores = self._score_used(used)
        return np.where(speech_s > 0, scores, 0.0) if self.vad else scores

    def _as_probabilities(self, scores: np.ndarray) -> np.ndarray:
        pos = self.decision.positive
        assert pos is not None  # a voice gate always has its two classes
        probs = np.zeros((len(scores), 2), np.float32)
        probs[:, pos], probs[:, 1 - pos] = scores, 1.0 - scores
        return probs

    def clip_probabilities(self, waves: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """Whole clips -> ``[P(not_allowed), P(allowed)]`` (in class order), 1 unit each."""
        probs = self._as_probabilities(self.scores(list(waves)))
        return [(row, 1) for row in probs]

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        return self._as_probabilities(self.scores(list(x)))
