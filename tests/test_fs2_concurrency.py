"""fs2's concurrency suites, ported: interrupts, concurrently, merge, par_join, switch_map, observe.

Each case cites the fs2 suite and test (``core/shared/src/test/scala/fs2/``);
every case runs on asyncio and trio, under a time limit, so a stream that
fails to stop fails its test instead of hanging the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from returns.result import Failure, Success
from stream_helpers import forever

from streamsrc import Stream

pytestmark = pytest.mark.anyio

LIMIT = 10
"""Seconds any one stream may take."""


class Err(Exception):
    """The error the tests raise (fs2's ``Err``)."""


async def hang(_: object) -> int:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def fail_later(seconds: float = 0.02) -> None:
    await anyio.sleep(seconds)
    raise Err("background")


def released_log() -> tuple[list[str], object]:
    log: list[str] = []

    def resource(name: str, delay: float = 0.0) -> Stream[str]:
        async def acquire() -> str:
            log.append(f"acquire {name}")
            return name

        async def release(_: str) -> None:
            await anyio.sleep(delay)
            log.append(f"release {name}")

        return Stream.bracket(acquire, release)

    return log, resource


# ------------------------------------------------------------------ StreamInterruptSuite


async def test_can_interrupt_a_hung_eval() -> None:
    # fs2 StreamInterruptSuite "1 - can interrupt a hung eval"
    with anyio.fail_after(LIMIT):
        assert await Stream.eval(forever).interrupt_after(0.02).to_list() == []


async def test_termination_successful_when_stream_doing_interruption_is_hung() -> None:
    # fs2 StreamInterruptSuite "2 - termination successful when stream doing interruption is hung"
    stop = anyio.Event()

    async def set_then_hang() -> None:
        stop.set()
        await anyio.sleep_forever()

    s = Stream.range(0, 10**9).eval_tap(lambda _: anyio.lowlevel.checkpoint())
    with anyio.fail_after(LIMIT):
        n = await s.interrupt_when(stop).concurrently(Stream.eval(set_then_hang)).count()
    assert n >= 0


async def test_interruption_of_an_infinitely_recursive_stream() -> None:
    # fs2 StreamInterruptSuite "5 - interruption of an infinitely recursive stream"
    def loop(i: int) -> Stream[int]:
        return Stream.emit(i).eval_tap(lambda _: anyio.lowlevel.checkpoint()) + (lambda: loop(i + 1))

    with anyio.fail_after(LIMIT):
        n = await loop(0).interrupt_after(0.05).count()
    assert n > 0


async def test_interruption_of_an_infinitely_recursive_stream_that_never_emits() -> None:
    # fs2 StreamInterruptSuite "6 - interruption of an infinitely recursive stream that never emits"
    def loop() -> Stream[int]:
        return Stream.eval(anyio.lowlevel.checkpoint).drain_pipe() + loop

    with anyio.fail_after(LIMIT):
        assert await loop().interrupt_after(0.05).to_list() == []


async def test_interruption_of_a_stream_that_never_terminates_in_flat_map() -> None:
    # fs2 StreamInterruptSuite "12 - interruption of stream that never terminates in flatMap"
    with anyio.fail_after(LIMIT):
        out = (
            await Stream.range(0, 5).interrupt_after(0.05).flat_map(lambda _: Stream.eval(forever)).to_list()
        )
    assert out == []


async def test_interrupt_eval_map_and_then_resume_on_append() -> None:
    # fs2 StreamInterruptSuite "14a - interrupt evalMap and then resume on append"; the issue's
    # "a stage after interrupt_when that is waiting is interrupted"
    s = Stream.range(0, 5)
    with anyio.fail_after(LIMIT):
        out = await (s.interrupt_after(0.05).eval_map(hang).drain_pipe() + s).to_list()
    assert out == [0, 1, 2, 3, 4]


async def test_interrupt_eval_map_and_collect_then_resume_on_append() -> None:
    # fs2 StreamInterruptSuite "14b - interrupt evalMap+collect and then resume on append"
    s = Stream.range(0, 5)
    with anyio.fail_after(LIMIT):
        out = await (s.interrupt_after(0.05).eval_map(hang) + s).to_list()
    assert out == [0, 1, 2, 3, 4]


async def test_a_pipe_that_is_interrupted_does_not_restart_evaluation() -> None:
    # fs2 StreamInterruptSuite "16 - issue #1179 - if a pipe is interrupted, it will not restart evaluation"
    calls: list[int] = []

    async def count(x: int) -> int:
        calls.append(x)
        await anyio.sleep_forever()
        return x

    with anyio.fail_after(LIMIT):
        await Stream.range(0, 10).interrupt_after(0.05).eval_map(count).drain()
    assert calls == [0]


async def test_interrupted_eval_is_cancelled() -> None:
    # fs2 StreamInterruptSuite "19 - interrupted eval is cancelled"
    cancelled = anyio.Event()

    async def wait() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with anyio.fail_after(LIMIT):
        await Stream.eval(wait).interrupt_after(0.02).drain()
    assert cancelled.is_set()


async def test_nested_interrupt_in_outer_scope_interrupts_the_inner_scope() -> None:
    # fs2 StreamInterruptSuite "21 - nested-interrupt - interrupt in outer scope interrupts the inner scope"
    never = anyio.Event()
    with anyio.fail_after(LIMIT):
        out = await Stream.eval(forever).interrupt_when(never).interrupt_after(0.02).to_list()
    assert out == []


async def test_interrupt_when_downstream_of_open_iteration() -> None:
    # the issue: interrupt_when reaches a stage after it, also when iterated with open()
    got: list[int] = []
    with anyio.fail_after(LIMIT):
        async with Stream.range(0, 3).interrupt_after(0.05).eval_map(hang).open() as it:
            async for x in it:
                got.append(x)
    assert got == []


# ------------------------------------------------------------------ StreamConcurrentlySuite


async def test_when_background_stream_terminates_overall_stream_continues() -> None:
    # fs2 StreamConcurrentlySuite "when background stream terminates, overall stream continues"
    s = Stream.range(0, 5).spaced(0.005)
    assert await s.concurrently(Stream.empty()).to_list() == [0, 1, 2, 3, 4]


async def test_when_background_stream_fails_overall_stream_fails() -> None:
    # fs2 StreamConcurrentlySuite "when background stream fails, overall stream fails"
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await Stream.fixed_delay(0.01).concurrently(Stream.eval(fail_later)).drain()


async def test_when_primary_stream_fails_background_stream_is_terminated() -> None:
    # fs2 StreamConcurrentlySuite "when primary stream fails, overall stream fails and background
    # stream is terminated"
    stopped = anyio.Event()

    async def background() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    with anyio.fail_after(LIMIT):
        result = await Stream.raise_error(Err()).concurrently(Stream.eval(background)).drain_result()
    assert isinstance(result, Failure)
    assert stopped.is_set()


async def test_when_background_stream_fails_primary_stream_fails_even_when_hung() -> None:
    # fs2 StreamConcurrentlySuite "when background stream fails, primary stream fails even when hung"
    gate = anyio.Event()

    async def wait_for_gate(_: int) -> None:
        await gate.wait()

    s = Stream.sleep(0.01).map(lambda _: 1) + Stream.range(0, 3)
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await s.concurrently(Stream.eval(fail_later)).eval_tap(wait_for_gate).drain()


async def test_run_finalizers_of_background_stream_and_properly_handle_exception() -> None:
    # fs2 StreamConcurrentlySuite "run finalizers of background stream and properly handle exception"
    log, resource = released_log()
    background = resource("bg").flat_map(lambda _: Stream.eval(forever))  # type: ignore[operator]
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await (Stream.sleep(0.02) + Stream.raise_error(Err())).concurrently(background).drain()
    assert log == ["acquire bg", "release bg"]


# ------------------------------------------------------------------ StreamMergeSuite


async def test_merge_run_finalizers_of_inner_streams_first() -> None:
    # fs2 StreamMergeSuite "run finalizers of inner streams first"
    log, resource = released_log()
    left = resource("left").flat_map(lambda _: Stream.eval(forever))  # type: ignore[operator]
    right = resource("right").flat_map(lambda _: Stream.sleep(0.02) + Stream.raise_error(Err()))  # type: ignore[operator]
    outer = resource("outer").flat_map(lambda _: left.merge(right))  # type: ignore[operator]
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await outer.drain()
    assert log[-1] == "release outer"
    assert {"release left", "release right"} <= set(log[:-1])


async def test_merge_hangs_are_interrupted() -> None:
    # fs2 StreamMergeSuite "hangs" / "1": a merge with a hung side stops when interrupted
    with anyio.fail_after(LIMIT):
        await Stream.eval(forever).merge(Stream.eval(forever)).interrupt_after(0.02).drain()


async def test_merge_halt_both() -> None:
    # fs2 StreamMergeSuite "mergeHaltBoth"
    with anyio.fail_after(LIMIT):
        out = await Stream.range(0, 3).merge_halt_both(Stream.eval(forever)).to_list()
    assert out == [0, 1, 2]


async def test_merge_halt_l_emits_all_the_outputs_from_left_stream_in_same_order() -> None:
    # fs2 StreamMergeSuite "mergeHaltL emits all the outputs from left stream in same order"
    left = Stream.range(0, 20).spaced(0.001)
    with anyio.fail_after(LIMIT):
        out = (
            await left.map(lambda x: ("l", x))
            .merge_halt_l(Stream.fixed_delay(0.001).map(lambda _: ("r", 0)))
            .to_list()
        )
    assert [x for side, x in out if side == "l"] == list(range(20))


async def test_merge_halt_r_emits_all_outputs_from_right_stream_in_same_order() -> None:
    # fs2 StreamMergeSuite "mergeHaltR emits all outputs from right stream, in same order"
    right = Stream.range(0, 20).spaced(0.001)
    with anyio.fail_after(LIMIT):
        out = await Stream.fixed_delay(0.001).map(lambda _: -1).merge_halt_r(right).to_list()
    assert [x for x in out if x >= 0] == list(range(20))


async def test_merge_with_a_failing_release_then_take_fails() -> None:
    # the issue: a finalizer error is not lost behind merge (fs2 raises it as without merge)
    async def acquire() -> int:
        return 1

    async def release(_: int) -> None:
        raise Err("release")

    b = Stream.bracket(acquire, release)
    with anyio.fail_after(LIMIT):
        assert isinstance((await b.take(1).to_list_result()), Failure)
        result = await b.merge(Stream.empty()).take(1).to_list_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), Err)


async def test_buffer_with_a_failing_release_then_take_fails() -> None:
    # the issue: a finalizer error is not lost behind buffer
    async def acquire() -> int:
        return 1

    async def release(_: int) -> None:
        raise Err("release")

    with anyio.fail_after(LIMIT):
        result = await Stream.bracket(acquire, release).buffer(1).take(1).to_list_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), Err)


# ------------------------------------------------------------------ StreamParJoinSuite


async def test_par_join_no_concurrency_is_flat_map() -> None:
    # fs2 StreamParJoinSuite "no concurrency"
    inner = Stream.range(0, 4).map(lambda i: Stream.range(i * 10, i * 10 + 3))
    assert await inner.par_join(1).to_list() == await inner.flat_map(lambda s: s).to_list()


async def test_par_join_resources_acquired_in_outer_stream_are_released_after_inner_streams_complete() -> (
    None
):
    # fs2 StreamParJoinSuite "resources acquired in outer stream are released after inner streams complete"
    log, resource = released_log()
    inner = Stream.range(0, 2).map(
        lambda i: resource(f"inner{i}").flat_map(lambda _: Stream.sleep(0.02))  # type: ignore[operator]
    )
    outer = resource("outer").flat_map(lambda _: inner)  # type: ignore[operator]
    with anyio.fail_after(LIMIT):
        await outer.par_join(2).drain()
    assert log[0] == "acquire outer"
    assert log[-1] == "release outer"


async def test_par_join_run_finalizers_of_inner_streams_first() -> None:
    # fs2 StreamParJoinSuite "run finalizers of inner streams first"
    log, resource = released_log()
    failing = resource("inner").flat_map(lambda _: Stream.sleep(0.01) + Stream.raise_error(Err()))  # type: ignore[operator]
    outer = resource("outer").flat_map(lambda _: Stream.emits([failing, Stream.eval(forever)]))  # type: ignore[operator]
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await outer.par_join(2).drain()
    assert log.index("release inner") < log.index("release outer")


async def test_par_join_outer_failed() -> None:
    # fs2 StreamParJoinSuite "outer failed"
    outer = (
        Stream.emit(Stream.eval(forever))
        + Stream.sleep(0.01).map(lambda _: Stream.empty())
        + Stream.raise_error(Err())
    )
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await outer.par_join(2).drain()


async def test_par_join_propagate_error_from_inner_stream_before_append() -> None:
    # fs2 StreamParJoinSuite "propagate error from inner stream before ++"
    s = Stream.emit(Stream.raise_error(Err())).par_join(2) + Stream.emit(1)
    with anyio.fail_after(LIMIT):
        result = await s.to_list_result()
    assert isinstance(result, Failure)


# ------------------------------------------------------------------ StreamSwitchMapSuite


async def test_switch_map_is_flat_map_when_switching_never_occurs() -> None:
    # fs2 StreamSwitchMapSuite "flatMap equivalence when switching never occurs"
    s = Stream.range(0, 4)
    pause = Stream.sleep(0.1).drain_pipe()
    out = (
        await (s.flat_map(lambda x: Stream.emit(x) + pause))
        .switch_map(lambda x: Stream.emits([x, x]))
        .to_list()
    )
    assert out == [0, 0, 1, 1, 2, 2, 3, 3]


async def test_switch_map_inner_stream_finalizer_always_runs_before_switching() -> None:
    # fs2 StreamSwitchMapSuite "inner stream finalizer always runs before switching"
    log: list[str] = []

    def inner(x: int) -> Stream[int]:
        async def acquire() -> int:
            log.append(f"acquire {x}")
            return x

        async def release(_: int) -> None:
            await anyio.sleep(0.01)
            log.append(f"release {x}")

        return Stream.bracket(acquire, release).flat_map(lambda _: Stream.eval(forever))

    s = Stream.range(0, 3).spaced(0.02)
    with anyio.fail_after(LIMIT):
        await s.switch_map(inner).interrupt_after(0.5).drain()
    assert log[:4] == ["acquire 0", "release 0", "acquire 1", "release 1"]


async def test_switch_map_when_inner_stream_fails_overall_stream_fails() -> None:
    # fs2 StreamSwitchMapSuite "when inner stream fails, overall stream fails"
    with anyio.fail_after(LIMIT):
        result = await Stream.range(0, 3).switch_map(lambda _: Stream.raise_error(Err())).drain_result()
    assert isinstance(result, Failure)


async def test_switch_map_when_primary_stream_fails_inner_stream_is_terminated() -> None:
    # fs2 StreamSwitchMapSuite "when primary stream fails, overall stream fails and inner stream is
    # terminated"
    s = Stream.emit(1) + Stream.sleep(0.02).drain_pipe() + Stream.raise_error(Err())
    with anyio.fail_after(LIMIT):
        result = await s.switch_map(lambda _: Stream.eval(forever)).drain_result()
    assert isinstance(result, Failure)


# ------------------------------------------------------------------ StreamObserveSuite


async def test_observe_basic_functionality() -> None:
    # fs2 StreamObserveSuite "basic functionality"
    seen: list[int] = []

    async def record(x: int) -> None:
        seen.append(x)

    out = await Stream.range(0, 100, chunk_size=7).observe(lambda s: s.foreach(record)).to_list()
    assert out == seen == list(range(100))


async def test_observe_handle_errors_from_observing_sink() -> None:
    # fs2 StreamObserveSuite "handle errors from observing sink"
    with anyio.fail_after(LIMIT):
        result = await Stream.range(0, 10).observe(lambda s: s.map(lambda _: 1 // 0)).drain_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), ZeroDivisionError)


async def test_observe_propagate_error_from_source() -> None:
    # fs2 StreamObserveSuite "propagate error from source"
    with anyio.fail_after(LIMIT):
        result = await (Stream.range(0, 3) + Stream.raise_error(Err())).observe(lambda s: s).drain_result()
    assert isinstance(result, Failure)


async def test_observe_handle_finite_observing_sink() -> None:
    # fs2 StreamObserveSuite "handle finite observing sink" / "1"
    with anyio.fail_after(LIMIT):
        out = await Stream.range(0, 5).observe(lambda s: s.take(2)).to_list()
    assert out == [0, 1, 2, 3, 4]


async def test_broadcast_through_feeds_every_pipe() -> None:
    # fs2 StreamCombinatorsSuite "broadcastThrough" (basic): each pipe sees every element
    tag_a = lambda s: s.map(lambda x: ("a", x))  # noqa: E731
    tag_b = lambda s: s.map(lambda x: ("b", x))  # noqa: E731
    out = await Stream.range(0, 50, chunk_size=3).broadcast_through(tag_a, tag_b).to_list()
    assert [x for tag, x in out if tag == "a"] == list(range(50))
    assert [x for tag, x in out if tag == "b"] == list(range(50))


# ------------------------------------------------------------------ ParEvalMapSuite and the error rule


async def test_par_eval_map_if_error_happens_after_stream_succeeds_error_should_be_lost() -> None:
    # fs2 ParEvalMapSuite "if error happens after stream succeeds error should be lost"; the issue:
    # asyncio and trio agree (this test runs on both)
    done = anyio.Event()

    async def unit() -> None:
        return None

    async def late() -> None:
        with anyio.CancelScope(shield=True):  # fs2's .uncancelable
            await done.wait()
            raise Err("late")

    async def complete(x: None) -> None:
        done.set()

    s = Stream.emits([unit, late]).par_eval_map(2, lambda f: f()).take(1).eval_tap(complete)
    with anyio.fail_after(LIMIT):
        assert await s.to_list_result() == Success([None])


@pytest.mark.parametrize("ordered", [True, False])
async def test_par_eval_map_if_two_errors_happen_only_one_is_reported(ordered: bool) -> None:
    # fs2 ParEvalMapSuite "if two errors happens only one should be reported"
    both = anyio.Event()
    arrived = 0

    async def fail(_: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await both.wait()
        raise Err()

    s = Stream.range(0, 2)
    stage = s.par_eval_map(2, fail) if ordered else s.par_eval_map_unordered(2, fail)
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err) as raised:
            await stage.drain()
    assert not isinstance(raised.value, BaseExceptionGroup)


async def test_terminal_operations_raise_the_error_itself_never_a_group() -> None:
    # The single rule: a terminal operation raises the one error, never an ExceptionGroup
    # around it, whatever concurrent stage it went through.
    failing = Stream.range(0, 3) + Stream.raise_error(Err("x"))
    stages: list[Stream[Any]] = [
        failing.buffer(1),
        failing.merge(Stream.empty()),
        Stream.emit(failing).par_join(2),
        failing.par_eval_map(2, lambda x: anyio.lowlevel.checkpoint()),
        Stream.eval(forever).concurrently(failing),
        failing.interrupt_after(10),
        failing.observe(lambda s: s),
    ]
    for s in stages:
        with anyio.fail_after(LIMIT):
            with pytest.raises(Err):
                await s.drain()
            with pytest.raises(Err):
                await s.to_list()
            with pytest.raises(Err):
                await s.fold(0, lambda a, _: a)
            with pytest.raises(Err):
                await _iterate(s)


async def test_several_errors_raise_the_first_with_the_others_as_notes() -> None:
    # The documented rule for several errors: the first is raised, each other one is a note on it.
    async def acquire() -> int:
        return 1

    async def release(_: int) -> None:
        raise ValueError("release failed")

    s = Stream.bracket(acquire, release).flat_map(lambda _: Stream.raise_error(Err("body failed")))
    with pytest.raises(Err) as raised:
        await s.drain()
    assert any("release failed" in note for note in getattr(raised.value, "__notes__", []))


async def _iterate(s: Stream[Any]) -> None:
    async with s.open() as it:
        async for _ in it:
            pass


async def _fail_soon() -> int:
    await anyio.sleep(0.02)
    raise Err("side")


@pytest.mark.parametrize("stage", ["merge", "par_join", "timeout", "merge then flat_map"])
async def test_a_failing_concurrent_stage_stops_a_hung_stage_after_it(stage: str) -> None:
    # The "an error anywhere stops everything" (fs2 StreamMergeSuite "left/right failure",
    # StreamParJoinSuite "outer failed", withTimeout "timeout never-ending stream"): the failure
    # reaches a downstream stage that is waiting on a hung call
    s = Stream.range(0, 3)
    failing: Stream[int]
    if stage == "merge":
        failing = s.merge(Stream.eval(_fail_soon)).eval_map(hang)
    elif stage == "par_join":
        failing = Stream.emits([s, Stream.eval(_fail_soon)]).par_join(2).eval_map(hang)
    elif stage == "timeout":
        failing = s.timeout(0.02).eval_map(hang)
    else:
        failing = s.merge(Stream.eval(_fail_soon)).flat_map(lambda x: Stream.eval(lambda: hang(x)))
    with anyio.fail_after(LIMIT):
        result = await failing.to_list_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), TimeoutError if stage == "timeout" else Err)


async def _release_fails(_: int) -> None:
    raise Err("release")


async def _one() -> int:
    return 1


async def _identity(x: int) -> int:
    return x


CONCURRENT_STAGES: dict[str, Callable[[Stream[int]], Stream[int]]] = {
    "buffer": lambda s: s.buffer(1),
    "merge": lambda s: s.merge(Stream.empty()),
    "par_eval_map": lambda s: s.par_eval_map(1, _identity),
    "par_eval_map_unordered": lambda s: s.par_eval_map_unordered(2, _identity),
    "concurrently": lambda s: s.concurrently(Stream.empty()),
    "interrupt_after": lambda s: s.interrupt_after(10),
    "timeout": lambda s: s.timeout(10),
    "observe": lambda s: s.observe(lambda o: o),
    "broadcast_through": lambda s: s.broadcast_through(lambda o: o),
    "par_join": lambda s: Stream.emit(s).par_join(1),
    "switch_map": lambda s: Stream.emit(0).switch_map(lambda _: s),
    "debounce": lambda s: s.debounce(0.001),
}


@pytest.mark.parametrize("stage", sorted(CONCURRENT_STAGES))
@pytest.mark.parametrize("take", [True, False])
async def test_a_failing_release_is_never_lost_behind_a_concurrent_stage(stage: str, take: bool) -> None:
    # fs2 BracketSuite "propagate error from closing the root scope", through each concurrent stage
    # (the issue: bracket(release raises).buffer(1).take(1) ended in Success)
    s = CONCURRENT_STAGES[stage](Stream.bracket(_one, _release_fails))
    with anyio.fail_after(LIMIT):
        result = await (s.take(1) if take else s).to_list_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), Err)
