"""Kinesis Data Streams: publish recorded events (a sink pipe) and read them back (a source).

Each event travels as one Kinesis record: the UTF-8 JSON object of
:func:`~streamsrc.events.recorded_to_json` (``stream``, ``seq``,
``position``, ``type``, ``data``, ``metadata``, ``id``, ``time``), with the
event's stream as the partition key.

Ordering. Kinesis keeps the order of the records of one partition key, so
the events of one stream keep their order: the sink sends them in the order
it gets them, and every shard is read in order (a child shard only after its
parents). There is no order across streams: events of different streams may
be on different shards and come out interleaved in any way. Two caveats,
both inherent to ``PutRecords``:

* after a partial failure only the failed records are sent again, so a
  retried event can land after later events of its stream that went through
  the first time;
* a call that fails in a way that leaves its outcome unknown (a timeout) is
  sent again, so an event can be published twice.

Delivery is therefore at least once and per-stream order holds except across
such a retry: each event carries its ``stream`` and ``seq``, so a consumer
that must be exact can drop what it has seen (``seq`` at or below the last
one it applied for that stream) and notice a gap.

Both run on aiobotocore (asyncio only). Pass a client made with
:func:`~streamsrc.integrations.aws_client`::

    async with aws_client("kinesis", region="eu-west-1") as kinesis:
        await store.read_all().through(kinesis_sink(kinesis, "events")).drain()
        records = await kinesis_source(kinesis, "events", after=saved, live=False).to_list()
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from streamsrc.effect import RetryPolicy
from streamsrc.errors import EventTooLarge, InvalidEvent, StreamsrcError
from streamsrc.events import RecordedEvent, decode_json, encode_json, recorded_from_json, recorded_to_json
from streamsrc.integrations._aws import aws_client, error_code, require_asyncio
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
from streamsrc.stream import Stream

__all__ = [
    "MAX_PARTITION_KEY_LENGTH",
    "MAX_RECORDS_PER_CALL",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "Checkpoint",
    "FailedRecord",
    "PublishFailed",
    "Published",
    "RecordTooLarge",
    "ShardRecord",
    "advance",
    "aws_client",
    "batches",
    "encode_record",
    "kinesis_sink",
    "kinesis_source",
    "lineage_order",
    "partition_key",
]

MAX_RECORDS_PER_CALL = 500
"""Kinesis takes at most 500 records per ``PutRecords`` call ..."""

MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""... and at most 5 MiB per call (data and partition keys together) ..."""

MAX_RECORD_BYTES = 1024 * 1024
"""... and at most 1 MiB per record (its data and its partition key)."""

MAX_PARTITION_KEY_LENGTH = 256
"""A partition key has 1 to 256 characters."""

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "ServiceUnavailable",
        "KMSThrottlingException",
        "LimitExceededException",
    }
)
"""Errors of a whole ``PutRecords`` call worth sending the call again for."""

DEFAULT_PUT_RETRY = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=5.0)
"""Failed records are sent again up to 7 times, after full-jitter backoff (0.1 s, doubling, at most 5 s)."""


class RecordTooLarge(EventTooLarge):
    """An event's Kinesis record would be over Kinesis's 1 MiB limit; nothing of its batch was sent.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> huge = stored_event("log-1", 1, 1, "Dumped", '"' + "x" * 1_100_000 + '"', None, new_event_id(), 0)
    >>> encode_record(huge)
    Traceback (most recent call last):
    ...
    streamsrc.integrations.kinesis.RecordTooLarge: event ... of stream 'log-1' is ... bytes
    as a Kinesis record, over Kinesis's limit of 1048576 bytes per record
    """

    def __init__(self, stream: str, event_id: object, size: int, limit: int = MAX_RECORD_BYTES) -> None:
        super().__init__(event_id, size, limit)
        self.args = (
            f"event {event_id} of stream {stream!r} is {size} bytes as a Kinesis record, "
            f"over Kinesis's limit of {limit} bytes per record",
        )
        self.stream = stream


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """An event Kinesis did not take, with the error code and message of its last try.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> event = stored_event("order-1", 1, 7, "OrderPlaced", "{}", None, new_event_id(), 0)
    >>> refused = FailedRecord(event, "ProvisionedThroughputExceededException", "Rate exceeded for shard")
    >>> PublishFailed("events", [refused], attempts=5).failures[0].event.position
    7
    """

    event: RecordedEvent
    error_code: str
    message: str


class PublishFailed(StreamsrcError):
    """Some events were still refused by Kinesis when the retries ran out.

    The other events of the batch (and every earlier batch) are published;
    ``failures`` are the events that are not, in stream order.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> event = stored_event("order-1", 1, 7, "OrderPlaced", "{}", None, new_event_id(), 0)
    >>> refused = FailedRecord(event, "ProvisionedThroughputExceededException", "Rate exceeded for shard")
    >>> str(PublishFailed("events", [refused], attempts=5))
    "1 event(s) not published to Kinesis stream 'events' after 5 attempt(s):
    ProvisionedThroughputExceededException"
    """

    def __init__(self, stream_name: str, failures: Sequence[FailedRecord], attempts: int) -> None:
        codes = sorted({f.error_code for f in failures})
        super().__init__(
            f"{len(failures)} event(s) not published to Kinesis stream {stream_name!r} "
            f"after {attempts} attempt(s): {', '.join(codes)}"
        )
        self.stream_name = stream_name
        self.failures = tuple(failures)
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Published:
    """A batch the sink has published: the events, where each went, and the ``PutRecords`` calls it took.

    ``events[-1].position`` is how far the sink has got in a ``read_all``
    feed: save it as a checkpoint to resume publishing from there.

    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> fake_keys = dict(aws_access_key_id="x", aws_secret_access_key="x")  # moto takes any
    >>> local = dict(region="eu-west-1", endpoint_url=endpoint, **fake_keys)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {})])
    ...     async with aws_client("kinesis", **local) as kinesis:
    ...         await kinesis.create_stream(StreamName="orders-published", ShardCount=1)
    ...         sink = kinesis_sink(kinesis, "orders-published")
    ...         [published] = await store.read_all().through(sink).to_list()
    ...         print(published.events[-1].position, published.shard_ids, published.calls)
    >>> anyio.run(main, backend="asyncio")
    1 ('shardId-000000000000',) 1
    >>> server.stop()
    """

    events: tuple[RecordedEvent, ...]
    shard_ids: tuple[str, ...]
    sequence_numbers: tuple[str, ...]
    calls: int


def partition_key(stream: str) -> str:
    """The Kinesis partition key of a stream's events: the stream name itself, if it fits.

    A name longer than Kinesis's 256 characters becomes its SHA-256 in hex:
    still one key per stream, so per-stream order holds.

    >>> partition_key("order-42")
    'order-42'
    >>> len(partition_key("x" * 300))
    64
    """
    if len(stream) <= MAX_PARTITION_KEY_LENGTH:
        return stream
    return hashlib.sha256(stream.encode("utf-8")).hexdigest()


def encode_record(event: RecordedEvent) -> tuple[dict[str, Any], int]:
    """The ``PutRecords`` entry for ``event`` and its size as Kinesis counts it (data + partition key).

    Raises :class:`RecordTooLarge` when the size is over 1 MiB.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> event = stored_event("order-1", 1, 7, "OrderPlaced", '{"total": 12}', None, new_event_id(), 0)
    >>> entry, size = encode_record(event)
    >>> entry["PartitionKey"], size == len(entry["Data"]) + len("order-1")
    ('order-1', True)
    """
    key = partition_key(event.stream)
    data = encode_json(recorded_to_json(event)).encode("utf-8")
    size = len(data) + len(key.encode("utf-8"))
    if size > MAX_RECORD_BYTES:
        raise RecordTooLarge(event.stream, event.id, size)
    return {"Data": data, "PartitionKey": key}, size


def batches(
    sizes: Sequence[int],
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[tuple[int, int]]:
    """Cut records of the given ``sizes``, in order, into ``[start, stop)`` runs that fit one call.

    >>> batches([1] * 501)
    [(0, 500), (500, 501)]
    >>> batches([3, 3, 3, 3], max_bytes=7)
    [(0, 2), (2, 4)]
    """
    out: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_records or total + size > max_bytes):
            out.append((start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def kinesis_sink(
    client: Any,
    stream_name: str,
    *,
    retry: RetryPolicy = DEFAULT_PUT_RETRY,
    max_wait: float = 0.0,
    batch_size: int = MAX_RECORDS_PER_CALL,
) -> Callable[[Stream[RecordedEvent]], Stream[Published]]:
    """A pipe publishing events to the Kinesis data stream ``stream_name``: a :class:`Published` per batch.

    Events go out in ``PutRecords`` calls of at most ``batch_size`` (at
    most 500) records and 5 MiB, in the order they come; with
    ``max_wait=0`` each chunk of the upstream is sent as it comes (cut to
    the limits), with ``max_wait > 0`` up to ``batch_size`` events are
    gathered for up to that many seconds first. An event whose record is
    over 1 MiB fails the stream with :class:`RecordTooLarge` before any of
    its batch is sent. When Kinesis refuses some records of a call
    (``FailedRecordCount``, an ``ErrorCode`` per record), only those are
    sent again, after ``retry``'s backoff; a whole call that is throttled or
    fails inside AWS is sent again the same way. When the retries run out
    the stream fails with :class:`PublishFailed`. Use ``.drain()`` to run
    it as a plain sink. See the module's notes on ordering.

    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> fake_keys = dict(aws_access_key_id="x", aws_secret_access_key="x")  # moto takes any
    >>> local = dict(region="eu-west-1", endpoint_url=endpoint, **fake_keys)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {}), EventData("OrderPaid", {})])
    ...     async with aws_client("kinesis", **local) as kinesis:
    ...         await kinesis.create_stream(StreamName="orders-out", ShardCount=1)
    ...         sent = await store.read_all().through(kinesis_sink(kinesis, "orders-out")).to_list()
    ...         print([(len(batch.events), batch.calls) for batch in sent])
    >>> anyio.run(main, backend="asyncio")
    [(2, 1)]
    >>> server.stop()
    """
    if not 1 <= batch_size <= MAX_RECORDS_PER_CALL:
        raise ValueError(f"batch_size must be between 1 and {MAX_RECORDS_PER_CALL}")
    if max_wait < 0:
        raise ValueError("max_wait must be >= 0")

    async def publish_chunk(events: list[RecordedEvent]) -> list[Published]:
        require_asyncio("the Kinesis sink")
        encoded = [encode_record(e) for e in events]  # every size checked before anything is sent
        sizes = [size for _, size in encoded]
        out = []
        for start, stop in batches(sizes, batch_size):
            entries = [entry for entry, _ in encoded[start:stop]]
            out.append(await _put(client, stream_name, events[start:stop], entries, retry))
        return out

    def pipe(events: Stream[RecordedEvent]) -> Stream[Published]:
        groups = events.group_within(batch_size, max_wait) if max_wait > 0 else events.chunks()
        return groups.filter(bool).eval_map(publish_chunk).unchunks()

    return pipe


async def _put(
    client: Any,
    stream_name: str,
    events: Sequence[RecordedEvent],
    entries: list[dict[str, Any]],
    retry: RetryPolicy,
) -> Published:
    """Send one batch, then again only its failed records, until all are in or ``retry`` gives up."""
    n = len(entries)
    shard_ids: list[str] = [""] * n
    sequence_numbers: list[str] = [""] * n
    pending = list(range(n))
    attempt = calls = 0
    while True:
        calls += 1
        try:
            response = await client.put_records(StreamName=stream_name, Records=[entries[i] for i in pending])
        except Exception as exc:
            if error_code(exc) not in RETRYABLE_CODES or not retry.should_retry(attempt, exc):
                raise
            await anyio.sleep(retry.delay(attempt))
            attempt += 1
            continue
        failed: list[tuple[int, str, str]] = []
        for i, result in zip(pending, response["Records"], strict=True):
            code = result.get("ErrorCode")
            if code:
                failed.append((i, code, result.get("ErrorMessage", "")))
            else:
                shard_ids[i] = result["ShardId"]
                sequence_numbers[i] = result["SequenceNumber"]
        if not failed:
            return Published(tuple(events), tuple(shard_ids), tuple(sequence_numbers), calls)
        if attempt + 1 >= retry.max_attempts:
            failures = [FailedRecord(events[i], code, message) for i, code, message in failed]
            raise PublishFailed(stream_name, failures, calls)
        await anyio.sleep(retry.delay(attempt))
        attempt += 1
        pending = [i for i, _, _ in failed]


def kinesis_source(
    client: Any,
    stream_name: str,
    *,
    after: Checkpoint | None = None,
    live: bool = False,
    limit: int = 1000,
    poll: Poll = DEFAULT_POLL,
) -> Stream[ShardRecord]:
    """The events published to ``stream_name``, from every shard, after the checkpoint ``after``.

    Each :class:`ShardRecord` carries the event, its shard and its sequence
    number. A shard in ``after`` is read from just after its sequence number
    (``AFTER_SEQUENCE_NUMBER``), any other shard from its start
    (``TRIM_HORIZON``); so reading again from the checkpoint of the records
    handled (:func:`advance`) repeats none of them and skips none. Shards
    are read in turn, a child only after its parents (lineage on
    resharding), so each stream's events come in order; there is no order
    across streams. With ``live=False`` the stream ends when every shard
    has been read to its tip; with ``live=True`` it follows new records,
    waiting ``poll.min_delay`` (doubling up to ``poll.max_delay``) while
    nothing comes. ``limit`` is the most records per ``GetRecords`` call.

    Checkpoints are sequence numbers (decimal strings of up to 128 digits,
    wider than the integer checkpoints of :class:`~streamsrc.store.CheckpointStore`):
    keep them where the handled events' effects are written, ideally in the
    same transaction. A record that is not an event in this JSON format
    fails the stream with ``InvalidEvent`` naming its shard and sequence number.

    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> fake_keys = dict(aws_access_key_id="x", aws_secret_access_key="x")  # moto takes any
    >>> local = dict(region="eu-west-1", endpoint_url=endpoint, **fake_keys)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {}), EventData("OrderPaid", {})])
    ...     async with aws_client("kinesis", **local) as kinesis:
    ...         await kinesis.create_stream(StreamName="orders-in", ShardCount=1)
    ...         await store.read_all().through(kinesis_sink(kinesis, "orders-in")).drain()
    ...         records = await kinesis_source(kinesis, "orders-in").to_list()
    ...         print([(r.event.stream, r.event.seq, r.event.type) for r in records])
    ...         print(await kinesis_source(kinesis, "orders-in", after=advance({}, records)).to_list())
    >>> anyio.run(main, backend="asyncio")
    [('order-1', 1, 'OrderPlaced'), ('order-1', 2, 'OrderPaid')]
    []
    >>> server.stop()
    """
    if not 1 <= limit <= 10_000:
        raise ValueError("limit must be between 1 and 10000")
    return read_shards(_KinesisShards(client, stream_name), after, live=live, limit=limit, poll=poll)


class _KinesisShards:
    """The :class:`~streamsrc.integrations._shards.ShardApi` of a Kinesis data stream."""

    service = "Kinesis"
    throttled = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException"})

    def __init__(self, client: Any, stream_name: str) -> None:
        self.client = client
        self.stream_name = stream_name

    async def list_shards(self) -> list[Shard]:
        shards: list[Shard] = []
        response = await self.client.list_shards(StreamName=self.stream_name)
        while True:
            for s in response["Shards"]:
                parents = tuple(p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
                closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
                shards.append(Shard(s["ShardId"], parents, closed))
            token = response.get("NextToken")
            if not token:
                return shards
            response = await self.client.list_shards(NextToken=token)

    async def shard_iterator(self, shard_id: str, after: str | None) -> str:
        if after is None:
            response = await self.client.get_shard_iterator(
                StreamName=self.stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        else:
            response = await self.client.get_shard_iterator(
                StreamName=self.stream_name,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=after,
            )
        iterator: str = response["ShardIterator"]
        return iterator

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> Page:
        response = await self.client.get_records(ShardIterator=iterator, Limit=limit)
        raw = response["Records"]
        records = [ShardRecord(_decode(r, shard_id), shard_id, r["SequenceNumber"]) for r in raw]
        return Page(
            records,
            raw[-1]["SequenceNumber"] if raw else None,
            response.get("NextShardIterator"),
            response.get("MillisBehindLatest", 0) == 0,
        )


def _decode(record: dict[str, Any], shard_id: str) -> RecordedEvent:
    try:
        return recorded_from_json(decode_json(record["Data"]))
    except (ValueError, InvalidEvent) as exc:
        raise InvalidEvent(
            f"Kinesis record {record.get('SequenceNumber')} of {shard_id} is not a recorded event: {exc}"
        ) from exc
