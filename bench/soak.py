"""Soak: many concurrent writers and three live projections for a bounded time, on SQLite and PostgreSQL.

Run from the repository root::

    python bench/soak.py                          # both backends, about 2 min each; a report
    python bench/soak.py --quick                  # about 12 s per backend: the CI smoke test
    python bench/soak.py --backend sqlite --seconds 600 --writers 32
    python bench/soak.py --check                  # also exit 1 on memory growth or a skipped backend

``--writers`` tasks (default 16) append to ``--streams`` accounts (default
1,000) for ``--seconds``, each append with the version the writer last saw
(an expected-version conflict is counted, and the append is retried on the
stream's actual version). Meanwhile three projections follow the log live in
the same process:

* ``types``: a :class:`MemoryReadModel` counting events per type;
* ``balances``: a :class:`SqliteReadModel` (on PostgreSQL, a
  :class:`PostgresReadModel`) with one row per account: balance, events;
* ``summary``: a :class:`CallbackReadModel` (at least once, checkpoint in the
  event store) keeping each stream's event count, last seq and last type.

Every second the run samples the events appended and projected, the lag of
each projection, the process's RSS (``VmRSS``) and the number of objects the
garbage collector tracks. Every append latency (call to result) and every
projection latency (just before the append to the moment the handler sees
the event) is recorded. When the time is up the writers stop, the projections
catch up, and each read model is rebuilt from position 0 into a fresh model
and compared with the live one and with what the writers wrote: any
difference exits 1. With ``--check``, memory growth past the limit exits 1 too,
and so does a backend skipped for want of a PostgreSQL server.

Both run as in production: SQLite in WAL mode with the store's default
``synchronous=NORMAL``, and the throwaway PostgreSQL cluster with ``fsync``
and ``synchronous_commit`` on (the report's header says which settings the
server ran with).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import anyio
from _common import RESULTS, Report, Table, add_json_arg, version, versions_line
from returns.result import Success

from streamsrc.errors import WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import CallbackReadModel, MemoryReadModel, Projection, Projector
from streamsrc.store import EventStore, open_store
from streamsrc.store.memory import MemoryStore

TESTS = Path(__file__).resolve().parent.parent / "tests"
"""Where the tests' ``pg_server`` (the throwaway PostgreSQL cluster) lives."""

BACKENDS = ("sqlite", "postgres")

MEMORY_LIMIT_MB = 10.0
"""Largest growth allowed of RSS (net of the run's own latency arrays) over the second half.

By the middle of the run every bounded cache is warm: SQLite's page caches
(2 MB per connection), the stores' connection pools and prepared statements,
the per-account dictionaries. What grows after that is a leak: one small
object (~100 bytes) kept per event is already 10 MB per 100,000 events, which
a full run appends in its second half. In a ``--quick`` run the second half
is a few seconds of warm-up, so the verdict there is only indicative.
"""

CATCH_UP_LIMIT = 120.0
"""Seconds the projections get to catch up with the log once the writers stop."""


@dataclass(frozen=True)
class Settings:
    seconds: float
    writers: int
    streams: int
    max_batch: int  # events per append: 1..max_batch
    quick: bool


# ---------------------------------------------------------------------------- what the run keeps


@dataclass
class Latencies:
    """Seconds, as C doubles: 8 bytes per value and no Python objects, so the recording itself
    adds nothing the garbage collector tracks; its bytes are subtracted from RSS."""

    values: array.array[float] = field(default_factory=lambda: array.array("d"))

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    @property
    def nbytes(self) -> int:
        return self.values.buffer_info()[1] * self.values.itemsize

    def percentiles(self) -> dict[str, float]:
        ordered = sorted(self.values)
        if not ordered:
            return {"count": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

        return {
            "count": len(ordered),
            "p50_ms": at(0.50),
            "p90_ms": at(0.90),
            "p99_ms": at(0.99),
            "max_ms": ordered[-1] * 1e3,
        }


@dataclass
class Live:
    """One live projection: its projector, how many events its handler has seen, its latencies."""

    name: str
    projector: Projector[Any] = field(init=False)
    seen: int = 0
    latencies: Latencies = field(default_factory=Latencies)

    def saw(self, events: Sequence[RecordedEvent]) -> None:
        now = time.perf_counter()
        for e in events:
            self.latencies.add(now - e.data["t"])
        self.seen += len(events)


@dataclass
class Writes:
    """What the writers did: per account its version and balance (cents), the totals."""

    versions: list[int]
    balances: list[int]
    appended: int = 0
    appends: int = 0
    conflicts: int = 0
    latencies: Latencies = field(default_factory=Latencies)


@dataclass
class Sample:
    t: float
    appended: int
    seen: dict[str, int]
    lag: dict[str, int]
    rss_mb: float
    net_rss_mb: float
    gc_objects: int


def vm_rss_mb() -> float:
    """This process's resident set (Linux ``VmRSS``); peak RSS where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    from _common import ru_maxrss_mb

    return ru_maxrss_mb()


# ---------------------------------------------------------------------------- the projections


BALANCES_SQLITE = """
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance INTEGER NOT NULL,
    events INTEGER NOT NULL
) WITHOUT ROWID;
"""
BALANCES_POSTGRES = """
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance BIGINT NOT NULL,
    events BIGINT NOT NULL
);
"""
UPSERT_SQLITE = (
    "INSERT INTO balances (account, balance, events) VALUES (?, ?, ?) ON CONFLICT (account) DO UPDATE"
    " SET balance = balance + excluded.balance, events = events + excluded.events"
)
UPSERT_POSTGRES = (
    "INSERT INTO balances (account, balance, events) VALUES ($1, $2, $3) ON CONFLICT (account) DO UPDATE"
    " SET balance = balances.balance + excluded.balance, events = balances.events + excluded.events"
)
BALANCES_QUERY = "SELECT account, balance, events FROM balances ORDER BY account"


def delta(e: RecordedEvent) -> int:
    if e.type == "Deposited":
        amount: int = e.data["amount"]
        return amount
    if e.type == "Withdrawn":
        amount = e.data["amount"]
        return -amount
    return 0


def balance_rows(events: Sequence[RecordedEvent]) -> list[tuple[str, int, int]]:
    """One row per account of the batch: the change of balance and the number of events."""
    rows: dict[str, list[int]] = {}
    for e in events:
        row = rows.setdefault(e.stream, [0, 0])
        row[0] += delta(e)
        row[1] += 1
    return [(account, change, n) for account, (change, n) in rows.items()]


Summary = dict[str, tuple[int, int, str]]
"""Per stream: events seen, last seq, last type."""


def summarise(summary: Summary, events: Sequence[RecordedEvent]) -> None:
    """Fold events into the summary, skipping any seen already (the model is at least once)."""
    for e in events:
        count, last, _ = summary.get(e.stream, (0, 0, ""))
        if e.seq > last:
            summary[e.stream] = (count + 1, e.seq, e.type)


def types_handler(live: Live | None) -> Callable[[Counter[str], Sequence[RecordedEvent]], Counter[str]]:
    def handler(counts: Counter[str], events: Sequence[RecordedEvent]) -> Counter[str]:
        if live is not None:
            live.saw(events)
        new = counts.copy()
        new.update(map(attrgetter("type"), events))
        return new

    return handler


def summary_handler(
    summary: Summary, live: Live | None
) -> Callable[[Sequence[RecordedEvent]], Awaitable[None]]:
    async def handler(events: Sequence[RecordedEvent]) -> None:
        if live is not None:
            live.saw(events)
        summarise(summary, events)

    return handler


class Balances:
    """The balances read model of one backend: open a model, its handler, read its rows."""

    async def open(self, which: str) -> Any:
        raise NotImplementedError

    def handler(self, live: Live | None) -> Any:
        raise NotImplementedError

    async def rows(self, model: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class SqliteBalances(Balances):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def open(self, which: str) -> Any:
        from streamsrc.projections.sqlite import SqliteReadModel

        return await SqliteReadModel(str(self.folder / f"{which}-views.db"), BALANCES_SQLITE).open()

    def handler(self, live: Live | None) -> Any:
        def write(conn: Any, events: Sequence[RecordedEvent]) -> None:
            if live is not None:
                live.saw(events)
            conn.executemany(UPSERT_SQLITE, balance_rows(events))

        return write

    async def rows(self, model: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await model.query(BALANCES_QUERY)
        return rows


class PostgresBalances(Balances):
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls  # "live" and "rebuilt": two databases, so the checkpoints are apart

    async def open(self, which: str) -> Any:
        from streamsrc.projections.postgres import PostgresReadModel

        return await PostgresReadModel(self.urls[which], BALANCES_POSTGRES).open()

    def handler(self, live: Live | None) -> Any:
        async def write(conn: Any, events: Sequence[RecordedEvent]) -> None:
            if live is not None:
                live.saw(events)
            await conn.executemany(UPSERT_POSTGRES, balance_rows(events))

        return write

    async def rows(self, model: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await model.query(BALANCES_QUERY)]


# ---------------------------------------------------------------------------- the run


def events_for(version: int, n: int, rng: random.Random, t0: float) -> tuple[list[EventData], int]:
    """``n`` events for an account at ``version`` (``Opened`` first), and their change of balance."""
    events: list[EventData] = []
    change = 0
    for i in range(n):
        if version + i == 0:
            events.append(EventData("Opened", {"t": t0}))
        elif rng.random() < 0.3:
            amount = rng.randint(1, 5_000)
            change -= amount
            events.append(EventData("Withdrawn", {"amount": amount, "t": t0}))
        else:
            amount = rng.randint(1, 10_000)
            change += amount
            events.append(EventData("Deposited", {"amount": amount, "t": t0}))
    return events, change


async def writer(w: int, store: EventStore, writes: Writes, settings: Settings, deadline: float) -> None:
    rng = random.Random(w)
    while time.perf_counter() < deadline:
        k = rng.randrange(settings.streams)
        n = rng.randint(1, settings.max_batch)
        while True:
            version = writes.versions[k]
            t0 = time.perf_counter()
            events, change = events_for(version, n, rng, t0)
            result = await store.append(f"acct-{k:05d}", events, expected=version)
            if isinstance(result, Success):
                writes.latencies.add(time.perf_counter() - t0)
                writes.versions[k] = max(writes.versions[k], result.unwrap().last_seq)
                writes.balances[k] += change
                writes.appended += n
                writes.appends += 1
                break
            error = result.failure()
            if not isinstance(error, WrongExpectedVersion):
                raise RuntimeError(f"writer {w}: append failed: {error}")
            writes.conflicts += 1
            writes.versions[k] = max(writes.versions[k], error.actual)


def recordings_mb(writes: Writes, lives: Sequence[Live]) -> float:
    return (writes.latencies.nbytes + sum(live.latencies.nbytes for live in lives)) / 2**20


async def sampler(
    store: EventStore, writes: Writes, lives: Sequence[Live], samples: list[Sample], start: float, end: float
) -> None:
    """A sample at every whole second from ``start`` until ``end``."""
    tick = 1
    while True:
        await anyio.sleep(max(0.0, start + tick - time.perf_counter()))
        head = await store.head()
        lag = {live.name: head - (await live.projector.status()).position for live in lives}
        rss = vm_rss_mb()
        samples.append(
            Sample(
                t=time.perf_counter() - start,
                appended=writes.appended,
                seen={live.name: live.seen for live in lives},
                lag=lag,
                rss_mb=rss,
                net_rss_mb=rss - recordings_mb(writes, lives),
                gc_objects=len(gc.get_objects()),
            )
        )
        if start + tick >= end:
            return
        tick += 1


async def caught_up(store: EventStore, lives: Sequence[Live]) -> float:
    """Wait until every projection has reached the head of the log; the seconds it took."""
    t0 = time.perf_counter()
    head = await store.head()
    with anyio.fail_after(CATCH_UP_LIMIT):
        for live in lives:
            while True:
                if (await live.projector.status()).position >= head:
                    break
                await anyio.sleep(0.01)
    return time.perf_counter() - t0


@dataclass
class Outcome:
    backend: str
    settings: Settings
    writes: Writes
    lives: list[Live]
    samples: list[Sample]
    drain_s: float
    rebuild: dict[str, dict[str, Any]]  # per model: events, seconds, equal
    problems: list[str]


async def soak(backend: str, url: str, balances: Balances, settings: Settings) -> Outcome:
    writes = Writes(versions=[0] * settings.streams, balances=[0] * settings.streams)
    samples: list[Sample] = []
    problems: list[str] = []
    async with open_store(url) as store:
        counts: MemoryReadModel[Counter[str]] = MemoryReadModel(Counter())
        summary: Summary = {}
        balances_model = await balances.open("live")
        try:
            lives: list[Live] = []

            def live(name: str, make: Callable[[Live], Projector[Any]]) -> None:
                entry = Live(name)
                entry.projector = make(entry)
                lives.append(entry)

            live("types", lambda e: Projector(store, Projection("types", types_handler(e)), counts))
            live(
                "balances",
                lambda e: Projector(store, Projection("balances", balances.handler(e)), balances_model),
            )
            live(
                "summary",
                lambda e: Projector(
                    store, Projection("summary", summary_handler(summary, e)), CallbackReadModel(store)
                ),
            )

            gc.collect()
            start = time.perf_counter()
            deadline = start + settings.seconds
            async with anyio.create_task_group() as projecting:
                for entry in lives:
                    projecting.start_soon(entry.projector.run)
                async with anyio.create_task_group() as writing:
                    writing.start_soon(sampler, store, writes, lives, samples, start, deadline)
                    for w in range(settings.writers):
                        writing.start_soon(writer, w, store, writes, settings, deadline)
                drain_s = await caught_up(store, lives)
                projecting.cancel_scope.cancel()

            live_rows = await balances.rows(balances_model)
            rebuild, more = await rebuild_and_compare(store, balances, counts.state, live_rows, summary)
            problems += more
            problems += compare_with_writes(writes, counts.state, live_rows, summary)
        finally:
            await balances_model.aclose()
    return Outcome(backend, settings, writes, lives, samples, drain_s, rebuild, problems)


async def rebuild_and_compare(
    store: EventStore,
    balances: Balances,
    counts: Counter[str],
    live_rows: list[tuple[Any, ...]],
    summary: Summary,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rebuild each read model from position 0 into a fresh one; whether each equals the live one."""
    out: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    async def timed(name: str, projector: Projector[Any]) -> None:
        gc.collect()
        t0 = time.perf_counter()
        status = await projector.catch_up()
        out[name] = {"events": status.position, "seconds": time.perf_counter() - t0}

    fresh_counts: MemoryReadModel[Counter[str]] = MemoryReadModel(Counter())
    await timed("types", Projector(store, Projection("types", types_handler(None)), fresh_counts))
    out["types"]["equal"] = fresh_counts.state == counts

    model = await balances.open("rebuilt")
    try:
        await timed("balances", Projector(store, Projection("balances", balances.handler(None)), model))
        out["balances"]["equal"] = await balances.rows(model) == live_rows
    finally:
        await model.aclose()

    fresh_summary: Summary = {}
    callback = CallbackReadModel(MemoryStore())
    await timed(
        "summary", Projector(store, Projection("summary", summary_handler(fresh_summary, None)), callback)
    )
    out["summary"]["equal"] = fresh_summary == summary

    for name, result in out.items():
        if not result["equal"]:
            problems.append(f"read model {name!r}: the live model differs from its rebuild")
    return out, problems


def compare_with_writes(
    writes: Writes, counts: Counter[str], rows: list[tuple[Any, ...]], summary: Summary
) -> list[str]:
    """The live models against what the writers know they wrote."""
    problems = []
    if sum(counts.values()) != writes.appended:
        problems.append(
            f"types: counted {sum(counts.values())} events, the writers appended {writes.appended}"
        )
    expected = [
        (f"acct-{k:05d}", writes.balances[k], writes.versions[k])
        for k in range(len(writes.versions))
        if writes.versions[k]
    ]
    if [tuple(r) for r in rows] != expected:
        problems.append("balances: the rows differ from the writers' own balances and versions")
    if {s: (n, last) for s, (n, last, _) in summary.items()} != {a: (v, v) for a, _, v in expected}:
        problems.append("summary: the per-stream counts differ from the writers' versions")
    return problems


# ---------------------------------------------------------------------------- backends


@asynccontextmanager
async def sqlite_backend(root: Path) -> AsyncIterator[tuple[str, Balances, str]]:
    from _sqlite import sqlite_url

    folder = root / "sqlite"
    folder.mkdir()
    yield sqlite_url(folder / "events.db"), SqliteBalances(folder), "a file in a temporary folder"


def postgres_unavailable() -> str | None:
    """Why there is no PostgreSQL server to soak (``None``: there is one)."""
    sys.path.insert(0, str(TESTS))
    from pg_server import URL_VARIABLE, find_binaries

    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]'): the PostgreSQL soak is skipped"
    if os.environ.get(URL_VARIABLE) or find_binaries() is not None:
        return None
    return (
        f"PostgreSQL server binaries (initdb, pg_ctl) not found and {URL_VARIABLE} not set:"
        " the PostgreSQL soak is skipped"
    )


@asynccontextmanager
async def postgres_backend() -> AsyncIterator[tuple[str, Balances, str]]:
    sys.path.insert(0, str(TESTS))
    from pg_server import URL_VARIABLE, ThrowawayCluster, create_database, drop_database

    named = os.environ.get(URL_VARIABLE)
    cluster = None
    if named:
        base, source = named, URL_VARIABLE
    else:
        # fsync and synchronous_commit on, as in production: every acknowledged append is durable
        cluster = await anyio.to_thread.run_sync(lambda: ThrowawayCluster(durable=True).start())
        base, source = cluster.url, f"throwaway cluster on 127.0.0.1:{cluster.port}"
    names = [f"soak_{os.getpid()}_{which}" for which in ("live", "rebuilt")]
    try:
        live_url = await create_database(base, names[0])
        rebuilt_url = await create_database(base, names[1])
        import asyncpg

        conn = await asyncpg.connect(live_url)
        try:
            server_version = str(await conn.fetchval("SHOW server_version")).split()[0]
            settings = [f"{s}={await conn.fetchval(f'SHOW {s}')}" for s in ("fsync", "synchronous_commit")]
        finally:
            await conn.close()
        RESULTS.extra.setdefault("postgres_version", server_version)
        yield (
            live_url,
            PostgresBalances({"live": live_url, "rebuilt": rebuilt_url}),
            f"PostgreSQL {server_version}, {source}; {', '.join(settings)}",
        )
    finally:
        for name in names:
            await drop_database(base, name)
        if cluster is not None:
            cluster.remove()


# ---------------------------------------------------------------------------- reporting


def rate(samples: Sequence[Sample], i: int, count: Callable[[Sample], int]) -> float:
    before = samples[i - 1] if i > 0 else None
    dt = samples[i].t - (before.t if before else 0.0)
    return (count(samples[i]) - (count(before) if before else 0)) / dt if dt > 0 else 0.0


def series(outcome: Outcome) -> dict[str, list[float]]:
    s = outcome.samples
    out: dict[str, list[float]] = {
        "t": [x.t for x in s],
        "appended_per_s": [rate(s, i, attrgetter("appended")) for i in range(len(s))],
        "rss_mb": [x.rss_mb for x in s],
        "net_rss_mb": [x.net_rss_mb for x in s],
        "gc_objects": [float(x.gc_objects) for x in s],
    }
    for live in outcome.lives:
        name = live.name
        seen: Callable[[Sample], int] = lambda x, name=name: x.seen[name]  # type: ignore[misc]  # noqa: E731
        out[f"projected_per_s:{name}"] = [rate(s, i, seen) for i in range(len(s))]
        out[f"lag:{name}"] = [float(x.lag[name]) for x in s]
    return out


def memory_summary(outcome: Outcome) -> dict[str, Any]:
    s = outcome.samples
    first, middle, last = s[0], s[len(s) // 2], s[-1]
    growth = last.net_rss_mb - middle.net_rss_mb
    events = last.appended - middle.appended
    return {
        "start_mb": first.net_rss_mb,
        "middle_mb": middle.net_rss_mb,
        "end_mb": last.net_rss_mb,
        "rss_end_mb": last.rss_mb,
        "second_half_growth_mb": growth,
        "second_half_events": events,
        "bytes_per_event": growth * 2**20 / events if events else 0.0,
        "gc_objects": [first.gc_objects, middle.gc_objects, last.gc_objects],
        "limit_mb": MEMORY_LIMIT_MB,
    }


def print_outcome(outcome: Outcome, report: Report) -> dict[str, Any]:
    """Print the tables; the outcome as a JSON-able dict."""
    w, st, s = outcome.writes, outcome.settings, outcome.samples
    names = [live.name for live in outcome.lives]
    ser = series(outcome)
    elapsed = s[-1].t if s else st.seconds

    # Throughput over time, in about 12 rows (1 s each on a short run).
    step = max(1, round(len(s) / 12))
    rows = []
    for lo in range(0, len(s), step):
        hi = min(len(s), lo + step) - 1
        t0 = s[lo - 1].t if lo > 0 else 0.0
        dt = s[hi].t - t0

        def per_s(count: Callable[[Sample], int], lo: int = lo, hi: int = hi, dt: float = dt) -> str:
            return f"{(count(s[hi]) - (count(s[lo - 1]) if lo > 0 else 0)) / dt:,.0f}"

        rows.append(
            [
                f"{t0:.0f}-{s[hi].t:.0f}",
                per_s(attrgetter("appended")),
                *[per_s(lambda x, n=n: x.seen[n]) for n in names],  # type: ignore[misc]
                f"{max(s[hi].lag.values()):,}",
                f"{s[hi].rss_mb:.1f}",
                f"{s[hi].net_rss_mb:.1f}",
                f"{s[hi].gc_objects / 1e3:.1f}",
            ]
        )
    Table(
        header=(
            "seconds",
            "appended ev/s",
            *[f"{n} ev/s" for n in names],
            "max lag",
            "RSS MB",
            "net MB",
            "gc k obj",
        ),
        widths=(9, 13, *[max(10, len(n) + 5) for n in names], 8, 7, 7, 8),
    ).print(
        [
            f"[{outcome.backend}] Throughput over time: {st.writers} writers on {st.streams:,} accounts,"
            f" 1..{st.max_batch} events per append, {elapsed:.0f} s",
            "  projection columns: events seen by each live handler; max lag: events behind the head"
            " (largest of the three)",
            "  net MB: RSS less the run's own latency arrays",
        ],
        rows,
    )

    latencies = {"append": w.latencies.percentiles()}
    for live in outcome.lives:
        latencies[live.name] = live.latencies.percentiles()
    lat_rows = [
        [
            "append (call to result)" if name == "append" else f"projection {name} (append start to handler)",
            f"{p['count']:,}",
            f"{p['p50_ms']:.2f}",
            f"{p['p90_ms']:.2f}",
            f"{p['p99_ms']:.2f}",
            f"{p['max_ms']:.1f}",
        ]
        for name, p in latencies.items()
    ]
    Table(
        header=("latency", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"), widths=(46, 9, 8, 8, 8, 8)
    ).print(
        [
            f"[{outcome.backend}] Latency: {w.appends:,} appends, {w.appended:,} events"
            f" ({w.appended / elapsed:,.0f} ev/s), {w.conflicts:,} expected-version conflicts (retried)"
        ],
        lat_rows,
    )

    mem = memory_summary(outcome)
    verdict = report.memory_verdict(
        f"{outcome.backend} soak memory (second half)",
        mem["second_half_growth_mb"],
        MEMORY_LIMIT_MB,
        f"{MEMORY_LIMIT_MB:g}",
    )
    mem["result"] = verdict
    print()
    print(f"[{outcome.backend}] Memory: RSS less the latency arrays (MB), sampled every second")
    print(
        f"  start {mem['start_mb']:.1f}, middle {mem['middle_mb']:.1f}, end {mem['end_mb']:.1f};"
        f" second half {mem['second_half_growth_mb']:+.1f} MB over {mem['second_half_events']:,} events"
        f" ({mem['bytes_per_event']:+.0f} B/event; limit {MEMORY_LIMIT_MB:g} MB): {verdict}"
        + ("  [QUICK: indicative only]" if st.quick else "")
    )
    g = mem["gc_objects"]
    print(f"  objects tracked by the garbage collector: start {g[0]:,}, middle {g[1]:,}, end {g[2]:,}")
    print(
        f"  RSS at the end {mem['rss_end_mb']:.1f} MB,"
        f" of which latency arrays {recordings_mb(w, outcome.lives):.1f} MB"
    )

    rebuild_rows = []
    for name, r in outcome.rebuild.items():
        rebuild_rows.append(
            [
                name,
                f"{r['events']:,}",
                f"{r['seconds']:.2f}",
                f"{r['events'] / r['seconds'] / 1e3:.1f}" if r["seconds"] > 0 else "",
                "equal" if r["equal"] else "DIFFERENT",
            ]
        )
    Table(
        header=("read model", "events", "seconds", "k ev/s", "live vs rebuilt"), widths=(10, 9, 8, 7, 16)
    ).print(
        [
            f"[{outcome.backend}] Rebuild from position 0 into fresh models, compared with the live ones"
            f" (the live ones caught up {outcome.drain_s:.2f} s after the writers stopped)"
        ],
        rebuild_rows,
    )
    for problem in outcome.problems:
        print(f"  PROBLEM: {problem}")
    if not outcome.problems:
        print("  every read model equals its rebuild and what the writers wrote")

    return {
        "settings": vars(st),
        "appended": w.appended,
        "appends": w.appends,
        "conflicts": w.conflicts,
        "seconds": elapsed,
        "events_per_s": w.appended / elapsed,
        "latency": latencies,
        "memory": mem,
        "series": ser,
        "drain_s": outcome.drain_s,
        "rebuild": outcome.rebuild,
        "problems": outcome.problems,
    }


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument(
        "--seconds", type=float, help="how long the writers run per backend (default 120, 12 with --quick)"
    )
    parser.add_argument("--writers", type=int, default=16, help="concurrent writer tasks (default 16)")
    parser.add_argument(
        "--streams", type=int, default=1000, help="accounts the writers append to (default 1000)"
    )
    parser.add_argument("--max-batch", type=int, default=3, help="events per append: 1..N (default 3)")
    parser.add_argument("--quick", action="store_true", help="about 12 s per backend: a smoke test for CI")
    parser.add_argument(
        "--check",
        action="store_true",
        help="also exit 1 on memory growth past the limit or a skipped backend",
    )
    add_json_arg(parser)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 12.0 if args.quick else 120.0
    if args.seconds < 2 or args.writers < 1 or args.streams < 1 or args.max_batch < 1:
        parser.error("--seconds must be at least 2, --writers, --streams and --max-batch at least 1")
    RESULTS.path = args.json
    return args


async def run_backend(backend: str, settings: Settings, root: Path, report: Report) -> list[str]:
    context = sqlite_backend(root) if backend == "sqlite" else postgres_backend()
    async with context as (url, balances, where):
        print()
        print(f"=== {backend}: {where}")
        outcome = await soak(backend, url, balances, settings)
    RESULTS.extra.setdefault("soak", {})[backend] = print_outcome(outcome, report)
    return outcome.problems


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import sqlite3

    report = Report()
    settings = Settings(args.seconds, args.writers, args.streams, args.max_batch, args.quick)
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"SQLite {sqlite3.sqlite_version}",
                f"asyncpg {version('asyncpg')}",
            ],
            cpus=True,
        )
    )
    print(
        f"soak: {settings.writers} writers, {settings.streams:,} accounts, {settings.seconds:g} s per backend"
        f"{' (QUICK)' if settings.quick else ''};"
        " projections: types (memory), balances (SQL), summary (callback)"
    )
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    problems: list[str] = []
    skipped: dict[str, str] = {}
    root = Path(tempfile.mkdtemp(prefix="streamsrc-soak-"))
    try:
        for backend in backends:
            if backend == "postgres" and (why := postgres_unavailable()) is not None:
                print()
                print(why)
                skipped[backend] = why
                continue
            problems += asyncio.run(run_backend(backend, settings, root, report))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.extra["soak_skipped"] = skipped
    if len(skipped) == len(backends):
        RESULTS.skipped = "; ".join(skipped.values())
    report.failures += problems
    if args.check:
        report.failures += [f"{backend} soak skipped" for backend in skipped]
    code = report.finish(args.check)
    return 1 if problems else code


if __name__ == "__main__":
    sys.exit(main())
