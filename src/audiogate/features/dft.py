"""The log-mel front end with its STFT written as a convolution, for ONNX export.

``torch.stft`` returns complex tensors, which ONNX export does not handle. :class:`DftLogMel`
computes the same centred STFT as a strided 1-D convolution with a fixed windowed-DFT basis
and inherits everything after the power spectrogram (mel projection, dB re max, ``top_db``
floor, z-score) from :class:`~audiogate.features.frontend.LogMel`, so the two cannot drift
apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import FeatureConfig
from .frontend import LogMel, limit_peak


class DftLogMel(LogMel):
    """Export-friendly twin of :class:`LogMel` (same maths, same output).

    The centred, zero-padded STFT frame ``t`` is ``x[t*hop : t*hop + n_fft]`` of the signal
    padded by ``n_fft // 2`` on both sides; the Hann window (``win_length`` samples, centred in
    the ``n_fft`` frame as ``torch.stft`` does) is folded into cosine and sine kernels, so only
    the ``win_length`` non-zero taps are convolved. ``forward``: ``[shape=(batch,
    cfg.n_samples)]`` -> ``[shape=(batch, n_mels, cfg.fixed_length)]`` (the length is fixed,
    as in the exported graph).
    """

    basis: torch.Tensor

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__(cfg)
        self.n_bins = cfg.n_fft // 2 + 1
        self.offset = (cfg.n_fft - cfg.win_length) // 2
        taps = torch.arange(cfg.win_length, dtype=torch.float64) + self.offset
        bins = torch.arange(self.n_bins, dtype=torch.float64)
        angle = 2.0 * torch.pi * torch.outer(bins, taps) / cfg.n_fft
        win = self.window.to(torch.float64)
        basis = torch.cat([torch.cos(angle) * win, -torch.sin(angle) * win])
        self.register_buffer("basis", basis[:, None, :].to(torch.float32), persistent=False)
        # static padding for the fixed input length: frame t starts at t * hop_length
        self.left = cfg.n_fft // 2 - self.offset
        needed = (cfg.fixed_length - 1) * cfg.hop_length + cfg.win_length
        self.right = max(needed - cfg.n_samples - self.left, 0)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """Power spectrogram ``[shape=(batch, n_fft // 2 + 1, fixed_length)]``.

        Clips peaking above 1 are scaled to peak 1 first, as in ``LogMel.power`` (the features
        are scale-invariant; this keeps huge samples from overflowing float32).
        """
        x = F.pad(limit_peak(wave)[:, None, :], (self.left, self.right))
        spec = F.conv1d(x, self.basis, stride=self.cfg.hop_length)[..., :self.cfg.fixed_length]
        return spec[:, :self.n_bins].square() + spec[:, self.n_bins:].square()

    def mel_power(self, wave: torch.Tensor, *, banks: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """:meth:`LogMel.mel_power` in one piece: the exported graph takes any batch size."""
        power = self.power(wave)
        return torch.matmul(self.mel, power) if banks is None else torch.bmm(banks, power)
