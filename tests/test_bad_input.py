"""Bad input never crashes audiogate: every case is generated in a temp folder and the real CLI
runs on it (in-process through ``audiogate.cli.main``, and a few times as ``python -m
audiogate`` in a subprocess).

Unusable files are skipped with a reason (printed, and in ``skipped.csv``); usable-but-odd
files (silent, stereo, 8/24/32-bit, float, other rates, FLAC/OGG, very long, huge amplitude)
are used; data-set and config errors give one message naming the problem and exit 2.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiogate.cli import main

from .conftest import SR, TINY_FLAGS, build_band_gate, make_toy_dataset, sine

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
Writer = Callable[[Path], None]


# ------------------------------------------------------------------ the bad and the odd
def _wav_bytes(n: int = 8000) -> bytes:
    """A valid 16-bit mono WAV of ``n`` samples with the canonical 44-byte header."""
    buf = io.BytesIO()
    sf.write(buf, sine(440, n / SR), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _patched(offset: int, fmt: str, value: int) -> Writer:
    """A valid WAV with one header field overwritten (canonical 44-byte header)."""
    def write(p: Path) -> None:
        data = bytearray(_wav_bytes())
        data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        p.write_bytes(bytes(data))
    return write


def _float_wav(samples: np.ndarray) -> Writer:
    return lambda p: sf.write(p, samples.astype(np.float32), SR, subtype="FLOAT")


def _inf_at_end() -> np.ndarray:
    y = sine(440, 2.0)
    y[-1] = np.inf  # beyond the 0.31 s training window: found by the tail scan
    return y


def _symlink(target: str) -> Writer:
    return lambda p: p.symlink_to(target)


def _hidden_dir(p: Path) -> None:
    make_toy_dataset(p, n_per_class=1)  # good audio, but inside a hidden folder


BAD: dict[str, tuple[Writer, str]] = {
    "zero.wav": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "trunc_header.wav": (lambda p: p.write_bytes(_wav_bytes()[:30]), "not a readable audio"),
    "header_only.wav": (lambda p: p.write_bytes(_wav_bytes()[:44]), "contains no audio"),
    "text.wav": (lambda p: p.write_text("this is not audio\n" * 50), "not a readable audio"),
    "random.mp3": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
                   "not a readable audio file (not decodable audio"),
    "text.mp3": (lambda p: p.write_text("this is not audio\n" * 50),  # not "does not exist"
                 "not a readable audio file (not decodable audio"),
    "unknown_codec.wav": (_patched(20, "<H", 0x7777), "not a readable audio"),
    "rate_1hz.wav": (_patched(24, "<I", 1), "implausible sample rate 1 Hz"),
    "nan.wav": (_float_wav(np.full(8000, np.nan)), "NaN or infinite"),
    "inf_tail.wav": (_float_wav(_inf_at_end()), "NaN or infinite"),
    "short.wav": (lambda p: sf.write(p, sine(440, 100 / SR), SR), "too short: 100 samples"),
    "short_44k.wav": (lambda p: sf.write(p, sine(440, 1000 / 44100, sr=44100), 44100),
                      "too short: 363 samples at 16000 Hz"),
    ".DS_Store": (lambda p: p.write_bytes(b"\x00\x00\x00\x01Bud1"), "hidden file"),
    "._clip.wav": (lambda p: p.write_bytes(b"\x00\x05\x16\x07" * 20), "hidden file"),
    "notes.txt": (lambda p: p.write_text("x"), "not an audio file extension (.txt)"),
    "clip.m4a": (lambda p: p.write_bytes(b"\x00" * 64), "not an audio file extension (.m4a)"),
    "loop_a.wav": (_symlink("loop_b.wav"), "broken or looping symlink"),
    "loop_b.wav": (_symlink("loop_a.wav"), "broken or looping symlink"),
    "dangling.wav": (_symlink("missing.wav"), "broken or looping symlink"),
    "dir_loop": (_symlink("."), "symlink loop"),
    "dir_up": (_symlink(".."), "symlink loop"),  # would pull not_allowed/ into allowed/
    "zz_dup_link": (_symlink("nested"), "link to a folder already scanned (duplicate)"),
    "pipe.wav": (lambda p: os.mkfifo(p), "not a regular file"),
    ".hidden_dir": (_hidden_dir, "hidden folder (not scanned)"),
}
"""Unusable entries of ``allowed/``: name -> (writer, expected part of the reason)."""


def _tone(sr: int = SR, seconds: float = 0.5, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    y = sine(523.0, seconds, sr=sr, amp=amp)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


ODD: dict[str, Writer] = {
    "silent.wav": lambda p: sf.write(p, np.zeros(SR // 2, np.float32), SR),
    "stereo.wav": lambda p: sf.write(p, _tone(channels=2), SR),
    "six_channels.wav": lambda p: sf.write(p, _tone(channels=6), SR),
    "pcm_u8.wav": lambda p: sf.write(p, _tone(), SR, subtype="PCM_U8"),
    "pcm_24.wav": lambda p: sf.write(p, _tone(), SR, subtype="PCM_24"),
    "pcm_32.wav": lambda p: sf.write(p, _tone(), SR, subtype="PCM_32"),
    "float.wav": lambda p: sf.write(p, _tone(), SR, subtype="FLOAT"),
    "double.wav": lambda p: sf.write(p, _tone(), SR, subtype="DOUBLE"),
    "huge_float.wav": _float_wav(_tone(amp=1e20)),
    "quiet.wav": lambda p: sf.write(p, _tone(amp=1e-4), SR, subtype="FLOAT"),
    "rate_8k.wav": lambda p: sf.write(p, _tone(sr=8000), 8000),
    "rate_44k_stereo.wav": lambda p: sf.write(p, _tone(sr=44100, channels=2), 44100),
    "rate_96k.wav": lambda p: sf.write(p, _tone(sr=96000), 96000, subtype="PCM_24"),
    "clip.flac": lambda p: sf.write(p, _tone(), SR, format="FLAC"),
    "clip.ogg": lambda p: sf.write(p, _tone(), SR, format="OGG", subtype="VORBIS"),
    "long.wav": lambda p: sf.write(p, _tone(seconds=90.0), SR),
    "nested/deeper/clip.wav": lambda p: sf.write(p, _tone(), SR),
}
"""Usable but unusual files of ``allowed/``: all must be decoded and used."""


@dataclass(frozen=True)
class BadData:
    """A data folder with 10 good clips per class plus every BAD and ODD case in allowed/."""

    root: Path
    bad: dict[str, str]  # path -> expected part of the reason
    usable: frozenset[str]


def build_bad_data(root: Path) -> BadData:
    make_toy_dataset(root, n_per_class=10)
    allowed = root / "allowed"
    bad = {}
    for name, (write, reason) in BAD.items():
        write(allowed / name)
        bad[str(allowed / name)] = reason
    for name, write in ODD.items():
        (allowed / name).parent.mkdir(parents=True, exist_ok=True)
        write(allowed / name)
    usable = [p for p in root.rglob("*.*") if p.is_file() and str(p) not in bad
              and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return BadData(root, bad, frozenset(str(p) for p in usable))


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory) -> BadData:
    return build_bad_data(tmp_path_factory.mktemp("bad") / "data")


# ------------------------------------------------------------------ helpers
@dataclass
class Result:
    rc: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """The CLI in-process; asserts it never lets a traceback out."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return Result(rc, out, err)


def run_process(*argv: str, prefix: tuple[str, ...] = ()) -> Result:
    """``python -m audiogate ...`` in a fresh process."""
    proc = subprocess.run([*prefix, sys.executable, "-m", "audiogate", *argv],
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def read_skipped(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len({r["path"] for r in rows}), "a file is listed twice"
    return {r["path"]: r["reason"] for r in rows}


def assert_reasons(skipped: dict[str, str], expected: dict[str, str]) -> None:
    assert set(skipped) == set(expected)
    for path, reason in expected.items():
        assert reason in skipped[path], (path, skipped[path])


def assert_printed(out: str, expected: dict[str, str]) -> None:
    """The printed summary: a count, then ``path: reason`` lines (at most 20, then a pointer
    to the rest)."""
    assert f"skipped {len(expected)} file(s):" in out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    shown = [line for line in lines if not line.startswith("...")]
    assert len(shown) == min(20, len(expected))
    for line in shown:
        path, reason = line.split(": ", 1)
        assert expected[path] in reason
    if len(expected) > 20:
        assert f"... and {len(expected) - 20} more (see skipped.csv)" in lines


def train_argv(data: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return ["-q", "train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
            *TINY_FLAGS, "--max-epochs", "1", *extra]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def trained(bad_data: BadData,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    """One tiny training run on the bad folder: (run folder, warnings logged, exit status)."""
    runs = tmp_path_factory.mktemp("runs")
    collect = _Collect()
    logger = logging.getLogger("audiogate")
    logger.addHandler(collect)
    try:
        rc = main(train_argv(bad_data.root, runs, "bad", "--balance", "none"))
    finally:
        logger.removeHandler(collect)
    yield runs / "bad", "\n".join(collect.lines), rc


# ------------------------------------------------------------------ eda
def test_eda_skips_every_bad_file_and_uses_every_odd_one(
        bad_data: BadData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run(capsys, "-q", "eda", "--data", str(bad_data.root), "--out", str(tmp_path / "eda"),
              *TINY_FLAGS)
    assert res.rc == 0
    assert_reasons(read_skipped(tmp_path / "eda" / "skipped.csv"), bad_data.bad)
    assert_printed(res.out, bad_data.bad)
    summary = json.loads((tmp_path / "eda" / "eda.json").read_text())
    n_allowed = sum(p.startswith(str(bad_data.root / "allowed")) for p in bad_data.usable)
    assert summary["counts"] == {"not_allowed": 10, "allowed": n_allowed}
    assert summary["skipped"] == len(bad_data.bad)
    assert summary["duration_s"]["max"] == pytest.approx(90.0)


# ------------------------------------------------------------------ train
@pytest.mark.slow
def test_train_skips_bad_files_and_uses_odd_ones(bad_data: BadData,
                                                 trained: tuple[Path, str, int]) -> None:
    run_dir, logged, rc = trained
    assert rc == 0
    real = bad_data.root.resolve()  # train stores absolute paths
    expected = {str(real / Path(p).relative_to(bad_data.root)): r for p, r in bad_data.bad.items()}
    assert_reasons(read_skipped(run_dir / "skipped.csv"), expected)
    assert f"skipped {len(expected)} file(s)" in logged
    shown = [line.split(" ", 3)[3] for line in logged.splitlines()
             if line.startswith("  skipped ")]
    assert len(shown) == min(20, len(expected))
    for line in shown:
        path, reason = line.split(": ", 1)
        assert expected[path] in reason
    with open(run_dir / "split.csv", newline="") as fh:
        used = {row["path"] for row in csv.DictReader(fh)}
    assert used == {str(real / Path(p).relative_to(bad_data.root)) for p in bad_data.usable}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epoch = metrics["epochs"][0]
    assert all(np.isfinite(epoch[k]) for k in ("train_loss", "val_loss", "test_loss"))


# ------------------------------------------------------------------ predict / evaluate
def _predict_rows(res: Result) -> dict[str, dict[str, str]]:
    return {row["file"]: row for row in csv.DictReader(res.out.splitlines())}


@pytest.mark.slow
def test_predict_mixed_folder_reports_error_rows_and_goes_on(
        bad_data: BadData, trained: tuple[Path, str, int],
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(trained[0] / "models" / "best.pt")
    res = run(capsys, "-q", "predict", "--checkpoint", ckpt, "--csv", "--workers", "1",
              str(bad_data.root / "allowed"))
    assert res.rc == 0
    rows = _predict_rows(res)
    failed = {path: row["error"] for path, row in rows.items() if row["label"] == "ERROR"}
    audio_named = {p: r for p, r in bad_data.bad.items()
                   if Path(p).suffix in (".wav", ".mp3") and not Path(p).name.startswith(".")}
    assert_reasons(failed, audio_named)
    judged = {path for path, row in rows.items() if row["label"] != "ERROR"}
    assert judged == {p for p in bad_data.usable if "/allowed/" in p}
    assert all(0.0 <= float(rows[p]["confidence"]) <= 1.0 for p in judged)


@pytest.mark.slow
def test_predict_only_bad_files_exits_1(bad_data: BadData, trained: tuple[Path, str, int],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(trained[0] / "models" / "best.pt")
    allowed = bad_data.root / "allowed"
    res = run(capsys, "-q", "predict", "--checkpoint", ckpt, "--json", "--workers", "1",
              str(allowed / "zero.wav"), str(allowed / "nan.wav"),
              str(allowed / "no_such_file.wav"))
    assert res.rc == 1
    rows = json.loads(res.out)
    assert [r["label"] for r in rows] == [None, None, None]
    assert [r["error"] for r in rows] == ["empty file (0 bytes)",
                                          "contains NaN or infinite samples",
                                          "no such file or folder"]


@pytest.mark.slow
def test_evaluate_with_bad_files_in_the_data_folder(
        bad_data: BadData, trained: tuple[Path, str, int], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(trained[0] / "models" / "best.pt")
    res = run(capsys, "-q", "evaluate", "--checkpoint", ckpt, "--data", str(bad_data.root),
              "--out", str(tmp_path / "ev"), "--workers", "1")
    assert res.rc == 0
    assert f"skipped {len(bad_data.bad)} file(s):" in res.out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["n"] == len(bad_data.usable)
    assert report["skipped"] == len(bad_data.bad)


# ------------------------------------------------------------------ unusable data sets
def _only(root: Path, *classes: str, n: int = 10) -> Path:
    make_toy_dataset(root, n_per_class=n)
    for name in ("allowed", "not_allowed"):
        if name not in classes:
            shutil.rmtree(root / name)
    return root


def _empty_class(root: Path) -> Path:
    _only(root, "allowed")
    (root / "not_allowed").mkdir()
    (root / "not_allowed" / ".DS_Store").write_bytes(b"\0")
    return root


def _all_bad_class(root: Path) -> Path:
    _only(root, "allowed")
    (root / "not_allowed").mkdir()
    for i in range(3):
        (root / "not_allowed" / f"broken_{i}.wav").write_bytes(b"RIFF")
    return root


def _one_other_class(root: Path) -> Path:
    (root / "music").mkdir(parents=True)
    return root


def _a_file(root: Path) -> Path:
    root.write_text("not a folder")
    return root


DATA_ERRORS: dict[str, tuple[Callable[[Path], Path], list[str], tuple[str, ...]]] = {
    "missing_folder": (lambda p: p, ["data folder not found"], ("eda", "train")),
    "data_is_a_file": (_a_file, ["data folder is not a folder"], ("eda", "train")),
    "missing_class": (lambda p: _only(p, "allowed"), ["no 'not_allowed/' folder"],
                      ("eda", "train")),
    "single_other_class": (_one_other_class, ["need one sub-folder per class", "['music']"],
                           ("eda", "train")),
    "empty_class": (_empty_class, ["no usable audio in class folder(s) not_allowed",
                                   ".DS_Store: hidden file"], ("eda", "train")),
    "all_bad_class": (_all_bad_class, ["no usable audio in class folder(s) not_allowed",
                                       "broken_0.wav: not a readable audio file"],
                      ("eda", "train")),
    "too_few_per_class": (lambda p: make_toy_dataset(p, n_per_class=4),
                          ["too few clips for a stratified", "need at least 7 per class"],
                          ("train",)),
}


@pytest.mark.parametrize("case", sorted(DATA_ERRORS))
def test_unusable_data_set_gives_one_clear_message(case: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make, messages, commands = DATA_ERRORS[case]
    data = make(tmp_path / "data")
    for command in commands:
        if command == "eda":
            argv = ["-q", "eda", "--data", str(data), "--out", str(tmp_path / "eda")]
        else:
            argv = train_argv(data, tmp_path / "runs", "x")
        res = run(capsys, *argv)
        assert res.rc == 2, (command, res)
        assert res.err.startswith("audiogate: error:") and res.err.count("\n") == 1, res.err
        for message in messages:
            assert message in res.err, (command, res.err)
    # the run folder is made only once the data is ready: a failed run leaves nothing
    assert not (tmp_path / "runs" / "x").exists()


def _nothing_usable(root: Path) -> Path:
    """Class folders whose every file is unusable: a bad header, a text file, a hidden one."""
    for name in ("allowed", "not_allowed"):
        (root / name).mkdir(parents=True)
        (root / name / "broken.wav").write_bytes(b"RIFF")
        (root / name / "notes.txt").write_text("not audio")
    (root / "allowed" / ".hidden.wav").write_bytes(_wav_bytes())
    return root


REFUSED: dict[str, tuple[Callable[[Path], Path], dict[str, str]]] = {
    "nothing_usable": (_nothing_usable, {
        **{f"{c}/broken.wav": "not a readable audio file" for c in ("allowed", "not_allowed")},
        **{f"{c}/notes.txt": "not an audio file extension" for c in ("allowed", "not_allowed")},
        "allowed/.hidden.wav": "hidden file"}),
    "all_bad_class": (_all_bad_class, {f"not_allowed/broken_{i}.wav": "not a readable audio"
                                       for i in range(3)}),
    "too_few_per_class": (lambda p: make_toy_dataset(p, n_per_class=4), {}),
}


@pytest.mark.parametrize(("case", "command"), [
    (case, command) for case in sorted(REFUSED)
    for command in ("eda", "train", "train_unnamed", "cache")
    if not (command == "eda" and case == "too_few_per_class")])  # eda makes no split
def test_a_refused_data_set_still_writes_skipped_csv(case: str, command: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22, item 13: data that cannot make a run (no usable clip at all, a class without
    one, too few to split) stops with one line and still writes skipped.csv: into eda's
    --out, or for train and cache beside where the run folder would be
    (<runs_dir>/<name>.skipped.csv, <runs_dir>/skipped.csv unnamed), since no run folder is
    made for such data. The message says where it is."""
    make, expected = REFUSED[case]
    data, runs = make(tmp_path / "data"), tmp_path / "runs"
    argv = {"eda": ["-q", "eda", "--data", str(data), "--out", str(tmp_path / "eda")],
            "train": train_argv(data, runs, "x"),
            "train_unnamed": ["-q", "train", "--data", str(data), "--runs-dir", str(runs),
                              *TINY_FLAGS],
            "cache": ["-q", "cache", "--data", str(data), "--runs-dir", str(runs), "--name", "x",
                      *TINY_FLAGS]}[command]
    written = {"eda": tmp_path / "eda" / "skipped.csv", "train": runs / "x.skipped.csv",
               "train_unnamed": runs / "skipped.csv", "cache": runs / "x.skipped.csv"}[command]
    res = run(capsys, *argv)
    assert res.rc == 2 and res.err.count("\n") == 1, res.err
    assert res.err.rstrip().endswith(f"every file left out, and why: {written}"), res.err
    assert_reasons(read_skipped(written), {str(data / k): v for k, v in expected.items()})
    if command != "eda":  # no run folder: only the list beside where it would have been
        assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == [
            written.name]


@pytest.mark.parametrize("command", ["train", "cache"])
def test_a_run_made_at_last_removes_the_refused_list(command: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """<runs_dir>/<name>.skipped.csv described data that could not make the run; once a run
    of that name is made from data that can, the list goes (it stayed, stale, beside the new
    run and its own skipped.csv)."""
    runs = tmp_path / "runs"
    argv = {"train": lambda d: train_argv(d, runs, "x"),
            "cache": lambda d: ["-q", "cache", "--data", str(d), "--runs-dir", str(runs),
                                "--name", "x", *TINY_FLAGS]}[command]
    assert run(capsys, *argv(make_toy_dataset(tmp_path / "few", n_per_class=4))).rc == 2
    assert (runs / "x.skipped.csv").is_file()
    assert run(capsys, *argv(make_toy_dataset(tmp_path / "enough", n_per_class=12))).rc == 0
    assert not (runs / "x.skipped.csv").exists()
    assert (runs / "x" / "skipped.csv").is_file() or command == "cache"


def test_a_refused_voice_data_set_writes_skipped_csv_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The voice gate's data is refused the same way, with the same list (before any speaker
    model is loaded: nothing under allowed/ is audio)."""
    (tmp_path / "data" / "allowed").mkdir(parents=True)
    (tmp_path / "data" / "allowed" / "notes.txt").write_text("not audio")
    res = run(capsys, "-q", "train", "--recipe", "voice", "--data", str(tmp_path / "data"),
              "--runs-dir", str(tmp_path / "runs"), "--name", "v")
    written = tmp_path / "runs" / "v.skipped.csv"
    assert res.rc == 2 and f"every file left out, and why: {written}" in res.err, res.err
    assert_reasons(read_skipped(written), {
        str(tmp_path / "data" / "allowed" / "notes.txt"): "not an audio file extension"})
    assert not (tmp_path / "runs" / "v").exists()


@pytest.mark.slow
def test_evaluate_on_a_folder_without_a_class(trained: tuple[Path, str, int], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = _only(tmp_path / "data", "allowed", n=2)
    res = run(capsys, "-q", "evaluate", "--checkpoint", str(trained[0] / "models" / "best.pt"),
              "--data", str(data), "--out", str(tmp_path / "ev"))
    assert res.rc == 2 and "no 'not_allowed/' folder" in res.err
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_missing_checkpoint(command: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    res = run(capsys, "-q", command, "--checkpoint", str(tmp_path / "none.pt"),
              *(["--data", str(tmp_path)] if command == "evaluate" else [str(tmp_path)]))
    assert res.rc == 2
    assert res.err == f"audiogate: error: checkpoint not found: {tmp_path / 'none.pt'}\n"


# ------------------------------------------------------------------ config errors
CONFIG_ERRORS: dict[str, tuple[str, list[str], str]] = {
    "unknown_key": ("batch_sise = 8\n", [], "batch_sise"),
    "negative_batch_size": ("batch_size = -8\n", [], "batch_size"),
    "negative_batch_size_flag": ("", ["--batch-size", "-1"], "batch_size"),
    "sizes_sum_to_one": ("test_size = 0.5\nval_size = 0.5\n", [], "test_size"),
    "sizes_flags": ("", ["--test-size", "0.6", "--val-size", "0.5"], "val_size"),
    "n_mels_too_large": ("n_mels = 256\nn_fft = 256\nwin_length = 256\n", [], "n_mels"),
    "wrong_type_str": ('batch_size = "eight"\n', [], "batch_size"),
    "wrong_type_bool": ("lr = true\n", [], "lr"),
    "nan_value": ("dropout = nan\n", [], "dropout"),
    "invalid_toml": ("lr = \n", [], "not valid TOML"),
    "nested_table": ("[train]\nlr = 0.1\n", [], "train"),
    "negative_seed": ("seed = -7\n", [], "seed"),
    "negative_seed_flag": ("", ["--seed", "-1"], "seed"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_error_names_the_field(case: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    text, flags, field = CONFIG_ERRORS[case]
    (tmp_path / "c.toml").write_text(text)
    for command in ("eda", "train"):
        argv = ["-q", command, "--data", str(tmp_path / "nowhere"), "--config",
                str(tmp_path / "c.toml"), *flags, "--runs-dir", str(tmp_path / "runs")]
        if command == "eda":
            argv = [*argv[:-2], "--out", str(tmp_path / "eda")]
        res = run(capsys, *argv)
        assert res.rc == 2 and res.err.startswith("audiogate: error:"), res
        assert field in res.err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "eda").exists()


def test_wrong_type_on_the_command_line_names_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path), "--batch-size", "eight"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "invalid int value: 'eight'" in err


def test_binary_config_file_gives_a_message(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.toml").write_bytes(b"\xff\xfe\x00binary")
    res = run(capsys, "-q", "eda", "--config", str(tmp_path / "c.toml"))
    assert res.rc == 2 and "c.toml" in res.err


def test_unwritable_output_is_a_message(bad_data: BadData, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "eda-target"
    target.write_text("a file where the output folder should go")
    res = run(capsys, "-q", "eda", "--data", str(bad_data.root), "--out", str(target))
    # the message names the folder it could not create, in full (the temporary folder's own
    # name holds words like "out", so a bare word would be found anyway)
    assert res.rc == 2 and res.err.startswith("audiogate: error:"), res
    assert f"'{target}'" in res.err, res.err
    assert target.read_text() == "a file where the output folder should go"


# ------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_same_seed_same_split_and_metrics(tmp_path: Path) -> None:
    data = make_toy_dataset(tmp_path / "data", n_per_class=10)
    for name in ("a", "b"):
        assert main(train_argv(data, tmp_path / "runs", name, "--seed", "7",
                               "--max-epochs", "2")) == 0
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    assert (a / "split.csv").read_bytes() == (b / "split.csv").read_bytes()

    def epochs(run_dir: Path) -> list[dict[str, float]]:
        history = json.loads((run_dir / "metrics.json").read_text())["epochs"]
        return [{k: v for k, v in e.items() if k != "seconds"} for e in history]

    assert epochs(a) == epochs(b)
    assert len(epochs(a)) == 2
    ta, tb = (json.loads((r / "test_metrics.json").read_text()) for r in (a, b))
    assert ta == tb


# ------------------------------------------------------------------ real processes
def _obey_permissions() -> tuple[str, ...]:
    """A command prefix under which even root obeys file permissions (or skip the test)."""
    if not ROOT_USER:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: root reads chmod 000 files, so an "
                    "unreadable file cannot be made")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


def test_python_m_audiogate_eda_on_bad_folder_with_unreadable_file(tmp_path: Path) -> None:
    prefix = _obey_permissions()
    data = build_bad_data(tmp_path / "data")
    locked, locked_dir = data.root / "allowed" / "locked.wav", data.root / "allowed" / "closed"
    shutil.copy(data.root / "allowed" / "stereo.wav", locked)
    make_toy_dataset(locked_dir, n_per_class=1)
    for path in (locked, locked_dir):
        path.chmod(0)
    try:
        res = run_process("-q", "eda", "--data", str(data.root), "--out",
                          str(tmp_path / "e"), prefix=prefix)
    finally:
        for path in (locked, locked_dir):
            path.chmod(0o755)
    assert res.rc == 0, res.err
    skipped = read_skipped(tmp_path / "e" / "skipped.csv")
    assert_reasons(skipped, {**data.bad, str(locked): "permission denied",
                             str(locked_dir): "cannot list folder (Permission denied)"})
    assert_printed(res.out, skipped)


def test_python_m_audiogate_missing_data_folder(tmp_path: Path) -> None:
    res = run_process("-q", "train", "--data", str(tmp_path / "missing"), "--runs-dir",
                      str(tmp_path / "runs"))
    assert res.rc == 2
    assert res.err.strip() == f"audiogate: error: data folder not found: {tmp_path / 'missing'}"
    assert not (tmp_path / "runs").exists()


def test_quiet_means_quiet(tmp_path: Path) -> None:
    """With -q, stderr holds audiogate's own messages only: no decoder chatter from libmpg123
    for a broken MP3, no torch warning before a raw pickle is refused (issue 12, smaller)."""
    ckpt = build_band_gate(tmp_path / "band.pt")
    BAD["random.mp3"][0](tmp_path / "random.mp3")
    res = run_process("-q", "predict", "--checkpoint", str(ckpt), str(tmp_path / "random.mp3"))
    assert res.rc == 1
    assert res.err == "ERROR audiogate: no input could be judged\n"
    assert "not decodable audio" in res.out
    with open(tmp_path / "raw.pt", "wb") as fh:
        pickle.dump({"weights": [1, 2, 3]}, fh)
    res = run_process("-q", "predict", "--checkpoint", str(tmp_path / "raw.pt"),
                      str(tmp_path / "random.mp3"))
    assert res.rc == 2
    assert res.err.startswith("audiogate: error: ") and res.err.count("\n") == 1, res.err
