"""The DynamoDB store beyond the conformance suites: DynamoDB's limits, reads, outages, tables, URLs.

Everything runs against moto's real HTTP server (the session's, and for the
outage test a server of the test's own that it stops), through the store's
own aiobotocore client; calls are observed with botocore's event hooks,
never replaced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from moto_server import REGION, serialise_moto_requests
from returns.result import Failure, Success
from store_urls import fresh_dynamodb_url

from streamsrc.errors import (
    EventTooLarge,
    IncompatibleSchema,
    InvalidEvent,
    InvalidStoreURL,
    StoreUnavailable,
    WrongExpectedVersion,
)
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import open_store
from streamsrc.store.dynamodb import (
    MAX_BATCH,
    MAX_EVENT_SIZE,
    BatchTooLarge,
    DynamoDBStore,
    Settings,
    create_tables,
    event_from_item,
    is_event_item,
    table_names,
)
from streamsrc.testing.conformance import append_ok, make_events, tail_log

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def url(moto_endpoint: str) -> str:
    """A URL of fresh tables (made on open) on the session's moto server."""
    return fresh_dynamodb_url()


@pytest.fixture
async def store(url: str) -> AsyncIterator[DynamoDBStore]:
    async with open_store(url) as opened:
        assert isinstance(opened, DynamoDBStore)
        yield opened


def observe(store: DynamoDBStore, operation: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Record (request, response) of every ``operation`` call the store's client makes from now on."""
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
    requests: list[dict[str, Any]] = []

    def before(params: dict[str, Any], **_: Any) -> None:
        requests.append(dict(params))

    def after(parsed: dict[str, Any], **_: Any) -> None:
        calls.append((requests.pop(0), parsed))

    events = store._client.meta.events
    events.register(f"provide-client-params.dynamodb.{operation}", before)
    events.register(f"after-call.dynamodb.{operation}", after)
    return calls


async def state(store: DynamoDBStore) -> tuple[int, list[str], list[RecordedEvent]]:
    return await store.head(), await store.streams().to_list(), await store.read_all().to_list()


# ---------------------------------------------------------------------------------------------- limits


async def test_a_batch_over_one_transaction_is_refused_before_anything_is_written(
    store: DynamoDBStore,
) -> None:
    assert MAX_BATCH == 48  # (100 items - commit - head - stream item) // (event + id)
    await append_ok(store, "s", make_events(2, "before"))
    before = await state(store)
    calls = observe(store, "TransactWriteItems")
    for stream, expected in (("s", 2), ("fresh", 0)):
        result = await store.append(stream, make_events(MAX_BATCH + 1, "big"), expected)
        assert isinstance(result, Failure)
        error = result.failure()
        assert isinstance(error, BatchTooLarge)
        assert isinstance(error, InvalidEvent)
        assert "48" in str(error)
        assert "100" in str(error)
    assert calls == []  # nothing was sent, let alone split
    assert await state(store) == before
    # the largest batch fits, in a new stream too (99 items in one transaction)
    written = await append_ok(store, "fresh", make_events(MAX_BATCH, "max"), 0)
    assert (written.first_seq, written.last_seq, len(written.positions)) == (1, MAX_BATCH, MAX_BATCH)
    assert len(calls) == 1
    assert len(calls[0][0]["TransactItems"]) == 2 * MAX_BATCH + 3
    assert [e.seq for e in await store.read("fresh").to_list()] == list(range(1, MAX_BATCH + 1))


async def test_items_over_400_kb_are_refused_before_sending(store: DynamoDBStore) -> None:
    assert store.max_event_size == MAX_EVENT_SIZE == 400_000
    calls = observe(store, "TransactWriteItems")
    big = EventData("Big", "x" * MAX_EVENT_SIZE)  # 400,002 bytes of JSON
    result = await store.append("s", [*make_events(1), big])
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), EventTooLarge)
    assert calls == []
    # the largest event fits one item, with a long stream name and type (and is read back whole)
    name, kind = "s" * 512, "T" * 512
    largest = EventData(kind, "y" * (MAX_EVENT_SIZE - 2))
    await append_ok(store, name, [largest])
    [record] = await store.read(name).to_list()
    assert record.data == largest.data
    assert [e.id for e in await store.read_all().to_list()] == [largest.id]
    with pytest.raises(InvalidStoreURL, match="max_event_size"):
        Settings.from_url("dynamodb://events?max_event_size=400001")


async def test_a_batch_over_4_mb_is_refused_before_sending(store: DynamoDBStore) -> None:
    calls = observe(store, "TransactWriteItems")
    batch = [EventData("Big", "z" * 390_000) for _ in range(11)]  # 4.3 MB in one transaction
    result = await store.append("s", batch)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), BatchTooLarge)
    assert "4,194,304" in str(result.failure())
    assert calls == []
    assert await state(store) == (0, [], [])


# ---------------------------------------------------------------------------------------------- reads


async def test_reads_are_strongly_consistent_unless_the_url_says_otherwise(url: str) -> None:
    for option, consistent in (("", True), ("&consistent=false", False)):
        async with open_store(url + option) as store:
            assert isinstance(store, DynamoDBStore)
            assert store.consistent is consistent
            await append_ok(store, f"s{option}", make_events(2))
            queries = observe(store, "Query")
            gets = observe(store, "GetItem")
            assert len(await store.read(f"s{option}").to_list()) == 2
            assert await store.read_all().count() >= 2
            assert (await store.latest(f"s{option}")).unwrap().seq == 2
            assert await store.head() >= 2
            assert await store.load_checkpoint("c") == 0
            assert {q[0]["ConsistentRead"] for q in queries} == {consistent}
            assert {g[0]["ConsistentRead"] for g in gets} == {consistent}
            # appends decide on strongly consistent reads whatever the option
            queries.clear()
            assert isinstance(await store.append(f"s{option}", make_events(1), 0), Failure)
            assert queries
            assert {q[0]["ConsistentRead"] for q in queries} == {True}


async def test_paging_follows_last_evaluated_key_through_empty_pages(url: str) -> None:
    async with open_store(url + "&page_size=3") as store:
        assert isinstance(store, DynamoDBStore)
        # 6 events: moto's last full page has no LastEvaluatedKey (DynamoDB's would, then an empty page)
        batch = make_events(6)
        await append_ok(store, "six", batch)
        queries = observe(store, "Query")
        assert [e.id for e in await store.read("six").to_list()] == [e.id for e in batch]
        assert [len(r["Items"]) for _, r in queries] == [3, 3]
        assert ["LastEvaluatedKey" in r for _, r in queries] == [True, False]
        # a filtered query: pages come back empty but with LastEvaluatedKey, and the read goes on
        await store.save_snapshot("k", 1, "old", 1)
        middle = datetime.now(UTC)
        await anyio.sleep(0.002)
        for seq in range(2, 12):
            await store.save_snapshot("k", seq, f"new {seq}", 1)
        queries.clear()
        found = (await store.load_snapshot("k", 1, at_time=middle)).unwrap()
        assert (found.seq, found.state) == (1, "old")
        pages = [(len(r["Items"]), "LastEvaluatedKey" in r) for _, r in queries]
        assert (0, True) in pages, pages  # an empty page that was not the end
        assert pages[-1][0] == 1
        # and when every page is filtered out, the read ends without a snapshot
        gone = middle - timedelta(hours=1)
        queries.clear()
        assert (await store.load_snapshot("k", 1, at_time=gone)).value_or(None) is None
        assert [p[0] for p in ((len(r["Items"]), 0) for _, r in queries)] == [0] * len(queries)
        assert len(queries) == 4  # 11 snapshots, pages of 3: followed to the end


# ---------------------------------------------------------------------------------------------- order


async def test_writers_in_many_stores_contend_for_the_head_and_a_tailing_reader_never_skips(
    url: str,
) -> None:
    """Four stores (four clients, as four processes would be) append at once to shared and own streams;
    their transactions race for the head item. Positions stay dense and in commit order, and a reader
    following read_all meanwhile sees every event once, in order."""
    writers, appends = 4, 6
    written: dict[uuid.UUID, int] = {}
    seen: list[RecordedEvent] = []
    async with open_store(url) as reader:
        stores = [await DynamoDBStore(url).open() for _ in range(writers)]
        try:
            transactions = [observe(s, "TransactWriteItems") for s in stores]

            async def writer(w: int) -> None:
                for k in range(appends):
                    batch = make_events(1 + (w + k) % 2, f"w{w}k{k}")
                    result = await append_ok(stores[w], f"shared-{k % 2}" if w % 2 else f"own-{w}", batch)
                    written.update(zip((e.id for e in batch), result.positions, strict=True))

            done = anyio.Event()

            async def write_all() -> None:
                async with anyio.create_task_group() as tg:
                    for w in range(writers):
                        tg.start_soon(writer, w)
                done.set()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(tail_log, reader, done, seen, (None, 3))
                    tg.start_soon(write_all)
        finally:
            for s in stores:
                await s.aclose()
        total = sum(1 + (w + k) % 2 for w in range(writers) for k in range(appends))
        assert sorted(written.values()) == list(range(1, total + 1))  # dense, no position twice
        assert [e.position for e in seen] == list(range(1, total + 1))
        assert {e.id: e.position for e in seen} == written
        assert seen == await reader.read_all().to_list()
        tries = sum(len(t) for t in transactions)
        assert tries >= writers * appends  # (more when a writer lost the head and tried again)
        for name in {e.stream for e in seen}:
            assert [e.seq for e in seen if e.stream == name] == list(
                range(1, sum(e.stream == name for e in seen) + 1)
            )


# ---------------------------------------------------------------------------------------------- outages


@pytest.fixture
def own_moto() -> Iterator[Any]:
    """A moto server of this test's own, to stop while a store uses it."""
    from moto.server import ThreadedMotoServer

    serialise_moto_requests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.stop()

    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}", stop
    finally:
        stop()


async def test_an_unreachable_endpoint_is_store_unavailable_without_hanging(
    own_moto: Any, moto_endpoint: str
) -> None:
    endpoint, stop = own_moto
    started = time.monotonic()
    with anyio.fail_after(20), pytest.raises(StoreUnavailable) as caught:
        async with open_store(f"dynamodb://gone?region={REGION}&endpoint_url=http://127.0.0.1:1&retries=1"):
            pass  # pragma: no cover
    assert "127.0.0.1:1" in str(caught.value)
    url = f"dynamodb://outage?region={REGION}&endpoint_url={endpoint}&create=true&timeout=1&retries=2"
    async with open_store(url) as store:
        await append_ok(store, "s", make_events(1))
        stop()  # the server goes away under the store: failures are values, or StoreUnavailable
        with anyio.fail_after(20):
            result = await store.append("s", make_events(1), 1)
            assert isinstance(result, Failure)
            error = result.failure()
            assert isinstance(error, StoreUnavailable)
            assert error.__cause__ is not None
            assert "3 tries" in str(error)
            with pytest.raises(StoreUnavailable):
                await store.read("s").to_list()
            with pytest.raises(StoreUnavailable):
                await store.head()
    assert time.monotonic() - started < 30


async def test_the_store_runs_on_asyncio_only_and_says_so(moto_endpoint: str) -> None:
    def on_trio() -> str:
        async def main() -> str:
            try:
                await DynamoDBStore(fresh_dynamodb_url()).open()
            except StoreUnavailable as exc:
                return str(exc)
            return "opened"  # pragma: no cover

        return anyio.run(main, backend="trio")

    message = await anyio.to_thread.run_sync(on_trio)
    assert "asyncio only" in message


# ---------------------------------------------------------------------------------------------- URLs


async def test_urls_are_checked_and_secrets_never_shown(moto_endpoint: str) -> None:
    secret = "S3cret-Value-4711"
    bad = [
        ("dynamodb://ab?region=us-east-1", "table name"),
        ("dynamodb://has space?region=x", "table name"),
        ("dynamodb://" + "t" * 244, "table name"),
        ("dynamodb://events/extra", "dynamodb://TABLE"),
        (f"dynamodb://user:{secret}@events", "credentials"),
        ("dynamodb://events?consistent=maybe", "consistent"),
        ("dynamodb://events?page_size=0", "page_size"),
        ("dynamodb://events?retries=-1", "retries"),
        ("dynamodb://events?endpoint_url=ftp://x", "endpoint_url"),
        (f"dynamodb://events?aws_secret_access_key={secret}", "unknown option"),
        (f"dynamodb://events?region=x&endpoint_url=http://u:{secret}@h:1&bogus=1", "unknown option"),
    ]
    for text, why in bad:
        with pytest.raises(InvalidStoreURL, match=why) as caught:
            async with open_store(text):
                pass  # pragma: no cover
        assert secret not in str(caught.value), text
    # Credentials in the endpoint never work (requests are signed) and botocore would log them: refused.
    url = f"dynamodb://events?region=us-east-1&endpoint_url=http://app:{secret}@127.0.0.1:1&retries=0"
    with pytest.raises(InvalidStoreURL, match="credentials") as refused:
        DynamoDBStore(url)
    assert secret not in str(refused.value) + repr(refused.value)
    assert "app:***@127.0.0.1:1" in str(refused.value)
    store = DynamoDBStore("dynamodb://events?region=us-east-1&endpoint_url=http://127.0.0.1:1&retries=0")
    with pytest.raises(StoreUnavailable) as unavailable:
        await store.open()
    assert "127.0.0.1:1" in str(unavailable.value)


# ---------------------------------------------------------------------------------------------- tables


async def test_create_tables_is_idempotent_and_turns_streams_on(moto_endpoint: str) -> None:
    base = fresh_dynamodb_url().replace("&create=true&streams=false", "")
    settings = Settings.from_url(base)
    names = table_names(settings.table)
    # without create=true a missing table is an error that names the command
    with pytest.raises(StoreUnavailable, match="streamsrc dynamodb create-tables"):
        async with open_store(base):
            pass  # pragma: no cover
    assert sorted(await create_tables(base)) == sorted(names.values())
    assert await create_tables(base) == []  # again: nothing to do
    async with open_store(base) as store:
        assert isinstance(store, DynamoDBStore)
        await append_ok(store, "s", make_events(1))
        described = await store._client.describe_table(TableName=names["events"])
        spec = described["Table"]["StreamSpecification"]
        assert (spec["StreamEnabled"], spec["StreamViewType"]) == (True, "NEW_IMAGE")
        keys = {k["AttributeName"]: k["KeyType"] for k in described["Table"]["KeySchema"]}
        assert keys == {"stream": "HASH", "seq": "RANGE"}
    assert await create_tables(base + "&create=true") == []
    async with open_store(base) as store:  # the event is still there
        assert [e.seq for e in await store.read("s").to_list()] == [1]


async def test_a_foreign_table_of_that_name_is_refused(store: DynamoDBStore) -> None:
    other = fresh_dynamodb_url()
    name = Settings.from_url(other).table
    await store._client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(IncompatibleSchema, match="keys"):
        async with open_store(other):
            pass  # pragma: no cover


def test_the_command_line_creates_the_tables(moto_endpoint: str) -> None:
    url = fresh_dynamodb_url().replace("&create=true&streams=false", "")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "streamsrc", "dynamodb", "create-tables", url]
    for _ in range(2):  # the second run finds them all
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "ready" in done.stdout

    async def use() -> list[int]:
        async with open_store(url) as store:
            await append_ok(store, "s", make_events(2))
            return [e.seq for e in await store.read("s").to_list()]

    assert anyio.run(use) == [1, 2]


# ---------------------------------------------------------------------------------------------- items


async def test_event_items_decode_from_the_low_level_format(store: DynamoDBStore) -> None:
    events = [
        EventData("Placed", {"total": "12.50", "ünï": "🎉"}, metadata={"user": "ada"}),
        EventData("N", None),
    ]
    await append_ok(store, "order-$1", events)
    raw = await store._client.query(
        TableName=store.tables["events"],
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "stream"},
        ExpressionAttributeValues={":s": {"S": "order-$1"}},
        ConsistentRead=True,
    )
    items = raw["Items"]
    assert all(is_event_item(i) for i in items)
    assert set(items[0]) == {"stream", "seq", "position", "type", "data", "metadata", "id", "time"}
    assert "metadata" not in items[1]
    assert [event_from_item(i) for i in items] == await store.read("order-$1").to_list()
    log = await store._client.scan(TableName=store.tables["log"])
    assert log["Items"]
    assert not any(is_event_item(i) for i in log["Items"])
    with pytest.raises(ValueError, match="not a streamsrc event item"):
        event_from_item(log["Items"][0])


async def test_import_events_keeps_ids_and_times_and_continues_seqs(store: DynamoDBStore) -> None:
    async with open_store("memory://") as source:
        await append_ok(source, "other", make_events(1))
        await append_ok(source, "s", make_events(3, "old"))
        recorded = await source.read("s").to_list()
    old = recorded[0].time - timedelta(days=3)
    recorded = [
        RecordedEvent(r.stream, r.seq, r.position, r.type, r.data, r.metadata, r.id, old) for r in recorded
    ]
    first = await store.import_events("s", recorded[:2])
    assert isinstance(first, Success)
    assert first.unwrap().positions == (1, 2)
    again = await store.import_events("s", recorded[:2])  # idempotent
    assert again == first
    skipped = await store.import_events("s", recorded[2:] + recorded[2:])  # not consecutive
    assert isinstance(skipped, Failure)
    assert isinstance(skipped.failure(), InvalidEvent)
    await append_ok(store, "s", make_events(1, "new"), 2)
    late = await store.import_events("s", recorded[2:])  # seq 3 is taken by now
    assert isinstance(late, Failure)
    assert isinstance(late.failure(), WrongExpectedVersion)
    stored = await store.read("s").to_list()
    assert [(e.id, e.time, e.data) for e in stored[:2]] == [(r.id, r.time, r.data) for r in recorded[:2]]
    assert Counter(e.id for e in stored)[recorded[0].id] == 1
