"""fs2's StreamPerformanceSuite, ported: deep nesting runs at Python's default recursion limit.

Each case cites the fs2 test (``core/shared/src/test/scala/fs2/StreamPerformanceSuite.scala``).
fs2 runs them at up to 102,400 levels; here ``DEPTH`` levels (twice the
default recursion limit, which the old one-generator-per-level core could not
pass) keep the module fast, and ``bench/stream_stack.py`` runs 100,000. Each test
runs at the default recursion limit (1,000): one that needed a deeper Python
stack fails with ``RecursionError``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator

import pytest
from returns.result import Failure, Success

from streamsrc import Stream
from streamsrc.stream import ExitCase

pytestmark = pytest.mark.anyio

DEPTH = 2_000


class Err(Exception):
    """The error the tests raise (fs2's ``Err``)."""


@pytest.fixture(autouse=True)
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit during the test (another module may have raised it)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def emits(n: int) -> list[Stream[int]]:
    return [Stream.emit(i) for i in range(n)]


async def test_left_associated_append() -> None:
    # fs2 StreamPerformanceSuite "left-associated ++"
    s = functools.reduce(lambda acc, a: acc + a, emits(DEPTH)[1:], Stream.emit(0))
    assert await s.to_list() == list(range(DEPTH))


async def test_right_associated_append() -> None:
    # fs2 StreamPerformanceSuite "right-associated ++"
    s = functools.reduce(lambda acc, a: a + acc, reversed(emits(DEPTH)[:-1]), Stream.emit(DEPTH - 1))
    assert await s.to_list() == list(range(DEPTH))


async def test_left_associated_flat_map() -> None:
    # fs2 StreamPerformanceSuite "left-associated flatMap"
    s = Stream.emit(0)
    for _ in range(DEPTH):
        s = s.flat_map(lambda x: Stream.emit(x + 1))
    assert await s.to_list() == [DEPTH]


async def test_right_associated_flat_map() -> None:
    # fs2 StreamPerformanceSuite "right-associated flatMap"
    def nest(acc: Stream[int], a: Stream[int]) -> Stream[int]:
        return a.flat_map(lambda _: acc)

    s = functools.reduce(nest, emits(DEPTH), Stream.emit(-1))
    assert await s.to_list() == [-1]


async def test_left_associated_eval_append_flat_map() -> None:
    # fs2 StreamPerformanceSuite "left-associated eval() ++ flatMap"
    async def unit() -> None:
        return None

    s = Stream.emit(0)
    for i in range(1, DEPTH):
        s = s.flat_map(lambda _, i=i: Stream.eval(unit).flat_map(lambda _: Stream.emit(i)))  # type: ignore[misc]
    assert await s.to_list() == [DEPTH - 1]


async def test_left_associated_map() -> None:
    # fs2 StreamPerformanceSuite "chunky map with unconsLimit" (map chains): here a plain map chain
    s = Stream.range(0, 10)
    for _ in range(DEPTH):
        s = s.map(lambda x: x + 1)
    assert await s.to_list() == [x + DEPTH for x in range(10)]


async def test_left_associated_handle_error_with() -> None:
    # fs2 StreamPerformanceSuite "left-associated handleErrorWith"
    s: Stream[int] = Stream.raise_error(Err())
    for _ in range(DEPTH):
        s = s.handle_error_with(lambda e: Stream.raise_error(e))
    result = await s.to_list_result()
    assert isinstance(result, Failure)
    assert isinstance(result.failure(), Err)


async def test_right_associated_handle_error_with() -> None:
    # fs2 StreamPerformanceSuite "right-associated handleErrorWith"
    def nest(depth: int) -> Stream[int]:
        if depth == 0:
            return Stream.emit(1)
        return Stream.raise_error(Err()).handle_error_with(lambda _: nest(depth - 1))

    assert await nest(DEPTH).to_list() == [1]


async def test_left_associated_handle_error_with_that_recovers_once() -> None:
    # fs2 StreamPerformanceSuite "left-associated handleErrorWith": the first handler recovers
    s: Stream[int] = Stream.raise_error(Err())
    for _ in range(DEPTH):
        s = s.handle_error_with(lambda _: Stream.emit(1))
    assert await s.to_list() == [1]


async def test_a_self_recursive_stream_runs_and_releases_every_bracket() -> None:
    # fs2 StreamPerformanceSuite "bracket" cases, and DESIGN.md's recursive stream: a stream that
    # appends itself through a thunk, each round with a bracket, releases every bracket.
    acquired: list[int] = []
    released: list[int] = []

    def resource(i: int) -> Stream[int]:
        async def acquire() -> int:
            acquired.append(i)
            return i

        async def release(r: int) -> None:
            released.append(r)

        return Stream.bracket(acquire, release)

    def loop(i: int) -> Stream[int]:
        if i == DEPTH:
            return Stream.empty()
        return resource(i).flat_map(Stream.emit) + (lambda: loop(i + 1))

    assert await loop(0).count() == DEPTH
    assert released == acquired == list(range(DEPTH))


async def test_a_self_recursive_stream_stopped_by_take_releases_every_bracket() -> None:
    # fs2 BracketSuite "early termination", at depth: take stops a self-recursive stream
    released: list[int] = []

    async def acquire() -> int:
        return 0

    def loop(i: int) -> Stream[int]:
        async def release(_: int) -> None:
            released.append(i)

        return Stream.bracket(acquire, release).map(lambda _: i) + (lambda: loop(i + 1))

    assert await loop(0).take(DEPTH).to_list() == list(range(DEPTH))
    assert released == list(range(DEPTH))


async def test_nested_brackets_release_innermost_first_at_depth() -> None:
    # fs2 BracketSuite "finalizers are run in LIFO order - scope closure", at depth
    log: list[int] = []

    def nest(i: int) -> Stream[int]:
        async def acquire() -> int:
            return i

        async def release(r: int) -> None:
            log.append(r)

        inner: Callable[[int], Stream[int]] = (lambda _: nest(i + 1)) if i < DEPTH else Stream.emit
        return Stream.bracket(acquire, release).flat_map(inner)

    assert await nest(0).to_list() == [DEPTH]
    assert log == list(range(DEPTH, -1, -1))


async def test_a_failure_deep_inside_nested_brackets_reaches_every_release_as_errored() -> None:
    # fs2 BracketSuite "bracketCase / failure", at depth
    cases: list[ExitCase] = []

    def nest(i: int) -> Stream[int]:
        async def acquire() -> int:
            return i

        async def release(_: int, case: ExitCase) -> None:
            cases.append(case)

        inner: Callable[[int], Stream[int]] = (
            (lambda _: nest(i + 1)) if i < DEPTH else (lambda _: Stream.raise_error(Err("deep")))
        )
        return Stream.bracket_case(acquire, release).flat_map(inner)

    result = await nest(0).drain_result()
    assert isinstance(result, Failure)
    assert len(cases) == DEPTH + 1
    assert all(c.kind == "errored" and isinstance(c.error, Err) for c in cases)


async def test_repeat_runs_many_rounds() -> None:
    # fs2 StreamSuite "repeat" (and StreamPerformanceSuite's recursion): repeat is an append loop
    assert await Stream.emits([1, 2]).repeat().take(2 * DEPTH).count() == 2 * DEPTH
    assert await Stream.emit(1).repeat_n(DEPTH).count() == DEPTH


async def test_attempt_and_take_at_depth() -> None:
    # fs2 StreamPerformanceSuite "transduce (id)"-like: a stage over a deep append tree
    s = functools.reduce(lambda acc, a: acc + a, emits(DEPTH)[1:], Stream.emit(0))
    assert await s.attempt().take(3).to_list() == [Success(0), Success(1), Success(2)]
