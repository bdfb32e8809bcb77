"""Benchmark of streamsrc's SQLite event store against raw ``sqlite3`` and the ``eventsourcing`` library.

Run from the repository root::

    python bench/store_sqlite.py                  # full run (1-2 minutes), a report; exit 0
    python bench/store_sqlite.py --check          # same, exit 1 if a target is missed
    python bench/store_sqlite.py --quick          # small sizes: a smoke test for CI (~10 s)
    python bench/store_sqlite.py --repeat 5 --only single --only read

Machines are noisy, so every target is a *ratio* measured in one process run:
the variants being compared run interleaved (A B C A B C ...) ``--repeat``
times (after one small untimed warm-up round); the tables show the median rate
of each variant and the ratio of the medians ``streamsrc / reference`` (plus
the range of the per-round ratios, to show the noise). Every write variant
gets a fresh database file in a temporary folder for every round; opening it
(and creating the tables) is not timed. All of them use WAL and
``synchronous=NORMAL``.

References: *raw* is the standard library's ``sqlite3`` doing the same SQL work
in this process, on the same table and indexes as streamsrc (the file is made
by streamsrc itself), with the same JSON encoding. *eventsourcing* is the
``eventsourcing`` library's SQLite persistence module (``PERSISTENCE_MODULE=
eventsourcing.sqlite``, ``SQLITE_DBNAME``): it uses WAL but has no setting for
``synchronous`` (SQLite's default, FULL, applies), so the benchmark runs it on a
connection pool that adds ``PRAGMA synchronous=NORMAL`` (checked and printed);
an info row shows it at its default too.

Targets:

* single-event appends (one transaction each, events over many streams):
  streamsrc >= 0.5x raw ``BEGIN IMMEDIATE; SELECT MAX(seq); INSERT; COMMIT``,
  >= 2x eventsourcing (one aggregate ``save`` per event). Info rows: a plain
  autocommit ``INSERT``, the raw transaction run through a thread hop like
  streamsrc's (dedicated thread + queue + ``loop.call_soon_threadsafe``), and
  the hop alone;
* batched appends, (a) many streams x 20 events, one append each, and (b) one
  stream receiving batches of 100: streamsrc >= 0.6x raw ``executemany`` in
  one transaction per batch, >= 3x eventsourcing (one ``save`` per batch);
* reading one long stream to the end with JSON decoded: streamsrc
  ``read(stream).fold`` >= 0.8x a raw keyset-paged scan (pages of 1,000) with
  ``json.loads`` per row, >= 4x eventsourcing's replay (``repository.get``, no
  snapshots);
* a catch-up whose handler reads ``e.data``: ``read_all().chunks()`` folded by a
  handler that reads every event's data >= 0.8x a raw scan of the log by
  position (pages of 1,000) with ``json.loads`` per row;
* memory: draining ``read_all`` of 1M events in a fresh subprocess grows peak
  RSS by at most 50 MB (Linux: ``VmHWM``; ``ru_maxrss`` is inherited from the
  parent across exec, so it cannot show the child's own growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
from _common import (
    Report,
    Table,
    add_common_args,
    parse_checked,
    ru_maxrss_mb,
    vm_hwm_mb,
)
from _sqlite import (
    Run,
    Variant,
    bench_root,
    count_rows,
    es_app_class,
    es_available,
    es_env,
    es_synchronous_name,
    rate_cells,
    raw_connect,
    sqlite_url,
    subject_row,
    versus,
)
from _sqlite import measure as _measure
from returns.result import Failure

from streamsrc.events import EventData
from streamsrc.store import open_store

T = TypeVar("T")

MEMORY_LIMIT_MB = 50.0
"""Largest peak-RSS growth allowed while draining ``read_all``."""

PAGE = 1000
"""Rows per page of the raw paged scan (streamsrc's default ``page_size``)."""

INSERT = "INSERT INTO events (stream, seq, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)"
MAX_SEQ = "SELECT MAX(seq) FROM events WHERE stream = ?"
COLUMNS = "stream, seq, position, type, data, metadata, id, time"
PAGE_SQL = f"SELECT {COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?"
LOG_SQL = f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"

ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
"""The raw references encode JSON exactly as streamsrc does (compact, UTF-8, no NaN)."""


@dataclass(frozen=True)
class Sizes:
    single: int  # single-event appends ...
    single_streams: int  # ... spread over this many streams
    many_streams: int  # batched (a): streams ...
    per_stream: int  # ... x events, one append per stream
    batches: int  # batched (b): batches ...
    batch: int  # ... x events, all to one stream
    read: int  # events in the stream read to the end
    es_read: int  # events in eventsourcing's aggregate (replay is slow)
    memory: int  # events drained by read_all in the memory subprocess


FULL = Sizes(
    single=5_000,
    single_streams=100,
    many_streams=1_000,
    per_stream=20,
    batches=200,
    batch=100,
    read=100_000,
    es_read=100_000,
    memory=1_000_000,
)
QUICK = Sizes(
    single=300,
    single_streams=30,
    many_streams=50,
    per_stream=20,
    batches=10,
    batch=100,
    read=5_000,
    es_read=5_000,
    memory=50_000,
)


def payload(i: int) -> dict[str, Any]:
    """The JSON data of event ``i`` (the same for every variant)."""
    return {"n": i, "name": f"item-{i}", "amount": i / 4}


def now_us() -> int:
    return time.time_ns() // 1000


# ---------------------------------------------------------------------------- database files


async def create_store_file(path: Path) -> None:
    """A new database with streamsrc's schema, made by streamsrc (so raw uses the same tables)."""
    async with open_store(sqlite_url(path)):
        pass


def check_count(path: Path, table: str, expected: int, who: str) -> None:
    got = count_rows(path, table)
    if got != expected:
        raise RuntimeError(f"{who} stored {got} events, expected {expected}")


_GENERATE = """
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :n)
INSERT INTO events (stream, seq, id, type, data, metadata, time)
SELECT 'stream-' || ((i - 1) % :streams), (i - 1) / :streams + 1, randomblob(16), 'Bumped',
       json_object('n', i, 'name', 'item-' || i, 'amount', i / 4.0), NULL, :us + i
FROM k
"""


def generate_events(path: Path, n: int, streams: int) -> None:
    """Fill streamsrc's ``events`` table with events 1..n spread round-robin over ``stream-0``,
    ``stream-1``, ... (setup only, generated inside SQLite in one transaction: fast).

    Event ``i`` has data ``payload(i)`` (as SQLite writes JSON) and its own time.
    """
    conn = raw_connect(path)
    try:
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the random ids' index stays cached
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_GENERATE, {"n": n, "streams": streams, "us": now_us() - n})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    check_count(path, "events", n, "setup")


# ---------------------------------------------------------------------------- raw references


def raw_append_one(conn: sqlite3.Connection, stream: str, events: Sequence[EventData]) -> int:
    """One event (``events`` holds exactly one) in one transaction, version read first:
    the fair one-row reference."""
    (e,) = events
    conn.execute("BEGIN IMMEDIATE")
    try:
        current: int = conn.execute(MAX_SEQ, (stream,)).fetchone()[0] or 0
        conn.execute(INSERT, (stream, current + 1, e.id.bytes, e.type, ENCODE(e.data), None, now_us()))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return current + 1


def raw_append_batch(conn: sqlite3.Connection, stream: str, events: Sequence[EventData]) -> int:
    """A batch in one transaction: version read, then ``executemany``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current: int = conn.execute(MAX_SEQ, (stream,)).fetchone()[0] or 0
        us = now_us()
        rows = [
            (stream, current + 1 + k, e.id.bytes, e.type, ENCODE(e.data), None, us)
            for k, e in enumerate(events)
        ]
        conn.executemany(INSERT, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return current + len(rows)


def raw_read(conn: sqlite3.Connection, stream: str, limit: int) -> int:
    """Keyset-paged scan of one stream, ``json.loads`` of data (and metadata) per row; sum of ``n``."""
    loads = json.loads
    total = 0
    after = 0
    left = limit
    while left > 0:
        rows = conn.execute(PAGE_SQL, (stream, after, min(PAGE, left))).fetchall()
        if not rows:
            break
        for row in rows:
            data = loads(row[4])
            if row[5] is not None:
                loads(row[5])
            total += data["n"]
        after = rows[-1][1]
        left -= len(rows)
    return total


def raw_catch_up(conn: sqlite3.Connection, limit: int) -> int:
    """Keyset-paged scan of the global log by position, ``json.loads`` of data (and metadata) per
    row, a page handed over as a batch; sum of ``n``."""
    loads = json.loads
    total = 0
    after = 0
    left = limit
    while left > 0:
        rows = conn.execute(LOG_SQL, (after, min(PAGE, left))).fetchall()
        if not rows:
            break
        for row in rows:
            data = loads(row[4])
            if row[5] is not None:
                loads(row[5])
            total += data["n"]
        after = rows[-1][2]
        left -= len(rows)
    return total


RawAppend = Callable[[sqlite3.Connection, str, Sequence[EventData]], int]
"""``raw_append_one`` or ``raw_append_batch``."""


def _swap(append: RawAppend, stream: str, events: Sequence[EventData], conn: sqlite3.Connection) -> int:
    return append(conn, stream, events)


class HopThread:
    """A dedicated thread owning one connection; calls come in by queue, results go back by
    ``loop.call_soon_threadsafe`` (the same kind of hop as streamsrc's writer thread)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, args=(connect,), daemon=True)
        self._thread.start()

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn = connect()
        try:
            while (job := self._jobs.get()) is not None:
                fn, fut, loop = job
                try:
                    result = fn(conn)
                except BaseException as exc:
                    loop.call_soon_threadsafe(_set_exception, fut, exc)
                else:
                    loop.call_soon_threadsafe(_set_result, fut, result)
        finally:
            conn.close()

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return await fut

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def _set_result(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ---------------------------------------------------------------------------- eventsourcing


def es_classes() -> tuple[type[Any], type[Any]]:
    """``(BenchApp, Tally)``: defined on first use, so the benchmark runs without eventsourcing."""
    from eventsourcing.domain import Aggregate, event

    class Tally(Aggregate):
        def __init__(self, n: int, name: str, amount: float) -> None:
            self.total = n
            self.name = name

        @event("Bumped")
        def bump(self, n: int, name: str, amount: float) -> None:
            self.total += n

    return es_app_class(), Tally


es = cache(es_classes)
"""The eventsourcing classes, defined once (eventsourcing is imported only when first used)."""


def es_app(path: Path, synchronous: str | None = "NORMAL") -> Any:
    app_class, _ = es()
    return app_class(env=es_env(path, synchronous))


def es_tally(data: dict[str, Any]) -> Any:
    _, tally = es()
    return tally(data["n"], data["name"], data["amount"])


# ---------------------------------------------------------------------------- measuring


async def measure(variants: Sequence[Variant], repeat: int, root: Path) -> None:
    """A small untimed warm-up round (1/20 of the units), then ``repeat`` rounds, interleaved."""
    await _measure(variants, repeat, root, warm_up=20)


# ---------------------------------------------------------------------------- reporting


TABLE = Table(
    header=("variant", "events", "k ev/s", "us/ev", "min..max", "ratio", "rounds", "target", "result"),
    widths=(50, 8, 8, 7, 13, 7, 11, 7, 6),
)


def table(title: str, rows: Sequence[Sequence[str]]) -> None:
    TABLE.print([title], rows)


def ceiling(refs: Sequence[tuple[str, Variant]], es_v: Variant | None, threshold: float) -> str:
    """A note: how fast the raw references are relative to eventsourcing (streamsrc's ceiling)."""
    if es_v is None:
        return ""
    parts = ", ".join(f"{label} {r.median / es_v.median:.2f}x".strip() for label, r in refs)
    return (
        f"\n  ceiling for the {threshold:g}x eventsourcing target: raw sqlite3 itself is"
        f" {parts} eventsourcing"
    )


def info_row(v: Variant) -> list[str]:
    return [*rate_cells(v), "", "", "(info)", ""]


# ---------------------------------------------------------------------------- appends (sections 1 and 2)


@dataclass(frozen=True)
class AppendRuns:
    """The append variants' runs over one workload: a unit is one append of ``work[i]``'s events
    (``per`` of them) to its stream, in one transaction; each run checks the row count."""

    work: Sequence[tuple[str, Sequence[EventData]]]
    per: int
    raw_append: RawAppend

    async def streamsrc(self, folder: Path, units: int) -> float:
        path = folder / "s.db"
        async with open_store(sqlite_url(path)) as store:
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in self.work[:units]:
                result = await store.append(stream, events)
                if isinstance(result, Failure):
                    raise result.failure()
            elapsed = time.perf_counter() - t0
        check_count(path, "events", units * self.per, "streamsrc")
        return elapsed

    async def raw(self, folder: Path, units: int) -> float:
        path = folder / "raw.db"
        await create_store_file(path)
        conn = raw_connect(path)
        append = self.raw_append
        try:
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in self.work[:units]:
                append(conn, stream, events)
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        check_count(path, "events", units * self.per, "raw")
        return elapsed

    async def hop(self, folder: Path, units: int) -> float:
        """The raw transaction of ``raw``, run through a thread hop like streamsrc's."""
        path = folder / "hop.db"
        await create_store_file(path)
        hop = HopThread(lambda: raw_connect(path))
        append = self.raw_append
        try:
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in self.work[:units]:
                await hop.call(partial(_swap, append, stream, events))
            elapsed = time.perf_counter() - t0
        finally:
            hop.close()
        check_count(path, "events", units * self.per, "raw via hop")
        return elapsed

    def es(self, synchronous: str | None) -> Run:
        """eventsourcing: one aggregate per stream, one ``save`` per unit."""

        async def es_run(folder: Path, units: int) -> float:
            path = folder / "es.db"
            app = es_app(path, synchronous)
            tallies: dict[str, Any] = {}
            try:
                gc.collect()
                t0 = time.perf_counter()
                for stream, events in self.work[:units]:
                    tally = tallies.get(stream)
                    for e in events:
                        d = e.data
                        if tally is None:
                            tally = tallies[stream] = es_tally(d)
                        else:
                            tally.bump(d["n"], d["name"], d["amount"])
                    app.save(tally)
                elapsed = time.perf_counter() - t0
            finally:
                app.close()
            check_count(path, "stored_events", units * self.per, "eventsourcing")
            return elapsed

        return es_run


# ---------------------------------------------------------------------------- 1. single-event appends


def bench_single(sizes: Sizes, repeat: int, root: Path, report: Report) -> None:
    n, k = sizes.single, sizes.single_streams
    work = [(f"stream-{i % k}", [EventData("Bumped", payload(i))]) for i in range(n)]
    runs = AppendRuns(work, 1, raw_append_one)

    async def plain_run(folder: Path, units: int) -> float:
        path = folder / "plain.db"
        await create_store_file(path)
        conn = raw_connect(path)
        seqs: dict[str, int] = {}
        try:
            gc.collect()
            t0 = time.perf_counter()
            for stream, (e,) in work[:units]:
                seq = seqs[stream] = seqs.get(stream, 0) + 1
                conn.execute(INSERT, (stream, seq, e.id.bytes, e.type, ENCODE(e.data), None, now_us()))
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        check_count(path, "events", units, "raw plain")
        return elapsed

    async def bare_hop_run(folder: Path, units: int) -> float:
        hop = HopThread(lambda: sqlite3.connect(":memory:", check_same_thread=False))
        try:
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(units):
                await hop.call(_nothing)
            return time.perf_counter() - t0
        finally:
            hop.close()

    subject = Variant("streamsrc append([e])", n, 1, runs.streamsrc)
    raw = Variant("raw BEGIN IMMEDIATE; SELECT MAX; INSERT; COMMIT", n, 1, runs.raw)
    hop = Variant("  same raw transaction via a thread hop", n, 1, runs.hop)
    plain = Variant("raw autocommit INSERT (seq known)", n, 1, plain_run)
    bare = Variant("thread hop alone, no SQL (hops/s)", n, 1, bare_hop_run)
    variants = [raw, subject, hop, plain, bare]
    es_normal = es_default = None
    if es_available():
        es_normal = Variant("eventsourcing save() per event, sync NORMAL", n, 1, runs.es("NORMAL"))
        es_default = Variant("  eventsourcing at its default (sync FULL)", max(20, n // 10), 1, runs.es(None))
        variants += [es_normal, es_default]

    anyio.run(measure, variants, repeat, root, backend="asyncio")

    rows = [
        subject_row(subject),
        versus(report, subject, raw, 0.5, "single appends vs raw transaction"),
        versus(None, subject, hop, None, ""),
        versus(None, subject, plain, None, ""),
        info_row(bare),
    ]
    if es_normal is not None and es_default is not None:
        rows.append(versus(report, subject, es_normal, 2, "single appends vs eventsourcing"))
        rows.append(versus(None, subject, es_default, None, ""))
    hop_us = 1e6 / bare.median
    gap_us = 1e6 / subject.median - 1e6 / raw.median
    table(
        f"1. Single-event appends: {n:,} events over {k} streams, one transaction each"
        f"\n  ratio = streamsrc median / reference median; rounds = per-round ratios (noise)"
        f"\n  per event, vs the raw transaction inline: streamsrc {gap_us:+.1f} us, the same raw"
        f" transaction\n  through a thread hop {1e6 / hop.median - 1e6 / raw.median:+.1f} us;"
        f" the bare hop takes {hop_us:.1f} us"
        + ceiling([("inline", raw), ("via a thread hop", hop)], es_normal, 2),
        rows,
    )


def _nothing(conn: sqlite3.Connection) -> None:
    return None


# ---------------------------------------------------------------------------- 2. batched appends


def bench_batches(sizes: Sizes, repeat: int, root: Path, report: Report) -> None:
    many = [
        (
            f"stream-{s}",
            [EventData("Bumped", payload(s * sizes.per_stream + j)) for j in range(sizes.per_stream)],
        )
        for s in range(sizes.many_streams)
    ]
    one = [
        ("the-stream", [EventData("Bumped", payload(b * sizes.batch + j)) for j in range(sizes.batch)])
        for b in range(sizes.batches)
    ]
    for label, work, per, title in (
        (
            "a",
            many,
            sizes.per_stream,
            f"2a. Batched appends: {sizes.many_streams:,} streams x {sizes.per_stream} events,"
            " one append (transaction) per stream",
        ),
        (
            "b",
            one,
            sizes.batch,
            f"2b. Batched appends: one stream, {sizes.batches:,} batches of {sizes.batch},"
            " one append (transaction) per batch",
        ),
    ):
        _bench_batch(label, work, per, title, repeat, root, report)


def _bench_batch(
    label: str,
    work: list[tuple[str, list[EventData]]],
    per: int,
    title: str,
    repeat: int,
    root: Path,
    report: Report,
) -> None:
    runs = AppendRuns(work, per, raw_append_batch)
    n = len(work)
    subject = Variant(f"streamsrc append(stream, {per} events)", n, per, runs.streamsrc)
    raw = Variant("raw BEGIN IMMEDIATE; SELECT MAX; executemany; COMMIT", n, per, runs.raw)
    hop = Variant("  same raw transaction via a thread hop", n, per, runs.hop)
    variants = [raw, subject, hop]
    es_v = None
    if es_available():
        es_v = Variant(f"eventsourcing save() of {per} events, sync NORMAL", n, per, runs.es("NORMAL"))
        variants.append(es_v)
    anyio.run(measure, variants, repeat, root, backend="asyncio")
    rows = [
        subject_row(subject),
        versus(report, subject, raw, 0.6, f"batched appends ({label}) vs raw executemany"),
        versus(None, subject, hop, None, ""),
    ]
    if es_v is not None:
        rows.append(versus(report, subject, es_v, 3, f"batched appends ({label}) vs eventsourcing"))
    table(title + ceiling([("inline", raw), ("via a thread hop", hop)], es_v, 3), rows)


# ---------------------------------------------------------------------------- 3. reading a long stream


def bench_read(sizes: Sizes, repeat: int, root: Path, report: Report) -> None:
    n = sizes.read
    stream = "stream-0"
    setup = root / "read"
    setup.mkdir()
    s_path, raw_path = setup / "s.db", setup / "raw.db"
    t_setup = time.perf_counter()
    anyio.run(create_store_file, s_path, backend="asyncio")
    generate_events(s_path, n, streams=1)
    shutil.copyfile(s_path, raw_path)

    def expected(units: int) -> int:
        return units * (units + 1) // 2

    es_info = ""
    app: Any = None
    m = sizes.es_read
    if es_available():
        app = es_app(setup / "es.db")
        tally = es_tally(payload(1))
        for i in range(2, m + 1):
            d = payload(i)
            tally.bump(d["n"], d["name"], d["amount"])
            if i % 5000 == 0:
                app.save(tally)
        app.save(tally)
        tally_id = tally.id
        es_info = f"; eventsourcing's aggregate has {m:,} events"

    def es_read(units: int) -> int:
        version = None if units >= m else units
        return int(app.repository.get(tally_id, version=version).total)

    print(f"\n(read setup: {time.perf_counter() - t_setup:.1f} s)")

    async def main() -> list[Variant]:
        async with open_store(sqlite_url(s_path)) as store:
            conn = raw_connect(raw_path)

            def add_n(acc: int, e: Any) -> int:
                return acc + int(e.data["n"])

            def summing(who: str, read_sum: Callable[[int], Awaitable[int]]) -> Run:
                """A run timing ``read_sum(units)`` (the sum of ``n`` over the first ``units`` events)."""

                async def run(folder: Path, units: int) -> float:
                    t0 = time.perf_counter()
                    total = await read_sum(units)
                    elapsed = time.perf_counter() - t0
                    if total != expected(units):
                        raise RuntimeError(f"{who} sum {total} != {expected(units)}")
                    return elapsed

                return run

            async def streamsrc_sum(units: int) -> int:
                total: int = await store.read(stream, limit=units).fold(0, add_n)
                return total

            async def raw_sum(units: int) -> int:
                return raw_read(conn, stream, units)

            def add_batch(acc: int, batch: Sequence[Any]) -> int:
                for e in batch:  # a projection's handler: a batch of events, each one's data read
                    acc += e.data["n"]
                return acc

            async def catch_up_sum(units: int) -> int:
                total: int = await store.read_all(limit=units).chunks().fold(0, add_batch)
                return total

            async def raw_catch_up_sum(units: int) -> int:
                return raw_catch_up(conn, units)

            async def es_sum(units: int) -> int:
                return es_read(units)

            streamsrc_run = summing("streamsrc read", streamsrc_sum)
            raw_run = summing("raw read", raw_sum)
            es_run = summing("eventsourcing replay", es_sum)
            subject = Variant("streamsrc read(stream).fold (JSON decoded)", n, 1, streamsrc_run)
            raw = Variant(f"raw keyset pages of {PAGE} + json.loads per row", n, 1, raw_run)
            catch_up = Variant(
                "streamsrc read_all() batches, handler reads e.data",
                n,
                1,
                summing("streamsrc catch-up", catch_up_sum),
            )
            raw_log = Variant(
                f"raw pages of {PAGE} by position + json.loads per row",
                n,
                1,
                summing("raw catch-up", raw_catch_up_sum),
            )
            variants = [raw, subject, raw_log, catch_up]
            if app is not None:
                variants.append(Variant("eventsourcing repository.get (replay)", sizes.es_read, 1, es_run))
            try:
                await measure(variants, repeat, root)
            finally:
                conn.close()
            return variants

    try:
        variants = anyio.run(main, backend="asyncio")
    finally:
        if app is not None:
            app.close()
        shutil.rmtree(setup, ignore_errors=True)
    raw, subject, raw_log, catch_up = variants[:4]
    es_v = variants[4] if len(variants) > 4 else None
    rows = [
        subject_row(subject),
        versus(report, subject, raw, 0.8, "read one stream vs raw paged scan"),
    ]
    if es_v is not None:
        rows.append(versus(report, subject, es_v, 4, "read one stream vs eventsourcing replay"))
    rows += [
        subject_row(catch_up),
        versus(report, catch_up, raw_log, 0.8, "catch-up reading e.data vs raw paged scan"),
    ]
    table(
        f"3. Reading one stream of {n:,} events to the end, JSON decoded{es_info}"
        "\n  (rates are events/s, so they compare across sizes)" + ceiling([("", raw)], es_v, 4),
        rows,
    )


# ---------------------------------------------------------------------------- 4. read_all memory


def memory_child(path: str, n: int) -> None:
    """In a fresh process: peak RSS after opening the store and after draining read_all, as JSON."""

    async def main() -> dict[str, float | None]:
        async with open_store(sqlite_url(Path(path))) as store:
            gc.collect()
            before = (ru_maxrss_mb(), vm_hwm_mb())
            t0 = time.perf_counter()
            count = await store.read_all().count()
            elapsed = time.perf_counter() - t0
            after = (ru_maxrss_mb(), vm_hwm_mb())
        if count != n:
            raise RuntimeError(f"read_all gave {count} events, expected {n}")
        return {
            "ru_before": before[0],
            "ru_after": after[0],
            "hwm_before": before[1],
            "hwm_after": after[1],
            "seconds": elapsed,
        }

    print(json.dumps(anyio.run(main, backend="asyncio")))


def bench_memory(sizes: Sizes, root: Path, report: Report) -> None:
    n = sizes.memory
    streams = 1000
    path = root / "memory.db"
    t0 = time.perf_counter()
    anyio.run(create_store_file, path, backend="asyncio")
    generate_events(path, n, streams)
    made = time.perf_counter() - t0
    size_mb = path.stat().st_size / 2**20
    cmd = [sys.executable, __file__, "--memory-child", str(path), str(n)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    path.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{done.stderr}")
    m = json.loads(done.stdout)
    # Linux keeps a process's ru_maxrss across fork + exec: the child starts with this (big)
    # process's peak, which hides its own growth. VmHWM belongs to the new process image only.
    if m["hwm_before"] is not None:
        before, after, measure = m["hwm_before"], m["hwm_after"], "VmHWM"
    else:
        before, after, measure = m["ru_before"], m["ru_after"], "ru_maxrss"
    growth = after - before
    verdict = report.memory_verdict("read_all memory", growth, MEMORY_LIMIT_MB, f"{MEMORY_LIMIT_MB:g}")
    print()
    print(
        f"4. Memory: read_all().count() of {n:,} events over {streams} streams ({size_mb:.0f} MB file,"
        f" made in {made:.1f} s) in a fresh subprocess"
    )
    print(
        f"  peak RSS ({measure}) after open {before:.1f} MB, after draining {after:.1f} MB:"
        f" growth {growth:.1f} MB (limit {MEMORY_LIMIT_MB:g} MB): {verdict}"
        f"   [read_all at {n / m['seconds'] / 1e3:.0f} k events/s]"
    )
    print(
        f"  (ru_maxrss {m['ru_before']:.1f} -> {m['ru_after']:.1f} MB: on Linux it starts at the parent's"
        " peak, inherited across exec, so it is not used when VmHWM is available)"
    )
    sys.stdout.flush()


# ---------------------------------------------------------------------------- main

SECTIONS = ("single", "batch", "read", "memory")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3)
    parser.add_argument("--memory-child", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    return parse_checked(parser, argv)


def es_synchronous_report(root: Path) -> str:
    found = []
    for sync in ("NORMAL", None):
        app = es_app(root / f"probe-{sync}.db", sync)
        try:
            found.append(es_synchronous_name(app))
        finally:
            app.close()
    return f"eventsourcing connections: synchronous={found[0]} as benchmarked, {found[1]} at its default"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0

    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    report = Report()
    with bench_root(args, es_synchronous_report) as root:
        if "single" in sections:
            bench_single(sizes, args.repeat, root, report)
        if "batch" in sections:
            bench_batches(sizes, args.repeat, root, report)
        if "read" in sections:
            bench_read(sizes, args.repeat, root, report)
        if "memory" in sections:
            bench_memory(sizes, root, report)
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
