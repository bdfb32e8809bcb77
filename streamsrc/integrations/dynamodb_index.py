"""The indexer of a DynamoDB store in ``order=stream`` mode: as a Lambda handler or a process.

A table in ``order=stream`` (scale-out) mode takes appends without a global
order; the indexer gives it, from the table's DynamoDB stream (see
:mod:`streamsrc.store.dynamodb._index` for how it is exactly-once, gap-free
and stalls on a gap). Run one of:

* :func:`index_handler` — an AWS Lambda handler, for an event source mapping
  on the events table's stream with ``FunctionResponseTypes:
  ["ReportBatchItemFailures"]`` (a stalled stream is reported as a batch item
  failure at its first held-back record, so AWS delivers it again)::

      handler = index_handler("dynamodb://shop-events?region=eu-west-1")

* :func:`run_indexer` — a long-running process reading the stream (also
  ``streamsrc dynamodb index URL``); it starts each run from the oldest record
  the stream keeps (records already indexed are skipped) and holds back the
  records of a stalled stream until its gap is filled.
* :func:`~streamsrc.store.dynamodb.index_events` — the function both call,
  for a test or a script.

Down past the 24 hours DynamoDB Streams keeps records?
:func:`~streamsrc.store.dynamodb.rebuild_index` (``streamsrc dynamodb index
URL --rebuild``) indexes what the index lacks from a scan of the table.

Projections read the index: ``read_all`` of the store, or, on Lambda, the
*log* table's stream (``TABLE.log``, on in ``order=stream`` mode): its
commit items carry the events with their positions, in global order, and
the handlers of :mod:`streamsrc.integrations.aws_lambda` decode them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio

from streamsrc.errors import InvalidStoreURL
from streamsrc.events import RecordedEvent
from streamsrc.integrations._aws import Malformed, aws_client
from streamsrc.integrations.aws_lambda import _refuse_a_running_loop, decode_records
from streamsrc.integrations.dynamodb_streams import dynamodb_stream_source
from streamsrc.projections import Poll

__all__ = ["INDEXER_POLL", "IndexHandler", "index_handler", "run_indexer"]

log = logging.getLogger(__name__)

INDEXER_POLL = Poll(min_delay=0.1, max_delay=0.25)
"""How often :func:`run_indexer` reads a stream with nothing new: every 0.1 s, then every 0.25 s, as a
Lambda event source mapping polls a shard (4 times a second; DynamoDB Streams allows 5 reads a second
a shard). The wait is the lag an idle indexer adds to an append.

>>> INDEXER_POLL.max_delay
0.25
"""


async def _open(url: str) -> Any:
    from streamsrc.store.dynamodb import DynamoDBStore

    store = await DynamoDBStore(url).open()
    if not store.scale:
        await store.aclose()
        raise InvalidStoreURL(
            f"{store.url} is in order=global mode: its appends give positions themselves, no indexer needed"
        )
    return store


class IndexHandler:
    """A synchronous AWS Lambda handler ``handler(event, context) -> dict`` indexing DynamoDB Streams
    records of an ``order=stream`` table (see :func:`index_handler`).

    >>> IndexHandler("dynamodb://shop-events?region=eu-west-1")
    <IndexHandler dynamodb://shop-events>
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"<IndexHandler {self.url.split('?')[0]}>"

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        _refuse_a_running_loop("index_handler")
        return anyio.run(self.handle, event, context, backend="asyncio")

    async def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        """What :meth:`__call__` does, in the running event loop: ``{"batchItemFailures": [...]}``."""
        from streamsrc.store.dynamodb import index_events

        records = event.get("Records") if isinstance(event, Mapping) else None
        if not isinstance(records, list):
            raise ValueError("not a DynamoDB Streams event: it has no 'Records' list")
        items = [item for record in records for item in decode_records(record)]
        events: list[tuple[str, RecordedEvent]] = []
        failed: str | None = None
        for item in items:
            if item.sequence is None:
                return {"batchItemFailures": [{"itemIdentifier": ""}]}  # retry the whole batch
            if isinstance(item.content, Malformed):
                log.error("index_handler: %s", item.content.reason)
                failed = item.sequence
                break  # index what comes before it; AWS retries from it
            if isinstance(item.content, RecordedEvent):
                events.append((item.sequence, item.content))
        store = await _open(self.url)
        async with store:
            report = await index_events(store, [e for _, e in events])
        for sequence, e in events:  # the first record held back by a gap: AWS delivers it (and on) again
            held = report.stalled.get(e.stream)
            if held is not None and e.seq >= held:
                log.warning("index_handler: stream %r waits for seq %d (a gap)", e.stream, held - 1)
                failed = sequence
                break
        return {"batchItemFailures": [] if failed is None else [{"itemIdentifier": failed}]}


def index_handler(url: str) -> IndexHandler:
    """A Lambda handler indexing the DynamoDB Streams records of the ``order=stream`` table at ``url``.

    >>> handler = index_handler("dynamodb://shop-events?region=eu-west-1")
    >>> handler
    <IndexHandler dynamodb://shop-events>
    """
    return IndexHandler(url)


async def run_indexer(
    url: str, *, live: bool = True, limit: int = 1000, rebuild: bool = False, poll: Poll = INDEXER_POLL
) -> int:
    """Index the ``order=stream`` table at ``url`` from its DynamoDB stream, as a process; the events
    indexed (with ``live=False``, once the stream is read to its end).

    ``rebuild`` first indexes, from a scan, what the index lacks (after an outage past the stream's
    24 hours). ``poll``: how long it waits between reads of a stream with nothing new
    (:data:`INDEXER_POLL`). Records of a stream held back by a gap are kept and tried again with the
    next records.

    :raises InvalidStoreURL: the table is in ``order=global`` mode.
    :raises StoreUnavailable: if the database fails.

    ``streamsrc dynamodb index URL`` runs it; ``live=False`` reads the stream to its end once:

    >>> import inspect
    >>> inspect.signature(run_indexer).parameters["live"].default
    True
    """
    from streamsrc.store.dynamodb import index_events, rebuild_index

    store = await _open(url)
    total = 0
    async with store:
        if rebuild:
            total += (await rebuild_index(store)).indexed
        settings = store.settings
        held: dict[tuple[str, int], RecordedEvent] = {}
        async with aws_client(
            "dynamodbstreams", region=settings.region, endpoint_url=settings.endpoint_url
        ) as streams:
            source = dynamodb_stream_source(
                streams, table=store.tables["events"], live=live, limit=limit, poll=poll
            )
            async with source.chunks().open() as chunks:
                async for chunk in chunks:
                    events = [*held.values(), *(r.event for r in chunk)]
                    report = await index_events(store, events)
                    total += report.indexed
                    held = {
                        (e.stream, e.seq): e
                        for e in events
                        if e.stream in report.stalled and e.seq >= report.stalled[e.stream]
                    }
                    if held:
                        log.warning(
                            "indexer: %d events wait for a gap to fill: %s", len(held), report.stalled
                        )
        if held:
            log.error("indexer: stopped with %d events waiting for a gap to fill", len(held))
    return total
