"""The Lambda handler adapter, fed envelopes built as AWS documents them (DynamoDB Streams and Kinesis
events, partial batch responses, tumbling windows, KPL aggregated records made by AWS's aggregation library,
the context's remaining time), and end to end from the DynamoDB store on moto."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator  # type: ignore[import-untyped]
from returns.result import Failure, Result, Success

from streamsrc.events import EventData, RecordedEvent, encode_json, recorded_to_json
from streamsrc.integrations.aws_lambda import (
    DEFAULT_SAFETY_MARGIN,
    LambdaHandler,
    Window,
    event_handler,
    pipe_handler,
    projection_handler,
    window_handler,
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


# ---------------------------------------------------------------------- tumbling windows

WINDOW = {"start": "2026-11-27T12:00:00Z", "end": "2026-11-27T12:02:00Z"}


def windowed(
    envelope: dict[str, Any],
    state: dict[str, Any],
    *,
    final: bool = False,
    early: bool = False,
    source: str | None = None,
) -> dict[str, Any]:
    """A batch of a mapping with TumblingWindowInSeconds (AWS Lambda Developer Guide, "KinesisTimeWindowEvent"
    and "DynamodbTimeWindowEvent"): the records with the window, its state so far and the shard."""
    kinesis = source == "kinesis" if source else "kinesis" in envelope["Records"][0]
    return {
        **envelope,
        "window": dict(WINDOW),
        "state": state,
        "shardId": "shardId-000000000006" if kinesis else "shard123456789",
        "eventSourceARN": KINESIS_ARN if kinesis else TABLE_STREAM_ARN,
        "isFinalInvokeForWindow": final,
        "isWindowTerminatedEarly": early,
    }


def window_answer(response: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The state and the failures of a TimeWindowEventResponse, which must carry both."""
    assert list(response) == ["state", "batchItemFailures"]
    json.dumps(response)  # Lambda sends it back as JSON
    return response["state"], [f["itemIdentifier"] for f in response["batchItemFailures"]]


def count_streams(state: dict[str, Any], e: RecordedEvent) -> dict[str, Any]:
    if e.type == "Boom":
        raise RuntimeError("cannot count a Boom")
    return {**state, e.stream: state.get(e.stream, 0) + 1}


def test_a_handler_on_a_windowed_mapping_answers_the_state_aws_requires() -> None:
    projection, model = new_projection()
    handler = projection_handler(projection, model)
    sent = [event("a", 1, 1), event("a", 2, 2)]
    for envelope in (kinesis_event(sent), dynamodb_event(sent)):
        assert window_answer(handler(windowed(envelope, {"kept": 1}), None)) == ({"kept": 1}, [])
    assert applied(model) == ["a#1", "a#2"]


@pytest.mark.parametrize("source", ["kinesis", "dynamodb"])
def test_a_window_folds_its_batches_into_its_state_and_ends_with_the_final_invocation(source: str) -> None:
    ended: list[tuple[Window, dict[str, Any]]] = []

    async def end(window: Window, state: dict[str, Any]) -> None:
        ended.append((window, state))

    envelope = kinesis_event if source == "kinesis" else dynamodb_event
    handler = window_handler(count_streams, end)
    first = handler(windowed(envelope([event("a", 1, 1), event("b", 1, 2)]), {}), None)
    assert window_answer(first) == ({"a": 1, "b": 1}, [])
    second = handler(windowed(envelope([event("a", 2, 3)]), first["state"]), None)
    assert window_answer(second) == ({"a": 2, "b": 1}, [])
    assert ended == []

    final = handler(windowed({"Records": []}, second["state"], final=True, source=source), None)
    assert window_answer(final) == ({"a": 2, "b": 1}, [])
    [(window, state)] = ended
    assert state == {"a": 2, "b": 1}
    assert (window.start, window.end) == (T0, T0 + timedelta(minutes=2))
    assert window.final
    assert not window.terminated_early
    assert window.shard_id == ("shardId-000000000006" if source == "kinesis" else "shard123456789")


def test_a_final_invocation_without_records_and_a_window_ended_early() -> None:
    ended: list[Window] = []
    handler = window_handler(count_streams, lambda window, state: ended.append(window))
    envelope = windowed({"Records": []}, {"a": 3}, final=True, early=True, source="dynamodb")
    del envelope["Records"]
    assert window_answer(handler(envelope, None)) == ({"a": 3}, [])
    assert [w.terminated_early for w in ended] == [True]


def test_a_failed_event_in_a_window_keeps_the_state_before_its_record() -> None:
    handler = window_handler(count_streams)
    sent = [event("a", 1, 1), event("b", 1, 2), event("a", 2, 3, "Boom"), event("b", 2, 4)]
    assert window_answer(handler(windowed(kinesis_event(sent), {"a": 5}), None)) == (
        {"a": 6, "b": 1},
        [sequence_number(2)],
    )


def test_a_failing_window_end_fails_the_final_invocation_so_that_aws_calls_it_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[dict[str, Any]] = []

    def end(window: Window, state: dict[str, Any]) -> Result[None, str]:
        calls.append(state)
        return Failure("the report store is down") if len(calls) == 1 else Success(None)

    handler = window_handler(count_streams, end)
    envelope = windowed(kinesis_event([event("a", 1, 1)]), {"a": 1}, final=True)
    with caplog.at_level(logging.ERROR, "streamsrc.integrations.aws_lambda"):
        assert window_answer(handler(envelope, None)) == ({"a": 1}, [""])  # all of it again, from its state
    assert "final callback" in caplog.text
    assert window_answer(handler(envelope, None)) == ({"a": 2}, [])
    assert calls == [{"a": 2}, {"a": 2}]


def test_a_window_handler_refuses_a_mapping_without_windows() -> None:
    with pytest.raises(ValueError, match="TumblingWindowInSeconds"):
        window_handler(count_streams)(kinesis_event([event("a", 1, 1)]), None)


def test_a_fold_that_does_not_return_a_json_object_fails_its_event() -> None:
    handler = window_handler(lambda state, e: [state, e.seq])
    envelope = windowed(kinesis_event([event("a", 1, 1)]), {})
    assert window_answer(handler(envelope, None)) == ({}, [sequence_number(0)])


# ---------------------------------------------------------------------- KPL aggregated Kinesis records


def aggregated(events: Sequence[RecordedEvent | bytes]) -> bytes:
    """One Kinesis record's data holding ``events``, made by AWS's aggregation library (aws_kinesis_agg)."""
    aggregator = RecordAggregator()
    for e in events:
        data = e if isinstance(e, bytes) else encode_json(recorded_to_json(e)).encode()
        assert aggregator.add_user_record(e.stream if isinstance(e, RecordedEvent) else "raw", data) is None
    _, _, data = aggregator.clear_and_get().get_contents()
    assert isinstance(data, bytes)
    return data


def plain(e: RecordedEvent) -> bytes:
    return encode_json(recorded_to_json(e)).encode()


def test_the_user_records_of_a_kpl_aggregated_record_are_applied_in_order() -> None:
    got: list[tuple[str, int]] = []

    async def keep(e: RecordedEvent) -> None:
        got.append((e.stream, e.seq))

    envelope = {
        "Records": [
            kinesis_record(0, plain(event("a", 1, 1))),
            kinesis_record(1, aggregated([event("a", 2, 2), event("b", 1, 3), event("a", 3, 4)])),
            kinesis_record(2, plain(event("b", 2, 5))),
        ]
    }
    assert failures(event_handler(keep)(envelope, None)) == []
    assert got == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]


def test_a_failing_user_record_reports_its_kinesis_record_and_nothing_after_it_is_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    projection, model = new_projection()
    envelope = {
        "Records": [
            kinesis_record(0, aggregated([event("a", 1, 1), event("a", 2, 2)])),
            kinesis_record(1, aggregated([event("a", 3, 3), event("a", 4, 4, "Boom"), event("a", 5, 5)])),
            kinesis_record(2, plain(event("a", 6, 6))),
        ]
    }
    assert failures(projection_handler(projection, model)(envelope, None)) == [sequence_number(1)]
    assert applied(model) == ["a#1", "a#2", "a#3"]  # AWS sends record 1 again: a#3 comes twice

    bad = {"Records": [kinesis_record(3, aggregated([event("a", 7, 7), b"not json"]))]}
    with caplog.at_level(logging.ERROR, "streamsrc.integrations.aws_lambda"):
        assert failures(projection_handler(projection, model)(bad, None)) == [sequence_number(3)]
    assert f"user record 1 of KPL aggregated Kinesis record {sequence_number(3)}" in caplog.text


def test_a_window_does_not_fold_twice_the_user_records_aws_sends_again() -> None:
    handler = window_handler(count_streams)
    envelope = {
        "Records": [
            kinesis_record(0, aggregated([event("a", 1, 1)])),
            kinesis_record(1, aggregated([event("b", 1, 2), event("b", 2, 3, "Boom")])),
        ]
    }
    assert window_answer(handler(windowed(envelope, {}), None)) == ({"a": 1}, [sequence_number(1)])


def damaged(data: bytes) -> list[tuple[str, bytes]]:
    message = data[4:-16]
    cut = message[:-3]
    return [
        ("MD5", data[:-1] + bytes([data[-1] ^ 1])),
        ("MD5", data[:-5]),  # truncated in transit
        ("truncated", data[:4] + cut + hashlib.md5(cut).digest()),  # cut inside the last user record's data
        ("too short", data[:10]),
    ]


@pytest.mark.parametrize("case", range(4))
def test_a_damaged_aggregated_record_is_a_failure_of_that_record(
    case: int, caplog: pytest.LogCaptureFixture
) -> None:
    projection, model = new_projection()
    reason, data = damaged(aggregated([event("a", 2, 2), event("a", 3, 3)]))[case]
    envelope = {"Records": [kinesis_record(0, plain(event("a", 1, 1))), kinesis_record(1, data)]}
    with caplog.at_level(logging.ERROR, "streamsrc.integrations.aws_lambda"):
        assert failures(projection_handler(projection, model)(envelope, None)) == [sequence_number(1)]
    assert applied(model) == ["a#1"]
    assert f"Kinesis record {sequence_number(1)} is a KPL aggregated record that does not read" in caplog.text
    assert reason in caplog.text


# ---------------------------------------------------------------------- the deadline from the context


class LambdaContext:
    """The part of Lambda's context object the handler reads: ``get_remaining_time_in_millis()``.

    The time left is set by the test (``remaining_ms``), as a function's work would use it up.
    """

    function_name = "streamsrc-projection"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_handler_stops_at_the_deadline_and_reports_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    context = LambdaContext(remaining_ms=30_000)
    seen: list[int] = []

    async def slow(e: RecordedEvent) -> None:
        seen.append(e.seq)
        if e.seq == 2:
            context.remaining_ms = 900  # the first two took nearly all the time: 0.9 s left, margin 1 s

    sent = [event("a", seq, seq) for seq in range(1, 6)]
    with caplog.at_level(logging.WARNING, "streamsrc.integrations.aws_lambda"):
        assert failures(event_handler(slow)(kinesis_event(sent), context)) == [sequence_number(2)]
    assert seen == [1, 2]
    assert "3 of 5 records not processed" in caplog.text

    # With a margin of 0.5 s there is time for all of them.
    context.remaining_ms = 30_000
    seen.clear()
    assert failures(event_handler(slow, safety_margin=0.5)(kinesis_event(sent), context)) == []
    assert seen == [1, 2, 3, 4, 5]


def test_a_record_still_running_at_the_deadline_is_cancelled_and_reported() -> None:
    done: list[int] = []

    async def hangs_on_3(e: RecordedEvent) -> None:
        if e.seq == 3:
            await anyio.sleep(60)  # far past the deadline (and it ends, if the handler did not stop it)
        done.append(e.seq)

    context = LambdaContext(remaining_ms=int(DEFAULT_SAFETY_MARGIN * 1000) + 200)  # 0.2 s to work
    sent = [event("a", seq, seq) for seq in range(1, 5)]
    assert failures(event_handler(hangs_on_3)(kinesis_event(sent), context)) == [sequence_number(2)]
    assert done == [1, 2]


def test_a_batch_still_running_at_the_deadline_is_reported_whole() -> None:
    done: list[int] = []

    async def hang(e: RecordedEvent) -> RecordedEvent:
        if e.seq == 2:
            await anyio.sleep(60)  # far past the deadline
        done.append(e.seq)
        return e

    handler = pipe_handler(lambda events: events.eval_map(hang), safety_margin=0.5)
    sent = [event("a", seq, seq) for seq in range(1, 4)]
    assert failures(handler(dynamodb_event(sent), LambdaContext(remaining_ms=700))) == ["111"]
    assert done == [1]


def test_no_time_left_at_the_start_processes_nothing() -> None:
    projection, model = new_projection()
    handler = projection_handler(projection, model)
    sent = [event("a", 1, 1), event("a", 2, 2)]
    assert failures(handler(kinesis_event(sent), LambdaContext(remaining_ms=800))) == [sequence_number(0)]
    assert applied(model) == []
    assert failures(handler(kinesis_event(sent), LambdaContext(remaining_ms=60_000))) == []
    assert applied(model) == ["a#1", "a#2"]


def test_a_window_stopped_at_the_deadline_answers_the_state_of_the_records_done() -> None:
    context = LambdaContext(remaining_ms=30_000)

    def count_then_run_late(state: dict[str, Any], e: RecordedEvent) -> dict[str, Any]:
        if e.seq == 2:
            context.remaining_ms = 10
        return count_streams(state, e)

    handler = window_handler(count_then_run_late)
    sent = [event("a", seq, seq) for seq in range(1, 5)]
    assert window_answer(handler(windowed(kinesis_event(sent), {}), context)) == (
        {"a": 2},
        [sequence_number(2)],
    )


def test_a_window_end_still_running_at_the_deadline_fails_the_final_invocation() -> None:
    async def slow_report(window: Window, state: dict[str, Any]) -> None:
        await anyio.sleep(60)  # far past the deadline

    handler = window_handler(count_streams, slow_report, safety_margin=0.5)
    envelope = windowed(kinesis_event([event("a", 1, 1)]), {"a": 1}, final=True)
    assert window_answer(handler(envelope, LambdaContext(remaining_ms=700))) == ({"a": 1}, [""])
    no_records = windowed({"Records": []}, {"a": 1}, final=True, source="kinesis")
    assert window_answer(handler(no_records, LambdaContext(remaining_ms=400))) == ({"a": 1}, [""])  # no time


def test_the_safety_margin_is_seconds_zero_or_more() -> None:
    with pytest.raises(ValueError, match="safety_margin"):
        event_handler(lambda e: anyio.lowlevel.checkpoint(), safety_margin=-1)


# ---------------------------------------------------------------------- inside a running event loop


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_called_inside_a_running_event_loop_the_error_says_what_to_await(backend: str) -> None:
    projection, model = new_projection()
    handler: LambdaHandler = projection_handler(projection, model)
    envelope = kinesis_event([event("a", 1, 1)])

    async def main() -> None:
        with pytest.raises(RuntimeError, match=re.escape("await handler.handle(event, context)")):
            handler(envelope, LambdaContext(remaining_ms=60_000))
        assert failures(await handler.handle(envelope, LambdaContext(remaining_ms=60_000))) == []

    anyio.run(main, backend=backend)
    assert applied(model) == ["a#1"]


# ---------------------------------------------------------------------- end to end, on moto


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_end_to_end_from_the_dynamodb_store_through_its_stream_to_a_read_model(
    anyio_backend: str, moto_endpoint: str
) -> None:
    from streamsrc.integrations._aws import aws_client
    from streamsrc.store import open_store

    table = f"events-{uuid.uuid4().hex[:10]}"
    # order=global: the events table's records carry their positions (order=stream, where projections
    # follow the index's log table instead: tests/test_dynamodb_index.py's end-to-end test).
    url = f"dynamodb://{table}?region=us-east-1&endpoint_url={moto_endpoint}&create=true&order=global"
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
