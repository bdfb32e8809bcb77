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
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.lowlevel
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import StoreError
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json
from streamsrc.store._contract import (
    ANY,
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_PAGE_SIZE,
    AppendResult,
    AppendSignal,
    EncodedEvent,
    EventFilter,
    Expected,
    Snapshot,
    check_existing,
    check_expected,
    check_key,
    encode_batch,
    encode_recorded,
)
from streamsrc.stream import Stream


class MemoryStore:
    """An event store, snapshot store and checkpoint store held in memory.

    >>> import anyio
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
        self.page_size = page_size
        self.max_event_size = max_event_size
        # Events in their stored form: plain tuples in RecordedEvent's field order, data and
        # metadata as JSON text; every read makes new RecordedEvents (decoded lazily).
        self._log: list[_Row] = []
        self._streams: dict[str, list[_Row]] = {}
        self._ids: dict[uuid.UUID, _Row] = {}
        self._snapshots: dict[str, list[Snapshot]] = {}
        self._checkpoints: dict[str, int] = {}
        self.appended = AppendSignal()
        """Notified after every append that wrote events."""

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._log)} events>"

    async def aclose(self) -> None:
        """Nothing to release; here for symmetry with the other stores."""

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        await anyio.lowlevel.checkpoint()
        encoded = encode_batch(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        return self._write(stream, encoded.unwrap(), expected, None)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Append events recorded elsewhere, keeping their id and time (see ``ImportingStore``).

        >>> import anyio
        >>> async def main() -> None:
        ...     source, target = MemoryStore(), MemoryStore()
        ...     await source.append("s", [EventData("Opened", {"n": 1})])
        ...     recorded = await source.read("s").to_list()
        ...     print(await target.import_events("s", recorded))
        ...     print((await target.read("s").to_list()) == recorded)
        >>> anyio.run(main)
        <Success: AppendResult(stream='s', last_seq=1, positions=(1,))>
        True
        """
        await anyio.lowlevel.checkpoint()
        encoded = encode_recorded(stream, events, self.max_event_size)
        if isinstance(encoded, Failure):
            return encoded
        batch, times = encoded.unwrap()
        expected = events[0].seq - 1 if events else ANY
        return self._write(stream, batch, expected, [t.astimezone(UTC) for t in times])

    def _write(
        self, stream: str, batch: list[EncodedEvent], expected: Expected, times: list[datetime] | None
    ) -> Result[AppendResult, StoreError]:
        """Append checked events (with their ``times``, or now); no await: atomic on the event loop."""
        found = {e.id: (r[0], r[1], r[2]) for e in batch if (r := self._ids.get(e.id))}
        existing = check_existing(stream, [e.id for e in batch], expected, found)
        if existing is not None:
            return existing
        log = self._streams.get(stream, [])
        wrong = check_expected(stream, expected, len(log))
        if wrong is not None:
            return Failure(wrong)
        now = datetime.now(UTC)
        written = []
        for k, e in enumerate(batch):
            position = len(self._log) + 1
            at = now if times is None else times[k]
            record = (stream, len(log) + 1, position, e.type, e.data, e.metadata, e.id, at)
            log.append(record)
            self._log.append(record)
            self._ids[e.id] = record
            written.append(position)
        if log:
            self._streams[stream] = log
        if written:
            self.appended.notify()
        return Success(AppendResult(stream, len(log), tuple(written)))

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        def page(start: int) -> list[RecordedEvent]:
            log = self._streams.get(stream, [])
            if backwards:
                stop = len(log) if start == 0 else min(len(log), max(0, start - 1))
                return [_event(r) for r in reversed(log[max(0, stop - self.page_size) : stop])]
            return list(map(_event, log[start : start + self.page_size]))

        return _paged(page, after, limit)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        keep = EventFilter.of(types, stream_prefix)

        def page(start: int) -> list[RecordedEvent]:
            first = max(0, start)  # the event at position p is self._log[p - 1]
            if keep.everything:
                return list(map(_event, self._log[first : first + self.page_size]))
            out: list[RecordedEvent] = []
            for row in itertools.islice(self._log, first, None):
                if keep.keeps(row[0], row[3]):
                    out.append(_event(row))
                    if len(out) == self.page_size:
                        break
            return out

        return _paged(page, after, limit, key="position")

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        await anyio.lowlevel.checkpoint()
        log = self._streams.get(stream)
        return Some(_event(log[-1])) if log else Nothing

    async def head(self) -> int:
        await anyio.lowlevel.checkpoint()
        return len(self._log)

    def streams(self) -> Stream[str]:
        async def names() -> list[str]:
            await anyio.lowlevel.checkpoint()  # like every other read: a point where it can be cancelled
            return sorted(self._streams)

        return Stream.eval(names).flat_map(Stream.emits)

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        await anyio.lowlevel.checkpoint()
        check_key(key, "snapshot key")
        snap = Snapshot(key, seq, encode_json(state), schema_version, datetime.now(UTC))
        kept = [s for s in self._snapshots.get(key, []) if (s.seq, s.schema_version) != (seq, schema_version)]
        self._snapshots[key] = sorted([*kept, snap], key=lambda s: s.seq)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        await anyio.lowlevel.checkpoint()
        for s in reversed(self._snapshots.get(key, [])):
            if s.schema_version != schema_version:
                continue
            if (at_seq is None or s.seq <= at_seq) and (at_time is None or s.time <= at_time):
                return Some(Snapshot(key, s.seq, decode_json(s.state), s.schema_version, s.time))
        return Nothing

    # -- checkpoints

    async def load_checkpoint(self, name: str) -> int:
        await anyio.lowlevel.checkpoint()
        return self._checkpoints.get(name, 0)

    async def save_checkpoint(self, name: str, position: int) -> None:
        await anyio.lowlevel.checkpoint()
        check_key(name, "checkpoint name")
        self._checkpoints[name] = position


_Row = tuple[str, int, int, str, str, str | None, uuid.UUID, datetime]
_event: Callable[[_Row], RecordedEvent] = partial(tuple.__new__, RecordedEvent)


def _paged(
    page: Callable[[int], list[RecordedEvent]], after: int, limit: int | None, key: str = "seq"
) -> Stream[RecordedEvent]:
    """Pages from ``page(start)``, each starting after the last one's final ``key``."""

    async def step(
        state: tuple[int, int | None],
    ) -> tuple[list[RecordedEvent], tuple[int, int | None]] | None:
        start, left = state
        if left is not None and left <= 0:
            return None
        await anyio.lowlevel.checkpoint()
        rows = page(start)
        if left is not None:
            rows = rows[:left]
            left -= len(rows)
        if not rows:
            return None
        return rows, (getattr(rows[-1], key), left)

    return Stream.unfold_chunk_eval((after, limit), step)
