"""MkDocs hook: the configuration reference, generated at build time from the code.

``docs/configuration.md`` holds two markers. The hook replaces

* ``<!-- audiogate:config-fields -->`` with one table per section of the fields that
  :func:`audiogate.config.reference` returns (name, flag, type, default as written in TOML,
  help), in field order;
* ``<!-- audiogate:recipes -->`` with the field values of every recipe in
  :data:`audiogate.config.RECIPES`;
* ``<!-- audiogate:resume-flags -->`` with the flags of
  :data:`audiogate.config.RESUME_FIELDS`, the fields a resumed run may change.

So the page lists exactly the fields and recipes of the code that builds it; nothing in it is
typed by hand.

It also renders the Sphinx roles of audiogate's docstrings (``:class:`~audiogate.errors.X```)
that mkdocstrings shows in the API reference: as code, the last name only after a ``~``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

FIELDS_MARKER = "<!-- audiogate:config-fields -->"
RECIPES_MARKER = "<!-- audiogate:recipes -->"
RESUME_MARKER = "<!-- audiogate:resume-flags -->"
MARKERS = (FIELDS_MARKER, RECIPES_MARKER, RESUME_MARKER)
SPHINX_ROLE = re.compile(r":(?:class|func|meth|data|mod|attr|exc|obj):<code>(~?)([\w.]+)</code>")


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Replace the markers of a page with the generated tables (other pages pass through)."""
    if not any(marker in markdown for marker in MARKERS):
        return markdown
    from audiogate import config as ag_config  # the installed package (pip install -e .)

    if FIELDS_MARKER in markdown:
        markdown = markdown.replace(FIELDS_MARKER, fields_markdown(ag_config.reference()))
    if RECIPES_MARKER in markdown:
        markdown = markdown.replace(RECIPES_MARKER, recipes_markdown(ag_config.RECIPES))
    if RESUME_MARKER in markdown:
        markdown = markdown.replace(RESUME_MARKER, ", ".join(
            f"`--{name.replace('_', '-')}`" for name in ag_config.RESUME_FIELDS))
    return markdown


def on_page_content(html_text: str, *, page: Any, config: Any, files: Any) -> str:
    """``:class:<code>~a.b.C</code>`` (a docstring's role as mkdocstrings renders it) ->
    ``<code>C</code>``; without the ``~``, the whole dotted name."""
    return SPHINX_ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>",
                           html_text)


def fields_markdown(fields: Iterable[Any]) -> str:
    """One ``###`` heading and table per section, sections in order of their first field."""
    sections: dict[str, list[Any]] = {}
    for f in fields:
        sections.setdefault(f.section, []).append(f)
    if not sections:
        raise ValueError("audiogate.config.reference() returned no fields")
    parts = []
    for section, members in sections.items():
        rows = ["| field | flag | type | default | meaning |", "|---|---|---|---|---|"]
        rows += [f"| `{f.name}` | `{f.flag}` | {_cell(f.type)} | {_code(f.default)} | "
                 f"{_cell(f.help)} |" for f in members]
        parts.append(f"### {_cell(section[:1].upper() + section[1:])}\n\n" + "\n".join(rows))
    return "\n" + "\n\n".join(parts) + "\n"


def recipes_markdown(recipes: Mapping[str, Mapping[str, Any]]) -> str:
    """A table of every recipe and the field values it sets (TOML syntax)."""
    rows = ["| recipe | fields it sets |", "|---|---|"]
    for name, values in recipes.items():
        if values:
            text = "<br>".join(_code(f"{key} = {_toml(value)}") for key, value in values.items())
        else:
            text = "none: the field defaults"
        rows.append(f"| `{name}` | {text} |")
    return "\n" + "\n".join(rows) + "\n"


def _toml(value: Any) -> str:
    """A recipe value as a TOML file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a recipe value is not finite: {value!r}")
    return repr(value)


def _cell(text: str) -> str:
    """Plain text for a table cell: HTML escaped (``<run>`` is no tag), pipes escaped (no new
    column), Markdown's emphasis characters escaped, one line."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    for char in ("\\", "|", "*", "_", "`", "["):
        text = text.replace(char, "\\" + char)
    return text


def _code(text: str) -> str:
    """A code span for a table cell (Python-Markdown's tables keep a code span's pipes in
    its cell)."""
    text = " ".join(str(text).split())
    if not text:
        return '`""`'
    ticks = "``" if "`" in text else "`"
    return f"{ticks}{text}{ticks}"
