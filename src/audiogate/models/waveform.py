"""The deployable model: front end + network, waveform in, logits out."""

from __future__ import annotations

import torch
from torch import nn

from ..features.frontend import LogMel


class WaveformClassifier(nn.Module):
    """Front end + network: ``[shape=(batch, n_samples)]`` waveforms -> logits
    ``[shape=(batch, n_classes)]``.

    This is what prediction, the HTTP service and ONNX export run.
    """

    def __init__(self, frontend: LogMel, net: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.net = net

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net(self.frontend(wave))
