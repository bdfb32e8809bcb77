"""The PostgreSQL store beyond the conformance suites: schema, errors, outages, NOTIFY, read models.

Everything runs against real servers: the session's server for most tests
(a fresh database each), and a cluster of this module's own for the outage
test, which stops and restarts it.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import asyncpg
import pytest
from pg_server import (
    LOCKED_PASSWORD,
    ThrowawayCluster,
    create_database,
    drop_database,
    find_binaries,
)
from returns.result import Failure, Result, Success

from streamsrc.errors import IncompatibleSchema, StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import DeadLetters, Poll, Projection, Projector, subscribe
from streamsrc.projections.postgres import PostgresReadModel
from streamsrc.store import NO_STREAM, AppendResult, open_store
from streamsrc.store.postgres import SCHEMA_VERSION, PostgresStore
from streamsrc.store.postgres import connect as postgres_connect

# asyncpg runs on asyncio only
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

FAST_POLL = Poll(min_delay=0.002, max_delay=0.05)


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await connection.fetch(sql)]
    finally:
        await connection.close()


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


_DESCRIBE = """
SELECT table_name, column_name, data_type FROM information_schema.columns
WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
"""


async def _describe(url: str) -> tuple[list[tuple[Any, ...]], ...]:
    """The tables, columns and functions of ``url`` and the rows of streamsrc's own tables."""
    columns = await _fetch(url, _DESCRIBE)
    functions = await _fetch(
        url,
        "SELECT proname, md5(prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE nspname = 'public' ORDER BY proname",
    )
    tables = {c[0] for c in columns}
    rows = []
    for table in ("streamsrc_meta", "events"):
        if table in tables:
            rows.append(await _fetch(url, f"SELECT * FROM {table} ORDER BY 1"))
    return columns, functions, *rows


# ---------------------------------------------------------------------------------------------- schema


async def test_opening_twice_is_idempotent(postgres_database: str) -> None:
    async with open_store(postgres_database) as store:
        assert (await store.append("s", [EventData("A", {"n": 1})])).unwrap().positions == (1,)
    before = await _describe(postgres_database)
    async with open_store(postgres_database) as store, open_store(postgres_database) as again:
        assert (await again.append("s", [EventData("A", {"n": 2})], 1)).unwrap().positions == (2,)
        assert [e.data["n"] for e in await store.read("s").to_list()] == [1, 2]
    after = await _describe(postgres_database)
    assert after[:2] == before[:2]  # same tables, columns and function
    assert after[2] == [("schema_version", str(SCHEMA_VERSION))]


async def test_two_stores_opened_concurrently_on_a_fresh_database_both_work(postgres_database: str) -> None:
    stores: list[PostgresStore] = [PostgresStore(postgres_database), PostgresStore(postgres_database)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        for i, store in enumerate(stores):
            assert isinstance(await store.append(f"s{i}", [EventData("A", i)], NO_STREAM), Success)
        for store in stores:
            assert [e.stream for e in await store.read_all().to_list()] == ["s0", "s1"]
        assert await _fetch(postgres_database, "SELECT * FROM streamsrc_meta") == [
            ("schema_version", str(SCHEMA_VERSION))
        ]
    finally:
        for store in stores:
            await store.aclose()


async def test_a_newer_schema_version_is_refused_and_the_database_is_left_alone(
    postgres_database: str,
) -> None:
    async with open_store(postgres_database) as store:
        await store.append("s", [EventData("A", {})])
    newer = SCHEMA_VERSION + 1
    await _execute(
        postgres_database, f"UPDATE streamsrc_meta SET value = '{newer}' WHERE key = 'schema_version'"
    )
    before = await _describe(postgres_database)
    with pytest.raises(IncompatibleSchema, match=str(newer)):
        async with open_store(postgres_database):
            pass  # pragma: no cover
    store = PostgresStore(postgres_database)
    with pytest.raises(IncompatibleSchema):
        await store.open()
    assert await _describe(postgres_database) == before


async def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_events(postgres_database: str) -> None:
    async with open_store(postgres_database) as store:
        await store.append("s", [EventData("A", {"n": 1})])
        before = await store.read_all().to_list()
    # what version 1 left: its function took one time for the whole batch
    await _execute(
        postgres_database,
        "UPDATE streamsrc_meta SET value = '1' WHERE key = 'schema_version';"
        "CREATE FUNCTION streamsrc_append(TEXT, BIGINT, UUID[], TEXT[], TEXT[], TEXT[], BIGINT) "
        "RETURNS INT LANGUAGE sql AS 'SELECT 1';",
    )
    async with open_store(postgres_database) as store:
        assert await store.read_all().to_list() == before
        appended = await store.append("s", [EventData("B", {"n": 2})], expected=1)
        assert appended.unwrap().positions == (2,)
    versions = await _fetch(
        postgres_database, "SELECT value FROM streamsrc_meta WHERE key = 'schema_version'"
    )
    assert versions == [(str(SCHEMA_VERSION),)]
    functions = await _fetch(
        postgres_database,
        "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc WHERE proname = 'streamsrc_append'",
    )
    assert len(functions) == 1
    assert "bigint[]" in functions[0][0]


async def test_a_foreign_events_table_is_refused(postgres_database: str) -> None:
    await _execute(postgres_database, "CREATE TABLE events (x INT); INSERT INTO events VALUES (7)")
    before = await _describe(postgres_database)
    with pytest.raises(IncompatibleSchema, match="events"):
        async with open_store(postgres_database):
            pass  # pragma: no cover
    assert await _describe(postgres_database) == before
    assert await _fetch(postgres_database, "SELECT * FROM events") == [(7,)]


# ---------------------------------------------------------------------------------------------- errors


async def test_connection_refused_is_store_unavailable_without_the_password() -> None:
    url = "postgresql://streamsrc:pw@127.0.0.1:1/x"
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store(url):
            pass  # pragma: no cover
    for text in (str(caught.value), repr(caught.value)):
        assert ":pw@" not in text
        assert "127.0.0.1:1" in text
    secret = "Refused-S3cret-pw"
    store = PostgresStore(f"postgresql://streamsrc:{secret}@127.0.0.1:1/x?timeout=2")
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert secret not in str(caught.value) + repr(caught.value) + repr(store)


async def test_authentication_failure_is_store_unavailable_without_the_password(
    postgres_database: str,
) -> None:
    wrong = "Wrong-S3cret-pw-4711"
    assert wrong != LOCKED_PASSWORD
    url = postgres_database.replace("streamsrc:streamsrc-test-pw@", f"locked:{wrong}@")
    assert f"locked:{wrong}@" in url
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store(url):
            pass  # pragma: no cover
    assert wrong not in str(caught.value) + repr(caught.value)
    assert "locked:***@" in str(caught.value)
    store = PostgresStore(url)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    for text in (str(caught.value), repr(caught.value), repr(store), store.url):
        assert wrong not in text
    assert "password" in str(caught.value).lower()  # it says why


@pytest.mark.parametrize("seed", range(2))
async def test_connecting_cancelled_at_any_moment_leaves_no_stray_error(
    postgres_database: str, seed: int
) -> None:
    """A connect cancelled mid-way (a timeout, a cancelled catch-up) reports nothing to the event loop
    afterwards, and a connection made after the caller left is closed."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    rng = random.Random(seed)
    try:
        for _ in range(30):
            with anyio.move_on_after(rng.uniform(0.0, 0.004)):
                conn = await postgres_connect(postgres_database)
                await conn.close()
        await anyio.sleep(0.3)  # the attempts left behind finish
        gc.collect()
        await anyio.lowlevel.checkpoint()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
    left = await _fetch(
        postgres_database,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert left == [(0,)]


async def test_repr_redacts_the_password() -> None:
    store = PostgresStore("postgresql://app:T0p-Secret@db.example:5432/events")
    assert repr(store) == "<PostgresStore postgresql://app:***@db.example:5432/events>"
    assert "T0p-Secret" not in repr(store) + str(store) + store.url


# ---------------------------------------------------------------------------- the server goes away


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    """A server of this module's own, to stop and start again."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl)")
    with ThrowawayCluster(binaries) as started:
        yield started


Batch = tuple[str, list[EventData]]


async def test_appends_fail_as_values_while_the_server_is_down_and_work_after_restart(
    cluster: ThrowawayCluster,
) -> None:
    url = await create_database(cluster.url, "outage")
    outcomes: list[tuple[float, Batch, Result[AppendResult, StoreError]]] = []
    raised: list[BaseException] = []
    tracebacks: list[str] = []
    try:
        # retry_for=0: no riding out (that is tests/test_postgres_border.py): every append that runs
        # while the server is away fails, as a value.
        async with open_store(url + "?timeout=2&pool_max=4&retry_for=0") as store:
            restarted_at = float("inf")
            running, recovered = anyio.Event(), anyio.Event()

            async def writer() -> None:
                i = 0
                while True:
                    # Its own stream each: NO_STREAM is the expected version to retry with.
                    batch: Batch = (f"s-{i}", [EventData("E", {"i": i, "k": k}) for k in range(1 + i % 2)])
                    try:
                        result = await store.append(batch[0], batch[1], NO_STREAM)
                    except Exception as exc:  # an append must not raise: recorded, the test fails
                        raised.append(exc)
                        tracebacks.append("".join(traceback.format_exception(exc)))
                        result = Failure(StoreUnavailable(repr(exc)))
                    outcomes.append((time.monotonic(), batch, result))
                    if isinstance(result, Success):
                        ok = sum(isinstance(o[2], Success) and o[0] > restarted_at for o in outcomes)
                        if len(outcomes) >= 20 and not running.is_set():
                            running.set()
                        if ok >= 20:
                            recovered.set()
                    i += 1
                    await anyio.sleep(0.002 if isinstance(result, Success) else 0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                with anyio.fail_after(20):
                    await running.wait()
                    await anyio.to_thread.run_sync(cluster.stop)  # fast: ends the sessions
                    stopped_at = time.monotonic()
                    await anyio.sleep(0.5)  # the outage
                    starting_at = time.monotonic()  # the server may take appends before start returns
                    await anyio.to_thread.run_sync(cluster.start)
                    restarted_at = time.monotonic()
                    await recovered.wait()
                tg.cancel_scope.cancel()

            during = [o for o in outcomes if stopped_at < o[0] < starting_at]
            assert during, "no append ran during the outage"
            for _, _, result in during:
                assert isinstance(result, Failure), result
            failures = [o[2].failure() for o in outcomes if isinstance(o[2], Failure)]
            assert failures
            assert all(isinstance(f, StoreUnavailable) for f in failures), failures
            assert all("streamsrc-test-pw" not in str(f) for f in failures)

            # The same store object works again: the pool has reconnected.
            assert isinstance(await store.append("after", [EventData("E", {})]), Success)

            log = await store.read_all().to_list()
            assert [e.position for e in log] == list(range(1, len(log) + 1))  # no gaps, no repeats
            present = {e.id: e for e in log}
            assert len(present) == len(log)
            ambiguous = 0
            for _, (stream, events), result in outcomes:
                ids = [e.id for e in events]
                found = [i in present for i in ids]
                assert all(found) or not any(found), f"half-written batch {stream}: {found}"
                if isinstance(result, Success):
                    assert all(found), f"acknowledged append to {stream} missing"
                    assert result.unwrap().positions == tuple(present[i].position for i in ids)
                elif all(found):  # the commit happened though the caller heard of a failure
                    ambiguous += 1
                    again = await store.append(stream, events, NO_STREAM)
                    assert isinstance(again, Success), again
                    assert again.unwrap().positions == tuple(present[i].position for i in ids)
            assert await store.read_all().to_list() == log  # the retries wrote nothing
            print(f"outage: {len(outcomes)} appends, {len(failures)} failed, {ambiguous} committed anyway")
            for event in log:
                assert present[event.id].stream == event.stream
        # Failures are values: an append on a connection the shutdown broke (asyncpg's
        # InternalClientError among others) returns Failure(StoreUnavailable), never raises.
        assert not raised, "append raised instead of returning a Failure:\n" + "\n".join(tracebacks)
    finally:
        if cluster.running:
            await drop_database(cluster.url, "outage")


async def test_a_restart_mid_group_gives_each_of_16_writers_its_own_answer_and_loses_nothing(
    cluster: ThrowawayCluster,
) -> None:
    """16 writers: their appends go to the server in groups (issue 15); the server stops while
    groups are in flight and comes back; the store rides it out (``retry_for``), re-sending a
    group whose fate it did not hear: appends it had committed are recognised by their ids."""
    url = await create_database(cluster.url, "outage_group")
    outcomes: list[tuple[float, Batch, Result[AppendResult, StoreError]]] = []
    raised: list[BaseException] = []
    try:
        async with open_store(url + "?timeout=2&pool_max=4&retry_for=10") as store:
            restarted_at = float("inf")
            running, recovered = anyio.Event(), anyio.Event()

            async def writer(w: int) -> None:
                i = 0
                while True:
                    batch: Batch = (
                        f"w{w}-{i}",
                        [EventData("E", {"w": w, "i": i, "k": k}) for k in range(1 + i % 3)],
                    )
                    try:
                        result = await store.append(batch[0], batch[1], NO_STREAM)
                    except Exception as exc:  # an append must not raise: recorded, the test fails
                        raised.append(exc)
                        result = Failure(StoreUnavailable(repr(exc)))
                    outcomes.append((time.monotonic(), batch, result))
                    if len(outcomes) >= 100:
                        running.set()
                    if sum(o[0] > restarted_at for o in outcomes) >= 100:
                        recovered.set()
                    i += 1

            async with anyio.create_task_group() as tg:
                for w in range(16):
                    tg.start_soon(writer, w)
                with anyio.fail_after(40):
                    await running.wait()
                    await anyio.to_thread.run_sync(cluster.stop)  # fast: ends the sessions
                    await anyio.sleep(0.5)
                    await anyio.to_thread.run_sync(cluster.start)
                    restarted_at = time.monotonic()
                    await recovered.wait()
                tg.cancel_scope.cancel()

            assert not raised, raised
            failures = [o[2].failure() for o in outcomes if isinstance(o[2], Failure)]
            assert all(isinstance(f, StoreUnavailable) for f in failures), failures
            log = await store.read_all().to_list()
            assert [e.position for e in log] == list(range(1, len(log) + 1))
            present = {e.id: e for e in log}
            assert len(present) == len(log)
            for _, (stream, events), result in outcomes:
                ids = [e.id for e in events]
                found = [i in present for i in ids]
                assert all(found) or not any(found), f"half-written batch {stream}: {found}"
                if isinstance(result, Success):
                    assert all(found), f"acknowledged append to {stream} missing"
                    assert result.unwrap().positions == tuple(present[i].position for i in ids)
                    assert [present[i].stream for i in ids] == [stream] * len(ids)
            print(f"restart mid-group: {len(outcomes)} appends, {len(failures)} failed")
    finally:
        if cluster.running:
            await drop_database(cluster.url, "outage_group")


async def test_a_version_2_database_is_upgraded_in_place_to_group_commit(postgres_database: str) -> None:
    async with open_store(postgres_database) as store:
        await store.append("s", [EventData("A", {"n": 1})])
        before = await store.read_all().to_list()
    # what version 2 left: no group function
    await _execute(
        postgres_database,
        "UPDATE streamsrc_meta SET value = '2' WHERE key = 'schema_version';"
        "DROP FUNCTION streamsrc_append_group"
        "(TEXT[], BIGINT[], INT[], UUID[], TEXT[], TEXT[], TEXT[], BIGINT[]);",
    )
    async with open_store(postgres_database) as store:
        assert await store.read_all().to_list() == before
        results: list[Result[AppendResult, StoreError]] = []

        async def one(i: int) -> None:
            results.append(await store.append(f"g-{i}", [EventData("G", {"i": i})], NO_STREAM))

        async with anyio.create_task_group() as tg:  # the first goes alone, the others as a group
            for i in range(8):
                tg.start_soon(one, i)
        assert all(isinstance(r, Success) for r in results), results
        log = await store.read_all().to_list()
        assert [e.position for e in log] == list(range(1, 10))
    assert await _fetch(
        postgres_database, "SELECT value FROM streamsrc_meta WHERE key = 'schema_version'"
    ) == [(str(SCHEMA_VERSION),)]
    assert await _fetch(
        postgres_database, "SELECT count(*) FROM pg_proc WHERE proname = 'streamsrc_append_group'"
    ) == [(1,)]


async def test_notify_still_wakes_subscriptions_after_a_restart(cluster: ThrowawayCluster) -> None:
    url = await create_database(cluster.url, "listen")
    try:
        async with open_store(url + "?timeout=2") as a, open_store(url + "?timeout=2") as b:
            await anyio.to_thread.run_sync(cluster.stop)
            await anyio.to_thread.run_sync(cluster.start)
            for _ in range(100):  # until the pool has reconnected (tested above)
                if isinstance(await a.append("warm", [EventData("E", {})]), Success):
                    break
                await anyio.sleep(0.1)

            async def follow() -> None:
                await subscribe(b, after=1, poll=Poll(min_delay=5, max_delay=10)).take(1).to_list()

            with anyio.fail_after(2):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    await anyio.sleep(0.3)
                    await a.append("s", [EventData("Hello", {})])
    finally:
        if cluster.running:
            await drop_database(cluster.url, "listen")


# ------------------------------------------------------------------------------------ LISTEN/NOTIFY


async def test_notify_wakes_a_subscription_on_another_store(postgres_database: str) -> None:
    async with open_store(postgres_database) as a, open_store(postgres_database) as b:
        got: list[RecordedEvent] = []

        async def follow() -> None:
            got.extend(await subscribe(b, poll=Poll(min_delay=5, max_delay=10)).take(1).to_list())

        with anyio.fail_after(4):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await anyio.sleep(0.3)  # the subscription has read the empty log and waits
                started = time.monotonic()
                await a.append("s", [EventData("Hello", {})])
        assert [e.type for e in got] == ["Hello"]
        assert time.monotonic() - started < 2


# ------------------------------------------------------------------------------------- read models


def _rows_schema(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(position BIGINT PRIMARY KEY, stream TEXT NOT NULL, seq BIGINT NOT NULL, type TEXT NOT NULL)"
    )


def _writer(table: str, delay: float = 0.0) -> Any:
    async def handler(conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        for event in events:
            if isinstance(event.data, dict) and event.data.get("poison"):
                raise ValueError(f"poison at {event.position}")
        await conn.executemany(
            f"INSERT INTO {table} VALUES ($1, $2, $3, $4)",
            [(e.position, e.stream, e.seq, e.type) for e in events],
        )
        if delay:
            await anyio.sleep(delay)

    return handler


def _expected(log: Sequence[RecordedEvent]) -> list[tuple[Any, ...]]:
    return [
        (e.position, e.stream, e.seq, e.type)
        for e in log
        if not (isinstance(e.data, dict) and e.data.get("poison"))
    ]


async def _fill(store: Any, n: int, poison: frozenset[int] = frozenset()) -> list[RecordedEvent]:
    for i in range(n):
        data = {"i": i, "poison": True} if i in poison else {"i": i}
        assert isinstance(await store.append(f"s-{i % 5}", [EventData(f"T{i % 3}", data)]), Success)
    log: list[RecordedEvent] = await store.read_all().to_list()
    return log


async def test_read_model_catch_up_builds_the_table(postgres_database: str) -> None:
    async with (
        open_store(postgres_database) as store,
        PostgresReadModel(postgres_database, _rows_schema("rows")) as model,
    ):
        log = await _fill(store, 50)
        status = await Projector(store, Projection("p", _writer("rows")), model, batch_size=7).catch_up()
        assert status.position == status.head == 50
        assert await model.query("SELECT * FROM rows ORDER BY position") == _expected(log)
        assert await model.load_position("p") == 50
        # Nothing new: a second catch-up applies nothing (a duplicate would break the primary key).
        await Projector(store, Projection("p", _writer("rows")), model, batch_size=7).catch_up()
        await _fill(store, 5)
        log = await store.read_all().to_list()
        await Projector(store, Projection("p", _writer("rows")), model, batch_size=7).catch_up()
        assert await model.query("SELECT * FROM rows ORDER BY position") == _expected(log)


async def test_store_and_read_model_carry_on_when_their_connections_are_killed(
    postgres_database: str,
) -> None:
    """The server ends the connections of the store and the model (as a restart does), once between
    operations and once in the middle of the model's transaction: appends, catch-ups and queries
    try again on new connections, and every event lands exactly once."""
    write = _writer("rows")
    kill_next = [False]

    async def handler(conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await write(conn, events)
        if kill_next[0]:
            kill_next[0] = False
            with pytest.raises(asyncpg.PostgresConnectionError):
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            await conn.execute("SELECT 1")  # the connection is gone: the model tries again

    async with (
        open_store(postgres_database) as store,
        PostgresReadModel(postgres_database, _rows_schema("rows")) as model,
    ):
        await _fill(store, 20)
        projector = Projector(store, Projection("p", handler), model, batch_size=7)
        await projector.catch_up()
        killed = await _fetch(
            postgres_database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert len(killed) >= 3  # the store's connection and listener, the model's pool
        await _fill(store, 10)  # appends: on new connections
        kill_next[0] = True
        status = await projector.catch_up()
        assert not kill_next[0]
        log = await store.read_all().to_list()
        assert status.position == len(log) == 30
        assert await model.query("SELECT * FROM rows ORDER BY position") == _expected(log)


async def test_read_model_parks_a_poison_event_and_moves_on(postgres_database: str) -> None:
    async with (
        open_store(postgres_database) as store,
        PostgresReadModel(postgres_database, _rows_schema("rows")) as model,
    ):
        log = await _fill(store, 30, poison=frozenset({4, 17}))
        projector = Projector(
            store, Projection("p", _writer("rows")), model, batch_size=6, on_error=DeadLetters()
        )
        status = await projector.catch_up()
        assert status.position == 30
        assert await model.load_position("p") == 30
        letters = await model.dead_letters("p")
        assert [(d.position, d.stream, d.seq, d.type) for d in letters] == [
            (e.position, e.stream, e.seq, e.type) for e in log if e.data.get("poison")
        ]
        assert all("poison at" in d.error for d in letters)
        assert [d.id for d in letters] == [str(e.id) for e in log if e.data.get("poison")]
        assert await model.dead_letters() == letters
        assert await model.query("SELECT * FROM rows ORDER BY position") == _expected(log)


async def test_read_model_cancelled_at_random_points_applies_each_event_once(postgres_database: str) -> None:
    rng = random.Random(20261127)
    async with (
        open_store(postgres_database) as store,
        PostgresReadModel(postgres_database, _rows_schema("rows") + ";" + _rows_schema("rebuilt")) as model,
    ):
        log = await _fill(store, 240)
        projector = Projector(store, Projection("p", _writer("rows", delay=0.001)), model, batch_size=5)
        cancelled = 0
        with anyio.fail_after(20):
            while await model.load_position("p") < len(log):
                with anyio.move_on_after(rng.uniform(0.0, 0.03)) as scope:
                    await projector.catch_up()  # a duplicate position would raise ProjectionFailed
                cancelled += scope.cancelled_caught
                if cancelled % 4 == 3:  # new events between runs, too
                    log = await _fill(store, 3)
        assert cancelled >= 3
        log = await store.read_all().to_list()
        await projector.catch_up()
        rows = await model.query("SELECT * FROM rows ORDER BY position")
        assert rows == _expected(log)
        await Projector(store, Projection("rebuild", _writer("rebuilt")), model, batch_size=50).catch_up()
        assert await model.query("SELECT * FROM rebuilt ORDER BY position") == rows


# --------------------------------------------------------------------------- gap-free under concurrency


async def test_concurrent_appends_reach_a_tailing_reader_gap_free_in_order(postgres_database: str) -> None:
    writers, each = 16, 30
    total = writers * each
    async with open_store(postgres_database) as store:
        seen: list[RecordedEvent] = []
        written: list[uuid.UUID] = []

        async def read() -> None:
            seen.extend(await subscribe(store, poll=FAST_POLL, page_size=17).take(total).to_list())

        async def write(w: int) -> None:
            for k in range(each):
                event = EventData("E", {"w": w, "k": k})
                result = await store.append(f"w-{w}", [event], k)
                assert isinstance(result, Success), result
                written.append(event.id)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await anyio.sleep(0.05)
                async with anyio.create_task_group() as writing:
                    for w in range(writers):
                        writing.start_soon(write, w)
        assert [e.position for e in seen] == list(range(1, total + 1))
        assert sorted(e.id for e in seen) == sorted(written)
        for w in range(writers):
            assert [e.seq for e in seen if e.stream == f"w-{w}"] == list(range(1, each + 1))
