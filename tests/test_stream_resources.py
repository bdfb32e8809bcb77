"""Resource safety: ``bracket`` and ``on_finalize`` release exactly once, however a stream stops.

Every test counts acquire and release calls, and checks that after the
terminal operation returns (or raises, or is cancelled) every acquired
resource has been released exactly once and no helper task is left running.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from stream_helpers import checkpoint, drain_cancelled_once, forever, task_count

from streamsrc import Stream

pytestmark = pytest.mark.anyio

Mode = Literal["complete", "upstream_error", "downstream_error", "take", "break", "cancel"]
MODES: tuple[Mode, ...] = (
    "complete",
    "upstream_error",
    "downstream_error",
    "take",
    "break",
    "cancel",
)


LIMIT = 10
"""Seconds any one stream may take: a stream that fails to stop fails the test, not hang it."""


class Boom(Exception):
    """The error the tests inject."""


class Tracker:
    """Counts acquisitions and releases of named resources, and logs them in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.acquired: list[str] = []
        self.released: list[str] = []
        self._ids = itertools.count()

    def resource(self, prefix: str) -> Stream[str]:
        """A bracketed resource; each acquisition gets a fresh name (``prefix`` + number)."""

        async def acquire() -> str:
            name = f"{prefix}{next(self._ids)}"
            self.acquired.append(name)
            self.log.append(f"acquire {name}")
            return name

        async def release(name: str) -> None:
            # Releasing awaits, as closing a real connection does: a release that is
            # not shielded from cancellation would stop here.
            await anyio.lowlevel.checkpoint()
            self.released.append(name)
            self.log.append(f"release {name}")

        return Stream.bracket(acquire, release)

    def finalizer(self, name: str) -> Callable[[], Awaitable[None]]:
        """A finalizer for ``on_finalize`` that counts as acquiring and releasing ``name``."""
        self.acquired.append(name)

        async def finalize() -> None:
            await anyio.lowlevel.checkpoint()
            self.released.append(name)
            self.log.append(f"finalize {name}")

        return finalize

    def assert_released_exactly_once(self) -> None:
        assert self.acquired, "the test never acquired a resource"
        assert len(set(self.released)) == len(self.released), f"released twice: {self.log}"
        assert sorted(self.released) == sorted(self.acquired), f"leaked: {self.log}"


def fail_on_nth(n: int) -> Callable[[int], int]:
    """A function for ``map`` that returns its argument, and raises ``Boom`` on call ``n``."""
    calls = itertools.count(1)

    def f(x: int) -> int:
        if next(calls) == n:
            raise Boom(f"call {n}")
        return x

    return f


def endless() -> Stream[int]:
    return Stream.range(0, 10**9, chunk_size=2).eval_tap(checkpoint)


async def run_in_mode(mode: Mode, stream: Stream[int]) -> list[int]:
    """Run ``stream`` so that it stops the way ``mode`` says; return what it emitted."""
    if mode in ("complete", "upstream_error", "cancel"):
        if mode == "cancel":
            with anyio.move_on_after(0.1) as scope:
                await stream.to_list()
            assert scope.cancelled_caught
            return []
        return await stream.to_list()
    if mode == "downstream_error":
        return await stream.map(fail_on_nth(3)).to_list()
    if mode == "take":
        out = await stream.take(3).to_list()
        assert len(out) == 3
        return out
    got: list[int] = []
    async with stream.open() as it:
        async for x in it:
            got.append(x)
            if len(got) == 3:
                break
    assert len(got) == 3
    return got


def source(mode: Mode, tracker: Tracker) -> Stream[int]:
    """A bracketed source whose body suits ``mode``: finite, failing, endless or blocking."""
    body: Stream[int]
    if mode == "complete":
        body = Stream.range(0, 6, chunk_size=2).eval_tap(checkpoint)
    elif mode == "upstream_error":
        body = Stream.range(0, 4, chunk_size=2) + Stream.raise_error(Boom("upstream"))
    elif mode == "cancel":
        body = Stream.range(0, 3) + Stream.eval(forever)
    else:
        body = endless()
    return tracker.resource("src").flat_map(lambda _: body)


async def check_stops_cleanly(mode: Mode, stream: Stream[int], tracker: Tracker) -> list[int]:
    before = task_count()
    out: list[int] = []
    with anyio.fail_after(LIMIT):
        if mode in ("upstream_error", "downstream_error"):
            with pytest.raises(Boom):
                await run_in_mode(mode, stream)
        else:
            out = await run_in_mode(mode, stream)
    tracker.assert_released_exactly_once()
    assert task_count() == before, "a helper task outlived the terminal operation"
    return out


# ------------------------------------------------------------------ sequential stages


@pytest.mark.parametrize("mode", MODES)
async def test_bracket_releases_once_however_the_stream_stops(mode: Mode) -> None:
    tracker = Tracker()
    out = await check_stops_cleanly(mode, source(mode, tracker), tracker)
    if mode == "complete":
        assert out == list(range(6))
    assert len(tracker.acquired) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_on_finalize_runs_once_however_the_stream_stops(mode: Mode) -> None:
    tracker = Tracker()
    stream = source(mode, tracker).on_finalize(tracker.finalizer("fin")).map(lambda x: x)
    await check_stops_cleanly(mode, stream, tracker)
    assert tracker.log[-1] == "finalize fin", "on_finalize ran before the resource it wraps"


@pytest.mark.parametrize("mode", MODES)
async def test_nested_brackets_release_innermost_first(mode: Mode) -> None:
    tracker = Tracker()
    inner = source(mode, tracker)
    stream = tracker.resource("outer").flat_map(
        lambda _: tracker.resource("middle").flat_map(lambda _: inner)
    )
    await check_stops_cleanly(mode, stream, tracker)
    assert [entry.split()[0] for entry in tracker.log] == ["acquire"] * 3 + ["release"] * 3
    acquired = [entry.split()[1] for entry in tracker.log[:3]]
    released = [entry.split()[1] for entry in tracker.log[3:]]
    assert released == acquired[::-1]


async def test_sequential_brackets_release_before_the_next_acquires() -> None:
    tracker = Tracker()
    stream = Stream.range(0, 3).flat_map(
        lambda i: tracker.resource(f"r{i}-").flat_map(lambda _: Stream.emits([i, i]))
    )
    assert await stream.to_list() == [0, 0, 1, 1, 2, 2]
    tracker.assert_released_exactly_once()
    assert [entry.split()[0] for entry in tracker.log] == ["acquire", "release"] * 3


async def test_take_releases_upstream_before_the_stream_goes_on() -> None:
    tracker = Tracker()

    async def after() -> int:
        tracker.log.append("after take")
        return -1

    stream = source("take", tracker).take(2) + Stream.eval(after)
    with anyio.fail_after(LIMIT):
        assert await stream.to_list() == [0, 1, -1]
    tracker.assert_released_exactly_once()
    assert tracker.log == ["acquire src0", "release src0", "after take"]


async def test_take_while_releases_upstream_before_the_stream_goes_on() -> None:
    tracker = Tracker()

    async def after() -> int:
        tracker.log.append("after take_while")
        return -1

    stream = source("take", tracker).take_while(lambda x: x < 4) + Stream.eval(after)
    with anyio.fail_after(LIMIT):
        assert await stream.to_list() == [0, 1, 2, 3, -1]
    tracker.assert_released_exactly_once()
    assert tracker.log == ["acquire src0", "release src0", "after take_while"]


async def test_take_zero_never_acquires() -> None:
    tracker = Tracker()
    assert await tracker.resource("r").take(0).to_list() == []
    assert tracker.acquired == tracker.released == []


async def test_failed_acquire_is_not_released_and_the_error_propagates() -> None:
    released: list[str] = []

    async def acquire() -> str:
        raise Boom("cannot open")

    async def release(r: str) -> None:
        released.append(r)

    with pytest.raises(Boom, match="cannot open"):
        await Stream.bracket(acquire, release).to_list()
    assert released == []


async def test_release_runs_again_each_time_the_stream_runs() -> None:
    tracker = Tracker()
    stream = tracker.resource("r").flat_map(lambda _: Stream.range(0, 3)).take(2)
    with anyio.fail_after(LIMIT):
        assert await stream.to_list() == [0, 1]
        assert await stream.to_list() == [0, 1]
    assert len(tracker.acquired) == 2
    tracker.assert_released_exactly_once()


async def test_resource_is_open_while_downstream_uses_it() -> None:
    tracker = Tracker()

    async def use(name: str) -> str:
        assert name in tracker.acquired
        assert name not in tracker.released, "released while still in use"
        return name

    stream = tracker.resource("r").flat_map(lambda r: Stream.emits([r] * 3)).eval_map(use)
    assert await stream.to_list() == ["r0"] * 3
    tracker.assert_released_exactly_once()


async def test_cancel_scope_cancel_while_blocked_in_eval_map_releases() -> None:
    tracker = Tracker()
    blocked = anyio.Event()

    async def slow(x: int) -> int:
        blocked.set()
        await anyio.sleep(3600)
        return x

    stream = source("take", tracker).eval_map(slow)
    before = task_count()
    with anyio.fail_after(LIMIT):
        finished = await drain_cancelled_once(stream, blocked)
    assert not finished
    tracker.assert_released_exactly_once()
    assert task_count() == before


async def test_move_on_after_while_blocked_in_eval_map_releases() -> None:
    tracker = Tracker()

    async def slow(x: int) -> int:
        await anyio.sleep(3600)
        return x

    stream = tracker.resource("outer").flat_map(lambda _: source("take", tracker).eval_map(slow))
    before = task_count()
    with anyio.fail_after(LIMIT), anyio.move_on_after(0.1) as scope:
        await stream.to_list()
    assert scope.cancelled_caught
    assert len(tracker.acquired) == 2
    tracker.assert_released_exactly_once()
    assert tracker.log[2:] == ["release src1", "release outer0"]
    assert task_count() == before


async def test_error_raised_by_the_consumer_inside_open_releases() -> None:
    tracker = Tracker()

    async def consume() -> None:
        async with source("take", tracker).open() as it:
            async for x in it:
                if x == 2:
                    raise Boom("consumer")

    before = task_count()
    with anyio.fail_after(LIMIT), pytest.raises(Boom, match="consumer"):
        await consume()
    tracker.assert_released_exactly_once()
    assert task_count() == before


async def test_from_async_iterable_closes_the_iterator_when_stopped_early() -> None:
    log: list[str] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                yield i
        finally:
            log.append("closed")

    with anyio.fail_after(LIMIT):
        assert await Stream.from_async_iterable(numbers()).take(3).to_list() == [0, 1, 2]
    assert log == ["closed"]


# ------------------------------------------------------------------ concurrent stages

Stage = Callable[[Stream[int], Tracker], Stream[int]]


def other_side(tracker: Tracker) -> Stream[int]:
    return tracker.resource("other").flat_map(
        lambda _: Stream.range(100, 104, chunk_size=2).eval_tap(checkpoint)
    )


def background(tracker: Tracker) -> Stream[None]:
    return tracker.resource("bg").flat_map(lambda _: Stream.fixed_delay(0.005))


async def identity(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x


STAGES: dict[str, Stage] = {
    "merge": lambda s, t: s.merge(other_side(t)),
    "par_join": lambda s, t: Stream.emits([s, other_side(t)]).par_join(2),
    "par_eval_map": lambda s, t: s.par_eval_map(3, identity),
    "par_eval_map_unordered": lambda s, t: s.par_eval_map_unordered(3, identity),
    "buffer": lambda s, t: s.buffer(2),
    "group_within": lambda s, t: s.group_within(2, 0.05).flat_map(Stream.emits),
    "interrupt_when_event": lambda s, t: s.interrupt_when(anyio.Event()),
    "interrupt_when_function": lambda s, t: s.interrupt_when(anyio.sleep_forever),
    "timeout": lambda s, t: s.timeout(60),
    "concurrently": lambda s, t: s.concurrently(background(t)),
    "nested": lambda s, t: s.buffer(1).merge(other_side(t).par_eval_map(2, identity)).buffer(1),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stage", sorted(STAGES))
async def test_concurrent_stage_releases_once_and_leaves_no_task(stage: str, mode: Mode) -> None:
    tracker = Tracker()
    stream = STAGES[stage](source(mode, tracker), tracker)
    out = await check_stops_cleanly(mode, stream, tracker)
    if mode == "complete":
        assert set(range(6)) <= set(out)
    assert any(name.startswith("src") for name in tracker.acquired)


@pytest.mark.parametrize("stage", sorted(STAGES))
async def test_cancel_scope_cancel_inside_concurrent_stage_releases(stage: str) -> None:
    tracker = Tracker()
    blocked = anyio.Event()

    async def slow(x: int) -> int:
        blocked.set()
        await anyio.sleep(3600)
        return x

    stream = STAGES[stage](source("take", tracker).eval_map(slow), tracker)
    before = task_count()
    with anyio.fail_after(LIMIT):
        finished = await drain_cancelled_once(stream, blocked)
    assert not finished
    tracker.assert_released_exactly_once()
    assert task_count() == before


@pytest.mark.parametrize("stage", sorted(STAGES))
async def test_on_finalize_inside_concurrent_stage_runs_once_on_take(stage: str) -> None:
    tracker = Tracker()
    inner = endless().on_finalize(tracker.finalizer("inner"))
    stream = STAGES[stage](inner, tracker).on_finalize(tracker.finalizer("outer"))
    before = task_count()
    with anyio.fail_after(LIMIT):
        assert len(await stream.take(3).to_list()) == 3
    tracker.assert_released_exactly_once()
    assert tracker.released[-1] == "outer"
    assert task_count() == before
