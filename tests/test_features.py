"""Front end: matches librosa, fixed shapes, dB range, finite on silence."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from audiogate.config import Config
from audiogate.features.frontend import LogMel, fit_length, log_mel, power_to_db

from .conftest import sine

FEAT = Config(fixed_length=200).features()


def librosa_reference(y: np.ndarray) -> np.ndarray:
    """The specification's make_mel + z-score, done with librosa as ``bench/reference.py``
    does: the clip's own spectrogram (cut to the window), dB re its max, padded to
    ``fixed_length`` frames with its minimum (``pad = "floor"``)."""
    s = librosa.feature.melspectrogram(y=y[:FEAT.n_samples], sr=FEAT.sr, n_fft=FEAT.n_fft,
                                       hop_length=FEAT.hop_length, win_length=FEAT.win_length,
                                       n_mels=FEAT.n_mels, fmin=FEAT.fmin, fmax=FEAT.mel_fmax)
    db = librosa.power_to_db(s, ref=np.max, top_db=FEAT.top_db)
    db = librosa.util.fix_length(db, size=FEAT.fixed_length, axis=1,
                                 constant_values=float(db.min()))
    return (db - db.mean()) / (db.std() + 1e-5)


@pytest.mark.parametrize(("seconds", "noise"), [(0.3, 0.05), (0.3, 0.5), (0.3, 1e-3),
                                               (0.7813, 1e-4), (1.99, 0.05), (5.0, 0.05)])
def test_matches_librosa(rng: np.random.Generator, seconds: float, noise: float) -> None:
    """Short clips with a quiet noise floor included: the frame that straddles the clip's end
    leaves most of its bins at -top_db, and must not set the padding's level."""
    y = sine(440, seconds) + noise * rng.standard_normal(int(seconds * FEAT.sr)).astype("f4")
    ours = log_mel(y, cfg=FEAT)
    assert ours.shape == (FEAT.n_mels, FEAT.fixed_length)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, librosa_reference(y), atol=5e-4)  # float32 vs float64


def test_db_range_and_zscore(rng: np.random.Generator) -> None:
    mel = torch.from_numpy(rng.random((3, 8, 10)).astype("f4") ** 8)
    db = power_to_db(mel, top_db=80.0)
    assert float(db.amax()) == 0.0 and float(db.amin()) >= -80.0
    z = LogMel(FEAT)(torch.from_numpy(rng.standard_normal((2, FEAT.n_samples)).astype("f4")))
    assert z.shape == (2, FEAT.n_mels, FEAT.fixed_length)
    np.testing.assert_allclose(z.mean(dim=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(dim=(1, 2), correction=0), 1.0, atol=1e-3)


def test_silence_is_finite_zero() -> None:
    out = log_mel(np.zeros(FEAT.sr, np.float32), cfg=FEAT)
    assert np.isfinite(out).all() and np.abs(out).max() == 0.0


def test_batch_equals_single(rng: np.random.Generator) -> None:
    waves = rng.standard_normal((4, FEAT.n_samples)).astype("f4") * [[0.01], [0.1], [1], [10]]
    batch = LogMel(FEAT)(torch.from_numpy(waves.astype("f4"))).numpy()
    for i, w in enumerate(waves):
        np.testing.assert_allclose(batch[i], log_mel(w, cfg=FEAT), atol=1e-5)


def test_fit_length_pads_and_truncates() -> None:
    assert fit_length(np.ones(5, "f4"), n_samples=8).tolist() == [1] * 5 + [0] * 3
    assert fit_length(np.ones((2, 10), "f4"), n_samples=4).shape == (2, 4)


def test_sine_lands_in_the_right_mel_band() -> None:
    y = sine(1000, 1.0)
    mel = log_mel(y, cfg=FEAT)
    freqs = librosa.mel_frequencies(n_mels=FEAT.n_mels + 2, fmax=FEAT.mel_fmax)[1:-1]
    band = int(mel[:, :50].mean(axis=1).argmax())
    assert abs(freqs[band] - 1000) < 100


@pytest.mark.parametrize("pad", ["floor", "silence"])
def test_padding_of_a_short_clip(rng: np.random.Generator, pad: str) -> None:
    """A 0.4 s noisy clip in a 2 s window: with pad="floor" the frames past the clip's own sit
    at the clip's lowest level, so they carry nothing; with pad="silence" they sit at -top_db,
    below anything in the clip."""
    cfg = Config(pad=pad, fixed_length=200).features()
    y = sine(440, 0.4) + 0.3 * rng.standard_normal(int(0.4 * cfg.sr)).astype("f4")
    frontend = LogMel(cfg)
    wave = torch.from_numpy(fit_length(y, n_samples=cfg.n_samples))[None]
    mel = torch.matmul(frontend.mel, frontend.power(wave))
    db = power_to_db(mel, top_db=cfg.top_db)[0]
    padded = torch.arange(cfg.fixed_length) >= 1 + y.size // cfg.hop_length  # librosa's frames
    assert 100 < int(padded.sum()) < cfg.fixed_length
    clip_floor = float(db[:, ~padded].amin())
    assert clip_floor > -cfg.top_db + 10  # the noise keeps the clip above -top_db
    z = frontend(wave)[0]
    # the z-score is affine per clip: undo it on the clip's own frames to read the padding
    # (read on the frames whose window holds no sample of the clip)
    zeros = torch.arange(cfg.fixed_length) * cfg.hop_length >= y.size + cfg.win_length // 2
    scale = db[:, ~padded].std() / z[:, ~padded].std()
    level = float(((z[:, zeros] - z[:, ~padded].mean()) * scale + db[:, ~padded].mean()).mean())
    expected = clip_floor if pad == "floor" else -cfg.top_db
    assert level == pytest.approx(expected, abs=0.05)


def test_an_old_checkpoint_keeps_silence_padding(tmp_path: Path) -> None:
    """Checkpoints written before ``pad`` existed were trained on silence-padded features."""
    from audiogate.models.checkpoint import load_checkpoint

    from .conftest import build_band_gate

    path = build_band_gate(tmp_path / "band.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["pad"] == "floor"
    del payload["config"]["pad"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").features.pad == "silence"
    assert load_checkpoint(path).features.pad == "floor"


def test_mel_power_in_chunks_equals_one_piece(rng: np.random.Generator) -> None:
    """A batch bigger than one STFT chunk, with the shared and with per-clip filterbanks."""
    from audiogate.features import frontend as frontend_mod
    from audiogate.features.augment import warp_filterbank

    front = LogMel(FEAT)
    wave = torch.from_numpy(0.3 * rng.standard_normal((11, FEAT.n_samples)).astype("f4"))
    frames = 1 + FEAT.n_samples // FEAT.hop_length
    assert frontend_mod.STFT_CHUNK_BYTES // (4 * frames * (FEAT.n_fft + 2)) < 11
    power = front.power(wave)
    banks = warp_filterbank(front.mel, semitones=torch.linspace(-2.0, 2.0, 11))
    torch.testing.assert_close(front.mel_power(wave), torch.matmul(front.mel, power),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(front.mel_power(wave, banks=banks), torch.bmm(banks, power),
                               rtol=1e-5, atol=0)
