"""Checkpoints: round trip, safe loading, atomic writes, compatibility checks."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from audiogate import files, load
from audiogate.cli import main
from audiogate.config import Config
from audiogate.errors import CheckpointError, ConfigError
from audiogate.files import atomic_write, to_json
from audiogate.models import ModelSpec, SimpleConvNet
from audiogate.models.checkpoint import ensure_compatible, load_checkpoint, save_checkpoint

CONFIG = Config(fixed_length=32, n_fft=512, model="simple")
CLASSES = ("not_allowed", "allowed")


SPEC = ModelSpec.of(CONFIG, n_classes=2)


def _net(seed: int = 0) -> SimpleConvNet:
    torch.manual_seed(seed)
    net = SPEC.build()
    assert isinstance(net, SimpleConvNet)
    return net


def _save(path: Path, net: SimpleConvNet | None = None) -> None:
    save_checkpoint(path, net=net or _net(), spec=SPEC, config=CONFIG, classes=CLASSES,
                    epoch=3, metrics={"val_f1": 0.75})


def test_model_shapes() -> None:
    net = _net()
    out = net(torch.zeros(5, CONFIG.n_mels, CONFIG.fixed_length))
    assert out.shape == (5, 2)
    assert [type(m).__name__ for m in net.children()] == [
        "Conv2d", "Conv2d", "MaxPool2d", "ReLU", "ClipDropout", "Linear"]
    assert net.dropout.p == 0.3


def test_round_trip_gives_identical_predictions(tmp_path: Path,
                                                rng: np.random.Generator) -> None:
    net = _net()
    _save(tmp_path / "m.pt", net)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert (ckpt.config, ckpt.classes, ckpt.epoch, ckpt.metrics) == (
        CONFIG, CLASSES, 3, {"val_f1": 0.75})
    waves = rng.standard_normal((4, CONFIG.features().n_samples)).astype(np.float32)
    from audiogate.features.frontend import LogMel
    expected = torch.softmax(net.eval()(LogMel(CONFIG.features())(torch.from_numpy(waves))), 1)
    got = load(tmp_path / "m.pt").probabilities(waves)
    np.testing.assert_array_equal(got, expected.detach().numpy())


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "audiogate.checkpoint", "payload": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    with open(tmp_path / "raw.pkl", "wb") as fh:
        pickle.dump(_Exploit(), fh)
    with warnings.catch_warnings(record=True) as caught:  # refused without torch's warning
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / "raw.pkl")
    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "PWNED").exists()


def _with_nan(src: Path, dst: Path, *, tensor: str, value: float) -> None:
    """A diverged checkpoint as audiogate wrote them before it refused to save one, and before
    it recorded the SHA-256 of each tensor (which would refuse the edit first)."""
    payload = torch.load(src, weights_only=True)
    payload["body"]["weights"][tensor].view(-1)[3] = value
    del payload["sha256"]
    torch.save(payload, dst)


@pytest.mark.parametrize(("tensor", "value"), [("fc.weight", float("nan")),
                                               ("conv1.bias", float("inf"))])
def test_non_finite_weights_are_refused(tmp_path: Path, tensor: str, value: float,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """NaN weights gave NaN verdicts, and `--json` printed NaN (issue 12, item 7)."""
    _save(tmp_path / "good.pt")
    _with_nan(tmp_path / "good.pt", tmp_path / "bad.pt", tensor=tensor, value=value)
    with pytest.raises(CheckpointError, match=f"tensor '{tensor}' holds NaN or infinity"):
        load_checkpoint(tmp_path / "bad.pt")
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    assert main(["-q", "predict", "--json", "--checkpoint", str(tmp_path / "bad.pt"),
                 str(clip)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"'{tensor}'" in err


def test_non_finite_weights_are_not_saved(tmp_path: Path) -> None:
    net = _net()
    with torch.no_grad():
        net.fc.bias[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"refusing to save .*tensor 'fc\.bias'"):
        _save(tmp_path / "m.pt", net)
    assert list(tmp_path.iterdir()) == []


def test_a_window_still_auto_is_not_saved(tmp_path: Path) -> None:
    """``fixed_length = "auto"`` is resolved by train; a checkpoint without a window could
    never be run, so none is written."""
    with pytest.raises(ConfigError, match="fixed_length is 'auto'"):
        save_checkpoint(tmp_path / "m.pt", net=_net(), spec=SPEC, config=Config(model="simple"),
                        classes=CLASSES, epoch=1, metrics={})
    assert list(tmp_path.iterdir()) == []


def test_non_finite_metrics_become_null_in_json(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Metrics may be NaN (a class missing from a subset); printed JSON holds null instead."""
    save_checkpoint(tmp_path / "m.pt", net=_net(), spec=SPEC, config=CONFIG, classes=CLASSES,
                    epoch=1, metrics={"val_f1": float("nan"), "test_loss": float("inf")})
    gate = load(tmp_path / "m.pt")
    text = to_json(gate.describe())
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["metrics"] == {"val_f1": None, "test_loss": None}


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"PK\x03\x04broken"])
def test_corrupt_files_are_clear_errors(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_bare_state_dict_and_missing(tmp_path: Path) -> None:
    torch.save(_net().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not an audiogate checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_incompatible_features_and_classes(tmp_path: Path) -> None:
    _save(tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt")
    ensure_compatible(ckpt, features=CONFIG.features(), classes=CLASSES)
    with pytest.raises(CheckpointError, match="n_mels: checkpoint 64 vs 40"):
        ensure_compatible(ckpt, features=Config(fixed_length=32, n_fft=512,
                                                n_mels=40).features())
    with pytest.raises(CheckpointError, match="classes"):
        ensure_compatible(ckpt, classes=("cat", "dog"))


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    _save(path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write(b"half a checkpoint")
        raise RuntimeError("disk full")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


KILL_WRITER = """
import sys, threading
from audiogate import files
from audiogate.config import Config
from audiogate.models import ModelSpec
from audiogate.models.checkpoint import save_checkpoint

path, moment = sys.argv[1], sys.argv[2]


def mid_write(tmp):  # tell the test which file is being written, then wait to be killed
    print(tmp, flush=True)
    threading.Event().wait()


cfg = Config(fixed_length=32, n_fft=512, model="simple")
spec = ModelSpec.of(cfg, n_classes=2)
if moment == "half_written":  # inside the write, half the bytes of a checkpoint sent
    with files.atomic_write(path) as fh:
        fh.write(b"PK half a checkpoint")
        fh.flush()
        mid_write(fh.name)
files.before_rename = mid_write  # "written": the whole content, not yet renamed
save_checkpoint(path, net=spec.build(), spec=spec, config=cfg, classes=("a", "b"), epoch=4,
                metrics={})
"""


@pytest.mark.parametrize("moment", ["half_written", "written"])
def test_kill_9_during_a_write_keeps_the_old_file(tmp_path: Path, moment: str) -> None:
    """SIGKILL lands while a new checkpoint is being written (the writer says so from inside
    the atomic write): the old checkpoint is still there, whole; the only other file is the
    hidden temporary one, which a killed process cannot remove."""
    path = tmp_path / "last.pt"
    _save(path)  # epoch 3
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path), moment],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())  # the writer is in the middle of a write
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert path.read_bytes() == before
    old = load_checkpoint(path)
    assert (old.epoch, old.classes) == (3, CLASSES)
    assert tmp.parent == tmp_path and tmp.name.startswith(".last.pt.") and tmp.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", tmp.name])


def test_predict_many_in_chunks_keeps_order(tmp_path: Path, rng: np.random.Generator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import audiogate.gates.base as inference

    _save(tmp_path / "m.pt")
    gate = load(tmp_path / "m.pt")
    waves = [rng.standard_normal(8000).astype(np.float32) * a for a in (0.1, 0.5, 1.0, 2.0)]
    items = [*waves, np.full(10, np.nan, np.float32), waves[0]]
    whole = gate.predict_many(items, sr=16000)
    monkeypatch.setattr(inference, "PREDICT_CHUNK", 2)
    chunked = gate.predict_many(items, sr=16000)
    assert [(r.label, r.error) for r in chunked] == [(r.label, r.error) for r in whole]
    for a, b in zip(chunked, whole, strict=True):  # batch size changes float rounding only
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    assert [r.ok for r in chunked] == [True, True, True, True, False, True]
    assert chunked[0].probabilities == pytest.approx(chunked[5].probabilities, abs=1e-6)


def test_predict_many_decodes_every_file_in_one_pool_beside_the_model(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are decoded by one pool of workers for the whole call (it was a pool per 64
    files), mixed with arrays and bad files in order, while the model runs on the cores the
    workers leave."""
    import audiogate.data.workers as workers
    import audiogate.gates.base as inference

    pools: list[int] = []
    threads: list[int] = []

    class CountedPool(workers.ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(kwargs.get("max_workers", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", CountedPool)
    _save(tmp_path / "m.pt")
    gate = load(tmp_path / "m.pt", workers=2)
    judge = gate._judge

    def judged(chunk: Any, items: Any) -> Any:
        threads.append(torch.get_num_threads())
        return judge(chunk, items)

    monkeypatch.setattr(gate, "_judge", judged)
    monkeypatch.setattr(inference, "PREDICT_CHUNK", 8)
    items: list[Any] = []
    for i in range(40):
        path = tmp_path / f"c{i:02d}.wav"
        sf.write(path, rng.standard_normal(4000 + 100 * i).astype(np.float32) * 0.1, 16000)
        items.append(path)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    items[7:7] = [tmp_path / "bad.wav", rng.standard_normal(8000).astype(np.float32) * 0.1]
    out = gate.predict_many(items, sr=16000)
    assert pools == [2] and len(threads) == 6  # one pool; 42 inputs judged 8 at a time
    assert threads == [max(1, workers.resolve_workers(0) - 2)] * 6
    assert [p.ok for p in out] == [True] * 7 + [False] + [True] * 34
    assert [p.source for p in out][:9] == [*(str(p) for p in items[:7]), str(items[7]),
                                           "<array>"]
    one_by_one = [gate.predict(x, sr=16000) for x in items[:3]]
    for a, b in zip(out, one_by_one, strict=False):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_the_model_gets_the_cores_the_workers_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    import audiogate.data.workers as workers

    before = torch.get_num_threads()
    monkeypatch.setattr(workers, "resolve_workers", lambda w: w or 4)  # a 4-core machine
    torch.set_num_threads(4)
    try:
        with workers.cores_left(3) as n:
            assert n == torch.get_num_threads() == 1
        with workers.cores_left(2) as n:
            assert n == torch.get_num_threads() == 2
        with workers.cores_left(1) as n:  # decoding in this process: every thread
            assert n == torch.get_num_threads() == 4
        assert torch.get_num_threads() == 4
        assert workers.processes_for(40, workers=0) == 3  # 16 files a task: 3 tasks
        assert workers.processes_for(0, workers=2) == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- a full disk (issue 22, 10)
class SmallDisk:
    """A file system with ``free`` bytes left, for the temporary files of
    :func:`audiogate.files.atomic_write` whose target matches ``pattern``: a write past
    ``free`` bytes raises ``ENOSPC`` as the kernel does; ``shutil.disk_usage`` says ``free``.
    ``fills_after``: the disk has room until a temporary file of that name has been closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, free: int, pattern: str = ".pt.",
                 fills_after: str | None = None) -> None:
        self.free, self.pattern, self.full = free, pattern, fills_after is None
        self.fills_after = fills_after
        disk = self

        class Writer(io.BufferedWriter):
            def __init__(self, path: str) -> None:
                super().__init__(io.FileIO(path, "wb"))
                self.name_ = Path(path).name
                self.used = 0

            def write(self, data: Any) -> int:
                size = memoryview(data).nbytes
                if disk.full and self.used + size > disk.free:
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.used += size
                return super().write(data)

            def close(self) -> None:
                super().close()
                if disk.fills_after and self.name_.startswith(f".{disk.fills_after}."):
                    disk.full = True

        def fake_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if mode == "wb" and self.pattern in Path(path).name:
                return Writer(str(path))
            return open(path, mode, *args, **kwargs)

        usage = shutil.disk_usage(".")
        monkeypatch.setattr(files, "open", fake_open, raising=False)
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda _: usage._replace(free=self.free))


def test_a_full_disk_message_never_claims_zero_bytes_needed(tmp_path: Path) -> None:
    """A streamed write of unknown size that filled the disk before its first byte said
    "it needs more than 0 B"; it now says only what is known."""
    path = tmp_path / "gate.pt"
    assert str(files.disk_full(path, size=None, written=0)).startswith(
        f"disk full: cannot write {path}: ") and "needs" not in str(
        files.disk_full(path, size=None, written=0))
    assert f"it needs more than {files.human_bytes(4096)}, " in str(
        files.disk_full(path, size=None, written=4096))
    assert f"it needs {files.human_bytes(10)}, " in str(files.disk_full(path, size=10, written=0))


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC inside torch's writer gave two chained tracebacks (the OSError, then torch's
    'enforce fail at inline_container.cc'); now one error names the file, the bytes it needs
    and the bytes free, and the previous checkpoint keeps its bytes."""
    path = tmp_path / "last.pt"
    _save(path)
    before = path.read_bytes()
    SmallDisk(monkeypatch, free=1000)
    with pytest.raises(files.DiskFullError) as caught:
        _save(path, _net(seed=1))
    message = str(caught.value)
    assert message == (f"disk full: cannot write {path}: it needs "
                       f"{files.human_bytes(len(before))}, 1000 B free on {tmp_path}; free "
                       "some space or write elsewhere")
    assert caught.value.errno == errno.ENOSPC and caught.value.__cause__ is None
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_run_that_fills_the_disk_says_so_in_one_line_and_in_its_status(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills after epoch 1's checkpoints: the run fails with one line on stderr, the
    same words in status.json, and epoch 1's last.pt intact (issue 22, item 10)."""
    from .conftest import TINY_FLAGS, make_toy_dataset

    data = make_toy_dataset(tmp_path / "data", n_per_class=12, seconds=0.4)
    SmallDisk(monkeypatch, free=4096, fills_after="last.pt")
    assert main(["-q", "train", "--data", str(data), "--runs-dir", str(tmp_path / "runs"),
                 "--name", "full", *TINY_FLAGS, "--max-epochs", "2"]) == 2
    err = capsys.readouterr().err
    models = tmp_path / "runs" / "full" / "models"
    line = next(x for x in err.splitlines() if x.startswith("audiogate: error:"))
    epoch_2 = models / "model_epoch_002.pt"
    assert line.startswith(f"audiogate: error: disk full: cannot write {epoch_2}: it needs ")
    assert "4.0 KiB free on" in line
    assert "Traceback" not in err
    status = json.loads((models.parent / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == line[len("audiogate: error: "):]
    assert load_checkpoint(models / "last.pt").epoch == 1
    assert not [p for p in models.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------ weights checked on load (issue 22, 9)
def _flip_exponent(path: Path, tensor: str) -> float:
    """Change one byte of ``path``: the exponent byte of ``tensor``'s first value (torch stores
    tensors uncompressed, with no checksum of its own). Returns the value it now reads."""
    values = torch.load(path, weights_only=True)["body"]["weights"][tensor]
    data = bytearray(path.read_bytes())
    at = data.find(values.numpy().tobytes())
    assert at >= 0 and data.find(values.numpy().tobytes(), at + 1) < 0
    data[at + 3] ^= 0x01  # little-endian float32: byte 3 holds the sign and 7 exponent bits
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)["body"]["weights"][tensor]
    return float(changed.view(-1)[0])


def test_a_changed_weight_is_refused_by_name(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """One flipped exponent byte of fc.bias loaded silently and could flip verdicts."""
    path = tmp_path / "best.pt"
    _save(path)
    before = float(load_checkpoint(path).weights["fc.bias"][0])
    after = _flip_exponent(path, "fc.bias")
    assert np.isfinite(after) and after in (4 * before, before / 4)
    with pytest.raises(CheckpointError, match=r"best\.pt: tensor 'weights\.fc\.bias' changed "
                                              "since it was saved"):
        load_checkpoint(path)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    assert main(["-q", "predict", "--checkpoint", str(path), str(clip)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "'weights.fc.bias' changed" in err


@pytest.mark.parametrize(("edit", "says"), [
    ("missing", "tensor 'weights.fc.bias' is missing"),
    ("added", "tensor 'weights.extra' was added"),
    ("reshaped", "tensor 'weights.fc.bias' changed"),  # same bytes, another shape
])
def test_missing_added_and_reshaped_tensors_are_refused(tmp_path: Path, edit: str,
                                                        says: str) -> None:
    _save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    weights = payload["body"]["weights"]
    if edit == "missing":
        del weights["fc.bias"]
    elif edit == "added":
        weights["extra"] = torch.zeros(3)
    else:
        weights["fc.bias"] = weights["fc.bias"].reshape(1, -1)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=re.escape(says)):
        load_checkpoint(tmp_path / "edited.pt")


def test_checkpoints_written_before_the_hashes_still_load(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(payload["sha256"]) == set(f"weights.{k}" for k in payload["body"]["weights"])
    del payload["sha256"]
    torch.save(payload, tmp_path / "old.pt")
    with caplog.at_level("DEBUG", logger="audiogate.core.checkpoint"):
        assert load_checkpoint(tmp_path / "old.pt").epoch == 3
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert "not checked" in caplog.records[0].getMessage()
