"""Front end: matches librosa, fixed shapes, dB range, finite on silence."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from audiogate.config import Config
from audiogate.features.frontend import LogMel, fit_length, log_mel, power_to_db

from .conftest import sine

FEAT = Config().features()


def librosa_reference(y: np.ndarray) -> np.ndarray:
    """The specification's make_mel + z-score, done with librosa."""
    y = fit_length(y, n_samples=FEAT.n_samples)
    s = librosa.feature.melspectrogram(y=y, sr=FEAT.sr, n_fft=FEAT.n_fft,
                                       hop_length=FEAT.hop_length, win_length=FEAT.win_length,
                                       n_mels=FEAT.n_mels, fmin=FEAT.fmin, fmax=FEAT.mel_fmax)
    db = librosa.power_to_db(s, ref=np.max, top_db=FEAT.top_db)
    return (db - db.mean()) / (db.std() + 1e-5)


@pytest.mark.parametrize("seconds", [0.3, 1.99, 5.0])
def test_matches_librosa(rng: np.random.Generator, seconds: float) -> None:
    y = sine(440, seconds) + 0.05 * rng.standard_normal(int(seconds * FEAT.sr)).astype("f4")
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
