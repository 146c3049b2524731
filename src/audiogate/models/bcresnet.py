"""BC-ResNet: broadcasted residual learning for compact audio classification.

Kim, Chang, Lee, Sung (2021), "Broadcasted Residual Learning for Efficient Keyword Spotting",
Interspeech. Each block runs a frequency-wise depthwise convolution on the 2-D log-mel map,
averages over frequency, runs a temporal depthwise convolution on the 1-D result and
broadcasts it back over frequency: 2-D features at the cost of 1-D convolutions.
SubSpectral Normalisation normalises each frequency sub-band separately. The network ends in
global average pooling, so it takes any number of frames and of mel bands.

Width ``tau`` scales every channel count: BC-ResNet-1 (tau 1) has about 9k parameters,
BC-ResNet-2 about 27k, BC-ResNet-8 about 320k.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .registry import register_model

if TYPE_CHECKING:
    from ..config import Config

STAGES = ((8, 2, 1, 1), (12, 2, 2, 2), (16, 4, 2, 4), (20, 4, 1, 8))
"""Per stage: output channels (times tau), blocks, frequency stride of the first block,
temporal dilation."""
SUB_BANDS = 4
"""Frequency sub-bands of SubSpectral Normalisation."""


class SubSpectralNorm(nn.Module):
    """Batch norm with separate statistics for each of ``sub_bands`` frequency bands
    (plain batch norm when the bands do not divide the frequency axis evenly)."""

    def __init__(self, channels: int, sub_bands: int = SUB_BANDS) -> None:
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands)
        self.plain = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        if f % self.sub_bands:
            return self.plain(x)
        x = self.bn(x.reshape(b, c * self.sub_bands, f // self.sub_bands, t))
        return x.reshape(b, c, f, t)


class BCBlock(nn.Module):
    """One broadcasted residual block; a *transition* block (``c_in != c_out`` or a frequency
    stride) first maps channels with a 1x1 convolution and has no identity shortcut."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, dilation: int,
                 dropout: float) -> None:
        super().__init__()
        self.transition = c_in != c_out or stride != 1
        self.expand = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                     nn.BatchNorm2d(c_out), nn.ReLU())
                       if self.transition else nn.Identity())
        self.freq = nn.Sequential(
            nn.Conv2d(c_out, c_out, (3, 1), stride=(stride, 1), padding=(1, 0), groups=c_out,
                      bias=False),
            SubSpectralNorm(c_out))
        self.temporal = nn.Sequential(
            nn.Conv2d(c_out, c_out, (1, 3), padding=(0, dilation), dilation=(1, dilation),
                      groups=c_out, bias=False),
            nn.BatchNorm2d(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.Dropout2d(dropout))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.freq(self.expand(x))
        broadcast = self.temporal(x.mean(dim=2, keepdim=True))
        out = x + broadcast if self.transition else shortcut + x + broadcast
        return self.relu(out)


@register_model("bcresnet")
class BCResNet(nn.Module):
    """BC-ResNet of width ``tau``: log-mel ``[shape=(batch, n_mels, frames)]`` (any size) ->
    logits ``[shape=(batch, n_classes)]``."""

    def __init__(self, *, n_classes: int, tau: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        width = [c * tau for c, *_ in STAGES]
        stem = 16 * tau
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 5, stride=(2, 1), padding=2, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = stem
        for (_, n_blocks, stride, dilation), c_out in zip(STAGES, width, strict=True):
            for i in range(n_blocks):
                blocks.append(BCBlock(c_in, c_out, stride=stride if i == 0 else 1,
                                      dilation=dilation, dropout=dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(c_in, c_in, 5, padding=2, groups=c_in, bias=False),
            nn.Conv2d(c_in, 32 * tau, 1, bias=False), nn.BatchNorm2d(32 * tau), nn.ReLU())
        self.classifier = nn.Conv2d(32 * tau, n_classes, 1)

    @classmethod
    def config_args(cls, config: Config, *, n_classes: int) -> dict[str, Any]:
        """Width from ``config.width``; dropout of the temporal branches from ``config``."""
        return {"n_classes": n_classes, "tau": config.width, "dropout": config.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3), keepdim=True)).flatten(1)
