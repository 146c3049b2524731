"""Training-only augmentation: additive noise, pitch shift and time stretch, batched in torch.

Each transform is a small object: ``draw`` takes an explicit ``numpy.random.Generator`` and
returns per-clip parameters (the identity where the transform does not fire, with probability
``1 - p``); ``apply`` is deterministic given those parameters.

Pitch shift and time stretch act on the STFT magnitude, which is all the log-mel front end
keeps. Stretching time by ``rate`` re-samples frames at ``t * rate`` (the magnitude path of
librosa's phase vocoder, without the phase that the mel front end discards); shifting pitch by
``n`` semitones re-samples frequency bins at ``f / 2 ** (n / 12)``, which moves every partial
(a sine at 440 Hz shifted by +12 lands at 880 Hz). Both are one ``grid_sample`` per batch
instead of a phase vocoder and a resampler per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..errors import ConfigError
from .frontend import LogMel, limit_peak


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentation probability p must be in [0, 1], got {p}")


@dataclass(frozen=True)
class AddNoise:
    """White Gaussian noise at an SNR (dB) drawn uniformly from ``snr_db``."""

    p: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)

    def __post_init__(self) -> None:
        _check_p(self.p)
        if self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"AddNoise snr_db must be (low, high), got {self.snr_db}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """SNR in dB per clip ``[shape=(n,)]``; ``inf`` means no noise."""
        snr = rng.uniform(self.snr_db[0], self.snr_db[1], size=n)
        return np.where(rng.random(n) < self.p, snr, np.inf)

    @staticmethod
    def apply(wave: torch.Tensor, *, snr_db: torch.Tensor, lengths: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
        """Add noise within each clip's real samples, at ``snr_db`` below the clip's RMS.

        ``wave`` ``[shape=(batch, n)]``, ``snr_db`` and ``lengths`` (samples) ``[shape=(batch,)]``.
        """
        inside = torch.arange(wave.shape[1])[None, :] < lengths[:, None]
        count = lengths.clamp_min(1).to(wave.dtype)
        real = wave * inside
        peak = real.abs().amax(dim=1).clamp_min(torch.finfo(wave.dtype).tiny)
        rms = peak * torch.sqrt((real / peak[:, None]).square().sum(dim=1) / count)  # no overflow
        scale = rms * torch.pow(10.0, -snr_db.to(wave.dtype) / 20.0)
        noise = torch.randn(wave.shape, generator=generator, dtype=wave.dtype)
        return wave + noise * (scale[:, None] * inside)


@dataclass(frozen=True)
class PitchShift:
    """Shift by a number of semitones drawn uniformly from ``[-semitones, semitones]``."""

    p: float = 0.5
    semitones: float = 2.0

    def __post_init__(self) -> None:
        _check_p(self.p)
        if self.semitones < 0:
            raise ConfigError(f"PitchShift semitones must be >= 0, got {self.semitones}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Semitones per clip ``[shape=(n,)]``; 0 means unchanged."""
        steps = rng.uniform(-self.semitones, self.semitones, size=n)
        return np.where(rng.random(n) < self.p, steps, 0.0)


@dataclass(frozen=True)
class TimeStretch:
    """Speed up (``rate > 1``) or slow down, rate drawn log-uniformly from ``rate``."""

    p: float = 0.5
    rate: tuple[float, float] = (0.8, 1.25)

    def __post_init__(self) -> None:
        _check_p(self.p)
        if not 0 < self.rate[0] <= self.rate[1]:
            raise ConfigError(f"TimeStretch rate must be (low, high) > 0, got {self.rate}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rate per clip ``[shape=(n,)]``; 1 means unchanged."""
        rate = np.exp(rng.uniform(np.log(self.rate[0]), np.log(self.rate[1]), size=n))
        return np.where(rng.random(n) < self.p, rate, 1.0)


def warp_magnitude(mag: torch.Tensor, *, semitones: torch.Tensor, rate: torch.Tensor,
                   n_frames: int) -> torch.Tensor:
    """Pitch-shift and time-stretch magnitude spectrograms, per clip, in one pass.

    ``mag`` ``[shape=(batch, n_bins, frames_in)]``; ``semitones``, ``rate`` ``[shape=(batch,)]``.
    Output frame ``t`` and bin ``k`` read the input at frame ``t * rate`` and bin
    ``k / 2 ** (semitones / 12)`` (bilinear; zero beyond the edges). Returns
    ``[shape=(batch, n_bins, n_frames)]``.
    """
    _, n_bins, frames_in = mag.shape
    t = torch.arange(n_frames, dtype=mag.dtype)[None, :] * rate[:, None].to(mag.dtype)
    k = torch.arange(n_bins, dtype=mag.dtype)[None, :] / torch.pow(
        2.0, semitones[:, None].to(mag.dtype) / 12.0)
    x = 2.0 * t / max(frames_in - 1, 1) - 1.0           # (batch, n_frames)
    y = 2.0 * k / max(n_bins - 1, 1) - 1.0              # (batch, n_bins)
    grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)
    out = F.grid_sample(mag[:, None], grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out[:, 0]


class Augmenter:
    """Draws and applies the three transforms for one training batch."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.noise = AddNoise(p=cfg.noise_p, snr_db=cfg.noise_snr_db)
        self.pitch = PitchShift(p=cfg.pitch_p, semitones=cfg.pitch_semitones)
        self.stretch = TimeStretch(p=cfg.stretch_p, rate=cfg.stretch_rate)

    @property
    def max_rate(self) -> float:
        """Largest stretch rate: training clips must be stored this much longer."""
        return self.stretch.rate[1] if self.stretch.p > 0 else 1.0

    def draw(self, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
        """Parameters for ``n`` clips: ``snr_db``, ``semitones``, ``rate``, each ``(n,)``."""
        return {
            "snr_db": torch.from_numpy(self.noise.draw(rng, n)).float(),
            "semitones": torch.from_numpy(self.pitch.draw(rng, n)).float(),
            "rate": torch.from_numpy(self.stretch.draw(rng, n)).float(),
        }


class AugmentedFrontEnd:
    """Waveform batch -> augmented, normalised log-mel batch (training only).

    Each clip is cut to the span its (stretched) window reads, ``round(n_samples * rate)``
    samples, and zeroed beyond it, as the evaluation front end zero-pads beyond
    ``n_samples``: with identity parameters (no noise, no shift, rate 1) the result is the
    clean features of :class:`~audiogate.features.frontend.LogMel`, to float rounding.
    """

    def __init__(self, frontend: LogMel, cfg: AugmentConfig) -> None:
        self.frontend = frontend
        self.augmenter = Augmenter(cfg)

    def __call__(self, wave: torch.Tensor, *, lengths: torch.Tensor,
                 rng: np.random.Generator) -> torch.Tensor:
        """``wave`` ``[shape=(batch, n)]`` with ``n >= n_samples * max_rate`` ->
        ``[shape=(batch, n_mels, fixed_length)]``. All randomness comes from ``rng``."""
        params = self.augmenter.draw(rng, wave.shape[0])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return self.apply(wave, lengths=lengths, params=params, generator=generator)

    def apply(self, wave: torch.Tensor, *, lengths: torch.Tensor,
              params: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Deterministic part of :meth:`__call__`: ``params`` as from
        :meth:`Augmenter.draw`, noise samples from ``generator``."""
        span = torch.round(self.frontend.cfg.n_samples * params["rate"].double()).long()
        inside = torch.arange(wave.shape[1])[None, :] < span[:, None]
        wave = limit_peak(wave * inside)
        wave = AddNoise.apply(wave, snr_db=params["snr_db"],
                              lengths=torch.minimum(lengths, span), generator=generator)
        mag = self.frontend.power(wave).sqrt()
        warped = warp_magnitude(mag, semitones=params["semitones"], rate=params["rate"],
                                n_frames=self.frontend.cfg.fixed_length)
        return self.frontend.from_power(warped.square())
