"""Concurrent and timed stages: merge, par_join, par_eval_map, buffer, group_within, ...

Timing assertions only ever use generous margins (or none: most tests
synchronise on events and counters), so they hold on a slow, noisy machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import checkpoint, forever, task_count

from streamsrc import Stream

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")

T = TypeVar("T")


class Boom(Exception):
    """The error the tests inject."""


class Finalized:
    """Counts how many times a finalizer ran."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        await anyio.lowlevel.checkpoint()  # as real clean-up does; must be shielded
        self.count += 1


class Gauge:
    """Tracks how many things are active at once, and the most that ever were."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    def enter(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        self.active -= 1


def endless(finalized: Finalized) -> Stream[int]:
    """0, 1, 2, ... with a checkpoint per element, counting its finalization."""
    return Stream.range(0, 10**9, chunk_size=4).eval_tap(checkpoint).on_finalize(finalized)


def fails_after(seconds: float, message: str) -> Stream[int]:
    async def boom() -> int:
        await anyio.sleep(seconds)
        raise Boom(message)

    return Stream.eval(boom)


async def collect_via_open(s: Stream[T], into: list[T]) -> None:
    async with s.open() as it:
        async for x in it:
            into.append(x)


# ------------------------------------------------------------------ merge


@settings(max_examples=25, deadline=None)
@given(
    left=st.lists(st.integers(0, 99), max_size=20),
    right=st.lists(st.integers(100, 199), max_size=20),
    left_chunk=st.integers(1, 4),
    right_chunk=st.integers(1, 4),
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_emits_every_element_of_both_sides_in_each_sides_order(
    backend: str, left: list[int], right: list[int], left_chunk: int, right_chunk: int
) -> None:
    a = Stream.emits(left, chunk_size=left_chunk).eval_tap(checkpoint)
    b = Stream.emits(right, chunk_size=right_chunk).eval_tap(checkpoint)
    out = anyio.run(a.merge(b).to_list, backend=backend)
    assert sorted(out) == sorted(left + right)
    assert [x for x in out if x < 100] == left
    assert [x for x in out if x >= 100] == right


async def test_merge_ends_only_when_both_sides_end() -> None:
    async def slow(x: int) -> int:
        await anyio.sleep(0.01)
        return x

    short = Stream.emit(-1)
    long = Stream.range(0, 5).eval_map(slow)
    assert sorted(await short.merge(long).to_list()) == [-1, 0, 1, 2, 3, 4]
    assert sorted(await long.merge(short).to_list()) == [-1, 0, 1, 2, 3, 4]


@pytest.mark.parametrize("failing_side", ["left", "right"])
async def test_merge_fails_with_the_first_error_and_stops_the_other_side(
    failing_side: str,
) -> None:
    finalized = Finalized()
    ok, bad = endless(finalized), fails_after(0.05, "side failed")
    merged = ok.merge(bad) if failing_side == "right" else bad.merge(ok)
    before = task_count()
    with anyio.fail_after(10), pytest.raises(Boom, match="side failed"):
        await merged.drain()
    assert finalized.count == 1
    assert task_count() == before


# ------------------------------------------------------------------ par_join


def gauged_inner(gauge: Gauge, i: int) -> Stream[int]:
    async def enter() -> int:
        gauge.enter()
        return i

    async def leave() -> None:
        gauge.leave()

    async def slow(x: int) -> int:
        await anyio.sleep(0.01)
        return x

    body = Stream.range(10 * i, 10 * i + 3).eval_map(slow)
    return Stream.eval(enter).flat_map(lambda _: body).on_finalize(leave)


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_par_join_runs_at_most_n_inner_streams_at_once(n: int) -> None:
    gauge = Gauge()
    inner = Stream.range(0, 6).map(lambda i: gauged_inner(gauge, i))
    with anyio.fail_after(10):
        out = await inner.par_join(n).to_list()
    assert sorted(out) == sorted(10 * i + j for i in range(6) for j in range(3))
    for i in range(6):
        assert [x for x in out if x // 10 == i] == [10 * i, 10 * i + 1, 10 * i + 2]
    assert gauge.peak == n, "par_join should run exactly n inner streams when it can"
    assert gauge.active == 0


async def test_par_join_fails_when_an_inner_stream_fails_and_stops_the_others() -> None:
    finalized = [Finalized() for _ in range(3)]
    inner = [endless(finalized[0]), fails_after(0.05, "inner"), endless(finalized[2])]
    before = task_count()
    with anyio.fail_after(10), pytest.raises(Boom, match="inner"):
        await Stream.emits(inner).par_join(3).drain()
    assert [f.count for f in finalized] == [1, 0, 1]
    assert task_count() == before


async def test_par_join_fails_when_the_outer_stream_fails() -> None:
    finalized = Finalized()
    outer = Stream.emit(endless(finalized)) + Stream.raise_error(Boom("outer"))
    with anyio.fail_after(10), pytest.raises(Boom, match="outer"):
        await outer.par_join(2).drain()
    assert finalized.count == 1


# ------------------------------------------------------------------ par_eval_map


def gauged(
    gauge: Gauge, f: Callable[[int], int], delay: Callable[[int], float]
) -> Callable[[int], Awaitable[int]]:
    async def effect(x: int) -> int:
        gauge.enter()
        try:
            await anyio.sleep(delay(x))
            return f(x)
        finally:
            gauge.leave()

    return effect


@settings(max_examples=25, deadline=None)
@given(
    xs=st.lists(st.integers(0, 1000), max_size=30),
    n=st.integers(1, 6),
    chunk_size=st.integers(1, 8),
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_par_eval_map_keeps_input_order(backend: str, xs: list[int], n: int, chunk_size: int) -> None:
    gauge = Gauge()
    effect = gauged(gauge, lambda x: 3 * x + 1, lambda x: (x * 7919 % 5) * 0.001)
    s = Stream.emits(xs, chunk_size=chunk_size).par_eval_map(n, effect)
    assert anyio.run(s.to_list, backend=backend) == [3 * x + 1 for x in xs]
    assert gauge.peak <= n


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("chunk_size", [1, 3, 256])
async def test_par_eval_map_reaches_but_never_exceeds_n_in_flight(n: int, chunk_size: int) -> None:
    gauge = Gauge()
    effect = gauged(gauge, lambda x: x, lambda x: 0.01)
    xs = list(range(4 * n))
    assert await Stream.emits(xs, chunk_size=chunk_size).par_eval_map(n, effect).to_list() == xs
    assert gauge.peak == n
    assert gauge.active == 0


@pytest.mark.parametrize("n", [1, 3])
async def test_par_eval_map_unordered_never_exceeds_n_in_flight(n: int) -> None:
    gauge = Gauge()
    effect = gauged(gauge, lambda x: x, lambda x: (x % 3) * 0.005)
    xs = list(range(5 * n))
    out = await Stream.emits(xs, chunk_size=2).par_eval_map_unordered(n, effect).to_list()
    assert sorted(out) == xs
    assert gauge.peak == n


@pytest.mark.parametrize("unordered", [False, True])
async def test_par_eval_map_propagates_the_error_of_f_unwrapped(unordered: bool) -> None:
    finalized = Finalized()

    async def f(x: int) -> int:
        await anyio.sleep(0.001 * (x % 3))
        if x == 7:
            raise Boom(f"bad element {x}")
        return x

    s = endless(finalized)
    stage = s.par_eval_map_unordered(3, f) if unordered else s.par_eval_map(3, f)
    before = task_count()
    with anyio.fail_after(10), pytest.raises(Boom, match="bad element 7"):
        await stage.drain()
    assert finalized.count == 1
    assert task_count() == before


async def test_par_eval_map_ordered_emits_everything_before_the_failing_element() -> None:
    async def f(x: int) -> int:
        if x == 5:
            await anyio.sleep(0.05)
            raise Boom("five")
        return x

    got: list[int] = []
    with pytest.raises(Boom, match="five"):
        await collect_via_open(Stream.range(0, 10, chunk_size=1).par_eval_map(2, f), got)
    assert got == [0, 1, 2, 3, 4]


async def test_par_eval_map_unordered_emits_in_completion_order() -> None:
    completion_order = [2, 0, 3, 1]
    released = {i: anyio.Event() for i in completion_order}
    started = Gauge()
    all_started = anyio.Event()

    async def f(x: int) -> int:
        if x < 0:
            return x
        started.enter()
        if started.active == len(completion_order):
            all_started.set()
        await released[x].wait()
        return 10 * x

    # -1 completes at once: receiving it proves the workers are running.
    s = Stream.emits([-1, *sorted(completion_order)]).par_eval_map_unordered(5, f)
    got: list[int] = []
    with anyio.fail_after(10):
        async with s.open() as it:
            got.append(await anext(it))
            await all_started.wait()
            for i in completion_order:
                released[i].set()
                got.append(await anext(it))
            assert [x async for x in it] == []
    assert got == [-1, *(10 * i for i in completion_order)]


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 4])
async def test_par_eval_map_reads_upstream_a_bounded_distance_ahead(n: int, chunk_size: int) -> None:
    pulled = received = 0
    lead: list[int] = []

    async def pull(x: int) -> None:
        nonlocal pulled
        pulled += 1
        lead.append(pulled - received)

    async def receive(chunk: list[int]) -> None:
        nonlocal received
        received += len(chunk)
        await anyio.sleep(0.002)

    async def f(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    upstream = Stream.range(0, 10**9, chunk_size=chunk_size).eval_tap(pull)
    stage = upstream.par_eval_map(n, f).chunks().eval_tap(receive)
    with anyio.fail_after(10):
        await stage.take_while(lambda _: received < 40).drain()
    assert received >= 40
    # The documented read-ahead is 16 * n plus one chunk, counted from what was handed
    # downstream; at most two handed-over batches (each within that bound) are still
    # on their way. Reading an endless, instant upstream unboundedly would put this
    # lead in the thousands.
    assert max(lead) <= 3 * (16 * n + chunk_size)


# ------------------------------------------------------------------ errors through concurrent stages


async def same(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x


CONCURRENT_STAGES: dict[str, Callable[[Stream[int]], Stream[int]]] = {
    "merge": lambda s: s.merge(Stream.empty()),
    "par_join": lambda s: Stream.emit(s).par_join(2),
    "par_eval_map": lambda s: s.par_eval_map(2, same),
    "par_eval_map_unordered": lambda s: s.par_eval_map_unordered(2, same),
    "buffer": lambda s: s.buffer(1),
    "group_within": lambda s: s.group_within(2, 5.0).flat_map(Stream.emits),
    "interrupt_when": lambda s: s.interrupt_when(anyio.sleep_forever),
    "timeout": lambda s: s.timeout(60),
    "concurrently": lambda s: s.concurrently(Stream.empty()),
}


@pytest.mark.parametrize("stage", sorted(CONCURRENT_STAGES))
async def test_an_error_through_a_concurrent_stage_is_the_original_exception(stage: str) -> None:
    # Not only terminal operations: attempt, handle_error_with and retry_on see it too.
    error = Boom("upstream")
    s = CONCURRENT_STAGES[stage](Stream.range(0, 3) + Stream.raise_error(error))
    with anyio.fail_after(10):
        attempted = await s.attempt().to_list()
        handled: list[Exception] = []

        def handler(exc: Exception) -> Stream[int]:
            handled.append(exc)
            return Stream.emit(-1)

        recovered = await s.handle_error_with(handler).to_list()
    assert attempted[-1].failure() is error
    assert handled == [error]
    assert recovered[-1] == -1
    # (how many elements get out before the error races with it in a concurrent stage)
    assert set(recovered[:-1]) <= {0, 1, 2}


@pytest.mark.parametrize("unordered", [False, True])
async def test_an_error_in_par_eval_map_reaches_attempt_as_the_original_exception(
    unordered: bool,
) -> None:
    error = Boom("bad element")

    async def f(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        if x == 3:
            raise error
        return x

    s = Stream.range(0, 6)
    stage = s.par_eval_map_unordered(2, f) if unordered else s.par_eval_map(2, f)
    with anyio.fail_after(10):
        out = await stage.attempt().to_list()
    assert out[-1].failure() is error


# ------------------------------------------------------------------ several branches failing at once


def all_fail_at_once(stage: str, delay: float) -> Stream[int]:
    async def bad(x: int) -> int:
        if delay:
            await anyio.sleep(delay)
        raise Boom(f"element {x}")

    xs = Stream.range(0, 8)
    if stage == "par_eval_map":
        return xs.par_eval_map(4, bad)
    if stage == "par_eval_map_unordered":
        return xs.par_eval_map_unordered(4, bad)
    if stage == "merge":
        return Stream.range(0, 1).eval_map(bad).merge(Stream.range(1, 2).eval_map(bad))
    return xs.map(lambda x: Stream.emit(x).eval_map(bad)).par_join(4)


@pytest.mark.parametrize("delay", [0, 0.01], ids=["at_once", "after_same_delay"])
@pytest.mark.parametrize("stage", ["par_eval_map", "par_eval_map_unordered", "merge", "par_join"])
async def test_errors_are_unwrapped_even_when_several_branches_fail_together(
    stage: str, delay: float
) -> None:
    # Users catch the exception their effect raised; an ExceptionGroup would slip
    # past ``except Boom``.
    with anyio.fail_after(10), pytest.raises(Boom, match="element"):
        await all_fail_at_once(stage, delay).drain()


# ------------------------------------------------------------------ buffer


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("chunk_size", [1, 3])
async def test_buffer_lets_the_producer_run_at_most_n_chunks_ahead(n: int, chunk_size: int) -> None:
    produced = consumed = 0
    lead: list[int] = []
    total = 3 * n + 6

    async def page(i: int) -> tuple[list[int], int] | None:
        nonlocal produced
        if i == total:
            return None
        produced += 1
        lead.append(produced - consumed)
        return [i] * chunk_size, i + 1

    async def consume(chunk: list[int]) -> None:
        nonlocal consumed
        consumed += 1
        await anyio.sleep(0.005)

    s = Stream.unfold_chunk_eval(0, page).buffer(n).chunks().eval_tap(consume)
    out = await s.to_list()
    assert out == [[i] * chunk_size for i in range(total)]
    # n chunks in the buffer, one in the producer's hand, one handed to a waiting consumer
    assert max(lead) <= n + 2
    # with a slow consumer, the producer does fill the buffer
    assert max(lead) >= n + 1


async def test_buffer_runs_the_producer_concurrently() -> None:
    produced = anyio.Event()

    async def produce() -> int:
        produced.set()
        return 1

    async def consume(x: int) -> None:
        # The consumer waits for the producer's second element; without
        # concurrency this would deadlock.
        with anyio.fail_after(10):
            await produced.wait()

    s = Stream.emit(0) + Stream.eval(produce)
    assert await s.buffer(1).eval_tap(consume).to_list() == [0, 1]


# ------------------------------------------------------------------ group_within


@settings(max_examples=20, deadline=None)
@given(
    xs=st.lists(st.integers(), max_size=30),
    chunk_size=st.integers(1, 5),
    n=st.integers(1, 6),
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_within_on_a_fast_finite_source_is_chunk_n(
    backend: str, xs: list[int], chunk_size: int, n: int
) -> None:
    s = Stream.emits(xs, chunk_size=chunk_size).group_within(n, 30.0)
    expected = [xs[i : i + n] for i in range(0, len(xs), n)]
    assert anyio.run(s.to_list, backend=backend) == expected


async def test_group_within_emits_full_groups_without_waiting_for_the_timer() -> None:
    s = Stream.range(0, 7) + Stream.eval(forever)
    with anyio.fail_after(10):
        out = await s.group_within(3, 60.0).take(2).to_list()
    assert out == [[0, 1, 2], [3, 4, 5]]


async def test_group_within_emits_a_partial_group_after_the_timeout() -> None:
    s = Stream.emits([0, 1]) + Stream.eval(forever)
    start = anyio.current_time()
    with anyio.fail_after(10):
        out = await s.group_within(5, 0.2).take(1).to_list()
    assert out == [[0, 1]]
    assert anyio.current_time() - start >= 0.1, "the partial group did not wait for the timer"


async def test_group_within_on_a_slow_source_emits_partial_groups_as_time_passes() -> None:
    ticks = Stream.fixed_delay(0.05).zip_with_index().map(lambda pair: pair[1])
    with anyio.fail_after(10):
        out = await ticks.group_within(100, 0.02).take(3).to_list()
    assert all(0 < len(g) < 100 for g in out)
    flat = [x for g in out for x in g]
    assert flat == list(range(len(flat)))


async def test_group_within_fails_when_upstream_fails() -> None:
    s = Stream.range(0, 4) + Stream.raise_error(Boom("upstream"))
    with anyio.fail_after(10), pytest.raises(Boom, match="upstream"):
        await s.group_within(3, 5.0).to_list()


# ------------------------------------------------------------------ concurrently


async def test_concurrently_runs_background_and_stops_it_when_foreground_ends() -> None:
    bg_finalized = Finalized()
    ticked = anyio.Event()

    async def tick() -> None:
        ticked.set()
        await anyio.sleep(0.005)

    async def wait_for_background(x: int) -> int:
        with anyio.fail_after(10):
            await ticked.wait()
        return x

    bg = Stream.repeat_eval(tick).on_finalize(bg_finalized)
    fg = Stream.range(0, 5).eval_map(wait_for_background)
    before = task_count()
    with anyio.fail_after(10):
        assert await fg.concurrently(bg).to_list() == [0, 1, 2, 3, 4]
    assert bg_finalized.count == 1
    assert task_count() == before


async def test_concurrently_fails_when_the_background_fails() -> None:
    fg_finalized = Finalized()
    before = task_count()
    with anyio.fail_after(10), pytest.raises(Boom, match="background"):
        await endless(fg_finalized).concurrently(fails_after(0.05, "background")).drain()
    assert fg_finalized.count == 1
    assert task_count() == before


async def test_concurrently_keeps_going_when_the_background_ends_first() -> None:
    async def slow(x: int) -> int:
        await anyio.sleep(0.005)
        return x

    fg = Stream.range(0, 5).eval_map(slow)
    assert await fg.concurrently(Stream.emit("done")).to_list() == [0, 1, 2, 3, 4]


async def test_concurrently_propagates_a_foreground_error_and_stops_the_background() -> None:
    bg_finalized = Finalized()
    fg = Stream.range(0, 3) + Stream.raise_error(Boom("foreground"))
    with anyio.fail_after(10), pytest.raises(Boom, match="foreground"):
        await fg.concurrently(endless(bg_finalized)).drain()
    assert bg_finalized.count == 1


# ------------------------------------------------------------------ interrupt_when


async def test_interrupt_when_event_ends_the_stream_normally_and_finalizes() -> None:
    finalized = Finalized()
    stop = anyio.Event()

    async def maybe_stop(x: int) -> None:
        if x == 4:
            stop.set()

    before = task_count()
    with anyio.fail_after(10):
        out = await endless(finalized).interrupt_when(stop).eval_tap(maybe_stop).to_list()
    assert out[:5] == [0, 1, 2, 3, 4]
    assert out == list(range(len(out)))
    assert finalized.count == 1
    assert task_count() == before


async def test_interrupt_when_async_function_ends_the_stream_normally_and_finalizes() -> None:
    finalized = Finalized()
    before = task_count()
    with anyio.fail_after(10):
        result = await endless(finalized).interrupt_when(lambda: anyio.sleep(0.05)).to_list_result()
    out = result.unwrap()
    assert out == list(range(len(out)))
    assert finalized.count == 1
    assert task_count() == before


async def test_interrupt_when_lets_a_finite_stream_end_on_its_own() -> None:
    finalized = Finalized()
    s = Stream.range(0, 5).on_finalize(finalized).interrupt_when(anyio.Event())
    with anyio.fail_after(10):
        assert await s.to_list() == [0, 1, 2, 3, 4]
    assert finalized.count == 1


async def test_interrupt_when_does_not_hide_upstream_errors() -> None:
    s = Stream.range(0, 3) + Stream.raise_error(Boom("upstream"))
    with anyio.fail_after(10), pytest.raises(Boom, match="upstream"):
        await s.interrupt_when(anyio.Event()).drain()


# ------------------------------------------------------------------ timeout


async def test_timeout_raises_timeout_error_and_finalizes() -> None:
    finalized = Finalized()
    before = task_count()
    with anyio.fail_after(10), pytest.raises(TimeoutError):
        await endless(finalized).timeout(0.1).drain()
    assert finalized.count == 1
    assert task_count() == before


async def test_timeout_counts_from_the_start_not_per_element() -> None:
    got: list[None] = []
    with anyio.fail_after(10), pytest.raises(TimeoutError):
        await collect_via_open(Stream.fixed_delay(0.01).timeout(0.5), got)
    assert len(got) >= 1


async def test_timeout_result_variant_returns_failure() -> None:
    result = await Stream.eval(forever).timeout(0.05).drain_result()
    assert isinstance(result.failure(), TimeoutError)


async def test_timeout_passes_a_stream_that_ends_in_time() -> None:
    assert await Stream.range(0, 5).timeout(10).to_list() == [0, 1, 2, 3, 4]


async def test_timeout_does_not_replace_an_upstream_error() -> None:
    s = Stream.range(0, 3) + Stream.raise_error(Boom("upstream"))
    with pytest.raises(Boom, match="upstream"):
        await s.timeout(10).drain()
