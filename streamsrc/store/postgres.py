"""``postgresql://user:password@host:port/database``: the PostgreSQL interpreter, on asyncpg.

Design:

* **One round trip per append.** An append is one call of the server-side
  function ``streamsrc_append`` (created with the schema), run in its own
  transaction: it takes the append lock, looks for the batch's ids, checks
  the expected version, inserts the rows and sends a notification.
* **Gap-free global order by serialising appends; group commit so that
  writers share the serialised part.** A sequence would hand out positions
  that commit out of order (transaction A takes 5, B takes 6, B commits
  first: a reader that saw 6 would skip 5 for ever). Instead every append
  transaction takes a transaction-scoped advisory lock before it gives
  positions (``max(position) + 1``) and holds it until after its commit is
  visible, so commit order is position order and positions have no holes —
  what eventsourcing does with a table lock. To keep that lock from
  serialising concurrent writers one commit (and one fsync) each, the store
  groups them on the client: the first caller to find no group in flight
  sends its append alone (``streamsrc_append``); callers arriving meanwhile
  wait in a queue, and when the call returns the first of them sends every
  waiting append in *one* call of ``streamsrc_append_group`` — one
  transaction, one lock, one commit, one ``NOTIFY``. The function decides each
  append alone (ids first, then the stream's version, in the database, under
  the lock): one that fails writes nothing and gets its own answer
  (``WrongExpectedVersion``, ``DuplicateEvent``, an idempotent retry), the
  others commit. Without per-append sub-transactions (``BEGIN ... EXCEPTION``
  would cost a subtransaction each, and more than 64 in one transaction slow
  every reader's snapshot): if the server refuses a statement of the group
  (a row breaking a constraint the function did not check), each append is
  sent again alone, so only the bad one fails. Alternatives weighed: recording
  each row's ``xid8`` and reading only below the visibility horizon
  (``pg_snapshot_xmin``) lets writers overlap fully, but positions stop being
  dense, totally ordered integers — the order key becomes ``(xid, position)``
  and every checkpoint in every consumer (projections, migrate, the CLI,
  notebooks) would change type; a commit-ordered high-water mark makes readers
  wait on bookkeeping; ``commit_delay`` groups fsyncs but not the lock. Group
  commit keeps positions as they are and takes the lock once per group.
* **The database decides.** ``UNIQUE (stream, seq)`` and ``UNIQUE (id)`` make
  an overwrite or a duplicate impossible even for a writer that bypasses
  this module; the function checks ids and versions under the lock, so the
  result is decided on the server, never by a read in Python followed by a
  write.
* **Live subscriptions.** Each append notifies channel ``streamsrc_events``;
  the store listens on a connection of its own and wakes
  ``store.appended``, so subscriptions in this process learn of appends made
  by any process (and still poll slowly in case a notification is lost).
* **Riding out a restart.** An operation whose connection fails (the server
  restarts, a connection is cut) is tried again on a new connection, with an
  exponential backoff with jitter, for up to ``retry_for`` seconds (each try
  logged at WARNING on logger ``streamsrc.store.postgres``, with the fields
  ``store``, ``operation``, ``attempt``, ``delay``, ``elapsed``,
  ``retry_for`` and ``error``); then it fails with ``StoreUnavailable``
  saying how long it tried. Every operation is safe to run again: reads,
  upserts, and appends, whose event ids make a second run of a batch that
  did commit return the stored result and write nothing. The wait is at
  most ``retry_for`` plus one last try (bounded by ``timeout`` to connect and
  ``timeout`` to run).

The contract's methods (validation, encoding, the idempotency decisions,
paging, snapshot decoding, the error rule) are :class:`~streamsrc.store.base.StoreBase`'s;
this module implements its primitives.

URL options: ``page_size``, ``max_event_size``, ``pool_min``/``pool_max``
(connections), ``timeout`` (seconds to connect and per command),
``retry_for`` (seconds to keep trying while the server is away; default 5).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache, partial
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.lowlevel
import asyncpg

from streamsrc.errors import IncompatibleSchema, StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    NO_STREAM,
    STREAM_EXISTS,
    TOMBSTONE_TYPE,
    EncodedEvent,
    EventFilter,
    Expected,
    now_us,
)
from streamsrc.store._group import GroupCommit
from streamsrc.store._url import redact_url
from streamsrc.store.base import (
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
)

__all__ = ["CHANNEL", "CONNECTION_ERRORS", "DEFAULT_RETRY_FOR", "SCHEMA_VERSION", "PostgresStore", "connect"]

T = TypeVar("T")

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # 3: streamsrc_append_group (group commit); 4: tombstones, imports of truncated streams;
# 5: names collate by code point
CHANNEL = "streamsrc_events"
_LOCK_KEY = 0x5E7A_5C_01  # the advisory lock every append takes
_TOMBSTONE = "$streamDeleted"  # TOMBSTONE_TYPE, spelt out: the schema's SQL is built from literals only
assert _TOMBSTONE == TOMBSTONE_TYPE

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS streamsrc_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position BIGINT PRIMARY KEY,
    stream TEXT COLLATE "C" NOT NULL,
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
    key TEXT COLLATE "C" NOT NULL,
    schema_version INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (key, schema_version, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT COLLATE "C" PRIMARY KEY,
    position BIGINT NOT NULL,
    time BIGINT NOT NULL
);
-- Version 5: names compare by code point whatever the database's collation (an ICU or glibc
-- locale compares letters before case and punctuation), so the names under a prefix (a tenant's
-- streams and checkpoints) are contiguous in every listing, as in the other stores. A database
-- made before is changed in place once (its indexes on these columns are rebuilt).
DO $collate$
DECLARE
    col RECORD;
BEGIN
    FOR col IN
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        WHERE c.table_schema = current_schema()
          AND (c.table_name, c.column_name)
              IN (('events', 'stream'), ('snapshots', 'key'), ('checkpoints', 'name'))
          AND c.collation_name IS DISTINCT FROM 'C'
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE TEXT COLLATE "C"',
                       col.table_name, col.column_name);
    END LOOP;
END
$collate$;
-- Version 1 of the function took one time for the whole batch; imports give one per event.
DROP FUNCTION IF EXISTS streamsrc_append(TEXT, BIGINT, UUID[], TEXT[], TEXT[], TEXT[], BIGINT);
-- code 0: written (last seq, first position); 1: some ids exist (rows in found_*);
-- 2: wrong expected version (current seq in last_seq); 3 (version 4): the stream ends with a
-- tombstone, it was deleted (its seq in last_seq).
-- p_expected: >= 0 exact seq, -1 any, -3 the stream exists; <= -11 (version 4, imports): exact seq
-- -10 - p_expected, or a stream with no events, which then starts there (a truncated source).
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
    last_type TEXT;
    head BIGINT;
    n INT := coalesce(array_length(p_ids, 1), 0);
BEGIN
    -- Taken before anything is read: the statements below see every append committed before.
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    SELECT EXISTS (SELECT 1 FROM events e WHERE e.id = ANY(p_ids)),
           coalesce(l.seq, 0), l.type,
           coalesce((SELECT e.position FROM events e ORDER BY e.position DESC LIMIT 1), 0)
      INTO taken, current, last_type, head
      FROM (SELECT 1) AS one LEFT JOIN LATERAL (
          SELECT e.seq, e.type FROM events e WHERE e.stream = p_stream ORDER BY e.seq DESC LIMIT 1
      ) AS l ON true;
    IF taken THEN
        RETURN QUERY SELECT 1, 0::BIGINT, 0::BIGINT, e.id, e.stream, e.seq, e.position
            FROM events e WHERE e.id = ANY(p_ids);
        RETURN;
    END IF;
    IF last_type = '{_TOMBSTONE}' THEN
        RETURN QUERY SELECT 3, current, 0::BIGINT, NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    IF p_expected <= -10 THEN
        p_expected := -10 - p_expected;
        IF current = 0 THEN
            current := p_expected;
        END IF;
    END IF;
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
-- A group of appends in one transaction (version 3): append i is p_streams[i], p_expected[i] and
-- the p_counts[i] events that follow the previous appends' in the flattened event arrays. Each is
-- decided alone as streamsrc_append decides one (its rows carry idx = i); those that fail write
-- nothing and the others commit together; one lock, one commit, one notification per group.
CREATE OR REPLACE FUNCTION streamsrc_append_group(
    p_streams TEXT[], p_expected BIGINT[], p_counts INT[],
    p_ids UUID[], p_types TEXT[], p_data TEXT[], p_meta TEXT[], p_times BIGINT[]
) RETURNS TABLE (idx INT, code INT, last_seq BIGINT, first_position BIGINT,
                 found_id UUID, found_stream TEXT, found_seq BIGINT, found_position BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    i INT;
    first_k INT := 1;
    n INT;
    batch_ids UUID[];
    current BIGINT;
    last_type TEXT;
    expected BIGINT;
    head BIGINT;
    head_before BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    head := coalesce((SELECT e.position FROM events e ORDER BY e.position DESC LIMIT 1), 0);
    head_before := head;
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        n := p_counts[i];
        batch_ids := p_ids[first_k : first_k + n - 1];
        IF EXISTS (SELECT 1 FROM events e WHERE e.id = ANY(batch_ids)) THEN
            RETURN QUERY SELECT i, 1, 0::BIGINT, 0::BIGINT, e.id, e.stream, e.seq, e.position
                FROM events e WHERE e.id = ANY(batch_ids);
        ELSE
            current := NULL;
            last_type := NULL;
            SELECT e.seq, e.type INTO current, last_type FROM events e WHERE e.stream = p_streams[i]
                ORDER BY e.seq DESC LIMIT 1;
            current := coalesce(current, 0);
            expected := p_expected[i];
            IF expected <= -10 THEN
                expected := -10 - expected;
                IF current = 0 THEN
                    current := expected;
                END IF;
            END IF;
            IF last_type = '{_TOMBSTONE}' THEN
                RETURN QUERY SELECT i, 3, current, 0::BIGINT,
                    NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
            ELSIF (expected >= 0 AND current <> expected) OR (expected = -3 AND current = 0) THEN
                RETURN QUERY SELECT i, 2, current, 0::BIGINT,
                    NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
            ELSE
                INSERT INTO events (position, stream, seq, id, type, data, metadata, time)
                SELECT head + k, p_streams[i], current + k, p_ids[first_k + k - 1], p_types[first_k + k - 1],
                       p_data[first_k + k - 1], p_meta[first_k + k - 1], p_times[first_k + k - 1]
                FROM generate_series(1, n) AS k;
                RETURN QUERY SELECT i, 0, current + n, head + 1,
                    NULL::UUID, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
                head := head + n;
            END IF;
        END IF;
        first_k := first_k + n;
    END LOOP;
    IF head > head_before THEN
        PERFORM pg_notify('{CHANNEL}', head::TEXT);
    END IF;
END
$$;
"""

_COLUMNS = "stream, seq, position, type, data, metadata, uuid_send(id), time"
_APPEND = "SELECT * FROM streamsrc_append($1, $2, $3, $4, $5, $6, $7)"
_APPEND_GROUP = "SELECT * FROM streamsrc_append_group($1, $2, $3, $4, $5, $6, $7, $8)"
_FIND_IDS = "SELECT id, stream, seq, position FROM events WHERE id = ANY($1::UUID[])"
_READ_FORWARDS = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3"
_READ_BACKWARDS = f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
_HEAD = "SELECT max(position) FROM events"
_REMOVE_BEFORE = (  # in one statement: the version, and the rows below $2 only if $2 is at most it
    "WITH v AS (SELECT coalesce(max(seq), 0) AS version FROM events WHERE stream = $1), "
    "d AS (DELETE FROM events WHERE stream = $1 AND seq < $2 AND $2 <= (SELECT version FROM v) "
    "RETURNING 1) "
    "SELECT (SELECT count(*) FROM d), (SELECT version FROM v)"
)
_STREAMS = "SELECT DISTINCT stream FROM events WHERE stream > $1 ORDER BY stream LIMIT $2"
_SAVE_SNAPSHOT = (
    "INSERT INTO snapshots (key, schema_version, seq, state, time) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key, schema_version, seq) DO UPDATE SET state = excluded.state, time = excluded.time"
)
_LOAD_SNAPSHOT = (
    "SELECT seq, state, time FROM snapshots WHERE key = $1 AND schema_version = $2 "
    "AND seq <= $3 AND time <= $4 ORDER BY seq DESC LIMIT 1"
)
_SAVE_CHECKPOINT = (
    "INSERT INTO checkpoints (name, position, time) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
)
_LOAD_CHECKPOINT = "SELECT position FROM checkpoints WHERE name = $1"
_CREATE_CHECKPOINT = (  # a compare-and-set from 0: a missing row counts as position 0
    "INSERT INTO checkpoints (name, position, time) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time "
    "WHERE checkpoints.position = 0"
)
_MOVE_CHECKPOINT = "UPDATE checkpoints SET position = $2, time = $3 WHERE name = $1 AND position = $4"
_LIST_CHECKPOINTS = "SELECT name, position FROM checkpoints WHERE name > $1 ORDER BY name LIMIT $2"

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
"""asyncpg's errors for a connection that failed or a server that is not there (now): tried again."""

DEFAULT_RETRY_FOR = 5.0
"""Seconds an operation keeps trying while the server is away (a restart takes a second or two)."""

_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0
"""The backoff between tries: doubling from the first delay up to the last, each drawn at random
between half and all of it (so the clients of a restarted server do not come back in step)."""

_as_event: Callable[[Any], RecordedEvent] = partial(tuple.__new__, RecordedEvent)


_AppendArgs = tuple[str, Sequence[EncodedEvent], Expected, Sequence[int] | None]


def _expected_code(expected: Expected, importing: bool = False) -> int:
    if importing and type(expected) is int and expected > 0:
        return -10 - expected  # this seq, or a new stream that starts past #1 (a truncated source)
    if expected is ANY:
        return -1
    if expected is NO_STREAM:
        return 0
    if expected is STREAM_EXISTS:
        return -3
    assert isinstance(expected, int)
    return expected


@lru_cache(maxsize=64)
def _read_all_query(keep: EventFilter) -> tuple[str, tuple[Any, ...]]:
    """The SQL of a page of the global log kept by ``keep``, and its parameters before the bound and size."""
    where = ""
    params: list[Any] = []
    if keep.types is not None:
        params.append(sorted(keep.types))
        where += f" AND type = ANY(${len(params)}::TEXT[])"
    if keep.stream_prefix is not None:
        params.append(keep.stream_prefix)
        where += f" AND left(stream, char_length(${len(params)}::TEXT)) = ${len(params)}"
    n = len(params)
    sql = f"SELECT {_COLUMNS} FROM events WHERE position > ${n + 1}{where} ORDER BY position LIMIT ${n + 2}"
    return sql, tuple(params)


class PostgresStore(StoreBase):
    """An event store, snapshot store and checkpoint store in a PostgreSQL database.

    >>> PostgresStore("postgresql://app:s3cret@localhost:5432/events", pool_max=20)  # open() connects
    <PostgresStore postgresql://app:***@localhost:5432/events>
    """

    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (
        *CONNECTION_ERRORS,
        asyncpg.PostgresError,
    )

    def __init__(
        self,
        url: str,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        pool_min: int = 1,
        pool_max: int = 10,
        timeout: float = 10.0,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        super().__init__(page_size=page_size, max_event_size=max_event_size)
        if not 0 <= retry_for < float("inf"):
            raise ValueError(f"retry_for must be a number of seconds >= 0, not {retry_for!r}")
        self._url = url
        self.url = redact_url(url)
        self._pool_min = pool_min
        self._pool_max = max(pool_min, pool_max)
        self._timeout = timeout
        self.retry_for = retry_for
        """Seconds an operation keeps trying while its connections fail (see the module docs)."""
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._own: asyncpg.Connection | None = None
        self._own_busy = False
        self._heard_up_to = 0
        self._group = GroupCommit(self._insert_alone, self._insert_together)  # appends in groups
        self._abandoned: set[asyncio.Future[Any]] = set()
        """Connection attempts a cancelled caller left to finish (see :func:`connect`)."""

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url}>"

    def describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"

    async def open(self) -> PostgresStore:
        """Connect, create or check the schema, and start listening for appends.

        A failed or cancelled open releases every connection it made.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio, say
            problem = "the PostgreSQL store (asyncpg) runs on asyncio only"
            raise StoreUnavailable(f"{self.url}: {problem}") from None
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed")
        try:
            pool = asyncpg.create_pool(
                self._url,
                min_size=self._pool_min,
                max_size=self._pool_max,
                timeout=self._timeout,
                reset=_keep_session,
                connect=self._connect,
            )
            self._pool = pool  # before it connects: closing now closes it, even half made
            await pool
            conn = await pool.acquire()
            try:
                await _create_schema(conn)
            except BaseException:
                conn.terminate()  # in the middle of a transaction, maybe: not for the pool again
                raise
            finally:
                await pool.release(conn)
            await self._listen()
            await self._connect_own()
        except IncompatibleSchema:
            await self.aclose()
            raise
        except self.driver_errors as exc:
            await self.aclose()
            raise StoreUnavailable(f"cannot open {self.url}: {self.describe(exc)}") from None
        except BaseException:  # cancelled, say: release what was made (aclose is shielded)
            await self.aclose()
            raise
        return self

    async def _connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        """:func:`connect`, keeping the attempts a cancellation leaves behind (the pool's too)."""
        return await connect(*args, abandoned=self._abandoned, **kwargs)

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
        listener = await self._connect(self._url, timeout=self._timeout)
        try:
            await listener.add_listener(CHANNEL, self._heard)
        except BaseException:
            listener.terminate()
            raise
        if self._pool is None:  # closed meanwhile (a listener made again in the background)
            listener.terminate()
            return
        listener.add_termination_listener(self._listener_lost)
        self._listener = listener

    def _listener_lost(self, connection: object) -> None:
        # The server went away (a restart, say): listen again in the background, and wake the
        # subscriptions once back, for whatever was appended meanwhile.
        if self._pool is not None and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = _FIRST_DELAY
        while self._pool is not None:
            try:
                await self._listen()
            except self.driver_errors:
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 2.0)
            else:
                self.appended.notify()
                return

    async def close(self) -> None:
        """Close the listener, the store's own connection and the pool (called once, shielded).

        Operations running on the pool's connections finish first; one running on the store's
        own connection is cut off (it fails with ``StoreUnavailable``); none starts afterwards.
        Connection attempts that cancelled callers left behind are waited for (each is closed as
        it arrives), so no session outlives the store. Interrupted all the same (a bare asyncio
        cancellation), it terminates every connection.
        """
        pool, self._pool = self._pool, None  # from now on no operation starts, no connection opens
        relisten, self._relisten = self._relisten, None
        listener, self._listener = self._listener, None
        own, self._own = self._own, None
        try:
            if relisten is not None and not relisten.done():
                relisten.cancel()
                await asyncio.wait({relisten}, timeout=self._timeout)
            if listener is not None:
                listener.remove_termination_listener(self._listener_lost)  # closing is not losing it
                await _close_connection(listener, self._timeout)
            if own is not None and self._own_busy:
                own.terminate()  # a graceful close would leave the operation waiting on it for ever
            elif own is not None:
                await _close_connection(own, self._timeout)
            if pool is not None:
                try:
                    await pool.close()
                except Exception:
                    pool.terminate()
            if self._abandoned:  # connections still being made for cancelled callers: closed on arrival
                await asyncio.wait(set(self._abandoned), timeout=self._timeout)
        except BaseException:
            for conn in (listener, own):
                if conn is not None:
                    conn.terminate()
            if pool is not None:
                pool.terminate()
            raise

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"{self!r} is closed")
        return self._pool

    async def _run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a connection; while connections fail, try again for up to ``retry_for`` seconds.

        The store's own connection is used when no other task is using it (a
        pool acquire and release cost about as much as a small query); else
        one from the pool, and every try after a connection failed. A
        statement the server refuses (``asyncpg.PostgresError``) is not tried
        again: it propagates, and the base reports it as ``StoreUnavailable``.
        """
        own = self._own
        if own is not None and not self._own_busy and not own.is_closed():
            self._own_busy = True
            try:
                return await fn(own)
            except CONNECTION_ERRORS:
                self._drop_own()  # then try again below, on the pool's connections
            except asyncpg.PostgresError:
                raise  # the statement failed; the connection is fine
            except BaseException:
                self._drop_own()  # cancelled mid-statement, say: its state is unknown
                raise
            finally:
                self._own_busy = False
        started = time.monotonic()
        delay = _FIRST_DELAY
        attempt = 0
        while True:
            try:
                async with self._get_pool().acquire(timeout=self._timeout) as conn:
                    result = await fn(conn)
            except CONNECTION_ERRORS as exc:
                attempt += 1
                elapsed = time.monotonic() - started
                left = self.retry_for - elapsed
                if left <= 0:
                    tried = f"retried for {self.retry_for:g} s, {attempt} tries"
                    raise StoreUnavailable(
                        f"{what} on {self!r} failed: {self.describe(exc)} ({tried})"
                    ) from exc
                wait = min(left, random.uniform(delay / 2, delay))
                log.warning(
                    "%s on %r: %s; trying again in %.2f s (try %d, %.2f s of %g s)",
                    what,
                    self,
                    self.describe(exc),
                    wait,
                    attempt,
                    elapsed,
                    self.retry_for,
                    extra={
                        "store": self.url,
                        "operation": what,
                        "attempt": attempt,
                        "delay": wait,
                        "elapsed": elapsed,
                        "retry_for": self.retry_for,
                        "error": self.describe(exc),
                    },
                )
                await anyio.sleep(wait)
                delay = min(delay * 2, _MAX_DELAY)
            else:
                if self._own is None or self._own.is_closed():
                    await self._connect_own()
                return result

    async def _connect_own(self) -> None:
        """Open the store's own connection again (after the server came back); quietly give up."""
        if self._own_busy or self._pool is None:
            return
        self._own_busy = True  # nobody uses it while it connects
        try:
            self._own = await self._connect(self._url, timeout=self._timeout)
        except self.driver_errors:
            self._own = None
        finally:
            self._own_busy = False
        if self._pool is None and self._own is not None:  # the store was closed meanwhile
            self._drop_own()

    def _drop_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            own.terminate()

    # -- the primitives

    async def insert_batch(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        """Write the append alone if no group is in flight; else queue it for the next group
        (client-side group commit: :class:`streamsrc.store._group.GroupCommit`)."""
        self._get_pool()  # refuse at once when the store is closed
        return await self._group.submit((stream, batch, expected, times))

    async def _insert_alone(self, args: _AppendArgs) -> Inserted:
        return await self._insert_one(*args)

    async def _insert_together(self, group: list[_AppendArgs]) -> list[Inserted | BaseException]:
        if len(group) == 1:
            return [await self._insert_one(*group[0])]
        return await self._insert_group(group)

    async def _insert_group(self, group: list[_AppendArgs]) -> list[Inserted | BaseException]:
        """A group of appends in one call of ``streamsrc_append_group``; if the server refuses
        a statement of it (a row that breaks a constraint the function did not check), each
        append is sent again alone, so only the bad one fails."""
        now = now_us()
        ids: list[uuid.UUID] = []
        types: list[str] = []
        data: list[str] = []
        meta: list[str | None] = []
        times: list[int] = []
        for _, batch, _, own in group:
            for e in batch:
                ids.append(e.id)
                types.append(e.type)
                data.append(e.data)
                meta.append(e.metadata)
            times.extend([now] * len(batch) if own is None else own)
        args = (
            [a[0] for a in group],
            [_expected_code(a[2], a[3] is not None) for a in group],
            [len(a[1]) for a in group],
            ids,
            types,
            data,
            meta,
            times,
        )
        timeout = self._timeout
        try:
            rows = await self._run("append", lambda conn: conn.fetch(_APPEND_GROUP, *args, timeout=timeout))
        except asyncpg.PostgresError:
            alone: list[Inserted | BaseException] = []
            for one in group:
                try:
                    alone.append(await self._insert_one(*one))
                except Exception as exc:
                    alone.append(exc)
            return alone
        by_index: dict[int, list[Any]] = {}
        for r in rows:
            by_index.setdefault(r[0], []).append(r)
        outcomes: list[Inserted | BaseException] = []
        for i, (_, batch, _, _) in enumerate(group, 1):
            outcomes.append(self._outcome([r[1:] for r in by_index[i]], len(batch)))
        return outcomes

    def _outcome(self, rows: Sequence[Any], n: int) -> Inserted:
        code, last_seq, first = rows[0][0], rows[0][1], rows[0][2]
        if code == 0:
            # The base wakes this process at once; its own NOTIFY, heard later, is then ignored.
            self._heard_up_to = max(self._heard_up_to, first + n - 1)
            return Written(last_seq, tuple(range(first, first + n)))
        if code == 1:
            return IdsTaken({uuid.UUID(bytes=r[3].bytes): EventAddress(r[4], r[5], r[6]) for r in rows})
        if code == 3:
            return StreamGone(last_seq, ids_checked=True)
        return VersionConflict(last_seq, ids_checked=True)  # the function looked for the ids first

    async def _insert_one(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        args = (
            stream,
            _expected_code(expected, times is not None),
            [e.id for e in batch],
            [e.type for e in batch],
            [e.data for e in batch],
            [e.metadata for e in batch],
            [now_us()] * len(batch) if times is None else list(times),
        )
        timeout = self._timeout
        rows = await self._run("append", lambda conn: conn.fetch(_APPEND, *args, timeout=timeout))
        return self._outcome(rows, len(batch))

    async def find_ids(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventAddress]:
        timeout = self._timeout
        rows = await self._run("append", lambda conn: conn.fetch(_FIND_IDS, list(ids), timeout=timeout))
        return {uuid.UUID(bytes=r[0].bytes): EventAddress(r[1], r[2], r[3]) for r in rows}

    async def read_page(self, request: PageRequest) -> Page:
        if request.stream is not None:
            sql = _READ_BACKWARDS if request.backwards else _READ_FORWARDS
            params: tuple[Any, ...] = (request.stream, request.bound, request.size)
        else:
            sql, before = _read_all_query(request.filter)
            params = (*before, request.bound, request.size)
        timeout = self._timeout
        rows = await self._run("read", lambda conn: conn.fetch(sql, *params, timeout=timeout))
        return Page.of(list(map(_as_event, rows)), request)

    async def last_position(self) -> int:
        value = await self._run("head", lambda conn: conn.fetchval(_HEAD, timeout=self._timeout))
        return int(value or 0)

    async def remove_before(self, stream: str, seq: int) -> Truncated:
        timeout = self._timeout
        row = await self._run(
            "truncate", lambda conn: conn.fetchrow(_REMOVE_BEFORE, stream, seq, timeout=timeout)
        )
        assert row is not None
        return Truncated(int(row[0]), int(row[1]))

    async def stream_names(self, after: str, size: int) -> list[str]:
        rows = await self._run(
            "streams", lambda conn: conn.fetch(_STREAMS, after, size, timeout=self._timeout)
        )
        return [r[0] for r in rows]

    async def write_snapshot(self, key: str, schema_version: int, seq: int, state: str, time_us: int) -> None:
        row = (key, schema_version, seq, state, time_us)
        await self._run(
            "save_snapshot", lambda conn: conn.execute(_SAVE_SNAPSHOT, *row, timeout=self._timeout)
        )

    async def read_snapshot(
        self, key: str, schema_version: int, at_seq: int, at_time_us: int
    ) -> StoredSnapshot | None:
        params = (key, schema_version, at_seq, at_time_us)
        row = await self._run(
            "load_snapshot", lambda conn: conn.fetchrow(_LOAD_SNAPSHOT, *params, timeout=self._timeout)
        )
        return None if row is None else StoredSnapshot(row[0], row[1], row[2])

    async def write_checkpoint(self, name: str, position: int, time_us: int) -> None:
        await self._run(
            "save_checkpoint",
            lambda conn: conn.execute(_SAVE_CHECKPOINT, name, position, time_us, timeout=self._timeout),
        )

    async def read_checkpoint(self, name: str) -> int | None:
        value = await self._run(
            "load_checkpoint", lambda conn: conn.fetchval(_LOAD_CHECKPOINT, name, timeout=self._timeout)
        )
        return None if value is None else int(value)

    async def swap_checkpoint(self, name: str, expected: int, position: int, time_us: int) -> bool:
        timeout = self._timeout
        if expected == 0:
            status = await self._run(
                "save_checkpoint",
                lambda conn: conn.execute(_CREATE_CHECKPOINT, name, position, time_us, timeout=timeout),
            )
        else:
            status = await self._run(
                "save_checkpoint",
                lambda conn: conn.execute(
                    _MOVE_CHECKPOINT, name, position, time_us, expected, timeout=timeout
                ),
            )
        return str(status).endswith(" 1")  # 'INSERT 0 1' / 'UPDATE 1': moved; '... 0': it was elsewhere

    async def list_checkpoints(self, after: str, size: int) -> list[tuple[str, int]]:
        rows = await self._run(
            "checkpoints", lambda conn: conn.fetch(_LIST_CHECKPOINTS, after, size, timeout=self._timeout)
        )
        return [(r[0], int(r[1])) for r in rows]

    # -- beyond the contract

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, for read models and queries of your own.

        :raises StoreUnavailable: the store is closed, or no connection can be had.
        """
        pool = self._get_pool()
        conn = await self.guard("connection", pool.acquire(timeout=self._timeout))
        try:
            yield conn
        finally:
            try:
                await conn.reset()  # the caller's session state stays with the caller
            except self.driver_errors:
                conn.terminate()  # a broken connection: the pool makes a new one
            except BaseException:
                conn.terminate()
                raise
            finally:
                await pool.release(conn)


async def _close_connection(conn: asyncpg.Connection, seconds: float) -> None:
    """Close ``conn`` politely (waiting up to ``seconds``), or terminate it if that fails."""
    try:
        await conn.close(timeout=seconds)
    except Exception:
        conn.terminate()


async def connect(
    *args: Any, abandoned: set[asyncio.Future[Any]] | None = None, **kwargs: Any
) -> asyncpg.Connection:
    """``asyncpg.connect``, left to finish in a task of its own when the caller is cancelled.

    Cancelled during its TLS probe, ``asyncpg.connect`` leaves behind a
    future whose error nobody reads ("unexpected connection_lost() call",
    reported by the event loop). Here the attempt runs to its end, and a
    connection it makes after the caller has gone is closed. An attempt left
    behind is in ``abandoned`` (if given) until it ends: a store waits for
    them when it closes, so no session outlives it.

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
        if abandoned is not None:
            abandoned.add(attempt)
            attempt.add_done_callback(abandoned.discard)
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
