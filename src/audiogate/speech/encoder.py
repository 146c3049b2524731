"""The GE2E speaker encoder (Wan et al., 2018) with resemblyzer's trained weights.

Waveform at 16 kHz -> one unit-length 256-d embedding per utterance, computed as
resemblyzer's ``VoiceEncoder.embed_utterance`` does:

1. volume normalised to ``target_dbfs`` (only ever raised, as resemblyzer's
   ``normalize_volume(increase_only=True)``);
2. 40-band mel power spectrogram, 25 ms Hann window, 10 ms hop, centred frames (librosa's
   ``melspectrogram`` defaults: Slaney mel scale and norm, zero padding; *not* log-scaled);
3. partial windows of :data:`PARTIAL_FRAMES` frames (1.6 s) every ``partial_step`` frames
   (77 by default: resemblyzer's ``rate=1.3`` per second, about 50% overlap); the last window
   is zero-padded and kept only if at least ``min_coverage`` of it is real audio, and an
   utterance shorter than one window gives one padded window;
4. each window -> 3-layer LSTM (256 units) -> last hidden state -> linear 256 -> ReLU -> L2
   norm; the utterance embedding is the mean of its windows', L2-normalised again.

Windows are cut from the waveform, not the spectrogram: window ``s`` is the
:data:`WINDOW_SAMPLES` samples from ``s * HOP - N_FFT // 2``, zero outside the utterance, whose
uncentred STFT frames are exactly frames ``s .. s + 159`` of the utterance's centred STFT. So
the network's input is ``[shape=(batch, WINDOW_SAMPLES)]`` whatever the utterance length,
windows of many clips go through it in one batch, and the exported ONNX graph needs no
dynamic slicing (:mod:`audiogate.speech.export`).

The weights are read from the ``resemblyzer`` package's ``pretrained.pt`` (Apache-2.0) with
``torch.load(weights_only=True)``; the package itself is never imported (its import needs
webrtcvad) and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AudiogateError, ConfigError
from ..features.dft import dft_basis, dft_power
from ..files import sha256_file

SAMPLE_RATE = 16000
"""Sample rate (Hz) the encoder was trained at."""
N_FFT = 400
"""STFT size and Hann window length: 25 ms."""
HOP = 160
"""STFT hop: 10 ms."""
N_MELS = 40
PARTIAL_FRAMES = 160
"""Frames per partial window: 1.6 s."""
WINDOW_SAMPLES = (PARTIAL_FRAMES - 1) * HOP + N_FFT
"""Samples under one partial window's frames (25 840)."""
HIDDEN = 256
EMBED_DIM = 256
LAYERS = 3
NORM_EPS = 1e-12
"""Smallest norm divided by; an all-zero embedding (ReLU cut everything) stays zero."""
INT16_MAX = 2**15 - 1
WEIGHTS_PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
INSTALL_HINT = "pip install 'audiogate[voice]'"


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """How utterances are cut and normalised; the defaults are resemblyzer's.

    ``partial_step``: frames between window starts (1..160); ``min_coverage``: fraction of
    the last window that must be real audio for it to count, in (0, 1]; ``target_dbfs``:
    clips quieter than this RMS level (dB re full scale) are raised to it.
    """

    partial_step: int = 77
    min_coverage: float = 0.75
    target_dbfs: float = -30.0

    def __post_init__(self) -> None:
        if not 1 <= self.partial_step <= PARTIAL_FRAMES:
            raise ConfigError(f"partial_step must be in [1, {PARTIAL_FRAMES}] frames, got "
                              f"{self.partial_step}")
        if not 0 < self.min_coverage <= 1:
            raise ConfigError(f"min_coverage must be in (0, 1], got {self.min_coverage}")
        if not -100 <= self.target_dbfs <= 0:
            raise ConfigError(f"target_dbfs must be in [-100, 0] dB, got {self.target_dbfs}")


def normalize_volume(wave: np.ndarray, *, target_dbfs: float) -> np.ndarray:
    """Raise a quiet clip ``[shape=(n,)]`` to RMS ``target_dbfs``; louder clips and digital
    silence are returned unchanged (resemblyzer's ``increase_only=True``)."""
    y = np.asarray(wave, dtype=np.float32)
    rms = math.sqrt(float(np.mean(np.square(y * INT16_MAX, dtype=np.float64)))) if y.size else 0
    if rms == 0.0:
        return y
    change_db = target_dbfs - 20.0 * math.log10(rms / INT16_MAX)
    if change_db <= 0:
        return y
    return (y * 10.0 ** (change_db / 20.0)).astype(np.float32)


def partial_starts(n_samples: int, *, settings: EncoderSettings) -> np.ndarray:
    """First STFT frame of each partial window of an ``n_samples``-long utterance
    ``[shape=(k,)]``, k >= 1 (resemblyzer's ``compute_partial_slices``)."""
    n_frames = math.ceil((n_samples + 1) / HOP)
    steps = max(1, n_frames - PARTIAL_FRAMES + settings.partial_step + 1)
    starts = np.arange(0, steps, settings.partial_step, dtype=np.int64)
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < settings.min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def partial_windows(wave: np.ndarray, *, settings: EncoderSettings) -> np.ndarray:
    """The utterance's windows ``[shape=(k, WINDOW_SAMPLES)]`` float32, zero outside it."""
    y = np.asarray(wave, dtype=np.float32)
    starts = partial_starts(y.size, settings=settings) * HOP - N_FFT // 2
    lead = N_FFT // 2
    padded = np.zeros(lead + int(starts[-1]) + WINDOW_SAMPLES, dtype=np.float32)
    padded[lead:lead + y.size] = y[: padded.size - lead]
    index = (starts + lead)[:, None] + np.arange(WINDOW_SAMPLES)[None, :]
    return padded[index]


def mel_filterbank() -> np.ndarray:
    """librosa's default (Slaney) mel filterbank ``[shape=(N_MELS, N_FFT // 2 + 1)]``."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)


class MelFrontEnd(nn.Module):
    """Windows ``[shape=(batch, WINDOW_SAMPLES)]`` -> mel power
    ``[shape=(batch, PARTIAL_FRAMES, N_MELS)]`` (uncentred STFT with ``torch.stft``)."""

    window: torch.Tensor
    mel: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank()), persistent=False)

    def power(self, windows: torch.Tensor) -> torch.Tensor:
        """Power spectrogram ``[shape=(batch, N_FFT // 2 + 1, PARTIAL_FRAMES)]``."""
        spec = torch.stft(windows, n_fft=N_FFT, hop_length=HOP, window=self.window,
                          center=False, return_complex=True)
        return spec.real.square() + spec.imag.square()

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.mel, self.power(windows)).transpose(1, 2)


class DftMelFrontEnd(MelFrontEnd):
    """Export-friendly twin of :class:`MelFrontEnd`: the STFT as a strided 1-D convolution
    with a fixed Hann-windowed DFT basis (ONNX has no complex tensors), as
    :class:`~audiogate.features.dft.DftLogMel` does for the classifier's front end."""

    basis: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("basis", dft_basis(torch.hann_window(N_FFT, dtype=torch.float64),
                                                n_fft=N_FFT), persistent=False)

    def power(self, windows: torch.Tensor) -> torch.Tensor:
        return dft_power(windows[:, None, :], self.basis, n_fft=N_FFT, hop=HOP)


class SpeakerEncoder(nn.Module):
    """Partial windows ``[shape=(batch, WINDOW_SAMPLES)]`` at 16 kHz -> unit-length window
    embeddings ``[shape=(batch, EMBED_DIM)]`` (all >= 0, after the ReLU).

    Parameter names match resemblyzer's ``VoiceEncoder`` (``lstm.*``, ``linear.*``).
    """

    def __init__(self, *, frontend: MelFrontEnd | None = None) -> None:
        super().__init__()
        self.frontend = frontend if frontend is not None else MelFrontEnd()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBED_DIM)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.frontend(windows))
        raw = F.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(NORM_EPS)


def weights_path() -> Path:
    """``pretrained.pt`` inside the installed ``resemblyzer`` package (found without importing
    it); :class:`AudiogateError` with the install command if it is missing."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise AudiogateError(f"the voice gate needs the pretrained speaker encoder from the "
                         f"'{WEIGHTS_PACKAGE}' package, which is not installed: "
                         f"{INSTALL_HINT}")


@functools.lru_cache(maxsize=1)
def weights_digest() -> str:
    """SHA-256 of the weights file (part of every embedding cache key and voice profile)."""
    return sha256_file(weights_path())


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = payload["model_state"]
    except Exception as exc:  # any unreadable or unexpected file
        raise AudiogateError(f"{path}: not a usable speaker-encoder weights file ({exc}); "
                             f"reinstall it: {INSTALL_HINT}") from None
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}


def load_encoder(*, exportable: bool = False) -> SpeakerEncoder:
    """The pretrained encoder in eval mode on the CPU; ``exportable`` puts the DFT-convolution
    front end in it (:class:`DftMelFrontEnd`)."""
    path = weights_path()
    encoder = SpeakerEncoder(frontend=DftMelFrontEnd() if exportable else None)
    missing, unexpected = encoder.load_state_dict(_state_dict(path), strict=False)
    if unexpected or [k for k in missing if not k.startswith("frontend.")]:
        raise AudiogateError(f"{path}: weights do not fit the GE2E encoder (missing "
                             f"{missing}, unexpected {unexpected})")
    return encoder.eval()


WindowRunner = Callable[[np.ndarray], np.ndarray]
"""Windows ``[shape=(batch, WINDOW_SAMPLES)]`` float32 -> embeddings
``[shape=(batch, EMBED_DIM)]``: the PyTorch encoder or its ONNX export."""


RUN_THREADS = 1
"""Intra-op threads the encoder runs with. Its LSTM steps 160 frames one after another on
small batches: a second thread gains nothing, and on a busy machine threads that wait for each
other at every step make it 3-20 times slower (measured on 2 shared cores)."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` PyTorch intra-op threads, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_runner(encoder: SpeakerEncoder, *, threads: int = RUN_THREADS) -> WindowRunner:
    """Run ``encoder`` without gradients on numpy batches, with ``threads`` intra-op
    threads."""
    def run(windows: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch_threads(threads):
            return encoder(torch.from_numpy(windows)).numpy()
    return run


def embed_utterances(waves: Sequence[np.ndarray], *, run: WindowRunner,
                     settings: EncoderSettings = EncoderSettings(),
                     batch_windows: int = 64) -> np.ndarray:
    """Utterance embeddings ``[shape=(len(waves), EMBED_DIM)]`` float32, unit length (zero
    for an utterance every window of which the ReLU silenced).

    ``waves``: 1-D float arrays at :data:`SAMPLE_RATE`, any lengths (volume is normalised
    here). Windows of all utterances go through ``run`` in batches of ``batch_windows``.
    """
    if batch_windows < 1:
        raise ConfigError(f"batch_windows must be >= 1, got {batch_windows}")
    if not waves:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    windows = [partial_windows(normalize_volume(w, target_dbfs=settings.target_dbfs),
                               settings=settings) for w in waves]
    counts = np.asarray([len(w) for w in windows])
    stacked = np.concatenate(windows)
    partial = np.concatenate([run(stacked[i:i + batch_windows])
                              for i in range(0, len(stacked), batch_windows)])
    sums = np.add.reduceat(partial.astype(np.float64), np.cumsum(counts) - counts, axis=0)
    means = sums / counts[:, None]
    norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), NORM_EPS)
    return (means / norms).astype(np.float32)
