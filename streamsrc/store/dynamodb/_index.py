"""The index of a DynamoDB store in ``order=stream`` mode: the global log, given after the appends.

In ``order=stream`` mode an append writes only its stream's items, so no
position is known when it commits. The **indexer** gives them: it takes the
events the table's DynamoDB stream shows (or a scan of the table finds) and
writes, for each stream's next run of events, one *commit* item of the log
(``pk = "log"``: the same items ``global`` mode writes, so ``read_all`` reads
both alike) and one *span* item (``pk = "spans:<stream>"``, ``sk`` = the run's
first seq: where ``read`` finds the positions of a stream's events), in one
``TransactWriteItems`` with

* the **index head** (the last position given), updated on condition that it
  is still what the indexer read: positions are dense and given once, even
  with two indexers at work (the loser reads again and tries again);
* each stream's **indexed tip** (its last seq indexed), updated on condition
  that it is still the seq before the run: a redelivered or duplicated record
  (``seq`` at or below the tip) is skipped, never indexed twice, and a record
  whose seq is above ``tip + 1`` (a gap: its predecessor not seen yet) is
  *held back* with everything after it in its stream: the index stalls on a
  gap, it never skips one.

Everything is in the transaction: an indexer that crashes before it commits
wrote nothing, one that crashes after wrote all, and the redelivery finds the
tips moved on. So whatever order and however many times the records come (a
Lambda retried, shards read in any order, a shard split whose child is read
before its parent), each event gets exactly one position, and each stream's
events get increasing positions in seq order.

When the indexer was down past the 24 hours DynamoDB Streams keeps records,
:func:`rebuild_index` indexes every event of the table the index lacks, from
a scan (it is also safe to run at any time: the tips make it skip what is
indexed).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import ClientError

from streamsrc.errors import InvalidStoreURL, StoreUnavailable
from streamsrc.events import RecordedEvent, encode_json
from streamsrc.store._contract import to_us
from streamsrc.store.dynamodb._items import (
    HEAD_KEY,
    INLINE_BYTES,
    LOG_PK,
    MAX_TRANSACTION_ITEMS,
    SPANS_PREFIX,
    TIP_SK,
    event_from_item,
    log_key,
    seq_key,
    text_bytes,
)
from streamsrc.store.dynamodb._tables import describe, error_code

if TYPE_CHECKING:
    from streamsrc.store.dynamodb._store import DynamoDBStore

__all__ = ["IndexReport", "index_events", "index_stream", "rebuild_index"]

_PIECE = 100
"""The most events one commit item of the index covers."""
_TRANSACTION_BYTES = 3_000_000
"""The copies of events one index transaction carries at most (DynamoDB allows 4 MB)."""
_MAX_TRIES = 100
"""Index transactions lost to another indexer in a row before giving up."""
_MAX_KEYS = 100


class IndexReport(NamedTuple):
    """What one call of the indexer did.

    ``indexed``: events given positions now; ``skipped``: events the index
    had already (redelivered, duplicated); ``stalled``: for each stream held
    back by a gap, the first seq held back (its predecessor not seen yet:
    hand that record again later); ``head``: the index's last position.

    >>> IndexReport(indexed=3, skipped=1, stalled={"cart-1": 7}, head=40).stalled
    {'cart-1': 7}
    """

    indexed: int
    skipped: int
    stalled: dict[str, int]
    head: int


class _Piece(NamedTuple):
    stream: str
    events: list[RecordedEvent]
    copy: str | None  # the inline copy (JSON text), or None when too large
    size: int


def _stored(event: RecordedEvent) -> tuple[str, str, str | None, str, int]:
    """The event's fields as stored (type, data text, metadata text, id, time in us), decoding nothing
    that an event read from an item keeps as text."""
    get = tuple.__getitem__
    data = get(event, 4)
    if data is None:  # built decoded: encode it
        data = encode_json(event.data)
    meta = get(event, 5)
    if meta is None and event.metadata is not None:
        meta = encode_json(event.metadata)
    moment = get(event, 7)
    return (event.type, data, meta, str(event.id), moment if type(moment) is int else to_us(event.time))


def _pieces(stream: str, run: list[RecordedEvent]) -> list[_Piece]:
    pieces = []
    for k in range(0, len(run), _PIECE):
        part = run[k : k + _PIECE]
        text = encode_json([_stored(e) for e in part])
        size = text_bytes(text)
        if size > INLINE_BYTES:
            pieces.append(_Piece(stream, part, None, 200))
        else:
            pieces.append(_Piece(stream, part, text, size + 200))
    return pieces


async def index_events(store: DynamoDBStore, events: Iterable[RecordedEvent]) -> IndexReport:
    """Give positions to ``events`` (of ``store``'s table, in any order, repeated or not): each stream's
    events above its indexed tip, up to the first gap. See the module's notes.

    :raises InvalidStoreURL: the store is in ``order=global`` mode (its appends give positions).
    :raises StoreUnavailable: if the database fails, or other indexers keep winning every race.

    ``await index_events(store, events)`` with the events of stream records
    (``tests/test_dynamodb_index.py`` runs it on moto's server):

    >>> import inspect
    >>> inspect.iscoroutinefunction(index_events), list(inspect.signature(index_events).parameters)
    (True, ['store', 'events'])
    """
    if not store.scale:  # its appends gave the positions: indexing would give them twice
        raise InvalidStoreURL(f"{store.url} is in order=global mode: it has no index to write")
    pending: dict[str, dict[int, RecordedEvent]] = {}
    for event in events:
        pending.setdefault(event.stream, {})[event.seq] = event
    indexed = skipped = 0
    stalled: dict[str, int] = {}
    head = -1
    for attempt in range(_MAX_TRIES):
        if not pending:
            break
        tips = await _tips(store, list(pending))
        head = await store._read_head(True)
        pieces: list[_Piece] = []
        stalled = {}
        for stream, by_seq in pending.items():
            tip = tips.get(stream, 0)
            run: list[RecordedEvent] = []
            for seq in sorted(by_seq):
                if seq <= tip:
                    skipped += 1
                elif seq == tip + 1:
                    run.append(by_seq[seq])
                    tip = seq
                else:
                    stalled[stream] = seq
                    break
            if run:
                pieces += _pieces(stream, run)
        if not pieces:
            break
        lost = False
        for group in _groups(pieces):
            done = await _write(store, group, head)
            if done is None:
                lost = True
                break
            head = done
            for piece in group:
                indexed += len(piece.events)
                by_seq = pending[piece.stream]
                for e in piece.events:
                    del by_seq[e.seq]
        # What is left: skipped, stalled, or lost to another indexer (try again with what it wrote).
        for stream in list(pending):
            tip = tips.get(stream, 0)
            pending[stream] = {s: e for s, e in pending[stream].items() if s > tip}
            if not pending[stream] or (stream in stalled and not lost):
                del pending[stream]
        if not lost:
            break
        await _pause(attempt)
    else:
        raise StoreUnavailable(
            f"indexing {store.url}: lost the index head to other indexers {_MAX_TRIES} times in a row"
        )
    if head < 0:  # nothing to index: say where the index is
        head = await store._read_head(True)
    return IndexReport(indexed, skipped, stalled, head)


def _groups(pieces: Sequence[_Piece]) -> list[list[_Piece]]:
    """The pieces packed into transactions: one head, one tip per stream and two items per piece each."""
    groups: list[list[_Piece]] = []
    group: list[_Piece] = []
    streams: set[str] = set()
    size = 0
    for piece in pieces:
        items = 1 + 2 * (len(group) + 1) + len(streams | {piece.stream})
        if group and (items > MAX_TRANSACTION_ITEMS or size + piece.size > _TRANSACTION_BYTES):
            groups.append(group)
            group, streams, size = [], set(), 0
        group.append(piece)
        streams.add(piece.stream)
        size += piece.size
    if group:
        groups.append(group)
    return groups


async def _write(store: DynamoDBStore, group: list[_Piece], head: int) -> int | None:
    """One index transaction: the new head, or ``None`` if another indexer moved the head or a tip."""
    log = store.tables["log"]
    items: list[dict[str, Any]] = []
    runs: dict[str, tuple[int, int]] = {}  # stream -> (tip before, tip after)
    position = head
    for piece in group:
        first, count = piece.events[0].seq, len(piece.events)
        commit: dict[str, Any] = {
            "pk": {"S": LOG_PK},
            "sk": {"S": log_key(position + count)},
            "stream": {"S": piece.stream},
            "seq": {"N": str(first)},
            "position": {"N": str(position + 1)},
        }
        if piece.copy is not None:
            commit["events"] = {"S": piece.copy}
        items.append({"Put": {"TableName": log, "Item": commit}})
        span = {
            "pk": {"S": SPANS_PREFIX + piece.stream},
            "sk": {"S": seq_key(first)},
            "position": {"N": str(position + 1)},
            "count": {"N": str(count)},
        }
        items.append({"Put": {"TableName": log, "Item": span}})
        before = runs.get(piece.stream, (first - 1, 0))[0]
        runs[piece.stream] = (before, first + count - 1)
        position += count
    for stream, (before, after) in runs.items():
        tip: dict[str, Any] = {
            "TableName": log,
            "Key": {"pk": {"S": SPANS_PREFIX + stream}, "sk": {"S": TIP_SK}},
            "UpdateExpression": "SET seq = :new",
            "ExpressionAttributeValues": {":new": {"N": str(after)}},
        }
        if before == 0:
            tip["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            tip["ConditionExpression"] = "seq = :old"
            tip["ExpressionAttributeValues"][":old"] = {"N": str(before)}
        items.append({"Update": tip})
    head_update: dict[str, Any] = {
        "TableName": log,
        "Key": HEAD_KEY,
        "UpdateExpression": "SET #p = :new",
        "ExpressionAttributeNames": {"#p": "position"},
        "ExpressionAttributeValues": {":new": {"N": str(position)}},
    }
    if head == 0:
        head_update["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        head_update["ConditionExpression"] = "#p = :old"
        head_update["ExpressionAttributeValues"][":old"] = {"N": str(head)}
    items.append({"Update": head_update})
    try:
        await store._call("indexing", "transact_write_items", raw_errors=True, TransactItems=items)
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise StoreUnavailable(f"indexing {store.url} failed: {describe(exc)}") from exc
        reasons = exc.response.get("CancellationReasons") or []
        if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
            return None
        if any(r.get("Code") not in ("None", None, "TransactionConflict") for r in reasons):
            raise StoreUnavailable(f"indexing {store.url} failed: {describe(exc)}") from exc
        return None  # a conflict with another transaction: read again, try again
    store.appended.notify()  # readers of read_all waiting in this process: there is more to read
    return position


async def _tips(store: DynamoDBStore, streams: Sequence[str]) -> dict[str, int]:
    """The indexed tips of ``streams`` (read consistently; absent: 0)."""
    log = store.tables["log"]
    tips: dict[str, int] = {}
    for k in range(0, len(streams), _MAX_KEYS):
        keys = [{"pk": {"S": SPANS_PREFIX + s}, "sk": {"S": TIP_SK}} for s in streams[k : k + _MAX_KEYS]]
        request: dict[str, Any] = {log: {"Keys": keys, "ConsistentRead": True}}
        attempt = 0
        while request:
            response = await store._call("reading indexed tips", "batch_get_item", RequestItems=request)
            for item in response.get("Responses", {}).get(log, []):
                tips[item["pk"]["S"][len(SPANS_PREFIX) :]] = int(item["seq"]["N"])
            request = response.get("UnprocessedKeys") or {}
            if request:
                await _pause(attempt)
                attempt += 1
    return tips


async def index_stream(store: DynamoDBStore, stream: str) -> IndexReport:
    """Index every event of ``stream`` the index lacks (read from the events table).

    >>> import inspect
    >>> list(inspect.signature(index_stream).parameters)
    ['store', 'stream']
    """
    tip = await store.indexed_tip(stream)
    events = await store.read(stream, after=tip).to_list()
    return await index_events(store, events)


async def rebuild_index(store: DynamoDBStore, *, batch: int = 1000) -> IndexReport:
    """Index every event of the table the index lacks, from a scan of the events table: the recovery
    of an index whose indexer was down past the 24 hours DynamoDB Streams keeps records (and safe
    at any time). The streams come in the scan's order; each stream's events in seq order.

    >>> import inspect
    >>> inspect.signature(rebuild_index).parameters["batch"].default
    1000
    """
    total = IndexReport(0, 0, {}, 0)
    request: dict[str, Any] = {"TableName": store.tables["events"], "ConsistentRead": True}
    held: dict[tuple[str, int], RecordedEvent] = {}
    while True:
        response = await store._call("rebuilding the index", "scan", **request)
        found = list(held.values()) + [event_from_item(item) for item in response.get("Items") or []]
        held = {}
        start = response.get("LastEvaluatedKey")
        for k in range(0, len(found), batch):
            report = await index_events(store, found[k : k + batch])
            total = IndexReport(
                total.indexed + report.indexed, total.skipped + report.skipped, {}, report.head
            )
            for stream, seq in report.stalled.items():  # scan pages may split a stream: keep for later
                held.update({(e.stream, e.seq): e for e in found if e.stream == stream and e.seq >= seq})
        if start is None:
            if held:
                report = await index_events(store, list(held.values()))
                return IndexReport(
                    total.indexed + report.indexed,
                    total.skipped + report.skipped,
                    report.stalled,
                    report.head,
                )
            return total
        request["ExclusiveStartKey"] = start


async def _pause(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
