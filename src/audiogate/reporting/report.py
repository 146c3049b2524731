"""``report.html``: one self-contained page about a run, or about an evaluation.

What it gathers (this module) and how it is laid out (:mod:`.report_page`) are apart. A run's
page is built from its folder only: ``config.toml``, ``status.json`` (when there is one),
``split.csv``, ``skipped.csv``, ``metrics.json``, ``test_metrics.json``,
``test_predictions.csv``, the PNGs in ``outputs/`` and, for the worst errors, the test clips
themselves; an evaluation's page from ``evaluate``'s output folder and its checkpoint. So
``audiogate report RUN_DIR`` rewrites the very page ``train`` wrote.

The worst errors are the wrong test clips the model was surest of (for a gate, the scores
furthest on the wrong side of its threshold; :func:`~.predictions.worst_errors`); each is
embedded as 16-bit mono WAV at the model's rate, cut to :func:`audio_seconds`, with its
log-mel spectrogram.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, FeatureConfig
from ..core.checkpoint import StoredGate, read_gate
from ..core.gate import Gate
from ..core.runs import RunPaths
from ..data.audio_io import load_audio, probe, wav_bytes
from ..data.discover import Skipped
from ..data.prepare import suggest_fixed_length
from ..data.split import read_split
from ..errors import AudioError, AudiogateError, ConfigError, DataError
from ..features.frontend import LogMel
from ..files import write_text
from . import plots
from .predictions import Verdict, read_predictions, score_clips, worst_errors
from .report_page import ErrorClip, ReportData, render
from .run_table import read_json_object, summarize_run

log = logging.getLogger(__name__)

GateLoader = Callable[[Path], Gate]
"""How a page loads a checkpoint as a gate (:func:`audiogate.gates.load`)."""

REPORT_FILE = "report.html"
ERROR_AUDIO_S = 4.0
"""Seconds of each wrong clip embedded (at least the model window, at most ``max_clip_s``)."""


def audio_seconds(features: FeatureConfig, *, max_clip_s: float) -> float:
    """Seconds of a clip embedded in the report: :data:`ERROR_AUDIO_S`, or the model window
    when it is longer, never more than the model reads (``max_clip_s``)."""
    return min(max_clip_s, max(ERROR_AUDIO_S, features.n_samples / features.sr))


def error_clip(verdict: Verdict, *, frontend: LogMel, seconds: float) -> ErrorClip:
    """The first ``seconds`` of the clip as WAV bytes and its log-mel spectrogram as a PNG:
    one pixel per frame and mel band, lowest band at the bottom, ``-top_db`` dB (re the
    clip's maximum) dark to 0 dB bright."""
    sr = frontend.cfg.sr
    try:
        wave = load_audio(verdict.path, sr=sr, max_seconds=seconds)[:round(seconds * sr)]
    except AudioError as exc:
        return ErrorClip(verdict, problem=exc.reason)
    with torch.no_grad():
        db = frontend.decibels(torch.from_numpy(wave)[None])[0].numpy()
    png = plots.rgb_png(plots.colorize(db, low=-frontend.cfg.top_db, high=0.0))
    return ErrorClip(verdict, wav=wav_bytes(wave, sr=sr), spectrogram=png,
                     seconds=wave.size / sr)


def read_skipped(path: Path) -> list[Skipped]:
    """The rows of a ``skipped.csv`` (none when it is missing or unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [Skipped(row["path"], row["reason"]) for row in csv.DictReader(fh)]
    except (OSError, KeyError, UnicodeDecodeError, csv.Error):
        return []


def clip_durations(clips: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Seconds of each ``(path, class)`` clip from its header, per class; clips that cannot
    be read any more are left out."""
    per_class: dict[str, list[float]] = {}
    for path, name in clips:
        try:
            per_class.setdefault(name, []).append(probe(path).duration)
        except AudioError:
            per_class.setdefault(name, [])
    return {k: np.asarray(v) for k, v in per_class.items()}


def durations_png(data: ReportData) -> bytes | None:
    every = [d for d in data.durations.values() if d.size]
    if not every:
        return None
    window = data.features.n_samples / data.features.sr
    frames = suggest_fixed_length(np.concatenate(every), features=data.features)
    suggested = (frames - 1) * data.features.hop_length / data.features.sr
    return plots.png_bytes(plots.durations_figure(data.durations, window_s=window,
                                                  suggested_s=suggested))


def _png(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _checkpoint(path: Path) -> StoredGate | None:
    """The checkpoint's envelope (config, classes, operating point), whatever its kind."""
    try:
        return read_gate(path)
    except (AudiogateError, OSError) as exc:
        log.warning("report: cannot read %s (%s)", path, exc)
        return None


def _validation_gate(best: StoredGate | None) -> dict[str, Any] | None:
    """The figures on validation of the operating point stored in a checkpoint."""
    return None if best is None else (best.gate or {}).get("validation")


def _features(config: Config | None) -> FeatureConfig:
    """The front end a page draws spectrograms with (the default one when the run's is
    unknown or still ``auto``: the specification's)."""
    return config.features() if config and not config.auto_window else Config(
        recipe="spec").features()


def _run_config(run: RunPaths, best: StoredGate | None) -> Config | None:
    try:
        return Config.from_toml(run.config)
    except AudiogateError:
        return best.config if best else None


def load_run(run_dir: str | os.PathLike[str], *, live: dict[str, Any] | None = None,
             load_gate: GateLoader | None = None) -> ReportData:
    """What the page of run folder ``run_dir`` shows; ``live``: fields that replace those of
    ``status.json`` (a run that is ending, see
    :func:`~audiogate.reporting.run_table.summarize_run`); ``load_gate``: how to load
    ``best.pt`` to judge the test split of a run made before ``test_predictions.csv`` was
    written (None: such a run's page shows no verdicts)."""
    run = RunPaths(Path(run_dir))
    if not run.root.is_dir():
        raise DataError(f"run folder not found: {run.root}")
    best = _checkpoint(run.best) if run.best.exists() else None
    config = _run_config(run, best)
    metrics, _ = read_json_object(run.metrics)
    test, _ = read_json_object(run.test_report)
    classes = list((metrics or test or {}).get("classes") or (best.classes if best else ()))
    try:
        split = read_split(run.split)
    except DataError:
        split = None
    counts: dict[str, dict[str, int]] = {}
    clips: list[tuple[str, str]] = []
    for subset in ("train", "val", "test"):
        for clip in getattr(split, subset) if split else ():
            name = classes[clip.label] if clip.label < len(classes) else str(clip.label)
            counts.setdefault(subset, {}).setdefault(name, 0)
            counts[subset][name] += 1
            clips.append((clip.path, name))
    data = ReportData(
        kind="run", folder=run.root, title=f"Run {run.root.name}", config=config,
        data_root=config.data if config else None,
        features=_features(config),
        max_clip_s=config.max_clip_s if config else Config().max_clip_s,
        classes=classes, summary=summarize_run(run.root, live=live), metrics=metrics,
        test=test, counts=counts, skipped=read_skipped(run.skipped),
        durations=clip_durations(clips),
        figures={"curves": _png(run.curves), "roc": _png(run.outputs / "roc_test.png"),
                 "det": _png(run.outputs / "det_test.png")},
        validation_gate=_validation_gate(best))
    data.verdicts = _run_verdicts(run, split, load_gate)
    return data


def _run_verdicts(run: RunPaths, split: Any, load_gate: GateLoader | None) -> list[Verdict]:
    """``test_predictions.csv``; for a run made before it was written, the test split judged
    now by ``best.pt``."""
    if run.test_predictions.exists():
        return read_predictions(run.test_predictions)
    if load_gate is None or not run.best.is_file() or split is None or not split.test:
        return []
    log.info("report: judging the %d test clips with %s", len(split.test), run.best)
    try:
        gate = load_gate(run.best)
    except AudiogateError as exc:
        log.warning("report: cannot load %s (%s)", run.best, exc)
        return []
    scored = score_clips(gate, split.test)
    return [Verdict(path=c.path, true=gate.classes[c.label], predicted=str(p.label),
                    confidence=p.confidence, score=p.score, probabilities=p.probabilities)
            for c, p in zip(scored.clips, scored.predictions, strict=True)]


def load_evaluation(out_dir: str | os.PathLike[str]) -> ReportData:
    """What the page of an ``evaluate`` output folder shows."""
    folder = Path(out_dir)
    test, problem = read_json_object(folder / "report.json")
    if test is None:
        raise DataError(f"{folder} is not an evaluation folder: {problem}")
    ckpt_path = Path(str(test.get("checkpoint", "")))
    ckpt = _checkpoint(ckpt_path) if ckpt_path.is_file() else None
    verdicts = read_predictions(folder / "predictions.csv")
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.true] = counts.get(v.true, 0) + 1
    source = str(test.get("source", ""))
    return ReportData(
        kind="evaluation", folder=folder, title=f"Evaluation on {source or folder}",
        data_root=source if source and Path(source).is_dir() else
        (ckpt.config.data if ckpt else None),
        config=ckpt.config if ckpt else None,
        features=_features(ckpt.config if ckpt else None),
        max_clip_s=ckpt.config.max_clip_s if ckpt else Config().max_clip_s,
        classes=list(test.get("classes") or []), test=test, test_file="report.json",
        counts={"clips": counts}, skipped=read_skipped(folder / "skipped.csv"),
        durations=clip_durations([(v.path, v.true) for v in verdicts]),
        figures={"roc": _png(folder / "roc.png"), "det": _png(folder / "det.png")},
        validation_gate=_validation_gate(ckpt),
        verdicts=verdicts)


def is_evaluation(folder: Path) -> bool:
    """Whether ``folder`` is an ``evaluate`` output folder (rather than a run folder)."""
    return (folder / "report.json").is_file() and (folder / "predictions.csv").is_file()


def write_report(folder: str | os.PathLike[str], *, errors: int | None = None,
                 live: dict[str, Any] | None = None,
                 load_gate: GateLoader | None = None) -> Path:
    """Write ``folder/report.html`` for a run folder or an ``evaluate`` output folder.

    ``errors``: how many wrong clips to embed (default: the model's ``report_errors``);
    ``live``: see :func:`load_run`. Returns the page's path.
    """
    if errors is not None and errors < 0:
        raise ConfigError(f"the number of errors shown must be >= 0, got {errors}")
    root = Path(folder)
    data = load_evaluation(root) if is_evaluation(root) else load_run(root, live=live,
                                                                       load_gate=load_gate)
    n = errors if errors is not None else (data.config.report_errors if data.config
                                           else Config().report_errors)
    frontend = LogMel(data.features)
    seconds = audio_seconds(data.features, max_clip_s=data.max_clip_s)
    data.errors = [error_clip(v, frontend=frontend, seconds=seconds)
                   for v in worst_errors(data.verdicts, n=n, threshold=data.threshold)]
    data.figures["durations"] = durations_png(data)
    path = root / REPORT_FILE
    write_text(path, render(data))
    return path
