"""Cancellation safety: an operation cancelled at any await point leaves no trace.

Each operation (appends, imports, reads consumed partway and whole, ``latest``,
``head``, snapshots, checkpoints, ``Repository.handle``, a ``Projector`` batch, a
live subscription, ``migrate.copy``, a ``bracket`` around a read) runs inside
a cancel scope that another task cancels:

* in-process stores (memory, SQLite; asyncio and trio): after ``k`` scheduler
  rounds, for ``k = 0, 1, 2, ...`` (every ``k`` up to :data:`DENSE`, then
  growing by a quarter) until the operation completes before the cancel;
* thread- and network-based stores (SQLite, PostgreSQL, DynamoDB on moto):
  also after a random delay drawn over the operation's measured duration
  (seeded).

After every cancellation: a batch is in the log whole or not at all, and a
retry with the same ids is idempotent; the store still takes an append at
the right expected version; and nothing leaked: the event loop's tasks
(``asyncio.all_tasks()``, trio's task tree), the stores' threads, the open
descriptors of the SQLite file (``/proc/self/fd``), PostgreSQL sessions
(``pg_stat_activity``, seen from a separate connection, against what the
store's pool and connections hold, none left checked out), and sockets to
moto (``/proc/self/net/tcp``, against what the client's connector holds).
Read models never have their checkpoint ahead of their rows, and a bracket's
release runs exactly once. Closing a store while other tasks are in the
middle of operations ends them all (with a result or ``StoreUnavailable``),
tears no batch and leaves no thread, descriptor, session or socket open.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from leaks import client_sockets, eventually_equal, open_files, settle, task_names, threads
from returns.maybe import Some
from returns.result import Failure, Success
from store_urls import fresh_dynamodb_url, fresh_postgres_database

from streamsrc import Stream
from streamsrc.entity import Repository
from streamsrc.errors import StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.examples.accounts import Register, Update, users
from streamsrc.migrate import CopyFailed, copy
from streamsrc.projections import MemoryReadModel, Poll, Projection, Projector, subscribe
from streamsrc.store import open_store
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

DENSE = 40
"""Every number of scheduler rounds up to this is tried; beyond it, every quarter more."""

OVERDUE = 4.0
"""The round sweep ends when a trial's cancel came later than this many times the operation's
uncancelled duration (plus 50 ms): an operation waiting on a thread lets the loop spin through any
number of rounds, more on a loaded machine; a stuck operation fails its uncancelled runs instead."""

ROUNDS: dict[str, int | None] = {"memory": None, "sqlite": None, "postgres": 2, "dynamodb": 1}
"""Per store, how many round counts are tried (0, 1, ...): ``None``, until the operation completes.
PostgreSQL and DynamoDB spend their time waiting on the network, not in rounds: the first few
rounds cancel them with a request sent and its answer not yet read; random delays do the rest."""

DELAYS = {"memory": 0, "sqlite": 5, "postgres": 3, "dynamodb": 1}
"""Trials cancelled after a random delay (up to the operation's measured duration), per store."""

FAST = Poll(min_delay=0.002, max_delay=0.02)
"""How often a subscription looks again when nothing woke it (a store in another process)."""

LIMIT = 30.0
"""Seconds one test may take before it fails (a hang is a failure, not a stuck suite)."""

STARTUP = 120.0
"""Seconds the closing tests may take to get every worker going before they fail."""


# ------------------------------------------------------------------------------------------ the stores


@dataclass
class Target:
    """A store under test and the measures of everything it could leak."""

    name: str
    url: str
    tmp: Path
    store: Any = None
    monitor: Any = None  # PostgreSQL: a connection of the test's own, for pg_stat_activity
    port: int = 0  # DynamoDB: moto's port
    other_sockets: int = 0  # DynamoDB: sockets to moto open before the store was
    pools: list[Any] = field(default_factory=list)  # PostgreSQL: read models' pools, counted as held

    @property
    def file(self) -> str:
        return str(self.tmp / "events.db")

    async def counts(self) -> dict[str, object]:
        """What is open now: tasks, the stores' threads, and per store its files, sessions or sockets."""
        out: dict[str, object] = {"tasks": task_names(), "threads": threads()}
        if self.name == "sqlite":
            out["files"] = open_files(self.file)
        elif self.name == "postgres":
            out.update(await self._sessions())
        elif self.name == "dynamodb":
            out.update(self._sockets())
        return out

    async def _sessions(self) -> dict[str, object]:
        server = await self.monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        held, busy = 0, 0
        store = self.store
        if store is not None:
            for conn in (store._listener, store._own):
                held += conn is not None and not conn.is_closed()
            pools = [store._pool, *self.pools]
        else:
            pools = list(self.pools)
        for pool in pools:
            if pool is not None and not pool._closed:
                held += pool.get_size()
                busy += pool.get_size() - pool.get_idle_size()
        return {"sessions nobody holds": server - held, "connections checked out": busy}

    def _sockets(self) -> dict[str, object]:
        held, busy = 0, 0
        client = None if self.store is None else self.store._client
        if client is not None:
            for session in (client._endpoint.http_session._sessions or {}).values():
                connector = session.connector
                if connector is None or connector.closed:
                    continue
                held += sum(len(idle) for idle in connector._conns.values()) + len(connector._acquired)
                busy += len(connector._acquired)
        open_now = client_sockets(self.port) - self.other_sockets
        return {"sockets nobody holds": open_now - held, "connections checked out": busy}


def store_url(name: str, tmp_path: Path, database: str = "") -> str:
    """Small pages, so reads have several await points; one SQLite reader thread, so its connection
    (and its descriptors) exist once the first read ran."""
    if name == "memory":
        return "memory://?page_size=3"
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/events.db?page_size=3&readers=1"
    if name == "postgres":
        return f"{database}?page_size=3&pool_max=4"
    return fresh_dynamodb_url("page_size=3")


@asynccontextmanager
async def target_for(name: str, tmp_path: Path, *, open_it: bool = True) -> AsyncIterator[Target]:
    """The store ``name`` (opened unless ``open_it`` is false) with its measures."""
    async with AsyncExitStack() as stack:
        database = ""
        target = Target(name, "", tmp_path)
        if name == "postgres":
            import asyncpg

            database = await stack.enter_async_context(fresh_postgres_database())
            target.monitor = await asyncpg.connect(database)
            stack.push_async_callback(target.monitor.close)
        target.url = store_url(name, tmp_path, database)
        if name == "dynamodb":
            endpoint = dict(parse_qsl(urlsplit(target.url).query))["endpoint_url"]
            target.port = urlsplit(endpoint).port or 0
            target.other_sockets = client_sockets(target.port)
        if open_it:
            target.store = await stack.enter_async_context(open_store(target.url))
        yield target


STORES = ["memory", "sqlite", "postgres", "dynamodb"]
"""PostgreSQL and DynamoDB run on asyncio only (conftest.py deselects their trio runs)."""


# ---------------------------------------------------------------------------------- cancelling at k


async def cancelled_after_rounds(rounds: int, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
    """Run ``operation`` in a scope that a task started with it cancels after ``rounds`` scheduler
    rounds (0: at the operation's first await); whether it completed first, and its result."""
    outcome: list[Any] = []
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            outcome.append(await operation())

    async def cancel() -> None:
        for _ in range(rounds):
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        tg.start_soon(cancel)
    return (True, outcome[0]) if outcome else (False, None)


async def timed(
    spent: list[float],
    cancel: Callable[[Callable[[], Awaitable[Any]]], Awaitable[tuple[bool, Any]]],
    operation: Callable[[], Awaitable[Any]],
) -> tuple[bool, Any]:
    """``cancel(operation)``, adding the seconds it took to ``spent``."""
    started = time.perf_counter()
    try:
        return await cancel(operation)
    finally:
        spent.append(time.perf_counter() - started)


async def cancelled_after(seconds: float, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
    """``operation`` cancelled after ``seconds``; whether it completed first, and its result."""
    outcome: list[Any] = []
    with anyio.move_on_after(seconds):
        outcome.append(await operation())
    return (True, outcome[0]) if outcome else (False, None)


# ------------------------------------------------------------------------------------------ operations


class Operation:
    """One kind of operation: ``setup`` once, then per trial ``prepare`` (not cancelled), ``run``
    (cancelled somewhere) and ``verify`` (what must hold whether it completed or not)."""

    stores: Sequence[str] = STORES

    async def setup(self, t: Target) -> None:
        """Once, before the trials."""

    async def prepare(self, t: Target, trial: int) -> None:
        """Before each trial."""

    async def run(self, t: Target) -> Any:
        raise NotImplementedError

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        """After each trial (not cancelled)."""

    async def teardown(self, t: Target) -> None:
        """Once, after the trials."""


def ok(result: Any) -> Any:
    assert isinstance(result, Success), result
    return result.unwrap()


class Append(Operation):
    """``append`` of ``size`` new events to a new stream (expected 0): in whole or not at all, and a
    retry with the same ids writes them once."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def prepare(self, t: Target, trial: int) -> None:
        self.stream = f"append-{trial}"
        self.batch = [EventData("Added", {"trial": trial, "k": k}) for k in range(self.size)]

    async def run(self, t: Target) -> Any:
        return await t.store.append(self.stream, self.batch, expected=0)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        await whole_or_none(t, self.stream, self.batch, completed, result, self.retry)

    async def retry(self, t: Target) -> Any:
        return await t.store.append(self.stream, self.batch, expected=0)


class Import(Append):
    """``import_events`` of events recorded in another store: in whole or not at all, idempotent."""

    def __init__(self) -> None:
        super().__init__(4)

    async def prepare(self, t: Target, trial: int) -> None:
        await super().prepare(t, trial)
        source = MemoryStore()
        ok(await source.append(self.stream, self.batch))
        self.recorded = await source.read(self.stream).to_list()

    async def run(self, t: Target) -> Any:
        return await t.store.import_events(self.stream, self.recorded)

    async def retry(self, t: Target) -> Any:
        return await t.store.import_events(self.stream, self.recorded)


async def whole_or_none(
    t: Target,
    stream: str,
    batch: Sequence[EventData],
    completed: bool,
    result: Any,
    retry: Callable[[Target], Awaitable[Any]],
) -> None:
    ids = [e.id for e in batch]
    stored = [e.id for e in await t.store.read(stream).to_list()]
    assert stored in ([], ids), f"a torn batch: {len(stored)} of {len(ids)} events"
    if completed:
        assert stored == ids
        assert ok(result).last_seq == len(ids)
    head = await t.store.head()
    again = ok(await retry(t))
    assert again.last_seq == len(ids)
    if stored:
        assert await t.store.head() == head, "a retry of a stored batch wrote again"
    assert [e.id for e in await t.store.read(stream).to_list()] == ids


async def fill(t: Target, stream: str, n: int) -> list[RecordedEvent]:
    """``n`` events appended to ``stream`` in batches of 2 (uncancelled); the stream's events."""
    seq = (await t.store.latest(stream)).map(lambda e: e.seq).value_or(0)
    for k in range(0, n, 2):
        batch = [EventData("Filled", {"k": seq + j}) for j in range(k, min(n, k + 2))]
        seq = ok(await t.store.append(stream, batch, expected=seq)).last_seq
    events: list[RecordedEvent] = await t.store.read(stream).to_list()
    return events


class Read(Operation):
    """A read (``read``, ``read_all``, ``streams``) consumed partway (``take``) or whole: if it
    completes, it gave what the store holds."""

    def __init__(self, what: str, take: int | None) -> None:
        self.what, self.take = what, take
        if take is None:  # on moto (slow) the partial reads cover the same code
            self.stores = [s for s in STORES if s != "dynamodb"]

    def source(self, t: Target) -> Stream[Any]:
        if self.what == "read":
            return t.store.read("reads")  # type: ignore[no-any-return]
        if self.what == "read_all":
            return t.store.read_all(limit=40)  # type: ignore[no-any-return]
        return t.store.streams()  # type: ignore[no-any-return]

    async def setup(self, t: Target) -> None:
        await fill(t, "reads", 10)
        for n in range(4):
            await fill(t, f"reads-{n}", 1)

    def taken(self, t: Target) -> Stream[Any]:
        stream = self.source(t)
        return stream if self.take is None else stream.take(self.take)

    async def run(self, t: Target) -> Any:
        return await self.taken(t).to_list()

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        if completed:  # nothing was written since it ran
            assert result == await self.taken(t).to_list()


class Latest(Operation):
    async def setup(self, t: Target) -> None:
        self.expected = (await fill(t, "latest", 3))[-1]

    async def run(self, t: Target) -> Any:
        return await t.store.latest("latest")

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        if completed:
            assert result == Some(self.expected)


class Head(Operation):
    async def prepare(self, t: Target, trial: int) -> None:
        await fill(t, "head", 1)
        self.expected = await t.store.head()

    async def run(self, t: Target) -> Any:
        return await t.store.head()

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        if completed:
            assert result == self.expected


class SaveSnapshot(Operation):
    """A snapshot is saved whole or not at all: the latest one is always one that was saved."""

    async def setup(self, t: Target) -> None:
        self.states: dict[int, Any] = {}

    async def prepare(self, t: Target, trial: int) -> None:
        self.seq = trial + 1
        self.states[self.seq] = {"trial": trial, "items": [f"item-{trial}-{k}" for k in range(20)]}

    async def run(self, t: Target) -> Any:
        await t.store.save_snapshot("snap", self.seq, self.states[self.seq], 1)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        found = await t.store.load_snapshot("snap", 1)
        if completed:
            assert found.unwrap().seq == self.seq
        if isinstance(found, Some):
            snapshot = found.unwrap()
            assert snapshot.state == self.states[snapshot.seq], "a torn snapshot"


class LoadSnapshot(Operation):
    async def setup(self, t: Target) -> None:
        await t.store.save_snapshot("snap", 7, {"n": 7}, 1)

    async def run(self, t: Target) -> Any:
        return await t.store.load_snapshot("snap", 1)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        if completed:
            snapshot = result.unwrap()
            assert (snapshot.seq, snapshot.state) == (7, {"n": 7})


class SaveCheckpoint(Operation):
    """A checkpoint is the new value or the previous one, nothing else."""

    async def setup(self, t: Target) -> None:
        self.previous = 0

    async def prepare(self, t: Target, trial: int) -> None:
        self.previous = await t.store.load_checkpoint("cp")  # a cancelled save may have landed late
        self.position = trial + 1

    async def run(self, t: Target) -> Any:
        await t.store.save_checkpoint("cp", self.position)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        now = await t.store.load_checkpoint("cp")
        assert now in ((self.position,) if completed else (self.previous, self.position)), now


class LoadCheckpoint(Operation):
    async def setup(self, t: Target) -> None:
        await t.store.save_checkpoint("cp", 42)

    async def run(self, t: Target) -> Any:
        return await t.store.load_checkpoint("cp")

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        if completed:
            assert result == 42


class Handle(Operation):
    """``Repository.handle``: the command's events are in whole or not at all, and handling it again
    gives the state it asked for, with its events written once."""

    async def setup(self, t: Target) -> None:
        self.repository = Repository(t.store, users)

    async def prepare(self, t: Target, trial: int) -> None:
        self.key = f"u{trial}"
        ok(await self.repository.handle(self.key, Register(f"user{trial}", "Ada", "ada@example.com")))
        self.command = Update(name=f"Ada {trial}", email=f"ada{trial}@example.com")  # two events

    async def run(self, t: Target) -> Any:
        return await self.repository.handle(self.key, self.command)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        stream = users.stream(self.key)
        types = [e.type for e in await t.store.read(stream).to_list()]
        assert len(types) in (1, 3), f"a torn command: {types}"
        if completed:
            assert len(ok(result).events) == 2
            assert len(types) == 3
        again = ok(await self.repository.handle(self.key, self.command))
        # On a network store a cancelled append that reached the server may still commit after the
        # read above: then handling again finds the change made and writes nothing.
        assert len(again.events) in ((0,) if len(types) == 3 else (0, 2))
        assert (await self.repository.load(self.key)).state.name == self.command.name
        assert len(await t.store.read(stream).to_list()) == 3


def _positions(state: tuple[int, ...], events: Sequence[RecordedEvent]) -> tuple[int, ...]:
    return state + tuple(e.position for e in events)


class Project(Operation):
    """A ``Projector`` catching up in batches of 2: the model's checkpoint is never ahead of its rows,
    and no event is applied twice (its rows are exactly the events up to its checkpoint)."""

    def __init__(self, model: str) -> None:
        self.model_kind = model
        self.stores = {"memory": STORES, "sqlite": ["memory", "sqlite"], "postgres": ["postgres"]}[model]

    async def setup(self, t: Target) -> None:
        self.stack = AsyncExitStack()
        model: Any
        if self.model_kind == "memory":
            model = MemoryReadModel[tuple[int, ...]](())
            projection: Projection[Any] = Projection("p", _positions)
        elif self.model_kind == "sqlite":
            from streamsrc.projections.sqlite import SqliteReadModel

            schema = "CREATE TABLE IF NOT EXISTS seen (position INTEGER PRIMARY KEY)"
            model = await self.stack.enter_async_context(SqliteReadModel(str(t.tmp / "views.db"), schema))

            def insert(conn: Any, events: Sequence[RecordedEvent]) -> None:
                conn.executemany("INSERT INTO seen VALUES (?)", [(e.position,) for e in events])

            projection = Projection("p", insert)
        else:
            from streamsrc.projections.postgres import PostgresReadModel

            schema = "CREATE TABLE IF NOT EXISTS seen (position BIGINT PRIMARY KEY)"
            url = t.url.split("?")[0]
            model = await self.stack.enter_async_context(PostgresReadModel(url, schema, pool_max=2))
            t.pools.append(model._pool)

            async def insert_pg(conn: Any, events: Sequence[RecordedEvent]) -> None:
                await conn.executemany("INSERT INTO seen VALUES ($1)", [(e.position,) for e in events])

            projection = Projection("p", insert_pg)
        self.model = model
        self.projector = Projector(t.store, projection, model, batch_size=2)

    async def checkpoint_and_rows(self) -> tuple[int, list[int]]:
        """The model's checkpoint and rows, read together (a cancelled commit sent to PostgreSQL may
        still land: two reads could see it between them)."""
        if self.model_kind == "memory":
            return await self.model.load_position("p"), list(self.model.state)
        if self.model_kind == "sqlite":

            def read(conn: Any) -> tuple[int, list[int]]:
                row = conn.execute("SELECT position FROM streamsrc_projections WHERE name = 'p'").fetchone()
                rows = [r[0] for r in conn.execute("SELECT position FROM seen ORDER BY position")]
                return (row[0] if row else 0), rows

            return await self.model.run(read)  # type: ignore[no-any-return]
        [(position, rows)] = await self.model.query(
            "SELECT (SELECT position FROM streamsrc_projections WHERE name = 'p'), "
            "array(SELECT position FROM seen ORDER BY position)"
        )
        return position or 0, list(rows)

    async def prepare(self, t: Target, trial: int) -> None:
        await fill(t, f"projected-{trial % 3}", 5)

    async def run(self, t: Target) -> Any:
        return await self.projector.catch_up()

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        checkpoint, rows = await self.checkpoint_and_rows()
        log = [e.position for e in await t.store.read_all().to_list()]
        assert rows == [p for p in log if p <= checkpoint], "checkpoint and rows disagree"
        if completed:
            assert result.position == checkpoint == log[-1]

    async def teardown(self, t: Target) -> None:
        await self.stack.aclose()
        t.pools.clear()


class Subscribe(Operation):
    """A live subscription taking three events that another task appends one at a time while it
    waits: it gets them, in order, and its reads leave nothing behind."""

    async def prepare(self, t: Target, trial: int) -> None:
        self.stream = f"live-{trial}"
        self.start = await t.store.head()

    async def run(self, t: Target) -> Any:
        async def write() -> None:
            for n in range(3):
                await anyio.lowlevel.checkpoint()
                ok(await t.store.append(self.stream, [EventData("Live", {"n": n})], expected=n))

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            got = await subscribe(t.store, after=self.start, poll=FAST).take(3).to_list()
        return got  # noqa: RET504 (returned once the writer is done too)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        written = [e.data["n"] for e in await t.store.read(self.stream).to_list()]
        assert written == list(range(len(written)))
        if completed:
            assert [(e.stream, e.data["n"]) for e in result] == [(self.stream, n) for n in range(3)]


class Copy(Operation):
    """``migrate.copy`` of a memory store's log into the store: every stream copied is a prefix of
    its source, the checkpoint is never ahead of what was copied, and a resumed copy completes it."""

    async def prepare(self, t: Target, trial: int) -> None:
        self.source = MemoryStore()
        self.checkpoint = f"copy-{trial}"
        for s in range(3):
            for k in range(3):
                event = EventData("Copied", {"s": s, "k": k})
                ok(await self.source.append(f"copy-{trial}-{s}", [event, EventData("Copied", {})]))
        self.log = await self.source.read_all().to_list()

    async def run(self, t: Target) -> Any:
        return await copy(self.source, t.store, checkpoint=self.checkpoint, batch_size=3)

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        position = await t.store.load_checkpoint(self.checkpoint)
        for name in {e.stream for e in self.log}:
            copied = [e.id for e in await t.store.read(name).to_list()]
            source = [e.id for e in self.log if e.stream == name]
            assert copied == source[: len(copied)], f"{name}: not a prefix of its source"
            below = [e.id for e in self.log if e.stream == name and e.position <= position]
            assert copied[: len(below)] == below, "the checkpoint is ahead of what was copied"
        if completed:
            assert result.done
            assert position == self.log[-1].position
        await copy(self.source, t.store, checkpoint=self.checkpoint, batch_size=3)
        for name in {e.stream for e in self.log}:
            copied = [e.id for e in await t.store.read(name).to_list()]
            assert copied == [e.id for e in self.log if e.stream == name]


class Bracket(Operation):
    """A ``Stream.bracket`` resource around a store read (taken partway or whole): released exactly
    once, whatever point the cancellation hit."""

    def __init__(self, take: int | None) -> None:
        self.take = take
        if take is None:  # on moto (slow) the partial read covers the same code
            self.stores = [s for s in STORES if s != "dynamodb"]

    async def setup(self, t: Target) -> None:
        await fill(t, "bracketed", 8)
        self.acquired: list[int] = []
        self.released: list[int] = []
        self.ids = itertools.count()

    async def acquire(self) -> int:
        await anyio.lowlevel.checkpoint()
        n = next(self.ids)
        self.acquired.append(n)
        return n

    async def release(self, n: int) -> None:
        await anyio.lowlevel.checkpoint()
        self.released.append(n)

    async def run(self, t: Target) -> Any:
        reads = Stream.bracket(self.acquire, self.release).flat_map(lambda _: t.store.read("bracketed"))
        return await (reads if self.take is None else reads.take(self.take)).to_list()

    async def verify(self, t: Target, completed: bool, result: Any) -> None:
        assert Counter(self.released) == Counter(self.acquired)
        assert len(set(self.released)) == len(self.released), "a release ran twice"
        if completed:
            assert len(result) == (8 if self.take is None else self.take)


OPERATIONS: dict[str, Callable[[], Operation]] = {
    "append one": lambda: Append(1),
    "append batch": lambda: Append(5),
    "import_events": Import,
    "read partway": lambda: Read("read", 4),
    "read whole": lambda: Read("read", None),
    "read_all partway": lambda: Read("read_all", 5),
    "read_all whole": lambda: Read("read_all", None),
    "streams partway": lambda: Read("streams", 2),
    "streams whole": lambda: Read("streams", None),
    "latest": Latest,
    "head": Head,
    "save_snapshot": SaveSnapshot,
    "load_snapshot": LoadSnapshot,
    "save_checkpoint": SaveCheckpoint,
    "load_checkpoint": LoadCheckpoint,
    "Repository.handle": Handle,
    "Projector into MemoryReadModel": lambda: Project("memory"),
    "Projector into SqliteReadModel": lambda: Project("sqlite"),
    "Projector into PostgresReadModel": lambda: Project("postgres"),
    "live subscribe": Subscribe,
    "migrate.copy": Copy,
    "bracket around a partial read": lambda: Bracket(3),
    "bracket around a whole read": lambda: Bracket(None),
}


async def usable(t: Target) -> None:
    """The store takes an append at the right expected version (and refuses one at a wrong one)."""
    seq = (await t.store.latest("probe")).map(lambda e: e.seq).value_or(0)
    assert isinstance(await t.store.append("probe", [EventData("Probed", {})], expected=seq + 1), Failure)
    assert ok(await t.store.append("probe", [EventData("Probed", {})], expected=seq)).last_seq == seq + 1


@dataclass
class Tally:
    cancelled: int = 0
    completed: int = 0
    rounds: list[int] = field(default_factory=list)


async def trial(
    t: Target,
    op: Operation,
    number: int,
    baseline: dict[str, object],
    cancel: Callable[[Callable[[], Awaitable[Any]]], Awaitable[tuple[bool, Any]]],
    tally: Tally,
    what: str,
) -> bool:
    await op.prepare(t, number)
    completed, result = await cancel(lambda: op.run(t))
    tally.completed += completed
    tally.cancelled += not completed
    await op.verify(t, completed, result)
    await usable(t)
    now = await eventually_equal(t.counts, baseline)
    assert now == baseline, f"left behind after a cancel at {what}: {now} (before: {baseline})"
    return completed


CASES = [
    pytest.param(store, name, id=f"{store}-{name.replace(' ', '_')}")
    for name, make in OPERATIONS.items()
    for store in make().stores
]


@pytest.mark.parametrize(("store_name", "operation"), CASES)
async def test_an_operation_cancelled_at_any_point_leaves_no_trace(
    store_name: str, operation: str, tmp_path: Path
) -> None:
    op = OPERATIONS[operation]()
    with anyio.fail_after(LIMIT):
        async with target_for(store_name, tmp_path, open_it=False) as t:
            closed = await t.counts()
            async with open_store(t.url) as t.store:
                await sweep(t, op, store_name, operation)
            t.store = None
            after = await eventually_equal(t.counts, closed)
            assert after == closed, f"left open after the store closed: {after} (before it opened: {closed})"


async def sweep(t: Target, op: Operation, store_name: str, operation: str) -> Tally:
    """Trials of ``op`` cancelled after 0, 1, 2, ... scheduler rounds (memory, SQLite: until one
    completes), then after random delays (thread- and network-based stores)."""
    await op.setup(t)
    number = itertools.count()
    # Runs uncancelled: every connection and thread it uses opened, and how long it takes once
    # they are (the shorter of two runs: the first may prepare statements, fill caches, ...).
    took = float("inf")
    for _ in range(2 if DELAYS[store_name] else 1):
        await op.prepare(t, next(number))
        started = time.perf_counter()
        result = await op.run(t)
        took = min(took, time.perf_counter() - started)
        await op.verify(t, True, result)
        await usable(t)
    await settle()
    baseline = await t.counts()
    tally = Tally()
    limit = ROUNDS[store_name]
    k = 0
    while limit is None or k < limit:
        tally.rounds.append(k)
        spent: list[float] = []
        if await trial(
            t,
            op,
            next(number),
            baseline,
            partial(timed, spent, partial(cancelled_after_rounds, k)),
            tally,
            f"round {k}",
        ):
            break
        if spent[0] > OVERDUE * took + 0.05:
            break  # cancelled later than the operation takes: later rounds cancel nothing new
        k = k + 1 if k < DENSE else k + k // 4
    assert tally.cancelled >= 1, "no trial was cancelled"
    rng = random.Random(f"{store_name}:{operation}")
    for _ in range(DELAYS[store_name]):
        delay = rng.uniform(0.0, took)
        await trial(
            t, op, next(number), baseline, partial(cancelled_after, delay), tally, f"{delay * 1e3:.3f} ms"
        )
    await op.teardown(t)
    return tally


# ------------------------------------------------------------------------ closing with work in flight

WORKERS = ("append", "read", "read_all", "subscribe", "snapshot", "checkpoint", "copy", "project", "handle")


async def close_while_busy(t: Target, workers: Sequence[str], rounds: int) -> None:
    """Open the store, start ``workers`` (each repeating one kind of operation), close the store
    ``rounds`` scheduler rounds after they all got going, and check what is left."""
    before = await t.counts()
    batches: dict[str, list[EventData]] = {}
    refused: list[str] = []
    going = [anyio.Event() for _ in workers]

    running: set[str] = set()

    async def repeat(w: int, kind: str, started: anyio.Event) -> None:
        running.add(f"{kind} {w}")
        try:
            await repeat_until_refused(w, kind, started)
        finally:
            running.discard(f"{kind} {w}")

    async def repeat_until_refused(w: int, kind: str, started: anyio.Event) -> None:
        store = t.store
        for n in itertools.count():
            try:
                if kind == "append":
                    batch = [EventData("Closing", {"n": n, "k": k}) for k in range(3)]
                    batches[f"closing-{w}-{n}"] = batch
                    result = await store.append(f"closing-{w}-{n}", batch, expected=0)
                    if isinstance(result, Failure):
                        assert isinstance(result.failure(), StoreUnavailable), result
                        raise result.failure()
                elif kind == "read":
                    await store.read("closing-0-0").to_list()
                elif kind == "read_all":
                    await store.read_all(limit=20).to_list()
                elif kind == "subscribe":
                    started.set()
                    await subscribe(store, poll=FAST).drain()
                elif kind == "project":
                    started.set()
                    model = MemoryReadModel[tuple[int, ...]](())
                    await Projector(store, Projection(f"closing-{w}", _positions), model, batch_size=2).run()
                elif kind == "handle":
                    command = Register(f"closing{w}", "Ada", "ada@example.com")
                    result = await Repository(store, users).handle(f"closing-{w}-{n}", command)
                    if isinstance(result, Failure):
                        assert isinstance(result.failure(), StoreUnavailable), result
                        raise result.failure()
                elif kind == "snapshot":
                    await store.save_snapshot(f"closing-{w}", n + 1, {"n": n}, 1)
                    await store.load_snapshot(f"closing-{w}", 1)
                elif kind == "checkpoint":
                    await store.save_checkpoint(f"closing-{w}", n)
                    await store.load_checkpoint(f"closing-{w}")
                else:
                    source = MemoryStore()
                    ok(await source.append(f"copied-{w}-{n}", [EventData("Copied", {}) for _ in range(4)]))
                    try:
                        await copy(source, store, checkpoint=f"closing-copy-{w}-{n}", batch_size=2)
                    except CopyFailed as exc:  # the target refused the events: it is closed
                        if not isinstance(exc.error, StoreUnavailable):
                            raise
                        raise exc.error from exc
            except StoreUnavailable:
                refused.append(kind)
                return
            started.set()

    try:
        await run_and_close(t, workers, going, repeat, rounds)
    except TimeoutError:
        raise AssertionError(f"still running {LIMIT} s after the store closed: {sorted(running)}") from None
    assert sorted(refused) == sorted(workers)
    await check_closed(t, before, batches)


async def run_and_close(
    t: Target,
    workers: Sequence[str],
    going: list[anyio.Event],
    repeat: Callable[[int, str, anyio.Event], Coroutine[Any, Any, None]],
    rounds: int,
) -> None:
    # Getting every worker going may take long on a loaded machine (moto above all); from the
    # moment the store starts closing, closing and every worker's end must fit in LIMIT.
    with anyio.CancelScope(deadline=anyio.current_time() + STARTUP) as bound:
        async with anyio.create_task_group() as tg, open_store(t.url) as store:
            t.store = store
            for w, (kind, started) in enumerate(zip(workers, going, strict=True)):
                tg.start_soon(repeat, w, kind, started)
            for started in going:
                await started.wait()
            for _ in range(rounds):
                await anyio.lowlevel.checkpoint()
            bound.deadline = anyio.current_time() + LIMIT
            # closed: every worker ends by itself, refused
    if bound.cancelled_caught:
        raise TimeoutError


async def check_closed(t: Target, before: dict[str, object], batches: dict[str, list[EventData]]) -> None:
    """Nothing is left open, and every batch is whole or absent (in the memory store's log as it was
    at the close, in the file or database reopened)."""
    store = t.store
    with anyio.fail_after(LIMIT):
        t.store = None
        after = await eventually_equal(t.counts, before)
        assert after == before, f"left open after closing with work in flight: {after} (before: {before})"
        # Every batch is whole or absent, in the closed store (memory) or the file/database reopened.
        if isinstance(store, MemoryStore):  # closed, it refuses reads: look at what it holds
            for stream, batch in batches.items():
                stored = [row[6] for row in store._streams.get(stream, [])]
                assert stored in ([], [e.id for e in batch]), f"{stream}: a torn batch"
            return
        async with open_store(t.url) as store:
            t.store = store
            for stream, batch in batches.items():
                stored = [e.id for e in await store.read(stream).to_list()]
                assert stored in ([], [e.id for e in batch]), f"{stream}: a torn batch"
            await usable(t)
            t.store = None


CLOSING_STORES = ["memory", "sqlite", "postgres", "dynamodb"]
"""Every store. DynamoDB was left out while a ``read`` in flight at the close could wait past
:data:`LIMIT` (about one run in six on a loaded machine: issue 19, bug 7); its close now cancels every
call in flight (``tests/test_dynamodb_border.py`` reproduces the hang deterministically). A worker
still running at the limit is named in the failure."""


@pytest.mark.parametrize("store_name", CLOSING_STORES)
async def test_closing_the_store_with_every_kind_of_operation_in_flight(
    store_name: str, tmp_path: Path
) -> None:
    async with target_for(store_name, tmp_path, open_it=False) as t:
        await close_while_busy(t, WORKERS, rounds=3)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    store_name=st.sampled_from(["memory", "sqlite"]),
    workers=st.lists(st.sampled_from(WORKERS), min_size=1, max_size=5),
    rounds=st.integers(0, 30),
)
def test_closing_the_store_at_a_random_moment_of_random_work(
    backend: str, store_name: str, workers: list[str], rounds: int
) -> None:
    async def main(folder: str) -> None:
        async with target_for(store_name, Path(folder), open_it=False) as t:
            await close_while_busy(t, workers, rounds)

    with tempfile.TemporaryDirectory() as folder:
        anyio.run(main, folder, backend=backend)
