"""The class a two-class gate accepts is given, never guessed from the names (issue 22, item
12): ``positive_class``, ``allowed`` by default, refused when ambiguous; stored in checkpoints
and exports, used by the decision, shown by train, predict, evaluate and the service; old
checkpoints keep the rule they were made with (``allowed``, else label 1)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from audiogate.cli import main
from audiogate.config import Config, reference
from audiogate.core.decision import Decision, choose_positive, stored_positive
from audiogate.data.discover import discover
from audiogate.errors import ConfigError
from audiogate.gates import load
from audiogate.models.checkpoint import load_checkpoint, save_checkpoint

from .conftest import TINY_FLAGS, build_band_gate, make_toy_dataset


def accept_reject(root: Path, *, n_per_class: int = 24) -> Path:
    """The toy task with other names: ``accept/`` (tones) and ``reject/`` (noise). In sorted
    order ``reject`` is label 1, the class the old rule made a gate accept."""
    make_toy_dataset(root, n_per_class=n_per_class)
    (root / "allowed").rename(root / "accept")
    (root / "not_allowed").rename(root / "reject")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------- the rule, as functions
def test_the_positive_class_is_chosen_by_the_setting_and_refused_when_ambiguous() -> None:
    spec = ("not_allowed", "allowed")
    assert choose_positive(spec) == "allowed"
    assert choose_positive(("allowed", "zzz")) == "allowed"
    assert choose_positive(("accept", "reject"), "accept") == "accept"
    assert choose_positive(spec, "not_allowed") == "not_allowed"
    assert choose_positive(("a", "b", "c")) is None
    with pytest.raises(ConfigError, match=r"two classes, 'accept', 'reject', and neither is "
                                          r"named 'allowed'.*'positive_class'"):
        choose_positive(("accept", "reject"))
    with pytest.raises(ConfigError, match=r"'positive_class' is 'acept', which is not one of "
                                          r"the two classes 'accept', 'reject'"):
        choose_positive(("accept", "reject"), "acept")
    with pytest.raises(ConfigError, match=r"'positive_class' must be empty for a model of 3 "):
        choose_positive(("a", "b", "c"), "a")


def test_the_decision_is_given_its_positive_class() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    accept = Decision(("accept", "reject"), "accept", threshold=0.25)   # label 0 accepted
    assert accept.positive == 0 and accept.labels(probs).tolist() == [0, 1]
    assert accept.describe()["positive"] == "accept"
    reject = Decision(("accept", "reject"), "reject", threshold=0.25)   # the same threshold
    assert reject.positive == 1 and reject.labels(probs).tolist() == [1, 1]
    with pytest.raises(ConfigError, match="names none"):
        Decision(("accept", "reject"), threshold=0.5)        # a threshold needs the class
    with pytest.raises(ConfigError, match="one of its two classes"):
        Decision(("accept", "reject"), "allowed")


def test_a_stored_gate_keeps_the_class_it_was_made_with() -> None:
    pair = ("accept", "reject")
    assert stored_positive(pair, gate={"positive": "accept"}) == "accept"
    assert stored_positive(pair, chosen="accept") == "accept"
    assert stored_positive(pair) == "reject"                  # the old rule: label 1
    assert stored_positive(("allowed", "zzz")) == "allowed"
    assert stored_positive(("a", "b", "c"), chosen="a") is None


def test_the_setting_is_documented() -> None:
    doc = {d.name: d for d in reference()}["positive_class"]
    assert doc.default == '""' and "allowed" in doc.help and "refused" in doc.help


# ----------------------------------------------------------------- refused before any work
def test_an_ambiguous_two_class_layout_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """accept/ + reject/ used to train a gate that accepted reject; now train stops at once,
    naming the setting and both classes: no cache filled, no run folder."""
    data, runs = accept_reject(tmp_path / "data", n_per_class=8), tmp_path / "runs"
    for extra in ((), ("--fixed-length", "auto")):
        rc, _, err = run_cli(capsys, "-q", "train", "--data", str(data), "--runs-dir",
                             str(runs), "--name", "x", *TINY_FLAGS, *extra)
        assert rc == 2 and err.count("\n") == 1, err
        assert "'accept', 'reject'" in err and "'positive_class'" in err
        assert "--positive-class NAME" in err
        assert not runs.exists()
    with pytest.raises(ConfigError, match="positive_class"):
        discover(data, positive_class="")
    assert discover(data).positive is None                   # evaluate's discovery: not asked


def test_positive_class_is_refused_for_more_classes_and_for_a_voice_gate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = accept_reject(tmp_path / "data", n_per_class=8)
    shutil.copytree(data / "reject", data / "maybe")
    with pytest.raises(ConfigError, match="must be empty for a model of 3 classes"):
        discover(data, positive_class="accept")
    voice = make_toy_dataset(tmp_path / "voice", n_per_class=4)
    rc, _, err = run_cli(capsys, "-q", "train", "--recipe", "voice", "--data", str(voice),
                         "--runs-dir", str(tmp_path / "runs"), "--positive-class",
                         "not_allowed")
    assert rc == 2 and "a voice gate always accepts 'allowed'" in err, err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------- a gate that accepts "accept"
@pytest.fixture(scope="module")
def accept_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("accept")
    data = accept_reject(root / "data")
    capture = io.StringIO()
    from contextlib import redirect_stdout
    with redirect_stdout(capture):
        rc = main(["-q", "train", "--data", str(data), "--runs-dir", str(root / "runs"),
                   "--name", "g", *TINY_FLAGS, "--max-epochs", "2", "--positive-class",
                   "accept"])
    assert rc == 0
    return {"root": root, "data": data, "best": root / "runs" / "g" / "models" / "best.pt",
            "summary": capture.getvalue()}


def test_train_stores_and_shows_the_positive_class(accept_run: dict[str, Any]) -> None:
    best = load_checkpoint(accept_run["best"])
    assert best.classes == ("accept", "reject") and best.config.positive_class == "accept"
    assert best.gate is not None and best.gate["positive"] == "accept"
    assert "gate accepts accept; operating point: P(accept) >=" in accept_run["summary"]
    gate = load(accept_run["best"])
    assert gate.decision.positive_class == "accept" and gate.decision.positive == 0


def test_predict_shows_the_positive_class_and_scores_it(
        accept_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    tones = sorted((accept_run["data"] / "accept").iterdir())[:3]
    noise = sorted((accept_run["data"] / "reject").iterdir())[:3]
    rc, out, _ = run_cli(capsys, "-q", "predict", "--checkpoint", str(accept_run["best"]),
                         "--json", *map(str, tones + noise))
    assert rc == 0
    for verdict in json.loads(out):
        assert verdict["positive"] == "accept"
        assert verdict["score"] == pytest.approx(verdict["probabilities"]["accept"])
        accepted = verdict["score"] >= verdict["threshold"]
        assert verdict["label"] == ("accept" if accepted else "reject")
    rc, out, _ = run_cli(capsys, "-q", "predict", "--checkpoint", str(accept_run["best"]),
                         "--csv", str(tones[0]))
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["positive"] == "accept" and "p_accept" in row


def test_evaluate_and_the_service_show_the_positive_class(
        accept_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from audiogate.deploy.serve import create_app

    rc, out, _ = run_cli(capsys, "-q", "evaluate", "--checkpoint", str(accept_run["best"]),
                         "--out", str(accept_run["root"] / "ev"))
    assert rc == 0 and "gate: accept as accept when P(accept) >= " in out
    report = json.loads((accept_run["root"] / "ev" / "report.json").read_text())
    assert report["gate"]["positive"] == "accept"
    client = TestClient(create_app(load(accept_run["best"])))
    assert client.get("/model").json()["positive"] == "accept"


def test_the_onnx_export_carries_the_positive_class(accept_run: dict[str, Any]) -> None:
    from audiogate.gates.network.onnx import export_onnx, read_metadata

    out = accept_run["root"] / "g.onnx"
    export_onnx(checkpoint=accept_run["best"], out=out)
    assert read_metadata(out)["positive"] == "accept"
    gate = load(out)
    assert gate.decision == load(accept_run["best"]).decision
    assert gate.decision.positive_class == "accept"


# ----------------------------------------------------------------- old checkpoints
def test_old_checkpoints_keep_the_rule_they_were_made_with(tmp_path: Path) -> None:
    """A checkpoint that stores no positive class (made before the setting: its config has
    none, and no operating point) accepts label 1, as it did; one with an operating point
    accepts its ``positive``; the spec's layout accepts ``allowed`` either way."""
    band = load_checkpoint(build_band_gate(tmp_path / "band.pt"))
    assert load(tmp_path / "band.pt").decision.positive_class == "allowed"
    old_config = {k: v for k, v in band.config.to_dict().items() if k != "positive_class"}
    for gate, expected in ((None, "reject"), ({"positive": "accept", "threshold": 0.5,
                                               "operating_point": "f1", "validation": None},
                           "accept")):
        path = tmp_path / f"old_{expected}.pt"
        save_checkpoint(path, net=band.build_net(), spec=band.spec,
                        config=Config.from_dict(old_config), classes=("accept", "reject"),
                        epoch=1, metrics={}, gate=gate)
        assert load(path).decision.positive_class == expected
