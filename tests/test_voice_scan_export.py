"""A voice gate scans long recordings per speech segment (and `scan --vad` does so for any
model), and exports to ONNX with the encoder and the enrolled voices inside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import audiogate
from audiogate.data.audio_io import load_audio, write_wav
from audiogate.deploy.scan import scan_file, scan_wave
from audiogate.deploy.speech_scan import SpeechScanner
from audiogate.errors import CheckpointError, ConfigError
from audiogate.gates.voice.onnx import OnnxVoiceClassifier

from .conftest import build_band_gate
from .speech import speech_extent
from .voice_data import ALLOWED, UNHEARD, VoiceWords, needs_voice

pytestmark = [pytest.mark.slow, needs_voice]
SR = 16000
GAP_S = 1.5


@pytest.fixture(scope="module")
def recording(voice_words: VoiceWords, tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[Path, list[tuple[float, float, str]]]:
    """ava, silence, max, silence, ava: the file and where each word's speech is."""
    held = voice_words.held_out
    words = [(held / ALLOWED / "open_000.wav", "allowed"),
             (held / UNHEARD[0] / "close_000.wav", "not_allowed"),
             (held / ALLOWED / "go_000.wav", "allowed")]
    parts, truth, t = [np.zeros(round(0.5 * SR), np.float32)], [], 0.5
    for path, label in words:
        y = load_audio(path, sr=SR)
        start, end = speech_extent(y, sr=SR)
        truth.append((t + start, t + end, label))
        parts += [y, np.zeros(round(GAP_S * SR), np.float32)]
        t += y.size / SR + GAP_S
    out = tmp_path_factory.mktemp("scan") / "long.wav"
    write_wav(out, np.concatenate(parts), sr=SR)
    return out, truth


def test_a_voice_gate_scans_per_speech_segment(voice_run: Path, recording: tuple[
        Path, list[tuple[float, float, str]]]) -> None:
    gate = audiogate.load(voice_run / "models" / "best.pt")
    path, truth = recording
    result = scan_file(gate, path=path)
    assert result.vad and [s.label for s in result.segments] == [t[2] for t in truth]
    for seg, (start, end, _) in zip(result.segments, truth, strict=True):
        assert abs(seg.start - start) < 0.25 and abs(seg.end - end) < 0.25
        assert seg.n_windows == 1
    # the same scoring as predict: a segment's score is predict's on its samples
    y = load_audio(path, sr=SR)
    first = result.segments[0]
    alone = gate.predict(y[round(first.start * SR):round(first.end * SR)], sr=SR)
    assert first.score == pytest.approx(alone.score, abs=1e-5)
    whole = scan_wave(gate, wave=y, sr=SR)
    assert [s.as_dict() for s in whole.segments] == [s.as_dict() for s in result.segments]
    windows = scan_file(gate, path=path, vad=False)  # the window scan is still there
    assert not windows.vad and len(windows.windows) > len(result.segments)
    with pytest.raises(ConfigError, match="smoothing"):
        scan_file(gate, path=path, smooth_s=1.0)


def test_scan_vad_skips_silence_for_any_model(recording: tuple[
        Path, list[tuple[float, float, str]]], tmp_path: Path) -> None:
    path, truth = recording
    band = build_band_gate(tmp_path / "band.pt")
    done = subprocess.run([sys.executable, "-m", "audiogate", "-q", "scan", "--checkpoint",
                           str(band), str(path), "--vad", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["vad"] is True and len(result["segments"]) == len(truth)
    for seg, (start, end, _) in zip(result["segments"], truth, strict=True):
        assert abs(seg["start"] - start) < 0.25 and abs(seg["end"] - end) < 0.25


def test_the_speech_scanner_keeps_little_audio_in_long_silence(voice_run: Path) -> None:
    gate = audiogate.load(voice_run / "models" / "best.pt")
    scanner = SpeechScanner(gate)
    block = np.zeros(SR, np.float32)
    for _ in range(60):
        scanner.feed(block)
        assert scanner.buffer.size < SR  # not a minute of silence
    result = scanner.finish()
    assert result.segments == [] and result.duration == pytest.approx(60.0)


def test_onnx_export_runs_the_whole_gate(voice_run: Path, voice_words: VoiceWords,
                                         recording: tuple[Path, list[tuple[float, float, str]]],
                                         tmp_path: Path) -> None:
    best = voice_run / "models" / "best.pt"
    out = tmp_path / "gate.onnx"
    done = subprocess.run([sys.executable, "-m", "audiogate", "-q", "export", "--checkpoint",
                           str(best), "--onnx", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "max |score diff|" in done.stdout
    onnx_gate = audiogate.load(out)
    torch_gate = audiogate.load(best)
    assert isinstance(onnx_gate, OnnxVoiceClassifier) and onnx_gate.backend == "onnx"
    assert onnx_gate.threshold == torch_gate.threshold and onnx_gate.voices == \
        torch_gate.voices  # type: ignore[attr-defined]
    clips = [str(p) for p in sorted(voice_words.held_out.glob("*/*.wav"))]
    got = [p.score for p in onnx_gate.predict_many(clips)]
    want = [p.score for p in torch_gate.predict_many(clips)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    path, _ = recording
    assert [s.label for s in scan_file(onnx_gate, path=path).segments] == \
        [s.label for s in scan_file(torch_gate, path=path).segments]
    assert audiogate.load(best, backend="onnx", onnx=out).backend == "onnx"
    with pytest.raises(ConfigError, match="fixed"):
        onnx_gate.enroll("x", clips[:1])  # type: ignore[attr-defined]
    other = audiogate.load(best)
    other.enroll("kai", [str(p) for p in sorted(voice_words.enrol.iterdir())])
    other.save(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not exported from"):
        audiogate.load(tmp_path / "other.pt", backend="onnx", onnx=out)
    other_pt = tmp_path / "other.pt"
    audiogate.load(other_pt).export(tmp_path / "other.onnx", source=other_pt)
    assert "kai" in audiogate.load(tmp_path / "other.onnx").describe()["voices"]
