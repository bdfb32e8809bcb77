"""Benchmark of ``streamsrc.migrate.copy``, SQLite to SQLite, against a hand-written raw ``sqlite3`` loop.

Run from the repository root::

    python bench/migrate.py              # 100k events per copy, 3 rounds (about a minute); a report, exit 0
    python bench/migrate.py --quick      # 10k events, 1 round: the CI smoke test (a few seconds)
    python bench/migrate.py --repeat 5 --only interleaved

What is measured: copying every event of a source SQLite file into a fresh,
empty target file (made by streamsrc, so both sides use the same tables;
opening it is not timed), WAL and ``synchronous=NORMAL`` on both sides.

* **streamsrc**: ``copy(source, target)`` with the default batch size (1,000
  events): the source's ``read_all`` in pages, each batch's imports (one per
  run of consecutive events of one stream) and its checkpoint in one SQLite
  transaction, every event checked (names, sizes, seqs continuing the
  stream, ids) as an import checks it.
* **raw**: the loop one would write by hand with the standard library: a
  keyset-paged ``SELECT`` of 1,000 rows from the source, one
  ``executemany(INSERT ...)`` of them into the target and an ``UPSERT`` of
  the checkpoint, in one ``BEGIN IMMEDIATE ... COMMIT`` per page. It checks
  nothing beyond the table's unique indexes.

Sources: *interleaved* — consecutive events belong to different streams (1,000
streams, round-robin), so every import holds one event, the worst case for
streamsrc; *runs of 20* — the source was written in batches of 20 events per
stream, so an import holds 20.

The variants run interleaved for ``--repeat`` rounds (after an untimed warm-up
copy of a tenth of the events); rates are medians; the ratio is streamsrc's
median rate over raw's (info only: no target is judged). Both copies are
checked to give the same rows.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    parse_checked,
    version,
    versions_line,
    versus_ratio,
)

from streamsrc.migrate import copy
from streamsrc.store import open_store

SECTIONS = ("interleaved", "runs")
STREAMS = 1000
RUN = 20
PAGE = 1000

_GENERATE = """
WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < :n)
INSERT INTO events (stream, seq, id, type, data, metadata, time)
SELECT 'stream-' || (((i - 1) / :run) % :streams),
       ((i - 1) / :run / :streams) * :run + (i - 1) % :run + 1,
       randomblob(16), 'Bumped',
       json_object('n', i, 'name', 'item-' || i, 'amount', i / 4.0),
       CASE WHEN i % 3 = 0 THEN json_object('user', 'u-' || (i % 97)) END,
       1700000000000000 + i * 1000
FROM k
"""

_COLUMNS = "stream, seq, id, type, data, metadata, time"
_SELECT = f"SELECT position, {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_CHECKPOINT = (
    "INSERT INTO checkpoints (name, position, time) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
)


def url(path: Path) -> str:
    return f"sqlite:///{path}?synchronous=normal"


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


async def make_store_file(path: Path) -> None:
    async with open_store(url(path)):
        pass


def make_source(path: Path, n: int, run: int) -> None:
    """A source of ``n`` events: ``run`` consecutive events per stream, streams round-robin."""
    anyio.run(make_store_file, path)
    conn = connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_GENERATE, {"n": n, "run": run, "streams": STREAMS})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def raw_copy(source: Path, target: Path) -> int:
    """The hand-written loop: a page from the source, into the target in one transaction with the
    checkpoint; returns the events copied."""
    src, dst = connect(source), connect(target)
    try:
        position = copied = 0
        while True:
            rows = src.execute(_SELECT, (position, PAGE)).fetchall()
            if not rows:
                return copied
            position = rows[-1][0]
            dst.execute("BEGIN IMMEDIATE")
            dst.executemany(_INSERT, [r[1:] for r in rows])
            dst.execute(_CHECKPOINT, ("raw copy", position, time.time_ns() // 1000))
            dst.execute("COMMIT")
            copied += len(rows)
    finally:
        src.close()
        dst.close()


async def streamsrc_copy(source: Path, target: Path) -> int:
    async with open_store(url(source)) as src, open_store(url(target)) as dst:
        done = await copy(src, dst)
        return done.events


def table_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT position, {_COLUMNS} FROM events ORDER BY position").fetchall()
    finally:
        conn.close()


@dataclass
class Variant(Rates):
    name: str


def measure(root: Path, source: Path, n: int, run: int, repeat: int) -> tuple[Variant, Variant]:
    ours, raw = Variant("streamsrc copy"), Variant("raw sqlite3 loop")
    warm = root / f"warm-{source.stem}.db"
    make_source(warm, max(1, n // 10), run)
    for r in range(-1, repeat):
        for v in (ours, raw):
            target = root / f"target-{r + 1}-{v.name.split()[0]}.db"
            anyio.run(make_store_file, target)
            gc.collect()
            start = time.perf_counter()
            if v is ours:
                copied = anyio.run(streamsrc_copy, warm if r < 0 else source, target)
            else:
                copied = raw_copy(warm if r < 0 else source, target)
            elapsed = time.perf_counter() - start
            if r >= 0:
                if copied != n:
                    raise RuntimeError(f"{v.name} copied {copied} events, expected {n}")
                v.rates.append(n / elapsed)
                if r == 0 and table_rows(target) != table_rows(source):
                    raise RuntimeError(f"{v.name}: the target's rows differ from the source's")
            for leftover in root.glob(f"{target.name}*"):
                leftover.unlink()
    return ours, raw


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_args(parser, SECTIONS, default_repeat=3)
    args = parse_checked(parser, argv)
    n = 10_000 if args.quick else 100_000
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    report = Report()
    print(versions_line([f"streamsrc {version('streamsrc')}", f"SQLite {sqlite3.sqlite_version}"], cpus=True))
    print(
        f"{repeat} interleaved round(s) after a warm-up{', QUICK sizes' if args.quick else ''}; "
        f"{n:,} events per copy; WAL, synchronous=NORMAL; rates are medians over rounds"
    )
    table = Table(
        ["copy", "k events/s", "µs/event", "min..max", "ratio", "rounds"],
        [22, 11, 9, 15, 7, 11],
    )
    shapes = {"interleaved": (1, "interleaved (1,000 streams round-robin)"), "runs": (RUN, "runs of 20")}
    with tempfile.TemporaryDirectory(prefix="streamsrc-bench-") as tmp:
        root = Path(tmp)
        for section, (run, title) in shapes.items():
            if args.only and section not in args.only:
                continue
            source = root / f"source-{section}.db"
            make_source(source, n, run)
            ours, raw = measure(root, source, n, run, repeat)
            _, cells = versus_ratio(ours, raw)
            rows = []
            for v, tail in ((ours, cells), (raw, ["", ""])):
                rows.append(
                    [
                        v.name,
                        f"{v.median / 1e3:.1f}",
                        f"{1e6 / v.median:.2f}",
                        f"{min(v.rates) / 1e3:.4g}..{max(v.rates) / 1e3:.4g}",
                        *tail,
                    ]
                )
            table.print([f"Source: {title}; ratio = streamsrc / raw (info)"], rows)
    return report.finish(args.check)


if __name__ == "__main__":
    raise SystemExit(main())
