"""The events of a DynamoDB events table, read from the table's DynamoDB stream.

The DynamoDB store (:mod:`streamsrc.store.dynamodb`) writes one item per
event (hash key ``stream``, range key ``seq``) in a table whose stream shows
new images. :func:`dynamodb_stream_source` reads that stream: it lists the
shards, reads parents before their children (the lineage DynamoDB reports
when it splits a shard), each shard from its checkpoint, and decodes each
``INSERT``'s ``NewImage`` with the store's own ``event_from_item``.

Ordering: DynamoDB Streams records the changes of one partition key (here,
one event stream) in one shard at a time, in the order they were written, and
the reader finishes a parent shard before it starts its children; so the
events of each stream come in ``seq`` order. There is **no global order**: shards are read
in turn and events of different streams come interleaved in any way, so
``position`` does not increase along the source. A consumer that needs the
global order reads the store's ``read_all``.

Records that are not new events are skipped: ``MODIFY`` and ``REMOVE``
(events are never changed; a TTL expiry or an edit by hand is not an event)
and ``INSERT`` of items that are not events. An ``INSERT`` of an item that
looks like an event but does not decode fails the stream with
``InvalidEvent``, naming the record.

It runs on aiobotocore (asyncio only), with a ``dynamodbstreams`` client::

    async with aws_client("dynamodbstreams", region="eu-west-1") as streams:
        async with dynamodb_stream_source(streams, table="events", live=True).open() as records:
            async for record in records:
                ...  # record.event; save advance(checkpoint, [record]) when handled
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamsrc.errors import InvalidEvent
from streamsrc.events import RecordedEvent
from streamsrc.integrations._aws import Malformed, Skipped, aws_client, require_asyncio
from streamsrc.integrations._shards import (
    DEFAULT_POLL,
    Checkpoint,
    Page,
    Shard,
    ShardRecord,
    advance,
    lineage_order,
    read_shards,
)
from streamsrc.projections import Poll
from streamsrc.store.dynamodb import event_from_item  # the codec alone: no AWS driver
from streamsrc.stream import Stream

__all__ = [
    "Checkpoint",
    "Malformed",
    "ShardRecord",
    "Skipped",
    "advance",
    "aws_client",
    "decode_image",
    "dynamodb_stream_source",
    "latest_stream_arn",
    "lineage_order",
]


def _claims_event(image: Mapping[str, Any]) -> bool:
    """Whether an item says it is an event (it has ``type`` and ``data``): then it must decode."""
    return "type" in image and "data" in image


def decode_image(image: Mapping[str, Any], what: str) -> RecordedEvent | Skipped | Malformed:
    """The event in a stream record's new image, decoded by the DynamoDB store's ``event_from_item``.

    Gives :class:`Skipped` for an item that is not an event (no ``type`` and
    ``data``: not written by streamsrc), :class:`Malformed` (saying ``what``
    failed and why) for an event item that does not decode.

    >>> decode_image({"pk": {"S": "snapshot#user-1"}}, "record 7")
    Skipped(reason='not an event item')
    >>> image = {
    ...     "stream": {"S": "order-1"}, "seq": {"N": "1"}, "position": {"N": "7"}, "type": {"S": "Placed"},
    ...     "data": {"S": "{}"}, "id": {"S": "00000000-0000-0000-0000-000000000001"}, "time": {"N": "0"}}
    >>> decode_image(image, "record 8").position
    7
    """
    if not _claims_event(image):
        return Skipped("not an event item")
    try:
        return event_from_item(image)
    except ValueError as exc:
        return Malformed(f"{what} is an event item that does not decode: {exc}")


async def latest_stream_arn(client: Any, table: str) -> str:
    """The ARN of ``table``'s latest DynamoDB stream (a dynamodbstreams client); ``LookupError`` if none.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.store.dynamodb import create_tables
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> async def main() -> None:
    ...     await create_tables(f"dynamodb://doc-arns?region=eu-west-1&endpoint_url={endpoint}")
    ...     async with aws_client("dynamodbstreams", region="eu-west-1", endpoint_url=endpoint) as streams:
    ...         print(await latest_stream_arn(streams, "doc-arns"))
    ...         try:
    ...             await latest_stream_arn(streams, "doc-arns.snapshots")  # made without a stream
    ...         except LookupError as error:
    ...             print(error)
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):
    ...     anyio.run(main, backend="asyncio")
    arn:aws:dynamodb:eu-west-1:123456789012:table/doc-arns/stream/...
    table 'doc-arns.snapshots' has no DynamoDB stream: enable one with NEW_IMAGE
    >>> server.stop()
    """
    arns: list[tuple[str, str]] = []
    request: dict[str, Any] = {"TableName": table}
    while True:
        response = await client.list_streams(**request)
        arns += [(s.get("StreamLabel", ""), s["StreamArn"]) for s in response.get("Streams", [])]
        last = response.get("LastEvaluatedStreamArn")
        if not last:
            break
        request["ExclusiveStartStreamArn"] = last
    if not arns:
        raise LookupError(f"table {table!r} has no DynamoDB stream: enable one with NEW_IMAGE")
    return max(arns)[1]  # labels are creation times: the newest stream


def dynamodb_stream_source(
    client: Any,
    *,
    table: str | None = None,
    stream_arn: str | None = None,
    after: Checkpoint | None = None,
    live: bool = False,
    limit: int = 1000,
    poll: Poll = DEFAULT_POLL,
) -> Stream[ShardRecord]:
    """The events written to a DynamoDB events table, read from its stream, after the checkpoint ``after``.

    Name the stream by ``stream_arn``, or by ``table`` (its newest stream).
    Each :class:`ShardRecord` carries the event, its shard and its sequence
    number; a shard in ``after`` is read from just after its sequence number
    (``AFTER_SEQUENCE_NUMBER``), any other from its start
    (``TRIM_HORIZON``), so reading again from the checkpoint of the records
    handled (:func:`advance`) repeats none and skips none (records are kept
    24 hours: a checkpoint older than that fails with AWS's
    ``TrimmedDataAccessException``). A child shard is read only after its
    parents. With ``live=False`` the stream ends when a read of every open
    shard returns nothing; with ``live=True`` it follows new writes, waiting
    ``poll.min_delay`` (doubling up to ``poll.max_delay``) while nothing
    comes. ``limit`` is the most records per ``GetRecords`` call (at most
    1000). The events of each stream come in order; see the module's notes.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store import open_store
    >>> from streamsrc.store.dynamodb import create_tables
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> url = f"dynamodb://doc-orders?region=eu-west-1&endpoint_url={endpoint}"
    >>> async def main() -> None:
    ...     await create_tables(url)
    ...     async with open_store(url) as store:
    ...         await store.append("order-1", [EventData("OrderPlaced", {}), EventData("OrderPaid", {})])
    ...     async with aws_client("dynamodbstreams", region="eu-west-1", endpoint_url=endpoint) as streams:
    ...         records = await dynamodb_stream_source(streams, table="doc-orders").to_list()
    ...         print([(r.event.stream, r.event.seq, r.event.type) for r in records])
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):
    ...     anyio.run(main, backend="asyncio")
    [('order-1', 1, 'OrderPlaced'), ('order-1', 2, 'OrderPaid')]
    >>> server.stop()
    """
    if (table is None) == (stream_arn is None):
        raise ValueError("name the stream by table= or by stream_arn=, not both")
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    return read_shards(_DynamoDBShards(client, table, stream_arn), after, live=live, limit=limit, poll=poll)


class _DynamoDBShards:
    """The :class:`~streamsrc.integrations._shards.ShardApi` of a DynamoDB stream."""

    service = "DynamoDB Streams"
    throttled = frozenset({"LimitExceededException", "ProvisionedThroughputExceededException"})

    def __init__(self, client: Any, table: str | None, stream_arn: str | None) -> None:
        self.client = client
        self.table = table
        self.stream_arn = stream_arn

    async def arn(self) -> str:
        if self.stream_arn is None:
            require_asyncio("the DynamoDB Streams source")
            assert self.table is not None
            self.stream_arn = await latest_stream_arn(self.client, self.table)
        return self.stream_arn

    async def list_shards(self) -> list[Shard]:
        arn = await self.arn()
        shards: list[Shard] = []
        request: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = (await self.client.describe_stream(**request))["StreamDescription"]
            for s in description.get("Shards", []):
                parent = s.get("ParentShardId")
                closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
                shards.append(Shard(s["ShardId"], (parent,) if parent else (), closed))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            request["ExclusiveStartShardId"] = last

    async def shard_iterator(self, shard_id: str, after: str | None) -> str:
        arn = await self.arn()
        if after is None:
            response = await self.client.get_shard_iterator(
                StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        else:
            response = await self.client.get_shard_iterator(
                StreamArn=arn,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=after,
            )
        iterator: str = response["ShardIterator"]
        return iterator

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> Page:
        response = await self.client.get_records(ShardIterator=iterator, Limit=limit)
        raw = response.get("Records", [])
        records: list[ShardRecord] = []
        for r in raw:
            body = r.get("dynamodb", {})
            sequence = body["SequenceNumber"]
            image = body.get("NewImage")
            if r.get("eventName") != "INSERT":
                continue  # not a new event
            if not isinstance(image, Mapping):
                raise InvalidEvent(
                    f"DynamoDB Streams record {sequence} of {shard_id} has no NewImage: "
                    "the table's stream must show new images (NEW_IMAGE or NEW_AND_OLD_IMAGES)"
                )
            decoded = decode_image(image, f"DynamoDB Streams record {sequence} of {shard_id}")
            if isinstance(decoded, Malformed):
                raise InvalidEvent(decoded.reason)
            if isinstance(decoded, RecordedEvent):
                records.append(ShardRecord(decoded, shard_id, sequence))
        return Page(
            records,
            raw[-1]["dynamodb"]["SequenceNumber"] if raw else None,
            response.get("NextShardIterator"),
            caught_up=not raw,
        )
