"""A reader tailing the global log while 16 writers append, on every backend (issue 15).

The reader (``subscribe``, small pages, fast polls) must see every acknowledged event exactly
once, in position order, positions without a gap, each stream's seqs in order. On SQLite and
PostgreSQL a transaction of another connection appends and is held open while the writers
start (as a slow writer of another process would): appends that begin after it must not become
visible before it, or a reader that saw them would skip it for ever.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import asyncpg
import pytest
from returns.result import Success
from store_urls import fresh_dynamodb_url

from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Poll, subscribe
from streamsrc.store import open_store

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

FAST_POLL = Poll(min_delay=0.002, max_delay=0.05)
WRITERS = 16
HELD = uuid.uuid4()


@pytest.fixture(params=["memory", "sqlite", "postgres", "dynamodb"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    if request.param == "dynamodb":
        return fresh_dynamodb_url()
    return str(request.getfixturevalue("postgres_database"))


Release = Callable[[], Awaitable[None]]


@asynccontextmanager
async def held_append(url: str) -> AsyncIterator[Release | None]:
    """An append by a connection of its own, left uncommitted until ``release()``; ``None`` where
    the backend has no such transaction to hold."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO events (stream, seq, id, type, data, metadata, time) "
            "VALUES (?, 1, ?, 'Held', '{}', NULL, ?)",
            ("held", HELD.bytes, time.time_ns() // 1000),
        )

        async def release_sqlite() -> None:
            await anyio.to_thread.run_sync(conn.execute, "COMMIT")

        try:
            yield release_sqlite
        finally:
            conn.close()
    elif url.startswith("postgresql"):
        connection = await asyncpg.connect(url)
        transaction = connection.transaction()
        await transaction.start()
        await connection.fetch(
            "SELECT * FROM streamsrc_append('held', -1, $1, ARRAY['Held'], ARRAY['{}'], ARRAY[NULL], $2)",
            [HELD],
            [time.time_ns() // 1000],
        )

        async def release_postgres() -> None:
            await transaction.commit()

        try:
            yield release_postgres
        finally:
            await connection.close()
    else:
        yield None


async def test_a_tailing_reader_sees_every_event_once_in_order_while_16_writers_append(url: str) -> None:
    each = 3 if url.startswith("dynamodb") else 25
    async with open_store(url) as store:
        assert isinstance(await store.append("first", [EventData("First", {})]), Success)  # the tables exist
        async with held_append(url) as release:
            total = 1 + (release is not None) + WRITERS * each
            seen: list[RecordedEvent] = []
            written: list[uuid.UUID] = []

            async def read() -> None:
                seen.extend(await subscribe(store, poll=FAST_POLL, page_size=7).take(total).to_list())

            async def write(w: int) -> None:
                for k in range(each):
                    event = EventData("E", {"w": w, "k": k})
                    result = await store.append(f"w-{w}", [event], k)
                    assert isinstance(result, Success), result
                    written.append(event.id)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    async with anyio.create_task_group() as writing:
                        for w in range(WRITERS):
                            writing.start_soon(write, w)
                        if release is not None:
                            await anyio.sleep(0.3)  # the writers are waiting behind the held append
                            await release()
        assert [e.position for e in seen] == list(range(1, total + 1))
        expected = [seen[0].id, *([HELD] if release is not None else []), *written]
        assert sorted(e.id for e in seen) == sorted(expected)
        if release is not None:
            assert seen[1].id == HELD  # it took its place before any writer's, and committed last
        for w in range(WRITERS):
            assert [e.seq for e in seen if e.stream == f"w-{w}"] == list(range(1, each + 1))
        assert await store.head() == total
