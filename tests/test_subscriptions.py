"""Subscriptions (``subscribe``, ``subscribe_with_ticks``): catch up on the log, then follow it live.

Every async test runs on asyncio and trio, most of them on every store of
``store_urls.STORE_URLS`` (memory and SQLite, with their default page size
and with ``page_size=3``). Timing is only ever asserted with generous bounds:
a subscription that must be woken by the store's signal polls with
:data:`SLEEPY` (10 s between reads) inside a 5 s ``fail_after``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from returns.maybe import Maybe
from returns.result import Failure, Result
from store_urls import STORE_URLS, opened_store
from stream_helpers import task_count

from streamsrc.errors import StoreError
from streamsrc.events import EventData, RecordedEvent
from streamsrc.projections import Poll, Tick, subscribe, subscribe_with_ticks
from streamsrc.store import ANY, AppendResult, AppendSignal, Expected, open_store
from streamsrc.store.memory import MemoryStore
from streamsrc.stream import Stream
from streamsrc.testing.conformance import append_ok, make_events

pytestmark = pytest.mark.anyio

SLEEPY = Poll(min_delay=10, max_delay=10)
"""Ten seconds between polls: a subscription using it that sees an append within 5 s was woken."""

FAST = Poll(min_delay=0.001, max_delay=0.05)
"""Quick polling, for stores without a signal."""


@pytest.fixture(params=sorted(STORE_URLS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Every store, with default and small pages."""
    async with opened_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["memory", "sqlite"])
async def basic_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Memory and SQLite with their default page size (for tests where paging does not matter)."""
    async with opened_store(request.param, tmp_path) as opened:
        yield opened


class CountingStore:
    """A store that delegates to another and counts ``read_all`` and ``head`` calls.

    It has no ``appended`` signal (like a store written by other processes),
    so a subscription on it polls.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0
        self.heads = 0

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        result: Result[AppendResult, StoreError] = await self.inner.append(stream, events, expected)
        return result

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        reading: Stream[RecordedEvent] = self.inner.read(stream, after, limit, backwards)
        return reading

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        self.reads += 1
        reading: Stream[RecordedEvent] = self.inner.read_all(
            after, limit, types=types, stream_prefix=stream_prefix
        )
        return reading

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        found: Maybe[RecordedEvent] = await self.inner.latest(stream)
        return found

    async def head(self) -> int:
        self.heads += 1
        head: int = await self.inner.head()
        return head

    def streams(self) -> Stream[str]:
        names: Stream[str] = self.inner.streams()
        return names


class NotifyingCountingStore(CountingStore):
    """A :class:`CountingStore` that passes on the inner store's ``appended`` signal."""

    @property
    def appended(self) -> AppendSignal:
        signal: AppendSignal = self.inner.appended
        return signal


class WatchedSignal(AppendSignal):
    """An ``AppendSignal`` that lets a test wait until a subscriber is asleep on it."""

    __slots__ = ("_entered", "waits")

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self._entered: anyio.Event | None = None

    async def wait(self, version: int, timeout: float) -> None:  # noqa: ASYNC109
        self.waits += 1
        if self._entered is not None:
            self._entered.set()
        await super().wait(version, timeout)

    async def until_waits(self, count: int) -> None:
        """Return once ``wait`` has been entered ``count`` times in all."""
        while self.waits < count:
            self._entered = anyio.Event()
            await self._entered.wait()


async def append_mixed(store: Any, n: int, tag: str) -> list[AppendResult]:
    """``n`` appends of 1 to 3 events, to a few streams in turn."""
    results = []
    for k in range(n):
        batch = make_events(1 + k % 3, f"{tag}{k}")
        results.append(await append_ok(store, f"{tag}-{k % 3}", batch))
    return results


def assert_in_log_order(got: Sequence[RecordedEvent]) -> None:
    """Strictly increasing positions, and each stream's seqs 1, 2, 3, ... with no gap."""
    assert all(a.position < b.position for a, b in itertools.pairwise(got))
    for name in {e.stream for e in got}:
        seqs = [e.seq for e in got if e.stream == name]
        assert seqs == list(range(1, len(seqs) + 1)), name


# ------------------------------------------------------------------ catching up, then live


@pytest.mark.parametrize("page_size", [1, 3, 1000])
async def test_catch_up_then_live(store: Any, page_size: int) -> None:
    await append_mixed(store, 4, "old")  # 1 + 2 + 3 + 1 = 7 events
    old = await store.read_all().to_list()
    assert len(old) == 7
    got: list[RecordedEvent] = []
    caught_up = anyio.Event()

    async def follow() -> None:
        async with subscribe(store, page_size=page_size).take(7 + 7).open() as events:
            async for event in events:
                got.append(event)
                if len(got) == 7:
                    caught_up.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await caught_up.wait()
            assert got == old
            await append_mixed(store, 4, "new")  # 7 more, delivered live
    assert got == await store.read_all().to_list()
    assert len(got) == 14
    assert_in_log_order(got)


@pytest.mark.parametrize("page_size", [1, 3, 1000])
async def test_appends_racing_the_catch_up_boundary(store: Any, page_size: int) -> None:
    await append_mixed(store, 6, "before")
    before = await store.head()
    results: list[AppendResult] = []

    async def write() -> None:
        for k in range(30):
            results.append(await append_ok(store, f"race-{k % 4}", make_events(1 + k % 2, f"r{k}")))
            if k % 3 == 0:
                await anyio.lowlevel.checkpoint()

    total = before + sum(1 + k % 2 for k in range(30))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)  # appends land while the subscription catches up and after
            got = await subscribe(store, page_size=page_size).take(total).to_list()
    assert got == await store.read_all().to_list()
    assert [e.position for e in got[before:]] == [p for r in results for p in r.positions]
    assert_in_log_order(got)


async def test_follows_many_concurrent_writers(store: Any) -> None:
    writers, appends = 8, 50
    written: dict[Any, int] = {}  # event id -> position its append returned

    async def writer(w: int) -> None:
        for k in range(appends):
            batch = make_events(1 + (w + k) % 3 if k % 5 == 0 else 1, f"w{w}-{k}")
            result = await append_ok(store, f"writer-{(w + k) % 5}", batch)
            written.update(zip((e.id for e in batch), result.positions, strict=True))

    total = sum(1 + (w + k) % 3 if k % 5 == 0 else 1 for w in range(writers) for k in range(appends))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)
            got = await subscribe(store, page_size=7).take(total).to_list()
    assert len(got) == total == len(written)
    assert Counter(e.id for e in got) == Counter(written.keys())  # every event exactly once
    assert {e.id: e.position for e in got} == written
    assert got == await store.read_all().to_list()
    assert_in_log_order(got)


# ------------------------------------------------------------------ where it starts and ends


async def test_after_resumes_exactly_after_that_position(store: Any) -> None:
    await append_mixed(store, 5, "a")
    everything = await store.read_all().to_list()
    head = everything[-1].position
    for after in (0, 1, 2, 5, head - 1, head, head + 3):
        want = [e for e in everything if e.position > after]
        assert await subscribe(store, after=after, live=False, page_size=3).to_list() == want, after
    # live: resume after position 5, and keep following
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(append_ok, store, "late", make_events(2, "late"))
            got = await subscribe(store, after=5, page_size=2).take(head - 5 + 2).to_list()
    assert got == (await store.read_all().to_list())[5:]


async def test_not_live_ends_once_caught_up(store: Any) -> None:
    with anyio.fail_after(5):  # never waits for new events (SLEEPY would wait 10 s)
        assert await subscribe(store, live=False, poll=SLEEPY).to_list() == []
        assert await subscribe_with_ticks(store, live=False, poll=SLEEPY).to_list() == [Tick(0, True)]
        await append_mixed(store, 5, "x")
        everything = await store.read_all().to_list()
        for page_size in (1, 3, len(everything), 1000):
            got = await subscribe(store, live=False, poll=SLEEPY, page_size=page_size).to_list()
            assert got == everything, page_size
        assert await subscribe(store, types={"Nothing"}, live=False, poll=SLEEPY).to_list() == []
        assert await subscribe(store, after=10**6, live=False, poll=SLEEPY).to_list() == []


# ------------------------------------------------------------------ filters and ticks


async def test_filters_deliver_only_matching_events(store: Any) -> None:
    names = ("acct-1", "acct-2", "user-1", "acct")

    async def append_batch(k: int) -> None:
        kinds = [("Opened", "Noted", "Closed")[(k + i) % 3] for i in range(2)]
        await append_ok(store, names[k % 4], [EventData(kind, {"k": k}) for kind in kinds])

    cases: list[tuple[Collection[str] | None, str | None]] = [
        ({"Opened", "Closed"}, None),
        (None, "acct-"),
        ({"Noted"}, "acct"),
        (["Closed"], "user-"),
    ]
    for k in range(12):
        await append_batch(k)
    first = await store.read_all().to_list()  # the 12 batches, which each case appends again
    for types, prefix in cases:
        everything = await store.read_all().to_list()
        wanted = [
            e
            for e in everything
            if (types is None or e.type in types) and (prefix is None or e.stream.startswith(prefix))
        ]
        assert 0 < len(wanted) < len(everything)
        caught = subscribe(store, types=types, stream_prefix=prefix, live=False, page_size=2)
        assert await caught.to_list() == wanted, (types, prefix)
        # live: only the matching events among those appended while it follows
        matching = [e for e in wanted if e.position <= first[-1].position]
        head = await store.head()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def more() -> None:
                    for k in range(12):
                        await append_batch(k)

                tg.start_soon(more)
                following = subscribe(store, after=head, types=types, stream_prefix=prefix, page_size=2)
                got = await following.take(len(matching)).to_list()  # the 12 batches repeat
        assert got == (await store.read_all(after=head, types=types, stream_prefix=prefix).to_list())
        assert [(e.stream, e.type, e.data) for e in got] == [(e.stream, e.type, e.data) for e in matching]


async def test_ticks_move_past_filtered_out_events(store: Any) -> None:
    with anyio.fail_after(10):
        await append_ok(store, "a-1", [EventData("Opened", {})])
        await append_ok(store, "a-1", [EventData("Noted", {}), EventData("Noted", {})])
        [opened] = await store.read_all(limit=1).to_list()
        items = await subscribe_with_ticks(store, types={"Opened"}, live=False).to_list()
        assert items == [opened, Tick(3, True)]
        assert await subscribe_with_ticks(store, stream_prefix="b-", live=False).to_list() == [Tick(3, True)]
        # paged: a Tick after each page, at or past every event before it and before every event after
        await append_mixed(store, 6, "p")  # positions 4..15
        await append_ok(store, "a-2", make_events(2, "tail", "Noted"))
        items = await subscribe_with_ticks(store, types={"Tested"}, live=False, page_size=3).to_list()
        events = [x for x in items if isinstance(x, RecordedEvent)]
        assert events == await store.read_all(types={"Tested"}).to_list()
        assert len(events) == 12
        ticks = [x for x in items if isinstance(x, Tick)]
        assert ticks[-1] == Tick(await store.head(), True)  # past the two Noted events at the end
        assert all(not t.caught_up for t in ticks[:-1])
        seen = 0
        for item in items:
            if isinstance(item, Tick):
                assert item.position >= seen
                seen = item.position
            else:
                assert item.position > seen
                seen = item.position


async def test_live_ticks_report_skipped_appends(store: Any) -> None:
    items = subscribe_with_ticks(store, types={"Opened"}, poll=FAST)
    with anyio.fail_after(10):
        async with items.open() as it:
            assert await anext(it) == Tick(0, True)
            # only events that do not match: a Tick moves past them, with no event
            await append_ok(store, "a", make_events(3, "skip", "Noted"))
            assert await anext(it) == Tick(3, True)
            # a matching event, then its Tick
            await append_ok(store, "a", [EventData("Opened", {"n": 1}), *make_events(1, "skip", "Noted")])
            event = await anext(it)
            assert isinstance(event, RecordedEvent)
            assert (event.type, event.position, event.data) == ("Opened", 4, {"n": 1})
            assert await anext(it) == Tick(5, True)


# ------------------------------------------------------------------ stopping


STOPS = ["take", "interrupt_when", "timeout", "cancel_scope", "break"]


@pytest.mark.parametrize("notifying", [True, False], ids=["notifying", "polling"])
@pytest.mark.parametrize("how", STOPS)
async def test_stopping_ends_the_subscription_promptly(basic_store: Any, how: str, notifying: bool) -> None:
    counting = NotifyingCountingStore(basic_store) if notifying else CountingStore(basic_store)
    await append_ok(basic_store, "s", make_events(3))
    got: list[RecordedEvent] = []
    all_three = anyio.Event()

    def note(event: RecordedEvent) -> RecordedEvent:
        got.append(event)
        if len(got) == 3:
            all_three.set()
        return event

    items = subscribe(counting, poll=SLEEPY, page_size=2).map(note)  # waits 10 s once caught up
    tasks = task_count()
    start = anyio.current_time()
    with anyio.fail_after(5):
        if how == "take":
            async with anyio.create_task_group() as tg:

                async def fourth() -> None:
                    await all_three.wait()
                    await append_ok(basic_store, "s", make_events(1, "fourth"))

                if notifying:  # else nothing would wake it before SLEEPY's 10 s
                    tg.start_soon(fourth)
                    assert len(await items.take(4).to_list()) == 4
                else:
                    assert len(await items.take(3).to_list()) == 3
        elif how == "interrupt_when":
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def stopper() -> None:
                    await all_three.wait()
                    await anyio.wait_all_tasks_blocked()
                    stop.set()

                tg.start_soon(stopper)
                assert len(await items.interrupt_when(stop).to_list()) == 3
        elif how == "timeout":
            result = await items.timeout(0.1).to_list_result()
            assert isinstance(result, Failure)
            assert isinstance(result.failure(), TimeoutError)
        elif how == "cancel_scope":
            async with anyio.create_task_group() as tg:
                tg.start_soon(items.drain)
                await all_three.wait()
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        else:
            async with items.open() as it:
                async for event in it:
                    if event.seq == 3:
                        break
    assert anyio.current_time() - start < 5  # the 10 s wait was cut short
    assert [e.seq for e in got[:3]] == [1, 2, 3]
    assert task_count() == tasks
    # nothing keeps reading the store
    reads = counting.reads
    await anyio.sleep(0.05)
    assert counting.reads == reads


async def test_cancelling_the_surrounding_scope_mid_catch_up(store: Any) -> None:
    await append_mixed(store, 30, "many")
    counting = CountingStore(store)
    tasks = task_count()
    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            async with subscribe(counting, page_size=1).open() as it:
                async for event in it:
                    if event.position == 10:
                        scope.cancel()
                        await anyio.lowlevel.checkpoint()
        assert scope.cancelled_caught
    assert task_count() == tasks
    reads = counting.reads
    await anyio.sleep(0.05)
    assert counting.reads == reads


# ------------------------------------------------------------------ waiting without busy polling


@pytest.mark.parametrize(("notifying", "filtered"), [(False, False), (True, True)])
async def test_idle_subscription_backs_off(basic_store: Any, notifying: bool, filtered: bool) -> None:
    counting = NotifyingCountingStore(basic_store) if notifying else CountingStore(basic_store)
    await append_ok(basic_store, "s", make_events(2))
    items = subscribe(counting, types={"Tested"} if filtered else None)  # the default Poll
    with anyio.fail_after(5):
        got = await items.interrupt_when(lambda: anyio.sleep(0.3)).to_list()
    assert len(got) == 2
    # 2 ms, 4 ms, 8 ms, ... up to 0.5 s between reads: about 9 in 0.3 s (150 at a steady 2 ms)
    assert 2 <= counting.reads <= 15
    assert counting.heads <= (15 if filtered else 0)


WAKE_CASES = [(name, "append") for name in sorted(STORE_URLS)] + [("sqlite", "transaction")]


@pytest.mark.parametrize(("name", "how"), WAKE_CASES)
async def test_append_wakes_a_sleeping_subscription(name: str, how: str, tmp_path: Path) -> None:
    async with opened_store(name, tmp_path) as store:
        await _wakes(store, how)


async def _wakes(store: Any, how: str) -> None:
    signal = WatchedSignal()
    store.appended = signal  # notified by the store's appends from now on
    rounds = 3

    async def write() -> None:
        for k in range(rounds):
            await signal.until_waits(k + 1)  # the subscription is asleep (for 10 s)
            if how == "append":
                await append_ok(store, f"s-{k}", make_events(1, f"round{k}"))
            else:
                async with store.transaction() as tx:
                    tx.append(f"s-{k}", make_events(1, f"round{k}"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            got = await subscribe(store, poll=SLEEPY).take(rounds).to_list()
    assert [e.stream for e in got] == [f"s-{k}" for k in range(rounds)]
    assert signal.waits >= rounds


async def test_sqlite_transaction_cancelled_while_committing_still_notifies(tmp_path: Path) -> None:
    async with opened_store("sqlite", tmp_path) as store:
        for k in range(6):
            head, version = await store.head(), store.appended.version

            async def commit(k: int = k) -> None:
                async with store.transaction() as tx:
                    tx.append(f"t-{k}", make_events(1, f"t{k}"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(commit)
                for _ in range(k):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
            if await store.head() != head:  # it committed, though cancelled: subscribers must hear of it
                assert store.appended.version != version, k


async def test_second_sqlite_store_on_the_file_follows_by_polling(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    async with open_store(url) as writer, open_store(url) as reader:
        got: list[RecordedEvent] = []
        arrived = anyio.Event()

        async def follow() -> None:
            nonlocal arrived
            async with subscribe(reader, poll=FAST).take(6).open() as events:
                async for event in events:
                    got.append(event)
                    if len(got) % 2 == 0:
                        arrived.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for k in range(3):
                    await anyio.sleep(0.1)  # idle long enough to back off to max_delay
                    arrived = anyio.Event()
                    await append_ok(writer, f"other-process-{k}", make_events(2, f"p{k}"))
                    await arrived.wait()
        assert got == await writer.read_all().to_list()
        assert len(got) == 6
        assert reader.appended.version == 0  # no signal crossed over: it polled


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("min_delay", "max_delay"),
    [(0, 1), (-0.5, 1), (0.5, 0.1), (float("nan"), 1), (0.1, float("nan"))],
)
async def test_poll_needs_positive_delays_in_order(min_delay: float, max_delay: float) -> None:
    with pytest.raises(ValueError, match="min_delay"):
        Poll(min_delay, max_delay)
    assert Poll(0.25, 0.25) == Poll(min_delay=0.25, max_delay=0.25)


async def test_bad_arguments_are_refused_when_subscribing() -> None:
    store = MemoryStore()
    for make in (subscribe, subscribe_with_ticks):
        for page_size in (0, -1):
            with pytest.raises(ValueError, match="page_size"):
                make(store, page_size=page_size)
        with pytest.raises(TypeError, match="not one string"):
            make(store, types="Opened")
    assert await subscribe(store, types=["Opened"], live=False).to_list() == []  # a list is fine
