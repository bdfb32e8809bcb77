"""Display in notebooks: events as HTML tables (escaped), event lists, and ``Stream.show`` previews.

``Stream.show(n)`` must run only the first ``n`` elements: an endless stream
(``repeat_eval``, a live subscription) previews without hanging, no effect
past the ``n``-th runs, and finalizers run exactly once.

The notebooks themselves run as tests (nbmake, ``--nbmake`` in the pytest
options); here only how they are stored is checked.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest
from stream_helpers import task_count

from streamsrc import Stream
from streamsrc.display import (
    EVENT_COLUMNS,
    EventTable,
    events_html,
    events_table,
    progress_bar,
    show_progress,
    to_pandas,
)
from streamsrc.events import EventData, RecordedEvent
from streamsrc.migrate import CopyProgress, copying
from streamsrc.projections import MemoryReadModel, Projection, Projector, subscribe
from streamsrc.store.memory import MemoryStore

LIMIT = 10
"""Seconds any one preview may take: a preview that runs on fails the test instead of hanging it."""

SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def event(
    stream: str = "user-1",
    seq: int = 1,
    position: int = 1,
    type: str = "Registered",
    data: object = None,
    metadata: dict[str, object] | None = None,
) -> RecordedEvent:
    return RecordedEvent(
        stream,
        seq,
        position,
        type,
        {"name": "Ada"} if data is None else data,
        metadata,
        uuid.UUID(int=seq),
        WHEN,
    )


def cells(page: str) -> list[list[str]]:
    """The text of each body cell of the (first) table in ``page``, row by row."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr(?: [^>]*)?>(.*?)</tr>", body)
    return [re.findall(r"<td(?: [^>]*)?>(.*?)</td>", row) for row in rows]


def headers(page: str) -> list[str]:
    return re.findall(r"<th(?: [^>]*)?>(.*?)</th>", page)


def alignments(page: str, tag: str) -> list[str]:
    """The ``text-align`` of each ``tag`` (``th`` or ``td``) of the first row of that kind in ``page``."""
    row = re.search(rf"<tr[^>]*>((?:<{tag}[^>]*>.*?</{tag}>)+)</tr>", page)
    assert row is not None
    styles = re.findall(rf"<{tag}(?: style=\"([^\"]*)\")?>", row.group(1))
    return [m.group(1) if (m := re.search(r"text-align:(\w+)", style)) else "" for style in styles]


# ------------------------------------------------------------------------------------ events as HTML


def test_event_html_is_one_row_with_the_event_columns() -> None:
    e = event(metadata={"by": "admin"})
    page = e._repr_html_()
    assert headers(page) == list(EVENT_COLUMNS)
    assert cells(page) == [
        [
            "1",
            "user-1",
            "1",
            "Registered",
            "2026-03-04 05:06:07.890 UTC",
            "{&quot;name&quot;:&quot;Ada&quot;}",
            "{&quot;by&quot;:&quot;admin&quot;}",
        ]
    ]
    assert f'title="id {uuid.UUID(int=1)}"' in page


def test_event_html_escapes_user_data_everywhere() -> None:
    e = event(stream=SCRIPT, type=SCRIPT, data={SCRIPT: SCRIPT}, metadata={"by": SCRIPT})
    page = e._repr_html_()
    assert "<script" not in page
    row = cells(page)[0]
    assert row[1] == row[3] == ESCAPED
    assert ESCAPED in row[5]
    assert ESCAPED in row[6]


def test_event_html_of_stored_event_decodes_lazily_stored_fields() -> None:
    stored = tuple.__new__(
        RecordedEvent, ("s-1", 2, 9, "T", '{"a":[1,"é"]}', None, uuid.UUID(int=5).bytes, 1_000_000)
    )
    row = cells(stored._repr_html_())[0]
    assert row[4] == "1970-01-01 00:00:01.000 UTC"
    assert row[5] == "{&quot;a&quot;:[1,&quot;é&quot;]}"
    assert row[6] == ""


def test_events_table_is_one_table_in_order() -> None:
    events = [event(seq=n, position=10 + n) for n in (1, 2, 3)]
    table = events_table(events)
    assert isinstance(table, EventTable)
    assert list(table) == events
    assert len(table) == 3
    assert table[0] == events[0]
    assert table[1:] == events_table(events[1:])
    page = table._repr_html_()
    assert page.count("<table") == 1
    assert [row[0] for row in cells(page)] == ["11", "12", "13"]


def test_events_table_cuts_long_payloads_but_a_single_event_does_not() -> None:
    e = event(data={"text": "x" * 500})
    assert cells(events_table([e], max_chars=50)._repr_html_())[0][5].endswith("x…")
    assert len(events_table([e], max_chars=50)[0].data["text"]) == 500  # only the display is cut
    assert "…" not in e._repr_html_()
    assert "…" not in events_html([e])


def test_events_table_text_form() -> None:
    table = events_table([event(stream=SCRIPT, data={"n": 1}), event(seq=2, position=2)])
    lines = repr(table).splitlines()
    assert lines[0].split() == list(EVENT_COLUMNS)
    assert lines[1].split()[0] == "1"
    assert SCRIPT in lines[1]  # plain text: nothing to escape
    assert repr(events_table([])) == "(no events)"


def test_numbers_are_right_aligned_and_text_left_aligned() -> None:
    page = events_table([event(seq=12, position=345, stream=SCRIPT)])._repr_html_()
    expected = ["right", "left", "right", "left", "left", "left", "left"]
    assert alignments(page, "th") == expected
    assert alignments(page, "td") == expected
    assert cells(page)[0][:3] == ["345", ESCAPED, "12"]  # still escaped
    assert "<script" not in page
    assert alignments(event()._repr_html_(), "td") == expected  # one event, the same table


def test_events_table_text_form_right_aligns_numbers() -> None:
    table = events_table([event(seq=1, position=7), event(seq=10, position=1234)])
    lines = repr(table).splitlines()
    assert lines[1].startswith("       7  user-1    1  ")
    assert lines[2].startswith("    1234  user-1   10  ")


# ------------------------------------------------------------------------------------ to_pandas


def test_to_pandas_has_a_row_per_event_with_proper_dtypes() -> None:
    pd = pytest.importorskip("pandas")
    events = [
        event(seq=1, position=3, data={"name": "Ada", "tags": [1, 2]}),
        event(seq=2, position=9, type="Renamed", metadata={"by": SCRIPT}),
    ]
    frame = to_pandas(events)
    assert list(frame.columns) == [*EVENT_COLUMNS, "id"]
    assert len(frame) == 2
    assert frame["position"].dtype == "int64"
    assert frame["seq"].dtype == "int64"
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert frame["data"].dtype == object
    assert frame["metadata"].dtype == object
    assert frame["position"].tolist() == [3, 9]
    assert frame["stream"].tolist() == ["user-1", "user-1"]
    assert frame["type"].tolist() == ["Registered", "Renamed"]
    assert frame["time"][0] == pd.Timestamp(WHEN)  # to the microsecond, in UTC
    assert frame["data"][0] == {"name": "Ada", "tags": [1, 2]}  # the payload itself, not its text
    assert frame["metadata"].tolist() == [None, {"by": SCRIPT}]
    assert frame["id"].tolist() == [uuid.UUID(int=1), uuid.UUID(int=2)]
    assert frame.equals(events_table(events).to_pandas())


@pytest.mark.anyio
async def test_a_stream_of_events_or_of_rows_runs_into_a_data_frame() -> None:
    pytest.importorskip("pandas")
    store = MemoryStore()
    await store.append("user-1", [EventData("Registered", {"name": "Ada"}), EventData("Renamed", {})])
    frame = await store.read_all().to_pandas()
    assert frame.equals(to_pandas(await store.read_all().to_list()))  # events: the event table's dtypes
    assert frame["seq"].dtype == "int64"
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"

    @dataclass
    class Row:
        n: int
        name: str

    rows = await Stream.emits([Row(1, "a"), Row(2, "b")]).to_pandas()
    assert list(rows.columns) == ["n", "name"]
    assert rows["n"].tolist() == [1, 2]
    assert (await Stream.emits([3, 4]).to_pandas())["value"].tolist() == [3, 4]
    assert len(await Stream.empty().to_pandas()) == 0


def test_to_pandas_of_no_events_keeps_the_columns_and_dtypes() -> None:
    pytest.importorskip("pandas")
    frame = events_table([]).to_pandas()
    assert list(frame.columns) == [*EVENT_COLUMNS, "id"]
    assert len(frame) == 0
    assert frame["position"].dtype == "int64"
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.anyio
async def test_to_pandas_of_stored_events() -> None:
    pytest.importorskip("pandas")
    store = MemoryStore()
    await store.append("a", [EventData("Created", {"v": 1}), EventData("Renamed", {"v": 2})])
    await store.append("b", [EventData("Created", {"v": 3})])
    frame = to_pandas(await store.read_all().to_list())
    assert frame[["stream", "seq"]].values.tolist() == [["a", 1], ["a", 2], ["b", 1]]
    assert frame["position"].is_monotonic_increasing
    assert frame["data"].map(lambda d: d["v"]).tolist() == [1, 2, 3]


def test_to_pandas_without_pandas_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match=r"streamsrc\[notebooks\]"):
        to_pandas([event()])
    with pytest.raises(ImportError, match=r"streamsrc\[notebooks\]"):
        events_table([event()]).to_pandas()


# ------------------------------------------------------------------------------------ progress bars


def last_frame(out: io.StringIO) -> str:
    """The bar as last drawn (tqdm redraws its line after a carriage return)."""
    return out.getvalue().rstrip("\n").rpartition("\r")[2]


async def a_store_of(n: int) -> MemoryStore:
    store = MemoryStore()
    await store.append("s", [EventData("Noted", {"n": i}) for i in range(n)])
    return store


@pytest.mark.anyio
async def test_progress_bar_passes_a_copys_reports_on_and_draws_them() -> None:
    source = await a_store_of(10)
    out = io.StringIO()
    reports = await copying(source, MemoryStore(), batch_size=3).through(progress_bar(file=out)).to_list()
    assert [(r.position, r.done) for r in reports] == [
        (3, False),
        (6, False),
        (9, False),
        (10, False),
        (10, True),
    ]
    assert all(isinstance(r, CopyProgress) for r in reports)
    frame = last_frame(out)
    assert frame.startswith("copy: 100%")
    assert "10/10" in frame
    assert "ev/s" in frame


@pytest.mark.anyio
async def test_progress_bar_of_a_resumed_copy_starts_where_it_left_off() -> None:
    source, target = await a_store_of(10), MemoryStore()
    await copying(source, target, batch_size=4).take(1).drain()  # stopped after the first batch
    out = io.StringIO()
    last = await show_progress(copying(source, target, batch_size=4), "resume", file=out)
    assert last is not None
    assert (last.start, last.position, last.done) == (4, 10, True)
    assert out.getvalue().lstrip("\r").startswith("resume:  40%")  # drawn first at the start
    assert "10/10" in last_frame(out)


@pytest.mark.anyio
async def test_progress_bar_of_a_projection_is_labelled_with_its_name() -> None:
    store = await a_store_of(7)
    count = Projection("count", lambda n, events: n + len(events))
    projector = Projector(store, count, MemoryReadModel(0), batch_size=2)
    out = io.StringIO()
    last = await show_progress(projector.progress(live=False), file=out)
    assert last is not None
    assert (last.position, last.caught_up) == (7, True)
    assert last_frame(out).startswith("count: 100%")
    assert "7/7" in last_frame(out)


@pytest.mark.anyio
async def test_progress_bar_is_closed_when_the_stream_stops_early_or_fails() -> None:
    source = await a_store_of(10)
    out = io.StringIO()
    bar = progress_bar("early", file=out)
    reports = await copying(source, MemoryStore(), batch_size=2).through(bar).take(2).to_list()
    assert [r.position for r in reports] == [2, 4]
    assert last_frame(out).startswith("early:  40%")
    assert out.getvalue().endswith("\n")  # closed: the line is finished (leave=True keeps it)

    failing = copying(source, MemoryStore(), batch_size=2).take(1) + Stream.raise_error(ValueError("boom"))
    out = io.StringIO()
    with pytest.raises(ValueError, match="boom"):
        await failing.through(progress_bar("failing", file=out)).drain()
    assert last_frame(out).startswith("failing:  20%")
    assert out.getvalue().endswith("\n")


@pytest.mark.anyio
async def test_each_run_draws_a_bar_of_its_own_and_no_reports_draw_none() -> None:
    source = await a_store_of(4)
    out = io.StringIO()
    copy = copying(source, MemoryStore(), batch_size=4).through(progress_bar("run", file=out))
    await copy.drain()
    await copy.drain()  # a second copy into a fresh target
    assert out.getvalue().count("run: 100%") >= 2
    assert out.getvalue().count("\n") == 2

    out = io.StringIO()
    assert await show_progress(Stream[CopyProgress].empty(), file=out) is None
    assert out.getvalue() == ""


def run_in_a_kernel(tmp_path: Path, *sources: str) -> Any:
    """Run cells in a Jupyter kernel of this environment (as nbmake does); return the executed notebook."""
    cells: list[dict[str, object]] = [
        {
            "id": f"c{n}",
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": s,
        }
        for n, s in enumerate(sources)
    ]
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "run.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    run = importlib.import_module("nbmake.nb_run").NotebookRun(path, 120).execute()
    assert run.error is None, run.error
    return run.nb


def test_in_jupyter_the_bar_is_a_widget_that_ends_as_its_last_frame(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    notebook = run_in_a_kernel(
        tmp_path,
        "from streamsrc.display import show_progress\n"
        "from streamsrc.events import EventData\n"
        "from streamsrc.migrate import copying\n"
        "from streamsrc.store.memory import MemoryStore\n"
        "source, target = MemoryStore(), MemoryStore()\n"
        "await source.append('s', [EventData('Noted', {}) for _ in range(30)])",
        "last = await show_progress(copying(source, target, batch_size=7), 'copy in jupyter')\n"
        "print(last.position, last.done)",
        "await show_progress(copying(source, MemoryStore(), batch_size=10).take(1), 'cut short')",
    )
    outputs = notebook.cells[1].outputs
    assert [o["output_type"] for o in outputs] == ["display_data", "stream"]
    assert WIDGET not in outputs[0]["data"]  # the widget was replaced ...
    assert re.match(
        r"copy in jupyter: 100%\|.*\| 30/30 \[", outputs[0]["data"]["text/plain"]
    )  # ... by its end
    assert outputs[1]["text"] == "30 True\n"
    cut = notebook.cells[2].outputs
    assert re.match(r"cut short:  33%\|.*\| 10/30 \[", cut[0]["data"]["text/plain"])  # where it stopped


def test_progress_bar_without_tqdm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"streamsrc\[notebooks\]"):
        progress_bar()


# ------------------------------------------------------------------------------------ Stream.show


@pytest.mark.anyio
async def test_show_previews_an_endless_stream_and_runs_its_finalizer_once() -> None:
    effects = 0
    finalized = 0

    async def tick() -> int:
        nonlocal effects
        effects += 1
        return effects

    async def done() -> None:
        nonlocal finalized
        finalized += 1

    tasks = task_count()
    with anyio.fail_after(LIMIT):
        preview = await Stream.repeat_eval(tick).on_finalize(done).show(5)
    assert list(preview) == [1, 2, 3, 4, 5]
    assert effects == 5  # nothing past the fifth element ran
    assert finalized == 1
    assert not preview.complete
    assert repr(preview).splitlines()[0] == "first 5 elements (the stream was not run further):"
    assert "first 5 elements (the stream was not run further)" in preview._repr_html_()
    assert task_count() == tasks


@pytest.mark.anyio
async def test_show_releases_a_bracketed_resource_of_an_endless_stream() -> None:
    log: list[str] = []

    async def acquire() -> str:
        log.append("acquire")
        return "conn"

    async def release(conn: str) -> None:
        log.append("release")

    def rows(conn: str) -> Stream[int]:
        return Stream.range(0, 10**12, chunk_size=3)

    with anyio.fail_after(LIMIT):
        preview = await Stream.bracket(acquire, release).flat_map(rows).show(4)
    assert list(preview) == [0, 1, 2, 3]
    assert log == ["acquire", "release"]


@pytest.mark.anyio
async def test_show_of_a_concurrent_endless_stream_leaves_no_task_behind() -> None:
    async def slow(x: int) -> int:
        await anyio.sleep(0.001)
        return x * 2

    tasks = task_count()
    with anyio.fail_after(LIMIT):
        left = Stream.range(0, 10**12).par_eval_map(4, slow)
        preview = await left.merge(Stream.fixed_delay(0.001).map(lambda _: -1)).show(6)
    assert len(preview) == 6
    assert task_count() == tasks


@dataclass
class _Order:
    order: str
    lines: int
    total: float
    note: str | None


@pytest.mark.anyio
async def test_show_right_aligns_numbers_as_text_and_in_html() -> None:
    """The text table of ``await s.show()`` printed each element's repr, numbers left where they fell,
    and the HTML table set every column left: number columns are right-aligned now, text left."""
    orders = [
        _Order("A-1", 3, 12.5, None),
        _Order("B-22", 120, 1030.0, "gift"),
        _Order("C-333", 7, 8.25, "x"),
    ]
    shown = await Stream.emits(orders).show()
    assert repr(shown).splitlines() == [
        "all 3 elements:",
        "  order  lines   total  note",
        "  A-1        3    12.5  None",
        "  B-22     120  1030.0  gift",
        "  C-333      7    8.25  x",
    ]
    page = shown._repr_html_()
    right = 'style="text-align:right; font-variant-numeric:tabular-nums"'
    assert page.count(f"<th {right}>") == 2  # lines, total
    assert page.count(f"<td {right}>") == 6
    assert '<th style="text-align:left">note</th>' in page
    numbers = await Stream.emits([5, 40, 300]).show()
    assert repr(numbers).splitlines()[1:] == ["  value", "      5", "     40", "    300"]
    mixed = await Stream.emits([{"id": 1, "v": "7"}, {"id": "x", "v": True}, {"v": 2}]).show()
    assert repr(mixed).splitlines()[1:] == [  # a column that is not all numbers stays left-aligned
        "  id  v",
        "  1   7",
        "  x   True",
        "      2",
    ]


@pytest.mark.anyio
async def test_show_cuts_long_cells_and_keeps_each_row_on_one_line() -> None:
    shown = await Stream.emits([{"n": 1, "text": "a" * 200}, {"n": 22, "text": "two\nlines"}]).show()
    lines = repr(shown).splitlines()
    assert len(lines) == 4
    assert lines[2] == "   1  " + "a" * 79 + "…"
    assert lines[3] == "  22  two\\nlines"


@pytest.mark.anyio
async def test_show_of_a_short_stream_says_it_is_complete() -> None:
    preview = await Stream.emits("ab").show(10)
    assert preview.complete
    assert list(preview) == ["a", "b"]
    assert repr(preview) == "all 2 elements:\n  value\n  a\n  b"
    empty = await Stream[int].empty().show()
    assert empty.complete
    assert repr(empty) == "the stream is empty"
    assert "the stream is empty" in empty._repr_html_()


@pytest.mark.anyio
async def test_show_does_not_reach_an_error_past_n_and_raises_one_before() -> None:
    failing = Stream.emits([1, 2]) + Stream.raise_error(ValueError("boom"))
    assert list(await failing.show(2)) == [1, 2]
    with pytest.raises(ValueError, match="boom"):
        await failing.show(3)


@pytest.mark.anyio
async def test_show_needs_a_positive_n() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        await Stream.range(0, 3).show(0)


@dataclass(frozen=True)
class Point:
    x: int
    label: str


class Pair(NamedTuple):
    left: int
    right: object


@pytest.mark.anyio
async def test_show_gives_a_column_per_field() -> None:
    page = (await Stream.emits([Point(1, SCRIPT), Point(2, "b")]).show())._repr_html_()
    assert headers(page) == ["x", "label"]
    assert cells(page) == [["1", ESCAPED], ["2", "b"]]

    page = (await Stream.emits([Pair(1, {"k": [1, 2]}), Pair(2, WHEN)]).show())._repr_html_()
    assert headers(page) == ["left", "right"]
    assert cells(page) == [["1", "{&quot;k&quot;:[1,2]}"], ["2", "2026-03-04 05:06:07.890+00:00"]]

    page = (await Stream.emits([{"a": 1}, {"b": None, SCRIPT: 2}]).show())._repr_html_()
    assert headers(page) == ["a", "b", ESCAPED]
    assert cells(page) == [["1", "", ""], ["", "None", "2"]]


@pytest.mark.anyio
async def test_show_of_plain_or_mixed_values_is_one_column() -> None:
    page = (await Stream.emits([1, SCRIPT, Point(3, "c")]).show())._repr_html_()
    assert headers(page) == ["value"]
    assert cells(page) == [["1"], [ESCAPED], ["Point(x=3, label=&#x27;c&#x27;)"]]
    assert "<script" not in page


@pytest.mark.anyio
async def test_show_of_a_stream_of_events_is_an_event_table() -> None:
    store = MemoryStore()
    await store.append(SCRIPT, [EventData("Created", {"v": SCRIPT}), EventData("Renamed", {"v": 2})])
    preview = await store.read_all().show(10)
    page = preview._repr_html_()
    assert 'class="streamsrc-events"' in page
    assert headers(page) == list(EVENT_COLUMNS)
    assert [row[:4] for row in cells(page)] == [
        ["1", ESCAPED, "1", "Created"],
        ["2", ESCAPED, "2", "Renamed"],
    ]
    assert "<script" not in page
    assert "all 2 elements" in page


@pytest.mark.anyio
async def test_show_of_a_live_subscription_returns_after_n_events() -> None:
    store = MemoryStore()
    for n in range(3):
        await store.append(f"user-{n}", [EventData("Registered", {"n": n})])

    with anyio.fail_after(LIMIT):
        preview = await subscribe(store, after=0).show(2)  # caught up: it would follow live for ever
        assert [e.stream for e in preview] == ["user-0", "user-1"]
        async with anyio.create_task_group() as tg:  # waits for a live event, takes it, stops
            tg.start_soon(store.append, "user-9", [EventData("Registered", {"n": 9})])
            live = await subscribe(store, after=3).show(1)
    assert [e.stream for e in live] == ["user-9"]


# ------------------------------------------------------------------------------------ the notebooks

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"

MACHINE_PATHS = re.compile(r"/tmp/|/var/folders/|/private/var/|/home/|/root/|/work/|/Users/|[A-Z]:\\\\")
"""Absolute paths of the machine that ran a notebook: a reader's machine has none of them."""

WIDGET = "application/vnd.jupyter.widget-view+json"


def output_text(output: dict[str, Any]) -> str:
    """Everything an output shows, as one string (its text, or each of its forms)."""
    values = [output.get("text", ""), *output.get("data", {}).values()]
    return "\n".join("".join(v) if isinstance(v, list) else str(v) for v in values)


def test_notebooks_are_stored_with_their_outputs_and_never_start_an_event_loop() -> None:
    """A repository viewer shows the notebooks as they ran: every code cell run once, top to bottom."""
    names = [path.name for path in NOTEBOOKS]
    assert names[:3] == ["01-streams.ipynb", "02-event-sourcing.ipynb", "03-cqrs.ipynb"]
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        assert notebook["metadata"]["kernelspec"]["name"] == "python3", path.name
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        assert code, path.name
        counts = [cell["execution_count"] for cell in code]
        assert counts == list(range(1, len(code) + 1)), f"{path.name}: not run once top to bottom: {counts}"
        assert sum(1 for cell in code if cell["outputs"]) >= len(code) // 2, path.name
        for cell in code:
            source = "".join(cell["source"])
            # The kernel runs an event loop already: cells use top-level await.
            assert "asyncio.run(" not in source, path.name
            assert "anyio.run(" not in source, path.name
            for output in cell["outputs"]:
                where = f"{path.name}, cell {source[:60]!r}"
                assert output["output_type"] != "error", where
                assert output.get("name") != "stderr", f"{where}: {output_text(output)[:200]}"
                # a viewer cannot draw a widget, and its stored text is the bar as first drawn (0%)
                assert WIDGET not in output.get("data", {}), where
                text = output_text(output)
                assert not MACHINE_PATHS.search(text), f"{where}: {MACHINE_PATHS.search(text)}"
                assert len(text) < 100_000, f"{where}: an output of {len(text)} characters"
        assert path.stat().st_size < 300_000, path.name


def test_the_stored_notebooks_show_tables_and_a_plot() -> None:
    outputs = {
        path.name: [
            output
            for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
            for output in cell.get("outputs", [])
        ]
        for path in NOTEBOOKS
    }
    sourcing = outputs["02-event-sourcing.ipynb"]
    assert any('class="streamsrc-events"' in output_text(o) for o in sourcing)  # an event table
    assert any("dataframe" in output_text(o) for o in sourcing)  # a DataFrame
    assert any("image/png" in o.get("data", {}) for o in sourcing)  # the plot
    # the progress bar as the run ended (the live widget is replaced by its last frame)
    assert any(re.search(r"backup: 100%\|.*\| 26/26 ", output_text(o)) for o in sourcing)
    cqrs = outputs["03-cqrs.ipynb"]
    assert any("<table" in output_text(o) for o in cqrs)
    assert any(re.search(r"type-counts: 100%\|.*\| (\d+)/\1 ", output_text(o)) for o in cqrs)


def test_the_test_run_executes_a_fresh_copy_of_each_notebook(tmp_path: Path) -> None:
    """nbmake runs a notebook from scratch, stored outputs or not, and never writes them back."""
    addopts = re.search(r"^addopts = (.*)$", PYPROJECT.read_text(encoding="utf-8"), re.MULTILINE)
    assert addopts is not None
    assert "--nbmake" in addopts.group(1)
    assert "--overwrite" not in addopts.group(1)

    def cell(source: str, outputs: list[dict[str, object]], count: int) -> dict[str, object]:
        return {
            "id": f"cell-{count}",
            "cell_type": "code",
            "execution_count": count,
            "metadata": {},
            "outputs": outputs,
            "source": source,
        }

    stale: list[dict[str, object]] = [{"output_type": "stream", "name": "stdout", "text": "stale\n"}]
    notebook = {
        "cells": [cell("x = 41", [], 7), cell("print(x + 1)", stale, 8)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "stored.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    before = path.read_bytes()
    run = importlib.import_module("nbmake.nb_run").NotebookRun(path, 60).execute()
    assert run.error is None
    fresh = run.nb.cells
    assert [c.execution_count for c in fresh] == [1, 2]
    assert [o["text"] for o in fresh[1].outputs] == ["42\n"]
    assert path.read_bytes() == before  # the stored notebook is left as it was
