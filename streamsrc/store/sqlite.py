"""``sqlite:///path.db``: the embedded default interpreter, on the standard library's ``sqlite3``.

Design:

* **Off the event loop.** Every SQLite call runs in a thread the store owns:
  one *writer* thread with the only writing connection, and a few *reader*
  threads with their own connections (WAL lets them read while the writer
  writes). A call is handed over through a queue and its result comes back
  through the event loop's thread-safe wake-up, which costs about a third of
  ``anyio.to_thread.run_sync``'s hop.
* **One writer.** Appends are serialised by the writer thread and each runs in
  ``BEGIN IMMEDIATE`` (which also holds off writers in other processes), so
  a stream's version is checked and its events inserted with no race, and
  global positions (the table's ``INTEGER PRIMARY KEY``) are given in commit
  order: a reader tailing ``read_all`` cannot skip an event that commits late.
* **The database decides.** ``UNIQUE (stream, seq)`` makes an overwrite
  impossible even for a writer that bypasses this module; ``UNIQUE (id)``
  catches duplicates, and only then are ids looked up to tell an idempotent
  retry from a real duplicate.
* **Durability.** WAL with ``synchronous=NORMAL`` by default (a power cut may
  lose the last transactions, never corrupt the log); ``?synchronous=full``
  makes every commit durable.

URL options: ``synchronous=normal|full``, ``page_size`` (events per read
page), ``max_event_size`` (bytes), ``readers`` (reader threads),
``busy_timeout`` (seconds to wait for another process's lock).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import IncompatibleSchema, StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json, uuid_from_bytes
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    AppendResult,
    AppendSignal,
    EncodedEvent,
    EventFilter,
    Expected,
    Snapshot,
    can_be_stored,
    check_existing,
    check_expected,
    check_key,
    encode_batch,
    encode_recorded_stored,
    now_us,
    paged_reads,
    to_us,
)
from streamsrc.stream import Stream

T = TypeVar("T")

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


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled caller has stopped waiting
        future.set_result(None)


def _to_datetime(us: int) -> datetime:
    # Exact: near the present a float of seconds is precise to well under half a microsecond,
    # and fromtimestamp rounds to the nearest microsecond.
    return datetime.fromtimestamp(us / 1_000_000, UTC)


_to_us = to_us
_SEQ = attrgetter("seq")
_POSITION = attrgetter("position")


def _records(rows: Sequence[tuple[Any, ...]]) -> list[RecordedEvent]:
    """Events from a page of rows (columns in ``_COLUMNS`` order), decoded lazily (all in C)."""
    return list(map(_as_event, rows))


_as_event = partial(tuple.__new__, RecordedEvent)


class ConnectionThreads:
    """Threads that each own one SQLite connection and run the calls handed to them.

    A call goes over in a queue; its result comes back through the event
    loop's thread-safe wake-up: on asyncio straight to a future, elsewhere
    (trio) through anyio's ``run_sync_soon`` and an ``anyio.Event``. The
    worker belongs to the event loop that made it.

    >>> import anyio
    >>> def connect() -> sqlite3.Connection:
    ...     return sqlite3.connect(":memory:", check_same_thread=False)
    >>> async def main() -> None:
    ...     threads = ConnectionThreads(connect, 1, "example")
    ...     try:
    ...         print(await threads.call(lambda conn: conn.execute("SELECT 1 + 1").fetchone()))
    ...     finally:
    ...         await threads.aclose()
    >>> anyio.run(main)
    (2,)
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], threads: int, name: str) -> None:
        self.token = anyio.lowlevel.current_token()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio
            self._loop = None
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._closed = False
        self._threads = [
            threading.Thread(target=self._main, args=(connect,), name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while (job := self._jobs.get()) is not None:
                fn, box, wake = job
                try:
                    if conn is None:
                        conn = connect()
                    box.append((True, fn(conn)))
                except BaseException as exc:  # handed back to the caller
                    box.append((False, exc))
                # If the caller's event loop is gone, nobody waits for the result.
                with suppress(Exception):
                    wake()
        finally:
            if conn is not None:
                conn.close()

    async def call(self, fn: Callable[[sqlite3.Connection], T], shield: bool = False) -> T:
        """Run ``fn(connection)`` in one of the threads and return its result.

        With ``shield``, a cancellation first waits for the call to finish (so
        its outcome is settled) and then takes effect.
        """
        if self._closed:  # a job queued behind the threads' stop signal would never run
            raise StoreUnavailable(f"the {self._name} threads are closed")
        box: list[tuple[bool, Any]] = []
        try:
            if self._loop is not None:
                future = self._loop.create_future()
                self._jobs.put((fn, box, partial(self._loop.call_soon_threadsafe, _settle, future)))
                await future
            else:
                done = anyio.Event()
                token = self.token
                wake = partial(token.backend_class.run_sync_soon, done.set, (), token.native_token)
                self._jobs.put((fn, box, wake))
                await done.wait()
        except anyio.get_cancelled_exc_class():
            if shield:
                with anyio.CancelScope(shield=True):
                    while not box:  # noqa: ASYNC110 (rare: cheaper than a second wake-up per call)
                        await anyio.sleep(0.001)
            raise
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Let the calls queued so far finish, stop the threads and close their connections; a call
        made from now on raises ``StoreUnavailable``."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            await anyio.to_thread.run_sync(t.join)


class SqliteStore:
    """An event store, snapshot store and checkpoint store in one SQLite file.

    >>> import os, tempfile
    >>> import anyio
    >>> async def main(folder: str) -> None:
    ...     store = await SqliteStore(os.path.join(folder, "events.db"), synchronous="full").open()
    ...     try:
    ...         print(await store.append("order-1", [EventData("OrderPlaced", {"total": 12})]))
    ...     finally:
    ...         await store.aclose()
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    <Success: AppendResult(stream='order-1', last_seq=1, positions=(1,))>
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        page_size: int = DEFAULT_PAGE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        readers: int = 2,
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.path = path
        self.synchronous = synchronous.upper()
        self.page_size = page_size
        self.max_event_size = max_event_size
        self._busy_timeout = busy_timeout
        self._readers_count = readers
        self._writer: ConnectionThreads | None = None
        self._readers: ConnectionThreads | None = None
        self.appended = AppendSignal()
        """Notified after every append through this store that wrote events."""

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path!r}>"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    async def open(self) -> SqliteStore:
        """Create the file and tables if needed and start the threads."""
        self._writer = ConnectionThreads(self._connect, 1, "streamsrc-sqlite-writer")
        try:
            await self._writer.call(_create_schema, shield=True)
        except sqlite3.Error as exc:
            await self._writer.aclose()
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        except IncompatibleSchema:
            await self._writer.aclose()
            raise
        self._readers = ConnectionThreads(self._connect, self._readers_count, "streamsrc-sqlite-reader")
        return self

    async def aclose(self) -> None:
        """Stop the threads and close the connections (calls already queued finish first)."""
        workers = (self._readers, self._writer)
        self._readers = self._writer = None  # from now on every call says the store is closed
        for worker in workers:
            if worker is not None:
                await worker.aclose()

    def _write(self) -> ConnectionThreads:
        if self._writer is None:
            raise StoreUnavailable(f"{self!r} is closed")
        return self._writer

    def _read(self) -> ConnectionThreads:
        if self._readers is None:
            raise StoreUnavailable(f"{self!r} is closed")
        return self._readers

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        encoded = encode_batch(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        check_expected(stream, expected, 0)  # a bad ``expected`` is a bug: raise before writing
        return await self._write_batch(stream, encoded.unwrap(), expected, None)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append events recorded elsewhere, keeping their id and time (see ``ImportingStore``).

        The first event's seq minus one is the expected version, checked in
        the same transaction that writes, exactly as ``append`` checks it.
        """
        encoded = encode_recorded_stored(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        return await self._write_batch(stream, batch, expected, _times_us(times))

    async def _write_batch(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[int] | None
    ) -> Result[AppendResult, StoreError]:
        """Run one append (``times`` in microseconds, or now) in the writer thread; notify if it wrote."""
        try:
            result = await self._write().call(
                lambda conn: _in_transaction(conn, lambda: _append(conn, stream, batch, expected, times)),
                shield=True,
            )
        except anyio.get_cancelled_exc_class():
            # The append ran to its end before the cancellation took effect, and may have written.
            if batch:
                self.appended.notify()
            raise
        except sqlite3.Error as exc:
            return Failure(StoreUnavailable(f"append to {stream!r} failed: {exc}"))
        except StoreUnavailable as exc:
            return Failure(exc)
        if batch and isinstance(result, Success):
            self.appended.notify()
        return result

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        if not can_be_stored(stream):  # no stream has such a name (nor can SQLite take lone surrogates)
            return Stream.empty()
        if backwards:
            sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        else:
            sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?"
        start = (1 << 62) if backwards and after == 0 else after
        return self._paged(sql, (stream,), start, limit, key=1)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        keep = EventFilter.of(types, stream_prefix)
        if keep.stream_prefix is not None and not can_be_stored(keep.stream_prefix):
            return Stream.empty()  # no stream has such a name
        where = ""
        params: list[object] = []
        if keep.types is not None:
            kinds = sorted(t for t in keep.types if can_be_stored(t))
            where += f" AND type IN ({','.join('?' * len(kinds))})" if kinds else " AND 0"
            params += kinds
        if keep.stream_prefix is not None:
            where += " AND substr(stream, 1, ?) = ?"  # both count characters
            params += [len(keep.stream_prefix), keep.stream_prefix]
        # The condition on position comes last: _paged binds it (then the page size) after these.
        sql = f"SELECT {_COLUMNS} FROM events WHERE 1{where} AND position > ? ORDER BY position LIMIT ?"
        return self._paged(sql, tuple(params), after, limit, key=2)

    def _paged(
        self, sql: str, params: tuple[Any, ...], start: int, limit: int | None, key: int
    ) -> Stream[RecordedEvent]:
        async def fetch(bound: int, n: int) -> list[RecordedEvent]:
            try:
                return await self._read().call(
                    lambda conn: _records(conn.execute(sql, (*params, bound, n)).fetchall())
                )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"reading {self.path!r} failed: {exc}") from exc

        return paged_reads(fetch, self.page_size, start, limit, _SEQ if key == 1 else _POSITION)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        if not can_be_stored(stream):
            return Nothing
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = ? ORDER BY seq DESC LIMIT 1"
        rows = await self._query(lambda c: _records(c.execute(sql, (stream,)).fetchall()))
        return Some(rows[0]) if rows else Nothing

    async def head(self) -> int:
        rows = await self._query(lambda c: c.execute("SELECT MAX(position) FROM events").fetchall())
        return int(rows[0][0] or 0)

    def streams(self) -> Stream[str]:
        sql = "SELECT DISTINCT stream FROM events WHERE stream > ? ORDER BY stream LIMIT ?"
        page_size = self.page_size

        async def step(after: str) -> tuple[list[str], str] | None:
            rows = await self._query(lambda c: [r[0] for r in c.execute(sql, (after, page_size))])
            return (rows, rows[-1]) if rows else None

        return Stream.unfold_chunk_eval("", step)

    async def _query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._read().call(fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"reading {self.path!r} failed: {exc}") from exc

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        check_key(key, "snapshot key")
        row = (key, schema_version, seq, encode_json(state), now_us())
        await self._write().call(
            lambda conn: _in_transaction(conn, lambda: _save_snapshot(conn, row)), shield=True
        )

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        sql = (
            "SELECT seq, state, time FROM snapshots WHERE key = ? AND schema_version = ? "
            "AND seq <= ? AND time <= ? ORDER BY seq DESC LIMIT 1"
        )
        params = (
            key,
            schema_version,
            (1 << 62) if at_seq is None else at_seq,
            (1 << 62) if at_time is None else _to_us(at_time),
        )
        if not can_be_stored(key):
            return Nothing
        rows = await self._query(lambda c: c.execute(sql, params).fetchall())
        if not rows:
            return Nothing
        seq, state, us = rows[0]
        try:
            decoded, moment = decode_json(state), _to_datetime(us)
        except (ValueError, TypeError, RecursionError):  # a damaged row: a snapshot is a shortcut, replay
            return Nothing
        return Some(Snapshot(key, seq, decoded, schema_version, moment))

    # -- checkpoints

    async def load_checkpoint(self, name: str) -> int:
        if not can_be_stored(name):
            return 0
        sql = "SELECT position FROM checkpoints WHERE name = ?"
        rows = await self._query(lambda c: c.execute(sql, (name,)).fetchall())
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        check_key(name, "checkpoint name")
        row = (name, position, now_us())
        await self._write().call(
            lambda conn: _in_transaction(conn, lambda: _save_checkpoint(conn, row)), shield=True
        )

    # -- transactions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        """One SQLite transaction for appends, snapshots, checkpoints and read-model writes.

        Everything done through the transaction object commits together when
        the block ends, or not at all if it raises. Calls are queued and run
        in the writer thread at commit, so the ``Result`` of an ``append``
        inside is known only after the block: read ``tx.results``.
        """
        tx = SqliteTransaction(self)
        yield tx
        try:
            await self._write().call(lambda conn: _in_transaction(conn, lambda: tx._run(conn)), shield=True)
        except anyio.get_cancelled_exc_class():
            tx._notify()  # it ran to its end before the cancellation took effect, and may have committed
            raise
        tx._notify()


class SqliteTransaction:
    """Work queued for one SQLite transaction (see :meth:`SqliteStore.transaction`).

    >>> import os, tempfile
    >>> import anyio
    >>> async def main(folder: str) -> None:
    ...     store = await SqliteStore(os.path.join(folder, "events.db")).open()
    ...     try:
    ...         async with store.transaction() as tx:
    ...             tx.append("order-1", [EventData("OrderPlaced", {})])
    ...             tx.save_checkpoint("orders-view", 1)
    ...         print(tx.results, await store.load_checkpoint("orders-view"))
    ...     finally:
    ...         await store.aclose()
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
        self._queue(stream, batch, expected, _times_us(times))

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
        self._ops.append(lambda conn: conn.execute(sql, params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Queue a statement run once per row."""
        self._ops.append(lambda conn: conn.executemany(sql, rows))

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


def _times_us(times: list[int | datetime]) -> list[int]:
    """Times as stored here: microseconds since the epoch."""
    return [t if type(t) is int else to_us(t) for t in times]  # type: ignore[arg-type]


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
        sql = f"SELECT stream, MAX(seq) FROM events WHERE stream IN ({marks}) GROUP BY stream"
        current.update(conn.execute(sql, part).fetchall())
    rows: list[tuple[Any, ...]] = []
    ends: list[int] = []
    for op in ops:
        at = current.get(op.stream, 0)
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
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT OR IGNORE INTO streamsrc_meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _in_transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run ``body`` in ``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back if it raises or fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if isinstance(result, Failure):
        conn.execute("ROLLBACK")
    else:
        conn.execute("COMMIT")
    return result


def _append(
    conn: sqlite3.Connection,
    stream: str,
    batch: list[EncodedEvent],
    expected: Expected,
    times: list[int] | None = None,
) -> Result[AppendResult, StoreError]:
    """The append itself (``times``: the events' own, in microseconds; ``None``: now); runs inside
    a write transaction."""
    current = conn.execute("SELECT MAX(seq) FROM events WHERE stream = ?", (stream,)).fetchone()[0]
    current = current or 0
    wrong = check_expected(stream, expected, current)
    if wrong is not None:
        return _existing(conn, stream, batch, expected) or Failure(wrong)
    if not batch:
        return Success(AppendResult(stream, current, ()))
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
        existing = _existing(conn, stream, batch, expected)
        if existing is not None:
            return existing
        raise
    assert last is not None
    positions = tuple(range(last - len(rows) + 1, last + 1))
    return Success(AppendResult(stream, current + len(rows), positions))


def _existing(
    conn: sqlite3.Connection, stream: str, batch: list[EncodedEvent], expected: Expected
) -> Result[AppendResult, StoreError] | None:
    ids = [e.id for e in batch]
    found: dict[uuid.UUID, tuple[str, int, int]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        sql = f"SELECT id, stream, seq, position FROM events WHERE id IN ({','.join('?' * len(part))})"
        for raw, s, seq, pos in conn.execute(sql, [i.bytes for i in part]):
            found[uuid_from_bytes(raw)] = (s, seq, pos)
    return check_existing(stream, ids, expected, found)


def _save_snapshot(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO snapshots (key, schema_version, seq, state, time) VALUES (?, ?, ?, ?, ?)",
        row,
    )


def _save_checkpoint(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute(
        "INSERT INTO checkpoints (name, position, time) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time",
        row,
    )
