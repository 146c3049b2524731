"""End-to-end test of the web page in headless Chromium (Debian's chromium + Playwright).

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package (``pip install playwright``; its bundled browsers are not used, so no
``playwright install``). Skipped with the reason if either is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiogate.data.synth import voice_like

from .conftest import Server, build_band_gate, hiss, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SR = 16000
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # a fake microphone that needs no permission prompt
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
MIC_SECONDS = 4.0
"""Length of the speech-like clip the fake microphone plays (in a loop)."""
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install it with "
                    "`apt-get update && apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright missing: `pip install playwright`")
    # the fake microphone plays speech-like sound: the band gate must call it allowed
    mic = tmp_path_factory.mktemp("mic") / "voice.wav"
    voice = voice_like(rng=np.random.default_rng(5), duration=MIC_SECONDS, sr=SR)
    sf.write(mic, 0.5 * voice, SR, subtype="PCM_16")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("browser")
    with running_server(build_band_gate(root / "band.pt"), tmpdir=root / "tmp") as srv:
        yield srv


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh page on the server; records console errors and any off-server request."""
    context = browser.new_context(permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors, page.foreign = [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))

    def guard(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            page.foreign.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(server.url + "/")
    page.wait_for_selector("#model-info:has-text('classes')")  # the page's CSP forbids eval
    yield page
    context.close()


def upload(page: Any, path: Path) -> str:
    """Choose ``path`` in the file input and return the label the page shows."""
    page.evaluate("delete document.getElementById('verdict').dataset.label")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#verdict[data-label]")
    return str(page.get_attribute("#verdict", "data-label"))


def test_upload_shows_verdict_and_spectrogram(page: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    sf.write(tmp_path / "voice.wav", 0.5 * voice_like(rng=rng, duration=2.0, sr=SR), SR)
    sf.write(tmp_path / "hiss.flac", 0.5 * hiss(rng=rng, duration=3.0), SR)
    assert "not_allowed, allowed" in page.text_content("#model-info")
    assert page.is_hidden("#report-link")  # a checkpoint outside a run folder has no report

    assert upload(page, tmp_path / "voice.wav") == "allowed"
    assert page.text_content("#verdict").startswith("allowed (")
    assert page.is_visible("#spectrogram")
    width = page.evaluate("document.getElementById('spectrogram').width")
    height = page.evaluate("document.getElementById('spectrogram').height")
    assert (width, height) == (201, 64)  # 2 s at a 10 ms hop, 64 mel bands
    lit = page.evaluate("""() => {
        const c = document.getElementById('spectrogram');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] + d[i + 1] + d[i + 2] > 0;
        return n / (d.length / 4); }""")
    assert lit > 0.5  # the canvas was drawn

    assert upload(page, tmp_path / "hiss.flac") == "not_allowed"
    assert "not_allowed" in page.text_content("#segment-list")
    assert page.errors == [] and page.foreign == []


def test_bad_upload_shows_the_error(page: Any, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio " * 50)
    page.set_input_files("#file-input", str(tmp_path / "notes.txt"))
    page.wait_for_selector("#error:not([hidden])")
    assert "415" in page.text_content("#error")
    assert page.is_hidden("#result")


def test_microphone_recording_is_judged(page: Any) -> None:
    page.click("#record-btn")
    page.wait_for_selector("#status:has-text('Recording')")
    page.wait_for_timeout(2500)
    page.click("#stop-btn")
    page.wait_for_selector("#verdict[data-label]")
    assert page.get_attribute("#verdict", "data-label") == "allowed"
    assert "recording.wav" in page.text_content("#status")
    assert page.errors == [] and page.foreign == []
