"""The entity conformance suite (``streamsrc.testing``) run against the shipped stores.

Memory and SQLite, each with its default page size and with ``page_size=3``
(so that loads, ``state_at`` and ``history`` cross many page boundaries).
Every async test runs on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_urls import STORE_URLS, opened_store

from streamsrc.testing import ConformantStore, EntityConformance


class TestEntityConformance(EntityConformance):
    @pytest.fixture(params=sorted(STORE_URLS))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as store:
            yield store
