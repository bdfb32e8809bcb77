"""The entity layer at the store's border: snapshots are best effort, loads never write, commands
resync with only what they missed, and ``state_at(time=...)`` is one answer with or without snapshots.

Issue 19, bug 1: a snapshot save that failed after a successful append raised out of
``Repository.handle`` (the events were stored, the caller saw an exception, and a caller
retrying without ``command_id`` applied the command twice); a failing snapshot load failed
``load`` and ``handle`` too. Bug 8: ``state_at(time=T)`` chose its snapshot by the time the
snapshot was saved, which can be earlier than the events it covers when a clock steps back, so it
disagreed with the replay without snapshots.

Every test runs on memory and SQLite, on asyncio and trio.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from returns.maybe import Maybe, Nothing
from returns.result import Result, Success
from store_urls import opened_store

from streamsrc.codec import to_json_value
from streamsrc.effect import RetryPolicy
from streamsrc.entity import (
    LATEST_SNAPSHOT,
    EveryN,
    Loaded,
    OnEventTypes,
    Repository,
    SnapshotStats,
)
from streamsrc.errors import StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import ANY, AppendResult, Expected, Snapshot
from streamsrc.testing.conformance import ConformantStore
from streamsrc.testing.entity import (
    CODEC,
    Account,
    AccountEvent,
    Close,
    Closed,
    Deposit,
    Deposited,
    Withdraw,
    Withdrawn,
    account_decider,
    account_entity,
    append_raw,
    expect_saved,
    stored,
    stored_events,
)
from streamsrc.testing.faults import ForwardedReads

pytestmark = pytest.mark.anyio

LOGGER = "streamsrc.entity"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
    async with opened_store(request.param, tmp_path) as opened:
        yield opened


class Troubled(ForwardedReads):
    """A store forwarding to ``inner`` whose snapshot calls raise while ``save_error`` /
    ``load_error`` make an exception; it records every snapshot call and every ``read``'s ``after``.

    ``race`` appends that many events of another writer (a ``Deposited(1000)`` each) just before the
    first ``append`` reaches the store."""

    inner: ConformantStore

    def __init__(self, inner: ConformantStore) -> None:
        self.inner = inner
        self.save_error: Callable[[], BaseException] | None = None
        self.load_error: Callable[[], BaseException] | None = None
        self.on_save: Callable[[], Any] | None = None
        self.saves: list[int] = []
        self.loads: list[tuple[int | None, datetime | None]] = []
        self.reads: list[int] = []
        self.appends = 0
        self.race = 0

    def read(self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False) -> Any:
        self.reads.append(after)
        return self.inner.read(stream, after, limit, backwards)

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        self.appends += 1
        if self.appends == 1:
            for _ in range(self.race):
                await append_raw(self.inner, stream, [Deposited(1000)])
        return await self.inner.append(stream, events, expected)

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        self.saves.append(seq)
        if self.on_save is not None:
            await self.on_save()
        if self.save_error is not None:
            raise self.save_error()
        await self.inner.save_snapshot(key, seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        self.loads.append((at_seq, at_time))
        if self.load_error is not None:
            raise self.load_error()
        return await self.inner.load_snapshot(key, schema_version, at_seq, at_time)

    async def load_checkpoint(self, name: str) -> int:
        return await self.inner.load_checkpoint(name)

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        await self.inner.save_checkpoint(name, position, expected)


ERRORS: dict[str, Callable[[], BaseException]] = {
    "store-unavailable": lambda: StoreUnavailable("snapshots are down"),
    "sqlite-locked": lambda: sqlite3.OperationalError("database is locked"),
    "a-bug": lambda: RuntimeError("a bug in a snapshot store"),
}


def fields(record: logging.LogRecord) -> tuple[Any, Any, Any]:
    """The structured fields of a log record about a snapshot: entity, stream, seq."""
    return (getattr(record, "entity", None), getattr(record, "stream", None), getattr(record, "seq", None))


def entity_records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and message in r.getMessage()]


# ------------------------------------------------------------------------------------ bug 1: saves


@pytest.mark.parametrize("error", sorted(ERRORS))
async def test_a_snapshot_save_that_fails_after_the_append_does_not_fail_the_command(
    store: ConformantStore, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    troubled = Troubled(store)
    troubled.save_error = ERRORS[error]
    repo = Repository(troubled, account_entity(EveryN(1)))
    assert repo.snapshot_stats == SnapshotStats()
    saved = expect_saved(await repo.handle("k", Deposit(5)))  # raised before the fix
    assert (saved.seq, saved.events, saved.state) == (1, (Deposited(5),), Account(5, False))
    assert troubled.saves == [1]
    # The caller got its answer: it does not send the command again, and it is in the log once.
    assert await stored_events(store, "account-k") == [Deposited(5)]
    assert repo.snapshot_stats.save_failures == 1
    assert repo.snapshot_stats.saved == 0
    [record] = entity_records(caplog, "snapshot")
    assert record.levelno == logging.WARNING
    assert fields(record) == ("account", "account-k", 1)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == str(ERRORS[error]())
    # Every later command too; when the snapshot store is back, the next one is saved.
    expect_saved(await repo.handle("k", Withdraw(2)))
    assert repo.snapshot_stats.save_failures == 2
    troubled.save_error = None
    saved = expect_saved(await repo.handle("k", Deposit(4)))
    assert saved.state == Account(7, False)
    assert repo.snapshot_stats == SnapshotStats(saved=1, save_failures=2)
    snapshot = (await store.load_snapshot("account:k", 1)).unwrap()
    assert (snapshot.seq, snapshot.state) == (3, to_json_value(Account(7, False)))
    assert await stored_events(store, "account-k") == [Deposited(5), Withdrawn(2), Deposited(4)]


async def test_a_command_with_a_key_whose_snapshot_save_fails_is_answered_once(
    store: ConformantStore,
) -> None:
    troubled = Troubled(store)
    troubled.save_error = ERRORS["store-unavailable"]
    repo = Repository(troubled, account_entity(EveryN(1)))
    first = expect_saved(await repo.handle("i", Deposit(9), command_id="pay-1"))
    again = expect_saved(await repo.handle("i", Deposit(9), command_id="pay-1"))
    assert (again.seq, again.events, again.positions) == (first.seq, first.events, first.positions)
    assert await stored_events(store, "account-i") == [Deposited(9)]


async def test_a_cancellation_during_a_snapshot_save_is_not_swallowed(store: ConformantStore) -> None:
    troubled = Troubled(store)
    repo = Repository(troubled, account_entity(EveryN(1)))
    results: list[Any] = []
    with anyio.CancelScope() as scope:

        async def cancel_then_wait() -> None:
            scope.cancel()
            await anyio.sleep_forever()

        troubled.on_save = cancel_then_wait
        results.append(await repo.handle("c", Deposit(3)))
    assert scope.cancelled_caught
    assert results == []  # the cancellation went through handle, not into a result
    assert repo.snapshot_stats.save_failures == 0
    assert await stored_events(store, "account-c") == [Deposited(3)]


# ------------------------------------------------------------------------------------ bug 1: loads


@pytest.mark.parametrize("error", sorted(ERRORS))
async def test_a_snapshot_load_that_fails_falls_back_to_a_full_replay(
    store: ConformantStore, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    troubled = Troubled(store)
    entity = account_entity(EveryN(2))
    repo = Repository(troubled, entity)
    events: list[AccountEvent] = [Deposited(10), Withdrawn(3), Deposited(5)]
    await append_raw(store, "account-f", events)
    # A snapshot no replay gives: seen only if it is used.
    await store.save_snapshot(entity.snapshot_key("f"), 2, to_json_value(Account(10**6, False)), 1)
    troubled.load_error = ERRORS[error]
    truth = Loaded(account_decider.fold(events), 3)
    assert await repo.load("f") == truth  # raised before the fix
    assert await repo.load("f", LATEST_SNAPSHOT) == truth  # no snapshot to go by: the events
    assert await repo.state_at("f", seq=2) == Loaded(account_decider.fold(events[:2]), 2)
    assert await repo.state_at("f", time=datetime.now(UTC)) == truth
    assert repo.snapshot_stats.load_failures == 4
    records = entity_records(caplog, "snapshot")
    assert len(records) == 4
    assert {fields(r)[:2] for r in records} == {("account", "account-f")}
    assert all(r.exc_info is not None for r in records)
    saved = expect_saved(await repo.handle("f", Withdraw(12)))
    assert (saved.seq, saved.state) == (4, Account(0, False))
    assert repo.snapshot_stats.load_failures == 5
    # The replay was from the first event, so the snapshot taken after the command is the truth.
    assert troubled.saves == [4]
    snapshot = (await store.load_snapshot(entity.snapshot_key("f"), 1)).unwrap()
    assert (snapshot.seq, snapshot.state) == (4, to_json_value(Account(0, False)))


# ------------------------------------------------------------------------------------ loads never write


async def test_reads_never_write_a_snapshot(store: ConformantStore) -> None:
    troubled = Troubled(store)
    entity = account_entity(EveryN(2))
    repo = Repository(troubled, entity)
    events: list[AccountEvent] = [Deposited(a) for a in (1, 2, 3, 4, 5)]
    await append_raw(store, "account-r", events)
    assert await repo.load("r") == Loaded(account_decider.fold(events), 5)  # saved one before the fix
    assert await repo.load("r", LATEST_SNAPSHOT) == Loaded(account_decider.initial, 0)
    assert await repo.state_at("r", seq=4) == Loaded(account_decider.fold(events[:4]), 4)
    assert await repo.state_at("r", time=datetime.now(UTC)) == Loaded(account_decider.fold(events), 5)
    assert len(await repo.history("r").to_list()) == 5
    assert troubled.saves == []
    assert await store.load_snapshot(entity.snapshot_key("r"), 1) == Nothing
    # A command does: the policy counts every event since the last snapshot, not only its own.
    expect_saved(await repo.handle("r", Deposit(6)))
    assert troubled.saves == [6]
    assert repo.snapshot_stats == SnapshotStats(saved=1)


async def test_a_command_snapshots_after_event_types_another_writer_appended(store: ConformantStore) -> None:
    troubled = Troubled(store)
    entity = account_entity(OnEventTypes({"Withdrawn"}))
    repo = Repository(troubled, entity)
    await append_raw(store, "account-o", [Deposited(5), Withdrawn(2)])
    assert await repo.load("o") == Loaded(Account(3, False), 2)
    assert troubled.saves == []
    expect_saved(await repo.handle("o", Deposit(1)))  # a Withdrawn since the last snapshot
    assert troubled.saves == [3]
    expect_saved(await repo.handle("o", Deposit(1)))  # none since
    assert troubled.saves == [3]


# ------------------------------------------------------------------------------------ the decision loop


async def test_a_conflict_resyncs_with_only_the_events_missed(store: ConformantStore) -> None:
    entity = account_entity(EveryN(3))
    await append_raw(store, "account-x", [Deposited(1), Deposited(2), Deposited(3), Deposited(4)])
    await store.save_snapshot(entity.snapshot_key("x"), 3, to_json_value(Account(6, False)), 1)
    troubled = Troubled(store)
    troubled.race = 2  # another writer appends two events between the load and the append
    repo = Repository(troubled, entity)
    saved = expect_saved(await repo.handle("x", Close()))  # decided again: the payout is 2010, not 10
    assert saved.retries == 1
    assert (saved.seq, saved.events, saved.state) == (8, (Withdrawn(2010), Closed()), Account(0, True))
    assert troubled.loads == [(None, None)]  # the snapshot was read once, for the first load
    assert troubled.reads == [3, 4]  # the events after the snapshot, then only those after seq 4
    assert troubled.appends == 2
    assert troubled.saves == [8]
    assert await stored_events(store, "account-x") == [
        *(Deposited(a) for a in (1, 2, 3, 4)),
        Deposited(1000),
        Deposited(1000),
        Withdrawn(2010),
        Closed(),
    ]


async def test_a_command_is_decided_again_against_the_events_it_missed(store: ConformantStore) -> None:
    troubled = Troubled(store)
    troubled.race = 1
    repo = Repository(troubled, account_entity(retry=RetryPolicy(max_attempts=2, base_delay=0.001)))
    expect_saved(await repo.handle("y", Close()))  # the race is on the first append: Close is retried
    assert await stored_events(store, "account-y") == [Deposited(1000), Withdrawn(1000), Closed()]
    assert troubled.reads == [0, 0]


# ------------------------------------------------------------------------------------ bug 8: state_at(time)


def _at(times: Sequence[datetime], moment: datetime) -> int:
    """How many events the state at ``moment`` folds: those before the first one stamped later."""
    return next((i for i, t in enumerate(times) if t > moment), len(times))


async def _import(
    store: ConformantStore, stream: str, events: Sequence[AccountEvent], times: Sequence[datetime]
) -> None:
    head = len(await stored(store, stream))
    recorded = []
    for k, (event, moment) in enumerate(zip(events, times, strict=True)):
        data = CODEC.encode(event)
        recorded.append(
            RecordedEvent(stream, head + k + 1, 0, data.type, data.data, data.metadata, data.id, moment)
        )
    result = await store.import_events(stream, recorded)
    assert isinstance(result, Success), result


async def test_state_at_a_time_is_the_same_with_and_without_snapshots_when_the_clock_steps_back(
    store: ConformantStore,
) -> None:
    entity = account_entity(EveryN(2))
    key, stream = "t", "account-t"
    # Events stamped by a clock a day ahead of the one stamping the snapshots, and not in order.
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    hour = timedelta(hours=1)
    imported: list[AccountEvent] = [Deposited(1), Deposited(2), Deposited(4), Deposited(8), Withdrawn(3)]
    stamps = [base, base + 2 * hour, base + hour, base + 3 * hour, base + hour / 2]
    await _import(store, stream, imported, stamps)
    # Snapshots of the imported events, saved now: a day before the times of the events they cover.
    for seq in (2, 4):
        await store.save_snapshot(
            entity.snapshot_key(key), seq, to_json_value(account_decider.fold(imported[:seq])), 1
        )
    # Then commands whose events the store stamps now, before every imported one (a snapshot at 6).
    snapshotting = Repository(store, entity)
    for command in (Deposit(16), Deposit(32)):
        expect_saved(await snapshotting.handle(key, command))
    assert (await store.load_snapshot(entity.snapshot_key(key), 1)).unwrap().seq == 6
    records = await stored(store, stream)
    events = [CODEC.decode(r) for r in records]
    times = [r.time for r in records]
    assert times[:5] == stamps
    plain = Repository(store, account_entity())
    tick = timedelta(microseconds=1)
    moments = {times[0] - hour, datetime.now(UTC), base + 10 * hour}
    for t in times:
        moments |= {t - tick, t, t + tick}
    for moment in sorted(moments):
        count = _at(times, moment)
        expected = Loaded(account_decider.fold(events[:count]), count)
        assert await plain.state_at(key, time=moment) == expected, moment
        assert await snapshotting.state_at(key, time=moment) == expected, moment  # failed before the fix
        for seq in (1, 3, 4, 6):
            both = min(seq, count)
            at = Loaded(account_decider.fold(events[:both]), both)
            assert await snapshotting.state_at(key, seq=seq, time=moment) == at, (seq, moment)
            assert await plain.state_at(key, seq=seq, time=moment) == at, (seq, moment)


async def test_state_at_a_time_uses_a_snapshot_saved_after_that_time(store: ConformantStore) -> None:
    """A snapshot's own time does not matter, only its events': one saved later still covers them."""
    entity = account_entity(EveryN(100))
    events: list[AccountEvent] = [Deposited(a) for a in (1, 2, 3, 4)]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    times = [base + timedelta(minutes=k) for k in range(len(events))]
    await _import(store, "account-u", events, times)
    marker = Account(10**6, False)  # a state no replay gives: it shows when the snapshot is used
    await store.save_snapshot(entity.snapshot_key("u"), 3, to_json_value(marker), 1)  # saved now
    troubled = Troubled(store)
    repo = Repository(troubled, entity)
    assert await repo.state_at("u", time=times[3]) == Loaded(Account(marker.balance + 4, False), 4)
    assert await repo.state_at("u", time=times[2]) == Loaded(marker, 3)
    assert await repo.state_at("u", time=times[1]) == Loaded(account_decider.fold(events[:2]), 2)
    assert await repo.state_at("u", time=times[0] - timedelta(seconds=1)) == Loaded(
        account_decider.initial, 0
    )
