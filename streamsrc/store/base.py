"""The public base of every store backend: the contract written once, over a few primitives.

A backend subclasses :class:`StoreBase` and implements only what differs
between databases; everything the contract asks of every store is done here,
once: checking and encoding events, the expected-version and idempotency
decisions, paging, snapshot decoding, and the **error rule**.

The primitives (``async`` unless said; each may raise the backend's driver
errors, listed in ``driver_errors``):

========================  ==============================================================
``insert_batch``          write a checked batch at the end of a stream, atomically, if the
                          stream is at ``expected``: :class:`Written`, :class:`VersionConflict`,
                          :class:`IdsTaken` or :class:`StreamGone` (it ends with a tombstone)
``find_ids``              where events with these ids are stored (for idempotent retries)
``read_page``             one page of a stream or of the global log: a :class:`Page`
``last_position``         the highest global position written (0 if none)
``stream_names``          a page of stream names after a name, in sorted order
``write_snapshot``        upsert one snapshot row (state as JSON text)
``read_snapshot``         the latest snapshot row at or before a seq and a time
``write_checkpoint``      upsert one checkpoint
``read_checkpoint``       one checkpoint, or ``None``
``remove_before``         delete a stream's events below a seq, never its last: :class:`Truncated`
``list_checkpoints``      a page of saved checkpoints ``(name, position)`` after a name
``close``                 release connections and threads (called once, shielded)
========================  ==============================================================

The error rule (every store, every method)
------------------------------------------
* ``append``, ``import_events``, ``delete_stream`` and ``truncate_before``
  return ``Failure`` with a :class:`~streamsrc.errors.StoreError` for every
  expected failure — ``WrongExpectedVersion``, ``DuplicateEvent``,
  ``InvalidEvent``, ``EventTooLarge``, ``StreamDeleted``,
  ``InvalidTruncation``, ``StoreUnavailable`` — and raise only for bugs (a
  bad ``expected`` or ``seq``: ``TypeError``) and cancellation.
* Every other method raises only :class:`~streamsrc.errors.StoreError`
  subclasses (``StoreUnavailable`` when the database fails, ``InvalidEvent``
  for a name that cannot be stored, ``CorruptEvent`` for a damaged row),
  never a driver's exception; cancellation goes through unchanged.
* ``aclose`` is shielded from cancellation and releases everything even
  when the caller is cancelled; closing twice is harmless, and every
  operation on a closed store raises (or returns) ``StoreUnavailable``.

A complete backend written against this base alone is in
``docs/new-backend.md``; :class:`streamsrc.store.memory.MemoryStore` is the
reference.
"""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeAlias, TypeVar

import anyio
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

import streamsrc.telemetry as _telemetry
from streamsrc.errors import (
    CheckpointMoved,
    InvalidEvent,
    InvalidTruncation,
    StoreError,
    StoreUnavailable,
    StreamDeleted,
)
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json, new_event_id
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    TOMBSTONE_TYPE,
    AppendResult,
    AppendSignal,
    EncodedEvent,
    EventFilter,
    Expected,
    RetiringStore,
    Snapshot,
    _as_datetime,
    can_be_stored,
    check_existing,
    check_expected,
    check_key,
    encode_batch,
    encode_recorded_stored,
    now_us,
    to_us,
)
from streamsrc.stream import Stream

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_PAGE_SIZE",
    "MAX_SEQ",
    "TOMBSTONE_TYPE",
    "EncodedEvent",
    "EventAddress",
    "IdsTaken",
    "Inserted",
    "Page",
    "PageRequest",
    "RetiringStore",
    "StoreBase",
    "StoredSnapshot",
    "StreamGone",
    "Truncated",
    "VersionConflict",
    "Written",
    "check_expected",
    "now_us",
]

T = TypeVar("T")

if TYPE_CHECKING:  # the tenancy module builds on this one
    from streamsrc.tenancy import TenantStore

_log = logging.getLogger(__name__)


def _unavailable(exc: StoreUnavailable, operation: str, stream: str | None, at: object) -> None:
    """Log a ``StoreUnavailable`` an operation ends with (its message names no password)."""
    _log.warning(
        "%s failed: %s",
        operation,
        exc,
        extra={"operation": operation, "stream": stream, "seq": at, "error": type(exc).__name__},
    )


MAX_SEQ = 1 << 62
"""Above every seq and position: the bound of a backwards read from the end."""


class Written(NamedTuple):
    """``insert_batch`` wrote the batch: the stream's new last seq and the positions given.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> batch = [EncodedEvent(uuid.UUID(int=1), "Opened", "{}", None)]
    >>> anyio.run(MemoryStore().insert_batch, "cart-1", batch, 0, None)
    Written(last_seq=1, positions=(1,))
    """

    last_seq: int
    positions: tuple[int, ...]


class VersionConflict(NamedTuple):
    """``insert_batch`` wrote nothing: the stream is at ``current``, not where the append expected.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> opened = EncodedEvent(uuid.UUID(int=1), "Opened", "{}", None)
    >>> closed = EncodedEvent(uuid.UUID(int=2), "Closed", "{}", None)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.insert_batch("cart-1", [opened], 0, None)
    ...     print(await store.insert_batch("cart-1", [closed], 0, None))
    >>> anyio.run(main)
    VersionConflict(current=1, ids_checked=False)

    ``ids_checked``: the backend found none of the batch's ids stored, in the same
    round trip (so the base need not ask ``find_ids`` whether this is a retry).
    """

    current: int
    ids_checked: bool = False


class IdsTaken(NamedTuple):
    """``insert_batch`` wrote nothing: an event id of the batch is stored already.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     batch = [EncodedEvent(uuid.UUID(int=1), "Opened", "{}", None)]
    ...     await store.insert_batch("cart-1", batch, 0, None)
    ...     taken = await store.insert_batch("cart-2", batch, 0, None)
    ...     print(type(taken).__name__, list(taken.found.values()))
    >>> anyio.run(main)
    IdsTaken [EventAddress(stream='cart-1', seq=1, position=1)]

    ``found`` may carry where the batch's stored ids are (a backend that
    learns it in the same round trip); left empty, the base asks ``find_ids``.
    """

    found: Mapping[uuid.UUID, EventAddress] = {}


class StreamGone(NamedTuple):
    """``insert_batch`` wrote nothing: the stream's last event is a tombstone (of type
    :data:`~streamsrc.store._contract.TOMBSTONE_TYPE`, at seq ``current``): it was deleted.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> opened = EncodedEvent(uuid.UUID(int=1), "Opened", "{}", None)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.delete_stream("cart-1")
    ...     print(await store.insert_batch("cart-1", [opened], ANY, None))
    >>> anyio.run(main)
    StreamGone(current=1, ids_checked=False)

    ``ids_checked`` as for :class:`VersionConflict`: the backend found none of the batch's ids
    stored (a retry of a batch written before the delete is still a retry).
    """

    current: int
    ids_checked: bool = False


class Truncated(NamedTuple):
    """What ``remove_before`` did: ``removed`` events deleted; ``version``, the stream's last seq
    (0: no such stream) read in the same transaction. Nothing was removed if the seq asked for was
    above ``version``.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> batch = [EncodedEvent(uuid.UUID(int=n), "Added", "{}", None) for n in range(1, 4)]
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.insert_batch("cart-1", batch, 0, None)
    ...     print(await store.remove_before("cart-1", 3), await store.remove_before("cart-1", 9))
    >>> anyio.run(main)
    Truncated(removed=2, version=3) Truncated(removed=0, version=3)
    """

    removed: int
    version: int


Inserted: TypeAlias = Written | VersionConflict | IdsTaken | StreamGone
"""What ``insert_batch`` answers."""


class EventAddress(NamedTuple):
    """Where a stored event is: its stream, seq and global position.

    >>> EventAddress("cart-1", 3, 17).position
    17
    """

    stream: str
    seq: int
    position: int


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page to read.

    >>> last = PageRequest("cart-1", bound=MAX_SEQ, size=1, backwards=True)  # a stream's last event
    >>> last.filter.everything, last.bound == MAX_SEQ
    (True, True)

    ``stream`` is a stream's name, or ``None`` for the global log. Forwards,
    the page holds events with a key (seq in a stream, position in the log)
    above ``bound``; ``backwards`` (streams only), below it, last first.
    ``filter`` applies to the global log only.
    """

    stream: str | None
    bound: int
    size: int
    backwards: bool = False
    filter: EventFilter = EventFilter()  # noqa: RUF009 (an immutable tuple)


class Page(NamedTuple):
    """A page read: its events, and the key the next page starts after (``None``: the end).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("cart-1", [EventData("Added", {"n": n}) for n in range(3)])
    ...     page = await store.read_page(PageRequest(None, bound=0, size=2))
    ...     print([e.position for e in page.events], page.resume)
    ...     page = await store.read_page(PageRequest(None, bound=page.resume, size=2))
    ...     print([e.position for e in page.events], page.resume)
    >>> anyio.run(main)
    [1, 2] 2
    [3] None

    A filtering backend may have looked past the last event it returns:
    ``resume`` says how far it scanned, so the next page does not scan it again.
    """

    events: Sequence[RecordedEvent]
    resume: int | None

    @classmethod
    def of(cls, events: Sequence[RecordedEvent], request: PageRequest) -> Page:
        """The page of a backend that reads exactly the events asked for: a short page is the end."""
        if len(events) < request.size:
            return cls(events, None)
        last = events[-1]
        return cls(events, last.seq if request.stream is not None else last.position)


class StoredSnapshot(NamedTuple):
    """A snapshot row as a backend keeps it: its seq, the state as JSON text, the time in microseconds.

    >>> StoredSnapshot(seq=10, state='{"balance": 42}', time_us=0).seq
    10
    """

    seq: int
    state: str
    time_us: int


class StoreBase(ABC):
    """The contract's methods (``EventStore``, ``SnapshotStore``, ``CheckpointStore``,
    ``ImportingStore``, ``NotifyingStore``) over a backend's primitives; see the module docs.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     async with MemoryStore() as store:  # every StoreBase is an async context manager
    ...         print(await store.append("cart-1", [EventData("Opened", {})], expected=0))
    ...         print(await store.append("cart-1", [EventData("Opened", {})], expected=0))
    >>> anyio.run(main)
    <Success: AppendResult(stream='cart-1', last_seq=1, positions=(1,))>
    <Failure: stream 'cart-1' is at version 1, expected 0>
    """

    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """The driver's exceptions: raised by a primitive, they become ``StoreUnavailable``."""

    def __init__(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        self.page_size = page_size
        self.max_event_size = max_event_size
        self.appended = AppendSignal()
        """Notified after every append through this store that wrote events."""
        self._closed = False

    # -- the primitives a backend implements

    @abstractmethod
    async def insert_batch(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        """Write ``batch`` at the end of ``stream`` if it is at ``expected``, atomically.

        ``times`` are the events' own times in microseconds since the epoch
        (an import), or ``None`` for now. The batch is never empty.

        Two rules of the retiring contract, decided in the same atomic step as the version:

        * a stream whose last event has type ``TOMBSTONE_TYPE`` takes nothing: answer
          :class:`StreamGone` (whatever ``expected`` is; ids may be checked first, as for a
          conflict);
        * an import (``times`` given, ``expected`` an int ``e``) into a stream with no events
          writes the batch at seqs ``e + 1, e + 2, ...`` (its source was truncated), as if the
          stream were at ``e``.
        """

    @abstractmethod
    async def find_ids(self, ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, EventAddress]:
        """Where the stored events among ``ids`` are."""

    @abstractmethod
    async def read_page(self, request: PageRequest) -> Page:
        """One page of a stream or of the global log (see :class:`PageRequest`)."""

    @abstractmethod
    async def last_position(self) -> int:
        """The highest global position written so far (0 for an empty store)."""

    @abstractmethod
    async def stream_names(self, after: str, size: int) -> Sequence[str]:
        """Up to ``size`` stream names above ``after``, in sorted order."""

    @abstractmethod
    async def write_snapshot(self, key: str, schema_version: int, seq: int, state: str, time_us: int) -> None:
        """Save a snapshot row (replacing one of the same key, schema version and seq)."""

    @abstractmethod
    async def read_snapshot(
        self, key: str, schema_version: int, at_seq: int, at_time_us: int
    ) -> StoredSnapshot | None:
        """The snapshot of ``key`` in ``schema_version`` with the highest seq at or below ``at_seq``
        among those saved at or before ``at_time_us``."""

    @abstractmethod
    async def write_checkpoint(self, name: str, position: int, time_us: int) -> None:
        """Save ``position`` as checkpoint ``name``."""

    @abstractmethod
    async def read_checkpoint(self, name: str) -> int | None:
        """Checkpoint ``name``, or ``None`` if none was saved."""

    async def swap_checkpoint(self, name: str, expected: int, position: int, time_us: int) -> bool:
        """Save ``position`` as checkpoint ``name`` only if it is at ``expected`` (0: none saved),
        atomically; whether it was saved. A backend without it takes no compare-and-set checkpoints."""
        raise NotImplementedError(
            f"{type(self).__name__} has no compare-and-set checkpoints (swap_checkpoint)"
        )

    async def list_checkpoints(self, after: str, size: int) -> Sequence[tuple[str, int]]:
        """Up to ``size`` saved checkpoints ``(name, position)`` that come after checkpoint ``after``
        (``""``: from the first) in the backend's listing order (by name, or the order of a table
        scan), each once; an empty page when there are no more. A backend without it lists none."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its checkpoints (list_checkpoints)")

    async def remove_before(self, stream: str, seq: int) -> Truncated:
        """In one transaction: read the version ``v`` of ``stream`` (its last seq, 0 if none) and,
        if ``seq <= v``, delete its events with a seq below ``seq`` (never the last one, then);
        answer :class:`Truncated`. A backend without it truncates nothing."""
        raise NotImplementedError(f"{type(self).__name__} cannot truncate streams (remove_before)")

    async def close(self) -> None:  # noqa: B027 (a backend with nothing to release needs no override)
        """Release the backend's resources; called once, shielded from cancellation."""

    # -- the error rule

    def describe(self, exc: BaseException) -> str:
        """How a driver error is told in a ``StoreUnavailable`` message (never with a password)."""
        return f"{type(exc).__name__}: {exc}"

    def unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        """The ``StoreUnavailable`` a failed operation ends with."""
        return StoreUnavailable(f"{what} on {self!r} failed: {self.describe(exc)}")

    async def guard(self, what: str, call: Awaitable[T]) -> T:
        """Await a primitive; a driver error becomes ``StoreUnavailable``, a closed store says so."""
        if self._closed:
            if hasattr(call, "close"):
                call.close()  # never awaited: do not let it warn
            raise StoreUnavailable(f"{self!r} is closed")
        try:
            return await call
        except StoreError:
            raise
        except self.driver_errors as exc:
            raise self.unavailable(what, exc) from exc

    # -- life

    async def aclose(self) -> None:
        """Close the store: shielded, so a cancelled caller still releases everything.

        A driver error while closing is logged, not raised: the store is closed either way (every
        later call refuses), and the caller has nothing left to do about it.
        """
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                await self.close()
            except self.driver_errors as exc:
                _log.warning("closing %r: %s", self, self.describe(exc))

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def tenant(self, name: str) -> TenantStore:
        """The view of this store that tenant ``name`` sees: its own streams, snapshots and checkpoints
        only (see :mod:`streamsrc.tenancy`). Closing the view leaves this store open.

        >>> from streamsrc.store.memory import MemoryStore
        >>> MemoryStore().tenant("acme").prefix
        '@acme/'

        :raises InvalidTenant: ``name`` is not a valid tenant name.
        """
        from streamsrc.tenancy import TenantStore  # at run time, here: no import cycle

        return TenantStore(self, name, owns=False)

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append ``events`` to ``stream`` atomically if it is at ``expected``.

        :returns: ``Success`` with the new last seq and the positions, or
            ``Failure`` with ``WrongExpectedVersion``, ``DuplicateEvent``,
            ``InvalidEvent``, ``EventTooLarge``, ``StreamDeleted`` or ``StoreUnavailable``.
        :raises TypeError: ``expected`` is not an int >= 0 or an ``ExpectedVersion`` (a bug).
        """
        if type(expected) is not int or expected < 0:  # a plain version is fine (the common case)
            check_expected(stream, expected, 0)  # a bad ``expected`` is a bug: raise before anything
        encoded = encode_batch(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        if _telemetry.hooks is not None:  # OpenTelemetry on: the same write, in a span
            return await _telemetry.hooks.append(
                self, stream, len(events), self._write(stream, encoded.unwrap(), expected, None)
            )
        return await self._write(stream, encoded.unwrap(), expected, None)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append events recorded elsewhere, keeping their id and time (see ``ImportingStore``).

        :returns: as :meth:`append`; the first event's seq minus one is the expected version.
        """
        encoded = encode_recorded_stored(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        write = self._write(stream, batch, expected, [t if type(t) is int else to_us(t) for t in times])  # type: ignore[arg-type]
        if _telemetry.hooks is not None:  # OpenTelemetry on: the same write, in a span
            return await _telemetry.hooks.append(self, stream, len(events), write)
        return await write

    async def _write(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[int] | None
    ) -> Result[AppendResult, StoreError]:
        if not batch:  # nothing to write: only the expected version to check
            try:
                current = await self._current(stream)
            except StoreError as exc:
                return Failure(exc)
            wrong = check_expected(stream, expected, current)
            return Failure(wrong) if wrong else Success(AppendResult(stream, current, ()))
        try:
            outcome = await self.guard(
                f"append to {stream!r}", self.insert_batch(stream, batch, expected, times)
            )
            if type(outcome) is Written:
                self.appended.notify()
                return Success(AppendResult(stream, outcome.last_seq, outcome.positions))
            ids = [e.id for e in batch]
            if isinstance(outcome, IdsTaken):
                found = outcome.found or await self.guard(f"append to {stream!r}", self.find_ids(ids))
                decided = check_existing(stream, ids, expected, found)
                if decided is None:  # the id went away again? Only a bug could do that
                    raise StoreUnavailable(f"append to {stream!r}: an id was taken, then not found")
                return decided
            assert not isinstance(outcome, Written)
            if not outcome.ids_checked:
                found = await self.guard(f"append to {stream!r}", self.find_ids(ids))
                retried = check_existing(stream, ids, expected, found)
                if retried is not None:
                    return retried
            if type(outcome) is StreamGone:
                return Failure(StreamDeleted(stream, outcome.current))
            assert isinstance(outcome, VersionConflict)
            wrong = check_expected(stream, expected, outcome.current)
            if wrong is None:  # a backend said conflict where there is none: tell it as unavailable
                raise StoreUnavailable(f"append to {stream!r}: a conflict at version {outcome.current}")
            return Failure(wrong)
        except anyio.get_cancelled_exc_class():
            self.appended.notify()  # it may have committed before the cancellation took effect
            raise
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable):
                _unavailable(exc, "append", stream, expected)
            return Failure(exc)

    async def _current(self, stream: str) -> int:
        """The stream's version; raises ``StreamDeleted`` if it ends with a tombstone."""
        if not can_be_stored(stream):
            return 0
        page = await self.guard("read", self.read_page(PageRequest(stream, MAX_SEQ, 1, backwards=True)))
        if not page.events:
            return 0
        last = page.events[0]
        if last.type == TOMBSTONE_TYPE:
            raise StreamDeleted(stream, last.seq)
        return last.seq

    # -- retiring streams

    async def delete_stream(self, stream: str, expected: Expected = ANY) -> Result[AppendResult, StoreError]:
        """Delete ``stream`` softly: append its tombstone (type ``TOMBSTONE_TYPE``) if it is at
        ``expected``; from then on every append to it is refused (see ``RetiringStore``).

        >>> import anyio
        >>> from streamsrc.store.memory import MemoryStore
        >>> async def main() -> None:
        ...     store = MemoryStore()
        ...     await store.append("cart-1", [EventData("Opened", {})])
        ...     print(await store.delete_stream("cart-1", expected=1))
        ...     print(await store.delete_stream("cart-1"))
        >>> anyio.run(main)
        <Success: AppendResult(stream='cart-1', last_seq=2, positions=(2,))>
        <Failure: stream 'cart-1' is deleted (its tombstone is #2): nothing can be appended to it>

        :returns: the tombstone's ``AppendResult``, or ``Failure`` with ``StreamDeleted``,
            ``WrongExpectedVersion``, ``InvalidEvent`` or ``StoreUnavailable``.
        :raises TypeError: ``expected`` is not an int >= 0 or an ``ExpectedVersion`` (a bug).
        """
        if type(expected) is not int or expected < 0:
            check_expected(stream, expected, 0)  # a bad ``expected`` is a bug: raise before anything
        try:
            check_key(stream, "stream name")
        except InvalidEvent as exc:
            return Failure(exc)
        tombstone = EncodedEvent(new_event_id(), TOMBSTONE_TYPE, "{}", None)
        return await self._write(stream, [tombstone], expected, None)

    async def truncate_before(self, stream: str, seq: int) -> Result[int, StoreError]:
        """Remove the events of ``stream`` below ``seq`` (1 to the stream's version: the last event
        always stays), in one transaction; how many were removed (see ``RetiringStore``).

        >>> import anyio
        >>> from streamsrc.store.memory import MemoryStore
        >>> async def main() -> None:
        ...     store = MemoryStore()
        ...     await store.append("cart-1", [EventData("Added", {"n": n}) for n in range(4)])
        ...     print(await store.truncate_before("cart-1", 3))
        ...     print([e.seq for e in await store.read("cart-1").to_list()])
        ...     print(await store.truncate_before("cart-1", 0))
        >>> anyio.run(main)
        <Success: 2>
        [3, 4]
        <Failure: cannot truncate 'cart-1' before #0: its version is 4 (seq: 1 to 4)>

        :returns: ``Success(count)``, or ``Failure`` with ``InvalidTruncation``, ``InvalidEvent`` or
            ``StoreUnavailable``.
        :raises TypeError: ``seq`` is not an int (a bug).
        """
        if type(seq) is not int:
            raise TypeError(f"seq must be an int, not {type(seq).__name__}: {seq!r}")
        try:
            check_key(stream, "stream name")
            if seq < 1:
                version = await self._version(stream)
                return Failure(InvalidTruncation(stream, seq, version))
            outcome = await self.guard(f"truncate {stream!r}", self.remove_before(stream, seq))
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable):
                _unavailable(exc, "truncate", stream, seq)
            return Failure(exc)
        if seq > outcome.version:
            return Failure(InvalidTruncation(stream, seq, outcome.version))
        return Success(outcome.removed)

    async def _version(self, stream: str) -> int:
        """The stream's last seq (its tombstone's, if deleted), 0 if it has none."""
        page = await self.guard("read", self.read_page(PageRequest(stream, MAX_SEQ, 1, backwards=True)))
        return page.events[0].seq if page.events else 0

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """The events of ``stream`` with ``seq > after`` (backwards: below ``after``, or from the
        last when ``after`` is 0), lazily paged.

        :raises StoreUnavailable: when running the stream, if the database fails.
        """
        if not can_be_stored(stream):  # no stream has such a name
            return Stream.empty()
        start = MAX_SEQ if backwards and after == 0 else after
        return self._paged(stream, start, limit, backwards, EventFilter())

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """Every event with ``position > after``, in global order, lazily paged; ``types`` and
        ``stream_prefix`` keep only some (see ``EventStore.read_all``).

        :raises StoreUnavailable: when running the stream, if the database fails.
        :raises TypeError: ``types`` is one string instead of a collection.
        """
        keep = EventFilter.of(types, stream_prefix)
        if keep.stream_prefix is not None and not can_be_stored(keep.stream_prefix):
            return Stream.empty()  # no stream has such a name
        if keep.types is not None:
            keep = keep._replace(types=frozenset(t for t in keep.types if can_be_stored(t)))
            if not keep.types:
                return Stream.empty()
        return self._paged(None, after, limit, False, keep)

    def _paged(
        self, stream: str | None, start: int, limit: int | None, backwards: bool, keep: EventFilter
    ) -> Stream[RecordedEvent]:
        page_size = self.page_size

        async def step(
            state: tuple[int, int | None],
        ) -> tuple[Sequence[RecordedEvent], tuple[int, int | None]] | None:
            bound, left = state
            while True:
                size = page_size if left is None else min(page_size, left)
                if size <= 0:
                    return None
                try:
                    request = PageRequest(stream, bound, size, backwards, keep)
                    read = self.guard("read", self.read_page(request))
                    hooks = _telemetry.hooks  # OpenTelemetry on: the same read, in a span
                    page = await (read if hooks is None else hooks.read_page(self, stream, read))
                except StoreUnavailable as exc:
                    _unavailable(exc, "read", stream, bound)
                    raise
                events = page.events
                if left is not None and len(events) > left:
                    events = events[:left]
                if page.resume is None:
                    return (events, (bound, 0)) if events else None
                bound = page.resume
                if events:
                    return events, (bound, None if left is None else left - len(events))

        return Stream.unfold_chunk_eval((start, limit), step)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """The last event of ``stream``, or ``Nothing``.

        :raises StoreUnavailable: if the database fails.
        """
        if not can_be_stored(stream):
            return Nothing
        page = await self.guard("latest", self.read_page(PageRequest(stream, MAX_SEQ, 1, backwards=True)))
        return Some(page.events[0]) if page.events else Nothing

    async def head(self) -> int:
        """The highest global position written so far (0 for an empty store).

        :raises StoreUnavailable: if the database fails.
        """
        return await self.guard("head", self.last_position())

    def streams(self) -> Stream[str]:
        """The names of all streams, in sorted order, lazily paged.

        :raises StoreUnavailable: when running the stream, if the database fails.
        """
        page_size = self.page_size

        async def step(after: str) -> tuple[Sequence[str], str] | None:
            names = await self.guard("streams", self.stream_names(after, page_size))
            return (names, names[-1]) if names else None

        return Stream.unfold_chunk_eval("", step)

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save ``state`` (a JSON value) as the state of ``key`` after event ``seq``.

        :raises InvalidEvent: ``key`` is not a usable name, or ``state`` is not JSON.
        :raises StoreUnavailable: if the database fails.
        """
        check_key(key, "snapshot key")
        text = encode_json(state)
        await self.guard("save_snapshot", self.write_snapshot(key, schema_version, seq, text, now_us()))

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The latest snapshot of ``key`` in ``schema_version`` (at or before ``at_seq``/``at_time``);
        a damaged one is ``Nothing`` (a snapshot is a shortcut: replay instead).

        :raises StoreUnavailable: if the database fails.
        """
        if not can_be_stored(key):
            return Nothing
        bound_seq = MAX_SEQ if at_seq is None else at_seq
        bound_time = MAX_SEQ if at_time is None else to_us(at_time)
        row = await self.guard(
            "load_snapshot", self.read_snapshot(key, schema_version, bound_seq, bound_time)
        )
        if row is None:
            return Nothing
        try:
            state, moment = decode_json(row.state), _as_datetime(row.time_us)
        except (ValueError, TypeError, RecursionError, OverflowError):
            return Nothing
        return Some(Snapshot(key, row.seq, state, schema_version, moment))

    # -- checkpoints

    async def load_checkpoint(self, name: str) -> int:
        """The saved position of ``name``, or 0 if none was saved.

        :raises StoreUnavailable: if the database fails.
        """
        if not can_be_stored(name):
            return 0
        value = await self.guard("load_checkpoint", self.read_checkpoint(name))
        return 0 if value is None else value

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        """Save ``position`` as the checkpoint of ``name``; with ``expected`` (0: none saved yet), only
        if the checkpoint is there (a compare-and-set, decided by the database).

        :raises CheckpointMoved: with ``expected``, the checkpoint was elsewhere (nothing saved).
        :raises InvalidEvent: ``name`` is not a usable name.
        :raises StoreUnavailable: if the database fails.
        """
        check_key(name, "checkpoint name")
        if expected is None:
            await self.guard("save_checkpoint", self.write_checkpoint(name, position, now_us()))
            return
        swapped = await self.guard(
            "save_checkpoint", self.swap_checkpoint(name, expected, position, now_us())
        )
        if not swapped:
            raise CheckpointMoved(name, expected, await self.load_checkpoint(name))

    def checkpoints(self) -> Stream[tuple[str, int]]:
        """Every saved checkpoint as ``(name, position)``, each once, lazily paged: by name on the
        SQL and memory stores, in a table scan's order on DynamoDB (sort them if order matters).

        >>> import anyio
        >>> from streamsrc.store.memory import MemoryStore
        >>> async def main() -> None:
        ...     async with MemoryStore() as store:
        ...         await store.save_checkpoint("orders-view", 12)
        ...         await store.save_checkpoint("emails", 7)
        ...         print(sorted(await store.checkpoints().to_list()))
        >>> anyio.run(main)
        [('emails', 7), ('orders-view', 12)]

        :raises StoreUnavailable: when running the stream, if the database fails.
        """
        page_size = self.page_size

        async def step(after: str) -> tuple[Sequence[tuple[str, int]], str] | None:
            found = await self.guard("checkpoints", self.list_checkpoints(after, page_size))
            return (found, found[-1][0]) if found else None

        return Stream.unfold_chunk_eval("", step)
