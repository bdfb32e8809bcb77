"""SQLite-specific behaviour: persistence, several stores on one file, URL options, schema
checks, transactions, and a closed store.

The contract itself is checked for SQLite by ``test_store_conformance.py``.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.maybe import Nothing, Some
from returns.result import Failure, Success

from streamsrc.errors import (
    DuplicateEvent,
    IncompatibleSchema,
    InvalidEvent,
    InvalidStoreURL,
    StoreUnavailable,
    WrongExpectedVersion,
)
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import AppendResult, open_store
from streamsrc.store.sqlite import SCHEMA_VERSION, SqliteStore, SqliteTransaction, _to_datetime, _to_us
from streamsrc.testing.conformance import (
    append_ok,
    content,
    expect_failure,
    expect_success,
    make_events,
    recorded_content,
    tail_log,
)

pytestmark = pytest.mark.anyio


def _url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


@asynccontextmanager
async def sqlite_store(url: str) -> AsyncIterator[SqliteStore]:
    """``open_store(url)``, checked to be the SQLite store (its own methods: ``transaction``...)."""
    async with open_store(url) as store:
        assert isinstance(store, SqliteStore)
        yield store


def _query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read from the file with a connection of its own (run it off the event loop)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def _read_file(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return await anyio.to_thread.run_sync(_query, path, sql, params)


def _prepare(path: Path, *statements: str) -> None:
    """Make a database file by hand (a file streamsrc did not make, or made by a later version)."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------- persistence


async def test_file_persists_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = make_events(3, "a")
    second = make_events(2, "b")
    state = {"balance": 42, "name": "Zoë 🎉"}
    async with open_store(_url(path)) as store:
        ra = await append_ok(store, "acct-a", first, 0)
        rb = await append_ok(store, "acct-b", second, 0)
        await store.save_snapshot("acct-a", ra.last_seq, state, 2)
        await store.save_checkpoint("projection", rb.positions[-1])
        before: list[RecordedEvent] = await store.read_all().to_list()
    async with open_store(_url(path)) as store:
        assert await store.read_all().to_list() == before
        assert recorded_content(await store.read("acct-a").to_list()) == content(first)
        assert await store.streams().to_list() == ["acct-a", "acct-b"]
        assert await store.head() == rb.positions[-1]
        snap = (await store.load_snapshot("acct-a", 2)).unwrap()
        assert (snap.key, snap.seq, snap.state, snap.schema_version) == ("acct-a", ra.last_seq, state, 2)
        assert await store.load_checkpoint("projection") == rb.positions[-1]
        # the log goes on where it stopped
        more = make_events(2, "more")
        written = await append_ok(store, "acct-a", more, ra.last_seq)
        assert written.first_seq == ra.last_seq + 1
        assert min(written.positions) > rb.positions[-1]
        # ids written before the reopen are still known: a retry, or a duplicate
        assert await append_ok(store, "acct-a", first, 0) == ra
        expect_failure(await store.append("acct-c", second), DuplicateEvent)
        # and the expected-version check sees the old events
        error = expect_failure(await store.append("acct-b", make_events(1), 0), WrongExpectedVersion)
        assert error.actual == len(second)


async def test_close_is_idempotent_and_reopen_works(tmp_path: Path) -> None:
    store = await SqliteStore(str(tmp_path / "e.db")).open()
    await append_ok(store, "s", make_events(1))
    await store.aclose()
    await store.aclose()
    reopened = await SqliteStore(str(tmp_path / "e.db")).open()
    try:
        assert await reopened.read("s").count() == 1
    finally:
        await reopened.aclose()


# ---------------------------------------------------------------------------------------- two stores


async def test_two_stores_on_one_file(tmp_path: Path) -> None:
    """Two writers in one process: versions and positions stay consistent and nothing is lost."""
    path = tmp_path / "shared.db"
    async with open_store(_url(path, "page_size=7")) as one, open_store(_url(path, "page_size=5")) as two:
        stores = (one, two)
        writers, batches_each, streams = 6, 6, 3
        results: list[tuple[AppendResult, list[EventData]]] = []
        total = sum(1 + (w + b) % 2 for w in range(writers) for b in range(batches_each))
        total += 2 * 8  # the racers below
        seen: list[RecordedEvent] = []

        async def writer(w: int) -> None:
            for b in range(batches_each):
                batch = make_events(1 + (w + b) % 2, f"w{w}b{b}")
                store = stores[(w + b) % 2]
                result = await append_ok(store, f"shared-{(w * b) % streams}", batch)
                results.append((result, batch))

        async def racer(r: int) -> None:
            """Exact-version appends to one stream through alternating stores."""
            for b in range(2):
                batch = make_events(1, f"r{r}b{b}")
                while True:
                    store = stores[(r + b) % 2]
                    expected = (await store.latest("race")).map(lambda e: e.seq).value_or(0)
                    result = await store.append("race", batch, expected)
                    if not isinstance(result, Failure):
                        results.append((expect_success(result), batch))
                        break
                    error = expect_failure(result, WrongExpectedVersion)
                    assert error.actual > expected

        writers_done = anyio.Event()

        async def write_all() -> None:
            async with anyio.create_task_group() as tg:
                for w in range(writers):
                    tg.start_soon(writer, w)
                for r in range(8):
                    tg.start_soon(racer, r)
            writers_done.set()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail_log, two, writers_done, seen)
                tg.start_soon(write_all)

        assert len(results) == writers * batches_each + 2 * 8
        expected_ids = [e.id for _, batch in results for e in batch]
        assert len(expected_ids) == total
        for store in stores:
            everything = await store.read_all().to_list()
            assert everything == seen
            assert Counter(r.id for r in everything) == Counter(expected_ids)
            positions = [r.position for r in everything]
            assert positions == sorted(set(positions))
            by_id = {r.id: r for r in everything}
            for result, batch in results:
                assert [by_id[e.id].position for e in batch] == list(result.positions)
                assert [by_id[e.id].seq for e in batch] == list(range(result.first_seq, result.last_seq + 1))
            for name in await store.streams().to_list():
                seqs = [r.seq for r in await store.read(name).to_list()]
                assert seqs == list(range(1, len(seqs) + 1))
            assert await store.head() == positions[-1]


async def test_second_store_sees_first_stores_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with open_store(_url(path)) as one, open_store(_url(path)) as two:
        written = await append_ok(one, "s", make_events(2))
        assert (await two.latest("s")).map(lambda e: e.seq) == Some(2)
        error = expect_failure(await two.append("s", make_events(1), 0), WrongExpectedVersion)
        assert error.actual == written.last_seq
        await two.save_checkpoint("c", 9)
        assert await one.load_checkpoint("c") == 9


# ---------------------------------------------------------------------------------------- URL options


@pytest.mark.parametrize(
    ("query", "mode", "pragma"),
    [
        ("", "NORMAL", 1),
        ("synchronous=normal", "NORMAL", 1),
        ("synchronous=full", "FULL", 2),
        ("synchronous=FULL", "FULL", 2),
    ],
)
async def test_synchronous_option(tmp_path: Path, query: str, mode: str, pragma: int) -> None:
    path = tmp_path / "sync.db"
    async with sqlite_store(_url(path, query)) as store:
        assert store.synchronous == mode
        # read the setting of the writing connection through a transaction's SQL
        async with store.transaction() as tx:
            tx.execute("CREATE TABLE seen (value INTEGER)")
            tx.execute("INSERT INTO seen SELECT synchronous FROM pragma_synchronous")
        assert await _read_file(path, "SELECT value FROM seen") == [(pragma,)]
        await append_ok(store, "s", make_events(2))
        assert await store.read("s").count() == 2


async def test_other_url_options(tmp_path: Path) -> None:
    url = _url(tmp_path / "o.db", "page_size=2&max_event_size=100&readers=1&busy_timeout=0.5")
    async with sqlite_store(url) as store:
        assert (store.page_size, store.max_event_size) == (2, 100)
        await append_ok(store, "s", make_events(5))
        assert [r.seq for r in await store.read("s").to_list()] == [1, 2, 3, 4, 5]
        expect_failure(await store.append("s", [EventData("Big", "x" * 100)]), InvalidEvent)


_BAD_VALUES = [
    ("page_size", "0"),
    ("page_size", "-3"),
    ("page_size", "abc"),
    ("max_event_size", "0"),
    ("readers", "0"),
    ("readers", "1.5"),
    ("synchronous", "off"),
    ("synchronous", ""),
    ("busy_timeout", "abc"),
    ("busy_timeout", "-1"),
    ("busy_timeout", "nan"),
]

# Unusable URLs ("{tmp}" is a fresh folder) and what their error message must name.
BAD_URLS: list[tuple[str, list[str]]] = [
    ("mysql://host/db", ["mysql"]),
    ("", ["scheme"]),
    ("events.db", ["scheme"]),
    ("sqlite://host/x.db", ["host", "sqlite://host/x.db"]),
    ("sqlite://host", ["host"]),
    ("sqlite:///", ["no database file"]),
    ("sqlite:///{tmp}/", ["no database file"]),
    ("sqlite:///{tmp}/missing/e.db", ["folder", "{tmp}/missing"]),
    ("sqlite:///{tmp}/e.db?colour=blue", ["unknown option", "colour"]),
    ("sqlite:///{tmp}/e.db?page_size=3&pagesize=4", ["unknown option", "pagesize"]),
    ("memory://?colour=blue", ["unknown option", "colour"]),
    ("memory://somewhere", ["memory://"]),
    ("memory://?page_size=0", ["bad value", "page_size"]),
    *((f"sqlite:///{{tmp}}/e.db?{key}={value}", ["bad value", key]) for key, value in _BAD_VALUES),
]


@pytest.mark.parametrize(
    ("template", "phrases"), [pytest.param(t, p, id=t or "<empty>") for t, p in BAD_URLS]
)
async def test_bad_url(tmp_path: Path, template: str, phrases: list[str]) -> None:
    url = template.format(tmp=tmp_path)
    with pytest.raises(InvalidStoreURL) as caught:
        async with open_store(url):
            pass
    message = str(caught.value)
    for phrase in phrases:
        assert phrase.format(tmp=tmp_path) in message, message
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []  # nothing was created


async def test_url_must_be_a_string() -> None:
    with pytest.raises(InvalidStoreURL, match="string"):
        async with open_store(b"memory://"):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:secret@127.0.0.1:1/db",
        "postgres://u:secret@127.0.0.1:1/db?sslmode=disable&timeout=2",
        "postgresql://u:secret@h/db?pool_max=0",
        "dynamodb://key:secret@region/table",
        "mysql://u:secret@h/db",
        "sqlite://u:secret@h/x.db",
        "memory://u:secret@h",
        "postgresql://u:secret@h:99999/db",
        "postgresql://u:secret@[::1/db",
    ],
)
async def test_password_is_redacted_in_errors(url: str) -> None:
    with pytest.raises((InvalidStoreURL, StoreUnavailable)) as caught:
        async with open_store(url):
            pass
    assert "secret" not in str(caught.value)
    assert "secret" not in repr(caught.value)


async def test_redacted_url_still_names_user_and_host() -> None:
    with pytest.raises(InvalidStoreURL) as caught:
        async with open_store("dynamodb://app:secret@db.example:5432/events"):
            pass
    assert "dynamodb://app:***@db.example:5432/events" in str(caught.value)


async def test_a_bad_port_is_named_with_the_url_redacted() -> None:
    with pytest.raises(InvalidStoreURL) as caught:
        async with open_store("postgresql://app:secret@db.example:99999/events"):
            pass
    assert "postgresql://app:***@db.example:99999/events" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_in_memory_sqlite_url_does_not_lose_events() -> None:
    """``sqlite:///:memory:`` must either be refused or work: never hand out a store that loses writes."""
    try:
        async with open_store("sqlite:///:memory:") as store:
            batch = make_events(2)
            await append_ok(store, "s", batch)
            assert recorded_content(await store.read("s").to_list()) == content(batch)
    except InvalidStoreURL:
        pass


# ---------------------------------------------------------------------------------------- schema


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    newer = SCHEMA_VERSION + 1
    _prepare(
        path,
        "CREATE TABLE streamsrc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"INSERT INTO streamsrc_meta VALUES ('schema_version', '{newer}')",
    )
    with pytest.raises(IncompatibleSchema) as caught:
        async with open_store(_url(path)):
            pass
    assert str(newer) in str(caught.value)
    tables = await _read_file(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert tables == [("streamsrc_meta",)]
    assert await _read_file(path, "SELECT key, value FROM streamsrc_meta") == [("schema_version", str(newer))]


async def test_current_schema_version_opens(tmp_path: Path) -> None:
    path = tmp_path / "current.db"
    async with open_store(_url(path)) as store:
        await append_ok(store, "s", make_events(1))
    rows = await _read_file(path, "SELECT value FROM streamsrc_meta WHERE key = 'schema_version'")
    assert rows == [(str(SCHEMA_VERSION),)]
    async with open_store(_url(path)) as store:
        assert await store.read("s").count() == 1


async def test_foreign_events_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    _prepare(
        path, "CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)", "INSERT INTO events VALUES (1, 'x')"
    )
    with pytest.raises(IncompatibleSchema, match="events"):
        async with open_store(_url(path)):
            pass
    tables = await _read_file(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert tables == [("events",)]
    assert await _read_file(path, "SELECT * FROM events") == [(1, "x")]


async def test_foreign_database_is_left_unchanged(tmp_path: Path) -> None:
    """IncompatibleSchema promises that nothing was changed: that includes the journal mode."""
    path = tmp_path / "foreign.db"
    _prepare(path, "CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
    mode_before = await _read_file(path, "PRAGMA journal_mode")
    with pytest.raises(IncompatibleSchema):
        async with open_store(_url(path)):
            pass
    assert await _read_file(path, "PRAGMA journal_mode") == mode_before == [("delete",)]


@pytest.mark.parametrize("kind", ["not-a-database", "a-directory"])
async def test_unusable_file_is_unavailable(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.db"
    if kind == "a-directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not an SQLite database, just some text. " * 100)
    with pytest.raises(StoreUnavailable):
        async with open_store(_url(path)):
            pass


# ---------------------------------------------------------------------------------------- transactions


async def _setup_read_model(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        tx.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER NOT NULL)")


async def test_transaction_commits_everything_together(tmp_path: Path) -> None:
    path = tmp_path / "tx.db"
    async with sqlite_store(_url(path)) as store:
        await _setup_read_model(store)
        first = make_events(2, "tx")
        second = make_events(1, "tx2")
        async with store.transaction() as tx:
            tx.append("acct", first, 0)
            tx.append("acct", second, len(first))
            tx.save_checkpoint("balances", 2)
            tx.save_snapshot("acct", 2, {"amount": 10}, 1)
            tx.execute("INSERT INTO balances VALUES (?, ?)", ("acct", 10))
            tx.executemany("INSERT INTO balances VALUES (?, ?)", [("b", 1), ("c", 2)])
            assert tx.results == []  # nothing runs before the block ends
        assert len(tx.results) == 2
        r1, r2 = (expect_success(r) for r in tx.results)
        assert (r1.first_seq, r1.last_seq, r2.first_seq, r2.last_seq) == (1, 2, 3, 3)
        records = await store.read("acct").to_list()
        assert recorded_content(records) == content([*first, *second])
        assert [r.position for r in records] == [*r1.positions, *r2.positions]
        assert await store.load_checkpoint("balances") == 2
        assert (await store.load_snapshot("acct", 1)).map(lambda s: s.state) == Some({"amount": 10})
        rows = await _read_file(path, "SELECT account, amount FROM balances ORDER BY account")
        assert rows == [("acct", 10), ("b", 1), ("c", 2)]


class Boom(Exception):
    """Raised inside a transaction block."""


async def _assert_nothing_committed(store: SqliteStore, path: Path, stream_events: int) -> None:
    assert await store.read("acct").count() == stream_events
    assert await store.load_checkpoint("balances") == 0
    assert await store.load_snapshot("acct", 1) == Nothing
    assert await _read_file(path, "SELECT * FROM balances") == []


def _queue_work(tx: SqliteTransaction, expected: int = 0) -> None:
    tx.append("acct", make_events(2, "tx"), expected)
    tx.save_checkpoint("balances", 2)
    tx.save_snapshot("acct", 2, {"amount": 10}, 1)
    tx.execute("INSERT INTO balances VALUES (?, ?)", ("acct", 10))


async def _run_transaction(
    store: SqliteStore, body: Callable[[SqliteTransaction], None], opened: list[SqliteTransaction]
) -> None:
    """Run ``body`` inside ``store.transaction()``; the transaction object goes into ``opened``."""
    async with store.transaction() as tx:
        opened.append(tx)
        body(tx)


async def test_transaction_rolls_back_when_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "tx.db"

    def body(tx: SqliteTransaction) -> None:
        _queue_work(tx)
        raise Boom

    async with sqlite_store(_url(path)) as store:
        await _setup_read_model(store)
        with pytest.raises(Boom):
            await _run_transaction(store, body, [])
        await _assert_nothing_committed(store, path, 0)
        # the store still works, and the transaction's event ids were never taken
        await _run_transaction(store, _queue_work, [])
        assert await store.read("acct").count() == 2


FAILING_STEPS: dict[str, tuple[type[Exception], ...]] = {
    "wrong-version": (WrongExpectedVersion,),
    "duplicate": (DuplicateEvent,),
    "bad-sql": (StoreUnavailable,),  # the read model's own SQL error: sqlite3's, told as StoreUnavailable
}


@pytest.mark.parametrize("failure", list(FAILING_STEPS))
async def test_transaction_rolls_back_when_a_step_fails(tmp_path: Path, failure: str) -> None:
    path = tmp_path / "tx.db"
    stored = make_events(1, "stored")

    def body(tx: SqliteTransaction) -> None:
        _queue_work(tx, expected=len(stored))
        if failure == "wrong-version":
            tx.append("acct", make_events(1), 0)
        elif failure == "duplicate":
            tx.append("other", stored)
        else:
            tx.execute("INSERT INTO no_such_table VALUES (1)")

    async with sqlite_store(_url(path)) as store:
        await _setup_read_model(store)
        await append_ok(store, "acct", stored)
        opened: list[SqliteTransaction] = []
        with pytest.raises(FAILING_STEPS[failure]):
            await _run_transaction(store, body, opened)
        if failure != "bad-sql":
            last = opened[0].results[-1]
            assert isinstance(last, Failure)
            assert isinstance(last.failure(), FAILING_STEPS[failure])
        await _assert_nothing_committed(store, path, len(stored))
        assert await store.streams().to_list() == ["acct"]


async def test_transaction_refuses_invalid_events_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tx.db"

    def body(tx: SqliteTransaction) -> None:
        _queue_work(tx)
        tx.append("acct", [EventData("Bad", math.nan)])

    async with sqlite_store(_url(path)) as store:
        await _setup_read_model(store)
        with pytest.raises(InvalidEvent):
            await _run_transaction(store, body, [])
        await _assert_nothing_committed(store, path, 0)


# ---------------------------------------------------------------------------------------- life


async def test_async_with_opens_and_closes_the_store(tmp_path: Path) -> None:
    async with SqliteStore(str(tmp_path / "e.db")) as store:
        await append_ok(store, "s", make_events(2))
        assert await store.open() is store  # opening an open store does nothing
    expect_failure(await store.append("s", make_events(1)), StoreUnavailable)
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.open()  # a closed store stays closed: open a new one
    async with SqliteStore(str(tmp_path / "e.db")) as again:
        assert await again.read("s").count() == 2


async def test_a_store_not_opened_refuses_work(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "e.db"))
    expect_failure(await store.append("s", make_events(1)), StoreUnavailable)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.head()
    await store.aclose()
    assert not (tmp_path / "e.db").exists()


async def test_on_connect_runs_on_every_connection(tmp_path: Path) -> None:
    """``on_connect`` gives every connection what an application's own tables need (a function here)."""
    opened: list[str] = []

    def setup(conn: sqlite3.Connection) -> None:
        conn.create_function("shout", 1, lambda text: f"{text}!".upper(), deterministic=True)
        opened.append("connection")

    async with SqliteStore(str(tmp_path / "e.db"), readers=2, on_connect=setup) as store:
        await append_ok(store, "s", make_events(1))
        async with store.transaction() as tx:
            tx.execute("CREATE TABLE said (text TEXT)")
            tx.execute("INSERT INTO said VALUES (shout(?))", ("hello",))
        await store.read("s").count()
    assert await _read_file(tmp_path / "e.db", "SELECT text FROM said") == [("HELLO!",)]
    assert 2 <= len(opened) <= 3  # the writer's, and the readers' that were used


# ---------------------------------------------------------------------------------------- closed store


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    async with sqlite_store(_url(tmp_path / "c.db")) as store:
        await append_ok(store, "s", make_events(1))
    error = expect_failure(await store.append("s", make_events(1)), StoreUnavailable)
    assert "closed" in str(error)
    calls: list[Callable[[], Any]] = [
        store.read("s").to_list,
        store.read("s", backwards=True).to_list,
        store.read_all().to_list,
        store.streams().to_list,
        lambda: store.latest("s"),
        store.head,
        lambda: store.save_snapshot("k", 1, {}, 1),
        lambda: store.load_snapshot("k", 1),
        lambda: store.save_checkpoint("c", 1),
        lambda: store.load_checkpoint("c"),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call()
    with pytest.raises(StoreUnavailable):
        async with store.transaction() as tx:
            tx.save_checkpoint("c", 1)
    # and the file was not touched by any of it
    async with open_store(_url(tmp_path / "c.db")) as again:
        assert await again.read("s").count() == 1
        assert await again.load_checkpoint("c") == 0


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_stored_times_round_trip_to_the_microsecond(moment: datetime) -> None:
    assert _to_datetime(_to_us(moment)) == moment


async def test_cancelled_appends_leave_whole_batches_and_a_usable_store(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/cancel.db") as store:
        batches = [[EventData("Cut", {"batch": b, "i": i}) for i in range(5)] for b in range(40)]
        for b, batch in enumerate(batches):
            with anyio.move_on_after(0 if b % 2 else 0.0002):
                await store.append(f"c-{b}", batch)
        stored = await store.read_all().to_list()
        by_batch = Counter(e.data["batch"] for e in stored)
        assert all(n == 5 for n in by_batch.values()), by_batch  # no torn batch
        for b in by_batch:
            assert [e.id for e in stored if e.data["batch"] == b] == [e.id for e in batches[b]]
        # The store still works, and retrying every batch completes the log without duplicates.
        for b, batch in enumerate(batches):
            assert isinstance(await store.append(f"c-{b}", batch), Success)
        assert await store.head() == 200
        assert len({e.id for e in await store.read_all().to_list()}) == 200
