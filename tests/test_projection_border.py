"""Projections at the store's border: a failing store is never blamed on an event (issue 19).

The error policy of a :class:`Projector` (``Stop``, ``Retry``, ``DeadLetters``)
is for the *handler's* failures. When the read model's own write fails — the
checkpoint save of a :class:`CallbackReadModel`, a commit — the batch is not
re-handled event by event, nothing is dead-lettered, the error comes out as
:class:`StoreUnavailable`, and running the projector again does not hand an
event to a callback handler a second time. Errors of a store that fails its
reads come out of ``subscribe`` and ``Projector.run`` as themselves, never
wrapped in an ``ExceptionGroup``, also when they run in a task group.

Every test runs on asyncio and trio, against real stores (a memory store
whose checkpoint saves or reads fail on plan, and a SQLite file locked by
another connection).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from fault_proxy import FaultProxy, postgres_reply_done

from streamsrc.effect import RetryPolicy
from streamsrc.errors import ProjectionFailed, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import (
    CallbackReadModel,
    DeadLetter,
    DeadLetters,
    MemoryReadModel,
    OnError,
    Poll,
    Progress,
    Projection,
    ProjectionService,
    Projector,
    Retry,
    Stop,
    subscribe,
)
from streamsrc.store import EventStore, open_store
from streamsrc.store.base import Page, PageRequest
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

FAST_POLL = Poll(min_delay=0.001, max_delay=0.01)
POLICIES: list[OnError] = [
    Stop(),
    DeadLetters(),
    Retry(RetryPolicy(max_attempts=3, base_delay=0.0), then=DeadLetters()),
]


class FailingCheckpoints(MemoryStore):
    """A memory store whose checkpoint saves numbered (from 1) in ``failing`` raise ``error``."""

    def __init__(self, failing: Collection[int], error: Callable[[], Exception]) -> None:
        super().__init__()
        self.failing = set(failing)
        self.error = error
        self.saves = 0

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        self.saves += 1
        if self.saves in self.failing:
            raise self.error()
        await super().save_checkpoint(name, position, expected)


class FailingReads(MemoryStore):
    """A memory store whose reads of the log fail with ``StoreUnavailable`` once ``broken`` is set."""

    broken = False

    async def read_page(self, request: PageRequest) -> Page:
        if self.broken:
            raise StoreUnavailable("the database went away")
        return await super().read_page(request)

    async def last_position(self) -> int:
        if self.broken:
            raise StoreUnavailable("the database went away")
        return await super().last_position()


def locked() -> Exception:
    return StoreUnavailable("database is locked")


def raw_locked() -> Exception:
    return sqlite3.OperationalError("database is locked")  # a checkpoint store that lets a driver error out


async def write(store: EventStore, n: int, poison: Sequence[int] = ()) -> None:
    for i in range(1, n + 1):
        result = await store.append(f"s-{i % 3}", [EventData("Noted", {"poison": i in poison})])
        assert result.unwrap()


class Counting:
    """A callback handler counting how often each event was handed to it (and finished)."""

    def __init__(self, poison: Sequence[int] = ()) -> None:
        self.calls: Counter[int] = Counter()
        self.poison = set(poison)

    async def __call__(self, events: Sequence[RecordedEvent]) -> None:
        for e in events:
            if e.position in self.poison:
                raise ValueError(f"poison at {e.position}")
        self.calls.update(e.position for e in events)


async def until_done(projector: Projector[Any], limit: int = 20) -> list[StoreUnavailable]:
    """``catch_up`` again after each ``StoreUnavailable``, as a supervisor would: the errors seen."""
    errors: list[StoreUnavailable] = []
    for _ in range(limit):
        try:
            await projector.catch_up()
            return errors
        except StoreUnavailable as exc:
            errors.append(exc)
    raise AssertionError(f"still failing after {limit} runs: {errors[-1]!r}")


# ------------------------------------------------------------------------ bug 2: the checkpoint fails


@pytest.mark.parametrize("on_error", POLICIES, ids=["stop", "dead-letters", "retry"])
@pytest.mark.parametrize("error", [locked, raw_locked], ids=["store-unavailable", "driver-error"])
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
@pytest.mark.parametrize("fails", [1, 3])
async def test_a_failing_checkpoint_save_is_a_store_failure_not_the_events(
    on_error: OnError, error: Callable[[], Exception], batch_size: int, fails: int
) -> None:
    store = FailingCheckpoints(range(1, fails + 1), error)
    await write(store, 10)
    handler = Counting()
    model = CallbackReadModel(checkpoints=store)
    projector = Projector(store, Projection("p", handler), model, batch_size=batch_size, on_error=on_error)

    errors = await until_done(projector)

    assert len(errors) == fails  # each failed save came out, typed, and ended the run
    assert all(type(e) is StoreUnavailable for e in errors)
    assert handler.calls == Counter(range(1, 11))  # every event handed to the handler exactly once
    assert await model.dead_letters() == []
    assert await store.load_checkpoint("p") == 10


@pytest.mark.parametrize("error", [locked, raw_locked], ids=["store-unavailable", "driver-error"])
async def test_a_dead_letter_whose_checkpoint_save_fails_is_kept_and_told_once(
    error: Callable[[], Exception],
) -> None:
    store = FailingCheckpoints({2}, error)  # save 1 is event 1's, save 2 the dead letter's (event 2)
    await write(store, 3, poison=[2])
    handler = Counting(poison=[2])
    told: list[DeadLetter] = []
    model = CallbackReadModel(checkpoints=store, on_dead_letter=told.append)
    projector = Projector(store, Projection("p", handler), model, batch_size=1, on_error=DeadLetters())

    errors = await until_done(projector)

    assert [type(e) for e in errors] == [StoreUnavailable]
    assert handler.calls == Counter([1, 3])
    assert [d.position for d in told] == [2]  # told once, though its checkpoint failed once
    assert [d.position for d in await model.dead_letters()] == [2]
    assert await store.load_checkpoint("p") == 3


async def test_a_handler_that_raises_store_unavailable_itself_is_the_handlers_failure() -> None:
    """The rule is who failed, not what was raised: the handler's own errors go to the policy."""
    store = MemoryStore()
    await write(store, 3)

    async def handler(events: Sequence[RecordedEvent]) -> None:
        if any(e.position == 2 for e in events):
            raise StoreUnavailable("the search index is down")

    model = CallbackReadModel(checkpoints=store)
    await Projector(store, Projection("p", handler), model, on_error=DeadLetters()).catch_up()
    assert [(d.position, d.error) for d in await model.dead_letters()] == [
        (2, "StoreUnavailable: the search index is down")
    ]
    with pytest.raises(ProjectionFailed) as failed:
        await Projector(store, Projection("q", handler), CallbackReadModel(checkpoints=store)).catch_up()
    assert isinstance(failed.value.cause, StoreUnavailable)


@pytest.mark.parametrize("on_error", POLICIES, ids=["stop", "dead-letters", "retry"])
@pytest.mark.parametrize("batch_size", [1, 1000])
async def test_a_locked_sqlite_store_fails_the_checkpoint_not_the_event(
    on_error: OnError, batch_size: int, tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}?busy_timeout=0.05") as store:
        await write(store, 5)
        other = sqlite3.connect(path, isolation_level=None)
        calls: Counter[int] = Counter()

        def handler(events: Sequence[RecordedEvent]) -> None:
            if not calls:  # another writer takes the file while the first batch is handled
                other.execute("BEGIN IMMEDIATE")
            calls.update(e.position for e in events)

        model = CallbackReadModel(checkpoints=store)
        projector = Projector(
            store, Projection("p", handler), model, batch_size=batch_size, on_error=on_error
        )
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                await projector.catch_up()
            assert await model.dead_letters() == []
            assert await store.load_checkpoint("p") == 0
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await projector.catch_up()).lag == 0
        assert calls == Counter(range(1, 6))  # each event handled once, the locked batch included
        assert await model.dead_letters() == []
        assert await store.load_checkpoint("p") == 5


async def test_status_counts_the_dead_letters() -> None:
    store = MemoryStore()
    await write(store, 6, poison=[2, 5])
    model = MemoryReadModel(0)
    projection = Projection("p", lambda n, events: n + sum(1 // (1 - e.data["poison"]) for e in events))
    projector = Projector(store, projection, model, batch_size=4, on_error=DeadLetters())
    seen: list[Progress] = []
    status = await projector.catch_up(on_progress=seen.append)
    assert (status.position, status.dead_letters) == (6, 2)
    assert seen[-1].dead_letters == 2
    assert model.state == 4
    other = await Projector(store, Projection("q", projection.handler), model).status()
    assert other.dead_letters == 0  # counted per projection


# ------------------------------------------------------------------ bug 9: the error, not a group


Run = Callable[[EventStore], Awaitable[object]]


async def _service(store: EventStore) -> None:
    projection = Projection("p", lambda n, events: n + len(events))
    async with ProjectionService(store, projection, MemoryReadModel(0), poll=FAST_POLL):
        await anyio.sleep_forever()


RUNS: dict[str, Run] = {
    "subscribe": lambda store: subscribe(store, poll=FAST_POLL).drain(),
    "subscribe-filtered": lambda store: subscribe(store, types={"Noted"}, poll=FAST_POLL).drain(),
    "run": lambda store: Projector(
        store, Projection("p", lambda n, events: n + len(events)), MemoryReadModel(0), poll=FAST_POLL
    ).run(),
    "run-max-wait": lambda store: Projector(
        store,
        Projection("p", lambda n, events: n + len(events)),
        MemoryReadModel(0),
        max_wait=0.005,
        poll=FAST_POLL,
    ).run(on_progress=lambda p: None),
    "run-callback": lambda store: Projector(
        store, Projection("p", Counting()), CallbackReadModel(checkpoints=MemoryStore()), poll=FAST_POLL
    ).run(),
    "service": _service,
}


@pytest.mark.parametrize("how", RUNS)
async def test_a_failing_store_ends_a_live_run_with_the_error_itself_in_a_task_group(how: str) -> None:
    store = FailingReads()
    await write(store, 5)

    async def break_later() -> None:
        await anyio.sleep(0.02)
        store.broken = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(break_later)
        with pytest.raises(StoreUnavailable, match="went away"):
            await RUNS[how](store)


@pytest.mark.parametrize("how", RUNS)
async def test_a_failing_store_ends_a_live_run_started_as_a_task_with_the_error_itself(how: str) -> None:
    store = FailingReads()
    await write(store, 5)
    caught: list[BaseException] = []

    async def run() -> None:
        try:
            await RUNS[how](store)
        except BaseException as exc:
            caught.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.02)
        store.broken = True
    assert [type(e) for e in caught] == [StoreUnavailable]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["subscribe", "run"])
async def test_postgres_going_away_ends_a_live_run_with_the_error_itself(
    postgres_database: str, how: str
) -> None:
    """The case of issue 19 (bug 9): PostgreSQL goes away under a live subscription or projector."""
    server = urlsplit(postgres_database)
    assert server.hostname is not None
    assert server.port is not None
    with FaultProxy((server.hostname, server.port), postgres_reply_done) as proxy:
        user, _ = server.netloc.rsplit("@", 1)
        url = urlunsplit(server._replace(netloc=f"{user}@127.0.0.1:{proxy.port}"))
        async with open_store(url) as store:
            await write(store, 5)

            async def go_away() -> None:
                await anyio.sleep(0.2)
                proxy.refuse()
                proxy.drop_all()

            async with anyio.create_task_group() as tg:
                tg.start_soon(go_away)
                with pytest.raises(StoreUnavailable):
                    await RUNS[how](store)
