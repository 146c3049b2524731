"""Spoken words from espeak-ng for the voice tests (tests using them skip without it)."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from audiogate.data.audio_io import to_mono_resampled

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install -y "
                                         "espeak-ng)")


def espeak(text: str, *, voice: str = "en+m3", pitch: int = 50, speed: int = 160,
           sr: int = 16000) -> np.ndarray:
    """``text`` spoken by an espeak-ng voice, float32 at ``sr`` Hz, exactly as espeak wrote it
    (it ends with a few hundred ms of silence)."""
    out = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed),
                          "--stdout", text], capture_output=True, check=True).stdout
    y, native_sr = sf.read(io.BytesIO(out), dtype="float32")
    return to_mono_resampled(y, native_sr=native_sr, sr=sr)


def speech_extent(y: np.ndarray, *, sr: int, floor_db: float = -35.0) -> tuple[float, float]:
    """First and last second where the 20 ms RMS envelope is within ``floor_db`` of its peak:
    where the speech of a clean synthetic clip really is."""
    width = int(0.02 * sr)
    env = np.sqrt(np.convolve(np.square(y, dtype=np.float64), np.ones(width) / width, "same"))
    loud = np.flatnonzero(env > env.max() * 10 ** (floor_db / 20))
    return loud[0] / sr, loud[-1] / sr
