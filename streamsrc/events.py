"""The event model: what a caller appends (``EventData``) and what a store gives back (``RecordedEvent``).

Event ``data`` and ``metadata`` are JSON values (dicts, lists, strings,
numbers, booleans, ``None``); stores keep them as compact JSON text. Typed
events (dataclasses) are mapped to and from ``EventData`` by
:mod:`streamsrc.codec`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from returns.result import Failure, Result, Success

from streamsrc.errors import CorruptEvent, InvalidEvent

__all__ = [
    "MAX_NAME_LENGTH",
    "EventData",
    "RecordedEvent",
    "decode_json",
    "encode_json",
    "encode_json_sized",
    "new_event_id",
    "recorded_from_json",
    "recorded_to_json",
    "stored_event",
    "validate_stream_name",
]

MAX_NAME_LENGTH = 512
"""The longest stream name or event type accepted, in characters."""


def new_event_id() -> uuid.UUID:
    """A fresh time-ordered (version 7) UUID: the milliseconds since the epoch, then 74 random bits.

    Still unique (74 random bits per millisecond) and a valid RFC 9562 UUID; ids made later sort
    after ids made earlier (to the millisecond), so a database's unique index of event ids grows
    at its end instead of at random places (fewer pages touched per insert).

    >>> a = new_event_id()
    >>> a.version, a.variant == uuid.RFC_4122, uuid.UUID(str(a)) == a
    (7, True, True)
    """
    n = (_time_ns() // 1_000_000) << 80 | _from_bytes(_urandom(10), "big")
    u = _new(_UUID)
    _set_int(u, n & _V7_CLEAR | _V7_SET)
    _set_safe(u, _UNKNOWN)
    return u


def uuid_from_bytes(raw: bytes, version4: bool = False) -> uuid.UUID:
    """Build a ``UUID`` from 16 bytes without ``UUID.__init__``'s checks (a hot path on reads)."""
    n = _from_bytes(raw, "big")
    if version4:
        n = (n & ~(0xC000 << 48) | (0x8000 << 48)) & ~(0xF000 << 64) | (4 << 76)
    u = _new(_UUID)
    _set_int(u, n)
    _set_safe(u, _UNKNOWN)
    return u


# Bound once: attribute look-ups (``uuid.SafeUUID.unknown`` above all) cost more than the work.
_UUID = uuid.UUID
_new = object.__new__
_from_bytes = int.from_bytes
_set_int = uuid.UUID.__dict__["int"].__set__
_set_safe = uuid.UUID.__dict__["is_safe"].__set__
_UNKNOWN = uuid.SafeUUID.unknown
_time_ns = time.time_ns
_urandom = os.urandom
_V7_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_V7_SET = (7 << 76) | (0x8000 << 48)  # version 7, variant RFC 4122


@dataclass(frozen=True, slots=True)
class EventData:
    """An event to append: its type, JSON ``data``, optional JSON ``metadata`` and a unique ``id``.

    The ``id`` is generated when the ``EventData`` is made, so appending the
    same object again after a timeout is an idempotent retry.

    >>> e = EventData("UserRegistered", {"email": "ada@example.com"})
    >>> e.type, e.data, e.metadata, e.id.version
    ('UserRegistered', {'email': 'ada@example.com'}, None, 7)
    """

    type: str
    data: Any
    metadata: dict[str, Any] | None = None
    id: uuid.UUID = field(default_factory=new_event_id)


decode_json = json.loads
"""Decode JSON text written by :func:`encode_json`."""

_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The C scanner ``json.loads`` ends in: ``(value, end)`` from text at an index."""


def _decode_stored(text: Any) -> Any:
    """``json.loads(text)`` for a stored field, without its Python layers when ``text`` is plain JSON.

    The C scanner alone decodes text that starts with a value and has nothing after it (what
    :func:`encode_json` writes); anything else (whitespace, a BOM, not a ``str``, an error) goes
    through ``json.loads``, so results and errors are exactly its own.
    """
    if type(text) is str:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            return decode_json(text)
        if end == len(text):
            return value
    return decode_json(text)


try:
    from collections import _tuplegetter  # type: ignore[attr-defined]  # what namedtuple uses
except ImportError:  # pragma: no cover - other Pythons

    def _tuplegetter(index: int, doc: str) -> Any:
        return property(itemgetter(index), doc=doc)


_item = tuple.__getitem__


class _Lazy:
    """A field decoded from its stored form on first read, then cached in the instance."""

    __slots__ = ("decode", "index", "name")

    def __init__(self, name: str, index: int, decode: Callable[[Any], Any]) -> None:
        self.name, self.index, self.decode = name, index, decode

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        try:
            value = self.decode(_item(instance, self.index))
        except Exception as exc:  # a damaged row: say where it is, as a store error
            raise _damaged(instance, self.name, self.index, exc) from None
        instance.__dict__[self.name] = value  # later reads find it before this descriptor
        return value


def _damaged(instance: tuple[Any, ...], field: str, index: int, exc: BaseException) -> CorruptEvent:
    stream, seq, position = (tuple.__getitem__(instance, i) for i in range(3))
    stored = repr(tuple.__getitem__(instance, index))
    shown = stored if len(stored) <= 80 else stored[:77] + "..."
    return CorruptEvent(stream, seq, position, field, f"{type(exc).__name__}: {exc} (stored: {shown})")


class _Damaged:
    """How a repr shows a field that does not decode: as stored."""

    def __init__(self, stored: object) -> None:
        self.stored = stored

    def __repr__(self) -> str:
        return f"<damaged: {self.stored!r}>"


def _shown(event: Any, name: str) -> Any:
    try:
        return getattr(event, name)
    except CorruptEvent:
        return _Damaged(tuple.__getitem__(event, getattr(type(event), name).index))


def _decode_metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = _decode_stored(text)
    if type(value) is not dict:
        raise TypeError(f"metadata must be a JSON object, not {type(value).__name__}")
    return value


def _decode_id(raw: bytes | uuid.UUID) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    if type(raw) is not bytes or len(raw) != 16:
        raise TypeError(f"an event id is stored as 16 bytes, not {type(raw).__name__} {raw!r}")
    return uuid_from_bytes(raw)


def _decode_time(raw: int | datetime) -> datetime:
    if isinstance(raw, datetime):
        return raw
    if type(raw) is not int:
        raise TypeError(f"a time is stored as microseconds (an integer), not {type(raw).__name__}")
    return datetime.fromtimestamp(raw / 1_000_000, UTC)


class RecordedEvent(tuple):  # type: ignore[type-arg]
    """An event as stored: where it is (``stream``, ``seq``, ``position``) and when it was written.

    ``seq`` counts 1, 2, 3, ... within its stream with no gaps; ``position``
    is global and strictly increasing in commit order across all streams;
    ``time`` is the commit time in UTC.

    Stores hand events over in their stored form: ``data``, ``metadata``,
    ``id`` and ``time`` are decoded the first time they are read, so code
    that looks only at ``type`` or ``position`` (a projection counting event
    types, a filter) never pays for decoding JSON. Two events are equal when
    all their fields are.

    >>> from datetime import datetime, UTC
    >>> e = RecordedEvent("user-1", 1, 7, "UserRegistered", {"name": "Ada"}, None,
    ...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
    >>> e.stream, e.seq, e.position, e.type, e.data
    ('user-1', 1, 7, 'UserRegistered', {'name': 'Ada'})
    """

    # No __slots__: the instance dict (made only when a lazy field is first read) caches decoded fields.

    if TYPE_CHECKING:
        stream: str
        seq: int
        position: int
        type: str
        data: Any
        metadata: dict[str, Any] | None
        id: uuid.UUID
        time: datetime

    def __new__(
        cls,
        stream: str,
        seq: int,
        position: int,
        type: str,
        data: Any,
        metadata: dict[str, Any] | None,
        id: uuid.UUID,
        time: datetime,
    ) -> RecordedEvent:
        """An event with its fields already decoded (stores use :func:`stored_event`)."""
        self = tuple.__new__(cls, (stream, seq, position, type, None, None, id, time))
        fields = self.__dict__
        fields["data"] = data
        fields["metadata"] = metadata
        return self

    _fields = ("stream", "seq", "position", "type", "data", "metadata", "id", "time")
    __match_args__ = ("stream", "seq", "position", "type", "data", "metadata", "id", "time")

    def _values(self) -> tuple[Any, ...]:
        return (self.stream, self.seq, self.position, self.type, self.data, self.metadata, self.id, self.time)

    def _asdict(self) -> dict[str, Any]:
        """The fields by name, decoded (as a NamedTuple's ``_asdict``)."""
        return dict(zip(self._fields, self._values(), strict=True))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values())

    def __getitem__(self, index: Any) -> Any:
        return self._values()[index]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())  # every pickle protocol and copy: rebuilt decoded

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RecordedEvent is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"RecordedEvent is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self._values() == other._values()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self.stream, self.seq, self.position, self.id))

    def __repr__(self) -> str:
        try:
            values = self._values()
        except CorruptEvent:  # a damaged field is shown as stored, never raised from a repr
            values = tuple(_shown(self, n) for n in self._fields)
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(self._fields, values, strict=True))
        return f"RecordedEvent({inner})"

    def _repr_html_(self) -> str:
        """The event as a one-row HTML table: how Jupyter shows it (see :mod:`streamsrc.display`).

        Every value is HTML-escaped (stream names and payloads are user data).

        >>> from datetime import datetime, UTC
        >>> e = RecordedEvent("user-<1>", 1, 7, "Renamed", {"name": "<b>Ada</b>"}, None,
        ...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
        >>> page = e._repr_html_()
        >>> "user-&lt;1&gt;" in page, "&lt;b&gt;Ada&lt;/b&gt;" in page, "<b>" in page
        (True, True, False)
        """
        from streamsrc.display import events_html  # display builds on this module

        return events_html([self])

    @classmethod
    def _repr_html_table_(cls, events: Sequence[RecordedEvent]) -> str:
        """Several events as one HTML table: how ``await stream.show()`` shows a stream of events.

        >>> from datetime import datetime, UTC
        >>> events = [RecordedEvent("s-1", n, n, "T", {"n": n}, None, uuid.UUID(int=n),
        ...                         datetime(2026, 1, 1, tzinfo=UTC)) for n in (1, 2)]
        >>> RecordedEvent._repr_html_table_(events).count("<tr title=")
        2
        """
        from streamsrc.display import events_html

        return events_html(events, max_chars=200)

    @classmethod
    def _to_pandas_(cls, events: Sequence[RecordedEvent]) -> Any:
        """Several events as a ``pandas.DataFrame``: what ``await stream.to_pandas()`` gives for events.

        >>> from datetime import datetime, UTC
        >>> events = [RecordedEvent("s-1", n, n, "T", {"n": n}, None, uuid.UUID(int=n),
        ...                         datetime(2026, 1, 1, tzinfo=UTC)) for n in (1, 2)]
        >>> str(RecordedEvent._to_pandas_(events)["seq"].dtype)
        'int64'
        """
        from streamsrc.display import to_pandas

        return to_pandas(events)

    if not TYPE_CHECKING:  # the fields, as mypy sees them above
        stream = _tuplegetter(0, "The stream the event belongs to.")
        seq = _tuplegetter(1, "Its number within the stream: 1, 2, 3, ...")
        position = _tuplegetter(2, "Its place in the global log, increasing in commit order.")
        type = _tuplegetter(3, "The event type.")
        data = _Lazy("data", 4, _decode_stored)
        metadata = _Lazy("metadata", 5, _decode_metadata)
        id = _Lazy("id", 6, _decode_id)
        time = _Lazy("time", 7, _decode_time)


def stored_event(
    stream: str,
    seq: int,
    position: int,
    type: str,
    data: str,
    metadata: str | None,
    id: bytes | uuid.UUID,
    time: int | datetime,
) -> RecordedEvent:
    """A :class:`RecordedEvent` from its stored form, decoded lazily.

    ``data`` and ``metadata`` are JSON text, ``id`` a UUID or its 16 bytes,
    ``time`` a datetime or microseconds since the epoch (UTC). Stores build
    pages with ``tuple.__new__(RecordedEvent, row)`` directly, which is the
    same thing without the call.

    >>> event = stored_event("order-1", 1, 7, "OrderPlaced", '{"total": 12}', None, new_event_id(), 0)
    >>> event.data, event.position, event.time
    ({'total': 12}, 7, datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc))
    """
    return tuple.__new__(RecordedEvent, (stream, seq, position, type, data, metadata, id, time))


def recorded_to_json(event: RecordedEvent) -> dict[str, Any]:
    """``event`` as a JSON object (a dict of JSON values), read back losslessly by :func:`recorded_from_json`.

    The keys are the fields: ``stream``, ``seq``, ``position``, ``type``,
    ``data``, ``metadata`` (``null`` when absent), ``id`` (the UUID's
    canonical text) and ``time`` (ISO 8601 in UTC with microseconds and a
    ``Z``). This is the payload of the Kinesis integration and of exports.

    >>> from datetime import datetime, UTC
    >>> e = RecordedEvent("user-1", 1, 7, "UserRegistered", {"name": "Ada"}, None,
    ...                   uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
    >>> recorded_to_json(e)["time"]
    '2026-01-01T00:00:00.000000Z'
    >>> recorded_from_json(recorded_to_json(e)) == e
    True
    """
    moment = event.time.astimezone(UTC).replace(tzinfo=None)
    return {
        "stream": event.stream,
        "seq": event.seq,
        "position": event.position,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "id": str(event.id),
        "time": moment.isoformat(timespec="microseconds") + "Z",
    }


def recorded_from_json(obj: Any) -> RecordedEvent:
    """The :class:`RecordedEvent` that :func:`recorded_to_json` made ``obj`` from.

    Raises ``InvalidEvent`` (saying which field) when ``obj`` is not such an
    object: a missing or mistyped field, a bad UUID, a time without a zone.
    ``time`` may carry any UTC offset; the event's time is in UTC.

    >>> recorded_from_json({"stream": "s"})
    Traceback (most recent call last):
    ...
    streamsrc.errors.InvalidEvent: not a recorded event: missing field 'seq'
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"not a recorded event: expected a JSON object, not {type(obj).__name__}")
    for name in _RECORDED_FIELDS:
        if name not in obj:
            raise InvalidEvent(f"not a recorded event: missing field {name!r}")
    stream, seq, position, kind = obj["stream"], obj["seq"], obj["position"], obj["type"]
    metadata, raw_id, raw_time = obj["metadata"], obj["id"], obj["time"]
    if not isinstance(stream, str) or not isinstance(kind, str):
        raise InvalidEvent("not a recorded event: 'stream' and 'type' must be strings")
    for name, number in (("seq", seq), ("position", position)):
        if type(number) is not int or number < 0:
            raise InvalidEvent(f"not a recorded event: {name!r} must be a non-negative integer")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidEvent("not a recorded event: 'metadata' must be an object or null")
    try:
        event_id = uuid.UUID(raw_id)
    except (TypeError, ValueError, AttributeError):
        raise InvalidEvent(f"not a recorded event: 'id' is not a UUID: {raw_id!r}") from None
    try:
        moment = datetime.fromisoformat(raw_time)
    except (TypeError, ValueError):
        raise InvalidEvent(f"not a recorded event: 'time' is not an ISO 8601 time: {raw_time!r}") from None
    if moment.tzinfo is None:
        raise InvalidEvent(f"not a recorded event: 'time' has no UTC offset: {raw_time!r}")
    return RecordedEvent(stream, seq, position, kind, obj["data"], metadata, event_id, moment.astimezone(UTC))


_RECORDED_FIELDS = ("stream", "seq", "position", "type", "data", "metadata", "id", "time")


def encode_json(value: Any) -> str:
    """Compact JSON text for ``value``; raises ``InvalidEvent`` if it is not a JSON value.

    NaN and infinities are refused (they are not JSON), and so are strings
    holding lone surrogates (they cannot be stored as UTF-8).

    >>> encode_json({"a": [1, "é"]})
    '{"a":[1,"é"]}'
    >>> encode_json(float("nan"))
    Traceback (most recent call last):
    ...
    streamsrc.errors.InvalidEvent: not a JSON value: Out of range float values are not JSON compliant...
    """
    return encode_json_sized(value)[0]


def encode_json_sized(value: Any) -> tuple[str, int]:
    """:func:`encode_json` and the size of the text in UTF-8 bytes.

    >>> encode_json_sized({"name": "Zoë"})
    ('{"name":"Zoë"}', 15)
    """
    try:
        text = _ENCODER.encode(value)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"not a JSON value: {exc}") from None
    return text, size


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def validate_stream_name(name: object, what: str = "stream name") -> Result[str, InvalidEvent]:
    """``Success(name)`` if ``name`` is a usable stream name (or event type), else ``Failure``.

    A name is a non-empty string of at most ``MAX_NAME_LENGTH`` characters
    with no control characters.

    >>> validate_stream_name("user-42")
    <Success: user-42>
    >>> validate_stream_name("bad\\nname")
    <Failure: stream name contains a control character: 'bad\\nname'>
    """
    if not isinstance(name, str):
        return Failure(InvalidEvent(f"{what} must be a string, not {type(name).__name__}"))
    if not name:
        return Failure(InvalidEvent(f"{what} must not be empty"))
    if len(name) > MAX_NAME_LENGTH:
        return Failure(InvalidEvent(f"{what} is longer than {MAX_NAME_LENGTH} characters"))
    if not name.isprintable() and any(_is_control(c) for c in name):
        return Failure(InvalidEvent(f"{what} contains a control character: {name!r}"))
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return Failure(InvalidEvent(f"{what} is not valid Unicode text: {name!r}"))
    return Success(name)


def _is_control(c: str) -> bool:
    return ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
