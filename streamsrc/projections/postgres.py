"""A read model in PostgreSQL: tables the handler writes, with the checkpoint in the same transaction.

The handler is ``async handler(conn, events)`` with an asyncpg connection
inside a transaction that also moves the projection's checkpoint (table
``streamsrc_projections``): the tables and the checkpoint always agree, so
every event is applied exactly once. The database may be the event store's
own or another one.

The checkpoint is a compare-and-set (the row locked ``FOR UPDATE`` in the
batch's transaction): a batch moves it only from the position it started at,
and only while the runner's fencing token (table ``streamsrc_leases``, see
:class:`PostgresLeases`) is the partition's; otherwise the batch rolls back
with :class:`~streamsrc.errors.ProjectionOwnedElsewhere`.

The error rule is the stores': what the handler raises goes through as it is
(the projector blames the events for it); every failure of the model's own
work (its connections, its statements, the commit) is ``StoreUnavailable``,
never an asyncpg exception. A failed connection is tried again, like the
store's, for up to ``retry_for`` seconds. Closing is shielded from
cancellation, and a cancelled open releases what it made.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import asyncpg

from streamsrc.errors import ProjectionOwnedElsewhere, StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._leases import Fence, Lease
from streamsrc.projections._models import DeadLetter
from streamsrc.store import redact_url
from streamsrc.store.base import now_us
from streamsrc.store.postgres import CONNECTION_ERRORS, DEFAULT_RETRY_FOR, connect

__all__ = ["PostgresHandler", "PostgresLeases", "PostgresReadModel"]

PostgresHandler = Callable[[asyncpg.Connection, Sequence[RecordedEvent]], Awaitable[object]]
"""Writes a batch into the read model's tables through the connection (inside the transaction)."""

_TABLES = """
CREATE TABLE IF NOT EXISTS streamsrc_projections (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    time BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS streamsrc_dead_letters (
    projection TEXT NOT NULL,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    error TEXT NOT NULL,
    time BIGINT NOT NULL,
    PRIMARY KEY (projection, position)
);
CREATE TABLE IF NOT EXISTS streamsrc_projection_streams (
    name TEXT NOT NULL,
    stream TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (name, stream)
);
CREATE TABLE IF NOT EXISTS streamsrc_leases (
    projection TEXT NOT NULL,
    part INTEGER NOT NULL,
    owner TEXT,
    expires BIGINT NOT NULL,
    token BIGINT NOT NULL,
    PRIMARY KEY (projection, part)
);
CREATE TABLE IF NOT EXISTS streamsrc_lease_members (
    projection TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (projection, owner)
);
"""

_SAVE_POSITION = (
    "INSERT INTO streamsrc_projections (name, position, time) VALUES ($1, $2, $3) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time"
)

_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0
"""The backoff between tries after a connection failure: doubling, each drawn between half and all."""

T = TypeVar("T")

log = logging.getLogger(__name__)


class _HandlerFailed(Exception):
    """What the handler raised, carried out of the transaction to be raised as it is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class PostgresReadModel:
    """Read-model tables in the PostgreSQL database at ``url``, written exactly once per event.

    ``schema`` (SQL statements) creates the tables when the model opens: write
    it with ``CREATE TABLE IF NOT EXISTS``. Use as ``async with
    PostgresReadModel(url, schema) as model:``.

    >>> async def index(conn, events) -> None:  # the handler: asyncpg, in the checkpoint's transaction
    ...     await conn.executemany(
    ...         "INSERT INTO emails VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET email = $2",
    ...         [(e.stream, e.data["email"]) for e in events],
    ...     )
    >>> schema = "CREATE TABLE IF NOT EXISTS emails (user_id TEXT PRIMARY KEY, email TEXT)"
    >>> PostgresReadModel("postgresql://app:s3cret@localhost/views", schema)  # opened by `async with`
    <PostgresReadModel postgresql://app:***@localhost/views>
    """

    exactly_once = True

    def __init__(
        self,
        url: str,
        schema: str = "",
        *,
        pool_max: int = 4,
        timeout: float = 10.0,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        self._url = url
        self.url = redact_url(url)
        self.schema = schema
        self._pool_max = pool_max
        self._timeout = timeout
        self.retry_for = retry_for
        """Seconds an operation keeps trying while its connections fail."""
        self._pool: asyncpg.Pool | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"<PostgresReadModel {self.url}>"

    async def open(self) -> PostgresReadModel:
        """Connect and create the tables if needed; a failed or cancelled open releases what it made."""
        try:
            pool = asyncpg.create_pool(
                self._url, min_size=1, max_size=self._pool_max, timeout=self._timeout, connect=self._connect
            )
            self._pool = pool  # before it connects: closing now closes it, even half made
            await pool
            async with pool.acquire() as conn:
                await conn.execute(_TABLES)
                if self.schema.strip():
                    await conn.execute(self.schema)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            await self.aclose()
            problem = f"{type(exc).__name__}: {exc}"
            raise StoreUnavailable(f"cannot open read model {self.url}: {problem}") from None
        except BaseException:  # cancelled, say
            await self.aclose()
            raise
        return self

    async def _connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        return await connect(*args, abandoned=self._abandoned, **kwargs)

    async def aclose(self) -> None:
        """Close the connections: shielded, so a cancelled caller still releases every one (the
        connection attempts a cancellation left behind too)."""
        pool, self._pool = self._pool, None
        with anyio.CancelScope(shield=True):
            try:
                if pool is not None:
                    try:
                        await pool.close()
                    except Exception:
                        pool.terminate()
                if self._abandoned:
                    await asyncio.wait(set(self._abandoned), timeout=self._timeout)
            except BaseException:  # a bare asyncio cancellation: end them all now
                if pool is not None:
                    pool.terminate()
                raise

    async def __aenter__(self) -> PostgresReadModel:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _retrying(
        self, what: str, fn: Callable[[], Awaitable[T]], again: Callable[[], Awaitable[bool]]
    ) -> T | None:
        """Run ``fn``; while connections fail, wait (backoff with jitter) and, unless ``again()``
        says no, run it again, for up to ``retry_for`` seconds; then ``StoreUnavailable``.

        The model's own statements refused by the server are ``StoreUnavailable`` at once; what
        the handler raised (:class:`_HandlerFailed`) goes through as it is.
        """
        started = time.monotonic()
        delay = _FIRST_DELAY
        attempt = 0
        while True:
            try:
                return await fn()
            except _HandlerFailed as failed:
                raise failed.error from None
            except CONNECTION_ERRORS as exc:
                attempt += 1
                elapsed = time.monotonic() - started
                left = self.retry_for - elapsed
                problem = f"{type(exc).__name__}: {exc}"
                if left <= 0:
                    tried = f"retried for {self.retry_for:g} s, {attempt} tries"
                    raise StoreUnavailable(f"{what} on {self!r} failed: {problem} ({tried})") from None
                wait = min(left, random.uniform(delay / 2, delay))
                log.warning(
                    "%s on %r: %s; trying again in %.2f s (try %d)",
                    what,
                    self,
                    problem,
                    wait,
                    attempt,
                    extra={
                        "store": self.url,
                        "operation": what,
                        "attempt": attempt,
                        "delay": wait,
                        "elapsed": elapsed,
                        "retry_for": self.retry_for,
                        "error": problem,
                    },
                )
                await anyio.sleep(wait)
                delay = min(delay * 2, _MAX_DELAY)
            except asyncpg.PostgresError as exc:  # the server refused the model's own statement
                raise StoreUnavailable(f"{what} on {self!r} failed: {type(exc).__name__}: {exc}") from None
            try:
                if not await again():
                    return None
            except StoreUnavailable:
                pass  # still down: the next try says so

    async def _transaction(
        self,
        body: Callable[[asyncpg.Connection], Awaitable[object]],
        committed: Callable[[], Awaitable[bool]],
    ) -> None:
        """Run ``body`` in a transaction; when the connection fails, find out and try again.

        A connection that breaks around the commit leaves it unknown whether
        the transaction committed: ``committed()`` (did the checkpoint move?)
        decides, so a batch is never applied twice.
        """

        async def once() -> None:
            async with self._get_pool().acquire(timeout=self._timeout) as conn:
                try:
                    async with conn.transaction():
                        await body(conn)
                except BaseException:
                    if conn.is_in_transaction():  # cancelled before its rollback finished: not for the pool
                        conn.terminate()
                    raise

        async def not_committed() -> bool:
            return not await committed()

        await self._retrying("apply", once, not_committed)

    def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable(f"{self!r} is not open")
        return self._pool

    # -- the ReadModel protocol

    async def load_position(self, name: str) -> int:
        rows = await self.query("SELECT position FROM streamsrc_projections WHERE name = $1", name)
        return int(rows[0][0]) if rows else 0

    async def apply(
        self,
        name: str,
        handler: PostgresHandler,
        events: Sequence[RecordedEvent],
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await _claim(conn, name, position, expected, fence)
            if events:
                await _handle(handler, conn, events)
            await _move(conn, name, position)

        await self._transaction(run, partial(self._reached, name, position))

    async def _reached(self, name: str, position: int) -> bool:
        return await self.load_position(name) >= position

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

        async def run(conn: asyncpg.Connection) -> None:
            await _claim(conn, name, position, expected, fence)
            await conn.execute(_SAVE_LETTER, *row)
            await _move(conn, name, position)

        await self._transaction(run, partial(self._reached, name, position))

    async def apply_stream(
        self,
        name: str,
        handler: PostgresHandler,
        events: Sequence[RecordedEvent],
        *,
        letter: DeadLetter | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply one stream's ``events`` (or park ``letter``) and record how far that stream got,
        in one transaction, without moving the checkpoint (the concurrent runner's step)."""
        last = events[-1]
        row = letter.to_row() if letter is not None else None

        async def run(conn: asyncpg.Connection) -> None:
            await _fenced(conn, name, fence)
            if row is not None:
                await conn.execute(_SAVE_LETTER, *row)
            else:
                await _handle(handler, conn, events)
            await conn.execute(_SAVE_MARK, name, last.stream, last.position)

        async def done() -> bool:
            return (await self.load_marks(name)).get(last.stream, 0) >= last.position or (
                await self.load_position(name) >= last.position
            )

        await self._transaction(run, done)

    async def load_marks(self, name: str) -> dict[str, int]:
        """How far each stream was applied past the checkpoint (by :meth:`apply_stream`)."""
        rows = await self.query(
            "SELECT stream, position FROM streamsrc_projection_streams WHERE name = $1", name
        )
        return {stream: int(position) for stream, position in rows}

    def leases(self) -> PostgresLeases:
        """The leases of partitioned projections, kept in this database (the tokens this model checks)."""
        return PostgresLeases(self)

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        sql = "SELECT * FROM streamsrc_dead_letters"
        rows = await (
            self.query(sql + " ORDER BY time, position")
            if name is None
            else self.query(sql + " WHERE projection = $1 ORDER BY position", name)
        )
        return [DeadLetter.from_row(row) for row in rows]

    # -- queries

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query (parameters ``$1, $2, ...`` bound, never interpolated).

        :raises StoreUnavailable: the database failed or refused the statement.
        """

        async def once() -> list[tuple[Any, ...]]:
            async with self._get_pool().acquire(timeout=self._timeout) as conn:
                return [tuple(r) for r in await conn.fetch(sql, *params, timeout=self._timeout)]

        rows = await self._retrying("query", once, _yes)
        assert rows is not None
        return rows


async def _yes() -> bool:
    return True


_SAVE_LETTER = (
    "INSERT INTO streamsrc_dead_letters VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error"
)

_SAVE_MARK = (
    "INSERT INTO streamsrc_projection_streams (name, stream, position) VALUES ($1, $2, $3) "
    "ON CONFLICT (name, stream) DO UPDATE SET position = excluded.position"
)


async def _handle(
    handler: PostgresHandler, conn: asyncpg.Connection, events: Sequence[RecordedEvent]
) -> None:
    try:
        await handler(conn, events)
    except CONNECTION_ERRORS:
        raise  # the connection failed under the handler: the model tries again
    except Exception as exc:
        raise _HandlerFailed(exc) from exc


async def _fenced(conn: asyncpg.Connection, name: str, fence: Fence | None) -> None:
    if fence is None:
        return
    token = await conn.fetchval(
        "SELECT token FROM streamsrc_leases WHERE projection = $1 AND part = $2 FOR SHARE",
        fence.projection,
        fence.partition,
    )
    if token != fence.token:
        raise ProjectionOwnedElsewhere(name, 0, None, token=fence.token)


async def _claim(
    conn: asyncpg.Connection, name: str, position: int, expected: int | None, fence: Fence | None
) -> None:
    """Check, inside the batch's transaction (the checkpoint's row locked), that this runner may move it."""
    await _fenced(conn, name, fence)
    await conn.execute(
        "INSERT INTO streamsrc_projections (name, position, time) VALUES ($1, 0, $2) "
        "ON CONFLICT (name) DO NOTHING",
        name,
        now_us(),
    )
    current = int(
        await conn.fetchval("SELECT position FROM streamsrc_projections WHERE name = $1 FOR UPDATE", name)
    )
    if (expected is not None and current != expected) or position < current:
        raise ProjectionOwnedElsewhere(name, current if expected is None else expected, current)


async def _move(conn: asyncpg.Connection, name: str, position: int) -> None:
    await conn.execute(_SAVE_POSITION, name, position, now_us())
    await conn.execute(
        "DELETE FROM streamsrc_projection_streams WHERE name = $1 AND position <= $2", name, position
    )


class PostgresLeases:
    """Leases of partitioned projections in a :class:`PostgresReadModel`'s database (``streamsrc_leases``).

    Each step is one transaction (the lease's row locked), so workers on
    several machines agree; the read model checks the fencing token in each
    batch's transaction (``FOR SHARE``: a takeover waits for a batch in flight).

    >>> PostgresReadModel("postgresql://app:s3cret@localhost/views").leases()  # used once the model is open
    <PostgresLeases of <PostgresReadModel postgresql://app:***@localhost/views>>
    """

    def __init__(self, model: PostgresReadModel) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"<PostgresLeases of {self.model!r}>"

    async def _run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def once() -> T:
            pool = self.model._get_pool()
            async with pool.acquire(timeout=self.model._timeout) as conn, conn.transaction():
                return await fn(conn)

        return await self.model._retrying(what, once, _yes)  # type: ignore[return-value]

    async def acquire(self, projection: str, partition: int, owner: str, ttl: float) -> Fence | None:
        async def run(conn: asyncpg.Connection) -> int | None:
            now = now_us()
            await conn.execute(
                "INSERT INTO streamsrc_leases VALUES ($1, $2, NULL, 0, 0) ON CONFLICT DO NOTHING",
                projection,
                partition,
            )
            row = await conn.fetchrow(
                "SELECT owner, expires, token FROM streamsrc_leases "
                "WHERE projection = $1 AND part = $2 FOR UPDATE",
                projection,
                partition,
            )
            assert row is not None
            if row[0] == owner and row[1] > now:
                token = int(row[2])
            elif row[0] is None or row[1] <= now:
                token = int(row[2]) + 1
            else:
                return None
            await conn.execute(
                "UPDATE streamsrc_leases SET owner = $3, expires = $4, token = $5 "
                "WHERE projection = $1 AND part = $2",
                projection,
                partition,
                owner,
                now + int(ttl * 1e6),
                token,
            )
            return token

        token = await self._run("acquire lease", run)
        return None if token is None else Fence(projection, partition, token, self)

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        async def run(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE streamsrc_leases SET expires = $1 "
                "WHERE projection = $2 AND part = $3 AND token = $4 AND owner = $5",
                now_us() + int(ttl * 1e6),
                fence.projection,
                fence.partition,
                fence.token,
                owner,
            )
            return bool(status == "UPDATE 1")

        return await self._run("renew lease", run)

    async def release(self, fence: Fence, owner: str) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE streamsrc_leases SET owner = NULL, expires = 0 "
                "WHERE projection = $1 AND part = $2 AND token = $3 AND owner = $4",
                fence.projection,
                fence.partition,
                fence.token,
                owner,
            )

        await self._run("release lease", run)

    async def holds(self, fence: Fence) -> bool:
        rows = await self.model.query(
            "SELECT token FROM streamsrc_leases WHERE projection = $1 AND part = $2",
            fence.projection,
            fence.partition,
        )
        return bool(rows) and rows[0][0] == fence.token

    async def leases(self, projection: str) -> list[Lease]:
        rows = await self.model.query(
            "SELECT part, owner, expires, token FROM streamsrc_leases WHERE projection = $1 ORDER BY part",
            projection,
        )
        return [Lease(projection, int(p), o, e / 1e6, int(t)) for p, o, e, t in rows]

    async def heartbeat(self, projection: str, owner: str, ttl: float) -> list[str]:
        async def run(conn: asyncpg.Connection) -> list[str]:
            now = now_us()
            await conn.execute(
                "INSERT INTO streamsrc_lease_members VALUES ($1, $2, $3) "
                "ON CONFLICT (projection, owner) DO UPDATE SET expires = excluded.expires",
                projection,
                owner,
                now + int(ttl * 1e6),
            )
            rows = await conn.fetch(
                "SELECT owner FROM streamsrc_lease_members "
                "WHERE projection = $1 AND expires > $2 ORDER BY owner",
                projection,
                now,
            )
            return [r[0] for r in rows]

        return await self._run("heartbeat", run)

    async def leave(self, projection: str, owner: str) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM streamsrc_lease_members WHERE projection = $1 AND owner = $2", projection, owner
            )

        await self._run("leave", run)
