"""Retiring streams on the DynamoDB store, beyond the conformance suite: truncations larger than one
DynamoDB transaction (many commits, one commit of more events than a transaction holds), events the
indexer has not seen yet, an import of a truncated stream indexed from its first seq, and a tombstone
written by another store instance (its cache of the stream's version is old); on moto's server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from returns.result import Failure, Success
from store_urls import fresh_dynamodb_url

from streamsrc.errors import StreamDeleted
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import open_store
from streamsrc.store._contract import TOMBSTONE_TYPE
from streamsrc.store.dynamodb import DynamoDBStore, index_events, index_stream

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture(params=["global", "stream"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DynamoDBStore]:
    async with open_store(fresh_dynamodb_url(f"order={request.param}")) as opened:
        assert isinstance(opened, DynamoDBStore)
        yield opened


async def indexed(store: DynamoDBStore, *streams: str) -> None:
    """In order=stream mode, what the indexer does after the appends (nothing in order=global)."""
    if store.scale:
        for stream in streams:
            await index_stream(store, stream)


def seqs(events: list[RecordedEvent]) -> list[tuple[str, int]]:
    return [(e.stream, e.seq) for e in events]


async def test_a_truncation_over_many_commits_leaves_the_rest_readable(store: DynamoDBStore) -> None:
    for n in range(130):  # 130 appends of one event: more commits than one transaction can empty
        assert isinstance(await store.append("many", [EventData("E", {"n": n})], expected=n), Success)
        if n % 10 == 0:
            await store.append("other", [EventData("O", {"n": n})])
    await indexed(store, "many", "other")
    before = await store.read_all().to_list()
    assert await store.truncate_before("many", 120) == Success(119)
    kept = [e for e in before if e.stream != "many" or e.seq >= 120]
    assert await store.read_all().to_list() == kept  # the same events, positions and data
    assert [e.seq for e in await store.read("many").to_list()] == list(range(120, 131))
    assert await store.head() == len(before)
    assert (await store.append("many", [EventData("E", {})], expected=130)).unwrap().last_seq == 131


async def test_a_commit_of_more_events_than_a_transaction_holds_is_truncated_whole_or_in_part() -> None:
    url = fresh_dynamodb_url("order=stream")
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        for k in range(5):  # 240 events, indexed at once: commits of 100 events each
            batch = [EventData("E", {"n": 48 * k + n}) for n in range(48)]
            assert isinstance(await store.append("big", batch, expected=48 * k), Success)
        await index_stream(store, "big")
        before = await store.read_all().to_list()
        assert [e.seq for e in before] == list(range(1, 241))
        assert await store.truncate_before("big", 150) == Success(149)  # one commit whole, one in part
        assert await store.read_all().to_list() == before[149:]
        assert await store.read("big").to_list() == before[149:]
        assert await store.truncate_before("big", 240) == Success(90)
        assert await store.read_all().to_list() == before[239:]


async def test_events_not_indexed_yet_are_indexed_before_they_are_removed() -> None:
    async with open_store(fresh_dynamodb_url("order=stream")) as store:
        assert isinstance(store, DynamoDBStore)
        for n in range(5):
            await store.append("s", [EventData("E", {"n": n})])
        records = await store.read("s").to_list()  # what DynamoDB Streams delivers to the indexer
        assert await store.truncate_before("s", 4) == Success(3)
        report = await index_events(store, records)  # the stream's records, delivered afterwards
        assert (report.indexed, report.skipped) == (0, 5)
        assert seqs(await store.read_all().to_list()) == [("s", 4), ("s", 5)]
        assert [e.position for e in await store.read("s").to_list()] == [4, 5]


async def test_an_imported_truncated_stream_is_indexed_from_its_first_seq() -> None:
    async with open_store(fresh_dynamodb_url("order=stream")) as store:
        assert isinstance(store, DynamoDBStore)
        await store.append("src", [EventData("E", {"n": n}) for n in range(6)])
        await index_stream(store, "src")
        await store.truncate_before("src", 5)
        source = await store.read("src").to_list()
        copies = [
            RecordedEvent("copy", e.seq, 0, e.type, e.data, e.metadata, uuid.uuid4(), e.time) for e in source
        ]
        imported = (await store.import_events("copy", copies)).unwrap()
        assert (imported.first_seq, imported.last_seq) == (5, 6)
        report = await index_events(store, await store.read("copy").to_list())
        assert (report.indexed, report.stalled) == (2, {})  # no wait for seqs 1 to 4: they never come
        assert seqs(await store.read_all(stream_prefix="copy").to_list()) == [("copy", 5), ("copy", 6)]


async def test_a_stream_deleted_through_another_store_refuses_this_ones_appends(store: DynamoDBStore) -> None:
    await store.append("s", [EventData("E", {})])
    await store.append("s", [EventData("E", {})], expected=1)  # this store now knows the stream at 2
    async with open_store(store.url) as other:
        assert isinstance(other, DynamoDBStore)
        assert (await other.delete_stream("s", expected=2)).unwrap().last_seq == 3
    for expected in (2, 3):
        refused = await store.append("s", [EventData("E", {})], expected=expected)
        assert isinstance(refused, Failure)
        assert isinstance(refused.failure(), StreamDeleted)
    assert [e.type for e in await store.read("s").to_list()] == ["E", "E", TOMBSTONE_TYPE]
