"""The write side and the read side of one kind of entity: deciders, commands, queries, snapshots.

A :class:`Decider` is pure domain logic (no store, no I/O). An :class:`Entity`
binds it to streams, a codec and a snapshot policy: configuration, not code.
A :class:`Repository` runs it against any store:

* ``handle(key, command)`` is a decision loop: it loads the state (latest
  valid snapshot, then newer events), decides, and syncs (appends with
  ``expected`` = the loaded seq). When another writer got there first it
  resyncs with only the events it missed, decides again and retries, with
  full-jitter backoff, a bounded number of times.
  An append that failed ambiguously (``StoreUnavailable``) is retried with the
  same event ids, so events of an attempt that did land are never appended
  twice. With ``command_id`` (an idempotency key) the event ids come from the
  key, so a *caller* that retries a command after an ambiguous failure does
  not apply it twice either.
* ``load``, ``state_at`` and ``history`` answer "what is it now", "what was it
  at seq N or time T" and "how did it get here" (eventsrc's ``get``,
  ``getAt`` and ``getHistory``).
* Snapshots are written after a command when the policy says so (reads
  never write), tagged with ``Entity.schema_version``: change the state's
  shape, bump the version, and old snapshots are ignored (a full replay)
  instead of mis-decoded. They are best effort: a snapshot that cannot be
  saved or loaded never fails a command or a query; it is logged (logger
  ``streamsrc.entity``) and counted (:class:`SnapshotStats`), and a load
  replays the events instead.

>>> import anyio
>>> from returns.result import Failure, Success
>>> from streamsrc.codec import Codec
>>> from streamsrc.store import open_store
>>> codec = Codec()
>>> @codec.register()
... @dataclass(frozen=True)
... class Deposited:
...     amount: int
>>> def decide(amount, balance):
...     return Success([Deposited(amount)]) if amount > 0 else Failure(Rejection("amount must be positive"))
>>> account = Entity("account", Decider(0, lambda b, e: b + e.amount, decide), codec)
>>> async def demo():
...     async with open_store("memory://") as store:
...         accounts = Repository(store, account)
...         await accounts.handle("a1", 30)
...         await accounts.handle("a1", 12)
...         refused = await accounts.handle("a1", -5)
...         return (await accounts.load("a1")).state, refused
>>> anyio.run(demo)
(42, <Failure: amount must be positive>)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import anyio
from returns.maybe import Nothing, Some
from returns.result import Failure, Result, Success

import streamsrc.telemetry as _telemetry
from streamsrc.codec import Codec, conforms, from_json_value, to_json_value
from streamsrc.effect import RetryPolicy
from streamsrc.errors import (
    Conflict,
    DuplicateEvent,
    Rejection,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import EventStore, SnapshotStore
from streamsrc.stream import Stream

_log = logging.getLogger(__name__)

__all__ = [
    "COMMAND_NAMESPACE",
    "LATEST_EVENT",
    "LATEST_SNAPSHOT",
    "Consistency",
    "Decider",
    "Entity",
    "EveryN",
    "Loaded",
    "OnEventTypes",
    "Rejection",
    "Repository",
    "Saved",
    "SnapshotPolicy",
    "SnapshotStats",
    "Step",
    "command_event_id",
]

K = TypeVar("K")
C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")


@dataclass(frozen=True)
class Decider(Generic[C, E, S]):
    """Pure domain logic: a state, how events change it, and how commands become events.

    ``decide(command, state)`` returns ``Success(events)`` (possibly empty) or
    ``Failure(Rejection(reasons...))``.

    >>> counter = Decider(0, lambda n, e: n + e, lambda c, n: Success([c]))
    >>> counter.fold([1, 2, 3])
    6
    """

    initial: S
    evolve: Callable[[S, E], S]
    decide: Callable[[C, S], Result[list[E], Rejection]]

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        """The state after ``events``, starting from ``state`` (default: ``initial``)."""
        current = self.initial if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current


class SnapshotPolicy(Protocol):
    """When a snapshot is due: after the events ``new_types`` took the state to ``seq``.

    >>> policy: SnapshotPolicy = EveryN(50)
    >>> policy.due(last_snapshot_seq=0, seq=50, new_types=["NameChanged"])
    True
    """

    def due(self, last_snapshot_seq: int, seq: int, new_types: Sequence[str]) -> bool:
        """Whether to save a snapshot at ``seq`` (the last one saved is at ``last_snapshot_seq``)."""
        ...


@dataclass(frozen=True)
class EveryN:
    """A snapshot once ``n`` events have passed since the last one.

    >>> EveryN(100).due(0, 99, ["E"]), EveryN(100).due(0, 100, ["E"])
    (False, True)
    """

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("EveryN needs n >= 1")

    def due(self, last_snapshot_seq: int, seq: int, new_types: Sequence[str]) -> bool:
        return seq - last_snapshot_seq >= self.n


@dataclass(frozen=True)
class OnEventTypes:
    """A snapshot right after any of these event types (e.g. one that starts the state afresh).

    >>> OnEventTypes({"AccountReset"}).due(0, 7, ["Deposited", "AccountReset"])
    True
    """

    types: frozenset[str] | set[str]

    def due(self, last_snapshot_seq: int, seq: int, new_types: Sequence[str]) -> bool:
        return seq > last_snapshot_seq and any(t in self.types for t in new_types)


class Consistency(enum.Enum):
    """How fresh a loaded state must be.

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
    ...     stale, fresh = await accounts.load("u1", LATEST_SNAPSHOT), await accounts.load("u1", LATEST_EVENT)
    ...     print(stale.seq, fresh.seq)
    >>> anyio.run(main)  # no snapshot yet: LATEST_SNAPSHOT gives the initial state
    0 1
    """

    LATEST_EVENT = "latest_event"
    """Replay every event after the snapshot: the state as of the last event."""
    LATEST_SNAPSHOT = "latest_snapshot"
    """Only the latest snapshot: cheapest, possibly stale."""


LATEST_EVENT = Consistency.LATEST_EVENT
LATEST_SNAPSHOT = Consistency.LATEST_SNAPSHOT


@dataclass(frozen=True)
class Entity(Generic[K, C, E, S]):
    """How one kind of entity is stored: configuration around a decider.

    * ``stream(key)`` names the stream of the entity ``key``. Several
      entities (views) may read one stream with different keys, e.g. a
      per-user view over a per-organisation stream: give ``decider`` as a
      function of the key (``view``) to make the view's evolve depend on it.
    * ``state_type`` lets snapshots be decoded; ``snapshots`` says when one is
      written; ``schema_version`` must change when the state's shape does.
    * ``retry`` bounds the attempts of a command that loses races.

    >>> from streamsrc.codec import Codec
    >>> decider = Decider(0, lambda total, event: total + event.amount, lambda amount, total: Success([]))
    >>> account = Entity("account", decider, Codec(), stream=lambda key: f"account-{key}")
    >>> account.stream("a1"), account.snapshot_key("a1")
    ('account-a1', 'account:a1')
    """

    name: str
    decider: Decider[C, E, S]
    codec: Codec
    stream: Callable[[K], str] = str
    view: Callable[[K], Decider[C, E, S]] | None = None
    state_type: Any = None
    snapshots: SnapshotPolicy | None = None
    schema_version: int = 1
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=8, base_delay=0.002, max_delay=0.1)
    )

    def __post_init__(self) -> None:
        if self.snapshots is not None and self.state_type is None:
            raise ValueError(f"entity {self.name!r}: snapshots need a state_type to decode them")

    def decider_for(self, key: K) -> Decider[C, E, S]:
        """The decider of entity ``key`` (``view(key)`` if given)."""
        return self.decider if self.view is None else self.view(key)

    def snapshot_key(self, key: K) -> str:
        """Where the snapshots of entity ``key`` are kept (distinct per entity kind)."""
        return f"{self.name}:{key}"


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """A state as of event ``seq`` of the entity's stream (0: no events).

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     print(await accounts.load("u1"))
    ...     await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
    ...     print(await accounts.load("u1"))
    >>> anyio.run(main)
    Loaded(state=User(user_id='', username='', name='', email='', exists=False), seq=0)
    Loaded(state=User(user_id='u1', username='ada', name='Ada', email='ada@example.com', exists=True), seq=1)
    """

    state: S
    seq: int


@dataclass(frozen=True)
class Saved(Generic[E, S]):
    """A command that succeeded: the new last ``seq``, its ``events`` and the resulting state.

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     saved = (await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))).unwrap()
    ...     print(saved.seq, saved.events, saved.positions, saved.retries)
    >>> anyio.run(main)
    1 (UserRegistered(user_id='u1', username='ada', name='Ada', email='ada@example.com'),) (1,) 0
    """

    seq: int
    events: tuple[E, ...]
    state: S
    positions: tuple[int, ...]
    retries: int


class Step(NamedTuple):
    """One step of an entity's history: the stored event, its decoded form, the state after it.

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, Update, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
    ...     await accounts.handle("u1", Update(name="Ada Lovelace"))
    ...     for step in await accounts.history("u1").to_list():
    ...         print(step.recorded.seq, type(step.event).__name__, step.state.name)
    >>> anyio.run(main)
    1 UserRegistered Ada
    2 NameChanged Ada Lovelace
    """

    recorded: RecordedEvent
    event: Any
    state: Any


CommandError = Rejection | Conflict | StoreError

COMMAND_NAMESPACE = uuid.UUID("b2b0c326-7de8-4c0c-acf9-9b41a3dc27f9")
"""The UUID namespace of :func:`command_event_id` (fixed: changing it would change every derived id)."""


def command_event_id(stream: str, command_id: str | uuid.UUID, index: int) -> uuid.UUID:
    """The id of event ``index`` (0, 1, ...) that a command with idempotency key ``command_id`` appends
    to ``stream``: the same for every try of the command, and for nothing else.

    A UUID key and its string form give the same ids.

    >>> command_event_id("account-a1", "payment-7", 0) == command_event_id("account-a1", "payment-7", 0)
    True
    >>> command_event_id("account-a1", "payment-7", 0) == command_event_id("account-a2", "payment-7", 0)
    False
    >>> command_event_id("account-a1", "payment-7", 0).version
    5
    """
    return uuid.uuid5(COMMAND_NAMESPACE, json.dumps([stream, str(command_id), index]))


class _Applied:
    """The events a command with an idempotency key wrote, found among events read in order."""

    def __init__(self, stream: str, command_id: str | uuid.UUID) -> None:
        self.stream = stream
        self.command_id = command_id
        self.found: list[RecordedEvent] = []
        self.events: list[Any] = []
        self.state: Any = None
        self.first = self.id(0)
        self._next = self.first

    def id(self, index: int) -> uuid.UUID:
        return command_event_id(self.stream, self.command_id, index)

    def ids(self, batch: Sequence[EventData]) -> set[uuid.UUID]:
        return {self.id(k) for k in range(len(batch))}

    def see(self, recorded: RecordedEvent, event: Any, state: Any) -> None:
        """Note ``recorded`` (decoded as ``event``, giving ``state``) if it is the command's next event."""
        if recorded.id == self._next:
            self.found.append(recorded)
            self.events.append(event)
            self.state = state
            self._next = self.id(len(self.found))

    def match(self, records: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """The command's events among ``records`` (consecutive, in order), or none."""
        ids = [r.id for r in records]
        if self.first not in ids:
            return []
        start = ids.index(self.first)
        out = []
        for k, recorded in enumerate(records[start:]):
            if recorded.id != self.id(k):
                break
            out.append(recorded)
        return out


@dataclass
class SnapshotStats:
    """What the snapshots of one :class:`Repository` did since it was made.

    Snapshots are best effort (a snapshot is a shortcut, the events are the
    truth), so their failures never fail a command or a query: each is
    counted here and logged as a warning on the ``streamsrc.entity`` logger,
    with the fields ``entity``, ``stream``, ``seq`` and ``snapshot_key`` on
    the record (``seq``: the snapshot's seq for a save, the seq asked for, or
    ``None`` for the latest, for a load).

    * ``saved`` — snapshots written after commands;
    * ``save_failures`` — saves that raised: the command still succeeded
      (its events are stored), and a later command saves one when due;
    * ``load_failures`` — snapshot reads that raised: the state was replayed
      from the first event instead.

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
    ...     print(accounts.snapshot_stats)
    >>> anyio.run(main)
    SnapshotStats(saved=0, save_failures=0, load_failures=0)
    """

    saved: int = 0
    save_failures: int = 0
    load_failures: int = 0


class Repository(Generic[K, C, E, S]):
    """Commands and queries of one :class:`Entity` kind against one store.

    Only commands write: ``load``, ``state_at`` and ``history`` never do (not
    even a snapshot). ``snapshot_stats`` counts what snapshots did (see
    :class:`SnapshotStats`).

    >>> import anyio
    >>> from streamsrc.examples.accounts import Register, Update, users
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Repository(MemoryStore(), users)
    ...     await accounts.handle("u1", Register("ada", "Ada", "ada@example.com"))
    ...     await accounts.handle("u1", Update(email="ada@example.org"), if_seq=1)
    ...     print((await accounts.load("u1")).state.email, (await accounts.state_at("u1", seq=1)).state.email)
    ...     print(await accounts.handle("u1", Update(email="nowhere")))
    >>> anyio.run(main)
    ada@example.org ada@example.com
    <Failure: 'nowhere' is not an email address>
    """

    def __init__(self, store: EventStore, entity: Entity[K, C, E, S]) -> None:
        self.store = store
        self.entity = entity
        self.snapshot_stats = SnapshotStats()
        """What this repository's snapshots did: saved, failed to save, failed to load."""
        # Checked once: isinstance against a runtime protocol is slow.
        self._snapshots: SnapshotStore | None = (
            store if entity.snapshots is not None and isinstance(store, SnapshotStore) else None
        )

    # -- the read side

    async def load(self, key: K, consistency: Consistency = LATEST_EVENT) -> Loaded[S]:
        """The state of ``key``: from the latest snapshot, then (by default) every newer event.

        A load never writes. When the snapshot cannot be read (the store
        raised), the state is replayed from the first event, for
        ``LATEST_SNAPSHOT`` too: a snapshot is a shortcut, never the only way.
        """
        start, answered = await self._snapshot(key)
        if consistency is LATEST_SNAPSHOT and answered:
            return start or Loaded(self.entity.decider_for(key).initial, 0)
        if start is None:
            start = Loaded(self.entity.decider_for(key).initial, 0)
        return await self._replay(key, self.store.read(self.entity.stream(key), after=start.seq), start)

    async def state_at(self, key: K, seq: int | None = None, time: datetime | None = None) -> Loaded[S]:
        """The state of ``key`` after event ``seq`` and/or as of ``time``.

        As of ``time`` means the fold of the stream's events *before the first
        one whose time is later than* ``time``. Event times come from clocks,
        and a clock can step back: an event stamped at or before ``time`` that
        comes after one stamped later is not counted, since it was written
        after the stream had passed ``time`` (with times in order, this is
        simply every event at or before ``time``). With both ``seq`` and
        ``time``, the shorter of the two prefixes. ``Loaded.seq`` is the last
        event folded (0: none).

        The answer is the same with and without snapshots: a snapshot is used
        only if every event it stands for is at or before ``time``, which is
        checked against those events' own times (read, not decoded), never
        against the time the snapshot was saved.
        """
        start, _ = await self._snapshot(key, at_seq=seq)
        stream = self.entity.stream(key)
        if start is not None and time is not None and start.seq > 0:
            late = (
                await self.store.read(stream, limit=start.seq)
                .filter(lambda e: e.time > time)
                .take(1)
                .to_list()
            )
            if late:  # the snapshot stands for an event later than ``time``: take one before it
                seq = late[0].seq - 1
                start, _ = await self._snapshot(key, at_seq=seq)
        if start is None:
            start = Loaded(self.entity.decider_for(key).initial, 0)

        def within(e: RecordedEvent) -> bool:
            return (seq is None or e.seq <= seq) and (time is None or e.time <= time)

        events = self.store.read(stream, after=start.seq)
        if seq is not None:
            events = events.take(max(0, seq - start.seq))
        return await self._replay(key, events.take_while(within), start)

    def history(self, key: K) -> Stream[Step]:
        """Every event of ``key`` with the state after it, oldest first (lazily paged)."""
        decider = self.entity.decider_for(key)
        decode = self.entity.codec.decode
        first = Step(None, None, decider.initial)  # type: ignore[arg-type]

        def step(previous: Step, recorded: RecordedEvent) -> Step:
            event = decode(recorded)
            return Step(recorded, event, decider.evolve(previous.state, event))

        return self.store.read(self.entity.stream(key)).scan(first, step).drop(1)

    # -- the write side

    async def handle(
        self,
        key: K,
        command: C,
        *,
        if_seq: int | None = None,
        metadata: dict[str, Any] | None = None,
        command_id: str | uuid.UUID | None = None,
    ) -> Result[Saved[E, S], CommandError]:
        """Decide ``command`` against the current state of ``key`` and append the events.

        A short decision loop: load (the latest snapshot, then newer events) →
        decide → sync (append with ``expected`` = the loaded seq) → on
        ``WrongExpectedVersion``, resync with only the events missed (read
        after the loaded seq and folded onto the state in hand) and decide
        again, with full-jitter backoff, at most ``entity.retry.max_attempts``
        times (then ``Failure(Conflict)``). After a successful sync a snapshot
        is saved when the policy says one is due (counting every event since
        the last snapshot): a side effect, best effort — if it fails, that is
        logged and counted in :attr:`snapshot_stats`, and the command still
        returns its ``Success``.

        ``if_seq`` is a precondition (an ETag): act only if the entity is at
        exactly that seq, otherwise fail with ``WrongExpectedVersion`` and do
        not retry. ``metadata`` goes on every event written (who, why, ...).

        ``command_id`` is an idempotency key: give the same one each time the
        same command is sent again (after ``Failure(StoreUnavailable)``, a
        crash, a client's retry). The events' ids then derive from it
        (:func:`command_event_id`), and a command whose events are already
        in the stream is not decided again: ``handle`` returns
        ``Success(Saved(...))`` of the events it wrote then (their seq,
        positions, and the state right after them). So a command is applied
        at most once per key, however often it is sent. A key must name one
        command among all those sent to the entity's stream (a request id, a
        message id): two different commands with one key are one command.

        >>> import anyio
        >>> from streamsrc.examples.accounts import Register, users
        >>> from streamsrc.store.memory import MemoryStore
        >>> async def main() -> None:
        ...     store = MemoryStore()
        ...     accounts = Repository(store, users)
        ...     first = await accounts.handle("u1", Register("ada", "Ada", "a@x.org"), command_id="req-1")
        ...     again = await accounts.handle("u1", Register("ada", "Ada", "a@x.org"), command_id="req-1")
        ...     print(first.unwrap().positions, again.unwrap().positions, await store.head())
        >>> anyio.run(main)  # the second try finds the first's event: nothing new is written
        (1,) (1,) 1
        """
        if _telemetry.hooks is not None:  # OpenTelemetry on: the same command, in a span
            entity = self.entity
            handle = self._handle(key, command, if_seq, metadata, command_id)
            return await _telemetry.hooks.command(entity.name, entity.stream(key), command, handle)
        return await self._handle(key, command, if_seq, metadata, command_id)

    async def _handle(
        self,
        key: K,
        command: C,
        if_seq: int | None,
        metadata: dict[str, Any] | None,
        command_id: str | uuid.UUID | None,
    ) -> Result[Saved[E, S], CommandError]:
        run = _Command(self, key, command, if_seq, metadata, command_id)
        loaded = await run.load()
        if isinstance(loaded, Saved):  # sent before, and it landed
            return Success(loaded)
        policy = self.entity.retry
        attempt = 0
        while True:
            decided = run.decide(loaded)
            if isinstance(decided, Failure) or not decided.unwrap():  # refused, or nothing to write
                return await run.settle(decided, loaded, attempt)
            synced = await run.sync(loaded, decided.unwrap(), attempt)
            if isinstance(synced, Saved):
                await run.snapshot(synced)
                return Success(synced)
            if run.wrote_before(synced):  # a DuplicateEvent on the key's ids: applied before
                earlier = await run.earlier(attempt, below=0)
                if earlier is not None:
                    return Success(earlier)
            if not isinstance(synced, WrongExpectedVersion) or if_seq is not None:
                return Failure(synced)
            if not policy.should_retry(attempt, synced):
                _log.warning(
                    "command %s on %s: conflict at seq %d, retries exhausted after %d attempts",
                    type(command).__name__,
                    run.stream,
                    loaded.seq,
                    attempt + 1,
                    extra=_command_fields(
                        self.entity.name, run.stream, loaded.seq, attempt + 1, command, synced
                    ),
                )
                return Failure(Conflict(attempt + 1, synced))
            _log.warning(
                "command %s on %s: conflict at seq %d (attempt %d), reloading and deciding again",
                type(command).__name__,
                run.stream,
                loaded.seq,
                attempt + 1,
                extra=_command_fields(self.entity.name, run.stream, loaded.seq, attempt + 1, command, synced),
            )
            await anyio.sleep(policy.delay(attempt))
            attempt += 1
            resynced = await run.resync(loaded, attempt)
            if isinstance(resynced, Saved):  # an earlier, ambiguous try did go in: that is our result
                return Success(resynced)
            loaded = resynced

    # -- internals

    async def _applied_earlier(
        self, key: K, applied: _Applied, attempt: int, below: int
    ) -> Saved[E, S] | None:
        """What the command with ``applied``'s key wrote, found by reading the stream backwards from
        below seq ``below`` (0: from the end)."""
        later: list[RecordedEvent] = []  # the events after the command's first, last first
        first: RecordedEvent | None = None
        async with self.store.read(applied.stream, after=below, backwards=True).open() as events:
            async for recorded in events:
                if recorded.id == applied.first:
                    first = recorded
                    break
                later.append(recorded)
        if first is None:
            return None
        found = applied.match([first, *reversed(later)])
        decode = self.entity.codec.decode
        at = await self.state_at(key, seq=found[-1].seq)
        positions = tuple(r.position for r in found)
        return Saved(found[-1].seq, tuple(decode(r) for r in found), at.state, positions, attempt)

    async def _append(
        self, stream: str, data: list[EventData], expected: int, sent: set[Any]
    ) -> Result[Any, StoreError]:
        """Append; after an ambiguous failure, try the very same events again (idempotent)."""
        policy = self.entity.retry
        attempt = 0
        while True:
            result = await self.store.append(stream, data, expected=expected)
            if not isinstance(result, Failure) or not isinstance(result.failure(), StoreUnavailable):
                return result
            sent.update(d.id for d in data)
            failure = result.failure()
            retry = policy.should_retry(attempt, failure)
            _log.warning(
                "append to %s at seq %d failed (attempt %d), %s: %s",
                stream,
                expected,
                attempt + 1,
                "retrying the same events" if retry else "giving up",
                failure,
                extra={
                    "entity": self.entity.name,
                    "stream": stream,
                    "seq": expected,
                    "attempt": attempt + 1,
                    "error": type(failure).__name__,
                    "retrying": retry,
                },
            )
            if not retry:
                return result
            await anyio.sleep(policy.delay(attempt))
            attempt += 1

    async def _replay(
        self,
        key: K,
        events: Stream[RecordedEvent],
        start: Loaded[S],
        types: set[str] | None = None,
        applied: _Applied | None = None,
    ) -> Loaded[S]:
        """Fold ``events`` onto ``start``; collect the event types seen into ``types`` if given, and show
        every event to ``applied`` if given."""
        evolve = self.entity.decider_for(key).evolve
        decode = self.entity.codec.decode

        def page(acc: Loaded[S], chunk: list[RecordedEvent]) -> Loaded[S]:
            state = acc.state
            if applied is None:
                for recorded in chunk:
                    state = evolve(state, decode(recorded))
            else:
                for recorded in chunk:
                    event = decode(recorded)
                    state = evolve(state, event)
                    applied.see(recorded, event, state)
            if types is not None:
                types.update(r.type for r in chunk)
            return Loaded(state, chunk[-1].seq)

        return await events.chunks().fold(start, page)

    async def _snapshot(self, key: K, at_seq: int | None = None) -> tuple[Loaded[S] | None, bool]:
        """The latest usable snapshot of ``key`` (at or before ``at_seq``), or ``None``; and whether the
        store answered (``False``: it raised, which is logged and counted, and the caller replays)."""
        entity = self.entity
        if self._snapshots is None:
            return None, True
        snapshot_key = entity.snapshot_key(key)
        try:
            found = await self._snapshots.load_snapshot(snapshot_key, entity.schema_version, at_seq=at_seq)
        except Exception as exc:  # best effort: a snapshot is a shortcut (cancellation is not an Exception)
            self.snapshot_stats.load_failures += 1
            _log.warning(
                "snapshot of %s not loaded, replaying its events instead: %r",
                snapshot_key,
                exc,
                exc_info=True,
                extra=_fields(entity.name, entity.stream(key), at_seq, snapshot_key),
            )
            return None, False
        match found:
            case Some(snapshot):
                try:
                    state = from_json_value(entity.state_type, snapshot.state)
                except (TypeError, ValueError, KeyError, AttributeError):
                    return None, True  # unreadable despite its version: replay from the start
                if not conforms(entity.state_type, state):
                    return None, True  # a field of the wrong type (e.g. a string for an int): replay too
                return Loaded(state, snapshot.seq), True
            case _:
                assert found is Nothing
                return None, True

    async def _save_snapshot(self, key: K, seq: int, state: S) -> None:
        """Save a snapshot of ``key`` at ``seq``, best effort: a failure is logged and counted, never raised
        (cancellation still is)."""
        entity = self.entity
        snapshot_key = entity.snapshot_key(key)
        assert self._snapshots is not None
        try:
            await self._snapshots.save_snapshot(
                snapshot_key, seq, to_json_value(state), entity.schema_version
            )
        except Exception as exc:
            self.snapshot_stats.save_failures += 1
            _log.warning(
                "snapshot of %s at seq %d not saved (the command succeeded): %r",
                snapshot_key,
                seq,
                exc,
                exc_info=True,
                extra=_fields(entity.name, entity.stream(key), seq, snapshot_key),
            )
        else:
            self.snapshot_stats.saved += 1


def _command_fields(
    entity: str, stream: str, seq: int, attempt: int, command: object, error: object
) -> dict[str, Any]:
    """The structured fields of a log record about a command's conflict."""
    return {
        "entity": entity,
        "stream": stream,
        "seq": seq,
        "attempt": attempt,
        "command": type(command).__name__,
        "error": type(error).__name__,
    }


def _fields(entity: str, stream: str, seq: int | None, snapshot_key: str) -> dict[str, Any]:
    """The structured fields of a log record about a snapshot."""
    return {"entity": entity, "stream": stream, "seq": seq, "snapshot_key": snapshot_key}


class _Command(Generic[K, C, E, S]):
    """One call of :meth:`Repository.handle`: its steps (load, decide, sync, resync, snapshot) and what
    they carry from one to the next."""

    def __init__(
        self,
        repo: Repository[K, C, E, S],
        key: K,
        command: C,
        if_seq: int | None,
        metadata: dict[str, Any] | None,
        command_id: str | uuid.UUID | None,
    ) -> None:
        self.repo = repo
        self.key = key
        self.command = command
        self.if_seq = if_seq
        self.metadata = metadata
        self.stream = repo.entity.stream(key)
        self.decider = repo.entity.decider_for(key)
        self.applied = None if command_id is None else _Applied(self.stream, command_id)
        self.sent: set[Any] = set()  # ids of appends whose outcome we could not know
        self.snapshot_seq = 0  # the seq of the snapshot the load started from (0: none)
        # The types of the events since that snapshot, for the snapshot policy (None: no snapshots).
        self.types: set[str] | None = None if repo._snapshots is None else set()
        self.written: list[str] = []  # the types of the events written
        self.last_ids: set[uuid.UUID] = set()  # the ids of the events of the last sync
        # Whether the events the snapshot stands for still need a look for the command's own.
        self.look_before = False

    async def load(self) -> Loaded[S] | Saved[E, S]:
        """The state now (the latest snapshot, then newer events), or what the command wrote before."""
        repo, applied = self.repo, self.applied
        start, _ = await repo._snapshot(self.key)
        if start is None:
            start = Loaded(self.decider.initial, 0)
        events = repo.store.read(self.stream, after=start.seq)
        loaded = await repo._replay(self.key, events, start, self.types, applied)
        self.snapshot_seq = start.seq
        if applied is not None:
            if applied.found:
                found = applied.found
                positions = tuple(r.position for r in found)
                return Saved(found[-1].seq, tuple(applied.events), applied.state, positions, 0)
            self.look_before = start.seq > 0
        return loaded

    def decide(self, loaded: Loaded[S]) -> Result[list[E], CommandError]:
        """The events of the command against ``loaded``: ``Success(events)`` (maybe none), or why not."""
        if self.if_seq is not None and loaded.seq != self.if_seq:
            return Failure(WrongExpectedVersion(self.stream, self.if_seq, loaded.seq))
        return self.decider.decide(self.command, loaded.state)

    async def settle(
        self, decided: Result[list[E], CommandError], loaded: Loaded[S], attempt: int
    ) -> Result[Saved[E, S], CommandError]:
        """The answer to a command refused or with nothing to write: that, unless its key shows it was
        applied long ago (before the snapshot the load started from)."""
        if self.look_before and self.applied is not None:
            self.look_before = False
            earlier = await self.earlier(attempt, below=self.snapshot_seq + 1)
            if earlier is not None:
                return Success(earlier)
        if isinstance(decided, Failure):
            return decided
        return Success(Saved(loaded.seq, (), loaded.state, (), attempt))

    async def sync(self, loaded: Loaded[S], events: list[E], attempt: int) -> Saved[E, S] | StoreError:
        """Append ``events`` with ``expected`` = ``loaded.seq``: what was saved, or the store's error."""
        repo, applied = self.repo, self.applied
        encode = repo.entity.codec.encode
        data = [encode(e, self.metadata) for e in events]
        if applied is not None:
            data = [dataclasses.replace(d, id=applied.id(k)) for k, d in enumerate(data)]
        self.written = [d.type for d in data]
        result = await repo._append(self.stream, data, loaded.seq, self.sent)
        if isinstance(result, Failure):
            self.last_ids = {d.id for d in data}
            error: StoreError = result.failure()
            return error
        appended = result.unwrap()
        state = self.decider.fold(events, loaded.state)
        return Saved(appended.last_seq, tuple(events), state, appended.positions, attempt)

    def wrote_before(self, error: StoreError) -> bool:
        """Whether ``error`` says an event with one of the ids the command's key gives is already stored."""
        return (
            self.applied is not None and isinstance(error, DuplicateEvent) and error.event_id in self.last_ids
        )

    async def earlier(self, attempt: int, below: int) -> Saved[E, S] | None:
        """What the command wrote before, read back from the stream (below seq ``below``; 0: the end)."""
        assert self.applied is not None
        return await self.repo._applied_earlier(self.key, self.applied, attempt, below)

    async def resync(self, loaded: Loaded[S], attempt: int) -> Loaded[S] | Saved[E, S]:
        """``loaded`` brought up to date with only the events after it; or, if an earlier try whose
        outcome we could not know is among them, what it saved."""
        repo, applied = self.repo, self.applied
        decode = repo.entity.codec.decode
        newer = await repo.store.read(self.stream, after=loaded.seq).to_list()
        landed = [r for r in newer if r.id in self.sent] if applied is None else applied.match(newer)
        if landed:
            mine = [decode(r) for r in landed]
            state = self.decider.fold((decode(r) for r in newer if r.seq <= landed[-1].seq), loaded.state)
            positions = tuple(r.position for r in landed)
            return Saved(landed[-1].seq, tuple(mine), state, positions, attempt)
        if self.types is not None:
            self.types.update(r.type for r in newer)
        if not newer:
            return loaded
        return Loaded(self.decider.fold((decode(r) for r in newer), loaded.state), newer[-1].seq)

    async def snapshot(self, saved: Saved[E, S]) -> None:
        """After a successful sync: save a snapshot at ``saved.seq`` if the policy says one is due."""
        repo = self.repo
        policy = repo.entity.snapshots
        if self.types is None or policy is None:
            return
        if policy.due(self.snapshot_seq, saved.seq, [*sorted(self.types), *self.written]):
            await repo._save_snapshot(self.key, saved.seq, saved.state)
