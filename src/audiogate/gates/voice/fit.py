"""``train`` for a voice gate (``model = "ge2e"``): enrolment, a head, a threshold; no epochs.

The run folder is the one every run has (``config.toml``, ``status.json``, ``split.csv``,
``skipped.csv``, ``metrics.json``, ``test_metrics.json``, ``test_predictions.csv``,
``report.html``, ``models/best.pt``, ``outputs/``), made once the data is ready:

1. the clips are discovered, embedded (cached) and split as for any run
   (:func:`~audiogate.gates.voice.data.prepare_voice_data`);
2. the training ``allowed`` clips with speech are enrolled, one voice per first sub-folder of
   ``allowed/``; the training ``not_allowed`` clips are the impostor cohort;
3. the scorer follows ``voice_score`` (S-norm against the cohort's people by default,
   :mod:`~audiogate.gates.voice.calibrate`); with ``voice_head = "logistic"`` and a cohort,
   the head is fitted on the training clips, each scored leaving its own group out
   (:mod:`~audiogate.speech.scoring`);
4. the threshold is chosen by ``operating_point`` on the validation clips plus any impostor
   voices (:mod:`~audiogate.speech.impostors`), and with ``voice_calibration = "cohort"``
   every cohort clip scored as a person never heard;
5. each voice's enrolment is checked (:mod:`~audiogate.speech.quality`: clips without
   speech, outliers, too little speech, its expected false-reject rate), logged and recorded;
6. ``best.pt`` is written, then the test split is judged by it exactly as ``predict`` judges
   clips (:func:`~audiogate.reporting.evaluate.test_report`).

``metrics.json`` (:func:`~audiogate.core.runs.write_metrics`) records no epoch: its ``fit``
holds what the fit did (voices, clips enrolled, cohort, impostors, head, score rule, threshold
trials, enrolment checks) and measured.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...config import Config
from ...core.runs import (
    RunPaths,
    TrainResult,
    check_run_name,
    write_metrics,
)
from ...errors import DataError
from ...reporting.evaluate import test_report
from ...reporting.metrics import choose_threshold, gate_report, macro_f1
from ...reporting.report import write_report
from ...speech.embeddings import EmbeddedClips
from ...speech.impostors import Impostors, load_impostors, resolve_source
from ...speech.profile import VoiceProfile
from ...speech.scoring import VoiceScorer, fit_head, leave_group_out_features
from ..runs import start_run, write_data_files
from .calibrate import (
    check_voice_config,
    cohort_trial_scores,
    make_scorer,
    training_checks,
    training_scores,
)
from .checkpoint import KIND, VoiceCheckpoint, load_voice_checkpoint, save_voice_checkpoint
from .classifier import VoiceClassifier
from .data import VoiceData, prepare_voice_data, voice_name

log = logging.getLogger(__name__)

STOP_REASON = "voice gate: voices enrolled, threshold chosen (no training epochs)"


@dataclass
class BuiltGate:
    """What :func:`build_gate` made: the scorer, the gate's decision record, what the fit did
    and measured, and the impostors used."""

    scorer: VoiceScorer
    gate: dict[str, Any]
    record: dict[str, Any]
    impostors: Impostors


def _has_speech(clips: EmbeddedClips, *, vad: bool) -> np.ndarray:
    return clips.speech_s > 0 if vad else np.ones(len(clips.clips), bool)


def gate_scores(scorer: VoiceScorer, clips: EmbeddedClips, *, vad: bool) -> np.ndarray:
    """Scores of embedded clips as ``predict`` gives them (0 for a clip without speech)."""
    scores = scorer.score(clips.vectors)
    return np.where(_has_speech(clips, vad=vad), scores, 0.0)


def enrol_training(data: VoiceData, config: Config) -> VoiceProfile:
    """The profile of the training ``allowed`` clips that hold speech, one voice per first
    sub-folder of ``allowed/``."""
    train = data.part("train")
    keep = (train.labels == 1) & _has_speech(train, vad=config.voice_vad)
    if not keep.any():
        raise DataError(f"{config.data}: no training clip of allowed/ holds speech to enrol "
                        "(the VAD found none; check the recordings or set voice_vad = false)")
    names = np.asarray([voice_name(c, root=config.data) if c.label == 1 else ""
                        for c in train.clips])
    silent = sorted(set(names[train.labels == 1].tolist()) - set(names[keep].tolist()))
    if silent:
        raise DataError(f"{config.data}: no training clip of voice(s) {', '.join(silent)} holds "
                        "speech, so they cannot be enrolled and the gate would reject them; "
                        "add recordings of them, or set voice_vad = false")
    profile = VoiceProfile(spec=data.cache.spec, top_k=config.voice_top_k)
    for name in dict.fromkeys(names[keep].tolist()):
        profile = profile.enrol(name, train.vectors[keep & (names == name)])
    left = int(((train.labels == 1) & ~keep).sum())
    if left:
        log.warning("%d training clip(s) of allowed/ hold no speech and are not enrolled", left)
    return profile


def build_gate(data: VoiceData, impostors: Impostors, config: Config) -> BuiltGate:
    """Enrol, make the scorer (and the head), choose the threshold on validation (+
    impostors, + the cohort), check each voice's enrolment."""
    check_voice_config(config)
    train, val = data.part("train"), data.part("val")
    vad = config.voice_vad
    profile = enrol_training(data, config)
    cohort_rows = (train.labels == 0) & _has_speech(train, vad=vad)
    scorer, person = make_scorer(profile, train, cohort_rows, config)
    if config.voice_head == "logistic" and not cohort_rows.any():
        log.warning("voice_head = logistic needs not_allowed training clips; there are none, "
                    "so the gate scores by similarity alone")
    elif config.voice_head == "logistic":
        rows = _has_speech(train, vad=vad)
        feats = leave_group_out_features(
            vectors=train.vectors[rows], groups=[c.group for c, r in zip(train.clips, rows,
                                                                          strict=True) if r],
            enrolled=train.labels[rows] == 1, cohort=train.labels[rows] == 0, top_k=scorer.top_k)
        if len(set(train.labels[rows].tolist())) == 2:
            scorer = replace(scorer, head=fit_head(feats, train.labels[rows], seed=config.seed))
    val_scores = gate_scores(scorer, val, vad=vad)
    cohort = (cohort_trial_scores(scorer, train, cohort_rows, person, root=config.data, vad=vad)
              if config.voice_calibration == "cohort" else np.zeros(0))
    y = np.concatenate([(val.labels == 1).astype(np.int64),
                        np.zeros(len(impostors.clips.clips) + len(cohort), np.int64)])
    s = np.concatenate([val_scores, gate_scores(scorer, impostors.clips, vad=vad), cohort])
    if not ((y == 0).any() and (y == 1).any()):
        raise DataError("no impostor clip to set the voice gate's threshold on: the validation "
                        "split has no not_allowed clip and impostors is none; add not_allowed/ "
                        "recordings, or set impostors = builtin or a folder of other voices")
    threshold = choose_threshold(y, s, rule=config.operating_point)
    trials = {"genuine": int(y.sum()), "validation_impostors": int((val.labels == 0).sum()),
              "impostor_voices": len(impostors.clips.clips), "cohort": len(cohort)}
    validation = {**gate_report(y, s, threshold=threshold), "trials": trials}
    gate = {"positive": "allowed", "threshold": threshold,
            "operating_point": config.operating_point, "validation": validation,
            "impostors": impostors.describe()}
    train_scores = training_scores(train, scorer, root=config.data, vad=vad,
                                   cohort=cohort_rows, person=person)
    checks = training_checks(train, scorer, root=config.data, vad=vad, threshold=threshold)
    record = {"train_f1": macro_f1(train.labels, (train_scores >= threshold).astype(int),
                                   n_classes=2),
              "val_f1": macro_f1(y, (s >= threshold).astype(int), n_classes=2),
              "voices": len(profile.voices),
              "enrolled_clips": sum(len(v) for v in profile.voices.values()),
              "cohort_clips": len(scorer.cohort), "cohort_people": len(set(person.tolist())),
              "impostor_clips": len(impostors.clips.clips),
              "head": scorer.head.as_dict() if scorer.head else None,
              "score": scorer.rule.as_dict(), "threshold_trials": trials,
              "enrolment": {c.name: c.as_dict() for c in checks}}
    log.info("voice gate: %d voice(s) from %d clips, cohort %d, head %s, score %s; threshold "
             "%.4f (%s on %d genuine and %d impostor trials: FAR %.4f, FRR %.4f)",
             record["voices"], record["enrolled_clips"], record["cohort_clips"],
             "logistic" if scorer.head else "none", scorer.rule.kind, threshold,
             config.operating_point, trials["genuine"], int((y == 0).sum()),
             validation["far"], validation["frr"])
    for check in checks:
        log.info("enrolment: %s", check.summary())
        for problem in check.problems():
            log.warning("enrolment of voice %r: %s", check.name, problem)
    return BuiltGate(scorer, gate, record, impostors)


def _html(run: RunPaths, config: Config, live: dict[str, Any]) -> None:
    try:
        log.info("report: %s", write_report(run.root, errors=config.report_errors, live=live))
    except Exception:  # the run is saved; only its page is missing
        log.exception("could not write %s; the run itself is complete (write the page later "
                      "with: audiogate report %s)", run.report, run.root)


def fit_voice(config: Config, *, progress: bool = True) -> TrainResult:
    """Build a voice gate run from ``config`` (see the module docstring)."""
    began = time.perf_counter()
    config = replace(config, data=str(Path(config.data).resolve()))
    check_run_name(config)
    check_voice_config(config)
    data = prepare_voice_data(config, progress=progress)
    source = resolve_source(config.impostors, has_negatives=data.usable["not_allowed"] > 0)
    impostors = load_impostors(source, cache=data.cache, workers=config.workers,
                               progress=progress)
    built = build_gate(data, impostors, config)
    run, status = start_run(config)
    try:
        write_data_files(run, split=data.split, classes=data.classes, skipped=data.skipped)
        record = {**built.record, "seconds": time.perf_counter() - began}
        save_voice_checkpoint(run.best, VoiceCheckpoint(
            config=config, classes=data.classes, scorer=built.scorer, gate=built.gate,
            metrics=record, run_id=status.run_id))
        gate = VoiceClassifier(load_voice_checkpoint(run.best), workers=config.workers)
        report, _ = test_report(run, gate, data.split.test, title="Test set, voice gate")
        record = {**record, "test_f1": report["macro_f1"],
                  "seconds": time.perf_counter() - began}
        write_metrics(run, kind=KIND, classes=data.classes, epochs=[], best_epoch=None,
                      best_val_f1=float(record["val_f1"]), fit=record)
        _html(run, config, {"state": "finished", "stop_reason": STOP_REASON, "epochs_done": 0})
        status.ended(stop_reason=STOP_REASON, epochs_done=0)
    except BaseException as exc:
        status.failed(exc)
        raise
    return TrainResult(run=run, best_epoch=None, best_val_f1=float(record["val_f1"]),
                       epochs_done=0, stop_reason=STOP_REASON, test_report=report)
