"""The store contract: what every interpreter (memory, SQLite, ...) provides and guarantees.

Guarantees of every ``EventStore``:

* **Append-only, conditional writes.** ``append`` writes a batch at the end
  of one stream if, and only if, the stream is at the ``expected`` version;
  it never overwrites an event. A batch is atomic: all of it or nothing.
* **Gap-free per-stream order.** Events of a stream have ``seq`` 1, 2, 3, ...
* **Global order that never skips.** ``position`` is strictly increasing in
  commit order: once a reader of ``read_all`` has seen position *p*, no event
  with a position below *p* can still appear. (Memory: appends are atomic on
  the event loop. SQLite: one writer at a time, positions given inside the
  write transaction, so commit order is position order.)
* **Idempotent retries.** Appending a batch whose event ids are already
  stored, in the same order at the place the append asks for, succeeds and
  returns the stored positions without writing anything.
* **Failures are values.** ``append`` returns ``Failure`` with a
  :class:`~streamsrc.errors.StoreError`: ``WrongExpectedVersion``,
  ``DuplicateEvent``, ``InvalidEvent``, ``EventTooLarge``, ``StoreUnavailable``
  (and ``StreamDeleted``, for a stream that a :class:`RetiringStore` deleted).

Guarantees of every :class:`RetiringStore` (every ``StoreBase``): a deleted
stream ends with a tombstone (an event of type :data:`TOMBSTONE_TYPE`, with a
seq and a global position of its own) and takes no more events, which the
database decides as it decides the expected version; ``truncate_before``
removes a stream's first events but never its last, so a stream's version
never goes back.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeAlias, runtime_checkable

import anyio
import anyio.lowlevel
from returns.maybe import Maybe
from returns.result import Failure, Result, Success

from streamsrc.errors import (
    DuplicateEvent,
    EventTooLarge,
    InvalidEvent,
    StoreError,
    WrongExpectedVersion,
)
from streamsrc.events import EventData, RecordedEvent, encode_json_sized, validate_stream_name
from streamsrc.stream import Stream

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
"""Default limit on one event's encoded ``data`` plus ``metadata``, in bytes."""

DEFAULT_PAGE_SIZE = 1000
"""Default number of events fetched per page by ``read`` and ``read_all``."""

TOMBSTONE_TYPE = "$streamDeleted"
"""The type of the tombstone ``delete_stream`` writes at the end of a stream (data ``{}``). It is
reserved: ``append`` refuses events of this type (``InvalidEvent``); ``import_events`` takes one
only as the last event of its batch (a copy carries tombstones over).

>>> import anyio
>>> from streamsrc.store.memory import MemoryStore
>>> async def main() -> None:
...     store = MemoryStore()
...     await store.delete_stream("cart-1")
...     print([(e.stream, e.seq, e.type) for e in await store.read_all().to_list()])
>>> anyio.run(main)
[('cart-1', 1, '$streamDeleted')]
"""


class ExpectedVersion(enum.Enum):
    """Where an append expects the stream to be, other than an exact seq.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store import NO_STREAM, STREAM_EXISTS
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     print(await store.append("cart-1", [EventData("Opened", {})], expected=STREAM_EXISTS))
    ...     print(await store.append("cart-1", [EventData("Opened", {})], expected=NO_STREAM))
    >>> anyio.run(main)
    <Failure: stream 'cart-1' is at version 0, expected STREAM_EXISTS>
    <Success: AppendResult(stream='cart-1', last_seq=1, positions=(1,))>
    """

    ANY = "any"
    """Append wherever the stream is (no concurrency check)."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as ``expected=0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected: TypeAlias = int | ExpectedVersion
"""An exact last seq (``0``: the stream must not exist) or an :class:`ExpectedVersion`."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """A successful append: the stream's new last ``seq`` and the global positions written.

    ``positions`` is empty, though events were written, on a store that gives
    positions after the append (the DynamoDB store in ``order=stream`` mode: an
    indexer gives them; ``count`` then says how many events were written and
    ``await store.indexed(result)`` waits for their positions). Code that uses
    ``positions`` must accept that; ``first_seq`` and ``last_seq`` are always right.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> events = [EventData("Added", {"sku": "a"}), EventData("Added", {"sku": "b"})]
    >>> result = anyio.run(MemoryStore().append, "cart-1", events).unwrap()
    >>> result, result.first_seq
    (AppendResult(stream='cart-1', last_seq=2, positions=(1, 2)), 1)
    """

    stream: str
    last_seq: int
    positions: tuple[int, ...]
    count: int = field(default=0, repr=False, compare=False)
    """The events written when ``positions`` is empty although events were written: a store whose
    global order is decided after the append (the DynamoDB store in ``order=stream`` mode; its
    ``indexed(result)`` gives the positions once known). 0 otherwise: ``len(positions)`` counts them."""

    @property
    def first_seq(self) -> int:
        """The seq of the first event of the batch (``last_seq + 1`` for an empty batch)."""
        return self.last_seq - max(len(self.positions), self.count) + 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A saved state of one key: as of event ``seq`` (written at ``time``), in ``schema_version``.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.save_snapshot("account-1", seq=10, state={"balance": 42}, schema_version=1)
    ...     snapshot = (await store.load_snapshot("account-1", schema_version=1)).unwrap()
    ...     print(snapshot.seq, snapshot.state)
    >>> anyio.run(main)
    10 {'balance': 42}
    """

    key: str
    seq: int
    state: Any
    schema_version: int
    time: datetime


@runtime_checkable
class EventStore(Protocol):
    """An append-only log of events in per-key streams, with a global order.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store: EventStore = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {"total": 12})])
    ...     await store.append("order-2", [EventData("OrderPlaced", {"total": 7})])
    ...     print([(e.stream, e.seq, e.position) for e in await store.read_all().to_list()])
    ...     print((await store.latest("order-2")).map(lambda e: e.data), await store.head())
    >>> anyio.run(main)
    [('order-1', 1, 1), ('order-2', 1, 2)]
    <Some: {'total': 7}> 2
    """

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append ``events`` to ``stream`` atomically if it is at ``expected``.

        :returns: ``Success(AppendResult)``, or ``Failure`` with ``WrongExpectedVersion``,
            ``DuplicateEvent``, ``InvalidEvent``, ``EventTooLarge``, ``StreamDeleted`` (the stream
            was deleted: see ``RetiringStore``) or ``StoreUnavailable``.
        :raises TypeError: ``expected`` is not an int >= 0 or an ``ExpectedVersion`` (a bug).
        """
        ...

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """The events of ``stream`` with ``seq > after``, lazily paged.

        With ``backwards=True`` the events come last first, starting below
        ``after`` (or at the last event when ``after`` is 0).

        :raises StoreUnavailable: while the stream runs, if the database fails.
        :raises CorruptEvent: when a damaged event's field is read.
        """
        ...

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """Every event with ``position > after``, in global order, lazily paged.

        ``types`` keeps only events of those types, ``stream_prefix`` only
        events of streams whose name starts with it; a store applies them
        where it reads (SQL ``WHERE``), so skipped events cost little. ``limit``
        counts the events returned.

        :raises StoreUnavailable: while the stream runs, if the database fails.
        :raises CorruptEvent: when a damaged event's field is read.
        """
        ...

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """The last event of ``stream``, or ``Nothing``.

        :raises StoreUnavailable: if the database fails.
        """
        ...

    async def head(self) -> int:
        """The highest global position written so far (0 for an empty store).

        :raises StoreUnavailable: if the database fails.
        """
        ...

    def streams(self) -> Stream[str]:
        """The names of all streams, in sorted order.

        :raises StoreUnavailable: while the stream runs, if the database fails.
        """
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """Saved states per key, each tagged with the seq it reflects and a schema version.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store: SnapshotStore = MemoryStore()
    ...     await store.save_snapshot("account-1", seq=3, state={"balance": 5}, schema_version=1)
    ...     print(await store.load_snapshot("account-1", schema_version=2))  # another schema: ignored
    >>> anyio.run(main)
    <Nothing>
    """

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save ``state`` (a JSON value) as the state of ``key`` after event ``seq``.

        :raises InvalidEvent: ``key`` is not a usable name, or ``state`` is not a JSON value.
        :raises StoreUnavailable: if the database fails.
        """
        ...

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The latest snapshot of ``key`` in ``schema_version`` (at or before ``at_seq``/``at_time``).

        Snapshots of another schema version are ignored, never decoded; a damaged one is
        ``Nothing`` (a snapshot is a shortcut: the caller replays instead).

        :raises StoreUnavailable: if the database fails.
        """
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Named global positions: how far a projection or subscription has got.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store: CheckpointStore = MemoryStore()
    ...     print(await store.load_checkpoint("emails"))
    ...     await store.save_checkpoint("emails", 120)
    ...     print(await store.load_checkpoint("emails"))
    >>> anyio.run(main)
    0
    120
    """

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of ``name``, or 0 if none was saved.

        :raises StoreUnavailable: if the database fails.
        """
        ...

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        """Save ``position`` as the checkpoint of ``name``.

        With ``expected`` (``0``: no checkpoint saved yet), a compare-and-set:
        saved only if the checkpoint is at ``expected``, decided atomically by
        the database.

        :raises CheckpointMoved: with ``expected``, the checkpoint was elsewhere (nothing saved).
        :raises InvalidEvent: ``name`` is not a usable name.
        :raises StoreUnavailable: if the database fails.
        """
        ...


@runtime_checkable
class ListingCheckpointStore(CheckpointStore, Protocol):
    """A ``CheckpointStore`` that lists every checkpoint it keeps (what ``streamsrc projection
    status`` shows); every store that ships is one.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store: ListingCheckpointStore = MemoryStore()
    ...     await store.save_checkpoint("emails", 120)
    ...     print(await store.checkpoints().to_list())
    >>> anyio.run(main)
    [('emails', 120)]
    """

    def checkpoints(self) -> Stream[tuple[str, int]]:
        """Every saved checkpoint as ``(name, position)``, each once: by name on the SQL and memory
        stores, in a table scan's order on DynamoDB.

        :raises StoreUnavailable: while the stream runs, if the database fails.
        """
        ...


@runtime_checkable
class RetiringStore(Protocol):
    """A store whose streams can be deleted (a tombstone) and truncated (their first events removed).

    Every :class:`~streamsrc.store.base.StoreBase` is one (memory, SQLite, PostgreSQL; DynamoDB).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store: RetiringStore = MemoryStore()
    ...     await store.append("cart-1", [EventData("Added", {"n": n}) for n in range(5)])
    ...     print(await store.truncate_before("cart-1", 4))  # removes #1 to #3
    ...     print(await store.delete_stream("cart-1"))  # the tombstone is #6
    ...     print([(e.seq, e.type) for e in await store.read("cart-1").to_list()])
    ...     print(await store.append("cart-1", [EventData("Added", {})]))
    >>> anyio.run(main)
    <Success: 3>
    <Success: AppendResult(stream='cart-1', last_seq=6, positions=(6,))>
    [(4, 'Added'), (5, 'Added'), (6, '$streamDeleted')]
    <Failure: stream 'cart-1' is deleted (its tombstone is #6): nothing can be appended to it>
    """

    async def delete_stream(self, stream: str, expected: Expected = ANY) -> Result[AppendResult, StoreError]:
        """Delete ``stream`` (softly): append its tombstone, an event of type :data:`TOMBSTONE_TYPE`,
        if the stream is at ``expected`` (a stream with no events can be deleted: its name is then
        taken for good).

        The tombstone is an event like any other: it has the next seq and a global position, so
        ``read`` ends with it, ``read_all`` (projections, subscriptions) shows it and a copy carries
        it. From then on every append to the stream, whatever its ``expected``, concurrent ones
        too, and every import, is refused with ``StreamDeleted``, decided by the database
        atomically with the write, as the expected version is. Deleting a deleted stream is refused
        the same way (``StreamDeleted``: the caller knows it is deleted). The events stay until
        ``truncate_before(stream, version)`` removes all but the tombstone.

        :returns: ``Success(AppendResult)`` of the tombstone, or ``Failure`` with
            ``StreamDeleted``, ``WrongExpectedVersion``, ``InvalidEvent`` (a bad name) or
            ``StoreUnavailable``.
        :raises TypeError: ``expected`` is not an int >= 0 or an ``ExpectedVersion`` (a bug).
        """
        ...

    async def truncate_before(self, stream: str, seq: int) -> Result[int, StoreError]:
        """Remove the events of ``stream`` with a seq below ``seq``, in one transaction; how many.

        ``seq`` runs from 1 (nothing removed) to the stream's version (all but its last event): a
        truncation always keeps the last event, so the stream's version, and appends with
        ``expected=version``, are unchanged. The removed events are gone for every reader:
        ``read``, ``read_all`` (a projection rebuilt afterwards never sees them), ``latest``,
        ``find``; a SQL store deletes their rows. A copy of a truncated stream starts at its first
        kept seq (imports accept a stream's first event at a seq above 1 into a stream the
        target does not have). Truncating again below an earlier truncation removes nothing.

        :returns: ``Success(count)``, or ``Failure`` with ``InvalidTruncation`` (``seq`` below 1 or
            above the version, or a stream with no events: nothing removed), ``InvalidEvent`` (a
            bad name) or ``StoreUnavailable``.
        :raises TypeError: ``seq`` is not an int (a bug).
        """
        ...


class AppendSignal:
    """Wakes the subscribers of a store when events are appended through it, in this process.

    A store that has one exposes it as ``store.appended``; subscriptions then
    wait for it instead of polling often (they still poll, slowly, for
    writers in other processes). Take ``version`` before reading, and
    :meth:`wait` returns at once if an append landed since.

    >>> import anyio
    >>> async def main() -> None:
    ...     signal = AppendSignal()
    ...     seen = signal.version
    ...     signal.notify()  # an append landed
    ...     await signal.wait(seen, timeout=10)  # returns at once
    ...     print(signal.version)
    >>> anyio.run(main)
    1
    """

    __slots__ = ("_event", "version")

    def __init__(self) -> None:
        self.version = 0
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """Tell the waiters (call it on the event loop, after the append committed)."""
        self.version += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, version: int, timeout: float) -> None:  # noqa: ASYNC109 (a bounded wait by design)
        """Return when ``version`` is out of date (an append landed since) or after ``timeout`` seconds."""
        if self.version != version:
            await anyio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._event.wait()


@runtime_checkable
class NotifyingStore(Protocol):
    """A store that tells subscribers in this process about appends (see :class:`AppendSignal`).

    >>> from streamsrc.store.memory import MemoryStore
    >>> isinstance(MemoryStore(), NotifyingStore), MemoryStore().appended.version
    (True, 0)
    """

    @property
    def appended(self) -> AppendSignal:
        """The signal notified after every append through this store."""
        ...


@runtime_checkable
class ImportingStore(Protocol):
    """A store that takes events recorded elsewhere and keeps what they were (migrations, imports).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Opened", {})])
    ...     print(isinstance(target, ImportingStore))
    ...     print(await target.import_events("s", await source.read("s").to_list()))
    >>> anyio.run(main)
    True
    <Success: AppendResult(stream='s', last_seq=1, positions=(1,))>
    """

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append already-recorded events of ``stream``, keeping their id, type, data, metadata and time.

        The events' ``seq`` must continue the stream: the first is the
        stream's last seq + 1 and they are consecutive (that is the expected
        version, checked atomically as ``append`` checks it:
        ``WrongExpectedVersion`` otherwise). Into a stream with no events the
        first may have any seq from 1 (a stream truncated at the source: see
        ``RetiringStore.truncate_before``); the stream then starts there. A
        stream deleted here refuses imports (``StreamDeleted``). Every event's ``stream`` must be
        ``stream`` (``InvalidEvent`` otherwise). Positions are this store's
        own, given in its commit order. Idempotent like ``append``: the same
        ids already stored at those seqs give ``Success`` with the stored
        positions and write nothing. The same size and validity checks as
        ``append`` apply; a batch is atomic.
        """
        ...


@runtime_checkable
class BatchLimitedStore(Protocol):
    """A store that takes at most ``max_batch`` events in one append (DynamoDB: one transaction).

    Writers that split work into batches (``migrate.copy``, say) stay under it.

    >>> from streamsrc.store.memory import MemoryStore
    >>> isinstance(MemoryStore(), BatchLimitedStore)
    False
    """

    @property
    def max_batch(self) -> int:
        """The most events one append or import may carry."""
        ...


class StoreTransaction(Protocol):
    """Work queued in one transaction of a :class:`TransactionalStore`: it commits whole when the
    ``async with`` block ends, or not at all if anything in it fails.

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.sqlite import SqliteStore
    >>> async def main(folder: str) -> None:
    ...     async with SqliteStore(os.path.join(folder, "events.db")) as store:
    ...         async with store.transaction() as tx:
    ...             tx.append("order-1", [EventData("OrderPlaced", {})])
    ...             tx.save_checkpoint("orders-view", 1)
    ...         print(await store.load_checkpoint("orders-view"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    1
    """

    def append(self, stream: str, events: Sequence[EventData], expected: Expected = ...) -> None:
        """Queue an append; if it fails, the whole transaction is rolled back."""
        ...

    def import_events(self, stream: str, events: Sequence[RecordedEvent]) -> None:
        """Queue an import; if it fails, the whole transaction is rolled back."""
        ...

    def save_checkpoint(self, name: str, position: int) -> None:
        """Queue a checkpoint write."""
        ...

    def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Queue a snapshot write."""
        ...


@runtime_checkable
class TransactionalStore(Protocol):
    """A store whose appends, imports, snapshots and checkpoints can commit together (SQLite's).

    >>> from streamsrc.store.memory import MemoryStore
    >>> isinstance(MemoryStore(), TransactionalStore)
    False
    """

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """One transaction: ``async with store.transaction() as tx: tx.append(...)``.

        :raises StoreUnavailable: at the block's end, if the commit failed (nothing was written).
        """
        ...


@runtime_checkable
class Store(EventStore, SnapshotStore, CheckpointStore, ImportingStore, NotifyingStore, Protocol):
    """What ``open_store`` gives: an event store that also keeps snapshots and checkpoints, imports
    recorded events, tells subscribers in this process of appends, and closes.

    Every store that ships is one, and so is every subclass of
    :class:`~streamsrc.store.base.StoreBase`.

    The error rule, for every method: ``append`` and ``import_events`` return
    ``Failure`` with a :class:`~streamsrc.errors.StoreError` for every
    expected failure; every other method raises only ``StoreError``
    subclasses (``StoreUnavailable``, ``InvalidEvent``, ``CorruptEvent``), never
    a driver's exception; bugs (a bad ``expected``) raise ``TypeError``, and
    cancellation goes through. ``aclose`` is shielded from cancellation.

    >>> from streamsrc.store.memory import MemoryStore
    >>> isinstance(MemoryStore(), Store)
    True
    """

    async def aclose(self) -> None:
        """Release connections and threads; every later call refuses with ``StoreUnavailable``.

        :raises: nothing; shielded from cancellation.
        """
        ...


class EventFilter(NamedTuple):
    """Which events a filtered ``read_all`` keeps (``None``: no condition).

    >>> keep = EventFilter.of(["UserRegistered"], stream_prefix="user-")
    >>> keep.keeps("user-1", "UserRegistered"), keep.keeps("group-1", "UserRegistered")
    (True, False)
    >>> EventFilter().everything
    True
    """

    types: frozenset[str] | None = None
    stream_prefix: str | None = None

    @classmethod
    def of(cls, types: Collection[str] | None, stream_prefix: str | None) -> EventFilter:
        """A checked filter; ``types`` may be any collection of names, but not one string."""
        if isinstance(types, str):
            raise TypeError("types must be a collection of event types, not one string")
        return cls(None if types is None else frozenset(types), stream_prefix or None)

    @property
    def everything(self) -> bool:
        """Whether the filter keeps every event."""
        return self.types is None and self.stream_prefix is None

    def keeps(self, stream: str, type: str) -> bool:
        """Whether an event of ``type`` in ``stream`` passes."""
        if self.types is not None and type not in self.types:
            return False
        return self.stream_prefix is None or stream.startswith(self.stream_prefix)


def now_us() -> int:
    """The time now, in microseconds since the epoch (how stores keep times).

    >>> now_us() > 1_700_000_000_000_000
    True
    """
    return time.time_ns() // 1000


def to_us(moment: datetime) -> int:
    """``moment`` (aware) in microseconds since the epoch, exactly."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def paged_reads(
    fetch: Callable[[int, int], Awaitable[list[RecordedEvent]]],
    page_size: int,
    start: int,
    limit: int | None,
    key: Callable[[RecordedEvent], int],
) -> Stream[RecordedEvent]:
    """A lazily paged read: ``fetch(bound, n)`` gives up to ``n`` events after ``bound``.

    The next page starts after ``key`` of the last event; ``limit`` caps the
    events returned. A short page is the end (for now): the read stops
    without another trip to the database.
    """

    async def step(
        state: tuple[int, int | None],
    ) -> tuple[list[RecordedEvent], tuple[int, int | None]] | None:
        bound, left = state
        n = page_size if left is None else min(page_size, left)
        if n <= 0:
            return None
        rows = await fetch(bound, n)
        if not rows:
            return None
        rest = 0 if len(rows) < n else None if left is None else left - len(rows)
        return rows, (key(rows[-1]), rest)

    return Stream.unfold_chunk_eval((start, limit), step)


class EncodedEvent(NamedTuple):
    """An event checked and encoded for storage.

    >>> from streamsrc.events import EventData
    >>> [added] = encode_batch("cart-1", [EventData("Added", {"sku": "a"})], 1000).unwrap()
    >>> added.type, added.data, added.metadata
    ('Added', '{"sku":"a"}', None)
    """

    id: uuid.UUID
    type: str
    data: str
    metadata: str | None


def encode_batch(
    stream: str, events: Sequence[EventData], max_size: int
) -> Result[list[EncodedEvent], StoreError]:
    """Validate the stream name and every event, and encode them; ``Failure`` at the first problem."""
    out: list[EncodedEvent] = []
    try:
        _check_name(stream, "stream name")
        for event in events:
            if type(event) is not EventData and not isinstance(event, EventData):
                raise InvalidEvent(f"expected EventData, got {type(event).__name__}")
            if type(event.id) is not uuid.UUID and not isinstance(event.id, uuid.UUID):
                raise InvalidEvent(f"event id must be a UUID, got {event.id!r}")
            _check_name(event.type, "event type")
            if event.type == TOMBSTONE_TYPE:
                raise InvalidEvent(f"event type {TOMBSTONE_TYPE!r} is reserved: delete_stream writes it")
            data, size = encode_json_sized(event.data)
            metadata = None
            if event.metadata is not None:
                if not isinstance(event.metadata, dict):
                    raise InvalidEvent("event metadata must be a dict or None")
                metadata, meta_size = encode_json_sized(event.metadata)
                size += meta_size
            if size > max_size:
                raise EventTooLarge(event.id, size, max_size)
            out.append(EncodedEvent(event.id, event.type, data, metadata))
        if len(out) > 1 and len({e.id for e in out}) < len(out):
            raise InvalidEvent("an event id appears twice in one batch")
    except InvalidEvent as exc:
        return Failure(exc)
    return Success(out)


def encode_recorded(
    stream: str, events: Sequence[RecordedEvent], max_size: int
) -> Result[tuple[list[EncodedEvent], list[datetime]], StoreError]:
    """Check recorded events for an import into ``stream`` and encode them as ``append`` does.

    Every event must be a ``RecordedEvent`` of ``stream`` with a time that
    knows its timezone, and the seqs must count up by one from a first seq
    of at least 1; names, JSON, sizes and ids are checked as
    :func:`encode_batch` checks them. Returns the encoded events and their
    times, or ``Failure`` with an ``InvalidEvent`` at the first problem.
    Every store's ``import_events`` starts here (or at
    :func:`encode_recorded_stored`).

    >>> from streamsrc.events import new_event_id, stored_event
    >>> opened = stored_event("s", 1, 1, "Opened", "{}", None, new_event_id(), 0)
    >>> batch, times = encode_recorded("s", [opened], max_size=1000).unwrap()
    >>> batch[0].type, times
    ('Opened', [datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)])
    >>> encode_recorded("t", [opened], max_size=1000)
    <Failure: an event of stream 's' cannot be imported into 't'>
    """
    return encode_recorded_stored(stream, events, max_size).map(
        lambda encoded: (encoded[0], [_as_datetime(t) for t in encoded[1]])
    )


def encode_recorded_stored(
    stream: str, events: Sequence[RecordedEvent], max_size: int
) -> Result[tuple[list[EncodedEvent], list[int | datetime]], StoreError]:
    """:func:`encode_recorded`, with each time as the event holds it: microseconds since the epoch
    (UTC) for an event in a store's stored form, else an aware ``datetime``.

    An event in its stored form (as a store's read gives it) keeps the JSON
    text the store holds, which that store checked when it was written: it
    is measured, not decoded and encoded again. Other events (built with
    their fields decoded) are checked and encoded in full.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> opened = stored_event("s", 1, 1, "Opened", "{}", None, new_event_id(), 0)
    >>> batch, times = encode_recorded_stored("s", [opened], max_size=1000).unwrap()
    >>> batch[0].data, times
    ('{}', [0])
    """
    out: list[EncodedEvent] = []
    times: list[int | datetime] = []
    try:
        _check_name(stream, "stream name")
        first = events[0].seq if events and isinstance(events[0], RecordedEvent) else 1
        for k, event in enumerate(events):
            if not isinstance(event, RecordedEvent):
                raise InvalidEvent(f"expected RecordedEvent, got {type(event).__name__}")
            if event.stream != stream:
                raise InvalidEvent(f"an event of stream {event.stream!r} cannot be imported into {stream!r}")
            seq = event.seq
            if type(seq) is not int or seq != first + k or seq < 1:
                raise InvalidEvent(
                    f"imported seqs must be consecutive from 1 or more: got {seq!r} at index {k} "
                    f"of a batch starting at {first!r}"
                )
            moment = _stored(event, 7)
            if type(moment) is not int:
                moment = event.time
                if not isinstance(moment, datetime) or moment.utcoffset() is None:
                    raise InvalidEvent(f"event {event.id} has no timezone-aware time: {moment!r}")
            times.append(moment)
            out.append(_encode_one(event, max_size))
            if event.type == TOMBSTONE_TYPE and k != len(events) - 1:
                raise InvalidEvent(f"stream {stream!r} has events after its tombstone (#{seq})")
        if len(out) > 1 and len({e.id for e in out}) < len(out):
            raise InvalidEvent("an event id appears twice in one batch")
    except InvalidEvent as exc:
        return Failure(exc)
    return Success((out, times))


def _encode_one(event: RecordedEvent, max_size: int) -> EncodedEvent:
    """One event checked and encoded, from its stored JSON text when it has it; raises ``InvalidEvent``."""
    data, metadata = _stored(event, 4), _stored(event, 5)
    if type(data) is str and (metadata is None or type(metadata) is str):
        _check_name(event.type, "event type")
        size = len(data.encode("utf-8")) + (0 if metadata is None else len(metadata.encode("utf-8")))
        event_id = event.id
        if size <= max_size and type(event_id) is uuid.UUID:
            return EncodedEvent(event_id, event.type, data, metadata)
        # over the limit as stored (another store's spacing?) or odd: measured as append measures it
    tombstone = event.type == TOMBSTONE_TYPE  # reserved for append, carried over by imports
    try:
        fields = EventData("T" if tombstone else event.type, event.data, event.metadata, event.id)
    except (ValueError, TypeError) as exc:  # stored fields that do not decode
        raise InvalidEvent(f"cannot import event {_stored(event, 6)!r}: {exc!r}") from None
    encoded = encode_batch(event.stream, [fields], max_size)
    if isinstance(encoded, Failure):
        raise encoded.failure()
    one = encoded.unwrap()[0]
    return one._replace(type=TOMBSTONE_TYPE) if tombstone else one


def _as_datetime(moment: int | datetime) -> datetime:
    """A stored time (microseconds since the epoch, or a datetime) as an aware datetime, exactly."""
    return moment if isinstance(moment, datetime) else _EPOCH + timedelta(microseconds=moment)


_stored: Callable[[RecordedEvent, int], Any] = tuple.__getitem__  # a field as the store handed it over


def _check_name(name: str, what: str) -> None:
    """Raise ``InvalidEvent`` for a bad name; remember good ones (names repeat a lot)."""
    if type(name) is str and name in _GOOD_NAMES:
        return
    checked = validate_stream_name(name, what)
    if isinstance(checked, Failure):
        raise checked.failure()
    if len(_GOOD_NAMES) >= 4096:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)


_GOOD_NAMES: set[str] = set()


def check_key(name: str, what: str) -> None:
    """Raise ``InvalidEvent`` unless ``name`` is a usable name: the rules of a stream name
    (:func:`~streamsrc.events.validate_stream_name`), which snapshot keys and checkpoint names
    follow too. Every store's ``save_snapshot`` and ``save_checkpoint`` start here.

    >>> check_key("emails", "checkpoint name")
    >>> check_key("a\\x00b", "checkpoint name")
    Traceback (most recent call last):
    ...
    streamsrc.errors.InvalidEvent: checkpoint name contains a control character: 'a\\x00b'
    """
    _check_name(name, what)


def can_be_stored(name: object) -> bool:
    """Whether ``name`` could name a stream, snapshot or checkpoint: reads of any other name
    (empty, too long, control characters, lone surrogates) find nothing, without asking the database.

    >>> can_be_stored("order-1"), can_be_stored(""), can_be_stored("\\ud800")
    (True, False, False)
    """
    if type(name) is str and name in _GOOD_NAMES:
        return True
    try:
        _check_name(name, "name")  # type: ignore[arg-type]
    except InvalidEvent:
        return False
    return True


def check_expected(stream: str, expected: Expected, current: int) -> WrongExpectedVersion | None:
    """The ``WrongExpectedVersion`` for a stream at ``current`` (its last seq), or ``None`` if fine.

    >>> check_expected("cart-1", STREAM_EXISTS, 3) is None, check_expected("cart-1", 2, 3)
    (True, WrongExpectedVersion("stream 'cart-1' is at version 3, expected 2"))
    """
    if expected is ANY:
        return None
    if expected is STREAM_EXISTS:
        ok = current > 0
    elif expected is NO_STREAM:
        ok = current == 0
    elif isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        ok = current == expected
    else:
        raise TypeError(f"expected must be an int >= 0, ANY, NO_STREAM or STREAM_EXISTS: {expected!r}")
    return None if ok else WrongExpectedVersion(stream, expected, current)


def check_existing(
    stream: str,
    ids: Sequence[uuid.UUID],
    expected: Expected,
    found: Mapping[uuid.UUID, tuple[str, int, int]],
) -> Result[AppendResult, StoreError] | None:
    """Decide an append whose ids are (partly) stored already; ``None`` if none is.

    ``found`` maps each stored id of the batch to its ``(stream, seq,
    position)``. If the whole batch is stored, in order, in this stream, where
    ``expected`` says it goes, the append is a retry: ``Success`` with the
    stored positions. Otherwise any stored id is a ``DuplicateEvent``.
    """
    if not found:
        return None
    first = found.get(ids[0])
    if first is not None and first[0] == stream:
        start = first[1]
        placed = all(found.get(i, ("", -1, 0))[:2] == (stream, start + k) for k, i in enumerate(ids))
        if expected is NO_STREAM:
            expected = 0
        where = expected is ANY or expected is STREAM_EXISTS or start == expected + 1  # type: ignore[operator]
        if placed and where:
            positions = tuple(found[i][2] for i in ids)
            if 0 in positions:  # stored where positions are given later (not known yet): none
                return Success(AppendResult(stream, start + len(ids) - 1, (), len(ids)))
            return Success(AppendResult(stream, start + len(ids) - 1, positions))
    dup = next(i for i in ids if i in found)
    return Failure(DuplicateEvent(stream, dup))
