"""Shared fixtures: seeded synthetic audio whose answer is known."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from audiogate.audio_io import write_wav

SR = 16000
TINY_FLAGS = ["--fixed-length", "32", "--batch-size", "8", "--workers", "1",
              "--n-fft", "512", "--patience", "0"]
"""CLI flags that make a training run take seconds: a 0.31 s window, small batches."""


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
