"""Kinesis records aggregated by the Kinesis Producer Library (KPL), read without a protobuf package.

The KPL packs many *user records* into one Kinesis record. Its format is
published by AWS (``aggregation-format.md`` in awslabs/amazon-kinesis-producer)::

    0               4                  N          N+15
    +---+---+---+---+==================+---+...+---+
    |  MAGIC NUMBER | PROTOBUF MESSAGE |    MD5    |
    +---+---+---+---+==================+---+...+---+

with the magic number ``F3 89 9A C2``, the MD5 of the message's bytes, and
the message (proto2)::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;   // not used by the KPL; skipped
    }

The message is small and fixed, so it is read here with a protobuf wire
reader of a few dozen lines (varints and length-delimited fields; unknown
fields are skipped as protobuf says) rather than with the ``protobuf``
package, a large compiled dependency for three fields. A record that does
not read (a wrong MD5, a truncated message, an index out of its table) raises
:class:`AggregationError`; nothing is guessed.

>>> import hashlib
>>> message = bytes([0x0A, 1]) + b"k" + bytes([0x1A, 5, 0x08, 0, 0x1A, 1]) + b"x"
>>> data = MAGIC + message + hashlib.md5(message).digest()
>>> deaggregate(data)
[UserRecord(partition_key='k', explicit_hash_key=None, data=b'x')]
>>> deaggregate(data[:-1])
Traceback (most recent call last):
streamsrc.integrations._kpl.AggregationError: its MD5 checksum does not match its message ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["MAGIC", "AggregationError", "UserRecord", "deaggregate", "is_aggregated"]

MAGIC = b"\xf3\x89\x9a\xc2"
"""The four bytes an aggregated record starts with."""

DIGEST_SIZE = 16  # MD5

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class AggregationError(ValueError):
    """An aggregated record that cannot be read: its checksum, its protobuf message or its key tables."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user record of an aggregated Kinesis record; its index in the aggregate is its sub-sequence."""

    partition_key: str
    explicit_hash_key: str | None
    data: bytes


def is_aggregated(data: bytes) -> bool:
    """Whether ``data`` starts with the KPL's magic number (and so claims to be an aggregate).

    >>> is_aggregated(b'{"stream": "a"}'), is_aggregated(MAGIC + bytes(16))
    (False, True)
    """
    return data[: len(MAGIC)] == MAGIC


def deaggregate(data: bytes) -> list[UserRecord]:
    """The user records of an aggregated record, in order (index ``i`` is sub-sequence number ``i``).

    Raises :class:`AggregationError` if ``data`` is not a whole, intact aggregate.
    """
    if not is_aggregated(data):
        raise AggregationError("it does not start with the KPL magic number F3 89 9A C2")
    if len(data) < len(MAGIC) + DIGEST_SIZE:
        raise AggregationError(f"{len(data)} bytes is too short for the magic number and an MD5 checksum")
    view = memoryview(data)
    message, digest = view[len(MAGIC) : -DIGEST_SIZE], view[-DIGEST_SIZE:]
    if hashlib.md5(message, usedforsecurity=False).digest() != digest:
        raise AggregationError("its MD5 checksum does not match its message (damaged or truncated)")
    return _aggregated_record(message)


def _aggregated_record(message: memoryview) -> list[UserRecord]:
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    records: list[memoryview] = []
    for number, wire, value in _fields(message, "AggregatedRecord"):
        if number in (1, 2, 3) and wire != _LENGTH_DELIMITED:
            raise AggregationError(f"AggregatedRecord field {number} has wire type {wire}, not 2")
        if number == 1:
            partition_keys.append(_text(value, "a partition key"))
        elif number == 2:
            hash_keys.append(_text(value, "an explicit hash key"))
        elif number == 3:
            assert isinstance(value, memoryview)
            records.append(value)
    return [_record(i, raw, partition_keys, hash_keys) for i, raw in enumerate(records)]


def _record(i: int, message: memoryview, partition_keys: list[str], hash_keys: list[str]) -> UserRecord:
    what = f"user record {i}"
    key_index: int | None = None
    hash_key_index: int | None = None
    data: memoryview | None = None
    for number, wire, value in _fields(message, what):
        expected = {1: _VARINT, 2: _VARINT, 3: _LENGTH_DELIMITED}.get(number)
        if expected is not None and wire != expected:
            raise AggregationError(f"{what}: field {number} has wire type {wire}, not {expected}")
        if number == 1:
            assert isinstance(value, int)
            key_index = value
        elif number == 2:
            assert isinstance(value, int)
            hash_key_index = value
        elif number == 3:
            assert isinstance(value, memoryview)
            data = value
        # 4 (tags) and unknown fields: skipped
    if key_index is None:
        raise AggregationError(f"{what} has no partition key index (a required field)")
    if data is None:
        raise AggregationError(f"{what} has no data (a required field)")
    if key_index >= len(partition_keys):
        raise AggregationError(
            f"{what}: partition key index {key_index} is outside the table of {len(partition_keys)}"
        )
    hash_key = None
    if hash_key_index is not None:
        if hash_key_index >= len(hash_keys):
            raise AggregationError(
                f"{what}: explicit hash key index {hash_key_index} is outside the table of {len(hash_keys)}"
            )
        hash_key = hash_keys[hash_key_index]
    return UserRecord(partition_keys[key_index], hash_key, bytes(data))


def _text(value: int | memoryview, what: str) -> str:
    assert isinstance(value, memoryview)
    try:
        return str(value, "utf-8")
    except UnicodeDecodeError as exc:
        raise AggregationError(f"{what} is not UTF-8 ({exc.reason})") from None


def _fields(message: memoryview, what: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of each field of a protobuf message, in order.

    A varint is an ``int``; a length-delimited or fixed-size field is the
    ``memoryview`` of its bytes. Groups (wire types 3 and 4, deprecated and
    not in the format) are refused.
    """
    pos, end = 0, len(message)
    while pos < end:
        key, pos = _varint(message, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise AggregationError(f"{what}: field number 0 at byte {pos}")
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(message, pos, what)
        elif wire in (_FIXED64, _FIXED32, _LENGTH_DELIMITED):
            if wire == _LENGTH_DELIMITED:
                size, pos = _varint(message, pos, what)
            else:
                size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                raise AggregationError(
                    f"{what}: field {number} needs {size} bytes, {end - pos} are left (truncated)"
                )
            value, pos = message[pos : pos + size], pos + size
        else:
            raise AggregationError(f"{what}: field {number} has wire type {wire}, unknown to the format")
        yield number, wire, value


def _varint(message: memoryview, pos: int, what: str) -> tuple[int, int]:
    """The unsigned varint at ``pos`` (at most 10 bytes, 64 bits) and the position after it."""
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(message):
            raise AggregationError(f"{what}: a varint runs past the end (truncated)")
        byte = message[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >> 64:
                raise AggregationError(f"{what}: a varint does not fit in 64 bits")
            return result, pos
    raise AggregationError(f"{what}: a varint is longer than 10 bytes")
