"""Augmentation: known answers (a shifted sine's mel spectrum is that of the sine at the
shifted pitch, a tone burst lasts 1/rate as long, noise sits at the requested SNR), properties
of every output, and per-clip randomness (a clip's augmentation does not depend on its batch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiogate.config import AugmentConfig, Config
from audiogate.errors import ConfigError
from audiogate.features.augment import (
    AddNoise,
    AugmentedFrontEnd,
    Augmenter,
    PitchShift,
    TimeStretch,
    stretch_frames,
    stretched_frames,
    warp_filterbank,
)
from audiogate.features.frontend import LogMel

from .conftest import SR, sine

CFG = Config(fixed_length=200).features()
HOP_S = CFG.hop_length / CFG.sr
BIN_HZ = CFG.sr / CFG.n_fft
HALF_POWER_DB = 10 * math.log10(2)
"""A burst lasts while its frame energy is within this of its peak (dB)."""
LONG_S = 4.5
"""Clip length (s) that leaves room for the slowest-reading stretch tested (rate 2)."""


def _power(wave: np.ndarray) -> torch.Tensor:
    return LogMel(CFG).power(torch.from_numpy(wave)[None])


def _burst(*, start_s: float, length_s: float, seconds: float) -> np.ndarray:
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    tone = sine(1000.0, length_s)
    y[int(start_s * SR):int(start_s * SR) + tone.size] = tone
    return y


def _no_noise(batch: int = 1) -> torch.Tensor:
    return torch.full((batch,), math.inf)


def _identity(batch: int) -> dict[str, torch.Tensor]:
    return {"snr_db": _no_noise(batch), "semitones": torch.zeros(batch),
            "rate": torch.ones(batch), "noise_seed": torch.zeros(batch, dtype=torch.int64)}


def _mel_spectrum(power: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Mean mel spectrum of the steady middle of a tone, normalised to peak 1."""
    out = (bank @ power[0])[:, 20:180].mean(dim=1)
    return out / out.max()


@pytest.mark.parametrize("semitones", [-12.0, -7.0, -2.0, -0.5, 0.0, 1.0, 2.0, 5.0, 12.0])
def test_warped_filterbank_hears_a_sine_at_the_shifted_pitch(semitones: float) -> None:
    """The shifted sine's mel spectrum is the mel spectrum of a real sine at the new pitch:
    same loudest band, and every band within 0.2 of it (the bands are 1-2 FFT bins wide at
    the bottom, which is as fine as a shifted spectrum can be read)."""
    f0 = 2000.0 if abs(semitones) < 12 else 1000.0
    mel = LogMel(CFG).mel
    shifted = _mel_spectrum(_power(sine(f0, 2.5)),
                            warp_filterbank(mel, semitones=torch.tensor([semitones]))[0])
    real = _mel_spectrum(_power(sine(f0 * 2 ** (semitones / 12), 2.5)), mel)
    assert int(shifted.argmax()) == int(real.argmax())
    torch.testing.assert_close(shifted, real, atol=0.2, rtol=0)
    if abs(semitones) >= 2:
        assert int(shifted.argmax()) != int(_mel_spectrum(_power(sine(f0, 2.5)),
                                                           mel).argmax())


@pytest.mark.parametrize("semitones", [-3.0, 2.0, 7.0])
def test_warped_filterbank_is_the_mel_of_the_resampled_spectrum(semitones: float) -> None:
    """Folding the shift into the filterbank gives the mel bands of the spectrum re-sampled at
    ``f / 2 ** (semitones / 12)`` (the way it was done before), for broadband noise."""
    power = _power(np.random.default_rng(0).standard_normal(40000).astype(np.float32))[0]
    n_bins = power.shape[0]
    src = torch.arange(n_bins) / 2 ** (semitones / 12)  # output bin k reads input bin src[k]
    lo = src.floor().long()
    frac = (src - lo)[:, None]
    padded = torch.cat([power, torch.zeros(1, power.shape[1])])
    resampled = torch.lerp(padded[lo.clamp(max=n_bins)], padded[(lo + 1).clamp(max=n_bins)],
                           frac)
    mel = LogMel(CFG).mel
    before = mel @ resampled
    after = warp_filterbank(mel, semitones=torch.tensor([semitones]))[0] @ power
    heard = before > 0  # a downward shift leaves the top bands empty, either way
    assert bool((after[~heard] == 0).all())
    rel = (after[heard] - before[heard]).abs() / before[heard]
    assert float(rel.median()) < 0.02
    assert float(rel.max()) < 0.5  # the narrowest low bands, 1-2 bins wide


@pytest.mark.parametrize("semitones", [-2.0, 3.0, 12.0])
def test_pitch_shift_through_the_front_end_matches_a_real_higher_tone(semitones: float) -> None:
    front = AugmentedFrontEnd(LogMel(CFG), Config(pitch_p=0.5).augmentation())
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    wave = torch.from_numpy(sine(440.0, n / SR))[None]
    params = {**_identity(1), "semitones": torch.tensor([semitones])}
    shifted = front.apply(wave, lengths=torch.tensor([n]), params=params)
    real = LogMel(CFG)(torch.from_numpy(sine(440.0 * 2 ** (semitones / 12), n / SR))[None])
    band = int(shifted[0].mean(dim=1).argmax())
    assert abs(band - int(real[0, :, :CFG.fixed_length].mean(dim=1).argmax())) <= 1


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.0, 1.25, 2.0])
def test_time_stretch_changes_a_bursts_duration_by_one_over_rate(rate: float) -> None:
    length_s = 0.6
    mel = LogMel(CFG).mel @ _power(_burst(start_s=0.2, length_s=length_s, seconds=LONG_S))
    out = stretch_frames(mel, rate=torch.tensor([rate]), n_frames=CFG.fixed_length)
    energy_db = 10 * torch.log10(out[0].sum(dim=0) + 1e-20)
    loud = int((energy_db > energy_db.max() - HALF_POWER_DB).sum())
    assert loud * HOP_S == pytest.approx(length_s / rate, abs=2 * HOP_S)


@pytest.mark.parametrize("rate", [0.7, 1.6])
def test_time_stretch_commutes_with_the_mel_projection(rate: float) -> None:
    """Why it may run on the mel rows: stretching then projecting = projecting then
    stretching (and a steady tone keeps its pitch)."""
    power = _power(sine(2000.0, LONG_S))
    mel = LogMel(CFG).mel
    r = torch.tensor([rate])
    first = mel @ stretch_frames(power, rate=r, n_frames=CFG.fixed_length)
    then = stretch_frames(mel @ power, rate=r, n_frames=CFG.fixed_length)
    torch.testing.assert_close(first, then, rtol=1e-4, atol=1e-6 * float(then.max()))
    steady = then[0, :, 20:180].mean(dim=1)
    assert int(steady.argmax()) == int((mel @ power)[0, :, 20:180].mean(dim=1).argmax())


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_sits_at_the_requested_snr_inside_the_clip_only(snr_db: float) -> None:
    y = sine(500.0, 3.0)
    n_real = y.size - SR  # the last second is padding
    wave = torch.from_numpy(y.copy())[None]
    wave[0, n_real:] = 0.0
    out = AddNoise.apply(wave, snr_db=torch.tensor([snr_db]), lengths=torch.tensor([n_real]),
                         noise_seed=torch.tensor([0]))
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
    front = AugmentedFrontEnd(frontend, Config(pitch_p=0.5).augmentation())
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    real = min(n, round(seconds * SR))
    wave = torch.zeros(3, n)
    wave[:, :real] = torch.from_numpy(0.3 * rng.standard_normal((3, real)).astype(np.float32))
    out = front.apply(wave, lengths=torch.full((3,), real), params=_identity(3))
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
    cfg = Config(noise_p=1.0, pitch_p=1.0, stretch_p=1.0).augmentation()
    front = AugmentedFrontEnd(LogMel(CFG), cfg)
    wave, lengths = _batch(rng, size)
    out = front(wave, lengths=lengths, seeds=np.arange(size) + 100 * seed)
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
    every = Config(noise_p=1.0, pitch_p=1.0, stretch_p=1.0).augmentation()
    front = AugmentedFrontEnd(LogMel(CFG), every)
    wave, lengths = _batch(np.random.default_rng(0), 4)
    seeds = np.array([7, 8, 9, 10])
    a = front(wave, lengths=lengths, seeds=seeds)
    b = front(wave, lengths=lengths, seeds=seeds)
    c = front(wave, lengths=lengths, seeds=seeds + 4)
    assert torch.equal(a, b)
    for i in range(1, 4):  # clip 0 is silent whatever its seed
        assert not torch.equal(a[i], c[i])


def test_an_empty_batch_gives_empty_features() -> None:
    front = AugmentedFrontEnd(LogMel(CFG), Config(pitch_p=0.5).augmentation())
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    out = front(torch.zeros(0, n), lengths=torch.zeros(0, dtype=torch.int64),
                seeds=np.zeros(0, np.uint64))
    assert out.shape == (0, CFG.n_mels, CFG.fixed_length)


def test_a_clips_augmentation_does_not_depend_on_its_batch() -> None:
    """Each clip draws from its own seed: a batch of 4 gives, clip for clip, what two batches
    of 2 (the shards of two training processes) give."""
    every = Config(noise_p=1.0, pitch_p=1.0, stretch_p=1.0).augmentation()
    front = AugmentedFrontEnd(LogMel(CFG), every)
    wave, lengths = _batch(np.random.default_rng(3), 4)
    seeds = np.array([11, 12, 13, 14])
    whole = front(wave, lengths=lengths, seeds=seeds)
    halves = torch.cat([front(wave[:2], lengths=lengths[:2], seeds=seeds[:2]),
                        front(wave[2:], lengths=lengths[2:], seeds=seeds[2:])])
    torch.testing.assert_close(whole, halves, atol=1e-5, rtol=0)
    draws = front.augmenter.draw(seeds)
    assert torch.equal(draws["rate"][2:], front.augmenter.draw(seeds[2:])["rate"])


def test_draws_respect_probability_and_ranges() -> None:
    aug = Augmenter(AugmentConfig(noise_p=1.0, noise_snr_db=(5.0, 6.0), pitch_p=1.0,
                                  pitch_semitones=3.0, stretch_p=1.0, stretch_rate=(0.9, 1.1)))
    params = aug.draw(np.arange(500))
    assert ((params["snr_db"] >= 5.0) & (params["snr_db"] <= 6.0)).all()
    assert (params["semitones"].abs() <= 3.0).all() and params["semitones"].std() > 1.0
    assert ((params["rate"] >= 0.9) & (params["rate"] <= 1.1)).all()
    assert aug.max_rate == pytest.approx(1.1)
    off = Augmenter(Config(noise_p=0.0, pitch_p=0.0, stretch_p=0.0).augmentation())
    params = off.draw(np.arange(50))
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


@pytest.mark.parametrize("rate", [0.8, 1.0, 1.25])
def test_a_stretched_short_clips_padding_sits_at_its_floor(rate: float) -> None:
    """A 0.6 s tone over a quiet noise floor, stretched: the frames past the stretched clip's
    own sit at the lowest level of those frames, not at the level of the frame that straddles
    the clip's end (most of whose bins are at -top_db)."""
    rng = np.random.default_rng(5)
    clip = sine(440.0, 0.6) + 1e-4 * rng.standard_normal(int(0.6 * SR)).astype(np.float32)
    n = math.ceil(CFG.n_samples * 1.25) + CFG.hop_length
    wave = torch.zeros(1, n)
    wave[0, :clip.size] = torch.from_numpy(clip)
    params = {**_identity(1), "rate": torch.tensor([rate])}
    out = AugmentedFrontEnd(LogMel(CFG), Config(pitch_p=0.5).augmentation()).apply(
        wave, lengths=torch.tensor([clip.size]), params=params)[0]
    own = int(stretched_frames(torch.tensor([1 + clip.size // CFG.hop_length]),
                               rate=torch.tensor([rate]), n_frames=CFG.fixed_length)[0])
    assert abs(own - (1 + (clip.size // CFG.hop_length) / rate)) <= 1
    floor = out[:, :own].amin()
    torch.testing.assert_close(out[:, own:], floor.expand(CFG.n_mels, CFG.fixed_length - own))

