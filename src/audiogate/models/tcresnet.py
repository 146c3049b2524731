"""TC-ResNet: temporal convolutions over mel channels, for fast keyword and sound gates.

Choi, Park, Lee, Chang, Kim, Kang, Ha (2019), "Temporal Convolution for Real-time Keyword
Spotting on Mobile Devices", Interspeech. The mel bands are the input channels of 1-D
convolutions along time, so every layer sees the whole spectrum and the network is a few
small dense 1-D convolutions: the cheapest modern design on a CPU. Residual blocks of two
9-tap convolutions with batch norm halve the time axis three times; global average pooling
over time makes it take any number of frames.

``TC-ResNet8`` (``depth = 1`` block per stage) has about 66k parameters at width 1 with 64
mel bands; ``depth = 2`` is TC-ResNet14.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .dropout import ClipDropout
from .registry import register_model

if TYPE_CHECKING:
    from ..config import Config

CHANNELS = (16, 24, 32, 48)
"""Channels of the first convolution and of the three stages, at width 1."""
KERNEL = 9
"""Taps of the temporal convolutions in the residual blocks."""


class TCBlock(nn.Module):
    """Two 9-tap temporal convolutions with batch norm; a 1x1 projection on the shortcut
    when the block strides or changes width."""

    def __init__(self, c_in: int, c_out: int, *, stride: int) -> None:
        super().__init__()
        pad = KERNEL // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, KERNEL, stride=stride, padding=pad, bias=False),
            nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, KERNEL, padding=pad, bias=False), nn.BatchNorm1d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out),
            nn.ReLU()))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@register_model("tcresnet")
class TCResNet(nn.Module):
    """TC-ResNet: log-mel ``[shape=(batch, n_mels, frames)]`` (any frames) -> logits
    ``[shape=(batch, n_classes)]``. ``width`` scales the channels, ``depth`` is the number of
    blocks per stage (1: TC-ResNet8, 2: TC-ResNet14)."""

    def __init__(self, *, n_mels: int, n_classes: int, width: int = 1, depth: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        c0, *stages = (c * width for c in CHANNELS)
        self.stem = nn.Conv1d(n_mels, c0, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = c0
        for c_out in stages:
            for i in range(depth):
                blocks.append(TCBlock(c_in, c_out, stride=2 if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = ClipDropout(dropout)  # one mask per clip, from its seed
        self.fc = nn.Linear(c_in, n_classes)

    @classmethod
    def config_args(cls, config: Config, *, n_classes: int) -> dict[str, Any]:
        """Input channels from ``n_mels``; ``width`` and ``dropout`` from the config."""
        return {"n_mels": config.n_mels, "n_classes": n_classes, "width": config.width,
                "depth": config.depth, "dropout": config.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x[:, 0]
        x = self.blocks(self.stem(x))
        return self.fc(self.dropout(x.mean(dim=2)))
