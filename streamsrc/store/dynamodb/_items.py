"""The DynamoDB store's items: their layout, limits and codec. Imports no AWS driver.

A Lambda function or a DynamoDB Streams consumer decodes the events table's
items with :func:`event_from_item` (re-exported by
:mod:`streamsrc.store.dynamodb`) without loading aiobotocore or botocore;
the store (``_store``) and the table helpers (``_tables``) build on this
module.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping
from typing import Any

from streamsrc.errors import CorruptEvent, InvalidEvent
from streamsrc.events import RecordedEvent
from streamsrc.store._contract import EncodedEvent, check_key

__all__ = [
    "DEFAULT_ORDER",
    "HEAD_KEY",
    "ID_PREFIX",
    "INLINE_BYTES",
    "KEYS",
    "LOG_PK",
    "MAX_BATCH",
    "MAX_EVENT_SIZE",
    "MAX_ITEM_BYTES",
    "MAX_NAME_BYTES",
    "MAX_TRANSACTION_BYTES",
    "MAX_TRANSACTION_ITEMS",
    "MODE_KEY",
    "ORDERS",
    "SPANS_PREFIX",
    "STREAMS_PK",
    "STREAM_SHARDS",
    "TIP_SK",
    "BatchTooLarge",
    "attribute",
    "check_name",
    "checkpoint_key",
    "commit_events",
    "event_bytes",
    "event_from_item",
    "event_item",
    "is_event_item",
    "log_key",
    "seq_key",
    "streams_pk",
    "table_names",
    "text_bytes",
    "too_long",
]

MAX_TRANSACTION_ITEMS = 100
"""DynamoDB's limit on the items of one ``TransactWriteItems``."""
MAX_BATCH = (MAX_TRANSACTION_ITEMS - 3) // 2
"""The most events one append may carry: 2 items each, plus commit, head and the stream item (a new
stream) or the check that the stream's last event is no tombstone (48)."""
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
"""DynamoDB's limit on the summed item sizes of one transaction."""
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's limit on one item."""
MAX_EVENT_SIZE = 400_000
"""The default and highest ``max_event_size``: the item's other attributes fit in the rest of 400 KB."""
INLINE_BYTES = 350_000
"""A commit item carries a copy of its events when they fit in this many bytes."""
MAX_NAME_BYTES = 1024
"""The longest stream name, snapshot key or checkpoint name in UTF-8 bytes (a DynamoDB sort key holds
1,024): names of up to 256 characters always fit."""

HEAD_KEY = {"pk": {"S": "head"}, "sk": {"S": "0"}}
"""The key of the head item (the last position given) in the log table."""
LOG_PK = "log"
"""The partition of the commit items in the log table (``sk``: the commit's last position, 20 digits)."""
STREAMS_PK = "streams"
"""The partition of the stream items in the log table (``sk``: a stream's name)."""
ID_PREFIX = "id:"
"""The partition key of an id item is this and the event's id."""
MODE_KEY = {"pk": {"S": "mode"}, "sk": {"S": "0"}}
"""The key of the item saying the table's order (``order``: ``stream`` or ``global``); a table without
one was made before the scale-out mode existed and is ``global``."""
DEFAULT_ORDER = "stream"
"""The order of a table made without ``order=`` in its URL: ``stream``, the scale-out mode (a table
made in ``global`` mode, or before the modes existed, stays ``global``)."""
ORDERS = ("stream", "global")
"""The modes of a table: ``stream`` (scale-out, indexed after the fact) and ``global`` (head item)."""
SPANS_PREFIX = "spans:"
"""Scale mode: the partition key of a stream's index spans is this and the stream's name (``sk``: the
span's first seq on 20 digits, attribute ``position`` the first position, ``count``), and its indexed
tip (``sk`` = :data:`TIP_SK`, ``seq`` the last seq indexed)."""
TIP_SK = "tip"
"""The sort key of a stream's indexed tip (sorts after every 20-digit span key)."""
STREAM_SHARDS = 16
"""Scale mode: the stream registry's partitions (``pk = "streams:<k>"``), so no partition is hot."""


class BatchTooLarge(InvalidEvent):
    """A batch DynamoDB cannot write in one transaction (too many events or bytes); nothing was written.

    A batch is never split (that would lose its atomicity): append it in
    smaller batches of your own, at most :data:`MAX_BATCH` events each.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store import open_store
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> url = "dynamodb://doc-batches?region=eu-west-1&endpoint_url=http://{}:{}".format(*server.get_host_and_port())
    >>> async def main() -> None:
    ...     async with open_store(url + "&create=true") as store:
    ...         too_many = [EventData("ItemAdded", {}) for _ in range(MAX_BATCH + 1)]
    ...         print(await store.append("order-1", too_many))
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):  # moto takes any
    ...     anyio.run(main, backend="asyncio")
    <Failure: batch for 'order-1': 49 events need 101 items, over the 100 of one DynamoDB transaction:
    append at most 48 events at a time>
    >>> server.stop()
    """

    def __init__(self, stream: str, message: str) -> None:
        super().__init__(f"batch for {stream!r}: {message}")
        self.stream = stream


# ---------------------------------------------------------------------------------------- items


def is_event_item(item: Mapping[str, Any]) -> bool:
    """Whether a low-level DynamoDB item (``{"stream": {"S": ...}, ...}``) is a streamsrc event item.

    Event items are exactly the items of the events table; they have
    ``stream`` (S), ``seq``, ``position``, ``time`` (N), ``type``, ``data`` and
    ``id`` (S). A ``NewImage`` of the events table's stream always is one.

    >>> is_event_item({"stream": {"S": "s"}, "seq": {"N": "1"}})
    False
    """
    try:
        return (
            all(isinstance(item[k]["S"], str) for k in ("stream", "type", "data", "id"))
            and all(isinstance(item[k]["N"], str) for k in ("seq", "position", "time"))
            and ("metadata" not in item or isinstance(item["metadata"].get("S"), str))
        )
    except (KeyError, TypeError, AttributeError):
        return False


def event_from_item(item: Mapping[str, Any]) -> RecordedEvent:
    """The :class:`RecordedEvent` of an event item in DynamoDB's low-level attribute-value format.

    That format is what a low-level query returns, what a DynamoDB Streams
    record carries as ``dynamodb.NewImage`` and what a Lambda function gets
    in ``Records[].dynamodb.NewImage``. ``data`` and ``metadata`` are decoded
    from their JSON text on first use. An item that is not an event item (see
    :func:`is_event_item`) raises ``CorruptEvent`` (a ``ValueError``).

    >>> e = event_from_item({
    ...     "stream": {"S": "order-1"}, "seq": {"N": "2"}, "position": {"N": "7"},
    ...     "type": {"S": "Placed"}, "data": {"S": '{"total":3}'},
    ...     "id": {"S": "00000000-0000-0000-0000-000000000001"}, "time": {"N": "1700000000000000"}})
    >>> e.stream, e.seq, e.position, e.type, e.data, e.metadata, e.time.year
    ('order-1', 2, 7, 'Placed', {'total': 3}, None, 2023)
    """
    try:
        meta = item.get("metadata")
        return tuple.__new__(
            RecordedEvent,
            (
                item["stream"]["S"],
                int(item["seq"]["N"]),
                int(item["position"]["N"]),
                item["type"]["S"],
                item["data"]["S"],
                None if meta is None else meta["S"],
                uuid.UUID(item["id"]["S"]),
                int(item["time"]["N"]),
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptEvent(
            attribute(item, "stream"),
            attribute(item, "seq"),
            attribute(item, "position"),
            "item",
            f"not a streamsrc event item ({type(exc).__name__}: {exc})",
        ) from None


def commit_events(item: Mapping[str, Any]) -> list[RecordedEvent] | None:
    """The events of a commit item of the log table (``pk = "log"``), with their positions; ``None`` for
    any other item. Such items are the global log (in ``order=stream`` mode: the index), so a
    DynamoDB Streams record of the log table carries events in global order.

    A commit item whose events were too large to copy into it holds none
    (``CorruptEvent`` says so: read them from the store's ``read_all``).

    >>> item = {"pk": {"S": "log"}, "sk": {"S": "00000000000000000008"}, "stream": {"S": "order-1"},
    ...         "seq": {"N": "2"}, "position": {"N": "7"},
    ...         "events": {"S": '[["Paid", "{}", null, "00000000-0000-0000-0000-000000000001", 1],'
    ...                         ' ["Sent", "{}", null, "00000000-0000-0000-0000-000000000002", 2]]'}}
    >>> [(e.stream, e.seq, e.position, e.type) for e in commit_events(item)]
    [('order-1', 2, 7, 'Paid'), ('order-1', 3, 8, 'Sent')]
    """
    try:
        if item["pk"]["S"] != LOG_PK:
            return None
    except (KeyError, TypeError):
        return None
    try:
        stream, seq, position = item["stream"]["S"], int(item["seq"]["N"]), int(item["position"]["N"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptEvent(None, None, None, "commit item", f"{type(exc).__name__}: {exc}") from None
    copy = item.get("events")
    if copy is None:
        raise CorruptEvent(
            stream,
            seq,
            position,
            "commit item",
            "its events were too large to copy: read them from the store",
        )
    try:
        return [
            tuple.__new__(RecordedEvent, (stream, seq + k, position + k, kind, data, meta, uuid.UUID(id_), t))
            for k, (kind, data, meta, id_, t) in enumerate(json.loads(copy["S"]))
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptEvent(
            stream, seq, position, "commit item's copy", f"{type(exc).__name__}: {exc}"
        ) from None


def attribute(item: Mapping[str, Any], name: str) -> object:
    """An attribute's value as the item holds it (for messages about a damaged item), or ``None``."""
    try:
        value = item[name]
        return next(iter(value.values())) if isinstance(value, Mapping) else value
    except (KeyError, TypeError, StopIteration):
        return None


def event_item(
    stream: str, seq: int, position: int, event: EncodedEvent, time_us: int
) -> dict[str, dict[str, str]]:
    item = {
        "stream": {"S": stream},
        "seq": {"N": str(seq)},
        "position": {"N": str(position)},
        "type": {"S": event.type},
        "data": {"S": event.data},
        "id": {"S": str(event.id)},
        "time": {"N": str(time_us)},
    }
    if event.metadata is not None:
        item["metadata"] = {"S": event.metadata}
    return item


def text_bytes(text: str) -> int:
    """The UTF-8 size of ``text``, counted only when it could matter (4 bytes a character at most)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def event_bytes(stream_bytes: int, event: EncodedEvent) -> int:
    """An upper bound of the stored size of an event item (attribute names, values, numbers as 21)."""
    meta = 0 if event.metadata is None else 8 + text_bytes(event.metadata)
    return 39 + 3 * 21 + 36 + stream_bytes + text_bytes(event.type) + text_bytes(event.data) + meta


def log_key(position: int) -> str:
    """The sort key of the commit item whose last position is ``position`` (20 digits: sorted as numbers)."""
    return f"{position:020d}"


def seq_key(seq: int) -> str:
    """The sort key of a span starting at ``seq`` (20 digits: sorted as numbers)."""
    return f"{seq:020d}"


def streams_pk(stream: str) -> str:
    """Scale mode: the registry partition of ``stream`` (CRC-32 of its name, :data:`STREAM_SHARDS` ways).

    >>> streams_pk("order-1")
    'streams:15'
    """
    return f"streams:{zlib.crc32(stream.encode('utf-8', 'surrogatepass')) % STREAM_SHARDS}"


def table_names(table: str) -> dict[str, str]:
    """The tables of a store whose events table is ``table``: ``events``, ``log``, ``snapshots``,
    ``checkpoints``.

    >>> table_names("shop")["log"]
    'shop.log'
    """
    return {
        "events": table,
        "log": f"{table}.log",
        "snapshots": f"{table}.snapshots",
        "checkpoints": f"{table}.checkpoints",
    }


KEYS: dict[str, list[tuple[str, str]]] = {
    "events": [("stream", "S"), ("seq", "N")],
    "log": [("pk", "S"), ("sk", "S")],
    "snapshots": [("key", "S"), ("seq", "N")],
    "checkpoints": [("name", "S")],
}


def too_long(name: str) -> bool:
    """Whether ``name`` is over the bytes a DynamoDB key may hold (encoded only when it could be)."""
    return len(name) > MAX_NAME_BYTES // 4 and len(name.encode("utf-8")) > MAX_NAME_BYTES


def check_name(name: str, what: str) -> None:
    """``check_key``, and the length a DynamoDB key may have."""
    check_key(name, what)
    if too_long(name):
        raise InvalidEvent(f"{what} is over the {MAX_NAME_BYTES} UTF-8 bytes a DynamoDB key may hold")


def checkpoint_key(name: str) -> str:
    """The key of checkpoint ``name`` (DynamoDB keys cannot be empty; every name gets the same prefix)."""
    return "=" + name
