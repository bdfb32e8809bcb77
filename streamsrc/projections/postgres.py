"""A read model in PostgreSQL: tables the handler writes, with the checkpoint in the same transaction.

The handler is ``async handler(conn, events)`` with an asyncpg connection
inside a transaction that also moves the projection's checkpoint (table
``streamsrc_projections``): the tables and the checkpoint always agree, so
every event is applied exactly once. The database may be the event store's
own or another one.

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

from streamsrc.errors import StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._models import DeadLetter
from streamsrc.store import redact_url
from streamsrc.store.base import now_us
from streamsrc.store.postgres import CONNECTION_ERRORS, DEFAULT_RETRY_FOR, connect

__all__ = ["PostgresHandler", "PostgresReadModel"]

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
        self, name: str, handler: PostgresHandler, events: Sequence[RecordedEvent], position: int
    ) -> None:
        async def run(conn: asyncpg.Connection) -> None:
            if events:
                try:
                    await handler(conn, events)
                except CONNECTION_ERRORS:
                    raise  # the connection failed under the handler: the model tries again
                except Exception as exc:
                    raise _HandlerFailed(exc) from exc
            await conn.execute(_SAVE_POSITION, name, position, now_us())

        await self._transaction(run, partial(self._reached, name, position))

    async def _reached(self, name: str, position: int) -> bool:
        return await self.load_position(name) >= position

    async def park(self, name: str, letter: DeadLetter, position: int) -> None:
        row = letter.to_row()

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO streamsrc_dead_letters VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (projection, position) DO UPDATE SET error = excluded.error",
                *row,
            )
            await conn.execute(_SAVE_POSITION, name, position, now_us())

        await self._transaction(run, partial(self._reached, name, position))

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
