"""Log records of the library: logger names, levels and structured ``extra`` fields (issue 20)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from returns.result import Failure, Result, Success

from streamsrc.codec import Codec
from streamsrc.entity import Decider, Entity, Rejection, Repository
from streamsrc.errors import StoreUnavailable
from streamsrc.events import EventData
from streamsrc.projections import (
    DeadLetters,
    MemoryLeases,
    MemoryReadModel,
    Progress,
    Projection,
    ProjectionWorker,
    Projector,
    Retry,
)
from streamsrc.projections._leases import Fence
from streamsrc.store.base import Page, PageRequest
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


def records(caplog: pytest.LogCaptureFixture, logger: str, level: int | None = None) -> list[Any]:
    return [r for r in caplog.records if r.name == logger and (level is None or r.levelno == level)]


def test_the_library_adds_no_handlers() -> None:
    for name in (
        "streamsrc",
        "streamsrc.entity",
        "streamsrc.store.base",
        "streamsrc.projections._runner",
        "streamsrc.projections._workers",
    ):
        assert logging.getLogger(name).handlers == []


# -- commands


codec = Codec()


@dataclass(frozen=True)
class Add:
    n: int


@codec.register()
@dataclass(frozen=True)
class Added:
    n: int


def decide(command: Add, state: int) -> Result[list[Added], Rejection]:
    return Success([Added(command.n)])


def evolve(state: int, event: Added) -> int:
    return state + event.n


counter: Entity[str, Add, Added, int] = Entity(
    "counter", Decider(0, evolve, decide), codec, stream=lambda key: f"counter-{key}"
)


class Racing(MemoryStore):
    """Another writer appends to the stream just before each of the first ``n`` appends."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.races = n

    async def append(self, stream: str, events: Sequence[EventData], expected: Any = None, **kw: Any) -> Any:
        if self.races > 0:
            self.races -= 1
            await super().append(stream, [EventData("Added", {"n": 100})])
        return await super().append(stream, events, expected=expected)


async def test_a_conflicting_command_logs_each_retry_and_the_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "streamsrc")
    store = Racing(2)
    result = await Repository(store, counter).handle("c1", Add(1))
    assert isinstance(result, Success)
    retries = records(caplog, "streamsrc.entity", logging.WARNING)
    assert len(retries) == 2
    first = retries[0]
    assert (first.entity, first.stream, first.command, first.error) == (
        "counter",
        "counter-c1",
        "Add",
        "WrongExpectedVersion",
    )
    assert [r.attempt for r in retries] == [1, 2]
    assert [r.seq for r in retries] == [0, 1]

    caplog.clear()
    store = Racing(100)
    result = await Repository(store, counter).handle("c2", Add(1))
    assert isinstance(result, Failure)
    last = records(caplog, "streamsrc.entity", logging.WARNING)[-1]
    assert "retries exhausted" in last.getMessage()
    assert last.attempt == counter.retry.max_attempts


class Down(MemoryStore):
    """A store whose database is down: appends and reads end in ``StoreUnavailable``."""

    def __repr__(self) -> str:
        return "<Down postgresql://app:***@db/app>"

    async def insert_batch(self, *args: Any, **kw: Any) -> Any:
        raise StoreUnavailable("connection refused by postgresql://app:***@db/app")

    reads = False

    async def read_page(self, request: PageRequest) -> Page:
        if self.reads:
            return await super().read_page(request)
        raise StoreUnavailable("connection refused by postgresql://app:***@db/app")


async def test_a_store_failure_is_logged_once_without_a_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "streamsrc")
    store = Down()
    result = await store.append("s-1", [EventData("Noted", {})], expected=0)
    assert isinstance(result.failure(), StoreUnavailable)
    (append,) = records(caplog, "streamsrc.store.base", logging.WARNING)
    assert (append.operation, append.stream, append.seq, append.error) == (
        "append",
        "s-1",
        0,
        "StoreUnavailable",
    )
    caplog.clear()
    with pytest.raises(StoreUnavailable):
        await store.read("s-1").to_list()
    (read,) = records(caplog, "streamsrc.store.base", logging.WARNING)
    assert (read.operation, read.stream) == ("read", "s-1")
    assert "pw" not in caplog.text
    assert "***" in caplog.text


async def test_a_command_retrying_an_unavailable_store_logs_each_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "streamsrc.entity")
    store = Down()
    store.reads = True
    result = await Repository(store, counter).handle("c1", Add(1))
    assert isinstance(result.failure(), StoreUnavailable)
    tries = records(caplog, "streamsrc.entity", logging.WARNING)
    assert [r.attempt for r in tries] == list(range(1, len(tries) + 1))
    assert tries[-1].retrying is False
    assert tries[0].stream == "counter-c1"


# -- projections

RUNNER = "streamsrc.projections._runner"


def fails_on_bad(state: list[int], events: Sequence[Any]) -> list[int]:
    for e in events:
        if e.type == "Bad":
            raise ValueError("bad event")
    return [*state, *(e.seq for e in events)]


async def _store_with_a_bad_event() -> MemoryStore:
    store = MemoryStore()
    await store.append("a", [EventData("Good", {}), EventData("Bad", {}), EventData("Good", {})])
    return store


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_projection_logs_start_catch_up_retries_dead_letters_and_stop(
    caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    caplog.set_level(logging.DEBUG, "streamsrc")
    store = await _store_with_a_bad_event()
    from streamsrc.effect import RetryPolicy

    on_error = Retry(RetryPolicy(max_attempts=3, base_delay=0.0001), then=DeadLetters())
    model: MemoryReadModel[list[int]] = MemoryReadModel([])
    projector = Projector(
        store, Projection("p", fails_on_bad), model, on_error=on_error, concurrency=concurrency
    )
    seen: list[Progress] = []
    status = await projector.catch_up(on_progress=seen.append)
    assert status.dead_letters == 1
    assert seen[-1].dead_letters == 1
    info = records(caplog, RUNNER, logging.INFO)
    messages = [r.getMessage() for r in info]
    assert "starts at position 0" in messages[0]
    assert "stops at position 3" in messages[-1]
    assert any("caught up" in m for m in messages)
    assert all(r.projection == "p" for r in info)
    assert info[-1].dead_letters == 1
    assert info[-1].position == 3
    warnings = records(caplog, RUNNER, logging.WARNING)
    *retries, dead = warnings
    attempts = [r.attempt for r in retries]
    assert attempts
    assert attempts == list(range(attempts[0], attempts[0] + len(attempts)))
    assert "dead letter" in dead.getMessage()
    for r in warnings:
        assert (r.projection, r.stream, r.seq, r.position, r.event_type, r.error) == (
            "p",
            "a",
            2,
            2,
            "Bad",
            "ValueError",
        )


async def test_a_projection_logs_batches_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    for n in range(5):
        await store.append("s", [EventData("Noted", {"n": n})])
    count = Projection("count", lambda n, events: n + len(events))
    caplog.set_level(logging.INFO, "streamsrc")
    await Projector(store, count, MemoryReadModel(0), batch_size=2).catch_up()
    assert not records(caplog, RUNNER, logging.DEBUG)
    caplog.clear()
    caplog.set_level(logging.DEBUG, "streamsrc")
    await Projector(store, Projection("count2", count.handler), MemoryReadModel(0), batch_size=2).catch_up()
    debug = records(caplog, RUNNER, logging.DEBUG)
    assert debug
    assert all(r.projection == "count2" for r in debug)


async def test_progress_counts_dead_letters_under_concurrency() -> None:
    store = MemoryStore()
    for s in range(8):
        await store.append(f"s{s}", [EventData("Bad" if s % 2 else "Good", {}) for _ in range(3)])
    model: MemoryReadModel[list[int]] = MemoryReadModel([])
    projector = Projector(
        store, Projection("p", fails_on_bad), model, on_error=DeadLetters(), concurrency=4, batch_size=2
    )
    seen: list[Progress] = []
    status = await projector.catch_up(on_progress=seen.append)
    assert seen[-1].dead_letters == 12 == status.dead_letters
    assert [p.dead_letters for p in seen] == sorted(p.dead_letters for p in seen)


# -- leases

WORKERS = "streamsrc.projections._workers"


class Fickle(MemoryLeases):
    """Leases that stop renewing once ``lose`` is set (another worker took them over)."""

    lose = False

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        return False if self.lose else await super().renew(fence, owner, ttl)


async def test_lease_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "streamsrc")
    store, leases = MemoryStore(), Fickle()
    count = Projection("count", lambda total, events: total + len(events))
    worker = ProjectionWorker(
        store, count, MemoryReadModel(0), leases, partitions=2, owner="w1", lease_ttl=0.15
    )

    async def lose_later() -> None:
        await anyio.sleep(0.12)
        leases.lose = True
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lose_later)
        await worker.run()
    lease: list[Any] = [r for r in records(caplog, WORKERS) if hasattr(r, "lease")]
    changes = [(r.lease, r.partition, r.levelno) for r in lease]
    assert ("acquired", 0, logging.INFO) in changes
    assert ("acquired", 1, logging.INFO) in changes
    assert ("lost", 0, logging.WARNING) in changes
    lost = next(r for r in lease if r.lease == "lost")
    assert (lost.projection, lost.owner, lost.partitions) == ("count", "w1", 2)
    assert lost.token >= 1
