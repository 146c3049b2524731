"""The benchmark's data set: a few hundred 1-5 s clips of two classes, at mixed sample rates.

Real folders mix sample rates, so clips are written at 16, 22.05, 44.1 and 48 kHz in turn
(resampling is part of the work). Clip ``i`` of a class depends only on ``(seed, class, i)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from audiogate.data.synth import confuser, voice_like

DURATION_S = (1.0, 5.0)
"""Clip length range (seconds), uniform."""
SAMPLE_RATES = (16000, 22050, 44100, 48000)
"""Written in turn, clip by clip."""
PEAK = 0.5
"""Peak amplitude of every clip."""


def make_dataset(*, root: Path, n_per_class: int, seed: int = 0) -> list[tuple[str, int]]:
    """Write ``root/allowed/*.wav`` (label 1) and ``root/not_allowed/*.wav`` (label 0).

    Files already there with the right name are kept (the data set is deterministic).
    Returns ``(path, label)`` for every clip.
    """
    pairs = []
    makers = {"not_allowed": (0, confuser), "allowed": (1, voice_like)}
    for (name, (label, make)), seq in zip(makers.items(),
                                          np.random.SeedSequence(seed).spawn(2), strict=True):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, clip_seq in enumerate(seq.spawn(n_per_class)):
            path = folder / f"{name}_{i:05d}.wav"
            pairs.append((str(path), label))
            if path.exists():
                continue
            rng = np.random.default_rng(clip_seq)
            sr = SAMPLE_RATES[i % len(SAMPLE_RATES)]
            y = make(rng=rng, duration=rng.uniform(*DURATION_S), sr=sr,
                     snr_db=rng.uniform(10.0, 30.0))
            tmp = folder / f".{path.name}.tmp"  # hidden: never listed as audio
            sf.write(tmp, PEAK * y, sr, subtype="PCM_16", format="WAV")
            tmp.rename(path)
    return pairs
