"""``dynamodb://TABLE?region=...``: the DynamoDB interpreter, on aiobotocore (asyncio only).

Tables (made by :func:`create_tables`, ``streamsrc dynamodb create-tables URL``, or
``open_store(URL + "&create=true")``; all on-demand capacity):

* ``TABLE`` — the events: hash key ``stream`` (S), range key ``seq`` (N),
  one item per event with the attributes ``stream`` (S), ``seq`` (N),
  ``position`` (N), ``type`` (S), ``data`` (S: the JSON text), ``metadata``
  (S: JSON text; absent when there is none), ``id`` (S: the canonical UUID
  string) and ``time`` (N: microseconds since the epoch, UTC). DynamoDB
  Streams is on (``NEW_IMAGE``): :func:`event_from_item` decodes such an
  item, from a query, a stream record's ``NewImage`` or a Lambda event alike.
* ``TABLE.log`` — streamsrc's own bookkeeping, in a table of its own so no
  user stream name (any printable text, ``$`` included) can collide with it:
  hash key ``pk`` (S), range key ``sk`` (S). It holds the *head* item
  (``pk = "head"``, the last position given), one *commit* item per append
  (``pk = "log"``, ``sk`` = its last position on 20 digits), one *id* item
  per event (``pk = "id:<uuid>"``) and one *stream* item per stream
  (``pk = "streams"``, ``sk`` = its name, for ``streams()``).
* ``TABLE.snapshots`` (hash ``key`` = ``"<schema version>:<key>"``, range
  ``seq``) and ``TABLE.checkpoints`` (hash ``name``).

Global order (DynamoDB has no global sequence). Every append is ONE
``TransactWriteItems``: its event items (``attribute_not_exists(seq)``: the
stream's compare-and-set), its id items (``attribute_not_exists``: an id is
stored once, which makes retries idempotent and ``DuplicateEvent`` exact),
its commit item, and an update of the head item conditioned on the head's
current value (``position = :old``). Transactions that touch one item are
serialised by DynamoDB, so two appends can never get the same positions, and
an append commits positions ``head + 1 .. head + n`` only if the commit that
gave ``head`` is done: **commit order is position order, and positions have
no holes**. ``read_all`` queries the commit items (``pk = "log"``,
``sk > after``, strongly consistent, ``page_size`` commits a page) and,
because positions are dense, *checks* that each commit starts where the
previous one ended: a commit not
visible yet (a hole) ends the read just before it, so a tailing reader never
skips an event, whatever order DynamoDB makes the items of two transactions
visible in. A failed head condition is not a blind retry: the append takes
the head the failure reports and tries again, while the per-event
conditions still decide ``WrongExpectedVersion``.

The cost: appends to *different* streams are serialised on one item, so a
table takes one append per transaction latency (~10-30 ms on DynamoDB),
whatever the number of writers; writers in several processes that race for
the head lose transactions (one store instance runs its own appends one at
a time, so they never race each other). DynamoDB also caps one item at
1,000 writes/s, and one partition (``pk = "log"``) takes every commit item
(1 MB/s). To spare a read per append, the store remembers the last seq it
saw of each stream (from its appends and reads; never ahead of the table)
and, for an append that creates a stream, assumes it is new: the
conditions on the events' seqs check every such guess. Each commit item
also carries a copy of its events (when the copy fits in 350 KB; else
``read_all`` fetches them from the events table), so ``read_all`` reads one
item per commit — the price is that event bytes are written twice. A per-stream design (DynamoDB Streams order
per key only) would scale further but could not promise one global order.

What the store promises: ``seq`` gap-free per stream; ``position`` strictly
increasing in commit order across all streams, gap-free, never skipped by a
tailing reader; conditional, atomic, idempotent appends as every store.

Limits (checked before anything is sent; nothing is ever split):

* a batch is at most :data:`MAX_BATCH` = 48 events: 2 items per event (the
  event and its id) plus the commit, the head and, for a new stream, its
  stream item must fit in the 100 items of one transaction:
  ``(100 - 3) // 2 = 48``. A larger batch is refused with
  :class:`BatchTooLarge` (an ``InvalidEvent``), as is a batch over the
  4 MB a transaction may carry;
* an event's ``data`` plus ``metadata`` is at most 400,000 bytes by default
  (``max_event_size``, which cannot be set higher): with its stream name,
  type and fields the item stays under DynamoDB's 400 KB. Larger events are
  ``EventTooLarge``.

Reads are strongly consistent unless ``consistent=false``; appends always
read consistently. Throttling and transient errors (and lost connections)
are retried with jittered exponential backoff, ``retries`` times, then the
operation fails with ``StoreUnavailable`` naming the cause.

URL options: ``region``, ``endpoint_url``, ``consistent`` (``true``),
``create`` (``false``: make missing tables on open), ``streams`` (``true``:
tables made with DynamoDB Streams on; ``false`` when nothing reads them),
``page_size``,
``max_event_size``, ``timeout`` (seconds to connect and to read, 10),
``retries`` (5). Credentials come from the usual AWS sources (environment,
profile, role), never from the URL.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
)
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import (
    CorruptEvent,
    IncompatibleSchema,
    InvalidEvent,
    InvalidStoreURL,
    StoreError,
    StoreUnavailable,
)
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json, validate_stream_name
from streamsrc.store._contract import (
    ANY,
    DEFAULT_PAGE_SIZE,
    NO_STREAM,
    AppendResult,
    AppendSignal,
    EncodedEvent,
    EventFilter,
    Expected,
    Snapshot,
    can_be_stored,
    check_existing,
    check_expected,
    check_key,
    encode_batch,
    encode_recorded,
    now_us,
    to_us,
)
from streamsrc.store._url import positive_int, redact_url, seconds, url_options
from streamsrc.stream import Stream

__all__ = [
    "MAX_BATCH",
    "MAX_EVENT_SIZE",
    "BatchTooLarge",
    "DynamoDBStore",
    "Settings",
    "create_tables",
    "event_from_item",
    "is_event_item",
    "table_names",
]

MAX_TRANSACTION_ITEMS = 100
"""DynamoDB's limit on the items of one ``TransactWriteItems``."""
MAX_BATCH = (MAX_TRANSACTION_ITEMS - 3) // 2
"""The most events one append may carry: 2 items each, plus commit, head and stream items (48)."""
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

_UUID = uuid.UUID
_HEAD_KEY = {"pk": {"S": "head"}, "sk": {"S": "0"}}
_LOG = "log"
_STREAMS = "streams"
_ID = "id:"
_MAX_CONTENDED_TRIES = 10_000
"""Tries of one append that keeps losing the head to other writers before it gives up (each loss means
another append committed: the table moved on)."""

_TRANSIENT = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ProvisionedThroughputExceeded",
        "ThrottlingException",
        "ThrottlingError",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflict",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)
"""Error codes (of a call, or of a cancelled transaction's items) worth trying again after a pause."""

_CONNECTION_ERRORS = (
    HTTPClientError,  # connect and read timeouts, closed connections, unreachable endpoints
    ConnectionError,
    aiohttp.ClientError,
    OSError,
    asyncio.TimeoutError,
)


class BatchTooLarge(InvalidEvent):
    """A batch DynamoDB cannot write in one transaction (too many events or bytes); nothing was written.

    A batch is never split (that would lose its atomicity): append it in
    smaller batches of your own, at most :data:`MAX_BATCH` events each.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
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
            _attribute(item, "stream"),
            _attribute(item, "seq"),
            _attribute(item, "position"),
            "item",
            f"not a streamsrc event item ({type(exc).__name__}: {exc})",
        ) from None


def _attribute(item: Mapping[str, Any], name: str) -> object:
    """An attribute's value as the item holds it (for messages about a damaged item), or ``None``."""
    try:
        value = item[name]
        return next(iter(value.values())) if isinstance(value, Mapping) else value
    except (KeyError, TypeError, StopIteration):
        return None


def _event_item(
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


def _text_bytes(text: str) -> int:
    """The UTF-8 size of ``text``, counted only when it could matter (4 bytes a character at most)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _event_bytes(stream_bytes: int, event: EncodedEvent) -> int:
    """An upper bound of the stored size of an event item (attribute names, values, numbers as 21)."""
    meta = 0 if event.metadata is None else 8 + _text_bytes(event.metadata)
    return 39 + 3 * 21 + 36 + stream_bytes + _text_bytes(event.type) + _text_bytes(event.data) + meta


def _fmt(position: int) -> str:
    return f"{position:020d}"


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


_KEYS: dict[str, list[tuple[str, str]]] = {
    "events": [("stream", "S"), ("seq", "N")],
    "log": [("pk", "S"), ("sk", "S")],
    "snapshots": [("key", "S"), ("seq", "N")],
    "checkpoints": [("name", "S")],
}


# ---------------------------------------------------------------------------------------- settings


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def _event_size(raw: str) -> int:
    value = positive_int(raw)
    if value > MAX_EVENT_SIZE:
        raise ValueError(raw)
    return value


def _retries(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 100:
        raise ValueError(raw)
    return value


def _text(raw: str) -> str:
    if not raw:
        raise ValueError(raw)
    return raw


_URL_OPTIONS = {
    "region": _text,
    "endpoint_url": _text,
    "consistent": _boolean,
    "create": _boolean,
    "streams": _boolean,
    "page_size": positive_int,
    "max_event_size": _event_size,
    "timeout": seconds,
    "retries": _retries,
}

_TABLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Settings:
    """What a ``dynamodb://`` URL says: the table, where it is, and how to use it.

    >>> settings = Settings.from_url("dynamodb://shop-events?region=eu-west-1&endpoint_url=http://127.0.0.1:8000")
    >>> settings.table, settings.region, settings.endpoint_url, settings.consistent
    ('shop-events', 'eu-west-1', 'http://127.0.0.1:8000', True)
    """

    table: str
    region: str | None = None
    endpoint_url: str | None = None
    consistent: bool = True
    create: bool = False
    streams: bool = True
    page_size: int = DEFAULT_PAGE_SIZE
    max_event_size: int = MAX_EVENT_SIZE
    timeout: float = 10.0
    retries: int = 5

    @classmethod
    def from_url(cls, url: str) -> Settings:
        """Parse ``dynamodb://TABLE?option=value&...``; ``InvalidStoreURL`` (secrets hidden) if unusable.

        >>> Settings.from_url("dynamodb://shop-events?region=eu-west-1&consistent=false")
        Settings(table='shop-events', region='eu-west-1', endpoint_url=None, consistent=False, ...)
        """
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidStoreURL(f"cannot parse store URL {shown}: {exc}") from None
        if parts.scheme.lower() != "dynamodb":
            raise InvalidStoreURL(f"not a dynamodb:// URL: {shown}")
        if "@" in parts.netloc or parts.path not in ("", "/") or parts.fragment:
            raise InvalidStoreURL(
                f"write dynamodb://TABLE?region=...&endpoint_url=..., not {shown} "
                "(credentials come from the environment, never from the URL)"
            )
        table = parts.netloc
        longest = 255 - len(".checkpoints")
        if not 3 <= len(table) <= longest or not set(table) <= _TABLE_CHARS:
            raise InvalidStoreURL(
                f"bad table name {table!r} in {shown}: "
                f"3 to {longest} characters of a-z, A-Z, 0-9, '_', '.', '-'"
            )
        options = url_options(url, parts.query, _URL_OPTIONS)
        endpoint = options.get("endpoint_url")
        if endpoint is not None:
            try:
                endpoint_parts = urlsplit(endpoint)
            except ValueError:
                endpoint_parts = None
            if endpoint_parts is None or endpoint_parts.scheme not in ("http", "https"):
                raise InvalidStoreURL(f"endpoint_url must be an http(s) URL in {shown}")
            if "@" in endpoint_parts.netloc:  # never usable (requests are signed), and botocore logs it
                raise InvalidStoreURL(
                    f"endpoint_url must not hold credentials in {shown} (they come from the environment)"
                )
        return cls(table, **options)


# ---------------------------------------------------------------------------------------- the store


_PageState = tuple[dict[str, Any] | None, int | None, bool]
"""Paging a query: the key to start after (``None``: the first page), items left to give, whether done."""


class _Commit(NamedTuple):
    stream: str
    first_seq: int
    first: int  # position
    last: int
    events: list[Any] | None  # the inline copy: type, data, metadata, id, time per event


class DynamoDBStore:
    """An event store, snapshot store and checkpoint store in DynamoDB tables (see the module notes).

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.store import open_store
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> url = "dynamodb://doc-shop?region=eu-west-1&endpoint_url=http://{}:{}".format(*server.get_host_and_port())
    >>> async def main() -> None:
    ...     async with open_store(url + "&create=true") as store:  # a DynamoDBStore
    ...         print(await store.append("order-1", [EventData("OrderPlaced", {"total": 12})], expected=0))
    ...         print([(e.stream, e.seq, e.position, e.data) for e in await store.read_all().to_list()])
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):  # moto takes any
    ...     anyio.run(main, backend="asyncio")
    <Success: AppendResult(stream='order-1', last_seq=1, positions=(1,))>
    [('order-1', 1, 1, {'total': 12})]
    >>> server.stop()
    """

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_url(url)
        self.url = redact_url(url)
        self.page_size = self.settings.page_size
        self.max_event_size = self.settings.max_event_size
        self.max_batch = MAX_BATCH
        """The most events one append (or import) may carry: ``streamsrc.migrate.copy`` keeps to it."""
        self.consistent = self.settings.consistent
        self.tables = table_names(self.settings.table)
        self._events_table = self.tables["events"]
        self._log_table = self.tables["log"]
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._head: int | None = None  # the last head seen: the first guess of the next append
        self._seqs: dict[str, int] = {}  # last seq seen per stream (never ahead of the table)
        self._writing = asyncio.Lock()
        self.appended = AppendSignal()
        """Notified after every append through this store that wrote events (or may have)."""

    def __repr__(self) -> str:
        return f"<DynamoDBStore {self.url}>"

    async def open(self) -> DynamoDBStore:
        """Make the client and check the tables (creating them with ``create=true``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio, say
            problem = "the DynamoDB store (aiobotocore) runs on asyncio only"
            raise StoreUnavailable(f"{self.url}: {problem}") from None
        stack = AsyncExitStack()
        self._stack = stack
        try:
            self._client = await stack.enter_async_context(_client(self.settings))
            if self.settings.create:
                await _create_tables(self._client, self.settings, self.url)
            else:
                await _check_tables(self._client, self.settings, self.url)
        except BotoCoreError as exc:  # no region, no credentials, ...
            await self.aclose()
            raise StoreUnavailable(f"cannot open {self.url}: {_describe(exc)}") from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close the client."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _call(
        self, what: str, method: str, *, raw_errors: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """One DynamoDB call, retried with backoff on throttling and transient errors.

        Raises ``StoreUnavailable`` once the tries are used up, or at once for
        errors no retry can help (missing table, no credentials, a request
        DynamoDB refuses); with ``raw_errors`` those refusals come as the
        ``ClientError``, for the caller to read.
        """
        client = self._client
        if client is None:
            raise StoreUnavailable(f"{self!r} is closed")
        call = getattr(client, method)
        attempt = 0
        while True:
            try:
                response: dict[str, Any] = await call(**kwargs)
                return response
            except ClientError as exc:
                code = _code(exc)
                if code == "ResourceNotFoundException":
                    raise StoreUnavailable(f"{what} on {self.url}: {_describe(exc)}") from exc
                if code not in _TRANSIENT:
                    if raw_errors:
                        raise
                    raise StoreUnavailable(f"{what} on {self.url} failed: {_describe(exc)}") from exc
                cause: BaseException = exc
            except _CONNECTION_ERRORS as exc:
                cause = exc
            except (NoCredentialsError, NoRegionError) as exc:
                raise StoreUnavailable(f"{what} on {self.url}: {_describe(exc)}") from exc
            if self._client is not client:  # closed meanwhile: its requests fail, no retry can help
                raise StoreUnavailable(f"{what} on {self.url}: the store was closed") from cause
            if attempt >= self.settings.retries:
                raise StoreUnavailable(
                    f"{what} on {self.url} failed after {attempt + 1} tries: {_describe(cause)}"
                ) from cause
            await _backoff(attempt)
            attempt += 1
            if self._client is not client:
                raise StoreUnavailable(f"{what} on {self.url}: the store was closed") from cause

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        encoded = encode_batch(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        check_expected(stream, expected, 0)  # a bad ``expected`` is a bug: raise before writing
        return await self._append(stream, encoded.unwrap(), expected, None)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append events recorded elsewhere, keeping their ids and times (see ``ImportingStore``)."""
        encoded = encode_recorded(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        return await self._append(stream, batch, expected, [to_us(t) for t in times])

    def _check_size(self, stream: str, batch: list[EncodedEvent]) -> tuple[BatchTooLarge | None, bool]:
        """Whether the batch fits one transaction (the error if not) and whether its copy may fit the
        commit item (the copy's exact size is checked when it is made)."""
        n = len(batch)
        if n > MAX_BATCH:
            return (
                BatchTooLarge(
                    stream,
                    f"{n} events need {2 * n + 3} items, over the {MAX_TRANSACTION_ITEMS} of one DynamoDB "
                    f"transaction: append at most {MAX_BATCH} events at a time",
                ),
                False,
            )
        stream_bytes = _text_bytes(stream)
        events_bytes = sum(_event_bytes(stream_bytes, e) for e in batch)
        inline = events_bytes <= INLINE_BYTES
        total = (
            events_bytes + (INLINE_BYTES if inline else 0) + n * (stream_bytes + 120) + 2 * stream_bytes + 400
        )
        if total > MAX_TRANSACTION_BYTES:
            return (
                BatchTooLarge(
                    stream,
                    f"about {total:,} bytes, over the {MAX_TRANSACTION_BYTES:,} of one DynamoDB transaction",
                ),
                False,
            )
        return None, inline

    async def _append(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[int] | None
    ) -> Result[AppendResult, StoreError]:
        if _too_long(stream):
            return Failure(
                InvalidEvent(
                    f"stream name is over the {MAX_NAME_BYTES} bytes (UTF-8) a DynamoDB key may hold"
                )
            )
        too_large, inline = self._check_size(stream, batch)
        if too_large is not None:
            return Failure(too_large)
        # One append at a time per store: appends are serialised on the head item anyway, and waiting
        # here costs nothing, where racing for the head costs a failed transaction per loser.
        async with self._writing:
            return await self._append_alone(stream, batch, expected, times, inline)

    async def _append_alone(
        self,
        stream: str,
        batch: list[EncodedEvent],
        expected: Expected,
        times: list[int] | None,
        inline: bool,
    ) -> Result[AppendResult, StoreError]:
        n = len(batch)
        try:
            current = self._seqs.get(stream)
            fresh = False
            if current is None and n and (expected is ANY or expected is NO_STREAM or expected == 0):
                current = 0  # a guess, no read: the conditions on the events' seqs check it
            elif current is None:
                current, fresh = await self._current(stream), True
            head = self._head
            for _ in range(_MAX_CONTENDED_TRIES):
                wrong = check_expected(stream, expected, current)
                if wrong is not None:
                    if not fresh:  # what this store saw last may be old: look again before refusing
                        current, fresh = await self._current(stream), True
                        continue
                    if n:
                        existing = await self._existing(stream, batch, expected)
                        if existing is not None:
                            return existing
                    return Failure(wrong)
                if n == 0:
                    return Success(AppendResult(stream, current, ()))
                if head is None:
                    head = await self._read_head(True)
                items = self._items(stream, batch, current, head, times, inline)
                reasons = await self._transact(stream, items)
                if reasons is None:
                    last = head + n
                    self._remember(stream, current + n)
                    if self._head is None or last > self._head:
                        self._head = last
                    self.appended.notify()
                    return Success(AppendResult(stream, current + n, tuple(range(head + 1, last + 1))))
                codes = [r.get("Code") for r in reasons]
                if "ConditionalCheckFailed" in codes[n : 2 * n]:  # an id is stored already
                    existing = await self._existing(stream, batch, expected)
                    if existing is not None:
                        return existing
                if "ConditionalCheckFailed" in codes[:n]:  # the stream moved on
                    current, fresh = await self._current(stream), True
                if "ConditionalCheckFailed" in codes[2 * n :]:  # another append took the head
                    head = _head_from(reasons[-1])
                    if head is None or codes[-2] == "ConditionalCheckFailed":
                        head = await self._read_head(True)
                    self._head = head
        except StoreUnavailable as exc:
            return Failure(exc)
        return Failure(
            StoreUnavailable(f"append to {stream!r} on {self.url} lost the head to other writers too often")
        )

    def _items(
        self,
        stream: str,
        batch: list[EncodedEvent],
        current: int,
        head: int,
        times: list[int] | None,
        inline: bool,
    ) -> list[dict[str, Any]]:
        """The transaction: event items, id items, [stream item], commit item, head update."""
        events_table, log_table = self._events_table, self._log_table
        n = len(batch)
        now = now_us()
        items: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        copy: list[tuple[str, str, str | None, str, int]] = []
        for k, event in enumerate(batch):
            seq, position = current + k + 1, head + k + 1
            t = now if times is None else times[k]
            items.append(
                {
                    "Put": {
                        "TableName": events_table,
                        "Item": _event_item(stream, seq, position, event, t),
                        "ConditionExpression": "attribute_not_exists(#q)",
                        "ExpressionAttributeNames": {"#q": "seq"},
                    }
                }
            )
            ids.append(
                {
                    "Put": {
                        "TableName": log_table,
                        "Item": {
                            "pk": {"S": _ID + str(event.id)},
                            "sk": {"S": "-"},
                            "stream": {"S": stream},
                            "seq": {"N": str(seq)},
                            "position": {"N": str(position)},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            if inline:
                copy.append((event.type, event.data, event.metadata, str(event.id), t))
        items += ids
        if current == 0:
            items.append(
                {"Put": {"TableName": log_table, "Item": {"pk": {"S": _STREAMS}, "sk": {"S": stream}}}}
            )
        commit: dict[str, Any] = {
            "pk": {"S": _LOG},
            "sk": {"S": _fmt(head + n)},
            "stream": {"S": stream},
            "seq": {"N": str(current + 1)},
            "position": {"N": str(head + 1)},
        }
        if inline:  # one JSON text: [[type, data text, metadata text or null, id, time], ...]
            text = encode_json(copy)
            if _text_bytes(text) <= INLINE_BYTES:
                commit["events"] = {"S": text}
        items.append(
            {
                "Put": {
                    "TableName": log_table,
                    "Item": commit,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        )
        head_update: dict[str, Any] = {
            "TableName": log_table,
            "Key": _HEAD_KEY,
            "UpdateExpression": "SET #p = :new",
            "ExpressionAttributeNames": {"#p": "position"},
            "ExpressionAttributeValues": {":new": {"N": str(head + n)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if head == 0:
            head_update["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            head_update["ConditionExpression"] = "#p = :old"
            head_update["ExpressionAttributeValues"][":old"] = {"N": str(head)}
        items.append({"Update": head_update})
        return items

    async def _transact(self, stream: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run the transaction: ``None`` once committed, or the reasons of a failed condition.

        Conflicts with other transactions and throttling are tried again after
        a pause; conditions that failed are returned, never retried here.
        """
        attempt = 0
        while True:
            try:
                await self._call(
                    f"append to {stream!r}", "transact_write_items", raw_errors=True, TransactItems=items
                )
                return None
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    self.appended.notify()  # it may have been written before it failed
                    raise StoreUnavailable(
                        f"append to {stream!r} on {self.url} failed: {_describe(exc)}"
                    ) from exc
                reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
                codes = {r.get("Code") for r in reasons} - {"None", None}
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if not codes <= _TRANSIENT or attempt >= self.settings.retries:
                    raise StoreUnavailable(
                        f"append to {stream!r} on {self.url} failed: {_describe(exc)}"
                    ) from exc
            except BaseException:
                self.appended.notify()  # cancelled or cut off while in flight: it may have been written
                raise
            await _backoff(attempt)
            attempt += 1

    def _remember(self, stream: str, seq: int) -> None:
        seqs = self._seqs
        if len(seqs) >= 10_000 and stream not in seqs:
            seqs.clear()
        if seqs.get(stream, 0) < seq:
            seqs[stream] = seq

    async def _current(self, stream: str) -> int:
        """The stream's last seq, read strongly consistently (0 for no stream)."""
        response = await self._call(
            "reading a stream's version",
            "query",
            TableName=self._events_table,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "stream", "#q": "seq"},
            ExpressionAttributeValues={":s": {"S": stream}},
            ProjectionExpression="#q",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        seq = int(items[0]["seq"]["N"]) if items else 0
        self._remember(stream, seq)
        return seq

    async def _read_head(self, consistent: bool) -> int:
        response = await self._call(
            "reading the head",
            "get_item",
            TableName=self._log_table,
            Key=_HEAD_KEY,
            ConsistentRead=consistent,
        )
        item = response.get("Item")
        head = int(item["position"]["N"]) if item else 0
        if self._head is None or head > self._head:
            self._head = head
        return head

    async def _existing(
        self, stream: str, batch: list[EncodedEvent], expected: Expected
    ) -> Result[AppendResult, StoreError] | None:
        """Decide an append some of whose ids may be stored (``None``: none is)."""
        keys = [{"pk": {"S": _ID + str(e.id)}, "sk": {"S": "-"}} for e in batch]
        found: dict[uuid.UUID, tuple[str, int, int]] = {}
        request: dict[str, Any] = {self._log_table: {"Keys": keys, "ConsistentRead": True}}
        attempt = 0
        while request:
            response = await self._call("looking up event ids", "batch_get_item", RequestItems=request)
            for item in response.get("Responses", {}).get(self._log_table, []):
                found[uuid.UUID(item["pk"]["S"][len(_ID) :])] = (
                    item["stream"]["S"],
                    int(item["seq"]["N"]),
                    int(item["position"]["N"]),
                )
            request = response.get("UnprocessedKeys") or {}
            if request:
                await _backoff(min(attempt, 4))
                attempt += 1
        return check_existing(stream, [e.id for e in batch], expected, found)

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        if isinstance(validate_stream_name(stream), Failure):
            return Stream.empty()  # no stream has such a name (and DynamoDB keys cannot be empty)
        if backwards and after == 0:
            condition, bound = "#s = :s", None
        else:
            condition, bound = ("#s = :s AND #q < :a" if backwards else "#s = :s AND #q > :a"), after
        values: dict[str, Any] = {":s": {"S": stream}}
        if bound is not None:
            values[":a"] = {"N": str(bound)}
        query: dict[str, Any] = {
            "TableName": self._events_table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#s": "stream"} if bound is None else {"#s": "stream", "#q": "seq"},
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not backwards,
            "ConsistentRead": self.consistent,
        }
        remember = self._remember

        def decode(items: list[dict[str, Any]]) -> list[RecordedEvent]:
            events = list(map(event_from_item, items))
            if events:  # what the stream holds at least: the next append to it needs no read of its version
                remember(stream, max(events[0].seq, events[-1].seq))
            return events

        return self._pages("read", query, limit).map_chunks(decode)

    def _pages(self, what: str, query: dict[str, Any], limit: int | None) -> Stream[dict[str, Any]]:
        """The items of a query, page by page (lazily), following ``LastEvaluatedKey``.

        The end is a page *without* ``LastEvaluatedKey``, whatever its length:
        an empty page that carries one (DynamoDB's last page often does, and
        every filtered page may) is not the end.
        """
        start: _PageState = (None, limit, False)
        return Stream.unfold_chunk_eval(start, lambda state: self._page(what, query, state))

    async def _page(
        self, what: str, query: dict[str, Any], state: _PageState
    ) -> tuple[list[dict[str, Any]], _PageState] | None:
        start, left, done = state
        while not done:
            n = self.page_size if left is None else min(self.page_size, left)
            if n <= 0:
                return None
            params = {**query, "Limit": n}
            if start is not None:
                params["ExclusiveStartKey"] = start
            response = await self._call(what, "query", **params)
            items: list[dict[str, Any]] = response.get("Items") or []
            start = response.get("LastEvaluatedKey")
            done = start is None
            if items:
                return items, (start, None if left is None else left - len(items), done)
        return None

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        keep = EventFilter.of(types, stream_prefix)

        async def step(
            state: tuple[int, int | None],
        ) -> tuple[list[RecordedEvent], tuple[int, int | None]] | None:
            bound, left = state
            while left is None or left > 0:
                commits, more = await self._commits(bound, left)
                out: list[RecordedEvent] = []
                for commit in commits:
                    if commit.first > bound + 1:  # a hole: a commit not visible yet; stop before it
                        more = False
                        break
                    events = await self._commit_events(commit)
                    for event in events:
                        if event[2] > bound and (keep.everything or keep.keeps(event[0], event[3])):
                            out.append(event)
                    bound = commit.last
                if left is not None:
                    out = out[:left]
                    left -= len(out)
                if out:
                    return out, (bound if more else -1, left)
                if not more:
                    return None
            return None

        async def guarded(
            state: tuple[int, int | None],
        ) -> tuple[list[RecordedEvent], tuple[int, int | None]] | None:
            if state[0] < 0:  # the last page was the end
                return None
            return await step(state)

        return Stream.unfold_chunk_eval((after, limit), guarded)

    async def _commits(self, after: int, left: int | None) -> tuple[list[_Commit], bool]:
        """Up to a page of commit items with a last position above ``after``; and whether more may follow."""
        n = self.page_size if left is None else max(1, min(self.page_size, left))
        response = await self._call(
            "read_all",
            "query",
            TableName=self._log_table,
            KeyConditionExpression="pk = :log AND sk > :after",
            ExpressionAttributeValues={":log": {"S": _LOG}, ":after": {"S": _fmt(after)}},
            Limit=n,
            ConsistentRead=self.consistent,
        )
        commits = []
        for item in response.get("Items") or []:
            try:
                first = int(item["position"]["N"])
                last = int(item["sk"]["S"])
                inline = item.get("events")
                commits.append(
                    _Commit(
                        item["stream"]["S"],
                        int(item["seq"]["N"]),
                        first,
                        last,
                        None if inline is None else decode_json(inline["S"]),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
                raise CorruptEvent(
                    _attribute(item, "stream"),
                    _attribute(item, "seq"),
                    _attribute(item, "position"),
                    "commit item",
                    f"{type(exc).__name__}: {exc}",
                ) from None
        return commits, "LastEvaluatedKey" in response

    async def _commit_events(self, commit: _Commit) -> list[RecordedEvent]:
        stream, seq, position = commit.stream, commit.first_seq, commit.first
        copy = commit.events
        if copy is not None:
            new = tuple.__new__
            out = []
            try:
                for kind, data, meta, id_, t in copy:
                    out.append(new(RecordedEvent, (stream, seq, position, kind, data, meta, _UUID(id_), t)))
                    seq += 1
                    position += 1
            except (TypeError, ValueError, AttributeError) as exc:
                raise CorruptEvent(
                    stream, seq, position, "commit item's copy", f"{type(exc).__name__}: {exc}"
                ) from None
            return out
        # Too large to copy: the events table has them (always read consistently: the commit is there).
        query = {
            "TableName": self._events_table,
            "KeyConditionExpression": "#s = :s AND #q BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#s": "stream", "#q": "seq"},
            "ExpressionAttributeValues": {
                ":s": {"S": stream},
                ":a": {"N": str(seq)},
                ":b": {"N": str(seq + commit.last - commit.first)},
            },
            "ConsistentRead": True,
        }
        return await self._pages("read_all", query, None).map(event_from_item).to_list()

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        if isinstance(validate_stream_name(stream), Failure):
            return Nothing
        response = await self._call(
            "latest",
            "query",
            TableName=self._events_table,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "stream"},
            ExpressionAttributeValues={":s": {"S": stream}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=self.consistent,
        )
        items = response.get("Items") or []
        if not items:
            return Nothing
        event = event_from_item(items[0])
        self._remember(stream, event.seq)
        return Some(event)

    async def head(self) -> int:
        return await self._read_head(self.consistent)

    def streams(self) -> Stream[str]:
        query = {
            "TableName": self._log_table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": _STREAMS}},
            "ConsistentRead": self.consistent,
        }
        return self._pages("streams", query, None).map(lambda item: item["sk"]["S"])

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        _check_key(key, "snapshot key")
        item = {
            "key": {"S": f"{schema_version}:{key}"},
            "seq": {"N": str(seq)},
            "name": {"S": key},
            "schema_version": {"N": str(schema_version)},
            "state": {"S": encode_json(state)},
            "time": {"N": str(now_us())},
        }
        await self._call("save_snapshot", "put_item", TableName=self.tables["snapshots"], Item=item)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        if not can_be_stored(key):
            return Nothing
        values: dict[str, Any] = {":k": {"S": f"{schema_version}:{key}"}}
        condition = "#k = :k"
        if at_seq is not None:
            condition += " AND #q <= :q"
            values[":q"] = {"N": str(at_seq)}
        query: dict[str, Any] = {
            "TableName": self.tables["snapshots"],
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#k": "key", "#q": "seq"} if at_seq is not None else {"#k": "key"},
            "ScanIndexForward": False,
            "ConsistentRead": self.consistent,
        }
        if at_time is not None:  # filtered pages may come back empty, with more to read
            query["FilterExpression"] = "#t <= :t"
            query["ExpressionAttributeNames"] = {**query["ExpressionAttributeNames"], "#t": "time"}
            values[":t"] = {"N": str(to_us(at_time))}
        query["ExpressionAttributeValues"] = values
        found = (
            await self._pages("load_snapshot", query, None if at_time is not None else 1).take(1).to_list()
        )
        if not found:
            return Nothing
        item = found[0]
        try:
            moment = datetime.fromtimestamp(int(item["time"]["N"]) / 1_000_000, UTC)
            state = decode_json(item["state"]["S"])
        except (
            KeyError,
            TypeError,
            ValueError,
            RecursionError,
        ):  # a damaged item: a shortcut, replay instead
            return Nothing
        return Some(Snapshot(key, int(item["seq"]["N"]), state, schema_version, moment))

    # -- checkpoints

    async def load_checkpoint(self, name: str) -> int:
        if not can_be_stored(name):
            return 0
        response = await self._call(
            "load_checkpoint",
            "get_item",
            TableName=self.tables["checkpoints"],
            Key={"name": {"S": _checkpoint_key(name)}},
            ConsistentRead=self.consistent,
        )
        item = response.get("Item")
        return int(item["position"]["N"]) if item else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        _check_key(name, "checkpoint name")
        item = {
            "name": {"S": _checkpoint_key(name)},
            "position": {"N": str(position)},
            "time": {"N": str(now_us())},
        }
        await self._call("save_checkpoint", "put_item", TableName=self.tables["checkpoints"], Item=item)


def _too_long(name: str) -> bool:
    """Whether ``name`` is over the bytes a DynamoDB key may hold (encoded only when it could be)."""
    return len(name) > MAX_NAME_BYTES // 4 and len(name.encode("utf-8")) > MAX_NAME_BYTES


def _check_key(name: str, what: str) -> None:
    """``check_key``, and the length a DynamoDB key may have."""
    check_key(name, what)
    if _too_long(name):
        raise InvalidEvent(f"{what} is over the {MAX_NAME_BYTES} UTF-8 bytes a DynamoDB key may hold")


def _checkpoint_key(name: str) -> str:
    return "=" + name  # DynamoDB keys cannot be empty; every name gets the same prefix


def _head_from(reason: Mapping[str, Any]) -> int | None:
    """The head a failed head condition reports (``ALL_OLD``), if it does."""
    item = reason.get("Item")
    if not item:
        return None
    try:
        return int(item["position"]["N"])
    except (KeyError, TypeError, ValueError):
        return None


async def _backoff(attempt: int) -> None:
    """Full-jitter exponential backoff: up to 50 ms, 100 ms, 200 ms, ... (at most 2 s)."""
    await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------- tables


def _client(settings: Settings) -> Any:
    """An aiobotocore DynamoDB client (an async context manager) with bounded timeouts and no retries
    of botocore's own (the store retries what is worth retrying)."""
    config = Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        retries={"total_max_attempts": 1},
        max_pool_connections=50,
    )
    global _session
    if _session is None:  # one per process: it caches the service model every client loads
        _session = get_session()
    return _session.create_client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
    )


_session: Any = None


def _definition(name: str, keys: list[tuple[str, str]], streams: bool) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": attr, "KeyType": "HASH" if k == 0 else "RANGE"}
            for k, (attr, _) in enumerate(keys)
        ],
        "AttributeDefinitions": [{"AttributeName": attr, "AttributeType": kind} for attr, kind in keys],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if streams:
        definition["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    return definition


async def _describe_table(client: Any, name: str) -> dict[str, Any] | None:
    try:
        response = await client.describe_table(TableName=name)
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            return None
        raise
    table: dict[str, Any] = response["Table"]
    return table


def _check_keys(table: Mapping[str, Any], role: str, shown: str) -> None:
    want = _KEYS[role]
    schema = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    expected = {attr: "HASH" if k == 0 else "RANGE" for k, (attr, _) in enumerate(want)}
    if schema != expected or any(types.get(attr) != kind for attr, kind in want):
        raise IncompatibleSchema(
            f"table {table.get('TableName')!r} of {shown} has keys {schema}, not streamsrc's {expected}"
        )


async def _create_tables(client: Any, settings: Settings, shown: str) -> list[str]:
    """Create the missing tables (all at once), wait until all are active; the names of those it created.

    Tables that exist already are checked (their keys must be streamsrc's) and kept.
    """

    async def create(role: str, name: str) -> str | None:
        try:
            streams = role == "events" and settings.streams
            response = await client.create_table(**_definition(name, _KEYS[role], streams))
            table: dict[str, Any] | None = response.get("TableDescription")
            made: str | None = name
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # it exists (or is being made): fine
                raise
            table, made = await _describe_table(client, name), None
            if table is not None:
                _check_keys(table, role, shown)
        for _ in range(600):
            if table is not None and table.get("TableStatus") == "ACTIVE":
                return made
            await asyncio.sleep(0.2)
            table = await _describe_table(client, name)
        raise StoreUnavailable(f"table {name!r} of {shown} did not become active")

    try:
        made = await asyncio.gather(
            *(create(role, name) for role, name in table_names(settings.table).items())
        )
    except (ClientError, BotoCoreError, *_CONNECTION_ERRORS) as exc:
        raise StoreUnavailable(f"cannot create the tables of {shown}: {_describe(exc)}") from exc
    return [name for name in made if name is not None]


async def _check_tables(client: Any, settings: Settings, shown: str) -> None:
    async def check(role: str, name: str) -> None:
        table = await _describe_table(client, name)
        if table is None:
            raise StoreUnavailable(
                f"table {name!r} of {shown} does not exist: run "
                f"`streamsrc dynamodb create-tables '{shown}'` or open the store with create=true"
            )
        _check_keys(table, role, shown)

    try:
        await asyncio.gather(*(check(role, name) for role, name in table_names(settings.table).items()))
    except (ClientError, BotoCoreError, *_CONNECTION_ERRORS) as exc:
        raise StoreUnavailable(f"cannot open {shown}: {_describe(exc)}") from exc


async def create_tables(url: str) -> list[str]:
    """Create the tables of the store at ``url`` that do not exist yet (DynamoDB Streams on for the
    events); the names of those it created. Safe to run again: existing tables are checked, kept.

    Runs on asyncio (aiobotocore). From a shell:
    ``streamsrc dynamodb create-tables 'dynamodb://TABLE?region=...'``.

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> url = "dynamodb://doc-tables?region=eu-west-1&endpoint_url=http://{}:{}".format(*server.get_host_and_port())
    >>> async def main() -> None:
    ...     print(await create_tables(url))
    ...     print(await create_tables(url))  # again: nothing to do
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):  # moto takes any
    ...     anyio.run(main, backend="asyncio")
    ['doc-tables', 'doc-tables.log', 'doc-tables.snapshots', 'doc-tables.checkpoints']
    []
    >>> server.stop()
    """
    settings = Settings.from_url(url)
    shown = redact_url(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise StoreUnavailable(f"{shown}: the DynamoDB store (aiobotocore) runs on asyncio only") from None
    try:
        async with _client(settings) as client:
            return await _create_tables(client, settings, shown)
    except (NoRegionError, NoCredentialsError) as exc:
        raise StoreUnavailable(f"cannot create the tables of {shown}: {_describe(exc)}") from exc
