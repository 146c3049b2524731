"""The layout of ``report.html``: what a page shows (:class:`ReportData`), and its sections as
HTML.

Order: headline figures and facts, then what was trained (data), how it went (training), how
good it is (test results), the worst errors (listen and look), and the full configuration.
Every number that comes from a JSON file of the folder is tagged with where it comes from
(:func:`~.html.num`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, FeatureConfig
from ..data.discover import Skipped
from .html import (
    Cell,
    Html,
    audio,
    facts,
    figure,
    fmt_value,
    image,
    join,
    num,
    page,
    section,
    table,
    tag,
)
from .predictions import Verdict
from .run_table import RunSummary, duration_text


@dataclass
class ErrorClip:
    """One of the worst errors, with its media (``problem`` says why there is none)."""

    verdict: Verdict
    wav: bytes | None = None
    spectrogram: bytes | None = None
    seconds: float = 0.0
    problem: str | None = None


@dataclass
class ReportData:
    """Everything a page shows. ``kind``: ``"run"`` or ``"evaluation"``; ``test_file``: the
    JSON file behind ``test`` (``test_metrics.json`` or ``report.json``)."""

    kind: str
    folder: Path
    title: str
    features: FeatureConfig
    classes: list[str]
    config: Config | None = None
    summary: RunSummary | None = None
    metrics: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    test_file: str = "test_metrics.json"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Clips per subset (or ``"clips"``) per class."""
    skipped: list[Skipped] = field(default_factory=list)
    durations: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, bytes | None] = field(default_factory=dict)
    validation_gate: dict[str, Any] | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    errors: list[ErrorClip] = field(default_factory=list)
    max_clip_s: float = 10.0
    data_root: str | None = None
    """The data folder clip names are shown relative to."""

    @property
    def threshold(self) -> float | None:
        """The gate's threshold the test verdicts were decided by (None: not a gate)."""
        gate = (self.test or {}).get("gate")
        value = gate.get("threshold") if isinstance(gate, dict) else None
        return float(value) if isinstance(value, int | float) else None


SKIPPED_SHOWN = 200
"""Skipped files listed on the page (all of them are in ``skipped.csv``)."""
EPOCH_COLUMNS = (("train_loss", "train loss"), ("val_loss", "val loss"),
                 ("test_loss", "test loss"), ("train_f1", "train F1"), ("val_f1", "val F1"),
                 ("test_f1", "test F1"), ("lr", "learning rate"), ("seconds", "seconds"))
GATE_ROWS = (("threshold", "threshold on P(positive)"), ("far", "false-accept rate (FAR)"),
             ("frr", "false-reject rate (FRR)"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"),
             ("eer", "equal error rate (EER)"), ("eer_threshold", "threshold at the EER"),
             ("n_positive", "positive clips"), ("n_negative", "negative clips"))


def render(data: ReportData) -> str:
    """The whole page."""
    parts = [_header(data), _data(data)]
    if data.kind == "run":
        parts.append(_training(data))
    parts += [_results(data), _errors(data), _config(data), _footer(data)]
    return page(title=f"audiogate: {data.title}", body=join(parts))


# ----------------------------------------------------------------------------- header
def _tile(label: str, value: Html, note: str = "") -> Html:
    return tag("div", tag("small", label), tag("b", value), tag("small", note) if note else "")


def _header(data: ReportData) -> Html:
    test, tf = data.test or {}, data.test_file
    state = data.summary.state if data.summary else None
    title = tag("h1", data.title, " ", tag("span", state, class_=f"state {state}") if state
                else "")
    on = "test " if data.kind == "run" else ""
    tiles = [_tile(f"{on}macro-F1", num(test.get("macro_f1"), tf, "macro_f1"),
                   f"{test.get('n', 0)} clips")]
    if data.metrics:
        best = data.metrics.get("best_epoch")
        tiles.append(_tile("best validation macro-F1",
                           num(data.metrics.get("best_val_f1"), "metrics.json", "best_val_f1"),
                           "fitted without epochs" if best is None else f"epoch {best}"))
    tiles.append(_tile(f"{on}accuracy", num(test.get("accuracy"), tf, "accuracy")))
    gate = test.get("gate")
    if isinstance(gate, dict):
        tiles += [_tile(f"threshold on P({gate.get('positive')})",
                        num(gate.get("threshold"), tf, "gate", "threshold")),
                  _tile(f"{on}FAR / FRR", join([num(gate.get("far"), tf, "gate", "far"), " / ",
                                               num(gate.get("frr"), tf, "gate", "frr")]))]
    nav = tag("nav", *(tag("a", label, href=f"#{anchor}") for anchor, label in _anchors(data)))
    return join([tag("header", title, tag("p", str(data.folder), class_="muted"), nav),
                 tag("div", *tiles, class_="headline"), facts(_facts(data))])


def _anchors(data: ReportData) -> list[tuple[str, str]]:
    run = [("training", "Training")] if data.kind == "run" else []
    return [("data", "Data"), *run, ("results", _results_title(data)),
            ("errors", "Worst errors"), ("config", "Configuration")]


def _results_title(data: ReportData) -> str:
    return "Test results" if data.kind == "run" else "Results"


def _facts(data: ReportData) -> list[tuple[str, Any]]:
    classes = ", ".join(data.classes) or "n/a"
    if data.kind == "evaluation":
        test = data.test or {}
        return [("data", test.get("source", "n/a")), ("checkpoint", test.get("checkpoint")),
                ("epoch of the checkpoint", num(test.get("epoch"), "report.json", "epoch")),
                ("classes", classes), ("files skipped", len(data.skipped))]
    s, c = data.summary, data.config
    epochs = f"{s.epochs}" + (f" of max {s.max_epochs}" if s and s.max_epochs else "") \
        if s and s.epochs is not None else "n/a"
    return [("data", c.data if c else "n/a"), ("classes", classes),
            ("model", f"{s.model if s else 'n/a'} (recipe {c.recipe if c else 'n/a'})"),
            ("started", s.date if s and s.date else "n/a"),
            ("state", f"{s.state}: {s.stop_reason or 'no reason recorded'}" if s else "n/a"),
            ("epochs", epochs), ("training time", duration_text(s.train_time_s if s else None))]


# ------------------------------------------------------------------------------- data
def _data(data: ReportData) -> Html:
    subsets = list(data.counts)
    rows = [[name, *(data.counts[s].get(name, 0) for s in subsets),
             sum(data.counts[s].get(name, 0) for s in subsets)] for name in data.classes]
    totals = ["all", *(sum(data.counts[s].values()) for s in subsets),
              sum(sum(v.values()) for v in data.counts.values())]
    counts = table(["class", *subsets, "total"], [*rows, totals], marked=[len(rows)])
    used = "judged" if data.kind == "evaluation" else "in the split"
    window = data.features.n_samples / data.features.sr
    hist = figure(data.figures.get("durations"), alt="histogram of clip durations per class",
                  caption=f"Durations of the clips {used} (from their headers); dashed: the "
                          f"model window ({window:.2f} s), dotted: the window that would hold "
                          "90% of them whole")
    return section("data", "Data", tag("h3", f"Clips {used}"), counts, _skipped(data), hist)


def _skipped(data: ReportData) -> Html:
    n = len(data.skipped)
    if not n:
        return tag("p", "No file was skipped.", class_="muted")
    listed = table(["file", "reason"], [[s.path, s.reason] for s in data.skipped[:SKIPPED_SHOWN]],
                   class_="text")
    more = f" (the first {SKIPPED_SHOWN} below; all in skipped.csv)" if n > SKIPPED_SHOWN else ""
    return join([tag("h3", f"{n} file(s) skipped{more}"), tag("div", listed, class_="scroll")])


# --------------------------------------------------------------------------- training
def _training(data: ReportData) -> Html:
    metrics = data.metrics or {}
    fit = metrics.get("fit")
    if isinstance(fit, dict) and not metrics.get("epochs"):
        return _fit(fit)
    epochs = metrics.get("epochs") or []
    best = metrics.get("best_epoch")
    rows = [[num(e.get("epoch"), "metrics.json", "epochs", i, "epoch"),
             *(num(e.get(k), "metrics.json", "epochs", i, k) for k, _ in EPOCH_COLUMNS)]
            for i, e in enumerate(epochs)]
    marked = [i for i, e in enumerate(epochs) if e.get("epoch") == best]
    curves = figure(data.figures.get("curves"), alt="loss and macro-F1 per epoch",
                    caption="Loss and macro-F1 per epoch; the model is chosen on validation "
                            "only (dotted line), test is monitored")
    note = tag("p", f"Best epoch (highlighted): {fmt_value(best)}; the test figures below are "
                    "of that epoch's model.", class_="muted")
    return section("training", "Training", curves, note,
                   tag("div", table(["epoch", *(h for _, h in EPOCH_COLUMNS)], rows,
                                    marked=marked), class_="scroll"))


def _fit(fit: dict[str, Any]) -> Html:
    """What a gate fitted without epochs (a voice gate) did and measured."""
    rows = [[key, num(value, "metrics.json", "fit", key) if isinstance(value, int | float)
             and not isinstance(value, bool) else fmt_value(value)]
            for key, value in fit.items()]
    note = tag("p", "This gate was fitted without training epochs (metrics.json, fit):",
               class_="muted")
    return section("training", "Training", note, table(["", "value"], rows, class_="text"))


# ---------------------------------------------------------------------------- results
def _results(data: ReportData) -> Html:
    test, tf, title = data.test, data.test_file, _results_title(data)
    if not test:
        return section("results", title,
                       tag("p", f"No {tf}: the run ended before its test report.",
                           class_="muted"))
    per_class = test.get("per_class") or {}
    rows = [[name, *(num(per_class.get(name, {}).get(k), tf, "per_class", name, k)
                     for k in ("precision", "recall", "f1", "support"))]
            for name in data.classes]
    who = ("The model chosen on validation (best.pt), judged on the test split: "
           if data.kind == "run" else f"The checkpoint judged on {test.get('source')}: ")
    intro = tag("p", who, num(test.get("n"), tf, "n"), " clips, judged as ",
                tag("code", "predict"), " judges them (whole clips, the gate's threshold): "
                "macro-F1 ", num(test.get("macro_f1"), tf, "macro_f1"), ", accuracy ",
                num(test.get("accuracy"), tf, "accuracy"), ".")
    parts = [intro, tag("h3", "Per class"),
             table(["class", "precision", "recall", "F1", "support"], rows),
             tag("h3", "Confusion matrix"), _confusion(test.get("confusion") or [], data, tf)]
    if isinstance(test.get("gate"), dict):
        parts.append(_gate(test["gate"], data))
    return section("results", title, *parts)


def _confusion(matrix: Sequence[Sequence[int]], data: ReportData, tf: str) -> Html:
    rows = [[tag("b", name), *(Cell(num(v, tf, "confusion", i, j), "diag" if i == j else "off")
                               for j, v in enumerate(row))]
            for i, (name, row) in enumerate(zip(data.classes, matrix, strict=False))]
    return join([table(["true \\ predicted", *data.classes], rows, class_="confusion"),
                 tag("p", "Rows: the true class; columns: the predicted one.", class_="muted")])


def _gate(gate: dict[str, Any], data: ReportData) -> Html:
    tf, val = data.test_file, data.validation_gate or {}
    rows = [[label, num(gate.get(k), tf, "gate", k), fmt_value(val.get(k)) if val else "n/a"]
            for k, label in GATE_ROWS]
    positive = gate.get("positive")
    rule = f" (rule {data.config.operating_point})" if data.config else ""
    intro = tag("p", f"Two-class gate: accepts a clip as {positive} when P({positive}) is at "
                     f"least the threshold, chosen on the validation split{rule}; a clip "
                     f"longer than the window is judged on the {gate.get('pooling')} of its "
                     "windows' probabilities.")
    figures = tag("div", figure(data.figures.get("roc"), alt="ROC curve",
                                caption="ROC curve, operating point marked"),
                  figure(data.figures.get("det"), alt="DET curve",
                         caption="DET curve (normal-deviate axes), operating point and EER"),
                  class_="figures")
    here = "test" if data.kind == "run" else "this data"
    return join([tag("h3", "Operating point"), intro,
                 table(["", here, "validation (best.pt)"], rows), figures])


# ----------------------------------------------------------------------------- errors
def _clip_name(path: str, data: ReportData) -> str:
    """``path`` inside the data folder (class folder included), else its file name."""
    if data.data_root:
        try:
            return str(Path(path).resolve().relative_to(Path(data.data_root).resolve()))
        except (ValueError, OSError):
            pass
    return Path(path).name


def _error_row(i: int, e: ErrorClip, data: ReportData) -> list[Any]:
    v = e.verdict
    name = join([tag("span", _clip_name(v.path, data), title=v.path),
                 tag("small", f" ({e.seconds:.2f} s)", class_="muted") if e.wav else ""])
    media = (join([image(e.spectrogram, alt=f"spectrogram of {v.path}"), audio(e.wav)])
             if e.wav and e.spectrogram else f"audio unavailable: {e.problem}")
    return [i + 1, name, v.true, v.predicted, fmt_value(v.p_true), fmt_value(v.confidence),
            Cell(media, "media")]


def _errors(data: ReportData) -> Html:
    if not data.verdicts:
        return section("errors", "Worst errors",
                       tag("p", "No per-clip predictions were found.", class_="muted"))
    wrong = sum(v.wrong for v in data.verdicts)
    if not data.errors:
        note = "No test clip was misclassified." if not wrong else \
            f"{wrong} clip(s) were misclassified; none is shown (report_errors = 0)."
        return section("errors", "Worst errors", tag("p", note, class_="muted"))
    seconds = max(e.seconds for e in data.errors)
    positive = ((data.test or {}).get("gate") or {}).get("positive")
    surest = (f"P({positive}) furthest from the threshold "
              f"{data.threshold:.4f}" if data.threshold is not None
              else "lowest probability of the true class")
    intro = tag("p", f"The {len(data.errors)} misclassified clip(s) the model was surest of "
                     f"({surest}), of {wrong} errors in "
                     f"{len(data.verdicts)} clips. Audio: up to the first {seconds:.2f} s at "
                     f"{data.features.sr} Hz. Spectrogram: the clip played, left to right; "
                     f"{data.features.n_mels} mel bands from low (bottom) to high, "
                     f"{data.features.top_db:g} dB below the clip's maximum (dark) to it "
                     "(bright).",
                class_="muted")
    rows = [_error_row(i, e, data) for i, e in enumerate(data.errors)]
    return section("errors", "Worst errors", intro,
                   table(["#", "clip", "true", "predicted", "P(true)", "P(predicted)",
                          "spectrogram and audio"], rows, class_="errors"))


# ----------------------------------------------------------------------------- config
def _config(data: ReportData) -> Html:
    what = "The run's" if data.kind == "run" else "The model's training"
    if data.config is None:
        return section("config", "Configuration",
                       tag("p", f"{what} configuration could not be read.", class_="muted"))
    rows = [[k, str(v)] for k, v in data.config.to_dict().items()]
    return section("config", "Configuration",
                   tag("details", tag("summary", f"{what} configuration: all {len(rows)} "
                                                 "fields (config.toml)"),
                       table(["field", "value"], rows, class_="text")))


def _footer(data: ReportData) -> Html:
    from ..core.version import __version__

    when = datetime.now().astimezone().isoformat(timespec="seconds")
    return tag("footer", f"Written by audiogate {__version__} on {when} from the files in "
                         f"{data.folder}. The page is self-contained: it loads nothing.")
