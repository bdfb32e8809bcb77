"""The DynamoDB store's ``order=stream`` (scale-out) mode and its indexer, on moto's real HTTP server.

The indexer is fed what DynamoDB Streams hands it, made as AWS makes it:
redelivered, duplicated, reordered across shards, a child shard read before
its parent (a shard split), a crash after an index transaction and before
the checkpoint; the Lambda path runs the handlers on the records moto's
DynamoDB Streams really recorded.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from moto_server import REGION
from returns.result import Success
from store_urls import fresh_dynamodb_url

from streamsrc.errors import IncompatibleSchema, InvalidStoreURL, WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.integrations._aws import aws_client
from streamsrc.integrations.aws_lambda import projection_handler
from streamsrc.integrations.dynamodb_index import index_handler, run_indexer
from streamsrc.projections import MemoryReadModel, Projection
from streamsrc.store import open_store
from streamsrc.store.dynamodb import DynamoDBStore, index_events, index_stream, rebuild_index
from streamsrc.store.dynamodb._items import DEFAULT_ORDER, MODE_KEY

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def store() -> AsyncIterator[DynamoDBStore]:
    async with open_store(fresh_dynamodb_url("order=stream")) as opened:
        assert isinstance(opened, DynamoDBStore)
        yield opened


async def appended(store: DynamoDBStore, streams: int, per_stream: int) -> list[RecordedEvent]:
    """Append ``per_stream`` events, one at a time, to each of ``streams`` streams; every event, as read
    from the events table before any indexing (what DynamoDB Streams shows: no position)."""
    for n in range(per_stream):
        for s in range(streams):
            result = await store.append(f"s-{s}", [EventData("E", {"n": n})], expected=n)
            assert isinstance(result, Success)
            assert result.unwrap().positions == ()
            assert result.unwrap().first_seq == n + 1
    events = [e for s in range(streams) for e in await store.read(f"s-{s}").to_list()]
    assert {e.position for e in events} == {0}
    return events


async def check_log(store: DynamoDBStore, events: list[RecordedEvent]) -> list[RecordedEvent]:
    """The log holds every event once, positions dense from 1, each stream in seq order; as read
    returns them too."""
    log = await store.read_all().to_list()
    assert sorted((e.stream, e.seq) for e in log) == sorted((e.stream, e.seq) for e in events)
    assert [e.position for e in log] == list(range(1, len(events) + 1))
    last: dict[str, int] = {}
    for e in log:
        assert e.seq == last.get(e.stream, 0) + 1
        last[e.stream] = e.seq
    assert await store.head() == len(events)
    for stream in last:
        assert await store.read(stream).to_list() == [e for e in log if e.stream == stream]
    return log


async def test_a_table_keeps_its_mode_and_a_mismatch_is_refused_naming_both() -> None:
    url = fresh_dynamodb_url("order=stream")
    plain = url.replace("&order=stream", "")
    async with open_store(url):  # made in order=stream mode
        pass
    async with open_store(plain) as store:  # without order=: the table's own
        assert isinstance(store, DynamoDBStore)
        assert store.order == "stream"
    with pytest.raises(IncompatibleSchema, match=r"order=stream.*order=global"):
        async with open_store(plain + "&order=global"):
            pass
    made_now = fresh_dynamodb_url("order=global").replace("&order=global", "")
    async with open_store(made_now) as store:  # a new table without order=: the scale-out mode
        assert isinstance(store, DynamoDBStore)
        assert store.order == DEFAULT_ORDER == "stream"
        assert (await store.append("cart-1", [EventData("Opened", {})])).unwrap().positions == ()
    global_url = fresh_dynamodb_url("order=global")
    async with open_store(global_url) as store:  # made in order=global mode
        assert isinstance(store, DynamoDBStore)
        assert store.order == "global"
    async with open_store(global_url.replace("&order=global", "")) as store:
        assert isinstance(store, DynamoDBStore)
        assert store.order == "global"
    with pytest.raises(IncompatibleSchema, match=r"order=global.*order=stream"):
        async with open_store(global_url.replace("order=global", "order=stream")):
            pass


async def test_tables_made_before_the_modes_open_as_global() -> None:
    url = fresh_dynamodb_url("order=global")
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        await store._call("t", "delete_item", TableName=store.tables["log"], Key=MODE_KEY)  # as old code made
    async with open_store(url.replace("&order=global", "")) as store:
        assert isinstance(store, DynamoDBStore)
        assert store.order == "global"
    with pytest.raises(IncompatibleSchema, match=r"order=global.*order=stream"):
        async with open_store(url.replace("order=global", "order=stream")):
            pass
    async with open_store(url) as store:  # no index to write: indexing would give positions twice
        assert isinstance(store, DynamoDBStore)
        with pytest.raises(InvalidStoreURL, match="order=global"):
            await index_events(store, await store.read_all().to_list())


async def test_appends_keep_every_per_stream_promise_and_touch_no_shared_item(store: DynamoDBStore) -> None:
    sent: list[dict[str, Any]] = []
    store._client.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems", lambda params, **_: sent.append(params)
    )
    batch = [EventData("E", {"n": n}) for n in range(3)]
    first = (await store.append("a", batch, expected=0)).unwrap()
    again = (await store.append("a", batch, expected=0)).unwrap()  # a retry: idempotent
    assert (first.last_seq, first.count, again.last_seq, again.positions) == (3, 3, 3, ())
    wrong = await store.append("a", [EventData("E", {})], expected=1)
    assert isinstance(wrong.failure(), WrongExpectedVersion)
    keys = [
        next(iter(op.values()))["Item"]
        for params in sent
        for op in params["TransactItems"]
        if "Put" in op or "Update" in op
    ]
    shared = [k for k in keys if k.get("pk", {}).get("S") in ("head", "log", "streams")]
    assert shared == []
    assert await store.streams().to_list() == ["a"]


async def test_the_indexer_indexes_each_event_once_whatever_the_delivery(store: DynamoDBStore) -> None:
    events = await appended(store, streams=5, per_stream=4)
    rng = random.Random(7)
    # Redelivered and duplicated records, streams interleaved in any order (records of several shards),
    # each stream's records in order within a delivery (a shard keeps a key's order).
    for _ in range(4):
        delivery = [e for e in events if rng.random() < 0.6]
        delivery += rng.sample(delivery, len(delivery) // 3)  # duplicates
        by_stream = Counter(e.stream for e in delivery)
        streams = list(by_stream)
        rng.shuffle(streams)
        await index_events(store, [e for s in streams for e in delivery if e.stream == s])
    report = await index_events(store, events)  # everything once more: only what is left
    assert report.stalled == {}
    await check_log(store, events)
    assert (await index_events(store, events)).indexed == 0  # a full redelivery: nothing changes
    await check_log(store, events)


async def test_the_indexer_stalls_on_a_gap_and_never_skips_it(store: DynamoDBStore) -> None:
    events = await appended(store, streams=2, per_stream=3)
    a1, a2, a3 = (e for e in events if e.stream == "s-0")
    report = await index_events(store, [a2, a3, *[e for e in events if e.stream == "s-1"]])
    assert (report.indexed, report.stalled) == (3, {"s-0": 2})  # s-1 goes on; s-0 waits for seq 1
    assert [e.stream for e in await store.read_all().to_list()] == ["s-1"] * 3
    report = await index_events(store, [a1])
    assert (report.indexed, report.stalled) == (1, {})
    await index_events(store, [a2, a3])
    await check_log(store, events)


async def test_a_crash_between_the_index_write_and_the_checkpoint_indexes_nothing_twice(
    store: DynamoDBStore,
) -> None:
    events = await appended(store, streams=3, per_stream=3)
    first_half = events[: len(events) // 2]
    await index_events(store, first_half)  # committed; the checkpoint (shard position) never saved
    report = await index_events(store, events)  # so the whole batch comes again
    assert (report.indexed, report.skipped) == (len(events) - len(first_half), len(first_half))
    await check_log(store, events)


async def test_a_lost_index_is_rebuilt_from_a_table_scan(store: DynamoDBStore) -> None:
    events = await appended(store, streams=4, per_stream=3)
    await index_events(store, events[:2])  # then the indexer was down past the stream's 24 hours
    report = await rebuild_index(store, batch=5)
    assert (report.indexed, report.stalled) == (len(events) - 2, {})
    await check_log(store, events)


async def test_sixteen_writers_and_a_tailing_reader_never_skip_or_repeat(store: DynamoDBStore) -> None:
    writers, per_writer = 16, 5
    seen: list[RecordedEvent] = []
    done = anyio.Event()

    async def write(w: int) -> None:
        async with open_store(store.url) as own:  # a store (a process) per writer
            for n in range(per_writer):
                assert isinstance(await own.append(f"w-{w}", [EventData("E", {"n": n})], expected=n), Success)

    async def index() -> None:
        while not done.is_set():
            await rebuild_index(store)  # an indexer at work meanwhile
            await anyio.sleep(0.01)
        await rebuild_index(store)

    async def tail() -> None:
        after = 0
        while len(seen) < writers * per_writer:
            for e in await store.read_all(after=after).to_list():
                assert e.position == after + 1  # dense: never a skip, never a repeat
                seen.append(e)
                after = e.position
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(index)
        tasks.start_soon(tail)
        async with anyio.create_task_group() as writing:
            for w in range(writers):
                writing.start_soon(write, w)
        done.set()
    assert len({(e.stream, e.seq) for e in seen}) == writers * per_writer


async def test_end_to_end_on_lambda_append_stream_indexer_projection_read_model() -> None:
    url = fresh_dynamodb_url("order=stream").replace("streams=false", "streams=true")
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        for n in range(3):
            await store.append("order-1", [EventData("Placed", {"n": n}), EventData("Paid", {"n": n})])
            await store.append(f"order-{n + 2}", [EventData("Placed", {"n": n})])
        endpoint = store.settings.endpoint_url
        tables = store.tables
    async with aws_client("dynamodbstreams", region=REGION, endpoint_url=endpoint) as streams:
        records = await lambda_records(streams, tables["events"])
        # A shard split: the child shard (the later records) is handed over before its parent.
        parent, child = records[: len(records) // 2], records[len(records) // 2 :]
        indexer = index_handler(url)
        first = await indexer.handle({"Records": child})
        failed = [f["itemIdentifier"] for f in first["batchItemFailures"]]
        sequences = [r["dynamodb"]["SequenceNumber"] for r in child]
        assert failed == [sequences[0]]  # order-1 waits for its first events: AWS retries from there
        assert (await indexer.handle({"Records": parent}))["batchItemFailures"] == []
        assert (await indexer.handle({"Records": child}))["batchItemFailures"] == []
        index_records = await lambda_records(streams, tables["log"])

    model = MemoryReadModel(Counter[str]())
    count = Projection("types", lambda state, events: state + Counter(e.type for e in events))
    answer = await projection_handler(count, model).handle({"Records": index_records})
    assert answer["batchItemFailures"] == []
    assert model.state == Counter({"Placed": 6, "Paid": 3})
    async with open_store(url) as store:
        log = await store.read_all().to_list()
        assert [e.position for e in log] == list(range(1, 10))
        assert await model.load_position("types") == 9


async def lambda_records(streams: Any, table: str) -> list[dict[str, Any]]:
    """Every record of ``table``'s DynamoDB stream, as Lambda hands them over."""
    arn = (await streams.list_streams(TableName=table))["Streams"][0]["StreamArn"]
    shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]
    records: list[dict[str, Any]] = []
    for shard in shards:
        iterator = (
            await streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while iterator:
            page = await streams.get_records(ShardIterator=iterator, Limit=1000)
            records += page["Records"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return [
        {"eventName": r["eventName"], "eventSource": "aws:dynamodb", "dynamodb": r["dynamodb"]}
        for r in records
    ]


async def test_the_indexer_process_follows_the_table_stream() -> None:
    url = fresh_dynamodb_url("order=stream").replace("streams=false", "streams=true")
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        events = await appended(store, streams=3, per_stream=2)
        assert await run_indexer(url, live=False) == len(events)
        assert await run_indexer(url, live=False) == 0  # from the start again: all skipped
        await check_log(store, events)
        assert await index_stream(store, "s-0") == (0, 0, {}, len(events))


async def test_migrate_copy_both_ways_through_the_index(store: DynamoDBStore) -> None:
    from streamsrc.migrate import copy
    from streamsrc.store.memory import MemoryStore

    source = MemoryStore()
    for n in range(5):
        await source.append(f"m-{n % 2}", [EventData("E", {"n": n})])
    await copy(source, store)  # into order=stream: the copied events wait for the indexer
    assert (await rebuild_index(store)).indexed == 5
    # Each stream's events in order; how streams interleave is the indexer's order (here a scan's).
    got = sorted((e.stream, e.seq, e.data["n"]) for e in await store.read_all().to_list())
    assert got == sorted((e.stream, e.seq, e.data["n"]) for e in await source.read_all().to_list())
    assert [e.position for e in await store.read_all().to_list()] == [1, 2, 3, 4, 5]

    back = MemoryStore()
    await copy(store, back)  # out of order=stream: its index is its global log
    assert await back.read_all().to_list() == await store.read_all().to_list()


async def test_global_mode_losers_back_off_and_give_up_after_bounded_tries_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamsrc.store.dynamodb import _store

    url = fresh_dynamodb_url("order=global")
    async with open_store(url):
        pass
    stores = [await DynamoDBStore(url).open() for _ in range(6)]
    pauses: list[int] = []
    backoff = _store._backoff

    async def counted(attempt: int) -> None:
        pauses.append(attempt)
        await backoff(attempt)

    monkeypatch.setattr(_store, "_backoff", counted)
    monkeypatch.setattr(_store, "_MAX_CONTENDED_TRIES", 2)
    try:
        for store in stores:  # each has seen head 0: their first tries race for the same head
            await store._read_head(True)
        results = await gather_appends(stores)
    finally:
        for store in stores:
            await store.aclose()
    failed = [r.failure() for r in results if not isinstance(r, Success)]
    assert pauses  # a lost race waits before it tries again
    assert len(results) - len(failed) >= 1
    for error in failed:
        assert "lost the head item to other writers' appends 2 times in a row" in str(error)
        assert "order=stream" in str(error)


async def gather_appends(stores: list[DynamoDBStore]) -> list[Any]:
    results: list[Any] = [None] * len(stores)

    async def one(k: int) -> None:
        results[k] = await stores[k].append(f"g-{k}", [EventData("E", {})])

    async with anyio.create_task_group() as tasks:
        for k in range(len(stores)):
            tasks.start_soon(one, k)
    return results


async def test_the_command_line_indexes_a_table(moto_endpoint: str) -> None:
    import os
    import subprocess
    import sys

    url = fresh_dynamodb_url("order=stream").replace("streams=false", "streams=true")
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        events = await appended(store, streams=2, per_stream=2)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "streamsrc", "dynamodb", "index", url, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ.copy())

    done = await anyio.to_thread.run_sync(run, "--once")
    assert done.returncode == 0, done.stderr
    assert f"indexed {len(events)} events" in done.stdout
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        await check_log(store, events)
    refused = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [
                sys.executable,
                "-m",
                "streamsrc",
                "dynamodb",
                "index",
                url.replace("order=stream", "order=global"),
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    assert refused.returncode != 0
    assert "order=stream" in refused.stderr  # the table's mode, named with the URL's
