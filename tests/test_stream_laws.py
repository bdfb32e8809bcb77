"""Hypothesis laws: every transform agrees with the same operation on lists, for any chunking.

Each test draws a list and a way to cut it into chunks, builds the stream
from the chunks, and compares what the stream does with what Python does to
the plain list. Tests are synchronous and run each example on both anyio
backends with ``anyio.run``.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Success

from streamsrc import RetryPolicy, Stream

T = TypeVar("T")

BACKENDS = ("asyncio", "trio")

backends = pytest.mark.parametrize("backend", BACKENDS)
law = settings(max_examples=30, deadline=None)


class Boom(Exception):
    """The error the tests inject."""


@dataclass(frozen=True)
class Chunked:
    """A list together with a way of cutting it into chunks (empty chunks included)."""

    chunks: tuple[tuple[int, ...], ...]
    how: str

    @property
    def xs(self) -> list[int]:
        return [x for chunk in self.chunks for x in chunk]

    def stream(self) -> Stream[int]:
        """A stream of ``xs`` whose chunk boundaries are those of ``chunks``."""
        if self.how == "unchunks":
            lists: Stream[Sequence[int]] = Stream.emits([list(c) for c in self.chunks])
            return lists.unchunks()
        if self.how == "append":
            pieces = [Stream.emits(c) for c in self.chunks]
            return functools.reduce(operator.add, pieces, Stream.empty())
        # "flat_map": one element per chunk of the outer stream, expanded
        return Stream.emits(self.chunks, chunk_size=2).flat_map(Stream.emits)


SMALL_INTS = st.integers(-20, 20)


@st.composite
def chunked(draw: st.DrawFn, elements: st.SearchStrategy[int] = SMALL_INTS) -> Chunked:
    xs = draw(st.lists(elements, max_size=24))
    cuts = sorted(draw(st.lists(st.integers(0, len(xs)), max_size=8)))
    bounds = [0, *cuts, len(xs)]
    chunks = tuple(tuple(xs[a:b]) for a, b in itertools.pairwise(bounds))
    how = draw(st.sampled_from(["unchunks", "append", "flat_map"]))
    return Chunked(chunks, how)


def as_sequences(s: Stream[list[int]]) -> Stream[Sequence[int]]:
    """``s``, typed so that mypy accepts ``.unchunks()`` on it.

    ``unchunks`` is annotated ``self: Stream[Sequence[U]]`` and ``Stream`` is
    invariant, so mypy rejects ``s.chunks().unchunks()`` as written; the runtime
    behaviour is what these laws check (see test_stream_api for the typing).
    """
    return cast("Stream[Sequence[int]]", s)


def run(backend: str, fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn, backend=backend)


def to_list(backend: str, s: Stream[T]) -> list[T]:
    return run(backend, s.to_list)


# ------------------------------------------------------------------ sources


@law
@given(c=chunked())
@backends
def test_to_list_and_chunk_boundaries(backend: str, c: Chunked) -> None:
    assert to_list(backend, c.stream()) == c.xs
    assert to_list(backend, c.stream().chunks()) == [list(ch) for ch in c.chunks if ch]


@law
@given(xs=st.lists(st.integers()), k=st.integers(1, 5))
@backends
def test_emits_cuts_chunks_of_chunk_size(backend: str, xs: list[int], k: int) -> None:
    expected = [xs[i : i + k] for i in range(0, len(xs), k)]
    assert to_list(backend, Stream.emits(xs, chunk_size=k).chunks()) == expected


@law
@given(
    start=st.integers(-30, 30),
    stop=st.integers(-30, 30),
    step=st.integers(-7, 7).filter(bool),
    k=st.integers(1, 5),
)
@backends
def test_range_agrees_with_python_range(backend: str, start: int, stop: int, step: int, k: int) -> None:
    out = to_list(backend, Stream.range(start, stop, step, chunk_size=k).chunks())
    assert [x for chunk in out for x in chunk] == list(range(start, stop, step))
    assert all(0 < len(chunk) <= k for chunk in out)


# ------------------------------------------------------------------ element-wise transforms


@law
@given(c=chunked(), a=st.integers(-3, 3), b=st.integers(-5, 5))
@backends
def test_map(backend: str, c: Chunked, a: int, b: int) -> None:
    assert to_list(backend, c.stream().map(lambda x: a * x + b)) == [a * x + b for x in c.xs]


@law
@given(c=chunked(), m=st.integers(1, 4))
@backends
def test_filter(backend: str, c: Chunked, m: int) -> None:
    assert to_list(backend, c.stream().filter(lambda x: x % m == 0)) == [x for x in c.xs if x % m == 0]


@law
@given(c=chunked(), m=st.integers(1, 4))
@backends
def test_collect(backend: str, c: Chunked, m: int) -> None:
    def f(x: int) -> Maybe[str]:
        return Some(str(x)) if x % m == 0 else Nothing

    assert to_list(backend, c.stream().collect(f)) == [str(x) for x in c.xs if x % m == 0]


@law
@given(c=chunked(), init=st.integers(-5, 5))
@backends
def test_scan_emits_the_initial_value_then_each_running_result(backend: str, c: Chunked, init: int) -> None:
    def f(acc: int, x: int) -> int:
        return 2 * acc - x  # neither commutative nor associative

    expected = list(itertools.accumulate(c.xs, f, initial=init))
    assert to_list(backend, c.stream().scan(init, f)) == expected


@law
@given(c=chunked(), n=st.integers(0, 30))
@backends
def test_take(backend: str, c: Chunked, n: int) -> None:
    assert to_list(backend, c.stream().take(n)) == c.xs[:n]


@law
@given(c=chunked(), limit=st.integers(-20, 20), take_failure=st.booleans())
@backends
def test_take_while(backend: str, c: Chunked, limit: int, take_failure: bool) -> None:
    kept = list(itertools.takewhile(lambda x: x < limit, c.xs))
    if take_failure and len(kept) < len(c.xs):
        kept.append(c.xs[len(kept)])
    out = to_list(backend, c.stream().take_while(lambda x: x < limit, take_failure=take_failure))
    assert out == kept


@law
@given(c=chunked(), n=st.integers(0, 30))
@backends
def test_drop(backend: str, c: Chunked, n: int) -> None:
    assert to_list(backend, c.stream().drop(n)) == c.xs[n:]


@law
@given(c=chunked(), limit=st.integers(-20, 20))
@backends
def test_drop_while(backend: str, c: Chunked, limit: int) -> None:
    expected = list(itertools.dropwhile(lambda x: x < limit, c.xs))
    assert to_list(backend, c.stream().drop_while(lambda x: x < limit)) == expected


@law
@given(c=chunked(), n=st.integers(1, 6), allow_fewer=st.booleans())
@backends
def test_chunk_n(backend: str, c: Chunked, n: int, allow_fewer: bool) -> None:
    xs = c.xs
    expected = [xs[i : i + n] for i in range(0, len(xs), n)]
    if not allow_fewer and expected and len(expected[-1]) < n:
        expected.pop()
    assert to_list(backend, c.stream().chunk_n(n, allow_fewer=allow_fewer)) == expected


@law
@given(c=chunked())
@backends
def test_chunks_then_unchunks_is_identity(backend: str, c: Chunked) -> None:
    chunks = to_list(backend, c.stream().chunks())
    assert all(chunks), "a stream must never emit an empty chunk"
    assert [x for chunk in chunks for x in chunk] == c.xs
    assert to_list(backend, as_sequences(c.stream().chunks()).unchunks()) == c.xs
    assert to_list(backend, as_sequences(c.stream().chunks()).unchunks().chunks()) == chunks


@law
@given(c=chunked(), m=st.integers(1, 4))
@backends
def test_group_adjacent_by(backend: str, c: Chunked, m: int) -> None:
    def key(x: int) -> int:
        return x % m

    expected = [(k, list(g)) for k, g in itertools.groupby(c.xs, key)]
    assert to_list(backend, c.stream().group_adjacent_by(key)) == expected


@law
@given(c=chunked(), d=chunked())
@backends
def test_zip(backend: str, c: Chunked, d: Chunked) -> None:
    assert to_list(backend, c.stream().zip(d.stream())) == list(zip(c.xs, d.xs, strict=False))


@law
@given(c=chunked())
@backends
def test_zip_with_index(backend: str, c: Chunked) -> None:
    assert to_list(backend, c.stream().zip_with_index()) == [(x, i) for i, x in enumerate(c.xs)]


@law
@given(c=chunked(), d=chunked())
@backends
def test_interleave_stops_when_either_side_ends(backend: str, c: Chunked, d: Chunked) -> None:
    expected = [v for pair in zip(c.xs, d.xs, strict=False) for v in pair]
    assert to_list(backend, c.stream().interleave(d.stream())) == expected


@law
@given(c=chunked(st.integers(0, 3)), m=st.one_of(st.none(), st.integers(1, 3)))
@backends
def test_changes(backend: str, c: Chunked, m: int | None) -> None:
    xs = c.xs

    def key(x: int) -> int:
        return x if m is None else x // m

    expected = [x for i, x in enumerate(xs) if i == 0 or key(xs[i - 1]) != key(x)]
    s = c.stream().changes() if m is None else c.stream().changes(key)
    assert to_list(backend, s) == expected


@law
@given(c=chunked(), d=chunked())
@backends
def test_append(backend: str, c: Chunked, d: Chunked) -> None:
    assert to_list(backend, c.stream().append(d.stream())) == c.xs + d.xs
    assert to_list(backend, c.stream() + d.stream()) == c.xs + d.xs
    assert to_list(backend, c.stream().append(d.stream)) == c.xs + d.xs


@law
@given(c=chunked(st.integers(0, 5)))
@backends
def test_flat_map(backend: str, c: Chunked) -> None:
    def f(x: int) -> Stream[int]:
        return Stream.emits(range(x), chunk_size=2)

    assert to_list(backend, c.stream().flat_map(f)) == [y for x in c.xs for y in range(x)]


@law
@given(c=chunked(), m=st.integers(1, 3))
@backends
def test_map_chunks_with_an_element_wise_function(backend: str, c: Chunked, m: int) -> None:
    def f(chunk: list[int]) -> list[int]:
        return [x * 10 for x in chunk if x % m == 0]

    assert to_list(backend, c.stream().map_chunks(f)) == [x * 10 for x in c.xs if x % m == 0]


@law
@given(c=chunked())
@backends
def test_map_chunks_sees_the_chunks(backend: str, c: Chunked) -> None:
    out = to_list(backend, c.stream().map_chunks(lambda chunk: [len(chunk), sum(chunk)]))
    assert out == [v for ch in c.chunks if ch for v in (len(ch), sum(ch))]


# ------------------------------------------------------------------ effects


@law
@given(c=chunked())
@backends
def test_eval_map(backend: str, c: Chunked) -> None:
    calls: list[int] = []

    async def f(x: int) -> str:
        calls.append(x)
        await anyio.lowlevel.checkpoint()
        return f"<{x}>"

    assert to_list(backend, c.stream().eval_map(f)) == [f"<{x}>" for x in c.xs]
    assert calls == c.xs


@law
@given(c=chunked())
@backends
def test_eval_tap(backend: str, c: Chunked) -> None:
    seen: list[int] = []

    async def f(x: int) -> str:
        seen.append(x)
        return "ignored"

    assert to_list(backend, c.stream().eval_tap(f)) == c.xs
    assert seen == c.xs


@law
@given(c=chunked())
@backends
def test_foreach(backend: str, c: Chunked) -> None:
    seen: list[int] = []

    async def f(x: int) -> None:
        seen.append(x)

    assert to_list(backend, c.stream().foreach(f)) == []
    assert seen == c.xs


@law
@given(c=chunked(), bad=st.integers(-20, 20))
@example(c=Chunked(((1, 0),), "unchunks"), bad=0)
@backends
def test_eval_map_failing_midway_agrees_with_lists(backend: str, c: Chunked, bad: int) -> None:
    # The elements whose effects succeeded before the failing one are emitted,
    # then the failure: whatever the chunking.
    async def f(x: int) -> int:
        if x == bad:
            raise Boom(str(x))
        return -x

    good = list(itertools.takewhile(lambda x: x != bad, c.xs))
    out = to_list(backend, c.stream().eval_map(f).attempt())
    assert out[: len(good)] == [Success(-x) for x in good]
    if len(good) == len(c.xs):
        assert out == [Success(-x) for x in good]
    else:
        assert len(out) == len(good) + 1
        assert str(out[-1].failure()) == str(bad)


# ------------------------------------------------------------------ terminal operations


@law
@given(c=chunked(), init=st.integers(-5, 5))
@backends
def test_fold(backend: str, c: Chunked, init: int) -> None:
    def f(acc: int, x: int) -> int:
        return 3 * acc - x

    expected = functools.reduce(f, c.xs, init)
    assert run(backend, lambda: c.stream().fold(init, f)) == expected
    assert run(backend, lambda: c.stream().fold_result(init, f)) == Success(expected)


@law
@given(c=chunked())
@backends
def test_count_last_drain(backend: str, c: Chunked) -> None:
    xs = c.xs
    s = c.stream()
    assert run(backend, s.count) == len(xs)
    assert run(backend, s.last) == (Some(xs[-1]) if xs else Nothing)
    assert run(backend, s.drain) is None
    assert run(backend, s.count_result) == Success(len(xs))
    assert run(backend, s.last_result) == Success(Some(xs[-1]) if xs else Nothing)
    assert run(backend, s.to_list_result) == Success(xs)
    assert run(backend, s.drain_result) == Success(None)


# ------------------------------------------------------------------ algebraic laws


@law
@given(a=chunked(), b=chunked(), c=chunked())
@backends
def test_append_is_associative(backend: str, a: Chunked, b: Chunked, c: Chunked) -> None:
    left = (a.stream() + b.stream()) + c.stream()
    right = a.stream() + (b.stream() + c.stream())
    assert to_list(backend, left) == to_list(backend, right) == a.xs + b.xs + c.xs


@law
@given(a=chunked())
@backends
def test_empty_is_the_identity_of_append(backend: str, a: Chunked) -> None:
    empty: Stream[int] = Stream.empty()
    assert to_list(backend, empty + a.stream()) == a.xs
    assert to_list(backend, a.stream() + empty) == a.xs
    assert to_list(backend, empty) == []


@law
@given(c=chunked(), a=st.integers(-3, 3), b=st.integers(-3, 3))
@backends
def test_map_fusion(backend: str, c: Chunked, a: int, b: int) -> None:
    def f(x: int) -> int:
        return a * x + 1

    def g(x: int) -> int:
        return x - b

    assert to_list(backend, c.stream().map(f).map(g)) == to_list(backend, c.stream().map(lambda x: g(f(x))))
    assert to_list(backend, c.stream().map(lambda x: x)) == c.xs


def expand(x: int) -> Stream[int]:
    """A stream whose length and chunking depend on ``x``."""
    return Stream.emits([x, x + 1, x * 2][: abs(x) % 4], chunk_size=1 + abs(x) % 2)


def halve(x: int) -> Stream[int]:
    return Stream.emit(x // 2) if x % 3 else Stream.empty()


@law
@given(x=st.integers(-20, 20))
@backends
def test_flat_map_left_identity(backend: str, x: int) -> None:
    assert to_list(backend, Stream.emit(x).flat_map(expand)) == to_list(backend, expand(x))


@law
@given(c=chunked())
@backends
def test_flat_map_right_identity(backend: str, c: Chunked) -> None:
    assert to_list(backend, c.stream().flat_map(Stream.emit)) == c.xs


@law
@given(c=chunked())
@backends
def test_flat_map_associativity(backend: str, c: Chunked) -> None:
    left = c.stream().flat_map(expand).flat_map(halve)
    right = c.stream().flat_map(lambda x: expand(x).flat_map(halve))
    expected = [z for x in c.xs for y in to_list(backend, expand(x)) for z in [y // 2] if y % 3]
    assert to_list(backend, left) == to_list(backend, right) == expected


# ------------------------------------------------------------------ errors


async def same(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x


PIPES: dict[str, Callable[[Stream[int]], Stream[Any]]] = {
    "map": lambda s: s.map(lambda x: x + 1),
    "filter": lambda s: s.filter(lambda x: x % 2 == 0),
    "collect": lambda s: s.collect(lambda x: Some(x)),
    "scan": lambda s: s.scan(0, operator.add),
    "take": lambda s: s.take(10**6),
    "take_while": lambda s: s.take_while(lambda x: True),
    "drop": lambda s: s.drop(2),
    "drop_while": lambda s: s.drop_while(lambda x: x < 0),
    "chunk_n": lambda s: s.chunk_n(3),
    "chunks": lambda s: s.chunks(),
    "group_adjacent_by": lambda s: s.group_adjacent_by(lambda x: x % 2),
    "zip": lambda s: s.zip(Stream.range(0, 10**6)),
    "zip_with_index": lambda s: s.zip_with_index(),
    "interleave": lambda s: s.interleave(Stream.range(0, 10**6)),
    "changes": lambda s: s.changes(),
    "append": lambda s: s + Stream.emit(0),
    "flat_map": lambda s: s.flat_map(lambda x: Stream.emits([x, x])),
    "map_chunks": lambda s: s.map_chunks(lambda c: c[:1]),
    "eval_map": lambda s: s.eval_map(same),
    "eval_tap": lambda s: s.eval_tap(same),
    "foreach": lambda s: s.foreach(same),
    "on_finalize": lambda s: s.on_finalize(lambda: anyio.lowlevel.checkpoint()),
    "retry": lambda s: s.retry(RetryPolicy(max_attempts=1)),
    "buffer": lambda s: s.buffer(2),
    "merge": lambda s: s.merge(Stream.range(0, 3)),
    "par_eval_map": lambda s: s.par_eval_map(2, same),
    "group_within": lambda s: s.group_within(2, 10.0),
    "interrupt_when": lambda s: s.interrupt_when(anyio.sleep_forever),
    "timeout": lambda s: s.timeout(60),
}


@settings(max_examples=4, deadline=None)
@given(c=chunked())
@pytest.mark.parametrize("pipe", sorted(PIPES))
@backends
def test_an_upstream_error_reaches_the_terminal_operation(backend: str, pipe: str, c: Chunked) -> None:
    error = Boom("upstream")
    s = PIPES[pipe](c.stream() + Stream.raise_error(error))
    with pytest.raises(Boom) as info:
        run(backend, s.drain)
    assert info.value is error
    for result in (
        run(backend, s.to_list_result),
        run(backend, s.drain_result),
        run(backend, s.count_result),
        run(backend, s.last_result),
        run(backend, lambda: s.fold_result(0, lambda acc, x: acc)),
    ):
        assert isinstance(result, Failure)
        assert result.failure() is error


@law
@given(c=chunked(), at=st.integers(0, 30))
@backends
def test_an_error_in_a_function_reaches_the_terminal_operation(backend: str, c: Chunked, at: int) -> None:
    def f(x: int) -> int:
        if x == at:
            raise Boom(str(x))
        return x

    s = c.stream().map(f).filter(lambda x: x > 0)
    result = run(backend, s.to_list_result)
    if at in c.xs:
        assert isinstance(result.failure(), Boom)
        with pytest.raises(Boom):
            run(backend, s.to_list)
    else:
        assert result == Success([x for x in c.xs if x > 0])


@law
@given(c=chunked())
@backends
def test_terminal_operations_raise_what_the_stream_raised(backend: str, c: Chunked) -> None:
    error = Boom("terminal")
    s = c.stream() + Stream.raise_error(error)
    for op in (s.to_list, s.drain, s.count, s.last, lambda: s.fold(0, operator.add)):
        with pytest.raises(Boom) as info:
            run(backend, op)
        assert info.value is error


# ------------------------------------------------------------------ re-running and re-chunking


@law
@given(c=chunked())
@backends
def test_a_stream_runs_again_from_the_start(backend: str, c: Chunked) -> None:
    effects: list[int] = []

    async def record(x: int) -> None:
        effects.append(x)

    s = c.stream().eval_tap(record).scan(0, operator.add)
    first = to_list(backend, s)
    assert effects == c.xs
    second = to_list(backend, s)
    assert second == first == list(itertools.accumulate(c.xs, initial=0))
    assert effects == c.xs + c.xs


@law
@given(c=chunked())
@backends
def test_eval_source_is_evaluated_on_every_run(backend: str, c: Chunked) -> None:
    runs = itertools.count()

    async def next_run() -> int:
        return next(runs)

    s = Stream.eval(next_run).flat_map(lambda r: c.stream().map(lambda x: (r, x)))
    assert to_list(backend, s) == [(0, x) for x in c.xs]
    assert to_list(backend, s) == [(1, x) for x in c.xs]


def pipeline(s: Stream[int]) -> Stream[Any]:
    return (
        s.filter(lambda x: x != 3)
        .scan(0, lambda acc, x: acc * 2 - x)
        .drop(1)
        .zip_with_index()
        .changes(key=lambda pair: pair[0] % 3)
        .map(lambda pair: pair[0] + pair[1])
        .chunk_n(2)
        .group_adjacent_by(len)
        .take(20)
    )


@law
@given(c=chunked(), d=chunked(), k=st.integers(1, 4))
@backends
def test_rechunking_does_not_change_the_result(backend: str, c: Chunked, d: Chunked, k: int) -> None:
    rechunked = Chunked(tuple((x,) for x in c.xs), "unchunks")
    same_list = [
        c.stream(),
        rechunked.stream(),
        Stream.emits(c.xs, chunk_size=k),
        as_sequences(c.stream().chunks()).unchunks(),
        as_sequences(c.stream().chunk_n(k)).unchunks(),
    ]
    results = [to_list(backend, pipeline(s)) for s in same_list]
    assert all(r == results[0] for r in results)
    both = to_list(backend, pipeline(c.stream() + d.stream()))
    assert both == to_list(backend, pipeline(Stream.emits(c.xs + d.xs, chunk_size=k)))
