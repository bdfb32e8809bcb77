"""What the AWS integrations share: the asyncio check, clients, error codes, shard checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["Malformed", "Skipped", "aws_client", "error_code", "require_asyncio"]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record that is not an event (a ``MODIFY`` or ``REMOVE``, an item that is not an event): handled.

    >>> from streamsrc.integrations.aws_lambda import decode_record
    >>> decode_record({"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "7", "Keys": {}}})
    ('7', Skipped(reason='MODIFY: not a new event'))
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that should hold an event and cannot be read: a failure of that record.

    >>> from streamsrc.integrations.aws_lambda import decode_record
    >>> decode_record({"eventName": "INSERT", "dynamodb": {"SequenceNumber": "8", "Keys": {}}})
    ('8', Malformed(reason="DynamoDB Streams record 8 has no NewImage: the table's stream must show new images
    (NEW_IMAGE or NEW_AND_OLD_IMAGES)"))
    """

    reason: str


def require_asyncio(what: str) -> None:
    """Raise ``RuntimeError`` unless this thread runs an asyncio event loop (aiobotocore needs it).

    anyio names the library that runs the loop, so no other package (sniffio) is needed:

    >>> import anyio
    >>> async def check() -> None:
    ...     try:
    ...         require_asyncio("the Kinesis sink")
    ...     except RuntimeError as error:
    ...         print(error)
    >>> anyio.run(check, backend="asyncio")
    >>> anyio.run(check, backend="trio")
    the Kinesis sink runs on aiobotocore, which supports asyncio only (running on trio); run it with ...
    >>> require_asyncio("the Kinesis sink")  # outside any event loop
    Traceback (most recent call last):
    RuntimeError: the Kinesis sink runs on aiobotocore, ... (running on no async library); ...
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return
    try:
        # anyio's backend classes live in anyio._backends._asyncio, anyio._backends._trio, ...
        library = anyio.lowlevel.current_token().backend_class.__module__.rpartition("._")[2]
    except RuntimeError:  # anyio.NoEventLoopError: no loop at all
        library = "no async library"
    raise RuntimeError(
        f"{what} runs on aiobotocore, which supports asyncio only (running on {library}); "
        "run it with anyio.run(..., backend='asyncio')"
    )


def aws_client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    **options: Any,
) -> AbstractAsyncContextManager[Any]:
    """An aiobotocore client for ``service`` (``"kinesis"``, ``"dynamodbstreams"``, ...), for ``async with``.

    Credentials come from the usual places (environment, profile, role);
    ``endpoint_url`` points it at another server (moto, LocalStack).
    ``options`` go to aiobotocore's ``create_client`` unchanged.

    >>> import anyio
    >>> async def main() -> None:
    ...     local = "http://127.0.0.1:4566"  # LocalStack, say; leave it out for AWS itself
    ...     async with aws_client("kinesis", region="eu-west-1", endpoint_url=local) as kinesis:
    ...         print(kinesis.meta.region_name, kinesis.meta.endpoint_url)  # no request made yet
    >>> anyio.run(main, backend="asyncio")
    eu-west-1 http://127.0.0.1:4566
    """
    try:
        from aiobotocore.session import get_session
    except ImportError as exc:  # pragma: no cover - the aws extra is missing
        raise ImportError("the AWS integrations need aiobotocore: pip install 'streamsrc[aws]'") from exc
    return get_session().create_client(  # type: ignore[no-any-return]
        service, region_name=region, endpoint_url=endpoint_url, **options
    )


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``"ExpiredIteratorException"``, ...) or ``None``."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else None
