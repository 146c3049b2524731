"""The espeak-ng spoken-word generator: deterministic, clip lengths and sample rates as
specified, silence around the word, and voices that really differ."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from bench import speech_gen as speech
from bench.speech_gen import (
    DURATION_S,
    PAD_S,
    SNR_DB,
    SPEAKERS,
    SpokenClip,
    babble_bed,
    generate_words,
    require_espeak,
    spoken_word,
)

from audiogate.errors import DataError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install -y espeak-ng)")
MFCC_SR = 8000
"""Voices are compared at 8 kHz, so the recording rate is no cue."""


def test_missing_espeak_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DataError, match="apt-get install -y espeak-ng"):
        require_espeak()
    with pytest.raises(DataError, match="apt-get install -y espeak-ng"):
        generate_words(root="unused", seed=0, takes=1)


@pytest.mark.parametrize("speech_s", [0.05, 0.3, 0.8, 1.5, 1.9])
def test_pads_keep_every_clip_within_the_duration_range(speech_s: float) -> None:
    for seed in range(50):
        lead, trail = speech._pads(np.random.default_rng(seed), speech_s)
        assert lead >= 0 and trail >= 0
        assert DURATION_S[0] - 1e-9 <= speech_s + lead + trail <= DURATION_S[1] + 1e-9


def test_trim_cuts_the_silence_around_a_tone_only() -> None:
    sr = 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr)
    y = np.concatenate([np.zeros(800), tone, 1e-4 * np.ones(1200)])  # far below -40 dB
    cut = speech.trim_silence(y=y, sr=sr)
    frame = round(speech.TRIM_FRAME_S * sr)
    assert tone.size <= cut.size <= tone.size + 2 * frame
    assert np.abs(cut[:frame]).max() > 0.1 and np.abs(cut[-frame:]).max() > 0.1


@pytest.mark.parametrize("exponent", [0.0, 1.0])
def test_noise_has_unit_rms_and_the_asked_spectral_slope(exponent: float) -> None:
    x = speech.colored_noise(rng=np.random.default_rng(0), n=1 << 16, exponent=exponent)
    assert _rms(x) == pytest.approx(1.0, rel=1e-6)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.arange(power.size)
    bands = np.logspace(1, np.log10(power.size - 1), 12).astype(int)  # average in log bands
    level = [np.log10(power[a:b].mean()) for a, b in itertools.pairwise(bands)]
    centre = [np.log10(f[a:b].mean()) for a, b in itertools.pairwise(bands)]
    assert np.polyfit(centre, level, 1)[0] == pytest.approx(-exponent, abs=0.1)


def test_the_speakers_are_many_distinct_voices_at_8_and_16_khz() -> None:
    assert len(SPEAKERS) >= 10
    assert len({s.name for s in SPEAKERS}) == len(SPEAKERS)
    assert len({(s.voice, s.speed, s.pitch) for s in SPEAKERS}) == len(SPEAKERS)
    assert {s.sr for s in SPEAKERS} == {8000, 16000}


def test_duplicate_speaker_names_are_refused(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    twins = (SPEAKERS[0], replace(SPEAKERS[1], name=SPEAKERS[0].name))
    with pytest.raises(DataError, match="unique"):
        generate_words(root=tmp_path, seed=0, takes=1, speakers=twins)


@needs_espeak
def test_generation_is_deterministic_for_a_seed_in_any_process(tmp_path: Path) -> None:
    kw = {"speakers": SPEAKERS[:3], "words": ("open", "stop"), "takes": 2}
    first = generate_words(root=tmp_path / "a", seed=7, workers=1, **kw)
    again = generate_words(root=tmp_path / "b", seed=7, workers=2, **kw)
    other = generate_words(root=tmp_path / "c", seed=8, workers=1, **kw)
    assert len(first) == 3 * 2 * 2
    for a, b, c in zip(first, again, other, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
        assert replace(a, path="") == replace(b, path="")
        assert Path(a.path).read_bytes() != Path(c.path).read_bytes()
    assert not list(tmp_path.rglob(".*"))  # no temporary file left behind


@needs_espeak
def test_files_have_the_speakers_rate_and_length_within_range(tmp_path: Path) -> None:
    clips = generate_words(root=tmp_path, seed=0, takes=1, words=("seven", "go"))
    rates = {s.name: s.sr for s in SPEAKERS}
    for c in clips:
        info = sf.info(c.path)
        assert info.samplerate == c.sr == rates[c.speaker]
        assert info.channels == 1 and info.subtype == "PCM_16"
        assert DURATION_S[0] <= info.frames / info.samplerate <= DURATION_S[1]
        assert abs(info.frames / info.samplerate - c.seconds) < 1e-9
        assert SNR_DB[0] <= c.snr_db <= SNR_DB[1]
        assert Path(c.path) == tmp_path / c.speaker / f"{c.word}_000.wav"
    assert {c.noise for c in clips} == {"white", "pink", "babble"}


def _clip(name: str, word: str, take: int, babble: dict[int, np.ndarray], *,
          noise: bool = True) -> tuple[np.ndarray, SpokenClip]:
    speaker = next(s for s in SPEAKERS if s.name == name)
    return spoken_word(word=word, speaker=speaker, seed=0, take=take,
                       babble=babble[speaker.sr], noise=noise)


@pytest.fixture(scope="module")
def beds() -> dict[int, np.ndarray]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng)")
    return {sr: babble_bed(seed=0, sr=sr) for sr in (8000, 16000)}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_the_word_is_padded_with_quieter_silence_of_varied_length(
        beds: dict[int, np.ndarray]) -> None:
    leads, trails = [], []
    for take in range(12):
        y, c = _clip(SPEAKERS[take % len(SPEAKERS)].name, "zero", take, beds)
        lead, trail = round(c.lead_s * c.sr), round(c.trail_s * c.sr)
        word = y[lead: y.size - trail]
        # SNR >= 5 dB over the word, so the padding (noise only) is at least 5 dB quieter
        assert _rms(y[:lead]) < _rms(word) * 10 ** (-4 / 20)
        assert _rms(y[y.size - trail:]) < _rms(word) * 10 ** (-4 / 20)
        leads.append(c.lead_s)
        trails.append(c.trail_s)
    assert min(leads) >= PAD_S[0] * 0.5 and max(leads) <= PAD_S[1]
    assert np.std(leads) > 0.08 and np.std(trails) > 0.08


def test_the_noise_is_at_the_stated_snr(beds: dict[int, np.ndarray]) -> None:
    kinds = set()
    for take in range(9):
        name = SPEAKERS[take].name
        noisy, c = _clip(name, "left", take, beds)
        clean, c_clean = _clip(name, "left", take, beds, noise=False)
        assert c_clean == c
        noisy, clean = noisy.astype(np.float64), clean.astype(np.float64)
        gain = noisy @ clean / (clean @ clean)  # the two differ in peak scaling only
        lead, trail = round(c.lead_s * c.sr), round(c.trail_s * c.sr)
        word = slice(lead, noisy.size - trail)
        # speech power over the word, noise power over the whole clip
        snr = 20 * np.log10(_rms(gain * clean[word]) / _rms(noisy - gain * clean))
        assert snr == pytest.approx(c.snr_db, abs=0.5)
        kinds.add(c.noise)
    assert kinds == {"white", "pink", "babble"}


def _voice_print(y: np.ndarray, c: SpokenClip) -> np.ndarray:
    """Mean MFCCs 1-19 of the word alone, at 8 kHz."""
    word = y[round(c.lead_s * c.sr): y.size - round(c.trail_s * c.sr)]
    word = librosa.resample(word, orig_sr=c.sr, target_sr=MFCC_SR)
    return librosa.feature.mfcc(y=word, sr=MFCC_SR, n_mfcc=20, n_fft=256,
                                hop_length=80)[1:].mean(axis=1)


def test_each_voice_is_closer_to_itself_than_to_the_others(
        beds: dict[int, np.ndarray]) -> None:
    """Voice identity, without the background noise: three takes of a word by every voice
    (speed and pitch jittered); each take's nearest take is by the same voice."""
    prints, who = [], []
    for s in SPEAKERS:
        for take in range(3):
            y, c = _clip(s.name, "seven", take, beds, noise=False)
            prints.append(_voice_print(y, c))
            who.append(s.name)
    x, names = np.array(prints), np.array(who)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (names[d.argmin(axis=1)] == names).all()  # leave-one-out speaker identification
    same = names[:, None] == names[None]
    assert d[same & np.isfinite(d)].mean() < 0.5 * d[~same].mean()


def test_a_high_and_a_low_voice_differ_in_pitch(beds: dict[int, np.ndarray]) -> None:
    def median_f0(name: str) -> float:
        y, c = _clip(name, "zero", 0, beds, noise=False)
        f0, _, _ = librosa.pyin(y.astype(np.float64), fmin=50, fmax=400, sr=c.sr,
                                frame_length=1024 if c.sr > 8000 else 512)
        return float(np.nanmedian(f0))

    assert median_f0("ava") > 1.8 * median_f0("dan")
