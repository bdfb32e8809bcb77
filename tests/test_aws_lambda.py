"""The Lambda handler adapter, fed envelopes built as AWS documents them (DynamoDB Streams and Kinesis
events, partial batch responses), and end to end from the DynamoDB store on moto."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from returns.result import Failure, Result, Success

from streamsrc.events import EventData, RecordedEvent, encode_json, recorded_to_json
from streamsrc.integrations.aws_lambda import (
    event_handler,
    pipe_handler,
    projection_handler,
)
from streamsrc.projections import MemoryReadModel, Projection, ReadModel, each
from streamsrc.stream import Stream

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KINESIS_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/streamsrc-events"
TABLE_STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-11-27T12:00:00.000"


def event(stream: str, seq: int, position: int, type: str = "Happened") -> RecordedEvent:
    return RecordedEvent(
        stream, seq, position, type, {"n": position}, None, uuid.uuid4(), T0 + timedelta(seconds=position)
    )


def sequence_number(i: int) -> str:
    return f"4959033827149025660855969253836157109592157598913658{i:04d}"


# ---------------------------------------------------------------------- envelopes, as AWS documents them


def kinesis_record(i: int, data: bytes, partition_key: str = "order-1") -> dict[str, Any]:
    """One record of a Kinesis event (AWS Lambda Developer Guide, "Example Kinesis record event")."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number(i),
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{sequence_number(i)}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-1",
        "eventSourceARN": KINESIS_ARN,
    }


def kinesis_event(events: Sequence[RecordedEvent]) -> dict[str, Any]:
    return {
        "Records": [
            kinesis_record(i, encode_json(recorded_to_json(e)).encode(), e.stream)
            for i, e in enumerate(events)
        ]
    }


def event_item(e: RecordedEvent) -> dict[str, Any]:
    """The events table's item of ``e`` in DynamoDB's attribute-value form (the store's documented format)."""
    item: dict[str, Any] = {
        "stream": {"S": e.stream},
        "seq": {"N": str(e.seq)},
        "position": {"N": str(e.position)},
        "type": {"S": e.type},
        "data": {"S": encode_json(e.data)},
        "id": {"S": str(e.id)},
        "time": {"N": str(int(e.time.timestamp()) * 1_000_000 + e.time.microsecond)},
    }
    if e.metadata is not None:
        item["metadata"] = {"S": encode_json(e.metadata)}
    return item


def dynamodb_record(
    sequence: str,
    event_name: str,
    new_image: dict[str, Any] | None,
    old_image: dict[str, Any] | None = None,
    keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One record of a DynamoDB Streams event (AWS Lambda Developer Guide, "Example DynamoDB Streams record
    event")."""
    image = new_image or old_image or {}
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": 1693997155.0,
        "Keys": keys or {k: image[k] for k in ("stream", "seq") if k in image},
        "SequenceNumber": sequence,
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new_image is not None:
        body["NewImage"] = new_image
    if old_image is not None:
        body["OldImage"] = old_image
    return {
        "eventID": uuid.uuid4().hex,
        "eventVersion": "1.1",
        "dynamodb": body,
        "awsRegion": "us-east-1",
        "eventName": event_name,
        "eventSourceARN": TABLE_STREAM_ARN,
        "eventSource": "aws:dynamodb",
    }


def dynamodb_event(events: Sequence[RecordedEvent], first: int = 111) -> dict[str, Any]:
    return {
        "Records": [dynamodb_record(str(first + i), "INSERT", event_item(e)) for i, e in enumerate(events)]
    }


def failures(response: dict[str, Any]) -> list[str]:
    assert set(response) == {"batchItemFailures"}
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


# ---------------------------------------------------------------------- a projection to run


def count_types(counts: Counter[str], e: RecordedEvent) -> Counter[str]:
    if e.type == "Boom":
        raise RuntimeError("cannot count a Boom")
    return counts + Counter({f"{e.stream}#{e.seq}": 1})


def new_projection() -> tuple[Projection[Any], MemoryReadModel[Counter[str]]]:
    return Projection("seen", each(count_types)), MemoryReadModel(Counter())


def applied(model: MemoryReadModel[Counter[str]]) -> list[str]:
    return sorted(model.state)


# ---------------------------------------------------------------------- Kinesis events


def test_a_kinesis_batch_is_applied_and_reports_no_failure() -> None:
    projection, model = new_projection()
    handler = projection_handler(projection, model)
    sent = [event("order-1", 1, 1), event("order-2", 1, 2), event("order-1", 2, 3)]
    assert failures(handler(kinesis_event(sent), None)) == []
    assert model.state == Counter({"order-1#1": 1, "order-2#1": 1, "order-1#2": 1})
    assert anyio.run(model.load_position, "seen") == 3


@pytest.mark.parametrize(
    "bad_data",
    [
        b"not json at all",
        b'{"stream": "order-1"}',
        b"[1, 2, 3]",
        b"\xff\xfe",
    ],
)
def test_a_malformed_kinesis_record_fails_alone_and_stops_the_batch_there(bad_data: bytes) -> None:
    projection, model = new_projection()
    handler = projection_handler(projection, model)
    sent = [event("order-1", seq, seq) for seq in range(1, 6)]
    envelope = kinesis_event(sent)
    envelope["Records"][2] = kinesis_record(2, bad_data)
    assert failures(handler(envelope, None)) == [sequence_number(2)]
    assert applied(model) == ["order-1#1", "order-1#2"]  # none after the failure: AWS retries from it

    # AWS sends the batch again from the failed record; fixed, the rest goes in, in order.
    retry = {"Records": kinesis_event(sent)["Records"][2:]}
    assert failures(handler(retry, None)) == []
    assert applied(model) == [f"order-1#{seq}" for seq in range(1, 6)]


def test_data_that_is_not_base64_is_a_failure_of_its_record() -> None:
    projection, model = new_projection()
    envelope = kinesis_event([event("a", 1, 1), event("a", 2, 2)])
    envelope["Records"][1]["kinesis"]["data"] = "%%% not base64 %%%"
    assert failures(projection_handler(projection, model)(envelope, None)) == [sequence_number(1)]
    assert applied(model) == ["a#1"]


def test_the_first_event_the_projection_fails_on_is_reported_and_nothing_after_it_applied() -> None:
    projection, model = new_projection()
    sent = [event("a", 1, 1), event("b", 1, 2), event("a", 2, 3, "Boom"), event("b", 2, 4)]
    response = projection_handler(projection, model)(kinesis_event(sent), None)
    assert failures(response) == [sequence_number(2)]
    assert applied(model) == ["a#1", "b#1"]


def test_the_projection_filters_apply() -> None:
    model: MemoryReadModel[Counter[str]] = MemoryReadModel(Counter())
    projection = Projection("accounts", each(count_types), types={"Happened"}, stream_prefix="account-")
    sent = [event("account-1", 1, 1), event("order-1", 1, 2, "Boom"), event("account-1", 2, 3, "Other")]
    assert failures(projection_handler(projection, model)(kinesis_event(sent), None)) == []
    assert applied(model) == ["account-1#1"]


def test_a_model_opened_per_invocation() -> None:
    projection, model = new_projection()
    opened: list[str] = []

    @asynccontextmanager
    async def open_model() -> AsyncIterator[ReadModel[Any]]:
        opened.append("open")
        yield model
        opened.append("close")

    handler = projection_handler(projection, open_model)
    handler(kinesis_event([event("a", 1, 1)]), None)
    handler(kinesis_event([event("a", 2, 2)]), None)
    assert opened == ["open", "close", "open", "close"]
    assert applied(model) == ["a#1", "a#2"]


def test_an_event_handler_fails_a_record_by_raising_or_returning_a_failure() -> None:
    seen: list[int] = []

    async def handle(e: RecordedEvent) -> Result[None, str]:
        if e.seq == 3:
            return Failure("seq 3 is not welcome")
        if e.seq == 4:
            raise RuntimeError("boom")
        seen.append(e.seq)
        return Success(None)

    handler = event_handler(handle)
    sent = [event("a", seq, seq) for seq in range(1, 6)]
    assert failures(handler(kinesis_event(sent), None)) == [sequence_number(2)]
    assert seen == [1, 2]
    assert failures(handler(kinesis_event(sent[3:]), None)) == [sequence_number(0)]
    assert seen == [1, 2]


def test_a_pipe_runs_the_batch_and_reports_the_event_it_fails_on() -> None:
    written: list[tuple[str, int]] = []

    async def write(e: RecordedEvent) -> None:
        if e.type == "Boom":
            raise ValueError("no")
        written.append((e.stream, e.seq))

    def pipe(events: Stream[RecordedEvent]) -> Stream[Any]:
        return events.foreach(write)

    handler = pipe_handler(pipe)
    sent = [event("a", 1, 1), event("a", 2, 2), event("a", 3, 3, "Boom"), event("a", 4, 4)]
    assert failures(handler(kinesis_event(sent[:2]), None)) == []
    assert written == [("a", 1), ("a", 2)]
    written.clear()
    assert failures(handler(kinesis_event(sent), None)) == [sequence_number(2)]
    assert ("a", 4) not in written  # not past the failure
    assert set(written) == {("a", 1), ("a", 2)}  # at least once: the pipe may see them twice


def test_a_record_without_a_sequence_number_fails_the_whole_batch_and_applies_nothing() -> None:
    projection, model = new_projection()
    envelope = kinesis_event([event("a", 1, 1), event("a", 2, 2)])
    del envelope["Records"][1]["kinesis"]["sequenceNumber"]
    assert failures(projection_handler(projection, model)(envelope, None)) == [""]  # AWS: a complete failure
    assert applied(model) == []


def test_an_event_that_is_not_a_stream_batch_is_refused() -> None:
    projection, model = new_projection()
    with pytest.raises(ValueError, match="no 'Records' list"):
        projection_handler(projection, model)({"detail-type": "Scheduled Event"}, None)


def test_a_record_of_another_source_is_a_failure_of_that_record() -> None:
    projection, model = new_projection()
    envelope = kinesis_event([event("a", 1, 1)])
    envelope["Records"].append({"eventSource": "aws:sqs", "messageId": "m-1", "body": "{}"})
    envelope["Records"].append(kinesis_record(5, encode_json(recorded_to_json(event("a", 2, 2))).encode()))
    response = projection_handler(projection, model)(envelope, None)
    assert failures(response) == [""]  # it has no sequence number to point at: AWS retries it all
    assert applied(model) == []


# ---------------------------------------------------------------------- DynamoDB Streams events


def test_a_dynamodb_streams_batch_applies_inserted_events_and_skips_the_rest() -> None:
    projection, model = new_projection()
    e1, e2, e3 = event("order-1", 1, 1), event("order-2", 1, 2), event("order-1", 2, 3)
    records = [
        dynamodb_record("111", "INSERT", event_item(e1)),
        dynamodb_record("112", "MODIFY", event_item(e1), old_image=event_item(e1)),
        dynamodb_record("113", "INSERT", event_item(e2)),
        dynamodb_record("114", "REMOVE", None, old_image=event_item(e2)),
        dynamodb_record(
            "115", "INSERT", {"Id": {"N": "101"}, "Message": {"S": "New item!"}}, keys={"Id": {"N": "101"}}
        ),
        dynamodb_record("116", "INSERT", event_item(e3)),
    ]
    assert failures(projection_handler(projection, model)({"Records": records}, None)) == []
    assert applied(model) == ["order-1#1", "order-1#2", "order-2#1"]


def test_a_dynamodb_event_item_that_does_not_decode_fails_alone() -> None:
    projection, model = new_projection()
    sent = [event("a", seq, seq) for seq in range(1, 4)]
    envelope = dynamodb_event(sent)
    envelope["Records"][1]["dynamodb"]["NewImage"]["seq"] = {"N": "two"}
    assert failures(projection_handler(projection, model)(envelope, None)) == ["112"]
    assert applied(model) == ["a#1"]


def test_an_insert_without_a_new_image_asks_for_new_images() -> None:
    projection, model = new_projection()
    envelope = dynamodb_event([event("a", 1, 1)])
    del envelope["Records"][0]["dynamodb"]["NewImage"]
    assert failures(projection_handler(projection, model)(envelope, None)) == ["111"]


def test_the_handler_decodes_the_events_unchanged() -> None:
    got: list[RecordedEvent] = []

    async def keep(e: RecordedEvent) -> None:
        got.append(e)

    sent = [
        RecordedEvent("order-9", 4, 77, "Placed", {"items": ["é", 1.5]}, {"by": "ada"}, uuid.uuid4(), T0),
        event("order-9", 5, 78),
    ]
    assert failures(event_handler(keep)(dynamodb_event(sent), None)) == []
    assert failures(event_handler(keep)(kinesis_event(sent), None)) == []
    assert got == sent + sent


# ---------------------------------------------------------------------- end to end, on moto


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_end_to_end_from_the_dynamodb_store_through_its_stream_to_a_read_model(
    anyio_backend: str, moto_endpoint: str
) -> None:
    from streamsrc.integrations._aws import aws_client
    from streamsrc.store import open_store

    table = f"events-{uuid.uuid4().hex[:10]}"
    url = f"dynamodb://{table}?region=us-east-1&endpoint_url={moto_endpoint}&create=true"
    async with open_store(url) as store:
        for n in range(3):
            assert (await store.append("account-1", [EventData("Deposited", {"n": n})])).unwrap()
        await store.append("account-2", [EventData("Opened", {}), EventData("Deposited", {"n": 9})])
        written = await store.read_all().to_list()

    async with aws_client("dynamodbstreams", region="us-east-1", endpoint_url=moto_endpoint) as streams:
        arn = (await streams.list_streams(TableName=table))["Streams"][0]["StreamArn"]
        shard = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = (
            await streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        )["ShardIterator"]
        records = (await streams.get_records(ShardIterator=iterator, Limit=1000))["Records"]

    # The Lambda event is the records as the stream gives them, made JSON (times as epoch seconds).
    envelope = json.loads(json.dumps({"Records": records}, default=lambda t: t.timestamp()))
    for record in envelope["Records"]:
        record["eventSourceARN"] = arn

    projection, model = new_projection()
    handler = projection_handler(projection, model)
    response = await anyio.to_thread.run_sync(handler, envelope, None)  # Lambda calls it synchronously
    assert failures(response) == []
    assert applied(model) == sorted(f"{e.stream}#{e.seq}" for e in written)
