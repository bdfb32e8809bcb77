"""The store conformance suite (``streamsrc.testing``) run against every store that ships.

Memory and SQLite, each with its default page size and with ``page_size=3``
(so that every read crosses many page boundaries), SQLite with
``synchronous=full``, PostgreSQL, and DynamoDB (on moto's server, with
pages of 23 events: the suite's batches of two pages and one event fit one
DynamoDB transaction). Every async test runs on asyncio and trio, but for
the stores whose driver needs asyncio.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_urls import DYNAMODB_PAGE_SIZE, DYNAMODB_STORE_URLS, STORE_URLS, fresh_dynamodb_url, opened_store

from streamsrc.store import open_store
from streamsrc.testing import ConformantStore, EventStoreConformance

GUARANTEES = [name for name in vars(EventStoreConformance) if name.startswith("supports_")]


class TestEventStoreConformance(EventStoreConformance):
    @pytest.fixture(params=sorted(set(STORE_URLS) - set(DYNAMODB_STORE_URLS)))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as store:
            yield store


class TestSqliteSynchronousFull(EventStoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with open_store(f"sqlite:///{tmp_path}/events.db?synchronous=full") as store:
            assert store.synchronous == "FULL"
            yield store


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestDynamoDBConformance(EventStoreConformance):
    """DynamoDB gives every guarantee of the contract: conditional appends (``attribute_not_exists`` on
    each event's seq), atomic batches (one transaction), idempotent retries (an id item per event),
    one global order that a tailing reader never skips (a head item updated in every append's
    transaction, and dense positions that ``read_all`` checks), backwards reads, concurrent writers,
    snapshots, checkpoints, the in-process append signal and imports. Its one limit is DynamoDB's 400 KB per
    item: events hold at most 400,000 bytes of data and metadata, so the large payload is smaller."""

    supports_expected_version = True
    supports_atomic_batches = True
    supports_idempotent_retry = True
    supports_global_order = True
    supports_backwards_reads = True
    supports_concurrent_writers = True
    supports_snapshots = True
    supports_checkpoints = True
    supports_append_signal = True
    supports_import = True
    large_event_bytes = 390_000
    concurrent_writer_tasks = 6  # each lost race costs moto a transaction that copies the tables

    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        async with open_store(fresh_dynamodb_url(f"page_size={DYNAMODB_PAGE_SIZE}")) as store:
            assert store.page_size == DYNAMODB_PAGE_SIZE
            yield store


def test_dynamodb_suite_declares_every_guarantee() -> None:
    assert all(getattr(TestDynamoDBConformance, name) is True for name in GUARANTEES)
    assert 300_000 <= TestDynamoDBConformance.large_event_bytes < 400_000


@pytest.mark.parametrize("suite", [TestEventStoreConformance, TestSqliteSynchronousFull])
def test_shipped_stores_declare_every_guarantee(suite: type[EventStoreConformance]) -> None:
    assert len(GUARANTEES) >= 8
    assert all(getattr(suite, name) is True for name in GUARANTEES)
    assert suite.large_event_bytes >= 500_000


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
