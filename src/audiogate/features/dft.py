"""The log-mel front end with its STFT written as a convolution, for ONNX export.

``torch.stft`` returns complex tensors, which ONNX export does not handle. :class:`DftLogMel`
computes the same centred STFT as a strided 1-D convolution with a fixed windowed-DFT basis
(:func:`dft_basis`, :func:`dft_power`: the speaker encoder's exported front end uses them too)
and inherits everything after the power spectrogram (mel projection, dB re max, ``top_db``
floor, z-score) from :class:`~audiogate.features.frontend.LogMel`, so the two cannot drift
apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import FeatureConfig
from .frontend import LogMel, limit_peak


def dft_basis(window: torch.Tensor, *, n_fft: int, offset: int = 0) -> torch.Tensor:
    """Cosine and minus-sine kernels of DFT bins ``0 .. n_fft // 2``, the window folded in:
    ``[shape=(2 * (n_fft // 2 + 1), 1, len(window))]`` float32, computed in float64.

    Tap ``j`` is sample ``offset + j`` of the ``n_fft``-sample frame (``offset`` centres a
    window shorter than ``n_fft``, as ``torch.stft`` does). Convolved with a signal at stride
    ``hop`` it gives the real and imaginary parts of its STFT (:func:`dft_power`).
    """
    taps = torch.arange(len(window), dtype=torch.float64) + offset
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2.0 * torch.pi * torch.outer(bins, taps) / n_fft
    win = window.to(torch.float64)
    basis = torch.cat([torch.cos(angle) * win, -torch.sin(angle) * win])
    return basis[:, None, :].to(torch.float32)


def dft_power(x: torch.Tensor, basis: torch.Tensor, *, n_fft: int, hop: int,
              n_frames: int | None = None) -> torch.Tensor:
    """Power spectrogram of ``x`` ``[shape=(batch, 1, n_samples)]`` (its uncentred frames
    every ``hop`` samples, the first ``n_frames`` of them, or all) with the
    :func:`dft_basis` of the same ``n_fft``: ``[shape=(batch, n_fft // 2 + 1, n_frames)]``.

    ``n_fft`` is given rather than read from ``basis``: a traced shape would add nodes to
    the exported graph.
    """
    n_bins = n_fft // 2 + 1
    spec = F.conv1d(x, basis, stride=hop)
    if n_frames is not None:
        spec = spec[..., :n_frames]
    return spec[:, :n_bins].square() + spec[:, n_bins:].square()


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
        self.offset = (cfg.n_fft - cfg.win_length) // 2
        self.register_buffer("basis", dft_basis(self.window, n_fft=cfg.n_fft,
                                                offset=self.offset), persistent=False)
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
        return dft_power(x, self.basis, n_fft=self.cfg.n_fft, hop=self.cfg.hop_length,
                         n_frames=self.cfg.fixed_length)

    def mel_power(self, wave: torch.Tensor, *, banks: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """:meth:`LogMel.mel_power` in one piece: the exported graph takes any batch size."""
        power = self.power(wave)
        return torch.matmul(self.mel, power) if banks is None else torch.bmm(banks, power)
