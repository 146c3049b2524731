"""Training-only augmentation: additive noise, pitch shift and time stretch, batched in torch.

Each transform is a small object: ``draw`` takes an explicit ``numpy.random.Generator`` and
returns per-clip parameters (the identity where the transform does not fire, with probability
``1 - p``); ``apply`` is deterministic given those parameters.

Pitch shift and time stretch act on the STFT power, which is all the log-mel front end keeps,
and both are linear, so they fold into the mel projection. Shifting pitch by ``n`` semitones
moves every partial by ``2 ** (n / 12)`` (a sine at 440 Hz shifted by +12 lands at 880 Hz): the
mel bands of the shifted spectrum are those of a filterbank read at scaled frequencies, so each
clip gets its own filterbank (:func:`warp_filterbank`). Stretching time by ``rate`` re-samples
frames at ``t * rate`` (the magnitude path of librosa's phase vocoder, without the phase), done
on the ``n_mels`` rows of the mel power (:func:`stretch_frames`). No phase vocoder, resampler or
full-resolution interpolation per clip.

Randomness is drawn per clip from the clip's own seed (:meth:`Augmenter.draw`): a clip is
augmented the same way whichever batch, or training process, it lands in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import AugmentConfig
from ..errors import ConfigError
from .frontend import LogMel, clip_frames

NOISE_SEEDS = 2**63 - 1
"""Noise generators are seeded with integers below this."""


@dataclass(frozen=True)
class Transform:
    """What every augmentation shares: it fires on a clip with probability ``p``; its
    parameters are drawn first (:meth:`fired`), then applied deterministically."""

    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augmentation probability p must be in [0, 1], got {self.p}")
        self.check()

    def check(self) -> None:
        """Refuse parameters out of range (:class:`ConfigError`)."""

    def fired(self, rng: np.random.Generator, drawn: np.ndarray, *,
              identity: float) -> np.ndarray:
        """``drawn`` where the transform fires (probability ``p``, one draw per clip),
        ``identity`` (the value that leaves a clip unchanged) elsewhere."""
        return np.where(rng.random(len(drawn)) < self.p, drawn, identity)


@dataclass(frozen=True)
class AddNoise(Transform):
    """White Gaussian noise at an SNR (dB) drawn uniformly from ``snr_db``."""

    snr_db: tuple[float, float] = (10.0, 40.0)

    def check(self) -> None:
        if self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"AddNoise snr_db must be (low, high), got {self.snr_db}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """SNR in dB per clip ``[shape=(n,)]``; ``inf`` means no noise."""
        return self.fired(rng, rng.uniform(self.snr_db[0], self.snr_db[1], size=n),
                          identity=np.inf)

    @staticmethod
    def apply(wave: torch.Tensor, *, snr_db: torch.Tensor, lengths: torch.Tensor,
              noise_seed: torch.Tensor) -> torch.Tensor:
        """Add noise within each clip's real samples, at ``snr_db`` below the clip's RMS.

        ``wave`` ``[shape=(batch, n)]``; ``snr_db``, ``lengths`` (samples) and ``noise_seed``
        ``[shape=(batch,)]``: clip ``i``'s noise is the first ``lengths[i]`` values of a
        generator seeded with ``noise_seed[i]`` on ``wave``'s device. Only the clips it fires
        on (finite ``snr_db``) are touched, and only their real samples.
        """
        return AddNoise.apply_(wave.clone(), snr_db=snr_db, lengths=lengths,
                               noise_seed=noise_seed)

    @staticmethod
    def apply_(out: torch.Tensor, *, snr_db: torch.Tensor, lengths: torch.Tensor,
               noise_seed: torch.Tensor) -> torch.Tensor:
        """:meth:`apply` in place on ``out`` (returned), for a caller that owns the batch."""
        fired = torch.isfinite(snr_db).nonzero().flatten().tolist()
        if not fired:
            return out
        sizes, seeds = lengths.clamp(0, out.shape[1]).tolist(), noise_seed.tolist()
        gains = torch.pow(10.0, -snr_db.cpu().to(torch.float64) / 20.0).tolist()  # MPS: no f64
        for i in fired:
            real = out[i, :sizes[i]]
            if real.numel() == 0:
                continue
            peak = real.abs().amax().clamp_min(torch.finfo(out.dtype).tiny)
            rms = peak * torch.sqrt((real / peak).square().mean())  # no overflow
            gen = torch.Generator(device=out.device).manual_seed(int(seeds[i]))
            noise = torch.randn(real.numel(), generator=gen, device=out.device,
                                dtype=out.dtype)
            real.add_(noise.mul_(rms * gains[i]))
        return out


@dataclass(frozen=True)
class PitchShift(Transform):
    """Shift by a number of semitones drawn uniformly from ``[-semitones, semitones]``."""

    semitones: float = 2.0

    def check(self) -> None:
        if self.semitones < 0:
            raise ConfigError(f"PitchShift semitones must be >= 0, got {self.semitones}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Semitones per clip ``[shape=(n,)]``; 0 means unchanged."""
        return self.fired(rng, rng.uniform(-self.semitones, self.semitones, size=n),
                          identity=0.0)


@dataclass(frozen=True)
class TimeStretch(Transform):
    """Speed up (``rate > 1``) or slow down, rate drawn log-uniformly from ``rate``."""

    rate: tuple[float, float] = (0.8, 1.25)

    def check(self) -> None:
        if not 0 < self.rate[0] <= self.rate[1]:
            raise ConfigError(f"TimeStretch rate must be (low, high) > 0, got {self.rate}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rate per clip ``[shape=(n,)]``; 1 means unchanged."""
        rate = np.exp(rng.uniform(np.log(self.rate[0]), np.log(self.rate[1]), size=n))
        return self.fired(rng, rate, identity=1.0)


def warp_filterbank(mel: torch.Tensor, *, semitones: torch.Tensor) -> torch.Tensor:
    """Per-clip mel filterbanks that pitch-shift the spectrum they are applied to.

    ``mel`` ``[shape=(n_mels, n_bins)]``, ``semitones`` ``[shape=(batch,)]`` ->
    ``[shape=(batch, n_mels, n_bins)]``. Shifting by ``s = 2 ** (semitones / 12)`` moves the
    energy of bin ``j`` to bin ``s * j``, so band ``m`` of the shifted spectrum is
    ``sum_j P[j] * s * mel[m, s * j]``: the filterbank read at ``s * j`` (linear
    interpolation; zero past the last bin, where shifted energy leaves the spectrum) and
    scaled by ``s`` (each source bin now covers ``s`` bins), applied to the unshifted power
    ``P``. A small gather per clip instead of re-sampling the whole spectrogram.
    """
    n_mels, n_bins = mel.shape
    scale = torch.pow(2.0, semitones.to(device=mel.device, dtype=mel.dtype) / 12.0)
    pos = torch.arange(n_bins, device=mel.device, dtype=mel.dtype)[None, :] * scale[:, None]
    lo = pos.floor()
    frac = (pos - lo)[:, :, None]                                   # (batch, n_bins, 1)
    lo_i = lo.long().clamp(max=n_bins)
    rows = torch.cat([mel.T, mel.new_zeros(1, n_mels)])             # row n_bins reads 0
    below, above = rows[lo_i], rows[(lo_i + 1).clamp(max=n_bins)]   # (batch, n_bins, n_mels)
    return (scale[:, None, None] * torch.lerp(below, above, frac)).transpose(1, 2)


def stretch_frames(x: torch.Tensor, *, rate: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Time-stretch spectrograms: output frame ``t`` reads input frame ``t * rate`` (linear
    interpolation; zero past the last frame).

    ``x`` ``[shape=(batch, rows, frames_in)]``, ``rate`` ``[shape=(batch,)]`` ->
    ``[shape=(batch, rows, n_frames)]``. Stretching by ``rate`` re-samples frames at
    ``t * rate``: the magnitude path of librosa's phase vocoder, without the phase that the
    mel front end discards. It commutes with the mel projection (both are linear, one over
    bins, one over frames), so it runs on ``n_mels`` rows, not ``n_fft // 2 + 1``.
    """
    batch, rows, frames_in = x.shape
    pos = torch.arange(n_frames, device=x.device, dtype=x.dtype)[None, :] * rate[:, None].to(
        device=x.device, dtype=x.dtype)
    lo = pos.floor()
    frac = (pos - lo)[:, None, :]                                   # (batch, 1, n_frames)
    lo_i = lo.long().clamp(max=frames_in)[:, None, :].expand(batch, rows, n_frames)
    padded = torch.cat([x, x.new_zeros(batch, rows, 1)], dim=2)      # frame frames_in reads 0
    below = padded.gather(2, lo_i)
    above = padded.gather(2, (lo_i + 1).clamp(max=frames_in))
    return torch.lerp(below, above, frac)


def stretched_frames(frames: torch.Tensor, *, rate: torch.Tensor, n_frames: int) -> torch.Tensor:
    """A clip's own frames after :func:`stretch_frames`: output frame ``t`` reads input frame
    ``t * rate``, which is the clip's own while ``t * rate <= frames - 1``.

    ``frames`` (int64) and ``rate`` ``[shape=(batch,)]`` -> int64 ``[shape=(batch,)]``, at most
    ``n_frames``.
    """
    # float64 on the CPU (MPS has no float64): a handful of numbers per batch
    last = (frames.cpu() - 1).to(torch.float64) / rate.cpu().to(torch.float64)
    return (torch.floor(last + 1e-9).long() + 1).clamp(max=n_frames).to(frames.device)


class Augmenter:
    """Draws the three transforms' parameters, clip by clip, each clip from its own seed."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.noise = AddNoise(p=cfg.noise_p, snr_db=cfg.noise_snr_db)
        self.pitch = PitchShift(p=cfg.pitch_p, semitones=cfg.pitch_semitones)
        self.stretch = TimeStretch(p=cfg.stretch_p, rate=cfg.stretch_rate)

    @property
    def max_rate(self) -> float:
        """Largest stretch rate: training clips must be stored this much longer."""
        return self.stretch.rate[1] if self.stretch.p > 0 else 1.0

    def draw(self, seeds: np.ndarray) -> dict[str, torch.Tensor]:
        """Parameters for one clip per seed ``[shape=(n,)]``: ``snr_db``, ``semitones``,
        ``rate`` (float32) and ``noise_seed`` (int64), each ``[shape=(n,)]``.

        Clip ``i`` draws from ``numpy.random.default_rng(seeds[i])`` alone, so its
        augmentation is the same whatever batch, or process, it is in.
        """
        seeds = np.asarray(seeds, dtype=np.uint64)
        snr, semitones, rate = (np.empty(len(seeds), np.float32) for _ in range(3))
        noise_seed = np.empty(len(seeds), np.int64)
        for i, seed in enumerate(seeds.tolist()):
            rng = np.random.default_rng(seed)
            snr[i], semitones[i] = self.noise.draw(rng, 1)[0], self.pitch.draw(rng, 1)[0]
            rate[i], noise_seed[i] = self.stretch.draw(rng, 1)[0], rng.integers(NOISE_SEEDS)
        return {"snr_db": torch.from_numpy(snr), "semitones": torch.from_numpy(semitones),
                "rate": torch.from_numpy(rate), "noise_seed": torch.from_numpy(noise_seed)}


class AugmentedFrontEnd:
    """Waveform batch -> augmented, normalised log-mel batch (training only), on the device of
    the front end's buffers.

    Each clip is cut to the span its (stretched) window reads, ``round(n_samples * rate)``
    samples, and zeroed beyond it, as the evaluation front end zero-pads beyond
    ``n_samples``: with identity parameters (no noise, no shift, rate 1) the result is the
    clean features of :class:`~audiogate.features.frontend.LogMel`, to float rounding.
    """

    def __init__(self, frontend: LogMel, cfg: AugmentConfig) -> None:
        self.frontend = frontend
        self.augmenter = Augmenter(cfg)

    def __call__(self, wave: torch.Tensor, *, lengths: torch.Tensor,
                 seeds: np.ndarray) -> torch.Tensor:
        """``wave`` ``[shape=(batch, n)]`` with ``n >= n_samples * max_rate`` ->
        ``[shape=(batch, n_mels, fixed_length)]``. Clip ``i``'s randomness comes from
        ``seeds[i]`` alone (see :meth:`Augmenter.draw`)."""
        return self.apply(wave, lengths=lengths, params=self.augmenter.draw(seeds))

    def apply(self, wave: torch.Tensor, *, lengths: torch.Tensor,
              params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic part of :meth:`__call__`: ``params`` as from :meth:`Augmenter.draw`.

        Noise is added to the waveform; the pitch shift is folded into per-clip mel
        filterbanks (:func:`warp_filterbank`) and the time stretch runs on the mel power
        (:func:`stretch_frames`), so the only full-resolution work is the STFT.
        """
        device, cfg = wave.device, self.frontend.cfg
        if wave.shape[0] == 0:  # e.g. a process's share of a batch smaller than the job
            return wave.new_zeros(0, cfg.n_mels, cfg.fixed_length)
        params = {k: v.to(device) for k, v in params.items()}
        span = torch.round(cfg.n_samples * params["rate"].cpu().double()).long().to(device)
        inside = torch.arange(wave.shape[1], device=device)[None, :] < span[:, None]
        # masked_fill makes this batch's own copy, so the noise goes in place
        wave = AddNoise.apply_(wave.masked_fill(~inside, 0.0), snr_db=params["snr_db"],
                               lengths=torch.minimum(lengths.to(device), span),
                               noise_seed=params["noise_seed"])
        # no clip shifted (e.g. pitch_p = 0): the one filterbank, no per-clip copies
        banks = (warp_filterbank(self.frontend.mel, semitones=params["semitones"])
                 if bool((params["semitones"] != 0).any()) else None)
        mel = self.frontend.mel_power(wave, banks=banks)
        mel = stretch_frames(mel, rate=params["rate"], n_frames=cfg.fixed_length)
        return self.frontend.from_mel(mel, frames=stretched_frames(
            clip_frames(wave, hop_length=cfg.hop_length), rate=params["rate"],
            n_frames=cfg.fixed_length))
