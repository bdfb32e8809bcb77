"""streamsrc's error types: one tree, one module.

Expected failures (a lost race, a rejected command, invalid input) travel as
values inside ``returns`` containers; these classes are those values. They are
exceptions too, so a terminal operation that raises can raise them unchanged.

::

    StreamsrcError
    ├── EffectFailed            an effect returned a returns Failure inside a stream
    ├── InvalidStoreURL         open_store() cannot use this URL
    ├── UnknownEventType        a codec met an event type it has no class for
    ├── Rejection               a decider refused a command (domain reasons); never retried
    ├── Conflict                a command lost every retry to concurrent writers
    ├── ProjectionFailed        a projection's handler failed on an event (the stop policy)
    ├── ProjectionOwnedElsewhere    another runner moved the checkpoint, or took the lease (fencing)
    └── StoreError              an append, read or write was refused or failed
        ├── WrongExpectedVersion    the stream is not at the version the caller expected
        ├── DuplicateEvent          an event id is already in the store elsewhere
        ├── InvalidEvent            an event (or stream name) cannot be stored as given
        │   └── EventTooLarge           its encoded size is over the store's limit
        ├── StoreUnavailable        the store could not be reached or failed mid-operation
        ├── CorruptEvent            a stored event (or snapshot) does not decode: the row was damaged
        │   ├── UndecodableEvent        its data does not fit the codec's class (also an InvalidEvent)
        │   └── UnknownTransform        its metadata names a payload transform this reader does not have
        ├── KeyUnavailable          the key an event was encrypted with is missing or not the right one
        ├── CheckpointMoved         a compare-and-set checkpoint save found the checkpoint elsewhere
        ├── StreamDeleted           the stream was deleted (it ends with a tombstone): no more appends
        ├── InvalidTruncation       ``truncate_before`` was given a seq outside the stream (nothing removed)
        ├── InvalidRetentionPolicy  a retention policy that limits nothing, or by a bad amount
        └── IncompatibleSchema      the store was made by a newer streamsrc, or is not a streamsrc store

Every append failure is one of the ``StoreError`` values, returned inside a
``Failure``; nothing of a failed batch is written.
"""

from __future__ import annotations

__all__ = [
    "CheckpointMoved",
    "Conflict",
    "CorruptEvent",
    "DuplicateEvent",
    "EffectFailed",
    "EventTooLarge",
    "IncompatibleSchema",
    "InvalidEvent",
    "InvalidRetentionPolicy",
    "InvalidStoreURL",
    "InvalidTruncation",
    "KeyUnavailable",
    "ProjectionFailed",
    "ProjectionOwnedElsewhere",
    "Rejection",
    "StoreError",
    "StoreUnavailable",
    "StreamDeleted",
    "StreamsrcError",
    "UndecodableEvent",
    "UnknownEventType",
    "UnknownTransform",
    "WrongExpectedVersion",
]


class StreamsrcError(Exception):
    """Base class of every error streamsrc raises or returns.

    >>> issubclass(WrongExpectedVersion, StreamsrcError), issubclass(Rejection, StreamsrcError)
    (True, True)
    """


class EffectFailed(StreamsrcError):
    """An effect in a stream returned a ``Failure``; the stream failed with it.

    ``failure`` holds the value inside the ``Failure`` unchanged, so a caller
    that gets this error back (from a terminal ``*_result`` variant, say) can
    match on the domain value.

    >>> import anyio
    >>> from returns.result import Failure
    >>> from streamsrc import Stream
    >>> async def check(x: int) -> Failure[str]:
    ...     return Failure(f"{x} is too big")
    >>> anyio.run(Stream.emit(7).eval_map(check).to_list)
    Traceback (most recent call last):
    ...
    streamsrc.errors.EffectFailed: 7 is too big
    """

    def __init__(self, failure: object) -> None:
        super().__init__(failure)
        self.failure = failure

    def __repr__(self) -> str:
        return f"EffectFailed({self.failure!r})"


class InvalidStoreURL(StreamsrcError):
    """``open_store`` cannot use this URL: unknown scheme, bad option, missing part.

    The message names the URL with any password replaced by ``***``.

    >>> import anyio
    >>> from streamsrc.store import open_store
    >>> async def main() -> None:
    ...     async with open_store("ftp://user:secret@host/events"):
    ...         pass
    >>> anyio.run(main)
    Traceback (most recent call last):
    ...
    streamsrc.errors.InvalidStoreURL: unknown store URL scheme 'ftp' in ftp://user:***@host/events (use ...)
    """


class UnknownEventType(StreamsrcError):
    """A codec was asked to decode an event type it has no class registered for.

    >>> from streamsrc.codec import Codec
    >>> from streamsrc.events import EventData
    >>> Codec().decode(EventData("OrderShipped", {}))
    Traceback (most recent call last):
    ...
    streamsrc.errors.UnknownEventType: no class registered for event type 'OrderShipped'
    """

    def __init__(self, event_type: str) -> None:
        super().__init__(f"no class registered for event type {event_type!r}")
        self.event_type = event_type


class StoreError(StreamsrcError):
    """Base of the failures an event store returns (as ``Failure`` values) or raises.

    >>> isinstance(WrongExpectedVersion("order-1", 0, 1), StoreError)
    True
    """


class WrongExpectedVersion(StoreError):
    """The stream is not at the version the append expected; nothing was written.

    ``actual`` is the stream's last seq when the append was refused (0: no stream).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {})])
    ...     print(await store.append("order-1", [EventData("OrderPlaced", {})], expected=0))
    >>> anyio.run(main)
    <Failure: stream 'order-1' is at version 1, expected 0>
    """

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WrongExpectedVersion) and (
            self.stream,
            self.expected,
            self.actual,
        ) == (other.stream, other.expected, other.actual)

    def __hash__(self) -> int:
        return hash((self.stream, str(self.expected), self.actual))


class DuplicateEvent(StoreError):
    """An event id of the batch is already stored, not as a retry of this same batch.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store, placed = MemoryStore(), EventData("OrderPlaced", {})
    ...     await store.append("order-1", [placed])
    ...     print(await store.append("order-2", [placed]))
    >>> anyio.run(main)
    <Failure: event ... is already in the store (appending to 'order-2')>
    """

    def __init__(self, stream: str, event_id: object) -> None:
        super().__init__(f"event {event_id} is already in the store (appending to {stream!r})")
        self.stream = stream
        self.event_id = event_id


class InvalidEvent(StoreError):
    """An event or a stream name cannot be stored as given (bad name, data not JSON, ...).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> anyio.run(MemoryStore().append, "order-1", [EventData("OrderPlaced", {"at": object()})])
    <Failure: not a JSON value: Object of type object is not JSON serializable>
    """


class EventTooLarge(InvalidEvent):
    """An event's encoded data and metadata exceed the store's size limit.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> anyio.run(MemoryStore(max_event_size=100).append, "order-1", [EventData("Note", {"text": "x" * 200})])
    <Failure: event ... is ... bytes encoded, over the limit of 100>
    """

    def __init__(self, event_id: object, size: int, limit: int) -> None:
        super().__init__(f"event {event_id} is {size} bytes encoded, over the limit of {limit}")
        self.event_id = event_id
        self.size = size
        self.limit = limit


class StoreUnavailable(StoreError):
    """The store could not be reached, or failed in the middle of an operation.

    An append that returns this wrote nothing, or (if the failure came after
    the commit) wrote everything: retrying with the same event ids is safe.

    >>> import anyio
    >>> from streamsrc.store import open_store
    >>> async def main() -> None:
    ...     async with open_store("postgresql://app:s3cret@127.0.0.1:1/events"):  # nothing listens there
    ...         pass
    >>> anyio.run(main)
    Traceback (most recent call last):
    ...
    streamsrc.errors.StoreUnavailable: cannot open postgresql://app:***@127.0.0.1:1/events:
    ConnectionRefusedError: ...
    """


class CorruptEvent(StoreError, ValueError):
    """A stored event does not decode: its row was written or damaged by something other than streamsrc.

    Raised by a read, or by the first access to a lazily decoded field
    (``data``, ``metadata``, ``id``, ``time``) of a ``RecordedEvent``. It names
    where the event is (``stream``, ``seq``, ``position``) and which ``field``
    is damaged. It is also a ``ValueError``, which is what a JSON decoder
    raises, so code that caught that still catches this.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> damaged = stored_event("order-1", 3, 17, "OrderPlaced", "{not json", None, new_event_id(), 0)
    >>> damaged.data
    Traceback (most recent call last):
    ...
    streamsrc.errors.CorruptEvent: stored event at position 17 ('order-1' #3) has a damaged data field: ...
    """

    def __init__(self, stream: object, seq: object, position: object, field: str, problem: str) -> None:
        super().__init__(
            f"stored event at position {position} ({stream!r} #{seq}) has a damaged {field} field: {problem}"
        )
        self.stream = stream
        self.seq = seq
        self.position = position
        self.field = field


class UndecodableEvent(CorruptEvent, InvalidEvent):
    """A stored event's data (after upcasting) does not fit the class its codec registered for its type.

    ``field`` names the field that does not fit, as ``data.<name>`` (``data.address.city`` for a
    nested one; ``data`` when the whole value is wrong). It is a ``CorruptEvent`` (what is stored
    does not decode) and, as codecs raised before, an ``InvalidEvent``.

    >>> from dataclasses import dataclass
    >>> from streamsrc.codec import Codec
    >>> from streamsrc.events import stored_event, new_event_id
    >>> codec = Codec()
    >>> @codec.register()
    ... @dataclass
    ... class Deposited:
    ...     amount: int
    >>> codec.decode(stored_event("acct-1", 2, 9, "Deposited", '{"amount": 1, "memo": "x"}', None,
    ...                           new_event_id(), 0))
    Traceback (most recent call last):
    ...
    streamsrc.errors.UndecodableEvent: stored event at position 9 ('acct-1' #2) has a damaged data field: ...
    """

    def __init__(self, stream: object, seq: object, position: object, field: str, problem: str) -> None:
        CorruptEvent.__init__(self, stream, seq, position, field, problem)


class UnknownTransform(CorruptEvent):
    """A stored event says (in its metadata) that its payload went through a transform this reader
    does not know (``transform``): give the reading store that transform, or the event is damaged.

    >>> print(UnknownTransform("user-1", 2, 7, "rot13"))
    stored event at position 7 ('user-1' #2) has a damaged metadata field: unknown payload transform 'rot13'
    """

    def __init__(self, stream: object, seq: object, position: object, transform: str) -> None:
        super().__init__(stream, seq, position, "metadata", f"unknown payload transform {transform!r}")
        self.transform = transform


class KeyUnavailable(StoreError):
    """The key an event (or snapshot) was encrypted with is not in the keyring (``reason="missing"``),
    or the keyring's key of that id is not the one it was encrypted with (``reason="wrong"``).

    The data is intact: configure the key ``key_id`` and read again. (A *forgotten* subject's
    events are not this: they read with a marker, see :mod:`streamsrc.shredding`.)

    >>> print(KeyUnavailable("2026-01", "missing"))
    encryption key '2026-01' is missing from the keyring
    """

    def __init__(self, key_id: str, reason: str = "missing") -> None:
        what = "is missing from the keyring" if reason == "missing" else "in the keyring is not the key used"
        super().__init__(f"encryption key {key_id!r} {what}")
        self.key_id = key_id
        self.reason = reason


class CheckpointMoved(StoreError):
    """A checkpoint saved with ``expected=`` (a compare-and-set) was not at ``expected``: nothing saved.

    ``found`` is where the checkpoint is (0: none saved). Another runner moved
    it: the caller no longer owns what the checkpoint tracks.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.save_checkpoint("emails", 10, expected=0)
    ...     try:
    ...         await store.save_checkpoint("emails", 20, expected=5)
    ...     except CheckpointMoved as exc:
    ...         print(exc, exc.found)
    >>> anyio.run(main)
    checkpoint 'emails' is at 10, not at 5 as expected: not saved 10
    """

    def __init__(self, name: str, expected: int, found: int) -> None:
        super().__init__(f"checkpoint {name!r} is at {found}, not at {expected} as expected: not saved")
        self.name = name
        self.expected = expected
        self.found = found


class StreamDeleted(StoreError):
    """The stream was deleted (``delete_stream``: it ends with a tombstone event): an append to it,
    whatever its expected version, and a second delete are refused; nothing was written.

    ``version`` is the stream's last seq: the tombstone's.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("cart-1", [EventData("Opened", {})])
    ...     await store.delete_stream("cart-1")
    ...     print(await store.append("cart-1", [EventData("Opened", {})]))
    >>> anyio.run(main)
    <Failure: stream 'cart-1' is deleted (its tombstone is #2): nothing can be appended to it>
    """

    def __init__(self, stream: str, version: int) -> None:
        super().__init__(
            f"stream {stream!r} is deleted (its tombstone is #{version}): nothing can be appended to it"
        )
        self.stream = stream
        self.version = version


class InvalidTruncation(StoreError):
    """``truncate_before(stream, seq)`` was given a ``seq`` it cannot take: below 1, or past the
    stream's last event (a truncation keeps at least the last event, so ``seq`` is at most the
    stream's ``version``; a stream with no events cannot be truncated). Nothing was removed.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("cart-1", [EventData("Added", {}), EventData("Added", {})])
    ...     print(await store.truncate_before("cart-1", 3))
    >>> anyio.run(main)
    <Failure: cannot truncate 'cart-1' before #3: its version is 2 (seq: 1 to 2)>
    """

    def __init__(self, stream: str, seq: object, version: int) -> None:
        why = "it has no events" if version < 1 else f"its version is {version} (seq: 1 to {version})"
        super().__init__(f"cannot truncate {stream!r} before #{seq}: {why}")
        self.stream = stream
        self.seq = seq
        self.version = version


class InvalidRetentionPolicy(StoreError, ValueError):
    """A retention policy that cannot be applied: it limits neither age nor count, a ``max_age`` that
    is not a positive time, a ``max_count`` below 1, or a prefix that is not text. Raised when the
    policy is made (a ``ValueError`` too, as a bad argument is).

    >>> from streamsrc.retention import RetentionPolicy
    >>> try:
    ...     RetentionPolicy("orders-")
    ... except InvalidRetentionPolicy as exc:
    ...     print(exc)
    retention policy 'orders-' limits nothing: give max_age, max_count or both
    """


class IncompatibleSchema(StoreError):
    """The store's tables were made by a newer streamsrc (or are not streamsrc's); nothing was changed.

    >>> import os, sqlite3, tempfile
    >>> import anyio
    >>> from streamsrc.store import open_store
    >>> async def main(path: str) -> None:
    ...     async with open_store(f"sqlite:///{path}"):
    ...         pass
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "app.db")
    ...     sqlite3.connect(path).execute("CREATE TABLE events (id INTEGER)").connection.close()
    ...     anyio.run(main, path)
    Traceback (most recent call last):
    ...
    streamsrc.errors.IncompatibleSchema: the database has tables ['events'] that streamsrc did not make
    """


class Rejection(StreamsrcError):
    """A decider refused a command; ``reasons`` say why, for people to read.

    >>> Rejection("username taken", "email missing").reasons
    ('username taken', 'email missing')
    """

    def __init__(self, *reasons: str) -> None:
        if not reasons:
            raise ValueError("a rejection needs at least one reason")
        super().__init__("; ".join(reasons))
        self.reasons = reasons

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rejection) and self.reasons == other.reasons

    def __hash__(self) -> int:
        return hash(self.reasons)

    def __repr__(self) -> str:
        return f"Rejection{self.reasons!r}"


class Conflict(StreamsrcError):
    """A command kept losing to concurrent writers until its retries ran out; nothing was written.

    ``attempts`` counts the appends tried; ``last`` is the final ``WrongExpectedVersion``.

    >>> Conflict(3, WrongExpectedVersion("account-1", 4, 5))
    Conflict("gave up after 3 attempt(s): stream 'account-1' is at version 5, expected 4")
    """

    def __init__(self, attempts: int, last: WrongExpectedVersion) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.attempts = attempts
        self.last = last


class ProjectionFailed(StreamsrcError):
    """A projection stopped because its handler failed on one event.

    The read model holds every event before it (its checkpoint is just
    before ``position``); fix the handler or the event's data and run the
    projection again, and it goes on from there. ``cause`` is the handler's
    exception.

    >>> str(ProjectionFailed("emails", 42, "user-1", 3, "EmailChanged", KeyError("email")))
    "projection 'emails' failed on the event at position 42 ('user-1' #3, EmailChanged): KeyError: 'email'"
    """

    def __init__(
        self, projection: str, position: int, stream: str, seq: int, type: str, cause: BaseException
    ) -> None:
        super().__init__(
            f"projection {projection!r} failed on the event at position {position} "
            f"({stream!r} #{seq}, {type}): {cause.__class__.__name__}: {cause}"
        )
        self.projection = projection
        self.position = position
        self.stream = stream
        self.seq = seq
        self.type = type
        self.cause = cause


class ProjectionOwnedElsewhere(StreamsrcError):
    """Another runner owns this projection (or partition): the batch was rolled back, nothing applied.

    A read model that commits its checkpoint with its writes moves the
    checkpoint only from the position the batch started at (a compare-and-set),
    and only while the runner still holds its lease (the fencing token). When
    the checkpoint is elsewhere (``found``, not ``expected``) or the lease
    went to another worker, the whole batch rolls back and the run ends with
    this error: two runners on one projection never apply an event twice, and
    a checkpoint never goes backwards.

    >>> print(ProjectionOwnedElsewhere("emails", 10, 25))
    projection 'emails': the checkpoint is at 25, not at 10 where this batch started: another runner owns ...
    >>> print(ProjectionOwnedElsewhere("emails[0/4]", 10, None, token=3))
    projection 'emails[0/4]': the lease (fencing token 3) was taken by another worker: another runner owns ...
    """

    def __init__(
        self, projection: str, expected: int, found: int | None, *, token: int | None = None
    ) -> None:
        if token is not None:
            what = f"the lease (fencing token {token}) was taken by another worker"
        else:
            what = f"the checkpoint is at {found}, not at {expected} where this batch started"
        super().__init__(f"projection {projection!r}: {what}: another runner owns this projection")
        self.projection = projection
        self.expected = expected
        self.found = found
        self.token = token
