"""The DynamoDB store's client and tables: making the aiobotocore client, creating and checking tables."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
)

from streamsrc.errors import IncompatibleSchema, StoreUnavailable
from streamsrc.store._url import redact_url
from streamsrc.store.dynamodb._items import DEFAULT_ORDER, KEYS, MODE_KEY, table_names
from streamsrc.store.dynamodb._settings import Settings

__all__ = [
    "CONNECTION_ERRORS",
    "DRIVER_ERRORS",
    "check_tables",
    "create_missing_tables",
    "create_tables",
    "describe",
    "error_code",
    "settle_order",
    "store_client",
]

CONNECTION_ERRORS = (
    HTTPClientError,  # connect and read timeouts, closed connections, unreachable endpoints
    ConnectionError,
    aiohttp.ClientError,
    OSError,
    asyncio.TimeoutError,
)
"""Errors of a request that never got an answer: worth trying again."""
DRIVER_ERRORS = (ClientError, BotoCoreError, *CONNECTION_ERRORS)
"""Every error of the driver: what the store reports as ``StoreUnavailable``."""


def error_code(exc: ClientError) -> str:
    """The error code DynamoDB answered with (``ConditionalCheckFailedException``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe(exc: BaseException) -> str:
    """How an error is told in a message: its type and text."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def store_client(settings: Settings) -> Any:
    """An aiobotocore DynamoDB client (an async context manager) configured as the store's: bounded
    timeouts and no retries of botocore's own (the store retries what is worth retrying).

    Nothing is sent before the client is entered: ``async with store_client(settings) as client:``.

    >>> import inspect
    >>> list(inspect.signature(store_client).parameters)
    ['settings']
    """
    config = Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        retries={"total_max_attempts": 1},
        max_pool_connections=50,
    )
    global _session
    if _session is None:  # one per process: it caches the service model every client loads
        _session = get_session()
    return _session.create_client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
    )


_session: Any = None


def _definition(name: str, keys: list[tuple[str, str]], streams: bool) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": attr, "KeyType": "HASH" if k == 0 else "RANGE"}
            for k, (attr, _) in enumerate(keys)
        ],
        "AttributeDefinitions": [{"AttributeName": attr, "AttributeType": kind} for attr, kind in keys],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if streams:
        definition["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    return definition


async def _describe_table(client: Any, name: str) -> dict[str, Any] | None:
    try:
        response = await client.describe_table(TableName=name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    table: dict[str, Any] = response["Table"]
    return table


def _check_keys(table: Mapping[str, Any], role: str, shown: str) -> None:
    want = KEYS[role]
    schema = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    expected = {attr: "HASH" if k == 0 else "RANGE" for k, (attr, _) in enumerate(want)}
    if schema != expected or any(types.get(attr) != kind for attr, kind in want):
        raise IncompatibleSchema(
            f"table {table.get('TableName')!r} of {shown} has keys {schema}, not streamsrc's {expected}"
        )


async def create_missing_tables(client: Any, settings: Settings, shown: str) -> list[str]:
    """Create the missing tables (all at once), wait until all are active; the names of those it created.

    Tables that exist already are checked (their keys must be streamsrc's) and kept.
    """

    async def create(role: str, name: str) -> str | None:
        try:
            # The log table's stream, in order=stream mode, shows the index: projections on Lambda.
            scale = (settings.order or DEFAULT_ORDER) == "stream"
            streams = settings.streams and (role == "events" or (role == "log" and scale))
            response = await client.create_table(**_definition(name, KEYS[role], streams))
            table: dict[str, Any] | None = response.get("TableDescription")
            made: str | None = name
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # it exists (or is being made): fine
                raise
            table, made = await _describe_table(client, name), None
            if table is not None:
                _check_keys(table, role, shown)
        for _ in range(600):
            if table is not None and table.get("TableStatus") == "ACTIVE":
                return made
            await asyncio.sleep(0.2)
            table = await _describe_table(client, name)
        raise StoreUnavailable(f"table {name!r} of {shown} did not become active")

    try:
        made = await asyncio.gather(
            *(create(role, name) for role, name in table_names(settings.table).items())
        )
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"cannot create the tables of {shown}: {describe(exc)}") from exc
    return [name for name in made if name is not None]


async def settle_order(client: Any, settings: Settings, shown: str, made: bool) -> str:
    """The table's order (``stream`` or ``global``), recorded in its mode item.

    A log table made just now (``made``) records the URL's order (or
    :data:`DEFAULT_ORDER`); one without a mode item was made before the modes
    existed and is ``global``. A URL asking for the other order is refused
    with ``IncompatibleSchema`` naming both: the two keep different items.
    """
    log = table_names(settings.table)["log"]
    try:
        response = await client.get_item(TableName=log, Key=MODE_KEY, ConsistentRead=True)
        item = response.get("Item")
        if item is None and made:
            wanted = settings.order or DEFAULT_ORDER
            try:
                await client.put_item(
                    TableName=log,
                    Item={**MODE_KEY, "order": {"S": wanted}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
                item = {"order": {"S": wanted}}
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                response = await client.get_item(TableName=log, Key=MODE_KEY, ConsistentRead=True)
                item = response.get("Item")
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"cannot open {shown}: {describe(exc)}") from exc
    order = "global" if item is None else str(item.get("order", {}).get("S", "global"))
    if settings.order is not None and settings.order != order:
        raise IncompatibleSchema(
            f"the tables of {shown} were made in order={order} mode, and the URL asks for "
            f"order={settings.order}: open them with order={order} (or without order=), or copy the "
            "events to new tables (streamsrc.migrate.copy)"
        )
    return order


async def check_tables(client: Any, settings: Settings, shown: str) -> None:
    """Check that every table exists with streamsrc's keys (``StoreUnavailable``, ``IncompatibleSchema``)."""

    async def check(role: str, name: str) -> None:
        table = await _describe_table(client, name)
        if table is None:
            raise StoreUnavailable(
                f"table {name!r} of {shown} does not exist: run "
                f"`streamsrc dynamodb create-tables '{shown}'` or open the store with create=true"
            )
        _check_keys(table, role, shown)

    try:
        await asyncio.gather(*(check(role, name) for role, name in table_names(settings.table).items()))
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"cannot open {shown}: {describe(exc)}") from exc


async def create_tables(url: str) -> list[str]:
    """Create the tables of the store at ``url`` that do not exist yet (DynamoDB Streams on for the
    events); the names of those it created. Safe to run again: existing tables are checked, kept.

    Runs on asyncio (aiobotocore). From a shell:
    ``streamsrc dynamodb create-tables 'dynamodb://TABLE?region=...'``.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> url = "dynamodb://doc-tables?region=eu-west-1&endpoint_url=http://{}:{}".format(*server.get_host_and_port())
    >>> async def main() -> None:
    ...     print(await create_tables(url))
    ...     print(await create_tables(url))  # again: nothing to do
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):  # moto takes any
    ...     anyio.run(main, backend="asyncio")
    ['doc-tables', 'doc-tables.log', 'doc-tables.snapshots', 'doc-tables.checkpoints']
    []
    >>> server.stop()
    """
    settings = Settings.from_url(url)
    shown = redact_url(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StoreUnavailable(f"{shown}: the DynamoDB store (aiobotocore) runs on asyncio only") from None
    try:
        async with store_client(settings) as client:
            made = await create_missing_tables(client, settings, shown)
            await settle_order(client, settings, shown, table_names(settings.table)["log"] in made)
            return made
    except (NoRegionError, NoCredentialsError) as exc:
        raise StoreUnavailable(f"cannot create the tables of {shown}: {describe(exc)}") from exc
