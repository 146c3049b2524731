"""Building blocks of self-contained HTML pages: escaping, tables, numbers tied to the JSON
they come from, inline images and audio, and the page shell with its Content-Security-Policy.

Every text that reaches a page goes through :func:`esc` unless it is :class:`Html` (markup
built here). Pages load nothing: images and audio are ``data:`` URIs, the style sheet is
inline and allowed by its hash, and there is no script at all (:data:`CSP`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"
STYLE = (TEMPLATES / "report.css").read_text(encoding="utf-8")
PAGE = Template((TEMPLATES / "report.html").read_text(encoding="utf-8"))
CSP = ("default-src 'none'; img-src data:; media-src data:; style-src 'sha256-"
       + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'; "
       "base-uri 'none'; form-action 'none'")
"""The pages' Content-Security-Policy: nothing from any server, no script, only the page's own
style sheet; images and audio from ``data:`` URIs only."""


class Html(str):
    """Markup that is already safe (built by these helpers): :func:`esc` leaves it alone."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """``value`` as HTML text: markup kept, anything else escaped (quotes included)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Any]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, *content: Any, **attrs: Any) -> Html:
    """``<name attrs>content</name>``; ``class_`` gives ``class``; None/False attributes are
    left out, True ones written bare."""
    text = "".join(f" {k.rstrip('_').replace('_', '-')}" if v is True else
                   f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"'
                   for k, v in attrs.items() if v is not None and v is not False)
    return Html(f"<{name}{text}>{join(content)}</{name}>")


SMALL = 1e-3
"""Non-zero floats below this (a learning rate) are written in scientific notation."""


def fmt_value(value: Any) -> str:
    """How a number from a JSON file is written on a page: floats with 4 decimals (small
    ones as ``1.000e-05``), ``n/a`` for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3e}" if 0 < abs(value) < SMALL else f"{value:.4f}"
    return str(value)


def num(value: Any, *source: str | int) -> Html:
    """A value shown on the page, tagged with where it comes from: ``source`` is the JSON
    file name then the keys / list indices down to it (``data-key``, a JSON array), so a test
    can check every tagged value against its file."""
    key = json.dumps(list(source)) if source else None
    return tag("span", fmt_value(value), data_key=key)


@dataclass(frozen=True)
class Cell:
    """A table cell with a ``class`` (plain values make plain cells)."""

    content: Any
    class_: str


def _td(value: Any) -> Html:
    if isinstance(value, Cell):
        return tag("td", value.content, class_=value.class_)
    return tag("td", value)


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *,
          class_: str | None = None, marked: Iterable[int] = ()) -> Html:
    """A table; rows whose index is in ``marked`` get ``class="mark"``."""
    marks = set(marked)
    head = tag("tr", *(tag("th", h) for h in header))
    body = join(tag("tr", *(_td(c) for c in row), class_="mark" if i in marks else None)
                for i, row in enumerate(rows))
    return tag("table", tag("thead", head), tag("tbody", body), class_=class_)


def facts(pairs: Iterable[tuple[Any, Any]]) -> Html:
    """A definition list of ``(term, value)`` pairs."""
    return tag("dl", join(Html(tag("dt", k) + tag("dd", v)) for k, v in pairs), class_="facts")


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def image(png: bytes, *, alt: str, class_: str | None = None) -> Html:
    """An inline PNG."""
    return Html(f'<img src="{data_uri(png, "image/png")}" alt="{esc(alt)}"'
                + (f' class="{esc(class_)}"' if class_ else "") + ">")


def figure(png: bytes | None, *, alt: str, caption: str) -> Html:
    """A captioned inline PNG, or a note that the figure is not there."""
    if png is None:
        return tag("p", f"{caption}: not available.", class_="muted")
    return tag("figure", image(png, alt=alt), tag("figcaption", caption))


def audio(wav: bytes) -> Html:
    """An inline WAV player (``preload="metadata"``: the length shows before playing)."""
    return Html(f'<audio controls preload="metadata" src="{data_uri(wav, "audio/wav")}">'
                "</audio>")


def section(anchor: str, title: str, *content: Any) -> Html:
    return tag("section", tag("h2", title), *content, id=anchor)


def page(*, title: str, body: Html) -> str:
    """The whole document: the shell in ``templates/report.html`` with the CSP, the inline
    style sheet, the title and ``body``."""
    return PAGE.substitute(csp=esc(CSP), style=STYLE, title=esc(title), body=body)
