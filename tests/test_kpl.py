"""KPL aggregated records: read back what AWS's own aggregation library (aws_kinesis_agg) writes, and refuse
damaged ones with AggregationError, never another exception."""

from __future__ import annotations

import hashlib

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsrc.integrations._kpl import MAGIC, AggregationError, UserRecord, deaggregate, is_aggregated

Sent = tuple[str, str | None, bytes]

sent_records = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=12),
        st.none() | st.text("0123456789", min_size=1, max_size=38),  # an explicit hash key is a decimal
        st.binary(max_size=64),
    ),
    min_size=1,
    max_size=12,
)


def aggregate(records: list[Sent]) -> bytes:
    """One Kinesis record's data, as aws_kinesis_agg (AWS's aggregation library) makes it."""
    aggregator = RecordAggregator()
    for partition_key, hash_key, data in records:
        assert aggregator.add_user_record(partition_key, data, hash_key) is None  # it fits
    _, _, data = aggregator.clear_and_get().get_contents()
    assert isinstance(data, bytes)
    return data


def message_of(data: bytes) -> bytes:
    return data[len(MAGIC) : -16]


def with_message(message: bytes) -> bytes:
    """An aggregate around ``message``, with its MD5 right."""
    return MAGIC + message + hashlib.md5(message).digest()


@settings(max_examples=60, deadline=None)
@given(sent_records)
def test_the_user_records_of_an_aggregate_made_by_aws_library_in_order(records: list[Sent]) -> None:
    data = aggregate(records)
    assert is_aggregated(data)
    assert deaggregate(data) == [UserRecord(key, hash_key, payload) for key, hash_key, payload in records]


def test_shared_keys_are_looked_up_in_the_tables() -> None:
    records: list[Sent] = [("order-1", None, b"a"), ("order-2", "42", b"b"), ("order-1", "42", b"c")]
    data = aggregate(records)
    assert message_of(data).count(b"order-1") == 1  # the library writes each key once
    assert [(r.partition_key, r.explicit_hash_key, r.data) for r in deaggregate(data)] == records


@settings(max_examples=20, deadline=None)
@given(sent_records, st.data())
def test_every_damaged_byte_is_caught_by_the_md5(records: list[Sent], draw: st.DataObject) -> None:
    data = bytearray(aggregate(records))
    at = draw.draw(st.integers(len(MAGIC), len(data) - 1))
    data[at] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(AggregationError, match="MD5"):
        deaggregate(bytes(data))


def test_every_truncation_is_refused() -> None:
    data = aggregate([("order-1", None, b'{"n": 1}'), ("order-2", "7", b'{"n": 2}')])
    for end in range(len(data)):
        with pytest.raises(AggregationError):
            deaggregate(data[:end])


@settings(max_examples=30, deadline=None)
@given(sent_records, st.data())
def test_a_truncated_message_with_a_right_md5_reads_as_a_prefix_or_is_refused(
    records: list[Sent], draw: st.DataObject
) -> None:
    message = message_of(aggregate(records))
    cut = draw.draw(st.integers(0, len(message) - 1))
    expected = [UserRecord(key, hash_key, payload) for key, hash_key, payload in records]
    try:
        got = deaggregate(with_message(message[:cut]))
    except AggregationError:
        return
    assert got == expected[: len(got)]  # cut between two whole records: a valid, shorter aggregate


def test_unknown_fields_and_tags_are_skipped() -> None:
    tag = b"\x22\x05\x0a\x01t\x12\x00"  # Record.tags: Tag{key "t", value ""}
    record = b"\x08\x00\x1a\x02hi" + tag + b"\x78\x01"  # ... and field 15, a varint
    unknown = b"\x7d\x00\x00\x00\x00"  # field 15, a fixed32
    message = b"\x0a\x01k" + b"\x1a" + bytes([len(record)]) + record + unknown
    assert deaggregate(with_message(message)) == [UserRecord("k", None, b"hi")]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"\x1a\x04\x08\x00\x1a\x00", "partition key index 0 is outside the table of 0"),
        (b"\x0a\x01k\x1a\x02\x1a\x00", "no partition key index"),
        (b"\x0a\x01k\x1a\x02\x08\x00", "no data"),
        (b"\x0a\x01k\x1a\x06\x08\x00\x10\x03\x1a\x00", "explicit hash key index 3 is outside the table of 0"),
        (b"\x0a\x02\xff\xfe\x1a\x04\x08\x00\x1a\x00", "partition key is not UTF-8"),
        (b"\x0a\x01k\x1a\x04\x0a\x00\x1a\x00", "field 1 has wire type 2, not 0"),
        (b"\x08\x01", "field 1 has wire type 0, not 2"),
        (b"\x0b\x0c", "wire type 3"),
        (b"\x02\x00", "field number 0"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x08" + b"\xff" * 9 + b"\x7f", "does not fit in 64 bits"),
        (b"\x1a\x09\x08\x00", "needs 9 bytes, 2 are left"),
        (b"\x1a", "runs past the end"),
    ],
)
def test_a_message_that_is_not_an_aggregated_record_is_refused_saying_why(message: bytes, error: str) -> None:
    with pytest.raises(AggregationError, match=error):
        deaggregate(with_message(message))


def test_an_empty_aggregate_holds_no_user_records() -> None:
    assert deaggregate(with_message(b"")) == []


def test_data_without_the_magic_number_is_not_an_aggregate() -> None:
    assert not is_aggregated(b'{"stream": "order-1"}')
    with pytest.raises(AggregationError, match="magic number"):
        deaggregate(b'{"stream": "order-1"}' + bytes(16))
    with pytest.raises(AggregationError, match="too short"):
        deaggregate(MAGIC + bytes(15))
