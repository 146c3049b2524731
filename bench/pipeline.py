"""Benchmark: audiogate's data pipeline against the specified per-sample librosa pipeline.

    python -m bench.pipeline                 # 300 clips of 1-5 s, 1-2 minutes on 2 cores
    python -m bench.pipeline --clips 600 --work /tmp/agbench

Both pipelines train the same :class:`~audiogate.models.SimpleConvNet` with the same batch size
on the same training split, in the same run (audiogate with ``--recipe spec``); one more row
gives the augmented epoch of audiogate's default recipe (its own model and augmentations).
Every phase runs in a fresh process, so its peak memory (and that of its worker processes) is
its own; phases alternate between the two pipelines so that a change in machine load hits
both. Reported:

* training epoch throughput (clips/s) with augmentation: audiogate's first run (cold cache,
  decoding of *every* split included), its second epoch, and a second run (new process);
* a clean (un-augmented) epoch from cached features, against the reference's clean epoch;
* prediction over the whole folder (clips/s) and single-clip latency (ms), and prediction
  over 2,000 one-second clips with the default model (clips/s per core, peak memory after a
  quarter of them and after all: flat in the number of files);
* CPU seconds per clip (all processes; robust to a busy machine) and peak memory.

The reference's training epochs are timed with torch's default intra-op threads and with one
thread, and the faster one is kept, so a thread setting cannot flatter the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiogate.config import SPEC_RECIPE, Config
from audiogate.data import discover, prepare_data
from audiogate.data.audio_io import write_wav
from audiogate.data.prepare import resolve_window
from audiogate.data.split import make_split
from audiogate.data.workers import resolve_workers
from audiogate.gates import load
from audiogate.models import ModelSpec
from audiogate.models.checkpoint import save_checkpoint
from audiogate.training import Trainer
from audiogate.training.signals import StopFlag

from . import reference
from .dataset import make_dataset

LATENCY_CLIPS = 20
"""Single clips timed for the latency figure (median reported)."""
REF_WORKERS = 2
"""DataLoader workers of the reference, what a user of a 2-core machine would pick."""
MODEL_STEPS = 4
"""Training steps timed per thread setting for the model-only ceiling (best kept)."""
CLASSES = ("not_allowed", "allowed")

Result = dict[str, Any]


def bench_config(work: Path, *, spec: bool = True) -> Config:
    """The specification's settings (``--recipe spec``: its SimpleConvNet, down-sampling and
    three augmentations, whatever the defaults are), or with ``spec=False`` audiogate's
    defaults; one epoch; audiogate's cache and runs under ``work``."""
    return Config(**{**(SPEC_RECIPE if spec else {}), "data": str(work / "data"),
                     "runs_dir": str(work / "runs"), "cache_dir": str(work / "cache"),
                     "workers": 0, "max_epochs": 1, "patience": 0,
                     "keep_epoch_checkpoints": False})


def train_pairs(config: Config) -> list[tuple[str, int]]:
    """The training split audiogate's ``train`` makes of the folder (same seed, same code)."""
    found = discover(config.data, group_by=config.group_by)
    split = make_split(found.clips, test_size=config.test_size, val_size=config.val_size,
                       seed=config.seed, balance_by=config.balance)
    return [(c.path, c.label) for c in split.train]


def _usage() -> tuple[float, float]:
    """CPU seconds of this process and of its reaped children."""
    me, kids = (resource.getrusage(who) for who in
                (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds (all processes) and the result of ``fn()``."""
    cpu0, wall0 = sum(_usage()), time.perf_counter()
    out = fn()
    return time.perf_counter() - wall0, sum(_usage()) - cpu0, out


# ----------------------------------------------------------------- reference phases
def phase_ref_train(work: Path) -> Result:
    config = bench_config(work)
    pairs = train_pairs(config)
    reference.warm_up(config, pairs[0][0])
    torch.manual_seed(config.seed)
    net = ModelSpec.of(config, n_classes=len(CLASSES)).build()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    default_threads = torch.get_num_threads()
    out: Result = {"train_clips": len(pairs)}
    for name, augment in (("aug", True), ("clean", False)):
        data = reference.SpectrogramDataset(pairs, config=config, augment=augment)
        runs = []
        for epoch, threads in enumerate(sorted({default_threads, 1}, reverse=True)):
            torch.set_num_threads(threads)
            data.epoch = epoch
            batches = reference.loader(data, batch_size=config.batch_size,
                                       workers=REF_WORKERS, shuffle=True, seed=epoch)
            wall, cpu, _ = _timed(lambda b=batches: reference.train_epoch(net, b, optimizer))
            runs.append((wall, cpu, threads))
        wall, cpu, threads = min(runs)
        out[f"{name}_clips_s"] = len(pairs) / wall
        out[f"{name}_cpu_ms"] = 1000 * cpu / len(pairs)
        out[f"{name}_threads"] = threads
    torch.set_num_threads(default_threads)
    data = reference.SpectrogramDataset(pairs, config=config, augment=True)
    batches = reference.loader(data, batch_size=config.batch_size, workers=REF_WORKERS,
                               shuffle=True)
    wall, _, _ = _timed(lambda: sum(len(y) for _, y in batches))
    out["aug_data_only_clips_s"] = len(pairs) / wall
    return out


def phase_ref_predict(work: Path) -> Result:
    config = bench_config(work)
    found = discover(config.data)
    pairs = [(c.path, c.label) for c in found.clips]
    reference.warm_up(config, pairs[0][0])
    net = ModelSpec.of(config, n_classes=len(CLASSES)).build().eval()
    data = reference.SpectrogramDataset(pairs, config=config, augment=False)
    batches = reference.loader(data, batch_size=config.batch_size, workers=REF_WORKERS,
                               shuffle=False)
    wall, cpu, _ = _timed(lambda: reference.predict(net, batches))

    def one(i: int) -> None:
        x, _ = data[i]
        with torch.no_grad():
            torch.softmax(net(x[None]), dim=1)

    latency = [_timed(lambda i=i: one(i))[0] for i in range(LATENCY_CLIPS)]
    return {"clips": len(pairs), "folder_clips_s": len(pairs) / wall,
            "folder_cpu_ms": 1000 * cpu / len(pairs),
            "latency_ms": 1000 * statistics.median(latency)}


# ----------------------------------------------------------------- audiogate phases
def _prepare(config: Config) -> tuple[float, float, Trainer]:
    """Decode/cache (or look up) every clip and build the trainer, as ``train`` does."""
    def build() -> Trainer:
        return Trainer(config, prepare_data(config, progress=False), progress=False)

    wall, cpu, trainer = _timed(build)
    return wall, cpu, trainer


def _epoch(trainer: Trainer, epoch: int) -> tuple[float, float]:
    wall, cpu, _ = _timed(lambda: trainer.train_epoch(epoch, StopFlag()))
    return wall, cpu


def phase_ours_cold(work: Path) -> Result:
    shutil.rmtree(work / "cache", ignore_errors=True)
    config = bench_config(work)
    prep_wall, prep_cpu, trainer = _prepare(config)
    n = len(trainer.data.train)
    wall1, cpu1 = _epoch(trainer, 1)
    wall2, cpu2 = _epoch(trainer, 2)
    return {"train_clips": n, "all_clips": n + len(trainer.data.val) + len(trainer.data.test),
            "prepare_s": prep_wall,
            "first_run_clips_s": n / (prep_wall + wall1),
            "first_run_cpu_ms": 1000 * (prep_cpu + cpu1) / n,
            "second_epoch_clips_s": n / wall2, "second_epoch_cpu_ms": 1000 * cpu2 / n,
            "batches": -(-n // config.batch_size), "epoch_s": wall2}


def phase_ours_warm(work: Path) -> Result:
    config = bench_config(work)
    prep_wall, prep_cpu, trainer = _prepare(config)
    n = len(trainer.data.train)
    wall, cpu = _epoch(trainer, 1)
    out: Result = {"lookup_s": prep_wall,
                   "second_run_clips_s": n / (prep_wall + wall),
                   "second_run_cpu_ms": 1000 * (prep_cpu + cpu) / n,
                   "prefetch": config.prefetch}
    # second epochs with and without the batch thread (`prefetch`)
    other = Trainer(replace(config, prefetch=not config.prefetch), trainer.data,
                    progress=False)
    _epoch(other, 1)
    batches = -(-n // config.batch_size)
    out["step_ms"] = 1000 * _epoch(trainer, 2)[0] / batches
    out["other_step_ms"] = 1000 * _epoch(other, 2)[0] / batches
    clean = Trainer(replace(config, augment=False), trainer.data, progress=False)
    wall, cpu = _epoch(clean, 1)
    out.update({"clean_clips_s": n / wall, "clean_cpu_ms": 1000 * cpu / n,
                "aug_data_only_clips_s": _data_only_clips_s(trainer),
                "model_only_clips_s": _model_only_clips_s(trainer)})
    return out


def _data_only_clips_s(trainer: Trainer) -> float:
    """Augmented training features made per second from the cache, without the model."""
    order = np.random.default_rng(0).permutation(len(trainer.data.train))
    with torch.no_grad():
        wall, _, _ = _timed(lambda: sum(len(b.rows) for b in trainer.batches(order, epoch=1)))
    return len(order) / wall


def _model_only_clips_s(trainer: Trainer) -> float:
    """Training steps per second on ready features, best thread count: the
    ceiling of any data pipeline feeding this model on this machine."""
    bs = trainer.config.batch_size
    rows = np.arange(bs) % len(trainer.data.train)
    feats = torch.from_numpy(trainer.data.train.features(rows))
    target = torch.from_numpy(trainer.data.train.labels[rows])
    best, default_threads = math.inf, torch.get_num_threads()
    for threads in sorted({default_threads, 1}):
        torch.set_num_threads(threads)
        for _ in range(MODEL_STEPS + 1):
            began = time.perf_counter()
            loss = trainer.criterion(trainer.net(feats), target).mean()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            best = min(best, time.perf_counter() - began)
    torch.set_num_threads(default_threads)
    return bs / best


def phase_ours_default(work: Path) -> Result:
    """The augmented epoch of audiogate's default recipe (TC-ResNet, noise and time stretch,
    random crops), what ``audiogate train`` runs without flags; its second epoch."""
    config = resolve_window(bench_config(work, spec=False))  # what train picks for "auto"
    _, _, trainer = _prepare(config)
    n = len(trainer.data.train)
    _epoch(trainer, 1)
    wall, cpu = _epoch(trainer, 2)
    return {"model": config.model, "second_epoch_clips_s": n / wall,
            "second_epoch_cpu_ms": 1000 * cpu / n}


def phase_ours_predict(work: Path) -> Result:
    config = bench_config(work)
    checkpoint = work / "bench.pt"
    spec = ModelSpec.of(config, n_classes=len(CLASSES))
    save_checkpoint(checkpoint, net=spec.build(), spec=spec, config=config, classes=CLASSES,
                    epoch=0, metrics={})
    gate = load(checkpoint, workers=0)
    files = [c.path for c in discover(config.data).clips]
    gate.predict_many(files[:2])
    wall, cpu, _ = _timed(lambda: gate.predict_many(files))
    latency = [_timed(lambda f=f: gate.predict(f))[0] for f in files[:LATENCY_CLIPS]]
    return {"clips": len(files), "folder_clips_s": len(files) / wall,
            "folder_cpu_ms": 1000 * cpu / len(files),
            "latency_ms": 1000 * statistics.median(latency)}


ONE_S_CLIPS = 2000
"""One-second clips of the prediction-throughput phase."""
ONE_S_WINDOW = 104
"""Its model window (frames): what ``fixed_length = "auto"`` chooses for 1-s clips."""


def one_second_clips(root: Path, *, n: int) -> list[str]:
    """``n`` one-second 16 kHz WAV files (a tone in noise, seeded), made once under ``root``."""
    files = [root / f"clip{i:05d}.wav" for i in range(n)]
    if not all(f.is_file() for f in files):
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        t = np.arange(16000) / 16000
        for i, f in enumerate(files):
            y = 0.3 * np.sin(2 * np.pi * (200 + i % 700) * t) + 0.05 * rng.standard_normal(t.size)
            write_wav(f, y.astype(np.float32), sr=16000)
    return [str(f) for f in files]


def phase_ours_predict_1s(work: Path) -> Result:
    """``predict`` over a folder of 1-s clips with the default model (all cores decoding):
    clips/s, per core, and the peak memory after a quarter of the files and after all."""
    config = replace(bench_config(work, spec=False), fixed_length=ONE_S_WINDOW)
    checkpoint = work / "bench-1s.pt"
    spec = ModelSpec.of(config, n_classes=len(CLASSES))
    save_checkpoint(checkpoint, net=spec.build(), spec=spec, config=config, classes=CLASSES,
                    epoch=0, metrics={})
    gate = load(checkpoint, workers=0)
    files = one_second_clips(work / "one_second", n=ONE_S_CLIPS)
    gate.predict_many(files[:ONE_S_CLIPS // 4])
    quarter = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu, _ = _timed(lambda: gate.predict_many(files))
    cores = resolve_workers(0)
    return {"clips": len(files), "clips_s": len(files) / wall,
            "clips_s_per_core": len(files) / wall / cores, "cores": cores,
            "cpu_ms": 1000 * cpu / len(files), "peak_quarter_mb": quarter,
            "peak_all_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


PHASES: dict[str, Callable[[Path], Result]] = {
    "ref-train": phase_ref_train, "ours-cold": phase_ours_cold,
    "ours-warm": phase_ours_warm, "ours-default": phase_ours_default,
    "ref-predict": phase_ref_predict,
    "ours-predict": phase_ours_predict, "ours-predict-1s": phase_ours_predict_1s,
}


def run_phase(name: str, work: Path) -> Result:
    """Run one phase in a fresh process; its result plus its peak memory (MB)."""
    cmd = [sys.executable, "-m", "bench.pipeline", "--phase", name, "--work", str(work)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _phase_main(name: str, work: Path) -> None:
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # pays torch's lazy imports (~2 s)
    result = PHASES[name](work)
    peak = {who: resource.getrusage(r).ru_maxrss / 1024 for who, r in
            (("main", resource.RUSAGE_SELF), ("worker", resource.RUSAGE_CHILDREN))}
    result.update({"peak_main_mb": peak["main"], "peak_worker_mb": peak["worker"]})
    print(json.dumps(result))


def _rows(r: dict[str, Result]) -> list[tuple[str, float, float, str]]:
    """(label, reference, audiogate, unit) for each figure; higher is better unless ms/MB."""
    ref, cold, warm = r["ref-train"], r["ours-cold"], r["ours-warm"]
    rp, op = r["ref-predict"], r["ours-predict"]
    return [
        ("train, augmented, first run (cold cache)", ref["aug_clips_s"],
         cold["first_run_clips_s"], "clips/s"),
        ("train, augmented, second epoch", ref["aug_clips_s"], cold["second_epoch_clips_s"],
         "clips/s"),
        ("train, augmented, second run (new process)", ref["aug_clips_s"],
         warm["second_run_clips_s"], "clips/s"),
        (f"train, augmented, second epoch, default recipe ({r['ours-default']['model']})",
         ref["aug_clips_s"], r["ours-default"]["second_epoch_clips_s"], "clips/s"),
        ("train, clean, cached features", ref["clean_clips_s"], warm["clean_clips_s"],
         "clips/s"),
        ("augmented features only, no model", ref["aug_data_only_clips_s"],
         warm["aug_data_only_clips_s"], "clips/s"),
        ("predict, whole folder", rp["folder_clips_s"], op["folder_clips_s"], "clips/s"),
        ("predict, one clip (latency)", rp["latency_ms"], op["latency_ms"], "ms"),
        ("CPU per clip, augmented epoch", ref["aug_cpu_ms"], warm["second_run_cpu_ms"],
         "ms"),
        ("CPU per clip, augmented epoch, default recipe", ref["aug_cpu_ms"],
         r["ours-default"]["second_epoch_cpu_ms"], "ms"),
        ("CPU per clip, clean epoch", ref["clean_cpu_ms"], warm["clean_cpu_ms"], "ms"),
        ("peak memory, training: main process", ref["peak_main_mb"],
         max(cold["peak_main_mb"], warm["peak_main_mb"]), "MB"),
        ("peak memory, training: one worker", ref["peak_worker_mb"],
         max(cold["peak_worker_mb"], warm["peak_worker_mb"]), "MB"),
        ("peak memory, predict: main process", rp["peak_main_mb"], op["peak_main_mb"], "MB"),
    ]


def report(r: dict[str, Result], *, clips: int, seconds: float) -> str:
    """The results as a Markdown table, with the per-batch figures below it."""
    cold, warm = r["ours-cold"], r["ours-warm"]
    lines = [f"{clips} clips of 1-5 s at 16/22.05/44.1/48 kHz; {cold['train_clips']} in the "
             f"training split; batch {bench_config(Path()).batch_size}; "
             f"{torch.get_num_threads()} cores; bench took {seconds:.0f} s.", "",
             "| figure | reference | audiogate | ratio |", "|---|---:|---:|---:|"]
    for label, ref, ours, unit in _rows(r):
        ratio = ours / ref if unit == "clips/s" else ref / ours
        lines.append(f"| {label} ({unit}) | {ref:.1f} | {ours:.1f} | {ratio:.1f}x |")
    chosen = "true" if warm["prefetch"] else "false"
    other = "false" if warm["prefetch"] else "true"
    lines += ["", f"Training batch of {bench_config(Path()).batch_size} with augmentation: "
              f"{warm['step_ms']:.0f} ms with `prefetch = {chosen}` (the default), "
              f"{warm['other_step_ms']:.0f} ms with `prefetch = {other}`. "
              f"First run: {cold['prepare_s']:.1f} s to decode and cache all "
              f"{cold['all_clips']} clips; second run: {warm['lookup_s']:.1f} s to find them.",
              "", f"Ceiling: the model's training step alone (ready features, best thread "
              f"count) runs at {warm['model_only_clips_s']:.0f} clips/s = "
              f"{warm['model_only_clips_s'] / r['ref-train']['aug_clips_s']:.1f}x the "
              "reference's augmented epoch; no data pipeline can train this model faster.",
              "", _one_second_line(r["ours-predict-1s"])]
    return "\n".join(lines)


def _one_second_line(p: Result) -> str:
    return (f"Predict over {p['clips']} one-second clips (default model, "
            f"{ONE_S_WINDOW}-frame window, every core decoding): {p['clips_s']:.0f} clips/s on "
            f"{p['cores']} cores = **{p['clips_s_per_core']:.0f} clips/s per core** by the "
            f"clock, {1000 / p['cpu_ms']:.0f} clips per CPU-second of all processes (a busy "
            f"machine slows the first, not the second); peak memory of the main process "
            f"{p['peak_quarter_mb']:.0f} MB after {p['clips'] // 4} clips, "
            f"{p['peak_all_mb']:.0f} MB after all {p['clips']}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300, help="clips in the data set")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "audiogate-bench",
                        help="folder for the data set, cache and runs (data is reused)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _phase_main(args.phase, args.work)
        return
    began = time.perf_counter()
    make_dataset(root=args.work / "data", n_per_class=args.clips // 2)
    shutil.rmtree(args.work / "runs", ignore_errors=True)
    results = {}
    for name in PHASES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_phase(name, args.work)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(report(results, clips=args.clips // 2 * 2, seconds=time.perf_counter() - began))


if __name__ == "__main__":
    main()
