"""PNG figures: training curves, duration histogram, confusion matrix, spectrogram.

Uses matplotlib's non-interactive Agg backend; every function writes one PNG atomically
(:func:`audiogate.files.atomic_write`) and closes its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..files import atomic_write


def _save(fig: Figure, path: Path) -> None:
    try:
        with atomic_write(path, durable=False) as fh:
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and train/val/test macro-F1 per epoch, marking the epoch chosen on validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    for key, style, label in (("train_f1", "o-", "train (augmented)"),
                              ("val_f1", "s-", "validation (selects model)"),
                              ("test_f1", "^--", "test (monitor only)")):
        ax_f1.plot(epochs, [h[key] for h in history], style, label=label)
    if history:
        best = max(history, key=lambda h: (h["val_f1"], -h["epoch"]))
        ax_f1.axvline(best["epoch"], color="grey", linestyle=":", label="best on validation")
    ax_f1.set(xlabel="epoch", ylabel="macro-F1", title="Macro-F1", ylim=(0, 1.02))
    ax_f1.legend(loc="lower right")
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def plot_durations(durations: dict[str, np.ndarray], *, window_s: float, suggested_s: float,
                   path: Path) -> None:
    """Histogram of clip durations per class, with the model window and the suggestion."""
    fig, ax = plt.subplots(figsize=(8, 4))
    finite = [d for d in durations.values() if len(d)]
    top = max(float(np.max(d)) for d in finite) if finite else 1.0
    bins = np.linspace(0.0, max(top, window_s) * 1.05, 40).tolist()
    for name, d in durations.items():
        ax.hist(d, bins=bins, alpha=0.6, label=f"{name} (n={len(d)})")
    ax.axvline(window_s, color="k", linestyle="--", label=f"fixed_length window {window_s:.2f} s")
    ax.axvline(suggested_s, color="tab:red", linestyle=":",
               label=f"suggested {suggested_s:.2f} s")
    ax.set(xlabel="duration (s)", ylabel="clips", title="Clip durations")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                   path: Path, *, title: str = "Confusion matrix") -> None:
    """Confusion matrix with counts (rows true, columns predicted)."""
    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(classes), 1.2 + 1.1 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes,
           yticklabels=classes, xlabel="predicted", ylabel="true", title=title)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black")
    _save(fig, path)


def plot_spectrogram(log_mel: np.ndarray, path: Path, *, hop_s: float, title: str) -> None:
    """One normalised log-mel ``[shape=(n_mels, frames)]``."""
    fig, ax = plt.subplots(figsize=(7, 3))
    extent = (0.0, log_mel.shape[1] * hop_s, 0.0, float(log_mel.shape[0]))
    im = ax.imshow(log_mel, origin="lower", aspect="auto", extent=extent, cmap="magma")
    ax.set(xlabel="time (s)", ylabel="mel band", title=title)
    fig.colorbar(im, ax=ax, label="z-scored dB")
    _save(fig, path)
