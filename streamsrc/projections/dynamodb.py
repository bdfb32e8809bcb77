"""Leases of partitioned projections kept in a DynamoDB store's checkpoints table.

:class:`DynamoDBLeases` lets workers on several machines share a projection's
partitions (see :class:`~streamsrc.projections.ProjectionWorker`) when the
store is DynamoDB. Leases and worker heartbeats are items of the store's
``checkpoints`` table, under keys that no checkpoint can have (they start with
a NUL character, which no checkpoint name holds); every change is one
conditional write, so two workers never both take a lease, and each new owner
gets a larger fencing token.

The fencing token guards what the read model checks. A read model in
PostgreSQL or SQLite checks its *own* lease tables in its transaction; with
leases in DynamoDB, a callback read model checks the token just before it
moves its checkpoint (a compare-and-set: at least once, as callback models
are). Listing leases and workers scans the checkpoints table: a table of
checkpoints and leases is small.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from streamsrc.errors import StoreUnavailable
from streamsrc.projections._leases import Fence, Lease
from streamsrc.store import redact_url
from streamsrc.store.dynamodb import Settings, store_client, table_names

__all__ = ["DynamoDBLeases"]

_LEASE = "\x00lease\x00"
_MEMBER = "\x00member\x00"


class DynamoDBLeases:
    """Leases (with fencing tokens) and worker heartbeats in a DynamoDB store's checkpoints table.

    Open it on the store's URL, as an async context manager (``async with
    DynamoDBLeases(url) as leases:``), and give it to the workers; it opens
    no connection before that:

    >>> DynamoDBLeases("dynamodb://events?region=eu-west-1&endpoint_url=http://localhost:8000")
    <DynamoDBLeases dynamodb://events?region=eu-west-1&endpoint_url=http://localhost:8000>
    >>> DynamoDBLeases("dynamodb://events?region=eu-west-1").table
    'events.checkpoints'
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings = Settings.from_url(url)
        self.table = table_names(self.settings.table)["checkpoints"]
        self._client: Any = None
        self._stack = AsyncExitStack()

    def __repr__(self) -> str:
        return f"<DynamoDBLeases {redact_url(self.url)}>"

    async def __aenter__(self) -> DynamoDBLeases:
        self._client = await self._stack.enter_async_context(store_client(self.settings))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client = None
        await self._stack.aclose()

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """One call; ``None`` when its condition failed; ``StoreUnavailable`` for every other error."""
        if self._client is None:
            raise StoreUnavailable(f"{self!r} is not open")
        try:
            result: dict[str, Any] = await getattr(self._client, method)(TableName=self.table, **kwargs)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return None
            raise StoreUnavailable(f"{method} on {self!r} failed: {type(exc).__name__}: {exc}") from exc
        return result

    async def _get(self, key: str) -> dict[str, Any] | None:
        found = await self._call("get_item", Key={"name": {"S": key}}, ConsistentRead=True)
        return None if found is None else found.get("Item")

    async def acquire(self, projection: str, partition: int, owner: str, ttl: float) -> Fence | None:
        """Take the lease if it is free, expired or ``owner``'s already (see ``Leases.acquire``)."""
        key = f"{_LEASE}{projection}\x00{partition}"
        now = time.time()
        item = await self._get(key)
        token = int(item["token"]["N"]) if item else 0
        holder = item.get("owner", {}).get("S") if item else None
        expires = float(item["expires"]["N"]) if item else 0.0
        if holder == owner and expires > now:
            new_token = token
        elif holder is None or expires <= now:
            new_token = token + 1
        else:
            return None
        condition = (
            "attribute_not_exists(#n)" if item is None else "#t = :token AND #e = :expires"
        )  # nobody changed it since it was read
        values = {} if item is None else {":token": {"N": str(token)}, ":expires": item["expires"]}
        put = {
            "name": {"S": key},
            "owner": {"S": owner},
            "expires": {"N": repr(now + ttl)},
            "token": {"N": str(new_token)},
        }
        names = {"#n": "name"} if item is None else {"#t": "token", "#e": "expires"}
        done = await self._call(
            "put_item",
            Item=put,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            **({"ExpressionAttributeValues": values} if values else {}),
        )
        return None if done is None else Fence(projection, partition, new_token, self)

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        """Push the lease's expiry ``ttl`` seconds ahead; ``False`` if it is no longer ``fence``'s."""
        done = await self._call(
            "update_item",
            Key={"name": {"S": f"{_LEASE}{fence.projection}\x00{fence.partition}"}},
            UpdateExpression="SET #e = :expires",
            ConditionExpression="#t = :token AND #o = :owner",
            ExpressionAttributeNames={"#e": "expires", "#t": "token", "#o": "owner"},
            ExpressionAttributeValues={
                ":expires": {"N": repr(time.time() + ttl)},
                ":token": {"N": str(fence.token)},
                ":owner": {"S": owner},
            },
        )
        return done is not None

    async def release(self, fence: Fence, owner: str) -> None:
        """Give the lease up if it is still ``fence``'s; its token stays."""
        await self._call(
            "update_item",
            Key={"name": {"S": f"{_LEASE}{fence.projection}\x00{fence.partition}"}},
            UpdateExpression="REMOVE #o SET #e = :zero",
            ConditionExpression="#t = :token AND #o = :owner",
            ExpressionAttributeNames={"#e": "expires", "#t": "token", "#o": "owner"},
            ExpressionAttributeValues={
                ":zero": {"N": "0"},
                ":token": {"N": str(fence.token)},
                ":owner": {"S": owner},
            },
        )

    async def holds(self, fence: Fence) -> bool:
        """Whether ``fence`` is still the partition's token."""
        item = await self._get(f"{_LEASE}{fence.projection}\x00{fence.partition}")
        return item is not None and int(item["token"]["N"]) == fence.token

    async def _scan(self, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page = await self._call(
                "scan",
                FilterExpression="begins_with(#n, :prefix)",
                ExpressionAttributeNames={"#n": "name"},
                ExpressionAttributeValues={":prefix": {"S": prefix}},
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            assert page is not None  # a scan has no condition to fail
            items += page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    async def leases(self, projection: str) -> list[Lease]:
        """Every partition's lease of ``projection`` ever claimed, by partition."""
        prefix = f"{_LEASE}{projection}\x00"
        found = [
            Lease(
                projection,
                int(item["name"]["S"][len(prefix) :]),
                item.get("owner", {}).get("S"),
                float(item["expires"]["N"]),
                int(item["token"]["N"]),
            )
            for item in await self._scan(prefix)
        ]
        return sorted(found, key=lambda lease: lease.partition)

    async def heartbeat(self, projection: str, owner: str, ttl: float) -> list[str]:
        """Say ``owner`` works on ``projection`` for ``ttl`` seconds; the live workers, sorted."""
        now = time.time()
        prefix = f"{_MEMBER}{projection}\x00"
        item = {"name": {"S": prefix + owner}, "expires": {"N": repr(now + ttl)}}
        await self._call("put_item", Item=item)
        live = [
            found["name"]["S"][len(prefix) :]
            for found in await self._scan(prefix)
            if float(found["expires"]["N"]) > now
        ]
        return sorted(live)

    async def leave(self, projection: str, owner: str) -> None:
        """Say ``owner`` stopped working on ``projection``."""
        await self._call("delete_item", Key={"name": {"S": f"{_MEMBER}{projection}\x00{owner}"}})
