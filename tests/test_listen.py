"""The live gate's library: signals whose answer is known (speech-like sound is allowed by the
band gate, hiss is not) fed as a stream; the smoothing, grouping and refractory rules on score
sequences; the sources with a fake clock and a fake PortAudio; the loop's endings."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiogate.data.synth import voice_like
from audiogate.deploy.listen import (
    ALLOWED,
    REJECTED,
    Decider,
    Event,
    Judged,
    Listener,
    ListenSettings,
)
from audiogate.deploy.listen_loop import run_listener
from audiogate.deploy.sources import FileSource, MicSource, PcmSource, SourceError, open_source
from audiogate.errors import ConfigError
from audiogate.gates import load

from .conftest import build_band_gate, hiss
from .speech import espeak, needs_espeak, speech_extent

SR = 16000
VOICE = (1.0, 2.5)
HISS = (4.0, 5.5)
"""Where the sounds of :func:`scene` are (seconds)."""
EDGE_S = 0.15
"""How far an event's edge may be from the sound's (windows every 0.1 s)."""


def quiet(rng: np.random.Generator, seconds: float) -> np.ndarray:
    return (1e-4 * rng.standard_normal(round(seconds * SR))).astype(np.float32)


def scene(seed: int = 0) -> np.ndarray:
    """Quiet, 1.5 s of speech-like sound, quiet, 1.5 s of hiss, quiet (7 s)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([quiet(rng, 1.0), 0.5 * voice_like(rng=rng, duration=1.5, sr=SR),
                           quiet(rng, 1.5), 0.5 * hiss(rng=rng, duration=1.5),
                           quiet(rng, 1.5)]).astype(np.float32)


@pytest.fixture(scope="module")
def band_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The band gate with a 0.49 s window (answers known: see conftest)."""
    return build_band_gate(tmp_path_factory.mktemp("band") / "band.pt", fixed_length=50)


@pytest.fixture(scope="module")
def band_gate(band_path: Path) -> Any:
    return load(band_path)


def listen(gate: Any, wave: np.ndarray, *, sizes: Iterator[int] | None = None, rate: int = SR,
           **settings: Any) -> list[Event]:
    listener = Listener(gate, rate=rate, settings=ListenSettings(**settings),
                        clock=lambda: 0.0, wall=lambda: 0.0)
    events, i = [], 0
    while i < len(wave):
        size = next(sizes) if sizes is not None else 512
        events += listener.feed(wave[i:i + size])
        i += size
    return events + listener.flush()


def test_speech_like_sound_allowed_and_hiss_rejected_once_each(band_gate: Any) -> None:
    events = listen(band_gate, scene())
    assert [e.decision for e in events] == [ALLOWED, REJECTED]
    allowed, rejected = events
    assert allowed.label == "allowed" and rejected.label == "not_allowed"
    assert abs(allowed.start - VOICE[0]) <= EDGE_S
    assert allowed.end < VOICE[1]  # decided as soon as k of n windows agree
    assert abs(rejected.start - HISS[0]) <= EDGE_S and abs(rejected.end - HISS[1]) <= EDGE_S
    assert allowed.score >= 0.5 > rejected.score and allowed.threshold == 0.5
    assert [e.seq for e in events] == [0, 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_events_do_not_depend_on_block_sizes(band_gate: Any, seed: int) -> None:
    wave, rng = scene(), np.random.default_rng(seed)
    sizes = iter(rng.integers(1, 4000, size=10_000).tolist())
    # the latency counts whole blocks: equal when fed in one sample at a time ... or any size
    strip = [(e.decision, e.start, e.end, round(e.score, 4)) for e in listen(band_gate, wave)]
    assert [(e.decision, e.start, e.end, round(e.score, 4))
            for e in listen(band_gate, wave, sizes=sizes)] == strip


def test_other_rates_and_channels_give_the_same_events(band_gate: Any) -> None:
    import soxr

    wave = scene()
    stereo = np.stack([wave, wave], axis=1)
    high = soxr.resample(stereo, SR, 48000).astype(np.float32)
    decided = [(e.decision, round(e.start, 1)) for e in listen(band_gate, high, rate=48000)]
    assert decided == [(ALLOWED, 1.0), (REJECTED, 4.0)]


def test_the_stream_end_decides_the_last_sound(band_gate: Any) -> None:
    wave = scene()[:round(5.0 * SR)]  # ends inside the hiss
    events = listen(band_gate, wave)
    assert [e.decision for e in events] == [ALLOWED, REJECTED]
    assert events[-1].end == pytest.approx(5.0, abs=EDGE_S)


def test_latency_counts_samples_fed_and_compute_time(band_gate: Any) -> None:
    ticks = iter(np.arange(0, 1000, 0.25))  # every clock reading is 0.25 s after the last
    listener = Listener(band_gate, rate=SR, clock=lambda: float(next(ticks)))
    wave = scene()
    events = []
    for i in range(0, len(wave), 1600):
        events += listener.feed(wave[i:i + 1600])
    allowed = events[0]
    fed_at = -(-round(allowed.end * SR) // 1600) * 1600 / SR  # the end of the block deciding
    assert allowed.latency_s == pytest.approx(fed_at - allowed.end + 0.25, abs=1e-6)


def test_quiet_and_silence_give_no_event(band_gate: Any) -> None:
    rng = np.random.default_rng(0)
    assert listen(band_gate, quiet(rng, 3.0)) == []
    assert listen(band_gate, np.zeros(3 * SR, np.float32)) == []


def test_activity_follows_the_noise_floor(band_gate: Any) -> None:
    """Steady hiss becomes the floor: one rejected event at its onset, not one per group."""
    rng = np.random.default_rng(4)
    wave = np.concatenate([quiet(rng, 1.0), 0.05 * hiss(rng=rng, duration=12.0)])
    events = listen(band_gate, wave)
    assert [e.decision for e in events] == [REJECTED]
    assert events[0].start == pytest.approx(1.0, abs=EDGE_S)


def unit(end: int, score: float, active: bool = True) -> Judged:
    return Judged(start=end - 10, end=end, score=score, active=active, at=end, compute_s=0.0)


def decider(*, per_unit: bool = False, k: int = 2, n: int = 3,
            refractory_s: float = 5.0) -> Decider:
    """Units 1 sample apart at 10 Hz: a hop is 0.1 s, the group closes after 3 quiet hops."""
    return Decider(positive="yes", negative="no", threshold=0.5, sr=10, rate=10,
                   settings=ListenSettings(k=k, n=n, refractory_s=refractory_s),
                   per_unit=per_unit, hop=1, window=1)


def run(d: Decider, scores: list[float | None], first: int = 1) -> list[tuple[str, int, int]]:
    """Scores of consecutive windows (None: an inactive window) -> (decision, start, end) in
    samples."""
    out = []
    for i, s in enumerate(scores):
        for e in d.push(unit(first + i, s or 0.0, active=s is not None)):
            out.append((e.decision, round(e.start * 10), round(e.end * 10)))
    return out


def test_k_of_n_needs_k_windows_at_the_threshold() -> None:
    assert run(decider(), [0.9, 0.1, 0.1, 0.9, 0.1, None, None, None]) == [(REJECTED, 0, 5)]
    assert run(decider(), [0.9, 0.1, 0.9]) == [(ALLOWED, 0, 3)]
    assert run(decider(k=1, n=1), [0.1, 0.6]) == [(ALLOWED, 0, 2)]
    assert run(decider(k=3, n=3), [0.9, 0.9, 0.1, 0.9, 0.9, 0.9]) == [(ALLOWED, 0, 6)]


def test_an_inactive_window_counts_as_zero() -> None:
    d = decider()
    assert [d.push(unit(end, 0.9, active=False)) for end in range(1, 6)] == [[]] * 5
    assert d.group is None  # near-silence the model calls allowed opens nothing
    assert run(d, [0.9, None, None, 0.9, None, None, None], first=6) == [(REJECTED, 5, 9)]


def test_one_event_per_group_and_the_refractory_time() -> None:
    scores: list[float | None] = [0.9] * 20 + [None] * 4 + [0.9] * 3 + [None] * 4 + [0.9] * 3
    # 20 allowed windows make one event; the groups from 24 and 31 on are new utterances
    assert run(decider(refractory_s=0.0), scores) == [(ALLOWED, 0, 2), (ALLOWED, 24, 26),
                                                      (ALLOWED, 31, 33)]
    # nothing that starts within 1 s (10 samples) of an allowed event's end gives an event
    assert run(decider(refractory_s=1.0), scores) == [(ALLOWED, 0, 2), (ALLOWED, 24, 26)]
    assert run(decider(refractory_s=3.0), scores) == [(ALLOWED, 0, 2)]
    # a group that is not allowed within the refractory time is quiet too
    assert run(decider(refractory_s=3.0), [0.9, 0.9, None, None, None, 0.1, 0.1, None, None,
                                           None]) == [(ALLOWED, 0, 2)]


def test_a_long_group_is_decided_after_max_group_s() -> None:
    d = decider()
    events = run(d, [0.1] * 250)  # 25 s of sound that is not allowed, at 10 Hz
    assert events == [(REJECTED, 0, 100), (REJECTED, 100, 200)]


def test_per_unit_decisions_with_refractory() -> None:
    d = decider(per_unit=True, refractory_s=1.0)
    out = []
    for start, end, score in [(0, 5, 0.9), (8, 12, 0.9), (16, 20, 0.2), (30, 40, 0.1)]:
        out += [(e.decision, round(e.start * 10)) for e in d.push(
            Judged(start, end, score, True, end, 0.0))]
    assert out == [(ALLOWED, 0), (REJECTED, 16), (REJECTED, 30)]


@pytest.mark.parametrize(("field", "value"), [("hop_s", 0.0), ("k", 4), ("k", 0),
                                              ("refractory_s", -1.0), ("activity_db", 3.0),
                                              ("max_segment_s", 0.1)])
def test_settings_are_checked(field: str, value: float) -> None:
    with pytest.raises(ConfigError):
        ListenSettings(**{field: value})


def test_a_model_that_is_no_gate_is_refused(band_path: Path) -> None:
    from audiogate.core.decision import Decision

    other = load(band_path)
    other.decision = Decision(other.classes)  # no positive class
    with pytest.raises(ConfigError, match="two-class model that names"):
        Listener(other, rate=SR)
    with pytest.raises(ConfigError, match="sample rate"):
        Listener(load(band_path), rate=10)


# ----------------------------------------------------------------------------- sources
class FakeClock:
    """Time that passes only when slept."""

    def __init__(self) -> None:
        self.t, self.slept = 100.0, []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def test_file_source_at_real_time_and_as_fast_as_possible(tmp_path: Path) -> None:
    wave = scene()[:3 * SR]
    sf.write(tmp_path / "a.flac", wave, SR)
    clock = FakeClock()
    blocks = list(FileSource(tmp_path / "a.flac", rate=SR, clock=clock))
    assert np.allclose(np.concatenate(blocks), wave, atol=1e-4)
    assert clock.t - 100.0 == pytest.approx(3.0 - blocks[-1].size / SR, abs=1e-9)
    clock = FakeClock()
    assert len(list(FileSource(tmp_path / "a.flac", rate=SR, realtime=False,
                               clock=clock))) == len(blocks)
    assert clock.slept == []


@pytest.mark.parametrize(("fmt", "dtype", "scale"), [("s16le", "<i2", 32767), ("f32le", "<f4", 1)])
def test_raw_pcm_from_a_pipe_in_odd_pieces(fmt: str, dtype: str, scale: float) -> None:
    rng = np.random.default_rng(0)
    frames = (0.5 * rng.uniform(-1, 1, (1001, 2))).astype(np.float32)
    raw = (frames * scale).astype(dtype).tobytes() + b"\x01"  # and half a frame

    class Trickle(io.RawIOBase):  # a pipe hands over what it has: here 7 bytes at a time
        def __init__(self) -> None:
            self.data = io.BytesIO(raw)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.data.read(min(n, 7))

    got = np.concatenate(list(PcmSource(Trickle(), fmt=fmt, rate=8000, channels=2)))
    assert got.shape == (1001, 2)
    assert np.allclose(got, frames, atol=3 / 32768)


def test_source_flags_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--rate N"):
        open_source("-", gate_rate=SR)
    with pytest.raises(ConfigError, match="no such file"):
        open_source(str(tmp_path / "none.wav"), gate_rate=SR)
    with pytest.raises(ConfigError, match="--device chooses a microphone"):
        open_source("-", gate_rate=SR, rate=SR, device="1")
    with pytest.raises(ConfigError, match="format"):
        PcmSource(io.BytesIO(), fmt="u8", rate=SR, channels=1)
    with pytest.raises(ConfigError, match="channels"):
        PcmSource(io.BytesIO(), fmt="s16le", rate=SR, channels=0)


class PortAudioError(Exception):
    pass


def fake_sd(*, plays: list[list[np.ndarray] | BaseException], rate: float = 48000.0,
            devices: bool = True) -> SimpleNamespace:
    """A stand-in for the sounddevice module: each opening of the input stream plays the next
    of ``plays`` (blocks, then a PortAudio error as if unplugged), or fails with it."""
    opened: list[dict[str, Any]] = []

    class InputStream:
        def __init__(self, **kwargs: Any) -> None:
            play = plays.pop(0) if plays else KeyboardInterrupt()  # then the user stops it
            if isinstance(play, BaseException):
                raise play
            opened.append(kwargs)
            self.blocks = list(play)
            self.closed = False

        def start(self) -> None:
            pass

        def read(self, n: int) -> tuple[np.ndarray, bool]:
            if not self.blocks:
                raise PortAudioError("Stream is stopped: device unavailable")
            return self.blocks.pop(0).reshape(-1, 1), False

        def close(self) -> None:
            self.closed = True

    def query_devices(device: Any = None, kind: str | None = None) -> Any:
        if not devices:
            raise PortAudioError("Error querying device -1")
        return {"name": "fake", "max_input_channels": 1, "default_samplerate": rate}

    return SimpleNamespace(InputStream=InputStream, query_devices=query_devices,
                           PortAudioError=PortAudioError, opened=opened)


def test_microphone_blocks_at_its_own_rate() -> None:
    blocks = [np.full(1536, i, np.float32) for i in range(3)]
    sd = fake_sd(plays=[blocks])
    mic = MicSource(sd=sd)
    assert mic.rate == 48000
    got = []
    with pytest.raises(SourceError, match=r"lost mid-stream.*--reconnect"):
        for block in mic:
            got.append(block)
    assert [b[0, 0] for b in got] == [0, 1, 2]
    assert sd.opened[0]["samplerate"] == 48000 and sd.opened[0]["channels"] == 1


def test_no_microphone_says_what_to_do() -> None:
    with pytest.raises(SourceError, match=r"no microphone.*--list-devices.*--input"):
        MicSource(sd=fake_sd(plays=[], devices=False))


def test_a_lost_microphone_comes_back_with_reconnect() -> None:
    clock = FakeClock()
    one, two = [np.zeros(1536, np.float32)], [np.ones(1536, np.float32)]
    sd = fake_sd(plays=[one, PortAudioError("no device"), PortAudioError("no device"), two])
    got = []
    with pytest.raises(KeyboardInterrupt):
        for block in MicSource(sd=sd, rate=SR, reconnect=True, clock=clock):
            got.append(None if block is None else float(block[0, 0]))
    assert got == [0.0, None, 1.0, None]  # a gap where it was lost
    assert clock.slept == [2.0, 2.0]  # tried again every RECONNECT_S while missing


def test_sounddevice_missing_is_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from audiogate.deploy import sources

    def missing(name: str) -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(SourceError, match=r"audiogate\[live\].*libportaudio2"):
        sources.sounddevice_module()


# -------------------------------------------------------------------------------- loop
def test_a_gap_decides_what_was_open(band_gate: Any) -> None:
    wave = scene()
    blocks: list[np.ndarray | None] = [wave[:round(5.0 * SR)], None, wave[round(5.0 * SR):]]
    events: list[Event] = []
    listener = Listener(band_gate, rate=SR)
    assert run_listener(listener, iter(blocks), [events.append]) == 0
    # the hiss heard before the gap is decided there; its rest after the gap is a new sound
    assert [e.decision for e in events] == [ALLOWED, REJECTED, REJECTED]
    assert events[1].end == pytest.approx(5.0, abs=EDGE_S)
    assert 5.0 < events[2].start < events[2].end == pytest.approx(5.5, abs=EDGE_S)


def interrupted_at(wave: np.ndarray, *, cut: int, raise_: Any) -> Iterator[np.ndarray]:
    yield wave[:cut]
    raise_()
    yield wave[cut:]  # never reached


def test_ctrl_c_decides_the_last_sound_and_exits_130(band_gate: Any) -> None:
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    events: list[Event] = []
    closed: list[bool] = []

    class Action:
        def __call__(self, event: Event) -> None:
            events.append(event)

        def close(self) -> None:
            closed.append(True)

    source = interrupted_at(scene(), cut=round(5.0 * SR), raise_=ctrl_c)
    assert run_listener(Listener(band_gate, rate=SR), source, [Action()]) == 130
    assert [e.decision for e in events] == [ALLOWED, REJECTED] and closed == [True]


def test_sigterm_decides_the_last_sound_and_exits_0(band_gate: Any) -> None:
    events: list[Event] = []
    source = interrupted_at(scene(), cut=round(5.0 * SR),
                            raise_=lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert run_listener(Listener(band_gate, rate=SR), source, [events.append]) == 0
    assert [e.decision for e in events] == [ALLOWED, REJECTED]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


# ------------------------------------------------------------------------ speech (VAD)
@needs_espeak
def test_spoken_words_are_judged_per_speech_segment(band_gate: Any) -> None:
    """Three words with pauses: one event each, at the words (the band gate calls speech
    allowed); a refractory time longer than the pauses leaves the first alone."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    words = [espeak(w) for w in ("open", "seven", "garden")]
    wave = np.concatenate([quiet(rng, 0.8), *(np.concatenate([w, quiet(rng, 1.0)])
                                              for w in words)]).astype(np.float32)
    extents, at = [], round(0.8 * SR)
    for w in words:
        a, b = speech_extent(w, sr=SR)
        extents.append((at / SR + a, at / SR + b))
        at += w.size + SR
    events = listen(band_gate, wave, vad=True, refractory_s=0.0)
    assert [e.decision for e in events] == [ALLOWED] * 3
    for e, (a, b) in zip(events, extents, strict=True):
        assert abs(e.start - a) <= 0.15 and abs(e.end - b) <= 0.25
        assert e.n_windows >= 1
    assert len(listen(band_gate, wave, vad=True, refractory_s=10.0)) == 1


@needs_espeak
def test_a_long_speech_segment_is_judged_after_max_segment_s(band_gate: Any) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    talk = espeak("one two three four five six seven eight nine ten eleven twelve", speed=260)
    wave = np.concatenate([quiet(rng, 0.5), talk, quiet(rng, 1.0)]).astype(np.float32)
    events = listen(band_gate, wave, vad=True, refractory_s=0.0, max_segment_s=1.0)
    assert len(events) >= 2  # cut while still talking, not held until the end
    assert all(e.end - e.start <= 1.0 + 0.1 for e in events)  # the padding, a chunk
