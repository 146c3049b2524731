"""The voice gate as a classifier: ``audiogate.load`` of a voice checkpoint returns one.

>>> gate = audiogate.load("runs/voice/models/best.pt")             # doctest: +SKIP
>>> gate.predict("door.wav").label                                 # doctest: +SKIP
'allowed'
>>> gate.enroll("carol", ["carol1.wav", "carol2.wav"]).n_clips     # doctest: +SKIP
2
>>> gate.save("runs/voice/models/with-carol.pt")                   # doctest: +SKIP

A clip is judged whole (its first ``max_clip_s`` seconds): cut to its speech by the VAD (when
the gate was built with ``voice_vad``), embedded by the speaker encoder, scored against the
enrolled voices (:class:`~audiogate.speech.scoring.VoiceScorer`). Its ``P(allowed)`` is the
score, ``P(not_allowed)`` one minus it; a clip with no speech in it scores 0. Enrolling or
removing a voice changes the enrolled embeddings only: no retraining, the threshold is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...core.decision import POSITIVE_NAME, Decision
from ...core.gate import AudioInput, Enrolment, ExportReport
from ...core.runs import now
from ...errors import DataError
from ...speech.encoder import embed_utterances
from ...speech.profile import VoiceProfile
from ...speech.quality import VoiceCheck, check_voice
from ..base import source_name
from .base import NO_SPEECH, VoiceGateBase
from .checkpoint import VoiceCheckpoint, save_voice_checkpoint
from .history import appended
from .onnx import export_voice_onnx

log = logging.getLogger(__name__)

def _input_name(items: Sequence[AudioInput], i: int) -> str:
    """How the enrolment checks name input ``i``: its path, or ``<array N>`` (1-based: the
    service's N-th uploaded file)."""
    return f"<array {i + 1}>" if isinstance(items[i], np.ndarray) else source_name(items[i])


class VoiceClassifier(VoiceGateBase):
    """A voice gate checkpoint run with PyTorch; same API as every classifier, plus
    :meth:`enroll`, :meth:`remove` and :meth:`save`."""

    backend = "torch"
    enrolls = True

    def __init__(self, checkpoint: VoiceCheckpoint, *, workers: int = 1) -> None:
        checkpoint.profile.require_installed_models()
        config = checkpoint.config
        threshold = checkpoint.gate["threshold"] if checkpoint.gate else None
        super().__init__(settings=checkpoint.profile.spec.settings, classes=checkpoint.classes,
                         decision=Decision(checkpoint.classes, positive_class=POSITIVE_NAME,
                                           pooling=config.clip_pooling,
                                           threshold=threshold),
                         metrics=checkpoint.metrics, max_clip_s=config.max_clip_s,
                         workers=workers)
        self.operating_point = (checkpoint.gate or {}).get("operating_point")
        self.checkpoint = checkpoint

    @property
    def voices(self) -> dict[str, int]:
        """Enrolled voice names and their clip counts."""
        return {k: len(v) for k, v in self.checkpoint.profile.voices.items()}

    def describe(self) -> dict[str, Any]:
        scorer = self.checkpoint.scorer
        return {**super().describe(), "model": "ge2e", "voices": self.voices,
                "top_k": scorer.top_k, "head": scorer.head.as_dict() if scorer.head else None,
                "score": scorer.rule.as_dict(), "cohort": len(scorer.cohort), "vad": self.vad}

    def _score_used(self, used: Sequence[np.ndarray]) -> np.ndarray:
        vectors = embed_utterances(used, run=self.embedder.run, settings=self.settings.encoder)
        return self.checkpoint.scorer.score(vectors)

    # ----- enrolment -----
    def enroll(self, name: str, items: Sequence[AudioInput], *, sr: int | None = None,
               replace_existing: bool = False) -> Enrolment:
        """Enrol voice ``name`` from audio files and/or arrays (``sr`` for arrays), in place.

        Clips that cannot be decoded or hold no speech are left out (listed in the result);
        :class:`DataError` if none is left. The threshold is kept. The voice's enrolment checks
        (:mod:`~audiogate.speech.quality`) are logged and returned in ``quality``.
        """
        waves, errors = self.decode_inputs(items, sr=sr)
        skipped = [(source_name(items[i]), reason) for i, reason in sorted(errors.items())]
        order = sorted(waves)
        vectors = np.zeros((0, 0), np.float32)
        kept, seconds = [], np.zeros(0)
        if order:
            used, speech_s = self.speech([waves[i] for i in order])
            keep = speech_s > 0 if self.vad else np.ones(len(order), bool)
            skipped += [(source_name(items[i]), NO_SPEECH)
                        for i, ok in zip(order, keep, strict=True) if not ok]
            kept, seconds = [i for i, ok in zip(order, keep, strict=True) if ok], speech_s[keep]
            vectors = embed_utterances([u for u, ok in zip(used, keep, strict=True) if ok],
                                       run=self.embedder.run,
                                       settings=self.settings.encoder)
        if not len(vectors):
            raise DataError(f"cannot enrol {name!r}: none of the {len(items)} clip(s) is usable"
                            + "".join(f"; {source}: {why}" for source, why in skipped[:5]))
        profile = self.checkpoint.profile.enrol(name, vectors, replace_existing=replace_existing)
        named = [_input_name(items, i) for i in range(len(items))]
        check = self._check(name, profile, sources=[named[i] for i in kept], speech_s=seconds,
                            no_speech=[named[i] for i in order if i not in kept])
        self._update(profile, {"action": "enrol", "name": name, "clips": len(vectors)})
        log.info("enrolled %r from %d clip(s)%s", name, len(vectors),
                 f" ({len(skipped)} left out)" if skipped else "")
        return Enrolment(name=name, n_clips=len(vectors), skipped=skipped,
                         quality=check.as_dict())

    def _check(self, name: str, profile: VoiceProfile, *, sources: Sequence[str],
               speech_s: np.ndarray, no_speech: Sequence[str]) -> VoiceCheck:
        """The enrolment checks of voice ``name`` as ``profile`` holds it, against the gate's
        threshold (:func:`~audiogate.speech.quality.check_voice`), logged."""
        scorer = self.checkpoint.scorer.with_profile(profile)
        check = check_voice(name=name, vectors=profile.voices[name], sources=sources,
                            speech_s=speech_s, no_speech=no_speech,
                            genuine=scorer.leave_one_out(name), threshold=self.threshold)
        log.info("enrolment: %s", check.summary())
        for problem in check.problems():
            log.warning("enrolment of voice %r: %s", name, problem)
        return check

    def remove(self, name: str) -> None:
        """Remove voice ``name`` (in place); :class:`ConfigError` if it is not enrolled or is
        the last one."""
        profile = self.checkpoint.profile.remove(name)
        if not profile.voices:
            raise DataError(f"cannot remove {name!r}: it is the only enrolled voice, and a gate "
                            "without one would reject everyone")
        self._update(profile, {"action": "remove", "name": name})

    def _update(self, profile: VoiceProfile, event: dict[str, Any]) -> None:
        ckpt = self.checkpoint
        self.checkpoint = replace(ckpt, scorer=ckpt.scorer.with_profile(profile),
                                  history=appended(ckpt.history, {**event, "time": now()}))

    @contextlib.contextmanager
    def changes(self) -> Iterator[None]:
        """Enrolments and removals inside are undone if it raises."""
        before = self.checkpoint
        try:
            yield
        except BaseException:
            self.checkpoint = before
            raise

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gate, with its enrolled voices as they are now, as a checkpoint."""
        save_voice_checkpoint(path, self.checkpoint)

    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> ExportReport:
        return export_voice_onnx(checkpoint=self.checkpoint, score=self._score_used,
                                 source=source, out=out, tolerance=tolerance)
