"""What an upload may cost the service to decode (issue 22, items 1-2): refused from its header
when rate x channels x duration is over the budget, else decoded block by block (memory near
the mono result); enrolment requests within one budget for all their files, each file kept
only as far as enrolment uses it. Memory is measured with tracemalloc, decoding counted
through a hook on the block decoder: nothing here depends on the machine's speed."""

from __future__ import annotations

import io
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from audiogate.core.gate import Enrolment, Gate
from audiogate.data import audio_io
from audiogate.data.audio_io import BLOCK_FRAMES
from audiogate.deploy.enrol_routes import Enroller
from audiogate.deploy.judge import DECODED_SAMPLES_PER_S, Judge, ServeSettings
from audiogate.deploy.serve import create_app
from audiogate.gates import load

from .conftest import build_band_gate, sine

LOCAL = {"Host": "127.0.0.1:8000"}
FLOAT32 = 4


def tone_file(path: Path, *, channels: int, rate: int, seconds: float) -> Path:
    """A 16-bit FLAC of a quiet 440 Hz tone on every channel (compresses well, like the
    issue's 606 KB bomb)."""
    t = np.arange(round(seconds * rate)) / rate
    y = (0.25 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    sf.write(path, np.repeat(y[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_band_gate(tmp_path_factory.mktemp("band") / "band.pt")


@pytest.fixture
def decoded_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames of every block any file is decoded in (a hook on the block decoder)."""
    seen: list[int] = []
    real = audio_io.sf.SoundFile.blocks

    def counted(self: Any, *args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        for block in real(self, *args, **kwargs):
            seen.append(len(block))
            yield block

    real_read = audio_io.sf.read

    def read(*args: Any, **kwargs: Any) -> Any:
        data, sr = real_read(*args, **kwargs)
        seen.append(len(data))
        return data, sr

    monkeypatch.setattr(audio_io.sf.SoundFile, "blocks", counted)
    monkeypatch.setattr(audio_io.sf, "read", read)
    return seen


def peak_bytes(work: Callable[[], Any]) -> tuple[Any, int]:
    """What ``work()`` returns, and the most memory it held at once beyond what was held
    before (tracemalloc: Python and numpy allocations)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = work()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def block_allowance(channels: int) -> int:
    """What decoding holds besides the result: a few blocks of ``BLOCK_FRAMES`` frames (the
    decoder's buffer and its copy, the float64 mono mix, the resampler's output)."""
    return 6 * BLOCK_FRAMES * channels * FLOAT32


# ------------------------------------------------------------------ /predict
def test_upload_over_the_decode_budget_is_refused_before_decoding(
        band: Path, tmp_path: Path, decoded_blocks: list[int]) -> None:
    """The issue's bomb, scaled down: 4 channels at 192 kHz, 9 s under a 10 s limit, decode
    to 8 times the budget of 10 s of stereo 48 kHz: 413 from the header, nothing decoded."""
    settings = ServeSettings(max_seconds=10)
    bomb = tone_file(tmp_path / "bomb.flac", channels=4, rate=192_000, seconds=9)
    client = TestClient(create_app(load(band), settings=settings))
    r = client.post("/predict", headers=LOCAL,
                    files={"file": ("bomb.flac", bomb.read_bytes(), "audio/flac")})
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "4 channel(s) x 192000 Hz x 9.0 s" in detail and "the limit is 1.0 M" in detail
    assert decoded_blocks == []
    assert 10 * DECODED_SAMPLES_PER_S == 960_000  # the limit the message names


@pytest.mark.parametrize(("channels", "rate", "seconds"), [(2, 48_000, 55), (4, 192_000, 7)])
def test_upload_decodes_in_memory_near_its_mono_result(band: Path, tmp_path: Path,
                                                       channels: int, rate: int,
                                                       seconds: float) -> None:
    """Within the budget (60 s: 5.76 M samples), a multichannel high-rate file is decoded
    block by block: the request holds its mono 16 kHz result and a few blocks, not the
    whole file decoded (45 MB and 22 MB here) and mixed."""
    path = tone_file(tmp_path / "big.flac", channels=channels, rate=rate, seconds=seconds)
    judge = Judge(load(band), ServeSettings(max_seconds=60))
    with open(path, "rb") as upload:
        wave, peak = peak_bytes(lambda: judge.decode(upload, "big.flac"))
    np.testing.assert_array_equal(wave, audio_io.load_audio(path, sr=judge.gate.features.sr))
    whole = channels * rate * seconds * FLOAT32
    assert peak <= wave.nbytes + block_allowance(channels) < whole / 2, (peak, wave.nbytes)


# ------------------------------------------------------------------ POST /enroll
class Enrolled:
    """What a gate's ``enroll`` was given."""

    def __init__(self) -> None:
        self.waves: list[np.ndarray] = []


def enrolling(band: Path, *, max_clip_s: float) -> tuple[Gate, Enrolled]:
    """A gate that takes enrolments, recording what it is given (the service's side of
    enrolment does not depend on the kind)."""
    gate = load(band)
    gate.max_clip_s = max_clip_s
    got = Enrolled()

    def enroll(name: str, items: Any, *, sr: int | None = None,
               replace_existing: bool = False) -> Enrolment:
        got.waves = list(items)
        return Enrolment(name=name, n_clips=len(items))

    gate.enrolls = True  # type: ignore[misc]
    gate.enroll = enroll  # type: ignore[method-assign]
    gate.save = lambda path: None  # type: ignore[method-assign]
    return gate, got


@pytest.mark.parametrize(("files", "words"), [
    ([(4, 192_000, 9)], "4 channel(s) x 192000 Hz x 9.0 s"),  # one file over
    ([(4, 48_000, 2)] * 3, "file 3 ('c2.flac'): too much audio to decode"),  # together over
    ([(1, 16_000, 4)] * 3, "file 3 ('c2.flac'): recording too long: 12.0 s"),
])
def test_enrolment_over_the_request_budget_is_refused_before_decoding(
        band: Path, tmp_path: Path, decoded_blocks: list[int],
        files: list[tuple[int, int, float]], words: str) -> None:
    """Each file, and all the files of a request together, within one upload's budget
    (10 s: 0.96 M samples): refused from the headers before any file is decoded."""
    gate, got = enrolling(band, max_clip_s=1.0)
    client = TestClient(create_app(gate, settings=ServeSettings(
        max_seconds=10, enroll_out=str(tmp_path / "out.pt"))))
    upload = [("files", (f"c{i}.flac", tone_file(tmp_path / f"c{i}.flac", channels=c, rate=r,
                                                   seconds=s).read_bytes(), "audio/flac"))
              for i, (c, r, s) in enumerate(files)]
    r = client.post("/enroll", headers=LOCAL, data={"name": "x"}, files=upload)
    assert r.status_code == 413, r.text
    assert words in r.json()["detail"]
    assert decoded_blocks == [] and got.waves == []


def test_enrolment_keeps_only_what_it_uses_of_each_file(band: Path, tmp_path: Path) -> None:
    """Eight 14 s files (112 s in all, within a 120 s budget) for a gate that uses 1 s of
    each: decoded one at a time, each kept as its first second, so the request holds about
    eight seconds of audio, not 112."""
    gate, got = enrolling(band, max_clip_s=1.0)
    judge = Judge(gate, ServeSettings(max_seconds=120, enroll_out=str(tmp_path / "out.pt")))
    paths = [tone_file(tmp_path / f"c{i}.flac", channels=1, rate=16_000, seconds=14)
             for i in range(8)]
    handles = [open(p, "rb") for p in paths]  # noqa: SIM115  (closed below)
    try:
        answer, peak = peak_bytes(lambda: Enroller(judge).enroll(
            "x", [(h, p.name) for h, p in zip(handles, paths, strict=True)]))
    finally:
        for h in handles:
            h.close()
    assert answer["clips"] == 8
    assert [w.size for w in got.waves] == [gate.clip_limit] * 8
    kept = 8 * gate.clip_limit * FLOAT32
    whole = 8 * 14 * 16_000 * FLOAT32
    assert peak <= kept + block_allowance(1) < whole / 2, (peak, kept)


# ------------------------------------------------------------------ requests at once
HANG_GUARD_S = 300
"""Only so that a broken test fails instead of hanging: no check depends on speed."""


def test_at_most_two_requests_decode_and_judge_at_once(band: Path) -> None:
    """Three uploads at once: two are decoded while the third waits for a slot (seen
    waiting, not guessed from time), so the service holds at most two uploads' audio."""
    judge = Judge(load(band), ServeSettings())
    lock, active, peak = threading.Lock(), [0], [0]
    two_in, third, waiting, release = (threading.Semaphore(0), threading.Event(),
                                       threading.Event(), threading.Event())

    class Slots(threading.BoundedSemaphore):
        def __enter__(self) -> bool:
            if not self.acquire(blocking=False):
                waiting.set()
                third.set()
                self.acquire()
            return True

    def decode(upload: Any, filename: str | None) -> np.ndarray:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] == 3:
                third.set()
        two_in.release()
        release.wait(HANG_GUARD_S)
        with lock:
            active[0] -= 1
        return sine(440, 1.0)

    judge.slots = Slots(2)
    judge.decode = decode  # type: ignore[method-assign]
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(judge(io.BytesIO(), "a.wav")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(2):
        assert two_in.acquire(timeout=HANG_GUARD_S)
    assert third.wait(HANG_GUARD_S)
    release.set()
    for t in threads:
        t.join(HANG_GUARD_S)
    assert waiting.is_set() and peak[0] == 2 and len(answers) == 3
