"""Read models: where a projection's handler writes, and where its checkpoint lives.

A read model keeps the checkpoint of each projection writing to it. When it
can write the handler's changes and the checkpoint in one transaction, it
does (``exactly_once``): a crash leaves either both or neither, so no event
is ever applied twice. Otherwise the checkpoint moves after the batch is
applied, and after a crash the events since the last checkpoint are applied
again (*at least once*): the handler must be idempotent, and can use each
event's ``position`` to tell.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from streamsrc.effect import run_effect
from streamsrc.errors import CheckpointMoved, ProjectionOwnedElsewhere
from streamsrc.events import RecordedEvent
from streamsrc.projections._leases import Fence
from streamsrc.store import CheckpointStore

__all__ = [
    "CallbackReadModel",
    "DeadLetter",
    "MemoryReadModel",
    "ReadModel",
    "each",
]

S = TypeVar("S")
H = TypeVar("H")
H_contra = TypeVar("H_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a projection could not apply and set aside (the dead-letter policy).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("user-2", [EventData("Registered", {})])
    ...     [event] = await store.read("user-2").to_list()
    ...     letter = DeadLetter.of("emails", event, KeyError("email"))
    ...     print(letter.projection, letter.position, letter.stream, letter.seq, letter.type, letter.error)
    >>> anyio.run(main)
    emails 1 user-2 1 Registered KeyError: 'email'
    """

    projection: str
    position: int
    stream: str
    seq: int
    type: str
    id: str
    error: str
    time: datetime

    def to_row(self) -> tuple[str, int, str, int, str, str, str, int]:
        """The letter as a table row (the time in microseconds since the epoch)."""
        us = int(self.time.timestamp() * 1_000_000)
        return (self.projection, self.position, self.stream, self.seq, self.type, self.id, self.error, us)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeadLetter:
        """The letter stored as :meth:`to_row` made it."""
        projection, position, stream, seq, kind, id, error, us = row
        moment = datetime.fromtimestamp(us / 1_000_000, UTC)
        return cls(projection, position, stream, seq, kind, id, error, moment)

    @classmethod
    def of(cls, projection: str, event: RecordedEvent, error: BaseException) -> DeadLetter:
        """The dead letter for ``event``, which failed with ``error``."""
        return cls(
            projection,
            event.position,
            event.stream,
            event.seq,
            event.type,
            str(event.id),
            f"{type(error).__name__}: {error}",
            datetime.now(UTC),
        )


class ReadModel(Protocol[H_contra]):
    """Where a projection writes: applies batches with a handler of type ``H`` and keeps checkpoints.

    >>> import anyio
    >>> model: ReadModel[Any] = MemoryReadModel(0)
    >>> model.exactly_once, anyio.run(model.load_position, "count")
    (True, 0)
    """

    @property
    def exactly_once(self) -> bool:
        """Whether a batch and its checkpoint are written atomically."""
        ...

    async def load_position(self, name: str) -> int:
        """The checkpoint of projection ``name`` (0 if it never ran)."""
        ...

    async def apply(
        self,
        name: str,
        handler: H_contra,
        events: Sequence[RecordedEvent],
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply ``events`` with ``handler`` and move ``name``'s checkpoint to ``position``.

        The checkpoint is a compare-and-set: it moves only from ``expected``
        (the position the batch started at, when given), never backwards,
        and only while ``fence`` (a partition's lease token, when given) is
        still current; otherwise nothing of the batch is applied and
        :class:`~streamsrc.errors.ProjectionOwnedElsewhere` is raised. (A
        model written before these keywords existed still works: the runner
        passes them only to models that accept them.)

        If the handler raises, the exception propagates *as itself* (not
        wrapped: the runner tells the handler's failures from the model's by
        that identity); an exactly-once model then leaves nothing of the
        batch, nor a moved checkpoint. The model's own failures (its
        checkpoint, its commit, its connection) should raise
        :class:`~streamsrc.errors.StoreUnavailable`; the runner wraps anything
        else in one. With no events, only the checkpoint moves.
        """
        ...

    async def park(
        self,
        name: str,
        letter: DeadLetter,
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Keep ``letter`` among the dead letters and move the checkpoint to ``position`` (as ``apply``)."""
        ...

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        """The dead letters kept (of projection ``name``, or all), oldest first."""
        ...


def each(evolve: Callable[[S, RecordedEvent], S]) -> Callable[[S, Sequence[RecordedEvent]], S]:
    """A batch handler for :class:`MemoryReadModel` from a function of one event.

    >>> add = each(lambda total, e: total + e.position)
    >>> add(0, [])
    0
    """

    def handler(state: S, events: Sequence[RecordedEvent]) -> S:
        for event in events:
            state = evolve(state, event)
        return state

    return handler


MemoryHandler = Callable[[S, Sequence[RecordedEvent]], S]
"""A pure fold of a batch into a new state (do not change the state passed in)."""


class MemoryReadModel(Generic[S]):
    """A read model held in memory: ``state`` is a fold of the events, replaced per batch.

    The handler returns the new state and leaves the old one alone, so a
    batch that fails changes nothing and the model is exactly-once. The model
    lives as long as the process: a runner started on a fresh one replays
    the log from the start (its checkpoint is in the model, not the store).

    >>> from collections import Counter
    >>> model = MemoryReadModel(Counter())
    >>> model.state
    Counter()
    """

    exactly_once = True

    def __init__(self, initial: S) -> None:
        self.state = initial
        self._positions: dict[str, int] = {}
        self._marks: dict[str, dict[str, int]] = {}
        self._dead: list[DeadLetter] = []

    def __repr__(self) -> str:
        return f"<MemoryReadModel {self._positions}>"

    async def load_position(self, name: str) -> int:
        return self._positions.get(name, 0)

    def _claim(self, name: str, position: int, expected: int | None, fence: Fence | None) -> None:
        if fence is not None and fence.leases is not None:
            holds_now = getattr(fence.leases, "holds_now", None)
            if holds_now is not None and not holds_now(fence):
                raise ProjectionOwnedElsewhere(name, 0, None, token=fence.token)
        current = self._positions.get(name, 0)
        if (expected is not None and current != expected) or position < current:
            raise ProjectionOwnedElsewhere(name, current if expected is None else expected, current)

    async def apply(
        self,
        name: str,
        handler: MemoryHandler[S],
        events: Sequence[RecordedEvent],
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        self._claim(name, position, expected, fence)
        state = handler(self.state, events) if events else self.state
        self.state = state
        self._positions[name] = position
        marks = self._marks.get(name)
        if marks:
            self._marks[name] = {s: p for s, p in marks.items() if p > position}

    async def park(
        self,
        name: str,
        letter: DeadLetter,
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        self._claim(name, position, expected, fence)
        self._dead.append(letter)
        self._positions[name] = position

    async def apply_stream(
        self,
        name: str,
        handler: MemoryHandler[S],
        events: Sequence[RecordedEvent],
        *,
        letter: DeadLetter | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Apply one stream's ``events`` (or keep ``letter``) and record how far that stream got."""
        self._claim(name, self._positions.get(name, 0), None, fence)
        if letter is not None:
            self._dead.append(letter)
        else:
            self.state = handler(self.state, events)
        self._marks.setdefault(name, {})[events[-1].stream] = events[-1].position

    async def load_marks(self, name: str) -> dict[str, int]:
        """How far each stream was applied past the checkpoint (by :meth:`apply_stream`)."""
        return dict(self._marks.get(name, {}))

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        return [d for d in self._dead if name is None or d.projection == name]


CallbackHandler = Callable[[Sequence[RecordedEvent]], Awaitable[object] | object]
"""Writes a batch anywhere (a search index, another service); must be idempotent."""


class CallbackReadModel:
    """A read model outside streamsrc's reach: the handler writes it, the checkpoint goes to a store.

    At least once: the checkpoint is saved (in ``checkpoints``, e.g. the event
    store itself) after the handler has finished a batch, so after a crash
    the handler may see events again. Make it idempotent (an upsert, or skip
    events at or below a position it has recorded). Dead letters are kept in
    memory and passed to ``on_dead_letter`` if given.

    A checkpoint save that fails (the store locked or down) is not a crash:
    the model remembers, in this process, how far its handler got past the
    saved checkpoint, and when the projector runs again from that checkpoint
    it saves the checkpoint again without handing those events (or a dead
    letter) to the handler a second time.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import Projection, Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def publish(events) -> None:  # idempotent: events may come again after a crash
    ...     print([(e.position, e.type) for e in events])
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("order-1", [EventData("OrderPlaced", {}), EventData("OrderPaid", {})])
    ...     model = CallbackReadModel(checkpoints=store)  # the checkpoint is kept in the event store
    ...     await Projector(store, Projection("publisher", publish), model).catch_up()
    ...     print(await store.load_checkpoint("publisher"))
    >>> anyio.run(main)
    [(1, 'OrderPlaced'), (2, 'OrderPaid')]
    2
    """

    exactly_once = False

    def __init__(
        self,
        checkpoints: CheckpointStore,
        on_dead_letter: Callable[[DeadLetter], Awaitable[object] | object] | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.on_dead_letter = on_dead_letter
        self._dead: list[DeadLetter] = []
        self._unsaved: dict[str, int] = {}
        """Per projection: how far the handler got past a checkpoint whose save failed."""

    async def load_position(self, name: str) -> int:
        return await self.checkpoints.load_checkpoint(name)

    async def apply(
        self,
        name: str,
        handler: CallbackHandler,
        events: Sequence[RecordedEvent],
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        done = self._unsaved.get(name)
        if done is not None:  # handled already, then the checkpoint's save failed
            events = [e for e in events if e.position > done]
        if events:
            await run_effect(handler(events))
            self._unsaved[name] = max(position, done or 0)
        await self._save(name, position, expected, fence)

    async def park(
        self,
        name: str,
        letter: DeadLetter,
        position: int,
        *,
        expected: int | None = None,
        fence: Fence | None = None,
    ) -> None:
        done = self._unsaved.get(name)
        if done is None or letter.position > done:
            self._dead.append(letter)
            if self.on_dead_letter is not None:
                await run_effect(self.on_dead_letter(letter))
            self._unsaved[name] = max(position, done or 0)
        await self._save(name, position, expected, fence)

    async def apply_stream(
        self,
        name: str,
        handler: CallbackHandler,
        events: Sequence[RecordedEvent],
        *,
        letter: DeadLetter | None = None,
        fence: Fence | None = None,
    ) -> None:
        """Hand one stream's ``events`` to the handler (or keep ``letter``); the checkpoint stays."""
        if fence is not None:
            await fence.check(name)
        if letter is not None:
            self._dead.append(letter)
            if self.on_dead_letter is not None:
                await run_effect(self.on_dead_letter(letter))
        else:
            await run_effect(handler(events))

    async def load_marks(self, name: str) -> dict[str, int]:
        """Nothing: the handler's side is not ours to record (at least once)."""
        return {}

    async def _save(self, name: str, position: int, expected: int | None, fence: Fence | None) -> None:
        if fence is not None:
            await fence.check(name)
        if expected is None:
            await self.checkpoints.save_checkpoint(name, position)
        else:
            try:  # a compare-and-set the store decides: two runners never both move it
                await self.checkpoints.save_checkpoint(name, position, expected=expected)
            except CheckpointMoved as moved:
                raise ProjectionOwnedElsewhere(name, expected, moved.found) from None
        if self._unsaved.get(name, position) <= position:
            self._unsaved.pop(name, None)

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        return [d for d in self._dead if name is None or d.projection == name]
