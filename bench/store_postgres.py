"""Benchmark of streamsrc's PostgreSQL event store against raw ``asyncpg`` on the same server.

Run from the repository root::

    python bench/store_postgres.py                  # full run (about 2-3 minutes), a report; exit 0
    python bench/store_postgres.py --check          # same, exit 1 if a target is missed
    python bench/store_postgres.py --quick          # small sizes: a smoke test for CI (~15 s)
    python bench/store_postgres.py --repeat 5 --only single --only read

The server is the one named by ``STREAMSRC_TEST_POSTGRES_URL`` if set, else a
throwaway cluster started from the local binaries by the tests' own
``tests/pg_server.py`` (``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``: durability is off, the settings are printed). With
neither, the benchmark says so and exits 0 (1 under ``--check``).

As in the SQLite benchmarks every target is a *ratio* measured in one run:
the variants run interleaved (A B A B ...) ``--repeat`` times after a small
untimed warm-up round, and the tables show median rates and the ratio of
medians ``streamsrc / reference``. Every write variant gets a fresh database
for every round (creating it and the table is not timed).

Targets:

* single-event appends (awaited one by one): streamsrc ``append`` >= 0.8x a
  raw autocommit ``INSERT`` per event into a table with the same columns and
  constraints (seq and position counted in the client);
* batches of 100 events: streamsrc >= 0.5x raw ``executemany`` of the same
  100 rows in one transaction;
* ``read_all`` of 1,000,000 events generated on the server (20,000 with
  ``--quick``), a handler reading ``e.data``: streamsrc >= 0.8x a raw
  keyset-paged scan (pages of 1,000) with ``json.loads`` per row; and
  ``read`` of one stream of 100,000 events (2,000 with ``--quick``), decoded:
  >= 0.8x the same scan of the stream by seq;
* 8 concurrent writers on distinct streams against 1 writer: a report, no
  target (appends waiting while one is in flight are group-committed under one
  advisory lock; bench/store_writers.py has the targets, with fsync on).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from _common import (
    Report,
    Table,
    add_common_args,
    parse_checked,
    skip,
    timed_appends,
    version,
    versions_line,
)
from _sqlite import Variant, rate_cells, subject_row, versus
from returns.result import Success

from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import open_store
from streamsrc.store.postgres import CHANNEL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_server import (  # the tests' throwaway cluster
    URL_VARIABLE,
    PostgresUnavailable,
    ThrowawayCluster,
    create_database,
    drop_database,
    find_binaries,
)

SECTIONS = ("single", "batch", "read", "writers")
PAGE = 1000
"""Rows per page of the raw keyset scan (streamsrc's default ``page_size``)."""

RAW_TABLE = """
CREATE TABLE events (
    position BIGINT PRIMARY KEY,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id UUID NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT,
    time BIGINT NOT NULL,
    CONSTRAINT events_stream_seq UNIQUE (stream, seq),
    CONSTRAINT events_id UNIQUE (id)
)
"""
"""The raw references' table: the columns and constraints of streamsrc's ``events``."""

INSERT = (
    "INSERT INTO events (position, stream, seq, id, type, data, metadata, time)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
PAGE_SQL = (
    "SELECT stream, seq, position, type, data, metadata, id, time FROM events"
    " WHERE position > $1 ORDER BY position LIMIT $2"
)
GENERATE = """
INSERT INTO events (position, stream, seq, id, type, data, metadata, time)
SELECT i, 'stream-' || ((i - 1) % $2), (i - 1) / $2 + 1, gen_random_uuid(), 'Bumped',
       json_build_object('n', i, 'name', 'item-' || i, 'amount', i::float8 / 4)::text, NULL, $3 + i
FROM generate_series(1, $1::bigint) AS i
"""

GENERATE_STREAM = """
INSERT INTO events (position, stream, seq, id, type, data, metadata, time)
SELECT $1 + i, 'long', i, gen_random_uuid(), 'Bumped',
       json_build_object('n', i, 'name', 'item-' || i, 'amount', i::float8 / 4)::text, NULL, $2 + i
FROM generate_series(1, $3::bigint) AS i
"""
"""One long stream after the log (``read`` of one stream), its events numbered 1.. like the log's."""
STREAM_SQL = (
    "SELECT stream, seq, position, type, data, metadata, id, time FROM events"
    " WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)

ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
"""The raw references encode JSON exactly as streamsrc does (compact, UTF-8, no NaN)."""


@dataclass(frozen=True)
class Sizes:
    single: int  # single-event appends ...
    single_streams: int  # ... over this many streams
    batches: int  # batches of ``batch`` events, one stream each
    batch: int
    read: int  # events read by read_all
    read_streams: int
    writer_events: int  # events per round of the writers section (split among the writers)


FULL = Sizes(
    single=4_000,
    single_streams=100,
    batches=200,
    batch=100,
    read=1_000_000,
    read_streams=1_000,
    writer_events=4_000,
)
QUICK = Sizes(
    single=300,
    single_streams=30,
    batches=10,
    batch=100,
    read=20_000,
    read_streams=100,
    writer_events=400,
)
WRITERS = 8


def payload(i: int) -> dict[str, Any]:
    """The JSON data of event ``i`` (the same for every variant)."""
    return {"n": i, "name": f"item-{i}", "amount": i / 4}


def now_us() -> int:
    return time.time_ns() // 1000


# ---------------------------------------------------------------------------- databases and measuring


PgRun = Callable[[str, int], Awaitable[float]]
"""A variant's run: given the URL of a fresh, empty database and a number of units, the timed seconds."""


async def _no_folder(folder: Path, units: int) -> float:
    raise AssertionError("PostgreSQL variants run on a database, not a folder")


@dataclass
class PgVariant(Variant):
    pg_run: PgRun


def variant(name: str, units: int, per_unit: int, run: PgRun) -> PgVariant:
    return PgVariant(name, units, per_unit, _no_folder, run)


@dataclass
class Server:
    url: str  # the base URL (database ``postgres``)
    made: int = 0

    async def fresh(self) -> tuple[str, str]:
        """A new empty database: its name and URL."""
        self.made += 1
        name = f"bench_{os.getpid()}_{self.made}"
        return name, await create_database(self.url, name)

    async def measure(
        self, variants: Sequence[PgVariant], repeat: int, warm_up: int = 20, fresh: bool = True
    ) -> None:
        """An untimed warm-up round (``1 / warm_up`` of the units), then ``repeat`` rounds of the
        variants, interleaved; with ``fresh``, each run gets a new database, dropped afterwards
        (else the base URL, for runs that bring their own data)."""
        for r in range(-1, repeat):
            for v in variants:
                name, url = await self.fresh() if fresh else ("", self.url)
                try:
                    units = max(1, v.units // warm_up) if r < 0 else v.units
                    gc.collect()
                    elapsed = await v.pg_run(url, units)
                    if r >= 0:
                        v.rates.append(units * v.per_unit / elapsed)
                finally:
                    if name:
                        await drop_database(self.url, name)


async def count_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def check_count(url: str, expected: int, who: str) -> None:
    got = await count_rows(url)
    if got != expected:
        raise RuntimeError(f"{who} stored {got} events, expected {expected}")


async def create_schema(url: str) -> None:
    """streamsrc's schema in the database of ``url``, made by streamsrc."""
    async with open_store(url):
        pass


# ---------------------------------------------------------------------------- reporting


TABLE = Table(
    header=("variant", "events", "k ev/s", "us/ev", "min..max", "ratio", "rounds", "target", "result"),
    widths=(50, 9, 8, 7, 13, 7, 11, 7, 6),
)


def table(title: str, rows: Sequence[Sequence[str]]) -> None:
    TABLE.print([title], rows)


def info_row(v: Variant) -> list[str]:
    return [*rate_cells(v), "", "", "(info)", ""]


# ---------------------------------------------------------------------------- appends


Work = list[tuple[str, list[EventData]]]


def _ignore(*args: object) -> None:
    pass


def append_runs(work: Work) -> tuple[PgRun, PgRun, Callable[[bool], PgRun]]:
    """streamsrc ``append``, the raw ``INSERT``s (one transaction per unit) and, given whether a
    second connection LISTENs to the store's channel meanwhile (as an open store does), a bare
    call of the server function, over ``work`` (a unit is one append of ``work[i]``'s events)."""

    async def streamsrc_run(url: str, units: int) -> float:
        elapsed = await timed_appends(url, work[:units])
        await check_count(url, sum(len(e) for _, e in work[:units]), "streamsrc")
        return elapsed

    async def raw_run(url: str, units: int) -> float:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(RAW_TABLE)
            seqs: dict[str, int] = {}
            position = 0
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in work[:units]:
                rows = []
                for e in events:
                    seq = seqs[stream] = seqs.get(stream, 0) + 1
                    position += 1
                    rows.append((position, stream, seq, e.id, e.type, ENCODE(e.data), None, now_us()))
                if len(rows) == 1:
                    await conn.execute(INSERT, *rows[0])  # autocommit
                else:
                    async with conn.transaction():
                        await conn.executemany(INSERT, rows)
            elapsed = time.perf_counter() - t0
        finally:
            await conn.close()
        await check_count(url, position, "raw")
        return elapsed

    def function_run(listen: bool) -> PgRun:
        async def run(url: str, units: int) -> float:
            await create_schema(url)
            listener = await asyncpg.connect(url) if listen else None
            try:
                if listener is not None:
                    await listener.add_listener(CHANNEL, _ignore)
                return await call_function(url, units)
            finally:
                if listener is not None:
                    await listener.close()

        return run

    async def call_function(url: str, units: int) -> float:
        conn = await asyncpg.connect(url)
        try:
            sql = "SELECT * FROM streamsrc_append($1, $2, $3, $4, $5, $6, $7)"
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in work[:units]:
                await conn.fetch(
                    sql,
                    stream,
                    -1,
                    [e.id for e in events],
                    [e.type for e in events],
                    [ENCODE(e.data) for e in events],
                    [None] * len(events),
                    [now_us()] * len(events),
                )
            elapsed = time.perf_counter() - t0
        finally:
            await conn.close()
        await check_count(url, sum(len(e) for _, e in work[:units]), "raw function call")
        return elapsed

    return streamsrc_run, raw_run, function_run


async def bench_single(server: Server, sizes: Sizes, repeat: int, report: Report) -> None:
    n, k = sizes.single, sizes.single_streams
    work = [(f"stream-{i % k}", [EventData("Bumped", payload(i))]) for i in range(n)]
    streamsrc_run, raw_run, function_run = append_runs(work)
    subject = variant("streamsrc append([e])", n, 1, streamsrc_run)
    raw = variant("raw autocommit INSERT (seq, position in client)", n, 1, raw_run)
    call = variant("raw SELECT streamsrc_append(...) (no store)", n, 1, function_run(False))
    heard = variant("  same, another connection LISTENing", n, 1, function_run(True))
    await server.measure([raw, subject, call, heard], repeat)
    table(
        f"1. Single-event appends: {n:,} events over {k} streams, each awaited"
        "\n  ratio = streamsrc median / reference median; rounds = per-round ratios (noise)"
        f"\n  per event: streamsrc {1e6 / subject.median:.0f} us, raw INSERT {1e6 / raw.median:.0f} us,"
        f" the server function\n  called directly {1e6 / call.median:.0f} us"
        f" ({1e6 / heard.median:.0f} us while another connection LISTENs to its notifications)",
        [
            subject_row(subject),
            versus(report, subject, raw, 0.8, "single appends vs raw INSERT"),
            versus(None, subject, call, None, ""),
            versus(None, subject, heard, None, ""),
        ],
    )


async def bench_batch(server: Server, sizes: Sizes, repeat: int, report: Report) -> None:
    b, size = sizes.batches, sizes.batch
    work = [
        (f"stream-{j}", [EventData("Bumped", payload(j * size + i)) for i in range(size)]) for j in range(b)
    ]
    streamsrc_run, raw_run, function_run = append_runs(work)
    subject = variant(f"streamsrc append(<{size} events>)", b, size, streamsrc_run)
    raw = variant(f"raw executemany of {size} rows, one transaction", b, size, raw_run)
    call = variant("raw SELECT streamsrc_append(...) (no store)", b, size, function_run(False))
    await server.measure([raw, subject, call], repeat, warm_up=10)
    table(
        f"2. Batched appends: {b:,} batches of {size}, each to a new stream",
        [
            subject_row(subject),
            versus(report, subject, raw, 0.5, "batched appends vs raw executemany"),
            versus(None, subject, call, None, ""),
        ],
    )


# ---------------------------------------------------------------------------- read_all


async def generate_events(url: str, n: int, streams: int) -> float:
    """Fill streamsrc's ``events`` table with events 1..n (positions dense, seq per stream), on the
    server; the seconds it took."""
    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        await conn.execute(GENERATE, n, streams, now_us() - n)
        await conn.execute("VACUUM ANALYZE events")
        return time.perf_counter() - t0
    finally:
        await conn.close()


def add_n(total: int, e: RecordedEvent) -> int:
    n: int = e.data["n"]
    return total + n


def add_type(total: int, e: RecordedEvent) -> int:
    return total + (e.type == "Bumped")


async def bench_read(server: Server, sizes: Sizes, repeat: int, report: Report) -> None:
    n = sizes.read
    name, url = await server.fresh()
    try:
        await create_schema(url)
        generated = await generate_events(url, n, sizes.read_streams)
        conn = await asyncpg.connect(url)
        long_n = n // 10  # the one long stream: 100,000 events in the full run
        await conn.execute(GENERATE_STREAM, n, now_us() - long_n, long_n)
        await conn.execute("VACUUM ANALYZE events")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('events'))")
        async with open_store(url) as store:

            def timed(read: Callable[[int], Awaitable[int]], decoded: bool, who: str) -> PgRun:
                """A run timing ``read(units)``: the sum of ``n`` (``decoded``) or the count of the
                first ``units`` events (the fresh database is not used: all read the same rows)."""

                async def run(_fresh: str, units: int) -> float:
                    t0 = time.perf_counter()
                    got = await read(units)
                    elapsed = time.perf_counter() - t0
                    expected = units * (units + 1) // 2 if decoded else units
                    if got != expected:
                        raise RuntimeError(f"{who} read {got}, expected {expected}")
                    return elapsed

                return run

            async def streamsrc_data(units: int) -> int:
                total: int = await store.read_all(limit=units).fold(0, add_n)
                return total

            async def streamsrc_type(units: int) -> int:
                total: int = await store.read_all(limit=units).fold(0, add_type)
                return total

            async def raw_pages(units: int, decode: bool = True) -> int:
                statement = await conn.prepare(PAGE_SQL)
                total = after = 0
                while after < units:
                    rows = await statement.fetch(after, min(PAGE, units - after))
                    if not rows:
                        break
                    for row in rows:
                        total += json.loads(row[4])["n"] if decode else row[3] == "Bumped"
                    after = rows[-1][2]
                return total

            async def raw_types(units: int) -> int:
                return await raw_pages(units, decode=False)

            async def streamsrc_stream(units: int) -> int:
                total: int = await store.read("long", limit=units).fold(0, add_n)
                return total

            async def raw_stream(units: int) -> int:
                statement = await conn.prepare(STREAM_SQL)
                total = after = 0
                while after < units:
                    rows = await statement.fetch("long", after, min(PAGE, units - after))
                    if not rows:
                        break
                    for row in rows:
                        total += json.loads(row[4])["n"]
                    after = rows[-1][1]
                return total

            subject = variant(
                "streamsrc read_all().fold(+ e.data['n'])", n, 1, timed(streamsrc_data, True, "streamsrc")
            )
            raw = variant(f"raw keyset pages of {PAGE} + json.loads", n, 1, timed(raw_pages, True, "raw"))
            types = variant(
                "streamsrc read_all().fold(e.type) (no decoding)", n, 1, timed(streamsrc_type, False, "types")
            )
            raw_t = variant(
                "  raw keyset pages, e.type only (no json.loads)", n, 1, timed(raw_types, False, "raw types")
            )
            one = variant(
                "streamsrc read('long').fold(+ e.data['n'])", long_n, 1, timed(streamsrc_stream, True, "read")
            )
            raw_one = variant(
                f"raw keyset pages of {PAGE} of the stream + json.loads",
                long_n,
                1,
                timed(raw_stream, True, "raw stream"),
            )
            await server.measure([raw, subject, types, raw_t, raw_one, one], repeat, fresh=False)
        await conn.close()
    finally:
        await drop_database(server.url, name)
    table(
        f"3. read_all of {n:,} events over {sizes.read_streams:,} streams ({size}; generated on the"
        f" server in {generated:.1f} s)",
        [
            subject_row(subject),
            versus(report, subject, raw, 0.8, "read_all (decoded) vs raw keyset pages"),
            info_row(types),
            versus(None, types, raw_t, None, ""),
            subject_row(one),
            versus(report, one, raw_one, 0.8, f"read one stream of {long_n:,} (decoded) vs raw keyset pages"),
        ],
    )


# ---------------------------------------------------------------------------- concurrent writers


async def bench_writers(server: Server, sizes: Sizes, repeat: int) -> None:
    total = sizes.writer_events

    def writers_run(count: int) -> PgRun:
        async def run(url: str, units: int) -> float:
            per = units // count

            async with open_store(url) as store:

                async def writer(w: int) -> None:
                    for i in range(per):
                        if not isinstance(
                            await store.append(f"writer-{w}", [EventData("Bumped", payload(i))]), Success
                        ):
                            raise RuntimeError(f"writer {w} failed")

                gc.collect()
                t0 = time.perf_counter()
                await asyncio.gather(*(writer(w) for w in range(count)))
                elapsed = time.perf_counter() - t0
            await check_count(url, per * count, f"{count} writers")
            return elapsed

        return run

    one = variant("1 writer, append([e]) awaited one by one", total, 1, writers_run(1))
    many = variant(f"{WRITERS} writers on {WRITERS} streams, same store", total, 1, writers_run(WRITERS))
    await server.measure([one, many], repeat)
    table(
        f"4. Concurrent writers: {total:,} single-event appends, 1 writer vs {WRITERS} (a report:"
        "\n  appends waiting while one is in flight commit as one group, under one advisory lock)",
        [subject_row(many), versus(None, many, one, None, "")],
    )


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3)
    return parse_checked(parser, argv)


async def run(args: argparse.Namespace, url: str, source: str, report: Report) -> None:
    conn = await asyncpg.connect(url)
    try:
        server_version = await conn.fetchval("SHOW server_version")
        settings = [f"{s}={await conn.fetchval(f'SHOW {s}')}" for s in ("fsync", "synchronous_commit")]
    finally:
        await conn.close()
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"asyncpg {version('asyncpg')}",
                f"PostgreSQL {server_version.split()[0]}",
            ],
            cpus=True,
        )
    )
    print(
        f"{args.repeat} interleaved rounds after a warm-up{', QUICK sizes' if args.quick else ''};"
        " rates are medians over rounds"
    )
    off = " (durability off: not production figures)" if "off" in " ".join(settings) else ""
    print(f"server: {source}; {', '.join(settings)}{off}")
    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    server = Server(url)
    if "single" in sections:
        await bench_single(server, sizes, args.repeat, report)
    if "batch" in sections:
        await bench_batch(server, sizes, args.repeat, report)
    if "read" in sections:
        await bench_read(server, sizes, args.repeat, report)
    if "writers" in sections:
        await bench_writers(server, sizes, args.repeat)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    named = os.environ.get(URL_VARIABLE)
    if named:
        asyncio.run(run(args, named, f"{URL_VARIABLE}", report))
        return report.finish(args.check)
    if find_binaries() is None:
        return skip(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found and {URL_VARIABLE} not set:"
            " the PostgreSQL store benchmark is skipped",
            args.check,
        )
    try:
        cluster = ThrowawayCluster().start()
    except PostgresUnavailable as exc:
        return skip(f"{exc}: the PostgreSQL store benchmark is skipped", args.check)
    try:
        asyncio.run(run(args, cluster.url, f"throwaway cluster on 127.0.0.1:{cluster.port}", report))
    finally:
        cluster.remove()
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
