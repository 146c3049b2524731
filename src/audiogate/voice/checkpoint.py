"""Voice gate checkpoints: enrolled voices, impostor cohort, head, threshold and config.

A voice checkpoint holds no trained network (the speaker encoder's weights come from the
installed ``resemblyzer`` package, identified by their SHA-256 in the embedding spec). It is
written atomically as plain tensors and data and read with ``torch.load(weights_only=True)``,
so it cannot run code; :func:`load_voice_checkpoint` checks every part before use::

    format, version       "audiogate.voice-checkpoint", 1
    config                the run's Config (as a dict)
    classes               ["not_allowed", "allowed"]
    spec, top_k           how clips are embedded, and the top-k of the scoring rule
    voices                name -> float32 [n_i, 256] unit embeddings of its enrolment clips
    cohort                float32 [m, 256] training not_allowed embeddings (may be empty)
    head                  None or the logistic head (coefficients, intercept)
    gate                  positive class, threshold, operating point, validation figures
    metrics, run_id       the run's validation record and id
    history               one entry per enrolment or removal after training
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import AudiogateError, CheckpointError
from ..files import atomic_write
from ..training.checkpoint import load_payload, safe_load
from .embeddings import EmbedSpec
from .gate import VoiceProfile
from .scoring import LogisticHead, VoiceScorer

FORMAT = "audiogate.voice-checkpoint"
VOICE_MODELS = ("ge2e",)
"""Models that are no trained network but a pretrained speaker encoder and enrolled voices."""
VERSION = 1


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

    @property
    def epoch(self) -> int:
        return int(self.metrics.get("epoch", 1))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def save_voice_checkpoint(path: str | os.PathLike[str], ckpt: VoiceCheckpoint) -> None:
    """Write ``ckpt`` atomically (plain tensors and data only)."""
    profile = ckpt.profile
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "config": ckpt.config.to_dict(),
        "classes": list(ckpt.classes), "spec": profile.spec.as_dict(), "top_k": profile.top_k,
        "voices": {name: _tensor(v) for name, v in profile.voices.items()},
        "cohort": _tensor(ckpt.scorer.cohort),
        "head": ckpt.scorer.head.as_dict() if ckpt.scorer.head else None,
        "gate": ckpt.gate, "metrics": dict(ckpt.metrics), "run_id": ckpt.run_id,
        "history": list(ckpt.history),
    }
    with atomic_write(Path(path)) as fh:
        torch.save(payload, fh)


def is_voice_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable voice checkpoint (False for anything else, including
    files that cannot be read: the caller's own loader reports those)."""
    try:
        payload = safe_load(Path(path))
    except CheckpointError:
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_voice_checkpoint(path: str | os.PathLike[str]) -> VoiceCheckpoint:
    """Read a voice checkpoint safely; :class:`CheckpointError` on any problem."""
    path = Path(path)
    payload = load_payload(path, fmt=FORMAT, version=VERSION, what="voice checkpoint")
    try:
        config = Config.from_dict(payload["config"], source=f"{path} config")
        if config.model not in VOICE_MODELS:
            raise CheckpointError(f"model {config.model!r} is not a voice model")
        profile = VoiceProfile(spec=EmbedSpec.from_dict(payload["spec"]),
                               top_k=int(payload["top_k"]),
                               voices={str(k): v.numpy() for k, v in payload["voices"].items()})
        head = LogisticHead.from_dict(payload["head"]) if payload["head"] else None
        scorer = VoiceScorer(profile=profile, cohort=payload["cohort"].numpy(), head=head)
        gate = payload.get("gate")
        if gate is not None and not 0.0 <= float(gate["threshold"]) <= 1.0:
            raise CheckpointError(f"threshold {gate['threshold']} is not in [0, 1]")
        return VoiceCheckpoint(config=config, classes=tuple(payload["classes"]), scorer=scorer,
                               gate=gate, metrics=dict(payload.get("metrics") or {}),
                               run_id=payload.get("run_id"),
                               history=list(payload.get("history") or []))
    except (KeyError, TypeError, AttributeError, ValueError, AudiogateError) as exc:
        raise CheckpointError(f"{path}: incomplete or invalid voice checkpoint ({exc})") \
            from None
