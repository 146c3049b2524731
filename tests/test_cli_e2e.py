"""End to end: the real CLI trains, evaluates and predicts on a temp folder of WAVs."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audiogate.cli import main
from audiogate.config import Config
from audiogate.gates import train
from audiogate.models.checkpoint import load_checkpoint
from audiogate.training import Callback
from audiogate.training.trainer import selection_score

from .conftest import TINY_FLAGS, make_toy_dataset

pytestmark = pytest.mark.slow


def _train(data: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return ["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
            *TINY_FLAGS, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = make_toy_dataset(root / "dataset", n_per_class=32)
    assert main(_train(data, root / "runs", "toy", "--max-epochs", "2", "--batch-size", "4")) == 0
    return data, root / "runs" / "toy"


def test_run_folder_contents(trained: tuple[Path, Path]) -> None:
    _, run = trained
    for name in ("config.toml", "split.csv", "skipped.csv", "metrics.json",
                 "test_metrics.json", "test_predictions.csv", "report.html",
                 "models/best.pt", "models/last.pt",
                 "models/model_epoch_001.pt", "models/model_epoch_002.pt",
                 "outputs/curves.png", "outputs/confusion_test.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert set(metrics["epochs"][0]) >= {"train_loss", "train_f1", "val_f1", "test_f1"}
    best = max(metrics["epochs"],  # select_on's default, the earliest of equals
               key=lambda e: (selection_score(e, "f1_tuned"), -e["epoch"]))
    assert metrics["best_epoch"] == best["epoch"] == load_checkpoint(run / "models/best.pt").epoch
    with open(run / "split.csv") as fh:
        subsets = [row["subset"] for row in csv.DictReader(fh)]
    assert (subsets.count("train"), subsets.count("val"), subsets.count("test")) == (44, 10, 10)
    assert "max_epochs = 2" in (run / "config.toml").read_text()


LEARNED_F1 = 0.85
"""At most one of the 10 test clips wrong (macro-F1 0.899): with seed 0 the test split holds a
2991 Hz tone, at the very edge of the toy task's 300-3000 Hz range, that some seeds' training
leaves just under P = 0.5."""


def test_toy_task_is_learned(trained: tuple[Path, Path]) -> None:
    _, run = trained
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["macro_f1"] >= LEARNED_F1


def test_evaluate_on_saved_split_and_folder(trained: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    assert main(["-q", "evaluate", "--checkpoint", str(run / "models/best.pt")]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "confusion" in out
    report = json.loads((run / "evaluation/report.json").read_text())
    assert report["n"] == 10 and report["macro_f1"] >= LEARNED_F1
    assert (run / "evaluation/confusion.png").is_file()
    assert main(["-q", "evaluate", "--checkpoint", str(run / "models/best.pt"), "--data",
                 str(data), "--out", str(run / "ev2")]) == 0
    assert json.loads((run / "ev2/report.json").read_text())["n"] == 64


def test_predict_formats(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, run = trained
    ckpt = str(run / "models/best.pt")
    assert main(["-q", "predict", "--checkpoint", ckpt, "--json", str(data / "allowed"),
                 str(data / "not_allowed" / "noise_000.wav")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 33
    assert sum(r["label"] == "allowed" for r in rows[:32]) >= 29
    assert rows[32]["label"] == "not_allowed"
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-5
    assert main(["-q", "predict", "--checkpoint", ckpt, "--csv",
                 str(data / "allowed" / "tone_000.wav")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("file,label,confidence,p_not_allowed,p_allowed")
    assert main(["-q", "predict", "--checkpoint", ckpt,
                 str(data / "allowed" / "tone_000.wav")]) == 0
    assert "tone_000.wav  allowed" in capsys.readouterr().out


def _metrics_without_time(run: Path) -> list[dict[str, float]]:
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "dataset", n_per_class=16)
    runs = tmp_path / "runs"
    assert main(_train(data, runs, "straight", "--max-epochs", "3")) == 0
    assert main(_train(data, runs, "stopped", "--max-epochs", "1")) == 0
    assert main(["-q", "train", "--resume", str(runs / "stopped"), "--max-epochs", "3"]) == 0
    assert (runs / "straight/split.csv").read_text() == (runs / "stopped/split.csv").read_text()
    assert _metrics_without_time(runs / "straight") == _metrics_without_time(runs / "stopped")


def _wait_for_epoch(run: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics.json").exists():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no epoch finished in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    data = make_toy_dataset(tmp_path / "dataset", n_per_class=16)
    run = tmp_path / "runs" / "forever"
    cmd = [sys.executable, "-m", "audiogate", *_train(data, tmp_path / "runs", "forever",
                                                      "--max-epochs", "0")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epoch(run, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert b"interrupted" in out
    metrics = json.loads((run / "metrics.json").read_text())
    last = load_checkpoint(run / "models/last.pt")
    assert last.epoch == metrics["epochs"][-1]["epoch"] >= 1
    assert last.train_state is not None
    # the final test report is of the best epoch so far, on every test clip of the split
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted" and status["stop_reason"].startswith("interrupted")
    assert status["epochs_done"] == len(metrics["epochs"]) and status["ended"]
    report = json.loads((run / "test_metrics.json").read_text())
    n_test = (run / "split.csv").read_text().count("\ntest,")
    assert report["epoch"] == metrics["best_epoch"] == load_checkpoint(run / "models/best.pt").epoch
    assert report["n"] == n_test == sum(map(sum, report["confusion"])) > 0
    page = (run / "report.html").read_text()  # the stopped run has its page too
    assert 'class="state interrupted"' in page and f"interrupted ({sig.name})" in page
    assert not list(run.rglob("*.tmp"))


# ------------------------------------------------------------------ resume: what it refuses
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two one-epoch runs of the same data with different seeds."""
    root = tmp_path_factory.mktemp("resume")
    data = make_toy_dataset(root / "dataset", n_per_class=10)
    for name, seed in (("a", "1"), ("b", "2")):
        assert main(_train(data, root / "runs", name, "--max-epochs", "1", "--seed", seed)) == 0
    return root / "runs" / "a", root / "runs" / "b"


def test_status_of_a_finished_run(two_runs: tuple[Path, Path]) -> None:
    run, other = two_runs
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["error"] is None
    assert status["stop_reason"] == "reached max_epochs=1" and status["epochs_done"] == 1
    assert status["started"] <= status["ended"] and status["pid"] > 0 and status["host"]
    for name in ("best.pt", "last.pt", "model_epoch_001.pt"):
        assert load_checkpoint(run / "models" / name).run_id == status["run_id"]
    assert json.loads((other / "status.json").read_text())["run_id"] != status["run_id"]


def test_resume_refuses_changed_flags_and_config(two_runs: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`train --resume RUN --n-mels 64 --lr 0.5` ignored the flags (issue 12, item 6)."""
    run, _ = two_runs
    (tmp_path / "c.toml").write_text("max_epochs = 5\n")
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for extra, words in [
            (["--n-mels", "32", "--lr", "0.5"], ["--n-mels 32 (the run has 64)",
                                                 "--lr 0.5 (the run has 0.001)"]),
            (["--augment", "--no-augment"], ["--augment False"]),
            (["--config", str(tmp_path / "c.toml")], ["--config cannot be used with --resume"])]:
        assert main(["-q", "train", "--resume", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("audiogate: error:") and err.count("\n") == 1, err
        assert all(w in err for w in words), err
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_refuses_the_last_pt_of_another_run(two_runs: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run, other = two_runs
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    shutil.copy(other / "models" / "last.pt", mixed / "models" / "last.pt")
    assert main(["-q", "train", "--resume", str(mixed), "--max-epochs", "2"]) == 2
    assert "belongs to another run" in capsys.readouterr().err
    assert json.loads((mixed / "metrics.json").read_text())["epochs"][-1]["epoch"] == 1


def test_resume_applies_the_allowed_flags(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = two_runs
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)  # the same run, moved: still resumable
    assert main(["-q", "train", "--resume", str(copy), "--max-epochs", "2", "--workers", "1",
                 "--no-keep-epoch-checkpoints", "--n-fft", "512"]) == 0  # n_fft: unchanged
    assert [e["epoch"] for e in json.loads((copy / "metrics.json").read_text())["epochs"]] == [
        1, 2]
    assert not (copy / "models" / "model_epoch_002.pt").exists()
    status = json.loads((copy / "status.json").read_text())
    assert status["state"] == "finished" and status["epochs_done"] == 2
    assert status["started"] == json.loads((run / "status.json").read_text())["started"]


def test_train_help_lists_what_resume_applies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("Applied with it: --max-epochs, --patience, --workers, --keep-epoch-checkpoints, "
            "--cache, --cache-dir, --tensorboard, --report-errors, --device, --precision, "
            "--prefetch, --sync-batchnorm. Refused: --config") in text


class _Boom(Callback):
    def on_epoch_end(self, trainer: object, record: dict[str, object]) -> None:
        raise RuntimeError("disk on fire")


def test_a_failed_run_is_marked_failed(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "dataset", n_per_class=10)
    config = Config(data=str(data), runs_dir=str(tmp_path / "runs"), name="x", fixed_length=32,
                    n_fft=512, batch_size=8, workers=1, max_epochs=2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(config, progress=False, callbacks=(_Boom(),))
    status = json.loads((tmp_path / "runs" / "x" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == "disk on fire"
    assert status["ended"] and status["epochs_done"] == 1
