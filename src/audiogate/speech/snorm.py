"""How a voice gate's score is made from cosine similarities: the rule, and adaptive S-norm.

A :class:`ScoreRule` names one of three rules (``Config.voice_score``):

* ``topk``: the mean of a clip's ``top_k`` highest cosine similarities to all enrolled clips,
  pooled over voices (:meth:`~audiogate.speech.profile.VoiceProfile.score`; the rule of every
  gate made before the others existed);
* ``centroid``: the cosine similarity to each voice's centroid (the mean of its enrolled
  embeddings), the largest over voices. A clip's nearest enrolled clips are often the same
  *word* said by another person (speaker embeddings of 1-s words carry the word); a centroid
  averages the words away;
* ``snorm``: the centroid similarity ``s`` normalised against an impostor cohort, per voice,
  by adaptive symmetric normalisation (S-norm; Matejka et al., "Analysis of score
  normalization in multilingual speaker recognition", Interspeech 2017)::

      z = (s - mean_v) / std_v        mean_v, std_v: of the voice centroid's similarities to
                                      its ``top`` nearest cohort speakers
      t = (s - mean_x) / std_x        mean_x, std_x: of the clip's similarities to its
                                      ``top`` nearest cohort speakers
      score = sigmoid(max over voices of (z + t) / 2 / scale)

  The cohort is one centroid per impostor speaker (the training ``not_allowed`` clips,
  grouped by person). A normalised score means the same for every voice, which is what lets
  one threshold hold for voices and impostors never heard: a voice enrolled later is
  normalised against the same cohort, and the threshold is kept.

Every rule's score lies in [0, 1] and rises with the similarity; pure functions of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

SCORE_RULES = ("topk", "centroid", "snorm")
DEFAULT_TOP = 10
"""Cohort speakers in each S-norm statistic (adaptive S-norm's top N; measured by
``python -m bench.voice_real``)."""
SCALE = 2.0
"""An S-norm score ``x`` (in standard deviations) is reported as ``sigmoid(x / SCALE)``: an
impostor's typical score (about 0) maps near 0.5 and a threshold of 2 to 4 standard
deviations, where the operating points fall, to 0.73-0.88."""
STD_FLOOR = 0.01
"""Smallest standard deviation a normalisation divides by (cosine units): cohort speakers
equally near a voice would otherwise make its scores explode. Observed spreads are 0.02-0.08."""
MIN_SPEAKERS = 3
"""Fewest cohort speakers S-norm is used with: a spread needs two, and setting the threshold
on cohort speakers scored as unheard leaves each one out."""


@dataclass(frozen=True)
class ScoreRule:
    """How embeddings become a gate score: ``kind`` (:data:`SCORE_RULES`), and for ``snorm``
    the cohort speakers per statistic (``top``) and the score's ``scale``."""

    kind: str = "topk"
    top: int = DEFAULT_TOP
    scale: float = SCALE

    def __post_init__(self) -> None:
        if self.kind not in SCORE_RULES:
            raise ConfigError(f"voice score rule must be one of {', '.join(SCORE_RULES)}, got "
                              f"{self.kind!r}")
        if not isinstance(self.top, int) or self.top < 1:
            raise ConfigError(f"S-norm top must be an integer >= 1, got {self.top!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"S-norm scale must be > 0, got {self.scale!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "top": self.top, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ScoreRule:
        """The stored rule; ``None`` (a gate made before rules existed) is ``topk``."""
        if data is None:
            return cls()
        return cls(kind=str(data["kind"]), top=int(data["top"]), scale=float(data["scale"]))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float64."""
    v = np.asarray(vectors, dtype=np.float64)
    out: np.ndarray = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    return out


def speaker_centroids(vectors: np.ndarray, speakers: Sequence[str]) -> tuple[np.ndarray,
                                                                              list[str]]:
    """One unit centroid per speaker of ``vectors`` ``[shape=(n, d)]`` (``speakers``: one
    name per row) -> ``[shape=(n_speakers, d)]`` and the names, sorted."""
    names = sorted(set(speakers))
    who = np.asarray(list(speakers))
    rows = [unit(vectors)[who == name].mean(axis=0) for name in names]
    return unit(np.stack(rows)) if rows else np.zeros((0, np.shape(vectors)[-1])), names


def top_stats(sims: np.ndarray, *, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (at least :data:`STD_FLOOR`) of each row's ``top``
    largest values ``[shape=(n, m)]`` -> two ``[shape=(n,)]``."""
    k = min(top, sims.shape[1])
    best = -np.sort(-np.asarray(sims, np.float64), axis=1)[:, :k]
    return best.mean(axis=1), np.maximum(best.std(axis=1), STD_FLOOR)


def snorm(sims: np.ndarray, *, clip_cohort: np.ndarray, voice_cohort: np.ndarray,
          top: int) -> np.ndarray:
    """S-norm of centroid similarities ``sims`` ``[shape=(n, n_voices)]``, given each clip's
    similarities to the cohort speakers ``[shape=(n, n_cohort)]`` and each voice centroid's
    ``[shape=(n_voices, n_cohort)]`` -> ``[shape=(n, n_voices)]`` (standard deviations)."""
    z_mean, z_std = top_stats(voice_cohort, top=top)
    t_mean, t_std = top_stats(clip_cohort, top=top)
    z = (sims - z_mean[None, :]) / z_std[None, :]
    t = (sims - t_mean[:, None]) / t_std[:, None]
    out: np.ndarray = 0.5 * (z + t)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))
    return out
