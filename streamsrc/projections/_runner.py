"""The projection runner: subscribe from the checkpoint, apply batches, move the checkpoint."""

from __future__ import annotations

import collections
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar

import anyio

import streamsrc.telemetry as _telemetry
from streamsrc.effect import RetryPolicy
from streamsrc.errors import EffectFailed, ProjectionFailed, ProjectionOwnedElsewhere, StoreUnavailable
from streamsrc.events import RecordedEvent
from streamsrc.projections._leases import Fence, partition_name, partition_of
from streamsrc.projections._models import DeadLetter, ReadModel
from streamsrc.projections._subscription import DEFAULT_POLL, Poll, Tick, subscribe_with_ticks
from streamsrc.store import EventFilter, EventStore
from streamsrc.stream import Stream

__all__ = [
    "DeadLetters",
    "OnError",
    "Progress",
    "Projection",
    "ProjectionService",
    "Projector",
    "Retry",
    "Status",
    "Stop",
]

H = TypeVar("H")
M = TypeVar("M", bound=ReadModel[Any])

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Projection(Generic[H]):
    """A named handler of batches of events, with the filters that say which events it wants.

    The handler's type depends on the read model it writes:
    ``(state, events) -> state`` for a :class:`MemoryReadModel`,
    ``(conn, events) -> None`` for a :class:`SqliteReadModel`,
    ``async (events) -> None`` for a :class:`CallbackReadModel`. Events come
    in global order (so in order within each stream); ``types`` and
    ``stream_prefix`` are applied by the store as it reads.

    >>> from collections import Counter
    >>> def count_types(counts, events):  # a pure fold, for a MemoryReadModel
    ...     return counts + Counter(e.type for e in events)
    >>> registrations = Projection("registrations", count_types, types={"Registered"}, stream_prefix="user-")
    >>> registrations.name, registrations.types, registrations.stream_prefix
    ('registrations', frozenset({'Registered'}), 'user-')
    """

    name: str
    handler: H
    types: frozenset[str] | None = None
    stream_prefix: str | None = None

    def __init__(
        self,
        name: str,
        handler: H,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> None:
        keep = EventFilter.of(types, stream_prefix)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "handler", handler)
        object.__setattr__(self, "types", keep.types)
        object.__setattr__(self, "stream_prefix", keep.stream_prefix)


@dataclass(frozen=True)
class Stop:
    """On a failing event, stop with :class:`~streamsrc.errors.ProjectionFailed` (the default).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("user-1", [EventData("Registered", {})])
    ...     emails = Projection("emails", lambda state, events: [e.data["email"] for e in events])
    ...     await Projector(store, emails, MemoryReadModel([]), on_error=Stop()).catch_up()
    >>> anyio.run(main)
    Traceback (most recent call last):
    ...
    streamsrc.errors.ProjectionFailed: projection 'emails' failed on the event at position 1
    ('user-1' #1, Registered): KeyError: 'email'
    """


@dataclass(frozen=True)
class DeadLetters:
    """On a failing event, set it aside in the read model's dead letters and go on.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> def emails(state, events):
    ...     return state + [e.data["email"] for e in events]
    >>> async def main() -> None:
    ...     store, model = MemoryStore(), MemoryReadModel([])
    ...     await store.append("user-1", [EventData("Registered", {"email": "a@example.com"})])
    ...     await store.append("user-2", [EventData("Registered", {})])
    ...     await Projector(store, Projection("emails", emails), model, on_error=DeadLetters()).catch_up()
    ...     print(model.state, [(d.stream, d.error) for d in await model.dead_letters()])
    >>> anyio.run(main)
    ['a@example.com'] [('user-2', "KeyError: 'email'")]
    """


@dataclass(frozen=True)
class Retry:
    """On a failing event, apply it again with backoff; if it still fails, do ``then``.

    >>> import anyio
    >>> from streamsrc import RetryPolicy
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> calls = []
    >>> def flaky(n, events):  # fails twice, then works
    ...     calls.append(len(events))
    ...     if len(calls) < 3:
    ...         raise ConnectionError("index busy")
    ...     return n + len(events)
    >>> async def main() -> None:
    ...     store, model = MemoryStore(), MemoryReadModel(0)
    ...     await store.append("s", [EventData("Noted", {})])
    ...     retry = Retry(RetryPolicy(max_attempts=5, base_delay=0.001), then=DeadLetters())
    ...     await Projector(store, Projection("count", flaky), model, on_error=retry).catch_up()
    ...     print(model.state, len(calls))
    >>> anyio.run(main)
    1 3
    """

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    then: Stop | DeadLetters = Stop()


OnError: TypeAlias = Stop | DeadLetters | Retry


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a projection run has got: reported after every batch.

    ``events`` counts the events applied by this run, ``elapsed`` its
    seconds so far; ``head`` is the last known head of the log.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("s", [EventData("Noted", {}) for _ in range(5)])
    ...     count = Projection("count", lambda n, events: n + len(events))
    ...     projector = Projector(store, count, MemoryReadModel(0), batch_size=2)
    ...     await projector.catch_up(on_progress=lambda p: print(p.position, p.lag, f"{p.fraction:.0%}"))
    >>> anyio.run(main)
    2 3 40%
    4 1 80%
    5 0 100%
    """

    name: str
    position: int
    head: int
    events: int
    elapsed: float
    caught_up: bool
    dead_letters: int = 0

    @property
    def lag(self) -> int:
        """Positions of the log not yet read (0 when caught up)."""
        return max(0, self.head - self.position)

    @property
    def rate(self) -> float:
        """Events applied per second by this run."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float:
        """How much of the log up to ``head`` has been read, from 0.0 to 1.0 (for progress bars)."""
        return 1.0 if self.head <= 0 else min(1.0, self.position / self.head)


@dataclass(frozen=True, slots=True)
class Status:
    """A projection's checkpoint, the head of the log, the lag between them, and its dead letters.

    ``dead_letters`` counts the events the projection has set aside in its
    read model (all its runs; :attr:`Progress.dead_letters` counts one run's).

    >>> status = Status("emails", position=90, head=100, dead_letters=2)
    >>> status.lag, status.dead_letters
    (10, 2)
    """

    name: str
    position: int
    head: int
    dead_letters: int = 0

    @property
    def lag(self) -> int:
        """Positions of the log the projection has not read yet."""
        return max(0, self.head - self.position)


class Projector(Generic[H]):
    """Runs one projection into one read model.

    It reads the log from the model's checkpoint (with backpressure: a page is
    read ahead while a batch is applied), cuts batches of up to
    ``batch_size`` events, and hands each batch and its new checkpoint to the
    model together (exactly once when the model can write both in one
    transaction, at least once otherwise). With ``max_wait > 0`` batches are
    cut by :meth:`Stream.group_within` — up to ``batch_size`` events gathered
    for up to ``max_wait`` seconds: fewer, larger transactions when events
    trickle in, at the cost of that much latency; with ``max_wait=0`` (the
    default) a batch is whatever the last read returned.

    A batch whose *handler* fails is applied again event by event to find
    the event at fault; ``on_error`` says what then happens to it
    (:class:`Stop`, :class:`Retry`, :class:`DeadLetters`). A failure of the
    read model itself (its checkpoint save, its commit, its connection) is
    no event's fault: the run ends with :class:`~streamsrc.errors.StoreUnavailable`
    at once, nothing re-applied or dead-lettered;
    run it again to go on from the checkpoint. Run one projector per
    projection and model at a time.

    >>> import anyio
    >>> from collections import Counter
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> def count_types(counts, events):
    ...     return counts + Counter(e.type for e in events)
    >>> async def main() -> None:
    ...     store, counts = MemoryStore(), MemoryReadModel(Counter())
    ...     await store.append("user-1", [EventData("Registered", {}), EventData("LoggedIn", {})])
    ...     print(await Projector(store, Projection("types", count_types), counts).catch_up())
    ...     print(counts.state)
    >>> anyio.run(main)
    Status(name='types', position=2, head=2, dead_letters=0)
    Counter({'Registered': 1, 'LoggedIn': 1})
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection[H],
        model: ReadModel[H],
        *,
        batch_size: int = 1000,
        max_wait: float = 0.0,
        on_error: OnError = Stop(),
        poll: Poll = DEFAULT_POLL,
        concurrency: int = 1,
        partition: int = 0,
        partitions: int = 1,
        fence: Fence | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 <= partition < partitions:
            raise ValueError("need 0 <= partition < partitions")
        if concurrency > 1 and not hasattr(model, "apply_stream"):
            raise ValueError(f"{model!r} cannot apply streams concurrently (it has no apply_stream)")
        self.store = store
        self.projection = projection
        self.model = model
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.on_error = on_error
        self.poll = poll
        self.concurrency = concurrency
        self.partition = partition
        self.partitions = partitions
        self.fence = fence
        self._cas = _accepts_cas(model)

    def __repr__(self) -> str:
        return f"<Projector {self.name!r} into {self.model!r}>"

    @property
    def name(self) -> str:
        """The key of the checkpoint: the projection's name, ``name[i/P]`` for partition ``i`` of ``P``."""
        return partition_name(self.projection.name, self.partition, self.partitions)

    def _mine(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events of this runner's partition."""
        if self.partitions == 1:
            return events
        i, n = self.partition, self.partitions
        return [e for e in events if partition_of(e.stream, n) == i]

    def _cas_options(self, expected: int) -> dict[str, Any]:
        """The compare-and-set keywords for a model that takes them (none for an older one)."""
        if not self._cas:
            return {}
        return {"expected": expected, "fence": self.fence}

    async def status(self) -> Status:
        """The projection's checkpoint, the head of the log, the lag and the dead letters kept."""
        position = await self.model.load_position(self.name)
        dead = len(await self.model.dead_letters(self.name))
        return Status(self.name, position, await self.store.head(), dead)

    def progress(self, live: bool = True) -> Stream[Progress]:
        """Run the projection as a stream: one :class:`Progress` per batch applied.

        With ``live=False`` it ends once it has caught up with the log;
        otherwise it follows new events until stopped (``take_while``,
        ``interrupt_when``, cancellation — the checkpoint is always that of
        the last batch applied).
        """

        if self.concurrency > 1:

            async def parallel() -> Stream[Progress]:
                send, receive = anyio.create_memory_object_stream[Progress](16)

                async def produce() -> None:
                    async with send:
                        try:
                            await _Parallel(self, live, send.send).run()
                        except BaseExceptionGroup as group:
                            _reraise_unwrapped(group)

                return Stream.from_async_iterable(receive).concurrently(Stream.eval(produce))

            return Stream.eval(parallel).flat_map(lambda s: s)

        async def start() -> Stream[Progress]:
            return self._run(await self.model.load_position(self.name), live)

        return Stream.eval(start).flat_map(lambda s: s)

    async def run(self, on_progress: Callable[[Progress], object] | None = None) -> None:
        """Follow the log for ever (until cancelled), calling ``on_progress`` after each batch."""
        if self.concurrency > 1:
            await self._run_parallel(True, on_progress)
            return
        await self._report(self.progress(live=True), on_progress)

    async def catch_up(self, on_progress: Callable[[Progress], object] | None = None) -> Status:
        """Apply everything up to the head of the log, then return the status."""
        if self.concurrency > 1:
            await self._run_parallel(False, on_progress)
        else:
            await self._report(self.progress(live=False), on_progress)
        return await self.status()

    async def _run_parallel(self, live: bool, on_progress: Callable[[Progress], object] | None) -> None:
        async def tell(p: Progress) -> None:
            if on_progress is not None:
                on_progress(p)

        try:
            await _Parallel(self, live, tell).run()
        except BaseExceptionGroup as group:
            _reraise_unwrapped(group)

    async def _report(
        self, progress: Stream[Progress], on_progress: Callable[[Progress], object] | None
    ) -> None:
        if on_progress is None:
            await progress.drain()
        else:

            async def tell(p: Progress) -> None:
                on_progress(p)

            await progress.foreach(tell).drain()

    def _run(self, start: int, live: bool) -> Stream[Progress]:
        p = self.projection
        items = subscribe_with_ticks(
            self.store,
            start,
            types=p.types,
            stream_prefix=p.stream_prefix,
            live=live,
            page_size=self.batch_size,
            poll=self.poll,
        )
        batches = (
            items.group_within(self.batch_size, self.max_wait) if self.max_wait > 0 else items.chunks()
        ).buffer(1)
        run = _Run(self, start)
        _started(self, start, live)

        async def stopped() -> None:
            _stopped(self, run.position, run.events, run.dead)

        return batches.eval_map(run.batch).on_finalize(stopped)


class _Run:
    """The state of one run of a projector: checkpoint, counters, head."""

    def __init__(self, projector: Projector[Any], start: int) -> None:
        self.projector = projector
        self.pages = projector.max_wait == 0
        self.position = start
        self.head = start
        self.head_checked = 0.0
        self.events = 0
        self.dead = 0
        self.caught_up = False
        self.started = time.perf_counter()
        self.watch = _Watched(projector.projection.handler)

    async def batch(self, items: list[RecordedEvent | Tick]) -> Progress:
        last = items[-1]
        if self.pages:  # a page as read: its events, then its one Tick
            events: list[RecordedEvent] = items[:-1]  # type: ignore[assignment]
        else:  # group_within mixes pages: Ticks anywhere
            events = [x for x in items if type(x) is not Tick]  # type: ignore[misc]
        position = last.position
        caught_up = type(last) is Tick and last.caught_up
        if self.projector.partitions > 1:
            events = self.projector._mine(events)
        if events or position > self.position:
            if _telemetry.hooks is None:
                await self.apply(events, position)
            else:  # OpenTelemetry on: the same batch, in a span
                await _telemetry.hooks.batch(
                    self.projector.name, events, position, self.apply(events, position)
                )
            self.position = position
            self.events += len(events)
        now = time.perf_counter()
        if caught_up:
            self.head = max(self.head, position)
        elif now - self.head_checked > 0.25 or self.head < position:
            self.head = max(position, await self.projector.store.head())
            self.head_checked = now
        p = self.projector
        elapsed = now - self.started
        if caught_up and not self.caught_up:
            self.caught_up = True
            _caught_up(p, self.position, self.events, elapsed)
        elif _log.isEnabledFor(logging.DEBUG):
            _batch_debug(p, events, self.position, self.head)
        progress = Progress(p.name, self.position, self.head, self.events, elapsed, caught_up, self.dead)
        if _telemetry.hooks is not None:
            _telemetry.hooks.progress(progress)
        return progress

    async def apply(self, events: list[RecordedEvent], position: int) -> None:
        """Apply a batch; if its handler fails, find the event at fault and apply the policy to it."""
        exc = await self.attempt(events, position)
        if exc is None:
            return
        if not events:  # the handler was not called, so it cannot be blamed: never happens
            raise exc
        if len(events) == 1:
            await self.poison(events[0], exc, position)
            return
        # Find the event at fault: everything before it goes in, one event at a time. The
        # first event that fails here is the one the batch failed on: that makes two tries.
        tries = 2
        for i, event in enumerate(events):
            after = position if i == len(events) - 1 else event.position
            failed = await self.attempt([event], after)
            if failed is not None:
                await self.poison(event, failed, after, tries)
                tries = 1

    async def attempt(self, events: list[RecordedEvent], position: int) -> Exception | None:
        """Hand ``events`` and the checkpoint ``position`` to the model once.

        Returns ``None`` when they went in, or the handler's error when the
        handler failed (an exactly-once model then kept nothing of them). Any other
        failure of the model is raised as :class:`StoreUnavailable`: see
        :func:`_model_failed`.
        """
        p = self.projector
        self.watch.raised = None
        try:
            await p.model.apply(p.name, self.watch, events, position, **p._cas_options(self.position))
        except Exception as exc:
            if exc is self.watch.raised or isinstance(exc, EffectFailed):
                return exc  # the handler's own error, or the Failure it returned
            _model_failed(p, f"could not apply the batch up to position {position}", exc)
        self.position = position
        return None

    async def poison(self, event: RecordedEvent, exc: Exception, position: int, tries: int = 1) -> None:
        """Apply the policy to ``event``, whose handler has failed ``tries`` times with ``exc``."""
        p = self.projector
        policy = p.on_error
        if isinstance(policy, Retry):
            attempt = tries
            while policy.policy.should_retry(attempt - 1, exc):
                _retrying(p, event, exc, attempt)
                await anyio.sleep(policy.policy.delay(attempt - 1))
                again = await self.attempt([event], position)
                if again is None:
                    return
                exc = again
                attempt += 1
            policy = policy.then
        if isinstance(policy, DeadLetters):
            try:
                letter = DeadLetter.of(p.name, event, exc)
                await p.model.park(p.name, letter, position, **p._cas_options(self.position))
            except Exception as failed:
                where = f"could not keep the dead letter at position {event.position}"
                _model_failed(p, where, failed)
            self.position = position
            self.dead += 1
            _dead_lettered(p, event, exc)
            return
        raise ProjectionFailed(p.name, event.position, event.stream, event.seq, event.type, exc) from exc


_PARALLEL_PAGE = 1000
"""Events read at once by the concurrent runner (its batches are per stream, so smaller)."""


class _Parallel:
    """One run of a projector with ``concurrency > 1`` (Propulsion's model).

    A reader task reads the log ahead (up to a bound) and queues each event
    behind its stream; ``concurrency`` workers each take a stream that is not
    being handled, apply its queued events (up to ``batch_size``) in order
    with the model's ``apply_stream`` (the events and how far the stream got,
    in one transaction for an exactly-once model), and give the stream back.
    The checkpoint moves, in a transaction of its own, to just before the
    lowest position read and not yet handled; on a restart from it the
    streams' marks say which events past it were handled already, so an
    exactly-once model stays exactly once. The error policy is judged per
    stream: a failing event holds up its own stream only (a ``Stop`` ends
    the run; the checkpoint stays before that event).
    """

    def __init__(
        self, projector: Projector[Any], live: bool, tell: Callable[[Progress], Awaitable[object]]
    ) -> None:
        self.p = projector
        self.live = live
        self.tell = tell
        self.pending: dict[str, collections.deque[RecordedEvent]] = {}
        self.busy: set[str] = set()
        self.inflight: dict[str, int] = {}
        self.buffered = 0
        self.limit = max(2 * projector.batch_size, min(128 * projector.concurrency, 100_000))
        self.read_to = 0
        self.caught_up = False
        self.finished_reading = False
        self.committed = 0
        self.head = 0
        self.events = 0
        self.dead = 0
        self.started = time.perf_counter()
        self.space = anyio.Event()
        self.moved = anyio.Event()
        send, receive = anyio.create_memory_object_stream[str](math.inf)
        self.ready_send, self.ready_receive = send, receive

    async def run(self) -> None:
        p = self.p
        self.committed = self.read_to = self.head = await p.model.load_position(p.name)
        loader = getattr(p.model, "load_marks", None)
        self.marks: dict[str, int] = await loader(p.name) if loader is not None else {}
        _started(p, self.committed, self.live)
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                tg.start_soon(self.read)
                for _ in range(p.concurrency):
                    tg.start_soon(self.work)
                await self.checkpoints()
                tg.cancel_scope.cancel()
        finally:
            _stopped(p, self.committed, self.events, self.dead)

    async def read(self) -> None:
        p = self.p
        items = subscribe_with_ticks(
            p.store,
            self.committed,
            types=p.projection.types,
            stream_prefix=p.projection.stream_prefix,
            live=self.live,
            page_size=max(p.batch_size, _PARALLEL_PAGE),
            poll=p.poll,
        )
        await items.chunks().foreach(self.page).drain()
        self.finished_reading = True
        self.moved.set()

    async def page(self, chunk: list[RecordedEvent | Tick]) -> None:
        """Queue a page's events behind their streams; wait while too many are queued."""
        p, marks, pending, busy = self.p, self.marks, self.pending, self.busy
        last = chunk[-1] if chunk else None
        events = chunk[:-1] if type(last) is Tick else [x for x in chunk if type(x) is not Tick]
        partitions, partition = p.partitions, p.partition
        ready = self.ready_send.send_nowait
        queued = 0
        for e in events:
            stream = e.stream  # type: ignore[union-attr]
            if partitions > 1 and partition_of(stream, partitions) != partition:
                continue
            if marks and e.position <= marks.get(stream, 0):
                continue  # applied before a restart, past the checkpoint
            queue = pending.get(stream)
            if queue is None:
                queue = pending[stream] = collections.deque()
            queue.append(e)  # type: ignore[arg-type]
            queued += 1
            if stream not in busy:
                busy.add(stream)
                ready(stream)
        self.buffered += queued
        for x in chunk if type(last) is not Tick else (last,):
            if type(x) is Tick:
                self.read_to = x.position
                self.caught_up = x.caught_up
                if x.caught_up:
                    self.head = max(self.head, x.position)
        self.moved.set()
        while self.buffered >= self.limit:
            self.space = anyio.Event()
            await self.space.wait()

    async def work(self) -> None:
        size, pending, inflight = self.p.batch_size, self.pending, self.inflight
        async for stream in self.ready_receive:
            queue = pending[stream]
            n = min(size, len(queue))
            batch = [queue.popleft() for _ in range(n)]
            inflight[stream] = batch[0].position
            if _telemetry.hooks is None:
                await self.handle(batch)
            else:  # OpenTelemetry on: the same batch, in a span
                await _telemetry.hooks.batch(self.p.name, batch, batch[-1].position, self.handle(batch))
            del inflight[stream]
            self.events += n
            self.buffered -= n
            if queue:
                self.ready_send.send_nowait(stream)
            else:
                del pending[stream]
                self.busy.discard(stream)
            self.space.set()
            self.moved.set()

    def low_water(self) -> int:
        """Just before the lowest position read and not yet handled (how far the read went if none)."""
        lowest = min((q[0].position for q in self.pending.values() if q), default=None)
        if self.inflight:
            first = min(self.inflight.values())
            lowest = first if lowest is None else min(lowest, first)
        return self.read_to if lowest is None else lowest - 1

    async def checkpoints(self) -> None:
        p = self.p
        watch = _Watched(p.projection.handler)
        reported = False
        head_checked = 0.0
        while True:
            await self.moved.wait()
            self.moved = anyio.Event()
            low = self.low_water()
            # Report when the checkpoint moves, and once when the run first catches up (as the
            # sequential runner does), even with nothing to apply.
            first_caught_up = self.caught_up and not reported and low >= self.read_to
            if low > self.committed or first_caught_up:
                if low > self.committed:
                    try:
                        await p.model.apply(p.name, watch, [], low, **p._cas_options(self.committed))
                    except Exception as exc:
                        _model_failed(p, f"could not move the checkpoint to {low}", exc)
                    self.committed = low
                if first_caught_up and not reported:
                    _caught_up(p, low, self.events, time.perf_counter() - self.started)
                reported = reported or first_caught_up
                now = time.perf_counter()
                if not self.caught_up and now - head_checked > 0.25:
                    self.head = max(self.head, await p.store.head())
                    head_checked = now
                self.head = max(self.head, low)
                caught_up = self.caught_up and low >= self.read_to
                progress = Progress(
                    p.name, low, self.head, self.events, now - self.started, caught_up, self.dead
                )
                if _telemetry.hooks is not None:
                    _telemetry.hooks.progress(progress)
                await self.tell(progress)
            if self.finished_reading and not self.busy and self.committed >= self.read_to:
                return

    async def handle(self, events: list[RecordedEvent]) -> None:
        exc = await self.attempt(events)
        if exc is None:
            return
        if len(events) == 1:
            await self.poison(events[0], exc)
            return
        tries = 2
        for event in events:
            failed = await self.attempt([event])
            if failed is not None:
                await self.poison(event, failed, tries)
                tries = 1

    async def attempt(
        self, events: list[RecordedEvent], letter: DeadLetter | None = None
    ) -> Exception | None:
        p = self.p
        watch = _Watched(p.projection.handler)
        try:
            await p.model.apply_stream(p.name, watch, events, letter=letter, fence=p.fence)  # type: ignore[attr-defined]
        except Exception as exc:
            if letter is None and (exc is watch.raised or isinstance(exc, EffectFailed)):
                return exc
            _model_failed(p, f"could not apply stream {events[-1].stream!r} up to {events[-1].position}", exc)
        return None

    async def poison(self, event: RecordedEvent, exc: Exception, tries: int = 1) -> None:
        p = self.p
        policy = p.on_error
        if isinstance(policy, Retry):
            attempt = tries
            while policy.policy.should_retry(attempt - 1, exc):
                _retrying(p, event, exc, attempt)
                await anyio.sleep(policy.policy.delay(attempt - 1))
                again = await self.attempt([event])
                if again is None:
                    return
                exc = again
                attempt += 1
            policy = policy.then
        if isinstance(policy, DeadLetters):
            await self.attempt([event], DeadLetter.of(p.name, event, exc))
            self.dead += 1
            _dead_lettered(p, event, exc)
            return
        raise ProjectionFailed(p.name, event.position, event.stream, event.seq, event.type, exc) from exc


def _accepts_cas(model: object) -> bool:
    """Whether ``model.apply`` takes the compare-and-set keywords (``expected``, ``fence``)."""
    try:
        parameters = inspect.signature(model.apply).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError, AttributeError):
        return False
    return "expected" in parameters or any(
        x.kind is inspect.Parameter.VAR_KEYWORD for x in parameters.values()
    )


class _Watched:
    """A projection's handler, watched: the error its last call raised, if any.

    The runner hands this to the read model in place of the handler, so that
    when the model's ``apply`` raises it can tell the handler's failure (the
    very exception the handler raised) from the model's own (anything else:
    a checkpoint save, a commit, a lost connection, after the handler
    finished or before it ran). Calls go through unchanged, sync or async.
    """

    __slots__ = ("handler", "raised")

    def __init__(self, handler: Callable[..., Any]) -> None:
        self.handler = handler
        self.raised: BaseException | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.raised = None
        try:
            result = self.handler(*args, **kwargs)
        except BaseException as exc:
            self.raised = exc
            raise
        return self._awaited(result) if inspect.isawaitable(result) else result

    async def _awaited(self, result: Awaitable[Any]) -> Any:
        try:
            return await result
        except BaseException as exc:
            self.raised = exc
            raise


def _fields(projector: Projector[Any], **more: Any) -> dict[str, Any]:
    """The structured fields of a log record about a projection."""
    return {"projection": projector.name, **more}


def _event_fields(projector: Projector[Any], event: RecordedEvent, **more: Any) -> dict[str, Any]:
    """The structured fields of a log record about one event of a projection."""
    return _fields(
        projector, stream=event.stream, seq=event.seq, position=event.position, event_type=event.type, **more
    )


def _started(projector: Projector[Any], position: int, live: bool) -> None:
    _log.info(
        "projection %s starts at position %d (%s)",
        projector.name,
        position,
        "live" if live else "catching up",
        extra=_fields(projector, position=position, live=live, concurrency=projector.concurrency),
    )


def _stopped(projector: Projector[Any], position: int, events: int, dead: int) -> None:
    _log.info(
        "projection %s stops at position %d (%d events handled, %d of them dead letters)",
        projector.name,
        position,
        events,
        dead,
        extra=_fields(projector, position=position, events=events, dead_letters=dead),
    )


def _caught_up(projector: Projector[Any], position: int, events: int, elapsed: float) -> None:
    _log.info(
        "projection %s caught up at position %d (%d events in %.3f s)",
        projector.name,
        position,
        events,
        elapsed,
        extra=_fields(projector, position=position, events=events, elapsed=elapsed),
    )


def _batch_debug(projector: Projector[Any], events: list[RecordedEvent], position: int, head: int) -> None:
    _log.debug(
        "projection %s applied %d events up to position %d (head %d)",
        projector.name,
        len(events),
        position,
        head,
        extra=_fields(projector, position=position, head=head, events=len(events)),
    )


def _retrying(projector: Projector[Any], event: RecordedEvent, exc: Exception, attempt: int) -> None:
    _log.warning(
        "projection %s: handler failed on %s seq %d (position %d), attempt %d, retrying: %r",
        projector.name,
        event.stream,
        event.seq,
        event.position,
        attempt,
        exc,
        extra=_event_fields(projector, event, attempt=attempt, error=type(exc).__name__),
    )


def _dead_lettered(projector: Projector[Any], event: RecordedEvent, exc: Exception) -> None:
    _log.warning(
        "projection %s: event %s seq %d (position %d) set aside as a dead letter: %r",
        projector.name,
        event.stream,
        event.seq,
        event.position,
        exc,
        extra=_event_fields(projector, event, error=type(exc).__name__),
    )
    if _telemetry.hooks is not None:
        _telemetry.hooks.dead_letter(projector.name, event)


def _model_failed(projector: Projector[Any], what: str, exc: Exception) -> NoReturn:
    """Raise the error of a read model that failed on its own (not its handler): ``StoreUnavailable``.

    A model's ``StoreUnavailable`` goes out as itself; anything else it
    raises (a driver's error that a checkpoint store let out, say) is wrapped
    in one, with the model's error as ``__cause__``.
    """
    if isinstance(exc, (StoreUnavailable, ProjectionOwnedElsewhere)):
        raise exc
    model, name = projector.model, projector.name
    raise StoreUnavailable(
        f"read model {model!r} of projection {name!r} {what}: {type(exc).__name__}: {exc}"
    ) from exc


def _reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the one error a task group's ``group`` stands for, never a group.

    The first leaf is raised as itself (a ``BaseException`` that is not an
    ``Exception``, such as a cancellation, before any error), with a note
    naming each other error; the leaf keeps its own ``__context__``.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            leaves.append(e)
    if not leaves:
        raise group
    first = next((e for e in leaves if not isinstance(e, Exception)), leaves[0])
    for other in leaves:
        if other is not first and isinstance(other, Exception):
            first.add_note(f"another error happened too: {other!r}")
    context = first.__context__
    try:
        raise first
    finally:
        first.__context__ = context


class ProjectionService(Generic[M]):
    """A projection kept live on a read model that serves queries, rebuilt blue/green on demand.

    ``async with ProjectionService(store, projection, model) as service:``
    runs the projection live in the background; read from
    ``service.model``. :meth:`rebuild` replays the whole log into a fresh
    model while the current one keeps serving (and keeps following the
    log), then switches: the fresh model becomes ``service.model`` and the
    old one is handed back to be closed or deleted. A failure of the live
    projection ends the ``async with`` block with its error.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryReadModel, Projection, ProjectionService
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("s", [EventData("Noted", {}) for _ in range(3)])
    ...     count = Projection("count", lambda n, events: n + len(events))
    ...     async with ProjectionService(store, count, MemoryReadModel(0)) as service:
    ...         old = await service.rebuild(MemoryReadModel(0))  # blue/green: the fresh model now serves
    ...         print(service.model.state, service.model is not old)
    >>> anyio.run(main)
    3 True
    """

    def __init__(self, store: EventStore, projection: Projection[Any], model: M, **options: Any) -> None:
        self.store = store
        self.projection = projection
        self._model = model
        self._options = options
        self._group: anyio.abc.TaskGroup | None = None
        self._live: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self.last: Progress | None = None
        """The last progress of the live projection."""

    @property
    def model(self) -> M:
        """The read model serving queries now."""
        return self._model

    def projector(self, model: M) -> Projector[Any]:
        """A projector of this service's projection into ``model``, with the service's options."""
        return Projector(self.store, self.projection, model, **self._options)

    async def status(self) -> Status:
        """The serving model's checkpoint, the head of the log and the lag."""
        return await self.projector(self._model).status()

    async def __aenter__(self) -> ProjectionService[M]:
        self._group = await anyio.create_task_group().__aenter__()
        await self._start()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        try:
            return await self._group.__aexit__(*exc)
        except BaseExceptionGroup as group:  # the block's error, or the live projection's, as itself
            _reraise_unwrapped(group)
            raise

    async def _start(self) -> None:
        assert self._group is not None
        projector = self.projector(self._model)
        scope = anyio.CancelScope()
        stopped = anyio.Event()

        def seen(p: Progress) -> None:
            self.last = p

        async def live() -> None:
            try:
                with scope:
                    await projector.run(on_progress=seen)
            finally:
                stopped.set()

        self._live, self._stopped = scope, stopped
        self._group.start_soon(live)

    async def rebuild(self, fresh: M, on_progress: Callable[[Progress], object] | None = None) -> M:
        """Fill ``fresh`` from the whole log while the current model serves, then switch to it.

        Returns the model that was serving (now stopped): close or delete it.
        """
        if self._group is None:
            raise RuntimeError("use the service in 'async with' first")
        building = self.projector(fresh)
        await building.catch_up(on_progress)  # the long part: the old model still serves
        assert self._live is not None
        assert self._stopped is not None
        self._live.cancel()
        await self._stopped.wait()
        await building.catch_up(on_progress)  # what came in meanwhile: a few events
        old, self._model = self._model, fresh
        await self._start()
        return old
