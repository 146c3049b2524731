"""The specification's network: two convolution blocks and a linear classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .dropout import ClipDropout
from .registry import register_model

if TYPE_CHECKING:
    from ..config import Config

CHANNELS = (16, 32)
"""Output channels of the two convolution blocks."""


@register_model("simple")
class SimpleConvNet(nn.Module):
    """Conv-ReLU-MaxPool x2 -> Dropout -> Linear, as in the specification.

    Each block runs as Conv-MaxPool-ReLU: max-pooling and ReLU commute (ReLU is monotone), so
    the outputs and gradients are those of the specification's order, with the ReLU on a
    quarter of the activations. Dropout masks are drawn per clip (:class:`ClipDropout`).

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
        self.dropout = ClipDropout(dropout)
        self.fc = nn.Linear(c2 * (n_mels // 4) * (n_frames // 4), n_classes)

    @classmethod
    def config_args(cls, config: Config, *, n_classes: int) -> dict[str, Any]:
        """Sized for the config's log-mel shape (the linear layer depends on it)."""
        return {"n_mels": config.n_mels, "n_frames": config.fixed_length,
                "n_classes": n_classes, "dropout": config.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            # (batch, 1, n_mels, frames) with channels-last strides (a view, no copy): the
            # activations stay channels-last, where PyTorch's CPU convolutions and max-pool
            # run several times faster than in the default layout, with the same results.
            x = x[..., None].permute(0, 3, 1, 2)
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.conv2(x)))
        x = self.dropout(x)
        return self.fc(torch.flatten(x, 1))
