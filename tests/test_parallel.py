"""Parallel decoding and the prefetching batch thread: same results as serial, in order,
errors surfaced, nothing left running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from audiogate.config import Config
from audiogate.data import Clip
from audiogate.data import workers as workers_mod
from audiogate.data.audio_io import write_wav
from audiogate.data.cache import CacheSpec, FeatureCache
from audiogate.data.decode import cache_clips, decode_clips
from audiogate.data.workers import resolve_workers
from audiogate.training.prefetch import prefetch, split_threads

from .conftest import SR, TINY_FLAGS

FEATS = Config(fixed_length=32, n_fft=512).features()
N_KEEP = FEATS.n_samples + FEATS.hop_length


@pytest.fixture
def mixed_clips(tmp_path: Path, rng: np.random.Generator) -> list[Clip]:
    """20 clips at three sample rates, with an unreadable one and a missing one inside."""
    clips = []
    for i in range(20):
        sr = (SR, 22050, 44100)[i % 3]
        y = (0.3 * rng.standard_normal(int(rng.uniform(0.1, 0.5) * sr))).astype(np.float32)
        path = tmp_path / "audio" / f"clip_{i:02d}.wav"
        write_wav(path, y, sr=sr)
        clips.append(Clip(str(path), i % 2))
    (tmp_path / "audio" / "clip_05.wav").write_bytes(b"not audio")
    clips.append(Clip(str(tmp_path / "audio" / "gone.wav"), 0))
    return clips


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two files per task: more tasks than the in-flight window, so it refills."""
    monkeypatch.setattr(workers_mod, "CHUNK", 2)


@pytest.mark.usefixtures("small_chunks")
def test_parallel_cache_equals_serial(tmp_path: Path, mixed_clips: list[Clip]) -> None:
    spec = CacheSpec(features=FEATS, n_keep=N_KEEP)
    serial, bad1 = cache_clips(mixed_clips, cache=FeatureCache(tmp_path / "a", spec),
                               workers=1, progress=False)
    parallel, bad2 = cache_clips(mixed_clips, cache=FeatureCache(tmp_path / "b", spec),
                                 workers=2, progress=True)
    assert [c.path for c in parallel.clips] == [c.path for c in serial.clips]
    assert [(s.path, s.reason) for s in bad2] == [(s.path, s.reason) for s in bad1]
    assert [Path(s.path).name for s in bad1] == ["clip_05.wav", "gone.wav"]
    rows = np.arange(len(serial))
    np.testing.assert_array_equal(parallel.features(rows), serial.features(rows))
    np.testing.assert_array_equal(parallel.waves(rows), serial.waves(rows))
    np.testing.assert_array_equal(parallel.lengths, serial.lengths)


@pytest.mark.usefixtures("small_chunks")
def test_parallel_decode_equals_serial(mixed_clips: list[Clip]) -> None:
    one, bad1 = decode_clips(mixed_clips, sr=SR, n_keep=N_KEEP, workers=1, progress=False)
    two, bad2 = decode_clips(mixed_clips, sr=SR, n_keep=N_KEEP, workers=2, progress=False)
    assert [c.path for c in two.clips] == [c.path for c in one.clips]
    assert len(one.clips) == len(mixed_clips) - 2 == len(mixed_clips) - len(bad1)
    assert bad1 == bad2
    np.testing.assert_array_equal(one.waves, two.waves)
    np.testing.assert_array_equal(one.lengths, two.lengths)
    assert one.waves.shape == (len(one.clips), N_KEEP) and one.waves.dtype == np.float32


def test_zero_workers_means_every_core() -> None:
    assert resolve_workers(0) == len(os.sched_getaffinity(0))
    assert resolve_workers(3) == 3


def test_prefetch_keeps_order_and_runs_without_gradients() -> None:
    def produce():  # type: ignore[no-untyped-def]
        for i in range(50):
            yield i, torch.is_grad_enabled(), threading.current_thread().name

    got = list(prefetch(produce()))
    assert [g[0] for g in got] == list(range(50))
    assert not any(g[1] for g in got)
    assert {g[2] for g in got} == {"audiogate-prefetch"}
    assert torch.is_grad_enabled()  # the consumer's own grad mode is untouched


def test_prefetch_raises_the_producers_error() -> None:
    def produce():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("bad batch")

    batches = prefetch(produce())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(batches)


def test_closing_early_stops_the_producer() -> None:
    made: list[int] = []

    def produce():  # type: ignore[no-untyped-def]
        for i in range(10_000):
            made.append(i)
            yield i

    before = threading.active_count()
    with contextlib.closing(prefetch(produce(), depth=2)) as batches:
        assert next(batches) == 0
    assert threading.active_count() == before
    assert len(made) <= 5  # never ran ahead by more than the queue


def test_split_threads_halves_and_restores() -> None:
    before = torch.get_num_threads()
    with split_threads() as share:
        assert share == max(1, before // 2) == torch.get_num_threads()
    assert torch.get_num_threads() == before


# ------------------------------------------------------------ workers die with their parent
def _status(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        status = _status(int(entry.name)) if entry.name.isdigit() else None
        if status is not None and status[1] == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    status = _status(pid)
    return status is not None and status[0] not in ("Z", "X")  # a zombie is dead


def _wait_gone(pids: list[int], *, timeout: float) -> list[int]:
    """The processes of ``pids`` still alive after up to ``timeout`` seconds (killed then)."""
    deadline = time.monotonic() + timeout
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in pids if _alive(p)]
    for pid in survivors:  # do not leave them running after a failure
        os.kill(pid, signal.SIGKILL)
    return survivors


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@needs_proc
@pytest.mark.slow
def test_decode_workers_die_when_train_is_killed(tmp_path: Path) -> None:
    """SIGKILL of `audiogate train` while it decodes leaves no worker behind (issue 12, 3)."""
    gen = np.random.default_rng(0)
    for i in range(300):  # 44.1 kHz, so every file is resampled: seconds of decoding
        y = (0.1 * gen.standard_normal(44100)).astype(np.float32)
        write_wav(tmp_path / "data" / ("allowed", "not_allowed")[i % 2] / f"{i}.wav", y,
                  sr=44100)
    cmd = [sys.executable, "-m", "audiogate", "-q", "train", "--data", str(tmp_path / "data"),
           "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
           *TINY_FLAGS, "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.01)
        assert not (tmp_path / "runs").exists()  # still decoding
    finally:
        proc.kill()
        proc.wait()
    assert _wait_gone(workers, timeout=3.0) == []


@needs_proc
def test_watchdog_ends_an_orphan_without_the_death_signal() -> None:
    """The portable fallback alone (no prctl): a worker exits once its parent is gone."""
    script = (
        "import os, sys, time\n"
        "from audiogate.data.workers import _watch_parent\n"
        "parent = os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    _watch_parent(parent)\n"
        "print(child, flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        assert _alive(child)
    finally:
        proc.kill()
        proc.wait()
    assert _wait_gone([child], timeout=3.0) == []
