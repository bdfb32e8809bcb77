"""A read model in PostgreSQL: tables the handler writes, with the checkpoint in the same transaction.

The handler is ``async handler(conn, events)`` with an asyncpg connection
inside a transaction that also moves the projection's checkpoint (table
``streamsrc_projections``): the tables and the checkpoint always agree, so
every event is applied exactly once. The database may be the event store's
own or another one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import anyio
import asyncpg

from streamsrc.errors import StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._models import DeadLetter
from streamsrc.store import redact_url
from streamsrc.store._contract import now_us
from streamsrc.store.postgres import CONNECTION_ERRORS, connect

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

_RETRY_DELAYS = (0.05, 0.2, 0.5)
"""Waits before the tries after a connection failure (the pool opens new connections meanwhile)."""


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

    def __init__(self, url: str, schema: str = "", *, pool_max: int = 4, timeout: float = 10.0) -> None:
        self._url = url
        self.url = redact_url(url)
        self.schema = schema
        self._pool_max = pool_max
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"<PostgresReadModel {self.url}>"

    async def open(self) -> PostgresReadModel:
        """Connect and create the tables if needed."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=self._pool_max, timeout=self._timeout, connect=connect
            )
            async with self._pool.acquire() as conn:
                await conn.execute(_TABLES)
                if self.schema.strip():
                    await conn.execute(self.schema)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            await self.aclose()
            problem = f"{type(exc).__name__}: {exc}"
            raise StoreUnavailable(f"cannot open read model {self.url}: {problem}") from None
        return self

    async def aclose(self) -> None:
        """Close the connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresReadModel:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
        attempt = 0
        while True:
            try:
                async with self._get_pool().acquire(timeout=self._timeout) as conn, conn.transaction():
                    await body(conn)
                return
            except CONNECTION_ERRORS as exc:
                if attempt == len(_RETRY_DELAYS):
                    raise StoreUnavailable(f"read model {self.url}: {type(exc).__name__}: {exc}") from None
            await anyio.sleep(_RETRY_DELAYS[attempt])
            attempt += 1
            try:
                if await committed():
                    return
            except StoreUnavailable:
                pass  # still down: the next try says so

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
                await handler(conn, events)
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
        """Rows of a query (parameters ``$1, $2, ...`` bound, never interpolated)."""
        attempt = 0
        while True:
            try:
                async with self._get_pool().acquire(timeout=self._timeout) as conn:
                    return [tuple(r) for r in await conn.fetch(sql, *params, timeout=self._timeout)]
            except CONNECTION_ERRORS as exc:
                if attempt == len(_RETRY_DELAYS):
                    problem = f"{type(exc).__name__}: {exc}"
                    raise StoreUnavailable(f"query on {self.url} failed: {problem}") from None
            await anyio.sleep(_RETRY_DELAYS[attempt])
            attempt += 1
