"""Bad input on every store: each case gets a typed error or the behaviour docs/input-and-errors.md states.

* URLs: malformed ones (hand-picked and generated) are ``InvalidStoreURL`` or
  ``StoreUnavailable``, never another exception, and never show a password.
* Names: odd but valid stream names and event types (quotes, SQL, ``%``/``_``,
  ``../``, ``#``/``:``) round-trip exactly and leave the database intact;
  invalid ones (empty, too long, control characters, NUL, lone surrogates)
  are ``InvalidEvent`` on writes and find nothing on reads.
* Payloads that are not JSON (sets, objects, bytes, NaN, 10,000 levels,
  lone surrogates, 10 MB) are refused before anything is written.
* Rows damaged behind the store's back read as ``CorruptEvent`` naming the
  event; damaged snapshots are ignored (a full replay); tables of another
  version or another program are ``IncompatibleSchema`` and left alone.
* Injection: the SQL the stores run is built only from constants and
  identifiers the code controls (checked on the source), and DynamoDB requests
  carry user values only as expression attribute values.
* Secrets: a password never shows in errors, reprs, logs or the CLI's output.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.maybe import Nothing
from returns.result import Failure, Success
from store_urls import STORE_URLS, fresh_dynamodb_url, opened_store

from streamsrc.codec import Codec
from streamsrc.entity import Decider, Entity, EveryN, Repository
from streamsrc.errors import (
    CorruptEvent,
    EventTooLarge,
    IncompatibleSchema,
    InvalidEvent,
    InvalidStoreURL,
    StoreError,
    StoreUnavailable,
)
from streamsrc.events import MAX_NAME_LENGTH, EventData, RecordedEvent
from streamsrc.store import open_store, redact_url

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
STORES = [name for name in ("memory", "sqlite", "postgres", "dynamodb") if name in STORE_URLS]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with opened_store(request.param, tmp_path) as opened:
        yield opened


def _run(fn: Any, *args: Any) -> Any:
    return anyio.run(fn, *args, backend="asyncio")


# ---------------------------------------------------------------------------------------------- URLs

SECRET = "Pw-S3cret-4711"

BAD_URLS = [
    "",
    "events.db",
    "ftp://u:{secret}@host/events",
    "mysql://u:{secret}@host/db",
    "memory://somewhere",
    "memory://?page_size=0",
    "memory://?page_size=%00",
    "memory://?colour=blue",
    "sqlite://",
    "sqlite:///",
    "sqlite://u:{secret}@host/x.db",
    "sqlite:///{tmp}/missing/x.db",
    "sqlite:///{tmp}/ü/ß.db",
    "sqlite:///{tmp}/e.db?page_size=1;DROP TABLE events",
    "sqlite:///{tmp}/e.db?synchronous=off",
    "sqlite:///{tmp}/nul\x00.db",
    "sqlite:///:memory:",
    "postgresql://u:{secret}@127.0.0.1:99999/db",
    "postgresql://u:{secret}@127.0.0.1:port/db",
    "postgresql://u:{secret}@[::1/db",
    "postgresql://u:{secret}@127.0.0.1:1/db?pool_max=0",
    "postgresql://u:{secret}@127.0.0.1:1/db'; DROP TABLE events; --",
    "postgresql://u:{secret}@127.0.0.1:1/db?timeout=2",
    "postgres://",
    "dynamodb://",
    "dynamodb://?region=us-east-1",
    "dynamodb://u:{secret}@events",
    "dynamodb://ev ents?region=x",
    "dynamodb://events/extra",
    "dynamodb://events?aws_secret_access_key={secret}",
    "dynamodb://events?token={secret}",
    "dynamodb://events?endpoint_url=http://u:{secret}@127.0.0.1:1",
    "dynamodb://events?endpoint_url=file:///etc/passwd",
    "dynamodb://events?retries=1e9",
    "dynamodb://évènements?region=x",
]


async def _refused(url: str) -> StoreError | InvalidStoreURL:
    try:
        async with open_store(url):
            pass
    except (InvalidStoreURL, StoreUnavailable) as exc:
        return exc
    raise AssertionError(f"{url!r} was opened")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # some of these reach asyncpg
@pytest.mark.parametrize("template", BAD_URLS)
async def test_a_malformed_url_is_a_typed_error_without_the_password(template: str, tmp_path: Path) -> None:
    url = template.format(secret=SECRET, tmp=tmp_path)
    error = await _refused(url)
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in shown
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []  # nothing was created


_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(["memory", "sqlite", "postgresql", "postgres", "dynamodb", "", "http", "SQLITE"]),
    name=_TEXT,
    query=st.lists(st.tuples(_TEXT, _TEXT), max_size=3),
    password=st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=10),
    known=st.lists(
        st.sampled_from(["page_size", "timeout", "pool_max", "readers", "create", "region"]), max_size=2
    ),
)
def test_generated_urls_open_or_fail_typed_and_never_show_the_password(
    scheme: str, name: str, query: list[tuple[str, str]], password: str, known: list[str]
) -> None:
    """No generated URL reaches another machine: PostgreSQL ones point at 127.0.0.1:1 (nothing listens),
    DynamoDB ones are only parsed (``Settings.from_url``), SQLite files go to a fresh folder."""
    from streamsrc.store.dynamodb import Settings

    secret = f"PW{password}ZZ"
    # Keys are options streamsrc knows or start with "k": never one asyncpg would act on (host=...).
    values = [v for _, v in query] + ["1"] * len(known)
    pairs = "&".join(
        [f"k{k}={v}" for k, v in query] + [f"{k}={v}" for k, v in zip(known, values, strict=False)]
    )
    with tempfile.TemporaryDirectory() as folder:
        if scheme.lower() == "sqlite":
            url = f"{scheme}:///{folder}/{name}.db?{pairs}"
        elif scheme.startswith("postgres"):
            url = f"{scheme}://app:{secret}@127.0.0.1:1/{name}?{pairs}&timeout=2"
        elif scheme == "dynamodb":
            url = f"dynamodb://{name}?{pairs}"
            try:
                Settings.from_url(url)
            except InvalidStoreURL as exc:
                shown = str(exc)
            else:
                shown = ""
            assert secret not in shown
            return
        else:
            url = f"{scheme}://app:{secret}@{name}?{pairs}"

        async def attempt() -> str:
            try:
                async with open_store(url) as opened:
                    assert scheme.lower() in ("memory", "sqlite")
                    return repr(opened)
            except (InvalidStoreURL, StoreUnavailable) as exc:
                return "".join(traceback.format_exception(exc))

        assert secret not in _run(attempt)
    assert secret not in redact_url(url)


@given(password=st.text(st.characters(codec="utf-8", exclude_characters="@/?#[]"), min_size=1))
def test_redact_url_hides_any_password(password: str) -> None:
    secret = f"\x01{password}\x02"  # markers: the text shown cannot hold them by chance
    for url in (
        f"postgresql://app:{secret}@db.example:5432/events",
        f"postgresql://app:{secret}@db.example:99999/events",
        f"dynamodb://events?endpoint_url=http://u:{secret}@h:1&aws_secret_access_key={secret}",
    ):
        shown = redact_url(url)
        assert secret not in shown
        assert "***" in shown or shown == "<unparseable URL>"


async def test_a_sqlite_url_path_is_taken_as_given(tmp_path: Path) -> None:
    """The URL is configuration: ``..`` in it is a path like any other (a stream name never is a path)."""
    (tmp_path / "sub").mkdir()
    async with open_store(f"sqlite:///{tmp_path}/sub/../events.db") as opened:
        assert (await opened.append("s", [EventData("T", {})])).unwrap().positions == (1,)
    assert (tmp_path / "events.db").exists()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == []


# ---------------------------------------------------------------------------------------------- names

ODD_NAMES = [
    "'; DROP TABLE events; --",
    "Robert'); DROP TABLE snapshots;--",
    '"quoted" name',
    "it's",
    "back\\slash",
    "%",
    "_",
    "a%b",
    "a_b",
    "../../etc/passwd",
    "/etc/passwd",
    "#s",
    ":s",
    "$1",
    "? OR 1=1",
    "#q = :a OR attribute_exists(pk)",
    "ü€😀 ñame",
    " leading and trailing ",
    "x" * MAX_NAME_LENGTH,
    "é" * MAX_NAME_LENGTH,
]
"""Valid stream names and event types that look like SQL, patterns, paths or DynamoDB placeholders."""

INVALID_NAMES = [
    "",
    "x" * (MAX_NAME_LENGTH + 1),
    "x" * 10_000,
    "a\x00b",
    "a\nb",
    "tab\there",
    "\x7f",
    "\x85",
    "\ud800",
]
"""Names every store refuses (``InvalidEvent``) and that no read can find."""


async def _log(store: Any) -> list[tuple[Any, ...]]:
    return [(e.stream, e.seq, e.type, e.data) for e in await store.read_all().to_list()]


async def test_odd_names_round_trip_exactly_and_the_store_stays_intact(store: Any, tmp_path: Path) -> None:
    await store.append("control", [EventData("Control", {"n": 1})])
    for name in ODD_NAMES:
        result = await store.append(name, [EventData(name, {name: name}, {"note": name})])
        assert isinstance(result, Success), (name, result)
    for name in ODD_NAMES:
        [event] = await store.read(name).to_list()
        assert (event.stream, event.seq, event.type, event.data, event.metadata) == (
            name,
            1,
            name,
            {name: name},
            {"note": name},
        )
        assert (await store.latest(name)).unwrap() == event
        # Types and prefixes are compared as text, never as patterns: '%' and '_' match only themselves.
        assert [e.stream for e in await store.read_all(types=[name]).to_list()] == [name]
        by_prefix = {e.stream for e in await store.read_all(stream_prefix=name).to_list()}
        assert by_prefix == {n for n in ["control", *ODD_NAMES] if n.startswith(name)}
    assert sorted(await store.streams().to_list()) == sorted(["control", *ODD_NAMES])
    assert await store.head() == len(ODD_NAMES) + 1
    assert [e.data for e in await store.read("control").to_list()] == [{"n": 1}]
    for name in ODD_NAMES[:4]:
        await store.save_checkpoint(name, 7)
        await store.save_snapshot(name, 1, {"name": name}, 1)
        assert await store.load_checkpoint(name) == 7
        assert (await store.load_snapshot(name, 1)).unwrap().state == {"name": name}
    if "sqlite" in type(store).__name__.lower():  # no stream name ever became a path
        names = {p.name async for p in anyio.Path(tmp_path).iterdir()}
        assert names <= {"events.db", "events.db-shm", "events.db-wal"}


async def test_patterns_in_filters_match_only_themselves(store: Any) -> None:
    for name, kind in [("a%b", "%"), ("axxb", "T"), ("a_b", "_"), ("aXb", "T"), ("abc", "T%")]:
        await store.append(name, [EventData(kind, {})])

    async def streams(**how: Any) -> list[str]:
        return sorted(e.stream for e in await store.read_all(**how).to_list())

    assert await streams(stream_prefix="a%") == ["a%b"]
    assert await streams(stream_prefix="a_") == ["a_b"]
    assert await streams(stream_prefix="a") == sorted(["a%b", "a_b", "aXb", "abc", "axxb"])
    assert await streams(types=["%"]) == ["a%b"]
    assert await streams(types=["_"]) == ["a_b"]
    assert await streams(types=["T%"]) == ["abc"]
    assert await streams(types=["T_"]) == []


async def test_invalid_names_are_refused_and_find_nothing(store: Any) -> None:
    await store.append("control", [EventData("Control", {})])
    for name in INVALID_NAMES:
        for stream, kind in ((name, "T"), ("s", name)):
            result = await store.append(stream, [EventData(kind, {})])
            assert isinstance(result, Failure), (name, result)
            assert type(result.failure()) is InvalidEvent, (name, result)
        assert await store.read(name).to_list() == []
        assert await store.read(name, backwards=True).to_list() == []
        assert await store.latest(name) == Nothing
        assert await store.read_all(types=[name]).to_list() == []
        assert await store.read_all(types=[name, "Control"]).count() == 1
        if name:  # an empty prefix is no condition
            assert await store.read_all(stream_prefix=name).to_list() == []
        assert await store.load_checkpoint(name) == 0
        assert await store.load_snapshot(name, 1) == Nothing
        with pytest.raises(InvalidEvent):
            await store.save_checkpoint(name, 1)
        with pytest.raises(InvalidEvent):
            await store.save_snapshot(name, 1, {}, 1)
    assert await _log(store) == [("control", 1, "Control", {})]


# ---------------------------------------------------------------------------------------------- payloads


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


class _Opaque:
    pass


BAD_PAYLOADS: list[tuple[str, Any, Any]] = [
    ("set", {"tags": {"a", "b"}}, None),
    ("frozenset", [frozenset()], None),
    ("object", {"at": _Opaque()}, None),
    ("bytes", b"raw", None),
    ("bytes value", {"raw": b"\x00\xff"}, None),
    ("complex", 1j, None),
    ("tuple key", {(1, 2): "x"}, None),
    ("nan", {"x": math.nan}, None),
    ("infinity", [math.inf], None),
    ("minus infinity", -math.inf, None),
    ("deep nesting", _nested(10_000), None),
    ("lone surrogate", {"text": "a\ud800b"}, None),
    ("lone surrogate key", {"\udc80": 1}, None),
    ("metadata a list", {}, [1]),
    ("metadata a string", {}, "meta"),
    ("metadata nan", {}, {"x": math.nan}),
    ("metadata surrogate", {}, {"k": "\ud800"}),
]


async def test_non_json_payloads_are_refused_before_anything_is_written(store: Any) -> None:
    await store.append("s", [EventData("Ok", {"n": 1})])
    before = await _log(store)
    for case, data, metadata in BAD_PAYLOADS:
        batch = [EventData("Ok", {"n": 2}), EventData("Bad", data, metadata)]  # a good event first: atomic
        result = await store.append("s", batch)
        assert isinstance(result, Failure), (case, result)
        assert type(result.failure()) is InvalidEvent, (case, result)
        assert "not a JSON value" in str(result.failure()) or "metadata" in str(result.failure()), case
        if metadata is None:  # the same values as a snapshot's state
            with pytest.raises(InvalidEvent):
                await store.save_snapshot("k", 1, data, 1)
    assert await _log(store) == before
    assert await store.load_snapshot("k", 1) == Nothing
    assert (await store.append("s", [EventData("Ok", {"n": 2})], expected=1)).unwrap().last_seq == 2


async def test_payloads_over_the_size_limit_are_too_large_and_not_written(store: Any) -> None:
    before = await _log(store)
    limit = store.max_event_size
    for data, metadata in [("x" * 10_000_000, None), ({}, {"blob": "y" * limit}), ("é" * (limit // 2), None)]:
        result = await store.append("big", [EventData("Big", data, metadata)])
        error = result.failure()
        assert type(error) is EventTooLarge
        assert error.limit == limit
        assert error.size > limit
    assert await _log(store) == before
    assert await store.read("big").to_list() == []


async def test_10_mb_is_stored_where_the_limit_allows_it(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/e.db?max_event_size=11000000") as opened:
        big = "z" * 10_000_000
        assert isinstance(await opened.append("big", [EventData("Big", big)]), Success)
        [event] = await opened.read("big").to_list()
        assert event.data == big


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=4)
    | st.sets(st.integers(), max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=8,
)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):
        return False
    return True


@settings(max_examples=40, deadline=None)
@given(data=_JSONISH, metadata=st.none() | st.dictionaries(st.text(max_size=3), _JSONISH, max_size=2))
def test_generated_payloads_round_trip_as_json_or_are_refused(data: Any, metadata: Any) -> None:
    """What is JSON comes back as JSON reads it (non-string keys become strings); the rest is refused."""

    async def check(url: str) -> None:
        async with open_store(url) as opened:
            result = await opened.append("s", [EventData("T", data, metadata)])
            if _is_json(data) and (metadata is None or _is_json(metadata)):
                assert isinstance(result, Success), result
                [event] = await opened.read("s").to_list()
                assert event.data == json.loads(json.dumps(data))
                assert event.metadata == (None if metadata is None else json.loads(json.dumps(metadata)))
            else:
                assert isinstance(result.failure(), InvalidEvent)
                assert await opened.head() == 0

    with tempfile.TemporaryDirectory() as folder:
        for url in ("memory://", f"sqlite:///{folder}/e.db"):
            _run(check, url)


# ---------------------------------------------------------------------------------------------- damaged rows


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


DAMAGE = {
    "data": ("data", "'{not json'"),
    "data nested too deep": ("data", "'" + "[" * 100_000 + "'"),
    "metadata": ("metadata", "'[1, 2]'"),
    "id": ("id", "X'0102'"),
    "id as text": ("id", "'00000000-0000-0000-0000-000000000001'"),
    "time": ("time", "'yesterday'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_a_damaged_sqlite_row_reads_as_corrupt_event_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "events.db"
    url = f"sqlite:///{path}"
    async with open_store(url) as opened:
        await opened.append("order-1", [EventData("Placed", {"n": n}, {"m": n}) for n in range(3)])
    column, value = DAMAGE[damage]
    await anyio.to_thread.run_sync(_sqlite, path, f"UPDATE events SET {column} = {value} WHERE seq = 2")
    async with open_store(url) as opened:
        for events in (await opened.read("order-1").to_list(), await opened.read_all().to_list()):
            good, bad = events[0], events[1]
            assert good.data == {"n": 0}
            with pytest.raises(CorruptEvent) as caught:
                getattr(bad, column)
            error = caught.value
            assert (error.stream, error.seq, error.position, error.field) == ("order-1", 2, 2, column)
            assert isinstance(error, StoreError)
            assert isinstance(error, ValueError)
            assert "position 2" in str(error)
            assert "'order-1'" in str(error)
            assert "damaged" in repr(bad)  # a repr shows the damaged field as stored, never raises
        with pytest.raises(CorruptEvent):
            await opened.read("order-1").map(lambda e: (e.data, e.metadata, e.id, e.time)).to_list()


async def test_a_truncated_sqlite_file_is_a_typed_error(tmp_path: Path) -> None:
    """A file cut short (a copy interrupted, a full disk): opening or reading it is ``StoreUnavailable``
    naming the file ("database disk image is malformed"), never sqlite3's own error."""
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as opened:
        for k in range(20):
            await opened.append(f"s-{k}", [EventData("T", {"pad": "p" * 2000, "k": k}) for _ in range(5)])
    whole = await anyio.Path(path).read_bytes()
    for size in (len(whole) // 3, len(whole) - 4096, 100):
        cut = tmp_path / f"cut-{size}.db"
        await anyio.Path(cut).write_bytes(whole[:size])
        with pytest.raises(StoreUnavailable, match=f"{cut}.*malformed"):
            async with open_store(f"sqlite:///{cut}") as opened:
                [e.data for e in await opened.read_all().to_list()]


async def _pg(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_damaged_postgres_rows_read_as_corrupt_event(postgres_database: str) -> None:
    async with open_store(postgres_database) as opened:
        await opened.append("order-1", [EventData("Placed", {"n": n}) for n in range(4)])
    await _pg(
        postgres_database,
        "UPDATE events SET data = '{oops' WHERE seq = 2",
        "UPDATE events SET metadata = '\"text\"' WHERE seq = 3",
        "ALTER TABLE events ALTER COLUMN data DROP NOT NULL",
        "UPDATE events SET data = NULL WHERE seq = 4",
    )
    async with open_store(postgres_database) as opened:
        events = await opened.read("order-1").to_list()
        assert events[0].data == {"n": 0}
        for event, field in zip(events[1:], ("data", "metadata", "data"), strict=True):
            with pytest.raises(CorruptEvent) as caught:
                getattr(event, field)
            assert (caught.value.stream, caught.value.seq, caught.value.field) == (
                "order-1",
                event.seq,
                field,
            )
        await _pg(postgres_database, "ALTER TABLE events DROP COLUMN metadata")
        with pytest.raises(StoreUnavailable, match="metadata"):
            await opened.read("order-1").to_list()
        with pytest.raises(StoreUnavailable, match="metadata"):
            await opened.latest("order-1")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_damaged_dynamodb_items_read_as_corrupt_event(tmp_path: Path) -> None:
    if "dynamodb" not in STORE_URLS:
        pytest.skip("needs aiobotocore")
    from aiobotocore.session import get_session

    async with opened_store("dynamodb", tmp_path) as opened:
        await opened.append("order-1", [EventData("Placed", {"n": n}) for n in range(2)])
        settings_ = opened.settings
        async with get_session().create_client(
            "dynamodb", region_name=settings_.region, endpoint_url=settings_.endpoint_url
        ) as client:
            item = {
                "stream": {"S": "order-1"},
                "seq": {"N": "3"},
                "position": {"N": "3"},
                "type": {"S": "Placed"},
                "data": {"S": "{}"},
                "id": {"S": "not-a-uuid"},
                "time": {"N": "0"},
            }
            await client.put_item(TableName=opened.tables["events"], Item=item)
            with pytest.raises(CorruptEvent) as caught:
                await opened.read("order-1").to_list()
            assert (caught.value.stream, caught.value.seq, caught.value.position) == ("order-1", "3", "3")
            item = {**item, "id": {"S": "00000000-0000-0000-0000-000000000003"}, "data": {"S": "{oops"}}
            await client.put_item(TableName=opened.tables["events"], Item=item)
            [_, _, damaged] = await opened.read("order-1").to_list()
            with pytest.raises(CorruptEvent):
                _ = damaged.data
            commit = {"pk": {"S": "log"}, "sk": {"S": f"{3:020d}"}, "stream": {"S": "order-1"}}
            commit |= {"seq": {"N": "3"}, "position": {"N": "3"}, "events": {"S": "[[oops"}}
            await client.put_item(TableName=opened.tables["log"], Item=commit)
            with pytest.raises(CorruptEvent, match="commit item"):
                await opened.read_all().to_list()


# ---------------------------------------------------------------------------------------------- snapshots

codec = Codec()


@codec.register()
@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Balance:
    total: int = 0
    deposits: int = 0


def _account(schema_version: int = 1) -> Entity[str, int, Deposited, Balance]:
    return Entity(
        "account",
        Decider(
            Balance(),
            lambda s, e: Balance(s.total + e.amount, s.deposits + 1),
            lambda n, s: Success([Deposited(n)]),
        ),
        codec,
        stream=lambda key: f"account-{key}",
        state_type=Balance,
        snapshots=EveryN(2),
        schema_version=schema_version,
    )


async def test_snapshots_that_no_longer_decode_are_ignored_with_a_full_replay(store: Any) -> None:
    accounts = Repository(store, _account())
    for amount in (1, 2, 3, 4):
        assert isinstance(await accounts.handle("a1", amount), Success)
    key = _account().snapshot_key("a1")
    assert (await store.load_snapshot(key, 1)).unwrap().state == {"total": 10, "deposits": 4}
    replayed = Balance(10, 4)
    # A state of another shape under the same version, then a state that is not an object at all.
    # Then fields of the wrong JSON types (decoding alone would pass them through into evolve).
    wrong = ({"total": 999, "deposits": 99, "currency": "EUR"}, 999, [1, 2], {"total": "x", "bogus": 1})
    mistyped = ({"total": "x", "deposits": 1}, {"total": 1.5, "deposits": 1}, {"total": True, "deposits": 1})
    for state in (*wrong, *mistyped):
        await store.save_snapshot(key, 4, state, 1)
        loaded = await Repository(store, _account()).load("a1")
        assert (loaded.state, loaded.seq) == (replayed, 4)
    # A newer schema version ignores every snapshot of version 1.
    await store.save_snapshot(key, 4, {"total": 999, "deposits": 99}, 1)
    loaded = await Repository(store, _account(schema_version=2)).load("a1")
    assert (loaded.state, loaded.seq) == (replayed, 4)
    # A command over a mistyped snapshot replays too (evolve never sees the string).
    await store.save_snapshot(key, 4, {"total": "x", "deposits": 1}, 1)
    handled = await Repository(store, _account()).handle("a1", 5)
    assert handled.unwrap().state == Balance(15, 5)


async def test_a_snapshot_row_that_is_not_json_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as opened:
        accounts = Repository(opened, _account())
        for amount in (1, 2, 3, 4):
            await accounts.handle("a1", amount)
    await anyio.to_thread.run_sync(_sqlite, path, "UPDATE snapshots SET state = '{garbage'")
    async with open_store(f"sqlite:///{path}") as opened:
        assert await opened.load_snapshot(_account().snapshot_key("a1"), 1) == Nothing
        loaded = await Repository(opened, _account()).load("a1")
        assert (loaded.state, loaded.seq) == (Balance(10, 4), 4)


async def test_an_entity_over_a_damaged_event_fails_with_corrupt_event(tmp_path: Path) -> None:
    """The damaged event is met only where it is decoded: a replay from the start (``history``) fails
    with the typed error naming it; a load that starts from a later snapshot never reads it."""
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as opened:
        accounts = Repository(opened, _account())
        for amount in (1, 2, 3):
            await accounts.handle("a1", amount)
    await anyio.to_thread.run_sync(_sqlite, path, "UPDATE events SET data = '{x' WHERE seq = 1")
    async with open_store(f"sqlite:///{path}") as opened:
        accounts = Repository(opened, _account())
        with pytest.raises(CorruptEvent) as caught:
            await accounts.history("a1").to_list()
        assert (caught.value.stream, caught.value.seq, caught.value.field) == ("account-a1", 1, "data")
        loaded = await accounts.load("a1")  # from the snapshot at seq 2
        assert (loaded.state, loaded.seq) == (Balance(6, 3), 3)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_postgres_snapshot_row_that_is_not_json_is_ignored(postgres_database: str) -> None:
    async with open_store(postgres_database) as opened:
        accounts = Repository(opened, _account())
        for amount in (1, 2, 3, 4):
            await accounts.handle("a1", amount)
        await _pg(postgres_database, "UPDATE snapshots SET state = '{garbage'")
        assert await opened.load_snapshot(_account().snapshot_key("a1"), 1) == Nothing
        loaded = await Repository(opened, _account()).load("a1")
        assert (loaded.state, loaded.seq) == (Balance(10, 4), 4)


# ---------------------------------------------------------------------------------------------- schemas


def _sqlite_dump(path: Path) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump()) + conn.execute("PRAGMA journal_mode").fetchall()
    finally:
        conn.close()


SQLITE_FOREIGN = {
    "non-numeric version": [
        "CREATE TABLE streamsrc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO streamsrc_meta VALUES ('schema_version', 'two')",
    ],
    "newer version": [
        "CREATE TABLE streamsrc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO streamsrc_meta VALUES ('schema_version', '99')",
    ],
    "foreign snapshots table": ["CREATE TABLE snapshots (id INTEGER PRIMARY KEY, blob BLOB)"],
    "foreign checkpoints table": [
        "CREATE TABLE checkpoints (name TEXT)",
        "INSERT INTO checkpoints VALUES ('x')",
    ],
}


@pytest.mark.parametrize("case", sorted(SQLITE_FOREIGN))
async def test_sqlite_tables_of_another_version_or_program_are_refused_untouched(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "app.db"
    await anyio.to_thread.run_sync(_sqlite, path, *SQLITE_FOREIGN[case])
    before = await anyio.to_thread.run_sync(_sqlite_dump, path)
    with pytest.raises(IncompatibleSchema):
        async with open_store(f"sqlite:///{path}"):
            pass
    assert await anyio.to_thread.run_sync(_sqlite_dump, path) == before


async def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    "statements",
    [
        [
            "CREATE TABLE streamsrc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "INSERT INTO streamsrc_meta VALUES ('schema_version', 'two')",
        ],
        ["CREATE TABLE checkpoints (name TEXT)", "INSERT INTO checkpoints VALUES ('x')"],
        ["CREATE TABLE snapshots (id INT)"],
    ],
    ids=["non-numeric version", "foreign checkpoints", "foreign snapshots"],
)
async def test_postgres_tables_of_another_version_or_program_are_refused_untouched(
    postgres_database: str, statements: list[str]
) -> None:
    await _pg(postgres_database, *statements)
    describe = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2"
    )
    before = await _pg_rows(postgres_database, describe)
    with pytest.raises(IncompatibleSchema):
        async with open_store(postgres_database):
            pass
    assert await _pg_rows(postgres_database, describe) == before


# ---------------------------------------------------------------------------------------------- injection

SQL_CALLS = {"execute", "executemany", "executescript", "fetch", "fetchrow", "fetchval", "query"}
CALLERS_OWN_SQL = {("execute", "sql"), ("executemany", "sql"), ("query", "sql")}
"""(function, parameter): read-model APIs that run the caller's own SQL (its values bound as parameters)."""
CONTROLLED_ATTRIBUTES = {"self.synchronous", "self.schema"}
"""Attributes the code controls: ``synchronous`` is checked to be NORMAL or FULL; ``schema`` is the
read model's own DDL, given by the program, never by a user."""


def _unpacked_at(node: ast.Assign, name: str) -> int | None:
    """Where ``name`` stands in a tuple target of ``node`` (``a, name = ...``), if it does."""
    for target in node.targets:
        if isinstance(target, ast.Tuple):
            for place, element in enumerate(target.elts):
                if isinstance(element, ast.Name) and element.id == name:
                    return place
    return None


class _SqlSources:
    """Decides, for one module, whether an expression is built only from text the code controls."""

    def __init__(self, tree: ast.Module) -> None:
        self.module = tree
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.constants: dict[str, list[ast.expr]] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.constants.setdefault(target.id, []).append(node.value)

    def scopes(self, node: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda]:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield node

    def name_sources(self, name: str, at: ast.AST) -> list[ast.expr] | None:
        """What ``name`` may hold where it is used: its assignments in the nearest function that binds it."""
        for scope in self.scopes(at):
            args = scope.args
            params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            if name in params:
                function = getattr(scope, "name", "<lambda>")
                if (function, name) in CALLERS_OWN_SQL:
                    return []
                return self.arguments(function, params, name)
            values: list[ast.expr] = []
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in node.targets
                ):
                    values.append(node.value)
                elif isinstance(node, ast.Assign) and (place := _unpacked_at(node, name)) is not None:
                    returned = self.returned(node.value, place)  # ``sql, params = helper(...)``
                    if returned is None:
                        return None
                    values.extend(returned)
                elif isinstance(node, ast.AugAssign | ast.AnnAssign) and isinstance(node.target, ast.Name):
                    if node.target.id == name and node.value is not None:
                        values.append(node.value)
                elif (
                    isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == name
                ):
                    values.append(node.iter)
            if values:
                return values
        return self.constants.get(name)

    def returned(
        self, call: ast.expr, index: int, seen: frozenset[str] = frozenset()
    ) -> list[ast.expr] | None:
        """Item ``index`` of what ``call`` returns, when it calls a function of this module that returns
        tuples (or the result of another such function); ``None``: unknown."""
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)) or call.func.id in seen:
            return None
        functions = [
            node
            for node in ast.walk(self.module)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == call.func.id
        ]
        if len(functions) != 1:
            return None
        found: list[ast.expr] = []
        for node in ast.walk(functions[0]):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            if isinstance(node.value, ast.Tuple) and index < len(node.value.elts):
                found.append(node.value.elts[index])
                continue
            inner = self.returned(node.value, index, seen | {call.func.id})
            if inner is None:
                return None
            found.extend(inner)
        return found or None

    def arguments(self, function: str, params: list[str], name: str) -> list[ast.expr] | None:
        """What the module's calls of ``function`` pass as its parameter ``name`` (``None``: unknown)."""
        index = params.index(name) - (1 if params[:1] == ["self"] else 0)
        passed: list[ast.expr] = []
        for node in self.parents:
            if (
                not isinstance(node, ast.Call)
                or getattr(node.func, "attr", getattr(node.func, "id", "")) != function
            ):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            if name in keywords:
                passed.append(keywords[name])
            elif index < len(node.args) and not any(
                isinstance(a, ast.Starred) for a in node.args[: index + 1]
            ):
                passed.append(node.args[index])
            else:
                return None
        return passed or None

    def binding(self, name: str, at: ast.AST) -> str:
        """Which variable ``name`` is where it is used: its function's (a parameter or an assignment)
        or the module's; two functions' variables of one name are two variables."""
        for scope in self.scopes(at):
            args = scope.args
            if name in [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)] or any(
                isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store)
                for node in ast.walk(scope)
            ):
                return f"{name}@{id(scope)}"
        return name

    def controlled(self, expr: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        match expr:
            case ast.Constant(value=str() | int()):
                return True
            case ast.JoinedStr(values=parts):
                return all(
                    self.controlled(p.value if isinstance(p, ast.FormattedValue) else p, seen) for p in parts
                )
            case ast.BinOp(left=left, right=right):
                return self.controlled(left, seen) and self.controlled(right, seen)
            case ast.IfExp(body=body, orelse=orelse):
                return self.controlled(body, seen) and self.controlled(orelse, seen)
            case ast.Call(func=ast.Name(id="len")):
                return True  # a number
            case ast.Call(func=ast.Attribute(value=value, attr="join" | "split" | "strip"), args=args):
                return self.controlled(value, seen) and all(self.controlled(a, seen) for a in args)
            case ast.Attribute():
                return ast.unparse(expr) in CONTROLLED_ATTRIBUTES
            case ast.Name(id=name):
                variable = self.binding(name, expr)
                if variable in seen:  # a cycle (``where += ...``): decided by its other sources
                    return True
                sources = self.name_sources(name, expr)
                return sources is not None and all(self.controlled(s, seen | {variable}) for s in sources)
        return False


def test_sql_is_built_only_from_text_the_code_controls() -> None:
    """Every statement the stores and read models run is a constant, or built (f-strings, ``+``) from
    constants, placeholder lists and numbers: user values only ever travel as bound parameters."""
    files = sorted((ROOT / "streamsrc" / "store").glob("*.py")) + sorted(
        (ROOT / "streamsrc" / "projections").glob("*.py")
    )
    checked, offending = 0, []
    for path in files:
        tree = ast.parse(path.read_text())
        sources = _SqlSources(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS
                and node.args
            ):
                checked += 1
                if not sources.controlled(node.args[0]):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:120]}")
    assert offending == []
    assert checked > 40  # the check saw the stores' statements


def test_the_sql_check_catches_interpolated_values() -> None:
    """The check above fails on the mistakes it is there for."""
    bad = """
def read(conn, stream):
    conn.execute(f"SELECT * FROM events WHERE stream = '{stream}'")
def latest(conn, stream):
    sql = "SELECT * FROM events WHERE stream = '" + stream + "'"
    conn.execute(sql)
def types(conn, kinds):
    where = ""
    where += " AND type IN (%s)" % ",".join(kinds)
    conn.fetch("SELECT 1" + where)
def _query(stream):
    if stream:
        return f"SELECT * FROM events WHERE stream = '{stream}'", ()
    return "SELECT * FROM events", ()
def page(conn, stream):
    sql, params = _query(stream)
    conn.execute(sql, params)
def unknown(conn, helper):
    sql, params = helper()
    conn.execute(sql, params)
"""
    tree = ast.parse(bad)
    sources = _SqlSources(tree)
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") in SQL_CALLS
    ]
    assert len(calls) == 5
    assert not any(sources.controlled(c.args[0]) for c in calls)
    good = ast.parse(
        "def _query(bound):\n    return ('SELECT 1 WHERE x > ?', (bound,)) if bound else _other()\n"
        "def _other():\n    return 'SELECT 2', ()\n"
        "def page(conn, bound):\n    sql, params = _query(bound)\n    conn.execute(sql, params)\n"
    )
    call = next(
        n for n in ast.walk(good) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "execute"
    )
    assert not _SqlSources(good).controlled(call.args[0])  # an IfExp of tuples is not followed: unknown
    simple = ast.parse(
        "def _query(bound):\n    if bound:\n        return 'SELECT 1 WHERE x > ?', (bound,)\n"
        "    return _other()\n"
        "def _other():\n    return 'SELECT 2', ()\n"
        "def page(conn, bound):\n    sql, params = _query(bound)\n    conn.execute(sql, params)\n"
    )
    call = next(
        n for n in ast.walk(simple) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "execute"
    )
    assert _SqlSources(simple).controlled(call.args[0])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dynamodb_requests_carry_user_text_only_as_attribute_values(tmp_path: Path) -> None:
    if "dynamodb" not in STORE_URLS:
        pytest.skip("needs aiobotocore")
    name = "#s = :s OR attribute_exists(pk) 'x\" :a"
    kind = "#t :t"
    requests: list[tuple[str, dict[str, Any]]] = []

    def capture(params: dict[str, Any], model: Any, **_: Any) -> None:
        requests.append((model.name, json.loads(json.dumps(params, default=str))))

    async with opened_store("dynamodb", tmp_path) as opened:
        opened._client.meta.events.register("provide-client-params.dynamodb.*", capture)
        await opened.append(name, [EventData(kind, {name: name})])
        assert isinstance(await opened.append(name, [EventData(kind, {})], expected=0), Failure)
        assert [e.stream for e in await opened.read(name).to_list()] == [name]
        await opened.read(name, after=0, backwards=True).to_list()
        await opened.latest(name)
        await opened.read_all(types=[kind], stream_prefix=name).to_list()
        await opened.streams().to_list()
        await opened.save_snapshot(name, 1, {name: 1}, 1)
        await opened.load_snapshot(name, 1, at_seq=1)
        await opened.save_checkpoint(name, 1)
        await opened.load_checkpoint(name)

    def expressions(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key.endswith("Expression") and isinstance(inner, str):
                    yield inner
                else:
                    yield from expressions(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from expressions(inner)

    operations = {operation for operation, _ in requests}
    assert {"TransactWriteItems", "Query", "PutItem", "GetItem"} <= operations
    seen = [text for _, params in requests for text in expressions(params)]
    assert seen  # conditions were sent
    for text in seen:
        assert name not in text, text
        assert kind not in text, text
        assert "'x" not in text, text

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for inner in value.values():
                yield from strings(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from strings(inner)

    assert any(name in text for _, params in requests for text in strings(params))  # it went, as a value


# ---------------------------------------------------------------------------------------------- secrets

WRONG = "Wrong-Pw-S3cret-0815"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("", "streamsrc", "asyncpg", "botocore", "aiobotocore", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_wrong_postgres_password_never_shows(
    postgres_database: str, all_logs: pytest.LogCaptureFixture
) -> None:
    from pg_server import LOCKED_PASSWORD, PASSWORD

    assert WRONG != LOCKED_PASSWORD
    url = postgres_database.replace(f"streamsrc:{PASSWORD}@", f"locked:{WRONG}@")
    assert WRONG in url
    with pytest.raises(StoreUnavailable) as caught:
        async with open_store(url):
            pass
    assert WRONG not in _shown(caught.value)
    assert "locked:***@" in str(caught.value)
    async with open_store(postgres_database) as opened:
        from streamsrc.store.postgres import PostgresStore  # asyncpg: only where PostgreSQL runs

        assert isinstance(opened, PostgresStore)
        shown = repr(opened) + str(opened) + opened.url
        assert PASSWORD not in shown
        assert "***" in shown
        await opened.append("s", [EventData("T", {})])
        await opened.read_all().to_list()
    logged = "\n".join(r.getMessage() + str(r.args) + str(r.exc_info) for r in all_logs.records)
    assert WRONG not in logged
    assert PASSWORD not in logged
    assert WRONG not in all_logs.text
    assert PASSWORD not in all_logs.text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_dynamodb_secrets_in_a_url_never_show(
    moto_endpoint: str, all_logs: pytest.LogCaptureFixture
) -> None:
    for url in (
        f"dynamodb://events?region=us-east-1&endpoint_url={moto_endpoint}&aws_secret_access_key={WRONG}",
        f"dynamodb://events?region=us-east-1&endpoint_url={moto_endpoint}&session_token={WRONG}",
        f"dynamodb://events?region=us-east-1&endpoint_url=http://app:{WRONG}@127.0.0.1:1",
        f"dynamodb://app:{WRONG}@events?region=us-east-1",
    ):
        error = await _refused(url)
        assert isinstance(error, InvalidStoreURL)
        assert WRONG not in _shown(error)
    async with open_store(fresh_dynamodb_url()) as opened:
        await opened.append("s", [EventData("T", {})])
    assert WRONG not in all_logs.text


def test_the_cli_never_prints_the_password(postgres_server: str) -> None:
    from pg_server import PASSWORD

    url = postgres_server.replace(f"streamsrc:{PASSWORD}@", f"locked:{WRONG}@")
    assert WRONG in url
    for args in (["--url", url, "streams"], ["--url", url.replace("postgresql:", "nosuch:"), "streams"]):
        done = subprocess.run(
            [sys.executable, "-m", "streamsrc", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert done.returncode != 0
        assert WRONG not in done.stdout + done.stderr
        assert "***" in done.stderr, done.stderr


def test_recorded_events_with_odd_names_survive_json_round_trips() -> None:
    """What the CLI and Kinesis export: odd names and payloads come back equal."""
    from datetime import UTC, datetime
    from uuid import UUID

    from streamsrc.events import recorded_from_json, recorded_to_json

    for name in ODD_NAMES:
        event = RecordedEvent(
            name, 1, 1, name, {name: [name]}, {"m": name}, UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC)
        )
        assert recorded_from_json(json.loads(json.dumps(recorded_to_json(event)))) == event
