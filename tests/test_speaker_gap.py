"""``python -m bench.speaker_gap``: the classical speaker scores it compares, and a tiny run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bench import speaker_gap as gap

from audiogate.data.discover import Clip
from audiogate.data.split import Split

SR = gap.SR


def voiced(f0: float, *, rng: np.random.Generator, seconds: float = 0.6) -> np.ndarray:
    """A vowel-like tone: 20 harmonics of ``f0`` (Hz) under a 1/k envelope, faded in and out,
    between short silences, with a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    wobble = f0 * rng.uniform(0.98, 1.02)
    y = sum(np.sin(2 * np.pi * k * wobble * t + rng.uniform(0, 2 * np.pi)) / k
            for k in range(1, 21) if k * wobble < SR / 2)
    y = np.asarray(y) * np.hanning(len(t))
    y = np.concatenate([np.zeros(SR // 10), y, np.zeros(SR // 10)])
    return (0.3 * y / np.abs(y).max() + 0.003 * rng.standard_normal(len(y))).astype(np.float32)


def test_pitch_of_a_harmonic_tone_is_its_fundamental() -> None:
    rng = np.random.default_rng(0)
    for f0 in (110.0, 220.0, 330.0):
        features = gap.pitch_spectrum(voiced(f0, rng=rng))
        assert features.shape == (43,)
        assert np.exp(features[0]) == pytest.approx(f0, rel=0.03)
        assert np.exp(features[1]) <= np.exp(features[0]) <= np.exp(features[2])


def test_loud_frames_leave_out_the_silence() -> None:
    y = voiced(200.0, rng=np.random.default_rng(1))
    frames = gap.mfcc_frames(y)
    total = 1 + len(y) // gap.HOP
    assert frames.shape[1] == 38
    assert 0.4 * total < len(frames) < 0.9 * total  # the 0.2 s of silence is not speech


def _split(root: Path, *, allowed_f0: float, other_f0: float) -> Split:
    """Allowed (label 1) = tones at ``allowed_f0``, not_allowed (0) = tones at ``other_f0``."""
    rng = np.random.default_rng(2)
    subsets: dict[str, list[Clip]] = {}
    for subset, n in (("train", 8), ("val", 4), ("test", 4)):
        clips = []
        for label, f0 in ((1, allowed_f0), (0, other_f0)):
            for i in range(n):
                path = root / subset / f"{label}_{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voiced(f0 * rng.uniform(0.97, 1.03), rng=rng), SR)
                clips.append(Clip(path=str(path), label=label))
        subsets[subset] = clips
    return Split(**subsets)


@pytest.mark.parametrize("method", ["gmm", "pitch+spectrum"])
def test_classical_scores_tell_two_pitches_apart(tmp_path: Path, method: str) -> None:
    split = _split(tmp_path, allowed_f0=220.0, other_f0=120.0)
    scorer, decision = {"gmm": (gap.gmm_scorer(gap.Features(gap.mfcc_frames), components=2), 0.0),
                        "pitch+spectrum": (gap.logistic_scorer(gap.Features(gap.pitch_spectrum)),
                                           0.5)}[method]
    out = gap.classical(scorer, split, allowed=1, decision=decision)
    assert out["f1"] == 1.0 and out["f1_argmax"] == 1.0 and out["eer"] == 0.0
    # allowed is whichever class index says so: swapping it turns the scores round
    swapped = gap.classical(scorer, split, allowed=0, decision=decision)
    assert swapped["f1"] == 1.0 and swapped["eer"] == 0.0


def test_table_judges_the_target_against_the_same_kind_of_split() -> None:
    def r(f1: float) -> dict[str, float]:
        return {"f1": f1, "eer": 0.1, "far": 0.1, "frr": 0.1}
    per_split = [{"strong, unheard": r(0.7), "reference, unheard": r(0.4),
                  "strong, heard": r(0.95), "reference, heard": r(0.8)},
                 {"strong, unheard": r(0.6), "reference, unheard": r(0.4),
                  "strong, heard": r(0.93), "reference, heard": r(0.8)}]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line
            for line in gap.table(per_split)[2:]}
    assert rows["strong", "unheard"].endswith("| not met |")   # 0.35 > 0.6 / 2
    assert "| 0.650 | 0.70 0.60 |" in rows["strong", "unheard"]
    assert rows["strong", "heard"].endswith("| met |")         # 0.06 <= 0.2 / 2
    assert rows["reference", "heard"].endswith("| - |")


def test_no_split_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gap.main(["--splits", "0"])
    assert "--splits must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng not installed (apt-get install -y espeak-ng)")
def test_tiny_run_prints_every_method_and_voice(tmp_path: Path) -> None:
    lines = gap.main(["--tiny", "--splits", "1", "--work", str(tmp_path)])
    rows = [line for line in lines if line.startswith("| ") and "|---" not in line]
    methods = {tuple(c.strip() for c in row.split("|")[1:3]) for row in rows[1:7]}
    assert methods == {("strong", "unheard"), ("reference", "unheard"), ("gmm", "unheard"),
                       ("pitch+spectrum", "unheard"), ("strong", "heard"),
                       ("reference", "heard")}
    voices = [row.split("|")[1].strip() for row in rows[8:]]
    assert len(voices) == 8 and {"ava (allowed)", "ben (allowed)"} <= set(voices)
    assert (tmp_path / "runs" / "seed-0" / "heard" / "strong" / "split.csv").exists()
