"""moto's HTTP server for the AWS tests (DynamoDB, DynamoDB Streams, Kinesis), started by the tests.

moto's in-process ``mock_aws`` does not patch aiobotocore's aiohttp
transport, so the tests talk HTTP to a real ``ThreadedMotoServer`` bound to
127.0.0.1 on a free port, one per test session, with fake credentials and
``AWS_EC2_METADATA_DISABLED=true`` (no look-up of real credentials).

``STREAMSRC_TEST_AWS_ENDPOINT`` points the tests at a server the user runs
instead. When moto (with its server extra) is not installed the tests that
need it skip with the reason (a failure under ``STREAMSRC_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import Any

ENV_ENDPOINT = "STREAMSRC_TEST_AWS_ENDPOINT"
REGION = "us-east-1"

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Set in the test process before any client is made: no real account can be reached or billed."""


class MotoUnavailable(Exception):
    """moto's server cannot be started here (the reason says why)."""


_lock = threading.Lock()
_server: Any = None
_endpoint: str | None = None


_requests = threading.RLock()


def serialise_moto_requests() -> None:
    """Make the moto server of this process handle one request at a time.

    moto's ``TransactWriteItems`` deep-copies the tables it touches to roll
    back a cancelled transaction, and restores that copy: two requests on two
    server threads at once can fail (a table changed while copied) or undo
    each other's writes, which DynamoDB never does. One request at a time, as
    a real table behaves item by item. Idempotent; a no-op without moto.
    """
    if importlib.util.find_spec("moto") is None:
        return
    from moto.core.responses import BaseResponse

    original = BaseResponse.call_action
    if getattr(original, "serialised", False):
        return

    def call_action(self: Any) -> Any:
        with _requests:
            return original(self)

    call_action.serialised = True  # type: ignore[attr-defined]
    BaseResponse.call_action = call_action  # type: ignore[method-assign]


def use_fake_credentials() -> None:
    """Put the fake credentials in the environment (overriding any real ones)."""
    os.environ.update(FAKE_CREDENTIALS)


def session_endpoint() -> str:
    """The endpoint URL (``http://127.0.0.1:PORT``) of the session's moto server, started on first use."""
    global _server, _endpoint
    with _lock:
        if _endpoint is not None:
            return _endpoint
        use_fake_credentials()
        override = os.environ.get(ENV_ENDPOINT)
        if override:
            _endpoint = override
            return override
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            raise MotoUnavailable("moto's server is not installed (pip install 'moto[server]')")
        from moto.server import ThreadedMotoServer

        serialise_moto_requests()

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _server, _endpoint = server, f"http://{host}:{port}"
        return _endpoint


def stop_session_server() -> None:
    """Stop the session's moto server if this process started one."""
    global _server, _endpoint
    with _lock:
        if _server is not None:
            _server.stop()
        _server = _endpoint = None
