"""Dropout whose mask for each clip comes from that clip's own seed.

Standard dropout draws one mask for the whole batch from the process's random stream, so a
clip's mask depends on which batch, and which training process, it is in. With
:func:`clip_seeds` set around the forward pass, :class:`ClipDropout` draws clip ``i``'s mask
from a generator seeded with ``seeds[i]`` instead: one process with batch ``B`` and ``N``
processes with ``B / N`` each drop exactly the same activations. Without seeds (or in eval
mode) it is :class:`torch.nn.Dropout`; it has no weights, so checkpoints and ONNX exports are
unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn

_SEEDS: ContextVar[np.ndarray | None] = ContextVar("audiogate_clip_seeds", default=None)


@contextlib.contextmanager
def clip_seeds(seeds: np.ndarray) -> Iterator[None]:
    """Within the block, :class:`ClipDropout` draws row ``i``'s mask from ``seeds[i]``
    (integers ``[shape=(batch,)]``, one per clip of the batch passed to the network)."""
    token = _SEEDS.set(np.asarray(seeds, dtype=np.uint64))
    try:
        yield
    finally:
        _SEEDS.reset(token)


class ClipDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with one mask per clip, drawn from the clip's seed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seeds = _SEEDS.get()
        if not self.training or self.p == 0 or seeds is None:
            return super().forward(x)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"ClipDropout: {len(seeds)} seeds for a batch of {x.shape[0]}")
        keep = torch.empty(x.shape, device=x.device, dtype=torch.float32)
        for i, seed in enumerate(seeds.tolist()):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            keep[i] = torch.rand(x.shape[1:], generator=gen, device=x.device)
        mask = (keep >= self.p).to(x.dtype) / (1.0 - self.p)
        return x * mask
