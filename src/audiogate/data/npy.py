"""The cache's ``.npy`` files: written with the size and SHA-256 of their bytes, checked
against them, and read by positioned reads.

Whoever writes a file keeps its :data:`FileCheck` (in a shard's index, or beside a view) and
checks it in two steps: :func:`size_problem` costs one ``stat`` (a truncated or extended
file), :func:`digest_problems` reads and hashes every byte (a file changed in place, e.g. an
array zeroed at the same size). Files written before checks were kept are checked by
:func:`header_problem`: their header's shape against their size.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write, sha256_file

FileCheck = list[int | str]
"""``[size in bytes, hex SHA-256]`` of a file as written (a JSON list in an index)."""
HASH_THREADS = 4
"""Files hashed at once (hashlib releases the GIL: the hashes run in parallel)."""


def write_npy(path: Path, array: np.ndarray) -> FileCheck:
    """Write ``array`` as an ``.npy`` file (atomically, not fsync-ed: cache data can be
    rebuilt); its check."""
    array = np.ascontiguousarray(array)
    return write_npy_chunks(path, dtype=array.dtype, shape=array.shape, chunks=[array])


def write_npy_chunks(path: Path, *, dtype: np.dtype, shape: Sequence[int],
                     chunks: Iterable[np.ndarray]) -> FileCheck:
    """Write an ``.npy`` file of ``dtype`` and ``shape`` whose data is ``chunks`` (C order, in
    turn; memory holds one chunk at a time); its check."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(int(n) for n in shape)})
    header = head.getvalue()
    size = len(header) + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    digest = hashlib.sha256(header)
    with atomic_write(path, durable=False, size=size) as fh:
        fh.write(header)
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype=dtype).reshape(-1).view(np.uint8)
            digest.update(data.data)
            fh.write(data.data)
    return [size, digest.hexdigest()]


def size_problem(path: Path, check: FileCheck) -> str | None:
    """Why ``path`` cannot be the file ``check`` describes, by its size alone (None: it can)."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return f"{path.name} is missing or unreadable ({exc.strerror or exc})"
    if size != check[0]:
        return f"{path.name} holds {size} bytes, {check[0]} were written (truncated or damaged)"
    return None


def digest_problems(files: Sequence[tuple[Path, FileCheck]]) -> list[str | None]:
    """For each ``(path, check)``: why its bytes are not the ones written (None: they are).
    Reads every byte, :data:`HASH_THREADS` files at a time."""
    def problem(item: tuple[Path, FileCheck]) -> str | None:
        path, check = item
        try:
            found = sha256_file(path)
        except OSError as exc:
            return f"{path.name} is unreadable ({exc.strerror or exc})"
        if found != check[1]:
            return f"{path.name} changed since it was written (its SHA-256 differs)"
        return None

    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return list(pool.map(problem, files))


def header_problem(path: Path, *, rows: int | None) -> str | None:
    """Why the ``.npy`` file ``path`` (written before checks were kept) is not whole: missing,
    an unreadable header, fewer bytes than its header's shape needs, or another number of
    ``rows`` than its index lists (None: it looks whole)."""
    try:
        with open(path, "rb") as fh:
            shape, dtype, start = _header(fh)
        size = os.stat(path).st_size
    except (OSError, ValueError) as exc:
        return f"{path.name} is missing or unreadable ({exc})"
    needed = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != needed:
        return f"{path.name} holds {size} bytes, its header says {needed} (truncated)"
    if rows is not None and (not shape or shape[0] != rows):
        return f"{path.name} holds {shape[0] if shape else 0} rows, its index lists {rows}"
    return None


def read_npy_rows(path: Path, rows: np.ndarray, out: np.ndarray) -> bool:
    """Rows ``rows`` ``[shape=(k,)]`` of the fixed-shape ``.npy`` file ``path`` into ``out``
    ``[shape=(k, ...)]`` (its dtype and row shape), one positioned read each; False if the
    file ends before a row does."""
    with open(path, "rb") as fh:
        start = _header(fh)[2]
        row_bytes = out[0].nbytes if len(out) else 0
        for i, row in enumerate(rows.tolist()):
            fh.seek(start + int(row) * row_bytes)
            if fh.readinto(memoryview(out[i]).cast("B")) != row_bytes:
                return False
    return True


def read_npy_segments(path: Path, offsets: np.ndarray, counts: np.ndarray,
                      out: np.ndarray) -> bool:
    """``counts[i]`` values from ``offsets[i]`` of the 1-D ``.npy`` file ``path`` into the
    start of row ``i`` of ``out``, by positioned reads; False if the file ends early."""
    with open(path, "rb") as fh:
        start, size = _header(fh)[2], out.itemsize
        for i, (offset, count) in enumerate(zip(offsets.tolist(), counts.tolist(),
                                                strict=True)):
            fh.seek(start + offset * size)
            if fh.readinto(memoryview(out[i]).cast("B")[:count * size]) != count * size:
                return False
    return True


def _header(fh: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read the header of the ``.npy`` file open in ``fh``: its shape, dtype, and the offset of
    its data."""
    major, _ = np.lib.format.read_magic(fh)
    read = (np.lib.format.read_array_header_1_0 if major == 1
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(fh)
    return tuple(shape), dtype, int(fh.tell())
