"""A PostgreSQL database whose default collation is not code-point order (ICU, glibc locales):
names are compared as streamsrc compares them, so a prefix's names are contiguous in every listing
(a tenant's streams and checkpoints), whatever collation the database was created with."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from returns.result import Success

from streamsrc.events import EventData
from streamsrc.store import open_store
from streamsrc.tenancy import TenantStore

pytestmark = pytest.mark.anyio

# Names that a linguistic collation interleaves with a tenant's: it compares letters before case and
# accents, so "@ACME/a" (a stream of the un-scoped store) sorts between "@acme/a" and "@acme/b".
OTHERS = ["@ACME/a", "@Acme/zz", "@acmé/b", "acmea", "acme-b", "zeta", "@acmf/a", "@acme-x/a", "a"]
MINE = ["b", "a-1", "zz", "acme", "c/d"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def icu_database(postgres_server: str) -> AsyncIterator[str]:
    """A fresh database collating by ICU's en-US rules (skipped if the server has no ICU)."""
    name = f"streamsrc_icu_collation_{os.getpid()}"  # one per test process sharing a server
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        try:
            await admin.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
            )
        except asyncpg.PostgresError as exc:  # a server built without ICU
            pytest.skip(f"this PostgreSQL server cannot make an ICU database: {exc}")
        parts = urlsplit(postgres_server)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_the_database_collation_would_interleave_a_tenants_names(icu_database: str) -> None:
    """The premise: in this database, plain text sorts linguistically."""
    conn = await asyncpg.connect(icu_database)
    try:
        rows = await conn.fetch(
            "SELECT x FROM unnest($1::TEXT[]) AS x ORDER BY x", ["@acme/b", "@ACME/a", "@acme/a"]
        )
    finally:
        await conn.close()
    assert [r[0] for r in rows] == ["@acme/a", "@ACME/a", "@acme/b"]


async def test_a_tenants_streams_and_checkpoints_are_all_listed_whatever_the_collation(
    icu_database: str,
) -> None:
    async with open_store(f"{icu_database}?page_size=2") as store:
        acme = TenantStore(store, "acme", owns=False)
        for name in OTHERS:
            assert isinstance(await store.append(name, [EventData("E", {})]), Success)
            await store.save_checkpoint(name, 1)
        for name in MINE:
            assert isinstance(await acme.append(name, [EventData("E", {})]), Success)
            await acme.save_checkpoint(name, 1)
        assert await acme.streams().to_list() == sorted(MINE)
        assert sorted(name for name, _ in await acme.checkpoints().to_list()) == sorted(MINE)
        everything = await store.streams().to_list()
        assert everything == sorted(everything)  # code-point order, page after page
        assert len(everything) == len(OTHERS) + len(MINE)


async def test_a_database_made_before_version_5_is_changed_in_place(icu_database: str) -> None:
    async with open_store(icu_database) as store:
        for name in [*OTHERS, *(f"@acme/{n}" for n in MINE)]:
            assert isinstance(await store.append(name, [EventData("E", {})]), Success)
    conn = await asyncpg.connect(icu_database)
    try:  # as version 4 made them: the database's own collation
        for table, column in (("events", "stream"), ("snapshots", "key"), ("checkpoints", "name")):
            await conn.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT COLLATE "default"')
        await conn.execute("UPDATE streamsrc_meta SET value = '4' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    async with open_store(f"{icu_database}?page_size=2") as store:
        assert await TenantStore(store, "acme", owns=False).streams().to_list() == sorted(MINE)
        assert len(await store.read_all().to_list()) == len(OTHERS) + len(MINE)
    conn = await asyncpg.connect(icu_database)
    try:
        collations = await conn.fetch(
            "SELECT table_name, collation_name FROM information_schema.columns "
            "WHERE (table_name, column_name) IN "
            "(('events', 'stream'), ('snapshots', 'key'), ('checkpoints', 'name'))"
        )
        version = await conn.fetchval("SELECT value FROM streamsrc_meta WHERE key = 'schema_version'")
    finally:
        await conn.close()
    assert sorted(collations) == [("checkpoints", "C"), ("events", "C"), ("snapshots", "C")]
    assert version == "5"
