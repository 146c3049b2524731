"""Shared fixtures and helpers: seeded synthetic audio whose answer is known, a hand-built
checkpoint whose answer is known, and a real `audiogate serve` process.

:func:`build_band_gate` writes a checkpoint that calls a window ``allowed`` when its low mel
bands (< 1 kHz, where synthetic speech lives) are louder, in z-scored dB, than its high bands
(> 3 kHz, where :func:`hiss` lives), and ``not_allowed`` otherwise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import librosa
import numpy as np
import pytest
import torch
from scipy import signal

from audiogate.config import Config
from audiogate.data.audio_io import write_wav
from audiogate.models import ModelSpec, SimpleConvNet
from audiogate.models.checkpoint import save_checkpoint

from .voice_data import voice_run, voice_words  # noqa: F401  (voice gate fixtures)

SR = 16000
TINY_FLAGS = ["--fixed-length", "32", "--batch-size", "8", "--workers", "1",
              "--n-fft", "512", "--patience", "0"]
"""CLI flags that make a training run take seconds: a 0.31 s window, small batches."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def sine(freq: float, seconds: float, *, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_toy_dataset(root: Path, *, n_per_class: int = 24, seconds: float = 0.5,
                     seed: int = 0) -> Path:
    """A learnable task: ``allowed`` = tones 300-3000 Hz, ``not_allowed`` = white noise."""
    gen = np.random.default_rng(seed)
    for i in range(n_per_class):
        tone = sine(gen.uniform(300, 3000), seconds, amp=gen.uniform(0.1, 0.8))
        tone += 0.01 * gen.standard_normal(tone.size).astype(np.float32)
        write_wav(root / "allowed" / f"tone_{i:03d}.wav", tone, sr=SR)
        noise = gen.uniform(0.05, 0.4) * gen.standard_normal(int(seconds * SR))
        write_wav(root / "not_allowed" / f"noise_{i:03d}.wav", noise.astype(np.float32),
                  sr=SR)
    return root


@pytest.fixture
def toy_dataset(tmp_path: Path) -> Path:
    return make_toy_dataset(tmp_path / "dataset")


@pytest.fixture
def toy_factory(tmp_path: Path) -> Callable[..., Path]:
    def factory(name: str = "dataset", **kwargs: float) -> Path:
        return make_toy_dataset(tmp_path / name, **kwargs)  # type: ignore[arg-type]
    return factory


CLASSES = ("not_allowed", "allowed")
STARTUP_S = 90.0
"""Longest wait for a started server to answer /health."""
LOW_HZ, HIGH_HZ = 1000.0, 3000.0
OFFSET = 3.0  # lifts z-scored features (mostly > -3) through the ReLUs
SCALE = 2.0  # logit units per unit of mean z-scored band loudness
POOL = 4  # two 2x2 max-pools
HISS_CUTOFF_HZ = 4000.0


def build_band_gate(path: Path, *, fixed_length: int = 200) -> Path:
    """Write a checkpoint whose network compares low-band and high-band loudness."""
    cfg = Config(fixed_length=fixed_length, model="simple")
    feats = cfg.features()
    spec = ModelSpec.of(cfg, n_classes=len(CLASSES))
    net = spec.build()
    assert isinstance(net, SimpleConvNet)
    centres = librosa.mel_frequencies(n_mels=feats.n_mels + 2, fmin=feats.fmin,
                                      fmax=feats.mel_fmax)[1:-1]
    rows = centres.reshape(-1, POOL).mean(axis=1)
    cols = feats.fixed_length // POOL
    low, high = rows < LOW_HZ, rows > HIGH_HZ
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.conv1.weight[0, 0, 1, 1] = 1.0
        net.conv1.bias[0] = OFFSET
        net.conv2.weight[0, 0, 1, 1] = 1.0
        fc = net.fc.weight.view(len(CLASSES), -1, rows.size, cols)
        fc[1, 0, torch.from_numpy(low)] = SCALE / (low.sum() * cols)
        fc[0, 0, torch.from_numpy(high)] = SCALE / (high.sum() * cols)
        net.fc.bias[:] = -SCALE * OFFSET  # logits near 0: no large float32 sums
    save_checkpoint(path, net=net, spec=spec, config=cfg, classes=CLASSES, epoch=1,
                    metrics={"val_f1": 1.0})
    return path


def hiss(*, rng: np.random.Generator, duration: float) -> np.ndarray:
    """High-passed white noise (not_allowed for the band gate), peak 1, float32."""
    sos = signal.butter(4, HISS_CUTOFF_HZ, "highpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, rng.standard_normal(round(duration * SR)))
    return (x / np.abs(x).max()).astype(np.float32)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    tmpdir: Path
    checkpoint: Path


@contextlib.contextmanager
def running_server(checkpoint: Path, *, tmpdir: Path, extra: tuple[str, ...] = (),
                   env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start `python -m audiogate serve` with TMPDIR=tmpdir (and ``env``); wait for /health;
    stop it after."""
    port = free_port()
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), **(env or {})}
    cmd = [sys.executable, "-m", "audiogate", "-q", "serve", "--checkpoint", str(checkpoint),
           "--port", str(port), *extra]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                out = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"server exited with {process.returncode}:\n{out}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /health within {STARTUP_S} s")
            time.sleep(0.2)
        yield Server(url=url, process=process, tmpdir=tmpdir, checkpoint=checkpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
