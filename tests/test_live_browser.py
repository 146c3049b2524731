"""The page's Live mode in headless Chromium, its microphone a WAV file whose answer is known
(Chromium's fake capture device plays it in a loop): speech-like sound then hiss, for the band
gate. The events the page shows are the ones the same file gives ``audiogate listen``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiogate.data.synth import voice_like
from audiogate.deploy.listen import ALLOWED, REJECTED, Listener
from audiogate.gates import load

from .conftest import Server, build_band_gate, hiss, running_server
from .test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SR = 16000
PARTS = (("quiet", 0.6), ("voice", 1.6), ("quiet", 1.4), ("hiss", 1.6), ("quiet", 1.8))
"""The fake microphone's file, looped: the sound starts 3.0 s apart."""


def mic_file(path: Path) -> Path:
    rng = np.random.default_rng(8)
    make = {"quiet": lambda s: 1e-4 * rng.standard_normal(round(s * SR)),
            "voice": lambda s: 0.5 * voice_like(rng=rng, duration=s, sr=SR),
            "hiss": lambda s: 0.5 * hiss(rng=rng, duration=s)}
    wave = np.concatenate([make[kind](seconds) for kind, seconds in PARTS])
    sf.write(path, wave.astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Server, Path]]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install it with "
                    "`apt-get update && apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright missing: `pip install playwright`")
    root = tmp_path_factory.mktemp("live-browser")
    mic = mic_file(root / "mic.wav")
    band = build_band_gate(root / "band.pt", fixed_length=50)
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic}"]
    with running_server(band, tmpdir=root / "tmp") as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield browser, server, mic
        browser.close()


def expected(mic: Path, band: Path) -> list[tuple[str, float, float]]:
    """What ``audiogate listen`` gives for two loops of the file: (decision, start, end)."""
    wave, _ = sf.read(mic, dtype="float32")
    listener = Listener(load(band), rate=SR)
    events = listener.feed(np.concatenate([wave, wave])) + listener.flush()
    return [(e.decision, e.start, e.end) for e in events]


def test_live_mode_shows_the_events_the_file_gives(setup: tuple[Any, Server, Path]) -> None:
    browser, server, mic = setup
    want = expected(mic, server.checkpoint)
    assert [d for d, _, _ in want] == [ALLOWED, REJECTED] * 2
    context, page = new_page(browser, server)
    try:
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url + "/")
        page.wait_for_selector("#model-info:has-text('classes')")
        page.click("#live-btn")
        page.wait_for_selector("#live-status[data-state='listening']")
        assert "accepts allowed" in page.text_content("#live-status")
        page.wait_for_selector("#live-events li:nth-child(3)")  # the page's CSP: no eval
        shown = page.eval_on_selector_all("#live-events li", """items => items.reverse().map(
            li => [li.dataset.decision, Number(li.dataset.start), Number(li.dataset.end)])""")
        lit = page.evaluate("""() => {
            const c = document.getElementById('live-timeline');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i + 3] > 0;
            return n; }""")
        page.click("#live-stop-btn")
        page.wait_for_selector("#live-status[data-state='stopped']")
        assert page.text_content("#live-status") == "Stopped."
        assert page.errors == [] and page.foreign == []
    finally:
        context.close()
    # The page's stream starts when the service is ready, somewhere in the file's loop: the
    # decisions alternate as the file's do, and each lasts and follows the one before it as
    # the same file's events do offline.
    decisions = [d for d, _, _ in shown]
    first = decisions.index(ALLOWED)
    assert decisions[first:first + 2] == [ALLOWED, REJECTED]
    assert all(a != b for a, b in itertools.pairwise(decisions))
    (_, a0, a1), (_, r0, r1) = shown[first], shown[first + 1]
    (_, e_a0, e_a1), (_, e_r0, e_r1) = want[0], want[1]
    assert r0 - a0 == pytest.approx(e_r0 - e_a0, abs=0.25)
    assert (a1 - a0, r1 - r0) == pytest.approx((e_a1 - e_a0, e_r1 - e_r0), abs=0.25)
    assert lit > 0  # the timeline was drawn
