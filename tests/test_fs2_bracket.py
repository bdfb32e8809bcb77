"""fs2's BracketSuite, ported: resources released exactly once, last acquired first, with their exit case.

Each case cites the fs2 test (``core/shared/src/test/scala/fs2/BracketSuite.scala``);
every case runs on asyncio and trio.
"""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success
from stream_helpers import forever

from streamsrc import Stream
from streamsrc.stream import ExitCase

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")
LIMIT = 10


class Err(Exception):
    """The error the tests raise (fs2's ``Err``)."""


class Counter:
    """fs2's ``Counter``: acquisitions increment, releases decrement; a log keeps the order."""

    def __init__(self) -> None:
        self.value = 0
        self.log: list[str] = []
        self.cases: list[ExitCase] = []
        self._ids = itertools.count()

    def bracket(self, name: str = "r") -> Stream[str]:
        async def acquire() -> str:
            resource = f"{name}{next(self._ids)}"
            self.value += 1
            self.log.append(f"acquire {resource}")
            return resource

        async def release(resource: str, case: ExitCase) -> None:
            await anyio.lowlevel.checkpoint()
            self.value -= 1
            self.cases.append(case)
            self.log.append(f"release {resource}")

        return Stream.bracket_case(acquire, release)


@pytest.mark.parametrize("body", ["empty", "error"])
async def test_single_bracket(body: str) -> None:
    # fs2 BracketSuite "single bracket" / "normal termination", "failure"
    c = Counter()
    inner: Stream[str] = Stream.empty() if body == "empty" else Stream.raise_error(Err())
    result = await c.bracket().flat_map(lambda _: inner).drain_result()
    assert isinstance(result, Success if body == "empty" else Failure)
    assert c.value == 0
    assert c.log == ["acquire r0", "release r0"]


async def test_single_bracket_throw_from_append() -> None:
    # fs2 BracketSuite "single bracket" / "throw from append"
    c = Counter()

    def boom() -> Stream[str]:
        raise Err()

    s = c.bracket().flat_map(lambda _: Stream.emit("x")) + boom
    assert isinstance(await s.drain_result(), Failure)
    assert c.value == 0


@pytest.mark.parametrize("fail_second", [False, True])
async def test_bracket_append_bracket(fail_second: bool) -> None:
    # fs2 BracketSuite "bracket ++ bracket" / "normal termination", "failure"
    c = Counter()
    second: Stream[str] = Stream.raise_error(Err()) if fail_second else Stream.empty()
    nothing: Stream[str] = Stream.empty()
    s = c.bracket("a").flat_map(lambda _: nothing) + c.bracket("b").flat_map(lambda _: second)
    result = await s.drain_result()
    assert isinstance(result, Failure if fail_second else Success)
    assert c.value == 0
    assert c.log == ["acquire a0", "release a0", "acquire b1", "release b1"]


async def test_nested() -> None:
    # fs2 BracketSuite "nested": brackets inside brackets, failing at the bottom
    c = Counter()
    s: Stream[str] = Stream.raise_error(Err())
    for i in range(10):
        s = c.bracket().flat_map(lambda _, inner=s, i=i: Stream.emit(str(i)) + inner)  # type: ignore[misc]
    assert isinstance(await s.drain_result(), Failure)
    assert c.value == 0


@settings(max_examples=20, deadline=None)
@given(xs=st.lists(st.integers(), max_size=12), i=st.integers(0, 9), j=st.integers(0, 9), k=st.integers(0, 9))
@pytest.mark.parametrize("backend", BACKENDS)
def test_early_termination(backend: str, xs: list[int], i: int, j: int, k: int) -> None:
    # fs2 BracketSuite "early termination"
    c = Counter()
    bracketed = c.bracket().flat_map(lambda _: Stream.emits(xs))
    every = (
        bracketed.take(i)
        + bracketed.take(i).take(j)
        + bracketed.take(i).take(i)
        + bracketed.take(i).take(j).take(k)
        + bracketed.take(i).take(j).take(k).take(j).take(i)
    )
    anyio.run(every.drain, backend=backend)
    assert c.value == 0


async def test_finalizer_is_not_called_until_necessary() -> None:
    # fs2 BracketSuite "finalizer should not be called until necessary"
    log: list[str] = []

    async def acquire() -> str:
        log.append("Acquired")
        return "r"

    async def release(_: str) -> None:
        log.append("Released")

    async def use(_: str) -> None:
        log.append("Used")

    s = Stream.bracket(acquire, release).flat_map(lambda r: Stream.eval(lambda: use(r)))
    await s.eval_tap(lambda _: _append(log, "In after hook")).drain()
    assert log == ["Acquired", "Used", "In after hook", "Released"]


async def _append(log: list[str], entry: str) -> None:
    log.append(entry)


async def test_brackets_in_sequence() -> None:
    # fs2 BracketSuite "$bracketsInSequence brackets in sequence"
    c = Counter()
    s: Stream[str] = Stream.empty()
    for _ in range(200):
        s = s + c.bracket().flat_map(lambda _: Stream.empty())
    await s.drain()
    assert c.value == 0
    assert len(c.log) == 400


async def test_evaluating_a_bracketed_stream_multiple_times_is_safe() -> None:
    # fs2 BracketSuite "evaluating a bracketed stream multiple times is safe"
    c = Counter()
    s = c.bracket().flat_map(Stream.emit)
    for _ in range(3):
        await s.drain()
    assert c.value == 0


async def test_finalizers_run_in_lifo_order_explicit_release() -> None:
    # fs2 BracketSuite "finalizers are run in LIFO order" / "explicit release"
    c = Counter()
    s = c.bracket("a").flat_map(lambda _: c.bracket("b").flat_map(lambda _: c.bracket("c")))
    await s.drain()
    assert c.log == ["acquire a0", "acquire b1", "acquire c2", "release c2", "release b1", "release a0"]


async def test_finalizers_run_in_lifo_order_scope_closure() -> None:
    # fs2 BracketSuite "finalizers are run in LIFO order" / "scope closure"
    c = Counter()
    s = c.bracket("a").flat_map(
        lambda _: c.bracket("b").flat_map(
            lambda _: c.bracket("c").flat_map(lambda _: Stream.raise_error(Err()))
        )
    )
    assert isinstance(await s.drain_result(), Failure)
    assert c.log[3:] == ["release c2", "release b1", "release a0"]


@pytest.mark.parametrize("failing_side", ["left", "right"])
async def test_propagate_error_from_closing_the_root_scope(failing_side: str) -> None:
    # fs2 BracketSuite "propagate error from closing the root scope" / "fail left", "fail right"
    async def acquire() -> int:
        return 1

    async def release_fails(_: int) -> None:
        raise Err()

    async def release_ok(_: int) -> None:
        return None

    s1 = Stream.bracket(acquire, release_fails)
    s2 = Stream.bracket(acquire, release_ok)
    zipped = s1.zip(s2) if failing_side == "left" else s2.zip(s1)
    with pytest.raises(Err):
        await zipped.drain()


async def test_handle_error_with_closes_scopes() -> None:
    # fs2 BracketSuite "handleErrorWith closes scopes"
    c = Counter()
    s = c.bracket("a").flat_map(lambda _: Stream.raise_error(Err())).handle_error_with(
        lambda _: Stream.empty()
    ) + c.bracket("b").flat_map(lambda _: Stream.empty())
    await s.drain()
    assert c.log == ["acquire a0", "release a0", "acquire b1", "release b1"]


@pytest.mark.parametrize("how", ["normal", "failure"])
async def test_bracket_case_exit_case_on_normal_termination_and_failure(how: str) -> None:
    # fs2 BracketSuite "bracketCase" / "normal termination", "failure"
    c = Counter()
    body = Stream.range(0, 3)
    if how == "failure":
        body = body + Stream.raise_error(Err())
    s = c.bracket().flat_map(lambda _: c.bracket().flat_map(lambda _: body))
    await s.drain_result()
    assert c.value == 0
    if how == "normal":
        assert c.cases == [ExitCase.SUCCEEDED, ExitCase.SUCCEEDED]
    else:
        assert [case.kind for case in c.cases] == ["errored", "errored"]
        assert all(isinstance(case.error, Err) for case in c.cases)


async def test_bracket_case_exit_case_on_cancelation() -> None:
    # fs2 BracketSuite "bracketCase" / "cancelation"
    c = Counter()
    s = c.bracket().flat_map(lambda _: Stream.range(0, 3) + Stream.eval(forever))
    with anyio.move_on_after(0.05):
        await s.drain()
    assert c.value == 0
    assert c.cases == [ExitCase.CANCELED]


async def test_bracket_case_exit_case_on_interruption() -> None:
    # fs2 BracketSuite "bracketCase" / "interruption"
    c = Counter()
    s = c.bracket().flat_map(lambda _: Stream.range(0, 3) + Stream.eval(forever))
    with anyio.fail_after(LIMIT):
        await s.interrupt_after(0.05).drain()
    assert c.value == 0
    assert c.cases == [ExitCase.CANCELED]


async def test_bracket_case_sees_take_as_success() -> None:
    # fs2 BracketSuite "bracketCase" / "normal termination": stopping early is not a failure
    c = Counter()
    await c.bracket().flat_map(lambda _: Stream.range(0, 100)).take(2).drain()
    assert c.cases == [ExitCase.SUCCEEDED]


async def test_long_running_acquire_is_not_cancelled_and_is_released() -> None:
    # fs2 BracketSuite "bracketFull" / "long running unmasked acquire" and "#2785": acquire is
    # uncancelable, and its resource is released once it completes
    log: list[str] = []

    async def acquire() -> str:
        await anyio.sleep(0.1)
        log.append("acquired")
        return "r"

    async def release(_: str) -> None:
        log.append("released")

    with anyio.move_on_after(0.02) as scope:
        await Stream.bracket(acquire, release).flat_map(lambda _: Stream.eval(forever)).drain()
    assert scope.cancelled_caught
    assert log == ["acquired", "released"]


async def test_release_is_uncancelable() -> None:
    # fs2 BracketSuite "#2966 release is uncancelable"
    log: list[str] = []

    async def acquire() -> str:
        return "r"

    async def release(_: str) -> None:
        await anyio.sleep(0.05)
        log.append("released")

    with anyio.move_on_after(0.01):
        await Stream.bracket(acquire, release).flat_map(lambda _: Stream.eval(forever)).drain()
    assert log == ["released"]
