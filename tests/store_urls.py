"""The stores every conformance suite runs against: one list, so a new backend is added once."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from moto_server import REGION, MotoUnavailable, serialise_moto_requests, session_endpoint
from pg_server import PostgresUnavailable, create_database, drop_database, session_url

from streamsrc.store import ANY, open_store
from streamsrc.store.base import StoreBase

STORE_URLS = {
    "memory": "memory://",
    "memory-small-pages": "memory://?page_size=3",
    "sqlite": "sqlite:///{tmp}/events.db",
    "sqlite-small-pages": "sqlite:///{tmp}/events.db?page_size=3",
}
"""Store URLs by name; ``{tmp}`` is a fresh temporary folder, ``{postgres}`` a fresh empty database
(``postgresql://user:password@host:port/database``) on the test session's PostgreSQL server,
``{dynamodb}`` fresh tables (``dynamodb://TABLE?...&create=true&streams=false``) on the
session's moto server."""

POSTGRES_STORE_URLS = {
    "postgres": "{postgres}",
}
"""The PostgreSQL entries of :data:`STORE_URLS`, there once ``streamsrc.store.postgres`` exists."""

DYNAMODB_STORE_URLS = {
    "dynamodb": "{dynamodb}",
}
"""The DynamoDB entries of :data:`STORE_URLS` (aiobotocore, on the session's moto server)."""

DYNAMODB_PAGE_SIZE = 23
"""Pages of the DynamoDB test stores: the suites append batches of up to two pages and two events,
and one DynamoDB transaction holds at most 48 (``streamsrc.store.dynamodb.MAX_BATCH``)."""

if importlib.util.find_spec("streamsrc.store.postgres") is not None:
    STORE_URLS.update(POSTGRES_STORE_URLS)
if importlib.util.find_spec("aiobotocore") is not None:
    STORE_URLS.update(DYNAMODB_STORE_URLS)

ASYNCIO_ONLY = frozenset(POSTGRES_STORE_URLS) | frozenset(DYNAMODB_STORE_URLS)
"""Stores whose driver (asyncpg, aiobotocore) runs on asyncio only: ``conftest.py`` deselects their trio
tests."""

_tables = itertools.count()


def fresh_dynamodb_url(options: str = "") -> str:
    """A ``dynamodb://`` URL naming tables no other test uses, on the session's moto server (made on
    open: ``create=true``), skipping the test if there is no moto; ``options`` are appended."""
    serialise_moto_requests()
    try:
        endpoint = session_endpoint()
    except MotoUnavailable as exc:
        pytest.skip(str(exc))
    table = f"t{os.getpid()}-{next(_tables)}-{uuid.uuid4().hex[:8]}"
    # No DynamoDB Streams: nothing here reads them, and moto copies a table's stream records in every
    # transaction (to roll it back), which makes each write slower as the table grows.
    url = f"dynamodb://{table}?region={REGION}&endpoint_url={endpoint}&create=true&streams=false"
    if "order=" not in options:  # the suites read positions at append time: the head item's mode
        options = f"{options}&order=global" if options else "order=global"
    return f"{url}&{options}"


def indexing_dynamodb_store(url: str) -> Any:
    """A DynamoDB store in ``order=stream`` mode that runs the indexer after each of its appends and
    returns the positions it gave (``store.indexed``): the conformance suites' view of the scale-out
    mode once indexed (a real deployment indexes from DynamoDB Streams, a little later)."""
    from returns.result import Success

    from streamsrc.store.dynamodb import DynamoDBStore
    from streamsrc.store.dynamodb._index import index_stream

    class IndexingDynamoDBStore(DynamoDBStore):
        async def append(self, stream: str, events: Any, expected: Any = ANY) -> Any:
            return await self._indexed(await super().append(stream, events, expected))

        async def import_events(self, stream: str, events: Any) -> Any:
            return await self._indexed(await super().import_events(stream, events))

        async def _indexed(self, result: Any) -> Any:
            if isinstance(result, Success) and result.unwrap().count:
                written = result.unwrap()
                await index_stream(self, written.stream)
                return Success(await self.indexed(written))
            return result

    return IndexingDynamoDBStore(url)


_databases = itertools.count()


@asynccontextmanager
async def fresh_postgres_database(base: str | None = None) -> AsyncIterator[str]:
    """The URL of a new empty database on the server of ``base`` (default: the session's server,
    skipping the test if there is none), dropped afterwards."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("asyncpg runs on asyncio only: conftest.py deselects such tests on trio") from None
    if base is None:
        try:
            base = await anyio.to_thread.run_sync(session_url)  # the first call starts the cluster
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
    name = f"streamsrc_t{os.getpid()}_{next(_databases)}"
    url = await create_database(base, name)
    try:
        yield url
    finally:
        await drop_database(base, name)


@asynccontextmanager
async def opened_store(name: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Open the store named in :data:`STORE_URLS`, checking small-page stores really page small."""
    template = STORE_URLS[name]
    async with AsyncExitStack() as stack:
        database = dynamodb = ""
        if "{postgres}" in template:
            database = await stack.enter_async_context(fresh_postgres_database())
        if "{dynamodb}" in template:
            dynamodb = fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}")
        url = template.format(tmp=tmp_path, postgres=database, dynamodb=dynamodb)
        store = await stack.enter_async_context(open_store(url))
        if "page_size=3" in template:
            assert isinstance(store, StoreBase)
            assert store.page_size == 3
        yield store
