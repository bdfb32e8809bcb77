"""The store conformance suites: every guarantee of the store contract, as pytest tests, by capability.

The contract is a set of typed capabilities (protocols in
:mod:`streamsrc.store`), and there is one test class per capability or
guarantee. A backend runs the classes of the capabilities it has, and every
test of those classes runs: nothing is skipped by a flag.

=================================  ==============================================================
:class:`EventStoreConformance`     ``EventStore``: appends, expected versions, atomic batches,
                                   idempotent retries, names, reads forwards and backwards,
                                   paging, ``latest``, ``head``, ``streams``, concurrent writers
:class:`GlobalOrderConformance`    ``read_all``: one global order, paged and filtered, that a
                                   tailing reader follows without skipping an event
:class:`SnapshotStoreConformance`  ``SnapshotStore``: states by key, seq, time and schema version
:class:`CheckpointStoreConformance` ``CheckpointStore``: named positions
:class:`ImportingStoreConformance` ``ImportingStore``: recorded events imported with their id and
                                   time, checked, idempotent
:class:`NotifyingStoreConformance` ``NotifyingStore``: the in-process append signal
:class:`BatchLimitedStoreConformance` ``BatchLimitedStore``: ``max_batch`` events in one append, and
                                   not one more
:class:`RetiringStoreConformance`  ``RetiringStore``: ``delete_stream`` (a tombstone, appends
                                   refused) and ``truncate_before``; run on its own, beside
                                   :class:`StoreConformance`
:class:`StoreConformance`          a full ``Store`` (what ``open_store`` gives): all of the above
                                   but the batch limit, and how they work together
:class:`ErrorRuleConformance`      the error rule under fault injection, on every operation, for
                                   stores built on :class:`~streamsrc.store.base.StoreBase`
=================================  ==============================================================

(``EventStoreConformance`` once held every test, with ``supports_*`` flags to
skip some; it now holds the event store's own tests, and
:class:`StoreConformance` is the whole suite.)

A backend runs them by subclassing in a test module and giving one fixture:
``store``, yielding a fresh, opened, empty store, or ``store_url``, a URL that
``open_store`` opens as a fresh, empty store::

    import pytest
    from streamsrc.store import open_store
    from streamsrc.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with open_store(f"sqlite:///{tmp_path}/events.db") as s:
                yield s

The tests are async and marked ``pytest.mark.anyio``: they run on every
backend that the ``anyio_backend`` fixture names (anyio's default is asyncio
only; override ``anyio_backend`` to add trio). The store's ``page_size`` and
``max_event_size`` attributes, when it has them, size the paging and
size-limit tests; the class attributes ``concurrent_writer_tasks``,
``large_event_bytes`` and ``max_clock_skew`` size the rest to a slow or remote
backend.

This module imports pytest: only test code imports it, never streamsrc itself.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, TypeVar, cast

import anyio
import anyio.lowlevel
import pytest
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import (
    CheckpointMoved,
    DuplicateEvent,
    EventTooLarge,
    InvalidEvent,
    InvalidTruncation,
    StoreError,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
)
from streamsrc.events import MAX_NAME_LENGTH, EventData, RecordedEvent
from streamsrc.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    BatchLimitedStore,
    CheckpointStore,
    EventStore,
    Expected,
    ImportingStore,
    NotifyingStore,
    Snapshot,
    SnapshotStore,
    Store,
    open_store,
)
from streamsrc.store.base import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    TOMBSTONE_TYPE,
    RetiringStore,
    StoreBase,
)

__all__ = [
    "BatchLimitedStoreConformance",
    "CheckpointStoreConformance",
    "ConformantStore",
    "ErrorRuleConformance",
    "EventStoreConformance",
    "GlobalOrderConformance",
    "ImportingEventStore",
    "ImportingStoreConformance",
    "NotifyingEventStore",
    "NotifyingStoreConformance",
    "RetiringEventStore",
    "RetiringStoreConformance",
    "SnapshotStoreConformance",
    "StoreConformance",
]

E = TypeVar("E", bound=StoreError)

ConformantStore = Store
"""What the ``store`` fixture of :class:`StoreConformance` yields (the name it had before ``Store``)."""


class ImportingEventStore(EventStore, ImportingStore, Protocol):
    """What :class:`ImportingStoreConformance` tests: an event store that imports recorded events."""


class NotifyingEventStore(EventStore, NotifyingStore, Protocol):
    """What :class:`NotifyingStoreConformance` tests: an event store with an append signal."""


class BatchLimitedEventStore(EventStore, ImportingStore, BatchLimitedStore, Protocol):
    """What :class:`BatchLimitedStoreConformance` tests: an importing event store with ``max_batch``."""


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
    store: EventStore,
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
        moment = datetime(2019, 3, 1, 12, 30, 15, 123456, tzinfo=UTC) + timedelta(days=k, microseconds=k)
        moment = moment.astimezone(zone)
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


# ---------------------------------------------------------------------------------------- the suites


async def all_events(store: EventStore) -> list[RecordedEvent]:
    """Every stored event, in position order."""
    return sorted(await store.read_all().to_list(), key=lambda e: e.position)


async def stored_state(store: EventStore) -> tuple[int, list[str], list[RecordedEvent]]:
    """All that a failed append must leave unchanged: the head, the stream names, every event."""
    return await store.head(), await store.streams().to_list(), await all_events(store)


class _Suite:
    """What every suite shares: the fixtures a backend gives, and the sizing attributes."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    concurrent_writer_tasks: ClassVar[int] = 16
    """Tasks racing to append to one stream in the concurrent-writers tests (a backend whose every
    write is slow, DynamoDB on moto say, may lower it; the race is the same with fewer)."""
    large_event_bytes: ClassVar[int] = 500_000
    """Size of the large payload that must round-trip (0: skip that test)."""
    max_clock_skew: ClassVar[timedelta] = timedelta(milliseconds=5)
    """How far an event's ``time`` may lie outside the caller's clock readings around the append."""

    @pytest.fixture
    def store_url(self) -> str:
        """A URL that ``open_store`` opens as a fresh, empty store (or override ``store``)."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `store` fixture yielding a fresh, opened store, "
            "or a `store_url` fixture giving the URL of one"
        )

    @pytest.fixture
    async def store(self, store_url: str) -> AsyncIterator[Any]:
        """A fresh, opened store: ``open_store(store_url)``, unless a subclass overrides this fixture."""
        async with open_store(store_url) as store:
            yield store


class EventStoreConformance(_Suite):
    """The ``EventStore`` capability: appends (conditional, atomic, idempotent), names, reads of a
    stream forwards and backwards, paging, ``latest``, ``head``, ``streams``, concurrent writers.

    It no longer holds the whole suite: :class:`StoreConformance` does (this class's tests, and every
    other capability's).
    """

    async def test_is_an_event_store(self, store: object) -> None:
        assert isinstance(store, EventStore), f"{type(store).__name__} lacks a method of EventStore"

    # ------------------------------------------------------------------ basics

    async def test_fresh_store_is_empty(self, store: EventStore) -> None:
        assert await store.head() == 0
        assert await store.streams().to_list() == []
        assert await store.read_all().to_list() == []
        assert await store.read("nothing").to_list() == []
        assert await store.latest("nothing") == Nothing

    async def test_append_returns_seqs_and_positions(self, store: EventStore) -> None:
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

    async def test_recorded_fields(self, store: EventStore) -> None:
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

    async def test_empty_batch_writes_nothing(self, store: EventStore) -> None:
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

    async def test_empty_batch_checks_expected(self, store: EventStore) -> None:
        await append_ok(store, "s", make_events(2))
        error = expect_failure(await store.append("s", [], 0), WrongExpectedVersion)
        assert (error.stream, error.expected, error.actual) == ("s", 0, 2)
        error = expect_failure(await store.append("none", [], STREAM_EXISTS), WrongExpectedVersion)
        assert (error.stream, error.expected, error.actual) == ("none", STREAM_EXISTS, 0)

    # ------------------------------------------------------------------ expected versions

    async def test_expected_version(self, store: EventStore) -> None:
        await append_ok(store, "other", make_events(2, "other"))
        for current, mode in _EXPECTED_CASES:
            case = f"expected={mode} on a stream at {current}"
            name = f"acct-{mode}-{current}"
            if current:
                await append_ok(store, name, make_events(1, "pre"))
                await append_ok(store, name, make_events(current - 1, "pre2"))
            expected, must_succeed = _expected_for(mode, current)
            batch = make_events(2, "new")
            before = await stored_state(store)
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
                assert await stored_state(store) == before, case

    async def test_losing_append_then_retry_with_actual(self, store: EventStore) -> None:
        await append_ok(store, "s", make_events(3), NO_STREAM)
        batch = make_events(1, "late")
        error = expect_failure(await store.append("s", batch, 1), WrongExpectedVersion)
        written = await append_ok(store, "s", batch, error.actual)
        assert written.first_seq == error.actual + 1

    # ------------------------------------------------------------------ atomic batches

    async def test_invalid_event_fails_whole_batch(self, store: EventStore) -> None:
        for kind in _BAD_EVENT_KINDS:
            name = f"s-{kind}"
            await append_ok(store, name, make_events(2, "pre"))
            good = make_events(2, "good")
            before = await stored_state(store)
            error = expect_failure(await store.append(name, [*good, _bad_event(kind)], 2), InvalidEvent)
            assert not isinstance(error, EventTooLarge), kind
            assert await stored_state(store) == before, kind
            # The valid events' ids were not taken: they go in on their own.
            written = await append_ok(store, name, good, 2)
            assert (written.first_seq, written.last_seq) == (3, 4), kind

    async def test_invalid_event_in_new_stream_creates_nothing(self, store: EventStore) -> None:
        error = expect_failure(
            await store.append("fresh", [*make_events(3), _bad_event("nan-data")]), InvalidEvent
        )
        assert str(error)
        assert await stored_state(store) == (0, [], [])

    async def test_duplicate_id_within_batch(self, store: EventStore) -> None:
        one = EventData("T", {"n": 1})
        twin = EventData("T", {"n": 2}, id=one.id)
        expect_failure(await store.append("s", [one, *make_events(1), twin]), InvalidEvent)
        assert await stored_state(store) == (0, [], [])
        expect_failure(await store.append("s", [one, one]), InvalidEvent)
        assert await stored_state(store) == (0, [], [])

    async def test_event_too_large(self, store: EventStore) -> None:
        limit = max_event_size_of(store)
        big = EventData("Big", "x" * limit)  # encoded with its quotes: limit + 2 bytes
        before = await stored_state(store)
        error = expect_failure(await store.append("s", [*make_events(1), big]), EventTooLarge)
        assert isinstance(error, InvalidEvent)
        assert (error.event_id, error.limit) == (big.id, limit)
        assert error.size > limit
        assert await stored_state(store) == before

    async def test_event_size_limit_is_inclusive_and_counts_metadata(self, store: EventStore) -> None:
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

    async def test_retry_at_same_place_is_idempotent(self, store: EventStore) -> None:
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
            before = await stored_state(store)
            again = await append_ok(store, name, batch, retry_expected)
            assert again == first, how
            assert await stored_state(store) == before, how

    async def test_retry_after_stream_moved_on(self, store: EventStore) -> None:
        batch = make_events(2, "mine")
        first = await append_ok(store, "s", batch, 0)
        await append_ok(store, "s", make_events(3, "theirs"), first.last_seq)
        before = await stored_state(store)
        assert await append_ok(store, "s", batch, 0) == first
        assert await append_ok(store, "s", batch, ANY) == first
        assert await stored_state(store) == before

    async def test_retry_of_middle_batch(self, store: EventStore) -> None:
        await append_ok(store, "s", make_events(2, "a"), 0)
        middle = make_events(2, "b")
        placed = await append_ok(store, "s", middle, 2)
        await append_ok(store, "s", make_events(2, "c"), 4)
        before = await stored_state(store)
        assert await append_ok(store, "s", middle, 2) == placed
        assert await stored_state(store) == before

    async def test_same_ids_elsewhere_are_duplicates(self, store: EventStore) -> None:
        batch = make_events(3, "orig")
        ids = {e.id for e in batch}
        await append_ok(store, "s", batch, 0)
        before = await stored_state(store)
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
        assert await stored_state(store) == before
        # ``fresh`` was not written, so its ids are still free
        assert (await append_ok(store, "s", fresh, len(batch))).last_seq == len(batch) + len(fresh)

    # ------------------------------------------------------------------ stream names

    async def test_invalid_stream_names(self, store: EventStore) -> None:
        for name in _INVALID_NAMES:
            expect_failure(await store.append(name, make_events(1)), InvalidEvent)
            expect_failure(await store.append(name, []), InvalidEvent)
            expect_failure(await store.append(name, make_events(2), NO_STREAM), InvalidEvent)
            assert await store.latest(name) == Nothing
            assert await store.read(name).to_list() == []
        assert await stored_state(store) == (0, [], [])
        longest = "n" * MAX_NAME_LENGTH
        assert (await append_ok(store, longest, make_events(1))).stream == longest

    async def test_special_stream_names_are_isolated(self, store: EventStore) -> None:
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
        assert len(await all_events(store)) == total

    async def test_streams_sorted_across_pages(self, store: EventStore) -> None:
        size = page_size_of(store)
        count = size + 1 if size <= 64 else 67
        names = [f"stream-{(k * 37) % count:04d}" for k in range(count)]  # appended out of order
        for name in names:
            await append_ok(store, name, make_events(1, name))
        assert await store.streams().to_list() == sorted(names)
        assert await store.streams().take(2).to_list() == sorted(names)[:2]

    # ------------------------------------------------------------------ reading and paging

    async def test_read_lengths_around_page_size(self, store: EventStore) -> None:
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

    async def test_read_after_and_limit(self, store: EventStore) -> None:
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

    async def test_read_backwards(self, store: EventStore) -> None:
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

    async def test_read_empty_and_missing_streams(self, store: EventStore) -> None:
        await append_ok(store, "some", make_events(2))
        assert await store.read("missing").to_list() == []
        assert await store.read("missing", after=5, limit=3).to_list() == []
        assert await store.read("some", after=2).to_list() == []
        assert await store.read("some", limit=0).to_list() == []

    async def test_partial_runs(self, store: EventStore) -> None:
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

    async def test_latest(self, store: EventStore) -> None:
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

    async def test_head(self, store: EventStore) -> None:
        assert await store.head() == 0
        a = await append_ok(store, "a", make_events(2))
        assert await store.head() == a.positions[-1]
        b = await append_ok(store, "b", make_events(3))
        assert await store.head() == b.positions[-1]
        await store.append("a", make_events(1), 0)  # refused: head unchanged
        assert await store.head() == b.positions[-1]

    # ------------------------------------------------------------------ isolation

    async def test_streams_are_isolated_and_gap_free(self, store: EventStore) -> None:
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

    # ------------------------------------------------------------------ payloads

    async def test_unicode_round_trip(self, store: EventStore) -> None:
        events = [
            EventData("Unicode", _UNICODE_DATA, metadata={"who": "Ünïcødé 🎉", "nul": "a\x00b"}),
            EventData("Événement 🎉", "\x00"),
            EventData("RTL עברית", ["مرحبا", "\u202e reversed"]),
        ]
        await append_ok(store, "unicode 🌍", events)
        records = await store.read("unicode 🌍").to_list()
        assert recorded_content(records) == content(events)
        assert records[0].data == _UNICODE_DATA

    async def test_large_payload_round_trip(self, store: EventStore) -> None:
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

    async def test_stored_data_is_not_shared(self, store: EventStore) -> None:
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

    async def test_concurrent_writers_on_one_stream(self, store: EventStore) -> None:
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

    # ------------------------------------------------------------------ streams are values

    async def test_reads_are_lazy(self, store: EventStore) -> None:
        reading = store.read("lazy")
        reading_back = store.read("lazy", backwards=True)
        reading_all = store.read_all()
        names = store.streams()
        batch = make_events(3, "lazy")
        await append_ok(store, "lazy", batch)
        assert recorded_content(await reading.to_list()) == content(batch)
        assert recorded_content(await reading_back.to_list()) == content(batch[::-1])
        assert recorded_content(await reading_all.to_list()) == content(batch)
        assert await names.to_list() == ["lazy"]

    async def test_reads_are_rerunnable(self, store: EventStore) -> None:
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


class GlobalOrderConformance(_Suite):
    """The global order of an ``EventStore``: ``read_all`` gives every event once, in strictly
    increasing positions that follow commit order, paged and filtered where the store reads, and a
    reader tailing it while many tasks append never misses an event that commits late.
    """

    async def test_global_order_is_commit_order(self, store: EventStore) -> None:
        written: dict[str, list[EventData]] = {"a": [], "b": [], "c": []}
        results: list[AppendResult] = []
        for k in range(12):
            name = "abc"[(k * 7) % 3]
            batch = make_events(1 + k % 3, f"{name}{k}")
            results.append(await append_ok(store, name, batch, len(written[name])))
            written[name].extend(batch)
        everything = await store.read_all().to_list()
        positions = [r.position for r in everything]
        assert all(p < q for p, q in itertools.pairwise(positions))
        assert positions == [p for r in results for p in r.positions]
        batches_in_order = [e for r in results for e in written[r.stream][r.first_seq - 1 : r.last_seq]]
        assert recorded_content(everything) == content(batches_in_order)
        assert await store.head() == positions[-1]

    async def test_read_all_gives_what_read_gives(self, store: EventStore) -> None:
        unicode = [
            EventData("Unicode", _UNICODE_DATA, metadata={"who": "Ünïcødé 🎉", "nul": "a\x00b"}),
            EventData("Événement 🎉", "\x00"),
        ]
        await append_ok(store, "unicode 🌍", unicode)
        size = min(self.large_event_bytes, max_event_size_of(store) - 1000)
        if size > 2000:
            blob = "abcdefghij" * ((size - 1000) // 10)
            await append_ok(store, "large", [EventData("Large", {"blob": blob}), *make_events(1, "after")])
        await append_ok(store, "unicode 🌍", make_events(2, "more"))
        by_stream = [e for name in await store.streams().to_list() for e in await store.read(name).to_list()]
        assert await store.read_all().to_list() == sorted(by_stream, key=lambda e: e.position)

    # ------------------------------------------------------------------ paging the log

    async def test_read_all_after_and_limit(self, store: EventStore) -> None:
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

    # ------------------------------------------------------------------ filtered reads

    async def test_read_all_filtered_by_types(self, store: EventStore) -> None:
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

    async def test_read_all_filtered_by_stream_prefix(self, store: EventStore) -> None:
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

    async def test_read_all_filtered_by_types_and_prefix(self, store: EventStore) -> None:
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

    async def test_read_all_filtered_after_and_limit(self, store: EventStore) -> None:
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

    # ------------------------------------------------------------------ order under concurrency

    async def test_tailing_reader_sees_every_event_once_in_order(self, store: EventStore) -> None:
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


class SnapshotStoreConformance(_Suite):
    """The ``SnapshotStore`` capability: states saved by key, seq and schema version, found at or
    before a seq and a time."""

    async def test_is_a_snapshot_store(self, store: object) -> None:
        assert isinstance(store, SnapshotStore), f"{type(store).__name__} lacks a method of SnapshotStore"

    # ------------------------------------------------------------------ snapshots

    async def test_snapshot_save_and_load(self, store: SnapshotStore) -> None:
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

    async def test_snapshot_at_seq(self, store: SnapshotStore) -> None:
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

    async def test_snapshot_at_time(self, store: SnapshotStore) -> None:
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

    async def test_snapshot_schema_versions(self, store: SnapshotStore) -> None:
        await store.save_snapshot("k", 3, {"v": 1}, 1)
        await store.save_snapshot("k", 7, ["a", "state", "of", "version", 2], 2)
        v1 = (await store.load_snapshot("k", 1)).unwrap()
        v2 = (await store.load_snapshot("k", 2)).unwrap()
        assert (v1.seq, v1.state, v1.schema_version) == (3, {"v": 1}, 1)
        assert (v2.seq, v2.state, v2.schema_version) == (7, ["a", "state", "of", "version", 2], 2)
        assert await store.load_snapshot("k", 3) == Nothing
        assert await store.load_snapshot("k", 2, at_seq=6) == Nothing

    async def test_snapshot_overwrite(self, store: SnapshotStore) -> None:
        await store.save_snapshot("k", 4, {"first": True}, 1)
        await store.save_snapshot("k", 4, {"second": True}, 1)
        snap = (await store.load_snapshot("k", 1)).unwrap()
        assert (snap.seq, snap.state) == (4, {"second": True})
        assert (await store.load_snapshot("k", 1, at_seq=3)) == Nothing


class CheckpointStoreConformance(_Suite):
    """The ``CheckpointStore`` capability: named positions, saved and loaded."""

    async def test_is_a_checkpoint_store(self, store: object) -> None:
        assert isinstance(store, CheckpointStore), f"{type(store).__name__} lacks a method of CheckpointStore"

    # ------------------------------------------------------------------ checkpoints

    async def test_checkpoints(self, store: CheckpointStore) -> None:
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

    async def test_a_checkpoint_saved_with_expected_is_a_compare_and_set(
        self, store: CheckpointStore
    ) -> None:
        await store.save_checkpoint("cas", 10, expected=0)  # none saved yet
        assert await store.load_checkpoint("cas") == 10
        with pytest.raises(CheckpointMoved) as moved:
            await store.save_checkpoint("cas", 20, expected=0)
        assert (moved.value.expected, moved.value.found) == (0, 10)
        with pytest.raises(CheckpointMoved) as moved:
            await store.save_checkpoint("cas", 5, expected=7)
        assert moved.value.found == 10
        assert await store.load_checkpoint("cas") == 10  # nothing saved by a failed swap
        await store.save_checkpoint("cas", 25, expected=10)
        assert await store.load_checkpoint("cas") == 25
        await store.save_checkpoint("cas", 30)  # without expected: saved wherever it was
        assert await store.load_checkpoint("cas") == 30

    async def test_of_runners_racing_to_move_a_checkpoint_exactly_one_wins(
        self, store: CheckpointStore
    ) -> None:
        await store.save_checkpoint("race", 100, expected=0)
        won: list[int] = []

        async def runner(n: int) -> None:
            try:
                await store.save_checkpoint("race", 100 + n, expected=100)
            except CheckpointMoved:
                return
            won.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(1, 9):
                tg.start_soon(runner, n)
        assert len(won) == 1
        assert await store.load_checkpoint("race") == 100 + won[0]

    async def test_every_checkpoint_is_listed_once_where_it_is(self, store: CheckpointStore) -> None:
        listing = getattr(store, "checkpoints", None)
        assert callable(listing), f"{type(store).__name__} cannot list its checkpoints (checkpoints())"
        assert await listing().to_list() == []
        names = [f"view-{n:02d}" for n in range(25)] + ["projection ünï 🎉 '; --", "orders[1/4]"]
        for n, name in enumerate(names):  # more than a page of the small-paged stores
            await store.save_checkpoint(name, 10 * n)
        await store.save_checkpoint("view-03", 999)  # moved: listed where it is now
        await store.save_checkpoint("cas", 5, expected=0)
        listed = await listing().to_list()
        wanted = {name: 10 * n for n, name in enumerate(names)} | {"view-03": 999, "cas": 5}
        assert len(listed) == len(wanted)  # each once, across pages
        assert sorted(listed) == sorted(wanted.items())
        assert len(await listing().take(2).to_list()) == 2


class ImportingStoreConformance(_Suite):
    """The ``ImportingStore`` capability: events recorded elsewhere are imported with their id, type,
    data, metadata and time, get positions of this store, continue their stream (checked atomically)
    and are idempotent like appends."""

    async def test_is_an_importing_store(self, store: object) -> None:
        assert isinstance(store, ImportingStore), f"{type(store).__name__} lacks a method of ImportingStore"

    # ------------------------------------------------------------------ imports

    async def test_import_keeps_every_field_and_gives_positions_of_its_own(
        self, store: ImportingEventStore
    ) -> None:
        importer = store
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
        assert (await store.read_all(after=head).to_list()) == got
        # the next import continues the stream
        more = recorded("moved", len(events) + 1, [("Later", {"n": 1}, None)], first_position=5)
        again = expect_success(await importer.import_events("moved", more))
        assert (again.first_seq, again.last_seq) == (len(events) + 1, len(events) + 1)
        assert again.positions[0] > result.positions[-1]
        assert [r.id for r in await store.read("moved").to_list()] == [e.id for e in [*events, *more]]

    async def test_import_seqs_must_continue_the_stream(self, store: ImportingEventStore) -> None:
        importer = store
        stored = recorded("s", 1, [("T", {"i": i}, None) for i in range(3)])
        expect_success(await importer.import_events("s", stored))
        before = await stored_state(store)

        def batch(first: int, n: int = 2, stream: str = "s") -> list[RecordedEvent]:
            return recorded(stream, first, [("New", {"i": i}, None) for i in range(n)])

        for first, actual in ((5, 3), (3, 3), (1, 3), (2, 3)):  # a gap, overlaps, from the start
            error = expect_failure(await importer.import_events("s", batch(first)), WrongExpectedVersion)
            assert (error.stream, error.actual) == ("s", actual), first
        # (into a stream with no events, a first seq above 1 is a truncated source's: see
        # RetiringStoreConformance.test_a_truncated_stream_imports_from_its_first_kept_seq)
        assert await stored_state(store) == before
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
            assert await stored_state(store) == before, case
        big = _recorded_like(gap[0], data="x" * max_event_size_of(store))
        too_large = expect_failure(await importer.import_events("s", [big]), EventTooLarge)
        assert too_large.event_id == big.id
        expect_failure(await importer.import_events("bad\nname", batch(1, stream="bad\nname")), InvalidEvent)
        assert await stored_state(store) == before
        # the refused events' ids were not taken
        assert expect_success(await importer.import_events("s", gap)).last_seq == 6

    async def test_import_is_idempotent(self, store: ImportingEventStore) -> None:
        importer = store
        events = recorded("s", 1, [("T", {"i": i}, {"m": i}) for i in range(4)])
        first = expect_success(await importer.import_events("s", events))
        await append_ok(store, "other", make_events(1))
        before = await stored_state(store)
        assert expect_success(await importer.import_events("s", events)) == first
        middle = expect_success(await importer.import_events("s", events[1:3]))
        assert (middle.first_seq, middle.last_seq, middle.positions) == (2, 3, first.positions[1:3])
        assert await stored_state(store) == before
        # the same ids in another stream or place are duplicates; half-stored batches are refused whole
        moved = [_recorded_like(e, stream="t", id=e.id) for e in events[:2]]
        expect_failure(await importer.import_events("t", moved), DuplicateEvent)
        longer = [*events[2:], *recorded("s", 5, [("T", {"i": 4}, None)])]
        result = await importer.import_events("s", longer)
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), DuplicateEvent | WrongExpectedVersion)
        assert await stored_state(store) == before

    async def test_imports_and_appends_mix(self, store: ImportingEventStore) -> None:
        importer = store
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
        expect_failure(await store.append("s", make_events(1), 4), WrongExpectedVersion)
        expect_failure(
            await importer.import_events("s", recorded("s", 5, [("T", 1, None)])), WrongExpectedVersion
        )
        empty = expect_success(await importer.import_events("s", []))
        assert (empty.last_seq, empty.positions) == (5, ())
        assert await store.read("s").count() == 5

    async def test_concurrent_importers_of_one_stream(self, store: ImportingEventStore) -> None:
        importer = store
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


class NotifyingStoreConformance(_Suite):
    """The ``NotifyingStore`` capability: ``store.appended`` moves on after every append that wrote
    events through this store, and only then; waiters wake at once."""

    async def test_is_a_notifying_store(self, store: object) -> None:
        assert isinstance(store, NotifyingStore), f"{type(store).__name__} lacks a method of NotifyingStore"

    # ------------------------------------------------------------------ the append signal

    async def test_append_signal_moves_on_appends_that_write(self, store: NotifyingEventStore) -> None:
        signal = store.appended
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
        expect_failure(await store.append("s", make_events(1), 0), WrongExpectedVersion)
        expect_failure(await store.append("u", [*make_events(1), first[0]]), DuplicateEvent)
        assert signal.version == quiet
        assert await store.head() == 3

    async def test_append_signal_wait(self, store: NotifyingEventStore) -> None:
        signal = store.appended
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

    async def test_append_signal_after_cancelled_append(self, store: NotifyingEventStore) -> None:
        """An append cancelled while it runs may or may not write; if it wrote, the signal says so."""
        signal = store.appended
        for k in range(6):
            head, version = await store.head(), signal.version
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.append, f"cancelled-{k}", make_events(2, f"c{k}"))
                for _ in range(k):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
            if await store.head() != head:
                assert signal.version != version, f"cancelled after {k} checkpoints: wrote, no signal"


class StoreConformance(
    EventStoreConformance,
    GlobalOrderConformance,
    SnapshotStoreConformance,
    CheckpointStoreConformance,
    ImportingStoreConformance,
    NotifyingStoreConformance,
):
    """The whole suite, for a full ``Store`` (what ``open_store`` gives, what every shipped store and
    every :class:`~streamsrc.store.base.StoreBase` is): every capability's tests, and how the
    capabilities work together."""

    async def test_is_a_store(self, store: object) -> None:
        for capability in (EventStore, SnapshotStore, CheckpointStore, ImportingStore, NotifyingStore, Store):
            assert isinstance(store, capability), f"{type(store).__name__} is not a {capability.__name__}"

    async def test_import_moves_the_append_signal(self, store: Store) -> None:
        signal = store.appended
        events = recorded("s", 1, [("T", {}, None)])
        start = signal.version
        expect_success(await store.import_events("s", events))
        assert signal.version > start
        quiet = signal.version
        expect_success(await store.import_events("s", []))
        expect_failure(await store.import_events("s", recorded("s", 7, [("T", {}, None)])), StoreError)
        assert signal.version == quiet

    async def test_snapshots_and_checkpoints_are_apart_from_events(self, store: Store) -> None:
        await store.save_snapshot("s", 1, {"n": 1}, 1)
        await store.save_checkpoint("s", 7)
        assert await stored_state(store) == (0, [], [])
        await append_ok(store, "s", make_events(2))
        assert (await store.load_snapshot("s", 1)).map(lambda s: (s.seq, s.state)) == Some((1, {"n": 1}))
        assert await store.load_checkpoint("s") == 7
        assert [e.seq for e in await store.read("s").to_list()] == [1, 2]


class RetiringEventStore(EventStore, ImportingStore, RetiringStore, Protocol):
    """What :class:`RetiringStoreConformance` tests: an importing event store that deletes and truncates."""


class RetiringStoreConformance(_Suite):
    """The ``RetiringStore`` capability: ``delete_stream`` ends a stream with a tombstone (an event with
    a seq and a position, seen by ``read`` and ``read_all``) after which every append, concurrent ones
    included, and every import is refused with ``StreamDeleted``; ``truncate_before`` removes a stream's
    first events from every read but never its last, so the version and appends at it are unchanged;
    a truncated stream imports into another store (its first seq above 1), and so does a tombstone.
    Bad input (a seq below 1 or past the end, a bad name, the reserved tombstone type) is a typed
    failure that changes nothing.
    """

    # ------------------------------------------------------------------ delete_stream

    async def test_is_a_retiring_store(self, store: object) -> None:
        assert isinstance(store, RetiringStore), f"{type(store).__name__} lacks a method of RetiringStore"

    async def test_delete_writes_a_tombstone_that_reads_end_with(self, store: RetiringEventStore) -> None:
        await append_ok(store, "gone", make_events(3, "gone"))
        await append_ok(store, "kept", make_events(1, "kept"))
        deleted = expect_success(await store.delete_stream("gone", expected=3))
        assert deleted.last_seq == 4
        assert deleted.first_seq == 4
        events = await store.read("gone").to_list()
        assert [(e.seq, e.type) for e in events] == [
            (1, "Tested"),
            (2, "Tested"),
            (3, "Tested"),
            (4, TOMBSTONE_TYPE),
        ]
        tombstone = events[-1]
        assert (tombstone.data, tombstone.metadata) == ({}, None)
        assert _is_utc(tombstone.time)
        if deleted.positions:  # a store that gives positions at once (see AppendResult)
            assert deleted.positions == (tombstone.position,)
        log = await all_events(store)
        assert log[-1] == tombstone  # read_all shows it, at the end of the global order
        assert [e.type for e in await store.read_all(types={TOMBSTONE_TYPE}).to_list()] == [TOMBSTONE_TYPE]
        assert (await store.latest("gone")).map(lambda e: e.type) == Some(TOMBSTONE_TYPE)
        assert [e.seq for e in await store.read("gone", backwards=True).to_list()] == [4, 3, 2, 1]
        assert await store.streams().to_list() == ["gone", "kept"]
        assert [e.seq for e in await store.read("kept").to_list()] == [1]

    async def test_every_append_to_a_deleted_stream_is_refused(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(2))
        expect_success(await store.delete_stream("s"))
        before = await stored_state(store)
        for expected in (ANY, STREAM_EXISTS, NO_STREAM, 0, 2, 3, 4):
            refused = expect_failure(await store.append("s", make_events(2), expected), StreamDeleted)
            assert (refused.stream, refused.version) == ("s", 3)
            expect_failure(await store.append("s", [], expected), StreamDeleted)
        expect_failure(await store.import_events("s", recorded("s", 4, _IMPORTED_SHAPES[:2])), StreamDeleted)
        assert await stored_state(store) == before
        await append_ok(store, "s2", make_events(1))  # other streams go on

    async def test_deleting_twice_is_refused_as_deleted(self, store: RetiringEventStore) -> None:
        expect_success(await store.delete_stream("s"))
        before = await stored_state(store)
        for expected in (ANY, 1, 0, STREAM_EXISTS):
            assert expect_failure(await store.delete_stream("s", expected), StreamDeleted).version == 1
        assert await stored_state(store) == before

    async def test_delete_checks_the_expected_version(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(2))
        before = await stored_state(store)
        for expected in (0, 1, 3, NO_STREAM):
            wrong = expect_failure(await store.delete_stream("s", expected), WrongExpectedVersion)
            assert wrong.actual == 2
        expect_failure(await store.delete_stream("never", STREAM_EXISTS), WrongExpectedVersion)
        assert await stored_state(store) == before
        with pytest.raises(TypeError):
            await store.delete_stream("s", -1)
        assert expect_success(await store.delete_stream("s", STREAM_EXISTS)).last_seq == 3

    async def test_deleting_a_stream_with_no_events_takes_its_name(self, store: RetiringEventStore) -> None:
        assert expect_success(await store.delete_stream("new", NO_STREAM)).last_seq == 1
        assert [e.type for e in await store.read("new").to_list()] == [TOMBSTONE_TYPE]
        expect_failure(await store.append("new", make_events(1), NO_STREAM), StreamDeleted)

    async def test_delete_refuses_a_bad_name(self, store: RetiringEventStore) -> None:
        for name in _INVALID_NAMES:
            expect_failure(await store.delete_stream(name), InvalidEvent)
        assert await stored_state(store) == (0, [], [])

    async def test_the_tombstone_type_is_reserved(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(1))
        expect_failure(await store.append("s", [EventData(TOMBSTONE_TYPE, {})]), InvalidEvent)
        bad = recorded("s", 2, [(TOMBSTONE_TYPE, {}, None), ("After", {}, None)])
        expect_failure(await store.import_events("s", bad), InvalidEvent)
        assert [e.seq for e in await store.read("s").to_list()] == [1]
        await append_ok(store, "s", make_events(1), 1)

    async def test_a_retry_of_a_batch_written_before_the_delete_is_still_a_retry(
        self, store: RetiringEventStore
    ) -> None:
        batch = make_events(2)
        first = await append_ok(store, "s", batch, NO_STREAM)
        expect_success(await store.delete_stream("s"))
        again = expect_success(await store.append("s", batch, NO_STREAM))
        assert again.last_seq == first.last_seq == 2
        assert [e.seq for e in await store.read("s").to_list()] == [1, 2, 3]

    async def test_appends_racing_a_delete_land_before_the_tombstone_or_are_refused(
        self, store: RetiringEventStore
    ) -> None:
        await append_ok(store, "s", make_events(1))
        tasks = self.concurrent_writer_tasks
        answers: list[Result[AppendResult, StoreError]] = []
        deleted: list[Result[AppendResult, StoreError]] = []

        async def writer(n: int) -> None:
            for expected in (ANY, ANY, STREAM_EXISTS):
                answers.append(await store.append("s", make_events(1, f"w{n}"), expected))

        async def deleter() -> None:
            await anyio.lowlevel.checkpoint()
            deleted.append(await store.delete_stream("s"))

        async with anyio.create_task_group() as group:
            for n in range(tasks):
                group.start_soon(writer, n)
            group.start_soon(deleter)
        tombstone = expect_success(deleted[0]).last_seq
        events = await store.read("s").to_list()
        assert [e.seq for e in events] == list(range(1, tombstone + 1))
        assert events[-1].type == TOMBSTONE_TYPE
        written = [r.unwrap().last_seq for r in answers if isinstance(r, Success)]
        assert sorted(written) == list(range(2, tombstone))  # every success landed before it
        for refused in (r.failure() for r in answers if isinstance(r, Failure)):
            assert isinstance(refused, StreamDeleted), refused
        assert len(written) + sum(isinstance(r, Failure) for r in answers) == 3 * tasks

    # ------------------------------------------------------------------ truncate_before

    async def test_truncate_removes_the_first_events_from_every_read(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(6, "s"))
        await append_ok(store, "t", make_events(2, "t"))
        kept = await store.read("s", after=3).to_list()
        assert await store.truncate_before("s", 4) == Success(3)
        assert await store.read("s").to_list() == kept
        assert [e.seq for e in await store.read("s", backwards=True).to_list()] == [6, 5, 4]
        assert [e.seq for e in await store.read("s", after=1, limit=2).to_list()] == [4, 5]
        assert [e.seq for e in await store.read("s", after=5, backwards=True).to_list()] == [4]
        log = await all_events(store)
        assert [(e.stream, e.seq) for e in log] == [("s", 4), ("s", 5), ("s", 6), ("t", 1), ("t", 2)]
        assert [e.seq for e in await store.read_all(stream_prefix="s").to_list()] == [4, 5, 6]
        assert [e.seq for e in await store.read_all(after=0, limit=1).to_list()] == [4]
        assert await store.head() == 8  # positions are never given again
        assert (await store.latest("s")).map(lambda e: e.seq) == Some(6)
        assert await store.streams().to_list() == ["s", "t"]

    async def test_truncate_keeps_the_version(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(3))
        assert await store.truncate_before("s", 3) == Success(2)  # all but the last
        expect_failure(await store.append("s", make_events(1), 0), WrongExpectedVersion)
        assert (await append_ok(store, "s", make_events(2), 3)).last_seq == 5
        assert expect_success(await store.append("s", [], 5)).last_seq == 5
        assert [e.seq for e in await store.read("s").to_list()] == [3, 4, 5]
        assert await store.truncate_before("s", 2) == Success(0)  # below an earlier truncation
        assert await store.truncate_before("s", 3) == Success(0)
        assert await store.truncate_before("s", 1) == Success(0)
        assert await store.truncate_before("s", 5) == Success(2)
        assert [e.seq for e in await store.read("s").to_list()] == [5]

    async def test_truncate_past_the_end_or_below_one_is_refused(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(3))
        before = await stored_state(store)
        for seq in (4, 5, 1 << 40, 0, -1):
            result = await store.truncate_before("s", seq)
            assert isinstance(result, Failure), (seq, result)
            refused = result.failure()
            assert isinstance(refused, InvalidTruncation), refused
            assert (refused.stream, refused.seq, refused.version) == ("s", seq, 3)
        missing = await store.truncate_before("never", 1)
        assert isinstance(missing, Failure)
        assert isinstance(missing.failure(), InvalidTruncation)
        for name in _INVALID_NAMES:
            bad = await store.truncate_before(name, 1)
            assert isinstance(bad, Failure), (name, bad)
            assert isinstance(bad.failure(), InvalidEvent), (name, bad)
        with pytest.raises(TypeError):
            await store.truncate_before("s", "2")  # type: ignore[arg-type]
        assert await stored_state(store) == before

    async def test_truncating_a_deleted_stream_keeps_its_tombstone(self, store: RetiringEventStore) -> None:
        await append_ok(store, "s", make_events(4))
        expect_success(await store.delete_stream("s"))
        assert await store.truncate_before("s", 5) == Success(4)
        assert [(e.seq, e.type) for e in await store.read("s").to_list()] == [(5, TOMBSTONE_TYPE)]
        expect_failure(await store.append("s", make_events(1)), StreamDeleted)
        expect_failure(await store.delete_stream("s"), StreamDeleted)

    # ------------------------------------------------------------------ imports (what a copy does)

    async def test_a_truncated_stream_imports_from_its_first_kept_seq(
        self, store: RetiringEventStore
    ) -> None:
        events = recorded("s", 7, _IMPORTED_SHAPES[:3])
        imported = expect_success(await store.import_events("s", events))
        assert (imported.first_seq, imported.last_seq) == (7, 9)
        assert [_fields(e) for e in await store.read("s").to_list()] == [_fields(e) for e in events]
        assert expect_success(await store.import_events("s", events)).last_seq == 9  # idempotent
        assert (await append_ok(store, "s", make_events(1), 9)).last_seq == 10
        gap = recorded("s", 12, _IMPORTED_SHAPES[:1])
        assert expect_failure(await store.import_events("s", gap), WrongExpectedVersion).actual == 10
        expect_failure(await store.append("fresh", make_events(1), 6), WrongExpectedVersion)  # appends do not
        assert await store.read("fresh").to_list() == []

    async def test_a_tombstone_imports_and_deletes(self, store: RetiringEventStore) -> None:
        source = recorded("s", 3, [("Tested", {}, None), (TOMBSTONE_TYPE, {}, None)])
        expect_success(await store.import_events("s", source))
        expect_failure(await store.append("s", make_events(1)), StreamDeleted)
        assert expect_success(await store.import_events("s", source)).last_seq == 4  # a re-run of a copy


class BatchLimitedStoreConformance(_Suite):
    """The ``BatchLimitedStore`` capability (of an importing event store): an append or an import of
    ``max_batch`` events is written whole, and one of ``max_batch + 1`` is refused whole with an
    ``InvalidEvent`` (never split, which would lose its atomicity)."""

    async def test_is_a_batch_limited_store(self, store: object) -> None:
        assert isinstance(store, BatchLimitedStore), f"{type(store).__name__} has no max_batch"
        assert isinstance(store.max_batch, int)
        assert store.max_batch >= 1

    async def test_max_batch_events_are_written_whole(self, store: BatchLimitedEventStore) -> None:
        limit = store.max_batch
        written = await append_ok(store, "s", make_events(limit, "full"), NO_STREAM)
        assert (written.first_seq, written.last_seq, len(written.positions)) == (1, limit, limit)
        imported = expect_success(await store.import_events("t", recorded("t", 1, [("T", {}, None)] * limit)))
        assert imported.last_seq == limit

    async def test_one_more_is_refused_whole(self, store: BatchLimitedEventStore) -> None:
        limit = store.max_batch
        await append_ok(store, "s", make_events(1, "first"))
        before = await stored_state(store)
        too_many = make_events(limit + 1, "over")
        expect_failure(await store.append("s", too_many), InvalidEvent)
        over = recorded("t", 1, [("T", {}, None)] * (limit + 1))
        expect_failure(await store.import_events("t", over), InvalidEvent)
        assert await stored_state(store) == before
        # nothing of them was kept: the same events go in, in batches that fit
        await append_ok(store, "s", too_many[:limit], 1)
        await append_ok(store, "s", too_many[limit:], 1 + limit)
        assert await store.read("s").count() == limit + 2


# ---------------------------------------------------------------------------------------- the error rule

PRIMITIVES = (
    "insert_batch",
    "find_ids",
    "read_page",
    "last_position",
    "stream_names",
    "write_snapshot",
    "read_snapshot",
    "write_checkpoint",
    "read_checkpoint",
    "list_checkpoints",
    "remove_before",
)
"""The primitives of :class:`~streamsrc.store.base.StoreBase` that operations await through ``guard``
(``close`` is awaited by ``aclose``, which is checked on its own)."""


@dataclass(frozen=True)
class _Data:
    """The events of one error rule test: stored first, then appended and imported by operations."""

    stored: list[EventData]
    new: list[EventData]
    late: list[EventData]
    imported: list[RecordedEvent]
    misplaced: list[RecordedEvent]

    @classmethod
    def make(cls) -> _Data:
        return cls(
            stored=make_events(2, "stored"),
            new=make_events(2, "new"),
            late=make_events(1, "late"),
            imported=recorded("s", 3, _IMPORTED_SHAPES[:2]),
            misplaced=recorded("s", 1, _IMPORTED_SHAPES[:1]),
        )


@dataclass(frozen=True)
class _Operation:
    """A public operation of a store, run on a store prepared by :func:`_prepare`."""

    run: Callable[[StoreBase, _Data], Awaitable[object]]
    """Runs the operation: its answer, or it raises."""
    answer: Callable[[Any], bool]
    """Whether a run without faults answered as it must."""
    primitive: str
    """The primitive the operation must go through (the suite checks that a fault there reached it)."""
    returns_result: bool = False
    """Whether it answers with a ``Result`` (appends, imports) rather than raising."""
    may: tuple[str, ...] = ()
    """Primitives it may go on to, depending on the backend (``find_ids``, unless ``insert_batch`` found
    the ids itself)."""


def _ok(result: object) -> bool:
    return isinstance(result, Success)


def _conflict(result: object) -> bool:
    return isinstance(result, Failure) and isinstance(result.failure(), WrongExpectedVersion)


def _two(result: Sequence[RecordedEvent]) -> bool:
    return [e.seq for e in result] in ([1, 2], [2, 1])


_OPERATIONS: dict[str, _Operation] = {
    "append": _Operation(lambda s, d: s.append("s", d.new, 2), _ok, "insert_batch", True),
    "append a conflict": _Operation(
        lambda s, d: s.append("s", d.late, 0), _conflict, "insert_batch", True, ("find_ids",)
    ),
    "append a retry": _Operation(
        lambda s, d: s.append("s", d.stored, 0), _ok, "insert_batch", True, ("find_ids",)
    ),
    "append nothing": _Operation(lambda s, d: s.append("s", [], 2), _ok, "read_page", True),
    "import_events": _Operation(lambda s, d: s.import_events("s", d.imported), _ok, "insert_batch", True),
    "import a conflict": _Operation(
        lambda s, d: s.import_events("s", d.misplaced), _conflict, "insert_batch", True, ("find_ids",)
    ),
    "read": _Operation(lambda s, d: s.read("s").to_list(), _two, "read_page"),
    "read backwards": _Operation(lambda s, d: s.read("s", backwards=True).to_list(), _two, "read_page"),
    "read_all": _Operation(lambda s, d: s.read_all().to_list(), _two, "read_page"),
    "read_all filtered": _Operation(
        lambda s, d: s.read_all(types={"Tested"}, stream_prefix="s").to_list(), _two, "read_page"
    ),
    "latest": _Operation(
        lambda s, d: s.latest("s"), lambda r: r.map(lambda e: e.seq) == Some(2), "read_page"
    ),
    "head": _Operation(lambda s, d: s.head(), lambda r: r == 2, "last_position"),
    "streams": _Operation(lambda s, d: s.streams().to_list(), lambda r: r == ["s"], "stream_names"),
    "save_snapshot": _Operation(
        lambda s, d: s.save_snapshot("k", 3, {"n": 3}, 1), lambda r: r is None, "write_snapshot"
    ),
    "load_snapshot": _Operation(
        lambda s, d: s.load_snapshot("k", 1), lambda r: r.map(lambda x: x.seq) == Some(2), "read_snapshot"
    ),
    "save_checkpoint": _Operation(
        lambda s, d: s.save_checkpoint("c", 3), lambda r: r is None, "write_checkpoint"
    ),
    "load_checkpoint": _Operation(lambda s, d: s.load_checkpoint("c"), lambda r: r == 2, "read_checkpoint"),
    "checkpoints": _Operation(
        lambda s, d: s.checkpoints().to_list(), lambda r: r == [("c", 2)], "list_checkpoints"
    ),
    "delete_stream": _Operation(
        lambda s, d: s.delete_stream("s", 2), _ok, "insert_batch", True, ("find_ids",)
    ),
    "truncate_before": _Operation(
        lambda s, d: s.truncate_before("s", 2), lambda r: r == Success(1), "remove_before", True
    ),
}
"""Every public operation of a store, with a case for each path to another primitive (an append that
conflicts may go on to ``find_ids``; an empty one reads the stream's version)."""

assert {p for op in _OPERATIONS.values() for p in (op.primitive, *op.may)} == set(PRIMITIVES)


async def _prepare(store: StoreBase) -> _Data:
    """Stream ``s`` with two events, snapshot ``k`` at seq 2, checkpoint ``c`` at 2."""
    data = _Data.make()
    await append_ok(store, "s", data.stored, NO_STREAM)
    await store.save_snapshot("k", 2, {"n": 2}, 1)
    await store.save_checkpoint("c", 2)
    return data


async def _everything_kept(store: StoreBase) -> tuple[object, ...]:
    """What a failed operation must leave unchanged: events, streams, head, snapshot and checkpoint."""
    snapshot: Maybe[Snapshot] = await store.load_snapshot("k", 1)
    return (*await stored_state(store), snapshot, await store.load_checkpoint("c"))


class _Faults:
    """Every primitive of a store patched on the instance: the ``at``-th primitive call raises
    ``error()`` (before it runs; ``after=True``: once it has run), every call is recorded."""

    def __init__(
        self, store: StoreBase, error: Callable[[], BaseException], at: int, after: bool = False
    ) -> None:
        self.store, self.error, self.at, self.after = store, error, at, after
        self.calls: list[str] = []
        self.raised: list[BaseException] = []

    def __enter__(self) -> _Faults:
        for name in PRIMITIVES:
            setattr(self.store, name, self._faulty(name, getattr(self.store, name)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in PRIMITIVES:
            delattr(self.store, name)  # the class's method again

    @property
    def faulted(self) -> str | None:
        """The primitive that raised, if one did."""
        return self.calls[self.at - 1] if len(self.calls) >= self.at else None

    def _faulty(self, name: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def faulty(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if len(self.calls) != self.at:
                return await original(*args, **kwargs)
            if self.after:
                await original(*args, **kwargs)
            error = self.error()
            self.raised.append(error)
            raise error

        return faulty


async def _run(operation: _Operation, store: StoreBase, data: _Data) -> object:
    """Run ``operation``: its answer, or the exception it raised (a ``BaseException`` is a bug here)."""
    try:
        return await operation.run(store, data)
    except Exception as exc:
        return exc


class ErrorRuleConformance(_Suite):
    """The error rule, enforced by fault injection on every operation, for stores built on
    :class:`~streamsrc.store.base.StoreBase` (the faults are injected by patching its primitives on the
    store instance).

    A subclass gives a ``store`` (or ``store_url``) fixture, as for the other suites, and a
    ``driver_error`` fixture: a function making one of the backend's real driver exceptions (one of its
    ``driver_errors``: ``sqlite3.OperationalError("database is locked")``, a connection error of
    asyncpg, a botocore ``ClientError``, ...). Then, for every public operation and for every primitive
    call it makes, in turn, that call raises the driver error, and:

    * ``append`` and ``import_events`` return ``Failure(StoreUnavailable)``; every other method raises
      ``StoreUnavailable``, never the driver's exception;
    * nothing was half-written: events, streams, head, snapshot and checkpoint are as before;
    * once the fault is gone, the same operation works again on the same store.

    And for the store's life: a closed store refuses every operation with ``StoreUnavailable``
    (``Failure`` for appends); ``aclose`` finishes closing when its caller is cancelled, and a
    cancelled ``async with open_store(store_url)`` block closes its store (``store_url`` is needed for
    that test).
    """

    @pytest.fixture
    def driver_error(self) -> Callable[[], BaseException]:
        """Makes one of the backend's driver exceptions: every subclass must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `driver_error` fixture returning a function that makes "
            "one of the backend's driver exceptions"
        )

    async def test_the_driver_error_is_one_the_store_maps(
        self, store: StoreBase, driver_error: Callable[[], BaseException]
    ) -> None:
        assert isinstance(store, StoreBase), f"{type(store).__name__} is not built on StoreBase"
        error = driver_error()
        assert not isinstance(error, StoreError), "driver_error must make the driver's own exception"
        assert isinstance(error, store.driver_errors), (
            f"{error!r} is not in {type(store).__name__}.driver_errors"
        )

    @pytest.mark.parametrize("name", list(_OPERATIONS))
    async def test_a_driver_error_in_any_primitive_is_store_unavailable(
        self, store: StoreBase, driver_error: Callable[[], BaseException], name: str
    ) -> None:
        operation = _OPERATIONS[name]
        data = await _prepare(store)
        before = await _everything_kept(store)
        faulted: list[str] = []
        for at in itertools.count(1):
            assert at <= 50, f"{name}: more than 50 primitive calls"
            with _Faults(store, driver_error, at) as faults:
                outcome = await _run(operation, store, data)
            if faults.faulted is None:  # fewer calls than ``at``: it ran without a fault
                break
            faulted.append(faults.faulted)
            case = f"{name}, with {faults.faulted} (primitive call {at}) failing"
            if operation.returns_result:
                assert isinstance(outcome, Failure), f"{case}: answered {outcome!r}"
                outcome = outcome.failure()
            assert isinstance(outcome, StoreUnavailable), (
                f"{case}: {'raised' if isinstance(outcome, BaseException) else 'answered'} {outcome!r}"
            )
            assert await _everything_kept(store) == before, f"{case}: the store changed"
        # the fault is gone: the operation works again, on the same store
        assert operation.answer(outcome), f"{name} without a fault: {outcome!r}"
        assert operation.primitive in faulted, f"{name} never called {operation.primitive}: {faulted}"

    @pytest.mark.parametrize("name", ["append", "import_events", "append a retry"])
    async def test_a_write_whose_answer_is_lost_is_whole_and_its_retry_writes_nothing_more(
        self, store: StoreBase, driver_error: Callable[[], BaseException], name: str
    ) -> None:
        operation = _OPERATIONS[name]
        data = await _prepare(store)
        with _Faults(store, driver_error, 1, after=True) as faults:
            lost = await _run(operation, store, data)
        assert faults.faulted == "insert_batch", faults.calls
        assert isinstance(lost, Failure), lost
        assert isinstance(lost.failure(), StoreUnavailable), lost
        written = await all_events(store)
        retried = await _run(operation, store, data)
        assert isinstance(retried, Success), f"the retry of {name}: {retried!r}"
        assert await all_events(store) == written  # the lost write landed whole: the retry found it
        seqs = [e.seq for e in await store.read("s").to_list()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len({e.id for e in written}) == len(written)

    async def test_a_closed_store_refuses_every_operation(self, store: StoreBase) -> None:
        data = await _prepare(store)
        await store.aclose()
        await store.aclose()  # closing twice is harmless
        for name, operation in _OPERATIONS.items():
            outcome = await _run(operation, store, data)
            if operation.returns_result:
                assert isinstance(outcome, Failure), f"{name} on a closed store: {outcome!r}"
                outcome = outcome.failure()
            assert isinstance(outcome, StoreUnavailable), f"{name} on a closed store: {outcome!r}"

    async def test_aclose_finishes_when_its_caller_is_cancelled(self, store: StoreBase) -> None:
        data = await _prepare(store)
        close = store.close
        entered, finished = anyio.Event(), anyio.Event()

        async def slow_close() -> None:
            entered.set()
            await anyio.sleep(0.01)  # the caller is cancelled while the store closes
            await close()
            finished.set()

        store.close = slow_close  # type: ignore[method-assign]
        try:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(store.aclose)
                    await entered.wait()
                    tg.cancel_scope.cancel()
        finally:
            del store.close
        assert finished.is_set()
        outcome = await _run(_OPERATIONS["append"], store, data)
        assert isinstance(outcome, Failure), outcome
        assert isinstance(outcome.failure(), StoreUnavailable), outcome
        with anyio.CancelScope() as scope:  # an already cancelled caller closes too (nothing left here)
            scope.cancel()
            await store.aclose()

    async def test_a_cancelled_open_store_block_closes_its_store(self, store_url: str) -> None:
        opened: list[StoreBase] = []
        with anyio.fail_after(60):
            with anyio.CancelScope() as scope:
                async with open_store(store_url) as store:
                    assert isinstance(store, StoreBase)
                    opened.append(store)
                    await _prepare(store)
                    scope.cancel()
                    await anyio.sleep_forever()
        assert scope.cancelled_caught
        [store] = opened
        for name, operation in _OPERATIONS.items():
            outcome = await _run(operation, store, _Data.make())
            if operation.returns_result:
                assert isinstance(outcome, Failure), f"{name} after the block: {outcome!r}"
                outcome = outcome.failure()
            assert isinstance(outcome, StoreUnavailable), f"{name} after the block: {outcome!r}"

    async def test_a_failing_close_is_not_raised(
        self, store: StoreBase, driver_error: Callable[[], BaseException]
    ) -> None:
        close = store.close

        async def failing_close() -> None:
            await close()
            raise driver_error()

        store.close = failing_close  # type: ignore[method-assign]
        try:
            await store.aclose()  # the contract: aclose raises nothing
        finally:
            del store.close
        outcome = await store.append("s", make_events(1))
        assert isinstance(outcome, Failure), outcome
        assert isinstance(outcome.failure(), StoreUnavailable), outcome
