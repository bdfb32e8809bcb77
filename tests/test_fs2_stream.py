"""fs2's StreamSuite, ported: error handling, cancellation of compiled streams, raise_error, resource safety.

Each case cites the test in ``core/shared/src/test/scala/fs2/StreamSuite.scala``;
properties draw a list with Hypothesis and compare with the list model; every
case runs on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result, Success
from stream_helpers import checkpoint, forever

from streamsrc import Stream

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")
LIMIT = 10


class Err(Exception):
    """The error the tests raise (fs2's ``Err``)."""


def endless() -> Stream[int]:
    return Stream.emit(1).repeat().eval_tap(checkpoint)


# ------------------------------------------------------------------ handleErrorWith


@settings(max_examples=15, deadline=None)
@given(xs=st.lists(st.integers(), max_size=20))
@pytest.mark.parametrize("backend", BACKENDS)
def test_handle_error_with_1(backend: str, xs: list[int]) -> None:
    # fs2 StreamSuite "handleErrorWith" / "1": s ++ raiseError, handled by empty, is s
    s = Stream.emits(xs) + Stream.raise_error(Err())
    assert anyio.run(s.handle_error_with(lambda _: Stream.empty()).to_list, backend=backend) == xs


async def test_handle_error_with_2() -> None:
    # fs2 StreamSuite "handleErrorWith" / "2"
    assert (await Stream.raise_error(Err()).handle_error_with(lambda _: Stream.emit(1)).last()).unwrap() == 1


async def test_handle_error_with_3() -> None:
    # fs2 StreamSuite "handleErrorWith" / "3"
    s = Stream.emit(1) + Stream.raise_error(Err())
    assert await s.handle_error_with(lambda _: Stream.emit(1)).to_list() == [1, 1]


async def test_handle_error_with_4_error_in_eval() -> None:
    # fs2 StreamSuite "handleErrorWith" / "4 - error in eval"
    async def boom() -> int:
        raise Err()

    def wrap(x: int) -> Result[int, Exception]:
        return Success(x)

    def recover(e: Exception) -> Stream[Result[int, Exception]]:
        return Stream.emit(Failure(e))

    handled = Stream.eval(boom).map(wrap).handle_error_with(recover)
    out = await handled.take(1).to_list()
    assert isinstance(out[0].failure(), Err)


async def test_handle_error_with_5_and_6() -> None:
    # fs2 StreamSuite "handleErrorWith" / "5", "6"
    errors: Stream[Any] = Stream.raise_error(Err()).handle_error_with(Stream.emit)
    five = await errors.flat_map(Stream.emit).to_list()
    six = await errors.map(lambda x: x).to_list()
    assert len(five) == len(six) == 1
    assert isinstance(five[0], Err)
    assert isinstance(six[0], Err)


async def test_handle_error_with_7_par_join() -> None:
    # fs2 StreamSuite "handleErrorWith" / "7 - parJoin"
    inner: list[Stream[int]] = [Stream.emit(1), Stream.raise_error(Err()), Stream.emit(2)]
    out = await Stream.emits(inner).par_join(4).attempt().to_list()
    assert any(isinstance(r, Failure) and isinstance(r.failure(), Err) for r in out)


async def test_handle_error_with_12_bracket_released_once() -> None:
    # fs2 StreamSuite "handleErrorWith" / "12": a failing eval inside a bracket, handled; released once
    released = 0

    async def acquire() -> None:
        return None

    async def release(_: None) -> None:
        nonlocal released
        released += 1

    async def fail() -> int:
        raise Err()

    s = Stream.bracket(acquire, release).flat_map(lambda _: Stream.eval(fail))
    assert await s.handle_error_with(lambda _: Stream.empty()).to_list() == []
    assert released == 1


async def test_handle_error_with_does_not_catch_an_error_raised_by_its_own_recovery() -> None:
    # fs2 StreamSuite "handleErrorWith" (recovery failing propagates)
    s = Stream.raise_error(Err("first")).handle_error_with(lambda _: Stream.raise_error(Err("second")))
    with pytest.raises(Err, match="second"):
        await s.drain()


# ------------------------------------------------------------------ cancelation of compiled streams


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(endless, id="constant"),
        pytest.param(lambda: _bracketed(endless()), id="bracketed"),
        pytest.param(lambda: endless().concurrently(endless()), id="concurrently"),
        pytest.param(lambda: endless().merge(endless()), id="merge"),
        pytest.param(lambda: Stream.emits([endless(), endless()]).par_join(2), id="par_join"),
    ],
)
async def test_cancelation_of_compiled_streams(make: Callable[[], Stream[Any]]) -> None:
    # fs2 StreamSuite "cancelation of compiled streams" / "constant", "bracketed stream",
    # "concurrently", "merge", "parJoin": cancelling the run stops it
    with anyio.fail_after(LIMIT):
        with anyio.move_on_after(0.05) as scope:
            await make().drain()
    assert scope.cancelled_caught


def _bracketed(s: Stream[int]) -> Stream[int]:
    async def release(_: object) -> None:
        await anyio.lowlevel.checkpoint()

    return Stream.bracket(anyio.lowlevel.checkpoint, release).flat_map(lambda _: s)


async def test_stream_canceled_while_resource_acquisition_is_running() -> None:
    # fs2 StreamSuite "cancelation of compiled streams" / "#2072 - stream canceled while resource
    # acquisition is running": the acquisition completes and is released
    log: list[str] = []

    async def acquire() -> str:
        await anyio.sleep(0.05)
        log.append("acquired")
        return "r"

    async def release(_: str) -> None:
        log.append("released")

    with anyio.move_on_after(0.01):
        await Stream.bracket(acquire, release).flat_map(lambda _: Stream.eval(forever)).drain()
    assert log == ["acquired", "released"]


# ------------------------------------------------------------------ raiseError


async def test_compiled_stream_fails_with_an_error_raised_in_stream() -> None:
    # fs2 StreamSuite "raiseError" / "compiled stream fails with an error raised in stream"
    with pytest.raises(Err):
        await Stream.raise_error(Err()).drain()


async def test_compiled_stream_fails_with_an_error_if_error_raised_after_an_append() -> None:
    # fs2 StreamSuite "raiseError" / "compiled stream fails with an error if error raised after an append"
    with pytest.raises(Err):
        await (Stream.emit(1) + Stream.raise_error(Err())).drain()


async def test_compiled_stream_does_not_fail_if_stream_is_terminated_before_raise_error() -> None:
    # fs2 StreamSuite "raiseError" / "compiled stream does not fail if stream is termianted before raiseError"
    assert await (Stream.emit(1) + Stream.raise_error(Err())).take(1).to_list() == [1]


# ------------------------------------------------------------------ map, take, scope


async def test_stack_safety_of_map() -> None:
    # fs2 StreamSuite "map" / "regression #1335 - stack safety of map"
    s = Stream.emit(0)
    for _ in range(10_000):
        s = s.map(lambda x: x + 1)
    assert await s.to_list() == [10_000]


async def test_take_chunks() -> None:
    # fs2 StreamSuite "take" / "chunks": take keeps the chunk structure of what it lets through
    s = Stream.emits([1, 2], chunk_size=2) + Stream.emits([3, 4], chunk_size=2)
    assert await s.take(3).chunks().to_list() == [[1, 2], [3]]


async def test_scope_2_append_runs_after_the_left_side_released() -> None:
    # fs2 StreamSuite "scope" / "2": the left side's resources are released before the right runs
    log: list[str] = []

    async def acquire() -> str:
        log.append("acquire")
        return "r"

    async def release(_: str) -> None:
        log.append("release")

    async def note() -> str:
        log.append("right")
        return "right"

    s = Stream.bracket(acquire, release).flat_map(lambda _: Stream.emit("left")) + Stream.eval(note)
    assert await s.to_list() == ["left", "right"]
    assert log == ["acquire", "release", "right"]


async def test_interruption_1_and_2() -> None:
    # fs2 StreamSuite "interruption" / "1", "2": an interrupted endless stream ends, normally
    with anyio.fail_after(LIMIT):
        assert await endless().interrupt_after(0.02).drain_result() == Success(None)
        assert await endless().merge(endless()).interrupt_after(0.02).drain_result() == Success(None)


async def test_repeat_of_an_empty_stream_can_be_cancelled() -> None:
    # fs2 StreamSuite "cancelation of compiled streams" / "constant", for a stream that never awaits:
    # Stream.empty().repeat() spins without emitting; the interpreter still lets a cancellation in
    with anyio.fail_after(LIMIT):
        with anyio.move_on_after(0.05) as scope:
            await Stream.empty().repeat().drain()
    assert scope.cancelled_caught
