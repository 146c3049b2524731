"""On a CUDA GPU: training in float32 and with AMP, features on the GPU, checkpoints that load
on the CPU, a GPU run resumed on the CPU, and 2-process NCCL training (with 2 GPUs).

Every test is marked ``cuda`` and skipped on a machine without a GPU (see ``conftest.py``)::

    python -m pytest -q -m cuda tests/test_cuda.py
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiogate.cli import main
from audiogate.config import Config
from audiogate.features.augment import AugmentedFrontEnd
from audiogate.features.frontend import LogMel
from audiogate.gates import load
from audiogate.models import ModelSpec
from audiogate.models.checkpoint import load_checkpoint
from audiogate.models.dropout import ClipDropout, clip_seeds

from .conftest import TINY_FLAGS, make_toy_dataset

pytestmark = pytest.mark.cuda


def _train(data: Path, runs: Path, name: str, *extra: str) -> Path:
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
                 *TINY_FLAGS, "--max-epochs", "3", *extra]) == 0
    return runs / name


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("cuda") / "dataset", n_per_class=32)


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_training_on_the_gpu_learns_and_saves_cpu_checkpoints(toy: Path, tmp_path: Path,
                                                               precision: str) -> None:
    run = _train(toy, tmp_path, precision, "--device", "cuda", "--precision", precision)
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["macro_f1"] >= 0.9
    last = load_checkpoint(run / "models/last.pt")
    assert all(t.device.type == "cpu" for t in last.weights.values())
    assert last.train_state is not None
    state = last.train_state["optimizer"]["state"]
    assert all(v.device.type == "cpu" for s in state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    assert bool(last.train_state["grad_scaler"]) == (precision == "16-mixed")
    gate = load(run / "models/best.pt")  # the CPU classifier
    files = sorted(str(p) for p in toy.rglob("*.wav"))[::9]
    assert all(p.ok for p in gate.predict_many(files))


def test_a_gpu_run_resumes_on_the_cpu(toy: Path, tmp_path: Path) -> None:
    run = _train(toy, tmp_path, "gpu", "--device", "cuda", "--precision", "bf16-mixed",
                 "--max-epochs", "1")
    assert main(["-q", "train", "--resume", str(run), "--max-epochs", "2", "--device", "cpu",
                 "--precision", "32"]) == 0
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]


def test_gpu_features_match_cpu_features() -> None:
    """Augmentation without noise is deterministic: the GPU computes the CPU's features."""
    cfg = Config(fixed_length=64).features()
    aug_cfg = Config(noise_p=0.0, pitch_p=1.0, stretch_p=1.0).augmentation()
    n = math.ceil(cfg.n_samples * 1.25) + cfg.hop_length
    wave = torch.from_numpy(
        (0.3 * np.random.default_rng(0).standard_normal((6, n))).astype(np.float32))
    lengths, seeds = torch.full((6,), n), np.arange(6)
    cpu = AugmentedFrontEnd(LogMel(cfg), aug_cfg)(wave, lengths=lengths, seeds=seeds)
    gpu = AugmentedFrontEnd(LogMel(cfg).cuda(), aug_cfg)(wave.cuda(), lengths=lengths,
                                                         seeds=seeds)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)


def test_clip_dropout_on_the_gpu_follows_the_clip() -> None:
    drop = ClipDropout(0.5).train()
    x = torch.ones(4, 8, device="cuda")
    seeds = np.arange(4)
    with clip_seeds(seeds):
        whole = drop(x)
    with clip_seeds(seeds[2:]):
        half = drop(x[2:])
    assert whole.device.type == "cuda" and torch.equal(whole[2:], half)


def test_model_runs_under_autocast_on_the_gpu() -> None:
    net = ModelSpec.of(Config(), n_classes=2).build().cuda()
    x = torch.randn(8, 64, 200, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert net(x).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 GPUs")
def test_two_gpus_with_nccl_equal_one_gpu(toy: Path, tmp_path: Path) -> None:
    flags = [*TINY_FLAGS, "--batch-size", "32", "--max-epochs", "2", "--device", "cuda"]
    cmd = [sys.executable, "-m", "audiogate", "-q", "train", "--nproc", "2", "--data", str(toy),
           "--runs-dir", str(tmp_path), "--name", "two", *flags]
    subprocess.run(cmd, check=True, timeout=600)
    one = _train(toy, tmp_path, "one", *flags[len(TINY_FLAGS):])
    a = json.loads((tmp_path / "two/metrics.json").read_text())["epochs"]
    b = json.loads((one / "metrics.json").read_text())["epochs"]
    for x, y in zip(a, b, strict=True):
        x.pop("seconds"), y.pop("seconds")
        assert x == pytest.approx(y, rel=1e-3, abs=1e-5)
