"""How a voice gate scores a clip's embedding: pure functions of embedding arrays.

The gate's rule (:class:`~audiogate.speech.snorm.ScoreRule`) is ``topk``, ``centroid`` or
``snorm`` (centroid similarity normalised against the cohort's speakers; see
:mod:`~audiogate.speech.snorm`). Under ``topk``, a clip's *similarity* to the allowed voices is
the mean of its ``top_k`` highest cosine similarities to the enrolled clips
(:meth:`~audiogate.speech.profile.VoiceProfile.score`); its *impostor similarity* is the same
against a cohort of known impostor clips (the training ``not_allowed`` clips). The gate's
score, in [0, 1]:

* without a head, the similarity itself (speaker embeddings are non-negative, so cosine
  similarities lie in [0, 1]);
* with the logistic head (``topk`` only; :class:`LogisticHead`), ``sigmoid(a * similarity +
  b * impostor_similarity + c)`` with ``a > 0``, fitted on training clips only
  (:func:`fit_head`): it learns how much nearness to a known impostor should count against
  a clip.

Both are increasing in the similarity, so a threshold on the score is a threshold on it.
Training clips are scored leaving their own group out (:func:`leave_group_out_features`):
an enrolled clip compared with itself would look perfect. Likewise a cohort speaker's clips
are scored with that speaker left out of the cohort (:meth:`VoiceScorer.score_unheard`), and
an enrolled clip with itself left out of its voice (:meth:`VoiceScorer.leave_one_out`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import CheckpointError, DataError
from .encoder import EMBED_DIM
from .profile import VoiceProfile
from .snorm import MIN_SPEAKERS, ScoreRule, sigmoid, snorm, unit

log = logging.getLogger(__name__)

HEAD_FEATURES = ("similarity", "impostor_similarity")
"""The logistic head's inputs, in order."""
HEAD_C = 100.0
"""Inverse L2 strength of the head's logistic regression: its inputs span a few tenths, so
useful weights are tens; the threshold, chosen on validation, fixes the calibration."""


def top_k_mean(sims: np.ndarray, *, k: int) -> np.ndarray:
    """Mean of each row's ``k`` largest finite values ``[shape=(n, m)]`` -> ``[shape=(n,)]``
    (fewer where a row has fewer finite values; 0 where it has none). Excluded entries are
    ``-inf``."""
    sims = np.asarray(sims, dtype=np.float64)
    if sims.shape[1] == 0:
        return np.zeros(sims.shape[0])
    k = min(k, sims.shape[1])
    top = -np.sort(-sims, axis=1)[:, :k]
    finite = np.isfinite(top)
    count = finite.sum(axis=1)
    total = np.where(finite, top, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero) ``[shape=(n, EMBED_DIM)]``."""
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, EMBED_DIM)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class LogisticHead:
    """``sigmoid(coef . features + intercept)`` over :data:`HEAD_FEATURES`."""

    coef: tuple[float, float]
    intercept: float

    def __post_init__(self) -> None:
        values = (*self.coef, self.intercept)
        if len(self.coef) != len(HEAD_FEATURES) or not all(map(math.isfinite, values)):
            raise CheckpointError(f"voice head: expected {len(HEAD_FEATURES)} finite "
                                  f"coefficients and an intercept, got {values}")
        if self.coef[0] <= 0:
            raise CheckpointError("voice head: the weight of the similarity to the allowed "
                                  f"voices must be > 0, got {self.coef[0]}")

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Scores in (0, 1) of ``features`` ``[shape=(n, 2)]``."""
        z = np.asarray(features, np.float64) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "logistic", "features": list(HEAD_FEATURES),
                "coef": [float(c) for c in self.coef], "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticHead:
        if data.get("kind") != "logistic" or list(data.get("features", ())) != \
                list(HEAD_FEATURES):
            raise CheckpointError(f"voice head: unknown kind or inputs ({dict(data)})")
        coef = [float(c) for c in data["coef"]]
        return cls(coef=(coef[0], coef[1]), intercept=float(data["intercept"]))


def _no_speakers() -> np.ndarray:
    return np.zeros((0, EMBED_DIM), np.float32)


@dataclass(frozen=True, eq=False)
class VoiceScorer:
    """Enrolled voices (``profile``), impostor ``cohort`` clips ``[shape=(m, EMBED_DIM)]``
    (may be empty; the head's), the optional ``head``, the scoring ``rule`` and the cohort's
    speaker centroids ``speakers`` ``[shape=(c, EMBED_DIM)]`` (``snorm``'s): embeddings ->
    gate scores."""

    profile: VoiceProfile
    cohort: np.ndarray
    head: LogisticHead | None = None
    rule: ScoreRule = field(default_factory=ScoreRule)
    speakers: np.ndarray = field(default_factory=_no_speakers)

    def __post_init__(self) -> None:
        for name, what in (("cohort", "impostor cohort"), ("speakers", "cohort speakers")):
            rows = np.asarray(getattr(self, name), np.float32).reshape(-1, EMBED_DIM)
            if not np.isfinite(rows).all():
                raise CheckpointError(f"voice gate: the {what} hold NaN or infinity")
            object.__setattr__(self, name, rows)
        if self.head is not None and not len(self.cohort):
            raise CheckpointError("voice gate: a head needs impostor cohort embeddings")
        if self.head is not None and self.rule.kind != "topk":
            raise CheckpointError(f"voice gate: the logistic head scores by top-k similarity, "
                                  f"not by the {self.rule.kind!r} rule")
        if self.rule.kind == "snorm" and len(self.speakers) < MIN_SPEAKERS:
            raise CheckpointError(f"voice gate: S-norm needs at least {MIN_SPEAKERS} cohort "
                                  f"speakers, got {len(self.speakers)}")

    @property
    def top_k(self) -> int:
        return self.profile.top_k

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """:data:`HEAD_FEATURES` of clips ``[shape=(n, EMBED_DIM)]`` -> ``[shape=(n, 2)]``."""
        v = unit_rows(vectors)
        allowed = self.profile.score(v)
        impostor = top_k_mean(v @ self.cohort.T.astype(np.float64), k=self.top_k)
        return np.stack([allowed, impostor], axis=1)

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Gate scores in [0, 1] ``[shape=(n,)]`` of clip embeddings."""
        if len(np.asarray(vectors)) == 0:
            return np.zeros(0)
        if self.rule.kind != "topk":
            return self._centroid_score(vectors)
        feats = self.features(vectors)
        if self.head is None:
            return np.clip(feats[:, 0], 0.0, 1.0)
        return self.head.apply(feats)

    def _centroid_score(self, vectors: np.ndarray) -> np.ndarray:
        v = unit(np.asarray(vectors).reshape(-1, EMBED_DIM))
        centroids = self.profile.centroids()
        sims = v @ centroids.T
        if self.rule.kind == "centroid":
            return np.clip(sims.max(axis=1), 0.0, 1.0)
        speakers = self.speakers.astype(np.float64)
        normed = snorm(sims, clip_cohort=v @ speakers.T, voice_cohort=centroids @ speakers.T,
                       top=self.rule.top)
        return sigmoid(normed.max(axis=1) / self.rule.scale)

    def with_profile(self, profile: VoiceProfile) -> VoiceScorer:
        return replace(self, profile=profile)

    def score_unheard(self, vectors: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Scores ``[shape=(n,)]`` of clips of the cohort's speakers (``speaker``: each clip's
        row in :attr:`speakers`), each as a clip of a person never heard: under ``snorm``
        with its own speaker left out of the cohort; the other rules do not read the
        cohort's speakers."""
        scores = np.zeros(len(vectors))
        if self.rule.kind != "snorm":
            return self.score(vectors) if len(vectors) else scores
        for j in np.unique(speaker):
            rows = speaker == j
            others = replace(self, speakers=np.delete(self.speakers, j, axis=0))
            scores[rows] = others.score(vectors[rows])
        return scores

    def leave_one_out(self, name: str) -> np.ndarray:
        """Scores ``[shape=(n,)]`` of voice ``name``'s enrolled clips, each scored with itself
        left out of the voice, as a new clip of that person would be (empty with one clip:
        nothing is left to compare it with)."""
        clips = self.profile.voices[name]
        out = np.zeros(len(clips) if len(clips) > 1 else 0)
        for i in range(len(out)):
            rest = self.profile.enrol(name, np.delete(clips, i, axis=0), replace_existing=True)
            out[i] = self.with_profile(rest).score(clips[i:i + 1])[0]
        return out


def leave_group_out_features(*, vectors: np.ndarray, groups: Sequence[str],
                             enrolled: np.ndarray, cohort: np.ndarray,
                             top_k: int) -> np.ndarray:
    """:data:`HEAD_FEATURES` of training clips ``[shape=(n, EMBED_DIM)]``, each compared only
    with the enrolled rows (``enrolled``, bool ``[shape=(n,)]``) and cohort rows (``cohort``)
    of *other* groups, as a new clip of a voice would be -> ``[shape=(n, 2)]``."""
    v = unit_rows(vectors)
    sims = v @ v.T
    names = np.asarray(list(groups))
    same = names[:, None] == names[None, :]
    np.fill_diagonal(same, True)
    sims = np.where(same, -np.inf, sims)
    return np.stack([top_k_mean(sims[:, enrolled], k=top_k),
                     top_k_mean(sims[:, cohort], k=top_k)], axis=1)


def fit_head(features: np.ndarray, labels: np.ndarray, *, seed: int) -> LogisticHead | None:
    """The logistic head fitted on training ``features`` ``[shape=(n, 2)]`` and ``labels``
    (1 = allowed), classes weighted equally; None (logged) if the fit does not weigh the
    similarity to the allowed voices positively, where the head would only hurt."""
    from sklearn.linear_model import LogisticRegression  # local: heavy import

    y = np.asarray(labels, dtype=np.int64)
    if not ((y == 0).any() and (y == 1).any()):
        raise DataError("the voice head needs training clips of both classes")
    model = LogisticRegression(C=HEAD_C, class_weight="balanced", random_state=seed)
    model.fit(np.asarray(features, np.float64), y)
    coef = [float(c) for c in model.coef_[0]]
    if coef[0] <= 0:
        log.warning("voice head: the fit gives the similarity to the allowed voices a weight "
                    "of %.3g (not > 0); the gate scores by similarity alone", coef[0])
        return None
    return LogisticHead(coef=(coef[0], coef[1]), intercept=float(model.intercept_[0]))
