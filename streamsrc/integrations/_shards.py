"""Reading a sharded AWS stream (Kinesis, DynamoDB Streams): shard lineage, iterators, polling.

Both services cut a stream into shards; a shard is split or merged into
children when the stream is resharded, and each record of a key goes to the
child only after the parent is closed. Reading a child before its parents are
read to their end would deliver a key's later records before its earlier
ones, so :class:`ShardReader` starts a shard only once every parent it lists
is finished (or no longer listed: trimmed by retention).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from streamsrc.effect import RetryPolicy
from streamsrc.events import RecordedEvent
from streamsrc.integrations._aws import error_code, require_asyncio
from streamsrc.projections import Poll
from streamsrc.stream import Stream

__all__ = [
    "Checkpoint",
    "Page",
    "Shard",
    "ShardApi",
    "ShardReader",
    "ShardRecord",
    "advance",
    "lineage_order",
]

Checkpoint = Mapping[str, str]
"""Where a reader of a sharded stream is: shard id -> sequence number of the last record read."""


@dataclass(frozen=True, slots=True)
class Shard:
    """A shard as listed: its id, its parents (one after a split, two after a merge), whether it is closed."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """A recorded event read from a shard, with the shard and the record's sequence number.

    Save ``{shard_id: sequence_number}`` (see :func:`advance`) once the event
    is handled: reading again from that checkpoint starts just after it.

    >>> import anyio
    >>> from moto.server import ThreadedMotoServer  # AWS's APIs on this machine, for the example
    >>> from streamsrc.events import EventData
    >>> from streamsrc.integrations.kinesis import aws_client, kinesis_sink, kinesis_source
    >>> from streamsrc.store.memory import MemoryStore
    >>> server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    >>> server.start()
    >>> endpoint = "http://{}:{}".format(*server.get_host_and_port())
    >>> fake_keys = dict(aws_access_key_id="x", aws_secret_access_key="x")  # moto takes any
    >>> local = dict(region="eu-west-1", endpoint_url=endpoint, **fake_keys)
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {})])
    ...     async with aws_client("kinesis", **local) as kinesis:
    ...         await kinesis.create_stream(StreamName="orders-records", ShardCount=1)
    ...         await store.read_all().through(kinesis_sink(kinesis, "orders-records")).drain()
    ...         [record] = await kinesis_source(kinesis, "orders-records").to_list()
    ...         print(record.event.type, record.shard_id, record.sequence_number.isdigit())
    >>> anyio.run(main, backend="asyncio")
    OrderPlaced shardId-000000000000 True
    >>> server.stop()
    """

    event: RecordedEvent
    shard_id: str
    sequence_number: str


def advance(checkpoint: Checkpoint, records: Iterable[ShardRecord]) -> dict[str, str]:
    """The checkpoint after ``records`` (read in order) have been handled.

    >>> from datetime import datetime, UTC
    >>> import uuid
    >>> e = RecordedEvent("s", 1, 1, "T", {}, None, uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC))
    >>> advance({"shard-0": "5"}, [ShardRecord(e, "shard-1", "7"), ShardRecord(e, "shard-0", "9")])
    {'shard-0': '9', 'shard-1': '7'}
    """
    out = dict(checkpoint)
    for record in records:
        out[record.shard_id] = record.sequence_number
    return out


def lineage_order(shards: Iterable[Shard]) -> list[Shard]:
    """The shards with every parent before its children (ties, and unrelated shards, by shard id).

    A parent that is not in ``shards`` (trimmed after the retention period)
    is taken as read. A cycle, which AWS never reports, raises ``ValueError``.

    >>> order = lineage_order([Shard("c", ("a", "b")), Shard("b"), Shard("a", ("root",)), Shard("d", ("c",))])
    >>> [s.shard_id for s in order]
    ['a', 'b', 'c', 'd']
    """
    by_id = {s.shard_id: s for s in shards}
    waiting = {s.shard_id: {p for p in s.parents if p in by_id} for s in by_id.values()}
    children: dict[str, list[str]] = {}
    for shard_id, parents in waiting.items():
        for parent in parents:
            children.setdefault(parent, []).append(shard_id)
    ready = [shard_id for shard_id, parents in waiting.items() if not parents]
    heapq.heapify(ready)
    order: list[Shard] = []
    while ready:
        shard_id = heapq.heappop(ready)
        order.append(by_id[shard_id])
        for child in children.get(shard_id, ()):
            waiting[child].discard(shard_id)
            if not waiting[child]:
                heapq.heappush(ready, child)
    if len(order) != len(by_id):
        raise ValueError("the shard lineage has a cycle")
    return order


@dataclass(frozen=True, slots=True)
class Page:
    """One ``GetRecords`` answer, decoded.

    ``records`` are the events of the page (records that are not events are
    left out); ``last_sequence`` is the sequence number of the page's last
    record, event or not; ``next_iterator`` is ``None`` once a closed shard is
    read to its end; ``caught_up`` says the page reached the shard's tip.
    """

    records: list[ShardRecord]
    last_sequence: str | None
    next_iterator: str | None
    caught_up: bool


class ShardApi(Protocol):
    """The calls a :class:`ShardReader` makes: one implementation per service."""

    service: str
    """The service's name, for messages."""

    throttled: frozenset[str]
    """Error codes that mean "too many reads now": wait and read again."""

    async def list_shards(self) -> list[Shard]:
        """Every shard of the stream as it is now (all pages)."""
        ...

    async def shard_iterator(self, shard_id: str, after: str | None) -> str:
        """An iterator at the start of the shard (``after=None``), or just after sequence number ``after``."""
        ...

    async def get_records(self, shard_id: str, iterator: str, limit: int) -> Page:
        """Up to ``limit`` records from ``iterator``."""
        ...


DEFAULT_POLL = Poll(min_delay=0.2, max_delay=2.0)
"""Between reads of a stream with nothing new: 0.2 s, doubling up to 2 s (AWS allows ~5 reads/s a shard)."""

DEFAULT_THROTTLE_RETRY = RetryPolicy(max_attempts=10, base_delay=0.2, max_delay=5.0)
"""Reads that AWS throttles are tried again with this backoff before the stream fails."""


@dataclass(slots=True)
class _Cursor:
    shard: Shard
    iterator: str
    throttled: int = 0


@dataclass
class ShardReader:
    """One run of a sharded source: which shards are being read, from where, and how long to wait.

    Shards are read in turn, one ``GetRecords`` at a time, each from its
    checkpoint (``AFTER_SEQUENCE_NUMBER``) or from its start
    (``TRIM_HORIZON``); a child shard starts only when its parents are
    finished. With ``live=False`` the run ends when every shard has been read
    to its tip; otherwise it waits (``poll``) and reads again, and lists the
    shards again now and then (every ``relist`` seconds, and whenever a shard
    is finished) to find the children of a resharding.
    """

    api: ShardApi
    start: Checkpoint
    live: bool
    limit: int
    poll: Poll = DEFAULT_POLL
    throttle_retry: RetryPolicy = DEFAULT_THROTTLE_RETRY
    relist: float = 10.0
    positions: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    active: list[_Cursor] = field(default_factory=list)
    parked: set[str] = field(default_factory=set)
    listed_at: float | None = None
    must_list: bool = True
    turn: int = 0
    idle: int = 0
    delay: float = 0.0

    def __post_init__(self) -> None:
        self.positions = dict(self.start)
        self.delay = self.poll.min_delay

    def stream(self) -> Stream[ShardRecord]:
        """The records, read lazily (as a chunk per page) when the stream runs."""
        return Stream.unfold_chunk_eval(self, _step)

    async def refresh(self) -> None:
        """List the shards and start reading those whose parents are finished."""
        shards = await self.api.list_shards()
        self.listed_at = anyio.current_time()
        self.must_list = False
        listed = {s.shard_id for s in shards}
        busy = {c.shard.shard_id for c in self.active} | self.finished | self.parked
        for shard in lineage_order(shards):
            if shard.shard_id in busy:
                continue
            if all(p in self.finished or p not in listed for p in shard.parents):
                after = self.positions.get(shard.shard_id)
                iterator = await self.api.shard_iterator(shard.shard_id, after)
                self.active.append(_Cursor(shard, iterator))

    async def next_page(self) -> list[ShardRecord] | None:
        """The next non-empty page of events, or ``None`` when a run with ``live=False`` is done."""
        while True:
            due = self.listed_at is None or anyio.current_time() - self.listed_at >= self.relist
            if self.must_list or (self.live and due):
                await self.refresh()
            if not self.active:
                if not self.live:
                    return None
                await self.wait()
                self.must_list = True
                continue
            cursor = self.active[self.turn % len(self.active)]
            page = await self.read(cursor)
            self.turn += 1  # shards take turns, so a busy one cannot hold the others back
            if page is None:  # throttled (and waited), or a fresh iterator
                continue
            if page.last_sequence is not None:
                self.positions[cursor.shard.shard_id] = page.last_sequence
            if page.next_iterator is not None:
                cursor.iterator = page.next_iterator
            if page.last_sequence is not None:
                self.idle = 0
                self.delay = self.poll.min_delay
                if page.records:
                    return page.records
                continue
            # An empty page: the shard is finished, or at its tip for now.
            if page.next_iterator is None or (cursor.shard.closed and page.caught_up):
                self.finished.add(cursor.shard.shard_id)
                self.active.remove(cursor)
                self.must_list = True  # its children may start now
                continue
            if not page.caught_up:
                continue  # behind the tip, nothing in this stretch of the shard: read on
            if not self.live:
                self.parked.add(cursor.shard.shard_id)
                self.active.remove(cursor)
                continue
            self.idle += 1
            if self.idle >= len(self.active):  # a whole round with nothing new
                self.idle = 0
                await self.wait()

    async def read(self, cursor: _Cursor) -> Page | None:
        """One ``GetRecords`` on ``cursor``'s shard; ``None`` if throttled (after waiting)."""
        shard_id = cursor.shard.shard_id
        try:
            page = await self.api.get_records(shard_id, cursor.iterator, self.limit)
        except Exception as exc:
            code = error_code(exc)
            if code == "ExpiredIteratorException":  # idle for over 5 minutes: start again from here
                cursor.iterator = await self.api.shard_iterator(shard_id, self.positions.get(shard_id))
                return None
            if code in self.api.throttled and self.throttle_retry.should_retry(cursor.throttled, exc):
                await anyio.sleep(self.throttle_retry.delay(cursor.throttled))
                cursor.throttled += 1
                return None
            raise
        cursor.throttled = 0
        return page

    async def wait(self) -> None:
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.poll.max_delay)


async def _step(reader: ShardReader) -> tuple[Sequence[ShardRecord], ShardReader] | None:
    if reader.listed_at is None:
        require_asyncio(f"reading {reader.api.service}")
    page = await reader.next_page()
    return None if page is None else (page, reader)


def read_shards(
    api: ShardApi,
    after: Checkpoint | None,
    *,
    live: bool,
    limit: int,
    poll: Poll,
    relist: float = 10.0,
) -> Stream[ShardRecord]:
    """The records of every shard after ``after``, a fresh :class:`ShardReader` per run of the stream."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    start = dict(after or {})

    async def fresh() -> Stream[ShardRecord]:
        return ShardReader(api, start, live, limit, poll, relist=relist).stream()

    return Stream.eval(fresh).flat_map(_identity)


def _identity(s: Stream[ShardRecord]) -> Stream[ShardRecord]:
    return s
