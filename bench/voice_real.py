"""Benchmark: how a voice gate scores and where its threshold lands, on recorded speech.

    python -m bench.voice_real                    # about 2 minutes on 2 cores (embeds once)
    python -m bench.voice_real --draws 8 --cache /tmp/agvoicereal

Recordings of 30 people from the Arabic Speech Commands dataset (A. Ghandoura, F. Hjabo, O. Al
Dakkak, "Building and Benchmarking an Arabic Speech Commands Dataset for Small-Footprint
Keyword Spotting", Engineering Applications of Artificial Intelligence, 2021; CC BY 4.0),
read from ``--data`` (default ``../shared/data/asc``, or ``AUDIOGATE_ASC``): 20 one-second
words, 5 takes each. The task is ``bench.real``'s voice task: 3 allowed people drawn from the
dataset's training and validation speakers (``speakers.csv``), their takes 1-3 enrolled, take
4 validation, take 5 test; the other training speakers are the training ``not_allowed``
clips (the cohort), the validation speakers the validation impostors, and the 6 test
speakers impostors never heard (600 test clips).

Every clip is embedded once with the voice recipe's settings (cached under ``--cache``); each
variant then runs the voice kind's own fit (:func:`audiogate.gates.voice.fit.build_gate`:
enrolment, scorer, threshold) on those embeddings, and judges the test clips as ``predict``
would. Printed, mean (min-max) over ``--draws`` draws of the allowed people:

1. **scoring and calibration**: ``voice_score`` (topk, centroid, snorm) x
   ``voice_calibration`` (validation, cohort) x ``operating_point`` (far=0.02, far=0.05):
   test EER, the FAR realised on the never-heard impostors beside the target, FRR and
   macro-F1 at the chosen threshold; S-norm with 5 and 20 cohort speakers too; and, for the
   defaults, each allowed person's expected FRR (its enrolment check) beside its test FRR;
2. **enrolment checks** (:mod:`audiogate.speech.quality`): the outlier rule's flags on each
   person's clean enrolment (60 clips) and on 3 clips of another person slipped into it; a
   voice's EER against the never-heard impostors as its enrolled speech grows.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from audiogate.config import Config
from audiogate.data import Clip
from audiogate.data.split import Split
from audiogate.gates.voice.data import VoiceData, embed_settings
from audiogate.gates.voice.fit import build_gate, gate_scores
from audiogate.reporting.metrics import equal_error_rate, error_rates, macro_f1
from audiogate.speech.embeddings import EmbeddedClips, EmbeddingCache, EmbedSpec, embed_clips
from audiogate.speech.impostors import load_impostors
from audiogate.speech.quality import OUTLIER_Z, outliers
from audiogate.speech.snorm import unit

from .real import (
    ALLOWED_PEOPLE,
    DEFAULT_DATA,
    TEST_TAKE,
    TRAIN_TAKES,
    VAL_TAKE,
    Recording,
    recordings,
    speaker_subsets,
)

ATTRIBUTION = ("Recorded speech: Arabic Speech Commands dataset (Ghandoura et al. 2021), "
               "CC BY 4.0; 30 people, 1-s words")
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("topk / validation", {"voice_score": "topk", "voice_calibration": "validation"}),
    ("topk / cohort", {"voice_score": "topk", "voice_calibration": "cohort"}),
    ("centroid / validation", {"voice_score": "centroid", "voice_calibration": "validation"}),
    ("centroid / cohort", {"voice_score": "centroid", "voice_calibration": "cohort"}),
    ("snorm / validation", {"voice_score": "snorm", "voice_calibration": "validation"}),
    ("snorm / cohort", {"voice_score": "snorm", "voice_calibration": "cohort"}),
    ("snorm top 5 / cohort", {"voice_score": "snorm", "voice_calibration": "cohort",
                              "voice_snorm_top": 5}),
    ("snorm top 20 / cohort", {"voice_score": "snorm", "voice_calibration": "cohort",
                               "voice_snorm_top": 20}),
)
TARGETS = ("far=0.02", "far=0.05")
DEFAULT = "snorm / cohort"
"""The variant of the voice recipe's defaults."""
SPEECH_STEPS = (1, 3, 5, 8, 20, 60)
"""Enrolment clips per voice in the speech-seconds table."""


def embed_all(clips: Sequence[Recording], *, cache_dir: Path, vad: bool,
              workers: int) -> tuple[EmbeddedClips, EmbeddingCache]:
    """Every recording embedded as the voice recipe embeds it (cached)."""
    config = Config(recipe="voice", voice_vad=vad)
    cache = EmbeddingCache(str(cache_dir), EmbedSpec.of(embed_settings(config)))
    found = [Clip(str(c.path), 0, c.speaker) for c in clips]
    embedded, bad = embed_clips(found, cache=cache, workers=workers, progress=True)
    if bad:
        raise SystemExit(f"{len(bad)} recordings could not be embedded: {bad[:3]}")
    return embedded, cache


def voice_task(clips: Sequence[Recording], embedded: EmbeddedClips, cache: EmbeddingCache, *,
               subsets: dict[str, str], seed: int, root: str) -> tuple[VoiceData, list[str]]:
    """The voice task of draw ``seed`` as a run's data: each clip named as it would lie in a
    data folder (``<root>/<class>/<person>/<word>_<take>``), split as ``bench.real`` splits
    it, with its embedding."""
    rng = np.random.default_rng(seed)
    pool = sorted({c.speaker for c in clips if subsets[c.speaker] != "test"})
    people = sorted(rng.choice(pool, size=ALLOWED_PEOPLE, replace=False).tolist())
    take_subset = {**dict.fromkeys(TRAIN_TAKES, "train"), VAL_TAKE: "val", TEST_TAKE: "test"}
    parts: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    named = []
    for c in clips:
        allowed = c.speaker in people
        label = "allowed" if allowed else "not_allowed"
        clip = Clip(f"{root}/{label}/{c.speaker}/{c.word}_{c.take}.flac", int(allowed),
                    c.speaker)
        parts[take_subset[c.take] if allowed else subsets[c.speaker]].append(clip)
        named.append(clip)
    data = replace(embedded, clips=named,
                   labels=np.asarray([c.label for c in named], np.int64))
    return VoiceData(("not_allowed", "allowed"), data, Split(**parts), cache), people


def judge(data: VoiceData, config: Config) -> dict[str, Any]:
    """The voice kind's fit on ``data``, then its test figures, and each allowed person's
    expected FRR (its enrolment check) beside the FRR of its test clips."""
    none = load_impostors("none", cache=data.cache, workers=1, progress=False)
    built = build_gate(data, none, config)
    test = data.part("test")
    scores = gate_scores(built.scorer, test, vad=config.voice_vad)
    y = test.labels
    threshold = float(built.gate["threshold"])
    far, frr = error_rates(y, scores, threshold=threshold)
    person = np.asarray([c.group for c in test.clips])
    pairs = [(check["expected_frr"], float(np.mean(scores[person == name] < threshold)))
             for name, check in built.record["enrolment"].items()]
    return {"eer": equal_error_rate(y, scores)[0], "far": far, "frr": frr,
            "f1": macro_f1(y, (scores >= threshold).astype(np.int64), n_classes=2),
            "frr_pairs": pairs}


def _spread(values: Sequence[float]) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"


def scoring_table(clips: Sequence[Recording], embedded: EmbeddedClips, cache: EmbeddingCache,
                  *, subsets: dict[str, str], draws: int, vad: bool) -> list[str]:
    root = "/asc"
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for seed in range(draws):
        data, _ = voice_task(clips, embedded, cache, subsets=subsets, seed=seed, root=root)
        for name, fields in VARIANTS:
            for target in TARGETS:
                config = Config(recipe="voice", data=root, group_by="folder", voice_vad=vad,
                                operating_point=target, impostors="none", **fields)
                results.setdefault((name, target), []).append(judge(data, config))
    lines = [f"{'score / calibration':<24} {'target':<9} {'EER':<20} {'FAR on never heard':<20} "
             f"{'FRR':<20} macro-F1"]
    for (name, target), rows in results.items():
        lines.append(f"{name:<24} {target:<9} {_spread([r['eer'] for r in rows]):<20} "
                     f"{_spread([r['far'] for r in rows]):<20} "
                     f"{_spread([r['frr'] for r in rows]):<20} "
                     f"{_spread([r['f1'] for r in rows])}")
    lines += ["", f"expected FRR of each allowed person (enrolment check: enrolled clips scored "
                  f"without themselves) vs the FRR of its test clips, {DEFAULT}:"]
    for target in TARGETS:
        pairs = np.asarray([p for r in results[(DEFAULT, target)] for p in r["frr_pairs"]])
        lines.append(f"  {target}: expected {pairs[:, 0].mean():.3f}, test {pairs[:, 1].mean():.3f}"
                     f", mean |difference| {np.abs(pairs[:, 0] - pairs[:, 1]).mean():.3f}, "
                     f"correlation {np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]:.2f} over "
                     f"{len(pairs)} people")
    return lines


def outlier_table(clips: Sequence[Recording], embedded: EmbeddedClips, *,
                  seed: int = 0) -> list[str]:
    """The outlier rule on each person's 60 enrolment clips, clean and with 3 clips of another
    person added."""
    rng = np.random.default_rng(seed)
    speaker = np.asarray([c.speaker for c in clips])
    enrol = np.isin([c.take for c in clips], TRAIN_TAKES)
    people = sorted(set(speaker))
    clean = caught = n_clean = n_foreign = 0
    for person in people:
        own = embedded.vectors[(speaker == person) & enrol]
        clean += int(outliers(own)[1].sum())
        n_clean += len(own)
        other = rng.choice([p for p in people if p != person])
        rows = np.flatnonzero(speaker == other)
        foreign = embedded.vectors[rng.choice(rows, size=3, replace=False)]
        caught += int(outliers(np.concatenate([own, foreign]))[1][-3:].sum())
        n_foreign += 3
    return [f"outlier rule (modified z-score below -{OUTLIER_Z:g}), {len(people)} people:",
            f"  clean enrolment clips flagged: {clean}/{n_clean} ({clean / n_clean:.3f})",
            f"  clips of another person flagged: {caught}/{n_foreign} "
            f"({caught / n_foreign:.3f})"]


def speech_table(clips: Sequence[Recording], embedded: EmbeddedClips, *,
                 subsets: dict[str, str], seed: int = 0) -> list[str]:
    """A voice's EER against the never-heard impostors (centroid similarity) as its enrolled
    speech grows: 3 random draws of n enrolment clips for each training/validation speaker."""
    rng = np.random.default_rng(seed)
    speaker = np.asarray([c.speaker for c in clips])
    take = np.asarray([c.take for c in clips])
    unheard = np.asarray([subsets[s] == "test" for s in speaker])
    v = unit(embedded.vectors)
    lines = ["enrolled clips  speech (s)  EER vs never heard"]
    for n in SPEECH_STEPS:
        eers, seconds = [], []
        for person in sorted(set(speaker[~unheard])):
            rows = np.flatnonzero((speaker == person) & np.isin(take, TRAIN_TAKES))
            tests = v[(speaker == person) & (take == TEST_TAKE)]
            for _ in range(3):
                pick = rng.choice(rows, size=n, replace=False)
                centroid = unit(v[pick].mean(axis=0))
                pos, neg = tests @ centroid, v[unheard] @ centroid
                y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
                eers.append(equal_error_rate(y, np.r_[pos, neg])[0])
                seconds.append(float(embedded.speech_s[pick].sum()))
        lines.append(f"{n:>14}  {np.mean(seconds):>10.1f}  {np.mean(eers):.3f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_real", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("AUDIOGATE_ASC", str(DEFAULT_DATA)))
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "agvoicereal"),
                        help="embedding cache (kept between runs)")
    parser.add_argument("--draws", type=int, default=8, help="draws of the allowed people")
    parser.add_argument("--no-vad", action="store_true", help="embed whole clips")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.getLogger("audiogate").setLevel(logging.ERROR)  # each fit logs its checks
    root = Path(args.data)
    clips = recordings(root)
    subsets = speaker_subsets(root)
    embedded, cache = embed_all(clips, cache_dir=Path(args.cache), vad=not args.no_vad,
                                workers=args.workers)
    print(ATTRIBUTION)
    print(f"voice gate, {ALLOWED_PEOPLE} allowed people, test impostors never heard; mean "
          f"(min-max) over {args.draws} draws; VAD {'off' if args.no_vad else 'on'}\n")
    print("\n".join(scoring_table(clips, embedded, cache, subsets=subsets, draws=args.draws,
                                  vad=not args.no_vad)))
    print()
    print("\n".join(outlier_table(clips, embedded)))
    print()
    print("\n".join(speech_table(clips, embedded, subsets=subsets)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
