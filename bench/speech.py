"""Speech benchmark (issue 9): word and voice gates on spoken words, reference vs audiogate.

    python -m bench.speech                          # the full benchmark (see docs for time)
    python -m bench.speech --tiny                   # seconds; what the test suite runs
    python -m bench.speech --recipes reference,default --epochs 10 --work /tmp/agspeech

The data is made here with espeak-ng (:mod:`bench.speech_tasks`, no downloads). For each
task, audiogate trains with each recipe (a dict of Config overrides, :data:`RECIPES`);
the reference notebook pipeline (:mod:`bench.reference`) then trains on exactly the clips
of the split audiogate's first run wrote (``split.csv``). Both keep the epoch with the best
validation macro-F1. Reported per task and pipeline, on the test split:

* ``test F1``: macro-F1 at the pipeline's own decision: audiogate's ``test_metrics.json``;
  for the reference, the threshold on P(allowed) chosen on its validation scores
  (``choose_threshold(rule="f1")``), which is what audiogate's operating point does;
* ``F1 argmax`` and ``F1 val-thr``: both decisions, computed here from each pipeline's
  scores, for every pipeline;
* ``EER`` (from ``test_metrics.json`` when audiogate reports it, else from the scores),
  ``FAR``/``FRR`` at the pipeline's decision;
* best epoch / epochs run, and training wall seconds (audiogate: all of ``train``, decoding
  and per-epoch test evaluation included, cold cache; reference: its epochs and
  validation passes).

With a few dozen test clips per task, one split says little (the F1 of one pipeline moves by
0.2 from one split to the next), so each pipeline runs on ``--splits`` splits (3 for the full
size: run seeds ``--seed``, ``--seed + 1``, ... or from ``--first-split``; the words and
task folders stay) and the table gives the means, each split's test F1 beside them, and
whether issue 9's targets are met on those means (:func:`targets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import audiogate
from audiogate.config import Config
from audiogate.data import Clip
from audiogate.data.split import Split, balance, read_split
from audiogate.errors import ConfigError
from audiogate.files import write_json, write_text
from audiogate.reporting.metrics import choose_threshold, equal_error_rate, error_rates, macro_f1

from . import reference
from .speech_tasks import TASKS, Size, build_tasks, group_of, pool, voice_of

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "spec": {"recipe": "spec"},
    "strong": {"recipe": "strong"},
    "voice": {"recipe": "voice"},
}
"""audiogate's recipes, each a dict of :class:`~audiogate.config.Config` overrides. A recipe
naming a field Config does not have (yet) is skipped with a note."""
GROUP_SPLIT = {"group_by": "folder"}
"""Added to every audiogate run when Config has these fields: voices never straddle subsets."""
REFERENCE = "reference"
SIZES = {
    "full": Size(speakers=16, words=10, takes=10, unbalanced_allowed=5, splits=3),
    "tiny": Size(speakers=8, words=4, takes=3, unbalanced_allowed=1,
                 config={"fixed_length": 48, "n_fft": 512, "batch_size": 8,
                         "max_epochs": 2, "patience": 0}, ref_workers=0),
}
"""``full``: 1600 clips (16 voices x 10 words x 10 takes); tasks of 320 (keyword), 400
(speaker) and 800 (keyword_1to9) clips. The reference's DataLoader has 2 workers there,
what a user of a 2-core machine would pick."""
ALLOWED = "allowed"

Result = dict[str, Any]


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children."""
    return sum(r.ru_utime + r.ru_stime for r in
               (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN)))


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    cpu, wall = _cpu_s(), time.perf_counter()
    out = fn()
    return time.perf_counter() - wall, _cpu_s() - cpu, out


def gate_scores(*, val_y: np.ndarray, val_p: np.ndarray, test_y: np.ndarray,
                test_p: np.ndarray, argmax: np.ndarray) -> Result:
    """Test F1 at argmax and at the best-F1 threshold chosen on validation, EER, and
    FAR/FRR at that threshold; ``*_y`` labels (1 = allowed), ``*_p`` P(allowed),
    ``argmax`` the test clips' argmax labels."""
    threshold = choose_threshold(val_y, val_p, rule="f1")
    far, frr = error_rates(test_y, test_p, threshold=threshold)
    return {"f1_argmax": macro_f1(test_y, argmax, n_classes=2),
            "f1_val_threshold": macro_f1(test_y, (test_p >= threshold).astype(int),
                                         n_classes=2),
            "threshold": threshold, "far": far, "frr": frr,
            "eer": equal_error_rate(test_y, test_p)[0]}


def _labels(clips: list[Clip], allowed: int) -> np.ndarray:
    return np.array([int(c.label == allowed) for c in clips])


def run_audiogate(*, data: Path, runs: Path, name: str, overrides: dict[str, Any]) -> Result:
    """Train audiogate on ``data`` with ``overrides``; its own report plus gate scores."""
    shutil.rmtree(runs / name, ignore_errors=True)
    config = Config.from_dict({"data": str(data), "runs_dir": str(runs), "name": name,
                               "cache": False, "keep_epoch_checkpoints": False, **overrides},
                              source=f"recipe {name}")
    wall, cpu, result = _timed(lambda: audiogate.train(config, progress=False))
    run = result.run
    metrics = json.loads(run.metrics.read_text())
    own = json.loads(run.test_report.read_text())
    split = read_split(run.split)
    allowed = metrics["classes"].index(ALLOWED)
    gate = audiogate.load(run.best)

    def probs(clips: list[Clip]) -> np.ndarray:
        return np.array([[p.probabilities[c] for c in metrics["classes"]]
                         for p in gate.predict_many([c.path for c in clips])])

    val, test = probs(split.val), probs(split.test)
    out = gate_scores(val_y=_labels(split.val, allowed), val_p=val[:, allowed],
                      test_y=_labels(split.test, allowed), test_p=test[:, allowed],
                      argmax=(test.argmax(axis=1) == allowed).astype(int))
    out["f1"] = own["macro_f1"]
    out.update({k: own["gate"][k] for k in ("eer", "far", "frr", "threshold")})
    out.update({"best_epoch": metrics["best_epoch"], "epochs": len(metrics["epochs"]),
                "seconds": wall, "cpu_seconds": cpu, "run": str(run.root),
                "overrides": overrides})
    return out


def reference_config(base: dict[str, Any]) -> Config:
    """The reference pipeline's settings: the specification's notebook (``--recipe spec``:
    its Args, its SimpleConvNet, its epoch bound), with ``base`` (seed, group split, size)
    on top. Not the field defaults: those are audiogate's default recipe and its network."""
    return Config.from_recipe("spec", **base)


def run_reference(*, split: Split, classes: list[str], config: Config,
                  workers: int) -> Result:
    """Train the reference pipeline on ``split``'s clips; its gate scores."""
    allowed = classes.index(ALLOWED)
    # the notebook balances by down-sampling: its training clips are the balanced subset of
    # the same training split (validation and test are the same clips as audiogate's)
    train = balance(split.train, strategy="downsample", rng=np.random.default_rng(config.seed))
    pairs = {k: [(c.path, c.label) for c in getattr(split, k)] for k in ("val", "test")}
    pairs["train"] = [(c.path, c.label) for c in train]
    reference.warm_up(config, pairs["train"][0][0])
    wall, cpu, fitted = _timed(lambda: reference.fit(
        pairs["train"], pairs["val"], config=config, n_classes=len(classes),
        workers=workers))
    val, test = (reference.scores(fitted.net, pairs[k], config=config, workers=workers)
                 for k in ("val", "test"))
    out = gate_scores(val_y=_labels(split.val, allowed), val_p=val[:, allowed],
                      test_y=_labels(split.test, allowed), test_p=test[:, allowed],
                      argmax=(test.argmax(axis=1) == allowed).astype(int))
    out.update({"f1": out["f1_val_threshold"], "best_epoch": fitted.best_epoch,
                "epochs": fitted.epochs, "seconds": wall, "cpu_seconds": cpu})
    return out


def describe_split(split: Split, *, root: Path, classes: list[str]) -> Result:
    """Clips per subset and class, whether the subsets share a group (a voice, or a voice
    and word), and per class the share of test clips whose voice was heard in training or
    validation."""
    subsets = {k: getattr(split, k) for k in ("train", "val", "test")}
    groups = {k: {group_of(c.path, root=root) for c in v} for k, v in subsets.items()}
    heard = {voice_of(c.path, root=root) for c in split.train + split.val}
    return {
        "counts": {k: {name: sum(c.label == i for c in v) for i, name in enumerate(classes)}
                   for k, v in subsets.items()},
        "groups_disjoint": not ((groups["train"] & groups["val"])
                                | (groups["train"] & groups["test"])
                                | (groups["val"] & groups["test"])),
        "test_voice_heard": {
            name: float(np.mean([voice_of(c.path, root=root) in heard
                                 for c in split.test if c.label == i]))
            for i, name in enumerate(classes)},
        "test_voices": sorted({voice_of(c.path, root=root) for c in split.test}),
    }


def recipe_problem(overrides: dict[str, Any]) -> str | None:
    """Why Config cannot take ``overrides`` yet (unknown field or value), else None."""
    known = {f.name for f in dataclasses.fields(Config)}
    missing = sorted(set(overrides) - known)
    if missing:
        return f"Config has no field {', '.join(missing)} yet"
    try:
        Config(**overrides)
    except ConfigError as exc:
        return str(exc)
    return None


def run_task(task: str, *, data: Path, runs: Path, pipelines: list[str],
             base: dict[str, Any], ref_workers: int) -> Result:
    """Every pipeline on one task and one split (``base["seed"]``): audiogate's recipes first
    (the first one's ``split.csv`` is the split), then the reference on that split; run
    folders under ``runs``."""
    out: dict[str, Result] = {}
    split: Split | None = None
    classes: list[str] = []
    for name in [p for p in pipelines if p != REFERENCE]:
        _say(f"{task} (seed {base['seed']}): audiogate {name} ...")
        out[name] = run_audiogate(data=data, runs=runs, name=name,
                                  overrides={**RECIPES[name], **base})
        run = Path(out[name]["run"])
        this = read_split(run / "split.csv")
        if split is None:
            split, classes = this, json.loads((run / "metrics.json").read_text())["classes"]
        out[name]["same_split"] = this == split
        _say(_line(f"{task} (seed {base['seed']})", name, out[name]))
    if REFERENCE in pipelines and split is not None:
        _say(f"{task} (seed {base['seed']}): {REFERENCE} ...")
        out[REFERENCE] = run_reference(split=split, classes=classes,
                                       config=reference_config(base),
                                       workers=ref_workers)
        _say(_line(f"{task} (seed {base['seed']})", REFERENCE, out[REFERENCE]))
    return {"split": describe_split(split, root=data, classes=classes) if split else None,
            "runs": out}


AVERAGED = ("f1", "f1_argmax", "f1_val_threshold", "eer", "far", "frr", "best_epoch", "epochs",
            "seconds", "cpu_seconds")
"""The figures of a pipeline that :func:`summarise` averages over splits."""


def summarise(splits: list[Result]) -> Result:
    """One task over several splits (each :func:`run_task`'s result with its ``seed``): per
    pipeline the mean of :data:`AVERAGED`, each split's test F1 (``f1_per_split``) and the
    first split's run folder; ``split`` describes the first split."""
    runs: dict[str, Result] = {}
    for name in splits[0]["runs"]:
        done = [s["runs"][name] for s in splits]
        runs[name] = {k: float(np.mean([r[k] for r in done])) for k in AVERAGED}
        runs[name]["f1_per_split"] = [r["f1"] for r in done]
        if "run" in done[0]:
            runs[name]["run"] = done[0]["run"]
    return {"split": splits[0]["split"], "runs": runs, "splits": splits}


TARGETS = ("default F1 >= reference's", "default best epoch <= reference's",
           "strong error <= half the reference's", "strong time <= a third of the reference's")
"""Issue 9's targets, checked on each task's means over splits."""


def targets(runs: Result) -> list[bool | None]:
    """Whether each of :data:`TARGETS` is met (None: a pipeline it needs did not run)."""
    ref, default, strong = (runs.get(k) for k in (REFERENCE, "default", "strong"))
    return [
        None if not (ref and default) else default["f1"] >= ref["f1"],
        None if not (ref and default) else default["best_epoch"] <= ref["best_epoch"],
        None if not (ref and strong) else 1 - strong["f1"] <= (1 - ref["f1"]) / 2,
        None if not (ref and strong) else strong["seconds"] <= ref["seconds"] / 3,
    ]


def _line(task: str, name: str, r: Result) -> str:
    return (f"{task}: {name}: test F1 {r['f1']:.3f}, EER {r['eer']:.3f}, best epoch "
            f"{r['best_epoch']} of {r['epochs']}, {r['seconds']:.0f} s")


def runnable(pipelines: list[str], notes: list[str]) -> list[str]:
    """``pipelines`` without the recipes Config cannot take yet (a note for each)."""
    out = []
    for name in pipelines:
        problem = None if name == REFERENCE else recipe_problem(RECIPES[name])
        if problem:
            notes.append(f"recipe {name!r} skipped: {problem}")
        else:
            out.append(name)
    if REFERENCE in out and len(out) == 1:
        notes.append("the reference needs an audiogate run's split: add a recipe")
    return out


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def report(results: Result) -> str:
    """The results as Markdown: one table per task, with its split above it."""
    load = results.get("load_average")
    n_splits = len(results.get("seeds", [0]))
    lines = [f"Spoken words by {results['size']['speakers']} espeak-ng voices; "
             + (f"mean over {n_splits} splits (seeds {', '.join(map(str, results['seeds']))})"
                "; " if n_splits > 1 else "")
             + f"{results['cores']} cores"
             + (f" (1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the "
                "end)" if load else "")
             + f"; benchmark took {results['seconds']:.0f} s."]
    for task, done in results["tasks"].items():
        split = done["split"]
        lines += ["", f"**{task}**"]
        if split:
            c = split["counts"]
            sizes = ", ".join(f"{k} {v.get('allowed', 0)}/{v.get('not_allowed', 0)}"
                              for k, v in c.items())
            heard = ", ".join(f"{k} {v:.0%}" for k, v in split["test_voice_heard"].items())
            lines += [f"clips allowed/not_allowed: {sizes}; voices apart in train/val/test: "
                      f"{'yes' if split['groups_disjoint'] else 'NO'}; test clips whose voice "
                      f"was heard in training: {heard}", ""]
        lines += ["| pipeline | test F1 | F1 per split | F1 argmax | F1 val-thr | EER | FAR "
                  "| FRR | best / epochs | train s | CPU s |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in done["runs"].items():
            per_split = " ".join(_num(f, ".2f") for f in r.get("f1_per_split", [r["f1"]]))
            lines.append(f"| {name} | {_num(r['f1'])} | {per_split} | {_num(r['f1_argmax'])} "
                         f"| {_num(r['f1_val_threshold'])} | {_num(r['eer'])} "
                         f"| {_num(r['far'])} | {_num(r['frr'])} "
                         f"| {r['best_epoch']:.3g} / {r['epochs']:.3g} | {r['seconds']:.0f} "
                         f"| {r['cpu_seconds']:.0f} |")
    verdicts = {task: targets(done["runs"]) for task, done in results["tasks"].items()}
    if any(v is not None for row in verdicts.values() for v in row):
        lines += ["", "**Targets** (issue 9, on the means above)", "",
                  "| task | " + " | ".join(TARGETS) + " |",
                  "|---|" + "---|" * len(TARGETS)]
        lines += [f"| {task} | " + " | ".join("-" if v is None else "met" if v else "NOT met"
                                              for v in row) + " |"
                  for task, row in verdicts.items()]
    if results["notes"]:
        lines += ["", *(f"- {n}" for n in results["notes"])]
    return "\n".join(lines) + "\n"


def _publish(results: Result, work: Path) -> None:
    """Write ``results.md`` beside ``results.json`` and print it."""
    text = report(results)
    write_text(work / "results.md", text)
    print(text)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "audiogate-speech",
                        help="folder for the words, tasks, runs and results (words reused)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long version")
    parser.add_argument("--epochs", type=int, default=0,
                        help="most epochs for every pipeline (0: each recipe's own; the "
                             "reference: the spec recipe's)")
    parser.add_argument("--recipes", default=",".join([REFERENCE, *RECIPES]),
                        help=f"pipelines to run, comma-separated, from {REFERENCE}, "
                             f"{', '.join(RECIPES)}")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"tasks to run, comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the runs")
    parser.add_argument("--splits", type=int, default=0,
                        help="train/val/test splits (run seeds --seed, --seed + 1, ...) each "
                             "pipeline runs on, figures averaged (0: the size's default)")
    parser.add_argument("--first-split", type=int, default=None,
                        help="run seed of the first split instead of --seed (the words stay "
                             "those of --seed): other splits of the same data")
    parser.add_argument("--report", action="store_true",
                        help="only print (and rewrite results.md from) the work folder's "
                             "results.json")
    args = parser.parse_args(argv)
    args.pipelines = [p for p in args.recipes.split(",") if p]
    args.task_list = [t for t in args.tasks.split(",") if t]
    unknown = (set(args.pipelines) - {REFERENCE, *RECIPES}) | (set(args.task_list) - set(TASKS))
    if unknown or args.epochs < 0 or args.splits < 0 or (args.first_split or 0) < 0:
        parser.error(f"unknown pipeline or task {sorted(unknown)}" if unknown
                     else "--epochs, --splits and --first-split must be >= 0")
    return args


def main(argv: list[str] | None = None) -> Result:
    args = _args(argv)
    if args.report:
        results = json.loads((args.work / "results.json").read_text())
        _publish(results, args.work)
        return dict(results)
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    size = SIZES["tiny" if args.tiny else "full"]
    base = {**size.config, "seed": args.seed}
    if args.epochs:
        base["max_epochs"] = args.epochs
    notes: list[str] = []
    if recipe_problem(GROUP_SPLIT):
        notes.append(f"{GROUP_SPLIT} is not in Config yet: audiogate splits clip by clip, "
                     "so voices can be shared by train, val and test")
    else:
        base.update(GROUP_SPLIT)
    _say(f"making spoken words under {args.work / 'words'} ...")
    clips = pool(work=args.work, size=size, seed=args.seed)
    folders = build_tasks(clips, root=args.work / "tasks", size=size, seed=args.seed)
    pipelines = runnable(args.pipelines, notes)
    first = args.seed if args.first_split is None else args.first_split
    seeds = [first + i for i in range(args.splits or size.splits)]
    tasks = {t: summarise([
        {"seed": seed, **run_task(t, data=folders[t], runs=args.work / "runs" / f"seed-{seed}" / t,
                                  pipelines=pipelines, base={**base, "seed": seed},
                                  ref_workers=size.ref_workers)}
        for seed in seeds]) for t in args.task_list}
    results = {"size": dataclasses.asdict(size), "base": base, "seeds": seeds, "tasks": tasks,
               "notes": notes, "cores": len(os.sched_getaffinity(0)),
               "load_average": [load_before, os.getloadavg()[0]],
               "seconds": time.perf_counter() - began}
    write_json(args.work / "results.json", results)
    _publish(results, args.work)
    return results


if __name__ == "__main__":
    main()
