"""Benchmark of streamsrc's write and read side (``Repository.load`` / ``handle``) on SQLite.

Run from the repository root::

    python bench/entity_sqlite.py                  # full run (about 1-2 minutes), a report; exit 0
    python bench/entity_sqlite.py --check          # same, exit 1 if a target is missed
    python bench/entity_sqlite.py --quick          # small sizes: a smoke test for CI (< 20 s)
    python bench/entity_sqlite.py --repeat 5 --only load --only command

Conventions as in ``bench/store_sqlite.py``: every target is a *ratio* measured
in one process run; the variants compared run interleaved (A B C A B C ...)
``--repeat`` times after one small untimed warm-up round; tables show the
median of each variant, the ratio of the medians and the range of the
per-round ratios. WAL and ``synchronous=NORMAL`` everywhere; eventsourcing
(which has no ``synchronous`` setting) runs on a connection pool that adds
``PRAGMA synchronous=NORMAL``.

The entity is a tally: events ``Bumped(n, name, amount)`` (a dataclass in a
``Codec``), state ``Tally(total, count)`` (a frozen dataclass), ``evolve``
adds ``n``; a command is an ``int`` that becomes one ``Bumped``.

Targets:

* load, no snapshot (``load``): ``Repository.load`` of an entity with 20,000
  events >= 4x eventsourcing's replay (``repository.get`` of an aggregate
  with 20,000 events, no snapshots), and >= 0.7x a hand-written loop: raw
  ``sqlite3`` keyset pages of 1,000 (the same rows and columns), ``json.loads``
  per row, the same dataclass built with ``cls(**data)``, the same ``evolve``;
* load with snapshots (``snapshot``): ``EveryN(100)``, the last snapshot 99
  events behind: ``Repository.load`` costs <= 2x doing
  ``store.load_snapshot(...)`` + ``store.read(stream, after=snap_seq).to_list()``
  directly (no decoding, no fold);
* a command on one hot entity (``command``): sequential ``handle`` (load +
  decide + append) from an empty stream >= 2x eventsourcing's ``get`` +
  trigger + ``save``; without snapshots on both sides, and with a snapshot
  every 100 events on both sides (``EveryN(100)`` / ``snapshotting_intervals``).
  The store calls (thread hops) one command makes are counted and printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _common import Report, Table, add_common_args, parse_checked, versus_ratio
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
)
from _sqlite import measure as _measure
from returns.result import Failure, Result, Success

from streamsrc.codec import Codec, to_json_value
from streamsrc.entity import Decider, Entity, EveryN, Loaded, Rejection, Repository
from streamsrc.store import open_store

PAGE = 1000
"""Rows per page of the hand-written loop (streamsrc's default ``page_size``)."""

SNAPSHOT_EVERY = 100
COLUMNS = "stream, seq, position, type, data, metadata, id, time"
PAGE_SQL = f"SELECT {COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?"
SNAPSHOT_SQL = (
    "SELECT seq, state FROM snapshots WHERE key = ? AND schema_version = ? ORDER BY seq DESC LIMIT 1"
)


@dataclass(frozen=True)
class Sizes:
    load: int  # events of the entity loaded without a snapshot (and of eventsourcing's aggregate)
    loads: int  # streamsrc / raw loads per timed round
    es_loads: int  # eventsourcing replays per timed round (slower)
    snap_loads: int  # loads per timed round of the entity 99 events past its snapshot
    commands: int  # sequential commands on the hot entity per round (from an empty stream)


FULL = Sizes(load=20_000, loads=6, es_loads=2, snap_loads=400, commands=500)
QUICK = Sizes(load=2_000, loads=3, es_loads=1, snap_loads=40, commands=100)


# ---------------------------------------------------------------------------- the entity

codec = Codec()


@codec.register()
@dataclass(frozen=True, slots=True)
class Bumped:
    n: int
    name: str
    amount: float


@dataclass(frozen=True, slots=True)
class Tally:
    total: int
    count: int


def evolve(state: Tally, e: Bumped) -> Tally:
    return Tally(state.total + e.n, state.count + 1)


def decide(command: int, state: Tally) -> Result[list[Bumped], Rejection]:
    return Success([Bumped(command, f"item-{command}", command / 4)])


DECIDER: Decider[int, Bumped, Tally] = Decider(Tally(0, 0), evolve, decide)
CLASSES: dict[str, type[Any]] = {"Bumped": Bumped}


def stream_of(key: str) -> str:
    return f"tally-{key}"


PLAIN: Entity[str, int, Bumped, Tally] = Entity("tally", DECIDER, codec, stream=stream_of)
SNAPPED: Entity[str, int, Bumped, Tally] = Entity(
    "tally", DECIDER, codec, stream=stream_of, state_type=Tally, snapshots=EveryN(SNAPSHOT_EVERY)
)


def expected_state(n: int) -> Tally:
    """The state after commands (or generated events) 1..n."""
    return Tally(n * (n + 1) // 2, n)


def check_state(who: str, got: Tally, n: int) -> None:
    if got != expected_state(n):
        raise RuntimeError(f"{who}: state {got} after {n} events, expected {expected_state(n)}")


# ---------------------------------------------------------------------------- database files


_GENERATE = """
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :n)
INSERT INTO events (stream, seq, id, type, data, metadata, time)
SELECT :stream, i, randomblob(16), 'Bumped',
       json_object('n', i, 'name', 'item-' || i, 'amount', i / 4.0), '{"schema_version":1}', :us + i
FROM k
"""


def generate_stream(path: Path, stream: str, n: int) -> None:
    """Append events 1..n (``Bumped(i, "item-i", i / 4)``, encoded as the codec does) to ``stream``
    (setup only, generated inside SQLite in one transaction)."""
    conn = raw_connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_GENERATE, {"n": n, "stream": stream, "us": time.time_ns() // 1000 - n})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- hand-written references


def raw_load(conn: sqlite3.Connection, stream: str) -> Loaded[Tally]:
    """The hand-written loop: keyset pages of the same rows, ``json.loads``, ``cls(**data)``, evolve."""
    loads = json.loads
    classes = CLASSES
    state = DECIDER.initial
    after = 0
    while True:
        rows = conn.execute(PAGE_SQL, (stream, after, PAGE)).fetchall()
        for _stream, _seq, _position, kind, data, meta, _id, _time in rows:
            if meta is not None:
                loads(meta)
            state = evolve(state, classes[kind](**loads(data)))
        if rows:
            after = rows[-1][1]
        if len(rows) < PAGE:
            return Loaded(state, after)


def raw_snapshot_load(conn: sqlite3.Connection, key: str, stream: str) -> Loaded[Tally]:
    """Hand-written: the latest snapshot row, then the events after it, as in :func:`raw_load`."""
    loads = json.loads
    row = conn.execute(SNAPSHOT_SQL, (key, 1)).fetchone()
    after, snap = row
    state = Tally(**loads(snap))
    rows = conn.execute(PAGE_SQL, (stream, after, PAGE)).fetchall()
    for _stream, _seq, _position, kind, data, meta, _id, _time in rows:
        if meta is not None:
            loads(meta)
        state = evolve(state, CLASSES[kind](**loads(data)))
    return Loaded(state, rows[-1][1] if rows else after)


# ---------------------------------------------------------------------------- eventsourcing


def es_classes() -> tuple[type[Any], type[Any], type[Any]]:
    """``(BenchApp, SnapApp, EsTally)``: defined on first use, so the benchmark runs without it."""
    from eventsourcing.domain import Aggregate, event

    class EsTally(Aggregate):
        def __init__(self, n: int, name: str, amount: float) -> None:
            self.total = n
            self.count = 1

        @event("Bumped")
        def bump(self, n: int, name: str, amount: float) -> None:
            self.total += n
            self.count += 1

    bench_app = es_app_class()

    class SnapApp(bench_app):  # type: ignore[misc,valid-type]
        """``BenchApp`` with a snapshot every 100 events (eventsourcing's automatic snapshotting)."""

        snapshotting_intervals = {EsTally: SNAPSHOT_EVERY}  # noqa: RUF012 (eventsourcing's own API)

    return bench_app, SnapApp, EsTally


_ES: tuple[type[Any], type[Any], type[Any]] | None = None


def es() -> tuple[type[Any], type[Any], type[Any]]:
    global _ES
    if _ES is None:
        _ES = es_classes()
    return _ES


def es_app(path: Path, snapshots: bool = False) -> Any:
    plain, snapping, _ = es()
    return (snapping if snapshots else plain)(env=es_env(path, "NORMAL"))


def es_tally(n: int) -> Any:
    return es()[2](n, f"item-{n}", n / 4)


def es_state(tally: Any) -> Tally:
    return Tally(tally.total, tally.count)


# ---------------------------------------------------------------------------- store calls


@contextmanager
def counting_calls(store: Any) -> Iterator[dict[str, int]]:
    """Count the calls that go to the store's writer and reader threads (one thread hop each).

    Uses the SQLite store's private workers: a diagnostic, not part of any timing.
    """
    counts = {"read": 0, "write": 0}
    workers = {"write": store._writer, "read": store._readers}

    def wrap(kind: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(fn: Any, shield: bool = False) -> Any:
            counts[kind] += 1
            return await original(fn, shield)

        return call

    for kind, worker in workers.items():
        worker.call = wrap(kind, worker.call)
    try:
        yield counts
    finally:
        for worker in workers.values():
            del worker.call  # the instance attribute: back to the method


async def hop_us(store: Any, n: int) -> float:
    """Microseconds of one call to a reader thread that does nothing (the hop alone)."""

    def nothing(conn: sqlite3.Connection) -> None:
        return None

    for _ in range(20):
        await store._readers.call(nothing)
    t0 = time.perf_counter()
    for _ in range(n):
        await store._readers.call(nothing)
    return (time.perf_counter() - t0) / n * 1e6


# ---------------------------------------------------------------------------- measuring


async def measure(variants: Sequence[Variant], repeat: int, root: Path) -> None:
    """A small untimed warm-up round (1/10 of the units), then ``repeat`` rounds, interleaved."""
    await _measure(variants, repeat, root, warm_up=10)


# ---------------------------------------------------------------------------- reporting


TABLE = Table(
    header=(
        "variant",
        "work/round",
        "rate/s",
        "us/unit",
        "min..max /s",
        "ratio",
        "rounds",
        "target",
        "result",
    ),
    widths=(52, 12, 9, 8, 17, 7, 11, 7, 6),
)


def table(title: str, rows: Sequence[Sequence[str]], notes: Sequence[str] = ()) -> None:
    """The title, the table, then the notes (indented) below it."""
    TABLE.print([title], rows)
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"


def rate_cells(v: Variant, work: str) -> list[str]:
    return [
        v.name,
        work,
        fmt_rate(v.median),
        f"{1e6 / v.median:.1f}",
        f"{fmt_rate(min(v.rates))}..{fmt_rate(max(v.rates))}",
    ]


def plain_row(v: Variant, work: str, tag: str = "") -> list[str]:
    return [*rate_cells(v, work), "", "", tag, ""]


def versus(
    report: Report | None,
    subject: Variant,
    reference: Variant,
    work: str,
    threshold: float | None,
    label: str = "",
    cost: bool = False,
) -> list[str]:
    """A row for ``reference``: the speed ratio ``subject / reference`` of the medians (with
    ``cost``: the time ratio ``subject / reference``, checked as "at most"); no threshold: info."""
    ratio, cells = versus_ratio(reference, subject) if cost else versus_ratio(subject, reference)
    if threshold is None or report is None:
        target = ["(info)", ""]
    elif cost:
        target = [f"<={threshold:g}x", at_most_verdict(report, label, ratio, threshold)]
    else:
        target = report.target_cells(label, ratio, threshold)
    return [*rate_cells(reference, work), *cells, *target]


def at_most_verdict(report: Report, label: str, ratio: float, threshold: float) -> str:
    """PASS if the cost ``ratio`` is at most ``threshold`` (``Report.verdict`` checks "at least")."""
    if ratio <= threshold:
        return "PASS"
    report.failures.append(f"{label}: {ratio:.2f}x > {threshold:g}x")
    return "FAIL"


def calls_note(what: str, counts: dict[str, int], per: int, hop: float) -> str:
    reads, writes = counts["read"] / per, counts["write"] / per
    return (
        f"store calls per {what}: {reads:.2f} reader + {writes:.2f} writer = {reads + writes:.2f}"
        f" (x {hop:.0f} us per bare hop = {(reads + writes) * hop:.0f} us)"
    )


# ---------------------------------------------------------------------------- 1 + 2. loading


@dataclass
class LoadSetup:
    path: Path
    n: int  # events of entity "big" (no snapshot)
    snap_seq: int  # entity "snap": its snapshot's seq ...
    snap_n: int  # ... and its events (snap_seq + 99)
    es_app: Any = None
    es_id: Any = None


async def _save_snapshot(path: Path, seq: int) -> None:
    async with open_store(sqlite_url(path)) as store:
        state = to_json_value(expected_state(seq))
        await store.save_snapshot(SNAPPED.snapshot_key("snap"), seq, state, SNAPPED.schema_version)


def load_setup(sizes: Sizes, root: Path, with_es: bool) -> LoadSetup:
    t0 = time.perf_counter()
    folder = root / "load"
    folder.mkdir()
    path = folder / "s.db"
    snap_seq = sizes.load
    snap_n = snap_seq + SNAPSHOT_EVERY - 1
    anyio.run(_save_snapshot, path, snap_seq, backend="asyncio")  # creates the file too
    generate_stream(path, stream_of("big"), sizes.load)
    generate_stream(path, stream_of("snap"), snap_n)
    setup = LoadSetup(path, sizes.load, snap_seq, snap_n)
    if with_es:
        app = es_app(folder / "es.db")
        tally = es_tally(1)
        for i in range(2, sizes.load + 1):
            tally.bump(i, f"item-{i}", i / 4)
            if i % 5000 == 0:
                app.save(tally)
        app.save(tally)
        setup.es_app, setup.es_id = app, tally.id
    print(f"\n(load setup: {time.perf_counter() - t0:.1f} s)")
    return setup


def bench_load(sizes: Sizes, repeat: int, root: Path, report: Report, sections: Sequence[str]) -> None:
    setup = load_setup(sizes, root, with_es="load" in sections and es_available())
    try:
        anyio.run(_bench_load, sizes, repeat, root, report, sections, setup, backend="asyncio")
    finally:
        if setup.es_app is not None:
            setup.es_app.close()
        shutil.rmtree(setup.path.parent, ignore_errors=True)


async def _bench_load(
    sizes: Sizes, repeat: int, root: Path, report: Report, sections: Sequence[str], setup: LoadSetup
) -> None:
    async with open_store(sqlite_url(setup.path)) as store:
        conn = raw_connect(setup.path)
        try:
            hop = await hop_us(store, 2000)
            if "load" in sections:
                await _section_load(sizes, repeat, root, report, setup, store, conn, hop)
            if "snapshot" in sections:
                await _section_snapshot(sizes, repeat, root, report, setup, store, conn, hop)
        finally:
            conn.close()


async def _section_load(
    sizes: Sizes,
    repeat: int,
    root: Path,
    report: Report,
    setup: LoadSetup,
    store: Any,
    conn: sqlite3.Connection,
    hop: float,
) -> None:
    n = setup.n
    repo = Repository(store, PLAIN)
    stream = stream_of("big")

    async def streamsrc_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            loaded = await repo.load("big")
        elapsed = time.perf_counter() - t0
        check_state("streamsrc load", loaded.state, n)
        return elapsed

    async def raw_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            loaded = raw_load(conn, stream)
        elapsed = time.perf_counter() - t0
        check_state("hand-written load", loaded.state, n)
        return elapsed

    async def es_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            tally = setup.es_app.repository.get(setup.es_id)
        elapsed = time.perf_counter() - t0
        check_state("eventsourcing replay", es_state(tally), n)
        return elapsed

    subject = Variant("streamsrc Repository.load (no snapshot)", sizes.loads, n, streamsrc_run)
    raw = Variant(f"hand-written: sqlite3 pages of {PAGE}, loads, cls(**d)", sizes.loads, n, raw_run)
    variants = [subject, raw]
    es_v = None
    if setup.es_app is not None:
        es_v = Variant("eventsourcing repository.get (replay)", sizes.es_loads, n, es_run)
        variants.append(es_v)
    await measure(variants, repeat, root)
    with counting_calls(store) as counts:
        await repo.load("big")

    def work(v: Variant) -> str:
        return f"{v.units}x{n // 1000}k ev"

    rows = [
        plain_row(subject, work(subject)),
        versus(report, subject, raw, work(raw), 0.7, "load 20k events vs hand-written loop"),
    ]
    notes = [
        f"rates are events/s; one streamsrc load of {n:,} events takes {n / subject.median * 1e3:.1f} ms,"
        f" the hand-written loop {n / raw.median * 1e3:.1f} ms",
        calls_note("load", counts, 1, hop),
    ]
    if es_v is not None:
        rows.append(versus(report, subject, es_v, work(es_v), 4, "load 20k events vs eventsourcing replay"))
        notes.insert(1, f"eventsourcing replay: {n / es_v.median * 1e3:.1f} ms per load")
        notes.append(f"ceiling: the hand-written loop is {raw.median / es_v.median:.2f}x eventsourcing")
    table(f"1. Loading one entity of {n:,} events, no snapshot", rows, notes)


async def _section_snapshot(
    sizes: Sizes,
    repeat: int,
    root: Path,
    report: Report,
    setup: LoadSetup,
    store: Any,
    conn: sqlite3.Connection,
    hop: float,
) -> None:
    repo = Repository(store, SNAPPED)
    key = SNAPPED.snapshot_key("snap")
    stream = stream_of("snap")
    version = SNAPPED.schema_version
    tail = setup.snap_n - setup.snap_seq

    async def streamsrc_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            loaded = await repo.load("snap")
        elapsed = time.perf_counter() - t0
        check_state("streamsrc load from snapshot", loaded.state, setup.snap_n)
        return elapsed

    async def direct_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            snapshot = (await store.load_snapshot(key, version)).unwrap()
            events = await store.read(stream, after=snapshot.seq).to_list()
        elapsed = time.perf_counter() - t0
        if snapshot.seq != setup.snap_seq or len(events) != tail:
            raise RuntimeError(f"direct read: snapshot at {snapshot.seq}, {len(events)} events after it")
        return elapsed

    async def raw_run(folder: Path, units: int) -> float:
        t0 = time.perf_counter()
        for _ in range(units):
            loaded = raw_snapshot_load(conn, key, stream)
        elapsed = time.perf_counter() - t0
        check_state("hand-written load from snapshot", loaded.state, setup.snap_n)
        return elapsed

    m = sizes.snap_loads
    subject = Variant(f"streamsrc Repository.load (EveryN({SNAPSHOT_EVERY}))", m, 1, streamsrc_run)
    direct = Variant("store.load_snapshot + read(after).to_list()", m, 1, direct_run)
    raw = Variant("hand-written sqlite3: snapshot row + page + decode", m, 1, raw_run)
    await measure([subject, direct, raw], repeat, root)
    with counting_calls(store) as counts:
        await repo.load("snap")
    with counting_calls(store) as direct_counts:
        await direct_run(root, 1)
    work = f"{m} loads"
    rows = [
        plain_row(subject, work),
        versus(report, subject, direct, work, 2, "load from snapshot vs snapshot+read", cost=True),
        versus(None, subject, raw, work, None, cost=True),
    ]
    table(
        f"2. Loading one entity from its snapshot, {tail} events behind (stream of {setup.snap_n:,} events)"
        "\n  (rates are loads/s; ratio = streamsrc's time / the reference's time: at most the target)",
        rows,
        [calls_note("load", counts, 1, hop), "direct " + calls_note("snapshot+read", direct_counts, 1, hop)],
    )


# ---------------------------------------------------------------------------- 3. commands


def bench_command(sizes: Sizes, repeat: int, root: Path, report: Report) -> None:
    c = sizes.commands

    def handle_runner(entity: Entity[str, int, Bumped, Tally]) -> Run:
        async def run(folder: Path, units: int) -> float:
            path = folder / "s.db"
            async with open_store(sqlite_url(path)) as store:
                repo = Repository(store, entity)
                gc.collect()
                t0 = time.perf_counter()
                for i in range(1, units + 1):
                    result = await repo.handle("hot", i)
                    if isinstance(result, Failure):
                        raise result.failure()
                elapsed = time.perf_counter() - t0
                check_state("streamsrc handle", result.unwrap().state, units)
            if count_rows(path, "events") != units:
                raise RuntimeError("streamsrc handle: wrong number of events")
            return elapsed

        return run

    async def append_run(folder: Path, units: int) -> float:
        path = folder / "s.db"
        async with open_store(sqlite_url(path)) as store:
            gc.collect()
            t0 = time.perf_counter()
            for i in range(1, units + 1):
                data = [codec.encode(Bumped(i, f"item-{i}", i / 4))]
                result = await store.append(stream_of("hot"), data, expected=i - 1)
                if isinstance(result, Failure):
                    raise result.failure()
            elapsed = time.perf_counter() - t0
        if count_rows(path, "events") != units:
            raise RuntimeError("streamsrc append: wrong number of events")
        return elapsed

    def es_runner(snapshots: bool) -> Run:
        async def run(folder: Path, units: int) -> float:
            path = folder / "es.db"
            app = es_app(path, snapshots)
            try:
                gc.collect()
                t0 = time.perf_counter()
                tally = es_tally(1)
                app.save(tally)
                tally_id = tally.id
                for i in range(2, units + 1):
                    tally = app.repository.get(tally_id)
                    tally.bump(i, f"item-{i}", i / 4)
                    app.save(tally)
                elapsed = time.perf_counter() - t0
                check_state("eventsourcing get+save", es_state(tally), units)
            finally:
                app.close()
            if count_rows(path, "stored_events") != units:
                raise RuntimeError("eventsourcing: wrong number of events")
            return elapsed

        return run

    plain = Variant("streamsrc handle, no snapshots", c, 1, handle_runner(PLAIN))
    snapped = Variant(f"streamsrc handle, EveryN({SNAPSHOT_EVERY})", c, 1, handle_runner(SNAPPED))
    append = Variant("streamsrc store.append([e], expected) alone", c, 1, append_run)
    variants = [plain, snapped, append]
    es_plain = es_snap = None
    if es_available():
        es_plain = Variant("eventsourcing get + bump + save, no snapshots", c, 1, es_runner(False))
        es_snap = Variant(
            f"eventsourcing get + bump + save, snapshot/{SNAPSHOT_EVERY}", c, 1, es_runner(True)
        )
        variants += [es_plain, es_snap]
    anyio.run(measure, variants, repeat, root, backend="asyncio")
    counts, hop = anyio.run(_count_command_calls, root, c, backend="asyncio")

    work = f"{c} cmds"
    rows: list[list[str]] = [plain_row(plain, work)]
    if es_plain is not None:
        rows.append(versus(report, plain, es_plain, work, 2, "command, no snapshots, vs eventsourcing"))
    rows.append(plain_row(snapped, work))
    if es_snap is not None and es_plain is not None:
        rows.append(versus(report, snapped, es_snap, work, 2, "command, snapshots, vs eventsourcing"))
        rows.append(versus(None, snapped, es_plain, work, None))
    rows.append(plain_row(append, work, "(info)"))
    notes = [
        f"{label}: {calls_note('command', counts[label], c, hop)}"
        for label in ("no snapshots", "EveryN(100)")
    ]
    table(
        f"3. Commands on one hot entity: {c:,} sequential commands from an empty stream, one event each"
        "\n  (rates are commands/s; without snapshots every command replays the whole stream so far)",
        rows,
        notes,
    )


async def _count_command_calls(root: Path, c: int) -> tuple[dict[str, dict[str, int]], float]:
    """An untimed pass of each streamsrc command loop, counting its store calls."""
    out: dict[str, dict[str, int]] = {}
    hop = 0.0
    for label, entity in (("no snapshots", PLAIN), ("EveryN(100)", SNAPPED)):
        folder = root / f"count-{label.replace(' ', '-')}"
        folder.mkdir()
        async with open_store(sqlite_url(folder / "s.db")) as store:
            repo = Repository(store, entity)
            with counting_calls(store) as counts:
                for i in range(1, c + 1):
                    await repo.handle("hot", i)
            out[label] = dict(counts)
            hop = await hop_us(store, 2000)
        shutil.rmtree(folder, ignore_errors=True)
    return out, hop


# ---------------------------------------------------------------------------- main

SECTIONS = ("load", "snapshot", "command")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3)
    return parse_checked(parser, argv)


def es_synchronous_report(root: Path) -> str:
    app = es_app(root / "probe.db")
    try:
        return f"eventsourcing connections: synchronous={es_synchronous_name(app)}"
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    report = Report()
    with bench_root(args, es_synchronous_report) as root:
        if "load" in sections or "snapshot" in sections:
            bench_load(sizes, args.repeat, root, report, sections)
        if "command" in sections:
            bench_command(sizes, args.repeat, root, report)
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
