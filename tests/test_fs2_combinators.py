"""fs2's StreamSuite, StreamCombinatorsSuite and StreamZipSuite, ported: combinators against a list model.

Where fs2 checks a property (``forAll``), these draw a list and a chunking with
Hypothesis and compare the stream with the same operation on the plain list;
each example runs on asyncio and trio. Each test cites the fs2 suite and test
(``core/shared/src/test/scala/fs2/``). The timed cases (``groupWithin``,
``timeout``, ``metered``, ``spaced``, ``debounce``, ``awakeEvery``) check
order and grouping, never durations.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.maybe import Nothing, Some
from stream_helpers import checkpoint, forever

from streamsrc import Stream

T = TypeVar("T")

BACKENDS = ("asyncio", "trio")
backends = pytest.mark.parametrize("backend", BACKENDS)
prop = settings(max_examples=15, deadline=None)


Model = tuple[list[int], Stream[int]]


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[int], Stream[int]]:
    """A list, and a stream of it cut into chunks at random places (through append)."""
    xs = draw(st.lists(st.integers(-10, 10), max_size=20))
    cuts = sorted(draw(st.lists(st.integers(0, len(xs)), max_size=5)))
    bounds = [0, *cuts, len(xs)]
    pieces = [Stream.emits(xs[a:b]) for a, b in itertools.pairwise(bounds)]
    return xs, functools.reduce(operator.add, pieces, Stream.emits([]))


def run(backend: str, s: Stream[T]) -> list[T]:
    return anyio.run(s.to_list, backend=backend)


def scala_sliding(xs: list[int], n: int, step: int) -> list[list[int]]:
    """Scala's ``List.sliding(n, step)``, fs2's model: a short last group only if it holds new elements."""
    out: list[list[int]] = []
    i = 0
    while group := xs[i : i + n]:
        if out and i + n > len(xs) and len(xs) <= i - step + n:
            break
        out.append(group)
        if i + n >= len(xs):
            break
        i += step
    return out


def list_split(xs: list[int], p: Callable[[int], bool]) -> list[list[int]]:
    out: list[list[int]] = []
    current: list[int] = []
    for x in xs:
        if p(x):
            out.append(current)
            current = []
        else:
            current.append(x)
    return [*out, current] if current else out


@prop
@given(c=chunked(), n=st.integers(1, 5), step=st.integers(1, 5))
@backends
def test_sliding(backend: str, c: tuple[list[int], Stream[int]], n: int, step: int) -> None:
    # fs2 StreamCombinatorsSuite "sliding": s.sliding(n, step) == s.toList.sliding(n, step)
    xs, s = c
    assert run(backend, s.sliding(n, step)) == scala_sliding(xs, n, step)


@prop
@given(c=chunked())
@backends
def test_split(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamCombinatorsSuite "split"
    xs, s = c
    assert run(backend, s.split(lambda x: x % 3 == 0)) == list_split(xs, lambda x: x % 3 == 0)


@prop
@given(c=chunked())
@backends
def test_intersperse(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamCombinatorsSuite "intersperse"
    xs, s = c
    expected = [y for x in xs for y in (-99, x)][1:]
    assert run(backend, s.intersperse(-99)) == expected


@prop
@given(c=chunked())
@backends
def test_scan1_and_reduce(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamCombinatorsSuite "scan1", StreamSuite "reduce"
    xs, s = c
    assert run(backend, s.scan1(operator.add)) == list(itertools.accumulate(xs))
    assert run(backend, s.reduce(operator.add)) == ([sum(xs)] if xs else [])


@prop
@given(c=chunked())
@backends
def test_eval_scan_and_eval_filter(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamCombinatorsSuite "evalScan", "evalFilter"
    xs, s = c

    async def add(acc: int, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return acc + x

    async def even(x: int) -> bool:
        return x % 2 == 0

    assert run(backend, s.eval_scan(0, add)) == list(itertools.accumulate(xs, initial=0))
    assert run(backend, s.eval_filter(even)) == [x for x in xs if x % 2 == 0]


@prop
@given(c=chunked())
@backends
def test_map_accumulate(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamCombinatorsSuite "mapAccumulate"
    xs, s = c
    expected = list(zip(itertools.accumulate(xs), xs, strict=True))
    assert run(backend, s.map_accumulate(0, lambda acc, x: (acc + x, x))) == expected


@prop
@given(a=chunked(), b=chunked())
@backends
def test_zip_with_and_zip_all(
    backend: str, a: tuple[list[int], Stream[int]], b: tuple[list[int], Stream[int]]
) -> None:
    # fs2 StreamZipSuite "zipWith left/right side infinite", "zipAllWith left/right side infinite"
    # (both finite here)
    xs, s = a
    ys, t = b
    assert run(backend, s.zip_with(t, operator.sub)) == [x - y for x, y in zip(xs, ys, strict=False)]
    expected = list(itertools.zip_longest(xs, ys, fillvalue=None))
    padded = [(-100 if x is None else x, -200 if y is None else y) for x, y in expected]
    assert run(backend, s.zip_all(t, -100, -200)) == padded


@prop
@given(c=chunked())
@backends
def test_zip_with_next_and_previous(backend: str, c: tuple[list[int], Stream[int]]) -> None:
    # fs2 StreamZipSuite "zipWithNext", "zipWithPrevious"
    xs, s = c
    nexts = [(x, Some(y)) for x, y in itertools.pairwise(xs)] + ([(xs[-1], Nothing)] if xs else [])
    previous = ([(Nothing, xs[0])] if xs else []) + [(Some(x), y) for x, y in itertools.pairwise(xs)]
    assert run(backend, s.zip_with_next()) == nexts
    assert run(backend, s.zip_with_previous()) == previous


@prop
@given(c=chunked(), n=st.integers(0, 4))
@backends
def test_repeat_and_repeat_n(backend: str, c: tuple[list[int], Stream[int]], n: int) -> None:
    # fs2 StreamSuite "repeat", "repeatN"
    xs, s = c
    assert run(backend, s.repeat_n(n)) == xs * n
    if xs:
        assert run(backend, s.repeat().take(len(xs) * 3 + 1)) == (xs * 4)[: len(xs) * 3 + 1]


@prop
@given(c=chunked(), n=st.integers(1, 6))
@backends
def test_rechunk_chunk_limit_chunk_min(backend: str, c: tuple[list[int], Stream[int]], n: int) -> None:
    # fs2 StreamCombinatorsSuite "chunkLimit", "chunkMin", "rechunkRandomly": elements unchanged
    xs, s = c
    for stage in (s.rechunk(n), s.chunk_limit(n), s.chunk_min(n)):
        assert run(backend, stage) == xs
    assert all(len(chunk) <= n for chunk in run(backend, s.chunk_limit(n).chunks()))
    rechunked = run(backend, s.rechunk(n).chunks())
    assert all(len(chunk) == n for chunk in rechunked[:-1])
    at_least = run(backend, s.chunk_min(n).chunks())
    assert all(len(chunk) >= n for chunk in at_least[:-1])


@backends
def test_iterate_and_unfold(backend: str) -> None:
    # fs2 StreamSuite "iterate", "iterateEval", "unfold", "unfoldEval"
    async def inc(x: int) -> int:
        return x + 1

    async def step(n: int) -> tuple[int, int] | None:
        return (n, n + 1) if n < 5 else None

    assert run(backend, Stream.iterate(0, lambda x: x + 1).take(600)) == list(range(600))
    assert run(backend, Stream.iterate_eval(0, inc).take(5)) == [0, 1, 2, 3, 4]
    assert run(backend, Stream.unfold(0, lambda n: (n, n + 1) if n < 600 else None)) == list(range(600))
    assert run(backend, Stream.unfold_eval(0, step)) == [0, 1, 2, 3, 4]


@backends
def test_group_within_and_timeout(backend: str) -> None:
    # fs2 StreamCombinatorsSuite "groupWithin should never lose any elements", "timeout" /
    # "timeout on a stream that takes too long fails"
    async def check() -> None:
        xs = list(range(50))
        groups = await Stream.emits(xs, chunk_size=3).spaced(0.0005).group_within(7, 0.005).to_list()
        assert [x for g in groups for x in g] == xs
        assert all(0 < len(g) <= 7 for g in groups)
        result = await Stream.eval(forever).timeout(0.02).drain_result()
        assert isinstance(result.failure(), TimeoutError)

    anyio.run(check, backend=backend)


@backends
def test_timed_combinators_keep_every_element_in_order(backend: str) -> None:
    # fs2 StreamCombinatorsSuite "metered", "spaced", "awakeEvery" (order and count, never durations)
    async def check() -> None:
        assert await Stream.range(0, 5).metered(0.001).to_list() == [0, 1, 2, 3, 4]
        assert await Stream.range(0, 5).spaced(0.001).to_list() == [0, 1, 2, 3, 4]
        ticks = await Stream.awake_every(0.001).take(5).to_list()
        assert ticks == sorted(ticks)
        assert len(ticks) == 5
        slept = await (Stream.sleep(0.001) + Stream.emit(None)).to_list()
        assert slept == [None, None]

    anyio.run(check, backend=backend)


@backends
def test_debounce(backend: str) -> None:
    # fs2 StreamCombinatorsSuite "debounce": a burst gives its last element; the end gives the last
    async def check() -> None:
        pause = Stream.sleep(0.3).drain_pipe()
        burst = Stream.emits([1, 2, 3]) + pause + Stream.emits([4, 5])
        assert await burst.debounce(0.02).to_list() == [3, 5]

    anyio.run(check, backend=backend)


@backends
def test_interrupt_after_ends_an_endless_stream(backend: str) -> None:
    # fs2 StreamInterruptSuite "3 - constant stream" (through interruptAfter)
    async def check() -> None:
        n = await Stream.emit(1).repeat().eval_tap(checkpoint).interrupt_after(0.02).count()
        assert n > 0

    anyio.run(check, backend=backend)


def test_add_chains_any_type_with_drain_pipe() -> None:
    # fs2's drain gives Stream[F, Nothing]; here drain_pipe is a Stream[Any] that appends anywhere
    s: Stream[Any] = Stream.range(0, 3).drain_pipe() + Stream.emit("x")
    assert anyio.run(s.to_list) == ["x"]
