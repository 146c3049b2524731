"""Why the speech benchmark's speaker gate stays hard: unheard impostors, method by method.

    python -m bench.speaker_gap                       # about 14 minutes on 2 cores
    python -m bench.speaker_gap --splits 6 --work /tmp/agspeech

On the ``speaker`` task of :mod:`bench.speech` (its words and task folders; allowed: every
word of ``ava`` and ``ben``; not_allowed: 15 clips of each of the 14 other voices), for each
split seed, every method below is scored on the test split at the threshold for the best F1
on validation (what audiogate's operating point does): test macro-F1, EER, FAR, FRR.

*Unheard impostors* is bench.speech's split (``group_by = "folder"``: the test impostors are
voices never heard in training or validation). *Impostors heard* splits clip by clip
(``group_by = "none"``): the test impostors' other clips were in training.

* ``strong``, ``reference``: audiogate's ``--recipe strong`` and the notebook pipeline, as in
  bench.speech, on both splits;
* ``gmm``: a classical speaker-verification score on the unheard split: the mean per-frame
  log-likelihood ratio of MFCCs and their deltas (loud frames only) under a diagonal Gaussian
  mixture fitted on the training ``allowed`` frames against one fitted on the training
  ``not_allowed`` frames;
* ``pitch+spectrum``: a logistic regression on the clip's pitch (median and quartiles of the
  log F0 of its loud frames, YIN) and its long-term mel spectrum, on the unheard split.

Then each voice's median F0, to show which impostors are near the allowed voices. The
``strong error <= half the reference's`` column is issue 9's target, against the reference on
the same split kind.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from audiogate.data import Clip
from audiogate.data.audio_io import load_audio
from audiogate.data.split import Split, read_split

from . import speech
from .speech_gen import SPEAKERS
from .speech_tasks import ALLOWED_SPEAKERS, build_tasks, pool, voice_of

SR = 16000
HOP = 256
LOUD_DB = 10.0
"""Frames within this many dB of the clip's loudest are speech for the classical methods."""
GMM_COMPONENTS = 16
SPLITS = {"unheard": {"group_by": "folder"}, "heard": {"group_by": "none"}}

Scorer = Callable[[Split, int], tuple[np.ndarray, np.ndarray]]


def _loud(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel (40 bands to 4 kHz) ``[shape=(40, frames)]`` and the mask of loud frames."""
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=HOP, n_mels=40,
                                         fmax=4000)
    log_mel = np.log(mel + 1e-10)
    level = 10 * np.log10(np.maximum(mel.sum(axis=0), 1e-20))
    return log_mel, level >= level.max() - LOUD_DB


def mfcc_frames(y: np.ndarray) -> np.ndarray:
    """MFCCs 1-19 and their deltas of the loud frames of ``y`` (16 kHz):
    ``[shape=(frames, 38)]``."""
    log_mel, loud = _loud(y)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=20)
    return np.vstack([mfcc[1:], librosa.feature.delta(mfcc, mode="nearest")[1:]])[:, loud].T


def pitch_spectrum(y: np.ndarray) -> np.ndarray:
    """Median and quartiles of log F0 (YIN, 60-500 Hz) over the loud frames of ``y`` (16 kHz),
    then its long-term log-mel spectrum less its mean: ``[shape=(43,)]``."""
    log_mel, loud = _loud(y)
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=SR, frame_length=1024, hop_length=HOP)
    n = min(len(f0), len(loud))
    log_f0 = np.log(f0[:n][loud[:n]])
    spectrum = log_mel[:, loud].mean(axis=1)
    return np.concatenate([np.percentile(log_f0, [50, 25, 75]), spectrum - spectrum.mean()])


class Features:
    """Per-clip features, computed once per path."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn
        self.done: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self.done:
            self.done[path] = self.fn(load_audio(path, sr=SR))
        return self.done[path]


def gmm_scorer(frames: Features, *, components: int = GMM_COMPONENTS) -> Scorer:
    """Mean frame log-likelihood ratio, allowed GMM against not_allowed GMM."""
    def score(split: Split, allowed: int) -> tuple[np.ndarray, np.ndarray]:
        models = []
        for positive in (1, 0):
            x = np.vstack([frames(c.path) for c in split.train
                           if int(c.label == allowed) == positive])
            models.append(GaussianMixture(min(components, len(x)), covariance_type="diag",
                                          reg_covar=1e-3, random_state=0).fit(x))
        def llr(clips: Sequence[Clip]) -> np.ndarray:
            return np.array([models[0].score(frames(c.path)) - models[1].score(frames(c.path))
                             for c in clips])
        return llr(split.val), llr(split.test)
    return score


def logistic_scorer(features: Features) -> Scorer:
    """P(allowed) of a class-balanced logistic regression on standardised clip features."""
    def score(split: Split, allowed: int) -> tuple[np.ndarray, np.ndarray]:
        def x(clips: Sequence[Clip]) -> np.ndarray:
            return np.stack([features(c.path) for c in clips])
        scaler = StandardScaler().fit(x(split.train))
        model = LogisticRegression(C=10.0, max_iter=5000, class_weight="balanced").fit(
            scaler.transform(x(split.train)), speech._labels(split.train, allowed))
        def p(clips: Sequence[Clip]) -> np.ndarray:
            return model.predict_proba(scaler.transform(x(clips)))[:, 1]
        return p(split.val), p(split.test)
    return score


def classical(scorer: Scorer, split: Split, *, allowed: int, decision: float) -> dict[str, Any]:
    """Gate scores of ``scorer`` on ``split`` (threshold chosen on validation); ``decision``:
    the score at which the method alone would say allowed (its argmax)."""
    val, test = scorer(split, allowed)
    y_test = speech._labels(split.test, allowed)
    out = speech.gate_scores(val_y=speech._labels(split.val, allowed), val_p=val, test_y=y_test,
                             test_p=test, argmax=(test >= decision).astype(int))
    return {**out, "f1": out["f1_val_threshold"]}


def one_split(task: Path, *, work: Path, seed: int, base: dict[str, Any], ref_workers: int,
              scorers: dict[str, tuple[Scorer, float]]) -> dict[str, dict[str, Any]]:
    """Every method on split ``seed``: ``{"<method>, <split kind>": gate scores}``."""
    out: dict[str, dict[str, Any]] = {}
    for kind, grouping in SPLITS.items():
        runs = work / "runs" / f"seed-{seed}" / kind
        config = {**base, **grouping, "seed": seed}
        strong = speech.run_audiogate(data=task, runs=runs, name="strong",
                                      overrides={**speech.RECIPES["strong"], **config})
        run = Path(strong["run"])
        split = read_split(run / "split.csv")
        classes = json.loads((run / "metrics.json").read_text())["classes"]
        out[f"strong, {kind}"] = strong
        out[f"reference, {kind}"] = speech.run_reference(
            split=split, classes=classes, config=speech.reference_config(config),
            workers=ref_workers)
        if kind == "unheard":
            for name, (scorer, decision) in scorers.items():
                out[f"{name}, {kind}"] = classical(
                    scorer, split, allowed=classes.index(speech.ALLOWED), decision=decision)
        speech._say(f"seed {seed}, {kind}: " + ", ".join(
            f"{k.split(', ')[0]} {v['f1']:.2f}" for k, v in out.items()
            if k.split(", ")[1] == kind))
    return out


def table(per_split: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Markdown rows: each method's mean test F1, F1 per split, EER, FAR, FRR, and whether its
    error is at most half the reference's on the same split kind."""
    lines = ["| method | impostors | test F1 | F1 per split | EER | FAR | FRR | "
             "error <= half the reference's |", "|---|---|---:|---|---:|---:|---:|---|"]
    mean = {k: {m: float(np.mean([s[k][m] for s in per_split]))
                for m in ("f1", "eer", "far", "frr")} for k in per_split[0]}
    for key, m in mean.items():
        name, kind = key.split(", ")
        ref = mean[f"reference, {kind}"]["f1"]
        met = "-" if name == "reference" else (
            "met" if 1 - m["f1"] <= (1 - ref) / 2 else "not met")
        each = " ".join(f"{s[key]['f1']:.2f}" for s in per_split)
        lines.append(f"| {name} | {kind} | {m['f1']:.3f} | {each} | {m['eer']:.3f} | "
                     f"{m['far']:.3f} | {m['frr']:.3f} | {met} |")
    return lines


def pitches(task: Path, features: Features) -> list[str]:
    """Each voice's median F0 over the task's clips, and its distance in semitones from the
    nearer allowed voice."""
    by_voice: dict[str, list[float]] = {}
    for path in sorted(task.rglob("*.wav")):
        by_voice.setdefault(voice_of(str(path), root=task), []).append(
            float(np.exp(features(str(path))[0])))
    f0 = {v: float(np.median(x)) for v, x in by_voice.items()}
    allowed = [v for v in ALLOWED_SPEAKERS if v in f0]
    espeak = {s.name: f"{s.voice} {s.sr // 1000} kHz" for s in SPEAKERS}
    lines = ["| voice | espeak-ng voice | median F0 (Hz) | semitones from the nearer allowed "
             "voice |", "|---|---|---:|---:|"]
    for v in sorted(f0, key=f0.__getitem__):
        near = min(abs(12 * np.log2(f0[v] / f0[a])) for a in allowed if a != v) if (
            v not in allowed) else 0.0
        lines.append(f"| {v}{' (allowed)' if v in allowed else ''} | {espeak.get(v, '?')} | "
                     f"{f0[v]:.0f} | {near:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "audiogate-speaker-gap")
    parser.add_argument("--splits", type=int, default=3, help="split seeds 0, 1, ...")
    parser.add_argument("--tiny", action="store_true", help="8 voices, 2 epochs: a smoke test")
    args = parser.parse_args(argv)
    if args.splits < 1:
        parser.error("--splits must be >= 1")
    began, load = time.perf_counter(), os.getloadavg()[0]
    size = speech.SIZES["tiny" if args.tiny else "full"]
    words = pool(work=args.work, size=size, seed=0)
    task = build_tasks(words, root=args.work / "tasks", size=size, seed=0)["speaker"]
    frames, clip_features = Features(mfcc_frames), Features(pitch_spectrum)
    scorers = {"gmm": (gmm_scorer(frames, components=4 if args.tiny else GMM_COMPONENTS), 0.0),
               "pitch+spectrum": (logistic_scorer(clip_features), 0.5)}
    per_split = [one_split(task, work=args.work, seed=seed, scorers=scorers, base=size.config,
                           ref_workers=size.ref_workers) for seed in range(args.splits)]
    lines = [f"**Speaker task, mean over {args.splits} splits (seeds "
             f"{', '.join(map(str, range(args.splits)))})**", "", *table(per_split), "",
             "**Voices by pitch**", "", *pitches(task, clip_features), "",
             f"{len(os.sched_getaffinity(0))} cores; 1-minute load average {load:.1f} at the "
             f"start, {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - began:.0f} s."]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
