"""The voice gate as a classifier: ``audiogate.load`` of a voice checkpoint returns one.

>>> gate = audiogate.load("runs/voice/models/best.pt")             # doctest: +SKIP
>>> gate.predict("door.wav").label                                 # doctest: +SKIP
'allowed'
>>> gate.enroll("carol", ["carol1.wav", "carol2.wav"]).n_clips     # doctest: +SKIP
2
>>> gate.save("runs/voice/models/with-carol.pt")                   # doctest: +SKIP

A clip is judged whole (its first ``max_clip_s`` seconds): cut to its speech by the VAD (when
the gate was built with ``voice_vad``), embedded by the speaker encoder, scored against the
enrolled voices (:class:`~audiogate.voice.scoring.VoiceScorer`). Its ``P(allowed)`` is the
score, ``P(not_allowed)`` one minus it; a clip with no speech in it scores 0. Enrolling or
removing a voice changes the enrolled embeddings only: no retraining, the threshold is kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from ..config import Config
from ..data.audio_io import to_mono_resampled
from ..data.decode import decode_clips
from ..data.discover import Clip, Skipped
from ..deploy.decision import Decision
from ..deploy.inference import AudioInput, BaseClassifier
from ..errors import AudioError, DataError
from .checkpoint import VoiceCheckpoint, load_voice_checkpoint, save_voice_checkpoint
from .embeddings import Embedder, EmbedSettings
from .encoder import HOP, N_FFT, N_MELS, PARTIAL_FRAMES, SAMPLE_RATE, embed_utterances

log = logging.getLogger(__name__)

VOICE_FEATURES = Config(sr=SAMPLE_RATE, n_mels=N_MELS, fixed_length=PARTIAL_FRAMES + 1,
                        n_fft=N_FFT, win_length=N_FFT, hop_length=HOP).features()
"""The front end a voice gate reports: 16 kHz, and a 1.6 s window (the encoder's partial
window), which the window scan uses; the encoder's own front end is fixed."""
NO_SPEECH = "no speech found (the VAD found no voice in it)"


@dataclass(frozen=True)
class Enrolment:
    """What :meth:`VoiceClassifier.enroll` did: the voice, the clips used, those left out."""

    name: str
    n_clips: int
    skipped: list[Skipped] = field(default_factory=list)


class VoiceGateBase(BaseClassifier):
    """What every voice gate backend shares: clips -> speech (VAD) -> encoder input ->
    score -> ``[P(not_allowed), P(allowed)]``. Subclasses supply :meth:`_score_used`."""

    scan_by_speech = True

    def __init__(self, *, settings: EmbedSettings, classes: Sequence[str],
                 decision: Decision, epoch: int, metrics: dict[str, Any], max_clip_s: float,
                 workers: int = 1) -> None:
        super().__init__(classes=classes, features=VOICE_FEATURES, epoch=epoch, metrics=metrics,
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


class VoiceClassifier(VoiceGateBase):
    """A voice gate checkpoint run with PyTorch; same API as every classifier, plus
    :meth:`enroll`, :meth:`remove` and :meth:`save`."""

    backend = "torch"

    def __init__(self, checkpoint: VoiceCheckpoint, *, workers: int = 1) -> None:
        checkpoint.profile.require_installed_models()
        config = checkpoint.config
        threshold = checkpoint.gate["threshold"] if checkpoint.gate else None
        super().__init__(settings=checkpoint.profile.spec.settings, classes=checkpoint.classes,
                         decision=Decision(checkpoint.classes, pooling=config.clip_pooling,
                                           threshold=threshold),
                         epoch=checkpoint.epoch, metrics=checkpoint.metrics,
                         max_clip_s=config.max_clip_s, workers=workers)
        self.checkpoint = checkpoint

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, workers: int = 1) -> VoiceClassifier:
        return cls(load_voice_checkpoint(path), workers=workers)

    @property
    def voices(self) -> dict[str, int]:
        """Enrolled voice names and their clip counts."""
        return {k: len(v) for k, v in self.checkpoint.profile.voices.items()}

    def describe(self) -> dict[str, Any]:
        scorer = self.checkpoint.scorer
        return {**super().describe(), "model": "ge2e", "voices": self.voices,
                "top_k": scorer.top_k, "head": scorer.head.as_dict() if scorer.head else None,
                "cohort": len(scorer.cohort), "vad": self.vad}

    def _score_used(self, used: Sequence[np.ndarray]) -> np.ndarray:
        vectors = embed_utterances(used, run=self.embedder.run, settings=self.settings.encoder)
        return self.checkpoint.scorer.score(vectors)

    # ----- enrolment -----
    def _decode(self, items: Sequence[AudioInput], *,
                sr: int | None) -> tuple[list[tuple[str, np.ndarray]], list[Skipped]]:
        """Inputs -> ``(source, 16 kHz samples)`` in input order, and the undecodable ones."""
        limit = round(self.max_clip_s * SAMPLE_RATE)
        files = [str(x) for x in items if not isinstance(x, np.ndarray)]
        arrays, skipped = decode_clips([Clip(p, -1) for p in files], sr=SAMPLE_RATE,
                                       n_keep=limit, workers=self.workers, progress=False)
        by_path = {c.path: w[:n] for c, w, n in zip(arrays.clips, arrays.waves, arrays.lengths,
                                                     strict=True)}
        out: list[tuple[str, np.ndarray]] = []
        for x in items:
            if isinstance(x, np.ndarray):
                if sr is None:
                    raise AudioError("<array>", "sr is required for array input")
                out.append(("<array>", to_mono_resampled(x, native_sr=sr,
                                                         sr=SAMPLE_RATE)[:limit]))
            elif str(x) in by_path:
                out.append((str(x), by_path[str(x)]))
        return out, list(skipped)

    def enroll(self, name: str, items: Sequence[AudioInput], *, sr: int | None = None,
               replace_existing: bool = False) -> Enrolment:
        """Enrol voice ``name`` from audio files and/or arrays (``sr`` for arrays), in place.

        Clips that cannot be decoded or hold no speech are left out (listed in the result);
        :class:`DataError` if none is left. The threshold is kept.
        """
        decoded, skipped = self._decode(items, sr=sr)
        vectors = np.zeros((0, 0), np.float32)
        if decoded:
            used, speech_s = self.speech([w for _, w in decoded])
            keep = speech_s > 0 if self.vad else np.ones(len(decoded), bool)
            skipped += [Skipped(source, NO_SPEECH)
                        for (source, _), ok in zip(decoded, keep, strict=True) if not ok]
            vectors = embed_utterances([u for u, ok in zip(used, keep, strict=True) if ok],
                                       run=self.embedder.run,
                                       settings=self.settings.encoder)
        if not len(vectors):
            raise DataError(f"cannot enrol {name!r}: none of the {len(items)} clip(s) is usable"
                            + "".join(f"; {s.path}: {s.reason}" for s in skipped[:5]))
        profile = self.checkpoint.profile.enrol(name, vectors, replace_existing=replace_existing)
        self._update(profile, {"action": "enrol", "name": name, "clips": len(vectors)})
        log.info("enrolled %r from %d clip(s)%s", name, len(vectors),
                 f" ({len(skipped)} left out)" if skipped else "")
        return Enrolment(name=name, n_clips=len(vectors), skipped=skipped)

    def remove(self, name: str) -> None:
        """Remove voice ``name`` (in place); :class:`ConfigError` if it is not enrolled or is
        the last one."""
        profile = self.checkpoint.profile.remove(name)
        if not profile.voices:
            raise DataError(f"cannot remove {name!r}: it is the only enrolled voice, and a gate "
                            "without one would reject everyone")
        self._update(profile, {"action": "remove", "name": name})

    def _update(self, profile: Any, event: dict[str, Any]) -> None:
        event["time"] = datetime.now().astimezone().isoformat(timespec="seconds")
        ckpt = self.checkpoint
        self.checkpoint = replace(ckpt, scorer=ckpt.scorer.with_profile(profile),
                                  history=[*ckpt.history, event])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gate, with its enrolled voices as they are now, as a checkpoint."""
        save_voice_checkpoint(path, self.checkpoint)
