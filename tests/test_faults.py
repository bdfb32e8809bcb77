"""Appends under injected faults: what a caller is told always matches what is in the log.

Every store runs random sequences of appends (new batches with right and
wrong expected versions, retries of earlier batches with the very same
``EventData``, batches reusing a stored id) through
:class:`~streamsrc.testing.FaultyStore`, which loses some requests before
the commit point, some answers after it, cancels some appends at their n-th
await point (a timeout) and raises on others. A small model of the log
(written here, not the store's own checks) predicts each answer. After every
step the whole log is read back and:

* a ``Success`` is exactly the model's answer, and its events are in the log
  at the positions it returned;
* a failure before the commit point left the log as it was;
* an ambiguous failure (after the commit point, or a timeout) left all of
  the batch or none of it, and if the store finished the append, what it
  would have answered is what landed;
* positions run from 1 to the head with no gap, each stream's seqs from 1
  with no gap (the log is compared event by event with the model);
* a retry with the same ids never makes a second copy: it is the model's
  idempotent success (the stored positions) or writes the batch once.

Thousands of cases run on the memory store, hundreds on a SQLite file, a few
dozen on PostgreSQL and on DynamoDB (moto's server). On the servers a
cancelled append may still be committed by the server after the client has
gone, so there each timed-out append is settled at once by the retry users
are told to make (same ids, same expected version), which must leave one copy.

Then commands: callers that send each command with an idempotency key
(``handle(..., command_id=...)``) again for as long as the answer is
``StoreUnavailable`` (more lost answers in a row than the entity's own
retries) apply each exactly once, with and without snapshots, on memory and
SQLite. And real connections: a loopback proxy (``fault_proxy.py``) between
the store and PostgreSQL or moto loses requests before the server sees them
and answers after it committed, and refuses connections; appends and a
PostgreSQL read model's transactions still land exactly once.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fault_proxy import FaultProxy, http_reply_done, postgres_reply_done
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success
from store_urls import fresh_dynamodb_url, opened_store

from streamsrc.effect import RetryPolicy
from streamsrc.entity import EveryN, Repository, Saved, command_event_id
from streamsrc.errors import DuplicateEvent, Rejection, StoreError, StoreUnavailable, WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Projection, Projector
from streamsrc.projections.postgres import PostgresReadModel
from streamsrc.store import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, Expected, ImportingStore, open_store
from streamsrc.store.memory import MemoryStore
from streamsrc.testing import ConformantStore, Fault, FaultyStore, Timeout
from streamsrc.testing.entity import (
    CODEC,
    Account,
    AccountCommand,
    AccountEvent,
    Close,
    Deposit,
    Deposited,
    Withdraw,
    Withdrawn,
    account_decider,
    account_entity,
)
from streamsrc.testing.faults import Planned

SHRINK = os.environ.get("STREAMSRC_SHRINK", "") not in ("", "0")
PHASES = list(Phase) if SHRINK else [p for p in Phase if p is not Phase.shrink]


class Injected(Exception):
    """What the ``RAISE_*`` faults raise here (a driver's exception that escaped, say)."""


# ------------------------------------------------------------------------------------------ the model

Key = tuple[str, int, int, uuid.UUID]  # stream, seq, position, id


@dataclass
class Model:
    """The log as the test believes it: events in position order, from ``base + 1``."""

    base: int
    log: list[Key] = field(default_factory=list)

    def version(self, stream: str) -> int:
        return sum(1 for k in self.log if k[0] == stream)

    def where(self) -> dict[uuid.UUID, Key]:
        return {k[3]: k for k in self.log}

    def predict(
        self, stream: str, ids: list[uuid.UUID], expected: Expected
    ) -> tuple[Result[AppendResult, type[StoreError]], list[Key]]:
        """The answer the contract gives, and the log after it."""
        where = self.where()
        if any(i in where for i in ids):
            first = where.get(ids[0])
            if first is not None and first[0] == stream:
                start = first[1]
                placed = all(
                    (k := where.get(i)) is not None and k[:2] == (stream, start + n)
                    for n, i in enumerate(ids)
                )
                at = 0 if expected is NO_STREAM else expected
                if placed and (expected is ANY or expected is STREAM_EXISTS or start == at + 1):  # type: ignore[operator]
                    stored = tuple(where[i][2] for i in ids)
                    return Success(AppendResult(stream, start + len(ids) - 1, stored)), self.log
            return Failure(DuplicateEvent), self.log
        current = self.version(stream)
        if expected is ANY:
            ok = True
        elif expected is STREAM_EXISTS:
            ok = current > 0
        elif expected is NO_STREAM:
            ok = current == 0
        else:
            ok = current == expected
        if not ok:
            return Failure(WrongExpectedVersion), self.log
        head = self.base + len(self.log)
        written = [(stream, current + n + 1, head + n + 1, i) for n, i in enumerate(ids)]
        positions = tuple(k[2] for k in written)
        return Success(AppendResult(stream, current + len(ids), positions)), self.log + written


def same_answer(
    actual: Result[AppendResult, StoreError], predicted: Result[AppendResult, type[StoreError]]
) -> bool:
    if isinstance(predicted, Success):
        return actual == predicted
    return isinstance(actual, Failure) and type(actual.failure()) is predicted.failure()


async def read_log(store: ConformantStore, base: int) -> list[Key]:
    events: list[RecordedEvent] = await store.read_all(after=base).to_list()
    return [(e.stream, e.seq, e.position, e.id) for e in events]


# ------------------------------------------------------------------------------------------ operations

NEW_MODES = ("right", "right", "wrong", "any", "no_stream", "exists")
RETRY_MODES = ("original", "original", "any", "current", "wrong")

FAULTS: tuple[Planned, ...] = (
    Fault.NONE,
    Fault.NONE,
    Fault.NONE,
    Fault.BEFORE,
    Fault.AFTER,
    Fault.RAISE_BEFORE,
    Fault.RAISE_AFTER,
    *(Timeout(at) for at in range(1, 5)),
)
# An operation is one integer (the cheapest thing Hypothesis draws), read as four small ones: what to do
# (0: a new batch, 1: a retry of an earlier batch with the same events, 2: an earlier batch's first id with
# a new event), which stream or batch, a size or an expected-version mode, and which fault (in FAULTS).
# Shrinking moves each towards 0: a new batch, at the right version, without a fault.
SHAPE = (3, 30, 6, len(FAULTS))
operations = st.integers(0, SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3] - 1)


def decode(op: int) -> tuple[int, int, int, Planned]:
    fault, op = op % SHAPE[3], op // SHAPE[3]
    how, op = op % SHAPE[2], op // SHAPE[2]
    which, kind = op % SHAPE[1], op // SHAPE[1]
    return kind, which, how, FAULTS[fault]


@dataclass
class Batch:
    stream: str
    events: list[EventData]
    expected: Expected


_cases = itertools.count()


class Case:
    """One example: operations on streams of its own in a store that may hold other examples' events."""

    def __init__(self, inner: ConformantStore, base: int, settle_timeouts: bool) -> None:
        self.inner = inner
        self.fault: Planned = Fault.NONE
        self.store = FaultyStore(inner, lambda call: self.fault, error=Injected)
        self.model = Model(base)
        self.batches: list[Batch] = []
        self.settle_timeouts = settle_timeouts
        case = next(_cases)
        self.streams = [f"case{case}-{name}" for name in ("a", "b", "ü 🎉")]
        self.serial = itertools.count()

    def event(self) -> EventData:
        return EventData("Happened", {"n": next(self.serial)})

    def expected(self, stream: str, mode: str, original: Expected | None = None) -> Expected:
        current = self.model.version(stream)
        if mode == "right" or mode == "current":
            return current
        if mode == "wrong":
            return current + 1
        if mode == "original":
            assert original is not None
            return original
        return {"any": ANY, "no_stream": NO_STREAM, "exists": STREAM_EXISTS}[mode]

    async def run(self, operations: list[int]) -> None:
        for kind, which, how, fault in map(decode, operations):
            if kind == 0 or not self.batches:
                stream = self.streams[which % len(self.streams)]
                size = 1 + which // len(self.streams) % 3
                batch = Batch(
                    stream, [self.event() for _ in range(size)], self.expected(stream, NEW_MODES[how])
                )
                self.batches.append(batch)
                await self.step(stream, batch.events, batch.expected, fault)
            elif kind == 1:
                batch = self.batches[which % len(self.batches)]
                expected = self.expected(batch.stream, RETRY_MODES[how % len(RETRY_MODES)], batch.expected)
                await self.step(batch.stream, batch.events, expected, fault)
            else:  # a stored (or tried) id with a new event, in any stream
                batch = self.batches[which % len(self.batches)]
                stream = self.streams[how % len(self.streams)]
                await self.step(stream, [batch.events[0], self.event()], ANY, fault)
        await self.check_streams()

    async def step(self, stream: str, events: list[EventData], expected: Expected, fault: Planned) -> None:
        model = self.model
        predicted, after = model.predict(stream, [e.id for e in events], expected)
        if self.settle_timeouts and isinstance(fault, Timeout) and isinstance(predicted, Failure):
            # A refused append the server runs late could succeed once later steps have moved the
            # stream to its expected version; the settling retry cannot rule that out. Lose the
            # answer instead (the append has run to its end).
            fault = Fault.AFTER
        self.fault = fault
        raised: Injected | None = None
        try:
            answer = await self.store.append(stream, events, expected)
        except Injected as exc:
            raised = exc
        call = self.store.calls[-1]
        assert call.fault == fault
        if fault is Fault.RAISE_BEFORE or fault is Fault.RAISE_AFTER:
            assert raised is not None
        else:
            assert raised is None
            if fault is not Fault.NONE:
                assert isinstance(answer, Failure), answer
                assert isinstance(answer.failure(), StoreUnavailable), answer
        if isinstance(fault, Timeout) and not call.completed and self.settle_timeouts:
            # The server may still commit the cancelled append: the retry users make settles it.
            settled = await self.inner.append(stream, events, expected)
            assert same_answer(settled, predicted), (settled, predicted)
        log = await read_log(self.inner, model.base)
        if fault is Fault.NONE:
            assert same_answer(answer, predicted), (answer, predicted)
            assert log == after
        elif fault is Fault.BEFORE or fault is Fault.RAISE_BEFORE:
            assert not call.called
            assert log == model.log  # nothing written
        else:  # ambiguous: all of the batch or none of it
            assert log in (model.log, after), (log, model.log, after)
            if call.completed:  # the store answered: what it answered is what happened
                assert call.inner is not None
                assert same_answer(call.inner, predicted), (call.inner, predicted)
                assert log == after
        if isinstance(answer if raised is None else None, Success):
            where = {k[3]: k for k in log}
            success = answer.unwrap()
            assert tuple(where[e.id][2] for e in events) == success.positions
            assert where[events[-1].id][1] == success.last_seq
        # Positions base+1.. with no gap (the model's log is gap-free by construction).
        assert [k[2] for k in log] == list(range(model.base + 1, model.base + len(log) + 1))
        model.log = log
        assert await self.inner.head() == model.base + len(log)

    async def check_streams(self) -> None:
        for stream in self.streams:
            mine = [k for k in self.model.log if k[0] == stream]
            read = [(e.stream, e.seq, e.position, e.id) for e in await self.inner.read(stream).to_list()]
            assert read == mine
            assert [k[1] for k in read] == list(range(1, len(read) + 1))
            backwards = await self.inner.read(stream, backwards=True).to_list()
            assert [(e.stream, e.seq, e.position, e.id) for e in reversed(backwards)] == mine


# ------------------------------------------------------------------------------------------ the runs


def run_examples(run: Callable[[list[int]], object], examples: int, steps: int) -> None:
    """Run ``examples`` Hypothesis cases of up to ``steps`` operations, each by ``run(operations)``."""

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        phases=PHASES,
    )
    @given(st.lists(operations, min_size=1, max_size=steps))
    def case(ops: list[int]) -> None:
        run(ops)

    case()


def on_shared_store(
    portal: BlockingPortal, store: ConformantStore, settle_timeouts: bool = False
) -> Callable[[list[int]], object]:
    """Cases run on ``store`` through ``portal``, each on streams of its own."""

    async def run(ops: list[int]) -> None:
        await Case(store, await store.head(), settle_timeouts).run(ops)

    return lambda ops: portal.call(run, ops)


@pytest.mark.parametrize(("backend", "examples"), [("asyncio", 2000), ("trio", 500)])
def test_memory_appends_under_faults_match_the_model(backend: str, examples: int) -> None:
    async def run(ops: list[int]) -> None:
        await Case(MemoryStore(), 0, settle_timeouts=False).run(ops)

    # A fresh store and event loop per case: cheaper than a hop to a portal's thread.
    run_examples(lambda ops: anyio.run(run, ops, backend=backend), examples, 8)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sqlite_appends_under_faults_match_the_model(backend: str, tmp_path: Path) -> None:
    with (
        start_blocking_portal(backend) as portal,
        portal.wrap_async_context_manager(opened_store("sqlite-small-pages", tmp_path)) as store,
    ):
        run_examples(on_shared_store(portal, store), 150, 8)


def test_postgres_appends_under_faults_match_the_model(tmp_path: Path) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(opened_store("postgres", tmp_path)) as store,
    ):
        run_examples(on_shared_store(portal, store, settle_timeouts=True), 40, 8)


def test_dynamodb_appends_under_faults_match_the_model(tmp_path: Path) -> None:
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(opened_store("dynamodb", tmp_path)) as store,
    ):
        run_examples(on_shared_store(portal, store, settle_timeouts=True), 15, 6)


# ------------------------------------------------------------------------------------------ commands

ENTITY_FAULTS: tuple[Planned, ...] = (
    Fault.NONE,
    Fault.AFTER,
    Fault.AFTER,
    Fault.BEFORE,
    Fault.RAISE_AFTER,
    Timeout(1),
    Timeout(2),
)
PATIENCE = RetryPolicy(max_attempts=2, base_delay=0.0001, max_delay=0.0005)
"""The entity's own retries: fewer than the faults in a row a plan may hold, so callers see failures."""


@dataclass(frozen=True)
class CommandCase:
    commands: list[AccountCommand]
    plan: list[Planned]
    picks: list[int]
    snapshots: bool


command_cases = st.builds(
    CommandCase,
    st.integers(1, 5).flatmap(
        lambda n: st.lists(st.sampled_from([Close()]), max_size=1).flatmap(
            lambda close: st.permutations([*(Deposit(2**i) for i in range(n)), *close])
        )
    ),
    st.lists(st.sampled_from(ENTITY_FAULTS), max_size=24),
    st.lists(st.integers(0, 5), max_size=12),
    st.booleans(),
)


async def send_until_done(store: ConformantStore, key: str, case: CommandCase) -> None:
    """Send each command with an idempotency key until it is decided, picking the next one as ``picks`` say
    (so a command that failed ambiguously is sometimes sent again at once, sometimes after others)."""
    entity = account_entity(EveryN(2) if case.snapshots else None, retry=PATIENCE)
    faulty = FaultyStore(store, case.plan, error=Injected)
    repo = Repository(faulty, entity)
    ids = {f"{key}-command-{n}": command for n, command in enumerate(case.commands)}
    pending = list(ids)
    picks = iter(case.picks)
    results: dict[str, Result[Saved[AccountEvent, Account], Any]] = {}
    while pending:
        command_id = pending[next(picks, 0) % len(pending)]
        try:
            result = await repo.handle(key, ids[command_id], command_id=command_id)
        except Injected:
            continue
        if isinstance(result, Failure) and isinstance(result.failure(), StoreUnavailable):
            continue
        results[command_id] = result
        pending.remove(command_id)

    stream = entity.stream(key)
    log = await store.read(stream).to_list()
    owner = {command_event_id(stream, c, k): (c, k) for c in ids for k in range(2)}
    batches: dict[str, list[RecordedEvent]] = {}
    for recorded in log:
        assert recorded.id in owner, f"an event no command's key accounts for: {recorded}"  # a double apply
        command_id, k = owner[recorded.id]
        batch = batches.setdefault(command_id, [])
        assert k == len(batch), f"{command_id}: event {k} after {len(batch)} events"
        assert not batch or batch[-1].seq == recorded.seq - 1
        batch.append(recorded)
    for command_id, result in results.items():
        batch = batches.get(command_id, [])
        if isinstance(result, Failure):
            assert isinstance(result.failure(), Rejection), result
            assert batch == []
            continue
        saved = result.unwrap()
        assert saved.events == tuple(CODEC.decode(r) for r in batch)
        assert saved.positions == tuple(r.position for r in batch)
        if batch:
            assert saved.seq == batch[-1].seq
            assert saved.state == account_decider.fold(CODEC.decode(r) for r in log[: saved.seq])
    assert set(batches) <= set(results)  # nothing landed for a command that was never decided
    deposits = [CODEC.decode(r).amount for r in log if r.type == "Deposited"]
    assert len(deposits) == len(set(deposits))  # each deposit applied at most once
    for command_id, command in ids.items():  # and each accepted one exactly once
        if isinstance(command, Deposit) and isinstance(results[command_id], Success):
            assert deposits.count(command.amount) == 1
    assert (await repo.load(key)).state == account_decider.fold(CODEC.decode(r) for r in log)


def test_commands_retried_by_their_callers_apply_once_on_memory() -> None:
    async def run(case: CommandCase) -> None:
        await send_until_done(MemoryStore(), "k", case)

    @settings(max_examples=400, deadline=None, phases=PHASES)
    @given(command_cases)
    def check(case: CommandCase) -> None:
        anyio.run(run, case)

    check()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_commands_retried_by_their_callers_apply_once_on_sqlite(backend: str, tmp_path: Path) -> None:
    keys = itertools.count()
    with (
        start_blocking_portal(backend) as portal,
        portal.wrap_async_context_manager(opened_store("sqlite", tmp_path)) as store,
    ):

        @settings(
            max_examples=60,
            deadline=None,
            phases=PHASES,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(command_cases)
        def check(case: CommandCase) -> None:
            portal.call(send_until_done, store, f"k{next(keys)}", case)

        check()


# ------------------------------------------------------------------------------ through a lossy proxy

PROXY_FAULTS = ("none", "before", "after", "after", "before-then-down", "after-then-down")


def through(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def tagged(n: int, size: int) -> list[EventData]:
    """A batch whose data carries ``tag{n}z``: the marker the proxy looks for in its request."""
    return [EventData("Tagged", {"tag": f"tag{n:04d}z", "k": k}) for k in range(size)]


async def appends_through_proxy(store: ConformantStore, proxy: FaultProxy, seed: int, count: int) -> None:
    """``count`` appends with exact expected versions while the proxy loses connections around them.

    A lost request or a lost answer the store rides out itself (it tries again on another connection,
    with the same ids): the append succeeds, once. When the server then stays away, the append fails
    with ``StoreUnavailable``; its batch is then in the log (lost answer) or not (lost request), and
    the same append made again once the server is back succeeds without a second copy.
    """
    rng = random.Random(seed)
    streams = ["proxied-a", "proxied-b", "proxied-c"]
    versions = dict.fromkeys(streams, 0)
    acknowledged: dict[int, tuple[str, uuid.UUID]] = {}  # position -> (stream, id)
    armed = 0
    for n in range(count):
        stream, fault = rng.choice(streams), rng.choice(PROXY_FAULTS)
        batch = tagged(n, rng.randint(1, 3))
        if fault != "none":
            proxy.arm(fault.split("-")[0], f"tag{n:04d}z".encode(), then_refuse=fault.endswith("down"))
            armed += 1
        result = await store.append(stream, batch, expected=versions[stream])
        if fault.endswith("down"):
            assert isinstance(result, Failure), result
            assert isinstance(result.failure(), StoreUnavailable), result
            proxy.accept()
            present = [e.id for e in await store.read(stream, after=versions[stream]).to_list()]
            assert present == ([e.id for e in batch] if fault.startswith("after") else [])
            result = await store.append(stream, batch, expected=versions[stream])  # the caller's retry
        assert isinstance(result, Success), (fault, result)
        assert proxy.armed == 0  # the fault did happen
        written = result.unwrap()
        versions[stream] += len(batch)
        assert written.last_seq == versions[stream]
        acknowledged.update((p, (stream, e.id)) for p, e in zip(written.positions, batch, strict=True))
    assert len(proxy.fired) == armed
    log = await store.read_all().to_list()
    assert [e.position for e in log] == list(range(1, len(log) + 1))  # gap-free
    assert {e.position: (e.stream, e.id) for e in log} == acknowledged  # each once, where acknowledged
    for stream in streams:
        assert [e.seq for e in await store.read(stream).to_list()] == list(range(1, versions[stream] + 1))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_postgres_appends_through_a_proxy_that_loses_connections(postgres_database: str) -> None:
    server = urlsplit(postgres_database)
    assert server.hostname is not None
    assert server.port is not None
    with FaultProxy((server.hostname, server.port), postgres_reply_done) as proxy:
        # The store rides out a short outage for retry_for seconds; the "then down" cases need it short.
        async with open_store(through(postgres_database, proxy) + "?retry_for=0.5") as store:
            await appends_through_proxy(store, proxy, seed=20261128, count=30)
        assert proxy.refused > 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dynamodb_appends_through_a_proxy_that_loses_connections(moto_endpoint: str) -> None:
    server = urlsplit(moto_endpoint)
    assert server.hostname is not None
    assert server.port is not None
    with FaultProxy((server.hostname, server.port), http_reply_done) as proxy:
        url = fresh_dynamodb_url("retries=2").replace(moto_endpoint, f"http://127.0.0.1:{proxy.port}")
        async with open_store(url) as store:
            await appends_through_proxy(store, proxy, seed=20261129, count=12)
        assert proxy.refused > 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_postgres_read_model_transactions_lost_around_the_commit_apply_each_event_once(
    postgres_database: str,
) -> None:
    """The model's connection is cut as its COMMIT goes out (the transaction rolls back) or just after
    the server committed (the model cannot know): every event lands in the table exactly once."""
    server = urlsplit(postgres_database)
    assert server.hostname is not None
    assert server.port is not None
    schema = "CREATE TABLE IF NOT EXISTS rows (position BIGINT PRIMARY KEY, stream TEXT NOT NULL, seq BIGINT)"

    async def write(conn: Any, events: Any) -> None:
        await conn.executemany(
            "INSERT INTO rows VALUES ($1, $2, $3)", [(e.position, e.stream, e.seq) for e in events]
        )

    with FaultProxy((server.hostname, server.port), postgres_reply_done) as proxy:
        async with (
            open_store(postgres_database) as store,
            PostgresReadModel(through(postgres_database, proxy), schema) as model,
        ):
            for n in range(40):
                assert isinstance(await store.append(f"s-{n % 3}", [EventData("E", {"n": n})]), Success)
            for mode in ("after", "before", "after", "after", "before", "after"):
                proxy.arm(mode, b"COMMIT")
            status = await Projector(store, Projection("p", write), model, batch_size=5).catch_up()
            assert proxy.armed == 0
            assert [f.mode for f in proxy.fired] == ["after", "before", "after", "after", "before", "after"]
            log = await store.read_all().to_list()
            assert status.position == len(log) == 40
            rows = await model.query("SELECT position, stream, seq FROM rows ORDER BY position")
            assert rows == [(e.position, e.stream, e.seq) for e in log]
            assert await model.load_position("p") == 40


@pytest.mark.anyio
@pytest.mark.parametrize("store_name", ["memory", "sqlite"])
async def test_the_same_command_sent_concurrently_is_applied_once(store_name: str, tmp_path: Path) -> None:
    """Eight callers send one command (one key) at once, over lost answers: one event, eight equal answers."""
    async with opened_store(store_name, tmp_path) as store:
        repo = Repository(store, account_entity(EveryN(1)))
        await repo.handle("c", Deposit(100))
        faulty = Repository(FaultyStore(store, [Fault.AFTER, Fault.NONE, Fault.AFTER] * 4), repo.entity)
        answers: list[Result[Saved[AccountEvent, Account], Any]] = []

        async def send() -> None:
            answers.append(await faulty.handle("c", Withdraw(30), command_id="w-1"))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(send)
        log = await store.read("account-c").to_list()
        assert [CODEC.decode(r) for r in log] == [Deposited(100), Withdrawn(30)]
        assert log[1].id == command_event_id("account-c", "w-1", 0)
        saved = {a.unwrap() for a in answers}  # every caller: Success, the same one
        assert len(answers) == 8
        assert {(s.seq, s.events, s.state, s.positions) for s in saved} == {
            (2, (Withdrawn(30),), Account(70, False), (log[1].position,))
        }
        # Later, after a snapshot past it: sent again, still the same answer and no new event.
        await repo.handle("c", Deposit(5))
        again = (await faulty.handle("c", Withdraw(30), command_id="w-1")).unwrap()
        assert (again.seq, again.positions, again.state) == (2, (log[1].position,), Account(70, False))
        assert len(await store.read("account-c").to_list()) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("store_name", ["memory", "sqlite"])
async def test_imports_under_faults_land_once(store_name: str, tmp_path: Path) -> None:
    """``import_events`` gets the same faults as ``append``: a lost answer, then the retry, one copy."""
    source = MemoryStore()
    await source.append("s", tagged(1, 3))
    recorded = await source.read("s").to_list()
    async with opened_store(store_name, tmp_path) as target:
        faulty = FaultyStore(target, [Fault.BEFORE, Timeout(1), Fault.AFTER])
        assert isinstance(faulty, ImportingStore)
        outcomes = [await faulty.import_events("s", recorded) for _ in range(4)]
        assert [type(o).__name__ for o in outcomes] == ["Failure", "Failure", "Failure", "Success"]
        assert [c.call.method for c in faulty.calls] == ["import_events"] * 4
        assert faulty.calls[0].called is False
        assert [(e.id, e.seq, e.data) for e in await target.read("s").to_list()] == [
            (e.id, e.seq, e.data) for e in recorded
        ]
        assert outcomes[-1].unwrap().positions == (1, 2, 3)
    assert not isinstance(FaultyStore(cast(Any, _NoImports())), ImportingStore)


class _NoImports:
    """Just enough of a store without ``import_events``."""
