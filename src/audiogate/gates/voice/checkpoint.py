"""A voice gate's checkpoint: the ``voice`` kind of :mod:`audiogate.core.checkpoint`.

A voice gate holds no trained network (the speaker encoder's weights come from the installed
``resemblyzer`` package, identified by their SHA-256 in the embedding spec). Its body::

    spec, top_k           how clips are embedded, and the top-k of the scoring rule
    voices                name -> float32 [n_i, 256] unit embeddings of its enrolment clips
    cohort                float32 [m, 256] training not_allowed embeddings (may be empty)
    head                  None or the logistic head (coefficients, intercept)
    rule                  the scoring rule (kind, S-norm top and scale); absent: topk
    speakers              float32 [c, 256] the cohort's speaker centroids (S-norm); absent:
                          none

A checkpoint made before ``rule`` existed scores as it always did (``topk``), whatever the
config it stores says; its ``voice_score`` reads back as ``topk``.

and the envelope's ``history`` has one entry per enrolment or removal after training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ...config import Config, VoiceScore
from ...core.checkpoint import StoredGate, read_gate, save_gate
from ...errors import AudiogateError, CheckpointError
from ...speech.embeddings import EmbedSpec
from ...speech.profile import VoiceProfile
from ...speech.scoring import LogisticHead, VoiceScorer
from ...speech.snorm import ScoreRule

KIND = "voice"
VOICE_MODELS = ("ge2e",)
"""Models that are no trained network but a pretrained speaker encoder and enrolled voices."""


@dataclass
class VoiceCheckpoint:
    """A loaded voice checkpoint (see the module docstring)."""

    config: Config
    classes: tuple[str, ...]
    scorer: VoiceScorer
    gate: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def profile(self) -> VoiceProfile:
        return self.scorer.profile

    @classmethod
    def of(cls, stored: StoredGate, *, where: str) -> VoiceCheckpoint:
        """The voice gate in ``stored`` (read from ``where``); :class:`CheckpointError` if it
        is another kind of gate, incomplete or invalid."""
        if stored.kind != KIND:
            raise CheckpointError(f"{where}: not an audiogate voice checkpoint (a "
                                  f"{stored.kind} gate)")
        body = stored.body
        try:
            if stored.config.model not in VOICE_MODELS:
                raise CheckpointError(f"model {stored.config.model!r} is not a voice model")
            profile = VoiceProfile(spec=EmbedSpec.from_dict(body["spec"]),
                                   top_k=int(body["top_k"]),
                                   voices={str(k): v.numpy() for k, v in body["voices"].items()})
            head = LogisticHead.from_dict(body["head"]) if body["head"] else None
            rule = ScoreRule.from_dict(body.get("rule"))
            speakers = body["speakers"].numpy() if "speakers" in body else None
            scorer = VoiceScorer(profile=profile, cohort=body["cohort"].numpy(), head=head,
                                 rule=rule, **({} if speakers is None else
                                               {"speakers": speakers}))
            gate = stored.gate
            if gate is not None and not 0.0 <= float(gate["threshold"]) <= 1.0:
                raise CheckpointError(f"threshold {gate['threshold']} is not in [0, 1]")
            config = stored.config
            if config.voice_score != rule.kind:  # made before the rule was stored
                config = replace(config, voice_score=cast(VoiceScore, rule.kind))
            return cls(config=config, classes=stored.classes, scorer=scorer, gate=gate,
                       metrics=stored.metrics, run_id=stored.run_id, history=stored.history)
        except (KeyError, TypeError, AttributeError, ValueError, AudiogateError) as exc:
            raise CheckpointError(f"{where}: incomplete or invalid voice checkpoint ({exc})") \
                from None


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def save_voice_checkpoint(path: str | os.PathLike[str], ckpt: VoiceCheckpoint) -> None:
    """Write ``ckpt`` atomically (plain tensors and data only)."""
    profile = ckpt.profile
    body: dict[str, Any] = {
        "spec": profile.spec.as_dict(), "top_k": profile.top_k,
        "voices": {name: _tensor(v) for name, v in profile.voices.items()},
        "cohort": _tensor(ckpt.scorer.cohort),
        "head": ckpt.scorer.head.as_dict() if ckpt.scorer.head else None,
        "rule": ckpt.scorer.rule.as_dict(), "speakers": _tensor(ckpt.scorer.speakers),
    }
    save_gate(path, StoredGate(kind=KIND, config=ckpt.config, classes=ckpt.classes, body=body,
                               epoch=None, metrics=dict(ckpt.metrics), gate=ckpt.gate,
                               run_id=ckpt.run_id, history=list(ckpt.history)))


def load_voice_checkpoint(path: str | os.PathLike[str]) -> VoiceCheckpoint:
    """Read a voice checkpoint safely; :class:`CheckpointError` on any problem."""
    return VoiceCheckpoint.of(read_gate(Path(path)), where=str(path))
