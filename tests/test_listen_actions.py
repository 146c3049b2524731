"""What ``audiogate listen`` does with events and how the command ends: commands per event
(environment, failures logged, never blocking), the webhook (retries, a bounded queue, never
blocking), and the real CLI on a file, on stdin, and stopped by SIGINT / SIGTERM."""

from __future__ import annotations

import http.server
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import soundfile as sf

from audiogate.deploy.actions import CommandAction, Webhook, event_env
from audiogate.deploy.listen import ALLOWED, REJECTED, Event
from audiogate.errors import ConfigError

from .conftest import build_band_gate
from .test_listen import SR, scene


def event(seq: int = 0, decision: str = ALLOWED) -> Event:
    return Event(decision=decision, label="allowed" if decision == ALLOWED else "not_allowed",
                 start=1.0, end=1.5, score=0.9, threshold=0.5, latency_s=0.12, n_windows=3,
                 seq=seq, time=1700000000.0)


def test_event_fields_travel_in_the_environment() -> None:
    env = event_env(event())
    assert env["AUDIOGATE_EVENT"] == "allowed" and env["AUDIOGATE_SCORE"] == "0.9"
    assert env["AUDIOGATE_LATENCY_MS"] == "120.0" and env["AUDIOGATE_SEQ"] == "0"
    assert json.loads(env["AUDIOGATE_JSON"])["label"] == "allowed"


def test_a_command_runs_per_event_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = ("import os, sys; open(sys.argv[1], 'a').write(os.environ['AUDIOGATE_EVENT'] + "
              "' ' + os.environ['AUDIOGATE_SEQ'] + ' ' + sys.argv[2] + '\\n')")
    action = CommandAction([sys.executable, "-c", script, str(out), "$HOME;|x"], on=ALLOWED)
    for seq, decision in enumerate([ALLOWED, REJECTED, ALLOWED]):
        action(event(seq, decision))
    action.close()
    assert out.read_text().splitlines() == ["allowed 0 $HOME;|x", "allowed 2 $HOME;|x"]


def test_a_failing_or_missing_command_is_logged(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        failing = CommandAction([sys.executable, "-c", "raise SystemExit(3)"], on=ALLOWED)
        failing(event())
        failing.close()
        missing = CommandAction("no-such-command-4c1f --flag", on=ALLOWED)
        missing(event())
        missing.close()
    assert "exited with status 3 (event 0)" in caplog.text
    assert "command not found: no-such-command-4c1f" in caplog.text
    with pytest.raises(ConfigError):
        CommandAction("", on=ALLOWED)


def test_a_slow_command_never_blocks_and_a_full_queue_drops(
        caplog: pytest.LogCaptureFixture) -> None:
    release, started, ran = threading.Event(), threading.Event(), []

    def run(argv: list[str], **kwargs: Any) -> Any:  # a command that runs until released
        started.set()
        release.wait()
        ran.append(kwargs["env"]["AUDIOGATE_SEQ"])
        return subprocess.CompletedProcess(argv, 0)

    action = CommandAction(["door", "open"], on=ALLOWED, run=run, queue_size=2)
    action(event(0))
    started.wait()
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 5):  # returns at once: 1 and 2 wait, 3 and 4 are dropped
            action(event(seq))
    assert "event 3 dropped" in caplog.text and "event 4 dropped" in caplog.text
    release.set()
    action.close()
    assert ran == ["0", "1", "2"]


class Hook(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` POSTs, then 200; records the bodies."""

    failures: ClassVar[int] = 0
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Hook.bodies.append(body)
        status = 503 if len(Hook.bodies) <= Hook.failures else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    Hook.failures, Hook.bodies = 2, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events"
    server.shutdown()


def test_the_webhook_retries_until_delivered(hook: str) -> None:
    waits: list[float] = []
    webhook = Webhook(hook, retries=3, backoff_s=0.5, sleep=waits.append)
    webhook(event(7))
    webhook.close()
    assert len(Hook.bodies) == 3 and Hook.bodies[-1]["seq"] == 7  # two 503s, then 200
    assert waits == [0.5, 1.0]


def test_an_undeliverable_webhook_is_logged(hook: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    Hook.failures = 100
    with caplog.at_level(logging.ERROR):
        webhook = Webhook(hook, retries=1, sleep=lambda s: None)
        webhook(event(3))
        webhook.close()
    assert "event 3 not delivered after 2 attempt(s)" in caplog.text
    with pytest.raises(ConfigError, match="http"):
        Webhook("file:///etc/passwd")


def test_a_stalled_webhook_never_blocks() -> None:
    release, started, posted = threading.Event(), threading.Event(), []

    def post(url: str, body: bytes, *, timeout: float) -> int:
        started.set()
        release.wait()
        posted.append(json.loads(body)["seq"])
        return 200

    webhook = Webhook("http://127.0.0.1:9/x", post=post, queue_size=3)
    webhook(event(0))
    started.wait()  # the first one is in flight, and stalls
    for seq in range(1, 10):  # returns at once each time
        webhook(event(seq))
    release.set()
    webhook.close()
    assert posted == [0, 1, 2, 3]  # one in flight, three queued, the rest dropped


# ---------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_band_gate(tmp_path_factory.mktemp("band") / "band.pt", fixed_length=50)


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audiogate", "listen", *args],
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
def test_cli_on_a_file_and_its_commands(band: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "scene.flac", scene(), SR)
    log = tmp_path / "allowed.txt"
    script = f"import os; open({str(log)!r}, 'a').write(os.environ['AUDIOGATE_START'] + '\\n')"
    done = cli("--checkpoint", str(band), "--input", str(tmp_path / "scene.flac"),
               "--no-realtime", "--json", "--on-allowed", f"{sys.executable} -c \"{script}\"")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == [ALLOWED, REJECTED]
    assert set(events[0]) >= {"start", "end", "label", "score", "threshold", "latency_ms"}
    assert log.read_text().split() == [str(events[0]["start"])]


@pytest.mark.slow
def test_cli_on_raw_stereo_pcm_from_stdin(band: Path) -> None:
    import soxr

    wave = soxr.resample(scene(), SR, 44100)
    raw = (np.stack([wave, wave], 1) * 32767).astype("<i2").tobytes()
    done = cli("--checkpoint", str(band), "--input", "-", "--format", "s16le", "--rate", "44100",
               "--channels", "2", input=raw.decode("latin-1"), encoding="latin-1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "ALLOWED" in lines[0] and "REJECTED" in lines[1]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_cli_stops_on_a_signal(band: Path, sig: int, status: int) -> None:
    """Listening to a pipe that stays open; the signal once it says it listens."""
    process = subprocess.Popen([sys.executable, "-m", "audiogate", "listen", "--checkpoint",
                                str(band), "--input", "-", "--rate", str(SR)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        for line in process.stderr:  # waits for the event, however long loading takes
            if "listening to <stdin>" in line:
                break
        process.send_signal(sig)
        assert process.wait(timeout=120) == status
    finally:
        if process.poll() is None:
            process.kill()


def test_cli_says_what_a_microphone_needs(band: Path) -> None:
    done = cli("--checkpoint", str(band), "--input", "mic")
    # without sounddevice/PortAudio (CI), or with them but no input device
    assert done.returncode == 2
    assert "audiogate[live]" in done.stderr or "no microphone" in done.stderr


def test_cli_flags_are_checked(band: Path) -> None:
    done = cli("--checkpoint", str(band), "--input", "-", "--k-of-n", "3")
    assert done.returncode == 2 and "--k-of-n must look like 2/3" in done.stderr
    done = cli("--checkpoint", str(band), "--input", "-")
    assert done.returncode == 2 and "--rate N" in done.stderr
    done = cli("--input", "-")
    assert done.returncode == 2 and "--checkpoint" in done.stderr
