"""Data-parallel training through torchrun on the CPU (gloo), end to end on toy data.

* ``audiogate train --nproc 2`` completes; only rank 0 writes (every file open and rename
  of every process is recorded by an audit hook) and rank 1 reads no audio;
* 2 processes x 16 clips give the per-epoch metrics of 1 process x 32 clips (same seed,
  class-weighted loss, an uneven last batch), to float reduction order;
* SIGTERM to the launcher stops both processes at a batch boundary with the finished epochs
  saved, and the run resumes in one process to the results of an uninterrupted run (with a
  last batch of one clip, of which the second process gets nothing);
* a checkpoint trained so predicts, exports to ONNX and serves like any other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from audiogate.cli import main
from audiogate.gates import load
from audiogate.gates.network.onnx import export_onnx
from audiogate.models.checkpoint import load_checkpoint

from .conftest import TINY_FLAGS, make_toy_dataset, running_server

pytestmark = pytest.mark.slow

FLAGS = [*TINY_FLAGS, "--batch-size", "32", "--balance", "weighted", "--seed", "3",
         "--model", "simple"]  # no batch norm: per-process statistics on the CPU
"""32 / 27 clips per class, weighted loss: 41 training clips, batches of 32 and 9 (shards
16 + 16, then 5 + 4)."""
EPOCHS = 2
RUN_TIMEOUT_S = 300
ONE_LEFT = [*FLAGS, "--batch-size", "40"]
"""Batches of 40 and 1: the second process's share of the last batch is empty."""

AUDIT = '''
import os
import sys

_LOG = os.environ["AUDIOGATE_TEST_LOG"]
_WATCH = os.environ["AUDIOGATE_TEST_WATCH"]
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record(kind, path):
    line = "%s\\t%d\\t%s\\t%s\\n" % (os.environ.get("RANK", "launcher"), os.getpid(), kind, path)
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.startswith(_WATCH) and path != _LOG:
            _record("write" if (args[2] or 0) & _WRITE else "read", path)
    elif event == "os.rename":
        path = os.fsdecode(args[1])
        if path.startswith(_WATCH):
            _record("rename", path)


sys.addaudithook(_hook)
'''


@dataclass(frozen=True)
class Record:
    rank: str
    pid: int
    kind: str
    path: str


def _toy(root: Path) -> Path:
    data = make_toy_dataset(root / "dataset", n_per_class=32)
    for i in range(27, 32):
        (data / "not_allowed" / f"noise_{i:03d}.wav").unlink()
    return data


def _env(root: Path) -> dict[str, str]:
    """Environment of a launched run: the audit hook on, watching ``root``."""
    hook = root / "audit"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(AUDIT)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "AUDIOGATE_TEST_LOG": str(root / "audit.log"),
            "AUDIOGATE_TEST_WATCH": str(root), "OMP_NUM_THREADS": "1"}


def _records(root: Path) -> list[Record]:
    lines = (root / "audit.log").read_text().splitlines()
    return [Record(r, int(p), k, path) for r, p, k, path in (x.split("\t") for x in lines)]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "audiogate", "train", "--nproc", "2", *args]


def _metrics(run: Path) -> list[dict[str, float]]:
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def _same_metrics(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, list[Record]]:
    """A 2-process run (no --name: a timestamped folder) -> (data, run, stdout, records)."""
    root = tmp_path_factory.mktemp("ddp")
    data = _toy(root)
    done = subprocess.run(_cmd("--data", str(data), "--runs-dir", str(root / "runs"),
                               "--max-epochs", str(EPOCHS), *FLAGS),
                          env=_env(root), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs  # one run folder: made by rank 0 only
    return data, runs[0], done.stdout, _records(root)


def test_two_processes_train_and_only_rank_0_writes(
        ddp: tuple[Path, Path, str, list[Record]]) -> None:
    data, run, out, records = ddp
    assert out.count("run folder:") == 1 and f"after {EPOCHS} epoch(s)" in out
    for name in ("config.toml", "split.csv", "metrics.json", "test_metrics.json",
                 "models/best.pt", "models/last.pt", "models/model_epoch_001.pt",
                 "models/model_epoch_002.pt", "outputs/curves.png"):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp"))
    ranks = {r.rank for r in records}
    assert {"0", "1"} <= ranks  # both processes ran with the hook
    writes = [r for r in records if r.kind in ("write", "rename")]
    assert writes and {r.rank for r in writes} == {"0"}  # the cache and the run folder
    renamed = [Path(r.path).relative_to(run).as_posix() for r in writes
               if r.kind == "rename" and Path(r.path).is_relative_to(run)]
    assert renamed.count("metrics.json") == EPOCHS  # once per epoch, by one process
    assert renamed.count("models/model_epoch_001.pt") == 1
    assert renamed.count("test_metrics.json") == 1
    audio_reads = {r.rank for r in records if r.path.startswith(str(data))}
    assert audio_reads == {"0"}  # rank 1 decoded nothing: it read rank 0's cache
    cache_reads = {r.rank for r in records if "/.cache/" in r.path and r.kind == "read"}
    assert "1" in cache_reads


def test_two_processes_of_16_equal_one_process_of_32(
        ddp: tuple[Path, Path, str, list[Record]], tmp_path: Path) -> None:
    data, run, _, _ = ddp
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(tmp_path), "--name",
                 "one", "--max-epochs", str(EPOCHS), *FLAGS]) == 0
    assert (tmp_path / "one/split.csv").read_text() == (run / "split.csv").read_text()
    _same_metrics(_metrics(run), _metrics(tmp_path / "one"))
    assert _metrics(run)[0]["train_loss"] != _metrics(run)[1]["train_loss"]


def test_a_ddp_checkpoint_predicts_exports_and_serves(
        ddp: tuple[Path, Path, str, list[Record]], tmp_path: Path) -> None:
    data, run, _, _ = ddp
    best = load_checkpoint(run / "models/best.pt")
    assert not any(k.startswith("module.") for k in best.weights)  # the plain network
    assert all(t.device.type == "cpu" for t in best.weights.values())
    files = sorted(str(p) for p in data.rglob("*.wav"))[::7]
    gate = load(run / "models/best.pt")
    torch_labels = [p.label for p in gate.predict_many(files)]
    assert all(label in ("allowed", "not_allowed") for label in torch_labels)
    report = export_onnx(checkpoint=run / "models/best.pt", out=tmp_path / "best.onnx")
    assert report.max_abs_diff < 1e-4
    assert [p.label for p in load(tmp_path / "best.onnx").predict_many(files)] == torch_labels
    with running_server(run / "models/best.pt", tmpdir=tmp_path / "srv") as server:
        with open(files[0], "rb") as fh:
            r = httpx.post(f"{server.url}/predict", files={"file": ("a.wav", fh, "audio/wav")},
                           timeout=60)
        assert r.status_code == 200
        assert r.json()["label"] == torch_labels[0]


def _wait_for_epoch(run: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (run / "metrics.json").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.1)


@pytest.fixture
def stopped(tmp_path: Path) -> Iterator[tuple[Path, Path, str, str, int]]:
    """A 2-process run stopped by SIGTERM to the launcher after its first epoch."""
    data = _toy(tmp_path)
    run = tmp_path / "runs" / "forever"
    proc = subprocess.Popen(_cmd("--data", str(data), "--runs-dir", str(tmp_path / "runs"),
                                 "--name", "forever", "--max-epochs", "0", *ONE_LEFT),
                            env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_epoch(run, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    yield data, run, out, err, proc.returncode


def test_sigterm_stops_every_rank_cleanly_and_one_process_resumes(
        stopped: tuple[Path, Path, str, str, int], tmp_path: Path) -> None:
    data, run, out, err, code = stopped
    assert code == 128 + signal.SIGTERM, err[-4000:]
    assert "Traceback" not in err
    assert "interrupted (SIGTERM)" in out
    assert err.count("SIGTERM: stopping at the next safe point") == 1  # rank 0 logs; both stop
    metrics = _metrics(run)
    done = len(metrics)
    last = load_checkpoint(run / "models/last.pt")
    assert last.epoch == metrics[-1]["epoch"] == done >= 1
    assert json.loads((run / "test_metrics.json").read_text())["epoch"] == json.loads(
        (run / "metrics.json").read_text())["best_epoch"]
    assert not list(run.rglob("*.tmp"))
    # one process, not two, takes it from there
    assert main(["-q", "train", "--resume", str(run), "--max-epochs", str(done + 1)]) == 0
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(tmp_path / "straight"),
                 "--name", "s", "--max-epochs", str(done + 1), *ONE_LEFT]) == 0
    _same_metrics(_metrics(run), _metrics(tmp_path / "straight" / "s"))
    np.testing.assert_equal(len(_metrics(run)), done + 1)


@pytest.mark.parametrize(("device", "sync", "synced"), [
    ("cuda", True, True), ("cuda", False, False), ("cpu", True, False)])
def test_batch_norm_is_synchronised_on_cuda_only_when_asked(device: str, sync: bool,
                                                             synced: bool) -> None:
    """The conversion runs without a GPU: only the module types change, so checkpoints keep
    their keys. On CPU processes each keeps its own batch statistics (the equality of 2 x 16
    and 1 x 32 above holds for a network without batch norm)."""
    from torch import nn

    from audiogate.config import Config
    from audiogate.models import ModelSpec
    from audiogate.training.distributed import ddp_ready

    net = ModelSpec.of(Config(model="tcresnet"), n_classes=2).build()
    keys = list(net.state_dict())
    ready = ddp_ready(net, torch.device(device), sync_batchnorm=sync)
    kinds = {type(m) for m in ready.modules()}
    assert (nn.SyncBatchNorm in kinds) == synced
    assert any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert list(ready.state_dict()) == keys
