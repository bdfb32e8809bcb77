"""What the AWS integrations share: the asyncio check, clients, error codes, shard checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import sniffio

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
    """Raise ``RuntimeError`` unless the running async library is asyncio (aiobotocore needs it)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no async library"
    if library != "asyncio":
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
