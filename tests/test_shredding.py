"""Crypto-shredding (streamsrc.shredding): forget a user of the accounts example on real stores."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from returns.maybe import Nothing
from returns.result import Failure

from streamsrc.entity import EveryN, Repository
from streamsrc.errors import CorruptEvent, InvalidEvent, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.examples.accounts import Accounts, users
from streamsrc.projections import MemoryReadModel, Projection, Projector
from streamsrc.shredding import (
    FORGOTTEN,
    PERSONAL,
    MemoryKeyStore,
    ShreddingStore,
    StoreKeyStore,
    SubjectKey,
)
from streamsrc.store import Store, open_store
from streamsrc.store.memory import MemoryStore
from streamsrc.transforms import AesGcm, TransformingStore, Zlib

PERSONAL_FIELDS = {"UserRegistered": ["name", "email"], "NameChanged": ["name"], "EmailChanged": ["email"]}


def user_of(stream: str, event: EventData) -> str | None:
    """The accounts example's subject: the user a user stream is about."""
    return stream.removeprefix("user-") if stream.startswith("user-") else None


def shredding(inner: Store, **options: Any) -> ShreddingStore:
    return ShreddingStore(
        inner,
        PERSONAL_FIELDS,
        subject=user_of,
        snapshot_subject=lambda key: key.removeprefix("user:") if key.startswith("user:") else None,
        **options,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def inner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    async with open_store(url) as store:
        yield store


async def register_two(store: ShreddingStore) -> Accounts:
    accounts = Accounts(store)
    (await accounts.register("u1", "ada", "Ada Lovelace", "ada@example.com", by="admin")).unwrap()
    (await accounts.update("u1", by="ada", name="Ada King")).unwrap()
    (await accounts.register("u2", "alan", "Alan Turing", "alan@example.com", by="admin")).unwrap()
    return accounts


def emails(counts: dict[str, str], events: list[RecordedEvent]) -> dict[str, str]:
    """A read model: each user's email, from the events that carry one."""
    return {**counts, **{e.data["user_id"]: e.data["email"] for e in events}}


@pytest.mark.anyio
async def test_forgetting_a_user_replaces_their_personal_fields_with_the_marker(inner: Store) -> None:
    store = shredding(inner)
    accounts = await register_two(store)
    stored = [e for e in await inner.read_all().to_list() if e.stream == "user-u1"]
    assert "ada@example.com" not in json.dumps([e.data for e in stored])
    assert stored[0].data["user_id"] == "u1"  # the other fields stay readable
    assert stored[0].data["name"] is None
    assert stored[0].data["email"] is None
    assert (await accounts.users.load("u1")).state.email == "ada@example.com"

    position = await store.forget("u1", {"by": "dpo", "ticket": "GDPR-7"})

    first, second = await store.read("user-u1").to_list()
    assert first.data == {"user_id": "u1", "username": "ada", "name": FORGOTTEN, "email": FORGOTTEN}
    assert second.data == {"user_id": "u1", "name": FORGOTTEN}
    assert first.metadata == {"by": "admin", "$subject": "u1", "$forgotten": True}
    user = (await accounts.users.load("u1")).state
    assert (user.name, user.email, user.username, user.exists) == (FORGOTTEN, FORGOTTEN, "ada", True)
    assert (await accounts.users.load("u2")).state.email == "alan@example.com"  # others are untouched
    # the forgetting is in the log
    audit = [e for e in await store.read_all().to_list() if e.type == "SubjectForgotten"]
    assert [(e.position, e.stream, e.data, e.metadata) for e in audit] == [
        (position, "$forgotten-u1", {"subject": "u1"}, {"by": "dpo", "ticket": "GDPR-7"})
    ]


@pytest.mark.anyio
async def test_a_projection_rebuilt_after_forgetting_sees_the_marker(inner: Store) -> None:
    store = shredding(inner)
    await register_two(store)
    wanted = Projection("emails", emails, types={"UserRegistered", "EmailChanged"})
    before = MemoryReadModel[dict[str, str]]({})
    await Projector[Any](store, wanted, before).catch_up()
    assert before.state == {"u1": "ada@example.com", "u2": "alan@example.com"}
    await store.forget("u1")
    rebuilt = MemoryReadModel[dict[str, str]]({})
    await Projector[Any](store, wanted, rebuilt).catch_up()
    assert rebuilt.state == {"u1": FORGOTTEN, "u2": "alan@example.com"}
    # and every event of the log still reads, with no exception (types, data, metadata)
    counts = Counter(e.type for e in await store.read_all().to_list() if e.data is not None)
    assert counts["SubjectForgotten"] == 1


@pytest.mark.anyio
async def test_forgotten_is_forgotten_for_every_reader_and_the_key_row_is_a_tombstone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    async with open_store(url) as inner:
        store = shredding(inner)
        await register_two(store)
        before = _key_rows(tmp_path / "events.db")
        assert any("key" in state for state in before.values())
        await store.forget("u1")
    after = _key_rows(tmp_path / "events.db")
    u1 = {k: v for k, v in after.items() if k.startswith("$key:u1:")}
    assert u1
    assert all(state == {"deleted": True} for state in u1.values())
    for old in (v for k, v in before.items() if k.startswith("$key:u1:")):  # no key bytes left in the row
        assert old["key"] not in json.dumps(after)
    async with open_store(url) as inner:  # another process, with no cache
        first = (await shredding(inner).read("user-u1").to_list())[0]
        assert first.data["email"] == FORGOTTEN
        assert (await shredding(inner).latest("user-u2")).unwrap().data["name"] == "Alan Turing"


def _key_rows(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT key, state FROM snapshots WHERE key LIKE '$key:%'").fetchall()
    return {key: json.loads(state) for key, state in rows}


@pytest.mark.anyio
async def test_snapshots_of_a_subject_are_encrypted_and_dropped_when_forgotten(inner: Store) -> None:
    store = shredding(inner)
    repo = Repository(store, replace(users, snapshots=EveryN(2)))
    accounts = Accounts(store)
    accounts.users = repo
    await register_two(store)
    (await accounts.update("u1", by="ada", email="ada@king.org")).unwrap()
    assert repo.snapshot_stats.saved >= 1
    raw = (await inner.load_snapshot("user:u1", 1)).unwrap().state
    assert set(raw) == {PERSONAL, "$subject", "key"}
    assert "ada@king.org" not in json.dumps(raw)  # "@" is in neither base64 nor a key id
    assert (await store.load_snapshot("user:u1", 1)).unwrap().state["email"] == "ada@king.org"
    await store.forget("u1")
    assert await store.load_snapshot("user:u1", 1) == Nothing
    user = (await repo.load("u1")).state
    assert (user.name, user.email) == (FORGOTTEN, FORGOTTEN)


@pytest.mark.anyio
async def test_a_subject_forgotten_and_back_gets_a_new_key(inner: Store) -> None:
    store = ShreddingStore(inner, {"Note": ["text"]})
    meta = {"$subject": "s1"}
    await store.append("notes", [EventData("Note", {"text": "old"}, meta)])
    await store.forget("s1")
    await store.append("notes", [EventData("Note", {"text": "new"}, meta)])
    assert [e.data["text"] for e in await store.read("notes").to_list()] == [FORGOTTEN, "new"]
    keys = [e.data["key_id"] for e in await inner.read("$keys-s1").to_list() if e.type == "SubjectKeyCreated"]
    assert len(set(keys)) == 2


@pytest.mark.anyio
async def test_two_writers_making_a_subjects_first_key_agree_on_one(inner: Store) -> None:
    found: list[SubjectKey] = []

    async def make() -> None:
        found.append(await StoreKeyStore(inner).current("u7"))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(make)
    assert len({k.key_id for k in found}) == 1
    assert len({k.key for k in found}) == 1
    created = [e for e in await inner.read("$keys-u7").to_list() if e.type == "SubjectKeyCreated"]
    assert len(created) == 1


@pytest.mark.anyio
async def test_damaged_personal_fields_are_corrupt_and_reading_never_fails(inner: Store) -> None:
    store = ShreddingStore(inner, {"Note": ["text"]}, keys=MemoryKeyStore())
    await store.append("notes", [EventData("Note", {"text": "secret", "n": 1}, {"$subject": "s1"})])
    good = (await inner.latest("notes")).unwrap()
    assert good.metadata is not None
    sealed = bytearray(base64.b64decode(good.data[PERSONAL]))
    sealed[-1] ^= 1
    flipped = {**good.data, PERSONAL: base64.b64encode(sealed).decode()}
    await inner.append("notes", [EventData("Note", flipped, good.metadata)])
    await inner.append("notes", [EventData("Note", good.data, good.metadata)])  # moved to another id
    events = await store.read("notes").to_list()  # the read itself does not fail
    assert events[0].data == {"text": "secret", "n": 1}
    for event in events[1:]:
        assert event.type == "Note"
        with pytest.raises(CorruptEvent) as info:
            _ = event.data
        assert info.value.stream == "notes"
    await inner.append("bad", [EventData("Note", {"n": 1}, {PERSONAL: "nonsense"})])
    with pytest.raises(CorruptEvent, match="malformed"):
        await store.read("bad").to_list()


@pytest.mark.anyio
async def test_reserved_keys_and_a_failing_key_store_are_failures_of_the_append() -> None:
    store = ShreddingStore(MemoryStore(), {"Note": ["text"]})
    refused = await store.append("n", [EventData("Note", {"text": "x", PERSONAL: 1}, {"$subject": "s"})])
    assert isinstance(refused, Failure)
    assert isinstance(refused.failure(), InvalidEvent)

    class Down(MemoryKeyStore):
        async def current(self, subject: str) -> SubjectKey:
            raise StoreUnavailable("the key vault is down")

    down = ShreddingStore(MemoryStore(), {"Note": ["text"]}, keys=Down())
    failed = await down.append("n", [EventData("Note", {"text": "x"}, {"$subject": "s"})])
    assert isinstance(failed, Failure)
    assert isinstance(failed.failure(), StoreUnavailable)
    assert await down.head() == 0
    # events without a subject or personal fields pass through untouched
    plain = EventData("Note", {"text": "x"})
    assert await store.encode_event("n", plain) is plain


@pytest.mark.anyio
async def test_shredding_composes_with_payload_transforms(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/events.db") as raw:
        master = AesGcm({"m1": b"m" * 32}, "m1")
        store = shredding(TransformingStore(raw, [Zlib(), master]))
        accounts = await register_two(store)
        await store.forget("u2")
        assert (await accounts.users.load("u1")).state.name == "Ada King"
        assert (await accounts.users.load("u2")).state.name == FORGOTTEN
        rows = _key_rows(tmp_path / "events.db")
        assert all("$transformed" in state or state == {"deleted": True} for state in rows.values())
