"""Data: from a folder of labelled audio files to decoded, cached, split clips.

Modules, in the order the data flows through them:

* :mod:`.audio_io`: the only code that reads or writes sound files (decode, mix, resample);
* :mod:`.discover`: class folders -> labelled file list, and what is skipped and why;
* :mod:`.decode`: parallel decoding into memory or into the cache;
* :mod:`.cache`: the on-disk cache of decoded clips and clean features;
* :mod:`.split`: balancing and the stratified train/val/test split;
* :mod:`.prepare`: :func:`prepare_data`, all of the above for one run;
* :mod:`.synth`: the generated demo data set.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .discover import Clip, Discovery, Skipped, discover

if TYPE_CHECKING:
    from .prepare import PreparedData, prepare_data
    from .split import Split

_LAZY = {"PreparedData": "prepare", "prepare_data": "prepare", "Split": "split"}
"""Imported on first use: decoding for inference does not pull in scikit-learn."""

__all__ = ["Clip", "Discovery", "PreparedData", "Skipped", "Split", "discover",
           "prepare_data"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
