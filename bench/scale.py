"""Benchmark: training throughput of 1 and 2 data-parallel processes, and of a GPU with and
without mixed precision.

    python -m bench.scale                  # 300 clips of 1-5 s; about 2-3 minutes on 2 cores
    python -m bench.scale --clips 1200 --epochs 4

The data set is ``bench.dataset``'s (the same as ``bench.pipeline``), decoded into the cache
once before any timing. Every setting runs in fresh processes (through torchrun's launcher
for 2 processes), trains one warm-up epoch of the default model with augmentation, then
times ``--epochs`` epochs of ``Trainer.train_epoch`` (rank 0's wall clock between two
barriers); clips/s counts the training clips of all processes together. Settings alternate
and repeat (``--repeat``), and the best run of each is kept, so that a load spike on a shared
machine hits every setting alike.

On the CPU every process runs one intra-op thread, with and without the prefetch thread that
prepares the next batch while the model trains; the ratio of 2 processes to 1 is the
data-parallel scaling. On a GPU (when one is present) the default precision is compared with
``bf16-mixed`` and ``16-mixed``, and the features alone (augmentation on the GPU, no model)
and the model alone (ready features) show which of the two bounds an epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiogate.data import prepare_data
from audiogate.training import Trainer
from audiogate.training.distributed import from_env, session
from audiogate.training.signals import StopFlag

from .dataset import make_dataset
from .pipeline import bench_config

ROOT = Path(__file__).resolve().parent.parent
MODEL_STEPS = 10
"""Training steps timed for the model-only figure."""

Result = dict[str, Any]


@dataclass(frozen=True)
class Setting:
    """One row of the table."""

    label: str
    nproc: int
    threads: int
    prefetch: bool
    device: str = "cpu"
    precision: str = "32"

    def flags(self) -> list[str]:
        return ["--threads", str(self.threads), "--device", self.device, "--precision",
                self.precision] + (["--prefetch"] if self.prefetch else [])


CPU_SETTINGS = (
    Setting("CPU, 1 process x 1 thread", 1, 1, False),
    Setting("CPU, 2 processes x 1 thread", 2, 1, False),
    Setting("CPU, 1 process x 1 thread + prefetch thread", 1, 1, True),
    Setting("CPU, 2 processes x 1 thread + prefetch thread", 2, 1, True),
)
GPU_SETTINGS = tuple(Setting(f"GPU, precision {p}", 1, 0, True, "cuda", p)
                     for p in ("32", "bf16-mixed", "16-mixed"))


# ----------------------------------------------------------------- inside the processes
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data_only_clips_s(trainer: Trainer, epoch: int) -> float:
    """Augmented training features made per second (on the trainer's device), no model."""
    order = np.random.default_rng(0).permutation(len(trainer.data.train))
    _sync(trainer.device)
    began = time.perf_counter()
    with torch.no_grad():
        for _ in trainer.batches(order, epoch=epoch):
            pass
    _sync(trainer.device)
    return len(order) / (time.perf_counter() - began)


def _model_only_clips_s(trainer: Trainer) -> float:
    """Training steps per second on ready features (on the device), in the run's precision."""
    bs = trainer.config.batch_size
    rows = np.arange(bs) % len(trainer.data.train)
    feats = torch.from_numpy(trainer.data.train.features(rows)).to(trainer.device)
    target = torch.from_numpy(trainer.data.train.labels[rows]).to(trainer.device)
    times = []
    for _ in range(MODEL_STEPS + 2):
        _sync(trainer.device)
        began = time.perf_counter()
        with trainer.precision.autocast():
            loss = trainer.criterion(trainer.model(feats).float(), target).mean()
        trainer.precision.step(loss, trainer.optimizer)
        _sync(trainer.device)
        times.append(time.perf_counter() - began)
    return bs / float(np.median(times[2:]))


def run_phase(work: Path, setting: Setting, epochs: int) -> Result | None:
    """Train in this process (one rank of a torchrun job, or alone); rank 0's figures."""
    if setting.threads:
        torch.set_num_threads(setting.threads)
    config = replace(bench_config(work), prefetch=setting.prefetch, device=setting.device,
                     precision=setting.precision)
    env = from_env()
    from audiogate.training.device import resolve_device

    device = resolve_device(config.device, local_rank=env.local_rank,
                            local_world_size=env.local_world_size)
    with session(device) as dist:
        data = prepare_data(config, progress=False, read_only=True)  # filled by the parent
        trainer = Trainer(config, data, progress=False, dist=dist)
        trainer.train_epoch(1, StopFlag())  # warm-up: lazy imports, allocator, page cache
        dist.barrier()
        _sync(trainer.device)
        began = time.perf_counter()
        for epoch in range(2, epochs + 2):
            trainer.train_epoch(epoch, StopFlag())
        _sync(trainer.device)
        dist.barrier()
        wall = time.perf_counter() - began
        if not dist.is_main:
            return None
        out: Result = {"clips_s": len(data.train) * epochs / wall, "train_clips": len(data.train),
                       "world": dist.world_size, "threads": torch.get_num_threads()}
        if setting.device != "cpu":
            out["data_only_clips_s"] = _data_only_clips_s(trainer, epochs + 2)
            out["model_only_clips_s"] = _model_only_clips_s(trainer)
            out["device_name"] = torch.cuda.get_device_name(trainer.device)
        return out


# ----------------------------------------------------------------- the parent
def launch(work: Path, setting: Setting, epochs: int) -> Result:
    """Run one setting in fresh processes; rank 0's JSON line."""
    phase = ["-m", "bench.scale", "--phase", "--work", str(work), "--epochs", str(epochs),
             *setting.flags()]
    if setting.nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={setting.nproc}", *phase]
    else:
        cmd = [sys.executable, *phase]
    env = {**os.environ, "OMP_NUM_THREADS": str(setting.threads or os.cpu_count() or 1)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    return dict(json.loads(lines[-1]))


def report(results: dict[Setting, Result], *, seconds: float, epochs: int) -> str:
    """The results as a Markdown table, ratios against the first setting of each group."""
    any_result = next(iter(results.values()))
    lines = [f"{any_result['train_clips']} training clips (bench.dataset, 1-5 s, augmented), "
             f"batch {bench_config(Path()).batch_size}, default model; {epochs} timed "
             f"epoch(s) after a warm-up; {os.cpu_count()} cores; bench took {seconds:.0f} s.",
             "", "| setting | clips/s | vs 1 process |", "|---|---:|---:|"]
    base = {False: results.get(CPU_SETTINGS[0]), True: results.get(CPU_SETTINGS[2])}
    for setting, r in results.items():
        ref = base[setting.prefetch] if setting.device == "cpu" else results.get(GPU_SETTINGS[0])
        ratio = f"{r['clips_s'] / ref['clips_s']:.2f}x" if ref else "-"
        lines.append(f"| {setting.label} | {r['clips_s']:.1f} | {ratio} |")
    gpu = [(s, r) for s, r in results.items() if s.device != "cpu"]
    if gpu:
        lines += ["", f"GPU: {gpu[0][1]['device_name']}. What bounds an epoch (clips/s):", "",
                  "| precision | epoch | features only (GPU) | model only (GPU) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {s.precision} | {r['clips_s']:.0f} | {r['data_only_clips_s']:.0f} | "
                  f"{r['model_only_clips_s']:.0f} |" for s, r in gpu]
    else:
        lines += ["", "No CUDA GPU here: the GPU rows need `python -m bench.scale` on a "
                  "machine with one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300, help="clips in the data set")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting (best kept)")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "audiogate-bench",
                        help="folder for the data set and cache (data is reused)")
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="32", help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        setting = Setting("phase", 1, args.threads, args.prefetch, args.device, args.precision)
        result = run_phase(args.work, setting, args.epochs)
        if result is not None:
            print(json.dumps(result), flush=True)
        return
    began = time.perf_counter()
    make_dataset(root=args.work / "data", n_per_class=args.clips // 2)
    prepare_data(bench_config(args.work), progress=False)  # decode once, before any timing
    settings = CPU_SETTINGS + (GPU_SETTINGS if torch.cuda.is_available() else ())
    best: dict[Setting, Result] = {}
    for _ in range(args.repeat):
        for setting in settings:
            print(f"running {setting.label} ...", file=sys.stderr, flush=True)
            r = launch(args.work, setting, args.epochs)
            if setting not in best or r["clips_s"] > best[setting]["clips_s"]:
                best[setting] = r
    (args.work / "scale.json").write_text(json.dumps(
        {s.label: r for s, r in best.items()}, indent=1))
    print(report(best, seconds=time.perf_counter() - began, epochs=args.epochs))


if __name__ == "__main__":
    main()
