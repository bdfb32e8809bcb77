"""A read model in a SQLite file: tables the handler writes, with the checkpoint in the same transaction.

The handler is a plain function ``handler(conn, events)`` run in the model's
writer thread inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, together with the
update of the projection's checkpoint (table ``streamsrc_projections``): the
tables and the checkpoint always agree, so every event is applied exactly
once, whatever the event store is. The file may be the event store's own
SQLite file or another one.

Queries go through reader threads (``await model.query(sql, params)``), so
serving reads never waits for the projection's writes (WAL).

The checkpoint is a compare-and-set: a batch moves it only from the position
the batch started at, and only while the runner's lease (its fencing token,
table ``streamsrc_leases``, see :class:`SqliteLeases`) is still the
partition's; otherwise the batch rolls back with
:class:`~streamsrc.errors.ProjectionOwnedElsewhere`. Two processes running
one projection into one file therefore never apply an event twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from streamsrc.errors import ProjectionOwnedElsewhere, StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._leases import Fence, Lease
from streamsrc.projections._models import DeadLetter
from streamsrc.sqlite_threads import ConnectionThreads, connect, read_transaction, write_transaction

__all__ = ["SqliteHandler", "SqliteLeases", "SqliteReadModel"]

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
CREATE TABLE IF NOT EXISTS streamsrc_projection_streams (
    name TEXT NOT NULL,
    stream TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (name, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streamsrc_leases (
    projection TEXT NOT NULL,
    part INTEGER NOT NULL,
    owner TEXT,
    expires INTEGER NOT NULL,
    token INTEGER NOT NULL,
    PRIMARY KEY (projection, part)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streamsrc_lease_members (
    projection TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (projection, owner)
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
        self,
        name: str,
        handler: SqliteHandler,
        events: Sequence[RecordedEvent],
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            _claim(conn, name, position, expected, fence)
            if events:
                handler(conn, events)
            _move(conn, name, position)

        await self._write(run)

    async def park(
        self,
        name: str,
        letter: DeadLetter,
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        row = letter.to_row()

        def run(conn: sqlite3.Connection) -> None:
            _claim(conn, name, position, expected, fence)
            conn.execute("INSERT OR REPLACE INTO streamsrc_dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            _move(conn, name, position)

        await self._write(run)

    async def apply_stream(
        self,
        name: str,
        handler: SqliteHandler,
        events: Sequence[RecordedEvent],
        *,
        letter: DeadLetter | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply one stream's ``events`` (or park ``letter``) and record how far that stream got,
        in one transaction, without moving the checkpoint (the concurrent runner's step)."""
        last = events[-1]
        row = letter.to_row() if letter is not None else None

        def run(conn: sqlite3.Connection) -> None:
            _fenced(conn, name, fence)
            if row is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO streamsrc_dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row
                )
            else:
                handler(conn, events)
            conn.execute(_SAVE_MARK, (name, last.stream, last.position))

        await self._write(run)

    async def load_marks(self, name: str) -> dict[str, int]:
        """How far each stream was applied past the checkpoint (by :meth:`apply_stream`)."""
        rows = await self.query(
            "SELECT stream, position FROM streamsrc_projection_streams WHERE name = ?", (name,)
        )
        return {stream: int(position) for stream, position in rows}

    def leases(self) -> SqliteLeases:
        """The leases of partitioned projections, kept in this file (the tokens this model checks)."""
        return SqliteLeases(self)

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


_SAVE_MARK = (
    "INSERT INTO streamsrc_projection_streams (name, stream, position) VALUES (?, ?, ?) "
    "ON CONFLICT (name, stream) DO UPDATE SET position = excluded.position"
)


def _fenced(conn: sqlite3.Connection, name: str, fence: Fence | None) -> None:
    if fence is None:
        return
    row = conn.execute(
        "SELECT token FROM streamsrc_leases WHERE projection = ? AND part = ?",
        (fence.projection, fence.partition),
    ).fetchone()
    if row is None or row[0] != fence.token:
        raise ProjectionOwnedElsewhere(name, 0, None, token=fence.token)


def _claim(
    conn: sqlite3.Connection, name: str, position: int, expected: int | None, fence: Fence | None
) -> None:
    """Check, inside the batch's transaction, that this runner may move ``name`` to ``position``."""
    _fenced(conn, name, fence)
    row = conn.execute("SELECT position FROM streamsrc_projections WHERE name = ?", (name,)).fetchone()
    current = int(row[0]) if row else 0
    if (expected is not None and current != expected) or position < current:
        raise ProjectionOwnedElsewhere(name, current if expected is None else expected, current)


def _move(conn: sqlite3.Connection, name: str, position: int) -> None:
    conn.execute(_SAVE_POSITION, (name, position, _now_us()))
    conn.execute(
        "DELETE FROM streamsrc_projection_streams WHERE name = ? AND position <= ?", (name, position)
    )


class SqliteLeases:
    """Leases of partitioned projections in a :class:`SqliteReadModel`'s file (table ``streamsrc_leases``).

    Each step is one ``BEGIN IMMEDIATE`` transaction, so workers in several
    processes agree; the read model checks the fencing token in each batch's
    transaction.

    >>> import os, tempfile
    >>> import anyio
    >>> async def main(folder: str) -> None:
    ...     async with SqliteReadModel(os.path.join(folder, "views.db")) as model:
    ...         leases = model.leases()
    ...         fence = await leases.acquire("emails", 0, "worker-a", ttl=10)
    ...         print(fence.token, await leases.acquire("emails", 0, "worker-b", ttl=10))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    1 None
    """

    def __init__(self, model: SqliteReadModel) -> None:
        self.model = model

    async def acquire(self, projection: str, partition: int, owner: str, ttl: float) -> Fence | None:
        def run(conn: sqlite3.Connection) -> int | None:
            now = _now_us()
            row = conn.execute(
                "SELECT owner, expires, token FROM streamsrc_leases WHERE projection = ? AND part = ?",
                (projection, partition),
            ).fetchone()
            if row is not None and row[0] == owner and row[1] > now:
                token = int(row[2])
            elif row is None or row[0] is None or row[1] <= now:
                token = (int(row[2]) if row else 0) + 1
            else:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO streamsrc_leases VALUES (?, ?, ?, ?, ?)",
                (projection, partition, owner, now + int(ttl * 1e6), token),
            )
            return token

        token = await self.model._write(run)
        return None if token is None else Fence(projection, partition, token, self)

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE streamsrc_leases SET expires = ? "
                "WHERE projection = ? AND part = ? AND token = ? AND owner = ?",
                (_now_us() + int(ttl * 1e6), fence.projection, fence.partition, fence.token, owner),
            )
            return cursor.rowcount == 1

        return await self.model._write(run)

    async def release(self, fence: Fence, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE streamsrc_leases SET owner = NULL, expires = 0 "
                "WHERE projection = ? AND part = ? AND token = ? AND owner = ?",
                (fence.projection, fence.partition, fence.token, owner),
            )

        await self.model._write(run)

    async def holds(self, fence: Fence) -> bool:
        rows = await self.model.query(
            "SELECT token FROM streamsrc_leases WHERE projection = ? AND part = ?",
            (fence.projection, fence.partition),
        )
        return bool(rows) and rows[0][0] == fence.token

    async def leases(self, projection: str) -> list[Lease]:
        rows = await self.model.query(
            "SELECT part, owner, expires, token FROM streamsrc_leases WHERE projection = ? ORDER BY part",
            (projection,),
        )
        return [Lease(projection, int(p), o, e / 1e6, int(t)) for p, o, e, t in rows]

    async def heartbeat(self, projection: str, owner: str, ttl: float) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            now = _now_us()
            conn.execute(
                "INSERT OR REPLACE INTO streamsrc_lease_members VALUES (?, ?, ?)",
                (projection, owner, now + int(ttl * 1e6)),
            )
            rows = conn.execute(
                "SELECT owner FROM streamsrc_lease_members "
                "WHERE projection = ? AND expires > ? ORDER BY owner",
                (projection, now),
            ).fetchall()
            return [r[0] for r in rows]

        return await self.model._write(run)

    async def leave(self, projection: str, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM streamsrc_lease_members WHERE projection = ? AND owner = ?", (projection, owner)
            )

        await self.model._write(run)


def _now_us() -> int:
    return time.time_ns() // 1000
