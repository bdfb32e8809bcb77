"""Benchmark of streamsrc's projections on SQLite: catching up with a long log, and live latency.

Run from the repository root::

    python bench/projection_sqlite.py                  # full run (about 2-3 minutes), a report; exit 0
    python bench/projection_sqlite.py --check          # same, exit 1 if a target is missed
    python bench/projection_sqlite.py --quick          # small sizes: a smoke test for CI (~10 s)
    python bench/projection_sqlite.py --backend trio   # the same on trio
    python bench/projection_sqlite.py --repeat 5 --only catchup

Conventions as in ``bench/store_sqlite.py``: every target is a *ratio* measured
in one process run; the variants compared run interleaved (A B C A B C ...)
``--repeat`` times after one small untimed warm-up round; tables show the
median of each variant, the ratio of the medians and the range of the
per-round ratios. WAL and ``synchronous=NORMAL`` everywhere; eventsourcing
(which has no ``synchronous`` setting) runs on a connection pool that adds
``PRAGMA synchronous=NORMAL``.

The log: accounts of 100 events each (``Opened``, then ``Deposited`` or
``Withdrawn`` -- every third -- then ``Closed``), data ``{"n", "name",
"amount"}``, generated inside SQLite in streamsrc's ``events`` table. The
projection counts events per type.

Targets (``catchup``):

* ``Projector(...).catch_up()`` of 1,000,000 events into a ``MemoryReadModel``
  whose handler counts ``e.type`` per batch (a new ``Counter`` per batch; the
  data is never decoded) >= 0.5x a hand-written ``sqlite3`` loop paging the
  same table by position (``LIMIT 1000``, the same columns) with
  ``json.loads`` of every row's data, counting types (and summing ``amount``,
  so the decoding is checked);
* the same >= 2x eventsourcing's projection rate (aim: 4x): its recorder's
  ``select_notifications`` in pages of 1,000 and its mapper's
  ``to_domain_event`` per notification, counting the event classes (and
  summing ``amount``). Its log is smaller (200,000 events): its API writes
  20,000 (aggregates of the same 100 events) and SQL copies those rows under
  new aggregate ids, since writing through the API runs at about 20k
  events/s. Rates compare across sizes.

Info rows: the same catch-up with a handler that reads ``e.data`` (decoding,
the same work as the hand-written loop), into a ``SqliteReadModel`` (one
``UPSERT`` per type per batch with ``executemany``, in the model's
transaction), ``subscribe(store, live=False).count()`` and
``store.read_all().count()`` (the layers under the projector), the
hand-written loop without ``json.loads`` (what SQLite costs alone: the
ceiling), and eventsourcing counting the notifications' topics without
decoding.

Live latency (``live``, report only): 1,000 single-event appends, awaited one
at a time with a 2 ms pause, while ``Projector(...).run()`` follows the log in
the same process; latency is from just before ``append`` to the handler
seeing the event. Variants: ``max_wait=0`` (a batch per read), ``max_wait=0.01``
(``group_within``), and a projector on a second ``SqliteStore`` object on the
same file, which is not notified of the first one's appends (as another
process would be) and so polls (2 ms, doubling up to 0.5 s while idle).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from pathlib import Path
from typing import Any

import anyio
from _common import Report, Table, add_common_args, parse_checked
from _sqlite import (
    Run,
    Variant,
    bench_root,
    count_rows,
    es_app_class,
    es_available,
    es_env,
    es_synchronous_name,
    raw_connect,
    sqlite_url,
    subject_row,
    versus,
)
from _sqlite import measure as _measure
from returns.result import Failure

from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import MemoryReadModel, Progress, Projection, Projector, subscribe
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store

PAGE = 1000
"""Rows per page of the hand-written loop and of eventsourcing's reads (streamsrc's default)."""

PER_ACCOUNT = 100
"""Events per account (stream / aggregate): Opened, 98 Deposited or Withdrawn, Closed."""

WARM_UP = 20
"""The untimed warm-up round reads ``1 / WARM_UP`` of the events."""

PAUSE = 0.002
"""Seconds between two appends in the live section (each is handled on its own)."""

COLUMNS = "stream, seq, position, type, data, metadata, id, time"
PAGE_SQL = f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"

BACKENDS = ("asyncio", "trio")


@dataclass(frozen=True)
class Sizes:
    events: int  # events in streamsrc's log (projections catch up with all of them)
    es_events: int  # events in eventsourcing's log ...
    es_written: int  # ... of which its API writes this many (SQL copies them up to es_events)
    live: int  # single-event appends in one round of the live section


FULL = Sizes(events=1_000_000, es_events=200_000, es_written=20_000, live=1_000)
QUICK = Sizes(events=50_000, es_events=20_000, es_written=5_000, live=100)


# ---------------------------------------------------------------------------- the log


def type_of(seq: int) -> str:
    """The type of an account's event number ``seq`` (1..PER_ACCOUNT)."""
    if seq == 1:
        return "Opened"
    if seq == PER_ACCOUNT:
        return "Closed"
    return "Withdrawn" if seq % 3 == 0 else "Deposited"


def expected_counts(n: int) -> Counter[str]:
    """Events per type in the first ``n`` events (``n`` a multiple of PER_ACCOUNT)."""
    if n % PER_ACCOUNT:
        raise ValueError(f"{n} is not a multiple of {PER_ACCOUNT}")
    one = Counter(type_of(s) for s in range(1, PER_ACCOUNT + 1))
    return Counter({kind: count * (n // PER_ACCOUNT) for kind, count in one.items()})


def amounts(n: int) -> float:
    """The sum of ``amount`` (``i / 4``) over events 1..n (exact in a float at these sizes)."""
    return n * (n + 1) / 8


_GENERATE = f"""
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :n)
INSERT INTO events (stream, seq, id, type, data, metadata, time)
SELECT 'account-' || ((i - 1) / {PER_ACCOUNT}), (i - 1) % {PER_ACCOUNT} + 1, randomblob(16),
       CASE WHEN (i - 1) % {PER_ACCOUNT} = 0 THEN 'Opened'
            WHEN (i - 1) % {PER_ACCOUNT} = {PER_ACCOUNT - 1} THEN 'Closed'
            WHEN ((i - 1) % {PER_ACCOUNT} + 1) % 3 = 0 THEN 'Withdrawn'
            ELSE 'Deposited' END,
       json_object('n', i, 'name', 'item-' || i, 'amount', i / 4.0), NULL, :us + i
FROM k
"""


async def create_store_file(path: Path) -> None:
    """A new database with streamsrc's schema, made by streamsrc."""
    async with open_store(sqlite_url(path)):
        pass


def generate_log(path: Path, n: int) -> None:
    """Fill streamsrc's ``events`` table with the accounts' events 1..n (setup only, generated
    inside SQLite in one transaction)."""
    conn = raw_connect(path)
    try:
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the random ids' index stays cached
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_GENERATE, {"n": n, "us": time.time_ns() // 1000 - n})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    got = count_rows(path, "events")
    if got != n:
        raise RuntimeError(f"setup stored {got} events, expected {n}")


# ---------------------------------------------------------------------------- the projections


TYPE = attrgetter("type")


def count_types(state: Counter[str], events: Sequence[RecordedEvent]) -> Counter[str]:
    """The memory handler: a new ``Counter`` (the old one is left alone), types counted in C."""
    counts = state.copy()
    counts.update(map(TYPE, events))
    return counts


@dataclass(frozen=True, slots=True)
class Totals:
    counts: Counter[str]
    amount: float


def count_decoded(state: Totals, events: Sequence[RecordedEvent]) -> Totals:
    """The memory handler that decodes: types counted, ``amount`` summed from ``e.data``."""
    amount = state.amount
    for e in events:
        amount += e.data["amount"]
    counts = state.counts.copy()
    counts.update(map(TYPE, events))
    return Totals(counts, amount)


COUNTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS type_counts (type TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
)
UPSERT = "INSERT INTO type_counts (type, n) VALUES (?, ?) ON CONFLICT (type) DO UPDATE SET n = n + excluded.n"


def upsert_counts(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """The SQLite handler: one UPSERT per type in the batch."""
    conn.executemany(UPSERT, Counter(map(TYPE, events)).items())


def raw_count(conn: sqlite3.Connection) -> Totals:
    """The hand-written loop: keyset pages of the same rows by position, ``json.loads`` per row."""
    loads = json.loads
    counts: dict[str, int] = {}
    amount = 0.0
    after = 0
    while True:
        rows = conn.execute(PAGE_SQL, (after, PAGE)).fetchall()
        for _stream, _seq, _position, kind, data, _meta, _id, _time in rows:
            amount += loads(data)["amount"]
            counts[kind] = counts.get(kind, 0) + 1
        if len(rows) < PAGE:
            return Totals(Counter(counts), amount)
        after = rows[-1][2]


def raw_count_types(conn: sqlite3.Connection) -> Counter[str]:
    """The hand-written loop without decoding: the same pages, types counted (SQLite's share)."""
    counts: dict[str, int] = {}
    after = 0
    while True:
        rows = conn.execute(PAGE_SQL, (after, PAGE)).fetchall()
        for _stream, _seq, _position, kind, _data, _meta, _id, _time in rows:
            counts[kind] = counts.get(kind, 0) + 1
        if len(rows) < PAGE:
            return Counter(counts)
        after = rows[-1][2]


def check_totals(who: str, got: Counter[str], n: int, amount: tuple[float, float] | None = None) -> None:
    """Check the counts per type after ``n`` events, and ``amount``: (the sum got, the sum expected)."""
    if got != expected_counts(n):
        raise RuntimeError(f"{who}: counts {dict(got)} after {n} events, expected {dict(expected_counts(n))}")
    if amount is not None and amount[0] != amount[1]:
        raise RuntimeError(f"{who}: amount {amount[0]} after {n} events, expected {amount[1]}")


# ---------------------------------------------------------------------------- eventsourcing


def es_classes() -> tuple[type[Any], type[Any]]:
    """``(BenchApp, Account)``: defined on first use, so the benchmark runs without eventsourcing."""
    from eventsourcing.domain import Aggregate, event

    class Account(Aggregate):
        @event("Opened")
        def __init__(self, n: int, name: str, amount: float) -> None:
            self.total = amount

        @event("Deposited")
        def deposit(self, n: int, name: str, amount: float) -> None:
            self.total += amount

        @event("Withdrawn")
        def withdraw(self, n: int, name: str, amount: float) -> None:
            self.total -= amount

        @event("Closed")
        def close(self, n: int, name: str, amount: float) -> None:
            pass

    return es_app_class(), Account


es = cache(es_classes)
"""The eventsourcing classes, defined once (eventsourcing is imported only when first used)."""


def es_app(path: Path, synchronous: str | None = "NORMAL") -> Any:
    app_class, _ = es()
    return app_class(env=es_env(path, synchronous))


_COPY_IDS = """
CREATE TEMP TABLE copy_ids AS
SELECT old, lower(hex(randomblob(16))) AS new
FROM (SELECT DISTINCT originator_id AS old FROM stored_events WHERE rowid <= :n)
"""
_COPY_ROWS = """
INSERT INTO stored_events (originator_id, originator_version, topic, state)
SELECT c.new, s.originator_version, s.topic, s.state
FROM stored_events s JOIN copy_ids c ON c.old = s.originator_id
WHERE s.rowid <= :n ORDER BY s.rowid
"""


def generate_es_log(path: Path, written: int, total: int) -> None:
    """eventsourcing's log: ``written`` events saved through its API (accounts of PER_ACCOUNT
    events, ten accounts per ``save``), then its rows copied by SQL under new aggregate ids
    up to ``total`` events (setup only)."""
    if written % PER_ACCOUNT or total % written:
        raise ValueError("es sizes must be multiples of PER_ACCOUNT and of each other")
    _, account = es()
    app = es_app(path)
    try:
        pending = []
        for first in range(1, written + 1, PER_ACCOUNT):
            a = account(first, f"item-{first}", first / 4)
            for i in range(first + 1, first + PER_ACCOUNT):
                kind = type_of(i - first + 1)
                method = a.close if kind == "Closed" else a.withdraw if kind == "Withdrawn" else a.deposit
                method(i, f"item-{i}", i / 4)
            pending.append(a)
            if len(pending) == 10:
                app.save(*pending)
                pending = []
        if pending:
            app.save(*pending)
    finally:
        app.close()
    conn = raw_connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(total // written - 1):
            conn.execute(_COPY_IDS, {"n": written})
            conn.execute(_COPY_ROWS, {"n": written})
            conn.execute("DROP TABLE copy_ids")
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    got = count_rows(path, "stored_events")
    if got != total:
        raise RuntimeError(f"eventsourcing setup stored {got} events, expected {total}")


def es_amounts(written: int, n: int) -> float:
    """The sum of ``amount`` over eventsourcing's first ``n`` events (copies of the first ``written``)."""
    return (n // written) * amounts(written) + amounts(n % written)


def es_project(app: Any, n: int, decode: bool) -> tuple[Counter[str], float]:
    """eventsourcing's projection of its first ``n`` events: pages of notifications from the
    recorder, each mapped to its domain event (``decode``), counted by class, ``amount`` summed;
    without ``decode``: topics counted, nothing decoded."""
    recorder, mapper = app.recorder, app.mapper
    counts: dict[str, int] = {}
    amount = 0.0
    after = 0
    while after < n:
        page = recorder.select_notifications(after, PAGE, stop=n, inclusive_of_start=False)
        if decode:
            for notification in page:
                event = mapper.to_domain_event(notification)
                kind = type(event).__name__
                counts[kind] = counts.get(kind, 0) + 1
                amount += event.amount
        else:
            for notification in page:
                topic = notification.topic
                counts[topic] = counts.get(topic, 0) + 1
        if not page:
            break
        after = page[-1].id
    if not decode:  # "module:Account.Deposited" -> "Deposited"
        counts = {topic.rsplit(".", 1)[-1]: count for topic, count in counts.items()}
    return Counter(counts), amount


# ---------------------------------------------------------------------------- measuring


async def measure(variants: Sequence[Variant], repeat: int, root: Path) -> None:
    """A small untimed warm-up round (``1 / WARM_UP`` of the events), then ``repeat`` rounds."""
    await _measure(variants, repeat, root, warm_up=WARM_UP)


@contextmanager
def counting_collections() -> Iterator[list[int]]:
    """The garbage collections run in the block, per generation (a diagnostic, not timed)."""
    counts = [0, 0, 0]

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.callbacks.append(seen)
    try:
        yield counts
    finally:
        gc.callbacks.remove(seen)


# ---------------------------------------------------------------------------- reporting


TABLE = Table(
    header=("variant", "events", "k ev/s", "us/ev", "min..max", "ratio", "rounds", "target", "result"),
    widths=(56, 9, 7, 6, 13, 7, 11, 7, 6),
)


# ---------------------------------------------------------------------------- 1. catching up


def bench_catchup(sizes: Sizes, repeat: int, root: Path, report: Report, backend: str) -> None:
    n, m = sizes.events, sizes.es_events
    setup = root / "catchup"
    setup.mkdir()
    t_setup = time.perf_counter()
    logs: dict[int, Path] = {}
    for units in (n, n // WARM_UP):  # one file per size: a projector reads the log to its end
        logs[units] = setup / f"log-{units}.db"
        anyio.run(create_store_file, logs[units], backend=backend)
        generate_log(logs[units], units)
    size_mb = logs[n].stat().st_size / 2**20
    es_path = setup / "es.db"
    es_note = ""
    if es_available():
        t_es = time.perf_counter()
        generate_es_log(es_path, sizes.es_written, m)
        es_note = (
            f"\n  eventsourcing's log: {m:,} events ({sizes.es_written:,} saved through its API, copied"
            f" by SQL under new ids; {time.perf_counter() - t_es:.1f} s); rates compare across sizes"
        )
    print(f"\n(catch-up setup: {time.perf_counter() - t_setup:.1f} s, log file {size_mb:.0f} MB)")

    collections = [0, 0, 0]

    async def memory_run(folder: Path, units: int) -> float:
        async with open_store(sqlite_url(logs[units])) as store:
            model = MemoryReadModel(Counter[str]())
            projector = Projector(store, Projection("types", count_types), model)
            with counting_collections() as counts:
                t0 = time.perf_counter()
                status = await projector.catch_up()
                elapsed = time.perf_counter() - t0
            collections[:] = counts
        if status.position != units:
            raise RuntimeError(f"projector stopped at {status.position}, expected {units}")
        check_totals("streamsrc memory model", model.state, units)
        return elapsed

    async def decoding_run(folder: Path, units: int) -> float:
        async with open_store(sqlite_url(logs[units])) as store:
            decoding = MemoryReadModel(Totals(Counter(), 0.0))
            projector = Projector(store, Projection("types", count_decoded), decoding)
            t0 = time.perf_counter()
            await projector.catch_up()
            elapsed = time.perf_counter() - t0
        got = decoding.state
        check_totals("streamsrc decoding handler", got.counts, units, (got.amount, amounts(units)))
        return elapsed

    async def sqlite_model_run(folder: Path, units: int) -> float:
        async with (
            open_store(sqlite_url(logs[units])) as store,
            SqliteReadModel(str(folder / "model.db"), COUNTS_SCHEMA) as model,
        ):
            projector = Projector(store, Projection("types", upsert_counts), model)
            t0 = time.perf_counter()
            await projector.catch_up()
            elapsed = time.perf_counter() - t0
            rows = await model.query("SELECT type, n FROM type_counts")
        check_totals("streamsrc SQLite model", Counter(dict(rows)), units)
        return elapsed

    async def subscribe_run(folder: Path, units: int) -> float:
        async with open_store(sqlite_url(logs[units])) as store:
            t0 = time.perf_counter()
            count = await subscribe(store, live=False).count()
            elapsed = time.perf_counter() - t0
        if count != units:
            raise RuntimeError(f"subscribe gave {count} events, expected {units}")
        return elapsed

    async def read_all_run(folder: Path, units: int) -> float:
        async with open_store(sqlite_url(logs[units])) as store:
            t0 = time.perf_counter()
            count = await store.read_all().count()
            elapsed = time.perf_counter() - t0
        if count != units:
            raise RuntimeError(f"read_all gave {count} events, expected {units}")
        return elapsed

    async def raw_run(folder: Path, units: int) -> float:
        conn = raw_connect(logs[units])
        try:
            t0 = time.perf_counter()
            totals = raw_count(conn)
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        check_totals("raw loop", totals.counts, units, (totals.amount, amounts(units)))
        return elapsed

    async def raw_types_run(folder: Path, units: int) -> float:
        conn = raw_connect(logs[units])
        try:
            t0 = time.perf_counter()
            counts = raw_count_types(conn)
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        check_totals("raw loop without decoding", counts, units)
        return elapsed

    def es_run(decode: bool) -> Run:
        async def run(folder: Path, units: int) -> float:
            app = es_app(es_path)
            try:
                t0 = time.perf_counter()
                counts, amount = es_project(app, units, decode)
                elapsed = time.perf_counter() - t0
            finally:
                app.close()
            expected = es_amounts(sizes.es_written, units)
            check_totals("eventsourcing", counts, units, (amount, expected) if decode else None)
            return elapsed

        return run

    subject = Variant("streamsrc Projector.catch_up, memory, count e.type", n, 1, memory_run)
    raw = Variant(f"raw pages of {PAGE} by position + json.loads per row", n, 1, raw_run)
    decoding = Variant("  streamsrc same, handler reads e.data (decodes)", n, 1, decoding_run)
    sqlite_model = Variant("  streamsrc same into SqliteReadModel (UPSERT per batch)", n, 1, sqlite_model_run)
    subscribed = Variant("  subscribe(store, live=False).count()", n, 1, subscribe_run)
    drained = Variant("  store.read_all().count()", n, 1, read_all_run)
    raw_types = Variant("  raw pages, no json.loads (SQLite and the loop alone)", n, 1, raw_types_run)
    variants = [raw, subject, decoding, sqlite_model, subscribed, drained, raw_types]
    es_decode = es_topics = None
    if es_available():
        es_decode = Variant("eventsourcing select_notifications + to_domain_event", m, 1, es_run(True))
        es_topics = Variant("  eventsourcing select_notifications, topics only", m, 1, es_run(False))
        variants += [es_decode, es_topics]

    try:
        anyio.run(measure, variants, repeat, root, backend=backend)
    finally:
        shutil.rmtree(setup, ignore_errors=True)

    rows = [
        subject_row(subject),
        versus(report, subject, raw, 0.5, "catch-up vs raw paged scan + json.loads"),
        versus(None, subject, decoding, None, ""),
        versus(None, subject, sqlite_model, None, ""),
        versus(None, subject, subscribed, None, ""),
        versus(None, subject, drained, None, ""),
        versus(None, subject, raw_types, None, ""),
    ]
    notes = []
    if es_decode is not None and es_topics is not None:
        rows.append(versus(report, subject, es_decode, 2, "catch-up vs eventsourcing (aim 4x)"))
        rows.append(versus(None, subject, es_topics, None, ""))
        notes.append(
            f"  ceiling for the eventsourcing target: raw sqlite3 without json.loads is"
            f" {raw_types.median / es_decode.median:.2f}x eventsourcing"
        )
        notes.append(
            f"  streamsrc decoding too (the same work as eventsourcing's): "
            f"{decoding.median / es_decode.median:.2f}x eventsourcing;"
            f" raw sqlite3 with json.loads: {raw.median / es_decode.median:.2f}x eventsourcing"
        )
    notes.append(
        f"  decoding: the handler that reads e.data runs at {decoding.median / raw.median:.2f}x the raw"
        " loop, which does the same work"
    )
    per_event = [
        ("read_all", drained),
        ("subscribe", subscribed),
        ("projector", subject),
    ]
    steps, before = [], 0.0
    for label, v in per_event:
        us = 1e6 / v.median
        steps.append(f"{label} {us:.2f} us ({us - before:+.2f})" if before else f"{label} {us:.2f} us")
        before = us
    notes.append("  per event: " + ", ".join(steps) + f"; raw pages alone {1e6 / raw_types.median:.2f} us")
    notes.append(
        "  garbage collections in one streamsrc catch-up (the last round): "
        + ", ".join(f"gen{g} {c}" for g, c in enumerate(collections))
    )
    TABLE.print(
        [
            f"1. Catching up: a projection counting events per type over {n:,} events"
            f" ({n // PER_ACCOUNT:,} accounts x {PER_ACCOUNT})"
            "\n  ratio = streamsrc median / reference median; rounds = per-round ratios (noise)" + es_note
        ],
        rows,
    )
    for note in notes:
        print(note)
    sys.stdout.flush()


# ---------------------------------------------------------------------------- 2. live latency


@dataclass
class Latencies:
    name: str
    samples: list[float]  # seconds, every event of every round
    round_medians: list[float]
    appends: list[float]  # seconds each awaited append took
    batches: int = 0  # handler calls


@dataclass
class LiveRound:
    latencies: list[float]  # per event: from before its append to the handler seeing it
    appends: list[float]  # per event: the time its awaited append took
    batches: int  # handler calls


async def live_round(path: Path, n: int, max_wait: float, notified: bool) -> LiveRound:
    """``n`` single-event appends to a fresh log while a projector follows it live."""
    seen = [0.0] * n
    sent = [0.0] * n
    took = [0.0] * n
    batches = 0

    def handler(state: int, events: Sequence[RecordedEvent]) -> int:
        nonlocal batches
        now = time.perf_counter()
        batches += 1
        for e in events:
            seen[e.position - 1] = now
        return state + len(events)

    ready, done = anyio.Event(), anyio.Event()

    def on_progress(p: Progress) -> None:
        if p.caught_up:
            ready.set()
        if p.events >= n:
            done.set()

    url = sqlite_url(path)
    async with open_store(url) as writer, open_store(url) as other:
        store = writer if notified else other  # ``other`` hears nothing of ``writer``'s appends
        projector = Projector(store, Projection("live", handler), MemoryReadModel(0), max_wait=max_wait)
        async with anyio.create_task_group() as tg:
            tg.start_soon(projector.run, on_progress)
            with anyio.fail_after(10):
                await ready.wait()
            for i in range(n):
                t0 = time.perf_counter()
                sent[i] = t0
                result = await writer.append(f"live-{i % 10}", [EventData("Pinged", {"i": i})])
                took[i] = time.perf_counter() - t0
                if isinstance(result, Failure):
                    raise result.failure()
                await anyio.sleep(PAUSE)
            with anyio.fail_after(10):
                await done.wait()
            tg.cancel_scope.cancel()
    return LiveRound([s - t for s, t in zip(seen, sent, strict=True)], took, batches)


def p99(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def bench_live(sizes: Sizes, repeat: int, root: Path, backend: str) -> None:
    n = sizes.live
    kinds = [
        ("Projector.run, max_wait=0 (notified)", 0.0, True),
        ("Projector.run, max_wait=0.01 (notified)", 0.01, True),
        ("second store object, not notified: polls", 0.0, False),
    ]
    results = [Latencies(name, [], [], []) for name, _, _ in kinds]

    async def main() -> None:
        for r in range(-1, repeat):  # a short untimed warm-up round, then interleaved rounds
            for i, (_, max_wait, notified) in enumerate(kinds):
                folder = root / f"live-r{r + 1}-v{i}"
                folder.mkdir()
                path = folder / "live.db"
                await create_store_file(path)
                gc.collect()
                done = await live_round(path, max(10, n // 10) if r < 0 else n, max_wait, notified)
                shutil.rmtree(folder, ignore_errors=True)
                if r >= 0:
                    results[i].samples += done.latencies
                    results[i].round_medians.append(statistics.median(done.latencies))
                    results[i].appends += done.appends
                    results[i].batches += done.batches

    t0 = time.perf_counter()
    anyio.run(main, backend=backend)
    elapsed = time.perf_counter() - t0
    table = Table(
        header=("variant", "events", "ev/batch", "median ms", "p99 ms", "max ms", "round medians ms"),
        widths=(44, 7, 8, 9, 7, 7, 17),
    )
    rows = [
        [
            v.name,
            f"{len(v.samples):,}",
            f"{len(v.samples) / v.batches:.2f}",
            f"{statistics.median(v.samples) * 1e3:.3f}",
            f"{p99(v.samples) * 1e3:.3f}",
            f"{max(v.samples) * 1e3:.2f}",
            f"{min(v.round_medians) * 1e3:.3f}..{max(v.round_medians) * 1e3:.3f}",
        ]
        for v in results
    ]
    all_appends = [t for v in results for t in v.appends]
    table.print(
        [
            f"2. Live latency: {n:,} single-event appends per round ({repeat} round{'s' * (repeat > 1)}),"
            f" awaited one at a time with a {PAUSE * 1e3:g} ms pause,"
            "\n  from just before append() to the handler seeing the event (report only, no target)"
        ],
        rows,
    )
    print(
        f"  append() alone (included above): median {statistics.median(all_appends) * 1e3:.3f} ms,"
        f" p99 {p99(all_appends) * 1e3:.3f} ms; section took {elapsed:.1f} s"
    )
    sys.stdout.flush()


# ---------------------------------------------------------------------------- main

SECTIONS = ("catchup", "live")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3, backends=BACKENDS)
    return parse_checked(parser, argv)


def es_synchronous_report(root: Path) -> str:
    app = es_app(root / "probe.db")
    try:
        return f"eventsourcing connections: synchronous={es_synchronous_name(app)} as benchmarked"
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    report = Report()
    with bench_root(args, es_synchronous_report) as root:
        print(f"backend: {args.backend}")
        if "catchup" in sections:
            bench_catchup(sizes, args.repeat, root, report, args.backend)
        if "live" in sections:
            bench_live(sizes, args.repeat, root, args.backend)
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
