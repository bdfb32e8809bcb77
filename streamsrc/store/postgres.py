"""``postgresql://user:password@host:port/database``: the PostgreSQL interpreter, on asyncpg.

Design:

* **One round trip per append.** An append is one call of the server-side
  function ``streamsrc_append`` (created with the schema), run in its own
  transaction: it takes the append lock, looks for the batch's ids, checks
  the expected version, inserts the rows and sends a notification.
* **Gap-free global order by serialising appends.** A sequence would hand
  out positions that commit out of order (transaction A takes 5, B takes 6,
  B commits first: a reader that saw 6 would skip 5 for ever). Instead every
  append takes a transaction-scoped advisory lock before it gives positions
  (``max(position) + 1``) and holds it until after its commit is visible, so
  commit order is position order and positions have no holes — what
  eventsourcing does with a table lock. The cost: appends to *different*
  streams are serialised on the server, one transaction at a time (each
  holds the lock for the few hundred microseconds of its insert and commit);
  reads never take it. A commit-ordered high-water mark over in-flight
  transactions would let writers overlap, at the price of readers waiting
  on ``pg_snapshot_xmin`` bookkeeping; at the rates of one region's
  PostgreSQL the lock is the simpler and safe choice.
* **The database decides.** ``UNIQUE (stream, seq)`` and ``UNIQUE (id)`` make
  an overwrite or a duplicate impossible even for a writer that bypasses
  this module; the function checks ids and versions under the lock, so the
  result is decided on the server, never by a read in Python followed by a
  write.
* **Live subscriptions.** Each append notifies channel ``streamsrc_events``;
  the store listens on a connection of its own and wakes
  ``store.appended``, so subscriptions in this process learn of appends made
  by any process (and still poll slowly in case a notification is lost).

URL options: ``page_size``, ``max_event_size``, ``pool_min``/``pool_max``
(connections), ``timeout`` (seconds to connect and per command).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

import anyio
import asyncpg
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import IncompatibleSchema, StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    NO_STREAM,
    STREAM_EXISTS,
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
    encode_recorded,
    now_us,
    paged_reads,
    to_us,
)
from streamsrc.store._url import redact_url
from streamsrc.stream import Stream

T = TypeVar("T")

SCHEMA_VERSION = 2
CHANNEL = "streamsrc_events"
_LOCK_KEY = 0x5E7A_5C_01  # the advisory lock every append takes

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS streamsrc_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
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
);
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (key, schema_version, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    time BIGINT NOT NULL
);
-- Version 1 of the function took one time for the whole batch; imports give one per event.
DROP FUNCTION IF EXISTS streamsrc_append(TEXT, BIGINT, UUID[], TEXT[], TEXT[], TEXT[], BIGINT);
-- code 0: written (last seq, first position); 1: some ids exist (rows in found_*);
-- 2: wrong expected version (current seq in last_seq).
CREATE OR REPLACE FUNCTION streamsrc_append(
    p_stream TEXT, p_expected BIGINT, p_ids UUID[], p_types TEXT[], p_data TEXT[], p_meta TEXT[],
    p_times BIGINT[]
) RETURNS TABLE (code INT, last_seq BIGINT, first_position BIGINT,
                 found_id UUID, found_stream TEXT, found_seq BIGINT, found_position BIGINT)
LANGUAGE plpgsql
-- One plan per statement, made once per connection and kept (planning every call cost more
-- than the append itself); index paths only, so a plan made while the table was small stays
-- right once it has grown (each statement here has an index that answers it).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    taken BOOLEAN;
    current BIGINT;
    head BIGINT;
    n INT := coalesce(array_length(p_ids, 1), 0);
BEGIN
    -- Taken before anything is read: the statements below see every append committed before.
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    SELECT EXISTS (SELECT 1 FROM events e WHERE e.id = ANY(p_ids)),
           coalesce((SELECT e.seq FROM events e WHERE e.stream = p_stream ORDER BY e.seq DESC LIMIT 1), 0),
           coalesce((SELECT e.position FROM events e ORDER BY e.position DESC LIMIT 1), 0)
      INTO taken, current, head;
    IF taken THEN
        RETURN QUERY SELECT 1, 0::BIGINT, 0::BIGINT, e.id, e.stream, e.seq, e.position
            FROM events e WHERE e.id = ANY(p_ids);
        RETURN;
    END IF;
    -- p_expected: >= 0 exact seq, -1 any, -3 the stream exists
    IF (p_expected >= 0 AND current <> p_expected) OR (p_expected = -3 AND current = 0) THEN
        RETURN QUERY SELECT 2, current, 0::BIGINT, NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    IF n > 0 THEN
        INSERT INTO events (position, stream, seq, id, type, data, metadata, time)
        SELECT head + k, p_stream, current + k, p_ids[k], p_types[k], p_data[k], p_meta[k], p_times[k]
        FROM generate_subscripts(p_ids, 1) AS k;
        PERFORM pg_notify('{CHANNEL}', (head + n)::TEXT);
    END IF;
    RETURN QUERY SELECT 0, current + n, head + 1, NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
END
$$;
"""

_COLUMNS = "stream, seq, position, type, data, metadata, uuid_send(id), time"

CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InternalClientError,  # a connection broken mid-operation, not yet marked closed
    TimeoutError,
)
"""asyncpg's errors for a connection that failed or a server that is not there (now)."""

_RETRY_DELAYS = (0.05, 0.2)
"""Waits before the second and third try of an operation whose connection failed."""

_as_event: Callable[[Any], RecordedEvent] = partial(tuple.__new__, RecordedEvent)


_SEQ = attrgetter("seq")
_POSITION = attrgetter("position")


def _expected_code(expected: Expected) -> int:
    if expected is ANY:
        return -1
    if expected is NO_STREAM:
        return 0
    if expected is STREAM_EXISTS:
        return -3
    assert isinstance(expected, int)
    return expected


class PostgresStore:
    """An event store, snapshot store and checkpoint store in a PostgreSQL database.

    >>> PostgresStore("postgresql://app:s3cret@localhost:5432/events", pool_max=20)  # open() connects
    <PostgresStore postgresql://app:***@localhost:5432/events>
    """

    def __init__(
        self,
        url: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        pool_min: int = 1,
        pool_max: int = 10,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self.url = redact_url(url)
        self.page_size = page_size
        self.max_event_size = max_event_size
        self._pool_min = pool_min
        self._pool_max = max(pool_min, pool_max)
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._own: asyncpg.Connection | None = None
        self._own_busy = False
        self._heard_up_to = 0
        self.appended = AppendSignal()
        """Notified when any process appends to this database (LISTEN/NOTIFY)."""

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url}>"

    async def open(self) -> PostgresStore:
        """Connect, create or check the schema, and start listening for appends."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio, say
            problem = "the PostgreSQL store (asyncpg) runs on asyncio only"
            raise StoreUnavailable(f"{self.url}: {problem}") from None
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._pool_min,
                max_size=self._pool_max,
                timeout=self._timeout,
                reset=_keep_session,
                connect=connect,
            )
            async with self._pool.acquire() as conn:
                await _create_schema(conn)
            await self._listen()
            await self._connect_own()
        except IncompatibleSchema:
            await self.aclose()
            raise
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            await self.aclose()
            raise StoreUnavailable(f"cannot open {self.url}: {_describe(exc)}") from None
        return self

    def _heard(self, connection: object, pid: object, channel: object, payload: object) -> None:
        # The payload is the last position of the append. Appends made through this store have
        # notified already, and so cover any lower position (positions are given in commit order).
        try:
            last = int(str(payload))
        except ValueError:
            last = self._heard_up_to + 1
        if last > self._heard_up_to:
            self._heard_up_to = last
            self.appended.notify()

    async def _listen(self) -> None:
        listener = await connect(self._url, timeout=self._timeout)
        await listener.add_listener(CHANNEL, self._heard)
        listener.add_termination_listener(self._listener_lost)
        self._listener = listener

    def _listener_lost(self, connection: object) -> None:
        # The server went away (a restart, say): listen again in the background, and wake the
        # subscriptions once back, for whatever was appended meanwhile.
        if self._pool is not None and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.05
        while self._pool is not None:
            try:
                await self._listen()
            except (*CONNECTION_ERRORS, asyncpg.PostgresError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                self.appended.notify()
                return

    async def aclose(self) -> None:
        """Close the listener, the store's own connection and the pool.

        Operations running on the pool's connections finish first; one running on the store's
        own connection is cut off (it fails with ``StoreUnavailable``); none starts afterwards.
        """
        pool, self._pool = self._pool, None  # from now on no operation starts, no connection opens
        relisten, self._relisten = self._relisten, None
        if relisten is not None and not relisten.done():
            relisten.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove_termination_listener(self._listener_lost)  # closing is not losing it
            try:
                await listener.close(timeout=self._timeout)
            except Exception:
                listener.terminate()
        own, self._own = self._own, None
        if own is not None and self._own_busy:
            own.terminate()  # a graceful close would leave the operation waiting on it for ever
        elif own is not None:
            try:
                await own.close(timeout=self._timeout)
            except Exception:
                own.terminate()
        if pool is not None:
            try:
                await pool.close()
            except Exception:
                pool.terminate()

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"{self!r} is closed")
        return self._pool

    async def _run(self, what: str, fn: Callable[[asyncpg.Connection], Any]) -> Any:
        """Run ``fn`` on a connection, retried when the connection fails.

        The store's own connection is used when no other task is using it (a
        pool acquire and release cost about as much as a small query); else
        one from the pool. Every operation is safe to run again: reads,
        upserts of snapshots and checkpoints, and appends (their event ids
        make a second run of a batch that did commit return the stored
        result, writing nothing).
        """
        own = self._own
        if own is not None and not self._own_busy and not own.is_closed():
            self._own_busy = True
            try:
                return await fn(own)
            except CONNECTION_ERRORS:
                self._drop_own()  # then try again below, on the pool's connections
            except asyncpg.PostgresError as exc:  # the statement failed; the connection is fine
                raise self._failed(what, exc) from None
            except BaseException:
                self._drop_own()  # cancelled mid-statement, say: its state is unknown
                raise
            finally:
                self._own_busy = False
        attempt = 0
        while True:
            try:
                async with self._get_pool().acquire(timeout=self._timeout) as conn:
                    result = await fn(conn)
            except CONNECTION_ERRORS as exc:
                if attempt == len(_RETRY_DELAYS):
                    raise self._failed(what, exc) from None
            except asyncpg.PostgresError as exc:
                raise self._failed(what, exc) from None
            else:
                if self._own is None or self._own.is_closed():
                    await self._connect_own()
                return result
            await anyio.sleep(_RETRY_DELAYS[attempt])
            attempt += 1

    async def _connect_own(self) -> None:
        """Open the store's own connection again (after the server came back); quietly give up."""
        if self._own_busy or self._pool is None:
            return
        self._own_busy = True  # nobody uses it while it connects
        try:
            self._own = await connect(self._url, timeout=self._timeout)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError):
            self._own = None
        finally:
            self._own_busy = False
        if self._pool is None and self._own is not None:  # the store was closed meanwhile
            self._drop_own()

    def _failed(self, what: str, exc: BaseException) -> StoreUnavailable:
        """The error an operation that failed on the server or its connection ends with."""
        return StoreUnavailable(f"{what} on {self.url} failed: {_describe(exc)}")

    def _drop_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            own.terminate()

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        encoded = encode_batch(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        check_expected(stream, expected, 0)  # a bad ``expected`` is a bug: raise before writing
        batch = encoded.unwrap()
        return await self._append(stream, batch, expected, [now_us()] * len(batch))

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append events recorded elsewhere, keeping their ids and times (see ``ImportingStore``)."""
        encoded = encode_recorded(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        return await self._append(stream, batch, expected, [to_us(t) for t in times])

    async def _append(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[int]
    ) -> Result[AppendResult, StoreError]:
        ids = [e.id for e in batch]
        args = (
            stream,
            _expected_code(expected),
            ids,
            [e.type for e in batch],
            [e.data for e in batch],
            [e.metadata for e in batch],
            times,
        )
        sql = "SELECT * FROM streamsrc_append($1, $2, $3, $4, $5, $6, $7)"
        try:
            rows = await self._run("append", lambda conn: conn.fetch(sql, *args, timeout=self._timeout))
        except StoreUnavailable as exc:
            return Failure(exc)
        except asyncpg.PostgresError as exc:
            return Failure(StoreUnavailable(f"append to {stream!r} failed: {_describe(exc)}"))
        code, last_seq, first = rows[0][0], rows[0][1], rows[0][2]
        if code == 0:
            if batch:
                # At once for this process (its own NOTIFY, heard later, is then ignored).
                self._heard_up_to = max(self._heard_up_to, first + len(batch) - 1)
                self.appended.notify()
            return Success(AppendResult(stream, last_seq, tuple(range(first, first + len(batch)))))
        if code == 1:
            found = {uuid.UUID(bytes=r[3].bytes): (r[4], r[5], r[6]) for r in rows}
            existing = check_existing(stream, ids, expected, found)
            assert existing is not None
            return existing
        wrong = check_expected(stream, expected, last_seq)
        assert wrong is not None
        return Failure(wrong)

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        if not can_be_stored(stream):  # no stream has such a name (PostgreSQL text cannot hold NUL)
            return Stream.empty()
        if backwards:
            sql = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        else:
            sql = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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
            return Stream.empty()  # no stream has such a name (PostgreSQL text cannot hold NUL)
        if keep.types is not None:
            keep = keep._replace(types=frozenset(t for t in keep.types if can_be_stored(t)))
        where = ""
        params: list[object] = []
        if keep.types is not None:
            params.append(sorted(keep.types))
            where += f" AND type = ANY(${len(params)}::TEXT[])"
        if keep.stream_prefix is not None:
            params.append(keep.stream_prefix)
            where += f" AND left(stream, char_length(${len(params)}::TEXT)) = ${len(params)}"
        n = len(params)
        sql = (
            f"SELECT {_COLUMNS} FROM events WHERE position > ${n + 1}{where} ORDER BY position LIMIT ${n + 2}"
        )
        # _paged binds (params..., bound, page size): put the bound where the SQL expects it.
        return self._paged(sql, tuple(params), after, limit, key=2)

    def _paged(
        self, sql: str, params: tuple[Any, ...], start: int, limit: int | None, key: int
    ) -> Stream[RecordedEvent]:
        async def fetch(bound: int, n: int) -> list[RecordedEvent]:
            try:
                rows = await self._run(
                    "read", lambda conn: conn.fetch(sql, *params, bound, n, timeout=self._timeout)
                )
            except asyncpg.PostgresError as exc:
                raise StoreUnavailable(f"reading {self.url} failed: {_describe(exc)}") from None
            return list(map(_as_event, rows))

        return paged_reads(fetch, self.page_size, start, limit, _SEQ if key == 1 else _POSITION)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        if not can_be_stored(stream):
            return Nothing
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 ORDER BY seq DESC LIMIT 1"
        row = await self._run("latest", lambda conn: conn.fetchrow(sql, stream))
        return Nothing if row is None else Some(_as_event(row))

    async def head(self) -> int:
        value = await self._run("head", lambda conn: conn.fetchval("SELECT max(position) FROM events"))
        return int(value or 0)

    def streams(self) -> Stream[str]:
        sql = "SELECT DISTINCT stream FROM events WHERE stream > $1 ORDER BY stream LIMIT $2"
        page_size = self.page_size

        async def step(after: str) -> tuple[list[str], str] | None:
            rows = await self._run("streams", lambda conn: conn.fetch(sql, after, page_size))
            names = [r[0] for r in rows]
            return (names, names[-1]) if names else None

        return Stream.unfold_chunk_eval("", step)

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        sql = (
            "INSERT INTO snapshots (key, schema_version, seq, state, time) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (key, schema_version, seq) "
            "DO UPDATE SET state = excluded.state, time = excluded.time"
        )
        check_key(key, "snapshot key")
        row = (key, schema_version, seq, encode_json(state), now_us())
        await self._run("save_snapshot", lambda conn: conn.execute(sql, *row))

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        sql = (
            "SELECT seq, state, time FROM snapshots WHERE key = $1 AND schema_version = $2 "
            "AND seq <= $3 AND time <= $4 ORDER BY seq DESC LIMIT 1"
        )
        params = (
            key,
            schema_version,
            (1 << 62) if at_seq is None else at_seq,
            (1 << 62) if at_time is None else to_us(at_time),
        )
        if not can_be_stored(key):
            return Nothing
        row = await self._run("load_snapshot", lambda conn: conn.fetchrow(sql, *params))
        if row is None:
            return Nothing
        seq, state, us = row
        moment = datetime.fromtimestamp(us / 1_000_000, UTC)
        try:
            decoded = decode_json(state)
        except (ValueError, RecursionError):  # a damaged row: a snapshot is only a shortcut, replay instead
            return Nothing
        return Some(Snapshot(key, seq, decoded, schema_version, moment))

    # -- checkpoints

    async def load_checkpoint(self, name: str) -> int:
        if not can_be_stored(name):
            return 0
        sql = "SELECT position FROM checkpoints WHERE name = $1"
        value = await self._run("load_checkpoint", lambda conn: conn.fetchval(sql, name))
        return int(value or 0)

    async def save_checkpoint(self, name: str, position: int) -> None:
        sql = (
            "INSERT INTO checkpoints (name, position, time) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
        )
        check_key(name, "checkpoint name")
        await self._run("save_checkpoint", lambda conn: conn.execute(sql, name, position, now_us()))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, for read models and queries of your own."""
        async with self._get_pool().acquire(timeout=self._timeout) as conn:
            try:
                yield conn
            finally:
                await conn.reset()  # the caller's session state stays with the caller


async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, left to finish in a task of its own when the caller is cancelled.

    Cancelled during its TLS probe, ``asyncpg.connect`` leaves behind a
    future whose error nobody reads ("unexpected connection_lost() call",
    reported by the event loop). Here the attempt runs to its end, and a
    connection it makes after the caller has gone is closed.

    >>> asyncio.run(connect("postgresql://app@127.0.0.1:1/events", timeout=5))  # nothing listens on port 1
    Traceback (most recent call last):
    ...
    ConnectionRefusedError: [Errno ...] Connect call failed ('127.0.0.1', 1)
    """
    attempt = asyncio.ensure_future(asyncpg.connect(*args, **kwargs))
    try:
        return await asyncio.shield(attempt)
    except asyncio.CancelledError:
        attempt.add_done_callback(_discard_connection)
        raise


def _discard_connection(attempt: asyncio.Future[asyncpg.Connection]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Hand a connection back to the pool as it is: the store leaves no session state behind
    (its locks end with their transactions), so asyncpg's reset query, a round trip on every
    release, is not needed. :meth:`PostgresStore.connection` resets what it lends out."""


async def _create_schema(conn: asyncpg.Connection) -> None:
    # Check first, change afterwards: a database that is refused is left as it was. The lock
    # makes concurrent openers create the schema one after the other.
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        }
        if "streamsrc_meta" in tables:
            value = await conn.fetchval("SELECT value FROM streamsrc_meta WHERE key = 'schema_version'")
            if value is not None and not (value.isascii() and value.isdigit()):
                raise IncompatibleSchema(f"the database has schema version {value!r}, not a number")
            if value is not None and int(value) > SCHEMA_VERSION:
                raise IncompatibleSchema(
                    f"the database has schema version {value}; this streamsrc knows up to "
                    f"{SCHEMA_VERSION}: upgrade streamsrc"
                )
            if value is not None and int(value) == SCHEMA_VERSION:
                return
        elif clash := sorted(tables & {"events", "snapshots", "checkpoints"}):
            raise IncompatibleSchema(f"the database has tables {clash} that streamsrc did not make")
        await conn.execute(_SCHEMA)
        await conn.execute(
            "INSERT INTO streamsrc_meta (key, value) VALUES ('schema_version', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(SCHEMA_VERSION),
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
