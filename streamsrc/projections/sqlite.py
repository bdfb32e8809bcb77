"""A read model in a SQLite file: tables the handler writes, with the checkpoint in the same transaction.

The handler is a plain function ``handler(conn, events)`` run in the model's
writer thread inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, together with the
update of the projection's checkpoint (table ``streamsrc_projections``): the
tables and the checkpoint always agree, so every event is applied exactly
once, whatever the event store is. The file may be the event store's own
SQLite file or another one.

Queries go through reader threads (``await model.query(sql, params)``), so
serving reads never waits for the projection's writes (WAL).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from streamsrc.errors import StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._models import DeadLetter
from streamsrc.sqlite_threads import ConnectionThreads, connect, read_transaction, write_transaction

__all__ = ["SqliteHandler", "SqliteReadModel"]

T = TypeVar("T")

SqliteHandler = Callable[[sqlite3.Connection, Sequence[RecordedEvent]], object]
"""Writes a batch of events into the read model's tables through the connection (no COMMIT)."""

_TABLES = """
CREATE TABLE IF NOT EXISTS streamsrc_projections (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streamsrc_dead_letters (
    projection TEXT NOT NULL,
    position INTEGER NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    error TEXT NOT NULL,
    time INTEGER NOT NULL,
    PRIMARY KEY (projection, position)
) WITHOUT ROWID;
"""

_SAVE_POSITION = (
    "INSERT INTO streamsrc_projections (name, position, time) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
)


class SqliteReadModel:
    """Read-model tables in the SQLite file at ``path``, written exactly once per event.

    ``schema`` (SQL statements, or a function of the connection) creates the
    tables; it runs when the model opens, so write it with
    ``CREATE TABLE IF NOT EXISTS``. Use as ``async with SqliteReadModel(...)
    as model:``, or call :meth:`open` and :meth:`aclose`.

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> def index(conn, events):
    ...     rows = [(e.stream, e.data["email"]) for e in events]
    ...     conn.executemany("INSERT INTO emails VALUES (?, ?)", rows)
    >>> async def main(folder: str) -> None:
    ...     store = MemoryStore()
    ...     await store.append("user-1", [EventData("Registered", {"email": "ada@example.com"})])
    ...     schema = "CREATE TABLE IF NOT EXISTS emails (user TEXT PRIMARY KEY, email TEXT)"
    ...     async with SqliteReadModel(os.path.join(folder, "views.db"), schema) as emails:
    ...         await Projector(store, Projection("emails", index), emails).catch_up()
    ...         print(await emails.query("SELECT user, email FROM emails"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    [('user-1', 'ada@example.com')]
    """

    exactly_once = True

    def __init__(
        self,
        path: str,
        schema: str | Callable[[sqlite3.Connection], object] = "",
        *,
        synchronous: str = "normal",
        readers: int = 1,
        busy_timeout: float = 5.0,
        on_connect: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = path
        self.schema = schema
        self.synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._on_connect = on_connect
        self._readers_count = readers
        self._writer: ConnectionThreads | None = None
        self._readers: ConnectionThreads | None = None

    def __repr__(self) -> str:
        return f"<SqliteReadModel {self.path!r}>"

    def _connect(self) -> sqlite3.Connection:
        return connect(
            self.path,
            synchronous=self.synchronous,
            busy_timeout=self._busy_timeout,
            on_connect=self._on_connect,
        )

    async def open(self) -> SqliteReadModel:
        """Create the file and tables if needed and start the threads.

        Whatever the failure (cancellation too), the connections opened so
        far are closed and the threads stopped before it is raised.
        """
        if self._writer is not None:
            return self
        writer = ConnectionThreads(self._connect, 1, "streamsrc-readmodel-writer")
        try:
            await writer.call(self._create, shield=True)
            readers = ConnectionThreads(self._connect, self._readers_count, "streamsrc-readmodel-reader")
        except BaseException as exc:
            await writer.aclose()  # shielded: its connection is closed before anything is raised
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open read model {self.path!r}: {exc}") from exc
            raise
        self._writer, self._readers = writer, readers
        return self

    async def aclose(self) -> None:
        """Stop the threads and close the connections (shielded from cancellation)."""
        workers = (self._readers, self._writer)
        self._readers = self._writer = None
        for threads in workers:
            if threads is not None:
                await threads.aclose()

    async def __aenter__(self) -> SqliteReadModel:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _create(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreUnavailable(f"cannot switch {self.path!r} to WAL mode (got {mode})")
        conn.executescript(_TABLES)
        if callable(self.schema):
            _transaction(conn, lambda: self.schema(conn), self.path)  # type: ignore[operator]
        elif self.schema.strip():
            conn.executescript(self.schema)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return await self._writer.call(
            lambda conn: _transaction(conn, lambda: fn(conn), self.path), shield=True
        )

    # -- the ReadModel protocol

    async def load_position(self, name: str) -> int:
        rows = await self.query("SELECT position FROM streamsrc_projections WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    async def apply(
        self, name: str, handler: SqliteHandler, events: Sequence[RecordedEvent], position: int
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if events:
                handler(conn, events)
            conn.execute(_SAVE_POSITION, (name, position, _now_us()))

        await self._write(run)

    async def park(self, name: str, letter: DeadLetter, position: int) -> None:
        row = letter.to_row()

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO streamsrc_dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            conn.execute(_SAVE_POSITION, (name, position, _now_us()))

        await self._write(run)

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        sql = "SELECT * FROM streamsrc_dead_letters"
        rows = await (
            self.query(sql + " ORDER BY time, position")
            if name is None
            else self.query(sql + " WHERE projection = ? ORDER BY position", (name,))
        )
        return [DeadLetter.from_row(row) for row in rows]

    # -- queries

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, run in a reader thread (parameters bound, never interpolated)."""
        if self._readers is None:
            raise StoreUnavailable(f"{self!r} is not open")
        try:
            return await self._readers.call(lambda conn: conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"query on {self.path!r} failed: {exc}") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a reader thread (several queries on one consistent snapshot)."""
        if self._readers is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return await self._readers.call(lambda conn: read_transaction(conn, lambda: fn(conn)))


def _transaction(conn: sqlite3.Connection, body: Callable[[], T], path: str) -> T:
    """Run ``body`` in a write transaction (rolled back unless it commits).

    The file failing to start or commit the transaction (locked past the busy
    timeout, disk full, I/O error, a deferred constraint) raises
    :class:`StoreUnavailable`: the read model failed, not the handler, so no
    event is blamed for it. The handler's own errors go through unchanged.
    """

    def failed(step: str, exc: sqlite3.Error) -> StoreUnavailable:
        doing = "start a transaction" if step == "begin" else "commit"
        return StoreUnavailable(f"read model {path!r} cannot {doing}: {exc}")

    return write_transaction(conn, body, failed=failed)


def _now_us() -> int:
    return time.time_ns() // 1000
