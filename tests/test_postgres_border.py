"""The PostgreSQL store and read model at the store's border (issue 19).

* Bug 4: an ``open_store`` block (or an open, or a read model) that ends by
  cancellation leaves no server session behind: counted in
  ``pg_stat_activity`` from a connection of the test's own.
* Bug 9: appends ride out a restart of about a second (a bounded backoff,
  ``retry_for``), each batch once; with the server away longer than the
  bound, an operation fails with ``StoreUnavailable`` saying so.
* Every failure of the store and the read model is ``StoreUnavailable``,
  never an asyncpg exception.

Real servers only: the session's server (a fresh database per test) and, for
the restarts, a cluster of this module's own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import pytest
from pg_server import ThrowawayCluster, create_database, drop_database, find_binaries
from returns.result import Failure, Result, Success

from streamsrc.errors import StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Projection, Projector
from streamsrc.projections.postgres import PostgresReadModel
from streamsrc.store import NO_STREAM, AppendResult, open_store
from streamsrc.store.postgres import PostgresStore

# asyncpg runs on asyncio only
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def _settled_sessions(monitor: asyncpg.Connection) -> int:
    """The sessions on the monitor's database besides its own, once the server has seen every closed
    socket (a backend ends a moment after its client goes: wait for that, up to a generous limit)."""
    with anyio.move_on_after(15):
        while await monitor.fetchval(_SESSIONS) > 0:  # noqa: ASYNC110 (the server is polled)
            await anyio.sleep(0.02)
    count: int = await monitor.fetchval(_SESSIONS)
    if count:  # say what they are
        rows = await monitor.fetch(_SESSIONS.replace("count(*)", "application_name, state, query"))
        print("sessions left:", [tuple(r) for r in rows])
    return count


async def _busy(store: Any, w: int) -> None:
    """Appends and reads for ever: there is always an operation in flight when the block is cancelled."""
    i = 0
    while True:
        await store.append(f"busy-{w}", [EventData("E", {"i": i})])
        await store.read(f"busy-{w}").take(3).to_list()
        await store.read_all(after=max(0, await store.head() - 5)).to_list()
        i += 1


# ------------------------------------------------------------------------------- bug 4: cancellation


@pytest.mark.parametrize("seed", range(2))
async def test_an_open_store_block_cancelled_with_work_in_flight_leaves_no_session(
    postgres_database: str, seed: int
) -> None:
    rng = random.Random(seed)
    url = postgres_database + "?pool_max=4"
    monitor = await asyncpg.connect(postgres_database)
    try:
        async with open_store(url) as store:  # the schema, made once
            await store.append("warm", [EventData("E", {})])
        started = time.monotonic()
        async with open_store(url):
            pass
        opening = time.monotonic() - started
        for trial in range(10):
            # Cancelled during the open sometimes, mostly with appends and reads in flight.
            with anyio.move_on_after(rng.uniform(opening / 2, opening * 4)):
                async with open_store(url) as store, anyio.create_task_group() as tg:
                    for w in range(4):
                        tg.start_soon(_busy, store, w)
            assert await _settled_sessions(monitor) == 0, f"trial {trial}: sessions left after the block"
    finally:
        await monitor.close()


async def test_an_open_cancelled_at_any_moment_leaves_no_session(postgres_database: str) -> None:
    monitor = await asyncpg.connect(postgres_database)
    try:
        async with open_store(postgres_database):  # the schema, made once
            pass
        started = time.monotonic()
        await (await PostgresStore(postgres_database).open()).aclose()
        opening = time.monotonic() - started
        for k in range(16):
            with anyio.move_on_after(opening * k / 12):
                async with open_store(postgres_database):
                    await anyio.sleep_forever()
            assert await _settled_sessions(monitor) == 0, f"open cancelled after {k}/12 of an open"
            store = PostgresStore(postgres_database)
            with anyio.move_on_after(opening * k / 12):
                await store.open()
                await anyio.sleep_forever()
            await store.aclose()
            assert await _settled_sessions(monitor) == 0, f"open() cancelled after {k}/12 of an open"
    finally:
        await monitor.close()


async def test_a_read_model_cancelled_while_opening_or_applying_leaves_no_session(
    postgres_database: str,
) -> None:
    schema = "CREATE TABLE IF NOT EXISTS seen (position BIGINT PRIMARY KEY)"

    async def insert(conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        await conn.executemany("INSERT INTO seen VALUES ($1)", [(e.position,) for e in events])
        await anyio.sleep(0.002)

    rng = random.Random(7)
    monitor = await asyncpg.connect(postgres_database)
    try:
        async with open_store(postgres_database) as store:
            for n in range(60):
                await store.append(f"s-{n % 4}", [EventData("E", {"n": n})])
        started = time.monotonic()
        async with PostgresReadModel(postgres_database, schema):
            pass
        opening = time.monotonic() - started
        for trial in range(12):
            async with open_store(postgres_database) as store:
                with anyio.move_on_after(rng.uniform(0, opening * 3)):
                    async with PostgresReadModel(postgres_database, schema, pool_max=2) as model:
                        await Projector(store, Projection("p", insert), model, batch_size=3).catch_up()
            assert await _settled_sessions(monitor) == 0, f"trial {trial}: sessions left after the block"
    finally:
        await monitor.close()


# ------------------------------------------------------------------------- the error rule


async def test_store_and_read_model_failures_are_store_unavailable_never_asyncpg_errors(
    postgres_database: str,
) -> None:
    async with (
        open_store(postgres_database) as store,
        PostgresReadModel(postgres_database, "CREATE TABLE IF NOT EXISTS t (n INT)") as model,
    ):
        assert isinstance(store, PostgresStore)
        await store.append("s", [EventData("E", {})])
        # The server refuses the statements (a read-only session): the store says unavailable.
        async with store.connection() as conn:
            await conn.execute("SELECT 1")
        await _execute(
            postgres_database,
            f"ALTER DATABASE {_database(postgres_database)} SET default_transaction_read_only = on",
        )
        await _execute(
            postgres_database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        appended = await store.append("s", [EventData("E", {})])
        assert isinstance(appended, Failure)
        assert isinstance(appended.failure(), StoreUnavailable)
        assert "read-only" in str(appended.failure())
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.save_checkpoint("c", 1)
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.save_snapshot("k", 1, {}, 1)
        assert [e.seq for e in await store.read("s").to_list()] == [1]  # reads still work
        with pytest.raises(StoreUnavailable, match="read-only"):
            await model.apply("p", _nothing, [], 1)
        with pytest.raises(StoreUnavailable, match="read-only"):
            await model.query("INSERT INTO t VALUES (1)")
        assert await model.load_position("p") == 0


async def _nothing(conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
    pass


def _database(url: str) -> str:
    return '"' + url.rsplit("/", 1)[1].split("?")[0] + '"'


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# --------------------------------------------------------------------------------- bug 9: restarts


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    """A server of this module's own, to restart."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl)")
    with ThrowawayCluster(binaries) as started:
        yield started


Batch = tuple[str, list[EventData]]


async def test_appends_ride_out_a_restart_of_a_second_each_batch_once(
    cluster: ThrowawayCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamsrc.store.postgres")
    url = await create_database(cluster.url, "restart")
    outcomes: list[tuple[Batch, Result[AppendResult, StoreError]]] = []
    try:
        # The bound is far above the outage: a loaded machine may take seconds to stop and start.
        async with open_store(url + "?retry_for=60&timeout=5&pool_max=4") as store:
            done, enough = anyio.Event(), anyio.Event()
            wanted = [20]  # outcomes to wait for

            async def writer(w: int) -> None:
                i = 0
                while not done.is_set():
                    events = [EventData("E", {"w": w, "i": i, "k": k}) for k in range(1 + i % 2)]
                    batch: Batch = (f"w{w}-{i}", events)
                    outcomes.append((batch, await store.append(batch[0], batch[1], NO_STREAM)))
                    if len(outcomes) >= wanted[0]:
                        enough.set()
                    i += 1
                    await anyio.sleep(0.005)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for w in range(3):
                        tg.start_soon(writer, w)
                    await enough.wait()
                    await anyio.to_thread.run_sync(cluster.restart, 1.0)
                    wanted[0], enough = len(outcomes) + 20, anyio.Event()
                    await enough.wait()
                    done.set()

            failures = [(b[0], r) for b, r in outcomes if isinstance(r, Failure)]
            assert failures == [], failures
            log = await store.read_all().to_list()
            assert [e.position for e in log] == list(range(1, len(log) + 1))  # gap-free
            present = {e.id: e for e in log}
            assert len(present) == len(log)  # nothing written twice
            assert len(log) == sum(len(events) for (_, events), _ in outcomes)
            for (stream, events), result in outcomes:
                positions = tuple(present[e.id].position for e in events)
                assert result.unwrap().positions == positions, stream
        retries = [r for r in caplog.records if r.name == "streamsrc.store.postgres"]
        assert retries, "no retry was logged"
        for record in retries:
            assert record.levelno == logging.WARNING
            fields = record.__dict__  # the structured fields (``extra``)
            assert fields["operation"] == "append"
            assert fields["attempt"] >= 1
            assert fields["retry_for"] == 60
            assert fields["delay"] >= 0
            assert fields["elapsed"] >= 0
            assert fields["error"]
            assert "streamsrc-test-pw" not in record.getMessage() + fields["store"]
    finally:
        if cluster.running:
            await drop_database(cluster.url, "restart")


async def test_with_the_server_away_longer_than_retry_for_operations_fail_with_store_unavailable(
    cluster: ThrowawayCluster,
) -> None:
    url = await create_database(cluster.url, "away")
    try:
        async with open_store(url + "?retry_for=1.5&timeout=2") as store:
            assert isinstance(await store.append("s", [EventData("E", {})]), Success)
            await anyio.to_thread.run_sync(cluster.stop)
            try:
                started = time.monotonic()
                with anyio.fail_after(60):  # a hang guard, far above the bound
                    result = await store.append("s", [EventData("E", {})], expected=1)
                waited = time.monotonic() - started
                assert isinstance(result, Failure)
                failure = result.failure()
                assert isinstance(failure, StoreUnavailable)
                assert "retried for 1.5 s" in str(failure)
                assert "streamsrc-test-pw" not in str(failure)
                assert waited >= 1.5  # it did wait for the server (the bound), then gave up
                with anyio.fail_after(60), pytest.raises(StoreUnavailable, match=r"retried for 1\.5 s"):
                    await store.head()
            finally:
                await anyio.to_thread.run_sync(cluster.start)
            # Back: the same store works again, and the failed append wrote nothing.
            assert isinstance(await store.append("s", [EventData("E", {})], expected=1), Success)
            assert [e.seq for e in await store.read("s").to_list()] == [1, 2]
    finally:
        if cluster.running:
            await drop_database(cluster.url, "away")
