"""The event model: what a caller appends (``EventData``) and what a store gives back (``RecordedEvent``).

Event ``data`` and ``metadata`` are JSON values (dicts, lists, strings,
numbers, booleans, ``None``); stores keep them as compact JSON text. Typed
events (dataclasses) are mapped to and from ``EventData`` by
:mod:`streamsrc.codec`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from returns.result import Failure, Result, Success

from streamsrc.errors import InvalidEvent

__all__ = [
    "MAX_NAME_LENGTH",
    "EventData",
    "RecordedEvent",
    "decode_json",
    "encode_json",
    "encode_json_sized",
    "new_event_id",
    "validate_stream_name",
]

MAX_NAME_LENGTH = 512
"""The longest stream name or event type accepted, in characters."""


def new_event_id() -> uuid.UUID:
    """A fresh random (version 4) UUID."""
    return uuid_from_bytes(os.urandom(16), version4=True)


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


@dataclass(frozen=True, slots=True)
class EventData:
    """An event to append: its type, JSON ``data``, optional JSON ``metadata`` and a unique ``id``.

    The ``id`` is generated when the ``EventData`` is made, so appending the
    same object again after a timeout is an idempotent retry.

    >>> e = EventData("UserRegistered", {"email": "ada@example.com"})
    >>> e.type, e.data, e.metadata, e.id.version
    ('UserRegistered', {'email': 'ada@example.com'}, None, 4)
    """

    type: str
    data: Any
    metadata: dict[str, Any] | None = None
    id: uuid.UUID = field(default_factory=new_event_id)


class RecordedEvent(NamedTuple):
    """An event as stored: where it is (``stream``, ``seq``, ``position``) and when it was written.

    ``seq`` counts 1, 2, 3, ... within its stream with no gaps; ``position``
    is global and strictly increasing in commit order across all streams;
    ``time`` is the commit time in UTC.
    """

    stream: str
    seq: int
    position: int
    type: str
    data: Any
    metadata: dict[str, Any] | None
    id: uuid.UUID
    time: datetime


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
    """:func:`encode_json` and the size of the text in UTF-8 bytes."""
    try:
        text = _ENCODER.encode(value)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"not a JSON value: {exc}") from None
    return text, size


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

decode_json = json.loads
"""Decode JSON text written by :func:`encode_json`."""


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
