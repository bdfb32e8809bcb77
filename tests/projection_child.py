"""A projection run in a child process, for ``test_projections.py`` to kill with SIGKILL.

``python tests/projection_child.py MODE EVENTS_DB OUT ROUND BACKEND`` opens the
SQLite event store ``EVENTS_DB`` and runs the projection ``child`` live (until
killed), in small batches with a short pause in each so a kill lands in the
middle of the work:

* ``MODE=sqlite``: into a :class:`SqliteReadModel` at ``OUT``, whose handler
  inserts one row per event into ``applied`` (``position`` is UNIQUE: an event
  applied twice would fail the projection and end the process by itself);
* ``MODE=callback``: into a :class:`CallbackReadModel` checkpointed in the
  event store, whose handler appends ``"ROUND POSITION"`` lines to the file
  ``OUT`` (one ``write`` per batch, so a kill never leaves half a batch).

It prints ``ready`` once the models are open. The helpers here are shared with
the tests, so the tests and the child agree on what a row is.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio

from streamsrc.events import RecordedEvent
from streamsrc.projections import CallbackReadModel, Poll, Projection, Projector
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store.sqlite import SqliteStore

Row = tuple[int, str, int, str, int]
"""What a read model keeps of an event: position, stream, seq, type and ``data["n"]``."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    k INTEGER PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    n INTEGER NOT NULL
);
"""
"""The SQLite read model's table: ``k`` counts rows in the order they were inserted."""

SELECT_ROWS = "SELECT position, stream, seq, type, n FROM applied ORDER BY k"

NAME = "child"
BATCH_SIZE = 5


def row(event: RecordedEvent) -> Row:
    """The row of ``event``."""
    return (event.position, event.stream, event.seq, event.type, int(event.data["n"]))


def insert_rows(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """The SQLite handler: one row per event (a second row for a position raises IntegrityError)."""
    conn.executemany(
        "INSERT INTO applied (position, stream, seq, type, n) VALUES (?, ?, ?, ?, ?)", map(row, events)
    )


def slow_insert_rows(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    """:func:`insert_rows`, then a pause inside the transaction (a kill then lands mid-batch)."""
    insert_rows(conn, events)
    time.sleep(0.001)


def read_deliveries(path: str) -> list[tuple[int, int]]:
    """The ``(round, position)`` lines written by the callback handler, in order."""
    out: list[tuple[int, int]] = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                r, p = line.split()
                out.append((int(r), int(p)))
    return out


def delivery_writer(path: str, round_: int) -> Callable[[Sequence[RecordedEvent]], Awaitable[None]]:
    """A callback handler appending ``"ROUND POSITION"`` lines to ``path``, one write per batch."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def handler(events: Sequence[RecordedEvent]) -> None:
        await anyio.sleep(0.001)  # a kill here must leave the checkpoint before this batch
        os.write(fd, "".join(f"{round_} {e.position}\n" for e in events).encode())

    return handler


async def main(mode: str, events_db: str, out: str, round_: int) -> None:
    store = await SqliteStore(events_db).open()
    poll = Poll(min_delay=0.002, max_delay=0.02)
    try:
        if mode == "sqlite":
            async with SqliteReadModel(out, SCHEMA) as model:
                projector = Projector(
                    store, Projection(NAME, slow_insert_rows), model, batch_size=BATCH_SIZE, poll=poll
                )
                print("ready", flush=True)
                await projector.run()
        elif mode == "callback":
            callbacks = CallbackReadModel(store)
            handler = delivery_writer(out, round_)
            projector2 = Projector(
                store, Projection(NAME, handler), callbacks, batch_size=BATCH_SIZE, poll=poll
            )
            print("ready", flush=True)
            await projector2.run()
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await store.aclose()


if __name__ == "__main__":
    mode, events_db, out, round_, backend = sys.argv[1:]
    anyio.run(main, mode, events_db, out, int(round_), backend=backend)
