"""The specification's network, and the deployable waveform -> logits module."""

from __future__ import annotations

import torch
from torch import nn

from .config import FeatureConfig
from .features import LogMel

CHANNELS = (16, 32)
"""Output channels of the two convolution blocks."""


class SimpleConvNet(nn.Module):
    """Conv-ReLU-MaxPool x2 -> Dropout -> Linear, as in the specification.

    ``forward(x)``: log-mel ``[shape=(batch, n_mels, frames)]`` or
    ``[shape=(batch, 1, n_mels, frames)]`` -> logits ``[shape=(batch, n_classes)]``.
    """

    def __init__(self, *, n_mels: int, n_frames: int, n_classes: int,
                 dropout: float = 0.3) -> None:
        super().__init__()
        c1, c2 = CHANNELS
        self.conv1 = nn.Conv2d(1, c1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c2 * (n_mels // 4) * (n_frames // 4), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            # (batch, 1, n_mels, frames) with channels-last strides (a view, no copy): the
            # activations stay channels-last, where PyTorch's CPU convolutions and max-pool
            # run several times faster than in the default layout, with the same results.
            x = x[..., None].permute(0, 3, 1, 2)
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.dropout(x)
        return self.fc(torch.flatten(x, 1))


def build_net(features: FeatureConfig, *, n_classes: int, dropout: float) -> SimpleConvNet:
    """The network sized for ``features``."""
    return SimpleConvNet(n_mels=features.n_mels, n_frames=features.fixed_length,
                         n_classes=n_classes, dropout=dropout)


class WaveformClassifier(nn.Module):
    """Front end + network: ``[shape=(batch, n_samples)]`` waveforms -> logits.

    This is what prediction, the HTTP service and ONNX export run.
    """

    def __init__(self, frontend: LogMel, net: SimpleConvNet) -> None:
        super().__init__()
        self.frontend = frontend
        self.net = net

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net(self.frontend(wave))
