"""The voice profile: enrolled allowed voices and how a clip is scored against them.

A :class:`VoiceProfile` holds, for each allowed voice (a name), the embeddings of its enrolment
clips. Its own score (:meth:`VoiceProfile.score`, the ``topk`` rule) is the mean of a clip's
``top_k`` highest cosine similarities to all enrolled embeddings (pooled over voices): high
when it sounds like one of the allowed voices; each voice's centroid
(:meth:`VoiceProfile.centroids`) serves the other rules of :mod:`~audiogate.speech.scoring`. The
profile is pure scoring; the decision threshold is the operating point, chosen on validation
by :func:`audiogate.reporting.metrics.choose_threshold` and stored by the caller.

Enrolling or removing a voice returns a new profile; nothing is retrained. Profiles are saved
atomically as plain tensors and data (``torch.load(weights_only=True)`` reads them: a profile
cannot run code), together with the :class:`~audiogate.speech.embeddings.EmbedSpec` its
embeddings were made with, so a clip is always embedded the same way before it is scored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checkpoint import load_payload, write_payload
from ..errors import CheckpointError, ConfigError, DataError
from .embeddings import EmbedSpec
from .encoder import EMBED_DIM

FORMAT = "audiogate.voice-profile"
VERSION = 1
DEFAULT_TOP_K = 5
MAX_NAME = 100
UNIT_TOLERANCE = 1e-3
"""How far from 1 an enrolled embedding's norm may be (they are stored unit length)."""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or \
            not name.isprintable():
        raise ConfigError(f"a voice name must be printable text of 1..{MAX_NAME} characters, "
                          f"got {name!r}")
    return name


def _check_vectors(vectors: np.ndarray, *, what: str) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != EMBED_DIM:
        raise DataError(f"{what}: expected embeddings of shape (n, {EMBED_DIM}), got "
                        f"{v.shape}")
    if not np.isfinite(v).all():
        raise DataError(f"{what}: embeddings contain NaN or infinity")
    return v


def _check_enrolment(name: str, vectors: np.ndarray) -> None:
    """A voice's name and its enrolment embeddings: at least one, each of unit length."""
    _check_name(name)
    v = _check_vectors(vectors, what=f"voice {name!r}")
    if len(v) == 0:
        raise DataError(f"voice {name!r}: no enrolment clip")
    bad = int((np.abs(np.linalg.norm(v, axis=1) - 1.0) > UNIT_TOLERANCE).sum())
    if bad:
        raise DataError(f"voice {name!r}: {bad} embedding(s) are not unit length (a clip "
                        "with no voice in it?)")


@dataclass(frozen=True, eq=False)
class VoiceProfile:
    """Enrolled allowed voices (``voices``: name -> ``[shape=(n_i, EMBED_DIM)]`` unit rows)
    and the scoring rule's ``top_k``, for embeddings made with ``spec``."""

    spec: EmbedSpec
    voices: Mapping[str, np.ndarray] = field(default_factory=dict)
    top_k: int = DEFAULT_TOP_K

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        for name, vectors in self.voices.items():
            _check_enrolment(name, vectors)

    @property
    def names(self) -> list[str]:
        """Enrolled voice names, in enrolment order."""
        return list(self.voices)

    def require_installed_models(self) -> None:
        """Refuse a profile whose embeddings came from other encoder or VAD model files than
        the installed ones (its scores would not mean the same)."""
        if EmbedSpec.of(self.spec.settings) != self.spec:
            raise CheckpointError("this voice profile was enrolled with other speaker-encoder "
                                  "or VAD model files than the installed ones; enrol its "
                                  "voices again")

    def _pool(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.voices:
            raise DataError("no voice is enrolled: enrol at least one allowed voice first")
        owners = np.concatenate([np.full(len(v), i) for i, v in enumerate(self.voices.values())])
        return np.concatenate(list(self.voices.values())), owners

    def enrol(self, name: str, vectors: np.ndarray, *, replace_existing: bool = False,
              ) -> VoiceProfile:
        """A new profile with voice ``name`` enrolled from its clips' ``vectors``
        ``[shape=(n, EMBED_DIM)]``, unit length (zero rows, from clips without a voice, are
        refused)."""
        _check_enrolment(name, vectors)
        v = _check_vectors(vectors, what=f"voice {name!r}")
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        if name in self.voices and not replace_existing:
            raise ConfigError(f"voice {name!r} is already enrolled; remove it first or "
                              "replace it")
        return replace(self, voices={**self.voices, name: v})

    def remove(self, name: str) -> VoiceProfile:
        """A new profile without voice ``name``."""
        if name not in self.voices:
            raise ConfigError(f"no voice named {name!r} is enrolled (enrolled: "
                              f"{', '.join(self.voices) or 'none'})")
        return replace(self, voices={k: v for k, v in self.voices.items() if k != name})

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarities of clips ``[shape=(n, EMBED_DIM)]`` to every enrolled embedding
        ``[shape=(n, n_enrolled)]`` (a zero clip vector gives 0)."""
        v = _check_vectors(vectors, what="clips")
        pool, _ = self._pool()
        norms = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sims: np.ndarray = (v / norms) @ pool.T
        return sims

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Gate scores ``[shape=(n,)]`` in [-1, 1]: the mean of each clip's ``top_k`` highest
        similarities (``k`` capped at the number of enrolled embeddings)."""
        sims = self.similarities(vectors)
        k = min(self.top_k, sims.shape[1])
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k:]
        scores: np.ndarray = top.mean(axis=1)
        return scores

    def centroids(self) -> np.ndarray:
        """Each voice's centroid: the mean of its enrolled embeddings, scaled to unit length
        ``[shape=(n_voices, EMBED_DIM)]``, in enrolment order."""
        if not self.voices:
            raise DataError("no voice is enrolled: enrol at least one allowed voice first")
        means = np.stack([v.astype(np.float64).mean(axis=0) for v in self.voices.values()])
        unit: np.ndarray = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True),
                                              1e-12)
        return unit

    def nearest(self, vectors: np.ndarray) -> list[str]:
        """The name of the voice owning each clip's most similar enrolled embedding."""
        sims = self.similarities(vectors)
        _, owners = self._pool()
        return [self.names[owners[j]] for j in sims.argmax(axis=1)]

    # ----- files -----
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile atomically (plain tensors and data only)."""
        payload: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "top_k": self.top_k,
            "spec": self.spec.as_dict(),
            "voices": {k: torch.from_numpy(np.ascontiguousarray(v))
                       for k, v in self.voices.items()},
        }
        write_payload(path, payload)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VoiceProfile:
        """Read a profile with ``weights_only=True``; :class:`CheckpointError` on any
        problem."""
        path = Path(path)
        payload = load_payload(path, fmt=FORMAT, version=VERSION, what="voice profile")
        try:
            return cls(spec=EmbedSpec.from_dict(payload["spec"]), top_k=int(payload["top_k"]),
                       voices={str(k): v.numpy() for k, v in payload["voices"].items()})
        except (KeyError, TypeError, AttributeError, ConfigError, DataError) as exc:
            raise CheckpointError(f"{path}: incomplete or invalid voice profile ({exc})") \
                from None

