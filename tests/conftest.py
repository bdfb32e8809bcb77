"""Shared fixtures for the stream test suite.

Every async test runs once per anyio backend (``asyncio`` and ``trio``) through
the ``anyio_backend`` fixture below; Hypothesis tests, which are synchronous,
are parametrised over :data:`BACKENDS` themselves and call ``anyio.run``.
"""

from __future__ import annotations

import os

import pytest

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
