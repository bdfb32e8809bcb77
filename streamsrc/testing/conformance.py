"""The store conformance suite: every guarantee of the store contract, as pytest tests.

Any event store (memory, SQLite, or a third-party backend) runs it by
subclassing :class:`EventStoreConformance` in a test module and providing one
fixture, ``store``, that yields a fresh, opened, empty store::

    import pytest
    from streamsrc.store import open_store
    from streamsrc.testing import EventStoreConformance

    class TestMyStore(EventStoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with open_store(f"sqlite:///{tmp_path}/events.db") as s:
                yield s

The tests are async and marked ``pytest.mark.anyio``: they run on every
backend that the ``anyio_backend`` fixture names (anyio's default is asyncio
only; override ``anyio_backend`` to add trio).

A backend that does not give one of the guarantees says so with a class
attribute (``supports_global_order = False``, say); the tests of that
guarantee are then skipped for it, and every other test still runs. The
store's ``page_size`` and ``max_event_size`` attributes, when it has them,
size the paging and size-limit tests.

This module imports pytest: only test code imports it, never streamsrc itself.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, TypeVar, cast

import anyio
import anyio.lowlevel
import pytest
from returns.maybe import Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import (
    DuplicateEvent,
    EventTooLarge,
    InvalidEvent,
    StoreError,
    WrongExpectedVersion,
)
from streamsrc.events import MAX_NAME_LENGTH, EventData, RecordedEvent
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    AppendSignal,
    CheckpointStore,
    EventStore,
    Expected,
    ImportingStore,
    NotifyingStore,
    SnapshotStore,
)

__all__ = ["ConformantStore", "EventStoreConformance"]

E = TypeVar("E", bound=StoreError)


class ConformantStore(EventStore, SnapshotStore, CheckpointStore, Protocol):
    """What the ``store`` fixture yields: an event store that also keeps snapshots and checkpoints."""


# ---------------------------------------------------------------------------------------- helpers


def page_size_of(store: object) -> int:
    """The store's ``page_size`` attribute (events per read page), or the default."""
    return int(getattr(store, "page_size", DEFAULT_PAGE_SIZE))


def max_event_size_of(store: object) -> int:
    """The store's ``max_event_size`` attribute (bytes per event), or the default."""
    return int(getattr(store, "max_event_size", DEFAULT_MAX_EVENT_SIZE))


def make_events(n: int, tag: str = "e", kind: str = "Tested") -> list[EventData]:
    """``n`` fresh events whose data names ``tag`` and their index."""
    return [EventData(kind, {"tag": tag, "i": i}) for i in range(n)]


def expect_success(result: Result[AppendResult, StoreError]) -> AppendResult:
    """The ``AppendResult`` of a successful append (fails the test otherwise)."""
    assert isinstance(result, Success), f"expected Success, got {result!r}"
    value = result.unwrap()
    assert isinstance(value, AppendResult), value
    return value


def expect_failure(result: Result[AppendResult, StoreError], cls: type[E]) -> E:
    """The error of a failed append, checked to be a ``cls`` (fails the test otherwise)."""
    assert isinstance(result, Failure), f"expected Failure({cls.__name__}), got {result!r}"
    error = result.failure()
    assert isinstance(error, cls), f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    return error


def content(events: Sequence[EventData]) -> list[tuple[str, Any, Any, uuid.UUID]]:
    """What the store must give back of ``events``: type, data, metadata, id."""
    return [(e.type, e.data, e.metadata, e.id) for e in events]


def recorded_content(records: Sequence[RecordedEvent]) -> list[tuple[str, Any, Any, uuid.UUID]]:
    """Type, data, metadata and id of recorded events (to compare with :func:`content`)."""
    return [(r.type, r.data, r.metadata, r.id) for r in records]


async def append_ok(
    store: EventStore, stream: str, events: Sequence[EventData], expected: Expected = ANY
) -> AppendResult:
    """Append and return the ``AppendResult`` (fails the test if the append failed)."""
    return expect_success(await store.append(stream, events, expected))


async def tail_log(
    store: ConformantStore,
    writers_done: anyio.Event,
    seen: list[RecordedEvent],
    limits: Sequence[int | None] = (None,),
) -> None:
    """Follow ``read_all`` into ``seen`` until the writers are done and nothing is left.

    Each read starts after the last position seen (page limits cycle through
    ``limits``), and every event must come after the one before it.
    """
    last = 0
    for limit in itertools.cycle(limits):
        finished = writers_done.is_set()  # then the read below sees every event
        page = await store.read_all(after=last, limit=limit).to_list()
        for record in page:
            assert record.position > last, (record.position, last)
            last = record.position
            seen.append(record)
        if not page:
            if finished:
                return
            await anyio.sleep(0.001)


def _is_utc(moment: datetime) -> bool:
    return moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


_IMPORTED_SHAPES: list[tuple[str, Any, dict[str, Any] | None]] = [
    ("Registered", {"email": "ada@example.com", "ünï": "🎉"}, {"user": "ada", "n": 1}),
    ("Renamed", ["a", 1, None], None),
    ("Nulled", None, None),
    ("Counted", 2**70, {"": ""}),
    ("Said", "just a string", None),
]
"""Types, data and metadata of events to import."""


def recorded(
    stream: str,
    first_seq: int,
    shapes: Sequence[tuple[str, Any, dict[str, Any] | None]],
    first_position: int = 1,
) -> list[RecordedEvent]:
    """Events as another store recorded them: consecutive seqs from ``first_seq``, fresh ids, and
    times long past with microseconds, some with a UTC offset other than 0."""
    out = []
    for k, (kind, data, metadata) in enumerate(shapes):
        zone = UTC if k % 2 == 0 else timezone(timedelta(hours=5, minutes=30))
        moment = datetime(2019, 3, 1 + k, 12, 30, 15, 123456 + k, tzinfo=UTC).astimezone(zone)
        event = EventData(kind, data, metadata)
        out.append(
            RecordedEvent(stream, first_seq + k, first_position + k, kind, data, metadata, event.id, moment)
        )
    return out


def _recorded_like(event: RecordedEvent, **changes: Any) -> RecordedEvent:
    """``event`` with some fields changed (and a fresh id, unless ``id`` is given)."""
    fields = event._asdict()
    fields["id"] = EventData("T", None).id
    fields.update(changes)
    return RecordedEvent(**fields)


def _fields(event: RecordedEvent) -> tuple[Any, ...]:
    """Everything of an event but its position: what an import must keep."""
    return (event.stream, event.seq, event.type, event.data, event.metadata, event.id, event.time)


_SPECIAL_NAMES = (
    "'; DROP TABLE events; --",
    "quote'single",
    'quote"double',
    "back\\slash",
    "%",
    "_",
    "a%",
    "a_c",
    "abc",
    "a*c",
    "?",
    "NULL",
    "null",
    "Stream",
    "stream",
    "stream ",
    " stream",
    "ünïcødé",
    "emoji 🎉👩‍👩‍👧",
    "עברית RTL",
    "日本語",
    "path/to/stream",
    "../../etc/passwd",
    "/absolute/path",
    "C:\\windows\\path",
    "s" * MAX_NAME_LENGTH,
)

_INVALID_NAMES = (
    "",
    "x" * (MAX_NAME_LENGTH + 1),
    "new\nline",
    "nul\x00",
    "tab\tname",
    "esc\x1b",
    "del\x7f",
    "c1\x85",
)


def _bad_event(kind: str) -> EventData:
    """One event that no store may accept, of the given kind."""
    if kind == "set-data":
        return EventData("Bad", {"s": {1, 2}})
    if kind == "nan-data":
        return EventData("Bad", {"x": float("nan")})
    if kind == "infinity-data":
        return EventData("Bad", [float("inf")])
    if kind == "object-data":
        return EventData("Bad", object())
    if kind == "lone-surrogate":
        return EventData("Bad", {"s": "\ud800"})
    if kind == "empty-type":
        return EventData("", {})
    if kind == "control-type":
        return EventData("Bad\nType", {})
    if kind == "long-type":
        return EventData("T" * (MAX_NAME_LENGTH + 1), {})
    if kind == "metadata-list":
        return EventData("Bad", {}, metadata=cast(Any, ["not", "a", "dict"]))
    if kind == "metadata-string":
        return EventData("Bad", {}, metadata=cast(Any, "meta"))
    if kind == "metadata-not-json":
        return EventData("Bad", {}, metadata={"x": float("nan")})
    if kind == "id-not-uuid":
        return EventData("Bad", {}, id=cast(Any, "not-a-uuid"))
    if kind == "not-event-data":
        return cast(EventData, {"type": "Bad", "data": {}})
    raise AssertionError(kind)


_BAD_EVENT_KINDS = (
    "set-data",
    "nan-data",
    "infinity-data",
    "object-data",
    "lone-surrogate",
    "empty-type",
    "control-type",
    "long-type",
    "metadata-list",
    "metadata-string",
    "metadata-not-json",
    "id-not-uuid",
    "not-event-data",
)


def _cases(afters: Sequence[int], limits: Sequence[int | None], middle: int) -> list[tuple[int, int | None]]:
    """(after, limit) pairs to read with: every ``after`` unlimited and with small limits, and every
    limit from the start and from ``middle`` (a page boundary)."""
    pairs = [(a, limit) for a in afters for limit in (None, 1, 2)]
    pairs += [(a, limit) for a in (0, middle) for limit in limits if limit is None or limit >= 0]
    return sorted(set(pairs), key=lambda p: (p[0], -1 if p[1] is None else p[1]))


_FILTER_TYPES = (
    "Opened",
    "Closed",
    "Noted",
    "opened",
    "Open",
    "Type%",
    "TypeAB",
    "Type_X",
    "Typ*",
    "Tÿpe 🎉",
)
"""Event types for the type filter tests: case, prefixes of one another, LIKE/GLOB characters."""

_PREFIX_STREAMS = (
    "order-1",
    "order-2",
    "orders",
    "Order-3",
    "ORDER-4",
    "ord",
    "o",
    "a%b",
    "a%",
    "ab",
    "aXb",
    "a_c",
    "a_",
    "abc",
    "a*c",
    "a*",
    "a[b]c",
    "a[",
    "ab]",
    "a?c",
    "a.c",
    "a\\b",
    "a'b",
    'a"b',
    "a b",
    "ünï-1",
    "ünïcødé",
    "uni-2",
    "Ünï-3",
    "日本-1",
    "日本語",
    "🎉-1",
    "🎉🎉",
    "e\u0301-combining",
    "é-precomposed",
    "ß-sharp",
    "ss-plain",
)
"""Stream names for the prefix filter tests."""

_PREFIXES = (
    "order",
    "order-",
    "Order",
    "ORDER",
    "o",
    "orders",
    "order-1",
    "order-10",
    "%",
    "a%",
    "a%b",
    "_",
    "a_",
    "*",
    "a*",
    "?",
    "a?",
    "[",
    "a[",
    "a[b",
    "a[b]",
    "]",
    ".",
    "a.",
    "\\",
    "a\\",
    "'",
    "a'",
    'a"',
    "a ",
    "a",
    "ab",
    "u",
    "ü",
    "ünï",
    "Ü",
    "日本",
    "日",
    "🎉",
    "🎉🎉",
    "e",
    "e\u0301",
    "é",
    "ß",
    "ss",
    "SS",
    "zzz",
)
"""Prefixes to filter by: each must match literally, case and accents included (no wildcards)."""


_EXPECTED_MODES = ("zero", "exact", "exact-1", "exact+1", "any", "no_stream", "stream_exists")


def _expected_for(mode: str, current: int) -> tuple[Expected, bool]:
    """The ``expected`` argument for ``mode`` on a stream at ``current``, and whether it must succeed."""
    if mode == "zero":
        return 0, current == 0
    if mode == "exact":
        return current, True
    if mode == "exact-1":
        return current - 1, False
    if mode == "exact+1":
        return current + 1, False
    if mode == "any":
        return ANY, True
    if mode == "no_stream":
        return NO_STREAM, current == 0
    if mode == "stream_exists":
        return STREAM_EXISTS, current > 0
    raise AssertionError(mode)


_EXPECTED_CASES = [
    (current, mode)
    for current in (0, 3)
    for mode in _EXPECTED_MODES
    if not (mode == "exact-1" and current == 0)
]

_UNICODE_DATA: dict[str, Any] = {
    "emoji": "🎉👩‍👩‍👧🏳️‍🌈",
    "rtl": "שלום עליכם مرحبا",
    "nul": "before\x00after",
    "controls": "\t\n\r\x1b\x7f",
    "mixed": "Zürich 東京 Ελλάδα",
    "ключ 🔑": ["вложенный", {"глубже": True}],
    "escapes": '"quoted" \\ back/slash \u2028 \u2029',
    "": "empty key",
    "numbers": [0, -1, 2**63, 2**70, 1.5, -0.25, 1e300, 1e-300],
    "literals": [True, False, None],
    "empty": {"list": [], "dict": {}, "str": ""},
}


# ---------------------------------------------------------------------------------------- the suite


class EventStoreConformance:
    """The conformance tests of the store contract; subclass it and provide a ``store`` fixture.

    Each ``supports_*`` attribute is a guarantee of the contract; a backend
    that does not give one sets it to ``False`` and the tests of that
    guarantee are skipped. Memory and SQLite give them all.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    supports_expected_version: ClassVar[bool] = True
    """Conditional appends: exact versions, ``NO_STREAM`` and ``STREAM_EXISTS`` are checked atomically."""
    supports_atomic_batches: ClassVar[bool] = True
    """A batch is written whole or not at all (an invalid or duplicate event stops all of it)."""
    supports_idempotent_retry: ClassVar[bool] = True
    """Re-appending stored ids at the same place succeeds with the stored positions."""
    supports_global_order: ClassVar[bool] = True
    """``read_all`` gives every event in strictly increasing position (commit) order, never skipping."""
    supports_backwards_reads: ClassVar[bool] = True
    """``read(..., backwards=True)`` gives a stream's events last first."""
    supports_concurrent_writers: ClassVar[bool] = True
    """Many tasks may append to one store at once, with every conditional append decided correctly."""
    supports_snapshots: ClassVar[bool] = True
    """``save_snapshot``/``load_snapshot`` keep states per key, seq and schema version."""
    supports_checkpoints: ClassVar[bool] = True
    """``save_checkpoint``/``load_checkpoint`` keep named positions."""
    supports_append_signal: ClassVar[bool] = True
    """The store is a ``NotifyingStore``: ``store.appended`` moves on after every append that wrote
    events, and only then (a store without it is still usable: subscriptions poll it)."""
    supports_import: ClassVar[bool] = True
    """The store is an ``ImportingStore``: ``import_events`` writes recorded events keeping id and time,
    with seqs that must continue the stream (checked atomically), idempotently."""
    concurrent_writer_tasks: ClassVar[int] = 16
    """Tasks racing to append to one stream in the concurrent-writers test (a backend whose every
    write is slow, DynamoDB on moto say, may lower it; the race is the same with fewer)."""
    large_event_bytes: ClassVar[int] = 500_000
    """Size of the large payload that must round-trip (0: skip that test)."""
    max_clock_skew: ClassVar[timedelta] = timedelta(milliseconds=5)
    """How far an event's ``time`` may lie outside the caller's clock readings around the append."""

    @pytest.fixture
    def store(self) -> ConformantStore:
        """A fresh, opened store: every subclass must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `store` fixture yielding a fresh, opened store"
        )

    def _require(self, guarantee: str) -> None:
        if not getattr(self, guarantee):
            pytest.skip(f"{type(self).__name__} declares {guarantee} = False")

    async def _everything(self, store: ConformantStore) -> list[RecordedEvent]:
        """Every stored event: by ``read_all`` if the store orders globally, else stream by stream."""
        if self.supports_global_order:
            return await store.read_all().to_list()
        out: list[RecordedEvent] = []
        for name in await store.streams().to_list():
            out.extend(await store.read(name).to_list())
        return out

    async def _state(self, store: ConformantStore) -> tuple[int, list[str], list[RecordedEvent]]:
        """All that a failed append must leave unchanged."""
        return await store.head(), await store.streams().to_list(), await self._everything(store)

    # ------------------------------------------------------------------ basics

    async def test_fresh_store_is_empty(self, store: ConformantStore) -> None:
        assert await store.head() == 0
        assert await store.streams().to_list() == []
        assert await store.read_all().to_list() == []
        assert await store.read("nothing").to_list() == []
        assert await store.latest("nothing") == Nothing

    async def test_append_returns_seqs_and_positions(self, store: ConformantStore) -> None:
        first = make_events(3, "a")
        second = make_events(2, "a2")
        r1 = await append_ok(store, "a", first)
        r2 = await append_ok(store, "a", second)
        assert (r1.stream, r1.first_seq, r1.last_seq, len(r1.positions)) == ("a", 1, len(first), len(first))
        assert (r2.first_seq, r2.last_seq) == (len(first) + 1, len(first) + len(second))
        positions = [*r1.positions, *r2.positions]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        assert all(p > 0 for p in positions)
        records = await store.read("a").to_list()
        assert [r.seq for r in records] == list(range(1, len(first) + len(second) + 1))
        assert [r.position for r in records] == positions
        assert [r.stream for r in records] == ["a"] * len(records)
        assert recorded_content(records) == content([*first, *second])
        assert await store.head() == positions[-1]

    async def test_recorded_fields(self, store: ConformantStore) -> None:
        events = [
            EventData("Registered", {"email": "ada@example.com"}, metadata={"user": "ada", "n": 1}),
            EventData("Renamed", ["a", 1, None], metadata=None),
            EventData("Nulled", None),
            EventData("Counted", 42),
            EventData("Said", "just a string"),
        ]
        before = datetime.now(UTC)
        result = await append_ok(store, "fields", events)
        after = datetime.now(UTC)
        records = await store.read("fields").to_list()
        assert recorded_content(records) == content(events)
        assert [r.id for r in records] == [e.id for e in events]
        assert all(isinstance(r.id, uuid.UUID) for r in records)
        assert [r.position for r in records] == list(result.positions)
        for r in records:
            assert isinstance(r.time, datetime)
            assert _is_utc(r.time), r.time
            assert before - self.max_clock_skew <= r.time <= after + self.max_clock_skew

    async def test_empty_batch_writes_nothing(self, store: ConformantStore) -> None:
        empty = await append_ok(store, "empty", [])
        assert (empty.stream, empty.last_seq, empty.positions) == ("empty", 0, ())
        assert await store.streams().to_list() == []
        assert await store.head() == 0
        assert await store.latest("empty") == Nothing
        written = await append_ok(store, "full", make_events(2))
        again = await append_ok(store, "full", [], written.last_seq)
        assert (again.last_seq, again.positions) == (written.last_seq, ())
        assert await store.streams().to_list() == ["full"]
        assert await store.head() == written.positions[-1]

    async def test_empty_batch_checks_expected(self, store: ConformantStore) -> None:
        self._require("supports_expected_version")
        await append_ok(store, "s", make_events(2))
        error = expect_failure(await store.append("s", [], 0), WrongExpectedVersion)
        assert (error.stream, error.expected, error.actual) == ("s", 0, 2)
        error = expect_failure(await store.append("none", [], STREAM_EXISTS), WrongExpectedVersion)
        assert (error.stream, error.expected, error.actual) == ("none", STREAM_EXISTS, 0)

    # ------------------------------------------------------------------ expected versions

    async def test_expected_version(self, store: ConformantStore) -> None:
        self._require("supports_expected_version")
        await append_ok(store, "other", make_events(2, "other"))
        for current, mode in _EXPECTED_CASES:
            case = f"expected={mode} on a stream at {current}"
            name = f"acct-{mode}-{current}"
            if current:
                await append_ok(store, name, make_events(1, "pre"))
                await append_ok(store, name, make_events(current - 1, "pre2"))
            expected, must_succeed = _expected_for(mode, current)
            batch = make_events(2, "new")
            before = await self._state(store)
            result = await store.append(name, batch, expected)
            if must_succeed:
                written = expect_success(result)
                assert (written.stream, written.first_seq, written.last_seq) == (
                    name,
                    current + 1,
                    current + len(batch),
                ), case
                records = await store.read(name).to_list()
                assert [r.seq for r in records] == list(range(1, current + len(batch) + 1)), case
                assert recorded_content(records[current:]) == content(batch), case
                assert [r.position for r in records[current:]] == list(written.positions), case
            else:
                error = expect_failure(result, WrongExpectedVersion)
                assert (error.stream, error.expected, error.actual) == (name, expected, current), case
                assert await self._state(store) == before, case

    async def test_losing_append_then_retry_with_actual(self, store: ConformantStore) -> None:
        self._require("supports_expected_version")
        await append_ok(store, "s", make_events(3), NO_STREAM)
        batch = make_events(1, "late")
        error = expect_failure(await store.append("s", batch, 1), WrongExpectedVersion)
        written = await append_ok(store, "s", batch, error.actual)
        assert written.first_seq == error.actual + 1

    # ------------------------------------------------------------------ atomic batches

    async def test_invalid_event_fails_whole_batch(self, store: ConformantStore) -> None:
        self._require("supports_atomic_batches")
        for kind in _BAD_EVENT_KINDS:
            name = f"s-{kind}"
            await append_ok(store, name, make_events(2, "pre"))
            good = make_events(2, "good")
            before = await self._state(store)
            error = expect_failure(await store.append(name, [*good, _bad_event(kind)], 2), InvalidEvent)
            assert not isinstance(error, EventTooLarge), kind
            assert await self._state(store) == before, kind
            # The valid events' ids were not taken: they go in on their own.
            written = await append_ok(store, name, good, 2)
            assert (written.first_seq, written.last_seq) == (3, 4), kind

    async def test_invalid_event_in_new_stream_creates_nothing(self, store: ConformantStore) -> None:
        self._require("supports_atomic_batches")
        error = expect_failure(
            await store.append("fresh", [*make_events(3), _bad_event("nan-data")]), InvalidEvent
        )
        assert str(error)
        assert await self._state(store) == (0, [], [])

    async def test_duplicate_id_within_batch(self, store: ConformantStore) -> None:
        self._require("supports_atomic_batches")
        one = EventData("T", {"n": 1})
        twin = EventData("T", {"n": 2}, id=one.id)
        expect_failure(await store.append("s", [one, *make_events(1), twin]), InvalidEvent)
        assert await self._state(store) == (0, [], [])
        expect_failure(await store.append("s", [one, one]), InvalidEvent)
        assert await self._state(store) == (0, [], [])

    async def test_event_too_large(self, store: ConformantStore) -> None:
        self._require("supports_atomic_batches")
        limit = max_event_size_of(store)
        big = EventData("Big", "x" * limit)  # encoded with its quotes: limit + 2 bytes
        before = await self._state(store)
        error = expect_failure(await store.append("s", [*make_events(1), big]), EventTooLarge)
        assert isinstance(error, InvalidEvent)
        assert (error.event_id, error.limit) == (big.id, limit)
        assert error.size > limit
        assert await self._state(store) == before

    async def test_event_size_limit_is_inclusive_and_counts_metadata(self, store: ConformantStore) -> None:
        limit = max_event_size_of(store)
        exact = EventData("Exact", "y" * (limit - 2))  # encoded: exactly ``limit`` bytes
        written = await append_ok(store, "limit", [exact])
        assert written.last_seq == 1
        [record] = await store.read("limit").to_list()
        assert record.data == exact.data
        # data and metadata each under the limit, together over it
        half = EventData("Halves", "z" * (limit // 2), metadata={"m": "z" * (limit // 2)})
        error = expect_failure(await store.append("limit", [half]), EventTooLarge)
        assert error.event_id == half.id
        assert await store.read("limit").count() == 1

    # ------------------------------------------------------------------ idempotent retries

    async def test_retry_at_same_place_is_idempotent(self, store: ConformantStore) -> None:
        self._require("supports_idempotent_retry")
        await append_ok(store, "other", make_events(1, "other"))
        retries: dict[str, Expected] = {
            "same-expected": 0,
            "any": ANY,
            "no_stream": NO_STREAM,
            "stream_exists": STREAM_EXISTS,
        }
        for how, retry_expected in retries.items():
            name = f"s-{how}"
            batch = make_events(3, "retry")
            original_expected: Expected = 0
            if how == "stream_exists":
                await append_ok(store, name, make_events(1, "first"))
                original_expected = STREAM_EXISTS
            first = await append_ok(store, name, batch, original_expected)
            before = await self._state(store)
            again = await append_ok(store, name, batch, retry_expected)
            assert again == first, how
            assert await self._state(store) == before, how

    async def test_retry_after_stream_moved_on(self, store: ConformantStore) -> None:
        self._require("supports_idempotent_retry")
        batch = make_events(2, "mine")
        first = await append_ok(store, "s", batch, 0)
        await append_ok(store, "s", make_events(3, "theirs"), first.last_seq)
        before = await self._state(store)
        assert await append_ok(store, "s", batch, 0) == first
        assert await append_ok(store, "s", batch, ANY) == first
        assert await self._state(store) == before

    async def test_retry_of_middle_batch(self, store: ConformantStore) -> None:
        self._require("supports_idempotent_retry")
        await append_ok(store, "s", make_events(2, "a"), 0)
        middle = make_events(2, "b")
        placed = await append_ok(store, "s", middle, 2)
        await append_ok(store, "s", make_events(2, "c"), 4)
        before = await self._state(store)
        assert await append_ok(store, "s", middle, 2) == placed
        assert await self._state(store) == before

    async def test_same_ids_elsewhere_are_duplicates(self, store: ConformantStore) -> None:
        self._require("supports_idempotent_retry")
        batch = make_events(3, "orig")
        ids = {e.id for e in batch}
        await append_ok(store, "s", batch, 0)
        before = await self._state(store)
        # another stream
        error = expect_failure(await store.append("t", batch), DuplicateEvent)
        assert error.stream == "t"
        assert error.event_id in ids
        # the same stream, but another place
        error = expect_failure(await store.append("s", batch, len(batch)), DuplicateEvent)
        assert (error.stream, error.event_id in ids) == ("s", True)
        # the same ids in another order
        expect_failure(await store.append("s", list(reversed(batch)), 0), DuplicateEvent)
        # one stored id behind new events: the new events are not written either
        fresh = make_events(2, "fresh")
        error = expect_failure(await store.append("s", [*fresh, batch[1]]), DuplicateEvent)
        assert error.event_id == batch[1].id
        # one stored id in a new stream
        expect_failure(await store.append("u", [*make_events(1), batch[2]]), DuplicateEvent)
        assert await self._state(store) == before
        # ``fresh`` was not written, so its ids are still free
        assert (await append_ok(store, "s", fresh, len(batch))).last_seq == len(batch) + len(fresh)

    # ------------------------------------------------------------------ stream names

    async def test_invalid_stream_names(self, store: ConformantStore) -> None:
        for name in _INVALID_NAMES:
            expect_failure(await store.append(name, make_events(1)), InvalidEvent)
            expect_failure(await store.append(name, []), InvalidEvent)
            expect_failure(await store.append(name, make_events(2), NO_STREAM), InvalidEvent)
            assert await store.latest(name) == Nothing
            assert await store.read(name).to_list() == []
        assert await self._state(store) == (0, [], [])
        longest = "n" * MAX_NAME_LENGTH
        assert (await append_ok(store, longest, make_events(1))).stream == longest

    async def test_special_stream_names_are_isolated(self, store: ConformantStore) -> None:
        names = list(_SPECIAL_NAMES)
        batches: dict[str, list[EventData]] = {}
        for k, name in enumerate(names):
            batches[name] = [EventData("Named", {"name": name, "i": i}) for i in range(1 + k % 3)]
            await append_ok(store, name, batches[name], NO_STREAM)
        assert await store.streams().to_list() == sorted(names)
        for name in names:
            records = await store.read(name).to_list()
            assert recorded_content(records) == content(batches[name]), name
            assert {r.stream for r in records} == {name}
            latest = await store.latest(name)
            assert latest.map(lambda r: r.id) == Some(batches[name][-1].id)
        total = sum(len(b) for b in batches.values())
        assert len(await self._everything(store)) == total

    async def test_streams_sorted_across_pages(self, store: ConformantStore) -> None:
        size = page_size_of(store)
        count = size + 1 if size <= 64 else 67
        names = [f"stream-{(k * 37) % count:04d}" for k in range(count)]  # appended out of order
        for name in names:
            await append_ok(store, name, make_events(1, name))
        assert await store.streams().to_list() == sorted(names)
        assert await store.streams().take(2).to_list() == sorted(names)[:2]

    # ------------------------------------------------------------------ reading and paging

    async def test_read_lengths_around_page_size(self, store: ConformantStore) -> None:
        size = page_size_of(store)
        lengths = sorted({0, 1, size - 1, size, size + 1, 2 * size, 2 * size + 1} - {-1})
        batches = {n: make_events(n, f"len{n}") for n in lengths}
        for n, batch in batches.items():
            if batch:
                await append_ok(store, f"len-{n}", batch, NO_STREAM)
        for n, batch in batches.items():
            records = await store.read(f"len-{n}").to_list()
            assert [r.seq for r in records] == list(range(1, n + 1)), n
            assert recorded_content(records) == content(batch)
            assert await store.read(f"len-{n}").count() == n
        everything = await store.read_all().to_list()
        assert len(everything) == sum(lengths)

    async def test_read_after_and_limit(self, store: ConformantStore) -> None:
        size = page_size_of(store)
        n = 2 * size + 1
        batch = make_events(n, "paged")
        await append_ok(store, "paged", batch)
        await append_ok(store, "noise", make_events(2, "noise"))
        seqs = list(range(1, n + 1))
        afters = sorted({0, 1, size - 1, size, size + 1, n - 1, n, n + 1, n + size + 2} - {-1})
        limits: list[int | None] = [None, 0, 1, size - 1, size, size + 1, n, n + 10]
        for after, limit in _cases(afters, limits, size):
            want = [s for s in seqs if s > after][:limit]
            got = await store.read("paged", after=after, limit=limit).to_list()
            assert [r.seq for r in got] == want, (after, limit)
            assert recorded_content(got) == content([batch[s - 1] for s in want])

    async def test_read_backwards(self, store: ConformantStore) -> None:
        self._require("supports_backwards_reads")
        size = page_size_of(store)
        n = 2 * size + 1
        batch = make_events(n, "back")
        await append_ok(store, "back", batch)
        await append_ok(store, "noise", make_events(2, "noise"))
        seqs = list(range(1, n + 1))
        afters = sorted({0, 1, 2, size, size + 1, n, n + 1, n + size + 2})
        limits: list[int | None] = [None, 0, 1, size, size + 1, n + 10]
        for after, limit in _cases(afters, limits, size):
            below = [s for s in seqs if after == 0 or s < after]
            want = list(reversed(below))[:limit]
            got = await store.read("back", after=after, limit=limit, backwards=True).to_list()
            assert [r.seq for r in got] == want, (after, limit)
            assert recorded_content(got) == content([batch[s - 1] for s in want])
        assert await store.read("empty", backwards=True).to_list() == []

    async def test_read_empty_and_missing_streams(self, store: ConformantStore) -> None:
        await append_ok(store, "some", make_events(2))
        assert await store.read("missing").to_list() == []
        assert await store.read("missing", after=5, limit=3).to_list() == []
        assert await store.read("some", after=2).to_list() == []
        assert await store.read("some", limit=0).to_list() == []

    async def test_read_all_after_and_limit(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        size = page_size_of(store)
        results = []
        for k in range(5):  # interleave streams so stream order and global order differ
            results.append(await append_ok(store, f"s{k % 2}", make_events(size // 2 + 1, f"b{k}")))
        positions = [p for r in results for p in r.positions]
        total = len(positions)
        everything = await store.read_all().to_list()
        assert [r.position for r in everything] == positions
        boundary = positions[size - 1]  # the last event of the first page
        afters = sorted({0, positions[0], boundary, positions[size], positions[-2], positions[-1]})
        afters.append(positions[-1] + 7)
        limits: list[int | None] = [None, 0, 1, size - 1, size, size + 1, total + 3]
        for after, limit in _cases(afters, limits, boundary):
            want = [p for p in positions if p > after][:limit]
            got = await store.read_all(after=after, limit=limit).to_list()
            assert [r.position for r in got] == want, (after, limit)

    async def test_partial_runs(self, store: ConformantStore) -> None:
        size = page_size_of(store)
        n = 2 * size + 1
        batch = make_events(n, "partial")
        await append_ok(store, "partial", batch)
        for k in (0, 1, size, size + 1, n):
            assert recorded_content(await store.read("partial").take(k).to_list()) == content(batch[:k])
        seen: list[RecordedEvent] = []
        async with store.read("partial").open() as it:
            async for record in it:
                seen.append(record)
                if len(seen) == size + 1:
                    break
        assert recorded_content(seen) == content(batch[: size + 1])
        last = await store.read("partial").last()
        assert last.map(lambda r: r.seq) == Some(n)

    async def test_latest(self, store: ConformantStore) -> None:
        assert await store.latest("s") == Nothing
        first = make_events(3, "first")
        await append_ok(store, "s", first)
        await append_ok(store, "t", make_events(1, "other"))
        latest = (await store.latest("s")).unwrap()
        assert (latest.stream, latest.seq, latest.id) == ("s", len(first), first[-1].id)
        assert latest == (await store.read("s").to_list())[-1]
        await append_ok(store, "s", make_events(1, "more"))
        assert (await store.latest("s")).map(lambda r: r.seq) == Some(len(first) + 1)
        assert await store.latest("u") == Nothing

    async def test_head(self, store: ConformantStore) -> None:
        assert await store.head() == 0
        a = await append_ok(store, "a", make_events(2))
        assert await store.head() == a.positions[-1]
        b = await append_ok(store, "b", make_events(3))
        assert await store.head() == b.positions[-1]
        await store.append("a", make_events(1), 0)  # refused: head unchanged
        assert await store.head() == b.positions[-1]

    # ------------------------------------------------------------------ filtered reads

    async def test_read_all_filtered_by_types(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        kinds = _FILTER_TYPES
        opened_later = store.read_all(types={"Opened"})  # lazy: reads when run
        for k in range(3 * len(kinds) + 1):
            batch = [EventData(kinds[(k + i) % len(kinds)], {"k": k, "i": i}) for i in range(1 + k % 3)]
            await append_ok(store, f"typed-{k % 3}", batch)
        everything = await store.read_all().to_list()
        cases: list[Collection[str]] = [
            {"Opened"},
            {"Opened", "Closed"},
            ["Noted"],
            ("Open",),
            frozenset({"Type%"}),
            {"Type_X"},
            {"Typ*"},
            {"Tÿpe 🎉"},
            {"opened"},
            {"Missing"},
            {"Opened", "Missing"},
            dict.fromkeys(["Closed", "Noted"]),
            set(kinds),
        ]
        for types in cases:
            want = [e for e in everything if e.type in types]
            assert want or types == {"Missing"}, types
            assert await store.read_all(types=types).to_list() == want, types
        assert await opened_later.to_list() == [e for e in everything if e.type == "Opened"]
        nothing: list[Collection[str]] = [set(), [], (), frozenset()]
        for empty in nothing:
            assert await store.read_all(types=empty).to_list() == []
        with pytest.raises(TypeError):  # one string is not a collection of types
            await store.read_all(types="Opened").to_list()

    async def test_read_all_filtered_by_stream_prefix(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        for round_ in range(2):  # two rounds: each stream's events are apart in the global order
            for k, name in enumerate(_PREFIX_STREAMS):
                await append_ok(store, name, make_events(1 + (k + round_) % 2, f"{name}-{round_}"))
        everything = await store.read_all().to_list()
        for prefix in _PREFIXES:
            want = [e for e in everything if e.stream.startswith(prefix)]
            assert await store.read_all(stream_prefix=prefix).to_list() == want, prefix
        assert await store.read_all(stream_prefix="").to_list() == everything
        assert await store.read_all(stream_prefix=None).to_list() == everything
        # the cases that catch a prefix used as a LIKE or GLOB pattern, or compared without case
        matched = {
            prefix: sorted({e.stream for e in await store.read_all(stream_prefix=prefix).to_list()})
            for prefix in ("a%", "a_", "a*", "a?", "a[b", "Order", "ü", "e\u0301", "é")
        }
        assert matched == {
            "a%": ["a%", "a%b"],
            "a_": ["a_", "a_c"],
            "a*": ["a*", "a*c"],
            "a?": ["a?c"],
            "a[b": ["a[b]c"],
            "Order": ["Order-3"],
            "ü": ["ünï-1", "ünïcødé"],
            "e\u0301": ["e\u0301-combining"],
            "é": ["é-precomposed"],
        }

    async def test_read_all_filtered_by_types_and_prefix(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        for k in range(24):
            kind = ("Opened", "Closed", "Noted")[k % 3]
            await append_ok(store, ("acct-1", "acct-2", "user-1", "acct")[k % 4], [EventData(kind, {"k": k})])
        everything = await store.read_all().to_list()
        cases: list[tuple[Collection[str], str]] = [
            ({"Opened"}, "acct-"),
            ({"Opened", "Noted"}, "acct"),
            ({"Closed"}, "user-"),
            ({"Closed"}, "nobody"),
            ({"Missing"}, "acct"),
            (set(), "acct"),
        ]
        for types, prefix in cases:
            want = [e for e in everything if e.type in types and e.stream.startswith(prefix)]
            got = await store.read_all(types=types, stream_prefix=prefix).to_list()
            assert got == want, (types, prefix)

    async def test_read_all_filtered_after_and_limit(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        size = page_size_of(store)
        n = 12 * size + 10 if size <= 16 else 60
        for i in range(n):
            kind = "Hit" if i % 3 == 0 else "Miss"
            stream = f"keep-{i % 2}" if i % 5 != 4 else f"skip-{i % 2}"
            await append_ok(store, stream, [EventData(kind, {"i": i})])
            if i == n // 2:  # a run of skipped events longer than two pages
                await append_ok(
                    store, "skip-run", make_events(2 * size + 1 if size <= 16 else 5, "run", "Miss")
                )
        everything = await store.read_all().to_list()
        last = everything[-1].position
        filters: list[tuple[Collection[str] | None, str | None]] = [
            ({"Hit"}, None),
            (None, "keep-"),
            ({"Hit"}, "keep-"),
            ({"Hit", "Miss"}, "skip-"),
        ]
        for types, prefix in filters:
            kept = [
                e
                for e in everything
                if (types is None or e.type in types) and (prefix is None or e.stream.startswith(prefix))
            ]
            assert 2 * size + 1 < len(kept) < len(everything) or size > 16, (types, prefix)
            positions = [e.position for e in kept]
            boundary = positions[min(size, len(positions)) - 1]  # the last event of a first full page
            afters = {
                0,
                positions[0],
                boundary,
                boundary + 1,
                positions[-1] - 1,
                positions[-1],
                last,
                last + 5,
            }
            limits: list[int | None] = [None, 0, 1, size - 1, size, size + 1, len(kept) + 3]
            for after, limit in _cases(sorted(afters), limits, boundary):
                want = [e for e in kept if e.position > after][:limit]
                got = await store.read_all(after, limit, types=types, stream_prefix=prefix).to_list()
                assert got == want, (types, prefix, after, limit)

    # ------------------------------------------------------------------ isolation and order

    async def test_streams_are_isolated_and_gap_free(self, store: ConformantStore) -> None:
        written: dict[str, list[EventData]] = {"a": [], "b": [], "c": []}
        results: list[AppendResult] = []
        for k in range(12):
            name = "abc"[(k * 7) % 3]
            batch = make_events(1 + k % 3, f"{name}{k}")
            results.append(await append_ok(store, name, batch, len(written[name])))
            written[name].extend(batch)
        for name, events in written.items():
            records = await store.read(name).to_list()
            assert [r.seq for r in records] == list(range(1, len(events) + 1))
            assert recorded_content(records) == content(events)
        if self.supports_global_order:
            everything = await store.read_all().to_list()
            positions = [r.position for r in everything]
            assert all(p < q for p, q in itertools.pairwise(positions))
            assert positions == [p for r in results for p in r.positions]
            batches_in_order = [e for r in results for e in written[r.stream][r.first_seq - 1 : r.last_seq]]
            assert recorded_content(everything) == content(batches_in_order)

    # ------------------------------------------------------------------ payloads

    async def test_unicode_round_trip(self, store: ConformantStore) -> None:
        events = [
            EventData("Unicode", _UNICODE_DATA, metadata={"who": "Ünïcødé 🎉", "nul": "a\x00b"}),
            EventData("Événement 🎉", "\x00"),
            EventData("RTL עברית", ["مرحبا", "\u202e reversed"]),
        ]
        await append_ok(store, "unicode 🌍", events)
        records = await store.read("unicode 🌍").to_list()
        assert recorded_content(records) == content(events)
        assert records[0].data == _UNICODE_DATA
        if self.supports_global_order:
            assert recorded_content(await store.read_all().to_list()) == content(events)

    async def test_large_payload_round_trip(self, store: ConformantStore) -> None:
        size = min(self.large_event_bytes, max_event_size_of(store) - 1000)
        if size <= 0:
            pytest.skip("no large payload for this store")
        chunk = "abcdefghij" * 9 + "é🎉\x00"  # 102 bytes in JSON: 90 + 2 + 4 + 6 (NUL as \u0000)
        blob = chunk * ((size - 2000) // 102)  # leaves room for the list and the metadata
        event = EventData("Large", {"blob": blob, "list": list(range(100))}, metadata={"m": blob[:1000]})
        after = make_events(1, "after")
        await append_ok(store, "large", [event, *after])
        records = await store.read("large").to_list()
        assert recorded_content(records) == content([event, *after])
        if self.supports_global_order:
            assert recorded_content(await store.read_all().to_list()) == content([event, *after])

    async def test_stored_data_is_not_shared(self, store: ConformantStore) -> None:
        data: dict[str, Any] = {"items": [1, 2]}
        metadata: dict[str, Any] = {"k": "v"}
        event = EventData("Mutable", data, metadata=metadata)
        await append_ok(store, "m", [event])
        data["items"].append(3)
        metadata["k"] = "changed"
        [first] = await store.read("m").to_list()
        assert (first.data, first.metadata) == ({"items": [1, 2]}, {"k": "v"})
        first.data["items"].append(4)
        [second] = await store.read("m").to_list()
        assert second.data == {"items": [1, 2]}

    # ------------------------------------------------------------------ concurrency

    async def test_concurrent_writers_on_one_stream(self, store: ConformantStore) -> None:
        self._require("supports_expected_version")
        self._require("supports_concurrent_writers")
        tasks, rounds, stream = self.concurrent_writer_tasks, 3, "race"
        wins: list[tuple[int, Expected, AppendResult, list[EventData]]] = []
        losses: list[tuple[int, int, WrongExpectedVersion]] = []
        all_batches: list[EventData] = []
        ready = 0
        everyone_read = anyio.Event()

        async def writer(task: int) -> None:
            nonlocal ready
            for rnd in range(rounds):
                batch = [
                    EventData("Raced", {"task": task, "round": rnd, "i": i})
                    for i in range(1 + (task + rnd) % 2)
                ]
                all_batches.extend(batch)
                attempt = 0
                while True:
                    expected = (await store.latest(stream)).map(lambda r: r.seq).value_or(0)
                    if rnd == 0 and attempt == 0:
                        # everyone reads the empty stream before anyone appends: one wins seq 1
                        ready += 1
                        if ready == tasks:
                            everyone_read.set()
                        await everyone_read.wait()
                    attempt += 1
                    result = await store.append(stream, batch, expected)
                    if isinstance(result, Success):
                        wins.append((task, expected, result.unwrap(), batch))
                        break
                    error = expect_failure(result, WrongExpectedVersion)
                    losses.append((task, expected, error))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for task in range(tasks):
                    tg.start_soon(writer, task)

        assert len(wins) == tasks * rounds
        wins.sort(key=lambda w: w[2].first_seq)
        # one winner per expected version, and the winners chain 0 -> l1 -> l2 -> ... -> N
        starts = [w[1] for w in wins]
        assert len(set(starts)) == len(starts)
        previous = 0
        for _, expected, result, batch in wins:
            assert expected == previous
            assert (result.first_seq, result.last_seq) == (previous + 1, previous + len(batch))
            previous = result.last_seq
        total = len(all_batches)
        assert previous == total
        # every loser was told the truth: the stream had moved past what it expected
        boundaries = {w[2].last_seq for w in wins}
        assert sum(1 for loss in losses if loss[1] == 0) == tasks - 1
        for _, expected, error in losses:
            assert (error.stream, error.expected) == (stream, expected)
            assert error.actual > expected
            assert error.actual in boundaries
            assert expected in starts
        # the stream holds every task's events exactly once, contiguous, in winning order
        records = await store.read(stream).to_list()
        assert [r.seq for r in records] == list(range(1, total + 1))
        assert recorded_content(records) == content([e for w in wins for e in w[3]])
        assert Counter(r.id for r in records) == Counter(e.id for e in all_batches)
        assert max(Counter(r.id for r in records).values()) == 1
        assert [r.position for r in records] == [p for w in wins for p in w[2].positions]

    async def test_tailing_reader_sees_every_event_once_in_order(self, store: ConformantStore) -> None:
        self._require("supports_global_order")
        self._require("supports_concurrent_writers")
        writers, streams, batches_each = 8, 5, 8
        written: dict[uuid.UUID, int] = {}  # id -> position the append returned
        total = sum(1 + (w + b) % 3 for w in range(writers) for b in range(batches_each))
        seen: list[RecordedEvent] = []

        async def writer(w: int) -> None:
            for b in range(batches_each):
                batch = make_events(1 + (w + b) % 3, f"w{w}b{b}")
                result = await append_ok(store, f"tail-{(w + b) % streams}", batch)
                written.update(zip((e.id for e in batch), result.positions, strict=True))
                await anyio.lowlevel.checkpoint()

        writers_done = anyio.Event()

        async def write_all() -> None:
            async with anyio.create_task_group() as tg:
                for w in range(writers):
                    tg.start_soon(writer, w)
            writers_done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail_log, store, writers_done, seen, (None, 4))
                tg.start_soon(write_all)

        assert len(seen) == total == len(written)
        assert Counter(r.id for r in seen) == Counter(written.keys())
        assert {r.id: r.position for r in seen} == written
        # nothing appeared later below a position the reader had already passed
        assert seen == await store.read_all().to_list()
        for name in {r.stream for r in seen}:
            seqs = [r.seq for r in seen if r.stream == name]
            assert seqs == list(range(1, len(seqs) + 1))

    # ------------------------------------------------------------------ append signal

    def _signal(self, store: ConformantStore) -> AppendSignal:
        """The store's ``appended`` signal (skips the test for a store that declares none)."""
        self._require("supports_append_signal")
        assert isinstance(store, NotifyingStore), (
            f"{type(store).__name__} has no `appended` signal: declare supports_append_signal = False"
        )
        return store.appended

    async def test_append_signal_moves_on_appends_that_write(self, store: ConformantStore) -> None:
        signal = self._signal(store)
        start = signal.version
        first = make_events(2, "first")
        await append_ok(store, "s", first)
        once = signal.version
        assert once > start
        await append_ok(store, "t", make_events(1, "second"))
        assert signal.version > once
        quiet = signal.version
        # appends that write nothing wake nobody
        await append_ok(store, "s", [])
        await append_ok(store, "empty", [])
        expect_failure(await store.append("bad\nname", make_events(1)), InvalidEvent)
        expect_failure(await store.append("s", [*make_events(1), _bad_event("nan-data")]), InvalidEvent)
        if self.supports_expected_version:
            expect_failure(await store.append("s", make_events(1), 0), WrongExpectedVersion)
        if self.supports_idempotent_retry:
            expect_failure(await store.append("u", [*make_events(1), first[0]]), DuplicateEvent)
        assert signal.version == quiet
        assert await store.head() == 3

    async def test_append_signal_wait(self, store: ConformantStore) -> None:
        signal = self._signal(store)
        with anyio.fail_after(10):
            # nothing appended since the version was taken: returns after the timeout
            start = anyio.current_time()
            await signal.wait(signal.version, 0.05)
            assert anyio.current_time() - start >= 0.04
            # an append landed since the version was taken: returns at once
            taken = signal.version
            await append_ok(store, "s", make_events(1))
            await signal.wait(taken, 3600)
            # an append wakes every waiter on the current version
            woken: list[int] = []
            current = signal.version

            async def waiter(k: int) -> None:
                await signal.wait(current, 3600)
                woken.append(k)

            async with anyio.create_task_group() as tg:
                for k in range(3):
                    tg.start_soon(waiter, k)
                await anyio.wait_all_tasks_blocked()
                await append_ok(store, "s", [])  # writes nothing: they sleep on
                await anyio.wait_all_tasks_blocked()
                assert woken == []
                await append_ok(store, "s", make_events(1))
            assert sorted(woken) == [0, 1, 2]

    async def test_append_signal_after_cancelled_append(self, store: ConformantStore) -> None:
        """An append cancelled while it runs may or may not write; if it wrote, the signal says so."""
        signal = self._signal(store)
        for k in range(6):
            head, version = await store.head(), signal.version
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.append, f"cancelled-{k}", make_events(2, f"c{k}"))
                for _ in range(k):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
            if await store.head() != head:
                assert signal.version != version, f"cancelled after {k} checkpoints: wrote, no signal"

    # ------------------------------------------------------------------ imports (migrations)

    def _importer(self, store: ConformantStore) -> ImportingStore:
        """The store as an ``ImportingStore`` (skips the test for a store that declares it is not)."""
        self._require("supports_import")
        assert isinstance(store, ImportingStore), (
            f"{type(store).__name__} has no `import_events`: declare supports_import = False"
        )
        return store

    async def test_import_keeps_every_field_and_gives_positions_of_its_own(
        self, store: ConformantStore
    ) -> None:
        importer = self._importer(store)
        await append_ok(store, "before", make_events(3, "before"))
        head = await store.head()
        events = recorded("moved", 1, _IMPORTED_SHAPES, first_position=1000)
        result = expect_success(await importer.import_events("moved", events))
        assert (result.stream, result.first_seq, result.last_seq) == ("moved", 1, len(events))
        assert list(result.positions) == sorted(result.positions)
        assert len(set(result.positions)) == len(events)
        assert result.positions[0] > head
        got = await store.read("moved").to_list()
        assert [_fields(r) for r in got] == [_fields(e) for e in events]  # time and id included
        assert [r.position for r in got] == list(result.positions)
        assert all(_is_utc(r.time) for r in got)
        assert [r.time for r in got] == [e.time for e in events]  # the same instants, to the microsecond
        assert await store.head() == result.positions[-1]
        if self.supports_global_order:
            assert (await store.read_all(after=head).to_list()) == got
        # the next import continues the stream
        more = recorded("moved", len(events) + 1, [("Later", {"n": 1}, None)], first_position=5)
        again = expect_success(await importer.import_events("moved", more))
        assert (again.first_seq, again.last_seq) == (len(events) + 1, len(events) + 1)
        assert again.positions[0] > result.positions[-1]
        assert [r.id for r in await store.read("moved").to_list()] == [e.id for e in [*events, *more]]

    async def test_import_seqs_must_continue_the_stream(self, store: ConformantStore) -> None:
        importer = self._importer(store)
        stored = recorded("s", 1, [("T", {"i": i}, None) for i in range(3)])
        expect_success(await importer.import_events("s", stored))
        before = await self._state(store)

        def batch(first: int, n: int = 2, stream: str = "s") -> list[RecordedEvent]:
            return recorded(stream, first, [("New", {"i": i}, None) for i in range(n)])

        if self.supports_expected_version:
            for first, actual in ((5, 3), (3, 3), (1, 3), (2, 3)):  # a gap, overlaps, from the start
                error = expect_failure(await importer.import_events("s", batch(first)), WrongExpectedVersion)
                assert (error.stream, error.actual) == ("s", actual), first
            error = expect_failure(
                await importer.import_events("fresh", batch(2, stream="fresh")), WrongExpectedVersion
            )
            assert (error.stream, error.actual) == ("fresh", 0)
            assert await self._state(store) == before
        gap = batch(4, 3)
        invalid = {
            "seqs with a hole": [gap[0], gap[2]],
            "seqs going back": [gap[1], gap[0]],
            "seq 0": batch(0, 1, stream="zero"),
            "another stream's event": [*batch(4, 1), *batch(5, 1, stream="t")],
            "not JSON": [*batch(4, 1), _recorded_like(gap[1], data={"x": float("nan")})],
            "a bad type": [*batch(4, 1), _recorded_like(gap[1], type="Bad\nType")],
            "a time without a zone": [*batch(4, 1), _recorded_like(gap[1], time=datetime(2020, 1, 1))],
        }
        for case, events in invalid.items():
            refused = expect_failure(await importer.import_events(events[0].stream, events), InvalidEvent)
            assert not isinstance(refused, EventTooLarge), case
            assert await self._state(store) == before, case
        big = _recorded_like(gap[0], data="x" * max_event_size_of(store))
        too_large = expect_failure(await importer.import_events("s", [big]), EventTooLarge)
        assert too_large.event_id == big.id
        expect_failure(await importer.import_events("bad\nname", batch(1, stream="bad\nname")), InvalidEvent)
        assert await self._state(store) == before
        # the refused events' ids were not taken
        assert expect_success(await importer.import_events("s", gap)).last_seq == 6

    async def test_import_is_idempotent(self, store: ConformantStore) -> None:
        importer = self._importer(store)
        self._require("supports_idempotent_retry")
        events = recorded("s", 1, [("T", {"i": i}, {"m": i}) for i in range(4)])
        first = expect_success(await importer.import_events("s", events))
        await append_ok(store, "other", make_events(1))
        before = await self._state(store)
        assert expect_success(await importer.import_events("s", events)) == first
        middle = expect_success(await importer.import_events("s", events[1:3]))
        assert (middle.first_seq, middle.last_seq, middle.positions) == (2, 3, first.positions[1:3])
        assert await self._state(store) == before
        # the same ids in another stream or place are duplicates; half-stored batches are refused whole
        moved = [_recorded_like(e, stream="t", id=e.id) for e in events[:2]]
        expect_failure(await importer.import_events("t", moved), DuplicateEvent)
        longer = [*events[2:], *recorded("s", 5, [("T", {"i": 4}, None)])]
        result = await importer.import_events("s", longer)
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), DuplicateEvent | WrongExpectedVersion)
        assert await self._state(store) == before

    async def test_imports_and_appends_mix(self, store: ConformantStore) -> None:
        importer = self._importer(store)
        appended = make_events(2, "appended")
        await append_ok(store, "s", appended)
        old = recorded("s", 3, [("Old", {"i": i}, None) for i in range(2)])
        imported = expect_success(await importer.import_events("s", old))
        before = datetime.now(UTC)
        after_import = await append_ok(store, "s", make_events(1, "later"), 4)
        assert after_import.positions[0] > imported.positions[-1]
        records = await store.read("s").to_list()
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert [r.time for r in records[2:4]] == [e.time for e in old]
        assert records[4].time >= before - self.max_clock_skew
        positions = [r.position for r in records]
        assert positions == sorted(positions)
        if self.supports_expected_version:
            expect_failure(await store.append("s", make_events(1), 4), WrongExpectedVersion)
            expect_failure(
                await importer.import_events("s", recorded("s", 5, [("T", 1, None)])), WrongExpectedVersion
            )
        empty = expect_success(await importer.import_events("s", []))
        assert (empty.last_seq, empty.positions) == (5, ())
        assert await store.read("s").count() == 5

    async def test_import_moves_the_append_signal(self, store: ConformantStore) -> None:
        importer = self._importer(store)
        signal = self._signal(store)
        events = recorded("s", 1, [("T", {}, None)])
        start = signal.version
        expect_success(await importer.import_events("s", events))
        assert signal.version > start
        quiet = signal.version
        expect_success(await importer.import_events("s", []))
        expect_failure(await importer.import_events("s", recorded("s", 7, [("T", {}, None)])), StoreError)
        assert signal.version == quiet

    async def test_concurrent_importers_of_one_stream(self, store: ConformantStore) -> None:
        importer = self._importer(store)
        self._require("supports_concurrent_writers")
        self._require("supports_expected_version")
        tasks = 6
        batches = [
            recorded("raced", 1, [("T", {"task": t, "i": i}, None) for i in range(3)]) for t in range(tasks)
        ]
        same = recorded("same", 1, [("T", {"i": i}, None) for i in range(3)])
        results: dict[int, Result[AppendResult, StoreError]] = {}
        repeats: list[Result[AppendResult, StoreError]] = []

        async def run(task: int) -> None:
            results[task] = await importer.import_events("raced", batches[task])
            repeats.append(await importer.import_events("same", same))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for task in range(tasks):
                    tg.start_soon(run, task)
        winners = [t for t, r in results.items() if isinstance(r, Success)]
        assert len(winners) == 1
        for task, result in results.items():
            if task != winners[0]:
                error = expect_failure(result, WrongExpectedVersion)
                assert (error.stream, error.actual) == ("raced", 3)
        records = await store.read("raced").to_list()
        assert [r.id for r in records] == [e.id for e in batches[winners[0]]]
        # importers of the very same batch all succeed, with the same positions, written once
        assert len({expect_success(r) for r in repeats}) == 1
        assert [r.id for r in await store.read("same").to_list()] == [e.id for e in same]

    # ------------------------------------------------------------------ snapshots

    async def test_snapshot_save_and_load(self, store: ConformantStore) -> None:
        self._require("supports_snapshots")
        assert await store.load_snapshot("k", 1) == Nothing
        state = {"balance": 10, "name": "Zoë 🎉", "tags": ["a", None], "nul": "\x00"}
        before = datetime.now(UTC)
        await store.save_snapshot("k", 5, state, 1)
        after = datetime.now(UTC)
        snap = (await store.load_snapshot("k", 1)).unwrap()
        assert (snap.key, snap.seq, snap.state, snap.schema_version) == ("k", 5, state, 1)
        assert _is_utc(snap.time)
        assert before - self.max_clock_skew <= snap.time <= after + self.max_clock_skew
        assert await store.load_snapshot("other-key", 1) == Nothing
        state["balance"] = 99  # the store keeps what was saved, not the caller's object
        assert (await store.load_snapshot("k", 1)).map(lambda s: s.state["balance"]) == Some(10)

    async def test_snapshot_at_seq(self, store: ConformantStore) -> None:
        self._require("supports_snapshots")
        for seq in (15, 5, 10):  # saved out of order
            await store.save_snapshot("k", seq, {"at": seq}, 1)
        await store.save_snapshot("other", 100, {"at": 100}, 1)

        async def seq_at(at_seq: int | None) -> int | None:
            found = await store.load_snapshot("k", 1, at_seq=at_seq)
            return found.map(lambda s: s.seq if s.state == {"at": s.seq} else -1).value_or(None)

        assert await seq_at(None) == 15
        assert await seq_at(100) == 15
        assert await seq_at(15) == 15
        assert await seq_at(14) == 10
        assert await seq_at(10) == 10
        assert await seq_at(9) == 5
        assert await seq_at(5) == 5
        assert await seq_at(4) is None
        assert await seq_at(0) is None

    async def test_snapshot_at_time(self, store: ConformantStore) -> None:
        self._require("supports_snapshots")
        await store.save_snapshot("k", 1, "one", 1)
        await anyio.sleep(0.02)
        middle = datetime.now(UTC)
        await anyio.sleep(0.02)
        await store.save_snapshot("k", 2, "two", 1)
        latest = (await store.load_snapshot("k", 1)).unwrap()
        assert (latest.seq, latest.state) == (2, "two")
        first = (await store.load_snapshot("k", 1, at_time=middle)).unwrap()
        assert (first.seq, first.state) == (1, "one")
        assert first.time <= middle < latest.time
        at_latest = await store.load_snapshot("k", 1, at_time=latest.time)  # inclusive
        assert at_latest.map(lambda s: s.seq) == Some(2)
        assert await store.load_snapshot("k", 1, at_time=first.time - timedelta(microseconds=1)) == Nothing
        both = await store.load_snapshot("k", 1, at_seq=2, at_time=middle)
        assert both.map(lambda s: s.seq) == Some(1)
        assert await store.load_snapshot("k", 1, at_seq=0, at_time=latest.time) == Nothing

    async def test_snapshot_schema_versions(self, store: ConformantStore) -> None:
        self._require("supports_snapshots")
        await store.save_snapshot("k", 3, {"v": 1}, 1)
        await store.save_snapshot("k", 7, ["a", "state", "of", "version", 2], 2)
        v1 = (await store.load_snapshot("k", 1)).unwrap()
        v2 = (await store.load_snapshot("k", 2)).unwrap()
        assert (v1.seq, v1.state, v1.schema_version) == (3, {"v": 1}, 1)
        assert (v2.seq, v2.state, v2.schema_version) == (7, ["a", "state", "of", "version", 2], 2)
        assert await store.load_snapshot("k", 3) == Nothing
        assert await store.load_snapshot("k", 2, at_seq=6) == Nothing

    async def test_snapshot_overwrite(self, store: ConformantStore) -> None:
        self._require("supports_snapshots")
        await store.save_snapshot("k", 4, {"first": True}, 1)
        await store.save_snapshot("k", 4, {"second": True}, 1)
        snap = (await store.load_snapshot("k", 1)).unwrap()
        assert (snap.seq, snap.state) == (4, {"second": True})
        assert (await store.load_snapshot("k", 1, at_seq=3)) == Nothing

    # ------------------------------------------------------------------ checkpoints

    async def test_checkpoints(self, store: ConformantStore) -> None:
        self._require("supports_checkpoints")
        assert await store.load_checkpoint("projection") == 0
        await store.save_checkpoint("projection", 5)
        assert await store.load_checkpoint("projection") == 5
        await store.save_checkpoint("projection", 12)
        assert await store.load_checkpoint("projection") == 12
        await store.save_checkpoint("projection", 3)  # overwrite, even backwards
        assert await store.load_checkpoint("projection") == 3
        assert await store.load_checkpoint("other") == 0
        await store.save_checkpoint("projection ünï 🎉 '; --", 7)
        assert await store.load_checkpoint("projection ünï 🎉 '; --") == 7
        assert await store.load_checkpoint("projection") == 3

    # ------------------------------------------------------------------ streams are values

    async def test_reads_are_lazy(self, store: ConformantStore) -> None:
        reading = store.read("lazy")
        reading_back = store.read("lazy", backwards=True)
        reading_all = store.read_all()
        names = store.streams()
        batch = make_events(3, "lazy")
        await append_ok(store, "lazy", batch)
        assert recorded_content(await reading.to_list()) == content(batch)
        if self.supports_backwards_reads:
            assert recorded_content(await reading_back.to_list()) == content(batch[::-1])
        if self.supports_global_order:
            assert recorded_content(await reading_all.to_list()) == content(batch)
        assert await names.to_list() == ["lazy"]

    async def test_reads_are_rerunnable(self, store: ConformantStore) -> None:
        size = page_size_of(store)
        batch = make_events(size + 1, "again")
        await append_ok(store, "again", batch)
        reading = store.read("again")
        reading_all = store.read_all(after=0, limit=size + 1)
        names = store.streams()
        first, second = await reading.to_list(), await reading.to_list()
        assert first == second
        assert recorded_content(first) == content(batch)
        assert await reading_all.to_list() == await reading_all.to_list()
        assert await names.to_list() == await names.to_list() == ["again"]
        # each run reads afresh
        more = make_events(2, "more")
        await append_ok(store, "again", more)
        assert recorded_content(await reading.to_list()) == content([*batch, *more])
        assert await reading.count() == len(batch) + len(more)
