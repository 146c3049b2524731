"""Voice activity detection with the Silero VAD model, run by onnxruntime.

The ``silero-vad`` wheel ships the model as ONNX (``silero_vad/data/silero_vad.onnx``); it is
found without importing the package (whose import pulls PyTorch helpers and, for audio I/O,
torchaudio) and nothing is downloaded. The model is stateful: each step reads
:data:`CHUNK` new samples at 16 kHz (32 ms) plus the :data:`CONTEXT` samples before them and
an LSTM state, and gives the probability that the chunk is speech.

* :class:`SileroVad`: the model; chunk probabilities of many clips in one batch.
* :class:`VadStream`: streaming probabilities (push samples as they arrive).
* :class:`Segmenter`: probabilities -> speech segments, incrementally, by Silero's own rules
  (``get_speech_timestamps``): speech starts at a chunk with probability >= ``threshold``,
  ends after ``min_silence_s`` below the exit threshold, is kept if longer than
  ``min_speech_s`` and padded by ``pad_s`` on each side.
* :func:`speech_segments`, :func:`trim_silence`: the offline helpers.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ..errors import AudiogateError, ConfigError

SAMPLE_RATE = 16000
"""Rate (Hz) the model runs at; other rates are resampled."""
CHUNK = 512
"""New samples per model step (32 ms)."""
CONTEXT = 64
"""Samples of the previous chunk the model sees again with each new one."""
STATE_SIZE = 128
MODEL_PACKAGE = "silero_vad"
MODEL_FILE = "silero_vad.onnx"
INSTALL_HINT = "pip install 'audiogate[voice]'"

Segment = tuple[float, float]
"""``(start, end)`` of speech in seconds."""


@dataclass(frozen=True, kw_only=True)
class VadSettings:
    """Silero's segmentation parameters (its defaults).

    ``threshold``: speech probability that starts speech; ``exit_threshold``: probability
    below which speech may end (None: ``threshold - 0.15``, at least 0.01);
    ``min_speech_s``: shorter segments are dropped; ``min_silence_s``: silence that ends a
    segment; ``pad_s``: added before and after each segment (at most half of
    ``min_silence_s``, so padded segments never overlap).
    """

    threshold: float = 0.5
    exit_threshold: float | None = None
    min_speech_s: float = 0.25
    min_silence_s: float = 0.1
    pad_s: float = 0.03

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if self.exit_threshold is not None and not 0 < self.exit_threshold <= self.threshold:
            raise ConfigError(f"VAD exit_threshold must be in (0, threshold = "
                              f"{self.threshold}], got {self.exit_threshold}")
        for name in ("min_speech_s", "min_silence_s", "pad_s"):
            if not 0 <= getattr(self, name) <= 60:
                raise ConfigError(f"VAD {name} must be in [0, 60] s, got {getattr(self, name)}")
        if self.pad_s > self.min_silence_s / 2:
            raise ConfigError(f"VAD pad_s ({self.pad_s}) must be at most half of "
                              f"min_silence_s ({self.min_silence_s})")

    @property
    def exit_level(self) -> float:
        """The exit threshold in effect."""
        if self.exit_threshold is not None:
            return self.exit_threshold
        return max(self.threshold - 0.15, 0.01)


def model_path() -> Path:
    """The ONNX model inside the installed ``silero-vad`` package (found without importing
    it); :class:`AudiogateError` with the install command if it is missing."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise AudiogateError(f"voice activity detection needs the Silero VAD model from the "
                         f"'silero-vad' package, which is not installed: {INSTALL_HINT}")


class SileroVad:
    """The Silero VAD model in an onnxruntime session (one intra-op thread: the model is
    tiny, and callers run it in parallel processes)."""

    def __init__(self, path: str | Path | None = None) -> None:
        import onnxruntime as ort  # local: optional dependency

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.path = str(path or model_path())
        self.session = ort.InferenceSession(self.path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    @staticmethod
    def initial_state(batch: int) -> np.ndarray:
        """The model state before any audio ``[shape=(2, batch, STATE_SIZE)]``."""
        return np.zeros((2, batch, STATE_SIZE), dtype=np.float32)

    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One model step: ``frames`` ``[shape=(batch, CONTEXT + CHUNK)]`` (context then new
        chunk), ``state`` -> (speech probabilities ``[shape=(batch,)]``, next state)."""
        probs, state = self.session.run(None, {"input": frames, "state": state, "sr": self._sr})
        return np.asarray(probs, dtype=np.float32)[:, 0], state

    def probabilities(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Chunk speech probabilities of each 16 kHz clip, all clips in one batch;
        ``[shape=(ceil(n / CHUNK),)]`` each (the last chunk zero-padded)."""
        if not waves:
            return []
        n_chunks = [-(-len(w) // CHUNK) for w in waves]
        padded = np.zeros((len(waves), CONTEXT + max(n_chunks) * CHUNK), dtype=np.float32)
        for row, w in enumerate(waves):
            padded[row, CONTEXT:CONTEXT + len(w)] = w
        state = self.initial_state(len(waves))
        out = np.empty((len(waves), max(n_chunks)), dtype=np.float32)
        for i in range(max(n_chunks)):
            out[:, i], state = self.step(padded[:, i * CHUNK:(i + 1) * CHUNK + CONTEXT], state)
        return [out[row, :n] for row, n in enumerate(n_chunks)]


@functools.lru_cache(maxsize=1)
def default_vad() -> SileroVad:
    """One shared model per process."""
    return SileroVad()


class VadStream:
    """Streaming speech probabilities of one 16 kHz signal: :meth:`push` any number of samples,
    get the probability of every chunk they complete."""

    def __init__(self, vad: SileroVad | None = None) -> None:
        self.vad = vad or default_vad()
        self._state = SileroVad.initial_state(1)
        self._buffer = np.zeros(CONTEXT, dtype=np.float32)  # context + incomplete chunk
        self.n_chunks = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities ``[shape=(k,)]`` of the ``k`` chunks completed by ``samples``."""
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, np.float32).ravel()])
        k = (len(self._buffer) - CONTEXT) // CHUNK
        probs = np.empty(k, dtype=np.float32)
        for i in range(k):
            frame = self._buffer[None, i * CHUNK:(i + 1) * CHUNK + CONTEXT]
            probs[i:i + 1], self._state = self.vad.step(frame, self._state)
        self._buffer = self._buffer[k * CHUNK:]
        self.n_chunks += k
        return probs

    def flush(self) -> np.ndarray:
        """The probability of the last, incomplete chunk (zero-padded), if there is one."""
        pending = len(self._buffer) - CONTEXT
        if not pending:
            return np.zeros(0, np.float32)
        return self.push(np.zeros(CHUNK - pending, np.float32))


class Segmenter:
    """Chunk probabilities -> speech segments (seconds), incrementally.

    :meth:`push` returns the segments that the new probabilities close; :meth:`finish` the
    one still open at the end of the signal. Segments never overlap and come in order.
    """

    def __init__(self, settings: VadSettings = VadSettings()) -> None:
        self.settings = settings
        self._n = 0  # chunks seen
        self._start: int | None = None  # first chunk of the open segment
        self._silence: int | None = None  # first silent chunk inside it

    @property
    def open_since(self) -> float | None:
        """Where the segment still open begins (seconds, before padding), None if none is."""
        return None if self._start is None else self._start * CHUNK / SAMPLE_RATE

    def _segment(self, start: int, end_s: float) -> Segment:
        pad = self.settings.pad_s
        return max(0.0, start * CHUNK / SAMPLE_RATE - pad), end_s + pad

    def push(self, probs: np.ndarray) -> list[Segment]:
        s = self.settings
        min_silence = s.min_silence_s * SAMPLE_RATE / CHUNK  # in chunks
        min_speech = s.min_speech_s * SAMPLE_RATE / CHUNK
        closed: list[Segment] = []
        for p in np.asarray(probs, dtype=np.float64):
            i, self._n = self._n, self._n + 1
            if p >= s.threshold:
                self._silence = None
                if self._start is None:
                    self._start = i
                continue
            if self._start is None or p >= s.exit_level:
                continue
            if self._silence is None:
                self._silence = i
            if i - self._silence < min_silence:
                continue
            if self._silence - self._start > min_speech:
                closed.append(self._segment(self._start, self._silence * CHUNK / SAMPLE_RATE))
            self._start = self._silence = None
        return closed

    def finish(self, duration_s: float) -> list[Segment]:
        """The segment open at the end of a signal of ``duration_s`` seconds (ending there),
        if long enough; the segmenter is then reset."""
        start, self._start, self._silence, self._n = self._start, None, None, 0
        if start is None:
            return []
        if duration_s * SAMPLE_RATE - start * CHUNK <= self.settings.min_speech_s * SAMPLE_RATE:
            return []
        begin, _ = self._segment(start, duration_s)
        return [(begin, duration_s)]


def to_vad_rate(wave: np.ndarray, *, sr: int) -> np.ndarray:
    """A 1-D signal at ``sr`` Hz resampled to the model's 16 kHz, float32."""
    y = np.asarray(wave, dtype=np.float32).ravel()
    if sr <= 0:
        raise ConfigError(f"sample rate must be > 0 Hz, got {sr}")
    if sr != SAMPLE_RATE and y.size:
        y = soxr.resample(y, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return y


def segments_from_probabilities(probs: np.ndarray, *, duration_s: float,
                                settings: VadSettings = VadSettings()) -> list[Segment]:
    """Speech segments of a whole signal from its chunk probabilities."""
    segmenter = Segmenter(settings)
    segments = segmenter.push(probs)
    segments += segmenter.finish(duration_s)
    return [(start, min(end, duration_s)) for start, end in segments]


def speech_segments(wave: np.ndarray, *, sr: int, settings: VadSettings = VadSettings(),
                    vad: SileroVad | None = None) -> list[Segment]:
    """Speech segments ``[(start_s, end_s), ...]`` of a 1-D signal at ``sr`` Hz, in order,
    within ``[0, duration]``."""
    y = to_vad_rate(wave, sr=sr)
    stream = VadStream(vad)
    probs = np.concatenate([stream.push(y), stream.flush()])
    return segments_from_probabilities(probs, duration_s=y.size / SAMPLE_RATE,
                                       settings=settings)


def cut_segments(wave: np.ndarray, segments: Sequence[Segment], *, sr: int) -> np.ndarray:
    """The samples of ``wave`` (at ``sr`` Hz) inside ``segments``, joined; empty if none."""
    y = np.asarray(wave).ravel()
    parts = [y[round(start * sr):round(end * sr)] for start, end in segments]
    return np.concatenate(parts) if parts else y[:0]


def trim_silence(wave: np.ndarray, *, sr: int, settings: VadSettings = VadSettings(),
                 vad: SileroVad | None = None) -> np.ndarray:
    """The speech of ``wave`` (at ``sr`` Hz, same rate out): its speech segments joined, each
    with ``settings.pad_s`` of context; empty if no speech is found."""
    return cut_segments(wave, speech_segments(wave, sr=sr, settings=settings, vad=vad), sr=sr)

