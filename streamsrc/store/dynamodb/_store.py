"""The DynamoDB store: :class:`DynamoDBStore`, on :class:`~streamsrc.store.base.StoreBase`.

How the tables are laid out and why appends are serialised on one head item
is told in the package's notes (:mod:`streamsrc.store.dynamodb`); this module
implements the base's primitives over aiobotocore.

Every DynamoDB call the store makes runs in a cancel scope the store keeps
while it is in flight: closing the store cancels them all before it closes
the client, so an operation in flight at the close fails at once with
``StoreUnavailable`` ("the store was closed") instead of waiting on a
connection the close took away.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.lowlevel
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
from returns.result import Result, Success

from streamsrc.errors import CorruptEvent, InvalidEvent, StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json
from streamsrc.store._contract import (
    ANY,
    NO_STREAM,
    TOMBSTONE_TYPE,
    AppendResult,
    EncodedEvent,
    EventFilter,
    Expected,
    check_expected,
    now_us,
)
from streamsrc.store._url import redact_url
from streamsrc.store.base import (
    MAX_SEQ,
    EventAddress,
    IdsTaken,
    Inserted,
    Page,
    PageRequest,
    StoreBase,
    StoredSnapshot,
    StreamGone,
    Truncated,
    VersionConflict,
    Written,
)
from streamsrc.store.dynamodb._items import (
    HEAD_KEY,
    ID_PREFIX,
    INLINE_BYTES,
    LOG_PK,
    MAX_BATCH,
    MAX_NAME_BYTES,
    MAX_TRANSACTION_BYTES,
    MAX_TRANSACTION_ITEMS,
    SPANS_PREFIX,
    STREAM_SHARDS,
    STREAMS_PK,
    TIP_SK,
    BatchTooLarge,
    attribute,
    check_name,
    checkpoint_key,
    event_bytes,
    event_from_item,
    event_item,
    log_key,
    seq_key,
    streams_pk,
    table_names,
    text_bytes,
    too_long,
)
from streamsrc.store.dynamodb._settings import Settings
from streamsrc.store.dynamodb._tables import (
    CONNECTION_ERRORS,
    DRIVER_ERRORS,
    check_tables,
    create_missing_tables,
    describe,
    error_code,
    settle_order,
    store_client,
)

__all__ = ["DynamoDBStore"]

T = TypeVar("T")

_UUID = uuid.UUID
_new = tuple.__new__
_MAX_CONTENDED_TRIES = 200
"""Tries of one append that keeps losing a race (the head to other writers in ``global`` mode, its
stream's next seq to other writers of the stream with ``expected=ANY``) before it gives up; each loss
means another append committed, and the next try waits a jittered, growing pause first."""
_MAX_KEYS = 100
"""The most keys one ``BatchGetItem`` may ask for."""

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


class _Last(NamedTuple):
    seq: int  # the stream's last seq, 0 if it has no events
    deleted: bool  # whether that event is its tombstone


def _start(last: int, expected: Expected, times: Sequence[int] | None) -> tuple[int, bool, bool]:
    """Where a batch goes in a stream whose last seq was just read: ``(current, fresh, new)``. An
    import (``times``) with an expected version into a stream with no events starts past it (its
    source was truncated): a new stream at ``expected``."""
    if last == 0 and times is not None and type(expected) is int and expected > 0:
        return expected, True, True
    return last, True, last == 0


def _event_puts(
    events_table: str, log_table: str, stream: str, seq: int, position: int, event: EncodedEvent, time_us: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two writes of one event in an append's transaction: its item (only if its seq is free) and
    its id item (only if the id is new). ``position`` 0: not known yet (``order=stream``)."""
    put_event = {
        "Put": {
            "TableName": events_table,
            "Item": event_item(stream, seq, position, event, time_us),
            "ConditionExpression": "attribute_not_exists(#q)",
            "ExpressionAttributeNames": {"#q": "seq"},
        }
    }
    id_item = {
        "pk": {"S": ID_PREFIX + str(event.id)},
        "sk": {"S": "-"},
        "stream": {"S": stream},
        "seq": {"N": str(seq)},
        "position": {"N": str(position)},
    }
    return put_event, {
        "Put": {"TableName": log_table, "Item": id_item, "ConditionExpression": "attribute_not_exists(pk)"}
    }


def _put_new(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A put of an item that must not exist yet (a new stream's registry item: the stream is new)."""
    return {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}


class _Commit(NamedTuple):
    stream: str
    first_seq: int
    first: int  # position
    last: int
    events: list[Any] | None  # the inline copy: type, data, metadata, id, time per event


class DynamoDBStore(StoreBase):
    """An event store, snapshot store and checkpoint store in DynamoDB tables (see the package notes).

    >>> import os
    >>> from unittest import mock
    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store import open_store
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> url = "dynamodb://doc-shop?region=eu-west-1&endpoint_url=http://{}:{}".format(*server.get_host_and_port())
    >>> from streamsrc.store.dynamodb import index_stream
    >>> async def main() -> None:
    ...     async with open_store(url + "&create=true&order=global") as store:  # positions at once
    ...         print(await store.append("order-1", [EventData("OrderPlaced", {"total": 12})], expected=0))
    ...         print([(e.stream, e.seq, e.position, e.data) for e in await store.read_all().to_list()])
    ...     async with open_store(url.replace("doc-shop", "doc-2") + "&create=true&order=stream") as store:
    ...         result = (await store.append("order-1", [EventData("OrderPlaced", {"total": 12})])).unwrap()
    ...         print(store.order, result, result.first_seq, await store.read_all().to_list())
    ...         print(await index_stream(store, "order-1"))  # what the indexer does, from DynamoDB Streams
    ...         print(await store.indexed(result, timeout=5))
    ...         print([(e.stream, e.seq, e.position, e.data) for e in await store.read_all().to_list()])
    >>> with mock.patch.dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x"):  # moto takes any
    ...     anyio.run(main, backend="asyncio")
    <Success: AppendResult(stream='order-1', last_seq=1, positions=(1,))>
    [('order-1', 1, 1, {'total': 12})]
    stream AppendResult(stream='order-1', last_seq=1, positions=()) 1 []
    IndexReport(indexed=1, skipped=0, stalled={}, head=1)
    AppendResult(stream='order-1', last_seq=1, positions=(1,))
    [('order-1', 1, 1, {'total': 12})]
    >>> server.stop()
    """

    driver_errors = DRIVER_ERRORS

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        settings = settings if settings is not None else Settings.from_url(url)
        super().__init__(page_size=settings.page_size, max_event_size=settings.max_event_size)
        self.settings = settings
        self.url = redact_url(url)
        self.max_batch = MAX_BATCH
        """The most events one append (or import) may carry: ``streamsrc.migrate.copy`` keeps to it."""
        self.consistent = settings.consistent
        self.tables = table_names(settings.table)
        self._events_table = self.tables["events"]
        self._log_table = self.tables["log"]
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._head: int | None = None  # the last head seen: the first guess of the next append
        self._seqs: dict[str, int] = {}  # last seq seen per stream (never ahead of the table)
        self._writing = asyncio.Lock()
        self.order = settings.order or "global"
        """``stream`` (scale-out: positions given by the indexer) or ``global`` (the head item); the
        table's own, known once open."""
        self._flights: set[anyio.CancelScope] = set()  # the work in flight, cancelled by the close

    def __repr__(self) -> str:
        return f"<DynamoDBStore {self.url}>"

    def describe(self, exc: BaseException) -> str:
        return describe(exc)

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
            self._client = await stack.enter_async_context(store_client(self.settings))
            if self.settings.create:
                made = await create_missing_tables(self._client, self.settings, self.url)
            else:
                await check_tables(self._client, self.settings, self.url)
                made = []
            self.order = await settle_order(self._client, self.settings, self.url, self._log_table in made)
        except BotoCoreError as exc:  # no region, no credentials, ...
            await self.aclose()
            raise StoreUnavailable(f"cannot open {self.url}: {describe(exc)}") from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def close(self) -> None:
        """Fail every operation in flight (cancelled, it ends with ``StoreUnavailable``), close the client."""
        for scope in list(self._flights):
            scope.cancel()
        await anyio.lowlevel.cancel_shielded_checkpoint()  # let them unwind before their connections go
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _in_flight(self, what: str, call: Awaitable[T]) -> T:
        """Await ``call`` in a cancel scope the close cancels: then it ends with ``StoreUnavailable``."""
        with anyio.CancelScope() as scope:
            self._flights.add(scope)
            try:
                return await call
            finally:
                self._flights.discard(scope)
        raise StoreUnavailable(f"{what} on {self.url}: the store was closed")

    async def _call(
        self, what: str, method: str, *, raw_errors: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """One DynamoDB call, retried with backoff on throttling and transient errors.

        Raises ``StoreUnavailable`` once the tries are used up, at once for
        errors no retry can help (missing table, no credentials, a request
        DynamoDB refuses), and when the store closes meanwhile; with
        ``raw_errors`` those refusals come as the ``ClientError``, for the
        caller to read.
        """
        client = self._client
        if client is None or self._closed:
            raise StoreUnavailable(f"{what} on {self.url}: the store is closed")
        return await self._in_flight(what, self._tries(client, what, method, raw_errors, kwargs))

    async def _tries(
        self, client: Any, what: str, method: str, raw_errors: bool, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        call = getattr(client, method)
        attempt = 0
        while True:
            try:
                response: dict[str, Any] = await call(**kwargs)
                return response
            except ClientError as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    raise StoreUnavailable(f"{what} on {self.url}: {describe(exc)}") from exc
                if code not in _TRANSIENT:
                    if raw_errors:
                        raise
                    raise StoreUnavailable(f"{what} on {self.url} failed: {describe(exc)}") from exc
                cause: BaseException = exc
            except CONNECTION_ERRORS as exc:
                cause = exc
            except (NoCredentialsError, NoRegionError) as exc:
                raise StoreUnavailable(f"{what} on {self.url}: {describe(exc)}") from exc
            if attempt >= self.settings.retries:
                raise StoreUnavailable(
                    f"{what} on {self.url} failed after {attempt + 1} tries: {describe(cause)}"
                ) from cause
            await _backoff(attempt)
            attempt += 1

    # -- appends

    def _check_size(self, stream: str, batch: Sequence[EncodedEvent]) -> bool:
        """Raise ``BatchTooLarge`` unless the batch fits one transaction; whether its copy may fit the
        commit item (the copy's exact size is checked when it is made)."""
        n = len(batch)
        if n > MAX_BATCH:
            raise BatchTooLarge(
                stream,
                f"{n} events need {2 * n + 3} items, over the {MAX_TRANSACTION_ITEMS} of one DynamoDB "
                f"transaction: append at most {MAX_BATCH} events at a time",
            )
        stream_bytes = text_bytes(stream)
        events_bytes = sum(event_bytes(stream_bytes, e) for e in batch)
        inline = events_bytes <= INLINE_BYTES
        total = (
            events_bytes + (INLINE_BYTES if inline else 0) + n * (stream_bytes + 120) + 2 * stream_bytes + 400
        )
        if total > MAX_TRANSACTION_BYTES:
            raise BatchTooLarge(
                stream,
                f"about {total:,} bytes, over the {MAX_TRANSACTION_BYTES:,} of one DynamoDB transaction",
            )
        return inline

    @property
    def scale(self) -> bool:
        """Whether the table is in ``order=stream`` (scale-out) mode."""
        return self.order == "stream"

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """As every store's (see ``StoreBase.append``); in ``order=stream`` mode the result's
        ``positions`` is empty (the indexer gives them later: :meth:`indexed`) and ``count`` says how
        many events were written."""
        return _counted(await super().append(stream, events, expected), len(events))

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """As every store's (see ``StoreBase.import_events``); positions as :meth:`append` says."""
        return _counted(await super().import_events(stream, events), len(events))

    async def delete_stream(self, stream: str, expected: Expected = ANY) -> Result[AppendResult, StoreError]:
        """As every store's (see ``StoreBase.delete_stream``); the tombstone's position as :meth:`append`
        says (in ``order=stream`` mode: once indexed)."""
        return _counted(await super().delete_stream(stream, expected), 1)

    async def indexed(self, result: AppendResult, timeout: float = 10.0) -> AppendResult:  # noqa: ASYNC109
        """``result`` with its positions, once the indexer has given them (read-your-writes).

        In ``global`` mode (or for a result that has its positions) ``result`` itself. In
        ``order=stream`` mode, waits until the append's events are in the index, then
        ``read_all(after=p)`` for any ``p`` below its first position shows them.

        :raises TimeoutError: not indexed within ``timeout`` seconds (is the indexer running?).
        :raises StoreUnavailable: if the database fails.
        """
        if not self.scale or result.positions or not result.count:
            return result
        first, last = result.first_seq, result.last_seq
        pause = 0.005
        with anyio.fail_after(timeout):
            while True:
                tip = await self.guard("indexed", self.indexed_tip(result.stream))
                if tip >= last:
                    break
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.2)
        spans = await self.guard("indexed", self._spans(result.stream, first, last))
        positions = tuple(_position(spans, seq) for seq in range(first, last + 1))
        return AppendResult(result.stream, last, positions)

    async def indexed_tip(self, stream: str) -> int:
        """``order=stream`` mode: the last seq of ``stream`` the index holds (0 if none)."""
        response = await self._call(
            "reading an indexed tip",
            "get_item",
            TableName=self._log_table,
            Key={"pk": {"S": SPANS_PREFIX + stream}, "sk": {"S": TIP_SK}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(item["seq"]["N"]) if item else 0

    async def _spans(self, stream: str, low: int, high: int) -> list[tuple[int, int, int]]:
        """``order=stream`` mode: the index spans ``(first seq, count, first position)`` of ``stream``
        that hold seqs ``low .. high``, highest first."""
        query: dict[str, Any] = {
            "TableName": self._log_table,
            "KeyConditionExpression": "pk = :p AND sk <= :h",
            "ExpressionAttributeValues": {
                ":p": {"S": SPANS_PREFIX + stream},
                ":h": {"S": seq_key(high)},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        spans: list[tuple[int, int, int]] = []
        while True:
            response = await self._call("reading index spans", "query", **query)
            for item in response.get("Items") or []:
                first, count = int(item["sk"]["S"]), int(item["count"]["N"])
                if first + count - 1 < low:
                    return spans
                spans.append((first, count, int(item["position"]["N"])))
            start = response.get("LastEvaluatedKey")
            if start is None:
                return spans
            query["ExclusiveStartKey"] = start

    async def _with_positions(self, stream: str, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """``order=stream`` mode: the events of a stream read with their positions from the index
        (0 for events not indexed yet)."""
        seqs = [e.seq for e in events]
        spans = await self._spans(stream, min(seqs), max(seqs))
        if not spans:
            return events
        get = tuple.__getitem__
        return [
            _new(RecordedEvent, (stream, e.seq, _position(spans, e.seq), *get(e, slice(3, 8))))
            for e in events
        ]

    async def insert_batch(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        if too_long(stream):
            raise InvalidEvent(
                f"stream name is over the {MAX_NAME_BYTES} bytes (UTF-8) a DynamoDB key may hold"
            )
        inline = self._check_size(stream, batch)
        what = f"append to {stream!r}"
        if self.scale:
            return await self._in_flight(what, self._insert_scale(stream, batch, expected, times))
        return await self._in_flight(what, self._insert(stream, batch, expected, times, inline))

    async def _insert_scale(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        """``order=stream`` mode: one transaction of the stream's own items (its events, their id items
        and, for a new stream, its registry item); no item shared with other streams, no lock."""
        n = len(batch)
        current = self._seqs.get(stream)
        fresh = new = False
        if current is None and (expected is ANY or expected is NO_STREAM or expected == 0):
            current = 0  # a guess, no read: the conditions on the events' seqs check it
        elif current is None:
            last = await self._last_event(stream)
            if last.deleted:
                return StreamGone(last.seq)
            current, fresh, new = _start(last.seq, expected, times)
        for attempt in range(_MAX_CONTENDED_TRIES):
            if check_expected(stream, expected, current) is not None:
                if not fresh:
                    last = await self._last_event(stream)
                    if last.deleted:
                        return StreamGone(last.seq)
                    current, fresh, new = _start(last.seq, expected, times)
                    continue
                return VersionConflict(current)
            items = self._stream_items(stream, batch, current, times, new or current == 0)
            reasons = await self._transact(stream, items)
            if reasons is None:
                self._remember(stream, current + n)
                return Written(current + n, ())
            codes = [r.get("Code") for r in reasons]
            if "ConditionalCheckFailed" in codes[n : 2 * n]:
                return IdsTaken()
            last = await self._last_event(stream)  # the stream moved on, or was deleted
            if last.deleted:
                return StreamGone(last.seq)
            current, fresh, new = _start(last.seq, expected, times)
            if attempt:
                await _backoff(min(attempt, 5))
        raise StoreUnavailable(
            f"append to {stream!r} on {self.url}: other appends to the stream took its next seq "
            f"{_MAX_CONTENDED_TRIES} times in a row"
        )

    def _stream_items(
        self,
        stream: str,
        batch: Sequence[EncodedEvent],
        current: int,
        times: Sequence[int] | None,
        new: bool,
    ) -> list[dict[str, Any]]:
        """Scale mode: events, ids, then the stream's registry item (a new stream: ``new``) or the check
        that its last event is no tombstone; an import starting a stream past #1 also starts its
        indexed tip there (the indexer gives positions from the seq after it)."""
        events_table, log_table = self._events_table, self._log_table
        now = now_us()
        items: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        for k, event in enumerate(batch):
            put_event, put_id = _event_puts(
                events_table, log_table, stream, current + k + 1, 0, event, now if times is None else times[k]
            )
            items.append(put_event)
            ids.append(put_id)
        items += ids
        if new:
            registry = {"pk": {"S": streams_pk(stream)}, "sk": {"S": stream}}
            items.append(_put_new(log_table, registry))
            if current:  # an import of a truncated stream: nothing below it will ever be indexed
                tip = {"pk": {"S": SPANS_PREFIX + stream}, "sk": {"S": TIP_SK}, "seq": {"N": str(current)}}
                items.append(_put_new(log_table, tip))
        else:
            items.append(self._not_deleted(stream, current))
        return items

    def _not_deleted(self, stream: str, seq: int) -> dict[str, Any]:
        """The check that the stream's event ``seq`` (its last) exists and is no tombstone."""
        return {
            "ConditionCheck": {
                "TableName": self._events_table,
                "Key": {"stream": {"S": stream}, "seq": {"N": str(seq)}},
                "ConditionExpression": "attribute_exists(#q) AND #t <> :tombstone",
                "ExpressionAttributeNames": {"#q": "seq", "#t": "type"},
                "ExpressionAttributeValues": {":tombstone": {"S": TOMBSTONE_TYPE}},
            }
        }

    async def _insert(
        self,
        stream: str,
        batch: Sequence[EncodedEvent],
        expected: Expected,
        times: Sequence[int] | None,
        inline: bool,
    ) -> Inserted:
        # One append at a time per store: appends are serialised on the head item anyway, and waiting
        # here costs nothing, where racing for the head costs a failed transaction per loser.
        async with self._writing:
            n = len(batch)
            current = self._seqs.get(stream)
            fresh = new = False
            if current is None and (expected is ANY or expected is NO_STREAM or expected == 0):
                current = 0  # a guess, no read: the conditions on the events' seqs check it
            elif current is None:
                last_event = await self._last_event(stream)
                if last_event.deleted:
                    return StreamGone(last_event.seq)
                current, fresh, new = _start(last_event.seq, expected, times)
            head = self._head
            losses = 0
            for _ in range(_MAX_CONTENDED_TRIES):
                if check_expected(stream, expected, current) is not None:
                    if not fresh:  # what this store saw last may be old: look again before refusing
                        last_event = await self._last_event(stream)
                        if last_event.deleted:
                            return StreamGone(last_event.seq)
                        current, fresh, new = _start(last_event.seq, expected, times)
                        continue
                    return VersionConflict(current)  # the base looks for the batch's ids first
                if head is None:
                    head = await self._read_head(True)
                items = self._items(stream, batch, current, head, times, inline, new or current == 0)
                reasons = await self._transact(stream, items)
                if reasons is None:
                    last = head + n
                    self._remember(stream, current + n)
                    if self._head is None or last > self._head:
                        self._head = last
                    return Written(current + n, tuple(range(head + 1, last + 1)))
                codes = [r.get("Code") for r in reasons]
                if "ConditionalCheckFailed" in codes[n : 2 * n]:  # an id is stored already
                    return IdsTaken()
                if "ConditionalCheckFailed" in codes[:n] + codes[2 * n : -2]:
                    # the stream moved on (its next seq, its registry item), or was deleted
                    last_event = await self._last_event(stream)
                    if last_event.deleted:
                        return StreamGone(last_event.seq)
                    current, fresh, new = _start(last_event.seq, expected, times)
                if "ConditionalCheckFailed" in codes[-2:]:  # another append took the head
                    head = _head_from(reasons[-1])
                    if head is None or codes[-2] == "ConditionalCheckFailed":
                        head = await self._read_head(True)
                    self._head = head
                    losses += 1
                    # Back off with jitter: racing again at once makes every loser lose again.
                    await _backoff(min(losses - 1, 5))
        raise StoreUnavailable(
            f"append to {stream!r} on {self.url}: lost the head item to other writers' appends "
            f"{losses} times in a row (each loss is another append committed first); too many "
            "writers for order=global: see order=stream"
        )

    def _items(
        self,
        stream: str,
        batch: Sequence[EncodedEvent],
        current: int,
        head: int,
        times: Sequence[int] | None,
        inline: bool,
        new: bool,
    ) -> list[dict[str, Any]]:
        """The transaction: event items, id items, the stream item (a new stream: ``new``) or the check
        that the stream's last event is no tombstone, commit item, head update."""
        events_table, log_table = self._events_table, self._log_table
        n = len(batch)
        now = now_us()
        items: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        copy: list[tuple[str, str, str | None, str, int]] = []
        for k, event in enumerate(batch):
            seq, position = current + k + 1, head + k + 1
            t = now if times is None else times[k]
            put_event, put_id = _event_puts(events_table, log_table, stream, seq, position, event, t)
            items.append(put_event)
            ids.append(put_id)
            if inline:
                copy.append((event.type, event.data, event.metadata, str(event.id), t))
        items += ids
        if new:
            items.append(_put_new(log_table, {"pk": {"S": STREAMS_PK}, "sk": {"S": stream}}))
        else:
            items.append(self._not_deleted(stream, current))
        commit: dict[str, Any] = {
            "pk": {"S": LOG_PK},
            "sk": {"S": log_key(head + n)},
            "stream": {"S": stream},
            "seq": {"N": str(current + 1)},
            "position": {"N": str(head + 1)},
        }
        if inline:  # one JSON text: [[type, data text, metadata text or null, id, time], ...]
            text = encode_json(copy)
            if text_bytes(text) <= INLINE_BYTES:
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
            "Key": HEAD_KEY,
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
                if error_code(exc) != "TransactionCanceledException":
                    self.appended.notify()  # it may have been written before it failed
                    raise StoreUnavailable(
                        f"append to {stream!r} on {self.url} failed: {describe(exc)}"
                    ) from exc
                reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons") or []
                codes = {r.get("Code") for r in reasons} - {"None", None}
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if not codes <= _TRANSIENT or attempt >= self.settings.retries:
                    raise StoreUnavailable(
                        f"append to {stream!r} on {self.url} failed: {describe(exc)}"
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

    async def _last_event(self, stream: str) -> _Last:
        """The stream's last seq (0 for no stream) and whether that event is its tombstone, read
        strongly consistently."""
        response = await self._call(
            "reading a stream's version",
            "query",
            TableName=self._events_table,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "stream", "#q": "seq", "#t": "type"},
            ExpressionAttributeValues={":s": {"S": stream}},
            ProjectionExpression="#q, #t",
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        if not items:
            return _Last(0, False)
        seq = int(items[0]["seq"]["N"])
        self._remember(stream, seq)
        return _Last(seq, items[0].get("type", {}).get("S") == TOMBSTONE_TYPE)

    async def _read_head(self, consistent: bool) -> int:
        response = await self._call(
            "reading the head",
            "get_item",
            TableName=self._log_table,
            Key=HEAD_KEY,
            ConsistentRead=consistent,
        )
        item = response.get("Item")
        head = int(item["position"]["N"]) if item else 0
        if self._head is None or head > self._head:
            self._head = head
        return head

    async def find_ids(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventAddress]:
        return await self._in_flight("looking up event ids", self._find_ids(ids))

    async def _find_ids(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventAddress]:
        found: dict[uuid.UUID, EventAddress] = {}
        for k in range(0, len(ids), _MAX_KEYS):
            keys = [{"pk": {"S": ID_PREFIX + str(i)}, "sk": {"S": "-"}} for i in ids[k : k + _MAX_KEYS]]
            request: dict[str, Any] = {self._log_table: {"Keys": keys, "ConsistentRead": True}}
            attempt = 0
            while request:
                response = await self._call("looking up event ids", "batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self._log_table, []):
                    found[uuid.UUID(item["pk"]["S"][len(ID_PREFIX) :])] = EventAddress(
                        item["stream"]["S"], int(item["seq"]["N"]), int(item["position"]["N"])
                    )
                request = response.get("UnprocessedKeys") or {}
                if request:
                    await _backoff(min(attempt, 4))
                    attempt += 1
        return found

    # -- retiring streams

    async def remove_before(self, stream: str, seq: int) -> Truncated:
        """Delete the events of ``stream`` below ``seq`` (never its last), oldest first.

        DynamoDB has no transaction of thousands of items, so a truncation is a series of
        transactions of up to 100 items, each deleting the next events in seq order together with
        the commit items of the log that copy them (a copy emptied, or dropped: ``read_all`` then
        reads what is left of that commit from the events table). Whatever point it is stopped at,
        the stream is truncated before some seq, never holed; running it again finishes it. Items
        are deleted, not given a TTL: a TTL costs the same write per item, and DynamoDB removes
        expired items only within days, so every read would have to filter them meanwhile. The
        events' id items stay (a retry of an old batch is still answered as one; they hold no
        data). In ``order=stream`` mode the stream's events are indexed first (what the indexer
        would do), so the indexer never gives a removed event a position afterwards.
        """
        if too_long(stream):
            raise InvalidEvent(
                f"stream name is over the {MAX_NAME_BYTES} bytes (UTF-8) a DynamoDB key may hold"
            )
        return await self._in_flight(f"truncate {stream!r}", self._remove_before(stream, seq))

    async def _remove_before(self, stream: str, seq: int) -> Truncated:
        version = (await self._last_event(stream)).seq
        if seq > version or seq <= 1:
            return Truncated(0, version)
        if self.scale:
            from streamsrc.store.dynamodb._index import index_stream

            if await self.indexed_tip(stream) < seq - 1:
                await index_stream(self, stream)
                if await self.indexed_tip(stream) < seq - 1:
                    raise StoreUnavailable(
                        f"truncate {stream!r} on {self.url}: its events below #{seq} could not be "
                        "indexed first"
                    )
        removed = 0
        pending: list[dict[str, Any]] = []
        async for commit_key, seqs, whole in self._commits_below(stream, seq):
            removed += len(seqs)
            deletes = [
                {
                    "Delete": {
                        "TableName": self._events_table,
                        "Key": {"stream": {"S": stream}, "seq": {"N": str(q)}},
                    }
                }
                for q in seqs
            ]
            if len(deletes) + 1 <= MAX_TRANSACTION_ITEMS:
                if len(pending) + len(deletes) + 1 > MAX_TRANSACTION_ITEMS:
                    await self._truncating(stream, pending)
                    pending = []
                pending += [self._emptied(commit_key, whole), *deletes]
                continue
            # A commit of more events than a transaction holds: its copy dropped first (read_all then
            # reads its events from the table, as read does), emptied with its last events.
            if pending:
                await self._truncating(stream, pending)
            room = MAX_TRANSACTION_ITEMS - 1
            chunks = [deletes[k : k + room] for k in range(0, len(deletes), room)]
            for k, chunk in enumerate(chunks):
                if k == 0:
                    update = [self._emptied(commit_key, False)]
                elif k == len(chunks) - 1 and whole:
                    update = [self._emptied(commit_key, True)]
                else:
                    update = []
                await self._truncating(stream, update + chunk)
            pending = []
        if pending:
            await self._truncating(stream, pending)
        return Truncated(removed, version)

    async def _commits_below(self, stream: str, seq: int) -> AsyncIterator[tuple[str, list[int], bool]]:
        """For each commit item holding events of ``stream`` below ``seq``, oldest first: its key, those
        seqs, and whether they are all of its events."""
        if self.scale:  # the stream's spans say where its commits are
            query: dict[str, Any] = {
                "TableName": self._log_table,
                "KeyConditionExpression": "pk = :p AND sk < :s",
                "ExpressionAttributeValues": {":p": {"S": SPANS_PREFIX + stream}, ":s": {"S": seq_key(seq)}},
                "ConsistentRead": True,
            }
            while True:
                response = await self._call("truncate", "query", **query)
                for item in response.get("Items") or []:
                    first, position, count = (
                        int(item["sk"]["S"]),
                        int(item["position"]["N"]),
                        int(item["count"]["N"]),
                    )
                    found = await self._existing(stream, first, min(first + count, seq) - 1)
                    if found:
                        yield log_key(position + count - 1), found, first + count <= seq
                start = response.get("LastEvaluatedKey")
                if start is None:
                    return
                query["ExclusiveStartKey"] = start
        # order=global: each event item has its position; the commit holding it is the first at or after
        query = {
            "TableName": self._events_table,
            "KeyConditionExpression": "#s = :s AND #q < :q",
            "ExpressionAttributeNames": {"#s": "stream", "#q": "seq", "#p": "position"},
            "ExpressionAttributeValues": {":s": {"S": stream}, ":q": {"N": str(seq)}},
            "ProjectionExpression": "#q, #p",
            "ConsistentRead": True,
        }
        commit: _Commit | None = None
        seqs: list[int] = []
        while True:
            response = await self._call("truncate", "query", **query)
            for item in response.get("Items") or []:
                q, position = int(item["seq"]["N"]), int(item["position"]["N"])
                if commit is None or position > commit.last:
                    if commit is not None:
                        yield log_key(commit.last), seqs, commit.first_seq + commit.last - commit.first < seq
                    commit, seqs = await self._commit_at(position), []
                seqs.append(q)
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
            query["ExclusiveStartKey"] = start
        if commit is not None:
            yield log_key(commit.last), seqs, commit.first_seq + commit.last - commit.first < seq

    async def _existing(self, stream: str, first: int, last: int) -> list[int]:
        """The seqs from ``first`` to ``last`` that ``stream`` still has (an earlier truncation may have
        removed some)."""
        query: dict[str, Any] = {
            "TableName": self._events_table,
            "KeyConditionExpression": "#s = :s AND #q BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#s": "stream", "#q": "seq"},
            "ExpressionAttributeValues": {
                ":s": {"S": stream},
                ":a": {"N": str(first)},
                ":b": {"N": str(last)},
            },
            "ProjectionExpression": "#q",
            "ConsistentRead": True,
        }
        seqs: list[int] = []
        while True:
            response = await self._call("truncate", "query", **query)
            seqs += [int(item["seq"]["N"]) for item in response.get("Items") or []]
            start = response.get("LastEvaluatedKey")
            if start is None:
                return seqs
            query["ExclusiveStartKey"] = start

    async def _commit_at(self, position: int) -> _Commit:
        """The commit item holding ``position`` (commits cover the positions densely)."""
        response = await self._call(
            "truncate",
            "query",
            TableName=self._log_table,
            KeyConditionExpression="pk = :log AND sk >= :p",
            ExpressionAttributeValues={":log": {"S": LOG_PK}, ":p": {"S": log_key(position)}},
            Limit=1,
            ConsistentRead=True,
        )
        items = response.get("Items") or []
        if not items:
            raise StoreUnavailable(f"truncate on {self.url}: no commit item holds position {position}")
        return _commit(items[0])

    def _emptied(self, commit_key: str, whole: bool) -> dict[str, Any]:
        """The update of a commit item whose events are being removed: all of them (``whole``) — its copy
        made empty, so ``read_all`` finds nothing there — or some — its copy dropped, so ``read_all``
        reads what is left from the events table."""
        update: dict[str, Any] = {
            "TableName": self._log_table,
            "Key": {"pk": {"S": LOG_PK}, "sk": {"S": commit_key}},
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": {"#e": "events"},
        }
        if whole:
            update["UpdateExpression"] = "SET #e = :none"
            update["ExpressionAttributeValues"] = {":none": {"S": "[]"}}
        else:
            update["UpdateExpression"] = "REMOVE #e"
        return {"Update": update}

    async def _truncating(self, stream: str, items: list[dict[str, Any]]) -> None:
        reasons = await self._transact(stream, items)
        if reasons is not None:
            raise StoreUnavailable(
                f"truncate {stream!r} on {self.url}: a commit item of the log is missing "
                f"({[r.get('Code') for r in reasons]})"
            )
        self.appended.notify()  # readers in this process: the log changed

    # -- reads

    async def read_page(self, request: PageRequest) -> Page:
        stream = request.stream
        if stream is None:
            return await self._log_page(request)
        if too_long(stream):
            return Page((), None)  # no stream has such a name
        backwards = request.backwards
        response = await self._call(
            "read",
            "query",
            TableName=self._events_table,
            KeyConditionExpression="#s = :s AND #q < :a" if backwards else "#s = :s AND #q > :a",
            ExpressionAttributeNames={"#s": "stream", "#q": "seq"},
            ExpressionAttributeValues={":s": {"S": stream}, ":a": {"N": str(request.bound)}},
            ScanIndexForward=not backwards,
            Limit=request.size,
            ConsistentRead=self.consistent,
        )
        events = list(map(event_from_item, response.get("Items") or []))
        if not events:
            return Page(events, None)
        if self.scale:
            events = await self._with_positions(stream, events)
        # What the stream holds at least: the next append to it needs no read of its version.
        self._remember(stream, max(events[0].seq, events[-1].seq))
        return Page(events, events[-1].seq if "LastEvaluatedKey" in response else None)

    async def _log_page(self, request: PageRequest) -> Page:
        """A page of the global log: up to ``request.size`` commits after ``request.bound``, their events
        (those the filter keeps), and the last position scanned.

        Positions are dense, so a commit that does not start where the previous one ended is a commit
        not visible yet (a hole): the page ends just before it, and the log for now.
        """
        after = request.bound
        response = await self._call(
            "read_all",
            "query",
            TableName=self._log_table,
            KeyConditionExpression="pk = :log AND sk > :after",
            ExpressionAttributeValues={":log": {"S": LOG_PK}, ":after": {"S": log_key(after)}},
            Limit=request.size,
            ConsistentRead=self.consistent,
        )
        items = response.get("Items") or []
        events: list[RecordedEvent] = []
        scanned = after
        for item in items:
            commit = _commit(item)
            if commit.first > scanned + 1:  # a hole: a commit not visible yet; stop before it
                return Page(events, None)
            await self._commit_events(commit, after, request.filter, events)
            scanned = commit.last
        return Page(events, scanned if items and "LastEvaluatedKey" in response else None)

    async def _commit_events(
        self, commit: _Commit, after: int, keep: EventFilter, out: list[RecordedEvent]
    ) -> None:
        """Add the events of ``commit`` above ``after`` that ``keep`` keeps to ``out``, undecoded: only
        the fields the filter reads are looked at (indexing an event would decode them all)."""
        stream, seq, position = commit.stream, commit.first_seq, commit.first
        if keep.stream_prefix is not None and not stream.startswith(keep.stream_prefix):
            return
        types = keep.types
        copy = commit.events
        if copy is not None:
            try:
                for kind, data, meta, id_, t in copy:
                    if position > after and (types is None or kind in types):
                        out.append(
                            _new(RecordedEvent, (stream, seq, position, kind, data, meta, _UUID(id_), t))
                        )
                    seq += 1
                    position += 1
            except (TypeError, ValueError, AttributeError) as exc:
                raise CorruptEvent(
                    stream, seq, position, "commit item's copy", f"{type(exc).__name__}: {exc}"
                ) from None
            return
        # Too large to copy: the events table has them (always read consistently: the commit is there).
        query: dict[str, Any] = {
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
        while True:
            response = await self._call("read_all", "query", **query)
            for item in response.get("Items") or []:
                event = event_from_item(item)
                at = position + event.seq - seq  # the commit's (in order=stream mode items hold 0)
                if at > after and (types is None or event.type in types):
                    get = tuple.__getitem__
                    out.append(_new(RecordedEvent, (stream, event.seq, at, *get(event, slice(3, 8)))))
            start = response.get("LastEvaluatedKey")
            if start is None:
                return
            query["ExclusiveStartKey"] = start

    async def last_position(self) -> int:
        return await self._read_head(self.consistent)

    async def stream_names(self, after: str, size: int) -> list[str]:
        if self.scale:  # the registry's partitions, merged
            shards = await asyncio.gather(
                *(self._names(f"streams:{k}", after, size) for k in range(STREAM_SHARDS))
            )
            return sorted(name for names in shards for name in names)[:size]
        return await self._names(STREAMS_PK, after, size)

    async def _names(self, pk: str, after: str, size: int) -> list[str]:
        values = {":p": {"S": pk}}
        if after:  # a key cannot be compared with the empty string
            values[":a"] = {"S": after}
        response = await self._call(
            "streams",
            "query",
            TableName=self._log_table,
            KeyConditionExpression="pk = :p AND sk > :a" if after else "pk = :p",
            ExpressionAttributeValues=values,
            Limit=size,
            ConsistentRead=self.consistent,
        )
        return [item["sk"]["S"] for item in response.get("Items") or []]

    # -- snapshots

    async def write_snapshot(self, key: str, schema_version: int, seq: int, state: str, time_us: int) -> None:
        check_name(key, "snapshot key")
        item = {
            "key": {"S": f"{schema_version}:{key}"},
            "seq": {"N": str(seq)},
            "name": {"S": key},
            "schema_version": {"N": str(schema_version)},
            "state": {"S": state},
            "time": {"N": str(time_us)},
        }
        await self._call("save_snapshot", "put_item", TableName=self.tables["snapshots"], Item=item)

    async def read_snapshot(
        self, key: str, schema_version: int, at_seq: int, at_time_us: int
    ) -> StoredSnapshot | None:
        if too_long(key):
            return None
        names = {"#k": "key"}
        values: dict[str, Any] = {":k": {"S": f"{schema_version}:{key}"}}
        condition = "#k = :k"
        if at_seq < MAX_SEQ:
            condition += " AND #q <= :q"
            names["#q"] = "seq"
            values[":q"] = {"N": str(at_seq)}
        query: dict[str, Any] = {
            "TableName": self.tables["snapshots"],
            "KeyConditionExpression": condition,
            "ScanIndexForward": False,
            "ConsistentRead": self.consistent,
            "Limit": 1,
        }
        if at_time_us < MAX_SEQ:  # filtered pages may come back empty, with more to read
            query["FilterExpression"] = "#t <= :t"
            query["Limit"] = self.page_size
            names["#t"] = "time"
            values[":t"] = {"N": str(at_time_us)}
        query["ExpressionAttributeNames"] = names
        query["ExpressionAttributeValues"] = values
        while True:
            response = await self._call("load_snapshot", "query", **query)
            items = response.get("Items")
            if items:
                item = items[0]
                try:  # a damaged item is no snapshot: a shortcut, replay instead
                    return StoredSnapshot(int(item["seq"]["N"]), item["state"]["S"], int(item["time"]["N"]))
                except (KeyError, TypeError, ValueError):
                    return None
            start = response.get("LastEvaluatedKey")
            if start is None:
                return None
            query["ExclusiveStartKey"] = start

    # -- checkpoints

    async def write_checkpoint(self, name: str, position: int, time_us: int) -> None:
        check_name(name, "checkpoint name")
        item = {
            "name": {"S": checkpoint_key(name)},
            "position": {"N": str(position)},
            "time": {"N": str(time_us)},
        }
        await self._call("save_checkpoint", "put_item", TableName=self.tables["checkpoints"], Item=item)

    async def swap_checkpoint(self, name: str, expected: int, position: int, time_us: int) -> bool:
        check_name(name, "checkpoint name")
        item = {
            "name": {"S": checkpoint_key(name)},
            "position": {"N": str(position)},
            "time": {"N": str(time_us)},
        }
        condition = "#p = :expected" + (" OR attribute_not_exists(#p)" if expected == 0 else "")
        try:
            await self._call(
                "save_checkpoint",
                "put_item",
                raw_errors=True,
                TableName=self.tables["checkpoints"],
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#p": "position"},
                ExpressionAttributeValues={":expected": {"N": str(expected)}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise StoreUnavailable(f"save_checkpoint on {self.url} failed: {describe(exc)}") from exc
        return True

    async def read_checkpoint(self, name: str) -> int | None:
        if too_long(name):
            return None
        response = await self._call(
            "load_checkpoint",
            "get_item",
            TableName=self.tables["checkpoints"],
            Key={"name": {"S": checkpoint_key(name)}},
            ConsistentRead=self.consistent,
        )
        item = response.get("Item")
        if not item:
            return None
        try:
            return int(item["position"]["N"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreUnavailable(f"checkpoint {name!r} on {self.url} is damaged: {describe(exc)}") from None

    async def list_checkpoints(self, after: str, size: int) -> list[tuple[str, int]]:
        """A paged Scan of the checkpoints table, resumed after checkpoint ``after`` (its key is the
        scan's ExclusiveStartKey); the table's other items (leases, heartbeats) are filtered out."""
        prefix = checkpoint_key("")
        scan: dict[str, Any] = {
            "TableName": self.tables["checkpoints"],
            "FilterExpression": "begins_with(#n, :prefix)",
            "ExpressionAttributeNames": {"#n": "name"},
            "ExpressionAttributeValues": {":prefix": {"S": prefix}},
            "Limit": size,
            "ConsistentRead": self.consistent,
        }
        if after:
            scan["ExclusiveStartKey"] = {"name": {"S": checkpoint_key(after)}}
        found: list[tuple[str, int]] = []
        while True:  # a filtered page may hold none (all leases): go on until some or the end
            response = await self._call("checkpoints", "scan", **scan)
            for item in response.get("Items") or []:
                key = item["name"]["S"]
                try:
                    found.append((key[len(prefix) :], int(item["position"]["N"])))
                except (KeyError, TypeError, ValueError) as exc:
                    raise StoreUnavailable(
                        f"checkpoint {key[len(prefix) :]!r} on {self.url} is damaged: {describe(exc)}"
                    ) from None
            start = response.get("LastEvaluatedKey")
            if found or not start:
                return found
            scan["ExclusiveStartKey"] = start


def _commit(item: Mapping[str, Any]) -> _Commit:
    """A commit item of the log table, its copy of the events decoded (their data stays JSON text)."""
    try:
        inline = item.get("events")
        return _Commit(
            item["stream"]["S"],
            int(item["seq"]["N"]),
            int(item["position"]["N"]),
            int(item["sk"]["S"]),
            None if inline is None else decode_json(inline["S"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise CorruptEvent(
            attribute(item, "stream"),
            attribute(item, "seq"),
            attribute(item, "position"),
            "commit item",
            f"{type(exc).__name__}: {exc}",
        ) from None


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


def _position(spans: Sequence[tuple[int, int, int]], seq: int) -> int:
    """The position of ``seq`` in the spans that hold it (0: not indexed yet)."""
    for first, count, position in spans:
        if first <= seq < first + count:
            return position + seq - first
    return 0


def _counted(result: Result[AppendResult, StoreError], n: int) -> Result[AppendResult, StoreError]:
    """An append's result, saying how many events it wrote when it has no positions."""
    if isinstance(result, Success):
        value = result.unwrap()
        if not value.positions and n and not value.count and value.last_seq:
            return Success(AppendResult(value.stream, value.last_seq, (), n))
    return result
