"""Tests for ``streamsrc.migrate``: copying every event of one store into another.

On real stores (memory, SQLite files; PostgreSQL as a target where the
session has a server), on asyncio and trio: a copy gives the same log (every
field, positions too when the target starts empty), resumes after being
cancelled anywhere without writing anything twice, stops with a typed error
at a conflicting target stream without losing anything, and reports its
progress.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure

from streamsrc.errors import EventTooLarge
from streamsrc.events import EventData, RecordedEvent, stored_event
from streamsrc.migrate import (
    CopyConflict,
    CopyFailed,
    CopyProgress,
    TargetCannotImport,
    checkpoint_name,
    copy,
    copying,
)
from streamsrc.store import BatchLimitedStore, ImportingStore, open_store
from streamsrc.store.memory import MemoryStore
from streamsrc.store.sqlite import SqliteStore
from streamsrc.testing import ConformantStore

pytestmark = pytest.mark.anyio

PAIRS = ["memory->sqlite", "sqlite->sqlite", "sqlite->memory"]


@asynccontextmanager
async def opened(kind: str, path: Path) -> AsyncIterator[ConformantStore]:
    url = "memory://?page_size=7" if kind == "memory" else f"sqlite:///{path}?page_size=7"
    async with open_store(url) as store:
        yield store


@asynccontextmanager
async def pair(kinds: str, tmp_path: Path) -> AsyncIterator[tuple[ConformantStore, ConformantStore]]:
    source_kind, target_kind = kinds.split("->")
    async with (
        opened(source_kind, tmp_path / "source.db") as source,
        opened(target_kind, tmp_path / "target.db") as target,
    ):
        yield source, target


async def fill(store: ConformantStore, appends: int, seed: int = 1, streams: int = 5) -> None:
    """``appends`` appends of 1-4 events to streams picked at random (runs of one stream and
    interleavings), with metadata on some events."""
    rng = random.Random(seed)
    for k in range(appends):
        stream = f"s-{rng.randrange(streams)}"
        batch = [
            EventData(f"T{rng.randrange(3)}", {"k": k, "i": i}, {"m": i} if i % 2 else None)
            for i in range(rng.randint(1, 4))
        ]
        assert (await store.append(stream, batch)).unwrap()


async def everything(store: ConformantStore) -> list[RecordedEvent]:
    return await store.read_all().to_list()


def without_positions(events: list[RecordedEvent]) -> list[tuple[Any, ...]]:
    return [(e.stream, e.seq, e.type, e.data, e.metadata, e.id, e.time) for e in events]


class Proxy:
    """A store that passes everything on to ``inner`` (tests override what they watch), but has no
    ``transaction()``: every import goes through the proxy's ``import_events``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "transaction":
            raise AttributeError(name)
        return getattr(self.inner, name)


class Interrupting(Proxy):
    """Cancels ``scope`` at the ``at``-th import: before it (``after=False``) or once it is written."""

    def __init__(self, inner: Any, scope: anyio.CancelScope, at: int, after: bool) -> None:
        super().__init__(inner)
        self.scope, self.at, self.after, self.calls = scope, at, after, 0

    async def import_events(self, stream: str, events: list[RecordedEvent]) -> Any:
        self.calls += 1
        if self.calls == self.at and not self.after:
            self.scope.cancel()
            await anyio.lowlevel.checkpoint()
        result = await self.inner.import_events(stream, events)
        if self.calls == self.at:
            self.scope.cancel()
            await anyio.lowlevel.checkpoint()
        return result


class Counting(Proxy):
    """Records the size of every import; ``max_batch`` as the target says."""

    def __init__(self, inner: Any, max_batch: int | None = None) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []
        if max_batch is not None:
            self.max_batch = max_batch

    async def import_events(self, stream: str, events: list[RecordedEvent]) -> Any:
        self.sizes.append(len(events))
        return await self.inner.import_events(stream, events)


class AppendOnly(Proxy):
    """A target without ``import_events``."""

    def __getattr__(self, name: str) -> Any:
        if name == "import_events":
            raise AttributeError(name)
        return super().__getattr__(name)


def importing(store: ConformantStore) -> ImportingStore:
    assert isinstance(store, ImportingStore)
    return store


def as_store(proxy: Proxy) -> ConformantStore:
    return cast(ConformantStore, proxy)


# ---------------------------------------------------------------------------------------------- copies


@pytest.mark.parametrize("kinds", PAIRS)
async def test_copy_gives_the_same_log(kinds: str, tmp_path: Path) -> None:
    async with pair(kinds, tmp_path) as (source, target):
        await fill(source, 60)
        reports: list[CopyProgress] = []
        done = await copy(source, target, batch_size=10, on_progress=reports.append)
        want = await everything(source)
        assert await everything(target) == want  # every field: stream, seq, position, ..., id, time
        for name in await source.streams().to_list():
            assert await target.read(name).to_list() == await source.read(name).to_list()
        assert await target.head() == await source.head() == done.position == done.head
        assert (done.events, done.done, done.start) == (len(want), True, 0)
        assert await target.load_checkpoint(checkpoint_name(source)) == done.position
        # Again: nothing left to copy, nothing written.
        again = await copy(source, target)
        assert (again.start, again.position, again.events, again.done) == (
            done.position,
            done.position,
            0,
            True,
        )
        assert await everything(target) == want


async def test_state_at_a_time_is_kept(tmp_path: Path) -> None:
    async with pair("memory->sqlite", tmp_path) as (source, target):
        for n in range(3):
            await source.append("acct", [EventData("Deposited", {"n": n})])
            await anyio.sleep(0.002)
        await copy(source, target)
        times = [e.time for e in await source.read("acct").to_list()]
        assert [e.time for e in await target.read("acct").to_list()] == times
        assert times == sorted(times)
        assert len(set(times)) == 3


async def test_copy_into_a_target_with_other_streams(tmp_path: Path) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        await fill(source, 30)
        await target.append("other", [EventData("Mine", {"i": i}) for i in range(4)])
        mine = await everything(target)
        done = await copy(source, target, batch_size=8)
        got = await everything(target)
        want = await everything(source)
        assert got[:4] == mine
        assert without_positions(got[4:]) == without_positions(want)  # same order, same fields
        assert [e.position for e in got[4:]] == [e.position + 4 for e in want]  # the target's own
        assert done.position == want[-1].position


async def test_copy_skips_a_prefix_the_target_already_holds(tmp_path: Path) -> None:
    async with pair("memory->sqlite", tmp_path) as (source, target):
        await fill(source, 20, streams=2)
        first = await source.read("s-0").to_list()
        assert (await importing(target).import_events("s-0", first[:3])).unwrap()  # an earlier copy, say
        await copy(source, target, checkpoint="fresh name", batch_size=4)
        for name in ("s-0", "s-1"):
            assert without_positions(await target.read(name).to_list()) == without_positions(
                await source.read(name).to_list()
            )
        assert await target.head() == await source.head()


async def test_max_batch_and_batch_size_bound_every_import(tmp_path: Path) -> None:
    async with pair("sqlite->memory", tmp_path) as (source, target):
        await source.append("long", [EventData("T", {"i": i}) for i in range(23)])
        await fill(source, 10, streams=2)
        counted = Counting(target, max_batch=4)
        await copy(source, as_store(counted), batch_size=10)
        assert counted.sizes
        assert max(counted.sizes) <= 4
        assert await everything(target) == await everything(source)
        uncapped = Counting(MemoryStore())
        await copy(source, as_store(uncapped), batch_size=9)
        assert max(uncapped.sizes) == 9  # one stream's run, cut at the batch size
        assert sum(uncapped.sizes) == await source.head()


# ---------------------------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("after", [False, True], ids=["before-import", "after-import"])
async def test_cancelled_copy_resumes_without_duplicates(tmp_path: Path, after: bool) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        await fill(source, 40)
        want = await everything(source)
        for at in (1, 5, 13):
            with anyio.CancelScope() as scope:
                await copy(source, as_store(Interrupting(target, scope, at, after)), batch_size=6)
            assert scope.cancelled_caught
        done = await copy(source, target, batch_size=6)
        assert await everything(target) == want
        assert done.position == want[-1].position


async def test_copy_cut_short_by_deadlines_again_and_again(tmp_path: Path) -> None:
    async with pair("memory->sqlite", tmp_path) as (source, target):
        await fill(source, 150, streams=20)
        want = await everything(source)
        for attempt in range(1000):
            with anyio.move_on_after(0.0005 + attempt * 0.0005) as scope:
                await copy(source, target, batch_size=5)
            if not scope.cancelled_caught:
                break
        assert attempt > 0  # it was cut short at least once
        assert await everything(target) == want


@settings(max_examples=60, deadline=None)
@given(
    appends=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), max_size=25),
    page_size=st.integers(1, 6),
    batch_size=st.integers(1, 8),
    max_batch=st.none() | st.integers(1, 4),
    cuts=st.lists(st.tuples(st.integers(1, 30), st.booleans()), max_size=3),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_random_sources_copy_exactly_through_interruptions(
    appends: list[tuple[int, int]],
    page_size: int,
    batch_size: int,
    max_batch: int | None,
    cuts: list[tuple[int, bool]],
    backend: str,
) -> None:
    async def main() -> None:
        source, target = MemoryStore(page_size=page_size), MemoryStore(page_size=page_size)
        for n, (stream, count) in enumerate(appends):
            batch = [EventData("T", {"n": n, "i": i}) for i in range(count)]
            (await source.append(f"s{stream}", batch)).unwrap()
        want = await everything(source)
        for at, after in cuts:
            with anyio.CancelScope() as scope:
                proxy = Interrupting(target, scope, at, after)
                if max_batch is not None:
                    proxy.max_batch = max_batch  # type: ignore[attr-defined]
                await copy(source, as_store(proxy), batch_size=batch_size)
        done = await copy(source, target, batch_size=batch_size)
        assert await everything(target) == want
        assert done.position == done.head == len(want)
        assert await target.load_checkpoint(checkpoint_name(source)) == len(want)

    anyio.run(main, backend=backend)


# ---------------------------------------------------------------------------------------------- conflicts


async def test_conflicting_target_stream_stops_the_copy_and_loses_nothing(tmp_path: Path) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        await source.append("a", [EventData("T", {"i": i}) for i in range(2)])
        await source.append("b", [EventData("T", {"i": i}) for i in range(3)])
        await source.append("a", [EventData("T", {"i": i}) for i in range(2, 4)])
        theirs = [EventData("Theirs", {"i": i}) for i in range(2)]
        await target.append("b", theirs)
        before = await target.read("b").to_list()
        with pytest.raises(CopyConflict) as caught:
            await copy(source, target, batch_size=100)
        error = caught.value
        assert (error.stream, error.seq) == ("b", 1)
        assert error.target_id == theirs[0].id
        assert "'b' #1" in str(error)
        assert await target.read("b").to_list() == before  # nothing of the batch went in
        assert len(await target.read("a").to_list()) == 2  # what came before it is there
        assert await target.load_checkpoint(checkpoint_name(source)) == 0


async def test_conflict_after_a_matching_prefix_names_the_first_different_seq(tmp_path: Path) -> None:
    async with pair("memory->sqlite", tmp_path) as (source, target):
        await source.append("s", [EventData("T", {"i": i}) for i in range(5)])
        ours = await source.read("s").to_list()
        assert (await importing(target).import_events("s", ours[:2])).unwrap()
        other = EventData("Other", {})
        assert (await target.append("s", [other], 2)).unwrap()
        with pytest.raises(CopyConflict) as caught:
            await copy(source, target)
        assert (caught.value.stream, caught.value.seq, caught.value.target_id) == ("s", 3, other.id)
        assert caught.value.source_id == ours[2].id
        assert [e.id for e in await target.read("s").to_list()] == [ours[0].id, ours[1].id, other.id]


async def test_same_id_elsewhere_in_the_target_is_a_conflict(tmp_path: Path) -> None:
    async with pair("sqlite->memory", tmp_path) as (source, target):
        event = EventData("T", {})
        await source.append("s", [EventData("T", {}), event])
        await target.append("elsewhere", [event])
        with pytest.raises(CopyConflict) as caught:
            await copy(source, target)
        assert (caught.value.stream, caught.value.seq, caught.value.source_id) == ("s", 2, event.id)
        assert await target.read("s").to_list() == []
        assert len(await everything(target)) == 1


async def test_checkpoint_of_another_target_is_a_conflict(tmp_path: Path) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        await source.append("s", [EventData("T", {"i": i}) for i in range(4)])
        await target.save_checkpoint(checkpoint_name(source), 2)  # claims #1 and #2 are copied
        with pytest.raises(CopyConflict) as caught:
            await copy(source, target)
        assert (caught.value.stream, caught.value.seq) == ("s", 3)
        assert "missing" in str(caught.value)
        assert await everything(target) == []


async def test_event_the_target_refuses_is_a_copy_failure(tmp_path: Path) -> None:
    async with opened("sqlite", tmp_path / "source.db") as source:
        await source.append("s", [EventData("T", {"i": 1}), EventData("Big", "x" * 200)])
        small = MemoryStore(max_event_size=100)
        with pytest.raises(CopyFailed) as caught:
            await copy(source, small)
        assert (caught.value.stream, caught.value.seq) == ("s", 1)
        assert "over the limit" in str(caught.value.error)
        assert await small.head() == 0


# ---------------------------------------------------------------------------------------------- the rest


async def test_progress_is_monotone_and_ends_at_the_head(tmp_path: Path) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        await fill(source, 50)
        head = await source.head()
        reports = await copying(source, target, batch_size=7).to_list()
        assert len(reports) >= head // 7
        positions = [r.position for r in reports]
        counts = [r.events for r in reports]
        assert positions == sorted(positions)
        assert counts == sorted(counts)
        assert [r.elapsed for r in reports] == sorted(r.elapsed for r in reports)
        assert all(r.head == head for r in reports)
        assert [r.done for r in reports] == [False] * (len(reports) - 1) + [True]
        last = reports[-1]
        assert (last.position, last.head, last.events, last.fraction, last.remaining) == (
            head,
            head,
            head,
            1.0,
            0,
        )
        assert last.eta == 0.0
        assert last.rate > 0
        middle = reports[len(reports) // 2]
        assert 0 < middle.fraction < 1
        assert middle.eta is not None
        assert middle.eta > 0
        # resumed: starts at the checkpoint
        await fill(source, 5, seed=9)
        more = await copying(source, target).to_list()
        assert more[0].start == head
        assert more[-1].position == await source.head()


async def test_a_target_that_cannot_import(tmp_path: Path) -> None:
    async with pair("sqlite->memory", tmp_path) as (source, target):
        await fill(source, 12)
        plain = AppendOnly(target)
        with pytest.raises(TargetCannotImport, match="allow_append=True"):
            copying(source, as_store(plain))
        await copy(source, as_store(plain), allow_append=True, batch_size=5)
        got, want = await everything(target), await everything(source)
        assert [(e.stream, e.seq, e.position, e.type, e.data, e.metadata, e.id) for e in got] == [
            (e.stream, e.seq, e.position, e.type, e.data, e.metadata, e.id) for e in want
        ]
        assert await copy(source, as_store(plain), allow_append=True) is not None
        assert len(await everything(target)) == len(want)


async def test_checkpoint_names(tmp_path: Path) -> None:
    async with pair("sqlite->sqlite", tmp_path) as (source, target):
        assert checkpoint_name(source) == f"streamsrc.migrate from {tmp_path / 'source.db'}"
        assert checkpoint_name(MemoryStore()) != checkpoint_name(MemoryStore())
        await fill(source, 5)
        checkpoints = MemoryStore()
        done = await copy(source, target, checkpoint="mine", checkpoints=checkpoints)
        assert await checkpoints.load_checkpoint("mine") == done.position
        assert await target.load_checkpoint("mine") == 0
    with pytest.raises(ValueError, match="batch_size"):
        copying(MemoryStore(), MemoryStore(), batch_size=0)


# ---------------------------------------------------------------------------------------------- PostgreSQL


async def test_sqlite_to_postgres_and_back(tmp_path: Path, postgres_database: str) -> None:
    async with opened("sqlite", tmp_path / "source.db") as source, open_store(postgres_database) as target:
        await fill(source, 60, streams=6)
        want = await everything(source)
        with anyio.CancelScope() as scope:
            await copy(source, as_store(Interrupting(target, scope, 9, after=True)), batch_size=8)
        assert scope.cancelled_caught
        done = await copy(source, target, batch_size=8)
        assert await everything(target) == want  # positions, times and ids too
        assert done.position == want[-1].position
        async with opened("sqlite", tmp_path / "back.db") as back:
            await copy(target, back, batch_size=50)
            assert await everything(back) == want
            assert checkpoint_name(target).startswith("streamsrc.migrate from postgresql://")


# ------------------------------------------------------------------------------------------------ DynamoDB


async def test_sqlite_to_dynamodb_to_postgres(
    tmp_path: Path, postgres_database: str, moto_endpoint: str
) -> None:
    """The seed's re-architecture: SQLite on a laptop, then DynamoDB, then PostgreSQL, by replay.
    Runs of one stream longer than a DynamoDB transaction holds are cut at its ``max_batch``."""
    from store_urls import fresh_dynamodb_url

    async with (
        opened("sqlite", tmp_path / "source.db") as source,
        open_store(fresh_dynamodb_url()) as dynamodb,
        open_store(postgres_database) as postgres,
    ):
        await fill(source, 30, streams=3)
        await source.append("long", [EventData("Bulk", {"k": k}) for k in range(60)])  # > 48 in one stream
        want = await everything(source)
        assert isinstance(dynamodb, BatchLimitedStore)
        assert dynamodb.max_batch < 60
        with anyio.CancelScope() as scope:
            await copy(source, as_store(Interrupting(dynamodb, scope, 3, after=True)), batch_size=40)
        assert scope.cancelled_caught
        done = await copy(source, dynamodb, batch_size=40)
        assert done.position == want[-1].position
        assert await everything(dynamodb) == want  # positions, times and ids too
        await copy(dynamodb, postgres, batch_size=100)
        assert await everything(postgres) == want


# ---------------------------------------------------------------------------------------------- imports


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_import_measures_stored_json_as_append_would(kind: str, tmp_path: Path) -> None:
    """An event in stored form keeps its JSON text; text spaced out by another store that is over
    the limit only as written is measured compactly, as ``append`` measures it."""
    limit = 50
    options = f"max_event_size={limit}"
    url = f"memory://?{options}" if kind == "memory" else f"sqlite:///{tmp_path}/t.db?{options}"
    async with open_store(url) as store:
        importer = importing(store)

        def spaced(seq: int, n: int) -> RecordedEvent:
            text = '{"a": "' + "x" * n + '"}'  # compact: 8 + n bytes; as stored here: 9 + n
            return stored_event("s", seq, 77, "T", text, None, uuid.uuid4().bytes, 1_700_000_000_123_456)

        fits = spaced(1, limit - 8)
        assert (await importer.import_events("s", [fits])).unwrap().last_seq == 1
        [got] = await store.read("s").to_list()
        assert (got.data, got.id, got.time) == (fits.data, fits.id, fits.time)
        assert got.time == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
        over = spaced(2, limit - 7)
        result = await importer.import_events("s", [over])
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), EventTooLarge)
        assert await store.read("s").count() == 1


async def test_sqlite_transaction_imports_as_one_by_one(tmp_path: Path) -> None:
    async with opened("memory", tmp_path) as source:
        await fill(source, 30, streams=4)
        events = await everything(source)
    runs: list[list[RecordedEvent]] = []
    for event in events:
        if runs and runs[-1][-1].stream == event.stream:
            runs[-1].append(event)
        else:
            runs.append([event])
    async with opened("sqlite", tmp_path / "one.db") as one, opened("sqlite", tmp_path / "tx.db") as together:
        assert isinstance(together, SqliteStore)
        singles = [await importing(one).import_events(run[0].stream, run) for run in runs]
        for attempt in range(2):  # the second time every import is a re-import: one by one
            async with together.transaction() as tx:
                for run in runs:
                    tx.import_events(run[0].stream, run)
            assert tx.results == singles, attempt
            assert await everything(together) == await everything(one) == events
