"""Per-stream parallelism, the checkpoint's compare-and-set and fencing, in one process (issue 17).

``Projector(..., concurrency=N)``: up to N streams at once, each stream in order, the checkpoint at
the lowest position not yet handled, the error policies per stream, exactly once for SQL models
across restarts; on asyncio and trio. Multi-process runs are in ``test_projection_workers.py``.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from streamsrc.effect import RetryPolicy
from streamsrc.errors import ProjectionFailed, ProjectionOwnedElsewhere
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import (
    CallbackReadModel,
    DeadLetters,
    MemoryLeases,
    MemoryReadModel,
    Projection,
    ProjectionWorker,
    Projector,
    Retry,
    Stop,
    partition_of,
)
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (position INTEGER NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counter (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


async def filled(streams: int = 30, rounds: int = 7) -> MemoryStore:
    store = MemoryStore()
    for r in range(rounds):
        for s in range(streams):
            await store.append(f"s-{s}", [EventData("Noted", {"r": r, "bad": False})])
    return store


def insert(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    conn.execute("UPDATE counter SET n = n + ?", (len(events),))
    conn.executemany("INSERT INTO applied VALUES (?, ?, ?)", [(e.position, e.stream, e.seq) for e in events])
    for e in events:
        if e.data.get("bad"):
            raise ValueError(f"bad event {e.position}")


async def rows(model: SqliteReadModel) -> tuple[int, list[tuple[int, str, int]]]:
    [(n,)] = await model.query("SELECT n FROM counter")
    return n, await model.query("SELECT position, stream, seq FROM applied")


def in_stream_order(applied: Sequence[tuple[int, str, int]]) -> bool:
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, stream, seq in applied:
        seqs[stream].append(seq)
    return all(s == list(range(1, len(s) + 1)) for s in seqs.values())


@pytest.mark.parametrize("concurrency", [1, 4, 64])
async def test_streams_at_once_each_in_order_and_every_event_once(concurrency: int) -> None:
    """An async handler sees each stream's events in order, every event once, and several streams
    at once when concurrency > 1; the checkpoint ends at the head."""
    store = await filled()
    seen: dict[str, list[int]] = defaultdict(list)
    running = peak = 0

    async def handler(events: Sequence[RecordedEvent]) -> None:
        nonlocal running, peak
        assert len({e.stream for e in events}) == 1 or concurrency == 1
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.001)
        running -= 1
        for e in events:
            seen[e.stream].append(e.seq)

    model = CallbackReadModel(checkpoints=store)
    projector = Projector(store, Projection("p", handler), model, concurrency=concurrency, batch_size=5)
    status = await projector.catch_up()
    assert status.position == status.head == 210
    assert all(seqs == list(range(1, 8)) for seqs in seen.values())
    assert len(seen) == 30
    assert (peak > 1) == (concurrency > 1)
    assert await store.load_checkpoint("p") == 210


async def test_a_sqlite_model_stays_exactly_once_when_a_stream_stops_the_run(tmp_path: Path) -> None:
    """A bad event stops the run (Stop) with the checkpoint before it; the other streams went on and
    their marks keep them from being applied again when the run resumes (the event fixed)."""
    store = await filled()
    await store.append("s-bad", [EventData("Noted", {"bad": True})])
    await store.append("s-late", [EventData("Noted", {"bad": False}) for _ in range(3)])
    bad_position = 211
    async with SqliteReadModel(str(tmp_path / "m.db"), SCHEMA) as model:
        projector = Projector(
            store, Projection("p", insert), model, concurrency=8, batch_size=4, on_error=Stop()
        )
        with pytest.raises(ProjectionFailed) as failed:
            await projector.catch_up()
        assert failed.value.position == bad_position
        assert await model.load_position("p") < bad_position
        n, applied = await rows(model)
        assert n == len(applied) == len({p for p, _, _ in applied})
        assert bad_position not in {p for p, _, _ in applied}

        def fixed(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
            insert(conn, [e for e in events if not e.data.get("bad")])
            conn.executemany(
                "INSERT INTO applied VALUES (?, ?, ?)",
                [(e.position, e.stream, e.seq) for e in events if e.data.get("bad")],
            )
            conn.execute("UPDATE counter SET n = n + ?", (sum(1 for e in events if e.data.get("bad")),))

        again = Projector(store, Projection("p", fixed), model, concurrency=8, batch_size=4)
        status = await again.catch_up()
        n, applied = await rows(model)
        assert n == len(applied) == len({p for p, _, _ in applied}) == status.position == await store.head()
        assert in_stream_order(applied)


@pytest.mark.parametrize("policy", ["dead-letters", "retry"])
async def test_error_policies_hold_per_stream(policy: str, tmp_path: Path) -> None:
    """DeadLetters sets the bad event aside and its stream goes on; Retry applies it again."""
    store = await filled(10, 3)
    await store.append("s-bad", [EventData("Noted", {"bad": True}), EventData("Noted", {"bad": False})])
    tries = 0

    def flaky(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        nonlocal tries
        if any(e.data.get("bad") for e in events) and policy == "retry":
            tries += 1
            if tries < 3:
                raise ConnectionError("busy")
            conn.execute("UPDATE counter SET n = n + ?", (len(events),))
            conn.executemany(
                "INSERT INTO applied VALUES (?, ?, ?)", [(e.position, e.stream, e.seq) for e in events]
            )
            return
        insert(conn, events)

    on_error = (
        DeadLetters() if policy == "dead-letters" else Retry(RetryPolicy(max_attempts=5, base_delay=0.001))
    )
    async with SqliteReadModel(str(tmp_path / "m.db"), SCHEMA) as model:
        status = await Projector(
            store, Projection("p", flaky), model, concurrency=4, on_error=on_error
        ).catch_up()
        n, applied = await rows(model)
        assert status.position == await store.head() == 32
        assert in_stream_order([a for a in applied if a[1] != "s-bad"])
        if policy == "dead-letters":
            assert [d.position for d in await model.dead_letters("p")] == [31]
            assert n == len(applied) == 31
        else:
            assert n == len(applied) == 32


async def test_two_runners_on_one_sqlite_model_refuse_each_others_batches(tmp_path: Path) -> None:
    """The checkpoint is a compare-and-set: a batch that does not start where the checkpoint is
    rolls back with ProjectionOwnedElsewhere, and the checkpoint never goes backwards."""
    store = await filled(3, 2)
    async with SqliteReadModel(str(tmp_path / "m.db"), SCHEMA) as model:
        events = await store.read_all().to_list()
        await model.apply("p", insert, events[:2], 2, expected=0)
        with pytest.raises(ProjectionOwnedElsewhere):
            await model.apply("p", insert, events[:2], 2, expected=0)  # a second runner from 0
        with pytest.raises(ProjectionOwnedElsewhere):
            await model.apply("p", insert, [], 1)  # backwards
        assert (await rows(model))[0] == 2
        assert await model.load_position("p") == 2


async def test_a_fence_taken_over_cannot_write(tmp_path: Path) -> None:
    """A worker's fencing token, once the lease went to another after expiry, is refused by the
    read model's transaction (SQLite leases in the model's own file)."""
    store = await filled(3, 2)
    events = await store.read_all().to_list()
    async with SqliteReadModel(str(tmp_path / "m.db"), SCHEMA) as model:
        leases = model.leases()
        old = await leases.acquire("p", 0, "a", ttl=0.05)
        assert old is not None
        assert await leases.acquire("p", 0, "b", ttl=10) is None
        await anyio.sleep(0.1)
        new = await leases.acquire("p", 0, "b", ttl=10)
        assert new is not None
        assert new.token == old.token + 1
        with pytest.raises(ProjectionOwnedElsewhere):
            await model.apply("p", insert, events[:2], 2, expected=0, fence=old)
        assert not await leases.renew(old, "a", 10)
        await model.apply("p", insert, events[:2], 2, expected=0, fence=new)
        assert (await rows(model))[0] == 2


async def test_workers_in_one_process_share_partitions_fairly() -> None:
    """Two workers on memory leases split four partitions two and two and apply every event once."""
    store = await filled(20, 3)
    model: MemoryReadModel[int] = MemoryReadModel(0)
    leases = MemoryLeases()
    count = Projection("count", lambda n, events: n + len(events))
    a = ProjectionWorker(store, count, model, leases, partitions=4, owner="a", lease_ttl=0.3)
    b = ProjectionWorker(store, count, model, leases, partitions=4, owner="b", lease_ttl=0.3)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        await anyio.sleep(0.15)
        tg.start_soon(b.run)
        with anyio.fail_after(10):
            while not (len(a.held) == 2 and len(b.held) == 2 and model.state == 60):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert model.state == 60
    status = await a.status()
    assert [s.lag for s in status] == [0, 0, 0, 0]
    assert sum(1 for e in await store.read_all().to_list() if partition_of(e.stream, 4) == 0) > 0


def test_cli_projection_status_shows_every_partition(tmp_path: Path) -> None:
    """``streamsrc projection status`` lists each partition of a partitioned projection: checkpoint,
    head, lag, and the worker holding its lease (``-`` when none does)."""
    import subprocess
    import sys

    path = tmp_path / "streamsrc.db"
    name = "account-email-domains"  # one of the example's projections, which the CLI shows

    async def main() -> None:
        from streamsrc.store import open_store

        async with open_store(f"sqlite:///{path}") as store, SqliteReadModel(str(path)) as model:
            for n in range(10):
                await store.append(f"u-{n}", [EventData("Noted", {})])
            worker = ProjectionWorker(
                store, Projection(name, insert_nothing), model, model.leases(), partitions=2, owner="w1"
            )
            with anyio.move_on_after(0.5):
                await worker.run()  # releases its leases when stopped
            await model.leases().acquire(name, 1, "w2", ttl=60)

    anyio.run(main)
    out = subprocess.run(
        [sys.executable, "-m", "streamsrc", "--url", f"sqlite:///{path}", "projection", "status"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    parts = [line.split() for line in out if line.startswith("  ")]
    assert [p[:5] for p in parts] == [
        [f"{name}[0/2]", "10", "10", "0", "-"],
        [f"{name}[1/2]", "10", "10", "0", "w2"],
    ]


def insert_nothing(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    pass


async def test_progress_as_a_stream_under_concurrency() -> None:
    """``progress()`` with concurrency > 1: stops early cleanly (``take``), reports catching up once
    even with nothing new, and a handler's failure (Stop) fails the stream with ProjectionFailed."""
    store = await filled(20, 3)

    async def handler(events: Sequence[RecordedEvent]) -> None:
        await anyio.sleep(0.001)

    projector = Projector(
        store, Projection("p", handler), CallbackReadModel(store), concurrency=8, batch_size=2
    )
    caught_up = await projector.progress(live=False).to_list()
    assert caught_up[-1].position == 60
    assert caught_up[-1].caught_up
    [again] = await projector.progress(live=True).take(1).to_list()  # nothing new: the catch-up is reported
    assert again.position == 60
    assert again.caught_up

    async def failing(events: Sequence[RecordedEvent]) -> None:
        if any(e.stream == "s-3" for e in events):
            raise KeyError("boom")

    broken = Projector(store, Projection("q", failing), CallbackReadModel(store), concurrency=4)
    with pytest.raises(ProjectionFailed):
        await broken.progress(live=False).drain()
