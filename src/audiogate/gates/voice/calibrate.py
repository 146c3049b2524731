"""A voice gate's scorer and the trials its threshold is set on, from a run's training clips.

* The **cohort**: the training ``not_allowed`` clips with speech, grouped by person: by their
  ``group`` when the run has ``group_by``, else by their first sub-folder of
  ``not_allowed/`` (a clip directly in it is a person of its own). The logistic head reads
  the clips; ``voice_score = "snorm"`` one centroid per person
  (:mod:`~audiogate.speech.snorm`), and falls back to ``centroid`` (logged, and recorded in
  the fit) with fewer than :data:`~audiogate.speech.snorm.MIN_SPEAKERS` people.
* The **impostor trials** of the threshold: the validation ``not_allowed`` clips and the
  impostor voices, and with ``voice_calibration = "cohort"`` every cohort clip too, scored as
  a person never heard (:func:`cohort_trial_scores`). Validation holds a few impostor people;
  a threshold set on them alone carries their quirks, and on people never heard the false
  accepts drift from the target (``python -m bench.voice_real`` measures it). The cohort
  adds every training impostor as a new person.
* The **enrolment checks** of each training voice (:func:`training_checks`,
  :mod:`~audiogate.speech.quality`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...config import Config
from ...data.discover import Clip
from ...errors import ConfigError
from ...speech.embeddings import EmbeddedClips
from ...speech.profile import VoiceProfile
from ...speech.quality import VoiceCheck, check_voice
from ...speech.scoring import VoiceScorer, leave_group_out_features
from ...speech.snorm import MIN_SPEAKERS, ScoreRule, speaker_centroids
from .data import voice_name

log = logging.getLogger(__name__)

NOT_ALLOWED = "not_allowed"


def check_voice_config(config: Config) -> None:
    """Refuse settings that do not go together (before any clip is read)."""
    if config.voice_head == "logistic" and config.voice_score != "topk":
        raise ConfigError(f"voice_head = logistic scores by top-k similarity; it does not go "
                          f"with voice_score = {config.voice_score}: set voice_score = topk "
                          "(--voice-score topk), or voice_head = none")


def has_speech(clips: EmbeddedClips, *, vad: bool) -> np.ndarray:
    return clips.speech_s > 0 if vad else np.ones(len(clips.clips), bool)


def cohort_person(clip: Clip, *, root: str, group_by: str) -> str:
    """The person a ``not_allowed`` clip is of (see the module docstring)."""
    if group_by != "none":
        return clip.group
    try:
        parts = Path(clip.path).relative_to(Path(root, NOT_ALLOWED)).parts
    except ValueError:
        return clip.path
    return parts[0] if len(parts) > 1 else clip.path


def make_scorer(profile: VoiceProfile, train: EmbeddedClips, cohort: np.ndarray,
                config: Config) -> tuple[VoiceScorer, np.ndarray]:
    """The scorer of ``config``'s rule over the training ``cohort`` rows (bool), and each
    cohort row's person (an index into the people, in sorted order: the scorer's
    ``speakers`` under S-norm)."""
    people = [cohort_person(c, root=config.data, group_by=config.group_by)
              for c, r in zip(train.clips, cohort, strict=True) if r]
    kind = config.voice_score
    if kind == "snorm" and len(set(people)) < MIN_SPEAKERS:
        log.warning("voice_score = snorm needs the training not_allowed clips of at least %d "
                    "people (group_by, or one sub-folder of not_allowed/ per person); there "
                    "are %d, so the gate scores by centroid similarity without normalisation",
                    MIN_SPEAKERS, len(set(people)))
        kind = "centroid"
    rule = ScoreRule(kind=kind, top=config.voice_snorm_top)
    vectors = train.vectors[cohort]
    speakers, names = speaker_centroids(vectors, people)
    index = {name: i for i, name in enumerate(names)}
    person = np.asarray([index[p] for p in people], np.int64)
    if kind != "snorm":
        return VoiceScorer(profile=profile, cohort=vectors, rule=rule), person
    return VoiceScorer(profile=profile, cohort=vectors, rule=rule, speakers=speakers), person


def _voice_names(train: EmbeddedClips, *, root: str) -> np.ndarray:
    return np.asarray([voice_name(c, root=root) if c.label == 1 else "" for c in train.clips])


def training_scores(train: EmbeddedClips, scorer: VoiceScorer, *, root: str, vad: bool,
                    cohort: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Scores of the training clips as new clips would get them: under ``topk`` each leaving
    its own group out (with or without the head); under the other rules each enrolled clip
    with itself left out of its voice, and each ``cohort`` clip as a person never heard."""
    speech = has_speech(train, vad=vad)
    if scorer.rule.kind == "topk":
        feats = leave_group_out_features(
            vectors=train.vectors, groups=[c.group for c in train.clips],
            enrolled=(train.labels == 1) & speech, cohort=(train.labels == 0) & speech,
            top_k=scorer.top_k)
        scores = scorer.head.apply(feats) if scorer.head else np.clip(feats[:, 0], 0.0, 1.0)
        return np.where(speech, scores, 0.0)
    scores = scorer.score(train.vectors) if len(train.clips) else np.zeros(0)
    names = _voice_names(train, root=root)
    for name in scorer.profile.names:
        rows = (train.labels == 1) & speech & (names == name)
        left_out = scorer.leave_one_out(name)
        if len(left_out) == rows.sum():
            scores[rows] = left_out
    scores[cohort] = scorer.score_unheard(train.vectors[cohort], person)
    return np.where(speech, scores, 0.0)


def cohort_trial_scores(scorer: VoiceScorer, train: EmbeddedClips, cohort: np.ndarray,
                        person: np.ndarray, *, root: str, vad: bool) -> np.ndarray:
    """The ``cohort`` clips' scores as clips of people never heard: under S-norm with their
    own person left out of the cohort; with the head, leaving their own group out of its
    cohort clips (:func:`training_scores`)."""
    if scorer.head is not None:
        return training_scores(train, scorer, root=root, vad=vad, cohort=cohort,
                               person=person)[cohort]
    return scorer.score_unheard(train.vectors[cohort], person)


def training_checks(train: EmbeddedClips, scorer: VoiceScorer, *, root: str, vad: bool,
                    threshold: float) -> list[VoiceCheck]:
    """The enrolment checks (:func:`~audiogate.speech.quality.check_voice`) of every voice
    enrolled from ``train``, against the gate's ``threshold``."""
    allowed = train.labels == 1
    speech = has_speech(train, vad=vad)
    names = _voice_names(train, root=root)
    checks = []
    for name in scorer.profile.names:
        rows = allowed & (names == name)
        used = rows & speech
        checks.append(check_voice(
            name=name, vectors=scorer.profile.voices[name], sources=_paths(train, used),
            speech_s=train.speech_s[used], no_speech=_paths(train, rows & ~speech),
            genuine=scorer.leave_one_out(name), threshold=threshold))
    return checks


def _paths(clips: EmbeddedClips, rows: np.ndarray) -> Sequence[str]:
    return [c.path for c, r in zip(clips.clips, rows, strict=True) if r]
