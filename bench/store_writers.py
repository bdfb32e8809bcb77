"""Concurrent writers: streamsrc's SQLite and PostgreSQL stores against raw loops doing the same work.

Run from the repository root::

    python bench/store_writers.py             # full run, a report; exit 0
    python bench/store_writers.py --check     # exit 1 if a target is missed
    python bench/store_writers.py --quick     # small sizes (a smoke test)
    python bench/store_writers.py --only sqlite --only postgres

Every target is a ratio measured in one run (variants interleaved, ``--repeat``
rounds, the median of each; a fresh database per round). Writers are tasks of
one process, each appending single events to its own stream, awaited one by one.

SQLite (sections ``sqlite``):

* ``synchronous=full``, 16 writers: streamsrc >= 0.7x a raw single-thread loop
  that commits the same appends in groups of 16 (one ``BEGIN IMMEDIATE`` ...
  ``COMMIT`` per group; in it, per append, a ``SAVEPOINT``, the stream's
  version read with ``MAX(seq)`` and checked, the row inserted into a table
  with ``UNIQUE (stream, seq)`` and ``UNIQUE (id)``, the payload encoded with
  ``json.dumps``, ``RELEASE``).
* ``synchronous=normal``, 16 writers: streamsrc >= 0.9x a raw loop doing one
  transaction per append (the same version read, insert and JSON).

PostgreSQL (section ``postgres``; ``fsync=on``, ``synchronous_commit=on``,
``full_page_writes=on``: a throwaway server started for the benchmark from
the local binaries, its settings printed), 1, 4, 16 and 64 writers:

* streamsrc at 16 writers >= 0.7x raw ``asyncpg`` autocommit inserts (one
  ``INSERT`` per event, a connection per writer from a pool) into a table with
  a ``bigserial`` position, ``UNIQUE (stream, seq)`` and ``UNIQUE (id)``, the
  payload encoded with ``json.dumps`` (seq counted by the writer: raw does no
  version read, so it is an upper bound);
* streamsrc's scaling (16 writers / 1 writer) >= 0.8x raw's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from _common import Report, Table, add_common_args, parse_checked, versions_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from streamsrc.events import EventData, new_event_id

SECTIONS = ("sqlite", "postgres")
TABLE = Table(["variant", "events/s", "ratio", "rounds", "target", "result"], [62, 10, 7, 11, 7, 6])


def payload(w: int, i: int) -> dict[str, Any]:
    return {"writer": w, "n": i, "name": f"item-{i}", "amount": i * 1.5}


async def interleaved(
    variants: Sequence[tuple[str, Callable[[], Awaitable[float]]]], repeat: int, events: int
) -> dict[str, list[float]]:
    """Run each variant ``repeat`` times, interleaved after one untimed warm-up round: rates per name."""
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _, run in variants:
        await run()
    for _ in range(repeat):
        for name, run in variants:
            rates[name].append(events / await run())
    return rates


def ratio_row(
    report: Report, label: str, rates: list[float], ref: list[float], target: float | None
) -> list[str]:
    ratio = statistics.median(rates) / statistics.median(ref)
    rounds = [a / b for a, b in zip(rates, ref, strict=True)]
    cells = [
        label,
        f"{statistics.median(rates):,.0f}",
        f"{ratio:.2f}x",
        f"{min(rounds):.2f}..{max(rounds):.2f}",
    ]
    if target is None:
        return [*cells, "(info)", ""]
    return [*cells, f">={target:g}x", report.verdict(label, ratio, target)]


def info(label: str, rates: list[float]) -> list[str]:
    return [label, f"{statistics.median(rates):,.0f}", "", "", "", ""]


# ---------------------------------------------------------------------------- SQLite

_RAW_SCHEMA = """
CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    id BLOB NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, metadata TEXT, time INTEGER NOT NULL);
CREATE UNIQUE INDEX events_stream_seq ON events (stream, seq);
CREATE UNIQUE INDEX events_id ON events (id);
"""
_RAW_INSERT = "INSERT INTO events (stream, seq, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)"


def _raw_conn(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(_RAW_SCHEMA)
    return conn


def _raw_one(conn: sqlite3.Connection, stream: str, w: int, i: int) -> None:
    current = conn.execute("SELECT MAX(seq) FROM events WHERE stream = ?", (stream,)).fetchone()[0] or 0
    if current != i:
        raise RuntimeError("version")
    row = (
        stream,
        current + 1,
        uuid.uuid4().bytes,
        "Added",
        json.dumps(payload(w, i)),
        None,
        time.time_ns() // 1000,
    )
    conn.execute(_RAW_INSERT, row)


def raw_sqlite_grouped(path: Path, writers: int, per: int) -> float:
    conn = _raw_conn(path, "FULL")
    t0 = time.perf_counter()
    for i in range(per):  # one group: the i-th append of every writer
        conn.execute("BEGIN IMMEDIATE")
        for w in range(writers):
            conn.execute("SAVEPOINT a")
            _raw_one(conn, f"w-{w}", w, i)
            conn.execute("RELEASE a")
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def raw_sqlite_each(path: Path, writers: int, per: int) -> float:
    conn = _raw_conn(path, "NORMAL")
    t0 = time.perf_counter()
    for i in range(per):
        for w in range(writers):
            conn.execute("BEGIN IMMEDIATE")
            _raw_one(conn, f"w-{w}", w, i)
            conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


async def streamsrc_writers(url: str, writers: int, per: int) -> float:
    from streamsrc.store import open_store

    async with open_store(url) as store:

        async def writer(w: int) -> None:
            stream = f"w-{w}"
            for i in range(per):
                result = await store.append(stream, [EventData("Added", payload(w, i))], expected=i)
                if not hasattr(result, "unwrap") or result.__class__.__name__ != "Success":
                    raise RuntimeError(f"append failed: {result}")

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for w in range(writers):
                tg.create_task(writer(w))
        return time.perf_counter() - t0


async def bench_sqlite(quick: bool, repeat: int, report: Report, root: Path) -> None:
    writers = 16
    per = 40 if quick else 250
    events = writers * per
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        return root / f"db-{next(counter)}.db"

    async def full() -> float:
        return await streamsrc_writers(f"sqlite:///{fresh()}?synchronous=full", writers, per)

    async def raw_full() -> float:
        return await asyncio.to_thread(raw_sqlite_grouped, fresh(), writers, per)

    async def normal() -> float:
        return await streamsrc_writers(f"sqlite:///{fresh()}?synchronous=normal", writers, per)

    async def raw_normal() -> float:
        return await asyncio.to_thread(raw_sqlite_each, fresh(), writers, per)

    async def one_full() -> float:
        return await streamsrc_writers(f"sqlite:///{fresh()}?synchronous=full", 1, per * 4)

    r = await interleaved(
        [("full", full), ("raw_full", raw_full), ("normal", normal), ("raw_normal", raw_normal)],
        repeat,
        events,
    )
    one = await interleaved([("one", one_full)], repeat, per * 4)
    TABLE.print(
        [f"SQLite: {writers} writers x {per} single-event appends (expected version each), WAL"],
        [
            ratio_row(report, "synchronous=full: streamsrc, 16 writers", r["full"], r["raw_full"], 0.7),
            info(
                "  raw loop: groups of 16 in one transaction, savepoint + version check each", r["raw_full"]
            ),
            info("  streamsrc, 1 writer (synchronous=full)", one["one"]),
            ratio_row(report, "synchronous=normal: streamsrc, 16 writers", r["normal"], r["raw_normal"], 0.9),
            info("  raw loop: one transaction per append, version check each", r["raw_normal"]),
        ],
    )


# ---------------------------------------------------------------------------- PostgreSQL

_PG_RAW_SCHEMA = """
CREATE TABLE events (position BIGSERIAL PRIMARY KEY, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    id UUID NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, metadata TEXT, time BIGINT NOT NULL,
    UNIQUE (stream, seq), UNIQUE (id));
"""


def start_durable_cluster() -> Any:
    """A throwaway cluster like the tests' one, but with durability on (fsync, synchronous_commit)."""
    import pg_server

    return pg_server.ThrowawayCluster(durable=True).start()


async def bench_postgres(quick: bool, repeat: int, report: Report) -> None:
    import asyncpg
    import pg_server

    url = os.environ.get(pg_server.URL_VARIABLE)
    cluster = None
    if url is None:
        if pg_server.find_binaries() is None:
            print("\nPostgreSQL: no server binaries and no STREAMSRC_TEST_POSTGRES_URL: skipped")
            return
        cluster = await asyncio.to_thread(start_durable_cluster)
        url = cluster.url
    try:
        conn = await asyncpg.connect(url)
        settings = [
            f"{s}={await conn.fetchval(f'SHOW {s}')}"
            for s in ("fsync", "synchronous_commit", "full_page_writes")
        ]
        await conn.close()
        counter = iter(range(1_000_000))

        async def fresh() -> str:
            return await pg_server.create_database(url, f"bench_{os.getpid()}_{next(counter)}")

        def streamsrc_run(writers: int, per: int) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                db = await fresh()
                return await streamsrc_writers(f"{db}?pool_max={max(writers, 10)}", writers, per)

            return run

        def raw_run(writers: int, per: int) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                db = await fresh()
                pool = await asyncpg.create_pool(db, min_size=writers, max_size=writers)
                await pool.execute(_PG_RAW_SCHEMA)
                sql = (
                    "INSERT INTO events (stream, seq, id, type, data, metadata, time) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
                )

                async def writer(w: int) -> None:
                    async with pool.acquire() as c:
                        for i in range(per):
                            await c.execute(
                                sql,
                                f"w-{w}",
                                i + 1,
                                new_event_id(),
                                "Added",
                                json.dumps(payload(w, i)),
                                None,
                                time.time_ns() // 1000,
                            )

                t0 = time.perf_counter()
                async with asyncio.TaskGroup() as tg:
                    for w in range(writers):
                        tg.create_task(writer(w))
                elapsed = time.perf_counter() - t0
                await pool.close()
                return elapsed

            return run

        total = 400 if quick else 2000
        rows = []
        medians: dict[tuple[str, int], float] = {}
        for writers in (1, 4, 16, 64):
            per = max(total // writers, 5)
            r = await interleaved(
                [("s", streamsrc_run(writers, per)), ("raw", raw_run(writers, per))], repeat, writers * per
            )
            medians["s", writers] = statistics.median(r["s"])
            medians["raw", writers] = statistics.median(r["raw"])
            target = 0.7 if writers == 16 else None
            rows.append(
                ratio_row(
                    report,
                    f"{writers} writers: streamsrc vs raw autocommit inserts",
                    r["s"],
                    r["raw"],
                    target,
                )
            )
            rows.append(info(f"  raw asyncpg, {writers} writers", r["raw"]))
        s_scale = medians["s", 16] / medians["s", 1]
        raw_scale = medians["raw", 16] / medians["raw", 1]
        ratio = s_scale / raw_scale
        label = "scaling 16/1 writers: streamsrc's vs raw's"
        rows.append(
            [
                label,
                f"{s_scale:.2f}x",
                f"{ratio:.2f}x",
                f"raw {raw_scale:.2f}x",
                ">=0.8x",
                report.verdict(label, ratio, 0.8),
            ]
        )
        TABLE.print(
            [f"PostgreSQL ({', '.join(settings)}): single-event appends, writers on distinct streams"], rows
        )
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.__exit__, None, None, None)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, SECTIONS, default_repeat=3)
    return parse_checked(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sections = args.only or SECTIONS
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    print(versions_line(["streamsrc concurrent writers"], cpus=True))
    report = Report()
    with tempfile.TemporaryDirectory(prefix="streamsrc-writers-") as folder:
        if "sqlite" in sections:
            asyncio.run(bench_sqlite(args.quick, repeat, report, Path(folder)))
        if "postgres" in sections:
            asyncio.run(bench_postgres(args.quick, repeat, report))
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
