"""Benchmark: the HTTP service's latency and throughput under concurrent requests.

    python -m bench.serve                     # about a minute on 2 cores
    python -m bench.serve --requests 64 --concurrency 1,4,8,16

Starts a real ``audiogate serve`` process (PyTorch backend) on a free localhost port with a
checkpoint of the default configuration (the specification's SimpleConvNet, 1.99 s window;
the weights do not change the cost), then times from a client in this process:

* single requests one after another: a 2.7 s WAV (median and p90 of ``--requests``), a 15 s
  WAV and a 30 s FLAC (median of 5: the segment scan dominates);
* ``--requests`` uploads of the 2.7 s WAV sent by N concurrent clients, for each N of
  ``--concurrency``: wall time, requests per second and median latency;
* the server process's peak resident memory (``VmHWM``) at the end.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
import torch

from audiogate.config import SPEC_RECIPE, Config
from audiogate.data.synth import voice_like
from audiogate.models import ModelSpec
from audiogate.models.checkpoint import save_checkpoint

SR = 16000
STARTUP_S = 120.0
LONG_REPEATS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _audio(seconds: float, fmt: str, seed: int) -> bytes:
    y = 0.5 * voice_like(rng=np.random.default_rng(seed), duration=seconds, sr=SR)
    buf = io.BytesIO()
    sf.write(buf, y, SR, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _checkpoint(path: Path) -> Path:
    config = Config(fixed_length=SPEC_RECIPE["fixed_length"])  # 2 s, the notebook's
    torch.manual_seed(0)
    spec = ModelSpec.of(config, n_classes=2)
    save_checkpoint(path, net=spec.build(), spec=spec, config=config,
                    classes=("not_allowed", "allowed"), epoch=1, metrics={})
    return path


def _post(client: httpx.Client, url: str, body: bytes, name: str) -> float:
    began = time.perf_counter()
    response = client.post(f"{url}/predict", files={"file": (name, body)}, timeout=120)
    response.raise_for_status()
    return time.perf_counter() - began


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(checkpoint: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "audiogate", "-q", "serve", "--checkpoint", str(checkpoint),
           "--port", str(port)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def _concurrent(url: str, body: bytes, *, clients: int, requests: int) -> dict[str, float]:
    with httpx.Client() as warm:
        _post(warm, url, body, "clip.wav")

    def one(_: int) -> float:
        with httpx.Client() as client:
            return _post(client, url, body, "clip.wav")

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - began
    return {"wall_s": wall, "per_s": requests / wall,
            "median_ms": 1000 * statistics.median(latencies)}


def run(*, requests: int, concurrency: list[int]) -> str:
    with tempfile.TemporaryDirectory(prefix="audiogate-bench-serve-") as tmp:
        process, url = _start(_checkpoint(Path(tmp) / "model.pt"))
        try:
            short = _audio(2.7, "WAV", 1)
            with httpx.Client() as client:
                _post(client, url, short, "clip.wav")
                seq = sorted(_post(client, url, short, "clip.wav") for _ in range(requests))
                long15 = statistics.median(_post(client, url, _audio(15.0, "WAV", 2), "a.wav")
                                           for _ in range(LONG_REPEATS))
                long30 = statistics.median(_post(client, url, _audio(30.0, "FLAC", 3),
                                                 "a.flac") for _ in range(LONG_REPEATS))
            table = {n: _concurrent(url, short, clients=n, requests=requests)
                     for n in concurrency}
            peak = _peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [f"audiogate serve, PyTorch backend, default config; {torch.get_num_threads()} "
             "cores", "",
             "| request | figure |", "|---|---:|",
             f"| 2.7 s WAV, one at a time: median | {1000 * statistics.median(seq):.0f} ms |",
             f"| 2.7 s WAV, one at a time: p90 | {1000 * seq[int(0.9 * (len(seq) - 1))]:.0f}"
             " ms |",
             f"| 15 s WAV (with segment scan) | {1000 * long15:.0f} ms |",
             f"| 30 s FLAC (with segment scan) | {1000 * long30:.0f} ms |",
             f"| server peak memory (VmHWM) | {peak:.0f} MB |", "",
             f"{requests} requests of the 2.7 s WAV by N concurrent clients:", "",
             "| clients | wall (s) | requests/s | median latency (ms) |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {n} | {r['wall_s']:.2f} | {r['per_s']:.1f} | {r['median_ms']:.0f} |"
              for n, r in table.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4,8",
                        help="comma-separated numbers of concurrent clients")
    args = parser.parse_args(argv)
    print(run(requests=args.requests,
              concurrency=[int(n) for n in args.concurrency.split(",")]))


if __name__ == "__main__":
    main()
