"""The store conformance suites (``streamsrc.testing``) run against every store that ships.

Every shipped store is a full ``Store`` and runs :class:`StoreConformance`, the
suites of all its capabilities: memory and SQLite, each with its default page
size and with ``page_size=3`` (so that every read crosses many page
boundaries), SQLite with ``synchronous=full``, PostgreSQL, and DynamoDB (on
moto's server, with pages of 23 events: the suite's batches of two pages and
one event fit one DynamoDB transaction), which also runs
:class:`BatchLimitedStoreConformance`. The stores built on ``StoreBase`` run
:class:`ErrorRuleConformance`, each with a real exception of its driver.
Every async test runs on asyncio and trio, but for the stores whose driver
needs asyncio.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from store_urls import (
    DYNAMODB_PAGE_SIZE,
    DYNAMODB_STORE_URLS,
    STORE_URLS,
    fresh_dynamodb_url,
    fresh_postgres_database,
    indexing_dynamodb_store,
    opened_store,
)

from streamsrc.store import (
    ANY,
    BatchLimitedStore,
    CheckpointStore,
    EventStore,
    ImportingStore,
    NotifyingStore,
    SnapshotStore,
    Store,
    open_store,
)
from streamsrc.store.base import StoreBase
from streamsrc.store.memory import MemoryStore
from streamsrc.testing import (
    BatchLimitedStoreConformance,
    ConformantStore,
    ErrorRuleConformance,
    StoreConformance,
)
from streamsrc.testing.conformance import RetiringStoreConformance

CAPABILITIES = (EventStore, SnapshotStore, CheckpointStore, ImportingStore, NotifyingStore, Store)


class TestStoreConformance(StoreConformance):
    @pytest.fixture(params=sorted(set(STORE_URLS) - set(DYNAMODB_STORE_URLS)))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as store:
            yield store


class TestSqliteSynchronousFull(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with open_store(f"sqlite:///{tmp_path}/events.db?synchronous=full") as store:
            assert getattr(store, "synchronous", None) == "FULL"
            yield store


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBConformance(StoreConformance, BatchLimitedStoreConformance):
    """DynamoDB gives every guarantee of the contract: conditional appends (``attribute_not_exists`` on
    each event's seq), atomic batches (one transaction), idempotent retries (an id item per event),
    one global order that a tailing reader never skips (a head item updated in every append's
    transaction, and dense positions that ``read_all`` checks), backwards reads, concurrent writers,
    snapshots, checkpoints, the in-process append signal and imports; and it is batch limited (one
    transaction holds ``max_batch`` events). Its other limit is DynamoDB's 400 KB per item: events hold
    at most 400,000 bytes of data and metadata, so the large payload is smaller."""

    large_event_bytes = 390_000
    concurrent_writer_tasks = 6  # each lost race costs moto a transaction that copies the tables

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        async with open_store(fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}")) as store:
            assert getattr(store, "page_size", None) == DYNAMODB_PAGE_SIZE
            yield store


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBScaleConformance(StoreConformance, BatchLimitedStoreConformance):
    """``order=stream`` (scale-out) mode, with the indexer run after each append (what a deployment's
    indexer does a little later, from DynamoDB Streams): every guarantee of the contract holds *once
    indexed*. What the mode lacks without that: ``append`` returns no positions (``indexed(result)``
    gives them), ``read_all`` and ``head`` show an append only once the indexer has handled it, and
    global order is the indexer's order (each stream's events in seq order), not commit order."""

    large_event_bytes = 390_000
    concurrent_writer_tasks = 6

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        url = fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}&order=stream")
        async with await indexing_dynamodb_store(url).open() as store:
            assert store.order == "stream"
            yield store


# ------------------------------------------------------------------------------------ retiring streams


class TestRetiringStoreConformance(RetiringStoreConformance):
    """Deleting (tombstones) and truncating streams, on memory, SQLite and PostgreSQL."""

    @pytest.fixture(params=sorted(set(STORE_URLS) - set(DYNAMODB_STORE_URLS)))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as store:
            yield store


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBRetiringConformance(RetiringStoreConformance):
    """``order=global``: the tombstone check is a condition on the stream's last event item in the
    append's transaction; a truncation deletes the event items and empties the log's copies."""

    concurrent_writer_tasks = 6

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        async with open_store(fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}")) as store:
            yield store


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBScaleRetiringConformance(RetiringStoreConformance):
    """``order=stream``, indexed after each write (tombstones too) as in ``TestDynamoDBScaleConformance``."""

    concurrent_writer_tasks = 6

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        url = fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}&order=stream")
        async with await indexing_dynamodb_store(url).open() as store:
            deleting = store.delete_stream

            async def delete_stream(stream: str, expected: Any = ANY) -> Any:
                return await store._indexed(await deleting(stream, expected))

            store.delete_stream = delete_stream  # the indexer after a tombstone too
            yield store


# ------------------------------------------------------------------------------------ the error rule


class TestMemoryErrorRule(ErrorRuleConformance):
    """The memory store has no driver: any exception its primitives were declared to raise stands in."""

    @pytest.fixture
    def store_url(self) -> str:
        return "memory://?page_size=1"  # a page per event: a fault on every page of a read

    @pytest.fixture
    def driver_error(self, monkeypatch: pytest.MonkeyPatch) -> Callable[[], BaseException]:
        monkeypatch.setattr(MemoryStore, "driver_errors", (ConnectionResetError,))
        return lambda: ConnectionResetError("connection reset by peer")


class TestSqliteErrorRule(ErrorRuleConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/events.db?page_size=1"

    @pytest.fixture
    def driver_error(self) -> Callable[[], BaseException]:
        return lambda: sqlite3.OperationalError("database is locked")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncpg runs on asyncio only
class TestPostgresErrorRule(ErrorRuleConformance):
    @pytest.fixture
    async def store_url(self) -> AsyncIterator[str]:
        async with fresh_postgres_database() as url:
            yield f"{url}{'&' if '?' in url else '?'}page_size=1"

    @pytest.fixture
    def driver_error(self) -> Callable[[], BaseException]:
        from asyncpg.exceptions import ConnectionDoesNotExistError

        return lambda: ConnectionDoesNotExistError("connection was closed in the middle of operation")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBErrorRule(ErrorRuleConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return fresh_dynamodb_url("page_size=2")

    @pytest.fixture
    def driver_error(self) -> Callable[[], BaseException]:
        from botocore.exceptions import EndpointConnectionError

        return lambda: EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


# ------------------------------------------------------------------------------------ what the suites rely on


@pytest.mark.parametrize("name", sorted(STORE_URLS))
async def test_every_shipped_store_has_every_capability(
    name: str, tmp_path: Path, anyio_backend: str
) -> None:
    if name in DYNAMODB_STORE_URLS and anyio_backend != "asyncio":
        pytest.skip("aiobotocore runs on asyncio only")
    async with opened_store(name, tmp_path) as store:
        missing = [c.__name__ for c in CAPABILITIES if not isinstance(store, c)]
        assert missing == [], f"{type(store).__name__} is not a {', '.join(missing)}"
        assert isinstance(store, BatchLimitedStore) == (name in DYNAMODB_STORE_URLS)


def test_store_conformance_runs_every_capability_suite() -> None:
    """A full store runs the tests of every capability: none is left out, none is skipped by a flag."""
    suites = [c for c in StoreConformance.__mro__ if c.__name__.endswith("Conformance")]
    names = {c.__name__ for c in suites}
    assert names >= {
        "StoreConformance",
        "EventStoreConformance",
        "GlobalOrderConformance",
        "SnapshotStoreConformance",
        "CheckpointStoreConformance",
        "ImportingStoreConformance",
        "NotifyingStoreConformance",
    }
    tests = [n for n in dir(StoreConformance) if n.startswith("test_")]
    for suite in suites:
        own = [n for n in vars(suite) if n.startswith("test_")]
        assert own, f"{suite.__name__} has no tests"
        assert set(own) <= set(tests)
    assert not [n for n in dir(StoreConformance) if n.startswith("supports_")]


def test_every_shipped_store_is_built_on_store_base() -> None:
    """So that the error rule suite reaches all of them (each has a TestXErrorRule above)."""
    from streamsrc.store.dynamodb import DynamoDBStore
    from streamsrc.store.postgres import PostgresStore
    from streamsrc.store.sqlite import SqliteStore

    for store in (MemoryStore, SqliteStore, PostgresStore, DynamoDBStore):
        assert issubclass(store, StoreBase), store
    assert MemoryStore.driver_errors == ()


def test_streamsrc_does_not_import_testing_or_test_tools() -> None:
    """Importing every streamsrc module but streamsrc.testing loads neither it nor pytest/hypothesis."""
    script = (
        "import importlib, pkgutil, sys\n"
        "names = []\n"
        "def walk(package):\n"
        "    for info in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        if info.name in ('streamsrc.testing', 'streamsrc.__main__'):\n"
        "            continue\n"
        "        names.append(info.name)\n"
        "        module = importlib.import_module(info.name)\n"
        "        if info.ispkg:\n"
        "            walk(module)\n"
        "walk(importlib.import_module('streamsrc'))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'hypothesis')\n"
        "             or m.startswith('streamsrc.testing'))\n"
        "print(len(names), bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    count, bad = done.stdout.split(" ", 1)
    assert int(count) > 5
    assert bad.strip() == "[]"
