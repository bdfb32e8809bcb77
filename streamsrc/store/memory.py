"""``memory://``: the reference interpreter of the store contract, kept short and obviously right.

Everything lives in Python lists and dicts of one process. An append runs
without awaiting between its checks and its writes, so on one event loop it
is atomic, and positions are given in commit order. Events are kept as JSON
text and decoded on every read, so callers never share mutable data with the
log.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio.lowlevel

from streamsrc.events import RecordedEvent
from streamsrc.store._contract import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    TOMBSTONE_TYPE,
    EncodedEvent,
    Expected,
    check_expected,
)
from streamsrc.store.base import (
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


class MemoryStore(StoreBase):
    """An event store, snapshot store and checkpoint store held in memory.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {"total": 12})], expected=0)
    ...     print(store, [e.data for e in await store.read("order-1").to_list()])
    >>> anyio.run(main)
    <MemoryStore 1 events> [{'total': 12}]
    """

    def __init__(
        self, page_size: int = DEFAULT_PAGE_SIZE, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    ) -> None:
        super().__init__(page_size=page_size, max_event_size=max_event_size)
        # Events in their stored form: plain tuples in RecordedEvent's field order, data and
        # metadata as JSON text; every read makes new RecordedEvents (decoded lazily).
        self._log: list[_Row | None] = []  # by position; None where truncate_before removed a row
        self._streams: dict[str, list[_Row]] = {}
        self._trimmed: dict[str, int] = {}  # seqs before a stream's first kept event (truncated)
        self._removed = 0
        self._ids: dict[uuid.UUID, _Row] = {}
        self._snapshots: dict[str, list[tuple[int, int, StoredSnapshot]]] = {}
        self._checkpoints: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._log) - self._removed} events>"

    # -- the primitives: no await between a check and its write, so atomic on the event loop

    async def insert_batch(
        self, stream: str, batch: Sequence[EncodedEvent], expected: Expected, times: Sequence[int] | None
    ) -> Inserted:
        await anyio.lowlevel.checkpoint()  # before any check: a point where the caller can be cancelled
        found = {e.id: EventAddress(*r[:3]) for e in batch if (r := self._ids.get(e.id))}
        if found:
            return IdsTaken(found)
        log = self._streams.get(stream)
        current = 0 if not log else self._trimmed.get(stream, 0) + len(log)
        if log and log[-1][3] == TOMBSTONE_TYPE:
            return StreamGone(current)
        if not log and times is not None and type(expected) is int:
            current = expected  # an import into a new stream may start past #1 (a truncated source)
        if check_expected(stream, expected, current) is not None:
            return VersionConflict(current)
        if log is None:
            log = self._streams[stream] = []
            if current:
                self._trimmed[stream] = current
        now = datetime.now(UTC)
        written = []
        for k, e in enumerate(batch):
            position = len(self._log) + 1
            at = now if times is None else _EPOCH + timedelta(microseconds=times[k])
            record = (stream, current + k + 1, position, e.type, e.data, e.metadata, e.id, at)
            log.append(record)
            self._log.append(record)
            self._ids[e.id] = record
            written.append(position)
        return Written(current + len(batch), tuple(written))

    async def find_ids(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, EventAddress]:
        await anyio.lowlevel.checkpoint()
        return {i: EventAddress(*r[:3]) for i in ids if (r := self._ids.get(i))}

    async def read_page(self, request: PageRequest) -> Page:
        await anyio.lowlevel.checkpoint()
        size, bound = request.size, request.bound
        if request.stream is not None:
            log = self._streams.get(request.stream, [])
            bound -= self._trimmed.get(request.stream, 0)  # an index into the kept rows
            if request.backwards:
                stop = min(len(log), max(0, bound - 1))
                rows = list(reversed(log[max(0, stop - size) : stop]))
            else:
                rows = log[max(0, bound) : max(0, bound) + size]
        elif request.filter.everything:
            chunk = self._log[bound : bound + size]
            if self._removed:  # holes where rows were removed: the page may hold fewer events
                kept = [r for r in chunk if r is not None]
                return Page(list(map(_event, kept)), None if len(chunk) < size else bound + size)
            rows = chunk  # type: ignore[assignment]
        else:
            keep = request.filter
            rows = []
            for row in itertools.islice(self._log, bound, None):
                if row is not None and keep.keeps(row[0], row[3]):
                    rows.append(row)
                    if len(rows) == size:
                        break
        return Page.of(list(map(_event, rows)), request)

    async def last_position(self) -> int:
        await anyio.lowlevel.checkpoint()
        return len(self._log)

    async def remove_before(self, stream: str, seq: int) -> Truncated:
        await anyio.lowlevel.checkpoint()  # then no await between the check and the removal
        log = self._streams.get(stream, [])
        trimmed = self._trimmed.get(stream, 0)
        version = trimmed + len(log) if log else 0
        if not log or seq > version:
            return Truncated(0, version)
        n = max(0, seq - 1 - trimmed)
        for row in log[:n]:
            self._log[row[2] - 1] = None
            del self._ids[row[6]]
        del log[:n]
        self._trimmed[stream] = trimmed + n
        self._removed += n
        return Truncated(n, version)

    async def stream_names(self, after: str, size: int) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return sorted(name for name in self._streams if name > after)[:size]

    async def write_snapshot(self, key: str, schema_version: int, seq: int, state: str, time_us: int) -> None:
        await anyio.lowlevel.checkpoint()
        kept = [s for s in self._snapshots.get(key, []) if s[:2] != (seq, schema_version)]
        row = (seq, schema_version, StoredSnapshot(seq, state, time_us))
        self._snapshots[key] = sorted([*kept, row], key=lambda s: s[0])

    async def read_snapshot(
        self, key: str, schema_version: int, at_seq: int, at_time_us: int
    ) -> StoredSnapshot | None:
        await anyio.lowlevel.checkpoint()
        for seq, version, row in reversed(self._snapshots.get(key, [])):
            if version == schema_version and seq <= at_seq and row.time_us <= at_time_us:
                return row
        return None

    async def write_checkpoint(self, name: str, position: int, time_us: int) -> None:
        await anyio.lowlevel.checkpoint()
        self._checkpoints[name] = position

    async def read_checkpoint(self, name: str) -> int | None:
        await anyio.lowlevel.checkpoint()
        return self._checkpoints.get(name)

    async def swap_checkpoint(self, name: str, expected: int, position: int, time_us: int) -> bool:
        await anyio.lowlevel.checkpoint()  # then no await between the check and the write
        if self._checkpoints.get(name, 0) != expected:
            return False
        self._checkpoints[name] = position
        return True

    async def list_checkpoints(self, after: str, size: int) -> list[tuple[str, int]]:
        await anyio.lowlevel.checkpoint()
        return sorted((name, at) for name, at in self._checkpoints.items() if name > after)[:size]


_Row = tuple[str, int, int, str, str, str | None, uuid.UUID, datetime]
_event: Callable[[_Row], RecordedEvent] = partial(tuple.__new__, RecordedEvent)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
