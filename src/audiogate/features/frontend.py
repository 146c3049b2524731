"""Log-mel front end: pure computation on arrays, no file I/O.

The specification's preprocessing, done once for training, evaluation, prediction and export:

1. fit the waveform to ``FeatureConfig.n_samples`` (truncate, or pad with silence), which gives
   exactly ``fixed_length`` centred STFT frames;
2. power spectrogram -> mel filterbank;
3. normalisation #1: ``librosa.power_to_db(S, ref=np.max, top_db=top_db)``;
4. with ``pad = "floor"``, the frames past the clip's end (:func:`clip_frames`) and silent
   frames take the clip's lowest level over its own frames (:func:`fill_silence`), as padding
   the clip's own spectrogram with its minimum does;
5. normalisation #2: per-sample z-score, finite even for an all-silent clip.

The torch implementation works on batches and matches librosa within 5e-4 (z-scored units;
float32 against librosa's float64)
(``tests/test_features.py`` checks it against ``librosa.feature.melspectrogram``).
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import torch
from torch import nn

from ..config import FeatureConfig
from ..errors import ConfigError

AMIN = 1e-10
"""Power floor before the logarithm (librosa's ``amin``)."""
Z_EPS = 1e-5
"""Added to the standard deviation (dB) in the z-score so silent clips map to all zeros."""
STFT_CHUNK_BYTES = 4 * 2**20
"""Largest STFT intermediate (framed samples, complex spectrum) :meth:`LogMel.mel_power` makes
at once. In one piece, a training batch of 32 2.5-second windows needs blocks of 33 MB, which
glibc's malloc gives back to the OS on every free and page-faults in again (about 15,000
faults per batch); in pieces of this size the blocks are reused and stay near the cache. The
augmented features of such a batch took 34-38 ms instead of 55-61 (one thread, measured with
a script, not a bench/ command; 16 MiB: 50 ms, 1 MiB: 41-43 ms)."""


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Slaney-normalised mel filterbank, ``[shape=(n_mels, n_fft // 2 + 1)]``, float32.

    Raises :class:`~audiogate.errors.ConfigError` if a band covers no FFT bin: it would be a
    constant, dead input (``n_mels`` too large for ``n_fft`` at ``sr``).
    """
    with warnings.catch_warnings():  # librosa warns of empty bands; the error below is clearer
        warnings.simplefilter("ignore", UserWarning)
        bank = librosa.filters.mel(sr=cfg.sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                   fmin=cfg.fmin, fmax=cfg.mel_fmax)
    empty = int((bank.max(axis=1) <= 0).sum())
    if empty:
        raise ConfigError(f"config field 'n_mels' = {cfg.n_mels} is too large for n_fft = "
                          f"{cfg.n_fft} at sr = {cfg.sr}: {empty} mel band(s) would be empty; "
                          "lower n_mels or raise n_fft")
    return bank.astype(np.float32)


def fit_length(y: np.ndarray, *, n_samples: int) -> np.ndarray:
    """Truncate or zero-pad the last axis of ``y`` to ``n_samples`` samples."""
    n = y.shape[-1]
    if n >= n_samples:
        return y[..., :n_samples]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - n)]
    return np.pad(y, pad)


def power_to_db(power: torch.Tensor, *, top_db: float) -> torch.Tensor:
    """``librosa.power_to_db(ref=np.max)`` per sample over all but the batch axis.

    ``power``: ``[shape=(batch, ...)]``, non-negative. Returns dB in ``[-top_db, 0]``.
    """
    db = torch.log10(power.clamp_min(AMIN)).mul_(10.0)
    dims = tuple(range(1, db.ndim))
    return db.sub_(db.amax(dim=dims, keepdim=True)).clamp_min_(-top_db)


def clip_frames(wave: torch.Tensor, *, hop_length: int) -> torch.Tensor:
    """Frames of each clip's own samples: ``1 + L // hop_length`` for a clip whose last
    non-zero sample is ``L - 1``, the frames librosa computes for the clip before any padding
    (centred STFT: frame ``t`` is centred on sample ``t * hop_length <= L``).

    ``wave`` ``[shape=(batch, n)]`` -> int64 ``[shape=(batch,)]`` (1 for an all-zero or empty
    clip). The zeros that pad a clip to the window are past ``L``; the frame straddling the
    clip's end (centred past ``L``, its window still reaching into the clip) is not one of the
    clip's.
    """
    n = wave.shape[-1]
    if n == 0:
        return torch.ones(wave.shape[:-1], dtype=torch.long, device=wave.device)
    position = torch.arange(1, n + 1, device=wave.device, dtype=torch.float32)  # exact < 2**24
    length = torch.where(wave != 0, position, torch.zeros_like(position)).amax(dim=-1)
    return 1 + torch.div(length, hop_length, rounding_mode="floor").long()


def fill_silence(db: torch.Tensor, *, power: torch.Tensor,
                 frames: torch.Tensor | None = None) -> torch.Tensor:
    """Give each clip's padding and silent frames its lowest level over its other frames.

    ``db``: ``[shape=(batch, n_mels, n_frames)]`` from :func:`power_to_db`; ``power``: the mel
    power it came from; ``frames``: the clip's own frames ``[shape=(batch,)]`` (from
    :func:`clip_frames`; None: all of them). Frames from ``frames`` on are padding; a frame is
    silent when its total power is below ``AMIN`` (digital silence). Zero padding puts such
    frames at ``-top_db``, far below a recorded clip's noise floor, and their share of the
    window then dominates the z-score (short clips are mostly padding); at the floor they carry
    nothing. The frame that straddles the clip's end counts as padding: its few samples leave
    most bins at ``-top_db``, and taking its level as the floor would undo the filling. A clip
    with no other frame is returned as it is.
    """
    silent = power.sum(dim=1, keepdim=True) < AMIN                   # (batch, 1, n_frames)
    if frames is not None:
        index = torch.arange(db.shape[-1], device=db.device)
        silent = silent | (index[None, None, :] >= frames.to(db.device)[:, None, None])
    floor = db.masked_fill(silent, float("inf")).amin(dim=(1, 2), keepdim=True)
    return torch.where(silent & torch.isfinite(floor), floor, db)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per sample (population std), ``Z_EPS`` keeps silence finite."""
    std, mean = torch.std_mean(x, dim=tuple(range(1, x.ndim)), keepdim=True, correction=0)
    return (x - mean) / (std + Z_EPS)


def limit_peak(wave: torch.Tensor) -> torch.Tensor:
    """Scale each clip ``[shape=(..., n)]`` that peaks above 1 down to peak 1; others unchanged.

    Keeps huge (finite) samples from overflowing float32 powers; the normalised features are
    scale-invariant, so they do not change.
    """
    if wave.shape[-1] == 0:
        return wave
    return wave / wave.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)


class LogMel(nn.Module):
    """Waveform batch -> normalised log-mel batch.

    ``forward(wave)``: ``wave`` ``[shape=(batch, n_samples)]`` float32 at ``cfg.sr`` ->
    ``[shape=(batch, n_mels, 1 + n_samples // hop_length)]``; with ``n_samples =
    cfg.n_samples`` that is ``fixed_length`` frames.
    """

    window: torch.Tensor
    mel: torch.Tensor

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """Power spectrogram ``[shape=(batch, n_fft // 2 + 1, frames)]`` (librosa centring).

        Clips that peak above 1 are scaled to peak 1 first, so huge (finite) samples cannot
        overflow float32; :meth:`from_mel` is scale-invariant, so the features are the same.
        """
        spec = torch.stft(
            limit_peak(wave), n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length, window=self.window, center=True,
            pad_mode="constant", return_complex=True,
        )
        # the STFT is stored frame by frame: its (real, imag) pairs in memory order, squared
        # in place and summed into a new frame-major tensor, several times faster than
        # .real.square() + .imag.square() on the strided complex output
        parts = torch.view_as_real(spec.transpose(-1, -2)).square_()
        return (parts[..., 0] + parts[..., 1]).transpose(-1, -2)

    def mel_power(self, wave: torch.Tensor, *, banks: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """Mel power ``[shape=(batch, n_mels, frames)]`` of ``wave`` ``[shape=(batch, n)]``:
        the power spectrogram projected on the mel filterbank, or on per-clip ``banks``
        ``[shape=(batch, n_mels, n_fft // 2 + 1)]``. Computed a few clips at a time, so that no
        intermediate exceeds ``STFT_CHUNK_BYTES``."""
        frames = 1 + wave.shape[-1] // self.cfg.hop_length
        rows = max(1, STFT_CHUNK_BYTES // (4 * frames * (self.cfg.n_fft + 2)))
        parts = []
        for i in range(0, wave.shape[0], rows):
            power = self.power(wave[i:i + rows])
            parts.append(torch.matmul(self.mel, power) if banks is None
                         else torch.bmm(banks[i:i + rows], power))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def from_mel(self, mel: torch.Tensor, *, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Mel power ``[shape=(batch, n_mels, n_frames)]`` -> dB with ``ref=max`` -> padding
        (frames from ``frames`` on, see :func:`fill_silence`) and silent frames at the clip's
        floor (``pad = "floor"``) -> z-score."""
        db = power_to_db(mel, top_db=self.cfg.top_db)
        if self.cfg.pad == "floor":
            db = fill_silence(db, power=mel, frames=frames)
        return zscore(db)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = clip_frames(wave, hop_length=self.cfg.hop_length)
        return self.from_mel(self.mel_power(wave), frames=frames)

    def decibels(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel in dB re each clip's maximum, in ``[-top_db, 0]``, before the z-score (for
        display): ``[shape=(batch, n_mels, frames)]``."""
        return power_to_db(self.mel_power(wave), top_db=self.cfg.top_db)


def log_mel(y: np.ndarray, *, cfg: FeatureConfig) -> np.ndarray:
    """One clip ``[shape=(n,)]`` -> normalised log-mel ``[shape=(n_mels, fixed_length)]``."""
    wave = torch.from_numpy(fit_length(np.asarray(y, dtype=np.float32), n_samples=cfg.n_samples))
    with torch.no_grad():
        return LogMel(cfg)(wave[None])[0].numpy()
