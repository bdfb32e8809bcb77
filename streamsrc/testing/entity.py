"""The entity conformance suite: commands, queries and snapshots of ``Repository``, as pytest tests.

A store that passes :class:`~streamsrc.testing.EventStoreConformance` should
also run the write and read side correctly; this suite checks it end to end,
with a small bank-account domain defined here. Subclass
:class:`EntityConformance` and give it a ``store`` fixture yielding a fresh,
opened, empty store that also keeps snapshots::

    import pytest
    from streamsrc.store import open_store
    from streamsrc.testing import EntityConformance

    class TestMyStoreEntities(EntityConformance):
        @pytest.fixture
        async def store(self, tmp_path):
            async with open_store(f"sqlite:///{tmp_path}/events.db") as s:
                yield s

The tests are async and marked ``pytest.mark.anyio`` (as in the store
suite). The store's ``page_size`` attribute, when it has one, sizes the
"longer than a page" cases.

The domain: an ``Account(balance, closed)`` changed by ``Deposited``,
``Withdrawn`` and ``Closed`` (which "deletes" the account), decided from the
commands ``Deposit``, ``Withdraw`` and ``Close``, and a per-user view over a
per-organisation stream of ``Contributed`` events.

This module imports pytest: only test code imports it, never streamsrc itself.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import anyio
import pytest
from returns.maybe import Maybe, Nothing
from returns.result import Failure, Result, Success

from streamsrc.codec import Codec, to_json_value
from streamsrc.effect import RetryPolicy
from streamsrc.entity import (
    LATEST_EVENT,
    LATEST_SNAPSHOT,
    Decider,
    Entity,
    EveryN,
    Loaded,
    OnEventTypes,
    Repository,
    Saved,
    SnapshotPolicy,
)
from streamsrc.errors import (
    Conflict,
    Rejection,
    StoreError,
    StoreUnavailable,
    StreamsrcError,
    WrongExpectedVersion,
)
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import ANY, AppendResult, Expected, Snapshot
from streamsrc.testing.conformance import ConformantStore, page_size_of
from streamsrc.testing.faults import ForwardedReads

__all__ = [
    "ACCOUNT_CLOSED",
    "CODEC",
    "INSUFFICIENT_FUNDS",
    "NEGATIVE_AMOUNT",
    "Account",
    "AccountCommand",
    "AccountEvent",
    "AppendScript",
    "Close",
    "Closed",
    "Contribute",
    "Contributed",
    "Deposit",
    "Deposited",
    "EntityConformance",
    "ScriptedStore",
    "Tally",
    "Withdraw",
    "Withdrawn",
    "account_decider",
    "account_entity",
    "contributions_entity",
    "org_totals_entity",
    "user_view",
]

E = TypeVar("E", bound=StreamsrcError)
T = TypeVar("T")
K = TypeVar("K")

CODEC = Codec()
"""The codec of the test domain's events."""

# ---------------------------------------------------------------------------------------- the domain

ACCOUNT_CLOSED = "account closed"
INSUFFICIENT_FUNDS = "insufficient funds"
NEGATIVE_AMOUNT = "amount must not be negative"


@CODEC.register()
@dataclass(frozen=True)
class Deposited:
    amount: int


@CODEC.register()
@dataclass(frozen=True)
class Withdrawn:
    amount: int


@CODEC.register()
@dataclass(frozen=True)
class Closed:
    """The account is gone: its balance is zero and it takes no more money."""


AccountEvent = Deposited | Withdrawn | Closed


@dataclass(frozen=True)
class Account:
    """The state of one account (no defaults: a snapshot missing a field cannot be decoded)."""

    balance: int
    closed: bool


@dataclass(frozen=True)
class Deposit:
    """Put money in; 0 changes nothing (no event)."""

    amount: int


@dataclass(frozen=True)
class Withdraw:
    amount: int


@dataclass(frozen=True)
class Close:
    """Pay out the balance and close; closing a closed account changes nothing (no event)."""


AccountCommand = Deposit | Withdraw | Close

OPEN = Account(0, False)


def evolve_account(state: Account, event: AccountEvent) -> Account:
    """The account after one more event (total: any sequence of events folds)."""
    match event:
        case Deposited(amount):
            return Account(state.balance + amount, state.closed)
        case Withdrawn(amount):
            return Account(state.balance - amount, state.closed)
        case Closed():
            return Account(0, True)
    raise TypeError(f"not an account event: {event!r}")


def decide_account(command: AccountCommand, state: Account) -> Result[list[AccountEvent], Rejection]:
    """The events of a command, or every reason it is refused."""
    reasons: list[str] = []
    match command:
        case Deposit(amount):
            if state.closed:
                reasons.append(ACCOUNT_CLOSED)
            if amount < 0:
                reasons.append(NEGATIVE_AMOUNT)
            if reasons:
                return Failure(Rejection(*reasons))
            return Success([Deposited(amount)] if amount else [])
        case Withdraw(amount):
            if state.closed:
                reasons.append(ACCOUNT_CLOSED)
            if amount < 0:
                reasons.append(NEGATIVE_AMOUNT)
            elif amount > state.balance:
                reasons.append(INSUFFICIENT_FUNDS)
            if reasons:
                return Failure(Rejection(*reasons))
            return Success([Withdrawn(amount)] if amount else [])
        case Close():
            if state.closed:
                return Success([])
            payout: list[AccountEvent] = [Withdrawn(state.balance)] if state.balance else []
            return Success([*payout, Closed()])
    raise TypeError(f"not an account command: {command!r}")


account_decider: Decider[AccountCommand, AccountEvent, Account] = Decider(
    OPEN, evolve_account, decide_account
)

FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.01)


def account_entity(
    snapshots: SnapshotPolicy | None = None,
    *,
    schema_version: int = 1,
    retry: RetryPolicy = FAST_RETRY,
    name: str = "account",
) -> Entity[str, AccountCommand, AccountEvent, Account]:
    """The account entity: stream ``account-<key>``, snapshots decoded as :class:`Account`."""
    return Entity(
        name,
        account_decider,
        CODEC,
        stream=lambda key: f"account-{key}",
        state_type=Account,
        snapshots=snapshots,
        schema_version=schema_version,
        retry=retry,
    )


# -- a view keyed differently from its stream: per-user tallies over a per-organisation stream


@CODEC.register()
@dataclass(frozen=True)
class Contributed:
    user: str
    amount: int


@dataclass(frozen=True)
class Contribute:
    amount: int


@dataclass(frozen=True)
class Tally:
    count: int
    total: int


UserKey = tuple[str, str]
"""(organisation, user)"""


def user_view(key: UserKey) -> Decider[Contribute, Contributed, Tally]:
    """The contributions of user ``key[1]`` in organisation ``key[0]``'s stream."""
    user = key[1]

    def evolve(tally: Tally, event: Contributed) -> Tally:
        return Tally(tally.count + 1, tally.total + event.amount) if event.user == user else tally

    def decide(command: Contribute, tally: Tally) -> Result[list[Contributed], Rejection]:
        if command.amount < 0:
            return Failure(Rejection(NEGATIVE_AMOUNT))
        return Success([Contributed(user, command.amount)])

    return Decider(Tally(0, 0), evolve, decide)


def _org_stream(org: str) -> str:
    return f"org-{org}"


def contributions_entity(
    snapshots: SnapshotPolicy | None = None,
) -> Entity[UserKey, Contribute, Contributed, Tally]:
    """Per-user tallies, keyed ``(org, user)``, over the stream of the organisation."""
    return Entity(
        "contributions",
        user_view(("", "")),
        CODEC,
        stream=lambda key: _org_stream(key[0]),
        view=user_view,
        state_type=Tally,
        snapshots=snapshots,
        retry=FAST_RETRY,
    )


def _refuse(command: Contribute, tally: Tally) -> Result[list[Contributed], Rejection]:
    return Failure(Rejection("organisation totals are read-only"))


def org_totals_entity(
    snapshots: SnapshotPolicy | None = None,
) -> Entity[str, Contribute, Contributed, Tally]:
    """Every contribution of an organisation, keyed by the organisation alone."""
    return Entity(
        "org-totals",
        Decider(Tally(0, 0), lambda t, e: Tally(t.count + 1, t.total + e.amount), _refuse),
        CODEC,
        stream=_org_stream,
        state_type=Tally,
        snapshots=snapshots,
        retry=FAST_RETRY,
    )


# ---------------------------------------------------------------------------------------- wrapped stores


@dataclass(frozen=True)
class AppendScript:
    """What happens to one call of ``append`` on a :class:`ScriptedStore`.

    In order: another writer appends first (``race_before``); the append
    reaches the store (``commit``) or not; the store refuses a stale
    ``expected`` before it looks for already-stored ids (``version_first``,
    as some backends do); another writer appends after it (``race_after``);
    the caller is told ``StoreUnavailable`` (``lost``), whatever happened.
    """

    race_before: bool = False
    commit: bool = True
    version_first: bool = False
    race_after: bool = False
    lost: bool = False


OK = AppendScript()
LOST_BEFORE_COMMIT = AppendScript(commit=False, lost=True)
LOST_AFTER_COMMIT = AppendScript(lost=True)


class ScriptedStore(ForwardedReads):
    """A store delegating to ``inner``, whose ``append`` calls follow a script of :class:`AppendScript` s.

    Calls past the end of ``plan`` are plain. Every call is recorded in
    ``appends``; the other writer's events (see ``interloper``) are appended
    to the same stream with ``expected=ANY``. With ``gate``, the first
    ``gate`` calls wait until that many have arrived, so they all race.
    """

    inner: ConformantStore

    def __init__(
        self,
        inner: ConformantStore,
        plan: Sequence[AppendScript] = (),
        interloper: Callable[[], EventData] | None = None,
        gate: int = 0,
    ) -> None:
        self.inner = inner
        self.plan = list(plan)
        self.interloper = interloper or (lambda: CODEC.encode(Deposited(1000)))
        self.appends: list[tuple[str, list[EventData], Expected]] = []
        self.interlopers: list[EventData] = []
        self._gate = gate
        self._gate_open = anyio.Event()

    @property
    def page_size(self) -> int:
        return page_size_of(self.inner)

    async def _interlope(self, stream: str) -> None:
        event = self.interloper()
        result = await self.inner.append(stream, [event], ANY)
        assert isinstance(result, Success), result
        self.interlopers.append(event)

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        index = len(self.appends)
        self.appends.append((stream, list(events), expected))
        if index < self._gate:
            if len(self.appends) >= self._gate:
                self._gate_open.set()
            await self._gate_open.wait()
        fault = self.plan[index] if index < len(self.plan) else OK
        if fault.race_before:
            await self._interlope(stream)
        result: Result[AppendResult, StoreError] = Failure(StoreUnavailable("not sent"))
        if fault.commit:
            latest = await self.inner.latest(stream)
            current = latest.map(lambda r: r.seq).value_or(0)
            if fault.version_first and isinstance(expected, int) and expected != current:
                result = Failure(WrongExpectedVersion(stream, expected, current))
            else:
                result = await self.inner.append(stream, events, expected)
        if fault.race_after:
            await self._interlope(stream)
        if fault.lost:
            when = "after" if fault.commit else "before"
            return Failure(StoreUnavailable(f"connection lost {when} the commit"))
        return result

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        await self.inner.save_snapshot(key, seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        return await self.inner.load_snapshot(key, schema_version, at_seq, at_time)

    async def load_checkpoint(self, name: str) -> int:
        return await self.inner.load_checkpoint(name)

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        await self.inner.save_checkpoint(name, position, expected)


# ---------------------------------------------------------------------------------------- helpers


def expect_saved(result: Result[Saved[Any, T], StreamsrcError]) -> Saved[Any, T]:
    """The ``Saved`` of a successful command (fails the test otherwise)."""
    assert isinstance(result, Success), f"expected Success, got {result!r}"
    saved = result.unwrap()
    assert isinstance(saved, Saved), saved
    return saved


def expect_error(result: Result[Any, StreamsrcError], cls: type[E]) -> E:
    """The error of a failed command, checked to be a ``cls``."""
    assert isinstance(result, Failure), f"expected Failure({cls.__name__}), got {result!r}"
    error = result.failure()
    assert isinstance(error, cls), f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    return error


def counting(
    entity: Entity[str, AccountCommand, AccountEvent, Account],
) -> tuple[Entity[str, AccountCommand, AccountEvent, Account], list[AccountCommand]]:
    """The entity with a decider that records every command it is asked to decide."""
    calls: list[AccountCommand] = []
    inner = entity.decider.decide

    def decide(command: AccountCommand, state: Account) -> Result[list[AccountEvent], Rejection]:
        calls.append(command)
        return inner(command, state)

    decider = Decider(entity.decider.initial, entity.decider.evolve, decide)
    return dataclasses.replace(entity, decider=decider), calls


def snapshot_seqs(n: int, batch_sizes: Sequence[int], start: int = 0) -> list[int]:
    """Where ``EveryN(n)`` takes snapshots when batches of these sizes are written in turn."""
    seqs: list[int] = []
    last, seq = start, start
    for size in batch_sizes:
        seq += size
        if size and seq - last >= n:
            seqs.append(seq)
            last = seq
    return seqs


def running_states(decider: Decider[Any, Any, T], events: Sequence[Any]) -> list[T]:
    """The state after each event (not the initial one)."""
    return list(itertools.accumulate(events, decider.evolve, initial=decider.initial))[1:]


async def append_raw(store: ConformantStore, stream: str, events: Sequence[object]) -> AppendResult:
    """Append domain events straight to the store (no decider, no snapshot)."""
    result = await store.append(stream, [CODEC.encode(e) for e in events])
    assert isinstance(result, Success), result
    appended: AppendResult = result.unwrap()
    return appended


async def stored(store: ConformantStore, stream: str) -> list[RecordedEvent]:
    return await store.read(stream).to_list()


async def stored_events(store: ConformantStore, stream: str) -> list[Any]:
    return [CODEC.decode(r) for r in await stored(store, stream)]


def long_events(n: int) -> list[AccountEvent]:
    """``n`` events, mostly deposits, now and then a withdrawal."""
    return [Withdrawn(1) if i % 7 == 6 else Deposited(i % 5 + 1) for i in range(n)]


async def snapshot_is_own(store: ConformantStore, entity: Entity[K, Any, Any, Any], key: K) -> bool | None:
    """Whether the latest snapshot of ``key`` holds ``entity``'s state at its seq (``None``: no snapshot)."""
    found = await store.load_snapshot(entity.snapshot_key(key), entity.schema_version)
    if found == Nothing:
        return None
    snap = found.unwrap()
    prefix = [CODEC.decode(r) for r in await stored(store, entity.stream(key))][: snap.seq]
    return bool(snap.state == to_json_value(entity.decider_for(key).fold(prefix)))


async def snapshot_if_due(store: ConformantStore, entity: Entity[K, Any, Any, Any], key: K) -> int | None:
    """Save a snapshot of ``key`` at its last event if ``entity``'s policy says one is due, as a command
    reaching that seq would (reads never take one); the seq saved, or ``None``."""
    policy = entity.snapshots
    assert policy is not None
    found = await store.load_snapshot(entity.snapshot_key(key), entity.schema_version)
    last = found.map(lambda s: s.seq).value_or(0)
    records = await stored(store, entity.stream(key))
    seq = len(records)
    if seq <= last or not policy.due(last, seq, [r.type for r in records[last:]]):
        return None
    state = entity.decider_for(key).fold(CODEC.decode(r) for r in records)
    await store.save_snapshot(entity.snapshot_key(key), seq, to_json_value(state), entity.schema_version)
    return seq


MARKER = Account(10**9, False)
"""A state no real history in these tests reaches: a snapshot holding it was used if it shows up."""


# ---------------------------------------------------------------------------------------- the suite


class EntityConformance:
    """The write and read side run against a store; subclass it and provide a ``store`` fixture."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    concurrent_commands: ClassVar[int] = 32
    """How many commands race on one entity in the concurrency tests."""

    @pytest.fixture
    def store(self) -> ConformantStore:
        """A fresh, opened store: every subclass must override this fixture."""
        raise NotImplementedError(
            f"{type(self).__name__} must define a `store` fixture yielding a fresh, opened store"
        )

    # ------------------------------------------------------------------ commands

    async def test_commands_are_saved_with_seq_events_state_and_positions(
        self, store: ConformantStore
    ) -> None:
        repo = Repository(store, account_entity())
        deposits = [30, 12]
        withdrawal = 5
        commands: list[AccountCommand] = [*(Deposit(a) for a in deposits), Withdraw(withdrawal), Close()]
        balance_at_close = sum(deposits) - withdrawal
        expected_events: list[list[AccountEvent]] = [[Deposited(a)] for a in deposits]
        expected_events += [[Withdrawn(withdrawal)], [Withdrawn(balance_at_close), Closed()]]
        log: list[AccountEvent] = []
        for command, events in zip(commands, expected_events, strict=True):
            saved = expect_saved(await repo.handle("a1", command))
            log.extend(events)
            assert saved.events == tuple(events)
            assert saved.seq == len(log)
            assert saved.state == account_decider.fold(log)
            assert saved.retries == 0
            records = await stored(store, "account-a1")
            assert saved.positions == tuple(r.position for r in records[len(log) - len(events) :])
        assert await stored_events(store, "account-a1") == log
        assert (await repo.load("a1")) == Loaded(Account(0, True), len(log))
        other = expect_saved(await repo.handle("a2", Deposit(7)))
        assert (other.seq, other.state) == (1, Account(7, False))
        assert other.positions[0] > saved.positions[-1]

    @pytest.mark.parametrize(
        ("setup", "command", "reasons"),
        [
            ([Deposit(10)], Withdraw(11), (INSUFFICIENT_FUNDS,)),
            ([], Withdraw(1), (INSUFFICIENT_FUNDS,)),
            ([Deposit(10)], Deposit(-1), (NEGATIVE_AMOUNT,)),
            ([Deposit(10)], Withdraw(-1), (NEGATIVE_AMOUNT,)),
            ([Deposit(10), Close()], Deposit(5), (ACCOUNT_CLOSED,)),
            ([Deposit(10), Close()], Withdraw(-3), (ACCOUNT_CLOSED, NEGATIVE_AMOUNT)),
            ([Close()], Withdraw(1), (ACCOUNT_CLOSED, INSUFFICIENT_FUNDS)),
        ],
    )
    async def test_rejections_are_failures_with_reasons_never_retried_nothing_written(
        self,
        store: ConformantStore,
        setup: list[AccountCommand],
        command: AccountCommand,
        reasons: tuple[str, ...],
    ) -> None:
        entity, calls = counting(account_entity(EveryN(1)))
        faulty = ScriptedStore(store)
        repo = Repository(faulty, entity)
        for c in setup:
            expect_saved(await repo.handle("r", c))
        before = (
            await store.head(),
            await stored(store, "account-r"),
            await store.load_snapshot("account:r", 1),
        )
        appends, calls_before = len(faulty.appends), len(calls)
        result = await repo.handle("r", command)
        assert result == Failure(Rejection(*reasons))
        assert expect_error(result, Rejection).reasons == reasons
        assert calls[calls_before:] == [command]
        assert len(faulty.appends) == appends
        after = (
            await store.head(),
            await stored(store, "account-r"),
            await store.load_snapshot("account:r", 1),
        )
        assert after == before

    async def test_a_command_that_loses_a_race_is_decided_again_and_may_then_be_rejected(
        self, store: ConformantStore
    ) -> None:
        entity, calls = counting(account_entity())
        await Repository(store, entity).handle("race", Deposit(10))
        faulty = ScriptedStore(
            store, [AppendScript(race_before=True)], interloper=lambda: CODEC.encode(Withdrawn(10))
        )
        repo = Repository(faulty, entity)
        calls.clear()
        result = await repo.handle("race", Withdraw(10))
        assert result == Failure(Rejection(INSUFFICIENT_FUNDS))
        assert calls == [Withdraw(10), Withdraw(10)]
        assert len(faulty.appends) == 1
        assert await stored_events(store, "account-race") == [Deposited(10), Withdrawn(10)]

    @pytest.mark.parametrize("setup", [[], [Deposit(4)], [Deposit(4), Close()]])
    async def test_a_decision_without_events_writes_nothing_and_succeeds(
        self, store: ConformantStore, setup: list[AccountCommand]
    ) -> None:
        faulty = ScriptedStore(store)
        repo = Repository(faulty, account_entity(EveryN(1)))
        for c in setup:
            expect_saved(await repo.handle("idle", c))
        current = await repo.load("idle")
        before = (await store.head(), await store.load_snapshot("account:idle", 1))
        appends = len(faulty.appends)
        command: AccountCommand = Close() if current.state.closed else Deposit(0)
        saved = expect_saved(await repo.handle("idle", command))
        assert (saved.seq, saved.events, saved.state, saved.positions) == (
            current.seq,
            (),
            current.state,
            (),
        )
        assert len(faulty.appends) == appends
        assert (await store.head(), await store.load_snapshot("account:idle", 1)) == before
        assert await repo.load("idle") == current

    async def test_if_seq_acts_only_at_exactly_that_seq(self, store: ConformantStore) -> None:
        faulty = ScriptedStore(store)
        repo = Repository(faulty, account_entity())
        created = expect_saved(await repo.handle("etag", Deposit(5), if_seq=0))
        assert created.seq == 1
        refused = await repo.handle("etag", Deposit(6), if_seq=0)
        assert refused == Failure(WrongExpectedVersion("account-etag", 0, 1))
        expect_saved(await repo.handle("etag", Deposit(6), if_seq=1))
        current = 2
        for stale in (0, current - 1, current + 1, current + 10):
            appends = len(faulty.appends)
            result = await repo.handle("etag", Deposit(100), if_seq=stale)
            error = expect_error(result, WrongExpectedVersion)
            assert (error.stream, error.expected, error.actual) == ("account-etag", stale, current)
            assert len(faulty.appends) == appends
        assert await stored_events(store, "account-etag") == [Deposited(5), Deposited(6)]
        # At exactly that seq the command is decided as usual: rejected, or without events.
        assert await repo.handle("etag", Withdraw(12), if_seq=current) == Failure(
            Rejection(INSUFFICIENT_FUNDS)
        )
        idle = expect_saved(await repo.handle("etag", Deposit(0), if_seq=current))
        assert (idle.seq, idle.events) == (current, ())
        assert await stored_events(store, "account-etag") == [Deposited(5), Deposited(6)]
        # Even a command that would be rejected is refused for the precondition alone.
        empty = await repo.handle("etag-none", Withdraw(1), if_seq=3)
        assert empty == Failure(WrongExpectedVersion("account-etag-none", 3, 0))
        assert await stored(store, "account-etag-none") == []

    async def test_if_seq_is_not_retried_when_another_writer_gets_there_first(
        self, store: ConformantStore
    ) -> None:
        entity, calls = counting(account_entity())
        await Repository(store, entity).handle("etag", Deposit(5))
        faulty = ScriptedStore(store, [AppendScript(race_before=True)])
        repo = Repository(faulty, entity)
        calls.clear()
        result = await repo.handle("etag", Deposit(7), if_seq=1)
        error = expect_error(result, WrongExpectedVersion)
        assert (error.stream, error.expected, error.actual) == ("account-etag", 1, 2)
        assert calls == [Deposit(7)]
        assert len(faulty.appends) == 1
        interloper = CODEC.decode(faulty.interlopers[0])
        assert await stored_events(store, "account-etag") == [Deposited(5), interloper]
        # Without the precondition the same race is retried and wins.
        faulty.plan = [OK, AppendScript(race_before=True)]  # the next call (the second) races again
        saved = expect_saved(await repo.handle("etag", Deposit(7)))
        assert saved.retries == 1
        assert await stored_events(store, "account-etag") == [
            Deposited(5),
            interloper,
            interloper,
            Deposited(7),
        ]

    async def test_metadata_is_on_every_event_written(self, store: ConformantStore) -> None:
        # The first append loses a race: the events decided again carry the metadata too.
        faulty = ScriptedStore(store, [OK, AppendScript(race_before=True)])
        repo = Repository(faulty, account_entity())
        expect_saved(await repo.handle("m", Deposit(9)))
        metadata = {"by": "alice", "reason": "moving house", "n": 3}
        saved = expect_saved(await repo.handle("m", Close(), metadata=metadata))
        assert saved.retries == 1
        interloper = CODEC.decode(faulty.interlopers[0])
        assert saved.events == (Withdrawn(9 + interloper.amount), Closed())
        records = await stored(store, "account-m")
        assert len(records) == 2 + len(saved.events)
        for r in records[:2]:
            assert "by" not in (r.metadata or {})
        for r in records[2:]:
            assert r.metadata is not None
            assert {k: r.metadata.get(k) for k in metadata} == metadata
        assert [CODEC.decode(r) for r in records[2:]] == list(saved.events)

    # ------------------------------------------------------------------ queries

    async def _write_batches(
        self,
        store: ConformantStore,
        key: str,
        batches: Sequence[Sequence[AccountEvent]],
        snapshotting: Repository[str, AccountCommand, AccountEvent, Account] | None = None,
    ) -> list[RecordedEvent]:
        """Append each batch (a little apart in time); after each, a snapshot when ``snapshotting``'s
        policy says one is due, as a command writing the batch would take it."""
        for i, batch in enumerate(batches):
            if i:
                await anyio.sleep(0.003)
            await append_raw(store, f"account-{key}", batch)
            if snapshotting is not None:
                await snapshot_if_due(store, snapshotting.entity, key)
        return await stored(store, f"account-{key}")

    async def _check_queries(
        self,
        store: ConformantStore,
        repo: Repository[str, AccountCommand, AccountEvent, Account],
        key: str,
        events: Sequence[AccountEvent],
        records: Sequence[RecordedEvent],
    ) -> None:
        """load, state_at (seqs and times) and history of ``key``, whose log is ``events``."""
        fold = account_decider.fold
        n = len(events)
        assert [CODEC.decode(r) for r in records] == list(events)
        snap = await repo.load(key, LATEST_SNAPSHOT)
        assert 0 <= snap.seq <= n
        assert snap.state == fold(events[: snap.seq])
        assert await repo.load(key) == Loaded(fold(events), n)
        assert await repo.load(key, LATEST_EVENT) == Loaded(fold(events), n)

        page = page_size_of(store)
        candidates = {0, 1, 2, n // 2, n - 1, n, n + 1, n + 7}
        candidates |= {page - 1, page, page + 1, 2 * page, 2 * page + 1}
        if n <= 40:
            candidates.update(range(n + 3))
        for seq in sorted(s for s in candidates if s >= 0):
            expected = Loaded(fold(events[:seq]), min(seq, n))
            assert await repo.state_at(key, seq=seq) == expected, f"state_at seq={seq}"

        tick = timedelta(microseconds=1)
        times = sorted({r.time for r in records})
        moments = [times[0] - timedelta(seconds=1) if times else datetime.now(UTC)]
        for i, t in enumerate(times):
            moments.append(t)
            if i + 1 == len(times):
                moments.append(t + timedelta(seconds=1))
                continue
            later = times[i + 1]
            moments.append(t + (later - t) / 2)
            if later - t > tick:
                moments.append(later - tick)
        for moment in moments:
            # The events before the first one stamped later (with times in order: those at or before it).
            count = next((k for k, r in enumerate(records) if r.time > moment), len(records))
            expected = Loaded(fold(events[:count]), count)
            assert await repo.state_at(key, time=moment) == expected, f"state_at time={moment}"
            if n <= 40:
                for seq in {0, count // 2, count + 1}:
                    both = min(seq, count)
                    assert await repo.state_at(key, seq=seq, time=moment) == Loaded(fold(events[:both]), both)

        steps = await repo.history(key).to_list()
        assert [s.event for s in steps] == list(events)
        assert [s.recorded.seq for s in steps] == list(range(1, n + 1))
        assert [s.recorded.id for s in steps] == [r.id for r in records]
        assert [s.state for s in steps] == running_states(account_decider, events)

    def _scenario(self, store: ConformantStore, shape: str) -> list[list[AccountEvent]]:
        if shape == "empty":
            return []
        if shape == "closed":
            return [[Deposited(30), Deposited(12)], [Withdrawn(5)], [Withdrawn(37), Closed()]]
        if shape == "long":
            events = long_events(2 * page_size_of(store) + 2)
            cut = [0, 1, len(events) // 3, len(events) // 2, len(events) - 1, len(events)]
            return [events[a:b] for a, b in itertools.pairwise(cut)]
        raise AssertionError(shape)

    @pytest.mark.parametrize(
        ("shape", "snapshots"),
        [
            ("empty", None),
            ("empty", "every-3"),
            ("closed", None),
            ("closed", "every-3"),
            ("closed", "on-closed"),
            ("long", None),
            ("long", "every-3"),
        ],
    )
    async def test_queries(self, store: ConformantStore, shape: str, snapshots: str | None) -> None:
        policy: SnapshotPolicy | None = {
            None: None,
            "every-3": EveryN(3),
            "on-closed": OnEventTypes({"Closed"}),
        }[snapshots]
        repo = Repository(store, account_entity(policy))
        batches = self._scenario(store, shape)
        records = await self._write_batches(store, "q", batches, repo if policy else None)
        events = [e for batch in batches for e in batch]
        await self._check_queries(store, repo, "q", events, records)
        if isinstance(policy, EveryN) and len(events) >= policy.n:
            saved = await store.load_snapshot("account:q", 1)
            assert saved != Nothing, "a snapshot should have been taken after a batch"

    async def test_on_event_types_takes_a_snapshot_after_those_events(self, store: ConformantStore) -> None:
        entity = account_entity(OnEventTypes({"Closed"}))
        repo = Repository(store, entity)
        key = entity.snapshot_key("o")
        for amount in (3, 4):
            expect_saved(await repo.handle("o", Deposit(amount)))
        assert await store.load_snapshot(key, 1) == Nothing
        saved = expect_saved(await repo.handle("o", Close()))
        snap = (await store.load_snapshot(key, 1)).unwrap()
        assert (snap.seq, snap.state) == (saved.seq, to_json_value(Account(0, True)))
        # A load that replays such an event written by someone else takes none: reads never write.
        await append_raw(store, "account-p", [Deposited(5), Closed(), Deposited(1)])
        assert await repo.load("p") == Loaded(Account(1, True), 3)
        assert await store.load_snapshot(entity.snapshot_key("p"), 1) == Nothing
        # A command does: the policy sees every event since the last snapshot, not only the command's.
        withdrawals = Repository(store, account_entity(OnEventTypes({"Withdrawn"}), name="w"))
        await append_raw(store, "account-q", [Deposited(5), Withdrawn(2)])
        assert await withdrawals.load("q") == Loaded(Account(3, False), 2)
        assert await store.load_snapshot("w:q", 1) == Nothing
        saved = expect_saved(await withdrawals.handle("q", Deposit(1)))
        snap = (await store.load_snapshot("w:q", 1)).unwrap()
        assert (snap.seq, snap.state) == (saved.seq, to_json_value(Account(4, False)))

    async def test_a_closed_account_stays_closed(self, store: ConformantStore) -> None:
        repo = Repository(store, account_entity(EveryN(2)))
        for c in (Deposit(8), Close()):
            expect_saved(await repo.handle("gone", c))
        assert await repo.load("gone") == Loaded(Account(0, True), 3)
        assert await repo.handle("gone", Deposit(1)) == Failure(Rejection(ACCOUNT_CLOSED))
        assert (await repo.state_at("gone", seq=1)).state == Account(8, False)
        steps = await repo.history("gone").to_list()
        assert [s.event for s in steps] == [Deposited(8), Withdrawn(8), Closed()]
        assert steps[-1].state == Account(0, True)

    async def test_latest_snapshot_can_be_stale(self, store: ConformantStore) -> None:
        n = 4
        repo = Repository(store, account_entity(EveryN(n)))
        amounts = [3, 1, 4, 1, 5, 9]
        assert await repo.load("s", LATEST_SNAPSHOT) == Loaded(OPEN, 0)
        for i, amount in enumerate(amounts):
            expect_saved(await repo.handle("s", Deposit(amount)))
            events = [Deposited(a) for a in amounts[: i + 1]]
            seqs = snapshot_seqs(n, [1] * len(events))
            at = seqs[-1] if seqs else 0
            assert await repo.load("s", LATEST_SNAPSHOT) == Loaded(account_decider.fold(events[:at]), at)
        # Events written past the snapshot (not by this repository): still the snapshot's view.
        await append_raw(store, "account-s", [Deposited(2), Deposited(6)])
        all_amounts = [*amounts, 2, 6]
        last = snapshot_seqs(n, [1] * len(amounts))[-1]
        assert await repo.load("s", LATEST_SNAPSHOT) == Loaded(
            account_decider.fold(Deposited(a) for a in all_amounts[:last]), last
        )
        assert await repo.load("s") == Loaded(Account(sum(all_amounts), False), len(all_amounts))

    # ------------------------------------------------------------------ snapshots

    async def test_every_n_writes_snapshots_after_commands(self, store: ConformantStore) -> None:
        n = 3
        entity = account_entity(EveryN(n))
        repo = Repository(store, entity)
        commands: list[AccountCommand] = [Deposit(a) for a in (5, 1, 4, 1, 5, 9, 2)]
        commands += [Withdraw(3), Deposit(0), Close()]
        sizes: list[int] = []
        log: list[AccountEvent] = []
        for command in commands:
            saved = expect_saved(await repo.handle("e", command))
            sizes.append(len(saved.events))
            log.extend(saved.events)
            seqs = snapshot_seqs(n, sizes)
            found = await store.load_snapshot(entity.snapshot_key("e"), entity.schema_version)
            if not seqs:
                assert found == Nothing
                continue
            snap = found.unwrap()
            assert snap.seq == seqs[-1]
            assert snap.state == to_json_value(account_decider.fold(log[: snap.seq]))
        assert len(snapshot_seqs(n, sizes)) >= 3
        for seq in snapshot_seqs(n, sizes):
            snap = (await store.load_snapshot(entity.snapshot_key("e"), 1, at_seq=seq)).unwrap()
            assert (snap.seq, snap.state) == (seq, to_json_value(account_decider.fold(log[:seq])))
        assert await store.load_snapshot(entity.snapshot_key("e"), 2) == Nothing
        assert await store.load_snapshot("account:other", 1) == Nothing

    async def test_a_load_never_takes_a_snapshot_and_starts_from_one(self, store: ConformantStore) -> None:
        entity = account_entity(EveryN(3))
        repo = Repository(store, entity)
        key = entity.snapshot_key("l")
        events: list[AccountEvent] = [Deposited(a) for a in (1, 2, 3, 4)]
        await append_raw(store, "account-l", events)
        assert await store.load_snapshot(key, 1) == Nothing
        assert await repo.load("l") == Loaded(account_decider.fold(events), len(events))
        assert await store.load_snapshot(key, 1) == Nothing  # reads never write
        saved = expect_saved(await repo.handle("l", Deposit(5)))  # a command takes the one due
        events.append(Deposited(5))
        assert saved.seq == len(events)
        snap = (await store.load_snapshot(key, 1)).unwrap()
        assert (snap.seq, snap.state) == (len(events), to_json_value(account_decider.fold(events)))
        events.append(Deposited(6))
        await append_raw(store, "account-l", events[-1:])
        assert await repo.load("l") == Loaded(account_decider.fold(events), len(events))
        assert (await store.load_snapshot(key, 1)).unwrap().seq == len(events) - 1
        # A load starts from the snapshot: one saved with a marker state shows through.
        await store.save_snapshot(key, len(events), to_json_value(MARKER), 1)
        await append_raw(store, "account-l", [Deposited(7)])
        assert await repo.load("l") == Loaded(Account(MARKER.balance + 7, False), len(events) + 1)
        assert await repo.load("l", LATEST_SNAPSHOT) == Loaded(MARKER, len(events))
        # A repository of an entity without snapshots never reads them.
        plain = Repository(store, account_entity())
        assert await plain.load("l") == Loaded(account_decider.fold([*events, Deposited(7)]), len(events) + 1)

    async def test_a_snapshot_of_another_schema_version_is_ignored(self, store: ConformantStore) -> None:
        v1 = account_entity(EveryN(2))
        v2 = account_entity(EveryN(2), schema_version=2)
        assert v1.snapshot_key("v") == v2.snapshot_key("v")
        key = v1.snapshot_key("v")
        old, new = Repository(store, v1), Repository(store, v2)
        amounts = [4, 8, 15, 16]
        for a in amounts:
            expect_saved(await old.handle("v", Deposit(a)))
        last = (await store.load_snapshot(key, 1)).unwrap().seq
        assert last == len(amounts)
        # The v1 snapshot now says something no replay gives: v2 must never use it.
        await store.save_snapshot(key, last, to_json_value(MARKER), 1)
        truth = Account(sum(amounts), False)
        assert await new.load("v") == Loaded(truth, len(amounts))
        assert await new.load("v", LATEST_SNAPSHOT) in (Loaded(OPEN, 0), Loaded(truth, len(amounts)))
        assert await new.state_at("v", seq=len(amounts)) == Loaded(truth, len(amounts))
        assert (await new.history("v").to_list())[-1].state == truth
        saved = expect_saved(await new.handle("v", Deposit(23)))
        assert saved.state == Account(sum(amounts) + 23, False)
        v2_snap = (await store.load_snapshot(key, 2)).unwrap()
        assert v2_snap.seq in (len(amounts), len(amounts) + 1)
        v2_events = [Deposited(a) for a in [*amounts, 23][: v2_snap.seq]]
        assert v2_snap.state == to_json_value(account_decider.fold(v2_events))
        # ... and v1 still reads its own (here: the marker), untouched by v2's.
        v1_snap = (await store.load_snapshot(key, 1)).unwrap()
        assert (v1_snap.seq, v1_snap.state) == (last, to_json_value(MARKER))
        assert await old.load("v") == Loaded(Account(MARKER.balance + 23, False), len(amounts) + 1)

    @pytest.mark.parametrize(
        "junk",
        [
            {"junk": [1, 2]},
            {},
            {"balance": 5},
            {"balance": 5, "closed": False, "extra": 1},
            "not a state",
            [1, 2, 3],
            42,
            None,
        ],
        ids=[
            "unknown-field",
            "empty-object",
            "missing-field",
            "extra-field",
            "string",
            "list",
            "int",
            "null",
        ],
    )
    async def test_a_corrupt_snapshot_falls_back_to_full_replay(
        self, store: ConformantStore, junk: Any
    ) -> None:
        entity = account_entity(EveryN(100))
        repo = Repository(store, entity)
        events: list[AccountEvent] = [Deposited(10), Withdrawn(3), Deposited(5)]
        await append_raw(store, "account-c", events)
        await store.save_snapshot(entity.snapshot_key("c"), 2, junk, entity.schema_version)
        truth = account_decider.fold(events)
        assert await repo.load("c") == Loaded(truth, len(events))
        assert await repo.state_at("c", seq=2) == Loaded(account_decider.fold(events[:2]), 2)
        assert await repo.state_at("c", time=datetime.now(UTC)) == Loaded(truth, len(events))
        assert (await repo.load("c", LATEST_SNAPSHOT)).seq in (0, 2)
        saved = expect_saved(await repo.handle("c", Withdraw(12)))
        assert saved == Saved(len(events) + 1, (Withdrawn(12),), Account(0, False), saved.positions, 0)

    async def test_state_at_uses_the_latest_snapshot_at_or_before_the_point(
        self, store: ConformantStore
    ) -> None:
        n = 3
        repo = Repository(store, account_entity(EveryN(n)))
        amounts = list(range(1, 11))
        for a in amounts:
            expect_saved(await repo.handle("t", Deposit(a)))
        events = [Deposited(a) for a in amounts]
        seqs = snapshot_seqs(n, [1] * len(amounts))
        assert seqs == [3, 6, 9]
        for seq in range(len(amounts) + 3):
            expected = Loaded(account_decider.fold(events[:seq]), min(seq, len(events)))
            assert await repo.state_at("t", seq=seq) == expected
        # Replace the middle snapshot with a marker: it shows exactly in the seqs it covers.
        middle = seqs[1]
        await store.save_snapshot("account:t", middle, to_json_value(MARKER), 1)
        for seq in range(len(amounts) + 3):
            covering = max((s for s in seqs if s <= seq), default=0)
            if covering == middle:
                state = Account(MARKER.balance + sum(amounts[middle:seq]), False)
            else:
                state = account_decider.fold(events[:seq])
            assert await repo.state_at("t", seq=seq) == Loaded(state, min(seq, len(events))), seq

    async def test_views_keyed_differently_from_their_stream(self, store: ConformantStore) -> None:
        users = Repository(store, contributions_entity(EveryN(2)))
        orgs = Repository(store, org_totals_entity(EveryN(2)))
        contributions = [
            ("acme", "ada", 3),
            ("acme", "bob", 10),
            ("acme", "ada", 4),
            ("zeta", "ada", 100),
            ("acme", "cy", 1),
            ("acme", "bob", 20),
            ("acme", "ada", 5),
            ("zeta", "bob", 7),
        ]
        for org, user, amount in contributions:
            saved = expect_saved(await users.handle((org, user), Contribute(amount)))
            assert saved.events == (Contributed(user, amount),)
        assert await orgs.handle("acme", Contribute(1)) == Failure(
            Rejection("organisation totals are read-only")
        )
        user_keys = sorted({(org, user) for org, user, _ in contributions})
        org_keys = sorted({org for org, _, _ in contributions})
        for org, user in user_keys:
            mine = [a for o, u, a in contributions if (o, u) == (org, user)]
            in_org = sum(1 for o, _, _ in contributions if o == org)
            assert await users.load((org, user)) == Loaded(Tally(len(mine), sum(mine)), in_org)
        for org in org_keys:
            amounts = [a for o, _, a in contributions if o == org]
            assert await orgs.load(org) == Loaded(Tally(len(amounts), sum(amounts)), len(amounts))
        # Every snapshot is its own entity's, at its own key.
        keys = [users.entity.snapshot_key(k) for k in user_keys] + [
            orgs.entity.snapshot_key(k) for k in org_keys
        ]
        assert len(set(keys)) == len(keys)
        for user_key in user_keys:  # the commands took some; take the others due now
            await snapshot_if_due(store, users.entity, user_key)
        for org in org_keys:
            await snapshot_if_due(store, orgs.entity, org)
        own = [await snapshot_is_own(store, users.entity, k) for k in user_keys]
        own += [await snapshot_is_own(store, orgs.entity, o) for o in org_keys]
        assert own == [True] * len(own)
        for org, user in user_keys:  # loads from those snapshots
            mine = [a for o, u, a in contributions if (o, u) == (org, user)]
            in_org = sum(1 for o, _, _ in contributions if o == org)
            assert await users.load((org, user)) == Loaded(Tally(len(mine), sum(mine)), in_org)
        # Queries of one user's view over the shared stream.
        acme = [CODEC.decode(r) for r in await stored(store, "org-acme")]
        ada = user_view(("acme", "ada"))
        for seq in range(len(acme) + 2):
            expected = Loaded(ada.fold(acme[:seq]), min(seq, len(acme)))
            assert await users.state_at(("acme", "ada"), seq=seq) == expected
        steps = await users.history(("acme", "ada")).to_list()
        assert [s.state for s in steps] == running_states(ada, acme)

    # ------------------------------------------------------------------ concurrency

    async def test_concurrent_commands_all_succeed_through_retries(self, store: ConformantStore) -> None:
        many = self.concurrent_commands
        retry = RetryPolicy(max_attempts=64, base_delay=0.001, max_delay=0.02)
        gated = ScriptedStore(store, gate=many)
        repo = Repository(gated, account_entity(EveryN(5), retry=retry))
        amounts = [i + 1 for i in range(many)]
        results: dict[int, Result[Saved[AccountEvent, Account], StreamsrcError]] = {}

        async def deposit(amount: int) -> None:
            results[amount] = await repo.handle("busy", Deposit(amount))

        async with anyio.create_task_group() as tg:
            for amount in amounts:
                tg.start_soon(deposit, amount)
        saved = {amount: expect_saved(result) for amount, result in results.items()}
        assert sorted(saved) == amounts
        assert sum(s.retries for s in saved.values()) >= many - 1  # the first round had one winner
        logged = await stored_events(store, "account-busy")
        assert Counter(logged) == Counter(Deposited(a) for a in amounts)
        assert sorted(s.seq for s in saved.values()) == list(range(1, many + 1))
        records = await stored(store, "account-busy")
        for amount, s in saved.items():
            assert CODEC.decode(records[s.seq - 1]) == Deposited(amount)
            assert s.positions == (records[s.seq - 1].position,)
            assert s.state == account_decider.fold(CODEC.decode(r) for r in records[: s.seq])
        assert await repo.load("busy") == Loaded(Account(sum(amounts), False), many)
        assert await Repository(store, account_entity()).load("busy") == Loaded(
            Account(sum(amounts), False), many
        )

    async def test_capped_retries_report_conflicts_and_lose_nothing(self, store: ConformantStore) -> None:
        many = self.concurrent_commands
        gated = ScriptedStore(store, gate=many)
        repo = Repository(gated, account_entity(retry=RetryPolicy(max_attempts=1)))
        amounts = [i + 1 for i in range(many)]
        results: dict[int, Result[Saved[AccountEvent, Account], StreamsrcError]] = {}

        async def deposit(amount: int) -> None:
            results[amount] = await repo.handle("capped", Deposit(amount))

        async with anyio.create_task_group() as tg:
            for amount in amounts:
                tg.start_soon(deposit, amount)
        assert sorted(results) == amounts
        won = [a for a, r in results.items() if isinstance(r, Success)]
        lost = [a for a, r in results.items() if isinstance(r, Failure)]
        assert len(won) >= 1
        assert len(lost) >= 1
        for amount in lost:
            conflict = expect_error(results[amount], Conflict)
            assert conflict.attempts == 1
            assert isinstance(conflict.last, WrongExpectedVersion)
        logged = await stored_events(store, "account-capped")
        assert Counter(logged) == Counter(Deposited(a) for a in won)
        assert not set(logged) & {Deposited(a) for a in lost}
        assert len(won) == len(logged)
        assert len(gated.appends) == many
        assert await repo.load("capped") == Loaded(Account(sum(won), False), len(won))

    # ------------------------------------------------------------------ ambiguous failures

    @pytest.mark.parametrize(
        "plan",
        [
            [LOST_AFTER_COMMIT],
            [LOST_AFTER_COMMIT, LOST_AFTER_COMMIT],
            [LOST_BEFORE_COMMIT],
            [LOST_BEFORE_COMMIT, LOST_BEFORE_COMMIT],
            [LOST_BEFORE_COMMIT, LOST_AFTER_COMMIT],
        ],
        ids=["after", "after-after", "before", "before-before", "before-after"],
    )
    async def test_an_ambiguous_append_failure_is_retried_with_the_same_ids(
        self, store: ConformantStore, plan: list[AppendScript]
    ) -> None:
        await Repository(store, account_entity()).handle("amb", Deposit(10))
        faulty = ScriptedStore(store, plan)
        entity, calls = counting(account_entity(retry=RetryPolicy(max_attempts=4, base_delay=0.001)))
        saved = expect_saved(await Repository(faulty, entity).handle("amb", Deposit(7)))
        assert await stored_events(store, "account-amb") == [Deposited(10), Deposited(7)]
        assert (saved.seq, saved.events, saved.state) == (2, (Deposited(7),), Account(17, False))
        records = await stored(store, "account-amb")
        assert saved.positions == (records[1].position,)
        assert len(faulty.appends) == len(plan) + 1
        assert len({tuple(e.id for e in events) for _, events, _ in faulty.appends}) == 1
        assert {expected for _, _, expected in faulty.appends} == {1}
        assert calls == [Deposit(7)]

    async def test_giving_up_on_ambiguous_failures_never_duplicates(self, store: ConformantStore) -> None:
        await Repository(store, account_entity()).handle("amb", Deposit(10))
        attempts = 3
        faulty = ScriptedStore(store, [LOST_AFTER_COMMIT] * attempts)
        repo = Repository(faulty, account_entity(retry=RetryPolicy(max_attempts=attempts, base_delay=0.001)))
        result = await repo.handle("amb", Deposit(7))
        expect_error(result, StoreUnavailable)
        assert len(faulty.appends) == attempts
        assert await stored_events(store, "account-amb") == [Deposited(10), Deposited(7)]

    @pytest.mark.parametrize(
        ("fault", "then", "ours_first"),
        [
            (AppendScript(lost=True, race_after=True), [], True),
            (AppendScript(lost=True, race_after=True), [AppendScript(version_first=True)], True),
            (AppendScript(commit=False, lost=True, race_after=True), [], False),
            (
                AppendScript(commit=False, lost=True, race_after=True),
                [AppendScript(version_first=True)],
                False,
            ),
        ],
        ids=["landed", "landed-version-first", "not-landed", "not-landed-version-first"],
    )
    async def test_an_ambiguous_failure_then_a_concurrent_writer(
        self, store: ConformantStore, fault: AppendScript, then: list[AppendScript], ours_first: bool
    ) -> None:
        await Repository(store, account_entity()).handle("amb", Deposit(10))
        faulty = ScriptedStore(store, [fault, *then])
        repo = Repository(faulty, account_entity(retry=RetryPolicy(max_attempts=4, base_delay=0.001)))
        saved = expect_saved(await repo.handle("amb", Deposit(7)))
        interloper = CODEC.decode(faulty.interlopers[0])
        logged = await stored_events(store, "account-amb")
        tail = [Deposited(7), interloper] if ours_first else [interloper, Deposited(7)]
        assert logged == [Deposited(10), *tail]
        records = await stored(store, "account-amb")
        ours = [r for r in records if CODEC.decode(r) == Deposited(7)]
        assert len(ours) == 1
        assert saved.events == (Deposited(7),)
        assert saved.seq == ours[0].seq
        assert saved.positions == (ours[0].position,)
        assert saved.state == account_decider.fold(logged[: saved.seq])
        if ours_first:
            assert ours[0].id == faulty.appends[0][1][0].id
