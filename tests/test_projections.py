"""Projections: read models agree with the log, checkpoints survive cancellation and SIGKILL.

Every read model here records one row per event (see ``projection_child.py``,
shared with the child process the SIGKILL tests run), so a model's content is
compared with the rows of ``read_all`` directly: the same rows in the same
order means every event was applied exactly once, in order. The SQLite model's
table has a UNIQUE position, so applying an event twice fails at once.
"""

from __future__ import annotations

import itertools
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from projection_child import (
    BATCH_SIZE,
    NAME,
    SCHEMA,
    SELECT_ROWS,
    Row,
    delivery_writer,
    insert_rows,
    read_deliveries,
    row,
)
from returns.result import Failure, Success
from store_urls import opened_store

from streamsrc.effect import RetryPolicy
from streamsrc.errors import EffectFailed, ProjectionFailed, StoreUnavailable
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
)
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import EventStore, open_store
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")
CHILD = Path(__file__).with_name("projection_child.py")
KINDS = ["memory", "sqlite", "callback"]
EXACTLY_ONCE = ["memory", "sqlite"]
STORES = ["memory", "sqlite"]
FAST_POLL = Poll(min_delay=0.002, max_delay=0.02)

Fail = Callable[[RecordedEvent], Exception | None]
"""The error a handler raises on an event, or None to apply it."""


def never(event: RecordedEvent) -> Exception | None:
    return None


def poisoned(event: RecordedEvent) -> Exception | None:
    """Fails on the events whose data says ``poison``."""
    return ValueError(f"poison at {event.position}") if event.data.get("poison") else None


def raise_if(fail: Fail, event: RecordedEvent) -> None:
    error = fail(event)
    if error is not None:
        raise error


class Target:
    """A read model of one kind, its handler recording a :data:`Row` per event, and its rows."""

    def __init__(self, kind: str, model: Any, handler: Any, delivered: list[Row] | None = None) -> None:
        self.kind = kind
        self.model = model
        self.handler = handler
        self.delivered: list[Row] = delivered if delivered is not None else []

    async def rows(self) -> list[Row]:
        """The rows the handler wrote, in the order it wrote them (every delivery, for callbacks)."""
        if self.kind == "memory":
            return list(self.model.state)
        if self.kind == "sqlite":
            return [tuple(r) for r in await self.model.query(SELECT_ROWS)]
        return list(self.delivered)

    def projector(
        self,
        store: EventStore,
        name: str = "p",
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
        **options: Any,
    ) -> Projector[Any]:
        options.setdefault("poll", FAST_POLL)
        return Projector(store, Projection(name, self.handler, types, stream_prefix), self.model, **options)


@asynccontextmanager
async def target(kind: str, folder: Path, fail: Fail = never, name: str = "model") -> AsyncIterator[Target]:
    """A fresh read model of ``kind`` (files in ``folder``) whose handler fails where ``fail`` says."""
    if kind == "memory":

        def fold(state: tuple[Row, ...], events: Sequence[RecordedEvent]) -> tuple[Row, ...]:
            out = list(state)
            for e in events:
                raise_if(fail, e)
                out.append(row(e))
            return tuple(out)

        yield Target(kind, MemoryReadModel[tuple[Row, ...]](()), fold)
    elif kind == "sqlite":

        def insert(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
            for e in events:  # one at a time: a failing batch has written some rows before it fails
                raise_if(fail, e)
                insert_rows(conn, [e])

        async with SqliteReadModel(str(folder / f"{name}.db"), SCHEMA) as model:
            yield Target(kind, model, insert)
    else:
        delivered: list[Row] = []

        async def deliver(events: Sequence[RecordedEvent]) -> None:
            for e in events:
                raise_if(fail, e)
                delivered.append(row(e))
                await anyio.lowlevel.checkpoint()

        yield Target(kind, CallbackReadModel(MemoryStore()), deliver, delivered)


async def write(store: EventStore, n: int, count: int, poison: Collection[int] = ()) -> int:
    """Append events ``n`` .. ``n + count - 1`` one by one on streams s-0..s-2; returns the next ``n``."""
    for i in range(n, n + count):
        data: dict[str, Any] = {"n": i, "poison": True} if i in poison else {"n": i}
        result = await store.append(f"s-{i % 3}", [EventData("A" if i % 2 == 0 else "B", data)])
        assert isinstance(result, Success), result
    return n + count


def rows_of(
    events: Sequence[RecordedEvent], types: Collection[str] | None = None, stream_prefix: str | None = None
) -> list[Row]:
    """The rows a projection with these filters should hold: the plain fold of ``read_all``."""
    return [
        row(e)
        for e in events
        if (types is None or e.type in types)
        and (stream_prefix is None or e.stream.startswith(stream_prefix))
    ]


async def all_rows(store: EventStore) -> list[Row]:
    return rows_of(await store.read_all().to_list())


async def wait_until(condition: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """Poll the async ``condition`` until it is true (fails the test after ``seconds``)."""
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110 (a condition on a model, not an event)
            await anyio.sleep(0.01)


def dedupe(rows: Sequence[Row]) -> list[Row]:
    """The rows in order of first delivery."""
    return list(dict.fromkeys(rows))


def check_at_least_once(runs: Sequence[tuple[int, Sequence[int]]], everything: Sequence[int]) -> None:
    """At least once: each run (checkpoint when it started, positions it delivered) went on
    from its checkpoint with no gap, in order (so a repeat is only of an event after the checkpoint),
    its checkpoint never passed an event not yet delivered, and together they delivered everything.

    A run may skip events after its checkpoint that were delivered already: a callback model
    remembers, in its process, what its handler finished before a checkpoint save that failed
    or was cancelled, and does not hand it over again."""
    seen: set[int] = set()
    for start, delivered in runs:
        assert {p for p in everything if p <= start} <= seen, (
            f"checkpoint {start} passed an undelivered event"
        )
        after = [p for p in everything if p > start]
        known = next((i for i, p in enumerate(after) if p not in seen), len(after))
        assert any(list(delivered) == after[i : i + len(delivered)] for i in range(known + 1)), (
            start,
            delivered,
        )
        seen.update(delivered)
    assert seen == set(everything)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with opened_store(request.param, tmp_path) as s:
        yield s


# ------------------------------------------------------------------------------- catch_up is the fold

STREAMS = ["s-0", "s-1", "s-2", "t-0"]
FILTERS: list[tuple[frozenset[str] | None, str | None]] = [
    (None, None),
    (frozenset({"A"}), None),
    (None, "s-"),
    (frozenset({"B", "C"}), "s-1"),
    (None, "u-"),  # matches nothing: the checkpoint still reaches the head
]
appends_st = st.lists(
    st.tuples(st.sampled_from(STREAMS), st.lists(st.sampled_from("ABC"), min_size=1, max_size=5)),
    max_size=10,
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("store_name", ["memory", "sqlite-small-pages"])
@settings(max_examples=6, deadline=None)
@given(appends=appends_st, filters=st.sampled_from(FILTERS), batch_size=st.sampled_from([1, 7, 1000]))
def test_catch_up_builds_the_fold_of_read_all(
    backend: str,
    store_name: str,
    appends: list[tuple[str, list[str]]],
    filters: tuple[frozenset[str] | None, str | None],
    batch_size: int,
) -> None:
    types, prefix = filters

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with opened_store(store_name, Path(tmp)) as store:
                n = 0
                for stream, kinds in appends:
                    batch = [EventData(k, {"n": n + i}) for i, k in enumerate(kinds)]
                    assert isinstance(await store.append(stream, batch), Success)
                    n += len(batch)
                want = rows_of(await store.read_all().to_list(), types, prefix)
                for kind in EXACTLY_ONCE:
                    async with target(kind, Path(tmp)) as t:
                        projector = t.projector(
                            store, types=types, stream_prefix=prefix, batch_size=batch_size
                        )
                        status = await projector.catch_up()
                        assert await t.rows() == want
                        assert (status.position, status.head, status.lag) == (n, n, 0)
                        assert await t.model.load_position("p") == n
                        assert await projector.catch_up() == status  # nothing new: nothing applied
                        assert await t.rows() == want

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_checkpoint_moves_past_events_the_filter_skips(
    store: EventStore, kind: str, tmp_path: Path
) -> None:
    n = await write(store, 0, 10)  # A, B, A, B, ... on s-0, s-1, s-2
    assert isinstance(await store.append("other-1", [EventData("A", {"n": 99})]), Success)
    async with target(kind, tmp_path) as t:
        projector = t.projector(store, types={"A"}, stream_prefix="s-", batch_size=3)
        status = await projector.catch_up()
        assert await t.rows() == rows_of(await store.read_all().to_list(), {"A"}, "s-")
        assert (status.position, status.lag) == (11, 0)  # the last event did not match
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.run)
            await write(store, n + 1, 1)  # a B: read live, skipped, and checkpointed
            await wait_until(lambda: _is(t.model.load_position("p"), 12))
            tg.cancel_scope.cancel()
        assert (await projector.status()).lag == 0
        assert len(await t.rows()) == 5


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _eq(a: Awaitable[object], b: Awaitable[object]) -> bool:
    return await a == await b


async def test_a_projector_on_an_empty_store(store: EventStore, tmp_path: Path) -> None:
    async with target("sqlite", tmp_path) as t:
        projector = t.projector(store)
        reports = await projector.progress(live=False).to_list()
        assert [(p.position, p.head, p.events, p.caught_up, p.lag, p.fraction) for p in reports] == [
            (0, 0, 0, True, 0, 1.0)
        ]
        status = await projector.catch_up()
        assert (status.position, status.head, status.lag) == (0, 0, 0)
        assert await t.rows() == []
        assert await t.model.dead_letters() == []
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.run)
            await write(store, 0, 2)
            await wait_until(lambda: _eq(t.rows(), all_rows(store)))
            tg.cancel_scope.cancel()


# ------------------------------------------------------------------------ cancelled and resumed


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelled_at_random_points_and_resumed_it_ends_like_a_rebuild(
    store: EventStore, kind: str, tmp_path: Path
) -> None:
    for seed in range(3):
        rng = random.Random(seed)
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        async with target(kind, folder) as t:
            name = f"p{seed}"
            runs: list[tuple[int, int]] = []  # (checkpoint when a run started, deliveries before it)
            writing = anyio.Event()

            async def writer(seed: int = seed, writing: anyio.Event = writing) -> None:
                wrng = random.Random(seed + 100)
                for i in range(40):
                    k = wrng.randint(1, 4)
                    batch = [EventData("A", {"n": i * 10 + j}) for j in range(k)]
                    assert isinstance(await store.append(f"s{seed}-{wrng.randrange(5)}", batch), Success)
                    await anyio.sleep(wrng.uniform(0, 0.002))
                writing.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                while True:
                    finished = writing.is_set()
                    runs.append((await t.model.load_position(name), len(t.delivered)))
                    projector = t.projector(store, name, batch_size=rng.choice([1, 3, 50]))
                    if finished:
                        await projector.catch_up()
                        break
                    with anyio.move_on_after(rng.uniform(0, 0.01)):
                        await projector.run()
            everything = await all_rows(store)
            async with target(kind, folder, name="rebuilt") as fresh:
                await fresh.projector(store, name).catch_up()
                assert await fresh.rows() == everything
            if kind == "callback":  # at least once: runs may deliver again what was after the checkpoint
                ends = [d for _, d in runs[1:]] + [len(t.delivered)]
                per_run = [
                    (start, [r[0] for r in t.delivered[d:end]])
                    for (start, d), end in zip(runs, ends, strict=True)
                ]
                check_at_least_once(per_run, [r[0] for r in everything])
                assert dedupe(await t.rows()) == everything
            else:
                assert await t.rows() == everything  # exactly once, in order
            assert await t.model.load_position(name) == await store.head()


# ---------------------------------------------------------------------------------------- SIGKILL


async def start_child(
    mode: str, events_db: Path, out: Path, round_: int, log: IO[bytes]
) -> anyio.abc.Process:
    backend = BACKENDS[round_ % 2]
    args = [sys.executable, str(CHILD), mode, str(events_db), str(out), str(round_), backend]
    proc = await anyio.open_process(args, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    with anyio.fail_after(60):
        line = await proc.stdout.receive()
    assert line.startswith(b"ready"), line
    return proc


async def write_and_kill(
    store: EventStore, proc: anyio.abc.Process, n: int, rng: random.Random, log: IO[bytes]
) -> int:
    """Append a few events at a time while the child runs, kill it at a random moment; the next ``n``."""
    with anyio.move_on_after(rng.uniform(0.01, 0.3)):
        while True:
            n = await write(store, n, rng.randint(1, 5))
            await anyio.sleep(0.005)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()
    log.seek(0)
    assert proc.returncode == -signal.SIGKILL, log.read().decode()  # not dead by itself
    return await store.head()  # a write cut short by the timeout may have gone in


@pytest.fixture
def child_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    """A file for the children's stderr, read back when one died by itself."""
    with open(tmp_path / "child.log", "w+b") as log:
        yield log


def _model_file(path: Path) -> tuple[int, list[Row]]:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT position FROM streamsrc_projections WHERE name = ?", (NAME,)).fetchall()
        return (found[0][0] if found else 0), [tuple(r) for r in conn.execute(SELECT_ROWS)]
    finally:
        conn.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_sigkilled_sqlite_projection_resumes_with_every_event_applied_once(
    tmp_path: Path, child_log: IO[bytes]
) -> None:
    events_db, model_db = tmp_path / "events.db", tmp_path / "model.db"
    rng = random.Random(1)
    checkpoints = []
    async with open_store(f"sqlite:///{events_db}") as store:
        n = 0
        for round_ in range(3):
            n = await write(store, n, 300)  # a backlog: the kill lands mid-way more often than not
            proc = await start_child("sqlite", events_db, model_db, round_, child_log)
            n = await write_and_kill(store, proc, n, rng, child_log)
            # Killed mid-way or not, the model's rows are exactly the events up to its checkpoint.
            checkpoint, rows = await anyio.to_thread.run_sync(_model_file, model_db)
            assert rows == [r for r in await all_rows(store) if r[0] <= checkpoint]
            checkpoints.append(checkpoint)
        async with SqliteReadModel(str(model_db), SCHEMA) as model:
            projector = Projector(store, Projection(NAME, insert_rows), model, batch_size=BATCH_SIZE)
            assert (await projector.catch_up()).lag == 0
            resumed = [tuple(r) for r in await model.query(SELECT_ROWS)]
        async with target("sqlite", tmp_path, name="rebuilt") as fresh:
            await fresh.projector(store, NAME).catch_up()
            assert resumed == await fresh.rows() == await all_rows(store)
    assert checkpoints == sorted(checkpoints)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_sigkilled_callback_projection_redelivers_only_after_its_checkpoint(
    tmp_path: Path, child_log: IO[bytes]
) -> None:
    events_db, out = tmp_path / "events.db", tmp_path / "deliveries.txt"
    out.touch()
    rng = random.Random(2)
    starts = [0]  # the checkpoint when each run started
    async with open_store(f"sqlite:///{events_db}") as store:
        n = 0
        for round_ in range(3):
            n = await write(store, n, 300)
            proc = await start_child("callback", events_db, out, round_, child_log)
            n = await write_and_kill(store, proc, n, rng, child_log)
            starts.append(await store.load_checkpoint(NAME))
        handler = delivery_writer(str(out), 3)
        model = CallbackReadModel(store)
        assert (
            await Projector(store, Projection(NAME, handler), model, batch_size=BATCH_SIZE).catch_up()
        ).lag == 0
        everything = [e.position for e in await store.read_all().to_list()]
    deliveries = read_deliveries(str(out))
    runs = [(start, [p for r, p in deliveries if r == round_]) for round_, start in enumerate(starts)]
    check_at_least_once(runs, everything)


# ---------------------------------------------------------------------------- live, many writers


@pytest.mark.parametrize("kind", EXACTLY_ONCE)
async def test_live_with_concurrent_writers_every_event_is_applied_once_in_stream_order(
    store: EventStore, kind: str, tmp_path: Path
) -> None:
    async def writer(w: int) -> None:
        rng = random.Random(w)
        for i in range(25):
            size = 1 if rng.random() < 0.6 else rng.randint(2, 6)
            batch = [EventData(rng.choice("AB"), {"n": w * 1000 + i * 10 + j}) for j in range(size)]
            assert isinstance(await store.append(f"s-{rng.randrange(8)}", batch), Success)
            if rng.random() < 0.3:
                await anyio.sleep(0.001)

    async with target(kind, tmp_path) as t:
        projector = t.projector(store, batch_size=16)
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.run)
            async with anyio.create_task_group() as writers:
                for w in range(4):
                    writers.start_soon(writer, w)

            async def caught_up() -> bool:
                return (await projector.status()).lag == 0

            await wait_until(caught_up)
            tg.cancel_scope.cancel()
        rows = await t.rows()
        assert rows == await all_rows(store)
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        seqs: dict[str, list[int]] = {}
        for _, stream, seq, _, _ in rows:
            seqs.setdefault(stream, []).append(seq)
        assert all(s == list(range(1, len(s) + 1)) for s in seqs.values())
        assert (await projector.status()).lag == 0


@pytest.mark.parametrize("anyio_backend", BACKENDS)
async def test_live_projection_sees_appends_made_through_another_store_on_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    async with open_store(url) as store, open_store(url) as other, target("sqlite", tmp_path) as t:
        await write(store, 0, 3)
        projector = t.projector(store, poll=Poll(min_delay=0.002, max_delay=0.05))
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.run)
            n = await write(other, 3, 4)
            await wait_until(lambda: _eq(t.rows(), all_rows(other)))
            await write(other, n, 2)
            await wait_until(lambda: _is(t.model.load_position("p"), 9))
            tg.cancel_scope.cancel()
        assert await t.rows() == await all_rows(store)


# ----------------------------------------------------------------------------------- poison events

POISON = 9  # the event n=9: position 10, stream s-0 seq 4, type B


async def _poisoned_store(store: EventStore) -> list[Row]:
    await write(store, 0, 20, poison={POISON})
    return await all_rows(store)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
async def test_stop_names_the_poison_event_and_keeps_everything_before_it(
    kind: str, batch_size: int, tmp_path: Path
) -> None:
    store = MemoryStore()
    everything = await _poisoned_store(store)
    async with target(kind, tmp_path, poisoned) as t:
        for _ in range(2):  # running again fails again, on the same event
            with pytest.raises(ProjectionFailed) as failed:
                await t.projector(store, batch_size=batch_size).catch_up()
            error = failed.value
            assert (error.projection, error.position, error.stream, error.seq, error.type) == (
                "p",
                10,
                "s-0",
                4,
                "B",
            )
            assert "position 10" in str(error)
            assert "'s-0' #4" in str(error)
            assert "B" in str(error)
            assert "ValueError: poison at 10" in str(error)
            assert isinstance(error.cause, ValueError)
            assert await t.model.load_position("p") == 9
            rows = await t.rows()
            assert (dedupe(rows) if kind == "callback" else rows) == everything[:POISON]
        assert await t.model.dead_letters() == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 4, 1000])
async def test_retry_applies_a_flaky_event_once_in_order(kind: str, batch_size: int, tmp_path: Path) -> None:
    store = MemoryStore()
    everything = await _poisoned_store(store)
    tries: Counter[int] = Counter()

    def flaky(event: RecordedEvent) -> Exception | None:
        if not event.data.get("poison"):
            return None
        tries[event.position] += 1
        return ValueError("not yet") if tries[event.position] <= 3 else None

    async with target(kind, tmp_path, flaky) as t:
        # The batch's try counts as the first: the event is tried until it succeeds, on the 4th.
        policy = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0)
        status = await t.projector(store, batch_size=batch_size, on_error=Retry(policy)).catch_up()
        assert status.lag == 0
        rows = await t.rows()
        assert (dedupe(rows) if kind == "callback" else rows) == everything
        assert tries[10] == 4
        assert await t.model.dead_letters() == []


@pytest.mark.parametrize("kind", EXACTLY_ONCE)
@pytest.mark.parametrize("batch_size", [1, 4])
async def test_retries_exhausted_then_stop_or_dead_letters(
    kind: str, batch_size: int, tmp_path: Path
) -> None:
    store = MemoryStore()
    everything = await _poisoned_store(store)
    tries: Counter[int] = Counter()

    def always(event: RecordedEvent) -> Exception | None:
        error = poisoned(event)
        if error is not None:
            tries[event.position] += 1
        return error

    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)
    async with target(kind, tmp_path, always, name="stop") as t:
        with pytest.raises(ProjectionFailed) as failed:
            await t.projector(store, batch_size=batch_size, on_error=Retry(policy, then=Stop())).catch_up()
        assert failed.value.position == 10
        assert await t.rows() == everything[:POISON]
        assert await t.model.load_position("p") == 9
        # max_attempts counts every try, the batch's included.
        assert tries[10] == 3
    tries.clear()
    async with target(kind, tmp_path, always, name="park") as t:
        status = await t.projector(
            store, batch_size=batch_size, on_error=Retry(policy, then=DeadLetters())
        ).catch_up()
        assert status.lag == 0
        assert await t.rows() == everything[:POISON] + everything[POISON + 1 :]
        assert [d.position for d in await t.model.dead_letters("p")] == [10]
        assert tries[10] == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
async def test_dead_letters_set_poison_events_aside_and_go_on(
    kind: str, batch_size: int, tmp_path: Path
) -> None:
    store = MemoryStore()
    await write(store, 0, 20, poison={4, POISON, 19})  # the last event is poison too
    everything = await all_rows(store)
    good = [r for r in everything if r[4] not in (4, POISON, 19)]
    async with target(kind, tmp_path, poisoned) as t:
        reports: list[Progress] = []
        status = await t.projector(store, batch_size=batch_size, on_error=DeadLetters()).catch_up(
            reports.append
        )
        rows = await t.rows()
        assert (dedupe(rows) if kind == "callback" else rows) == good
        assert (status.position, status.lag) == (20, 0)
        assert reports[-1].dead_letters == 3
        letters = await t.model.dead_letters("p")
        assert [(d.projection, d.position, d.stream, d.seq, d.type, d.error) for d in letters] == [
            ("p", 5, "s-1", 2, "A", "ValueError: poison at 5"),
            ("p", 10, "s-0", 4, "B", "ValueError: poison at 10"),
            ("p", 20, "s-1", 7, "B", "ValueError: poison at 20"),
        ]
        assert [str(d.id) for d in letters] == [
            str(e.id) for e in await store.read_all().to_list() if e.data.get("poison")
        ]
        assert await t.model.dead_letters("other") == []
        assert await t.model.dead_letters() == letters
        # Running again applies nothing again, and does not retry the dead letters.
        before = await t.rows()
        await t.projector(store, batch_size=batch_size, on_error=DeadLetters()).catch_up()
        assert await t.rows() == before
        assert len(await t.model.dead_letters()) == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
async def test_a_batch_with_a_dead_letter_still_moves_the_checkpoint_past_skipped_events(
    kind: str, batch_size: int, tmp_path: Path
) -> None:
    store = MemoryStore()
    await write(store, 0, 20, poison={14, 18})  # 18 is the last A; the B after it is skipped
    async with target(kind, tmp_path, poisoned) as t:
        status = await t.projector(
            store, types={"A"}, batch_size=batch_size, on_error=DeadLetters()
        ).catch_up()
        assert (status.position, status.lag) == (20, 0)
        rows = await t.rows()
        assert (dedupe(rows) if kind == "callback" else rows) == [
            r for r in await all_rows(store) if r[3] == "A" and r[4] not in (14, 18)
        ]
        assert [d.position for d in await t.model.dead_letters("p")] == [15, 19]


async def test_sqlite_dead_letters_and_checkpoint_survive_a_restart(tmp_path: Path) -> None:
    store = MemoryStore()
    n = await write(store, 0, 12, poison={POISON, 11})
    calls: list[int] = []

    def counting(event: RecordedEvent) -> Exception | None:
        calls.append(event.position)
        return poisoned(event)

    async with target("sqlite", tmp_path, counting) as t:
        await t.projector(store, batch_size=5, on_error=DeadLetters()).catch_up()
    calls.clear()
    async with target("sqlite", tmp_path, counting) as t:  # the same file, opened again
        assert await t.model.load_position("p") == 12
        assert [d.position for d in await t.model.dead_letters("p")] == [10, 12]
        await write(store, n, 2)
        await t.projector(store, batch_size=5, on_error=DeadLetters()).catch_up()
        assert calls == [13, 14]  # the dead letters were not applied again
        assert await t.rows() == [r for r in await all_rows(store) if r[4] not in (POISON, 11)]


@pytest.mark.parametrize(
    "on_error",
    [Stop(), DeadLetters(), Retry(RetryPolicy(max_attempts=2, base_delay=0.0), then=DeadLetters())],
)
async def test_a_locked_sqlite_read_model_is_not_blamed_on_an_event(
    on_error: OnError, tmp_path: Path
) -> None:
    store = MemoryStore()
    await write(store, 0, 5)
    async with SqliteReadModel(str(tmp_path / "model.db"), SCHEMA, busy_timeout=0.02) as model:
        other = sqlite3.connect(tmp_path / "model.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the file
            projector = Projector(store, Projection("p", insert_rows), model, on_error=on_error)
            with pytest.raises(StoreUnavailable, match="database is locked"):
                await projector.catch_up()
            assert await model.dead_letters() == []
            assert await model.load_position("p") == 0
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await projector.catch_up()).lag == 0
        assert [tuple(r) for r in await model.query(SELECT_ROWS)] == await all_rows(store)
        assert await model.dead_letters() == []


async def test_a_callback_handler_returning_failure_fails(tmp_path: Path) -> None:
    store = MemoryStore()
    everything = await _poisoned_store(store)
    delivered: list[Row] = []
    parked: list[DeadLetter] = []

    async def handler(events: Sequence[RecordedEvent]) -> Success[None] | Failure[str]:
        if any(e.data.get("poison") for e in events):
            return Failure("refused")
        delivered.extend(map(row, events))
        return Success(None)

    stop = CallbackReadModel(MemoryStore())
    with pytest.raises(ProjectionFailed) as failed:
        await Projector(store, Projection("p", handler), stop, batch_size=4).catch_up()
    assert failed.value.position == 10
    assert isinstance(failed.value.cause, EffectFailed)
    assert failed.value.cause.failure == "refused"
    assert delivered == everything[:POISON]

    delivered.clear()
    park = CallbackReadModel(MemoryStore(), on_dead_letter=parked.append)
    await Projector(store, Projection("p", handler), park, batch_size=4, on_error=DeadLetters()).catch_up()
    assert delivered == everything[:POISON] + everything[POISON + 1 :]
    assert [(d.position, d.error) for d in parked] == [(10, "EffectFailed: refused")]
    assert await park.dead_letters() == parked


# ------------------------------------------------------------------------- batching and progress


@pytest.mark.parametrize("kind", EXACTLY_ONCE)
async def test_max_wait_batches_give_the_same_model(store: EventStore, kind: str, tmp_path: Path) -> None:
    n = await write(store, 0, 60)
    async with (
        target(kind, tmp_path, name="pages") as pages,
        target(kind, tmp_path, name="grouped") as grouped,
    ):
        await pages.projector(store, batch_size=7).catch_up()
        grouped_projector = grouped.projector(store, batch_size=7, max_wait=0.005)
        status = await grouped_projector.catch_up()
        assert (status.position, status.lag) == (60, 0)
        assert await grouped.rows() == await pages.rows() == await all_rows(store)
        async with anyio.create_task_group() as tg:
            tg.start_soon(grouped_projector.run)
            for _ in range(5):
                n = await write(store, n, 3)
                await anyio.sleep(0.002)

            async def caught_up() -> bool:
                return (await grouped_projector.status()).lag == 0

            await wait_until(caught_up)
            tg.cancel_scope.cancel()
        assert await grouped.rows() == await all_rows(store)


@pytest.mark.parametrize("max_wait", [0.0, 0.005])
async def test_progress_reports_grow_and_end_caught_up(
    store: EventStore, max_wait: float, tmp_path: Path
) -> None:
    await write(store, 0, 50)
    assert isinstance(await store.append("other", [EventData("A", {"n": 50})]), Success)
    async with target("sqlite", tmp_path) as t:
        projector = t.projector(store, stream_prefix="s-", batch_size=6, max_wait=max_wait)
        reports: list[Progress] = []
        status = await projector.catch_up(reports.append)
        assert len(reports) > 2
        for before, after in itertools.pairwise(reports):
            assert before.position <= after.position
            assert before.events <= after.events
            assert before.fraction <= after.fraction
            assert before.elapsed <= after.elapsed
        assert all(0.0 <= p.fraction <= 1.0 and p.name == "p" for p in reports)
        assert not any(p.caught_up for p in reports[:-1])
        last = reports[-1]
        assert (last.caught_up, last.lag, last.fraction, last.position, last.head) == (True, 0, 1.0, 51, 51)
        assert last.events == 50
        assert last.rate >= 0
        assert (status.position, status.lag) == (51, 0)
        # The progress stream of a run that has nothing to do: one report, caught up.
        again = await projector.progress(live=False).to_list()
        assert [(p.position, p.events, p.caught_up, p.fraction) for p in again] == [(51, 0, True, 1.0)]


# ------------------------------------------------------------------------------ ProjectionService


async def count(model: SqliteReadModel) -> int:
    return int((await model.query("SELECT count(*) FROM applied"))[0][0])


async def test_rebuild_serves_the_old_model_then_switches_to_the_fresh_one(
    store: EventStore, tmp_path: Path
) -> None:
    entered, release = threading.Event(), threading.Event()
    fresh_path = str(tmp_path / "fresh.db")

    def gated_insert(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        if conn.execute("PRAGMA database_list").fetchone()[2] == fresh_path and not release.is_set():
            entered.set()  # the rebuild's first batch: hold it while the test looks at the old model
            release.wait(10)
        insert_rows(conn, events)

    n = await write(store, 0, 30)
    projection = Projection("p", gated_insert)
    async with (
        SqliteReadModel(str(tmp_path / "old.db"), SCHEMA) as old,
        SqliteReadModel(fresh_path, SCHEMA) as fresh,
        ProjectionService(store, projection, old, batch_size=10, poll=FAST_POLL) as service,
    ):
        assert service.model is old
        await wait_until(lambda: _is(count(old), 30))
        returned: list[SqliteReadModel] = []
        reports: list[Progress] = []

        async def rebuild() -> None:
            returned.append(await service.rebuild(fresh, reports.append))

        async with anyio.create_task_group() as tg:
            tg.start_soon(rebuild)
            with anyio.fail_after(10):
                while not entered.is_set():  # noqa: ASYNC110 (a thread sets it)
                    await anyio.sleep(0.01)
            assert service.model is old  # still serving, and still following the log
            n = await write(store, n, 5)
            await wait_until(lambda: _is(count(old), 35))
            assert await count(fresh) == 0
            release.set()
        assert returned == [old]
        assert service.model is fresh
        assert [tuple(r) for r in await fresh.query(SELECT_ROWS)] == await all_rows(store)
        assert reports[-1].caught_up
        status = await service.status()
        assert (status.position, status.lag) == (35, 0)
        # The fresh model follows the log live; the old one has stopped.
        await write(store, n, 4)
        await wait_until(lambda: _is(count(fresh), 39))
        assert [tuple(r) for r in await fresh.query(SELECT_ROWS)] == await all_rows(store)
        assert await count(old) == 35
        assert await old.load_position("p") == 35
        assert service.last is not None


async def test_a_service_block_ends_with_the_error_itself(tmp_path: Path) -> None:
    store = MemoryStore()
    await _poisoned_store(store)
    async with target("memory", tmp_path, poisoned) as t:
        with pytest.raises(ProjectionFailed) as failed:  # the live projection's error, not a group
            async with ProjectionService(store, Projection("p", t.handler), t.model, poll=FAST_POLL):
                await anyio.sleep_forever()
        assert failed.value.position == 10
        assert len(await t.rows()) == POISON
    async with target("memory", tmp_path) as t:
        with pytest.raises(KeyError):  # the block's own error, not a group
            async with ProjectionService(store, Projection("p", t.handler), t.model, poll=FAST_POLL):
                raise KeyError("mine")
        with anyio.move_on_after(0.05) as scope:  # cancelled from outside: ends quietly
            async with ProjectionService(store, Projection("p", t.handler), t.model, poll=FAST_POLL):
                await anyio.sleep_forever()
        assert scope.cancelled_caught
