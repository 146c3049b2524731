"""Real-speech benchmark (issue 24): word and voice gates on recordings of 30 people.

    python -m bench.real                          # every task, 3 seeds (see docs for time)
    python -m bench.real --tasks voice --pipelines voice,default --seeds 1
    python -m bench.real --tiny                   # seconds-long; what the test suite runs

The data is a subset of the Arabic Speech Commands dataset (A. Ghandoura, F. Hjabo, O. Al
Dakkak, "Building and Benchmarking an Arabic Speech Commands Dataset for Small-Footprint
Keyword Spotting", Engineering Applications of Artificial Intelligence, 2021; CC BY 4.0):
20 words (English names of Arabic words), 30 speakers, 5 takes each, 1 s at 16 kHz, read from
``--data`` (default ``../shared/data/asc``, or ``AUDIOGATE_ASC``). Every task uses the
dataset's own speaker split (``speakers.csv``: 18 train, 6 validation, 6 test speakers),
passed to audiogate as a ``split_file``, so no test speaker is heard in training:

* ``word``: the word gate "open" against the 19 other words (five clips of other words per
  speaker, drawn by the seed), 150 + 150 clips;
* ``words20``: the 20 words as 20 classes (3,000 clips; accuracy and macro-F1);
* ``voice``: three allowed people (drawn by the seed from the training and validation
  speakers) against everyone else; each allowed person's takes 1-3 train (enrol), take 4
  validates, take 5 tests, on every word; the impostors follow ``speakers.csv``, so the six
  test speakers are impostors never heard (600 test impostor clips);
* ``word_1to19``: the word gate at the data's own ratio, 150 "open" against 2,850 others;
* ``word_1to9``: the word gate at 1:9, 150 "open" against 1,350 others (nine of each
  speaker's other clips per "open" clip, drawn by the seed).

Each pipeline trains on the same split: audiogate's recipes (``default``, ``strong``, and
``voice`` on the voice task), and the reference notebook pipeline (:mod:`bench.reference`:
librosa per clip, the specification's SimpleConvNet, down-sampled training set, best epoch on
validation). Reported: test macro-F1 at the pipeline's own decision, EER, FAR and FRR there
(gates), accuracy (20 words), the best epoch and epochs run, training seconds; mean and
spread (min-max) over ``--seeds`` seeds (the seed draws the runs' initialisation and
augmentation, the word task's other words and the voice task's allowed people).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import audiogate
from audiogate.config import Config
from audiogate.data.split import Split, balance, read_split
from audiogate.files import write_json, write_text
from audiogate.gates import kind_for
from audiogate.reporting.metrics import macro_f1

from . import reference
from .speech import REFERENCE, gate_scores, reference_config

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "asc"
KEYWORD = "open"
TASKS = ("word", "words20", "voice", "word_1to19", "word_1to9")
PIPELINES = (REFERENCE, "default", "strong", "voice")
RECIPES: dict[str, dict[str, Any]] = {"default": {}, "strong": {"recipe": "strong"},
                                      "voice": {"recipe": "voice"}}
ALLOWED_PEOPLE = 3
"""Allowed people of the voice task."""
TRAIN_TAKES, VAL_TAKE, TEST_TAKE = ("01", "02", "03"), "04", "05"
"""How each allowed person's takes of every word are split in the voice task."""
TINY = {"fixed_length": 48, "n_fft": 512, "batch_size": 16, "max_epochs": 2, "patience": 0}
"""The ``--tiny`` size: short windows, two epochs (figures mean nothing; it runs in seconds)."""

Result = dict[str, Any]


@dataclass(frozen=True)
class Recording:
    """One clip of the dataset: its word, speaker, take and file."""

    word: str
    speaker: str
    take: str
    path: Path


def recordings(root: Path) -> list[Recording]:
    """Every clip under ``root`` (``<word>/<speaker>_<take>.flac``), sorted."""
    out = []
    for path in sorted(root.glob("*/*.flac")):
        speaker, take = path.stem.split("_")
        out.append(Recording(path.parent.name, speaker, take, path))
    if not out:
        raise SystemExit(f"no recordings under {root} (<word>/<speaker>_<take>.flac); pass "
                         "--data or set AUDIOGATE_ASC")
    return out


def speaker_subsets(root: Path) -> dict[str, str]:
    """The dataset's own split: speaker -> train, val or test (``speakers.csv``)."""
    with open(root / "speakers.csv", newline="") as fh:
        return {row["speaker"]: row["subset"] for row in csv.DictReader(fh)}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


def build_task(task: str, *, clips: Sequence[Recording], subsets: dict[str, str], root: Path,
               seed: int, tiny: bool = False) -> tuple[Path, Path, dict[str, Any]]:
    """The task's data folder (``<class>/<speaker>/<word>_<take>.flac``), its split file
    (``subset,path``) and what was drawn; made afresh under ``root``."""
    rng = np.random.default_rng(seed)
    folder, rows, drawn = root / task, [], {}
    shutil.rmtree(folder, ignore_errors=True)
    speakers = sorted({c.speaker for c in clips})
    if tiny:
        keep = {s for sub in ("train", "val", "test")
                for s in [p for p in speakers if subsets[p] == sub][:3]}
        clips = [c for c in clips if c.speaker in keep and c.take in ("01", "04", "05")]
        speakers = sorted(keep)
    if task in ("word", "word_1to19", "word_1to9"):
        chosen: list[tuple[str, Recording]] = [("allowed", c) for c in clips
                                               if c.word == KEYWORD]
        for speaker in speakers:
            others = [c for c in clips if c.speaker == speaker and c.word != KEYWORD]
            keyword = sum(c.word == KEYWORD and c.speaker == speaker for c in clips)
            n = {"word_1to19": len(others), "word_1to9": 9 * keyword}.get(task, keyword)
            picks = sorted(rng.choice(len(others), size=min(n, len(others)), replace=False))
            chosen += [("not_allowed", others[i]) for i in picks]
        pairs = [(label, c, subsets[c.speaker]) for label, c in chosen]
    elif task == "words20":
        pairs = [(c.word, c, subsets[c.speaker]) for c in clips]
    elif task == "voice":
        pool = [s for s in speakers if subsets[s] != "test"]
        people = sorted(rng.choice(pool, size=min(ALLOWED_PEOPLE, len(pool) - 1),
                                   replace=False).tolist())
        drawn["allowed_people"] = people
        take_subset = {**dict.fromkeys(TRAIN_TAKES, "train"), VAL_TAKE: "val",
                       TEST_TAKE: "test"}
        pairs = [("allowed", c, take_subset[c.take]) if c.speaker in people
                 else ("not_allowed", c, subsets[c.speaker]) for c in clips]
    else:
        raise ValueError(f"unknown task {task!r}")
    for label, c, subset in pairs:
        dst = folder / label / c.speaker / f"{c.word}_{c.take}.flac"
        _link(c.path, dst)
        rows.append((subset, str(dst.resolve())))
    split_file = root / f"{task}.split.csv"
    write_text(split_file, "subset,path\n" + "".join(f"{s},{p}\n" for s, p in rows))
    return folder, split_file, drawn


def _timed(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def run_gate(*, data: Path, split_file: Path, runs: Path, name: str,
             overrides: dict[str, Any]) -> Result:
    """An audiogate recipe on a two-class task: its own test report, epochs and seconds."""
    fields = {"data": str(data), "runs_dir": str(runs), "name": name,
              "split_file": str(split_file), "group_by": "folder",
              "keep_epoch_checkpoints": False, "workers": 0,
              "cache_dir": str(runs.parent.parent / "cache"), **overrides}
    kind = kind_for(Config.from_dict(fields, source=f"recipe {name}"))
    config = Config.from_dict({k: v for k, v in fields.items() if k not in kind.ignores},
                              source=f"recipe {name}")  # no warning for what it ignores
    shutil.rmtree(runs / name, ignore_errors=True)
    seconds, result = _timed(lambda: audiogate.train(config, progress=False))
    test = json.loads(result.run.test_report.read_text())
    metrics = json.loads(result.run.metrics.read_text())
    gate = test.get("gate") or {}
    return {"f1": test["macro_f1"], "accuracy": test["accuracy"], "eer": gate.get("eer"),
            "far": gate.get("far"), "frr": gate.get("frr"),
            "threshold": gate.get("threshold"), "best_epoch": metrics.get("best_epoch"),
            "epochs": len(metrics.get("epochs") or []), "seconds": seconds,
            "run": str(result.run.root)}


def run_reference(*, split: Split, classes: list[str], base: dict[str, Any],
                  on_epoch: Callable[[dict[str, float]], None] | None = None) -> Result:
    """The reference notebook pipeline on ``split`` (down-sampled training clips, the best
    epoch on validation); a gate's decision is the best-F1 threshold on validation.
    ``on_epoch``: called with each epoch's record (:func:`bench.reference.fit`)."""
    config = reference_config(base)
    train = balance(split.train, strategy="downsample", rng=np.random.default_rng(config.seed))
    pairs = {"train": [(c.path, c.label) for c in train],
             **{k: [(c.path, c.label) for c in getattr(split, k)] for k in ("val", "test")}}
    reference.warm_up(config, pairs["train"][0][0])
    workers = 0 if base.get("max_epochs", 0) and base["max_epochs"] <= 2 else 2
    seconds, fitted = _timed(lambda: reference.fit(pairs["train"], pairs["val"], config=config,
                                                   n_classes=len(classes), workers=workers,
                                                   on_epoch=on_epoch))
    val, test = (reference.scores(fitted.net, pairs[k], config=config, workers=workers)
                 for k in ("val", "test"))
    y_test = np.array([c.label for c in split.test])
    out: Result = {"best_epoch": fitted.best_epoch, "epochs": fitted.epochs,
                   "seconds": seconds}
    if "allowed" in classes and len(classes) == 2:
        pos = classes.index("allowed")
        y_val = np.array([int(c.label == pos) for c in split.val])
        scores = gate_scores(val_y=y_val, val_p=val[:, pos], test_y=(y_test == pos).astype(int),
                             test_p=test[:, pos], argmax=(test.argmax(1) == pos).astype(int))
        out.update(f1=scores["f1_val_threshold"], eer=scores["eer"], far=scores["far"],
                   frr=scores["frr"], threshold=scores["threshold"])
        decided = np.where(test[:, pos] >= scores["threshold"], pos, 1 - pos)
    else:
        decided = test.argmax(axis=1)
        out.update(f1=macro_f1(y_test, decided, n_classes=len(classes)), eer=None, far=None,
                   frr=None)
    out["accuracy"] = float(np.mean(decided == y_test))
    return out


def run_task(task: str, *, clips: Sequence[Recording], subsets: dict[str, str], work: Path,
             pipelines: Sequence[str], seed: int, tiny: bool) -> Result:
    """Every pipeline of one task and seed: audiogate's recipes, then the reference on the
    split audiogate's first run wrote."""
    data, split_file, drawn = build_task(task, clips=clips, subsets=subsets,
                                         root=work / "tasks" / f"seed-{seed}", seed=seed,
                                         tiny=tiny)
    base: dict[str, Any] = {"seed": seed, **(TINY if tiny else {})}
    runs = work / "runs" / f"seed-{seed}" / task
    out: Result = {}
    first_run: Path | None = None
    for name in pipelines:
        if name == REFERENCE or (name == "voice" and task != "voice"):
            continue
        say(f"{task} (seed {seed}): {name} ...")
        out[name] = run_gate(data=data, split_file=split_file, runs=runs, name=name,
                             overrides={**base, **RECIPES[name]})
        first_run = first_run or Path(out[name]["run"])
        say(_line(task, name, out[name]))
    if REFERENCE in pipelines and first_run is not None:
        say(f"{task} (seed {seed}): {REFERENCE} ...")
        classes = json.loads((first_run / "metrics.json").read_text())["classes"]
        out[REFERENCE] = run_reference(split=read_split(first_run / "split.csv"),
                                       classes=classes, base=base)
        say(_line(task, REFERENCE, out[REFERENCE]))
    return {"seed": seed, "drawn": drawn, "runs": out}


SUMMED = ("f1", "accuracy", "eer", "far", "frr", "best_epoch", "epochs", "seconds")


def summarise(per_seed: list[Result]) -> Result:
    """Per pipeline, each figure's mean, min and max over the seeds (None where it does not
    apply: a voice gate has no epochs, 20 classes no EER)."""
    out: Result = {}
    names = dict.fromkeys(n for r in per_seed for n in r["runs"])
    for name in names:
        done = [r["runs"][name] for r in per_seed if name in r["runs"]]
        out[name] = {}
        for key in SUMMED:
            values = [d[key] for d in done if d.get(key) is not None]
            out[name][key] = None if not values else {
                "mean": float(np.mean(values)), "min": float(np.min(values)),
                "max": float(np.max(values))}
    return out


def _fmt(stat: dict[str, float] | None, fmt: str = ".3f") -> str:
    if stat is None:
        return "-"
    if stat["min"] == stat["max"]:
        return format(stat["mean"], fmt)
    return f"{stat['mean']:{fmt}} ({stat['min']:{fmt}}-{stat['max']:{fmt}})"


def report(results: Result) -> str:
    """The results as Markdown: one table per task."""
    lines = [f"Recorded speech: Arabic Speech Commands (Ghandoura et al., 2021; CC BY 4.0), "
             f"30 speakers, the dataset's speaker split; mean (min-max) over "
             f"{len(results['seeds'])} seed(s) {results['seeds']}; {results['cores']} cores; "
             f"{results['seconds']:.0f} s in all.", ""]
    for task, summary in results["tasks"].items():
        lines += [f"**{task}**", "",
                  "| pipeline | test macro-F1 | accuracy | EER | FAR | FRR | best epoch | "
                  "epochs | train s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in summary.items():
            lines.append(f"| {name} | {_fmt(r['f1'])} | {_fmt(r['accuracy'])} "
                         f"| {_fmt(r['eer'])} | {_fmt(r['far'])} | {_fmt(r['frr'])} "
                         f"| {_fmt(r['best_epoch'], '.1f')} | {_fmt(r['epochs'], '.1f')} "
                         f"| {_fmt(r['seconds'], '.0f')} |")
        lines.append("")
    return "\n".join(lines)


def _line(task: str, name: str, r: Result) -> str:
    eer = "-" if r.get("eer") is None else f"{r['eer']:.3f}"
    return (f"{task}: {name}: test F1 {r['f1']:.3f}, accuracy {r['accuracy']:.3f}, EER {eer}, "
            f"best epoch {r['best_epoch']} of {r['epochs']}, {r['seconds']:.0f} s")


def say(text: str) -> None:
    """Progress, on stderr (stdout holds the results table)."""
    print(text, file=sys.stderr, flush=True)


def data_parser(description: str, *, work: str, holds: str) -> argparse.ArgumentParser:
    """A parser with the recorded-speech benchmarks' ``--data`` (the dataset) and ``--work``
    (``<tmp>/<work>``, the folder for ``holds``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("AUDIOGATE_ASC", DEFAULT_DATA)),
                        help="the dataset folder (<word>/<speaker>_<take>.flac, speakers.csv)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / work,
                        help=f"folder for {holds}")
    return parser


def publish(results: Result, *, work: Path, text: str) -> None:
    """Write ``results.json`` and ``results.md`` (``text``) into ``work``; print ``text``."""
    write_json(work / "results.json", results)
    write_text(work / "results.md", text)
    print(text)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = data_parser(__doc__.splitlines()[0], work="audiogate-real",
                         holds="the task folders, runs, cache and results")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help=f"comma-separated, from {', '.join(PIPELINES)} (voice runs on the "
                             "voice task only)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0, 1, ... (default 3)")
    parser.add_argument("--tiny", action="store_true",
                        help="9 speakers, 3 takes, 2 epochs: seconds, figures meaningless")
    args = parser.parse_args(argv)
    args.task_list = [t for t in args.tasks.split(",") if t]
    args.pipeline_list = [p for p in args.pipelines.split(",") if p]
    unknown = (set(args.task_list) - set(TASKS)) | (set(args.pipeline_list) - set(PIPELINES))
    if unknown or args.seeds < 1:
        parser.error(f"unknown task or pipeline {sorted(unknown)}" if unknown
                     else "--seeds must be >= 1")
    if args.pipeline_list == [REFERENCE]:  # it would run nothing and print an empty table
        parser.error("the reference trains on the split audiogate's first run writes: give "
                     "an audiogate pipeline too (--pipelines reference,default)")
    return args


def main(argv: Sequence[str] | None = None) -> Result:
    args = _args(argv)
    began = time.perf_counter()
    clips, subsets = recordings(args.data), speaker_subsets(args.data)
    seeds = list(range(args.seeds))
    per_task = {t: [run_task(t, clips=clips, subsets=subsets, work=args.work,
                             pipelines=args.pipeline_list, seed=s, tiny=args.tiny)
                    for s in seeds] for t in args.task_list}
    results = {"seeds": seeds, "tasks": {t: summarise(r) for t, r in per_task.items()},
               "per_seed": per_task, "cores": len(os.sched_getaffinity(0)),
               "seconds": time.perf_counter() - began, "tiny": args.tiny}
    publish(results, work=args.work, text=report(results))
    return results


if __name__ == "__main__":
    main()
