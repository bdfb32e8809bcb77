"""``sqlite:///path.db``: the embedded default interpreter, on the standard library's ``sqlite3``.

A :class:`~streamsrc.store.base.StoreBase` backend: the base checks and
encodes events, decides idempotent retries and conflicts, pages reads and
decodes snapshots; this module runs the primitives in SQLite.

Design:

* **Off the event loop.** Every SQLite call runs in a thread the store owns
  (:class:`streamsrc.sqlite_threads.ConnectionThreads`, shared with the
  SQLite read model): one *writer* thread with the only writing connection,
  and a few *reader* threads with their own connections (WAL lets them read
  while the writer writes). A call is handed over through a queue and its
  result comes back through the event loop's thread-safe wake-up, which costs
  about a third of ``anyio.to_thread.run_sync``'s hop.
* **One writer, group commit.** Appends (and imports) are serialised by the
  writer thread, in ``BEGIN IMMEDIATE`` (which also holds off writers in other
  processes): a stream's version is checked and its events inserted with no
  race, and global positions (the table's ``INTEGER PRIMARY KEY``) are given
  in commit order: a reader tailing ``read_all`` cannot skip an event that
  commits late. Appends that arrive while a transaction is in flight wait in
  a queue; the next transaction takes them all (the *group*), each in its own
  ``SAVEPOINT``: an append that fails (a version conflict, a taken id, an
  error of its own statements) is rolled back alone and gets its own answer,
  the others commit together, and each caller's ``Success`` comes after that
  one ``COMMIT`` (with ``synchronous=full``, after its ``fsync``). Concurrent
  writers thus share commits (and fsyncs) instead of queueing for one each.
  An error that ends the whole transaction (a failed ``COMMIT``, a full disk)
  fails every append of the group; none of it was written.
* **The database decides.** ``UNIQUE (stream, seq)`` makes an overwrite
  impossible even for a writer that bypasses this module; ``UNIQUE (id)``
  catches duplicates, and only then (or on a version conflict) are ids
  looked up, in the same transaction, to tell an idempotent retry from a
  real duplicate or conflict.
* **Failures are typed and leave nothing behind.** Every ``sqlite3`` error
  (a lock held past ``busy_timeout``, a damaged file) is ``StoreUnavailable``;
  a transaction that does not commit, a failed ``COMMIT`` included, is rolled
  back; an open that fails closes its connections at once.
* **Durability.** WAL with ``synchronous=NORMAL`` by default (a power cut may
  lose the last transactions, never corrupt the log); ``?synchronous=full``
  makes every commit durable.

URL options: ``synchronous=normal|full``, ``page_size`` (events per read
page), ``max_event_size`` (bytes), ``readers`` (reader threads),
``busy_timeout`` (seconds to wait for another process's lock). In code,
``SqliteStore(..., on_connect=f)`` also runs ``f(conn)`` on every connection
it opens (pragmas or functions an application's own tables need).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Self

import anyio
import anyio.lowlevel
from returns.result import Failure, Result, Success

from streamsrc.errors import IncompatibleSchema, StoreError, StoreUnavailable, StreamDeleted
from streamsrc.events import EventData, RecordedEvent, encode_json, uuid_from_bytes
from streamsrc.sqlite_threads import ConnectionThreads as ConnectionThreads
from streamsrc.sqlite_threads import connect, rollback, write_transaction
from streamsrc.store._contract import (
    ANY,
    TOMBSTONE_TYPE,
    AppendResult,
    EventFilter,
    Expected,
    check_existing,
    check_key,
    encode_batch,
    encode_recorded_stored,
    now_us,
    to_us,
)
from streamsrc.store._group import GroupCommit
from streamsrc.store.base import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    EncodedEvent,
    EventAddress,
    IdsTaken,
    Inserted,
    Page,
    PageRequest,
    StoreBase,
    StoredSnapshot,
    StreamGone,
    Truncated,
    VersionConflict,
    Written,
    check_expected,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streamsrc_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT,
    time INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_seq ON events (stream, seq);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (id);
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    time INTEGER NOT NULL,
    PRIMARY KEY (key, schema_version, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    time INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = "stream, seq, position, type, data, metadata, id, time"
_INSERT = "INSERT INTO events (stream, seq, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)"
_READ_FORWARDS = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?"
_READ_BACKWARDS = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
_READ_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_LAST = "SELECT seq, type FROM events WHERE stream = ? ORDER BY seq DESC LIMIT 1"
_SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots (key, schema_version, seq, state, time) VALUES (?, ?, ?, ?, ?)"
)
_LOAD_SNAPSHOT = (
    "SELECT seq, state, time FROM snapshots WHERE key = ? AND schema_version = ? "
    "AND seq <= ? AND time <= ? ORDER BY seq DESC LIMIT 1"
)
_SAVE_CHECKPOINT = (
    "INSERT INTO checkpoints (name, position, time) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
)


def _to_datetime(us: int) -> datetime:
    # Exact: near the present a float of seconds is precise to well under half a microsecond,
    # and fromtimestamp rounds to the nearest microsecond.
    return datetime.fromtimestamp(us / 1_000_000, UTC)


_to_us = to_us


def _records(rows: Sequence[tuple[Any, ...]]) -> list[RecordedEvent]:
    """Events from a page of rows (columns in ``_COLUMNS`` order), decoded lazily (all in C)."""
    return list(map(_as_event, rows))


_as_event = partial(tuple.__new__, RecordedEvent)


class SqliteStore(StoreBase):
    """An event store, snapshot store and checkpoint store in one SQLite file.

    ``await store.open()`` (or ``async with store:``) creates the file and
    tables if needed and starts the threads; ``aclose()`` stops them.

    >>> import os, tempfile
    >>> import anyio
    >>> async def main(folder: str) -> None:
    ...     async with SqliteStore(os.path.join(folder, "events.db"), synchronous="full") as store:
    ...         print(await store.append("order-1", [EventData("OrderPlaced", {"total": 12})]))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    <Success: AppendResult(stream='order-1', last_seq=1, positions=(1,))>
    """

    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error, sqlite3.Warning)

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        page_size: int = DEFAULT_PAGE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        readers: int = 2,
        busy_timeout: float = 5.0,
        on_connect: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        super().__init__(page_size=page_size, max_event_size=max_event_size)
        self.path = path
        self.synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._on_connect = on_connect
        self._readers_count = readers
        self._writer: ConnectionThreads | None = None
        self._readers: ConnectionThreads | None = None
        self._group = GroupCommit(self._insert_alone, self._insert_together)  # appends in groups

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path!r}>"

    def _connect(self) -> sqlite3.Connection:
        return connect(
            self.path,
            synchronous=self.synchronous,
            busy_timeout=self._busy_timeout,
            on_connect=self._on_connect,
        )

    # -- life

    async def open(self) -> SqliteStore:
        """Create the file and tables if needed and start the threads (a second call does nothing).

        :raises StoreUnavailable: the file cannot be opened or written.
        :raises IncompatibleSchema: the file holds tables of another program or a newer streamsrc.

        Whatever the failure (cancellation too), the connections opened so
        far are closed and the threads stopped before it is raised.
        """
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed: open a new SqliteStore")
        if self._writer is not None:
            return self
        writer = ConnectionThreads(self._connect, 1, "streamsrc-sqlite-writer")
        try:
            await writer.call(_create_schema, shield=True)
            readers = ConnectionThreads(self._connect, self._readers_count, "streamsrc-sqlite-reader")
        except BaseException as exc:
            await writer.aclose()  # shielded: its connection is closed before anything is raised
            if isinstance(exc, self.driver_errors):
                raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            raise
        self._writer, self._readers = writer, readers
        return self

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def close(self) -> None:
        """Stop the threads and close the connections (calls already queued finish first)."""
        workers = (self._readers, self._writer)
        self._readers = self._writer = None
        for worker in workers:
            if worker is not None:
                await worker.aclose()

    def _writes(self) -> ConnectionThreads:
        if self._writer is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return self._writer

    def _reads(self) -> ConnectionThreads:
        if self._readers is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return self._readers

    # -- the primitives: writes in the writer thread, one transaction each; reads in the readers

    async def insert_batch(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        """Write the append alone if no group is in flight; else queue it for the next group
        (client-side group commit: :class:`streamsrc.store._group.GroupCommit`)."""
        self._writes()  # refuse at once when the store is not open
        return await self._group.submit((stream, batch, expected, times))

    async def _insert_alone(self, args: _AppendArgs) -> Inserted:
        stream, batch, expected, times = args
        return await self._writes().call(
            lambda conn: write_transaction(
                conn, lambda: _insert(conn, stream, batch, expected, times), _wrote
            ),
            shield=True,  # a cancellation waits for the outcome, then takes effect
        )

    async def _insert_together(self, args: list[_AppendArgs]) -> list[Inserted | BaseException]:
        return await self._writes().call(partial(_insert_group, args=args))

    async def find_ids(self, ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, EventAddress]:
        return await self._reads().call(lambda conn: _find_ids(conn, ids))

    async def read_page(self, request: PageRequest) -> Page:
        sql, params = _page_query(request)
        events = await self._reads().call(lambda conn: _records(conn.execute(sql, params).fetchall()))
        return Page.of(events, request)

    async def last_position(self) -> int:
        rows = await self._reads().call(lambda c: c.execute("SELECT MAX(position) FROM events").fetchall())
        return int(rows[0][0] or 0)

    async def remove_before(self, stream: str, seq: int) -> Truncated:
        return await self._writes().call(
            lambda conn: write_transaction(conn, lambda: _remove_before(conn, stream, seq)), shield=True
        )

    async def stream_names(self, after: str, size: int) -> list[str]:
        sql = "SELECT DISTINCT stream FROM events WHERE stream > ? ORDER BY stream LIMIT ?"
        return await self._reads().call(lambda c: [r[0] for r in c.execute(sql, (after, size))])

    async def write_snapshot(self, key: str, schema_version: int, seq: int, state: str, time_us: int) -> None:
        row = (key, schema_version, seq, state, time_us)
        await self._writes().call(
            lambda conn: write_transaction(conn, lambda: _save_snapshot(conn, row)), shield=True
        )

    async def read_snapshot(
        self, key: str, schema_version: int, at_seq: int, at_time_us: int
    ) -> StoredSnapshot | None:
        params = (key, schema_version, at_seq, at_time_us)
        rows = await self._reads().call(lambda c: c.execute(_LOAD_SNAPSHOT, params).fetchall())
        return StoredSnapshot(*rows[0]) if rows else None

    async def write_checkpoint(self, name: str, position: int, time_us: int) -> None:
        row = (name, position, time_us)
        await self._writes().call(
            lambda conn: write_transaction(conn, lambda: _save_checkpoint(conn, row)), shield=True
        )

    async def read_checkpoint(self, name: str) -> int | None:
        sql = "SELECT position FROM checkpoints WHERE name = ?"
        rows = await self._reads().call(lambda c: c.execute(sql, (name,)).fetchall())
        return int(rows[0][0]) if rows else None

    async def swap_checkpoint(self, name: str, expected: int, position: int, time_us: int) -> bool:
        def swap(conn: sqlite3.Connection) -> bool:
            if expected == 0:  # none saved yet (or one at 0: the same thing to a reader)
                sql = (
                    "INSERT INTO checkpoints (name, position, time) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time "
                    "WHERE checkpoints.position = 0"
                )
                return conn.execute(sql, (name, position, time_us)).rowcount == 1
            sql = "UPDATE checkpoints SET position = ?, time = ? WHERE name = ? AND position = ?"
            return conn.execute(sql, (position, time_us, name, expected)).rowcount == 1

        return await self._writes().call(
            lambda conn: write_transaction(conn, lambda: swap(conn)), shield=True
        )

    async def list_checkpoints(self, after: str, size: int) -> list[tuple[str, int]]:
        sql = "SELECT name, position FROM checkpoints WHERE name > ? ORDER BY name LIMIT ?"
        return await self._reads().call(lambda c: [(r[0], int(r[1])) for r in c.execute(sql, (after, size))])

    # -- transactions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """One SQLite transaction for appends, snapshots, checkpoints and read-model writes.

        Everything done through the transaction object commits together when
        the block ends, or not at all if it raises. Calls are queued and run
        in the writer thread at commit, so the ``Result`` of an ``append``
        inside is known only after the block: read ``tx.results``.

        :raises WrongExpectedVersion, DuplicateEvent: a queued append failed (nothing was written).
        :raises InvalidEvent: at once, from ``tx.append``, for events that cannot be stored.
        :raises StoreUnavailable: the database failed, a statement of the block included
            (nothing was written).
        """
        tx = SqliteTransaction(self)
        yield tx
        try:
            await self.guard(
                "transaction",
                self._writes().call(lambda conn: write_transaction(conn, lambda: tx._run(conn)), shield=True),
            )
        except anyio.get_cancelled_exc_class():
            tx._notify()  # it ran to its end before the cancellation took effect, and may have committed
            raise
        tx._notify()


def _wrote(outcome: Inserted) -> bool:
    return type(outcome) is Written


_AppendArgs = tuple[str, Sequence[EncodedEvent], Expected, Sequence[int] | None]


def _insert_group(conn: sqlite3.Connection, args: list[_AppendArgs]) -> list[Inserted | BaseException]:
    """Run a group of appends in one transaction, each in its own savepoint (writer thread).

    An append that fails (its version, its ids, or a statement of its own) is rolled back to
    its savepoint and gets its own outcome; the others commit together. An error that ends
    the whole transaction (SQLite rolls back on a full disk or an I/O error), a failed
    ``BEGIN`` or ``COMMIT`` included, is raised: nothing of the group is written.
    """
    if len(args) == 1:  # alone: no savepoint needed
        stream, batch, expected, times = args[0]
        return [write_transaction(conn, lambda: _insert(conn, stream, batch, expected, times), _wrote)]
    outcomes: list[Inserted | BaseException] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stream, batch, expected, times in args:
            conn.execute("SAVEPOINT one")
            try:
                outcome = _insert(conn, stream, batch, expected, times)
            except sqlite3.Error as exc:
                if not conn.in_transaction:  # SQLite rolled the whole transaction back
                    raise
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                outcomes.append(exc)
                continue
            if type(outcome) is not Written:
                conn.execute("ROLLBACK TO one")
            conn.execute("RELEASE one")
            outcomes.append(outcome)
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):  # the first error is the one to tell
            rollback(conn)
        raise
    return outcomes


def _page_query(request: PageRequest) -> tuple[str, tuple[Any, ...]]:
    """The query of a page, and its parameters."""
    if request.stream is not None:
        sql = _READ_BACKWARDS if request.backwards else _READ_FORWARDS
        return sql, (request.stream, request.bound, request.size)
    if request.filter.everything:
        return _READ_ALL, (request.bound, request.size)
    return _filtered(request.filter, request.bound, request.size)


def _filtered(keep: EventFilter, bound: int, size: int) -> tuple[str, tuple[Any, ...]]:
    """The query of a filtered page of the global log, and its parameters."""
    where = ""
    params: list[object] = []
    if keep.types is not None:
        kinds = sorted(keep.types)
        where += f" AND type IN ({','.join('?' * len(kinds))})" if kinds else " AND 0"
        params += kinds
    if keep.stream_prefix is not None:
        where += " AND substr(stream, 1, ?) = ?"  # both count characters
        params += [len(keep.stream_prefix), keep.stream_prefix]
    sql = f"SELECT {_COLUMNS} FROM events WHERE position > ?{where} ORDER BY position LIMIT ?"
    return sql, (bound, *params, size)


class SqliteTransaction:
    """Work queued for one SQLite transaction (see :meth:`SqliteStore.transaction`).

    >>> import os, tempfile
    >>> import anyio
    >>> async def main(folder: str) -> None:
    ...     async with SqliteStore(os.path.join(folder, "events.db")) as store:
    ...         async with store.transaction() as tx:
    ...             tx.append("order-1", [EventData("OrderPlaced", {})])
    ...             tx.save_checkpoint("orders-view", 1)
    ...         print(tx.results, await store.load_checkpoint("orders-view"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    [<Success: AppendResult(stream='order-1', last_seq=1, positions=(1,))>] 1
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._ops: list[Callable[[sqlite3.Connection], object]] = []  # _QueuedAppend for appends
        self.results: list[Result[AppendResult, StoreError]] = []

    def append(self, stream: str, events: Sequence[EventData], expected: Expected = ANY) -> None:
        """Queue an append; if it fails, the whole transaction is rolled back."""
        encoded = encode_batch(stream, events, self._store.max_event_size)
        if isinstance(encoded, Failure):
            raise encoded.failure()
        self._queue(stream, encoded.unwrap(), expected, None)

    def import_events(self, stream: str, events: Sequence[RecordedEvent]) -> None:
        """Queue an import (see :meth:`SqliteStore.import_events`); if it fails, the whole
        transaction is rolled back. Its ``Result`` goes to ``results`` like an append's."""
        encoded = encode_recorded_stored(stream, events, self._store.max_event_size)
        if isinstance(encoded, Failure):
            raise encoded.failure()
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        self._queue(stream, batch, expected, [t if type(t) is int else to_us(t) for t in times])  # type: ignore[arg-type]

    def _queue(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[int] | None
    ) -> None:
        self._ops.append(_QueuedAppend(stream, batch, expected, times, self.results))

    def save_checkpoint(self, name: str, position: int) -> None:
        """Queue a checkpoint write."""
        check_key(name, "checkpoint name")
        row = (name, position, now_us())
        self._ops.append(lambda conn: _save_checkpoint(conn, row))

    def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Queue a snapshot write."""
        check_key(key, "snapshot key")
        row = (key, schema_version, seq, encode_json(state), now_us())
        self._ops.append(lambda conn: _save_snapshot(conn, row))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a statement of the read model (parameters are bound, never interpolated)."""
        self._ops.append(lambda conn: conn.execute(sql, params).close())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Queue a statement run once per row."""
        self._ops.append(lambda conn: conn.executemany(sql, rows).close())

    def _run(self, conn: sqlite3.Connection) -> None:
        ops = self._ops
        i = 0
        while i < len(ops):
            j = i
            while j < len(ops) and _is_import(ops[j]):
                j += 1
            if j - i > 1 and _import_together(conn, ops[i:j]):  # type: ignore[arg-type]  # imports
                i = j
                continue
            for op in ops[i : max(j, i + 1)]:
                op(conn)
            i = max(j, i + 1)

    def _notify(self) -> None:
        if any(isinstance(r, Success) and r.unwrap().positions for r in self.results):
            self._store.appended.notify()


class _QueuedAppend:
    """An append or import queued in a transaction; its ``Result`` goes to ``results``."""

    __slots__ = ("batch", "expected", "results", "stream", "times")

    def __init__(
        self,
        stream: str,
        batch: list[EncodedEvent],
        expected: Expected,
        times: list[int] | None,
        results: list[Result[AppendResult, StoreError]],
    ) -> None:
        self.stream, self.batch, self.expected, self.times, self.results = (
            stream,
            batch,
            expected,
            times,
            results,
        )

    def __call__(self, conn: sqlite3.Connection) -> None:
        result = _append(conn, self.stream, self.batch, self.expected, self.times)
        self.results.append(result)
        if isinstance(result, Failure):
            raise result.failure()


def _is_import(op: object) -> bool:
    return type(op) is _QueuedAppend and op.times is not None


def _import_together(conn: sqlite3.Connection, ops: list[_QueuedAppend]) -> bool:
    """Run consecutive queued imports with one look-up of the streams and one ``executemany``.

    Only when every import continues its stream exactly and no id is taken:
    then the results are those of running them one by one. Otherwise
    nothing is written and the answer is ``False``: run them one by one
    (which also tells idempotent re-imports from conflicts).
    """
    names = sorted({op.stream for op in ops})
    current: dict[str, int] = {}
    for start in range(0, len(names), 500):
        part = names[start : start + 500]
        marks = ",".join("?" * len(part))
        # SQLite gives the bare column ``type`` from the row of MAX(seq): the stream's last event
        sql = f"SELECT stream, MAX(seq), type FROM events WHERE stream IN ({marks}) GROUP BY stream"
        for name, at, kind in conn.execute(sql, part).fetchall():
            if kind == TOMBSTONE_TYPE:
                return False  # deleted: one by one, which says so
            current[name] = at
    rows: list[tuple[Any, ...]] = []
    ends: list[int] = []
    for op in ops:
        at = current.get(op.stream, 0)
        if not at and type(op.expected) is int:
            at = op.expected  # a new stream may start past #1 (a truncated source)
        if not op.batch or op.expected != at or op.times is None:
            return False
        stream = op.stream
        rows.extend(
            (stream, at + 1 + k, e.id.bytes, e.type, e.data, e.metadata, t)
            for k, (e, t) in enumerate(zip(op.batch, op.times, strict=True))
        )
        current[stream] = at + len(op.batch)
        ends.append(current[stream])
    conn.execute("SAVEPOINT together")
    try:
        conn.executemany(_INSERT, rows)
    except sqlite3.IntegrityError:  # an id is stored already: a re-import, or a conflict
        conn.execute("ROLLBACK TO together")
        return False
    finally:
        conn.execute("RELEASE together")
    position = conn.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
    for op, end in zip(ops, ends, strict=True):
        n = len(op.batch)
        op.results.append(Success(AppendResult(op.stream, end, tuple(range(position, position + n)))))
        position += n
    return True


def _create_schema(conn: sqlite3.Connection) -> None:
    # Check first, change afterwards: a database that is refused is left as it was.
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "streamsrc_meta" in tables:
        row = conn.execute("SELECT value FROM streamsrc_meta WHERE key = 'schema_version'").fetchone()
        if row is not None and not (isinstance(row[0], str) and row[0].isascii() and row[0].isdigit()):
            raise IncompatibleSchema(f"the database has schema version {row[0]!r}, not a number")
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise IncompatibleSchema(
                f"the database has schema version {row[0]}; this streamsrc knows up to "
                f"{SCHEMA_VERSION}: upgrade streamsrc"
            )
    elif clash := sorted(tables & {"events", "snapshots", "checkpoints"}):
        raise IncompatibleSchema(f"the database has tables {clash} that streamsrc did not make")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise StoreUnavailable(f"cannot switch the database to WAL mode (got {mode})")
    write_transaction(conn, lambda: _make_tables(conn))


def _make_tables(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT OR IGNORE INTO streamsrc_meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


def _insert(
    conn: sqlite3.Connection,
    stream: str,
    batch: Sequence[EncodedEvent],
    expected: Expected,
    times: Sequence[int] | None,
) -> Inserted:
    """Insert a non-empty batch at the end of ``stream`` if it is at ``expected`` (``times``: the
    events' own, in microseconds; ``None``: now); runs inside a write transaction.

    The stream's last event is read in the transaction (an index search, as ``MAX(seq)`` was, plus
    its row for the type): a tombstone there refuses the batch (:class:`StreamGone`), decided with
    the version under the same write lock."""
    last = conn.execute(_LAST, (stream,)).fetchone()
    if last is not None:
        current = last[0]
        if last[1] == TOMBSTONE_TYPE:
            found = _find_ids(conn, [e.id for e in batch])  # a retry of a batch from before the delete?
            return IdsTaken(found) if found else StreamGone(current, ids_checked=True)
    elif times is not None and type(expected) is int:
        current = expected  # an import into a new stream may start past #1 (a truncated source)
    else:
        current = 0
    if check_expected(stream, expected, current) is not None:
        # A retry of a batch written already is a conflict too: tell them apart here, in one trip.
        found = _find_ids(conn, [e.id for e in batch])
        return IdsTaken(found) if found else VersionConflict(current, ids_checked=True)
    if times is None:
        now = now_us()
        rows = [
            (stream, current + 1 + k, e.id.bytes, e.type, e.data, e.metadata, now)
            for k, e in enumerate(batch)
        ]
    else:
        rows = [
            (stream, current + 1 + k, e.id.bytes, e.type, e.data, e.metadata, t)
            for k, (e, t) in enumerate(zip(batch, times, strict=True))
        ]
    # Only ``UNIQUE (id)`` can fail here: the writer has held the lock since MAX(seq).
    try:
        if len(rows) == 1:
            last = conn.execute(_INSERT, rows[0]).lastrowid
        else:
            conn.execute("SAVEPOINT batch")
            try:
                conn.executemany(_INSERT, rows)
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO batch")  # so the look-up sees only what was stored before
                raise
            finally:
                conn.execute("RELEASE batch")
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    except sqlite3.IntegrityError:
        found = _find_ids(conn, [e.id for e in batch])
        if found:
            return IdsTaken(found)
        raise
    assert last is not None
    return Written(current + len(rows), tuple(range(last - len(rows) + 1, last + 1)))


def _append(
    conn: sqlite3.Connection,
    stream: str,
    batch: list[EncodedEvent],
    expected: Expected,
    times: list[int] | None,
) -> Result[AppendResult, StoreError]:
    """An append decided whole inside a transaction (queued in :class:`SqliteTransaction`): written,
    an idempotent retry, or the failure."""
    if not batch:
        last = conn.execute(_LAST, (stream,)).fetchone()
        if last is not None and last[1] == TOMBSTONE_TYPE:
            return Failure(StreamDeleted(stream, last[0]))
        current = 0 if last is None else last[0]
        wrong = check_expected(stream, expected, current)
        return Failure(wrong) if wrong else Success(AppendResult(stream, current, ()))
    outcome = _insert(conn, stream, batch, expected, times)
    if isinstance(outcome, Written):
        return Success(AppendResult(stream, outcome.last_seq, outcome.positions))
    if isinstance(outcome, IdsTaken):
        decided = check_existing(stream, [e.id for e in batch], expected, outcome.found)
        assert decided is not None  # found is never empty
        return decided
    if isinstance(outcome, StreamGone):
        return Failure(StreamDeleted(stream, outcome.current))
    wrong = check_expected(stream, expected, outcome.current)
    assert wrong is not None
    return Failure(wrong)


def _remove_before(conn: sqlite3.Connection, stream: str, seq: int) -> Truncated:
    """Delete the events of ``stream`` below ``seq`` if ``seq`` is at most its version (so never
    its last event); runs inside a write transaction."""
    version = conn.execute("SELECT MAX(seq) FROM events WHERE stream = ?", (stream,)).fetchone()[0] or 0
    if seq > version:
        return Truncated(0, version)
    removed = conn.execute("DELETE FROM events WHERE stream = ? AND seq < ?", (stream, seq)).rowcount
    return Truncated(removed, version)


def _find_ids(conn: sqlite3.Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventAddress]:
    found: dict[uuid.UUID, EventAddress] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        sql = f"SELECT id, stream, seq, position FROM events WHERE id IN ({','.join('?' * len(part))})"
        for raw, s, seq, pos in conn.execute(sql, [i.bytes for i in part]):
            found[uuid_from_bytes(raw)] = EventAddress(s, seq, pos)
    return found


def _save_snapshot(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(_SAVE_SNAPSHOT, row)


def _save_checkpoint(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(_SAVE_CHECKPOINT, row)
