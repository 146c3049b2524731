"""A voice gate's history of enrolments and removals, bounded: the latest
:data:`HISTORY_KEPT` events in full, the older ones counted in one leading entry::

    {"action": "earlier", "counts": {"enrol": 210, "remove": 208},
     "since": "<time of the oldest>", "until": "<time of the newest folded>"}

so a gate enrolled and cleared all day by a service keeps the same size (each event in full
is about 75 bytes of the checkpoint). Histories written before the bound (any length) load as
they are and are folded at their next change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HISTORY_KEPT = 100
"""Events kept in full: enough to see who was enrolled or removed lately, and when (about
7.5 KB of the checkpoint); older ones only count."""
FOLDED = "earlier"
"""The ``action`` of the entry that counts the events no longer kept in full."""


def appended(history: Sequence[dict[str, Any]], event: dict[str, Any], *,
             keep: int | None = None) -> list[dict[str, Any]]:
    """``history`` with ``event`` added last, the events past the latest ``keep`` (default
    :data:`HISTORY_KEPT`) folded into the leading ``earlier`` entry (see the module
    docstring). ``history`` itself is not changed."""
    keep = HISTORY_KEPT if keep is None else keep
    folded = history[0] if history and history[0].get("action") == FOLDED else None
    events = [*history[1 if folded else 0:], event]
    if len(events) <= keep:
        return [folded, *events] if folded else events
    old, events = events[:-keep], events[-keep:]
    counts = dict(folded.get("counts") or {}) if folded else {}
    for e in old:
        action = str(e.get("action"))
        counts[action] = counts.get(action, 0) + 1
    since = folded.get("since") if folded else old[0].get("time")
    return [{"action": FOLDED, "counts": counts, "since": since,
             "until": old[-1].get("time")}, *events]
