"""Typed events: encoding, decoding, upcasting, unknown types, bad data."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import anyio
import pytest

from streamsrc import Stream
from streamsrc.codec import Codec
from streamsrc.errors import InvalidEvent, UnknownEventType
from streamsrc.events import EventData, encode_json
from streamsrc.store import open_store


class Tier(enum.Enum):
    FREE = "free"
    PRO = "pro"


@dataclass(frozen=True)
class Address:
    city: str
    zip: str | None = None


@dataclass(frozen=True)
class Signed:
    user: uuid.UUID
    at: datetime
    born: date
    balance: Decimal
    tier: Tier
    address: Address
    tags: tuple[str, ...] = ()
    scores: dict[str, list[int]] = field(default_factory=dict)
    nickname: str | None = None


def make_codec(on_unknown: Any = "raise") -> Codec:
    codec = Codec(on_unknown=on_unknown)
    codec.register()(Signed)
    return codec


def sample() -> Signed:
    return Signed(
        user=uuid.uuid4(),
        at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        born=date(1815, 12, 10),
        balance=Decimal("12.345"),
        tier=Tier.PRO,
        address=Address("London", None),
        tags=("a", "ü"),
        scores={"x": [1, 2]},
    )


def test_round_trip_through_json_keeps_every_field_type() -> None:
    codec = make_codec()
    event = sample()
    data = codec.encode(event, metadata={"by": "test"})
    assert data.type == "Signed"
    assert data.metadata == {"by": "test"}  # version 1 is implied by its absence
    encode_json(data.data)  # the encoded form is plain JSON
    assert codec.decode(data) == event


def test_encode_keeps_a_given_id() -> None:
    codec = make_codec()
    given = uuid.uuid4()
    assert codec.encode(sample(), id=given).id == given


def test_upcasters_run_in_order_from_the_stored_version() -> None:
    codec = Codec()

    @codec.register("Renamed", version=3)
    @dataclass
    class Renamed:
        user: str
        full_name: str
        source: str

    @codec.upcaster("Renamed", from_version=1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"user": data["user"], "full_name": f"{data['first']} {data['last']}"}

    @codec.upcaster("Renamed", from_version=2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "source": "legacy"}

    v1 = EventData("Renamed", {"user": "u", "first": "Ada", "last": "L"})  # no version: 1
    v2 = EventData("Renamed", {"user": "u", "full_name": "Ada L"}, {"schema_version": 2})
    v3 = codec.encode(Renamed("u", "Ada L", "form"))
    assert codec.decode(v1) == Renamed("u", "Ada L", "legacy")
    assert codec.decode(v2) == Renamed("u", "Ada L", "legacy")
    assert codec.decode(v3) == Renamed("u", "Ada L", "form")
    assert v1.data == {"user": "u", "first": "Ada", "last": "L"}  # history is not rewritten


def test_missing_upcaster_or_future_version_is_a_typed_error() -> None:
    codec = Codec()

    @codec.register("E", version=2)
    @dataclass
    class E:
        n: int

    with pytest.raises(InvalidEvent, match="no upcaster"):
        codec.decode(EventData("E", {"n": 1}))
    with pytest.raises(InvalidEvent, match="schema version 3"):
        codec.decode(EventData("E", {"n": 1}, {"schema_version": 3}))


def test_data_that_does_not_fit_the_class_is_invalid() -> None:
    codec = make_codec()
    with pytest.raises(InvalidEvent, match="unexpected fields"):
        codec.decode(EventData("Signed", {"surprise": 1}))
    with pytest.raises(InvalidEvent):
        codec.decode(EventData("Signed", {"user": "not-a-uuid"}))


def test_unknown_types_raise_or_are_skipped_as_configured() -> None:
    raw = Stream.emits([EventData("Other", {}), EventData("Signed", {})])
    with pytest.raises(UnknownEventType) as info:
        make_codec().decode(EventData("Other", {}))
    assert info.value.event_type == "Other"
    with pytest.raises(UnknownEventType):
        anyio.run((raw.take(1) | make_codec().decode_all).to_list)
    assert anyio.run((raw.take(1) | make_codec("skip").decode_all).to_list) == []
    with pytest.raises(ValueError, match="on_unknown"):
        Codec(on_unknown="ignore")  # type: ignore[arg-type]


def test_registration_errors() -> None:
    codec = make_codec()
    with pytest.raises(ValueError, match="already registered"):
        codec.register("Signed")(Address)
    with pytest.raises(TypeError, match="not a dataclass"):
        codec.register()(int)
    with pytest.raises(InvalidEvent, match="not a registered event class"):
        codec.encode(Address("x"))
    assert codec.knows("Signed")
    assert not codec.knows("Address")


@pytest.mark.anyio
async def test_typed_events_survive_a_sqlite_store(tmp_path: Any) -> None:
    codec = make_codec()
    events = [sample(), sample()]
    async with open_store(f"sqlite:///{tmp_path}/codec.db") as store:
        saved = await store.append("s", [codec.encode(e) for e in events])
        assert saved.unwrap().last_seq == 2
        assert await (store.read("s") | codec.decode_all).to_list() == events
