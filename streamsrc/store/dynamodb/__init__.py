"""``dynamodb://TABLE?region=...``: the DynamoDB interpreter (see :mod:`streamsrc.store.dynamodb._store`)."""

from streamsrc.store.dynamodb._store import MAX_BATCH as MAX_BATCH
from streamsrc.store.dynamodb._store import MAX_EVENT_SIZE as MAX_EVENT_SIZE
from streamsrc.store.dynamodb._store import BatchTooLarge as BatchTooLarge
from streamsrc.store.dynamodb._store import DynamoDBStore as DynamoDBStore
from streamsrc.store.dynamodb._store import Settings as Settings
from streamsrc.store.dynamodb._store import _client as _client
from streamsrc.store.dynamodb._store import create_tables as create_tables
from streamsrc.store.dynamodb._store import event_from_item as event_from_item
from streamsrc.store.dynamodb._store import is_event_item as is_event_item
from streamsrc.store.dynamodb._store import table_names as table_names

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
