"""Voice activity detection: known speech boundaries, noise, streaming = offline, Silero's own
segmentation, and the segmentation rules on probability sequences with known answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from audiogate.errors import AudiogateError, ConfigError
from audiogate.speech import vad
from audiogate.speech.vad import (
    CHUNK,
    SAMPLE_RATE,
    Segmenter,
    SileroVad,
    VadSettings,
    VadStream,
    default_vad,
    segments_from_probabilities,
    speech_segments,
    trim_silence,
)

from .speech import espeak, needs_espeak, speech_extent

CHUNK_S = CHUNK / SAMPLE_RATE
BOUNDARY_S = 0.1
"""How far a detected boundary may be from the true one."""
NO_PAD = VadSettings(pad_s=0.0)


def embed_in_silence(speech: np.ndarray, *, sr: int, lead_s: float, tail_s: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``speech`` between stretches of faint noise (-70 dB), as a recording would have."""
    lead, tail = np.zeros(round(lead_s * sr)), np.zeros(round(tail_s * sr))
    y = np.concatenate([lead, speech, tail])
    return (y + 3e-4 * rng.standard_normal(y.size)).astype(np.float32)


@needs_espeak
@pytest.mark.parametrize(("text", "voice", "sr"), [
    ("open the door please", "en+m3", 16000),
    ("seven", "en+f2", 16000),
    ("the weather is lovely today", "en-us+m7", 8000),
    ("yellow garden", "en+klatt", 22050),
])
def test_speech_between_silences_is_found_where_it_is(text: str, voice: str, sr: int,
                                                      rng: np.random.Generator) -> None:
    speech = espeak(text, voice=voice, sr=sr)
    first, last = speech_extent(speech, sr=sr)
    lead_s = 0.8
    y = embed_in_silence(speech, sr=sr, lead_s=lead_s, tail_s=1.2, rng=rng)
    segments = speech_segments(y, sr=sr, settings=NO_PAD)
    assert len(segments) == 1, segments
    (start, end), = segments
    assert abs(start - (lead_s + first)) <= BOUNDARY_S
    assert abs(end - (lead_s + last)) <= BOUNDARY_S
    padded, = speech_segments(y, sr=sr)  # default pad: 30 ms around the same segment
    assert padded[0] == pytest.approx(start - 0.03, abs=1e-6)
    assert padded[1] == pytest.approx(end + 0.03, abs=1e-6)


@needs_espeak
def test_words_apart_are_separate_segments(rng: np.random.Generator) -> None:
    one, two = espeak("morning", sr=SAMPLE_RATE), espeak("kitchen", sr=SAMPLE_RATE)
    y = embed_in_silence(np.concatenate([one, np.zeros(SAMPLE_RATE, np.float32), two]),
                         sr=SAMPLE_RATE, lead_s=0.5, tail_s=0.5, rng=rng)
    segments = speech_segments(y, sr=SAMPLE_RATE, settings=NO_PAD)
    assert len(segments) == 2, segments
    second_start = 0.5 + one.size / SAMPLE_RATE + 1.0 + speech_extent(two, sr=SAMPLE_RATE)[0]
    assert abs(segments[1][0] - second_start) <= BOUNDARY_S


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    y = np.fft.irfft(spectrum, n)
    return y / np.abs(y).max()


@pytest.mark.parametrize("kind", ["white", "pink", "hum", "silence"])
@pytest.mark.parametrize("level", [0.01, 0.3])
def test_noise_is_not_speech(kind: str, level: float, rng: np.random.Generator) -> None:
    n = 4 * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    y = {"white": rng.standard_normal(n) / 3, "pink": _pink(n, rng),
         "hum": np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t),
         "silence": np.zeros(n)}[kind]
    segments = speech_segments((level * y).astype(np.float32), sr=SAMPLE_RATE)
    assert sum(e - s for s, e in segments) < 0.1 * n / SAMPLE_RATE, segments


@needs_espeak
def test_streaming_in_pieces_equals_offline(rng: np.random.Generator) -> None:
    y = embed_in_silence(np.concatenate([espeak("open", sr=SAMPLE_RATE),
                                         np.zeros(8000, np.float32),
                                         espeak("seven rivers", sr=SAMPLE_RATE)]),
                         sr=SAMPLE_RATE, lead_s=0.3, tail_s=0.4, rng=rng)
    offline = default_vad().probabilities([y])[0]
    stream, segmenter = VadStream(), Segmenter()
    probs, segments, cut = [], [], 0
    while cut < y.size:
        piece = y[cut:cut + int(rng.integers(1, 3000))]
        cut += piece.size
        new = stream.push(piece)
        probs.append(new)
        segments += segmenter.push(new)
    last = stream.flush()
    probs.append(last)
    segments += segmenter.push(last) + segmenter.finish(y.size / SAMPLE_RATE)
    np.testing.assert_allclose(np.concatenate(probs), offline, atol=1e-6)
    assert stream.n_chunks == offline.size == -(-y.size // CHUNK)
    want = speech_segments(y, sr=SAMPLE_RATE)
    assert [(round(s, 6), round(min(e, y.size / SAMPLE_RATE), 6)) for s, e in segments] == \
        [(round(s, 6), round(e, 6)) for s, e in want]


@needs_espeak
def test_batched_probabilities_equal_one_at_a_time() -> None:
    waves = [espeak(w, sr=SAMPLE_RATE) for w in ("yes", "seven rivers", "no")]
    together = default_vad().probabilities(waves)
    for wave, row in zip(waves, together, strict=True):
        np.testing.assert_allclose(default_vad().probabilities([wave])[0], row, atol=1e-6)
    assert default_vad().probabilities([]) == []


@needs_espeak
@pytest.mark.parametrize("settings", [VadSettings(), VadSettings(threshold=0.7, pad_s=0.05,
                                                                 min_silence_s=0.2)])
def test_segments_equal_silero_get_speech_timestamps(settings: VadSettings,
                                                     rng: np.random.Generator) -> None:
    from silero_vad.utils_vad import OnnxWrapper, get_speech_timestamps

    y = embed_in_silence(np.concatenate([espeak("open the door", sr=SAMPLE_RATE),
                                         np.zeros(6000, np.float32),
                                         espeak("please", voice="en+f2", sr=SAMPLE_RATE)]),
                         sr=SAMPLE_RATE, lead_s=0.6, tail_s=0.7, rng=rng)
    model = OnnxWrapper(str(vad.model_path()), force_onnx_cpu=True)
    want = get_speech_timestamps(
        torch.from_numpy(y), model, threshold=settings.threshold,
        min_speech_duration_ms=round(1000 * settings.min_speech_s),
        min_silence_duration_ms=round(1000 * settings.min_silence_s),
        speech_pad_ms=round(1000 * settings.pad_s))
    got = speech_segments(y, sr=SAMPLE_RATE, settings=settings)
    assert len(got) == len(want) >= 1
    for (start, end), ref in zip(got, want, strict=True):
        assert start == pytest.approx(ref["start"] / SAMPLE_RATE, abs=1.5 / SAMPLE_RATE)
        assert end == pytest.approx(ref["end"] / SAMPLE_RATE, abs=1.5 / SAMPLE_RATE)


def _segments(probs: list[float], settings: VadSettings = NO_PAD) -> list[tuple[float, float]]:
    return segments_from_probabilities(np.asarray(probs), duration_s=len(probs) * CHUNK_S,
                                       settings=settings)


def test_segmenter_known_answers() -> None:
    c = CHUNK_S
    assert _segments([0] * 10 + [1] * 20 + [0] * 10) == [(10 * c, 30 * c)]
    assert _segments([0] * 10 + [1] * 5 + [0] * 10) == []  # 0.16 s < min_speech_s
    # a 2-chunk (64 ms) dip is shorter than min_silence_s (0.1 s): one segment
    assert _segments([1] * 20 + [0] * 2 + [1] * 20 + [0] * 10) == [(0.0, 42 * c)]
    # silence is timed from the start of its first chunk to the start of the current one, as
    # in Silero: 4 silent chunks measure 96 ms (< 0.1 s), 5 measure 128 ms and split it
    assert _segments([1] * 20 + [0] * 4 + [1] * 20 + [0] * 10) == [(0.0, 44 * c)]
    assert _segments([1] * 20 + [0] * 5 + [1] * 20 + [0] * 10) == [(0.0, 20 * c),
                                                                   (25 * c, 45 * c)]
    # 0.4 is below the threshold but above the exit level (0.35): speech goes on
    assert _segments([1] * 10 + [0.4] * 10 + [0] * 10) == [(0.0, 20 * c)]
    # still speaking at the end: the segment ends with the signal
    assert _segments([0] * 5 + [1] * 20) == [(5 * c, 25 * c)]
    padded = _segments([0] * 10 + [1] * 20 + [0] * 10, VadSettings(pad_s=0.05))
    assert padded == [(pytest.approx(10 * c - 0.05), pytest.approx(30 * c + 0.05))]
    assert _segments([1] * 20, VadSettings(pad_s=0.05)) == [(0.0, pytest.approx(20 * c))]


def test_trim_silence_of_silence_is_empty() -> None:
    assert trim_silence(np.zeros(16000, np.float32), sr=16000).size == 0
    assert trim_silence(np.zeros(3 * 8000, np.float32), sr=8000).dtype == np.float32


@needs_espeak
def test_trim_silence_length(rng: np.random.Generator) -> None:
    speech = espeak("garden window", sr=8000)
    y = embed_in_silence(speech, sr=8000, lead_s=1.0, tail_s=1.0, rng=rng)
    (start, end), = speech_segments(y, sr=8000)
    trimmed = trim_silence(y, sr=8000)
    assert trimmed.size == round(end * 8000) - round(start * 8000)
    np.testing.assert_array_equal(trimmed, y[round(start * 8000):round(end * 8000)])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"threshold": 0.0}, "threshold"), ({"threshold": 1.0}, "threshold"),
    ({"exit_threshold": 0.6}, "exit_threshold"), ({"min_speech_s": -1.0}, "min_speech_s"),
    ({"min_silence_s": 0.04}, "pad_s"), ({"pad_s": 100.0}, "pad_s")])
def test_bad_settings_are_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        VadSettings(**kwargs)  # type: ignore[arg-type]


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample rate"):
        speech_segments(np.zeros(100, np.float32), sr=0)


def test_missing_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AudiogateError, match=r"pip install 'audiogate\[voice\]'"):
        SileroVad()


def test_neither_torchaudio_nor_the_silero_package_is_imported() -> None:
    code = ("import sys, numpy as np\n"
            "from audiogate.speech.vad import speech_segments\n"
            "speech_segments(np.zeros(16000, np.float32), sr=16000)\n"
            "print(sorted(m for m in ('torchaudio', 'silero_vad') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
