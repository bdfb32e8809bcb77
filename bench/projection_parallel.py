"""Benchmark of projections across streams and processes (issue 17).

Run from the repository root::

    python bench/projection_parallel.py                 # full run (a few minutes), a report; exit 0
    python bench/projection_parallel.py --check         # same, exit 1 if a target is missed
    python bench/projection_parallel.py --quick         # small sizes: a smoke test (~30 s)
    python bench/projection_parallel.py --only io --backend trio

Every target is a ratio measured in one run (median of ``--repeat`` rounds).

* ``io``: a handler that awaits 5 ms per batch (simulated I/O) into a
  ``CallbackReadModel``; 1,000 streams x 20 events (quick: 200 x 20), batches
  of up to 20. ``Projector(..., concurrency=C)`` for C = 1, 8, 64, 256; the
  ideal time is ``batches x 5 ms / C`` (C batches in flight at once, no other
  cost). Target: concurrency 64 >= 0.6x of its ideal (today's sequential
  runner, concurrency 1, reaches at most 1/64 of it).
* ``cpu``: today's count-per-type handler (CPU-bound, ``MemoryReadModel``) at
  concurrency 1 vs the same through the per-stream scheduler at concurrency 8
  (info: what the scheduler costs when the handler never waits). The
  comparison of concurrency 1 with the runner before issue 17 is
  ``bench/projection_sqlite.py --only catchup`` run before and after.
* ``workers``: 1 and 4 worker processes (``ProjectionWorker``, 4 partitions,
  leases in the read model's SQLite file, the event store's own file) on a
  CPU-light handler (a counter per batch); total events/s. Target: 4 workers
  >= 0.7x one worker x min(4, cores). Also the lease overhead per batch: a
  ``SqliteReadModel.apply`` with a fencing token vs without (microseconds).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
from _common import RESULTS, Report, Table, add_common_args, parse_checked, versions_line

from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import CallbackReadModel, MemoryReadModel, Projection, ProjectionWorker, Projector
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store
from streamsrc.store.memory import MemoryStore

SECTIONS = ("io", "cpu", "workers")
IO_DELAY = 0.005
CONCURRENCIES = (1, 8, 64, 256)
NAME = "bench"


async def memory_log(streams: int, per_stream: int) -> MemoryStore:
    store = MemoryStore()
    for s in range(streams):
        (await store.append(f"s-{s}", [EventData("Noted", {"i": i}) for i in range(per_stream)])).unwrap()
    return store


async def io_round(streams: int, per_stream: int, concurrency: int) -> tuple[float, int]:
    store = await memory_log(streams, per_stream)
    calls = 0

    async def handler(events: Sequence[RecordedEvent]) -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep(IO_DELAY)

    model = CallbackReadModel(checkpoints=store)
    projector = Projector(store, Projection(NAME, handler), model, batch_size=20, concurrency=concurrency)
    gc.collect()
    started = time.perf_counter()
    await projector.catch_up()
    return time.perf_counter() - started, calls


def bench_io(quick: bool, repeat: int, backend: str, report: Report) -> None:
    streams = 200 if quick else 1000
    rows = []
    anyio.run(io_round, 50, 20, 8, backend=backend)  # warm-up, untimed
    for c in CONCURRENCIES:
        results = [anyio.run(io_round, streams, 20, c, backend=backend) for _ in range(repeat)]
        seconds = statistics.median(r[0] for r in results)
        calls = results[0][1]
        ideal = calls * IO_DELAY / min(c, calls)
        ratio = ideal / seconds
        target = 0.6 if c == 64 else None
        rows.append(
            [
                f"concurrency={c}",
                f"{seconds:.3f}",
                str(calls),
                f"{ideal:.3f}",
                f"{ratio:.2f}x",
                *report.target_cells(f"io concurrency={c} vs ideal", ratio, target),
            ]
        )
    Table(
        ["variant", "seconds", "batches", "ideal s", "vs ideal", "target", "result"], [18, 8, 8, 8, 9, 7, 6]
    ).print(
        [
            f"I/O-bound handler (awaits {IO_DELAY * 1000:g} ms per batch), {streams} streams x 20 events,"
            " batches <= 20"
        ],
        rows,
    )


def count_types(state: Counter[str], events: Sequence[RecordedEvent]) -> Counter[str]:
    counts = state.copy()
    counts.update(e.type for e in events)
    return counts


async def cpu_round(store: MemoryStore, concurrency: int) -> float:
    model: MemoryReadModel[Counter[str]] = MemoryReadModel(Counter())
    projector = Projector(store, Projection(NAME, count_types), model, concurrency=concurrency)
    gc.collect()
    started = time.perf_counter()
    await projector.catch_up()
    return time.perf_counter() - started


def bench_cpu(quick: bool, repeat: int, backend: str, report: Report) -> None:
    streams = 500 if quick else 5000
    store = anyio.run(memory_log, streams, 20, backend=backend)
    events = streams * 20
    rates: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(repeat):
        for c in rates:
            rates[c].append(events / anyio.run(cpu_round, store, c, backend=backend))
    one, eight = statistics.median(rates[1]), statistics.median(rates[8])
    Table(["variant", "events/s", "ratio", "target", "result"], [18, 10, 7, 7, 6]).print(
        [f"CPU-bound handler (count per type, MemoryReadModel), {events:,} events"],
        [
            ["concurrency=1", f"{one:,.0f}", "1.00x", "(info)", ""],
            ["concurrency=8", f"{eight:,.0f}", f"{eight / one:.2f}x", "(info)", ""],
        ],
    )


# ------------------------------------------------------------------------------------------ workers


def count_batch(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    conn.execute("UPDATE counter SET n = n + ?", (len(events),))


SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


async def child(path: str, owner: str, go: str) -> None:
    """A worker process: says it is there, waits for ``go`` to exist, then works until killed."""
    async with open_store(f"sqlite:///{path}") as store, SqliteReadModel(path, busy_timeout=60) as model:
        leases = model.leases()
        await leases.heartbeat(NAME, owner, 60)
        print("ready", flush=True)
        while not await anyio.Path(go).exists():  # noqa: ASYNC110  (another process's file)
            await anyio.sleep(0.005)
        worker = ProjectionWorker(
            store,
            Projection(NAME, count_batch),
            model,
            leases,
            partitions=4,
            owner=owner,
            lease_ttl=60,
            batch_size=500,
        )
        await worker.run()


async def make_log(path: str, events: int) -> None:
    async with open_store(f"sqlite:///{path}") as store:
        per = 50
        for k in range(events // per):
            (await store.append(f"s-{k}", [EventData("Noted", {"i": i}) for i in range(per)])).unwrap()
    async with SqliteReadModel(path, SCHEMA):
        pass


def workers_round(template: Path, folder: Path, events: int, k: int) -> float:
    path = folder / f"w{k}-{time.monotonic_ns()}.db"
    for suffix in ("", "-wal", "-shm"):
        if (template.parent / (template.name + suffix)).exists():
            shutil.copy(template.parent / (template.name + suffix), path.parent / (path.name + suffix))
    go = str(path) + ".go"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(path), f"w{i}", go], stdout=subprocess.PIPE, text=True
        )
        for i in range(k)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        conn = sqlite3.connect(path)
        started = time.perf_counter()
        Path(go).touch()
        while conn.execute("SELECT n FROM counter").fetchone()[0] < events:
            time.sleep(0.005)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker ended with {p.returncode}")
        elapsed = time.perf_counter() - started
        conn.close()
        return elapsed
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def fence_overhead(folder: Path, batches: int) -> tuple[float, float]:
    """Microseconds per batch of ``apply`` (10 events) without and with a fencing token."""
    store = await memory_log(1, 10)
    events = await store.read_all().to_list()
    times = []
    async with SqliteReadModel(str(folder / "fence.db"), SCHEMA) as model:
        fence = await model.leases().acquire(NAME, 0, "me", 600)
        for use in (None, fence, None, fence):
            position = await model.load_position(f"f-{use is not None}")
            started = time.perf_counter()
            for _ in range(batches):
                await model.apply(
                    f"f-{use is not None}", count_batch, events, position + 1, expected=position, fence=use
                )
                position += 1
            times.append((time.perf_counter() - started) / batches * 1e6)
    return min(times[0], times[2]), min(times[1], times[3])


def bench_workers(quick: bool, repeat: int, backend: str, report: Report) -> None:
    events = 20_000 if quick else 100_000
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = folder / "template.db"
        anyio.run(make_log, str(template), events)
        rates: dict[int, list[float]] = {1: [], 4: []}
        for _ in range(repeat):
            for k in rates:
                rates[k].append(events / workers_round(template, folder, events, k))
        one, four = statistics.median(rates[1]), statistics.median(rates[4])
        ratio = four / (one * min(4, cores))
        no_fence, with_fence = anyio.run(fence_overhead, folder, 300 if quick else 2000, backend=backend)
    Table(["variant", "events/s", "ratio", "target", "result"], [34, 10, 7, 7, 6]).print(
        [
            f"Worker processes, 4 partitions, leases in the SQLite file, CPU-light handler; {events:,}"
            " events,"
            f" {cores} CPUs (ratio: 4 workers / (1 worker x min(4, CPUs)))"
        ],
        [
            ["1 worker", f"{one:,.0f}", "", "(info)", ""],
            ["4 workers", f"{four:,.0f}", f"{ratio:.2f}x", *report.target_cells("4 workers", ratio, 0.7)],
        ],
    )
    Table(["variant", "us/batch", "", "target", "result"], [34, 10, 7, 7, 6]).print(
        ["Lease overhead: SqliteReadModel.apply of 10 events (checkpoint compare-and-set), fenced or not"],
        [
            ["without a fencing token", f"{no_fence:.0f}", "", "(info)", ""],
            ["with a fencing token", f"{with_fence:.0f}", f"+{with_fence - no_fence:.0f}", "(info)", ""],
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        path, owner, go = argv[1:4]
        anyio.run(child, path, owner, go)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, SECTIONS, default_repeat=3, backends=("asyncio", "trio"))
    args = parse_checked(parser, argv)
    sections = args.only or list(SECTIONS)
    report = Report()
    print(versions_line([f"streamsrc {_version()}"], cpus=True))
    print(f"backend: {args.backend}")
    if "io" in sections:
        bench_io(args.quick, args.repeat, args.backend, report)
    if "cpu" in sections:
        bench_cpu(args.quick, args.repeat, args.backend, report)
    if "workers" in sections:
        bench_workers(args.quick, 1 if args.quick else args.repeat, args.backend, report)
    return report.finish(args.check)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("streamsrc")
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    RESULTS.script = "projection_parallel"
    sys.exit(main())
