"""Text renderings of rows: aligned tables and CSV, for people and for programs.

Every command that prints rows (``predict``, ``scan``, ``evaluate``, ``runs``) and every CSV
file audiogate writes goes through here, so the formats look and behave the same everywhere.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

FORMATS = ("table", "csv", "json")
"""Output formats of the commands that print rows."""


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text (RFC 4180 quoting, ``\\r\\n`` line ends) of ``header`` and ``rows``."""
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue()


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart, trailing blanks trimmed."""
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(x) for x in col) for col in zip(*cells, strict=True)]
    return "".join("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
                   + "\n" for row in cells)


def render_rows(header: Sequence[str], rows: Sequence[Sequence[Any]], *, fmt: str) -> str:
    """``rows`` as an aligned table or CSV (``fmt`` ``"table"`` or ``"csv"``)."""
    if fmt == "csv":
        return csv_text(header, rows)
    if fmt == "table":
        return aligned_table(header, rows)
    raise ConfigError(f"format must be 'table' or 'csv' here, got {fmt!r}")


def check_format(fmt: str) -> None:
    """Refuse an unknown output format with the list of known ones."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
