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
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio.lowlevel
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import InvalidEvent, StoreError
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
    encode_batch,
)
from streamsrc.store._contract import _check_name as check_name
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
            return sorted(self._streams)

        return Stream.eval(names).flat_map(Stream.emits)

    # -- snapshots

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        await anyio.lowlevel.checkpoint()
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
        self._checkpoints[name] = position


def encode_recorded(
    stream: str, events: Sequence[RecordedEvent], max_size: int
) -> Result[tuple[list[EncodedEvent], list[datetime]], StoreError]:
    """Check recorded events for an import into ``stream`` and encode them as ``append`` does.

    Every event must be a ``RecordedEvent`` of ``stream`` with a time that
    knows its timezone, and the seqs must count up by one from a first seq
    of at least 1; names, JSON, sizes and ids are checked as
    :func:`encode_batch` checks them. Returns the encoded events and their
    times, or ``Failure`` with an ``InvalidEvent`` at the first problem.
    Every store's ``import_events`` starts here (or at
    :func:`encode_recorded_stored`).

    >>> from streamsrc.events import new_event_id, stored_event
    >>> opened = stored_event("s", 1, 1, "Opened", "{}", None, new_event_id(), 0)
    >>> batch, times = encode_recorded("s", [opened], max_size=1000).unwrap()
    >>> batch[0].type, times
    ('Opened', [datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)])
    >>> encode_recorded("t", [opened], max_size=1000)
    <Failure: an event of stream 's' cannot be imported into 't'>
    """
    return encode_recorded_stored(stream, events, max_size).map(
        lambda encoded: (encoded[0], [_as_datetime(t) for t in encoded[1]])
    )


def encode_recorded_stored(
    stream: str, events: Sequence[RecordedEvent], max_size: int
) -> Result[tuple[list[EncodedEvent], list[int | datetime]], StoreError]:
    """:func:`encode_recorded`, with each time as the event holds it: microseconds since the epoch
    (UTC) for an event in a store's stored form, else an aware ``datetime``.

    An event in its stored form (as a store's read gives it) keeps the JSON
    text the store holds, which that store checked when it was written: it
    is measured, not decoded and encoded again. Other events (built with
    their fields decoded) are checked and encoded in full.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> opened = stored_event("s", 1, 1, "Opened", "{}", None, new_event_id(), 0)
    >>> batch, times = encode_recorded_stored("s", [opened], max_size=1000).unwrap()
    >>> batch[0].data, times
    ('{}', [0])
    """
    out: list[EncodedEvent] = []
    times: list[int | datetime] = []
    try:
        check_name(stream, "stream name")
        first = events[0].seq if events and isinstance(events[0], RecordedEvent) else 1
        for k, event in enumerate(events):
            if not isinstance(event, RecordedEvent):
                raise InvalidEvent(f"expected RecordedEvent, got {type(event).__name__}")
            if event.stream != stream:
                raise InvalidEvent(f"an event of stream {event.stream!r} cannot be imported into {stream!r}")
            seq = event.seq
            if type(seq) is not int or seq != first + k or seq < 1:
                raise InvalidEvent(
                    f"imported seqs must be consecutive from 1 or more: got {seq!r} at index {k} "
                    f"of a batch starting at {first!r}"
                )
            moment = _stored(event, 7)
            if type(moment) is not int:
                moment = event.time
                if not isinstance(moment, datetime) or moment.utcoffset() is None:
                    raise InvalidEvent(f"event {event.id} has no timezone-aware time: {moment!r}")
            times.append(moment)
            out.append(_encode_one(event, max_size))
        if len(out) > 1 and len({e.id for e in out}) < len(out):
            raise InvalidEvent("an event id appears twice in one batch")
    except InvalidEvent as exc:
        return Failure(exc)
    return Success((out, times))


def _encode_one(event: RecordedEvent, max_size: int) -> EncodedEvent:
    """One event checked and encoded, from its stored JSON text when it has it; raises ``InvalidEvent``."""
    data, metadata = _stored(event, 4), _stored(event, 5)
    if type(data) is str and (metadata is None or type(metadata) is str):
        check_name(event.type, "event type")
        size = len(data.encode("utf-8")) + (0 if metadata is None else len(metadata.encode("utf-8")))
        event_id = event.id
        if size <= max_size and type(event_id) is uuid.UUID:
            return EncodedEvent(event_id, event.type, data, metadata)
        # over the limit as stored (another store's spacing?) or odd: measured as append measures it
    try:
        fields = EventData(event.type, event.data, event.metadata, event.id)
    except (ValueError, TypeError) as exc:  # stored fields that do not decode
        raise InvalidEvent(f"cannot import event {_stored(event, 6)!r}: {exc!r}") from None
    encoded = encode_batch(event.stream, [fields], max_size)
    if isinstance(encoded, Failure):
        raise encoded.failure()
    return encoded.unwrap()[0]


def _as_datetime(moment: int | datetime) -> datetime:
    """A stored time (microseconds since the epoch, or a datetime) as an aware datetime, exactly."""
    return moment if isinstance(moment, datetime) else _EPOCH + timedelta(microseconds=moment)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_stored: Callable[[RecordedEvent, int], Any] = tuple.__getitem__  # a field as the store handed it over


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
