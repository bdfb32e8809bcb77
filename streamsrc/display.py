"""Events as tables, for Jupyter notebooks (HTML) and terminals (plain text).

* A :class:`~streamsrc.events.RecordedEvent` has a ``_repr_html_``: a cell
  ending in an event shows it as a one-row table.
* :func:`events_table` shows a list of events as one table.
* ``await stream.show(n)`` (:meth:`streamsrc.stream.Stream.show`) runs only the
  first ``n`` elements of any stream and shows them; a stream of events gets
  the columns used here.

The columns are :data:`EVENT_COLUMNS`: ``data`` and ``metadata`` as compact
JSON, ``time`` in UTC to the millisecond, the event's ``id`` as the row's
tooltip. Stream names, types and payloads are user data: every value is
HTML-escaped.

>>> import uuid
>>> from datetime import datetime, UTC
>>> from streamsrc.events import RecordedEvent
>>> e = RecordedEvent("user-1", 1, 7, "Registered", {"name": "<Ada>"}, None,
...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
>>> events_table([e])
position  stream  seq  type        time                           data            metadata
7         user-1  1    Registered  2026-01-01 00:00:00.000 UTC  {"name":"<Ada>"}
>>> "{&quot;name&quot;:&quot;&lt;Ada&gt;&quot;}" in events_table([e])._repr_html_()
True
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:  # events shows itself through this module: no import back at run time
    from streamsrc.events import RecordedEvent

__all__ = ["EVENT_COLUMNS", "EventTable", "events_html", "events_table"]

EVENT_COLUMNS = ("position", "stream", "seq", "type", "time", "data", "metadata")
"""The columns of an event table, in order."""

_LEFT = ' style="text-align:left"'
_MONO = ' style="text-align:left; font-family:monospace"'
_STYLES = ("", _LEFT, "", _LEFT, _LEFT, _MONO, _MONO)


def events_html(events: Iterable[RecordedEvent], max_chars: int | None = None) -> str:
    """An HTML ``<table>`` of ``events``, one row each (see :data:`EVENT_COLUMNS`).

    Every value is HTML-escaped; a ``data`` or ``metadata`` text longer than
    ``max_chars`` is cut short with an ellipsis (``None``: never).

    >>> import uuid
    >>> from datetime import datetime, UTC
    >>> from streamsrc.events import RecordedEvent
    >>> e = RecordedEvent("<script>alert(1)</script>", 1, 1, "T", {}, None,
    ...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
    >>> page = events_html([e])
    >>> "&lt;script&gt;alert(1)&lt;/script&gt;" in page, "<script>" in page
    (True, False)
    """
    head = "".join(f"<th{style}>{name}</th>" for name, style in zip(EVENT_COLUMNS, _STYLES, strict=True))
    rows = []
    for event in events:
        cells = "".join(
            f"<td{style}>{html.escape(text)}</td>"
            for text, style in zip(_cells(event, max_chars), _STYLES, strict=True)
        )
        rows.append(f'<tr title="id {html.escape(str(event.id))}">{cells}</tr>')
    body = "\n".join(rows)
    return (
        f'<table class="streamsrc-events">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def events_table(events: Iterable[RecordedEvent], max_chars: int = 200) -> EventTable:
    """``events`` as one table: HTML in a notebook, aligned text in a terminal.

    ``data`` and ``metadata`` longer than ``max_chars`` characters are cut
    short. The table is a sequence of the events.

    >>> import uuid
    >>> from datetime import datetime, UTC
    >>> from streamsrc.events import RecordedEvent
    >>> when = datetime(2026, 1, 1, tzinfo=UTC)
    >>> table = events_table(
    ...     RecordedEvent("user-1", seq, seq, "Renamed", {"name": "x" * 30}, {"by": "admin"},
    ...                   uuid.UUID(int=seq), when)
    ...     for seq in (1, 2)
    ... )
    >>> len(table), table[1].seq
    (2, 2)
    >>> events_table(table, max_chars=14)
    position  stream  seq  type     time                         data          metadata
    1         user-1  1    Renamed  2026-01-01 00:00:00.000 UTC  {"name":"xxxx…  {"by":"admin"}
    2         user-1  2    Renamed  2026-01-01 00:00:00.000 UTC  {"name":"xxxx…  {"by":"admin"}
    """
    return EventTable(events, max_chars)


class EventTable(Sequence["RecordedEvent"]):
    """A list of events that shows itself as a table (made by :func:`events_table`).

    >>> events_table([])
    (no events)
    >>> events_table([])._repr_html_()
    '<table class="streamsrc-events">...<tbody>\\n\\n</tbody>\\n</table>'
    """

    __slots__ = ("events", "max_chars")

    def __init__(self, events: Iterable[RecordedEvent], max_chars: int = 200) -> None:
        self.events: tuple[RecordedEvent, ...] = tuple(events)
        self.max_chars = max_chars

    @overload
    def __getitem__(self, index: int) -> RecordedEvent: ...
    @overload
    def __getitem__(self, index: slice) -> EventTable: ...
    def __getitem__(self, index: int | slice) -> RecordedEvent | EventTable:
        if isinstance(index, slice):
            return EventTable(self.events[index], self.max_chars)
        return self.events[index]

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self.events)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventTable):
            return self.events == other.events
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.events)

    def _repr_html_(self) -> str:
        """The events as an HTML table (Jupyter calls this to display the table)."""
        return events_html(self.events, self.max_chars)

    def __repr__(self) -> str:
        if not self.events:
            return "(no events)"
        rows = [list(EVENT_COLUMNS), *(_cells(e, self.max_chars) for e in self.events)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(EVENT_COLUMNS))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        )


def _cells(event: RecordedEvent, max_chars: int | None) -> list[str]:
    """The text of each column for ``event`` (not escaped)."""
    metadata = event.metadata
    return [
        str(event.position),
        event.stream,
        str(event.seq),
        event.type,
        _time_text(event.time),
        _cut(_json_text(event.data), max_chars),
        "" if metadata is None else _cut(_json_text(metadata), max_chars),
    ]


def _time_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        return moment.isoformat(sep=" ", timespec="milliseconds")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds") + " UTC"


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)


def _cut(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)] + "…"
