"""Long recordings: window placement, segment merging, and boundaries on generated audio."""

from __future__ import annotations

import itertools
import json
import os
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from audiogate.cli import main
from audiogate.config import Config
from audiogate.core.decision import window_starts
from audiogate.core.gate import ExportReport, Gate
from audiogate.data.synth import voice_like
from audiogate.deploy.scan import (
    merge_segments,
    scan_file,
    scan_wave,
    smooth,
    stretch_edges,
)
from audiogate.deploy.segments import format_scan
from audiogate.errors import AudioError, ConfigError
from audiogate.gates import load
from audiogate.gates.base import WindowedGate

from .conftest import CLASSES, SR, build_band_gate, hiss

LEVEL = 0.5
"""Peak level of the generated test recordings."""


def vowel(*, rng: np.random.Generator, duration: float) -> np.ndarray:
    """Sustained harmonic tone (allowed for the band gate), peak 1, float32."""
    t = np.arange(round(duration * SR)) / SR
    f0 = rng.uniform(100.0, 200.0)
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
    return (x / np.abs(x).max()).astype(np.float32)


def recording(plan: list[tuple[str, float]], *, rng: np.random.Generator,
              allowed: str = "voice") -> tuple[np.ndarray, np.ndarray]:
    """Concatenated sections; returns samples and the true inner boundaries (s)."""
    def make(kind: str, d: float) -> np.ndarray:
        if kind == "not_allowed":
            return hiss(rng=rng, duration=d)
        if allowed == "voice":
            return voice_like(rng=rng, duration=d, sr=SR)
        return vowel(rng=rng, duration=d)

    y = np.concatenate([LEVEL * make(k, d) for k, d in plan]).astype(np.float32)
    return y, np.cumsum([d for _, d in plan])[:-1]


@pytest.fixture(scope="module")
def band_gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    """1-second window (fixed_length 100) to keep the scan fast."""
    path = build_band_gate(tmp_path_factory.mktemp("gate") / "band.pt", fixed_length=100)
    return load(path)


class SignGate(WindowedGate):
    """Stub: allowed when the window's mean sample is positive (padding counts as 0)."""

    kind = backend = "stub"

    def __init__(self, *, window: int) -> None:
        cfg = Config(fixed_length=window // 160 + 1)
        super().__init__(classes=CLASSES, features=cfg.features(), epoch=0, metrics={})

    def _batch_probabilities(self, x: np.ndarray) -> np.ndarray:
        p = (x.mean(axis=1) > 0).astype(np.float32)
        return np.stack([1 - p, p], axis=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        raise NotImplementedError

    def export(self, out: str | os.PathLike[str], *, source: Path,
               tolerance: float | None = None) -> ExportReport:
        raise NotImplementedError


# ----------------------------------------------------------------- pure logic
@pytest.mark.parametrize(("n", "window", "hop", "expected"), [
    (100, 100, 30, [0]),
    (50, 100, 30, [0]),
    (160, 100, 30, [0, 30, 60]),
    (190, 100, 30, [0, 30, 60, 90]),
    (200, 100, 50, [0, 50, 100]),
])
def test_window_starts_cover_the_recording(n: int, window: int, hop: int,
                                           expected: list[int]) -> None:
    starts = window_starts(n=n, window=window, hop=hop)
    assert starts.tolist() == expected
    assert starts[-1] + window >= n


def test_window_starts_rejects_bad_hop() -> None:
    with pytest.raises(ConfigError):
        window_starts(n=10, window=5, hop=0)


def test_segments_tile_the_recording_and_merge_runs() -> None:
    starts = window_starts(n=1000, window=200, hop=100)
    edges = stretch_edges(starts=starts, window=200, n=1000)
    labels = [0, 0, 1, 1, 1, 0, 0, 0, 0][:len(starts)]
    probs = np.eye(2)[labels] * 0.8 + 0.1
    segs = merge_segments(labels=labels, probs=probs, edges=edges, sr=100, classes=CLASSES)
    assert [s.label for s in segs] == ["not_allowed", "allowed", "not_allowed"]
    assert segs[0].start == 0.0 and segs[-1].end == 10.0
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    assert [s.n_windows for s in segs] == [2, 3, len(starts) - 5]
    assert segs[1].score == pytest.approx(0.9)


@pytest.mark.parametrize("hop_s", [0.05, 0.1, 0.25])
def test_stub_boundaries_are_within_half_a_hop(hop_s: float) -> None:
    gate = SignGate(window=8000)  # 0.5 s window
    plan = [(-1.0, 1.3), (1.0, 2.05), (-1.0, 0.9), (1.0, 1.7)]
    y = np.concatenate([np.full(round(d * SR), v, np.float32) for v, d in plan])
    result = scan_wave(gate, wave=y, sr=SR, hop_s=hop_s)
    truth = np.cumsum([d for _, d in plan])[:-1]
    assert [s.label for s in result.segments] == ["not_allowed", "allowed"] * 2
    errors = np.array([s.end for s in result.segments[:-1]]) - truth
    assert np.abs(errors).max() <= hop_s / 2 + 1.0 / SR


def test_smoothing_removes_one_window_flickers() -> None:
    gate = SignGate(window=8000)
    y = np.full(3 * SR, -1.0, np.float32)
    y[SR:SR + 5000] = 1.0  # a 0.31 s blip: only windows centred on it flip
    raw = scan_wave(gate, wave=y, sr=SR, hop_s=0.1)
    assert [s.label for s in raw.segments] == ["not_allowed", "allowed", "not_allowed"]
    smoothed = scan_wave(gate, wave=y, sr=SR, hop_s=0.1, smooth_s=1.0)
    assert [s.label for s in smoothed.segments] == ["not_allowed"]
    assert [w.probabilities for w in smoothed.windows] == [w.probabilities for w in raw.windows]
    with pytest.raises(ConfigError, match="smoothing"):
        scan_wave(gate, wave=y, sr=SR, smooth_s=-1.0)


def test_smooth_keeps_constant_scores_and_averages_neighbours() -> None:
    flat = np.tile([[0.2, 0.8]], (7, 1)).astype(np.float32)
    assert np.allclose(smooth(flat, width=5), flat)
    spike = np.zeros((5, 1))
    spike[2] = 3.0
    assert smooth(spike, width=3)[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert smooth(spike, width=1) is spike


def test_recording_shorter_than_one_window(band_gate: Gate) -> None:
    y = LEVEL * voice_like(rng=np.random.default_rng(0), duration=0.6, sr=SR)
    result = scan_wave(band_gate, wave=y, sr=SR, hop_s=0.25)
    assert len(result.windows) == 1 and len(result.segments) == 1
    seg = result.segments[0]
    assert (seg.start, seg.label) == (0.0, "allowed")
    assert seg.end == pytest.approx(0.6)
    assert seg.score == pytest.approx(band_gate.predict(y, sr=SR).confidence, abs=1e-6)


def test_bad_hop_and_bad_audio_are_refused(band_gate: Gate) -> None:
    with pytest.raises(ConfigError, match="hop"):
        scan_wave(band_gate, wave=np.zeros(SR, np.float32), sr=SR, hop_s=0.0)
    with pytest.raises(AudioError, match="too short"):
        scan_wave(band_gate, wave=np.zeros(10, np.float32), sr=SR)


# ------------------------------------------------------- known boundaries, real model
PLAN = [("not_allowed", 3.0), ("allowed", 4.0), ("not_allowed", 2.5), ("allowed", 3.5)]


@pytest.mark.parametrize(("allowed", "seed", "hop_s", "tolerance_hops"), [
    ("vowel", 0, 0.25, 1.0),   # stationary sections: only the scan's own placement error
    ("vowel", 1, 0.1, 1.0),
    ("voice", 2, 0.25, 2.0),   # speech pauses shift the model's own switch point a little
    ("voice", 3, 0.25, 2.0),
])
def test_boundaries_of_generated_recording(band_gate: Gate, allowed: str, seed: int,
                                           hop_s: float, tolerance_hops: float) -> None:
    y, truth = recording(PLAN, rng=np.random.default_rng(seed), allowed=allowed)
    result = scan_wave(band_gate, wave=y, sr=SR, hop_s=hop_s)
    assert [s.label for s in result.segments] == [k for k, _ in PLAN]
    errors = np.array([s.end for s in result.segments[:-1]]) - truth
    assert np.abs(errors).max() <= tolerance_hops * hop_s, errors
    assert all(s.score > 0.5 for s in result.segments)
    assert result.segments[-1].end == pytest.approx(len(y) / SR)


def test_scan_file_resamples(band_gate: Gate, tmp_path: Path) -> None:
    y, truth = recording(PLAN, rng=np.random.default_rng(4), allowed="vowel")
    path = tmp_path / "long.wav"
    sf.write(path, librosa.resample(y, orig_sr=SR, target_sr=22050), 22050)
    result = scan_file(band_gate, path=path, hop_s=0.25)
    errors = np.array([s.end for s in result.segments[:-1]]) - truth
    assert np.abs(errors).max() <= 0.25
    assert result.duration == pytest.approx(len(y) / SR, abs=1e-3)


# ------------------------------------------------------------ streaming long files
@pytest.mark.parametrize(("native_sr", "channels", "hop_s"), [
    (44100, 2, 0.1),  # resampled as it streams, 100+ windows: several batches and blocks
    (SR, 1, 0.25),    # no resampling
    (8000, 1, 0.5),
])
def test_streamed_scan_equals_the_in_memory_scan(band_gate: Gate, tmp_path: Path,
                                                 native_sr: int, channels: int,
                                                 hop_s: float) -> None:
    """scan_file decodes, resamples and judges block by block; the result is exactly what
    scan_wave gives for the whole decoded file (issue 12, item 5)."""
    y, _ = recording(PLAN, rng=np.random.default_rng(6), allowed="vowel")
    y = librosa.resample(y, orig_sr=SR, target_sr=native_sr) if native_sr != SR else y
    path = tmp_path / "long.wav"
    sf.write(path, np.stack([y] * channels, axis=1) if channels > 1 else y, native_sr,
             subtype="FLOAT")
    streamed = scan_file(band_gate, path=path, hop_s=hop_s, smooth_s=0.5)
    wave, sr = sf.read(path, dtype="float32")
    whole = scan_wave(band_gate, wave=wave, sr=sr, hop_s=hop_s, smooth_s=0.5,
                      source=str(path))
    assert len(streamed.windows) > (64 if hop_s == 0.1 else 10)
    np.testing.assert_array_equal(streamed.starts, whole.starts)
    np.testing.assert_array_equal(streamed.probs, whole.probs)
    assert streamed.segments == whole.segments and streamed.duration == whole.duration
    assert streamed.as_dict(windows=True) == whole.as_dict(windows=True)


@pytest.mark.parametrize("seconds", [0.01, 0.6, 1.0, 1.03])
def test_streamed_scan_of_short_files(band_gate: Gate, tmp_path: Path,
                                      seconds: float) -> None:
    """Shorter than a window, exactly one window, one window and a bit: same as in memory."""
    y = (0.5 * np.sin(np.arange(round(seconds * 22050)) * 0.1)).astype(np.float32)
    sf.write(tmp_path / "a.wav", y, 22050, subtype="FLOAT")
    if seconds < 0.02:
        with pytest.raises(AudioError, match="too short"):
            scan_file(band_gate, path=tmp_path / "a.wav")
        return
    streamed = scan_file(band_gate, path=tmp_path / "a.wav", hop_s=0.25)
    whole = scan_wave(band_gate, wave=y, sr=22050, hop_s=0.25, source=str(tmp_path / "a.wav"))
    assert streamed.as_dict(windows=True) == whole.as_dict(windows=True)


def test_streamed_scan_refuses_nan_late_in_the_file(band_gate: Gate,
                                                    tmp_path: Path) -> None:
    y = np.zeros(10 * SR, np.float32)
    y[-5] = np.nan
    sf.write(tmp_path / "nan.wav", y, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        scan_file(band_gate, path=tmp_path / "nan.wav")


def test_scan_file_memory_does_not_grow_with_the_recording(tmp_path: Path) -> None:
    """Ten minutes at 16 kHz are 38 MB as float32: the streamed scan's numpy memory stays a
    small fraction of that (blocks and one batch of windows), whatever the length."""
    gate = SignGate(window=8000)
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as out:
        for k in range(60):  # written in 10 s blocks, never whole in memory
            out.write(np.full(10 * SR, 0.25 if k % 2 else -0.25, np.float32))
    tracemalloc.start()
    try:
        result = scan_file(gate, path=path, hop_s=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.duration == 600.0 and len(result.segments) == 60
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB"


# ------------------------------------------------------------------ output + CLI
def test_cli_scan_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = build_band_gate(tmp_path / "band.pt", fixed_length=100)
    y, truth = recording(PLAN, rng=np.random.default_rng(5), allowed="vowel")
    sf.write(tmp_path / "long.wav", y, SR)
    sf.write(tmp_path / "short.wav", y[:SR // 2], SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    args = ["-q", "scan", "--checkpoint", str(ckpt), "--hop", "0.25"]
    assert main([*args, "--json", "--windows", str(tmp_path / "long.wav")]) == 0
    doc = json.loads(capsys.readouterr().out)
    segs = doc[0]["segments"]
    assert [s["label"] for s in segs] == [k for k, _ in PLAN]
    assert np.abs(np.array([s["end"] for s in segs[:-1]]) - truth).max() <= 0.25
    assert len(doc[0]["windows"]) == len(window_starts(n=len(y), window=15840, hop=4000))

    assert main([*args, "--csv", str(tmp_path / "long.wav"), str(tmp_path / "short.wav"),
                 str(tmp_path / "broken.wav")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,start_s,end_s,label,score,n_windows"
    assert len(lines) == 1 + len(PLAN) + 1
    assert main([*args, str(tmp_path / "broken.wav")]) == 1


def test_format_scan_table_and_bad_format(band_gate: Gate) -> None:
    y, _ = recording(PLAN[:2], rng=np.random.default_rng(6), allowed="vowel")
    text = format_scan([scan_wave(band_gate, wave=y, sr=SR)], fmt="table")
    assert text.splitlines()[0].split() == ["file", "start_s", "end_s", "label", "score",
                                            "n_windows"]
    with pytest.raises(ConfigError):
        format_scan([], fmt="xml")
