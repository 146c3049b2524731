"""What checking the feature cache costs: opening it (each index against its check, one
``stat`` per file) and hashing every byte of its shards, as a run does before it uses them.

    python -m bench.cache_verify                    # 4000 clips of 3 s: about 0.6 GB
    python -m bench.cache_verify --clips 20000 --seconds 5

The cache holds ``--clips`` entries of the default config (64 mel bands x 200 frames of
float32 features, and the clip's samples as int16), filled with random numbers (the bytes,
not their values, cost the time), in a temporary folder deleted after. Figures:

* ``open``: a new :class:`~audiogate.data.cache.FeatureCache` on the folder (every index read
  and checked against its entries' SHA-256, every array file's size);
* ``verify, cached``: :meth:`~audiogate.data.store.ShardStore.verify` of every shard, the files
  in the OS page cache (as right after they were written, or on a machine with RAM to spare);
* ``verify, from disk``: the same after the files were dropped from the page cache
  (``posix_fadvise(DONTNEED)``, after ``sync``);
* ``read all``: reading every entry's features and samples once through the cache (what an
  epoch reads at least), for scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from audiogate.config import SPEC_RECIPE, Config
from audiogate.data.cache import CacheSpec, FeatureCache, feature_entry
from audiogate.data.prepare import stored_samples
from audiogate.data.store import Source

GB = 1e9


def fill(root: Path, spec: CacheSpec, *, clips: int, seconds: float, seed: int = 0) -> int:
    """Write ``clips`` random entries of ``seconds`` each; the bytes of the arrays written."""
    rng = np.random.default_rng(seed)
    cfg = spec.features
    cache = FeatureCache(root, spec)
    n = round(seconds * cfg.sr)
    for i in range(clips):
        digest = f"{i:064x}"
        y = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        feats = rng.standard_normal((cfg.n_mels, cfg.fixed_length)).astype(np.float32)
        entry = feature_entry(digest, y=y, feats=feats, n_read=max(spec.n_keep, cfg.n_samples),
                              n_keep=spec.n_keep)
        cache.add(Source((f"/bench/{i}.wav", n * 2, i), digest), entry)
    cache.flush()
    return sum(p.stat().st_size for p in cache.folder.glob("shard-*.npy"))


def drop_from_page_cache(folder: Path) -> None:
    """Ask the OS to forget the cached pages of every shard file (clean ones after sync)."""
    os.sync()
    for path in folder.glob("shard-*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: object) -> float:
    began = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    args = parser.parse_args(argv)
    config = Config(fixed_length=SPEC_RECIPE["fixed_length"])  # 2 s, the notebook's
    spec = CacheSpec(features=config.features(), n_keep=stored_samples(config))
    with tempfile.TemporaryDirectory(prefix="audiogate-bench-") as tmp:
        size = fill(Path(tmp), spec, clips=args.clips, seconds=args.seconds)
        opened: list[FeatureCache] = []
        t_open = timed(lambda: opened.append(FeatureCache(tmp, spec)))
        cache = opened[0]
        shards = range(len(cache.shards))
        t_warm = timed(lambda: cache.verify(shards))
        drop_from_page_cache(cache.folder)
        fresh = FeatureCache(tmp, spec)
        t_cold = timed(lambda: fresh.verify(shards))
        refs = np.asarray([(s, r) for s, shard in enumerate(cache.shards)
                           for r in range(len(shard.fields))], np.int64)

        def read_all() -> None:
            for i in range(0, len(refs), 256):
                cache.features(refs[i:i + 256])
                cache.waves(refs[i:i + 256])
        t_read = timed(read_all)
    print(f"{args.clips} clips of {args.seconds:g} s: {size / GB:.2f} GB in "
          f"{len(cache.shards)} shards; {os.cpu_count()} cores, {platform.processor() or '?'}, "
          f"python {platform.python_version()}")
    print(f"open                {t_open:7.2f} s")
    print(f"verify, cached      {t_warm:7.2f} s  {size / GB / t_warm:5.2f} GB/s")
    print(f"verify, from disk   {t_cold:7.2f} s  {size / GB / t_cold:5.2f} GB/s")
    print(f"read all (for scale){t_read:7.2f} s  {size / GB / t_read:5.2f} GB/s")


if __name__ == "__main__":
    main()
