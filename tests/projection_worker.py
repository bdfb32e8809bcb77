"""A projection worker in a child process, for ``test_projection_workers.py`` (issue 17).

``python tests/projection_worker.py MODE STORE_URL MODEL OWNER PARTITIONS TTL CONCURRENCY`` runs the
projection ``counted`` from the event store at ``STORE_URL`` into the read model ``MODEL`` (a SQLite
file path, or the PostgreSQL URL itself), with a non-idempotent handler: it adds the batch's size to
``counter.n`` and inserts a row per event into ``applied`` (no unique key: an event applied twice
shows as two rows), and records in ``disorder`` any event of a stream that does not follow the one
before it (per-stream order).

* ``MODE=plain``: one :class:`Projector` catching up, no leases (the mistake of issue 17: run it
  twice at once); exits 0 when caught up, 3 with ``owned elsewhere`` on stdout if the read model
  refused a batch because another runner moved the checkpoint.
* ``MODE=worker``: a :class:`ProjectionWorker` (PARTITIONS partitions, leases of TTL seconds, CONCURRENCY
  streams at once per partition) until killed; prints ``held [...]`` after each rebalance.

The parent creates the tables first (:func:`prepare`), so the children only open the model.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from streamsrc.errors import ProjectionOwnedElsewhere
from streamsrc.events import RecordedEvent
from streamsrc.projections import Poll, Projection, ProjectionWorker, Projector
from streamsrc.projections.postgres import PostgresReadModel
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store

NAME = "counted"

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (1, 0);
CREATE TABLE IF NOT EXISTS applied (position INTEGER NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_seq (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS disorder (stream TEXT, seq INTEGER, after INTEGER);
CREATE TABLE IF NOT EXISTS backwards (name TEXT, old INTEGER, new INTEGER);
CREATE TRIGGER IF NOT EXISTS no_backwards BEFORE UPDATE ON streamsrc_projections
WHEN NEW.position < OLD.position
BEGIN INSERT INTO backwards VALUES (OLD.name, OLD.position, NEW.position); END;
"""

POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (k INTEGER PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS applied (position BIGINT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS last_seq (stream TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS disorder (stream TEXT, seq BIGINT, after BIGINT);
CREATE TABLE IF NOT EXISTS backwards (name TEXT, old BIGINT, new BIGINT);
CREATE OR REPLACE FUNCTION no_backwards() RETURNS trigger AS $$
BEGIN
    IF NEW.position < OLD.position THEN
        INSERT INTO backwards VALUES (OLD.name, OLD.position, NEW.position);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS no_backwards ON streamsrc_projections;
CREATE TRIGGER no_backwards BEFORE UPDATE ON streamsrc_projections
FOR EACH ROW EXECUTE FUNCTION no_backwards();
"""

CHECKS = {
    "counter": "SELECT n FROM counter",
    "rows": "SELECT count(*) FROM applied",
    "distinct": "SELECT count(DISTINCT position) FROM applied",
    "disorder": "SELECT count(*) FROM disorder",
    "backwards": "SELECT count(*) FROM backwards",
}


PAUSE = float(os.environ.get("PROJECTION_WORKER_PAUSE", "0"))
"""Seconds the SQLite handler sleeps inside the transaction (so that a SIGKILL lands mid-batch)."""


def count_sqlite(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """The non-idempotent SQLite handler."""
    if PAUSE:
        time.sleep(PAUSE)
    conn.execute("UPDATE counter SET n = n + ?", (len(events),))
    conn.executemany("INSERT INTO applied VALUES (?, ?, ?)", [(e.position, e.stream, e.seq) for e in events])
    for e in events:
        row = conn.execute("SELECT seq FROM last_seq WHERE stream = ?", (e.stream,)).fetchone()
        before = row[0] if row else 0
        if before != e.seq - 1:
            conn.execute("INSERT INTO disorder VALUES (?, ?, ?)", (e.stream, e.seq, before))
        conn.execute("INSERT OR REPLACE INTO last_seq VALUES (?, ?)", (e.stream, e.seq))


async def count_postgres(conn: Any, events: Sequence[RecordedEvent]) -> None:
    """The non-idempotent PostgreSQL handler."""
    await conn.execute("UPDATE counter SET n = n + $1", len(events))
    await conn.executemany(
        "INSERT INTO applied VALUES ($1, $2, $3)", [(e.position, e.stream, e.seq) for e in events]
    )
    for e in events:
        before = await conn.fetchval("SELECT seq FROM last_seq WHERE stream = $1", e.stream) or 0
        if before != e.seq - 1:
            await conn.execute("INSERT INTO disorder VALUES ($1, $2, $3)", e.stream, e.seq, before)
        await conn.execute(
            "INSERT INTO last_seq VALUES ($1, $2) ON CONFLICT (stream) DO UPDATE SET seq = $2",
            e.stream,
            e.seq,
        )


def open_model(where: str, schema: bool = False) -> Any:
    """The read model at ``where`` (with the test's tables when ``schema``)."""
    if where.startswith("postgresql"):
        return PostgresReadModel(where, POSTGRES_SCHEMA if schema else "")
    return SqliteReadModel(where, SQLITE_SCHEMA if schema else "", busy_timeout=30.0)


async def prepare(where: str) -> None:
    """Create the read model's tables (before the children start)."""
    async with open_model(where, schema=True):
        pass


async def checks(where: str) -> dict[str, int]:
    """The counts the tests compare (see :data:`CHECKS`)."""
    async with open_model(where) as model:
        out = {}
        for key, sql in CHECKS.items():
            rows = await model.query(sql)
            out[key] = int(rows[0][0])
        return out


async def main(
    mode: str, url: str, where: str, owner: str, partitions: int, ttl: float, concurrency: int
) -> None:
    poll = Poll(min_delay=0.005, max_delay=0.05)
    async with open_store(url) as store, open_model(where) as model:
        handler = count_postgres if isinstance(model, PostgresReadModel) else count_sqlite
        projection = Projection(NAME, handler)
        if mode == "plain":

            def slow(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
                count_sqlite(conn, events)
                time.sleep(0.003)  # a handler doing some work: the two runs overlap

            projector = Projector(store, Projection(NAME, slow), model, batch_size=10, poll=poll)
            print("ready", flush=True)
            try:
                await projector.catch_up()
            except ProjectionOwnedElsewhere as exc:
                print("owned elsewhere:", exc, flush=True)
                raise SystemExit(3) from None
            return
        worker = ProjectionWorker(
            store,
            projection,
            model,
            model.leases(),
            partitions=partitions,
            owner=owner,
            lease_ttl=ttl,
            batch_size=20,
            poll=poll,
            concurrency=concurrency,
        )

        def held(partitions: list[int]) -> None:
            print("held", partitions, time.time(), flush=True)

        print("ready", flush=True)
        await worker.run(on_balance=held)


if __name__ == "__main__":
    mode, url, where, owner, partitions, ttl, concurrency = sys.argv[1:]
    anyio.run(main, mode, url, where, owner, int(partitions), float(ttl), int(concurrency))
