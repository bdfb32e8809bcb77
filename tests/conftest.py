"""Shared fixtures for the stream test suite.

Every async test runs once per anyio backend (``asyncio`` and ``trio``) through
the ``anyio_backend`` fixture below; Hypothesis tests, which are synchronous,
are parametrised over :data:`BACKENDS` themselves and call ``anyio.run``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from moto_server import MotoUnavailable, serialise_moto_requests, session_endpoint, stop_session_server
from pg_server import PostgresUnavailable, session_url, stop_session_cluster
from store_urls import ASYNCIO_ONLY, DYNAMODB_STORE_URLS, fresh_postgres_database

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
    session ends; else the test is skipped. Fake credentials are set either way. The server
    handles one request at a time (see ``moto_server.serialise_moto_requests``).
    """
    serialise_moto_requests()
    try:
        return session_endpoint()
    except MotoUnavailable as exc:
        pytest.skip(str(exc))


TOO_HEAVY_FOR_MOTO: dict[str, dict[str, tuple[object, ...]]] = {
    "test_follows_many_concurrent_writers": {},  # 400 appends by 8 writers within 30 s
    "test_concurrent_commands_all_succeed_through_retries": {},  # 32 commands racing on one stream
    "test_filters_deliver_only_matching_events": {},  # filtered read_all: in the conformance suite
}
"""Shared-suite tests (and parameters) deselected for the DynamoDB store: their sizes, fixed in their
modules, take moto far beyond the time the suite allows. moto answers a DynamoDB call in 15-40 ms
and copies every table a transaction touches, so each append costs more as the table grows (~30 ms
at first, ~200 ms after 400 events). The DynamoDB conformance suite and ``test_store_dynamodb.py``
cover the same ground (concurrent writers, tailing readers, filtered reads) at sizes moto can run,
and the tests named here run on every other store."""


def _too_heavy_for_moto(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    name = getattr(item, "originalname", item.name)
    if name not in TOO_HEAVY_FOR_MOTO:
        return False
    if any(params.get(key) not in values for key, values in TOO_HEAVY_FOR_MOTO[name].items()):
        return False
    return any(isinstance(value, str) and value in DYNAMODB_STORE_URLS for value in params.values())


def _asyncpg_on_trio(item: pytest.Item) -> bool:
    """Whether ``item`` runs on trio with a store whose driver runs on asyncio only (asyncpg, aiobotocore)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("anyio_backend", params.get("backend")) != "trio":
        return False
    return "postgres_database" in getattr(item, "fixturenames", ()) or any(
        isinstance(value, str) and value in ASYNCIO_ONLY for value in params.values()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip: CI fails skips) the trio runs of PostgreSQL and DynamoDB tests (asyncpg and
    aiobotocore need asyncio), and the shared-suite tests too heavy for moto on DynamoDB."""
    dropped = [item for item in items if _asyncpg_on_trio(item) or _too_heavy_for_moto(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = {id(item) for item in dropped}
        items[:] = [item for item in items if id(item) not in gone]
