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
its commit item, an update of the head item conditioned on the head's
current value (``position = :old``), and for a new stream its stream item
(``attribute_not_exists``), else a ``ConditionCheck`` that the stream's last
event is no tombstone (a deleted stream takes nothing: ``StreamDeleted``).
Transactions that touch one item are serialised by DynamoDB, so two appends
can never get the same positions, and an append commits positions ``head + 1
.. head + n`` only if the commit that gave ``head`` is done: **commit order
is position order, and positions have no holes**. ``read_all`` queries the
commit items (``pk = "log"``, ``sk > after``, strongly consistent,
``page_size`` commits a page) and, because positions are dense, *checks*
that each commit starts where the previous one ended: a commit not visible
yet (a hole) ends the read just before it, so a tailing reader never skips
an event, whatever order DynamoDB makes the items of two transactions
visible in. A failed head condition is not a blind retry: the append takes
the head the failure reports and tries again, while the per-event conditions
still decide ``WrongExpectedVersion``.

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
  event and its id) plus the commit, the head and either a new stream's
  stream item or the tombstone check must fit in the 100 items of one
  transaction:
  ``(100 - 3) // 2 = 48``. A larger batch is refused with
  :class:`BatchTooLarge` (an ``InvalidEvent``), as is a batch over the
  4 MB a transaction may carry;
* an event's ``data`` plus ``metadata`` is at most 400,000 bytes by default
  (``max_event_size``, which cannot be set higher): with its stream name,
  type and fields the item stays under DynamoDB's 400 KB. Larger events are
  ``EventTooLarge``.

Reads are strongly consistent unless ``consistent=false``; appends always
read consistently (but an append of no events, which only checks the
expected version, reads as ``consistent`` says). Throttling and transient
errors (and lost connections) are retried with jittered exponential backoff,
``retries`` times, then the operation fails with ``StoreUnavailable`` naming
the cause. Closing the store ends every operation in flight at once with
``StoreUnavailable``.

Two modes (``order=``, recorded in the log table's *mode* item when the
tables are made; a table without one is ``global``; a URL asking for the
other mode is ``IncompatibleSchema``; without ``order=`` the table's own,
``stream`` for a table made now, :data:`_items.DEFAULT_ORDER`):

* ``order=global`` — everything above: positions at append time, one append
  at a time per table.
* ``order=stream`` — scale-out: an append is one transaction of its stream's
  own items only (events, id items, a registry item in one of 16
  ``streams:<k>`` partitions for a new stream): no head, no commit item, no
  lock; ``append`` returns ``positions=()`` and ``count``. An indexer
  (:mod:`streamsrc.store.dynamodb._index`: ``index_events``,
  ``index_stream``, ``rebuild_index``; run by
  :mod:`streamsrc.integrations.dynamodb_index` as a Lambda handler or a
  process) writes the commit items from the table's DynamoDB stream, so
  ``read_all``, ``head`` and every reader of the log work as in ``global``
  mode once an append is indexed; ``store.indexed(result)`` waits for it.
  ``read(stream)`` gives positions from the index's span items (0 until
  indexed). What it lacks: positions at append time, and global order equal
  to commit order (it is the indexer's order; each stream's in seq order).

Retiring streams (``delete_stream``, ``truncate_before``): the tombstone
check above, in both modes; a truncation deletes the event items below the
seq oldest first, in transactions of up to 100 items that also empty (or
drop) their copies in the log's commit items (see ``DynamoDBStore.remove_before``).

URL options: ``order`` (above), ``region``, ``endpoint_url``, ``consistent`` (``true``),
``create`` (``false``: make missing tables on open), ``streams`` (``true``:
tables made with DynamoDB Streams on; ``false`` when nothing reads them),
``page_size``,
``max_event_size``, ``timeout`` (seconds to connect and to read, 10),
``retries`` (5). Credentials come from the usual AWS sources (environment,
profile, role), never from the URL.

The package's modules: ``_items`` (the item layout, limits and codec: no AWS
driver, so ``event_from_item``, ``is_event_item``, ``table_names``,
``Settings``, ``MAX_BATCH``, ``BatchTooLarge`` load without aiobotocore, as a
Lambda function decoding stream records wants), ``_settings`` (the URL),
``_tables`` (the client, creating and checking tables) and ``_store``
(:class:`DynamoDBStore`). ``DynamoDBStore``, ``create_tables`` and
``store_client`` import aiobotocore on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamsrc.store.dynamodb._items import MAX_BATCH as MAX_BATCH
from streamsrc.store.dynamodb._items import MAX_EVENT_SIZE as MAX_EVENT_SIZE
from streamsrc.store.dynamodb._items import BatchTooLarge as BatchTooLarge
from streamsrc.store.dynamodb._items import commit_events as commit_events
from streamsrc.store.dynamodb._items import event_from_item as event_from_item
from streamsrc.store.dynamodb._items import is_event_item as is_event_item
from streamsrc.store.dynamodb._items import table_names as table_names
from streamsrc.store.dynamodb._settings import Settings as Settings

if TYPE_CHECKING:
    from streamsrc.store.dynamodb._index import IndexReport as IndexReport
    from streamsrc.store.dynamodb._index import index_events as index_events
    from streamsrc.store.dynamodb._index import index_stream as index_stream
    from streamsrc.store.dynamodb._index import rebuild_index as rebuild_index
    from streamsrc.store.dynamodb._store import DynamoDBStore as DynamoDBStore
    from streamsrc.store.dynamodb._tables import create_tables as create_tables
    from streamsrc.store.dynamodb._tables import store_client as store_client

__all__ = [
    "MAX_BATCH",
    "MAX_EVENT_SIZE",
    "BatchTooLarge",
    "DynamoDBStore",
    "IndexReport",
    "Settings",
    "commit_events",
    "create_tables",
    "event_from_item",
    "index_events",
    "index_stream",
    "is_event_item",
    "rebuild_index",
    "store_client",
    "table_names",
]

_DRIVER_PARTS = {
    "IndexReport": "streamsrc.store.dynamodb._index",
    "index_events": "streamsrc.store.dynamodb._index",
    "index_stream": "streamsrc.store.dynamodb._index",
    "rebuild_index": "streamsrc.store.dynamodb._index",
    "DynamoDBStore": "streamsrc.store.dynamodb._store",
    "create_tables": "streamsrc.store.dynamodb._tables",
    "store_client": "streamsrc.store.dynamodb._tables",
}


def __getattr__(name: str) -> Any:
    """The parts that need aiobotocore, imported on first use (the codec above never loads it)."""
    module = _DRIVER_PARTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
