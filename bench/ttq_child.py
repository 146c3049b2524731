"""The fresh processes :mod:`bench.ttq` times (each mode imports only what it needs).

    python -m bench.ttq_child floor LIST            # import torch + audiogate, decode LIST
    python -m bench.ttq_child reference RUN OUT SEED EPOCHS EXTRA_JSON
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def decode(paths: Sequence[str]) -> list[int]:
    """Decode and resample each of ``paths`` to 16 kHz; their lengths (samples)."""
    from audiogate.data.audio_io import load_audio

    return [len(load_audio(p, sr=16000)) for p in paths]


def floor(listing: str) -> None:
    """What any pipeline must do: start, import torch and audiogate, decode every clip once
    on every core."""
    import torch  # noqa: F401
    from tqdm import tqdm

    import audiogate  # noqa: F401
    from audiogate.data.workers import ordered_map

    paths = Path(listing).read_text().split()
    with tqdm(disable=True) as bar:
        total = sum(ordered_map(decode, paths, workers=0, bar=bar))
    print(f"decoded {len(paths)} clips, {total} samples")


def reference(run: str, out: str, seed: str, epochs: str, extra: str) -> None:
    """The reference notebook pipeline on ``run``'s split; writes each epoch's end time."""
    from audiogate.data.split import read_split
    from audiogate.files import write_json

    from .real import run_reference

    ends: list[float] = []
    history: list[dict[str, float]] = []

    def on_epoch(record: dict[str, float]) -> None:
        ends.append(time.time())
        history.append(dict(record))

    classes = json.loads((Path(run) / "metrics.json").read_text())["classes"]
    base = {"seed": int(seed), "max_epochs": int(epochs), "patience": 0, **json.loads(extra)}
    result = run_reference(split=read_split(Path(run) / "split.csv"), classes=classes,
                           base=base, on_epoch=on_epoch)
    write_json(Path(out), {**result, "ends": ends, "history": history})


if __name__ == "__main__":
    {"floor": floor, "reference": reference}[sys.argv[1]](*sys.argv[2:])
