"""Seeing a run: report.html (in headless Chromium too), `audiogate runs`, TensorBoard event
files, and the service's link to the report; on real toy runs and a gate with a known answer."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiogate.cli import main
from audiogate.config import Config
from audiogate.data.audio_io import write_wav
from audiogate.data.synth import voice_like
from audiogate.gates import train
from audiogate.reporting.html import CSP, STYLE, fmt_value
from audiogate.reporting.predictions import read_predictions, worst_errors
from audiogate.reporting.report import audio_seconds
from audiogate.training import Callback, Trainer

from .conftest import SR, TINY_FLAGS, build_band_gate, hiss, make_toy_dataset

pytestmark = pytest.mark.slow


class CtrlC(Callback):
    """Presses Ctrl+C (SIGINT to this process) after the first epoch."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)


def _train(data: Path, runs: Path, name: str, *extra: str) -> None:
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
                 *TINY_FLAGS, *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``good`` learns the toy task; ``weak`` (a learning rate too small to move the weights)
    makes test errors; ``stopped`` is an endless run stopped by Ctrl+C after one epoch."""
    root = tmp_path_factory.mktemp("report")
    data = make_toy_dataset(root / "dataset", n_per_class=16)
    (data / "allowed" / "broken.wav").write_bytes(b"RIFF....")
    runs = root / "runs"
    _train(data, runs, "good", "--max-epochs", "2")
    _train(data, runs, "weak", "--max-epochs", "1", "--lr", "1e-7", "--report-errors", "3")
    config = Config(data=str(data), runs_dir=str(runs), name="stopped", fixed_length=32,
                    n_fft=512, batch_size=8, workers=1, patience=0, max_epochs=0)
    assert train(config, progress=False, callbacks=(CtrlC(),)).epochs_done == 1
    return runs


# ------------------------------------------------------------------ reading a page back
class PageParser(HTMLParser):
    """Collects tagged values (``data-key`` -> text), tags, attributes and audio sources."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[tuple[list[Any], str]] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.audio: list[str] = []
        self.meta_csp: str | None = None
        self.style = ""
        self._key: list[Any] | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = {k: v or "" for k, v in attrs}
        self.attrs += [(tag, k, v) for k, v in a.items()]
        if "data-key" in a:
            self._key = json.loads(a["data-key"])
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.meta_csp = a["content"]
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.values.append((self._key, data))
            self._key = None
        if self._in_style:
            self.style += data

    def handle_endtag(self, tag: str) -> None:
        self._key, self._in_style = None, False


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def lookup(folder: Path, key: list[Any]) -> Any:
    value: Any = json.loads((folder / key[0]).read_text())
    for k in key[1:]:
        value = value[k]
    return value


def check_values(folder: Path, values: list[tuple[list[Any], str]]) -> None:
    """Every tagged number on the page is the JSON file's value, written as the page writes
    it; numbers are also checked as numbers, so a wrong formatter cannot hide a wrong value."""
    assert values
    for key, text in values:
        expected = lookup(folder, key)
        assert text == fmt_value(expected), (key, text, expected)
        if isinstance(expected, float):
            assert float(text) == pytest.approx(expected, abs=5e-5), key


# ------------------------------------------------------------------------- the pages
def test_every_run_writes_page_predictions_and_events(runs: Path) -> None:
    for name in ("good", "weak", "stopped"):
        run = runs / name
        split = list(csv.DictReader(io.StringIO((run / "split.csv").read_text())))
        verdicts = read_predictions(run / "test_predictions.csv")
        assert sorted(v.path for v in verdicts) == sorted(r["path"] for r in split
                                                          if r["subset"] == "test")
        assert all(abs(sum(v.probabilities.values()) - 1) < 1e-4 for v in verdicts)
        assert (run / "report.html").stat().st_size > 10_000
        assert list((run / "tensorboard").glob("events.out.tfevents.*")), name


def test_page_numbers_equal_the_json_files(runs: Path) -> None:
    for name in ("good", "weak"):
        page = parse(runs / name / "report.html")
        check_values(runs / name, page.values)
        keys = {tuple(k) for k, _ in page.values}
        metrics = json.loads((runs / name / "metrics.json").read_text())
        assert ("test_metrics.json", "macro_f1") in keys
        assert ("metrics.json", "best_val_f1") in keys
        assert ("test_metrics.json", "gate", "threshold") in keys
        assert ("test_metrics.json", "confusion", 1, 0) in keys
        assert {k[2] for k in keys if k[:2] == ("metrics.json", "epochs")} == \
            set(range(len(metrics["epochs"])))
    text = (runs / "good" / "report.html").read_text()
    assert "broken.wav" in text and "not a readable audio file" in text  # skipped, with why
    assert "reached max_epochs=2" in text


def test_page_is_self_contained(runs: Path) -> None:
    page = parse(runs / "weak" / "report.html")
    assert page.meta_csp == CSP and "default-src 'none'" in CSP and "script" not in CSP
    assert page.style == STYLE                     # the style the CSP's hash allows
    assert "script" not in page.tags and "iframe" not in page.tags
    links = [(t, k, v) for t, k, v in page.attrs if k in ("src", "href")]
    assert links and all(v.startswith(("data:", "#")) for _, _, v in links), links


def test_worst_errors_play_the_model_window(runs: Path) -> None:
    run = runs / "weak"
    verdicts = read_predictions(run / "test_predictions.csv")
    report = json.loads((run / "test_metrics.json").read_text())
    expected = worst_errors(verdicts, n=3, threshold=report["gate"]["threshold"])
    assert expected, "the weak run must make test errors"
    page = parse(run / "report.html")
    assert len(page.audio) == len(expected)
    text = (run / "report.html").read_text()
    shown = re.findall(r'<span title="([^"]+)">', text)
    assert shown == [v.path for v in expected]     # the surest errors, surest first
    config = Config.from_toml(run / "config.toml")
    longest = audio_seconds(config.features(), max_clip_s=config.max_clip_s)
    for src, verdict in zip(page.audio, expected, strict=True):
        assert src.startswith("data:audio/wav;base64,")
        wav = base64.b64decode(src.split(",", 1)[1])
        info = sf.info(io.BytesIO(wav))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        original = sf.info(verdict.path).duration
        assert info.duration == pytest.approx(min(original, longest), abs=1e-3)


def test_stopped_run_has_its_page(runs: Path) -> None:
    text = (runs / "stopped" / "report.html").read_text()
    assert 'class="state interrupted"' in text and "interrupted (SIGINT)" in text


def test_report_command_rewrites_the_page(runs: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "weak"
    shutil.copytree(runs / "weak", run)
    (run / "report.html").unlink()
    assert main(["report", str(run), "--report-errors", "1"]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    assert len(parse(run / "report.html").audio) == 1
    check_values(run, parse(run / "report.html").values)
    assert main(["report", str(run), "--report-errors", "0"]) == 0
    assert parse(run / "report.html").audio == []
    assert "none is shown (report_errors = 0)" in (run / "report.html").read_text()
    (run / "test_predictions.csv").unlink()        # a run made before the file existed
    assert main(["-q", "report", str(run)]) == 0
    assert len(parse(run / "report.html").audio) == 3
    assert main(["report", str(run), "--report-errors", "-1"]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_a_failing_page_never_loses_the_run(runs: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import audiogate.reporting.report as report

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report, "write_report", broken)
    data = Path(Config.from_toml(runs / "good" / "config.toml").data)
    result = train(Config(data=str(data), runs_dir=str(runs.parent / "other"), name="x",
                          fixed_length=32, n_fft=512, batch_size=8, workers=1, patience=0,
                          max_epochs=1, cache_dir=str(runs / ".cache")), progress=False)
    assert result.test_report is not None and result.run.test_report.is_file()
    assert not result.run.report.exists()
    assert "disk on fire" in caplog.text and "audiogate report" in caplog.text


def test_evaluation_page_of_a_gate_with_a_known_answer(tmp_path: Path) -> None:
    """The band gate calls voice allowed and hiss not_allowed: the two hiss clips filed under
    allowed and the voice clip under not_allowed are its only errors."""
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for i in range(4):
        write_wav(data / "allowed" / f"voice_{i}.wav",
                  0.5 * voice_like(rng=rng, duration=1.2, sr=SR), sr=SR)
        write_wav(data / "not_allowed" / f"hiss_{i}.wav", 0.5 * hiss(rng=rng, duration=1.2),
                  sr=SR)
    write_wav(data / "allowed" / "hiss_filed_wrong_0.wav", 0.5 * hiss(rng=rng, duration=1.2),
              sr=SR)
    write_wav(data / "allowed" / "hiss_filed_wrong_1.wav", 0.3 * hiss(rng=rng, duration=0.7),
              sr=SR)
    write_wav(data / "not_allowed" / "voice_filed_wrong.wav",
              0.5 * voice_like(rng=rng, duration=6.0, sr=SR), sr=SR)
    ckpt = build_band_gate(tmp_path / "band.pt")
    out = tmp_path / "ev"
    assert main(["-q", "evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                 str(out), "--workers", "1"]) == 0
    page = parse(out / "report.html")
    check_values(out, page.values)
    text = (out / "report.html").read_text()
    shown = re.findall(r'<span title="([^"]+)">([^<]+)</span>', text)
    assert sorted(name for _, name in shown) == ["allowed/hiss_filed_wrong_0.wav",
                                                 "allowed/hiss_filed_wrong_1.wav",
                                                 "not_allowed/voice_filed_wrong.wav"]
    assert len(page.audio) == 3
    durations = [sf.info(io.BytesIO(base64.b64decode(a.split(",", 1)[1]))).duration
                 for a in page.audio]
    window = Config(fixed_length=200).features().n_samples / SR
    by_name = dict(zip([n for _, n in shown], durations, strict=True))
    assert by_name["not_allowed/voice_filed_wrong.wav"] == pytest.approx(max(4.0, window))
    assert by_name["allowed/hiss_filed_wrong_1.wav"] == pytest.approx(0.7)
    assert "Evaluation on" in text and "Test results" not in text
    (out / "report.html").unlink()                 # `audiogate report` knows the folder kind
    assert main(["-q", "report", str(out), "--report-errors", "1"]) == 0
    assert len(parse(out / "report.html").audio) == 1


def test_page_escapes_what_it_shows(runs: Path, tmp_path: Path) -> None:
    """File names and reasons are data, never markup."""
    run = tmp_path / "run"
    shutil.copytree(runs / "good", run)
    hostile = '<img src=x onerror=alert(1)>"&.wav'
    with open(run / "skipped.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "reason"], [f"/d/{hostile}", "<script>x</script>"]])
    assert main(["-q", "report", str(run)]) == 0
    text = (run / "report.html").read_text()
    assert hostile not in text and "<script>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;.wav" in text


# ------------------------------------------------------------------------- runs table
def _broken_and_odd_folders(runs: Path) -> None:
    corrupt = runs / "corrupt"
    shutil.copytree(runs / "good", corrupt)
    (corrupt / "metrics.json").write_text("{not json")
    old = runs / "old"                  # no status.json (audiogate 0.1), no test report
    shutil.copytree(runs / "good", old)
    (old / "test_metrics.json").unlink()
    (old / "status.json").unlink()
    killed = runs / "killed"            # says running, but its process is gone
    shutil.copytree(runs / "good", killed)
    (killed / "test_metrics.json").unlink()
    dead = subprocess.Popen(["true"])
    dead.wait()
    status = json.loads((killed / "status.json").read_text())
    status.update(state="running", pid=dead.pid, host=socket.gethostname(), ended=None)
    (killed / "status.json").write_text(json.dumps(status))
    (runs / "empty").mkdir()
    (runs / "empty" / "config.toml").write_text("data = 3\n[[broken toml")
    (runs / "starting").mkdir()
    (runs / "starting" / "status.json").write_text('{"state": "running", "started": '
                                                   '"2030-01-01T00:00:00+00:00"}')
    (runs / "crashed").mkdir()
    (runs / "crashed" / "status.json").write_text('{"state": "failed", "error": "out of '
                                                  'memory", "started": "2029-01-01T00:00:00"}')
    (runs / "stray.txt").write_text("not a run")


def test_runs_table(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "runs"
    for name in ("good", "weak", "stopped"):
        shutil.copytree(runs / name, folder / name)
    (folder / ".cache").mkdir()
    _broken_and_odd_folders(folder)

    assert main(["runs", str(folder), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"good", "weak", "stopped", "corrupt", "old", "killed", "empty",
                         "starting", "crashed"}
    states = {k: r["state"] for k, r in rows.items()}
    assert states == {"good": "finished", "weak": "finished", "stopped": "interrupted",
                      "corrupt": "broken", "old": "unfinished", "killed": "killed",
                      "empty": "broken",
                      "starting": "running", "crashed": "failed"}
    assert "not valid JSON" in rows["corrupt"]["stop_reason"]
    assert rows["empty"]["stop_reason"] == "metrics.json missing"
    assert rows["crashed"]["stop_reason"] == "out of memory"
    for name in ("good", "weak", "stopped"):
        metrics = json.loads((folder / name / "metrics.json").read_text())
        test = json.loads((folder / name / "test_metrics.json").read_text())
        r = rows[name]
        assert (r["best_val_f1"], r["test_f1"], r["threshold"], r["epochs"]) == (
            metrics["best_val_f1"], test["macro_f1"], test["gate"]["threshold"],
            len(metrics["epochs"]))
        assert r["train_time_s"] == pytest.approx(sum(e["seconds"] for e in metrics["epochs"]))
        assert r["model"] == "tcresnet" and r["data"].endswith("dataset")
    assert rows["good"]["stop_reason"] == "reached max_epochs=2"

    assert main(["runs", str(folder)]) == 0                       # best validation F1 first
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "date", "data"]
    order = [line.split()[0] for line in lines[1:]]
    scored = sorted(("good", "weak", "stopped"), key=lambda n: -rows[n]["best_val_f1"])
    ranked = sorted([*scored, "killed", "old"], key=lambda n: (-rows[n]["best_val_f1"], n))
    assert order[:5] == ranked                                            # ties: by name
    assert set(order[5:]) == {"corrupt", "empty", "starting", "crashed"}

    assert main(["runs", str(folder), "--csv", "--sort", "date"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in table[:2]] == ["starting", "crashed"]  # newest first
    assert main(["runs", str(folder), "--sort", "nonsense"]) == 2
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "none").mkdir()
    assert main(["runs", str(tmp_path / "none")]) == 0
    assert "no runs" in capsys.readouterr().out


# ------------------------------------------------------------------------ TensorBoard
def test_tensorboard_event_files(runs: Path) -> None:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.plugins.hparams import plugin_data_pb2

    from audiogate.training.tensorboard import SCALARS

    acc = accumulator.EventAccumulator(str(runs / "good" / "tensorboard"),
                                       size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    epochs = json.loads((runs / "good" / "metrics.json").read_text())["epochs"]
    for tag, key in SCALARS.items():
        logged = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in logged] == [e["epoch"] for e in epochs], tag
        np.testing.assert_allclose([v for _, v in logged], [e[key] for e in epochs], rtol=1e-6)
    assert set(tags["tensors"]) == {"pr_test/allowed", "pr_test/not_allowed"}
    assert len(tags["images"]) == 4 and "spectrogram/allowed/0" in tags["images"]
    test = json.loads((runs / "good" / "test_metrics.json").read_text())
    assert acc.Scalars("hparam/test_f1")[0].value == pytest.approx(test["macro_f1"])
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["model"].string_value == "tcresnet" and hparams["n_fft"].number_value == 512


def test_tensorboard_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from audiogate.errors import ConfigError
    from audiogate.training import tensorboard

    assert Config.from_dict({"tensorboard": True}).tensorboard == "on"   # TOML booleans
    assert Config.from_dict({"tensorboard": False}).tensorboard == "off"
    with pytest.raises(ConfigError, match="tensorboard"):
        Config(tensorboard="sometimes")
    with pytest.raises(ConfigError, match="report_errors"):
        Config(report_errors=-1)
    assert not tensorboard.tensorboard_enabled(Config(tensorboard="off"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)   # not installed
    assert not tensorboard.tensorboard_enabled(Config())
    with pytest.raises(ConfigError, match=r"pip install 'audiogate\[tensorboard\]'"):
        train(Config(data=str(tmp_path), runs_dir=str(tmp_path / "runs"), tensorboard="on"))
    assert not (tmp_path / "runs").exists()                              # refused before work


# ---------------------------------------------------------------------------- service
@pytest.fixture
def served_run(runs: Path, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A band gate checkpoint placed in a copy of a run folder, served in-process."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from audiogate.deploy.serve import create_app, report_of
    from audiogate.gates import load

    run = tmp_path / "run"
    shutil.copytree(runs / "good", run)
    ckpt = build_band_gate(run / "models" / "band.pt")
    assert report_of(ckpt) == run / "report.html"
    assert report_of(build_band_gate(tmp_path / "loose.pt")) is None
    with TestClient(create_app(load(ckpt), report=report_of(ckpt))) as client:
        yield client, run


def test_service_serves_the_report(served_run: tuple[Any, Path]) -> None:
    client, run = served_run
    assert client.get("/model").json()["report"] is True
    response = client.get("/report")
    assert response.status_code == 200 and response.text == (run / "report.html").read_text()
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith(CSP)
    assert 'id="report-link"' in client.get("/").text
    (run / "report.html").unlink()
    assert client.get("/report").status_code == 404


# ---------------------------------------------------------------------------- browser
@pytest.mark.browser
def test_page_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    from .test_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    run = runs / "weak"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        foreign: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
                else foreign.append(r.url))
        page.goto((run / "report.html").as_uri())
        ready = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(
            a => a.readyState > 0 ? a.readyState : new Promise(ok => a.addEventListener(
                'loadedmetadata', () => ok(a.readyState), {once: true}))))""")
        assert len(ready) == 3 and all(r > 0 for r in ready)
        durations = page.evaluate("[...document.querySelectorAll('audio')].map(a => a.duration)")
        assert all(0 < d <= 10 for d in durations)
        shown = page.evaluate("""[...document.querySelectorAll('[data-key]')].map(
            e => [JSON.parse(e.dataset.key), e.textContent])""")
        check_values(run, [(k, t) for k, t in shown])
        loaded = page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth)")
        assert loaded
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == [] and foreign == []
    width, height = _png_size(shot)
    assert width == 1280 and height > 2500                # the whole page, every section
    assert shot.stat().st_size > 100_000                  # figures drawn, not a blank page


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
