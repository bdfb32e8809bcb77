"""The DynamoDB Streams source: the events written through the DynamoDB store, read back from the table's
stream on moto (checkpoints, live reading, records that are not events), and shard lineage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from streamsrc.errors import InvalidEvent
from streamsrc.events import EventData, RecordedEvent
from streamsrc.integrations._shards import Page, Shard, ShardRecord, read_shards
from streamsrc.integrations.dynamodb_streams import (
    advance,
    aws_client,
    dynamodb_stream_source,
    latest_stream_arn,
    lineage_order,
)
from streamsrc.projections import Poll
from streamsrc.store import EventStore, open_store

pytestmark = pytest.mark.anyio

FAST = Poll(min_delay=0.01, max_delay=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiobotocore runs on asyncio only


@pytest.fixture
async def table(moto_endpoint: str) -> AsyncIterator[tuple[str, EventStore]]:
    name = f"events-{uuid.uuid4().hex[:10]}"
    # order=global: the events table's records carry the positions these tests compare with read_all's.
    url = f"dynamodb://{name}?region=us-east-1&endpoint_url={moto_endpoint}&create=true&order=global"
    async with open_store(url) as store:
        yield name, store


@pytest.fixture
async def streams(moto_endpoint: str) -> AsyncIterator[Any]:
    async with aws_client("dynamodbstreams", region="us-east-1", endpoint_url=moto_endpoint) as client:
        yield client


async def append_round(store: EventStore, streams: int, events_each: int, tag: str) -> None:
    for s in range(streams):
        batch = [EventData("Noted", {"tag": tag, "i": i}) for i in range(events_each)]
        (await store.append(f"note-{s}", batch)).unwrap()


def assert_per_stream_order(read: list[RecordedEvent]) -> None:
    last: dict[str, int] = {}
    for e in read:
        assert e.seq == last.get(e.stream, 0) + 1, f"{e.stream} #{e.seq} after #{last.get(e.stream, 0)}"
        last[e.stream] = e.seq


async def test_the_source_gives_every_event_written_in_stream_order(
    table: tuple[str, EventStore], streams: Any
) -> None:
    name, store = table
    await append_round(store, streams=3, events_each=4, tag="a")
    read = await dynamodb_stream_source(streams, table=name, poll=FAST).to_list()
    got = [r.event for r in read]
    assert sorted(got, key=lambda e: e.position) == await store.read_all().to_list()  # equal, field by field
    assert_per_stream_order(got)
    assert all(r.sequence_number.isdigit() for r in read)
    assert (
        await dynamodb_stream_source(streams, stream_arn=await latest_stream_arn(streams, name), poll=FAST)
        .map(lambda r: r.event)
        .to_list()
        == got
    )


async def test_reading_resumes_after_the_checkpoint_with_no_loss_and_no_repeat(
    table: tuple[str, EventStore], streams: Any
) -> None:
    name, store = table
    await append_round(store, streams=2, events_each=5, tag="first")
    taken = await dynamodb_stream_source(streams, table=name, poll=FAST, limit=3).take(4).to_list()
    checkpoint = advance({}, taken)
    await append_round(store, streams=2, events_each=3, tag="later")
    rest = await dynamodb_stream_source(streams, table=name, after=checkpoint, poll=FAST, limit=3).to_list()
    seen = [r.event for r in taken + rest]
    assert sorted(e.position for e in seen) == list(range(1, 17))  # every event once
    assert_per_stream_order(seen)
    again = await dynamodb_stream_source(
        streams, table=name, after=advance(checkpoint, rest), poll=FAST
    ).to_list()
    assert again == []


async def test_live_reading_follows_new_appends(table: tuple[str, EventStore], streams: Any) -> None:
    name, store = table
    await append_round(store, streams=1, events_each=2, tag="before")
    got: list[ShardRecord] = []

    async def follow() -> None:
        got.extend(await dynamodb_stream_source(streams, table=name, live=True, poll=FAST).take(5).to_list())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.1)
            await append_round(store, streams=1, events_each=3, tag="after")
    assert [(r.event.seq, r.event.data["tag"]) for r in got] == [
        (1, "before"),
        (2, "before"),
        (3, "after"),
        (4, "after"),
        (5, "after"),
    ]


async def test_changes_that_are_not_new_events_are_skipped(
    table: tuple[str, EventStore], streams: Any, moto_endpoint: str
) -> None:
    name, store = table
    await append_round(store, streams=1, events_each=3, tag="a")
    async with aws_client("dynamodb", region="us-east-1", endpoint_url=moto_endpoint) as dynamodb:
        key = {"stream": {"S": "note-0"}, "seq": {"N": "2"}}
        await dynamodb.update_item(  # a MODIFY (an edit by hand)
            TableName=name,
            Key=key,
            UpdateExpression="SET #t = :t",
            ExpressionAttributeNames={"#t": "type"},
            ExpressionAttributeValues={":t": {"S": "Edited"}},
        )
        first = {"stream": {"S": "note-0"}, "seq": {"N": "1"}}
        await dynamodb.delete_item(TableName=name, Key=first)  # a REMOVE
        await dynamodb.put_item(TableName=name, Item={"stream": {"S": "not-an-event"}, "seq": {"N": "1"}})
    read = await dynamodb_stream_source(streams, table=name, poll=FAST).to_list()
    assert [(r.event.seq, r.event.type) for r in read] == [(1, "Noted"), (2, "Noted"), (3, "Noted")]


async def test_an_event_item_that_does_not_decode_fails_the_source(
    table: tuple[str, EventStore], streams: Any, moto_endpoint: str
) -> None:
    name, _ = table
    async with aws_client("dynamodb", region="us-east-1", endpoint_url=moto_endpoint) as dynamodb:
        item = {"stream": {"S": "s"}, "seq": {"N": "1"}, "type": {"S": "T"}, "data": {"S": "{}"}}
        await dynamodb.put_item(TableName=name, Item=item)
    with pytest.raises(InvalidEvent, match="is an event item that does not decode"):
        await dynamodb_stream_source(streams, table=name, poll=FAST).to_list()


async def test_a_table_without_a_stream_is_a_clear_error(streams: Any, moto_endpoint: str) -> None:
    with pytest.raises(LookupError, match="has no DynamoDB stream"):
        await latest_stream_arn(streams, f"no-such-table-{uuid.uuid4().hex[:6]}")


def test_the_source_refuses_trio_clearly() -> None:
    with pytest.raises(RuntimeError, match="asyncio only"):
        anyio.run(dynamodb_stream_source(object(), table="t").to_list, backend="trio")


# ---------------------------------------------------------------------- shard lineage


def test_lineage_puts_parents_before_children() -> None:
    # A split (0 -> 1, 2), then a merge (1 + 2 -> 3), listed in any order; "gone" was trimmed.
    shards = [
        Shard("shard-3", ("shard-1", "shard-2")),
        Shard("shard-2", ("shard-0",), closed=True),
        Shard("shard-0", ("gone",), closed=True),
        Shard("shard-1", ("shard-0",), closed=True),
        Shard("other", ()),
    ]
    order = [s.shard_id for s in lineage_order(shards)]
    assert order.index("shard-0") < order.index("shard-1") < order.index("shard-3")
    assert order.index("shard-0") < order.index("shard-2") < order.index("shard-3")
    assert sorted(order) == sorted(s.shard_id for s in shards)
    with pytest.raises(ValueError, match="cycle"):
        lineage_order([Shard("a", ("b",)), Shard("b", ("a",))])


class ReshardedStream:
    """An in-process sharded stream for the reader's lineage logic: a closed parent whose records continue
    in two children (DynamoDB splits a shard so; moto's DynamoDB Streams has a single shard)."""

    service = "test"
    throttled: frozenset[str] = frozenset()

    def __init__(self) -> None:
        def ev(stream: str, seq: int) -> RecordedEvent:
            import datetime

            moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
            return RecordedEvent(stream, seq, 0, "T", {}, None, uuid.uuid4(), moment)

        self.shards = [
            Shard("child-b", ("parent",)),
            Shard("child-a", ("parent",)),
            Shard("parent", closed=True),
        ]
        self.records = {
            "parent": [ev("x", 1), ev("y", 1), ev("x", 2)],
            "child-a": [ev("x", 3), ev("x", 4)],
            "child-b": [ev("y", 2)],
        }
        self.reads: list[str] = []

    async def list_shards(self) -> list[Shard]:
        return list(self.shards)

    async def shard_iterator(self, shard_id: str, after: str | None) -> str:
        return f"{shard_id}:{0 if after is None else int(after)}"

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> Page:
        self.reads.append(shard_id)
        start = int(iterator.split(":")[1])
        page = self.records[shard_id][start : start + limit]
        stop = start + len(page)
        at_end = stop == len(self.records[shard_id])
        closed = shard_id == "parent"
        out = [ShardRecord(e, shard_id, str(start + i + 1)) for i, e in enumerate(page)]
        return Page(
            out,
            str(stop) if page else None,
            None if closed and at_end and not page else f"{shard_id}:{stop}",
            caught_up=not page,
        )


async def test_children_are_read_only_after_their_parent_is_finished() -> None:
    api = ReshardedStream()
    read = await read_shards(api, None, live=False, limit=2, poll=FAST).to_list()
    first_child_read = min(api.reads.index("child-a"), api.reads.index("child-b"))
    assert set(api.reads[:first_child_read]) == {"parent"}
    assert_per_stream_order([r.event for r in read])
    assert len(read) == 6

    # From a checkpoint inside the parent: the rest of it, then the children.
    api = ReshardedStream()
    rest = await read_shards(api, {"parent": "2"}, live=False, limit=2, poll=FAST).to_list()
    assert (rest[0].event.stream, rest[0].event.seq) == ("x", 2)
    assert sorted((r.event.stream, r.event.seq) for r in rest) == [("x", 2), ("x", 3), ("x", 4), ("y", 2)]


class TroubledStream(ReshardedStream):
    """The same stream, whose reads fail the way AWS's do: an iterator that expired (over 5 minutes idle)
    once, then throttling twice."""

    def __init__(self) -> None:
        super().__init__()
        self.troubles = ["ExpiredIteratorException", "LimitExceededException", "LimitExceededException"]
        self.iterators: list[str] = []

    async def shard_iterator(self, shard_id: str, after: str | None) -> str:
        self.iterators.append(f"{shard_id} after {after}")
        return await super().shard_iterator(shard_id, after)

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> Page:
        from botocore.exceptions import ClientError

        if shard_id == "child-a" and self.troubles:
            code = self.troubles.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "as AWS says"}}, "GetRecords")
        return await super().get_records(shard_id, iterator, limit)


async def test_expired_iterators_are_renewed_and_throttled_reads_retried() -> None:
    api = TroubledStream()
    api.throttled = frozenset({"LimitExceededException"})
    read = await read_shards(api, None, live=False, limit=2, poll=FAST).to_list()
    assert sorted((r.event.stream, r.event.seq) for r in read) == [
        ("x", 1),
        ("x", 2),
        ("x", 3),
        ("x", 4),
        ("y", 1),
        ("y", 2),
    ]
    assert api.troubles == []
    assert api.iterators.count("child-a after None") == 2  # renewed from where it was: its start
