"""Kinesis: the JSON form of recorded events, the sink (batches, limits, retries) and the source (checkpoints,
resharding), against the session's moto server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsrc.effect import RetryPolicy
from streamsrc.errors import InvalidEvent
from streamsrc.events import RecordedEvent, recorded_from_json, recorded_to_json
from streamsrc.integrations.kinesis import (
    MAX_RECORD_BYTES,
    Published,
    PublishFailed,
    RecordTooLarge,
    ShardRecord,
    advance,
    aws_client,
    batches,
    kinesis_sink,
    kinesis_source,
    partition_key,
)
from streamsrc.projections import Poll
from streamsrc.stream import Stream

pytestmark = pytest.mark.anyio

FAST = Poll(min_delay=0.01, max_delay=0.05)
T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiobotocore runs on asyncio only


@pytest.fixture
async def kinesis(moto_endpoint: str) -> AsyncIterator[Any]:
    async with aws_client("kinesis", region="us-east-1", endpoint_url=moto_endpoint) as client:
        yield client


async def new_stream(client: Any, shards: int = 1) -> str:
    name = f"events-{uuid.uuid4().hex[:12]}"
    await client.create_stream(StreamName=name, ShardCount=shards)
    return name


def event(stream: str, seq: int, position: int, data: Any = None) -> RecordedEvent:
    payload = {"n": position} if data is None else data
    moment = T0 + timedelta(microseconds=position)
    return RecordedEvent(stream, seq, position, "Happened", payload, None, uuid.uuid4(), moment)


def events(streams: int, per_stream: int, first_position: int = 1) -> list[RecordedEvent]:
    """Events of ``streams`` streams interleaved: positions count up, seqs count up per stream."""
    out = []
    position = first_position
    for seq in range(1, per_stream + 1):
        for s in range(streams):
            out.append(event(f"stream-{s}", seq, position))
            position += 1
    return out


async def publish(client: Any, name: str, items: list[RecordedEvent], **options: Any) -> list[Published]:
    return await Stream.emits(items, chunk_size=1000).through(kinesis_sink(client, name, **options)).to_list()


def assert_per_stream_order(read: list[RecordedEvent]) -> None:
    last: dict[str, int] = {}
    for e in read:
        assert e.seq == last.get(e.stream, 0) + 1, f"{e.stream} #{e.seq} after #{last.get(e.stream, 0)}"
        last[e.stream] = e.seq


# ------------------------------------------------------------------------------------------- JSON form


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    data=json_values,
    metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    micros=st.integers(min_value=0, max_value=2**52),
    offset_minutes=st.integers(min_value=-600, max_value=600),
)
def test_recorded_events_survive_json_unchanged(
    data: Any, metadata: dict[str, Any] | None, micros: int, offset_minutes: int
) -> None:
    moment = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).astimezone(
        timezone(timedelta(minutes=offset_minutes))
    )
    e = RecordedEvent("s-1", 3, 99, "Typed", data, metadata, uuid.uuid4(), moment)
    obj = recorded_to_json(e)
    assert obj["time"].endswith("Z")
    back = recorded_from_json(obj)
    assert back == e
    assert back.time.tzinfo == UTC
    assert back.time == moment


def test_json_form_is_plain_json_with_utc_time() -> None:
    e = event("order-1", 2, 5, {"total": "1.50"})
    assert recorded_to_json(e) == {
        "stream": "order-1",
        "seq": 2,
        "position": 5,
        "type": "Happened",
        "data": {"total": "1.50"},
        "metadata": None,
        "id": str(e.id),
        "time": "2026-11-27T12:00:00.123461Z",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seq": "1"}, "'seq' must be a non-negative integer"),
        ({"seq": True}, "'seq' must be a non-negative integer"),
        ({"position": -1}, "'position' must be a non-negative integer"),
        ({"stream": 5}, "'stream' and 'type' must be strings"),
        ({"metadata": [1]}, "'metadata' must be an object or null"),
        ({"id": "nope"}, "'id' is not a UUID"),
        ({"time": "yesterday"}, "'time' is not an ISO 8601 time"),
        ({"time": "2026-01-01T00:00:00"}, "'time' has no UTC offset"),
    ],
)
def test_malformed_json_events_are_invalid_event(change: dict[str, Any], message: str) -> None:
    obj = recorded_to_json(event("s", 1, 1)) | change
    with pytest.raises(InvalidEvent, match=message):
        recorded_from_json(obj)
    with pytest.raises(InvalidEvent, match="missing field 'data'"):
        recorded_from_json({k: v for k, v in obj.items() if k != "data"})
    with pytest.raises(InvalidEvent, match="expected a JSON object"):
        recorded_from_json([1, 2])


# ------------------------------------------------------------------------------------------- batching


def test_batches_hold_at_most_500_records_and_5_mib() -> None:
    assert batches([10] * 501) == [(0, 500), (500, 501)]
    assert batches([10] * 1000) == [(0, 500), (500, 1000)]
    mib = 1024 * 1024
    assert batches([mib] * 6) == [(0, 5), (5, 6)]  # 5 MiB exactly fits, the sixth does not
    assert batches([mib - 1, 2, mib, mib, mib, mib]) == [(0, 5), (5, 6)]  # 5 MiB + 1 byte: cut
    assert batches([]) == []


def test_partition_key_is_the_stream_or_a_digest_of_a_long_one() -> None:
    assert partition_key("order-42") == "order-42"
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    assert partition_key(long_a) == partition_key(long_a) != partition_key(long_b)
    assert len(partition_key(long_a)) <= 256


async def test_501_events_take_two_calls_and_come_back_in_stream_order(kinesis: Any) -> None:
    name = await new_stream(kinesis, shards=2)
    sent = events(streams=3, per_stream=167)  # 501 events
    published = await publish(kinesis, name, sent)
    assert [len(p.events) for p in published] == [500, 1]
    assert [p.calls for p in published] == [1, 1]
    assert all(all(p.sequence_numbers) and all(p.shard_ids) for p in published)
    assert published[-1].events[-1].position == 501

    read = await kinesis_source(kinesis, name, poll=FAST).to_list()
    got = [r.event for r in read]
    assert sorted(got, key=lambda e: e.position) == sent  # every event, unchanged, once
    assert_per_stream_order(got)
    assert {r.shard_id for r in read} == {"shardId-000000000000", "shardId-000000000001"}
    by_stream = {e.stream: r.shard_id for r, e in zip(read, got, strict=True)}
    assert all(r.shard_id == by_stream[r.event.stream] for r in read)  # one partition key per stream


async def test_a_call_carries_at_most_5_mib(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    big = "x" * 900_000
    sent = [event("big-1", i + 1, i + 1, {"blob": big}) for i in range(6)]  # ~5.4 MB in all
    published = await publish(kinesis, name, sent)
    assert [len(p.events) for p in published] == [5, 1]
    read = await kinesis_source(kinesis, name, poll=FAST, limit=3).to_list()
    assert [r.event for r in read] == sent


async def test_a_record_over_1_mib_fails_before_anything_is_sent(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    sent = [event("s", 1, 1), event("s", 2, 2, {"blob": "x" * MAX_RECORD_BYTES}), event("s", 3, 3)]
    with pytest.raises(RecordTooLarge, match="over Kinesis's limit of 1048576 bytes") as caught:
        await publish(kinesis, name, sent)
    assert caught.value.stream == "s"
    assert caught.value.event_id == sent[1].id
    assert await kinesis_source(kinesis, name, poll=FAST).to_list() == []


THROTTLED = "ProvisionedThroughputExceededException"


class FlakyKinesis:
    """An in-process stand-in for the Kinesis client, passed to the sink only here: moto never refuses
    single records, so this wrapper refuses the records it is told to (``ErrorCode`` and ``ErrorMessage``
    in the answer, ``FailedRecordCount`` counting them, as Kinesis answers) and sends the others on to the
    real moto client."""

    def __init__(self, real: Any, refuse: Any) -> None:
        self.real = real
        self.refuse = refuse  # (call number, record) -> bool
        self.calls: list[list[bytes]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        call = len(self.calls)
        self.calls.append([r["Data"] for r in Records])
        refused = [self.refuse(call, recorded_from_json_bytes(r["Data"])) for r in Records]
        passed = [r for r, no in zip(Records, refused, strict=True) if not no]
        answer = await self.real.put_records(StreamName=StreamName, Records=passed) if passed else None
        results = iter(answer["Records"] if answer else [])
        out = []
        for no in refused:
            if no:
                out.append({"ErrorCode": THROTTLED, "ErrorMessage": "slow down"})
            else:
                out.append(next(results))
        return {"FailedRecordCount": sum(refused), "Records": out}


def recorded_from_json_bytes(data: bytes) -> RecordedEvent:
    import json

    return recorded_from_json(json.loads(data))


async def test_only_the_failed_records_are_sent_again(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    sent = events(streams=2, per_stream=5)
    flaky = FlakyKinesis(kinesis, lambda call, e: call < 2 and e.position in (3, 8))
    retry = RetryPolicy(max_attempts=5, base_delay=0.001)
    published = await publish(flaky, name, sent, retry=retry)
    assert [p.calls for p in published] == [3]
    assert [len(c) for c in flaky.calls] == [10, 2, 2]
    assert [recorded_from_json_bytes(d).position for d in flaky.calls[1]] == [3, 8]
    read = await kinesis_source(kinesis, name, poll=FAST).to_list()
    assert sorted(r.event.position for r in read) == list(range(1, 11))  # each once: no repeats


async def test_records_still_failing_when_retries_run_out_fail_the_stream(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    sent = events(streams=1, per_stream=4)
    flaky = FlakyKinesis(kinesis, lambda call, e: e.seq == 2)
    with pytest.raises(PublishFailed) as caught:
        await publish(flaky, name, sent, retry=RetryPolicy(max_attempts=3, base_delay=0.001))
    assert caught.value.attempts == 3
    assert [f.event for f in caught.value.failures] == [sent[1]]
    assert caught.value.failures[0].error_code == "ProvisionedThroughputExceededException"
    assert len(flaky.calls) == 3
    read = await kinesis_source(kinesis, name, poll=FAST).to_list()
    assert [r.event.seq for r in read] == [1, 3, 4]


async def test_a_throttled_call_is_sent_again_whole(kinesis: Any) -> None:
    from botocore.exceptions import ClientError

    class ThrottledOnce(FlakyKinesis):
        """The stand-in above, whose first call is refused whole, as Kinesis refuses a call over the
        stream's throughput (an error response, no per-record results)."""

        async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
            if not self.calls:
                self.calls.append([])
                raise ClientError({"Error": {"Code": THROTTLED, "Message": "Rate exceeded"}}, "PutRecords")
            return await super().put_records(StreamName, Records)

    name = await new_stream(kinesis)
    sent = events(streams=2, per_stream=3)
    flaky = ThrottledOnce(kinesis, lambda call, e: False)
    published = await publish(flaky, name, sent, retry=RetryPolicy(max_attempts=3, base_delay=0.001))
    assert [p.calls for p in published] == [2]
    read = await kinesis_source(kinesis, name, poll=FAST).to_list()
    assert sorted(r.event.position for r in read) == list(range(1, 7))


async def test_with_max_wait_events_are_gathered_into_batches(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    sent = events(streams=1, per_stream=7)
    sink = kinesis_sink(kinesis, name, max_wait=0.05, batch_size=3)
    published = await Stream.emits(sent, chunk_size=1).through(sink).to_list()
    assert [len(p.events) for p in published] == [3, 3, 1]
    assert [e for p in published for e in p.events] == sent


# ------------------------------------------------------------------------------------------- source


async def test_reading_resumes_after_the_checkpoint_with_no_loss_and_no_repeat(kinesis: Any) -> None:
    name = await new_stream(kinesis, shards=2)
    first = events(streams=4, per_stream=10)
    await publish(kinesis, name, first)

    taken = await kinesis_source(kinesis, name, poll=FAST, limit=7).take(25).to_list()
    checkpoint = advance({}, taken)
    assert 1 <= len(checkpoint) <= 2

    later = events(streams=4, per_stream=5, first_position=41)
    later = [RecordedEvent(e.stream, e.seq + 10, *list(e)[2:]) for e in later]
    await publish(kinesis, name, later)

    rest = await kinesis_source(kinesis, name, after=checkpoint, poll=FAST, limit=7).to_list()
    seen = [r.event for r in taken] + [r.event for r in rest]
    assert sorted(e.position for e in seen) == list(range(1, 61))  # nothing lost, nothing twice
    assert_per_stream_order(seen)
    assert await kinesis_source(kinesis, name, after=advance(checkpoint, rest), poll=FAST).to_list() == []


async def test_live_reading_follows_new_records(kinesis: Any) -> None:
    name = await new_stream(kinesis)
    sent = events(streams=2, per_stream=3)
    got: list[ShardRecord] = []

    async def follow() -> None:
        got.extend(await kinesis_source(kinesis, name, live=True, poll=FAST).take(6).to_list())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.1)
            await publish(kinesis, name, sent[:3])
            await anyio.sleep(0.1)
            await publish(kinesis, name, sent[3:])
    assert [r.event for r in got] == sent


async def test_after_resharding_parents_are_read_before_children(kinesis: Any) -> None:
    name = await new_stream(kinesis, shards=1)
    before = events(streams=6, per_stream=4)
    await publish(kinesis, name, before)
    await kinesis.update_shard_count(StreamName=name, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    shards = (await kinesis.list_shards(StreamName=name))["Shards"]
    children = [s for s in shards if s.get("ParentShardId") == "shardId-000000000000"]
    assert len(children) == 2

    after = events(streams=6, per_stream=4, first_position=25)
    after = [RecordedEvent(e.stream, e.seq + 4, *list(e)[2:]) for e in after]
    await publish(kinesis, name, after)

    read = await kinesis_source(kinesis, name, poll=FAST).to_list()
    assert sorted(r.event.position for r in read) == list(range(1, 49))
    assert_per_stream_order([r.event for r in read])
    assert {r.shard_id for r in read} <= {s["ShardId"] for s in children} | {"shardId-000000000000"}


def test_the_sink_and_source_refuse_trio_clearly() -> None:
    with pytest.raises(RuntimeError, match="asyncio only"):
        anyio.run(kinesis_source(object(), "any").to_list, backend="trio")
    sink = kinesis_sink(object(), "any")
    with pytest.raises(RuntimeError, match="asyncio only"):
        anyio.run(Stream.emit(event("s", 1, 1)).through(sink).drain, backend="trio")
