"""Payload transforms (streamsrc.transforms): compression and encryption around a real store."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from returns.maybe import Nothing
from returns.result import Failure

from streamsrc.errors import CorruptEvent, InvalidEvent, KeyUnavailable, UnknownTransform
from streamsrc.events import EventData, RecordedEvent
from streamsrc.migrate import copy
from streamsrc.store import Store, open_store
from streamsrc.store.memory import MemoryStore
from streamsrc.transforms import TRANSFORMED, TRANSFORMS, AesGcm, TransformingStore, Zlib, transforms_of

K1, K2 = b"1" * 32, b"2" * 32
BIG = {"email": "ada@example.com", "bio": "Analyst and metaphysician. " * 20}
SMALL = {"n": 1}


@pytest.fixture(params=["memory", "sqlite"])
async def inner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    async with open_store(url) as store:
        yield store


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT stream, seq, id, type, data, metadata, time FROM events ORDER BY position"
        ).fetchall()


@pytest.mark.anyio
async def test_events_read_back_as_appended_and_are_stored_transformed(inner: Store) -> None:
    store = TransformingStore(inner, [Zlib(), AesGcm({"k1": K1}, "k1")])
    assert isinstance(store, Store)
    events = [EventData("Big", BIG, {"by": "ada"}), EventData("Small", SMALL)]
    assert (await store.append("user-1", events)).unwrap().last_seq == 2
    back = await store.read("user-1").to_list()
    assert [(e.type, e.data, e.metadata, e.id) for e in back] == [
        ("Big", BIG, {"by": "ada"}, events[0].id),
        ("Small", SMALL, None, events[1].id),
    ]
    assert [e.data for e in await store.read_all().to_list()] == [BIG, SMALL]
    assert (await store.latest("user-1")).unwrap().data == SMALL
    stored = await inner.read("user-1").to_list()
    assert list(stored[0].data) == [TRANSFORMED]
    assert [t[:2] for t in transforms_of(stored[0])] == [["zlib"], ["aes-gcm", "k1"]]
    assert [t[:2] for t in transforms_of(stored[1])] == [["aes-gcm", "k1"]]  # too small to compress
    assert "ada@example.com" not in json.dumps(stored[0].data)
    assert stored[0].metadata is not None
    assert stored[0].metadata["by"] == "ada"  # the rest of the metadata stays readable
    assert len(stored[0].data[TRANSFORMED]) < len(json.dumps(BIG))  # compressed, then encrypted


@pytest.mark.anyio
async def test_changing_the_pipeline_and_rotating_keys_leaves_old_events_readable(inner: Store) -> None:
    await TransformingStore(inner, []).append("s", [EventData("Plain", BIG)])
    await TransformingStore(inner, [Zlib()]).append("s", [EventData("Zipped", BIG)])
    await TransformingStore(inner, [AesGcm({"k1": K1}, "k1")]).append("s", [EventData("K1", BIG)])
    rotated = AesGcm({"k1": K1, "k2": K2}, "k2")
    now = TransformingStore(inner, [Zlib(), rotated])
    await now.append("s", [EventData("K2", BIG)])
    assert [e.data for e in await now.read("s").to_list()] == [BIG] * 4
    assert [transforms_of(e) for e in await inner.read("s").to_list()][:2] == [[], [["zlib"]]]
    key_ids = [[t[1] for t in transforms_of(e) if t[0] == "aes-gcm"] for e in await inner.read("s").to_list()]
    assert key_ids == [[], [], ["k1"], ["k2"]]
    # a store that writes plain events now still reads them all, given the keys
    later = TransformingStore(inner, [], also_reads=[rotated])
    assert [e.data for e in await later.read("s").to_list()] == [BIG] * 4


@pytest.mark.anyio
async def test_a_missing_or_wrong_key_is_a_typed_error_naming_the_key_id(inner: Store) -> None:
    await TransformingStore(inner, [AesGcm({"k1": K1}, "k1")]).append("s", [EventData("E", BIG)])
    missing = TransformingStore(inner, [AesGcm({"k2": K2}, "k2")])
    (event,) = await missing.read("s").to_list()  # reading the stream is fine: decoding is lazy
    assert event.type == "E"
    with pytest.raises(KeyUnavailable) as info:
        _ = event.data
    assert (info.value.key_id, info.value.reason) == ("k1", "missing")
    assert "k1" in repr(event)  # a repr never raises
    wrong = TransformingStore(inner, [AesGcm({"k1": K2}, "k1")])
    with pytest.raises(KeyUnavailable, match="'k1' in the keyring is not the key used") as info:
        _ = (await wrong.latest("s")).unwrap().data
    assert info.value.reason == "wrong"


async def _import_raw(inner: Store, stream: str, data: Any, metadata: dict[str, Any]) -> RecordedEvent:
    """An event written in stored form (as a damaged or foreign row would be)."""
    from streamsrc.events import new_event_id

    event = EventData("E", data, metadata, new_event_id())
    (await inner.append(stream, [event])).unwrap()
    return (await inner.latest(stream)).unwrap()


@pytest.mark.anyio
async def test_damaged_payloads_and_unknown_transforms(inner: Store) -> None:
    keys = AesGcm({"k1": K1}, "k1")
    store = TransformingStore(inner, [Zlib(), keys])
    await store.append("good", [EventData("E", BIG)])
    good = (await inner.latest("good")).unwrap()
    assert good.metadata is not None
    sealed = bytearray(base64.b64decode(good.data[TRANSFORMED]))
    sealed[-1] ^= 1  # one bit of the tag
    await _import_raw(inner, "flipped", {TRANSFORMED: base64.b64encode(sealed).decode()}, good.metadata)
    await _import_raw(inner, "moved", good.data, good.metadata)  # the ciphertext of another event
    await _import_raw(inner, "not-base64", {TRANSFORMED: "%%%"}, good.metadata)
    await _import_raw(inner, "no-payload", {"x": 1}, good.metadata)
    await _import_raw(inner, "bad-list", {TRANSFORMED: "AA=="}, {TRANSFORMS: "zlib"})
    await _import_raw(inner, "rot13", {TRANSFORMED: "AA=="}, {TRANSFORMS: [["rot13"]]})
    for stream in ("flipped", "moved", "not-base64", "no-payload", "bad-list"):
        event = (await store.latest(stream)).unwrap()
        with pytest.raises(CorruptEvent) as info:
            _ = event.data
        assert (info.value.stream, info.value.seq) == (stream, 1)
    with pytest.raises(UnknownTransform) as unknown:
        _ = (await store.latest("rot13")).unwrap().data
    assert unknown.value.transform == "rot13"
    assert isinstance(unknown.value, CorruptEvent)


@pytest.mark.anyio
async def test_the_reserved_metadata_key_is_refused_on_append(inner: Store) -> None:
    store = TransformingStore(inner, [Zlib()])
    result = await store.append("s", [EventData("E", BIG, {TRANSFORMS: []})])
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), InvalidEvent)
    assert await inner.head() == 0


@pytest.mark.anyio
async def test_snapshots_are_transformed_and_an_unreadable_one_is_nothing(inner: Store) -> None:
    store = TransformingStore(inner, [Zlib(), AesGcm({"k1": K1}, "k1")])
    await store.save_snapshot("user:u1", 3, BIG, 1)
    assert (await store.load_snapshot("user:u1", 1)).unwrap().state == BIG
    raw = (await inner.load_snapshot("user:u1", 1)).unwrap().state
    assert "ada@example.com" not in json.dumps(raw)
    other = TransformingStore(inner, [AesGcm({"k2": K2}, "k2")])
    assert (await other.load_snapshot("user:u1", 1)) == Nothing
    plain = TransformingStore(inner, [Zlib()], snapshots=False)
    await plain.save_snapshot("user:u2", 1, SMALL, 1)
    assert (await inner.load_snapshot("user:u2", 1)).unwrap().state == SMALL


@pytest.mark.anyio
async def test_copying_the_inner_stores_keeps_payloads_byte_for_byte(tmp_path: Path) -> None:
    keys = AesGcm({"k1": K1}, "k1")
    async with open_store(f"sqlite:///{tmp_path}/a.db") as a, open_store(f"sqlite:///{tmp_path}/b.db") as b:
        source = TransformingStore(a, [Zlib(), keys])
        for n in range(5):
            await source.append(f"user-{n % 2}", [EventData("E", {**BIG, "n": n}), EventData("S", SMALL)])
        done = await copy(a, b)
        assert done.events == 10
        target = TransformingStore(b, [Zlib(), keys])
        assert [e.data for e in await target.read_all().to_list()] == [
            e.data for e in await source.read_all().to_list()
        ]
    assert raw_rows(tmp_path / "a.db") == raw_rows(tmp_path / "b.db")


def test_export_and_import_keep_payloads_as_stored(tmp_path: Path) -> None:
    import anyio

    async def write() -> None:
        async with open_store(f"sqlite:///{tmp_path}/a.db") as a:
            store = TransformingStore(a, [Zlib(), AesGcm({"k1": K1}, "k1")])
            await store.append("user-1", [EventData("E", BIG), EventData("S", SMALL, {"by": "ada"})])

    anyio.run(write)
    cli = [sys.executable, "-m", "streamsrc"]
    exported = subprocess.run(
        [*cli, "export", f"sqlite:///{tmp_path}/a.db"], capture_output=True, text=True, check=True
    )
    assert "ada@example.com" not in exported.stdout
    subprocess.run(
        [*cli, "import", f"sqlite:///{tmp_path}/b.db"], input=exported.stdout, text=True, check=True
    )
    assert raw_rows(tmp_path / "a.db") == raw_rows(tmp_path / "b.db")


@pytest.mark.anyio
async def test_copying_between_transforming_stores_re_encrypts() -> None:
    a, b = MemoryStore(), MemoryStore()
    source = TransformingStore(a, [AesGcm({"old": K1}, "old")])
    target = TransformingStore(b, [AesGcm({"new": K2}, "new")])
    await source.append("s", [EventData("E", BIG)])
    await copy(source, target)
    (stored,) = await b.read("s").to_list()
    assert [t[:2] for t in transforms_of(stored)] == [["aes-gcm", "new"]]
    assert (await target.latest("s")).unwrap().data == BIG
    # events already in stored form are imported as they are, not encrypted twice
    c = MemoryStore()
    await copy(a, TransformingStore(c, [AesGcm({"new": K2}, "new")]))
    assert (await c.latest("s")).unwrap().data == (await a.latest("s")).unwrap().data


@pytest.mark.anyio
async def test_entities_run_on_a_transforming_store(tmp_path: Path) -> None:
    from streamsrc.entity import EveryN, Repository
    from streamsrc.examples.accounts import Register, Update, users

    async with open_store(f"sqlite:///{tmp_path}/e.db") as inner:
        store = TransformingStore(inner, [Zlib(min_size=0), AesGcm({"k1": K1}, "k1")])
        from dataclasses import replace

        entity = replace(users, snapshots=EveryN(2))
        accounts = Repository(store, entity)
        await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
        await accounts.handle("u1", Update(name="Ada Lovelace"))
        await accounts.handle("u1", Update(name="Ada King"))
        assert (await accounts.load("u1")).state.name == "Ada King"
        assert accounts.snapshot_stats.saved >= 1
    assert not any(b"ada@example.com" in str(row).encode() for row in raw_rows(tmp_path / "e.db"))


@pytest.mark.anyio
async def test_a_missing_key_fails_one_event_of_a_projection_never_the_projection(inner: Store) -> None:
    from streamsrc.errors import ProjectionFailed
    from streamsrc.projections import DeadLetters, MemoryReadModel, Projection, Projector

    await TransformingStore(inner, [AesGcm({"k1": K1}, "k1")]).append("s", [EventData("E", {"n": 1})])
    await TransformingStore(inner, [AesGcm({"k2": K2}, "k2")]).append("s", [EventData("E", {"n": 2})])
    reader = TransformingStore(inner, [AesGcm({"k2": K2}, "k2")])

    def total(n: int, events: list[RecordedEvent]) -> int:
        return n + sum(int(e.data["n"]) for e in events)

    model = MemoryReadModel(0)
    await Projector[Any](reader, Projection("total", total), model, on_error=DeadLetters()).catch_up()
    assert model.state == 2
    (letter,) = await model.dead_letters()
    assert (letter.stream, letter.seq) == ("s", 1)
    assert "KeyUnavailable" in letter.error
    assert "'k1'" in letter.error
    stopped = MemoryReadModel(0)
    with pytest.raises(ProjectionFailed) as info:
        await Projector[Any](reader, Projection("total", total), stopped).catch_up()
    assert isinstance(info.value.cause, KeyUnavailable)
    assert info.value.cause.key_id == "k1"
