"""pydantic v2 models as events and as entity states, next to dataclasses (streamsrc[pydantic])."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest
from pydantic import BaseModel, ConfigDict, Field
from returns.result import Result, Success

from streamsrc.codec import Codec, conforms, from_json_value, to_json_value
from streamsrc.entity import Decider, Entity, EveryN, Rejection, Repository
from streamsrc.errors import CorruptEvent, InvalidEvent, UndecodableEvent
from streamsrc.events import EventData, new_event_id, stored_event
from streamsrc.store import open_store

codec = Codec()


class Address(BaseModel):
    city: str
    zip: str


@codec.register("UserRegistered")
class UserRegistered(BaseModel):
    model_config = ConfigDict(frozen=True)
    user_id: UUID
    email: str
    age: int = Field(ge=0)
    address: Address
    at: datetime
    balance: Decimal = Decimal("0")


@codec.register("Renamed", version=2)
class Renamed(BaseModel):
    user: str
    full_name: str


@codec.upcaster("Renamed", from_version=1)
def _join(data: dict[str, Any]) -> dict[str, Any]:
    return {"user": data["user"], "full_name": f"{data['first']} {data['last']}"}


def sample() -> UserRegistered:
    return UserRegistered(
        user_id=UUID(int=7),
        email="ada@example.com",
        age=36,
        address=Address(city="London", zip="W1"),
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        balance=Decimal("9.50"),
    )


def test_a_model_round_trips_as_plain_json() -> None:
    event = codec.encode(sample())
    assert event.type == "UserRegistered"
    assert event.data == {
        "user_id": "00000000-0000-0000-0000-000000000007",
        "email": "ada@example.com",
        "age": 36,
        "address": {"city": "London", "zip": "W1"},
        "at": "2026-01-02T03:04:05Z",
        "balance": "9.50",
    }
    assert event.metadata is None  # version 1 is not written
    assert codec.decode(event) == sample()


def test_upcasters_run_before_validation() -> None:
    old = EventData("Renamed", {"user": "u1", "first": "Ada", "last": "Lovelace"})
    assert codec.decode(old) == Renamed(user="u1", full_name="Ada Lovelace")
    new = codec.encode(Renamed(user="u1", full_name="Ada L"))
    assert new.metadata == {"schema_version": 2}
    assert codec.decode(new) == Renamed(user="u1", full_name="Ada L")


def test_a_stored_event_that_does_not_validate_is_corrupt_and_names_the_field() -> None:
    bad = dict(codec.encode(sample()).data, age=-1)
    stored = stored_event("user-1", 3, 12, "UserRegistered", _json(bad), None, new_event_id(), 0)
    with pytest.raises(UndecodableEvent) as info:
        codec.decode(stored)
    error = info.value
    assert isinstance(error, CorruptEvent)
    assert isinstance(error, InvalidEvent)
    assert (error.stream, error.seq, error.position, error.field) == ("user-1", 3, 12, "data.age")
    assert "greater than or equal to 0" in str(error)

    nested = dict(codec.encode(sample()).data, address={"city": "Paris"})
    with pytest.raises(UndecodableEvent) as info:
        codec.decode(EventData("UserRegistered", nested))
    assert info.value.field == "data.address.zip"
    with pytest.raises(UndecodableEvent) as info:
        codec.decode(EventData("UserRegistered", ["not", "an", "object"]))
    assert info.value.field == "data"


def test_encoding_a_bad_value_is_invalid_and_names_the_field() -> None:
    broken = UserRegistered.model_construct(**{**dict(sample()), "age": "thirty"})
    with pytest.raises(InvalidEvent, match="field 'age'"):
        codec.encode(broken)


def test_dataclass_decode_failures_are_undecodable_events_too() -> None:
    from dataclasses import dataclass

    plain = Codec()

    @plain.register()
    @dataclass
    class Deposited:
        amount: int

    with pytest.raises(UndecodableEvent, match="unexpected fields") as info:
        plain.decode(EventData("Deposited", {"amount": 1, "memo": "x"}))
    assert info.value.field == "data"


def test_models_nest_in_to_and_from_json_value_and_conform() -> None:
    value = {"who": sample()}
    data = to_json_value(value)
    assert data["who"]["address"] == {"city": "London", "zip": "W1"}
    back = from_json_value(dict[str, UserRegistered], data)
    assert back == value
    assert conforms(UserRegistered, sample())
    assert not conforms(UserRegistered, UserRegistered.model_construct(**{**dict(sample()), "age": "x"}))


class Account(BaseModel):
    owner: str = ""
    balance: int = 0


@codec.register("Deposited")
class Deposited(BaseModel):
    owner: str
    amount: int


def _decide(amount: int, state: Account) -> Result[list[Deposited], Rejection]:
    return Success([Deposited(owner="ada", amount=amount)])


def _evolve(state: Account, event: Deposited) -> Account:
    return Account(owner=event.owner, balance=state.balance + event.amount)


@pytest.mark.anyio
async def test_a_model_state_is_snapshotted_and_a_schema_change_replays(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/accounts.db"
    account: Entity[str, int, Deposited, Account] = Entity(
        "account", Decider(Account(), _evolve, _decide), codec, state_type=Account, snapshots=EveryN(2)
    )
    async with open_store(url) as store:
        accounts = Repository(store, account)
        for amount in (5, 7, 30):
            (await accounts.handle("a1", amount)).unwrap()
        assert accounts.snapshot_stats.saved == 1
        snapshot = (await store.load_snapshot("account:a1", 1)).unwrap()
        assert snapshot.state == {"owner": "ada", "balance": 12}
        assert (await accounts.load("a1")).state == Account(owner="ada", balance=42)
        # a snapshot that no longer validates is skipped: the state is replayed from the events
        await store.save_snapshot("account:a1", 2, {"owner": "ada", "balance": "lots"}, 1)
        assert (await accounts.load("a1")).state == Account(owner="ada", balance=42)
        # a new state schema (version 2) ignores the old snapshots
        v2: Entity[str, int, Deposited, Account] = Entity(
            "account",
            Decider(Account(), _evolve, _decide),
            codec,
            state_type=Account,
            snapshots=EveryN(2),
            schema_version=2,
        )
        assert (await Repository(store, v2).load("a1")).state == Account(owner="ada", balance=42)


def test_the_codec_does_not_import_pydantic_and_works_without_it() -> None:
    program = """
import sys
sys.modules["pydantic"] = None  # as if it were not installed: importing it fails
from dataclasses import dataclass
import anyio
from streamsrc.codec import Codec, to_json_value
from streamsrc.store import open_store
codec = Codec()
@codec.register()
@dataclass
class Deposited:
    amount: int
async def main():
    async with open_store("memory://") as store:
        await store.append("a", [codec.encode(Deposited(5))])
        print([codec.decode(e) for e in await store.read("a").to_list()], to_json_value({"n": 1}))
anyio.run(main)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[Deposited(amount=5)] {'n': 1}"
    check = "import sys, streamsrc.codec, streamsrc.entity; print('pydantic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def test_sync_run_of_a_store_round_trip() -> None:
    async def main() -> list[Any]:
        async with open_store("memory://") as store:
            await store.append("u", [codec.encode(sample())])
            return [codec.decode(e) for e in await store.read("u").to_list()]

    assert anyio.run(main) == [sample()]
