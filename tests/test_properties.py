"""Property-based checks (hypothesis) of the front end, decoding helpers and augmentation over
random lengths, sample rates and amplitudes: outputs are finite, float32 and shaped as the
docstrings say, and no valid input raises anything but :class:`AudioError`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiogate.config import AugmentConfig, Config, FeatureConfig
from audiogate.data.audio_io import MIN_SAMPLES, NATIVE_SR_RANGE, to_mono_resampled
from audiogate.errors import AudioError
from audiogate.features.augment import (
    AddNoise,
    AugmentedFrontEnd,
    Augmenter,
    stretch_frames,
    warp_filterbank,
)
from audiogate.features.frontend import LogMel, log_mel

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
AMPLITUDES = st.sampled_from([0.0, 1e-30, 1e-12, 1e-6, 1e-3, 0.5, 1.0, 1e3, 1e12, 1e20, 1e30])
"""Silence, tiny, ordinary and huge (but finite float32) peaks."""

# A few front-end configurations (each validated by Config), built once.
FEATURES: list[FeatureConfig] = [
    Config(fixed_length=16, n_fft=512, n_mels=32).features(),
    Config(fixed_length=8, sr=8000, n_fft=256, win_length=200, hop_length=80,
           n_mels=20).features(),
    Config(fixed_length=24, sr=22050, n_mels=64, fmin=50.0, fmax=8000.0).features(),
]
FRONTENDS = [LogMel(cfg) for cfg in FEATURES]


def signal(n: int, amp: float, seed: int, *, channels: int = 0) -> np.ndarray:
    """Noise plus a tone, peak ``amp``, ``[shape=(n,)]`` or ``[shape=(n, channels)]``."""
    gen = np.random.default_rng(seed)
    shape = (n, channels) if channels else (n,)
    tone = np.sin(np.arange(n) / 7.0)
    y = gen.standard_normal(shape) + (tone[:, None] if channels else tone)
    peak = np.abs(y).max() if y.size else 1.0
    return (y / max(peak, 1e-12) * amp).astype(np.float32)


def finite_float32(x: np.ndarray | torch.Tensor) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    return x.dtype == np.float32 and bool(np.isfinite(x).all())


# ------------------------------------------------------------------ features
@SETTINGS
@given(k=st.integers(0, len(FEATURES) - 1), n=st.integers(0, 12000), amp=AMPLITUDES,
       seed=st.integers(0, 2**16))
def test_log_mel_any_length_and_amplitude(k: int, n: int, amp: float, seed: int) -> None:
    cfg = FEATURES[k]
    out = log_mel(signal(n, amp, seed), cfg=cfg)
    assert out.shape == (cfg.n_mels, cfg.fixed_length)
    assert finite_float32(out)
    assert float(np.abs(out).max(initial=0.0)) < 1e3  # z-scored
    if amp == 0.0 or n == 0:
        assert not out.any()  # silence maps to all zeros


@SETTINGS
@given(k=st.integers(0, len(FEATURES) - 1), batch=st.integers(1, 3), n=st.integers(0, 4000),
       amp=AMPLITUDES, seed=st.integers(0, 2**16))
def test_logmel_module_frames_follow_length(k: int, batch: int, n: int, amp: float,
                                            seed: int) -> None:
    cfg, frontend = FEATURES[k], FRONTENDS[k]
    wave = torch.from_numpy(np.stack([signal(n, amp, seed + i) for i in range(batch)]))
    with torch.no_grad():
        out = frontend(wave)
    assert tuple(out.shape) == (batch, cfg.n_mels, 1 + n // cfg.hop_length)
    assert finite_float32(out)


@SETTINGS
@given(amp=st.floats(1e-3, 1e30), seed=st.integers(0, 2**16))
def test_log_mel_is_scale_invariant(amp: float, seed: int) -> None:
    """The dB ``ref=max`` + z-score pipeline ignores the overall level (no overflow either)."""
    cfg = FEATURES[0]
    y = signal(cfg.n_samples, 0.5, seed)
    np.testing.assert_allclose(log_mel(y * np.float32(amp), cfg=cfg), log_mel(y, cfg=cfg),
                               atol=2e-2)


# ------------------------------------------------------------------ decoding helpers
@SETTINGS
@given(native_sr=st.integers(*NATIVE_SR_RANGE).filter(lambda r: r <= 200_000)
       | st.sampled_from([8000, 11025, 22050, 44100, 48000, 96000]),
       sr=st.sampled_from([8000, 16000, 22050]), n=st.integers(0, 6000),
       channels=st.integers(0, 4), amp=AMPLITUDES, seed=st.integers(0, 2**16))
def test_to_mono_resampled(native_sr: int, sr: int, n: int, channels: int, amp: float,
                           seed: int) -> None:
    data = signal(n, amp, seed, channels=channels)
    expected_n = (2 * n * sr + native_sr) // (2 * native_sr)  # soxr rounds half up
    try:
        y = to_mono_resampled(data, native_sr=native_sr, sr=sr)
    except AudioError as exc:
        assert expected_n < MIN_SAMPLES or "too large" in exc.reason, exc.reason
        return
    assert y.shape == (expected_n if native_sr != sr else n,)
    assert finite_float32(y)
    cfg = FEATURES[0] if sr == FEATURES[0].sr else FEATURES[1]
    if sr == cfg.sr:
        assert finite_float32(log_mel(y, cfg=cfg))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channels", [0, 2])
def test_to_mono_resampled_rejects_non_finite(bad: float, channels: int) -> None:
    data = signal(2000, 0.5, 0, channels=channels)
    data[100] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_mono_resampled(data, native_sr=16000, sr=16000)


@pytest.mark.parametrize("native_sr", [0, -16000, 1, NATIVE_SR_RANGE[1] + 1])
def test_to_mono_resampled_rejects_implausible_rates(native_sr: int) -> None:
    with pytest.raises(AudioError, match="sample rate"):
        to_mono_resampled(np.zeros(4000, np.float32), native_sr=native_sr, sr=16000)


@pytest.mark.parametrize("shape", [(), (10, 0), (2, 3, 4)])
def test_to_mono_resampled_rejects_odd_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(AudioError, match="expected"):
        to_mono_resampled(np.zeros(shape, np.float32), native_sr=16000, sr=16000)


# ------------------------------------------------------------------ augmentation
@SETTINGS
@given(batch=st.integers(1, 3), rows=st.integers(1, 40), frames_in=st.integers(1, 40),
       n_frames=st.integers(0, 40), seed=st.integers(0, 2**16), rate=st.floats(0.25, 4.0))
def test_stretch_frames_shape_and_range(batch: int, rows: int, frames_in: int, n_frames: int,
                                        seed: int, rate: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, rows, frames_in, generator=gen) * 10
    out = stretch_frames(x, rate=torch.full((batch,), rate), n_frames=n_frames)
    assert tuple(out.shape) == (batch, rows, n_frames)
    assert finite_float32(out)
    if out.numel():
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= float(x.max()) + 1e-4  # linear: no overshoot


@SETTINGS
@given(n_mels=st.integers(1, 20), n_bins=st.integers(1, 60), seed=st.integers(0, 2**16),
       semitones=st.floats(-12, 12))
def test_warp_filterbank_shape_and_range(n_mels: int, n_bins: int, seed: int,
                                         semitones: float) -> None:
    mel = torch.rand(n_mels, n_bins, generator=torch.Generator().manual_seed(seed))
    out = warp_filterbank(mel, semitones=torch.tensor([semitones, -semitones]))
    assert tuple(out.shape) == (2, n_mels, n_bins)
    assert finite_float32(out) and float(out.min()) >= 0.0
    for row, steps in zip(out, (semitones, -semitones), strict=True):
        # read at scaled positions and scaled by 2 ** (steps / 12): no overshoot beyond that
        assert float(row.max()) <= 2 ** (steps / 12) * float(mel.max()) + 1e-4


@SETTINGS
@given(n_bins=st.integers(2, 40), frames=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_warps_identity(n_bins: int, frames: int, seed: int) -> None:
    x = torch.rand(2, n_bins, frames, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(stretch_frames(x, rate=torch.ones(2), n_frames=frames), x)
    assert torch.equal(warp_filterbank(x[0], semitones=torch.zeros(1))[0], x[0])


@SETTINGS
@given(n=st.integers(1, 3000), batch=st.integers(1, 3), amp=AMPLITUDES,
       snr=st.floats(0.0, 60.0) | st.just(np.inf), seed=st.integers(0, 2**16),
       data=st.data())
def test_add_noise_apply(n: int, batch: int, amp: float, snr: float, seed: int,
                         data: st.DataObject) -> None:
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, n), min_size=batch,
                                              max_size=batch)))
    wave = torch.from_numpy(np.stack([signal(n, amp, seed + i) for i in range(batch)]))
    out = AddNoise.apply(wave, snr_db=torch.full((batch,), snr), lengths=lengths,
                         noise_seed=torch.arange(batch) + seed)
    assert out.shape == wave.shape and finite_float32(out)
    for i, length in enumerate(lengths.tolist()):
        assert torch.equal(out[i, length:], wave[i, length:])  # padding stays silent
    if np.isinf(snr) or amp == 0.0:
        assert torch.equal(out, wave)


@SETTINGS
@given(n=st.integers(0, 64), seed=st.integers(0, 2**32 - 1), p=st.floats(0.0, 1.0),
       semitones=st.floats(0.0, 12.0), lo=st.floats(0.25, 4.0), hi=st.floats(0.25, 4.0))
def test_augmenter_draw(n: int, seed: int, p: float, semitones: float, lo: float,
                        hi: float) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    cfg = AugmentConfig(noise_p=p, noise_snr_db=(5.0, 30.0), pitch_p=p,
                        pitch_semitones=semitones, stretch_p=p, stretch_rate=(lo, hi))
    augmenter = Augmenter(cfg)
    seeds = np.arange(n, dtype=np.uint64) + np.uint64(seed)
    params = augmenter.draw(seeds)
    again = augmenter.draw(seeds)
    assert set(params) == {"snr_db", "semitones", "rate", "noise_seed"}
    for key, value in params.items():
        assert value.shape == (n,)
        assert value.dtype == (torch.int64 if key == "noise_seed" else torch.float32)
        assert torch.equal(value, again[key])  # same seed, same draw
    snr = params["snr_db"]
    assert bool(((snr >= 5.0 - 1e-4) & (snr <= 30.0 + 1e-4) | torch.isinf(snr)).all())
    assert bool((params["semitones"].abs() <= semitones + 1e-4).all())
    rate = params["rate"]
    assert bool((((rate >= lo - 1e-4) & (rate <= hi + 1e-4)) | (rate == 1.0)).all())


@SETTINGS
@given(k=st.integers(0, len(FEATURES) - 1), batch=st.integers(1, 3), amp=AMPLITUDES,
       extra=st.integers(0, 2000), seed=st.integers(0, 2**16), p=st.sampled_from([0.0, 1.0]),
       semitones=st.floats(0.0, 12.0), lo=st.floats(0.25, 1.0), hi=st.floats(1.0, 4.0),
       data=st.data())
def test_augmented_front_end(k: int, batch: int, amp: float, extra: int, seed: int, p: float,
                             semitones: float, lo: float, hi: float,
                             data: st.DataObject) -> None:
    cfg = FEATURES[k]
    n = int(np.ceil(cfg.n_samples * hi)) + extra  # the documented minimum, or more
    lengths = torch.tensor(data.draw(st.lists(st.integers(0, n), min_size=batch,
                                              max_size=batch)))
    wave = torch.from_numpy(np.stack([signal(n, amp, seed + i) for i in range(batch)]))
    wave = wave * (torch.arange(n)[None, :] < lengths[:, None])
    front = AugmentedFrontEnd(FRONTENDS[k], AugmentConfig(
        noise_p=p, noise_snr_db=(10.0, 40.0), pitch_p=p, pitch_semitones=semitones, stretch_p=p,
        stretch_rate=(lo, hi)))
    seeds = np.arange(batch) + seed
    out = front(wave, lengths=lengths, seeds=seeds)
    assert tuple(out.shape) == (batch, cfg.n_mels, cfg.fixed_length)
    assert finite_float32(out)
    again = front(wave, lengths=lengths, seeds=seeds)
    assert torch.equal(out, again)  # all randomness comes from the clips' seeds
