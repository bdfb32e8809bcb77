"""The event model: names, ids, JSON encoding, and recorded events decoded on first read."""

from __future__ import annotations

import copy
import pickle
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success
from store_urls import opened_store

from streamsrc.errors import InvalidEvent
from streamsrc.events import (
    MAX_NAME_LENGTH,
    EventData,
    RecordedEvent,
    decode_json,
    encode_json,
    new_event_id,
    stored_event,
    uuid_from_bytes,
    validate_stream_name,
)
from streamsrc.testing.conformance import append_ok


def test_event_ids_are_fresh_time_ordered_version_7_uuids() -> None:
    made = [new_event_id() for _ in range(1000)]
    ids = set(made)
    assert len(ids) == 1000
    stamps = [i.int >> 80 for i in made]  # the milliseconds since the epoch
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns() // 1_000_000) < 60_000
    for i in ids:
        assert i.version == 7
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


# ------------------------------------------------------------------ recorded events

_TIME = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
_TIME_US = (_TIME - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
_DATA: dict[str, Any] = {"name": "Zoë 🎉", "tags": [1, None, 2.5], "nested": {"ok": True}}
_METADATA: dict[str, Any] = {"by": "ada", "n": 1}


def _decoded(**changes: Any) -> RecordedEvent:
    """An event built from decoded fields (what user code and tests make)."""
    fields: dict[str, Any] = {
        "stream": "user-1",
        "seq": 3,
        "position": 42,
        "type": "Renamed",
        "data": _DATA,
        "metadata": _METADATA,
        "id": _ID,
        "time": _TIME,
    }
    fields.update(changes)
    return RecordedEvent(**fields)


_STORED_FORMS: dict[str, tuple[bytes | uuid.UUID, int | datetime]] = {
    "bytes-id-us-time": (_ID.bytes, _TIME_US),
    "uuid-id-datetime": (_ID, _TIME),
}


def _stored(form: str = "bytes-id-us-time", data: str | None = None) -> RecordedEvent:
    """The same event as :func:`_decoded`, in a store's stored form (decoded on first read)."""
    raw_id, raw_time = _STORED_FORMS[form]
    text = encode_json(_DATA) if data is None else data
    return stored_event("user-1", 3, 42, "Renamed", text, encode_json(_METADATA), raw_id, raw_time)


@pytest.mark.parametrize("form", sorted(_STORED_FORMS))
def test_stored_event_decodes_its_fields(form: str) -> None:
    e = _stored(form)
    assert isinstance(e, RecordedEvent)
    assert (e.stream, e.seq, e.position, e.type) == ("user-1", 3, 42, "Renamed")
    assert (e.data, e.metadata, e.id, e.time) == (_DATA, _METADATA, _ID, _TIME)
    assert type(e.id) is uuid.UUID
    assert e.time.utcoffset() == timedelta(0)
    assert stored_event("s", 1, 1, "T", "null", None, _ID.bytes, 0).metadata is None


def test_stored_event_decodes_only_what_is_read() -> None:
    """Reading the type or position of an event (a filter, a counter) does not decode its data."""
    e = _stored(data="{not json")
    assert (e.stream, e.seq, e.position, e.type) == ("user-1", 3, 42, "Renamed")
    assert e.metadata == _METADATA
    with pytest.raises(ValueError, match="Expecting"):
        _ = e.data


@pytest.mark.parametrize("form", sorted(_STORED_FORMS))
def test_stored_and_built_events_are_equal_with_one_hash(form: str) -> None:
    built, stored = _decoded(), _stored(form)
    assert built == stored
    assert stored == built
    assert not built != stored  # noqa: SIM202 (the != operator itself is under test)
    assert not stored != built  # noqa: SIM202
    assert hash(built) == hash(stored) == hash(_stored(form))
    assert len({built, stored, _stored(form)}) == 1
    assert {built: "found"}[_stored(form)] == "found"
    assert built == copy.copy(stored) == copy.deepcopy(stored)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("stream", "user-2"),
        ("seq", 4),
        ("position", 43),
        ("type", "Renamed2"),
        ("data", {**_DATA, "name": "Zoe"}),
        ("data", None),
        ("metadata", None),
        ("metadata", {"by": "bob", "n": 1}),
        ("id", uuid.UUID(int=1)),
        ("time", _TIME + timedelta(microseconds=1)),
    ],
)
def test_events_differing_in_one_field_are_not_equal(field: str, other: object) -> None:
    changed = _decoded(**{field: other})
    for same in (_decoded(), _stored(), _stored("uuid-id-datetime")):
        assert changed != same
        assert same != changed
        assert not changed == same  # noqa: SIM201 (the == operator itself is under test)
    assert changed == _decoded(**{field: other})
    assert changed != (changed.stream, changed.seq, changed.position)
    assert changed != "not an event"


@pytest.mark.parametrize("form", ["built", *sorted(_STORED_FORMS)])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(form: str, protocol: int) -> None:
    e = _decoded() if form == "built" else _stored(form)
    back = pickle.loads(pickle.dumps(e, protocol))
    assert type(back) is RecordedEvent
    assert back == e == _decoded()
    assert hash(back) == hash(e)
    assert (back.data, back.metadata, back.id, back.time) == (_DATA, _METADATA, _ID, _TIME)


@pytest.mark.parametrize("form", ["built", *sorted(_STORED_FORMS)])
def test_unpacking_and_indexing_give_decoded_fields_in_order(form: str) -> None:
    e = _decoded() if form == "built" else _stored(form)
    stream, seq, position, type_, data, metadata, id_, time = e
    assert (stream, seq, position, type_) == ("user-1", 3, 42, "Renamed")
    assert (data, metadata, id_, time) == (_DATA, _METADATA, _ID, _TIME)
    fields = ("user-1", 3, 42, "Renamed", _DATA, _METADATA, _ID, _TIME)
    assert tuple(e) == fields
    assert [*e] == list(fields)
    assert len(e) == 8
    assert [e[i] for i in range(8)] == list(fields)
    assert (e[-1], e[4:6], e[::7]) == (_TIME, (_DATA, _METADATA), ("user-1", _TIME))


def test_repr_shows_decoded_fields() -> None:
    stored = _stored()
    text = repr(stored)
    assert text == repr(_decoded()) == repr(_stored("uuid-id-datetime"))
    assert text.startswith("RecordedEvent(stream='user-1', seq=3, position=42, type='Renamed', data={")
    assert "data={'name': 'Zoë 🎉', 'tags': [1, None, 2.5], 'nested': {'ok': True}}" in text
    assert "metadata={'by': 'ada', 'n': 1}" in text
    assert f"id={_ID!r}" in text
    assert f"time={_TIME!r}" in text
    assert '{"name"' not in text  # not the stored JSON text
    assert str(_TIME_US) not in text


def test_data_is_decoded_once_per_event() -> None:
    e = _stored()
    assert e.data is e.data
    assert e.metadata is e.metadata
    assert e.metadata is not None
    e.data["name"] = "changed"
    e.metadata["n"] = 2
    assert (e.data["name"], e.metadata["n"]) == ("changed", 2)  # the same objects, kept
    fresh = _stored()
    assert (fresh.data, fresh.metadata) == (_DATA, _METADATA)  # nothing shared with the first
    assert _DATA["name"] == "Zoë 🎉"


@pytest.mark.parametrize("form", ["built", *sorted(_STORED_FORMS)])
def test_recorded_events_are_immutable(form: str) -> None:
    e = _decoded() if form == "built" else _stored(form)
    before = _decoded()
    for name in ("stream", "seq", "position", "type", "data", "metadata", "id", "time", "other"):
        with pytest.raises(AttributeError):
            setattr(e, name, None)
        with pytest.raises(AttributeError):
            delattr(e, name)
    assert e == before
    assert hash(e) == hash(before)


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["memory", "sqlite"])
async def test_events_read_from_a_store_are_what_was_appended(url: str, tmp_path: Path) -> None:
    events = [
        EventData("Registered", _DATA, metadata=_METADATA),
        EventData("Noted", ["a", 1, None]),
        EventData("Counted", 42, metadata={}),
        EventData("Nulled", None),
    ]
    async with opened_store(url, tmp_path) as store:
        await append_ok(store, "other", [EventData("Other", {})])
        before = datetime.now(UTC)
        written = await append_ok(store, "user-1", events)
        after = datetime.now(UTC)
        reads = {
            "read": await store.read("user-1").to_list(),
            "read_all": await store.read_all(after=1).to_list(),
            "filtered": await store.read_all(types={e.type for e in events}).to_list(),
            "latest": [*([None] * 3), (await store.latest("user-1")).unwrap()],
        }
        for how, records in reads.items():
            for k, (record, event) in enumerate(zip(records, events, strict=True)):
                if record is None:
                    continue
                assert record.time.utcoffset() == timedelta(0), how
                assert before - timedelta(seconds=1) <= record.time <= after + timedelta(seconds=1), how
                expected = RecordedEvent(
                    "user-1",
                    k + 1,
                    written.positions[k],
                    event.type,
                    event.data,
                    event.metadata,
                    event.id,
                    record.time,
                )
                assert record == expected, how
                assert hash(record) == hash(expected), how
                assert tuple(record) == tuple(expected), how
                assert repr(record) == repr(expected), how
                assert pickle.loads(pickle.dumps(record)) == expected, how
        # each read decodes afresh: a change to one event's data is not seen by the next read
        first = reads["read"][0]
        assert first is not None
        assert first.metadata is not None
        first.data["name"] = "changed"
        first.metadata["n"] = 99
        assert (first.data["name"], first.metadata["n"]) == ("changed", 99)
        again = (await store.read("user-1", limit=1).to_list())[0]
        assert (again.data, again.metadata) == (_DATA, _METADATA)
        assert again.data is not first.data
        assert (await store.read_all(after=1, limit=1).to_list())[0].data == _DATA


def test_recorded_events_match_positionally_and_give_a_dict() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    raw = stored_event("user-1", 2, 9, "Renamed", '{"name":"Ada"}', None, uuid.UUID(int=3).bytes, moment)
    match raw:
        case RecordedEvent(stream, seq, position, kind, {"name": name}):
            assert (stream, seq, position, kind, name) == ("user-1", 2, 9, "Renamed", "Ada")
        case _:
            pytest.fail("a stored event did not match the positional pattern")
    assert raw._asdict() == {
        "stream": "user-1",
        "seq": 2,
        "position": 9,
        "type": "Renamed",
        "data": {"name": "Ada"},
        "metadata": None,
        "id": uuid.UUID(int=3),
        "time": moment,
    }
