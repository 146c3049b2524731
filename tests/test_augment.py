"""Augmentation: known answers (a sine moves by the requested semitones, a tone burst lasts
1/rate as long, noise sits at the requested SNR) and properties of every output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiogate.config import AugmentConfig, FeatureConfig
from audiogate.errors import ConfigError
from audiogate.features.augment import (
    AddNoise,
    AugmentedFrontEnd,
    Augmenter,
    PitchShift,
    TimeStretch,
    warp_magnitude,
)
from audiogate.features.frontend import LogMel

from .conftest import SR, sine

CFG = FeatureConfig()
HOP_S = CFG.hop_length / CFG.sr
BIN_HZ = CFG.sr / CFG.n_fft
HALF_POWER_DB = 10 * math.log10(2)
"""A burst lasts while its frame energy is within this of its peak (dB)."""
LONG_S = 4.5
"""Clip length (s) that leaves room for the slowest-reading stretch tested (rate 2)."""


def _magnitude(wave: np.ndarray) -> torch.Tensor:
    return LogMel(CFG).power(torch.from_numpy(wave)[None]).sqrt()


def _peak_hz(power: torch.Tensor) -> float:
    """Power-weighted centre of the strongest bin +-2 of a spectrum ``(n_bins,)``."""
    spectrum = power.numpy().astype(np.float64)
    k = int(np.argmax(spectrum))
    bins = np.arange(max(k - 2, 0), min(k + 3, spectrum.size))
    return float((bins * spectrum[bins]).sum() / spectrum[bins].sum() * BIN_HZ)


def _burst(*, start_s: float, length_s: float, seconds: float) -> np.ndarray:
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    tone = sine(1000.0, length_s)
    y[int(start_s * SR):int(start_s * SR) + tone.size] = tone
    return y


def _no_noise(batch: int = 1) -> torch.Tensor:
    return torch.full((batch,), math.inf)


@pytest.mark.parametrize("semitones", [-12.0, -7.0, -2.0, -0.5, 0.0, 1.0, 2.0, 5.0, 12.0])
def test_pitch_shift_moves_a_sine_by_the_requested_semitones(semitones: float) -> None:
    f0 = 2000.0
    mag = _magnitude(sine(f0, 2.5))
    out = warp_magnitude(mag, semitones=torch.tensor([semitones]), rate=torch.tensor([1.0]),
                         n_frames=CFG.fixed_length)
    centre = out[0, :, 20:180].square().mean(dim=1)
    moved = 12.0 * math.log2(_peak_hz(centre) / f0)
    assert moved == pytest.approx(semitones, abs=0.05)


@pytest.mark.parametrize("semitones", [-2.0, 3.0, 12.0])
def test_pitch_shift_through_the_front_end_matches_a_real_higher_tone(semitones: float) -> None:
    front = AugmentedFrontEnd(LogMel(CFG), AugmentConfig())
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    wave = torch.from_numpy(sine(440.0, n / SR))[None]
    params = {"snr_db": _no_noise(), "semitones": torch.tensor([semitones]),
              "rate": torch.tensor([1.0])}
    shifted = front.apply(wave, lengths=torch.tensor([n]), params=params,
                          generator=torch.Generator().manual_seed(0))
    real = LogMel(CFG)(torch.from_numpy(sine(440.0 * 2 ** (semitones / 12), n / SR))[None])
    band = int(shifted[0].mean(dim=1).argmax())
    assert abs(band - int(real[0, :, :CFG.fixed_length].mean(dim=1).argmax())) <= 1


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.0, 1.25, 2.0])
def test_time_stretch_changes_a_bursts_duration_by_one_over_rate(rate: float) -> None:
    length_s = 0.6
    mag = _magnitude(_burst(start_s=0.2, length_s=length_s, seconds=LONG_S))
    out = warp_magnitude(mag, semitones=torch.tensor([0.0]), rate=torch.tensor([rate]),
                         n_frames=CFG.fixed_length)
    energy_db = 10 * torch.log10(out[0].square().sum(dim=0) + 1e-20)
    loud = int((energy_db > energy_db.max() - HALF_POWER_DB).sum())
    assert loud * HOP_S == pytest.approx(length_s / rate, abs=2 * HOP_S)


def test_time_stretch_keeps_the_pitch() -> None:
    mag = _magnitude(sine(2000.0, LONG_S))
    out = warp_magnitude(mag, semitones=torch.tensor([0.0]), rate=torch.tensor([1.6]),
                         n_frames=CFG.fixed_length)
    assert _peak_hz(out[0, :, 20:180].square().mean(dim=1)) == pytest.approx(2000.0, rel=2e-3)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_sits_at_the_requested_snr_inside_the_clip_only(snr_db: float) -> None:
    y = sine(500.0, 3.0)
    n_real = y.size - SR  # the last second is padding
    wave = torch.from_numpy(y.copy())[None]
    wave[0, n_real:] = 0.0
    out = AddNoise.apply(wave, snr_db=torch.tensor([snr_db]), lengths=torch.tensor([n_real]),
                         generator=torch.Generator().manual_seed(0))
    noise = (out - wave)[0]
    measured = 10 * math.log10(float(wave[0, :n_real].square().mean())
                               / float(noise[:n_real].square().mean()))
    assert measured == pytest.approx(snr_db, abs=0.2)
    assert torch.equal(out[0, n_real:], torch.zeros(y.size - n_real))


@pytest.mark.parametrize("seconds", [0.2, 1.0, 5.0])
def test_identity_parameters_give_the_clean_features(rng: np.random.Generator,
                                                      seconds: float) -> None:
    """No noise, no shift, rate 1: exactly the evaluation window's features, for clips
    shorter than the window, and longer than the stored samples."""
    frontend = LogMel(CFG)
    front = AugmentedFrontEnd(frontend, AugmentConfig())
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    real = min(n, round(seconds * SR))
    wave = torch.zeros(3, n)
    wave[:, :real] = torch.from_numpy(0.3 * rng.standard_normal((3, real)).astype(np.float32))
    params = {"snr_db": _no_noise(3), "semitones": torch.zeros(3), "rate": torch.ones(3)}
    out = front.apply(wave, lengths=torch.full((3,), real), params=params,
                      generator=torch.Generator())
    clean = frontend(wave[:, :CFG.n_samples])
    torch.testing.assert_close(out, clean, atol=1e-4, rtol=0)


def _batch(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    wave = (rng.uniform(0.01, 1.0, (size, 1)) * rng.standard_normal((size, n))).astype(
        np.float32)
    lengths = rng.integers(CFG.hop_length * 4, n + 1, size)
    wave[np.arange(n)[None, :] >= lengths[:, None]] = 0.0
    wave[0] = 0.0  # a silent clip
    if size > 1:
        wave[1] *= 1e6  # a very loud one
    return torch.from_numpy(wave), torch.from_numpy(lengths)


@pytest.mark.parametrize(("seed", "size"), [(0, 1), (1, 5), (2, 9)])
def test_augmented_features_are_finite_normalised_float32(seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = AugmentConfig(noise_p=1.0, pitch_p=1.0, stretch_p=1.0)
    front = AugmentedFrontEnd(LogMel(CFG), cfg)
    wave, lengths = _batch(rng, size)
    out = front(wave, lengths=lengths, rng=rng)
    assert out.shape == (size, CFG.n_mels, CFG.fixed_length)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # silence stays silent
    if size > 1:
        loud = out[1:]
        torch.testing.assert_close(loud.mean(dim=(1, 2)), torch.zeros(size - 1), atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(loud.std(dim=(1, 2), correction=0), torch.ones(size - 1),
                                   atol=1e-3, rtol=0)


def test_same_seed_same_features_other_seed_other_features() -> None:
    front = AugmentedFrontEnd(LogMel(CFG), AugmentConfig(noise_p=1.0, pitch_p=1.0,
                                                         stretch_p=1.0))
    wave, lengths = _batch(np.random.default_rng(0), 4)
    a = front(wave, lengths=lengths, rng=np.random.default_rng(7))
    b = front(wave, lengths=lengths, rng=np.random.default_rng(7))
    c = front(wave, lengths=lengths, rng=np.random.default_rng(8))
    assert torch.equal(a, b)
    assert not torch.equal(a[1:], c[1:])


def test_draws_respect_probability_and_ranges() -> None:
    aug = Augmenter(AugmentConfig(noise_p=1.0, noise_snr_db=(5.0, 6.0), pitch_p=1.0,
                                  pitch_semitones=3.0, stretch_p=1.0, stretch_rate=(0.9, 1.1)))
    params = aug.draw(np.random.default_rng(0), 500)
    assert ((params["snr_db"] >= 5.0) & (params["snr_db"] <= 6.0)).all()
    assert (params["semitones"].abs() <= 3.0).all() and params["semitones"].std() > 1.0
    assert ((params["rate"] >= 0.9) & (params["rate"] <= 1.1)).all()
    assert aug.max_rate == pytest.approx(1.1)
    off = Augmenter(AugmentConfig(noise_p=0.0, pitch_p=0.0, stretch_p=0.0))
    params = off.draw(np.random.default_rng(0), 50)
    assert torch.isinf(params["snr_db"]).all()
    assert (params["semitones"] == 0).all() and (params["rate"] == 1).all()
    assert off.max_rate == 1.0


def test_half_probability_fires_about_half_the_time() -> None:
    fired = PitchShift(p=0.5).draw(np.random.default_rng(0), 4000) != 0
    assert 0.45 < fired.mean() < 0.55


@pytest.mark.parametrize("make", [
    lambda: AddNoise(p=1.5), lambda: AddNoise(p=-0.1), lambda: AddNoise(snr_db=(40.0, 10.0)),
    lambda: PitchShift(semitones=-1.0), lambda: PitchShift(p=2.0),
    lambda: TimeStretch(rate=(0.0, 1.0)), lambda: TimeStretch(rate=(1.2, 1.0)),
])
def test_bad_parameters_are_rejected(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
