"""Events as tables, for Jupyter notebooks (HTML) and terminals (plain text).

* A :class:`~streamsrc.events.RecordedEvent` has a ``_repr_html_``: a cell
  ending in an event shows it as a one-row table.
* :func:`events_table` shows a list of events as one table.
* ``await stream.show(n)`` (:meth:`streamsrc.stream.Stream.show`) runs only the
  first ``n`` elements of any stream and shows them; a stream of events gets
  the columns used here.
* :func:`to_pandas` (or ``events_table(...).to_pandas()``) makes a
  ``pandas.DataFrame`` of events, with pandas' dtypes for numbers and times.
* :func:`progress_bar` (a pipe) and :func:`show_progress` draw a live
  progress bar for a copy's or a projection's progress reports.

pandas and tqdm are optional: ``pip install 'streamsrc[notebooks]'``.

The columns are :data:`EVENT_COLUMNS`: ``data`` and ``metadata`` as compact
JSON, ``time`` in UTC to the millisecond, the event's ``id`` as the row's
tooltip; numbers (``position``, ``seq``) are right-aligned, text is
left-aligned. Stream names, types and payloads are user data: every value
is HTML-escaped.

>>> import uuid
>>> from datetime import datetime, UTC
>>> from streamsrc.events import RecordedEvent
>>> e = RecordedEvent("user-1", 1, 7, "Registered", {"name": "<Ada>"}, None,
...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
>>> events_table([e])
position  stream  seq  type        time                         data              metadata
       7  user-1    1  Registered  2026-01-01 00:00:00.000 UTC  {"name":"<Ada>"}
>>> "{&quot;name&quot;:&quot;&lt;Ada&gt;&quot;}" in events_table([e])._repr_html_()
True
"""

from __future__ import annotations

import html
import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

if TYPE_CHECKING:  # events and the stream core show themselves through this module: no import back
    from streamsrc.events import RecordedEvent
    from streamsrc.stream import Stream

__all__ = [
    "EVENT_COLUMNS",
    "EventTable",
    "ProgressReport",
    "events_html",
    "events_table",
    "progress_bar",
    "show_progress",
    "to_pandas",
]

EVENT_COLUMNS = ("position", "stream", "seq", "type", "time", "data", "metadata")
"""The columns of an event table, in order."""

_LEFT = ' style="text-align:left"'
_RIGHT = ' style="text-align:right; font-variant-numeric:tabular-nums"'
_MONO = ' style="text-align:left; font-family:monospace"'
_STYLES = (_RIGHT, _LEFT, _RIGHT, _LEFT, _LEFT, _MONO, _MONO)
"""The style of each column: numbers (``position``, ``seq``) right-aligned, text left-aligned."""


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
           1  user-1    1  Renamed  2026-01-01 00:00:00.000 UTC  {"name":"xxxx…  {"by":"admin"}
           2  user-1    2  Renamed  2026-01-01 00:00:00.000 UTC  {"name":"xxxx…  {"by":"admin"}
    """
    return EventTable(events, max_chars)


def to_pandas(events: Iterable[RecordedEvent]) -> Any:
    """``events`` as a ``pandas.DataFrame``, one row each (needs pandas: the ``notebooks`` extra).

    The columns are :data:`EVENT_COLUMNS` and ``id``: ``position`` and
    ``seq`` are ``int64``, ``time`` is ``datetime64[ns, UTC]``, ``stream``
    and ``type`` are text, and ``data``, ``metadata`` (``None`` where there
    is none) and ``id`` (a :class:`uuid.UUID`) are the Python objects
    themselves. ``events_table(events).to_pandas()`` is the same.

    >>> import uuid
    >>> from datetime import datetime, UTC
    >>> from streamsrc.events import RecordedEvent
    >>> e = RecordedEvent("user-1", 1, 7, "Registered", {"name": "Ada"}, None,
    ...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
    >>> frame = to_pandas([e])
    >>> frame[["position", "stream", "seq", "type", "time"]]
       position  stream  seq        type                      time
    0         7  user-1    1  Registered 2026-01-01 00:00:00+00:00
    >>> str(frame["position"].dtype), str(frame["time"].dtype), frame["data"][0]
    ('int64', 'datetime64[ns, UTC]', {'name': 'Ada'})
    """
    pd = _import_pandas()
    rows = tuple(events)
    times = pd.to_datetime([e.time for e in rows], utc=True)
    return pd.DataFrame(
        {
            "position": pd.Series([e.position for e in rows], dtype="int64"),
            "stream": pd.Series([e.stream for e in rows], dtype=str),
            "seq": pd.Series([e.seq for e in rows], dtype="int64"),
            "type": pd.Series([e.type for e in rows], dtype=str),
            "time": pd.Series(times, dtype="datetime64[ns, UTC]"),
            "data": pd.Series([e.data for e in rows], dtype=object),
            "metadata": pd.Series([e.metadata for e in rows], dtype=object),
            "id": pd.Series([e.id for e in rows], dtype=object),
        }
    )


def _import_pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":
            raise
        raise ImportError(
            "to_pandas needs pandas: pip install 'streamsrc[notebooks]' (or pip install pandas)"
        ) from exc


class ProgressReport(Protocol):
    """What :func:`progress_bar` reads from a report.

    :class:`streamsrc.migrate.CopyProgress` (from :func:`~streamsrc.migrate.copying`)
    and :class:`streamsrc.projections.Progress` (from ``Projector.progress()``)
    are progress reports; so is any object with these four attributes.

    >>> from streamsrc.migrate import CopyProgress
    >>> report: ProgressReport = CopyProgress("copy", 0, position=40, head=100, events=40, elapsed=2.0)
    >>> report.position, report.head
    (40, 100)
    """

    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def head(self) -> int: ...
    @property
    def events(self) -> int: ...


R = TypeVar("R", bound=ProgressReport)


def progress_bar(description: str | None = None, **options: Any) -> Callable[[Stream[R]], Stream[R]]:
    """A pipe that shows a stream of progress reports as a live progress bar, passing them on unchanged.

    The bar (``tqdm.auto``: a widget in Jupyter, a text line in a terminal)
    goes from the first report's start to the log's head, counting
    positions, with the rate and the time left; it is drawn when the first
    report comes and closed when the stream stops, however it stops. Each
    run of the stream draws a bar of its own. In Jupyter the widget is
    replaced by the bar's last frame when it closes, so a saved notebook
    shows how the run ended. ``description`` labels it
    (default: ``"copy"`` for a copy, the projection's name for a projection);
    ``options`` go to ``tqdm`` (``leave``, ``file``, ``mininterval``, ...).
    Needs tqdm: the ``notebooks`` extra. See also :func:`show_progress`.

    >>> import io, anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.migrate import copying
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Noted", {}) for _ in range(5)])
    ...     out = io.StringIO()
    ...     copy = copying(source, target, batch_size=2).through(progress_bar(file=out))
    ...     print([p.position for p in await copy.to_list()])
    ...     print(out.getvalue().rpartition("\\r")[2].split("[")[0].strip())
    >>> anyio.run(main)
    [2, 4, 5, 5]
    copy: 100%|##########| 5/5
    """
    tqdm = _import_tqdm()

    def pipe(reports: Stream[R]) -> Stream[R]:
        async def start() -> _Bar:
            return _Bar(tqdm, description, options)

        async def stop(bar: _Bar) -> None:
            bar.close()

        # the type of ``reports`` makes the bracket: display is below the stream core, not above it
        return type(reports).bracket(start, stop).flat_map(lambda bar: reports.map(bar.update))

    return pipe


async def show_progress(reports: Stream[R], description: str | None = None, **options: Any) -> R | None:
    """Run a stream of progress reports with a live progress bar; return the last report (``None``: none).

    The one-liner of a notebook cell: ``await show_progress(copying(source,
    target))`` or ``await show_progress(projector.progress(live=False))``.
    The bar is :func:`progress_bar`'s.

    >>> import io, anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("s", [EventData("Noted", {}) for _ in range(5)])
    ...     count = Projection("count", lambda n, events: n + len(events))
    ...     projector = Projector(store, count, MemoryReadModel(0), batch_size=2)
    ...     last = await show_progress(projector.progress(live=False), file=io.StringIO())
    ...     print(last.position, last.caught_up)
    >>> anyio.run(main)
    5 True
    """
    last = await reports.through(progress_bar(description, **options)).last()
    return last.value_or(None)


def _import_tqdm() -> Any:
    try:
        return importlib.import_module("tqdm.auto").tqdm
    except ModuleNotFoundError as exc:
        if exc.name not in ("tqdm", "tqdm.auto"):
            raise
        raise ImportError(
            "progress bars need tqdm: pip install 'streamsrc[notebooks]' (or pip install tqdm)"
        ) from exc


class _Bar:
    """One run's progress bar, made from the first report.

    In Jupyter (``tqdm.auto`` gives tqdm's widget) the widget is displayed
    under a display id and, once closed, replaced by the bar's last text: a
    saved notebook then shows how the run ended (a viewer cannot draw the
    widget, whose stored text would be the bar as first drawn).
    """

    __slots__ = ("bar", "description", "display", "options", "tqdm")

    def __init__(self, tqdm: Any, description: str | None, options: dict[str, Any]) -> None:
        self.tqdm = tqdm
        self.description = description
        self.options = options
        self.bar: Any = None
        self.display: Any = None  # the widget's display handle, in Jupyter

    def update(self, report: R) -> R:
        bar = self.bar
        if bar is None:
            bar = self.bar = self.open(report)
        if report.head != bar.total:  # the head moves on while new events are appended
            bar.total = max(report.head, report.position)
            widget = getattr(bar, "container", None)
            if widget is not None:
                widget.children[1].max = bar.total
        if report.position > bar.n:
            bar.update(report.position - bar.n)
        return report

    def open(self, report: ProgressReport) -> Any:
        start = getattr(report, "start", None)  # a copy says where it began
        if not isinstance(start, int):
            start = max(0, report.position - report.events)
        if self.description is not None:
            description = self.description
        else:
            description = "copy" if hasattr(report, "start") else report.name
        options = {"unit": "ev", "leave": True, "desc": description} | self.options
        total = max(report.head, start)
        if not _is_widget(self.tqdm):
            return self.tqdm(total=total, initial=start, **options)
        bar = self.tqdm(total=total, initial=start, display=False, **options)
        display = importlib.import_module("IPython.display").display
        self.display = display(bar.container, display_id=True)
        return bar

    def close(self) -> None:
        bar = self.bar
        if bar is None:
            return
        bar.close()
        if self.display is not None:
            finished = not bar.total or bar.n >= bar.total
            self.display.update(_Text("" if finished and not bar.leave else str(bar)))


def _is_widget(tqdm: Any) -> bool:
    """Whether ``tqdm`` (the class ``tqdm.auto`` chose) draws Jupyter's widget."""
    widget = getattr(importlib.import_module("tqdm.notebook"), "tqdm_notebook", None)
    return isinstance(tqdm, type) and isinstance(widget, type) and issubclass(tqdm, widget)


class _Text:
    """A text shown as it is (the last frame of a progress bar)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


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
            "  ".join(
                c.rjust(w) if style is _RIGHT else c.ljust(w)
                for c, w, style in zip(row, widths, _STYLES, strict=True)
            ).rstrip()
            for row in rows
        )

    def to_pandas(self) -> Any:
        """The events as a ``pandas.DataFrame`` (see :func:`to_pandas`)."""
        return to_pandas(self.events)


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
