"""Time to a good gate (issue 23): wall time from ``audiogate train`` to the notebook's best.

    python -m bench.ttq                            # word and word_1to9, seed 0
    python -m bench.ttq --seeds 3 --variant default --variant weighted:balance=weighted
    python -m bench.ttq --tiny                     # seconds-long; what the test suite runs

Recorded speech: the tasks of :mod:`bench.real` on the Arabic Speech Commands subset
(Ghandoura et al. 2021, CC BY 4.0), the dataset's speaker split (no test or validation
speaker heard in training): ``word`` ("open" against the 19 other words, 1:1) and
``word_1to9`` (1:9). Every pipeline runs in a fresh process, one after another, on the same
split, as a user would run it; times count from the process's start:

1. **floor**: a process that imports torch and audiogate and decodes every clip of the task
   once (resampled to 16 kHz, on every core), then exits;
2. each audiogate **variant** (``--variant NAME[:field=value,...]``; ``default`` is the
   default recipe): ``python -m audiogate train`` with an empty cache and ``--max-epochs``
   epochs; an epoch is done when its checkpoint (``models/model_epoch_NNN.pt``) is written;
3. the **reference** notebook pipeline (:mod:`bench.reference`: librosa per clip, the
   specification's SimpleConvNet on the down-sampled training set), on the split audiogate's
   first run wrote, for the same epochs without early stopping; an epoch is done when its
   validation is.

The target is the reference's best validation macro-F1 (argmax, the notebook's measure)
within those epochs. For each variant: the first epoch whose validation macro-F1 reaches it,
at argmax (the same measure) and at validation's best threshold (what its gate uses), its
time from start and the reference's time over it; the test macro-F1 of the epoch the run
chose (at its operating point); the swing: the largest drop of the validation measure after
its first epoch above 0.9 (argmax and tuned); and, for each way of choosing the best epoch
(``select_on``), the test macro-F1 (at validation's threshold) of the epoch it would choose.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiogate.files import write_text

from .real import build_task, data_parser, publish, recordings, say, speaker_subsets

TASKS = ("word", "word_1to9")
SELECT_ON = ("f1", "f1_tuned", "auc", "loss")
GOOD = 0.9
"""The swing is measured after the first epoch above this."""
TINY = {"fixed_length": 48, "n_fft": 512, "batch_size": 16}
"""The ``--tiny`` size (with 2 epochs and 9 speakers): figures mean nothing."""

Result = dict[str, Any]


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:field=value,...]`` -> name and fields (values read as TOML, else strings)."""
    name, _, rest = text.partition(":")
    fields: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected field=value, got {item!r}")
        try:
            fields[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            fields[key.strip()] = value
    return name, fields


def train_flags(fields: dict[str, Any]) -> list[str]:
    """Config fields as ``audiogate train`` flags."""
    out: list[str] = []
    for key, value in fields.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


def _child(args: Sequence[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``python ARGS`` from the repository root; its start time (``time.time()``)."""
    began = time.time()
    done = subprocess.run([sys.executable, *args], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:3])} ... failed ({done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return began, done


def floor(files: list[str], *, work: Path) -> float:
    """Seconds for a fresh process to import torch and audiogate and decode ``files``."""
    listing = work / "floor.txt"
    write_text(listing, "\n".join(files) + "\n")
    began, _ = _child(["-m", "bench.ttq_child", "floor", str(listing)])
    return time.time() - began


def first_reaching(times: list[float], values: list[float], target: float) -> tuple[
        int | None, float | None]:
    """The first epoch (1-based) whose value reaches ``target``, and its time."""
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        if math.isfinite(v) and v >= target - 1e-12:
            return i + 1, t
    return None, None


def swing(values: Sequence[float], *, above: float = GOOD) -> float | None:
    """The largest drop below the running best after the first value above ``above`` (None
    if none is); 0 for a curve that never falls back."""
    start = next((i for i, v in enumerate(values) if v > above), None)
    if start is None:
        return None
    best, drop = -math.inf, 0.0
    for v in values[start:]:
        best = max(best, v)
        drop = max(drop, best - v)
    return drop


def chosen_by(epochs: list[dict[str, Any]]) -> dict[str, float]:
    """For each ``select_on``, the test macro-F1 (at validation's threshold) of the epoch it
    chooses; ``oracle``: the best test macro-F1 of any epoch."""
    from audiogate.training.trainer import selection_score

    out = {}
    for measure in SELECT_ON:
        best = max(range(len(epochs)), key=lambda i: (selection_score(epochs[i], measure), -i))
        out[measure] = float(epochs[best]["test_f1_tuned"])
    out["oracle"] = max(float(e["test_f1_tuned"]) for e in epochs)
    return out


def run_variant(name: str, fields: dict[str, Any], *, data: Path, split_file: Path,
                work: Path, seed: int, epochs: int) -> Result:
    """One ``audiogate train`` in a fresh process with an empty cache."""
    runs, cache = work / "runs", work / "cache" / name
    shutil.rmtree(runs / name, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    began, _ = _child(["-m", "audiogate", "-q", "train", "--data", str(data), "--split-file",
                       str(split_file), "--group-by", "folder", "--runs-dir", str(runs),
                       "--name", name, "--cache-dir", str(cache), "--seed", str(seed),
                       "--max-epochs", str(epochs),
                       *train_flags(fields)])
    run = runs / name
    metrics = json.loads((run / "metrics.json").read_text())
    test = json.loads((run / "test_metrics.json").read_text())
    rows = metrics["epochs"]
    times = [(run / "models" / f"model_epoch_{r['epoch']:03d}.pt").stat().st_mtime - began
             for r in rows]
    return {"times": times, "val_f1": [r["val_f1"] for r in rows],
            "val_f1_tuned": [r["val_f1_tuned"] for r in rows], "test_f1": test["macro_f1"],
            "best_epoch": metrics["best_epoch"], "chosen_by": chosen_by(rows),
            "run": str(run)}


def run_reference(*, run: Path, work: Path, seed: int, epochs: int,
                  extra: dict[str, Any]) -> Result:
    """The reference notebook pipeline in a fresh process, on ``run``'s split."""
    out = work / "reference.json"
    began, _ = _child(["-m", "bench.ttq_child", "reference", str(run), str(out), str(seed),
                       str(epochs), json.dumps(extra)])
    result = json.loads(out.read_text())
    return {"times": [t - began for t in result["ends"]],
            "val_f1": [h["val_f1"] for h in result["history"]],
            "test_f1": result["f1"], "best_epoch": result["best_epoch"]}


def run_task(task: str, *, clips: Any, subsets: dict[str, str], work: Path, seed: int,
             variants: list[tuple[str, dict[str, Any]]], epochs: int, tiny: bool) -> Result:
    """Floor, every variant, then the reference, on one task and seed."""
    root = work / f"seed-{seed}" / task
    data, split_file, _ = build_task(task, clips=clips, subsets=subsets, root=root,
                                     seed=seed, tiny=tiny)
    files = sorted(str(p) for p in data.rglob("*.flac"))
    extra = TINY if tiny else {}
    say(f"{task} (seed {seed}, {len(files)} clips): floor ...")
    out: Result = {"clips": len(files), "floor": floor(files, work=root)}
    out["variants"] = {}
    for name, fields in variants:
        say(f"{task} (seed {seed}): {name} ...")
        out["variants"][name] = run_variant(name, {**extra, **fields}, data=data,
                                            split_file=split_file, work=root, seed=seed,
                                            epochs=epochs)
    say(f"{task} (seed {seed}): reference ...")
    first = Path(next(iter(out["variants"].values()))["run"])
    ref = out["reference"] = run_reference(run=first, work=root, seed=seed, epochs=epochs,
                                           extra=extra)
    target = max(ref["val_f1"])
    ref_epoch, ref_time = first_reaching(ref["times"], ref["val_f1"], target)
    out.update(target=target, reference_epoch=ref_epoch, reference_time=ref_time)
    for v in out["variants"].values():
        for key in ("val_f1", "val_f1_tuned"):
            epoch, at = first_reaching(v["times"], v[key], target)
            v[f"reach_{key}"] = {"epoch": epoch, "seconds": at,
                                 "speedup": None if at is None or ref_time is None
                                 else ref_time / at}
            v[f"swing_{key}"] = swing(v[key])
    ref["swing_val_f1"] = swing(ref["val_f1"])
    say(json.dumps({k: out[k] for k in ("floor", "target", "reference_time")}))
    return out


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def report(results: Result) -> str:
    """The results as Markdown: per task and seed, one row per pipeline."""
    lines = [f"Recorded speech (Arabic Speech Commands, Ghandoura et al. 2021, CC BY 4.0), the "
             f"dataset's speaker split; {results['epochs']} epochs; {results['cores']} cores; "
             f"{results['seconds']:.0f} s in all. Times from process start.", ""]
    for task, per_seed in results["tasks"].items():
        for r in per_seed:
            lines += [f"**{task}**, seed {r['seed']}: {r['clips']} clips; floor "
                      f"{r['floor']:.1f} s; target (reference's best val macro-F1) "
                      f"{r['target']:.3f}, reached by the reference at epoch "
                      f"{r['reference_epoch']}, {r['reference_time']:.1f} s", "",
                      "| pipeline | reaches target at (argmax F1) | s | x reference | x floor "
                      "| at (tuned F1) | s | x reference | test macro-F1 | best epoch "
                      "| swing (argmax / tuned) |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            ref = r["reference"]
            lines.append(f"| reference | {r['reference_epoch']} | "
                         f"{_num(r['reference_time'], '.1f')} | 1.0 | "
                         f"{_num(r['reference_time'] / r['floor'], '.1f')} | - | - | - | "
                         f"{ref['test_f1']:.3f} | {ref['best_epoch']} | "
                         f"{_num(ref['swing_val_f1'])} / - |")
            for name, v in r["variants"].items():
                a, t = v["reach_val_f1"], v["reach_val_f1_tuned"]
                lines.append(
                    f"| {name} | {_num(a['epoch'], 'd')} | {_num(a['seconds'], '.1f')} | "
                    f"{_num(a['speedup'], '.1f')} | "
                    f"{_num(None if a['seconds'] is None else a['seconds'] / r['floor'], '.1f')}"
                    f" | {_num(t['epoch'], 'd')} | {_num(t['seconds'], '.1f')} | "
                    f"{_num(t['speedup'], '.1f')} | {v['test_f1']:.3f} | {v['best_epoch']} | "
                    f"{_num(v['swing_val_f1'])} / {_num(v['swing_val_f1_tuned'])} |")
            lines.append("")
    lines += ["Test macro-F1 (at validation's threshold) of the epoch each select_on chooses "
              "(oracle: the best epoch on test), mean over tasks and seeds:", "",
              "| variant | " + " | ".join((*SELECT_ON, "oracle")) + " |",
              "|---|" + "---:|" * (len(SELECT_ON) + 1)]
    names = dict.fromkeys(n for rs in results["tasks"].values() for r in rs
                          for n in r["variants"])
    for name in names:
        picks = [r["variants"][name]["chosen_by"] for rs in results["tasks"].values()
                 for r in rs if name in r["variants"]]
        lines.append(f"| {name} | " + " | ".join(
            f"{np.mean([p[m] for p in picks]):.3f}" for m in (*SELECT_ON, "oracle")) + " |")
    return "\n".join(lines) + "\n"


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = data_parser(__doc__.splitlines()[0], work="audiogate-ttq",
                         holds="the task folders, runs, caches and results")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME[:field=value,...]",
                        help="an audiogate configuration to time (repeatable; default: "
                             "'default', the default recipe)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every pipeline")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0, 1, ... (default 1)")
    parser.add_argument("--tiny", action="store_true",
                        help="9 speakers, 3 takes, 2 epochs: seconds, figures meaningless")
    args = parser.parse_args(argv)
    args.task_list = [t for t in args.tasks.split(",") if t]
    if set(args.task_list) - set(TASKS) or args.seeds < 1 or args.epochs < 1:
        parser.error(f"tasks from {TASKS}, --seeds and --epochs >= 1")
    args.variants = [parse_variant(v) for v in args.variant or ["default"]]
    if args.tiny:
        args.epochs = min(args.epochs, 2)
    return args


def main(argv: Sequence[str] | None = None) -> Result:
    args = _args(argv)
    began = time.perf_counter()
    clips, subsets = recordings(args.data), speaker_subsets(args.data)
    tasks = {t: [{"seed": s, **run_task(t, clips=clips, subsets=subsets, work=args.work,
                                        seed=s, variants=args.variants, epochs=args.epochs,
                                        tiny=args.tiny)}
                 for s in range(args.seeds)] for t in args.task_list}
    results = {"tasks": tasks, "epochs": args.epochs, "cores": len(os.sched_getaffinity(0)),
               "seconds": time.perf_counter() - began, "tiny": args.tiny}
    publish(results, work=args.work, text=report(results))
    return results


if __name__ == "__main__":
    main()
