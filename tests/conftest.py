"""Shared fixtures for the stream test suite.

Every async test runs once per anyio backend (``asyncio`` and ``trio``) through
the ``anyio_backend`` fixture below; Hypothesis tests, which are synchronous,
are parametrised over :data:`BACKENDS` themselves and call ``anyio.run``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from moto_server import MotoUnavailable, session_endpoint, stop_session_server
from pg_server import PostgresUnavailable, session_url, stop_session_cluster
from store_urls import ASYNCIO_ONLY, fresh_postgres_database

BACKENDS = ("asyncio", "trio")


@pytest.fixture(params=BACKENDS, scope="module")
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The anyio backend an async test runs on: each async test runs on both."""
    backend: str = request.param
    return backend


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """With ``STREAMSRC_REQUIRE_SERVICES=1`` (set by ``.ci/run``), a skipped test fails.

    Tests that need a server (PostgreSQL, moto) skip with a reason when its
    binaries are missing on a developer's machine; CI must run them all.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("STREAMSRC_REQUIRE_SERVICES") == "1":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but STREAMSRC_REQUIRE_SERVICES=1 forbids skips: {reason}"
    return None


# ------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The base URL (database ``postgres``, a superuser) of the session's PostgreSQL server.

    ``STREAMSRC_TEST_POSTGRES_URL`` if set; else a throwaway cluster started
    from the local binaries (see ``tests/pg_server.py``), removed when the
    session ends; else the test is skipped.
    """
    try:
        return session_url()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
async def postgres_database(postgres_server: str) -> AsyncIterator[str]:
    """The URL of a fresh empty database on the session's server (dropped after the test; asyncio only)."""
    async with fresh_postgres_database(postgres_server) as url:
        yield url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_session_cluster()
    stop_session_server()


# ------------------------------------------------------------------------------------------- AWS (moto)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """The endpoint URL of the session's moto server (DynamoDB, DynamoDB Streams, Kinesis).

    ``STREAMSRC_TEST_AWS_ENDPOINT`` if set; else a ``ThreadedMotoServer`` on
    127.0.0.1 and a free port (see ``tests/moto_server.py``), stopped when the
    session ends; else the test is skipped. Fake credentials are set either way.
    """
    try:
        return session_endpoint()
    except MotoUnavailable as exc:
        pytest.skip(str(exc))


def _asyncpg_on_trio(item: pytest.Item) -> bool:
    """Whether ``item`` runs on trio with PostgreSQL, whose driver asyncpg runs on asyncio only."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("anyio_backend", params.get("backend")) != "trio":
        return False
    return "postgres_database" in getattr(item, "fixturenames", ()) or any(
        isinstance(value, str) and value in ASYNCIO_ONLY for value in params.values()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip: CI fails skips) the trio runs of PostgreSQL tests: asyncpg needs asyncio."""
    dropped = [item for item in items if _asyncpg_on_trio(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _asyncpg_on_trio(item)]
