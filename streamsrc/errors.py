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
    └── StoreError              an append, read or write was refused or failed
        ├── WrongExpectedVersion    the stream is not at the version the caller expected
        ├── DuplicateEvent          an event id is already in the store elsewhere
        ├── InvalidEvent            an event (or stream name) cannot be stored as given
        │   └── EventTooLarge           its encoded size is over the store's limit
        ├── StoreUnavailable        the store could not be reached or failed mid-operation
        └── IncompatibleSchema      the store was made by a newer streamsrc, or is not a streamsrc store

Every append failure is one of the ``StoreError`` values, returned inside a
``Failure``; nothing of a failed batch is written.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DuplicateEvent",
    "EffectFailed",
    "EventTooLarge",
    "IncompatibleSchema",
    "InvalidEvent",
    "InvalidStoreURL",
    "ProjectionFailed",
    "Rejection",
    "StoreError",
    "StoreUnavailable",
    "StreamsrcError",
    "UnknownEventType",
    "WrongExpectedVersion",
]


class StreamsrcError(Exception):
    """Base class of every error streamsrc raises or returns."""


class EffectFailed(StreamsrcError):
    """An effect in a stream returned a ``Failure``; the stream failed with it.

    ``failure`` holds the value inside the ``Failure`` unchanged, so a caller
    that gets this error back (from a terminal ``*_result`` variant, say) can
    match on the domain value.
    """

    def __init__(self, failure: object) -> None:
        super().__init__(failure)
        self.failure = failure

    def __repr__(self) -> str:
        return f"EffectFailed({self.failure!r})"


class InvalidStoreURL(StreamsrcError):
    """``open_store`` cannot use this URL: unknown scheme, bad option, missing part.

    The message names the URL with any password replaced by ``***``.
    """


class UnknownEventType(StreamsrcError):
    """A codec was asked to decode an event type it has no class registered for."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"no class registered for event type {event_type!r}")
        self.event_type = event_type


class StoreError(StreamsrcError):
    """Base of the failures an event store returns (as ``Failure`` values) or raises."""


class WrongExpectedVersion(StoreError):
    """The stream is not at the version the append expected; nothing was written.

    ``actual`` is the stream's last seq when the append was refused (0: no stream).
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
    """An event id of the batch is already stored, not as a retry of this same batch."""

    def __init__(self, stream: str, event_id: object) -> None:
        super().__init__(f"event {event_id} is already in the store (appending to {stream!r})")
        self.stream = stream
        self.event_id = event_id


class InvalidEvent(StoreError):
    """An event or a stream name cannot be stored as given (bad name, data not JSON, ...)."""


class EventTooLarge(InvalidEvent):
    """An event's encoded data and metadata exceed the store's size limit."""

    def __init__(self, event_id: object, size: int, limit: int) -> None:
        super().__init__(f"event {event_id} is {size} bytes encoded, over the limit of {limit}")
        self.event_id = event_id
        self.size = size
        self.limit = limit


class StoreUnavailable(StoreError):
    """The store could not be reached, or failed in the middle of an operation.

    An append that returns this wrote nothing, or (if the failure came after
    the commit) wrote everything: retrying with the same event ids is safe.
    """


class IncompatibleSchema(StoreError):
    """The store's tables were made by a newer streamsrc (or are not streamsrc's); nothing was changed."""


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
