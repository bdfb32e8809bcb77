"""Retiring streams beyond the conformance suite: retention policies applied over the contract, what a
copy does with truncated and deleted streams, and the PostgreSQL schema upgrade that brought tombstones.

Real stores throughout: SQLite files, the memory store, the session's PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import asyncpg
import pytest
from returns.result import Failure, Success

from streamsrc.errors import InvalidRetentionPolicy, StreamDeleted
from streamsrc.events import EventData, RecordedEvent
from streamsrc.migrate import CopyConflict, copy
from streamsrc.retention import RetentionPolicy, apply_retention, parse_duration
from streamsrc.store import Store, open_store
from streamsrc.store.base import TOMBSTONE_TYPE, RetiringStore
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


class RetiringFullStore(Store, RetiringStore, Protocol):
    """What every shipped store is (and what these tests use)."""


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def aged(stream: str, days: list[int], first_seq: int = 1) -> list[RecordedEvent]:
    """Events of ``stream`` recorded ``days`` before :data:`NOW` (as a store would have them)."""
    out = []
    for k, age in enumerate(days):
        event = EventData("Noted", {"age": age})
        moment = NOW - timedelta(days=age)
        out.append(
            RecordedEvent(stream, first_seq + k, k + 1, event.type, event.data, None, event.id, moment)
        )
    return out


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RetiringFullStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db?page_size=3"
    async with open_store(url) as opened:
        assert isinstance(opened, RetiringStore)
        yield cast(RetiringFullStore, opened)


async def seqs(store: RetiringFullStore, stream: str) -> list[int]:
    return [e.seq for e in await store.read(stream).to_list()]


# ------------------------------------------------------------------------------------ policies


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_age": timedelta(0)},
        {"max_age": timedelta(days=-1)},
        {"max_age": 30},
        {"max_count": 0},
        {"max_count": -3},
        {"max_count": 2.5},
        {"max_count": True},
    ],
)
def test_a_policy_that_limits_nothing_or_by_a_bad_amount_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRetentionPolicy):
        RetentionPolicy("audit-", **kwargs)


def test_a_policy_prefix_must_be_text() -> None:
    with pytest.raises(InvalidRetentionPolicy):
        RetentionPolicy(None, max_count=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 14 * 86400), ("1d12h", 129600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-3d", "3d and more", "1.5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidRetentionPolicy):
        parse_duration(text)


async def test_apply_refuses_what_is_not_a_policy_and_a_naive_now(store: RetiringFullStore) -> None:
    with pytest.raises(InvalidRetentionPolicy):
        await apply_retention(store, ["audit-"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await apply_retention(store, [RetentionPolicy("a", max_count=1)], now=datetime(2026, 1, 1))


async def test_apply_refuses_a_store_that_cannot_truncate() -> None:
    class ReadOnly:
        pass

    with pytest.raises(TypeError):
        await apply_retention(ReadOnly(), [RetentionPolicy("a", max_count=1)])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ applying them


async def test_max_count_keeps_the_last_events_of_each_covered_stream(store: RetiringFullStore) -> None:
    for stream in ("audit-1", "audit-2", "order-1"):
        await store.append(stream, [EventData("Noted", {"n": n}) for n in range(6)])
    await store.append("audit-3", [EventData("Noted", {})])
    report = await apply_retention(store, [RetentionPolicy("audit-", max_count=2)], now=NOW)
    assert report.checked == 3
    assert [(s.stream, s.before, s.removed) for s in report.streams] == [("audit-1", 5, 4), ("audit-2", 5, 4)]
    assert report.removed == 8
    assert report.failed == ()
    assert await seqs(store, "audit-1") == [5, 6]
    assert await seqs(store, "audit-3") == [1]
    assert await seqs(store, "order-1") == [1, 2, 3, 4, 5, 6]
    again = await apply_retention(store, [RetentionPolicy("audit-", max_count=2)], now=NOW)
    assert again.streams == ()  # nothing more to do
    appended = await store.append("audit-1", [EventData("Noted", {})], expected=6)  # the version stays
    assert appended.unwrap().last_seq == 7


async def test_max_age_removes_the_old_start_and_keeps_the_last_event(store: RetiringFullStore) -> None:
    await store.import_events("log-1", aged("log-1", [90, 60, 40, 20, 1]))
    await store.import_events("log-2", aged("log-2", [400, 300]))  # every event old: the last stays
    policy = RetentionPolicy("log-", max_age=parse_duration("30d"))
    report = await apply_retention(store, [policy], now=NOW)
    assert [(s.stream, s.before, s.removed) for s in report.streams] == [("log-1", 4, 3), ("log-2", 2, 1)]
    assert await seqs(store, "log-1") == [4, 5]
    assert await seqs(store, "log-2") == [2]
    removed = [e for e in await store.read_all().to_list() if e.data["age"] > 30 and e.stream == "log-1"]
    assert removed == []  # a projection rebuilt from read_all never sees them


async def test_both_limits_remove_what_either_would(store: RetiringFullStore) -> None:
    await store.import_events("log-1", aged("log-1", [50, 40, 5, 4, 3, 2, 1]))
    policy = RetentionPolicy("log-", max_age=timedelta(days=30), max_count=3)
    await apply_retention(store, [policy], now=NOW)
    assert await seqs(store, "log-1") == [5, 6, 7]
    await store.import_events("log-2", aged("log-2", [50, 40, 35, 4]))
    await apply_retention(store, [policy], now=NOW)
    assert await seqs(store, "log-2") == [4]


async def test_the_longest_prefix_governs_a_stream(store: RetiringFullStore) -> None:
    for stream in ("audit-1", "audit-vip-1", "other"):
        await store.append(stream, [EventData("Noted", {"n": n}) for n in range(5)])
    policies = [
        RetentionPolicy("audit-", max_count=1),
        RetentionPolicy("audit-vip-", max_count=4),
        RetentionPolicy("", max_count=3),
    ]
    await apply_retention(store, policies, now=NOW)
    assert await seqs(store, "audit-1") == [5]
    assert await seqs(store, "audit-vip-1") == [2, 3, 4, 5]
    assert await seqs(store, "other") == [3, 4, 5]


async def test_a_dry_run_changes_nothing(store: RetiringFullStore) -> None:
    await store.import_events("log-1", aged("log-1", [90, 60, 1]))
    before = await store.read_all().to_list()
    report = await apply_retention(
        store, [RetentionPolicy("log-", max_age=timedelta(days=30))], now=NOW, dry_run=True
    )
    assert report.dry_run
    assert [(s.stream, s.before, s.removed) for s in report.streams] == [("log-1", 3, 2)]
    assert await store.read_all().to_list() == before


async def test_a_deleted_stream_keeps_its_tombstone(store: RetiringFullStore) -> None:
    await store.append("audit-1", [EventData("Noted", {"n": n}) for n in range(3)])
    await store.delete_stream("audit-1")
    await apply_retention(store, [RetentionPolicy("audit-", max_count=1)], now=NOW)
    assert [(e.seq, e.type) for e in await store.read("audit-1").to_list()] == [(4, TOMBSTONE_TYPE)]
    refused = await store.append("audit-1", [EventData("Noted", {})])
    assert isinstance(refused, Failure)
    assert isinstance(refused.failure(), StreamDeleted)


# ------------------------------------------------------------------------------------ copies


async def test_a_copy_carries_truncated_streams_from_their_first_kept_seq_and_tombstones(
    store: RetiringFullStore, tmp_path: Path
) -> None:
    await store.append("kept", [EventData("Noted", {"n": n}) for n in range(5)])
    await store.append("gone", [EventData("Noted", {"n": n}) for n in range(2)])
    assert await store.truncate_before("kept", 4) == Success(3)
    await store.delete_stream("gone")
    async with open_store(f"sqlite:///{tmp_path}/target.db") as target:
        done = await copy(store, target, batch_size=2)
        assert done.events == 5
        assert [e.seq for e in await target.read("kept").to_list()] == [4, 5]
        assert [(e.seq, e.type) for e in await target.read("gone").to_list()] == [
            (1, "Noted"),
            (2, "Noted"),
            (3, TOMBSTONE_TYPE),
        ]
        source_fields = [(e.stream, e.seq, e.id, e.time) for e in await store.read_all().to_list()]
        assert [(e.stream, e.seq, e.id, e.time) for e in await target.read_all().to_list()] == source_fields
        deleted = await target.append("gone", [EventData("Noted", {})])
        assert isinstance(deleted, Failure)
        assert isinstance(deleted.failure(), StreamDeleted)
        assert (await target.append("kept", [], expected=5)).unwrap().last_seq == 5  # its version
        await store.append("kept", [EventData("Noted", {})])  # the source moves on: the copy resumes
        assert (await copy(store, target)).events == 1
    memory = MemoryStore()
    assert (await copy(store, memory)).events == 6
    assert [e.seq for e in await memory.read("kept").to_list()] == [4, 5, 6]


async def test_a_truncated_stream_cannot_be_copied_through_append(store: RetiringFullStore) -> None:
    await store.append("kept", [EventData("Noted", {"n": n}) for n in range(3)])
    await store.truncate_before("kept", 3)

    class AppendOnly:  # a target without import_events
        def __init__(self) -> None:
            self.inner = MemoryStore()

        def __getattr__(self, name: str) -> Any:
            if name == "import_events":
                raise AttributeError(name)
            return getattr(self.inner, name)

    with pytest.raises(CopyConflict, match="truncated"):
        await copy(store, AppendOnly(), allow_append=True)


# ------------------------------------------------------------------------------------ PostgreSQL


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncpg runs on asyncio only
async def test_a_version_3_database_is_upgraded_in_place_to_tombstones(postgres_database: str) -> None:
    from streamsrc.store.postgres import SCHEMA_VERSION

    async with open_store(postgres_database) as opened:
        store: Any = opened
        await store.append("s", [EventData("A", {"n": 1})])
        before = await store.read_all().to_list()
    # what version 3 left: append functions that know nothing of tombstones (stand-ins that write nothing)
    connection = await asyncpg.connect(postgres_database)
    try:
        await connection.execute(
            "UPDATE streamsrc_meta SET value = '3' WHERE key = 'schema_version';"
            "CREATE OR REPLACE FUNCTION streamsrc_append("
            "p_stream TEXT, p_expected BIGINT, p_ids UUID[], p_types TEXT[], p_data TEXT[], p_meta TEXT[], "
            "p_times BIGINT[]) RETURNS TABLE (code INT, last_seq BIGINT, first_position BIGINT, "
            "found_id UUID, found_stream TEXT, found_seq BIGINT, found_position BIGINT) LANGUAGE sql AS "
            "'SELECT 2, 0::BIGINT, 0::BIGINT, NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT';"
        )
    finally:
        await connection.close()
    async with open_store(postgres_database) as reopened:
        store = reopened
        assert await store.read_all().to_list() == before
        deleted = await store.delete_stream("s", expected=1)
        assert deleted.unwrap().last_seq == 2
        refused = await store.append("s", [EventData("B", {})])
        assert isinstance(refused, Failure)
        assert isinstance(refused.failure(), StreamDeleted)
        assert await store.truncate_before("s", 2) == Success(1)
    connection = await asyncpg.connect(postgres_database)
    try:
        version = await connection.fetchval("SELECT value FROM streamsrc_meta WHERE key = 'schema_version'")
        functions = await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('streamsrc_append', 'streamsrc_append_group')"
        )
    finally:
        await connection.close()
    assert (version, functions) == (str(SCHEMA_VERSION), 2)
