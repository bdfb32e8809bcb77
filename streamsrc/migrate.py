"""Copy every event of one store into another: re-architect by replaying into a new store.

:func:`copy` reads the source's global log (``read_all``) in order and writes
it into the target with :meth:`~streamsrc.store.ImportingStore.import_events`,
so every event keeps its stream, seq, id, type, data, metadata and time::

    import anyio

    from streamsrc.migrate import copy
    from streamsrc.store import open_store


    async def main() -> None:
        async with open_store("sqlite:///old.db") as source, open_store("postgresql://...") as target:
            done = await copy(source, target, on_progress=print)
            print(done.events, "events copied")


    anyio.run(main)

What it promises:

* **Seqs per stream, and global order.** Events go in one at a time in the
  source's position order, so each stream gets the same seqs and the target's
  log has the same order. When the target starts empty and the source's
  positions have no gaps (memory, SQLite and PostgreSQL give gap-free
  positions) the positions are the same too; a target that already holds
  other streams gives the copied events positions of its own, after its
  events, in the same order.
* **Ids and times.** The target keeps each event's id and original time, so
  "state at a time" queries answer the same after the move.
* **Resumable.** After each batch the source position copied so far is saved
  as a checkpoint in the target (``checkpoint=`` names it; by default it is
  derived from the source's URL or path, see :func:`checkpoint_name`).
  Running ``copy`` again continues from there. Imports are idempotent, so an
  interruption between an import and its checkpoint is harmless: the events
  are imported again, and the target answers with what it already holds.
* **Conflicts stop the copy.** If a target stream already has other events
  at the seqs being copied (or lacks earlier ones) the copy raises
  :class:`CopyConflict`, naming the stream and seq; the import that found it
  wrote nothing, and the checkpoint stays at the last whole batch. Events the
  target already holds at the same seqs with the same ids (an earlier copy,
  say) are skipped, not conflicts.
* **Batches.** Consecutive events of one stream in source order go in one
  ``import_events`` call, of at most ``batch_size`` events, and of at most
  ``target.max_batch`` events when the target has that attribute (the
  convention for a store whose atomic write is bounded: DynamoDB's
  transactions take 100 items). A batch, the unit of checkpoints, is up to
  ``batch_size`` consecutive source events. A target with ``transaction()``
  (an async context manager whose object queues ``import_events(stream,
  events)`` and ``save_checkpoint(name, position)`` and commits them
  together at the end of the block, as SQLite's does) gets each batch and its
  checkpoint in one transaction; if that fails, nothing of it was written, and
  the batch goes again import by import, to skip what the target already holds
  or to say what conflicts.
* **Retired streams.** A tombstone (a stream deleted with ``delete_stream``)
  is an event like any other: it is copied, and the target's stream is
  deleted too. A stream truncated at the source (``truncate_before``) starts
  in the target at its first kept seq (an import takes a first seq above 1
  into a stream the target does not have); the source's removed events are
  not copied, since no read gives them. Before a run's first write to a
  stream it does not start at #1, the copy checks that the target has the
  stream or the source's stream really starts there, else
  :class:`CopyConflict` (a checkpoint saved for another target, say).
  Through ``allow_append`` a truncated stream cannot be copied (an append
  starts a stream at #1): :class:`CopyConflict`.
* **A snapshot of the source.** The copy reads what the source holds while it
  reads, up to the point where a read comes back short; events appended to
  the source after that are copied by the next run. Stop the writers, copy,
  then switch them to the target, or copy, switch, and copy again.

A target that cannot import (it is not an :class:`~streamsrc.store.ImportingStore`)
is refused with :class:`TargetCannotImport`, unless ``allow_append=True``: then
events go in through ``append`` with the same ids and seqs (still idempotent)
but get the target's own times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from returns.result import Result, Success

from streamsrc.errors import DuplicateEvent, StoreError, StreamsrcError, WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import (
    AppendResult,
    BatchLimitedStore,
    CheckpointStore,
    EventStore,
    ImportingStore,
    TransactionalStore,
    redact_url,
)
from streamsrc.stream import Stream

__all__ = [
    "CopyConflict",
    "CopyError",
    "CopyFailed",
    "CopyProgress",
    "TargetCannotImport",
    "checkpoint_name",
    "copy",
    "copying",
]

DEFAULT_BATCH_SIZE = 1000
"""Default number of source events per batch (and checkpoint), and most events per import."""


class CopyError(StreamsrcError):
    """A copy stopped at an event of the source it could not write (``stream``, ``seq``).

    The checkpoint is at the end of the last whole batch: fix the cause and
    run the copy again to go on from there.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Opened", {})])
    ...     await target.append("s", [EventData("Opened", {})])  # another event at s #1
    ...     try:
    ...         await copy(source, target)
    ...     except CopyError as error:
    ...         print(type(error).__name__, error.stream, error.seq)
    >>> anyio.run(main)
    CopyConflict s 1
    """

    def __init__(self, message: str, stream: str, seq: int) -> None:
        super().__init__(message)
        self.stream = stream
        self.seq = seq


class CopyConflict(CopyError):
    """The target's ``stream`` already holds another event at ``seq`` (or lacks events before it).

    ``source_id`` is the id of the source's event at ``seq``; ``target_id``
    the id of the target's event there (``None`` when the target lacks it,
    or holds the source's event in another place: see the message).

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Opened", {})])
    ...     await target.append("s", [EventData("Opened", {})])
    ...     await copy(source, target)
    >>> anyio.run(main)
    Traceback (most recent call last):
    ...
    streamsrc.migrate.CopyConflict: cannot copy 's' #1 (event ...): the target already holds another event
    there (event ..., Opened)
    """

    def __init__(
        self, stream: str, seq: int, source_id: object, target_id: object | None, reason: str
    ) -> None:
        super().__init__(f"cannot copy {stream!r} #{seq} (event {source_id}): {reason}", stream, seq)
        self.source_id = source_id
        self.target_id = target_id


class CopyFailed(CopyError):
    """The target refused the events at ``stream`` #``seq`` for another reason: ``error`` says which
    (``EventTooLarge`` for a target with a smaller size limit, ``StoreUnavailable``, ...).

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore(max_event_size=100)
    ...     await source.append("s", [EventData("Note", {"text": "x" * 200})])
    ...     await copy(source, target)
    >>> anyio.run(main)
    Traceback (most recent call last):
    ...
    streamsrc.migrate.CopyFailed: cannot copy 's' from #1: event ... is ... bytes encoded,
    over the limit of 100
    """

    def __init__(self, stream: str, seq: int, error: StoreError) -> None:
        super().__init__(f"cannot copy {stream!r} from #{seq}: {error}", stream, seq)
        self.error = error


class TargetCannotImport(StreamsrcError, TypeError):
    """The target store has no ``import_events``; pass ``allow_append=True`` to copy with new times.

    >>> from streamsrc.store.memory import MemoryStore
    >>> copying(MemoryStore(), object())
    Traceback (most recent call last):
    ...
    streamsrc.migrate.TargetCannotImport: <object object at ...> cannot import events (no import_events): ...
    """


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """How far a copy has got: reported after every batch, and once at the end (``done``).

    ``position`` is the source position copied so far (the checkpoint),
    ``start`` where this run began, ``head`` the last known head of the
    source; ``events`` counts the source events this run has copied (or
    found already in the target), ``elapsed`` its seconds so far.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Noted", {}) for _ in range(5)])
    ...     def report(p: CopyProgress) -> None:
    ...         print(p.position, p.remaining, p.done)
    ...     await copy(source, target, batch_size=2, on_progress=report)
    >>> anyio.run(main)
    2 3 False
    4 1 False
    5 0 False
    5 0 True
    """

    name: str
    start: int
    position: int
    head: int
    events: int
    elapsed: float
    done: bool = False

    @property
    def rate(self) -> float:
        """Events copied per second by this run."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining(self) -> int:
        """Source positions not copied yet (events, when the source's positions have no gaps)."""
        return max(0, self.head - self.position)

    @property
    def eta(self) -> float | None:
        """Seconds until the head is reached at this run's pace so far (``None``: no pace yet)."""
        if self.remaining == 0:
            return 0.0
        moved = self.position - self.start
        if moved <= 0 or self.elapsed <= 0:
            return None
        return self.remaining * self.elapsed / moved

    @property
    def fraction(self) -> float:
        """How much of the source up to ``head`` is copied, from 0.0 to 1.0 (for progress bars)."""
        return 1.0 if self.head <= 0 else min(1.0, self.position / self.head)


def checkpoint_name(source: object) -> str:
    """The default name of a copy's checkpoint in the target, derived from the source.

    From the source's ``url`` (passwords redacted) if it has one, else its
    ``path`` (made absolute), else its type and identity in this process (a
    memory store): pass ``checkpoint=`` to :func:`copy` for a name of your own.

    >>> from streamsrc.store.sqlite import SqliteStore
    >>> checkpoint_name(SqliteStore("/data/events.db"))
    'streamsrc.migrate from /data/events.db'
    """
    url = getattr(source, "url", None)
    if isinstance(url, str):
        where = redact_url(url)
    else:
        path = getattr(source, "path", None)
        if isinstance(path, str | os.PathLike):
            where = os.path.abspath(path)
        else:
            where = f"{type(source).__qualname__}@{id(source):x}"
    return f"streamsrc.migrate from {where}"


def copying(
    source: EventStore,
    target: EventStore,
    *,
    checkpoint: str | None = None,
    checkpoints: CheckpointStore | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_append: bool = False,
) -> Stream[CopyProgress]:
    """The copy of ``source`` into ``target`` as a stream: one :class:`CopyProgress` per batch.

    Nothing happens until the stream runs; running it again resumes from the
    checkpoint. The last report has ``done=True``. See :func:`copy` for the
    options. Cancelling the stream (``take``, a timeout) stops the copy at
    once; an import or batch transaction under way either commits or not,
    and the next run redoes what its checkpoint does not cover (imports are
    idempotent).

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Noted", {}) for _ in range(3)])
    ...     reports = await copying(source, target, batch_size=2).to_list()
    ...     print([(r.position, r.done) for r in reports], await target.head())
    >>> anyio.run(main)
    [(2, False), (3, False), (3, True)] 3
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    importing = isinstance(target, ImportingStore)
    if not importing and not allow_append:
        raise TargetCannotImport(
            f"{target!r} cannot import events (no import_events): pass allow_append=True to copy "
            "through append, keeping ids and seqs but not times"
        )
    saves = target if checkpoints is None else checkpoints
    if not isinstance(saves, CheckpointStore):
        raise TypeError(f"{saves!r} keeps no checkpoints: pass checkpoints= (a CheckpointStore)")
    name = checkpoint or checkpoint_name(source)
    limit = batch_size
    if isinstance(target, BatchLimitedStore) and target.max_batch > 0:
        limit = min(limit, target.max_batch)

    async def start() -> Stream[CopyProgress]:
        run = _Copy(source, target, saves, name, limit, importing)
        await run.begin()
        batches = source.read_all(after=run.position).chunk_n(batch_size).buffer(1)
        return batches.eval_map(run.batch) + Stream.eval(run.finish)

    return Stream.eval(start).flat_map(lambda s: s)


async def copy(
    source: EventStore,
    target: EventStore,
    *,
    checkpoint: str | None = None,
    checkpoints: CheckpointStore | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_append: bool = False,
    on_progress: Callable[[CopyProgress], object] | None = None,
) -> CopyProgress:
    """Copy every event of ``source`` not copied yet into ``target``; return the final progress.

    ``checkpoint`` names the checkpoint (default: :func:`checkpoint_name` of
    the source), kept in ``checkpoints`` (default: the target itself);
    ``batch_size`` bounds a batch (events between checkpoints) and an
    import; ``allow_append`` lets a target without ``import_events`` take the
    events through ``append`` (new times); ``on_progress`` is called with
    every :class:`CopyProgress`. Raises :class:`CopyConflict` when the
    target already holds other events where the source's go,
    :class:`CopyFailed` when it refuses them otherwise.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     source, target = MemoryStore(), MemoryStore()
    ...     await source.append("s", [EventData("Opened", {}), EventData("Closed", {})])
    ...     done = await copy(source, target)
    ...     print(done.events, done.position, done.head, done.done)
    ...     print(await target.read_all().to_list() == await source.read_all().to_list())
    >>> anyio.run(main)
    2 2 2 True
    True
    """
    reports = copying(
        source,
        target,
        checkpoint=checkpoint,
        checkpoints=checkpoints,
        batch_size=batch_size,
        allow_append=allow_append,
    )
    if on_progress is not None:

        async def tell(p: CopyProgress) -> None:
            on_progress(p)

        reports = reports.eval_tap(tell)
    last = await reports.last()
    return last.unwrap()


class _Copy:
    """The state of one run of a copy: checkpoint, counters, head."""

    def __init__(
        self,
        source: EventStore,
        target: Any,
        saves: CheckpointStore,
        name: str,
        limit: int,
        importing: bool,
    ) -> None:
        self.source = source
        self.target = target
        self.saves = saves
        self.name = name
        self.limit = limit
        self.importing = importing
        self.start = self.position = self.head = 0
        self.events = 0
        self.started = time.perf_counter()
        self.head_checked = 0.0
        self.transaction = (
            target.transaction if importing and isinstance(target, TransactionalStore) else None
        )
        self.seen: set[str] = set()
        """Streams this run has written (or checked) already: their next runs continue them."""

    async def begin(self) -> None:
        self.start = self.position = await self.saves.load_checkpoint(self.name)
        self.head = max(self.position, await self.source.head())
        self.started = self.head_checked = time.perf_counter()

    async def batch(self, events: list[RecordedEvent]) -> CopyProgress:
        runs = []
        i = 0
        while i < len(events):
            stream = events[i].stream
            j = i + 1
            while j < len(events) and j - i < self.limit and events[j].stream == stream:
                j += 1
            runs.append((stream, events[i:j]))
            i = j
        for stream, run in runs:
            if stream not in self.seen:
                if run[0].seq > 1:
                    await self.check_start(stream, run)
                self.seen.add(stream)
        position = events[-1].position
        if not await self.in_one_transaction(runs, position):
            for stream, run in runs:
                await self.put(stream, run)
            await self.saves.save_checkpoint(self.name, position)
        self.position = position
        self.events += len(events)
        now = time.perf_counter()
        if self.position > self.head or now - self.head_checked > 1.0:
            self.head = max(self.position, await self.source.head())
            self.head_checked = now
        return self.report(now)

    async def check_start(self, stream: str, run: Sequence[RecordedEvent]) -> None:
        """Before the first write to ``stream`` in this run, when ``run`` starts past #1: if the target
        does not have the stream, its first events must be missing from the source too (truncated
        there: the copy then starts the stream where the source's starts), else
        :class:`CopyConflict` (the checkpoint says they were copied: was it another target's?)."""
        first = run[0].seq
        last = (await self.target.latest(stream)).map(lambda e: e.seq).value_or(0)
        if last > 0:
            return  # the target has the stream: the write checks that the run continues it
        head = await self.source.read(stream, limit=1).to_list()
        if head and head[0].seq == first:  # truncated at the source before ``first``
            if self.importing:
                return
            reason = (
                f"the source's stream was truncated: it starts at #{first}, and an append cannot "
                "start a stream there (copy into a store that imports events)"
            )
        else:
            reason = (
                f"the target's stream ends at #{last}: the source's events before #{first} are "
                "missing from it (was the checkpoint saved for another target?)"
            )
        raise CopyConflict(stream, first, run[0].id, None, reason)

    async def in_one_transaction(self, runs: list[tuple[str, list[RecordedEvent]]], position: int) -> bool:
        """Import ``runs`` and save the checkpoint in one transaction, if the target has them.

        ``False`` if it has none, or if anything failed (then nothing was
        written: the caller goes run by run, to skip what is there already or
        to say what conflicts).
        """
        transaction = self.transaction
        if transaction is None:
            return False
        try:
            async with transaction() as tx:
                for stream, run in runs:
                    tx.import_events(stream, run)
                if self.saves is self.target:
                    tx.save_checkpoint(self.name, position)
        except Exception:  # rolled back whole: the slow path finds out what it was
            return False
        if self.saves is not self.target:
            await self.saves.save_checkpoint(self.name, position)
        return True

    async def finish(self) -> CopyProgress:
        self.head = max(self.position, await self.source.head())
        return self.report(time.perf_counter(), done=True)

    def report(self, now: float, done: bool = False) -> CopyProgress:
        elapsed = now - self.started
        return CopyProgress(self.name, self.start, self.position, self.head, self.events, elapsed, done)

    async def write(self, stream: str, run: Sequence[RecordedEvent]) -> Result[AppendResult, StoreError]:
        if self.importing:
            result: Result[AppendResult, StoreError] = await self.target.import_events(stream, run)
            return result
        data = [EventData(e.type, e.data, e.metadata, e.id) for e in run]
        appended: Result[AppendResult, StoreError] = await self.target.append(stream, data, run[0].seq - 1)
        return appended

    async def put(self, stream: str, run: Sequence[RecordedEvent]) -> None:
        """Write ``run`` (consecutive events of ``stream``), skipping what the target already holds."""
        stalled = 0
        while run:
            result = await self.write(stream, run)
            if isinstance(result, Success):
                return
            error = result.failure()
            if not isinstance(error, WrongExpectedVersion | DuplicateEvent):
                raise CopyFailed(stream, run[0].seq, error)
            rest = await self.skip_copied(stream, run, error)
            stalled = stalled + 1 if len(rest) == len(run) else 0
            if stalled == 3:  # the target keeps changing under the copy
                raise CopyFailed(stream, run[0].seq, error)
            run = rest

    async def skip_copied(
        self, stream: str, run: Sequence[RecordedEvent], error: StoreError
    ) -> Sequence[RecordedEvent]:
        """What is left of ``run`` once the events the target already holds (same seq, same id) are
        dropped; :class:`CopyConflict` if it holds other events there, lacks earlier ones, or holds
        one of the ids elsewhere."""
        first = run[0].seq
        there = await self.target.read(stream, after=first - 1, limit=len(run)).to_list()
        for event, held in zip(run, there, strict=False):
            if held.id != event.id:
                raise CopyConflict(
                    stream,
                    event.seq,
                    event.id,
                    held.id,
                    f"the target already holds another event there (event {held.id}, {held.type})",
                )
        if there:
            return run[len(there) :]
        last = (await self.target.latest(stream)).map(lambda e: e.seq).value_or(0)
        if last < first - 1:
            raise CopyConflict(
                stream,
                first,
                run[0].id,
                None,
                f"the target's stream ends at #{last}: the source's events before #{first} are "
                "missing from it (was the checkpoint saved for another target?)",
            )
        if isinstance(error, DuplicateEvent):
            seq = next((e.seq for e in run if e.id == error.event_id), first)
            raise CopyConflict(
                stream,
                seq,
                error.event_id,
                None,
                "the target already holds this event id in another stream or at another seq",
            )
        return run  # the stream fits now: try again
