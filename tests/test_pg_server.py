"""The test infrastructure for PostgreSQL (``pg_server.py``, the fixtures in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from pg_server import LOCKED_PASSWORD, ThrowawayCluster, create_database, find_binaries, with_database

# asyncpg runs on asyncio only
pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


async def test_fresh_database_is_empty_and_reachable(postgres_database: str) -> None:
    connection = await asyncpg.connect(postgres_database)
    try:
        assert await connection.fetchval("SELECT current_database()") == postgres_database.rsplit("/", 1)[1]
        tables = await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
        await connection.execute("CREATE TABLE t (x int)")
    finally:
        await connection.close()


async def test_each_test_has_its_own_database(postgres_database: str) -> None:
    connection = await asyncpg.connect(postgres_database)
    try:
        await connection.execute("CREATE TABLE t (x int)")  # no clash with the test above
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl)")
    with ThrowawayCluster(binaries) as started:
        yield started


async def test_restart_on_the_same_port_keeps_the_data(cluster: ThrowawayCluster) -> None:
    url = await create_database(cluster.url, "kept")
    connection = await asyncpg.connect(url)
    await connection.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
    cluster.stop()  # mid-session: the open connection is ended
    with pytest.raises((asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
        await connection.fetchval("SELECT 1")
    await connection.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(url)
    cluster.start()
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT sum(x) FROM t") == 3
    finally:
        await connection.close()


async def test_password_role_refuses_a_wrong_password(cluster: ThrowawayCluster) -> None:
    locked = cluster.url.replace("streamsrc:streamsrc-test-pw@", "locked:{}@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(locked.format("wrong"))
    connection = await asyncpg.connect(with_database(locked.format(LOCKED_PASSWORD), "postgres"))
    await connection.close()
