"""PNG figures: training curves, duration histogram, confusion matrix, spectrogram, and a
gate's ROC and DET curves.

Uses matplotlib's non-interactive Agg backend. Each ``plot_*`` function writes one PNG
atomically (:func:`audiogate.files.atomic_write`); each ``*_figure`` function returns a
figure for :func:`png_bytes` (which closes it), for pages that embed their images.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

from ..files import write_bytes
from .metrics import error_tradeoff

DPI = 110
"""Resolution of every PNG (dots per inch of the figure size)."""


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _save(fig: Figure, path: Path) -> None:
    write_bytes(path, png_bytes(fig), durable=False)


def colorize(image: np.ndarray, *, low: float | None = None, high: float | None = None,
             cmap: str = "magma") -> np.ndarray:
    """A 2-D array ``[shape=(rows, cols)]`` as RGB uint8 ``[shape=(rows, cols, 3)]``: ``low``
    (default: its minimum) dark, ``high`` (default: its maximum) bright; row 0 ends up at the
    bottom, as in a spectrogram drawn with ``origin="lower"``."""
    x = np.asarray(image, dtype=np.float64)
    lo = float(x.min()) if low is None and x.size else (low or 0.0)
    hi = float(x.max()) if high is None and x.size else (high or 0.0)
    unit = np.clip((x - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(x)
    rgba = matplotlib.colormaps[cmap](unit[::-1])
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def rgb_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 image ``[shape=(rows, cols, 3)]`` as PNG bytes, one pixel per value (no
    figure: fast, for many small images)."""
    buf = io.BytesIO()
    plt.imsave(buf, rgb, format="png")
    return buf.getvalue()


def plot_curves(history: Sequence[dict[str, Any]], path: Path, *, best_epoch: int) -> None:
    """Loss and train/val/test macro-F1 per epoch, marking ``best_epoch`` (the epoch chosen
    on validation). A gate's epochs also show the macro-F1 at validation's best threshold
    (``val_f1_tuned``, and the test's at that threshold), what its operating point makes of
    each epoch; the F1 at argmax is then drawn faint."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(11, 4))  # not pyplot's: drawn in a background thread
    ax_loss, ax_f1 = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    tuned = any(np.isfinite(h.get("val_f1_tuned", np.nan)) for h in history)
    ax_f1.plot(epochs, [h["train_f1"] for h in history], "o-", label="train (augmented)")
    for key, style, label in (("val", "s-", "validation"), ("test", "^--", "test (monitor only)")):
        if tuned:
            ax_f1.plot(epochs, [h.get(f"{key}_f1_tuned", np.nan) for h in history], style,
                       label=f"{label}, at validation's best threshold")
        ax_f1.plot(epochs, [h[f"{key}_f1"] for h in history], style,
                   alpha=0.35 if tuned else 1.0, label=f"{label}, at argmax")
    if history:
        ax_f1.axvline(best_epoch, color="grey", linestyle=":", label="best on validation")
    ax_f1.set(xlabel="epoch", ylabel="macro-F1", title="Macro-F1", ylim=(0, 1.02))
    ax_f1.legend(loc="lower right", fontsize="small")
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def plot_durations(durations: dict[str, np.ndarray], *, window_s: float, suggested_s: float,
                   path: Path) -> None:
    """Write :func:`durations_figure` to ``path``."""
    _save(durations_figure(durations, window_s=window_s, suggested_s=suggested_s), path)


def durations_figure(durations: dict[str, np.ndarray], *, window_s: float,
                     suggested_s: float) -> Figure:
    """Histogram of clip durations (s) per class, with the model window and the suggestion."""
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
    return fig


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


def plot_roc(y_true: np.ndarray, scores: np.ndarray, *, path: Path, summary: dict[str, Any],
             title: str) -> None:
    """ROC curve of a gate (true-accept rate against false-accept rate), with the operating
    point (``summary["threshold"]``, ``far``, ``frr``) and the EER marked."""
    curve = error_tradeoff(y_true, scores)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(curve["far"], 1.0 - curve["frr"], "-", label=f"ROC (AUC {summary['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.plot(summary["far"], 1.0 - summary["frr"], "o", color="tab:red",
            label=f"threshold {summary['threshold']:.3f}: FAR {summary['far']:.3f}, "
                  f"FRR {summary['frr']:.3f}")
    ax.set(xlabel="false-accept rate (FAR)", ylabel="true-accept rate (1 - FRR)",
           title=f"{title}: ROC", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95)
"""Error rates labelled on the normal-deviate axes of a DET plot."""


def plot_det(y_true: np.ndarray, scores: np.ndarray, *, path: Path, summary: dict[str, Any],
             title: str) -> None:
    """DET curve (FRR against FAR on normal-deviate axes, as in speaker verification), with
    the operating point and the EER marked."""
    curve = error_tradeoff(y_true, scores)
    eps = 1e-4
    probit = norm.ppf
    fig, ax = plt.subplots(figsize=(5, 4.5))
    far, frr = (np.clip(curve[k], eps, 1 - eps) for k in ("far", "frr"))
    ax.plot(probit(far), probit(frr), "-", label="DET")
    ax.plot(probit(np.clip(summary["far"], eps, 1 - eps)),
            probit(np.clip(summary["frr"], eps, 1 - eps)), "o", color="tab:red",
            label=f"threshold {summary['threshold']:.3f}")
    eer = float(np.clip(summary["eer"], eps, 1 - eps))
    ax.plot(probit(eer), probit(eer), "s", color="tab:green", label=f"EER {summary['eer']:.3f}")
    ticks = probit(np.asarray(DET_TICKS))
    labels = [f"{100 * t:g}%" for t in DET_TICKS]
    ax.set(xticks=ticks, yticks=ticks, xticklabels=labels, yticklabels=labels,
           xlabel="false-accept rate", ylabel="false-reject rate", title=f"{title}: DET",
           xlim=(probit(eps), probit(0.99)), ylim=(probit(eps), probit(0.99)))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
