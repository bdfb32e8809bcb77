"""The stores every conformance suite runs against: one list, so a new backend is added once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from streamsrc.store import open_store

STORE_URLS = {
    "memory": "memory://",
    "memory-small-pages": "memory://?page_size=3",
    "sqlite": "sqlite:///{tmp}/events.db",
    "sqlite-small-pages": "sqlite:///{tmp}/events.db?page_size=3",
}
"""Store URLs by name; ``{tmp}`` is a fresh temporary folder."""


@asynccontextmanager
async def opened_store(name: str, tmp_path: Path) -> AsyncIterator[Any]:
    """Open the store named in :data:`STORE_URLS`, checking small-page stores really page small."""
    url = STORE_URLS[name].format(tmp=tmp_path)
    async with open_store(url) as store:
        if "page_size=3" in url:
            assert store.page_size == 3
        yield store
