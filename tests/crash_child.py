"""Programs run in child processes by ``test_crash.py``, which kills them with SIGKILL.

``python tests/crash_child.py append URL SEED ROUND BACKEND [WRITERS]`` opens the store at
``URL`` and appends batches of 1 to :data:`MAX_BATCH` events to random streams
for ever, from :data:`WRITERS` (or ``WRITERS``) concurrent tasks, each with the expected version
it last saw (re-read after a ``WrongExpectedVersion``). It prints ``ready``,
then one JSON line per acknowledged append (see :func:`acknowledged`).

``python tests/crash_child.py project STORE_URL MODEL WHERE MODE BACKEND`` runs
the projection :data:`NAME` from the store at ``STORE_URL`` into a read model
(``MODEL=sqlite``: a :class:`SqliteReadModel` file at ``WHERE``;
``MODEL=postgres``: a :class:`PostgresReadModel` at the URL ``WHERE``) whose
handler inserts one row per event into ``applied`` (``position`` UNIQUE: an
event applied twice fails the projection, and the child ends by itself), then
pauses inside the transaction so a kill lands mid-batch. ``MODE=live`` follows
the log until killed, ``MODE=catch-up`` ends once caught up. It prints
``ready``, then ``applied POSITION`` after each batch.

Every event carries its batch's id and size in ``data`` and ``metadata``
(:func:`batch_events`), so a reader of the log can tell a whole batch from a
torn one.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import asyncpg
from returns.result import Success

from streamsrc.errors import WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Poll, Progress, Projection, Projector
from streamsrc.projections.postgres import PostgresReadModel
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import EventStore, open_store

STREAMS = tuple(f"acct-{i}" for i in range(12))
"""The streams the append child writes to."""

MAX_BATCH = 40
WRITERS = 4
"""Concurrent appending tasks in the append child."""

NAME = "crash"
"""The projection's name (its checkpoint's key)."""

BATCH_SIZE = 7
"""Events per projection batch at most."""

PAUSE = 0.002
"""Seconds the projection handler waits inside its transaction."""

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    k INTEGER PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    batch TEXT NOT NULL
);
"""
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    k BIGSERIAL PRIMARY KEY,
    position BIGINT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    batch TEXT NOT NULL
);
"""
"""The read models' table: ``k`` counts rows in insertion order, a position can be there once."""

SELECT_ROWS = "SELECT position, stream, seq, batch FROM applied ORDER BY k"

Row = tuple[int, str, int, str]
"""What the read models keep of an event: position, stream, seq and batch id."""


def batch_events(batch: str, size: int) -> list[EventData]:
    """A batch of ``size`` events, each knowing its batch's id and size and its index in it."""
    return [
        EventData("Noted", {"batch": batch, "size": size, "i": i}, {"batch": batch, "size": size})
        for i in range(size)
    ]


def row(event: RecordedEvent) -> Row:
    """The read-model row of ``event``."""
    return (event.position, event.stream, event.seq, str(event.data["batch"]))


def acknowledged(
    stream: str, batch: str, first_seq: int, positions: Sequence[int], ids: Sequence[str]
) -> str:
    """The line the append child prints once an append is acknowledged."""
    return json.dumps(
        {
            "stream": stream,
            "batch": batch,
            "first_seq": first_seq,
            "positions": list(positions),
            "ids": list(ids),
        }
    )


# ------------------------------------------------------------------------------------------------ append


async def writer(store: EventStore, seed: int, round_: int, task: int, versions: dict[str, int]) -> None:
    rng = random.Random(f"{seed}-{round_}-{task}")
    for k in range(1_000_000):
        stream, size = rng.choice(STREAMS), rng.randint(1, MAX_BATCH)
        batch = f"r{round_}-w{task}-{k}"
        events = batch_events(batch, size)
        while True:
            if stream not in versions:
                latest = await store.latest(stream)
                versions[stream] = latest.map(lambda e: e.seq).value_or(0)
            result = await store.append(stream, events, expected=versions[stream])
            if isinstance(result, Success):
                break
            if not isinstance(result.failure(), WrongExpectedVersion):
                raise SystemExit(f"append failed: {result.failure()!r}")
            versions.pop(stream, None)  # another writer got there first: look again
        done = result.unwrap()
        versions[stream] = done.last_seq
        ids = [str(e.id) for e in events]
        print(acknowledged(stream, batch, done.first_seq, done.positions, ids), flush=True)
        await anyio.sleep(rng.uniform(0, 0.002))


async def append(url: str, seed: int, round_: int, writers: int = WRITERS) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        versions: dict[str, int] = {}
        async with anyio.create_task_group() as tg:
            for task in range(writers):
                tg.start_soon(writer, store, seed, round_, task, versions)


# -------------------------------------------------------------------------------------------- project


def insert_sqlite(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """The SQLite handler: one row per event, then a pause inside the transaction."""
    conn.executemany(
        "INSERT INTO applied (position, stream, seq, batch) VALUES (?, ?, ?, ?)", map(row, events)
    )
    time.sleep(PAUSE)


async def insert_postgres(conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
    """The PostgreSQL handler: one row per event, then a pause inside the transaction."""
    await conn.executemany(
        "INSERT INTO applied (position, stream, seq, batch) VALUES ($1, $2, $3, $4)", [row(e) for e in events]
    )
    await anyio.sleep(PAUSE)


def tell(p: Progress) -> None:
    print(f"applied {p.position}", flush=True)


async def project(store_url: str, model_kind: str, where: str, mode: str) -> None:
    poll = Poll(min_delay=0.002, max_delay=0.02)
    async with open_store(store_url) as store:
        projector: Projector[Any]
        if model_kind == "sqlite":
            model: Any = SqliteReadModel(where, SQLITE_SCHEMA)
            handler: Any = insert_sqlite
        elif model_kind == "postgres":
            model, handler = PostgresReadModel(where, POSTGRES_SCHEMA), insert_postgres
        else:
            raise SystemExit(f"unknown model {model_kind!r}")
        async with model:
            projector = Projector(store, Projection(NAME, handler), model, batch_size=BATCH_SIZE, poll=poll)
            print("ready", flush=True)
            if mode == "live":
                await projector.run(tell)
            else:
                await projector.catch_up(tell)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "append":
        url, seed, round_, backend, *writers = args  # writers: WRITERS unless given
        count = int(writers[0]) if writers else WRITERS
        anyio.run(append, url, int(seed), int(round_), count, backend=backend)
    elif command == "project":
        store_url, model_kind, where, mode, backend = args
        anyio.run(project, store_url, model_kind, where, mode, backend=backend)
    else:
        raise SystemExit(f"unknown command {command!r}")
