"""The GE2E speaker encoder: its front end against librosa, its windows and embeddings against
resemblyzer's own ``VoiceEncoder``, and its ONNX export against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiogate.data.synth import voice_like
from audiogate.errors import AudiogateError, CheckpointError, ConfigError
from audiogate.speech import encoder, export
from audiogate.speech.encoder import (
    EMBED_DIM,
    HOP,
    N_FFT,
    N_MELS,
    PARTIAL_FRAMES,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    DftMelFrontEnd,
    EncoderSettings,
    MelFrontEnd,
    embed_utterances,
    load_encoder,
    normalize_volume,
    partial_starts,
    partial_windows,
    torch_runner,
)

from .speech import espeak, needs_espeak

with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology (deprecated)
    warnings.simplefilter("ignore", DeprecationWarning)
    import resemblyzer
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

TOL = 1e-4
"""Largest absolute difference of an embedding component accepted (reached: ~3e-7)."""


@pytest.fixture(scope="module")
def reference() -> VoiceEncoder:
    return VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def run() -> encoder.WindowRunner:
    return torch_runner(load_encoder())


def clip(seconds: float, *, seed: int = 0, amp: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return amp * voice_like(rng=rng, duration=seconds, sr=SAMPLE_RATE, snr_db=25.0)


@pytest.mark.parametrize("front", [MelFrontEnd, DftMelFrontEnd])
def test_front_ends_equal_librosa_mel_power(front: type[MelFrontEnd], rng: np.random.Generator,
                                            ) -> None:
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    windows = np.stack([0.3 * rng.standard_normal(WINDOW_SAMPLES),
                        0.5 * np.sin(2 * np.pi * 440 * t), clip(1.7)[:WINDOW_SAMPLES],
                        np.zeros(WINDOW_SAMPLES)]).astype(np.float32)
    with torch.no_grad():
        got = front()(torch.from_numpy(windows)).numpy()
    assert got.shape == (4, PARTIAL_FRAMES, N_MELS)
    for w, g in zip(windows, got, strict=True):
        want = librosa.feature.melspectrogram(y=w, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                              n_mels=N_MELS, center=False).T
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5 * max(float(want.max()), 1))


@pytest.mark.parametrize("n_samples", [400, 3000, 25_600, 25_601, 38_000, 41_000, 97_123])
def test_windows_are_the_partial_slices_of_the_centred_spectrogram(n_samples: int) -> None:
    """Window ``s`` seen through an uncentred STFT = frames ``s..s+159`` of the utterance's
    centred mel spectrogram, computed as resemblyzer does (zero-padded to the last slice)."""
    wave = clip(n_samples / SAMPLE_RATE + 0.01, seed=n_samples)[:n_samples]
    wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(n_samples, 1.3, 0.75)
    padded = np.pad(wave, (0, max(0, wav_slices[-1].stop - n_samples)))
    reference_mel = wav_to_mel_spectrogram(padded)
    windows = partial_windows(wave, settings=EncoderSettings())
    assert windows.shape == (len(mel_slices), WINDOW_SAMPLES)
    with torch.no_grad():
        ours = MelFrontEnd()(torch.from_numpy(windows)).numpy()
    for mine, s in zip(ours, mel_slices, strict=True):
        want = reference_mel[s]
        np.testing.assert_allclose(mine, want, rtol=1e-4, atol=1e-5 * float(want.max()))


@settings(max_examples=200, deadline=None)
@given(n_samples=st.integers(1, 400_000), rate=st.floats(0.7, 5.0),
       min_coverage=st.floats(0.01, 1.0))
def test_partial_starts_equal_resemblyzer(n_samples: int, rate: float,
                                          min_coverage: float) -> None:
    step = int(np.round(SAMPLE_RATE / rate / HOP))
    _, mel_slices = VoiceEncoder.compute_partial_slices(n_samples, rate, min_coverage)
    got = partial_starts(n_samples, settings=EncoderSettings(partial_step=step,
                                                             min_coverage=min_coverage))
    assert got.tolist() == [s.start for s in mel_slices]


@pytest.mark.parametrize("seconds", [0.3, 1.0, 1.6, 2.4, 5.0])
@pytest.mark.parametrize("amp", [1.0, 0.003])
def test_embeddings_equal_resemblyzer(seconds: float, amp: float, reference: VoiceEncoder,
                                      run: encoder.WindowRunner) -> None:
    wave = clip(seconds, seed=int(seconds * 10), amp=amp)
    want = reference.embed_utterance(resemblyzer.normalize_volume(wave, -30,
                                                                  increase_only=True))
    got = embed_utterances([wave], run=run)[0]
    assert np.abs(got - want).max() < TOL
    assert float(got @ want) > 0.9999


@needs_espeak
@pytest.mark.parametrize("voice", ["en+m3", "en+f2"])
def test_embeddings_equal_resemblyzer_on_its_preprocessed_speech(
        voice: str, reference: VoiceEncoder, run: encoder.WindowRunner) -> None:
    """resemblyzer's full preprocessing (volume, webrtcvad trimming) applied to real speech;
    audiogate's volume normalisation leaves that output unchanged."""
    speech = np.concatenate([np.zeros(8000, np.float32),
                             espeak("the quick brown fox jumps over the lazy dog", voice=voice)])
    prepared = resemblyzer.preprocess_wav(speech)
    assert prepared.size < speech.size  # silence was trimmed
    np.testing.assert_array_equal(normalize_volume(prepared, target_dbfs=-30.0), prepared)
    want = reference.embed_utterance(prepared)
    got = embed_utterances([prepared], run=run)[0]
    assert np.abs(got - want).max() < TOL


def test_batching_does_not_change_embeddings(run: encoder.WindowRunner) -> None:
    waves = [clip(s, seed=i) for i, s in enumerate((0.5, 3.3, 1.7, 0.05, 2.0))]
    together = embed_utterances(waves, run=run, batch_windows=3)
    for wave, row in zip(waves, together, strict=True):
        np.testing.assert_allclose(embed_utterances([wave], run=run)[0], row, atol=1e-6)
    assert together.shape == (5, EMBED_DIM) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_silence_gives_a_finite_embedding(run: encoder.WindowRunner) -> None:
    out = embed_utterances([np.zeros(16000, np.float32)], run=run)
    assert np.isfinite(out).all()
    assert embed_utterances([], run=run).shape == (0, EMBED_DIM)


def test_normalize_volume_raises_quiet_clips_only() -> None:
    quiet, loud = clip(1.0, amp=0.001), clip(1.0)
    raised = normalize_volume(quiet, target_dbfs=-30.0)
    assert 20 * np.log10(np.sqrt(np.mean(raised.astype(np.float64) ** 2))) == \
        pytest.approx(-30.0, abs=1e-3)
    np.testing.assert_allclose(raised, resemblyzer.normalize_volume(quiet, -30,
                                                                    increase_only=True),
                               rtol=1e-5)
    np.testing.assert_array_equal(normalize_volume(loud, target_dbfs=-30.0), loud)
    silence = np.zeros(100, np.float32)
    np.testing.assert_array_equal(normalize_volume(silence, target_dbfs=-30.0), silence)


@pytest.mark.parametrize("kwargs", [{"partial_step": 0}, {"partial_step": 161},
                                    {"min_coverage": 0.0}, {"min_coverage": 1.5},
                                    {"target_dbfs": 3.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        EncoderSettings(**kwargs)  # type: ignore[arg-type]


def test_missing_weights_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AudiogateError, match=r"pip install 'audiogate\[voice\]'"):
        load_encoder()


def test_weights_load_with_weights_only() -> None:
    payload = torch.load(encoder.weights_path(), map_location="cpu", weights_only=True)
    state = load_encoder().state_dict()
    for key in ("lstm.weight_ih_l0", "lstm.weight_hh_l2", "linear.weight", "linear.bias"):
        assert torch.equal(state[key], payload["model_state"][key])


@needs_espeak
def test_same_speaker_is_closer_than_another(run: encoder.WindowRunner) -> None:
    """Known answer with the trained weights: words of one espeak voice are more alike than
    the same words from a voice of another family (random weights fail this)."""
    words = ["open", "seven", "yellow", "garden", "window", "music"]
    a = embed_utterances([espeak(w, voice="en+m3", pitch=20) for w in words], run=run)
    b = embed_utterances([espeak(w, voice="en+f2", pitch=60) for w in words], run=run)
    within = np.mean([(a @ a.T)[np.triu_indices(6, 1)], (b @ b.T)[np.triu_indices(6, 1)]])
    across = float((a @ b.T).mean())
    assert within > across + 0.1


# ----- ONNX -----
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> export.EncoderExport:
    return export.export_encoder(tmp_path_factory.mktemp("onnx") / "encoder.onnx")


def test_onnx_export_reproduces_pytorch(exported: export.EncoderExport,
                                        run: encoder.WindowRunner) -> None:
    assert exported.max_abs_diff < export.TOLERANCE
    assert exported.n_probe_clips >= 10
    runner = export.OnnxEncoder(exported.path)
    waves = [clip(s, seed=i) for i, s in enumerate((0.4, 1.6, 3.9, 7.2))]
    for batch in (1, 7):
        got = embed_utterances(waves, run=runner, batch_windows=batch)
        np.testing.assert_allclose(got, embed_utterances(waves, run=run), atol=TOL)
    meta = export.read_metadata(exported.path)
    assert meta["weights_sha256"] == encoder.weights_digest()
    assert int(meta["window_samples"]) == WINDOW_SAMPLES


def test_onnx_refuses_another_model(tmp_path: Path) -> None:
    other = tmp_path / "linear.onnx"
    with warnings.catch_warnings():  # the exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), other, dynamo=False)
    with pytest.raises(CheckpointError, match="not an audiogate voice-encoder export"):
        export.OnnxEncoder(other)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a readable ONNX file"):
        export.OnnxEncoder(tmp_path / "junk.onnx")
    with pytest.raises(CheckpointError, match="not found"):
        export.OnnxEncoder(tmp_path / "missing.onnx")


def test_onnx_refuses_an_export_of_other_weights(exported: export.EncoderExport,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "weights_digest", lambda: "0" * 64)
    with pytest.raises(CheckpointError, match="other encoder weights"):
        export.OnnxEncoder(exported.path)


def test_export_refuses_a_model_that_differs(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "verify", lambda data: (0.5, 3))
    with pytest.raises(AudiogateError, match="differs from PyTorch"):
        export.export_encoder(tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert onnx  # the checker ran on the graph before verification
