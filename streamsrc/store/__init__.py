"""Event stores: the contract (``EventStore`` and friends) and ``open_store(url)``.

The interpreters live one per module: ``memory`` (the reference),
``sqlite`` (the embedded default), ``postgres`` (asyncpg) and ``dynamodb``
(aiobotocore; its items decode with ``streamsrc.store.dynamodb.event_from_item``,
its tables are made by ``streamsrc dynamodb create-tables``). Each imports its driver
itself and maps the driver's errors to :mod:`streamsrc.errors`.
"""

from streamsrc.store._contract import ANY as ANY
from streamsrc.store._contract import NO_STREAM as NO_STREAM
from streamsrc.store._contract import STREAM_EXISTS as STREAM_EXISTS
from streamsrc.store._contract import TOMBSTONE_TYPE as TOMBSTONE_TYPE
from streamsrc.store._contract import AppendResult as AppendResult
from streamsrc.store._contract import AppendSignal as AppendSignal
from streamsrc.store._contract import BatchLimitedStore as BatchLimitedStore
from streamsrc.store._contract import CheckpointStore as CheckpointStore
from streamsrc.store._contract import EventFilter as EventFilter
from streamsrc.store._contract import EventStore as EventStore
from streamsrc.store._contract import Expected as Expected
from streamsrc.store._contract import ExpectedVersion as ExpectedVersion
from streamsrc.store._contract import ImportingStore as ImportingStore
from streamsrc.store._contract import ListingCheckpointStore as ListingCheckpointStore
from streamsrc.store._contract import NotifyingStore as NotifyingStore
from streamsrc.store._contract import RetiringStore as RetiringStore
from streamsrc.store._contract import Snapshot as Snapshot
from streamsrc.store._contract import SnapshotStore as SnapshotStore
from streamsrc.store._contract import Store as Store
from streamsrc.store._contract import StoreTransaction as StoreTransaction
from streamsrc.store._contract import TransactionalStore as TransactionalStore
from streamsrc.store._open import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from streamsrc.store._open import Opener as Opener
from streamsrc.store._open import open_store as open_store
from streamsrc.store._open import redact_url as redact_url
from streamsrc.store._open import register_scheme as register_scheme

__all__ = [
    "ANY",
    "ENTRY_POINT_GROUP",
    "NO_STREAM",
    "STREAM_EXISTS",
    "TOMBSTONE_TYPE",
    "AppendResult",
    "AppendSignal",
    "BatchLimitedStore",
    "CheckpointStore",
    "EventFilter",
    "EventStore",
    "Expected",
    "ExpectedVersion",
    "ImportingStore",
    "ListingCheckpointStore",
    "NotifyingStore",
    "Opener",
    "RetiringStore",
    "Snapshot",
    "SnapshotStore",
    "Store",
    "StoreTransaction",
    "TransactionalStore",
    "open_store",
    "redact_url",
    "register_scheme",
]
