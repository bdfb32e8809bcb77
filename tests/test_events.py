"""The event model: names, ids, JSON encoding."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from streamsrc.errors import InvalidEvent
from streamsrc.events import (
    MAX_NAME_LENGTH,
    EventData,
    decode_json,
    encode_json,
    new_event_id,
    uuid_from_bytes,
    validate_stream_name,
)


def test_event_ids_are_fresh_version_4_uuids() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    for i in ids:
        assert i.version == 4
        assert i.variant == uuid.RFC_4122
        assert uuid.UUID(str(i)) == i


@given(st.binary(min_size=16, max_size=16))
def test_uuid_from_bytes_agrees_with_uuid(raw: bytes) -> None:
    fast = uuid_from_bytes(raw)
    assert fast == uuid.UUID(bytes=raw)
    assert hash(fast) == hash(uuid.UUID(bytes=raw))
    assert str(fast) == str(uuid.UUID(bytes=raw))


def test_event_data_is_immutable_and_keeps_its_id() -> None:
    e = EventData("T", {"a": 1})
    assert e.id == e.id
    assert isinstance(e.id, uuid.UUID)
    with pytest.raises(AttributeError):
        e.type = "U"  # type: ignore[misc]
    assert EventData("T", {}).id != EventData("T", {}).id


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trip(value: object) -> None:
    assert decode_json(encode_json(value)) == value


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), {1, 2}, object(), b"bytes", "\ud800", {"k": "\udfff"}],
    ids=["nan", "inf", "set", "object", "bytes", "lone-surrogate", "nested-surrogate"],
)
def test_values_that_are_not_json_are_invalid_events(bad: object) -> None:
    with pytest.raises(InvalidEvent):
        encode_json(bad)


def test_deep_nesting_is_an_invalid_event_not_a_crash() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidEvent):
        encode_json(deep)


@pytest.mark.parametrize(
    "name", ["a", "user-42", "名前", "x" * MAX_NAME_LENGTH, "it's; DROP TABLE events;--", "../etc/passwd"]
)
def test_good_stream_names(name: str) -> None:
    assert validate_stream_name(name) == Success(name)


@pytest.mark.parametrize(
    "name",
    ["", "x" * (MAX_NAME_LENGTH + 1), "a\nb", "a\x00b", "\x7f", "a\u0085", "\ud800", 42, None],
    ids=["empty", "too-long", "newline", "nul", "del", "c1-control", "surrogate", "int", "none"],
)
def test_bad_stream_names_are_failures(name: object) -> None:
    result = validate_stream_name(name)
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), InvalidEvent)
