"""The entity conformance suite (``streamsrc.testing``) run against the shipped stores.

Memory and SQLite, each with its default page size and with ``page_size=3``
(so that loads, ``state_at`` and ``history`` cross many page boundaries).
Every async test runs on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamsrc.store import open_store
from streamsrc.testing import ConformantStore, EntityConformance


class TestMemory(EntityConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        async with open_store("memory://") as store:
            yield store


class TestMemorySmallPages(EntityConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[ConformantStore]:
        async with open_store("memory://?page_size=3") as store:
            assert store.page_size == 3
            yield store


class TestSqlite(EntityConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with open_store(f"sqlite:///{tmp_path}/events.db") as store:
            yield store


class TestSqliteSmallPages(EntityConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with open_store(f"sqlite:///{tmp_path}/events.db?page_size=3") as store:
            assert store.page_size == 3
            yield store
