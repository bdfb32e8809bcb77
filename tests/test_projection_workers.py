"""Projections across processes (issue 17): worker processes sharing one projection through leases.

Real processes (``tests/projection_worker.py``), real SQLite files and the real PostgreSQL server;
the read model's handler is not idempotent (a counter), so an event applied twice shows. The store
and the read model (and its leases) share one SQLite file, or one PostgreSQL database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from projection_worker import checks, prepare
from store_urls import fresh_postgres_database

from streamsrc.events import EventData
from streamsrc.store import EventStore, open_store

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("projection_worker.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def places(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The store's URL and the read model's place: one SQLite file, or one PostgreSQL database."""
    if kind == "sqlite":
        path = tmp_path / "events.db"
        yield f"sqlite:///{path}", str(path)
    else:
        from pg_server import session_url

        async with fresh_postgres_database(session_url()) as url:
            yield url, url


@contextmanager
def children(
    args: list[list[str]], tmp_path: Path, pause: float = 0.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes (stdout to ``out-K.txt``, stderr to ``err-K.txt``), killed when the block ends;
    ``pause``: seconds their SQLite handler sleeps inside each batch's transaction."""
    procs = []
    env = {**os.environ, "PROJECTION_WORKER_PAUSE": str(pause)}
    try:
        for k, a in enumerate(args):
            with open(tmp_path / f"out-{k}.txt", "ab") as out, open(tmp_path / f"err-{k}.txt", "ab") as err:
                procs.append(
                    subprocess.Popen([sys.executable, str(CHILD), *a], stdout=out, stderr=err, env=env)
                )
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait()


def errors(tmp_path: Path) -> str:
    return "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(tmp_path.glob("err-*.txt")))


async def append(store: EventStore, streams: int, rounds: int, tag: str, pause: float = 0.0) -> None:
    """``rounds`` events in each of ``streams`` streams, a stream's events in order, streams interleaved."""
    for r in range(rounds):
        for s in range(streams):
            (await store.append(f"{tag}-{s}", [EventData("Counted", {"r": r})])).unwrap()
        if pause:
            await anyio.sleep(pause)


async def applied_all(
    where: str, store: EventStore, procs: list[subprocess.Popen[bytes]], tmp: Path
) -> dict[str, int]:
    """Wait until the counter reaches the head of the log; the checks then."""
    head = await store.head()
    with anyio.fail_after(60):  # a bound for a hung worker, not a measurement
        while True:
            got = await checks(where)
            if got["counter"] >= head:
                return got
            for p in procs:
                assert p.poll() is None or p.returncode < 0, errors(tmp)
            await anyio.sleep(0.1)


def assert_exactly_once(got: dict[str, int], events: int) -> None:
    assert got == {"counter": events, "rows": events, "distinct": events, "disorder": 0, "backwards": 0}


def worker(
    url: str, where: str, owner: str, partitions: int = 4, ttl: float = 1.5, concurrency: int = 4
) -> list[str]:
    return ["worker", url, where, owner, str(partitions), str(ttl), str(concurrency)]


def held(tmp_path: Path, k: int) -> list[list[int]]:
    """What child ``k`` held after each rebalance."""
    text = (tmp_path / f"out-{k}.txt").read_text() if (tmp_path / f"out-{k}.txt").exists() else ""
    out = []
    for line in text.splitlines():
        if line.startswith("held [") and line.count("]") == 1:
            inside = line[len("held [") : line.index("]")]
            out.append([int(x) for x in inside.split(",") if x.strip()])
    return out


async def wait_for(condition: object, what: str) -> None:
    """Poll a child's output until ``condition()`` (30 s at most: a bound, not a measurement)."""
    with anyio.fail_after(30):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110  (another process's output)
            await anyio.sleep(0.05)


async def test_two_processes_on_one_projection_never_apply_an_event_twice(tmp_path: Path) -> None:
    """The mistake of issue 17: two processes run one projection into one SQLite file. Before the
    checkpoint was a compare-and-set, every event was applied twice (and the checkpoint could move
    backwards), both exiting 0; now a batch that would do so rolls back with ProjectionOwnedElsewhere."""
    async with places("sqlite", tmp_path) as (url, where), open_store(url) as store:
        await append(store, 40, 25, "s")
        await prepare(where)
        plain = ["plain", url, where, "-", "1", "1", "1"]
        with children([plain, plain], tmp_path) as procs:
            codes = [await anyio.to_thread.run_sync(p.wait) for p in procs]
        assert set(codes) <= {0, 3}, errors(tmp_path)
        got = await checks(where)
        position = int(await open_model_position(where))
        assert got == {
            "counter": position,
            "rows": position,
            "distinct": position,
            "disorder": 0,
            "backwards": 0,
        }
        with children([plain], tmp_path) as procs:  # a run alone finishes the job
            assert await anyio.to_thread.run_sync(procs[0].wait) == 0, errors(tmp_path)
        assert_exactly_once(await checks(where), 1000)


async def open_model_position(where: str) -> int:
    from projection_worker import NAME, open_model

    async with open_model(where) as model:
        return int(await model.load_position(NAME))


@pytest.mark.parametrize(("kind", "workers"), [("sqlite", 2), ("sqlite", 4), ("postgres", 4)])
async def test_workers_share_a_projection_and_apply_every_event_once(
    kind: str, workers: int, tmp_path: Path
) -> None:
    """Two or four worker processes, four partitions, four streams at once in each, while the parent
    appends: every event applied once, each stream in order, no checkpoint ever moved backwards, and
    the partitions shared among the workers."""
    async with places(kind, tmp_path) as (url, where):
        await prepare(where)
        async with open_store(url) as store:
            await append(store, 30, 5, "early")
            args = [worker(url, where, f"w{k}") for k in range(workers)]
            with children(args, tmp_path) as procs:
                await append(store, 40, 15, "live", pause=0.02)
                got = await applied_all(where, store, procs, tmp_path)
                assert_exactly_once(got, await store.head())

                def fair() -> bool:  # each worker's last rebalance: an even share, together every partition
                    last = [held(tmp_path, k)[-1] for k in range(workers) if held(tmp_path, k)]
                    shares = {len(h) for h in last}
                    return (
                        len(last) == workers
                        and shares == {4 // workers}
                        and sorted(i for h in last for i in h) == [0, 1, 2, 3]
                    )

                await wait_for(fair, "a fair share each")


async def test_a_worker_killed_mid_batch_leaves_its_partitions_to_the_others(tmp_path: Path) -> None:
    """SIGKILL one of two workers while it applies: once its leases expire the other takes its
    partitions over from their checkpoints, nothing lost or applied twice."""
    async with places("sqlite", tmp_path) as (url, where):
        await prepare(where)
        async with open_store(url) as store:
            pair = [worker(url, where, "a"), worker(url, where, "b")]
            with children(pair, tmp_path, pause=0.001) as procs:  # a kill lands in a transaction
                await wait_for(
                    lambda: held(tmp_path, 0) and held(tmp_path, 1) and held(tmp_path, 0)[-1], "shared"
                )
                await append(store, 40, 10, "before", pause=0.01)
                procs[0].kill()
                await anyio.to_thread.run_sync(procs[0].wait)
                await append(store, 40, 10, "after", pause=0.01)
                got = await applied_all(where, store, procs[1:], tmp_path)
                assert_exactly_once(got, await store.head())
                await wait_for(lambda: held(tmp_path, 1)[-1] == [0, 1, 2, 3], "took over")


async def test_a_worker_paused_past_its_lease_cannot_write_after_another_took_over(tmp_path: Path) -> None:
    """SIGSTOP a worker past its lease, let the other take its partitions and apply more, SIGCONT it:
    its batches are refused by the fencing token (it drops the partitions), nothing applied twice.

    The read model has a file of its own, and the worker is paused once it has applied everything:
    a worker paused inside a write transaction holds SQLite's lock on its file, and nobody can
    write that file until it resumes (SQLite's single writer; PostgreSQL would hold that partition's
    rows only)."""
    url, where = f"sqlite:///{tmp_path / 'events.db'}", str(tmp_path / "views.db")
    await prepare(where)
    async with open_store(url) as store:
        with children(
            [worker(url, where, "a", ttl=1.0), worker(url, where, "b", ttl=1.0)], tmp_path
        ) as procs:
            await wait_for(
                lambda: held(tmp_path, 0) and held(tmp_path, 1) and held(tmp_path, 0)[-1], "shared"
            )
            await append(store, 40, 5, "before", pause=0.01)
            await applied_all(where, store, procs, tmp_path)  # idle now: no batch in flight
            procs[0].send_signal(signal.SIGSTOP)
            await append(store, 40, 10, "paused", pause=0.01)
            got = await applied_all(where, store, procs, tmp_path)
            assert_exactly_once(got, await store.head())
            assert held(tmp_path, 1)[-1] == [0, 1, 2, 3]
            seen = len(held(tmp_path, 0))
            procs[0].send_signal(signal.SIGCONT)
            await append(store, 40, 5, "resumed", pause=0.01)
            await wait_for(lambda: len(held(tmp_path, 0)) > seen + 1, "the paused worker rebalanced")
            got = await applied_all(where, store, procs, tmp_path)
            assert_exactly_once(got, await store.head())
            assert procs[0].poll() is None, errors(tmp_path)  # it lost its leases, not its life
            assert "lost the lease" in (tmp_path / "err-0.txt").read_text()
