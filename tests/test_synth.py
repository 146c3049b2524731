"""Tests for the synthetic demo data set generator (audiogate.synth)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiogate.data.synth import CONFUSER_WEIGHTS, confuser, make_demo_dataset, voice_like

N_PER_CLASS = 12
SR = 16000
CLASSES = ("allowed", "not_allowed")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    counts = make_demo_dataset(root=root, n_per_class=N_PER_CLASS, sr=SR, seed=0)
    assert counts == {"allowed": N_PER_CLASS, "not_allowed": N_PER_CLASS}
    return root


def _wavs(root: Path, name: str) -> list[Path]:
    return sorted((root / name).glob("*.wav"))


def _peak_db(path: Path) -> float:
    x, _ = sf.read(path, dtype="float64")
    return float(20.0 * np.log10(np.max(np.abs(x))))


def test_layout_and_names(demo_root: Path) -> None:
    for name in CLASSES:
        expected = [f"{name}_{i:04d}.wav" for i in range(1, N_PER_CLASS + 1)]
        assert [p.name for p in _wavs(demo_root, name)] == expected


def test_files_are_16k_mono_int16_1_to_4_s_unclipped(demo_root: Path) -> None:
    for name in CLASSES:
        for path in _wavs(demo_root, name):
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert 1.0 <= info.duration <= 4.0
            x, _ = sf.read(path, dtype="int16")
            assert x.ndim == 1
            assert 0 < np.max(np.abs(x.astype(np.int32))) < 32767


def test_peak_levels_overlap_across_classes(demo_root: Path) -> None:
    peaks = {name: [_peak_db(p) for p in _wavs(demo_root, name)] for name in CLASSES}
    for values in peaks.values():
        assert min(values) >= -31.0 and max(values) <= -2.9
    assert abs(np.mean(peaks["allowed"]) - np.mean(peaks["not_allowed"])) < 5.0
    assert max(map(min, peaks.values())) < min(map(max, peaks.values()))  # ranges intersect


def test_same_seed_identical_bytes_and_prefix_stable(demo_root: Path, tmp_path: Path) -> None:
    make_demo_dataset(root=tmp_path / "a", n_per_class=3, sr=SR, seed=0)
    make_demo_dataset(root=tmp_path / "b", n_per_class=3, sr=SR, seed=1)
    for name in CLASSES:
        for path in _wavs(tmp_path / "a", name):
            same = demo_root / name / path.name  # clip i does not depend on n_per_class
            assert path.read_bytes() == same.read_bytes()
            assert path.read_bytes() != (tmp_path / "b" / name / path.name).read_bytes()


def test_overwrites_demo_files_only(tmp_path: Path) -> None:
    make_demo_dataset(root=tmp_path, n_per_class=3, sr=SR, seed=0)
    user_file = tmp_path / "allowed" / "my_recording.wav"
    user_file.write_bytes(b"keep me")
    make_demo_dataset(root=tmp_path, n_per_class=2, sr=SR, seed=0)
    assert user_file.read_bytes() == b"keep me"
    names = sorted(p.name for p in _wavs(tmp_path, "allowed"))
    assert names == ["allowed_0001.wav", "allowed_0002.wav", "my_recording.wav"]


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"n_per_class": 0}, "n_per_class"), ({"sr": 7999}, "sr")]
)
def test_make_demo_dataset_rejects_bad_args(
    tmp_path: Path, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make_demo_dataset(root=tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written


BAD_CLIP_ARGS = [(0.0, SR, "duration"), (-1.0, SR, "duration"), (np.nan, SR, "duration"),
                 (1.0, 4000, "sr")]


@pytest.mark.parametrize("func", [voice_like, confuser])
@pytest.mark.parametrize(("duration", "sr", "match"), BAD_CLIP_ARGS)
def test_generators_reject_bad_args(
    func: Callable[..., object], duration: float, sr: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        func(rng=np.random.default_rng(0), duration=duration, sr=sr)


def test_voice_like_shape_dtype_peak() -> None:
    x = voice_like(rng=np.random.default_rng(3), duration=1.5, sr=SR, snr_db=10.0)
    assert x.dtype == np.float32 and x.shape == (round(1.5 * SR),)
    assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0


@pytest.mark.parametrize("kind", sorted(CONFUSER_WEIGHTS))
def test_confuser_kinds_finite_and_nonsilent(kind: str) -> None:
    x = confuser(rng=np.random.default_rng(1), duration=1.2, sr=SR, kind=kind, snr_db=20.0)
    assert x.dtype == np.float32 and x.shape == (round(1.2 * SR),)
    assert np.all(np.isfinite(x)) and 0.99 <= np.max(np.abs(x)) <= 1.0
    with pytest.raises(ValueError, match="unknown confuser kind"):
        confuser(rng=np.random.default_rng(1), duration=1.0, sr=SR, kind="speech")


@pytest.mark.parametrize("sr", [8000, 44100])
def test_very_short_clips_and_other_rates(sr: int) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        clips = [voice_like(rng=rng, duration=0.01, sr=sr, snr_db=0.0)]
        clips += [confuser(rng=rng, duration=0.05, sr=sr, kind=k) for k in CONFUSER_WEIGHTS]
        for x in clips:
            assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
        assert clips[0].shape == (round(0.01 * sr),)


def _median_f0(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch (Hz) over the loudest 40 ms frames, lags for 80-300 Hz."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    loud = frames[np.argsort(np.sum(frames**2, axis=1))[-20:]]
    loud = loud - loud.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(loud * np.hanning(frame), n=2 * frame, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)
    lo, hi = int(sr / 300), int(sr / 80)
    lags = lo + np.argmax(ac[:, lo:hi], axis=1)
    return float(np.median(sr / lags))


@pytest.mark.parametrize("f0_hz", [110.0, 150.0, 220.0])
def test_voice_like_known_f0(f0_hz: float) -> None:
    x = voice_like(rng=np.random.default_rng(7), duration=2.0, sr=SR, f0_hz=f0_hz).astype(float)
    assert 90.0 <= _median_f0(x, SR) <= 260.0
    assert _median_f0(x, SR) == pytest.approx(f0_hz, rel=0.15)  # intonation is +-2 semitones


def test_voice_like_random_f0_in_range() -> None:
    for seed in range(5):
        x = voice_like(rng=np.random.default_rng(seed), duration=1.5, sr=SR)
        assert 90.0 <= _median_f0(x.astype(float), SR) <= 260.0


def test_voice_like_rejects_f0_out_of_range() -> None:
    with pytest.raises(ValueError, match="f0_hz"):
        voice_like(rng=np.random.default_rng(0), duration=1.0, sr=SR, f0_hz=400.0)
