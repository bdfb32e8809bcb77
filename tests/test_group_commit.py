"""Group commit on the SQL stores (issue 15): appends waiting while a transaction is in flight
commit together in the next one, and each caller still gets its own answer.

Every test runs on SQLite (a file) and PostgreSQL (the session's server, a fresh database);
appends started together in one task group queue behind the first, which goes alone, so the
rest form one group.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest
from returns.result import Failure, Result, Success

from streamsrc.errors import DuplicateEvent, StoreError, StoreUnavailable, WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Poll
from streamsrc.store import NO_STREAM, AppendResult, open_store
from streamsrc.store.base import StoreBase
from streamsrc.store.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

FAST_POLL = Poll(min_delay=0.002, max_delay=0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return str(request.getfixturevalue("postgres_database"))


async def _execute(url: str, sql: str) -> None:
    """Run ``sql`` on the store's database through a connection of its own (not the store's)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.executescript(sql)
        finally:
            conn.close()
    else:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


async def _together(
    store: StoreBase, appends: list[tuple[str, list[EventData], Any]]
) -> list[Result[AppendResult, StoreError]]:
    """Start every append at once (the first leads alone, the others queue into one group)."""
    results: list[Result[AppendResult, StoreError] | None] = [None] * len(appends)

    async def one(i: int) -> None:
        stream, events, expected = appends[i]
        results[i] = await store.append(stream, events, expected)

    async with anyio.create_task_group() as tg:
        for i in range(len(appends)):
            tg.start_soon(one, i)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


async def _log(store: StoreBase) -> list[RecordedEvent]:
    events = await store.read_all().to_list()
    assert [e.position for e in events] == list(range(1, len(events) + 1))  # dense, in order
    return events


@pytest.fixture
async def store(url: str) -> AsyncIterator[StoreBase]:
    async with open_store(url) as opened:
        assert isinstance(opened, StoreBase)
        yield opened


async def test_a_group_holding_a_conflict_a_duplicate_and_a_retry_answers_each_caller(
    store: StoreBase,
) -> None:
    taken = EventData("Taken", {})
    first = EventData("First", {})
    assert isinstance(await store.append("taken", [taken]), Success)
    assert isinstance(await store.append("c", [EventData("C", {})]), Success)
    earlier = (await store.append("r", [first], NO_STREAM)).unwrap()
    good = [
        (f"good-{i}", [EventData("Good", {"i": i}), EventData("Good", {"i": -i})], NO_STREAM)
        for i in range(6)
    ]
    appends: list[tuple[str, list[EventData], Any]] = [
        ("lead", [EventData("Lead", {})], NO_STREAM),
        good[0],
        ("c", [EventData("C", {})], 0),  # the stream is at 1: WrongExpectedVersion
        good[1],
        ("d", [EventData("D", {}), EventData("D2", {}, id=taken.id)], NO_STREAM),  # a taken id
        good[2],
        ("r", [first], NO_STREAM),  # the same append again: the stored result, nothing written
        *good[3:],
    ]
    results = await _together(store, appends)
    assert isinstance(results[2], Failure)
    assert isinstance(results[2].failure(), WrongExpectedVersion)
    assert isinstance(results[4], Failure)
    assert isinstance(results[4].failure(), DuplicateEvent)
    assert results[6] == Success(earlier)
    for i in (0, 1, 3, 5, 7, 8, 9):
        assert isinstance(results[i], Success), results[i]
    events = await _log(store)
    assert len(events) == 3 + 1 + 2 * 6
    for stream, batch, _ in good:
        assert [e.id for e in events if e.stream == stream] == [e.id for e in batch]
    assert not [e for e in events if e.stream == "d"]
    assert [e.seq for e in events if e.stream == "c"] == [1]


async def test_a_statement_refused_inside_a_group_fails_only_its_append(url: str) -> None:
    async with open_store(url) as opened:
        assert isinstance(opened, StoreBase)
        store = opened
        assert isinstance(await store.append("warm", [EventData("Warm", {})]), Success)
        if url.startswith("sqlite"):
            await _execute(
                url,
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.type = 'Poison' "
                "BEGIN SELECT RAISE(ABORT, 'poison refused'); END;",
            )
        else:
            await _execute(
                url,
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.type = 'Poison' THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$;"
                "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW "
                "EXECUTE FUNCTION refuse_poison();",
            )
        appends: list[tuple[str, list[EventData], Any]] = [
            (f"s-{i}", [EventData("Poison" if i == 4 else "Fine", {"i": i})], NO_STREAM) for i in range(10)
        ]
        results = await _together(store, appends)
        assert isinstance(results[4], Failure)
        assert isinstance(results[4].failure(), StoreUnavailable)
        assert "poison refused" in str(results[4].failure())
        assert all(isinstance(r, Success) for i, r in enumerate(results) if i != 4), results
        events = await _log(store)
        assert sorted(e.stream for e in events) == sorted(["warm", *(f"s-{i}" for i in range(10) if i != 4)])


async def test_callers_cancelled_inside_a_group_leave_the_others_and_later_groups_working(
    store: StoreBase,
) -> None:
    for round_ in range(6):
        acked: list[uuid.UUID] = []
        sent: dict[uuid.UUID, str] = {}

        async def one(
            i: int, scope: anyio.CancelScope, round_: int = round_, sent: Any = sent, acked: Any = acked
        ) -> None:
            event = EventData("E", {"i": i})
            sent[event.id] = f"s-{round_}-{i}"
            with scope:
                result = await store.append(f"s-{round_}-{i}", [event], NO_STREAM)
                assert isinstance(result, Success), result
                acked.append(event.id)

        scopes = [anyio.CancelScope() for _ in range(12)]
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i, scope in enumerate(scopes):
                    tg.start_soon(one, i, scope)
                for _ in range(round_):  # cancel at a different moment each round
                    await anyio.lowlevel.checkpoint()
                for scope in scopes[::3]:  # the leader, queued ones, sent ones
                    scope.cancel()
        stored = {e.id for e in await _log(store)}
        assert set(acked) <= stored  # nothing acknowledged is lost
        assert stored & set(sent) >= set(acked)
        for i in range(12):
            if i % 3:
                assert any(sent[a] == f"s-{round_}-{i}" for a in acked)  # not cancelled: written
    # the queue still flows: a later group completes
    results = await _together(store, [(f"after-{i}", [EventData("A", {})], NO_STREAM) for i in range(8)])
    assert all(isinstance(r, Success) for r in results)


async def test_imports_queued_together_each_get_their_own_answer(store: StoreBase) -> None:
    async with MemoryStore() as source:
        for i in range(8):
            batch = [EventData("E", {"i": i}), EventData("F", {})]
            assert isinstance(await source.append(f"src-{i}", batch), Success)
        assert isinstance(await source.append("gap", [EventData("G", {"n": n}) for n in range(3)]), Success)
        recorded = await source.read_all().to_list()
        gap_first, gap = recorded[-3], recorded[-1]  # the target gets seq 1: seq 3 expects seq 2 there
        recorded = recorded[:-2]
    by_stream: dict[str, list[RecordedEvent]] = {}
    for e in recorded[:-1]:
        by_stream.setdefault(e.stream, []).append(e)
    assert isinstance(await store.import_events("src-3", by_stream["src-3"]), Success)
    assert isinstance(await store.import_events("gap", [gap_first]), Success)
    results: list[Result[AppendResult, StoreError] | None] = [None] * 9

    async def one(i: int) -> None:
        if i == 8:
            results[i] = await store.import_events("gap", [gap])
        else:
            results[i] = await store.import_events(f"src-{i}", by_stream[f"src-{i}"])

    async with anyio.create_task_group() as tg:
        for i in range(9):
            tg.start_soon(one, i)
    assert all(isinstance(r, Success) for r in results[:8]), results  # src-3 again: idempotent
    assert isinstance(results[8], Failure)
    assert isinstance(results[8].failure(), WrongExpectedVersion)
    events = await _log(store)
    assert sorted((e.id, e.time) for e in events) == sorted((e.id, e.time) for e in recorded)


async def test_a_task_appending_in_a_loop_is_cancelled_like_any_other(store: StoreBase) -> None:
    """The leader of a group runs shielded; a lone writer, always the leader, must still see its
    cancellation at its next append (it looped for ever once)."""
    enough = anyio.Event()

    async def loop() -> None:
        for n in range(1, 1_000_000):
            assert isinstance(await store.append("loop", [EventData("E", {})]), Success)
            if n == 20:
                enough.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            await enough.wait()
            tg.cancel_scope.cancel()
    assert len(await store.read("loop").to_list()) >= 20
