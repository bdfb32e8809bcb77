"""Properties of the read side: ``state_at``, snapshots and ``history`` agree with folding the log.

For random event logs (written in random batches, on a memory store with a
random page size) and random command sequences: the state at seq N is the
fold of the first N events for every N, snapshots (``EveryN`` or
``OnEventTypes``) never change a state, and ``history`` is the running fold.
Each example runs with ``anyio.run`` on asyncio and on trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Success

from streamsrc.codec import to_json_value
from streamsrc.entity import LATEST_SNAPSHOT, EveryN, Loaded, OnEventTypes, Repository, SnapshotPolicy
from streamsrc.events import RecordedEvent
from streamsrc.store import ImportingStore, open_store
from streamsrc.testing.conformance import ConformantStore
from streamsrc.testing.entity import (
    CODEC,
    Account,
    AccountCommand,
    AccountEvent,
    Close,
    Closed,
    Deposit,
    Deposited,
    Withdraw,
    Withdrawn,
    account_decider,
    account_entity,
    append_raw,
    running_states,
    snapshot_if_due,
    stored,
)

T = TypeVar("T")
BACKENDS = ("asyncio", "trio")
backends = pytest.mark.parametrize("backend", BACKENDS)
law = settings(max_examples=40, deadline=None)

AccountRepo = Repository[str, AccountCommand, AccountEvent, Account]

event_st: st.SearchStrategy[AccountEvent] = st.one_of(
    st.builds(Deposited, st.integers(0, 50)),
    st.builds(Withdrawn, st.integers(0, 50)),
    st.just(Closed()),
)
batches_st = st.lists(st.lists(event_st, min_size=1, max_size=5), max_size=8)
page_size_st = st.integers(1, 5)
policy_st: st.SearchStrategy[SnapshotPolicy] = st.one_of(
    st.integers(1, 6).map(EveryN),
    st.sets(st.sampled_from(["Deposited", "Withdrawn", "Closed"]), min_size=1).map(OnEventTypes),
)
command_st: st.SearchStrategy[AccountCommand] = st.one_of(
    st.builds(Deposit, st.integers(-3, 40)),
    st.builds(Withdraw, st.integers(-3, 60)),
    st.just(Close()),
)


def run(backend: str, page_size: int, body: Callable[[ConformantStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_store(f"memory://?page_size={page_size}") as store:
            return await body(store)

    return anyio.run(main, backend=backend)


async def check_reads(
    repo: AccountRepo, store: ConformantStore, key: str, events: Sequence[AccountEvent]
) -> None:
    """Every read of ``key`` agrees with folding ``events`` (its whole log)."""
    fold = account_decider.fold
    n = len(events)
    assert await repo.load(key) == Loaded(fold(events), n)
    for seq in range(n + 3):
        assert await repo.state_at(key, seq=seq) == Loaded(fold(events[:seq]), min(seq, n)), seq
    records = await stored(store, repo.entity.stream(key))
    for moment in sorted({r.time for r in records}):
        count = next((k for k, r in enumerate(records) if r.time > moment), n)  # before the first later one
        assert await repo.state_at(key, time=moment) == Loaded(fold(events[:count]), count)
    steps = await repo.history(key).to_list()
    assert [s.event for s in steps] == list(events)
    assert [s.recorded.seq for s in steps] == list(range(1, n + 1))
    assert [s.state for s in steps] == running_states(account_decider, events)
    stale = await repo.load(key, LATEST_SNAPSHOT)
    assert 0 <= stale.seq <= n
    assert stale.state == fold(events[: stale.seq])


@backends
@law
@given(batches=batches_st, page_size=page_size_st, policy=policy_st)
def test_reads_are_folds_of_the_log_with_and_without_snapshots(
    backend: str, batches: list[list[AccountEvent]], page_size: int, policy: SnapshotPolicy
) -> None:
    events = [e for batch in batches for e in batch]
    plain = account_entity()
    snapshotting = account_entity(policy)

    async def body(store: ConformantStore) -> None:
        with_snapshots = Repository(store, snapshotting)
        written: list[AccountEvent] = []
        for batch in batches:
            await append_raw(store, "account-x", batch)
            written.extend(batch)
            # A snapshot when due (as a command would take it); a load gives what the log says either way.
            await snapshot_if_due(store, snapshotting, "x")
            assert await with_snapshots.load("x") == Loaded(account_decider.fold(written), len(written))
        await check_reads(Repository(store, plain), store, "x", events)
        await check_reads(with_snapshots, store, "x", events)

    run(backend, page_size, body)


@backends
@law
@given(commands=st.lists(command_st, max_size=14), page_size=page_size_st, policy=policy_st)
def test_snapshots_never_change_what_commands_do_or_what_reads_give(
    backend: str, commands: list[AccountCommand], page_size: int, policy: SnapshotPolicy
) -> None:
    async def body(store: ConformantStore) -> None:
        plain = Repository(store, account_entity())
        snapshotting = Repository(store, account_entity(policy, name="snapshotted"))
        log: list[AccountEvent] = []
        for command in commands:
            expected = account_decider.decide(command, account_decider.fold(log))
            outcomes: list[Any] = []
            for repo, key in ((plain, "p"), (snapshotting, "s")):
                result = await repo.handle(key, command)
                if isinstance(result, Success):
                    saved = result.unwrap()
                    outcomes.append(Success((saved.seq, list(saved.events), saved.state)))
                else:
                    outcomes.append(result)
            if isinstance(expected, Success):
                new = expected.unwrap()
                log.extend(new)
                assert outcomes[0] == Success((len(log), new, account_decider.fold(log)))
            else:
                assert outcomes[0] == expected
            assert outcomes[1] == outcomes[0]
        assert [CODEC.decode(r) for r in await stored(store, "account-p")] == log
        assert [CODEC.decode(r) for r in await stored(store, "account-s")] == log
        await check_reads(plain, store, "p", log)
        await check_reads(snapshotting, store, "s", log)

    run(backend, page_size, body)


@backends
@law
@given(data=st.data(), page_size=page_size_st)
def test_state_at_a_time_is_the_same_with_and_without_snapshots_whatever_the_clocks_did(
    backend: str, data: st.DataObject, page_size: int
) -> None:
    """Events stamped out of order (a clock stepped back), snapshots saved before or after the times of
    the events they cover: ``state_at(time=T)`` folds the events before the first one stamped later than
    ``T``, with or without snapshots (issue 19, bug 8)."""
    events = data.draw(st.lists(event_st, max_size=10), "events")
    minutes = data.draw(st.lists(st.integers(0, 8), min_size=len(events), max_size=len(events)), "minutes")
    seqs = data.draw(
        st.lists(st.integers(1, len(events)), max_size=4) if events else st.just([]), "snapshots"
    )
    ahead = data.draw(st.booleans(), "events stamped ahead of the snapshots")
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1 if ahead else -1)
    times = [base + timedelta(minutes=m) for m in minutes]

    async def body(store: ConformantStore) -> None:
        assert isinstance(store, ImportingStore)
        recorded = []
        for k, (event, moment) in enumerate(zip(events, times, strict=True)):
            e = CODEC.encode(event)
            recorded.append(RecordedEvent("account-t", k + 1, 0, e.type, e.data, None, e.id, moment))
        if recorded:
            assert isinstance(await store.import_events("account-t", recorded), Success)
        for seq in seqs:
            state = to_json_value(account_decider.fold(events[:seq]))
            await store.save_snapshot("account:t", seq, state, 1)
        plain = Repository(store, account_entity())
        snapshotting = Repository(store, account_entity(EveryN(1)))
        tick = timedelta(seconds=1)
        moments = {base - tick, base + timedelta(minutes=9), datetime.now(UTC)}
        moments |= {t + d for t in times for d in (-tick, timedelta(0), tick)}
        for moment in sorted(moments):
            count = next((k for k, t in enumerate(times) if t > moment), len(times))
            expected = Loaded(account_decider.fold(events[:count]), count)
            assert await plain.state_at("t", time=moment) == expected
            assert await snapshotting.state_at("t", time=moment) == expected
            for seq in {0, count // 2, count + 1, len(events)}:
                both = min(seq, count)
                at = Loaded(account_decider.fold(events[:both]), both)
                assert await snapshotting.state_at("t", seq=seq, time=moment) == at

    run(backend, page_size, body)
