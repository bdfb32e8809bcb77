"""``Stream``: the public facade over the pulls in ``_sources``, ``_pipes`` and ``_concurrent``."""

from __future__ import annotations

import dataclasses
import html
import json
import numbers
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Never, TypeVar, overload

import anyio
from returns.future import FutureResult
from returns.io import IOResult
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.effect import RetryPolicy
from streamsrc.stream import _concurrent, _pipes, _sources
from streamsrc.stream._core import CHUNK_SIZE, DRIVER, Driver, ExitCase, Pull, Run, reraise_unwrapped, running
from streamsrc.stream._nodes import (
    Append,
    Bind,
    Chunked,
    Chunks,
    Fail,
    Handle,
    Leaf,
    Node,
    compile_node,
    is_scoped,
)

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")
K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
R = TypeVar("R")

Pipe = Callable[["Stream[T]"], "Stream[U]"]
"""A stage from one stream to another: ``Callable[[Stream[A]], Stream[B]]``."""


class Stream(Generic[T]):
    """A lazy, re-runnable sequence of ``T`` values, produced and consumed asynchronously.

    A ``Stream`` is a *description*: building one does nothing, running it
    (``to_list``, ``fold``, ``drain``, ...) does the work, and running it
    twice does the work twice. Inside, elements move in chunks (lists), so a
    pipeline costs about as much per element as a plain loop.

    Laws (checked by the test suite with Hypothesis, for any chunking):

    * every transform agrees with the same operation on Python lists;
    * ``(a + b) + c == a + (b + c)`` and ``Stream.empty() + a == a == a + Stream.empty()``;
    * ``s.map(f).map(g) == s.map(lambda x: g(f(x)))``;
    * ``Stream.emit(x).flat_map(f) == f(x)``, ``s.flat_map(Stream.emit) == s``;
    * an error anywhere reaches the terminal operation (as itself, never inside an
      ``ExceptionGroup``); finalizers run exactly once;
    * ``+``, ``flat_map`` and ``handle_error_with`` nest to any depth (a stream may
      append itself) in constant Python stack.

    >>> s = Stream.range(0, 10).filter(lambda x: x % 2 == 0).map(lambda x: x * 10)
    >>> anyio.run(s.to_list)
    [0, 20, 40, 60, 80]
    """

    __slots__ = ("_node",)

    def __init__(self, pull: Pull[T] | Node) -> None:
        self._node: Node = pull if isinstance(pull, Node) else Leaf(pull)

    def _stage(self, other: Stream[Any] | None, pull: Pull[U]) -> Stream[U]:
        """A stage over this stream (and ``other``): interruptible if what it runs is (see ``_nodes``)."""
        scoped = is_scoped(self._node) or (other is not None and is_scoped(other._node))
        return Stream(Leaf(pull, scoped))

    def __repr__(self) -> str:
        node = self._node
        name = node.pull.__qualname__ if isinstance(node, Leaf) else type(node).__name__.lower()
        return f"<Stream {name}>"

    @property
    def _pull(self) -> Pull[T]:
        return compile_node(self._node)

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def awake_every(seconds: float) -> Stream[float]:
        """Emit the seconds elapsed since the stream started, every ``seconds``, at a fixed rate.

        Ticks are due at ``start + k * seconds``; a tick that comes late (a
        slow consumer) is not followed by a burst of the missed ones.

        >>> ticks = anyio.run(Stream.awake_every(0.01).take(3).to_list)
        >>> [round(t, 1) for t in ticks], ticks == sorted(ticks)
        ([0.0, 0.0, 0.0], True)
        """
        if seconds <= 0:
            raise ValueError("awake_every needs seconds > 0")
        return Stream(_sources.awake_every(seconds))

    @staticmethod
    def bracket(acquire: Callable[[], Awaitable[R]], release: Callable[[R], Awaitable[object]]) -> Stream[R]:
        """Emit one resource, released exactly once when the stream that uses it stops.

        ``release`` runs (shielded from cancellation) whether the stream
        completes, fails, is cut short by ``take`` or is cancelled; resources
        acquired later are released first.

        >>> log = []
        >>> async def acquire():
        ...     log.append("open")
        ...     return "conn"
        >>> async def release(conn):
        ...     log.append("close")
        >>> s = Stream.bracket(acquire, release).flat_map(lambda c: Stream.emits([c, c]))
        >>> anyio.run(s.take(1).to_list), log
        (['conn'], ['open', 'close'])
        """
        return Stream(_sources.bracket(acquire, lambda resource, _: release(resource)))

    @staticmethod
    def bracket_case(
        acquire: Callable[[], Awaitable[R]], release: Callable[[R, ExitCase], Awaitable[object]]
    ) -> Stream[R]:
        """Like ``bracket``, but ``release`` also gets the :class:`ExitCase`: how the stream ended.

        ``ExitCase.SUCCEEDED`` when it ran to its end or downstream stopped
        pulling (``take``), ``ExitCase.errored(e)`` when it failed with
        ``e``, ``ExitCase.CANCELED`` when it was cancelled or interrupted.
        ``acquire`` cannot be cancelled: once it completes, ``release`` runs.

        >>> cases = []
        >>> async def acquire():
        ...     return "conn"
        >>> async def release(conn, case):
        ...     cases.append(case)
        >>> s = Stream.bracket_case(acquire, release)
        >>> anyio.run(s.to_list), anyio.run((s + Stream.raise_error(KeyError("k"))).drain_result)
        (['conn'], <Failure: 'k'>)
        >>> anyio.run(s.flat_map(lambda c: Stream.raise_error(KeyError("k"))).drain_result)
        <Failure: 'k'>
        >>> cases
        [ExitCase.SUCCEEDED, ExitCase.SUCCEEDED, ExitCase.errored(KeyError('k'))]
        """
        return Stream(_sources.bracket(acquire, release))

    @staticmethod
    def emit(value: T) -> Stream[T]:
        """A stream of one element.

        >>> anyio.run(Stream.emit("a").to_list)
        ['a']
        """
        return Stream(Chunks([[value]]))

    @staticmethod
    def emits(values: Iterable[T], chunk_size: int = CHUNK_SIZE) -> Stream[T]:
        """A stream of the given values, in chunks of ``chunk_size``.

        The values are copied when the stream is built, so it can run again.

        >>> anyio.run(Stream.emits("abc").to_list)
        ['a', 'b', 'c']
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        items = list(values)
        return Stream(Chunks([items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]))

    @staticmethod
    def empty() -> Stream[T]:
        """A stream with no elements.

        >>> anyio.run(Stream.empty().to_list)
        []
        """
        return Stream(Chunks([]))

    @overload
    @staticmethod
    def eval(effect: Callable[[], FutureResult[U, Any]] | FutureResult[U, Any]) -> Stream[U]: ...
    @overload
    @staticmethod
    def eval(
        effect: Callable[[], Awaitable[Result[U, Any]]] | Awaitable[Result[U, Any]],
    ) -> Stream[U]: ...
    @overload
    @staticmethod
    def eval(
        effect: Callable[[], Awaitable[IOResult[U, Any]]] | Awaitable[IOResult[U, Any]],
    ) -> Stream[U]: ...
    @overload
    @staticmethod
    def eval(effect: Callable[[], Awaitable[U]] | Awaitable[U]) -> Stream[U]: ...
    @staticmethod
    def eval(effect: Any) -> Stream[Any]:
        """A stream of the one value an effect produces, evaluated each time the stream runs.

        ``effect`` is an async function of no arguments (re-runnable) or an
        awaitable (which can be awaited only once). A ``Success`` is unwrapped;
        a ``Failure`` fails the stream with ``EffectFailed``.

        >>> async def answer():
        ...     return 42
        >>> anyio.run(Stream.eval(answer).to_list)
        [42]
        """
        return Stream(_sources.eval_(effect))

    @staticmethod
    def fixed_delay(seconds: float) -> Stream[None]:
        """Emit ``None`` forever, sleeping ``seconds`` before each element.

        >>> anyio.run(Stream.fixed_delay(0.001).take(3).to_list)
        [None, None, None]
        """
        return Stream(_sources.fixed_delay(seconds))

    @staticmethod
    def from_async_iterable(source: AsyncIterable[T]) -> Stream[T]:
        """Emit the items of an async iterable (closed when the stream stops).

        The stream runs again only if ``source`` can be iterated again.

        >>> async def gen():
        ...     yield 1
        ...     yield 2
        >>> anyio.run(Stream.from_async_iterable(gen()).to_list)
        [1, 2]
        """
        return Stream(_sources.from_async_iterable(source))

    @staticmethod
    def iterate(start: T, f: Callable[[T], T]) -> Stream[T]:
        """``start``, ``f(start)``, ``f(f(start))``, ... forever (computed a chunk at a time).

        >>> anyio.run(Stream.iterate(1, lambda x: x * 2).take(5).to_list)
        [1, 2, 4, 8, 16]
        """
        return Stream(_sources.iterate(start, f, CHUNK_SIZE))

    @staticmethod
    def iterate_eval(start: T, f: Callable[[T], Awaitable[T]]) -> Stream[T]:
        """``start``, then the result of the effect ``f`` on the element before, forever.

        >>> async def double(x):
        ...     return x * 2
        >>> anyio.run(Stream.iterate_eval(1, double).take(4).to_list)
        [1, 2, 4, 8]
        """
        return Stream(_sources.iterate_eval(start, f))

    @staticmethod
    def raise_error(exc: BaseException) -> Stream[Any]:
        """A stream that fails with ``exc`` when run.

        >>> anyio.run(Stream.raise_error(ValueError("boom")).to_list_result)
        <Failure: boom>
        """
        return Stream(Fail(exc))

    @staticmethod
    def range(start: int, stop: int, step: int = 1, chunk_size: int = CHUNK_SIZE) -> Stream[int]:
        """The integers of ``range(start, stop, step)``, in chunks of ``chunk_size``.

        >>> anyio.run(Stream.range(0, 10, 3).to_list)
        [0, 3, 6, 9]
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        return Stream(_sources.range_(start, stop, step, chunk_size))

    @staticmethod
    def repeat_eval(effect: Callable[[], Awaitable[U]]) -> Stream[U]:
        """Evaluate ``effect`` again and again, emitting each result (forever).

        >>> import itertools
        >>> counter = itertools.count()
        >>> async def tick():
        ...     return next(counter)
        >>> anyio.run(Stream.repeat_eval(tick).take(3).to_list)
        [0, 1, 2]
        """
        return Stream(_sources.repeat_eval(effect))

    @staticmethod
    def sleep(seconds: float) -> Stream[None]:
        """Emit one ``None`` after sleeping ``seconds``.

        >>> anyio.run((Stream.sleep(0.01) + Stream.emit("woke")).to_list)
        [None, 'woke']
        """
        return Stream.eval(lambda: anyio.sleep(seconds))

    @staticmethod
    def unfold(state: S, step: Callable[[S], tuple[U, S] | None]) -> Stream[U]:
        """Emit values from a state: ``step(state)`` gives ``(value, next_state)``, or ``None`` to end.

        >>> anyio.run(Stream.unfold(1, lambda n: (n, n * 3) if n < 100 else None).to_list)
        [1, 3, 9, 27, 81]
        """
        return Stream(_sources.unfold(state, step, CHUNK_SIZE))

    @staticmethod
    def unfold_chunk_eval(
        state: S, step: Callable[[S], Awaitable[tuple[Sequence[U], S] | None]]
    ) -> Stream[U]:
        """Emit pages fetched one by one: ``step(state)`` gives ``(page, next_state)`` or ``None``.

        This is how paginated sources are read: each page becomes one chunk,
        and the next page is fetched only when downstream asks for more.

        >>> async def page(offset):
        ...     rows = list(range(offset, min(offset + 4, 10)))
        ...     return (rows, offset + 4) if rows else None
        >>> anyio.run(Stream.unfold_chunk_eval(0, page).to_list)
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        """
        return Stream(_sources.unfold_chunk_eval(state, step))

    @staticmethod
    def unfold_eval(state: S, step: Callable[[S], Awaitable[tuple[U, S] | None]]) -> Stream[U]:
        """``unfold`` with an effect: ``await step(state)`` gives ``(value, next_state)`` or ``None``.

        >>> async def countdown(n):
        ...     return (n, n - 1) if n > 0 else None
        >>> anyio.run(Stream.unfold_eval(3, countdown).to_list)
        [3, 2, 1]
        """
        return Stream(_sources.unfold_eval(state, step))

    # ------------------------------------------------------------------ combinators (A-Z)

    def __add__(self, other: Stream[T] | Callable[[], Stream[T]]) -> Stream[T]:
        """``a + b`` is ``a.append(b)`` (``b`` may be a thunk: ``s + (lambda: loop())``)."""
        return self.append(other)

    def __or__(self, pipe: Callable[[Stream[T]], Stream[U]]) -> Stream[U]:
        """``s | pipe`` is ``s.through(pipe)``."""
        return pipe(self)

    def append(self, other: Stream[T] | Callable[[], Stream[T]]) -> Stream[T]:
        """This stream's elements, then ``other``'s (``other`` may be a thunk, built lazily).

        >>> anyio.run((Stream.emits([1, 2]) + Stream.emit(3)).to_list)
        [1, 2, 3]
        """
        if isinstance(other, Stream):
            second = other._node
            return Stream(Append(self._node, lambda: second))
        thunk = other
        return Stream(Append(self._node, lambda: thunk()._node))

    def attempt(self) -> Stream[Result[T, Exception]]:
        """Emit ``Success(x)`` per element; if the stream fails, emit ``Failure(error)`` and stop.

        >>> s = Stream.emits([1, 2]) + Stream.raise_error(KeyError("k")) + Stream.emit(3)
        >>> anyio.run(s.attempt().to_list)
        [<Success: 1>, <Success: 2>, <Failure: 'k'>]
        """
        return self._stage(None, _pipes.attempt(self._pull))

    def broadcast_through(self, *pipes: Callable[[Stream[T]], Stream[U]]) -> Stream[U]:
        """Feed every element to each of ``pipes`` (run at once); merge what they emit (``broadcastThrough``).

        Each pipe sees every element, in order; the slowest pipe sets the
        pace. The output ends when every pipe has ended; an error in any of
        them fails the stream.

        >>> doubled = lambda s: s.map(lambda x: x * 2)
        >>> negated = lambda s: s.map(lambda x: -x)
        >>> sorted(anyio.run(Stream.range(1, 4).broadcast_through(doubled, negated).to_list))
        [-3, -2, -1, 2, 4, 6]
        """
        if not pipes:
            raise ValueError("broadcast_through needs at least one pipe")
        return _concurrent_stage(
            _concurrent.broadcast_through(self._pull, [_pipe_of(p) for p in pipes], emit=True)
        )

    def buffer(self, n: int) -> Stream[T]:
        """Let upstream run ahead of downstream by at most ``n`` chunks, concurrently.

        >>> anyio.run(Stream.range(0, 5).buffer(2).to_list)
        [0, 1, 2, 3, 4]
        """
        return _concurrent_stage(_concurrent.buffer(self._pull, n))

    def changes(self, key: Callable[[T], object] | None = None) -> Stream[T]:
        """Drop each element equal to the one before it (compared by ``key`` if given).

        >>> anyio.run(Stream.emits([1, 1, 2, 2, 2, 1, 3, 3]).changes().to_list)
        [1, 2, 1, 3]
        """
        return self._stage(None, _pipes.changes_by(self._pull, key if key is not None else _identity))

    def chunk_limit(self, n: int) -> Stream[T]:
        """Split chunks bigger than ``n`` elements; the elements are unchanged.

        >>> anyio.run(Stream.range(0, 5).chunk_limit(2).chunks().to_list)
        [[0, 1], [2, 3], [4]]
        """
        return self._stage(None, _pipes.chunk_limit(self._pull, n))

    def chunk_min(self, n: int, allow_fewer: bool = True) -> Stream[T]:
        """Join small chunks until each has ``n`` elements or more (the last fewer if ``allow_fewer``).

        >>> s = Stream.range(0, 5, chunk_size=1)
        >>> anyio.run(s.chunk_min(2).chunks().to_list)
        [[0, 1], [2, 3], [4]]
        >>> anyio.run(s.chunk_min(2, allow_fewer=False).to_list)
        [0, 1, 2, 3]
        """
        return self._stage(None, _pipes.chunk_min(self._pull, n, allow_fewer))

    def chunk_n(self, n: int, allow_fewer: bool = True) -> Stream[list[T]]:
        """Emit lists of ``n`` elements; the last one is shorter unless ``allow_fewer`` is false.

        >>> anyio.run(Stream.range(0, 7).chunk_n(3).to_list)
        [[0, 1, 2], [3, 4, 5], [6]]
        >>> anyio.run(Stream.range(0, 7).chunk_n(3, allow_fewer=False).to_list)
        [[0, 1, 2], [3, 4, 5]]
        """
        return self._stage(None, _pipes.chunk_n(self._pull, n, allow_fewer))

    def chunks(self) -> Stream[list[T]]:
        """Emit the chunks this stream is made of, as lists (do not mutate them).

        >>> anyio.run(Stream.range(0, 5, chunk_size=2).chunks().to_list)
        [[0, 1], [2, 3], [4]]
        """
        return self._stage(None, _pipes.chunks(self._pull))

    def collect(self, f: Callable[[T], Maybe[U]]) -> Stream[U]:
        """Map and filter in one step: keep ``x`` for each ``Some(x)``, drop each ``Nothing``.

        >>> from returns.maybe import Nothing, Some
        >>> parse = lambda s: Some(int(s)) if s.isdigit() else Nothing
        >>> anyio.run(Stream.emits(["1", "x", "3"]).collect(parse).to_list)
        [1, 3]
        """
        return Stream(Chunked(self._node, _pipes.collect_chunk(f)))

    def concurrently(self, background: Stream[Any]) -> Stream[T]:
        """Run ``background`` while this stream runs; stop it when this one ends; fail if it fails.

        A failure of ``background`` also stops a stage after this one that
        is still working on one of its elements (an ``eval_map`` on a hung
        call): the stream fails at once.

        >>> seen = []
        >>> async def note():
        ...     seen.append("tick")
        >>> bg = Stream.repeat_eval(note).take(1)
        >>> s = Stream.eval(lambda: anyio.sleep(0.05)).map(lambda _: "done")
        >>> anyio.run(s.concurrently(bg).to_list), seen
        (['done'], ['tick'])
        """
        return _concurrent_stage(_concurrent.concurrently(self._pull, background._pull))

    def debounce(self, seconds: float) -> Stream[T]:
        """Emit an element only once ``seconds`` have passed without a newer one (the last one always).

        >>> burst = Stream.emits([1, 2, 3]) + Stream.sleep(0.05).drain_pipe() + Stream.emit(4)
        >>> anyio.run(burst.debounce(0.02).to_list)
        [3, 4]
        """
        if seconds <= 0:
            raise ValueError("debounce needs seconds > 0")
        return _concurrent_stage(_concurrent.debounce(self._pull, seconds))

    def drain_pipe(self) -> Stream[Any]:
        """Run the stream for its effects and emit nothing (fs2's ``drain`` as a stage).

        The result is a ``Stream[Any]`` so that it appends to a stream of any type.

        >>> anyio.run((Stream.range(0, 3).drain_pipe() + Stream.emit("done")).to_list)
        ['done']
        """
        return Stream(Chunked(self._node, _nothing))

    def drop(self, n: int) -> Stream[T]:
        """Skip the first ``n`` elements.

        >>> anyio.run(Stream.range(0, 5).drop(3).to_list)
        [3, 4]
        """
        return self._stage(None, _pipes.drop(self._pull, n))

    def drop_while(self, p: Callable[[T], object]) -> Stream[T]:
        """Skip elements while ``p`` holds, then emit the rest.

        >>> anyio.run(Stream.emits([1, 2, 5, 1]).drop_while(lambda x: x < 3).to_list)
        [5, 1]
        """
        return self._stage(None, _pipes.drop_while(self._pull, p))

    def eval_filter(self, p: Callable[[T], Awaitable[object]]) -> Stream[T]:
        """Keep the elements for which the effect ``p`` returns true (one effect at a time).

        >>> async def is_even(x):
        ...     return x % 2 == 0
        >>> anyio.run(Stream.range(0, 6).eval_filter(is_even).to_list)
        [0, 2, 4]
        """
        return self._stage(None, _pipes.eval_filter(self._pull, p))

    @overload
    def eval_map(self, f: Callable[[T], FutureResult[U, Any]]) -> Stream[U]: ...
    @overload
    def eval_map(self, f: Callable[[T], Awaitable[Result[U, Any]]]) -> Stream[U]: ...
    @overload
    def eval_map(self, f: Callable[[T], Awaitable[IOResult[U, Any]]]) -> Stream[U]: ...
    @overload
    def eval_map(self, f: Callable[[T], Awaitable[U]]) -> Stream[U]: ...
    def eval_map(self, f: Callable[[T], Any]) -> Stream[Any]:
        """Apply an effect to each element, one at a time, and emit its value.

        ``f`` may return a plain value, a ``Result``, an ``IOResult`` or a
        ``FutureResult``. A ``Success`` is unwrapped; the first ``Failure``
        fails the stream with ``EffectFailed`` carrying the failure value.
        Each result goes downstream before the next effect starts, so
        ``eval_map(f).take(n)`` runs ``f`` exactly ``n`` times; for batch
        effects use ``eval_map_chunks``.

        >>> from returns.result import Failure, Success
        >>> async def check(x):
        ...     return Success(x) if x < 3 else Failure(f"{x} is too big")
        >>> anyio.run(Stream.range(0, 3).eval_map(check).to_list)
        [0, 1, 2]
        >>> anyio.run(Stream.range(0, 5).eval_map(check).to_list_result).failure()
        EffectFailed('3 is too big')
        """
        return self._stage(None, _pipes.eval_map(self._pull, f))

    def eval_map_chunks(self, f: Callable[[list[T]], Awaitable[Sequence[U]]]) -> Stream[U]:
        """Run one effect per chunk (a list) and emit the sequence it returns: batch I/O.

        ``f`` may also return a ``Result`` / ``FutureResult`` of a sequence.
        Chunk sizes are the upstream's; use ``chunk_n`` or ``group_within``
        first to choose them.

        >>> async def save_all(rows):
        ...     return [f"saved {r}" for r in rows]
        >>> anyio.run(Stream.range(0, 3).eval_map_chunks(save_all).to_list)
        ['saved 0', 'saved 1', 'saved 2']
        """
        return self._stage(None, _pipes.eval_map_chunks(self._pull, f))

    def eval_scan(self, init: U, f: Callable[[U, T], Awaitable[U]]) -> Stream[U]:
        """``scan`` with an effect: emit ``init``, then each ``await f(acc, x)``.

        >>> async def add(acc, x):
        ...     return acc + x
        >>> anyio.run(Stream.range(1, 4).eval_scan(0, add).to_list)
        [0, 1, 3, 6]
        """
        return self._stage(None, _pipes.eval_scan(self._pull, init, f))

    def eval_tap(self, f: Callable[[T], Awaitable[object]]) -> Stream[T]:
        """Run an effect for each element and emit the element unchanged.

        >>> seen = []
        >>> async def record(x):
        ...     seen.append(x)
        >>> anyio.run(Stream.range(0, 3).eval_tap(record).map(str).to_list), seen
        (['0', '1', '2'], [0, 1, 2])
        """
        return self._stage(None, _pipes.eval_tap(self._pull, f))

    def filter(self, p: Callable[[T], object]) -> Stream[T]:
        """Keep the elements for which ``p`` is true.

        >>> anyio.run(Stream.range(0, 6).filter(lambda x: x % 3 == 0).to_list)
        [0, 3]
        """
        return Stream(Chunked(self._node, lambda chunk: list(filter(p, chunk))))

    def flat_map(self, f: Callable[[T], Stream[U]]) -> Stream[U]:
        """Replace each element by the stream ``f`` makes of it, run to its end in turn.

        >>> anyio.run(Stream.range(1, 4).flat_map(lambda n: Stream.emits([n] * n)).to_list)
        [1, 2, 2, 3, 3, 3]
        """
        return Stream(Bind(self._node, lambda x: f(x)._node))

    def foreach(self, f: Callable[[T], Awaitable[object]]) -> Stream[Never]:
        """A sink: run an effect for each element and emit nothing.

        >>> seen = []
        >>> async def record(x):
        ...     seen.append(x)
        >>> anyio.run(Stream.range(0, 3).foreach(record).drain), seen
        (None, [0, 1, 2])
        """
        return self._stage(None, _pipes.foreach(self._pull, f))

    def group_adjacent_by(self, key: Callable[[T], K]) -> Stream[tuple[K, list[T]]]:
        """Emit ``(key, elements)`` for each run of adjacent elements with the same key.

        >>> words = ["apple", "avocado", "banana", "apricot"]
        >>> anyio.run(Stream.emits(words).group_adjacent_by(lambda w: w[0]).to_list)
        [('a', ['apple', 'avocado']), ('b', ['banana']), ('a', ['apricot'])]
        """
        return self._stage(None, _pipes.group_adjacent_by(self._pull, key))

    def group_within(self, n: int, seconds: float) -> Stream[list[T]]:
        """Emit lists of ``n`` elements, or fewer once a list is ``seconds`` old.

        Use it to batch a live stream: a full batch goes at once, a partial
        one no later than ``seconds`` after it started. If upstream fails, the
        error is raised at once and a partial batch not yet emitted is dropped.

        >>> anyio.run(Stream.range(0, 5).group_within(2, 1.0).to_list)
        [[0, 1], [2, 3], [4]]
        """
        return _concurrent_stage(_concurrent.group_within(self._pull, n, seconds))

    def handle_error_with(self, handler: Callable[[Exception], Stream[T]]) -> Stream[T]:
        """If the stream fails, go on with the stream ``handler`` makes of the error.

        >>> s = Stream.emit(1) + Stream.raise_error(ValueError("lost"))
        >>> anyio.run(s.handle_error_with(lambda e: Stream.emit(str(e))).to_list)
        [1, 'lost']
        """
        return Stream(Handle(self._node, lambda exc: handler(exc)._node))

    def interleave(self, other: Stream[T]) -> Stream[T]:
        """Alternate elements of this stream and ``other``; stop when either ends.

        >>> anyio.run(Stream.emits([1, 2, 3]).interleave(Stream.emits([10, 20])).to_list)
        [1, 10, 2, 20]
        """
        return self._stage(other, _pipes.interleave(self._pull, other._pull))

    def interrupt_after(self, seconds: float) -> Stream[T]:
        """End the stream (normally, running its finalizers) ``seconds`` after it started.

        >>> ticks = anyio.run(Stream.fixed_delay(0.001).interrupt_after(0.05).count)
        >>> 0 < ticks < 1000
        True
        """
        return self.interrupt_when(lambda: anyio.sleep(seconds))

    def interrupt_when(self, signal: anyio.Event | Callable[[], Awaitable[object]]) -> Stream[T]:
        """End the stream (normally, running its finalizers) when ``signal`` is set or returns.

        ``signal`` is an ``anyio.Event`` or an async function that returns
        when it is time to stop. The interrupt also ends what works on this
        stream's elements after it (an ``eval_map`` waiting on a hung call,
        the inner streams of a ``flat_map``), as fs2's interruption scopes
        do; a stream appended after it (``+``) still runs.

        >>> stop = lambda: anyio.sleep(0.05)
        >>> ticks = anyio.run(Stream.fixed_delay(0.001).interrupt_when(stop).count)
        >>> 0 < ticks < 1000
        True
        """
        wait = signal.wait if isinstance(signal, anyio.Event) else signal
        return _concurrent_stage(_concurrent.interrupt_when(self._pull, wait))

    def intersperse(self, separator: T) -> Stream[T]:
        """Put ``separator`` between every two elements.

        >>> anyio.run(Stream.emits("abc").intersperse("-").to_list)
        ['a', '-', 'b', '-', 'c']
        """
        return self._stage(None, _pipes.intersperse(self._pull, separator))

    def map(self, f: Callable[[T], U]) -> Stream[U]:
        """Apply ``f`` to each element.

        >>> anyio.run(Stream.range(0, 3).map(lambda x: x * x).to_list)
        [0, 1, 4]
        """
        return Stream(Chunked(self._node, lambda chunk: list(map(f, chunk))))

    def map_accumulate(self, init: S, f: Callable[[S, T], tuple[S, U]]) -> Stream[tuple[S, U]]:
        """Map with a state: ``f(state, x)`` gives ``(new_state, y)``; emit each ``(new_state, y)``.

        >>> running = lambda total, x: (total + x, f"{x} of {total + x}")
        >>> anyio.run(Stream.emits([1, 2, 3]).map_accumulate(0, running).to_list)
        [(1, '1 of 1'), (3, '2 of 3'), (6, '3 of 6')]
        """
        return self._stage(None, _pipes.map_accumulate(self._pull, init, f))

    def map_chunks(self, f: Callable[[list[T]], Sequence[U]]) -> Stream[U]:
        """Apply ``f`` to each chunk (a list) at once: the fast path for batch work.

        >>> anyio.run(Stream.range(0, 4, chunk_size=2).map_chunks(lambda c: [sum(c)]).to_list)
        [1, 5]
        """
        return Stream(Chunked(self._node, lambda chunk: list(f(chunk))))

    def merge(self, other: Stream[T]) -> Stream[T]:
        """Run both streams at once and emit elements as they come; end when both end.

        The first error from either side fails the merged stream and stops
        the other side.

        >>> merged = Stream.range(0, 3).merge(Stream.range(10, 13))
        >>> sorted(anyio.run(merged.to_list))
        [0, 1, 2, 10, 11, 12]
        """
        return _concurrent_stage(_concurrent.merge(self._pull, other._pull))

    def merge_halt_both(self, other: Stream[T]) -> Stream[T]:
        """``merge`` that ends as soon as either side ends (the other is stopped).

        >>> anyio.run(Stream.emit(1).merge_halt_both(Stream.fixed_delay(10)).to_list)
        [1]
        """
        return _concurrent_stage(_concurrent.merge(self._pull, other._pull, halt="both"))

    def merge_halt_l(self, other: Stream[T]) -> Stream[T]:
        """``merge`` that ends when this (the left) stream ends; ``other`` is stopped then.

        >>> anyio.run(Stream.emits([1, 2]).merge_halt_l(Stream.fixed_delay(10)).to_list)
        [1, 2]
        """
        return _concurrent_stage(_concurrent.merge(self._pull, other._pull, halt="left"))

    def merge_halt_r(self, other: Stream[T]) -> Stream[T]:
        """``merge`` that ends when ``other`` (the right) stream ends; this one is stopped then.

        >>> anyio.run(Stream.fixed_delay(10).merge_halt_r(Stream.emits([1, 2])).to_list)
        [1, 2]
        """
        return _concurrent_stage(_concurrent.merge(self._pull, other._pull, halt="right"))

    def metered(self, seconds: float) -> Stream[T]:
        """At most one element per ``seconds``, at a fixed rate (the first after ``seconds``).

        Element ``k`` goes no earlier than ``start + (k + 1) * seconds``; a
        slow upstream does not make later elements come in a burst beyond
        what is already due.

        >>> anyio.run(Stream.range(0, 3).metered(0.01).to_list)
        [0, 1, 2]
        """
        if seconds <= 0:
            raise ValueError("metered needs seconds > 0")
        return self._stage(None, _pipes.metered(self._pull, seconds, immediately=False))

    def observe(self, pipe: Callable[[Stream[T]], Stream[Any]]) -> Stream[T]:
        """Send every element through ``pipe`` (a sink, say) too; emit each once ``pipe`` has taken it.

        The stream fails if ``pipe`` fails, and ends once ``pipe`` has seen
        every element.

        >>> seen = []
        >>> async def record(x):
        ...     seen.append(x)
        >>> anyio.run(Stream.range(0, 3).observe(lambda s: s.foreach(record)).to_list), seen
        ([0, 1, 2], [0, 1, 2])
        """
        return _concurrent_stage(_concurrent.broadcast_through(self._pull, [_pipe_of(pipe)], emit=False))

    def on_finalize(self, finalizer: Callable[[], Awaitable[object]]) -> Stream[T]:
        """Run ``finalizer`` once when the stream stops, however it stops (shielded).

        >>> log = []
        >>> async def bye():
        ...     log.append("finalized")
        >>> anyio.run(Stream.range(0, 100).on_finalize(bye).take(2).to_list), log
        ([0, 1], ['finalized'])
        """
        return self._stage(None, _pipes.on_finalize(self._pull, finalizer))

    @overload
    def par_eval_map(self, n: int, f: Callable[[T], FutureResult[U, Any]]) -> Stream[U]: ...
    @overload
    def par_eval_map(self, n: int, f: Callable[[T], Awaitable[Result[U, Any]]]) -> Stream[U]: ...
    @overload
    def par_eval_map(self, n: int, f: Callable[[T], Awaitable[IOResult[U, Any]]]) -> Stream[U]: ...
    @overload
    def par_eval_map(self, n: int, f: Callable[[T], Awaitable[U]]) -> Stream[U]: ...
    def par_eval_map(self, n: int, f: Callable[[T], Any]) -> Stream[Any]:
        """Like ``eval_map`` with up to ``n`` effects at once; output keeps the input order.

        A fixed pool of ``n`` workers runs the effects; upstream is read at
        most ``16 * n`` elements (plus one chunk) ahead of the results it has
        handed downstream.

        >>> async def slow_square(x):
        ...     await anyio.sleep(0.01 * (5 - x))
        ...     return x * x
        >>> anyio.run(Stream.range(0, 5).par_eval_map(5, slow_square).to_list)
        [0, 1, 4, 9, 16]
        """
        return _concurrent_stage(_concurrent.par_eval_map(self._pull, n, f, ordered=True))

    @overload
    def par_eval_map_unordered(self, n: int, f: Callable[[T], FutureResult[U, Any]]) -> Stream[U]: ...
    @overload
    def par_eval_map_unordered(self, n: int, f: Callable[[T], Awaitable[Result[U, Any]]]) -> Stream[U]: ...
    @overload
    def par_eval_map_unordered(self, n: int, f: Callable[[T], Awaitable[IOResult[U, Any]]]) -> Stream[U]: ...
    @overload
    def par_eval_map_unordered(self, n: int, f: Callable[[T], Awaitable[U]]) -> Stream[U]: ...
    def par_eval_map_unordered(self, n: int, f: Callable[[T], Any]) -> Stream[Any]:
        """Like ``par_eval_map``, but emit each result as soon as it is ready.

        >>> async def slow_square(x):
        ...     await anyio.sleep(0.01 * (5 - x))
        ...     return x * x
        >>> anyio.run(Stream.range(0, 5).par_eval_map_unordered(5, slow_square).to_list)
        [16, 9, 4, 1, 0]
        """
        return _concurrent_stage(_concurrent.par_eval_map(self._pull, n, f, ordered=False))

    def par_join(self: Stream[Stream[U]], n: int) -> Stream[U]:
        """Run up to ``n`` of the inner streams at once, emitting their elements as they come.

        >>> inner = Stream.range(0, 3).map(lambda i: Stream.emits([i] * 2))
        >>> sorted(anyio.run(inner.par_join(2).to_list))
        [0, 0, 1, 1, 2, 2]
        """
        return _concurrent_stage(_concurrent.par_join(self.map(_pull_of)._pull, n))

    def rechunk(self, n: int) -> Stream[T]:
        """Regroup the elements in chunks of exactly ``n`` (the last may be smaller).

        >>> anyio.run(Stream.range(0, 7, chunk_size=2).rechunk(3).chunks().to_list)
        [[0, 1, 2], [3, 4, 5], [6]]
        """
        return self._stage(None, _pipes.rechunk(self._pull, n))

    def reduce(self, f: Callable[[T, T], T]) -> Stream[T]:
        """Emit one element, all elements combined with ``f``; nothing if the stream is empty.

        >>> anyio.run(Stream.range(1, 5).reduce(lambda a, b: a * b).to_list)
        [24]
        >>> anyio.run(Stream.empty().reduce(max).to_list)
        []
        """
        return self._stage(None, _pipes.reduce(self._pull, f))

    def repeat(self) -> Stream[T]:
        """This stream's elements, again and again, forever (it runs anew each round).

        >>> anyio.run(Stream.emits([1, 2]).repeat().take(5).to_list)
        [1, 2, 1, 2, 1]
        """
        return Stream(Append(self._node, lambda: self.repeat()._node))

    def repeat_n(self, n: int) -> Stream[T]:
        """This stream's elements ``n`` times over (it runs anew each round).

        >>> anyio.run(Stream.emits("ab").repeat_n(3).to_list)
        ['a', 'b', 'a', 'b', 'a', 'b']
        """
        if n <= 0:
            return Stream.empty()
        return Stream(Append(self._node, lambda: self.repeat_n(n - 1)._node))

    def retry(self, policy: RetryPolicy | None = None) -> Stream[T]:
        """Run the stream again from the start when it fails, as ``policy`` allows.

        Elements a failed attempt already emitted are not taken back, so use
        it where failures come before output (``Stream.eval``) or downstream
        is idempotent.

        >>> attempts = []
        >>> async def flaky():
        ...     attempts.append(1)
        ...     if len(attempts) < 3:
        ...         raise ConnectionError("try again")
        ...     return "ok"
        >>> policy = RetryPolicy(max_attempts=5, base_delay=0)
        >>> anyio.run(Stream.eval(flaky).retry(policy).to_list), len(attempts)
        (['ok'], 3)
        """
        return self._stage(None, _pipes.retry(self._pull, policy or RetryPolicy()))

    def scan(self, init: U, f: Callable[[U, T], U]) -> Stream[U]:
        """Emit ``init``, then each running result of ``f(acc, x)``.

        >>> anyio.run(Stream.range(1, 5).scan(0, lambda acc, x: acc + x).to_list)
        [0, 1, 3, 6, 10]
        """
        return self._stage(None, _pipes.scan(self._pull, init, f))

    def scan1(self, f: Callable[[T, T], T]) -> Stream[T]:
        """``scan`` that starts from the first element: emit it, then each running ``f(acc, x)``.

        >>> anyio.run(Stream.range(1, 5).scan1(lambda acc, x: acc + x).to_list)
        [1, 3, 6, 10]
        """
        return self._stage(None, _pipes.scan1(self._pull, f))

    def sliding(self, n: int, step: int = 1) -> Stream[list[T]]:
        """Windows of ``n`` elements, a new one every ``step`` elements (Scala's ``List.sliding``).

        The last window is shorter when the stream ends before it is full, and
        is emitted only if it holds an element no earlier window held.

        >>> anyio.run(Stream.range(0, 5).sliding(3).to_list)
        [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
        >>> anyio.run(Stream.range(0, 6).sliding(2, step=3).to_list)
        [[0, 1], [3, 4]]
        >>> anyio.run(Stream.range(0, 2).sliding(3).to_list)
        [[0, 1]]
        """
        return self._stage(None, _pipes.sliding(self._pull, n, step))

    def spaced(self, seconds: float) -> Stream[T]:
        """Emit the first element at once, then wait ``seconds`` before each next one (a fixed delay).

        >>> anyio.run(Stream.range(0, 3).spaced(0.01).to_list)
        [0, 1, 2]
        """
        if seconds < 0:
            raise ValueError("spaced needs seconds >= 0")
        return self._stage(None, _pipes.spaced(self._pull, seconds))

    def split(self, p: Callable[[T], object]) -> Stream[list[T]]:
        """Cut the stream at each element for which ``p`` holds (dropped); emit the pieces as lists.

        Two delimiters in a row give an empty piece; a delimiter at the end
        gives none after it.

        >>> anyio.run(Stream.range(0, 10).split(lambda x: x % 4 == 0).to_list)
        [[], [1, 2, 3], [5, 6, 7], [9]]
        """
        return self._stage(None, _pipes.split(self._pull, p))

    def switch_map(self, f: Callable[[T], Stream[U]]) -> Stream[U]:
        """Run the stream ``f`` makes of each element; a newer element stops the one still running.

        The inner stream of the last element runs to its end; the output ends
        then. Finalizers of a stopped inner stream run before the next one starts.

        >>> slow = lambda x: Stream.sleep(0.05).map(lambda _: x)
        >>> anyio.run(Stream.emits([1, 2, 3]).switch_map(slow).to_list)
        [3]
        """
        return _concurrent_stage(_concurrent.switch_map(self._pull, lambda x: f(x)._pull))

    def take(self, n: int) -> Stream[T]:
        """The first ``n`` elements; upstream is not pulled further and is closed.

        >>> anyio.run(Stream.range(0, 10**9).take(3).to_list)
        [0, 1, 2]
        """
        return self._stage(None, _pipes.take(self._pull, n))

    def take_while(self, p: Callable[[T], object], take_failure: bool = False) -> Stream[T]:
        """Elements while ``p`` holds (and the first that fails it, if ``take_failure``).

        >>> anyio.run(Stream.range(0, 10).take_while(lambda x: x < 3).to_list)
        [0, 1, 2]
        >>> anyio.run(Stream.range(0, 10).take_while(lambda x: x < 3, take_failure=True).to_list)
        [0, 1, 2, 3]
        """
        return self._stage(None, _pipes.take_while(self._pull, p, take_failure))

    def through(self, pipe: Callable[[Stream[T]], Stream[U]]) -> Stream[U]:
        """Apply a pipe (a function from stream to stream); also written ``s | pipe``.

        >>> evens = lambda s: s.filter(lambda x: x % 2 == 0)
        >>> anyio.run((Stream.range(0, 5) | evens).to_list)
        [0, 2, 4]
        """
        return pipe(self)

    def timeout(self, seconds: float) -> Stream[T]:
        """Fail with ``TimeoutError`` if the stream has not ended ``seconds`` after it started.

        As in fs2, the time covers what works on its elements after it too
        (an interrupt with an error, see ``interrupt_when``).

        >>> result = anyio.run(Stream.fixed_delay(0.01).timeout(0.05).drain_result)
        >>> type(result.failure())
        <class 'TimeoutError'>
        """
        return _concurrent_stage(_concurrent.timeout(self._pull, seconds))

    @overload
    def unchunks(self: Stream[list[U]]) -> Stream[U]: ...
    @overload
    def unchunks(self: Stream[tuple[U, ...]]) -> Stream[U]: ...
    @overload
    def unchunks(self: Stream[Sequence[U]]) -> Stream[U]: ...
    def unchunks(self: Stream[Any]) -> Stream[Any]:
        """Flatten a stream of sequences, each becoming one chunk (the inverse of ``chunks``).

        >>> anyio.run(Stream.emits([[1, 2], [], [3]]).unchunks().to_list)
        [1, 2, 3]
        """
        return self._stage(None, _pipes.unchunks(self._pull))

    def zip(self, other: Stream[U]) -> Stream[tuple[T, U]]:
        """Pair elements of this stream and ``other``; stop when either ends.

        >>> anyio.run(Stream.emits("ab").zip(Stream.range(0, 5)).to_list)
        [('a', 0), ('b', 1)]
        """
        return self._stage(other, _pipes.zip_with(self._pull, other._pull, _pipes.pair))

    def zip_all(self, other: Stream[U], pad_left: T, pad_right: U) -> Stream[tuple[T, U]]:
        """Pair elements until both streams end, padding the one that ended first.

        >>> anyio.run(Stream.emits("abc").zip_all(Stream.range(0, 1), "-", -1).to_list)
        [('a', 0), ('b', -1), ('c', -1)]
        """
        return self._stage(other, _pipes.zip_all(self._pull, other._pull, pad_left, pad_right))

    def zip_with(self, other: Stream[U], f: Callable[[T, U], V]) -> Stream[V]:
        """Combine elements of this stream and ``other`` pairwise with ``f``; stop when either ends.

        >>> anyio.run(Stream.range(1, 4).zip_with(Stream.range(10, 20), lambda a, b: a + b).to_list)
        [11, 13, 15]
        """
        return self._stage(other, _pipes.zip_with(self._pull, other._pull, f))

    def zip_with_index(self) -> Stream[tuple[T, int]]:
        """Pair each element with its 0-based index.

        >>> anyio.run(Stream.emits("ab").zip_with_index().to_list)
        [('a', 0), ('b', 1)]
        """
        return self._stage(None, _pipes.zip_with_index(self._pull))

    def zip_with_next(self) -> Stream[tuple[T, Maybe[T]]]:
        """Pair each element with the next one (``Some(next)``; ``Nothing`` for the last).

        >>> anyio.run(Stream.emits("ab").zip_with_next().to_list)
        [('a', <Some: b>), ('b', <Nothing>)]
        """
        return self._stage(None, _pipes.zip_with_next(self._pull))

    def zip_with_previous(self) -> Stream[tuple[Maybe[T], T]]:
        """Pair each element with the one before it (``Nothing`` for the first).

        >>> anyio.run(Stream.emits("ab").zip_with_previous().to_list)
        [(<Nothing>, 'a'), (<Some: a>, 'b')]
        """
        return self._stage(None, _pipes.zip_with_previous(self._pull))

    # ------------------------------------------------------------------ running the stream

    def open(self) -> _Opened[T]:
        """Iterate element by element inside ``async with``, which closes the stream on exit.

        >>> async def first_two():
        ...     async with Stream.range(0, 100).open() as it:
        ...         return [x async for x in it if x < 2]
        >>> anyio.run(first_two)
        [0, 1]
        """
        return _Opened(self._pull)

    async def count(self) -> int:
        """Run the stream and return how many elements it emitted.

        >>> anyio.run(Stream.range(0, 1000).count)
        1000
        """
        n = 0
        async with running(self._pull) as chunks:
            async for chunk in chunks:
                n += len(chunk)
        return n

    async def drain(self) -> None:
        """Run the stream for its effects, discarding the elements.

        >>> anyio.run(Stream.range(0, 3).drain)
        """
        async with running(self._pull) as chunks:
            async for _ in chunks:
                pass

    async def fold(self, init: U, f: Callable[[U, T], U]) -> U:
        """Run the stream and combine its elements with ``f``, starting from ``init``.

        >>> import operator
        >>> anyio.run(Stream.range(1, 5).fold, 1, operator.mul)
        24
        """
        acc = init
        async with running(self._pull) as chunks:
            async for chunk in chunks:
                for x in chunk:
                    acc = f(acc, x)
        return acc

    async def last(self) -> Maybe[T]:
        """Run the stream and return ``Some(last element)``, or ``Nothing`` if it was empty.

        >>> anyio.run(Stream.range(0, 3).last), anyio.run(Stream.empty().last)
        (<Some: 2>, <Nothing>)
        """
        last: Maybe[T] = Nothing
        async with running(self._pull) as chunks:
            async for chunk in chunks:
                last = Some(chunk[-1])
        return last

    async def to_list(self) -> list[T]:
        """Run the stream and return its elements in a list.

        >>> anyio.run(Stream.range(0, 3).to_list)
        [0, 1, 2]
        """
        out: list[T] = []
        async with running(self._pull) as chunks:
            async for chunk in chunks:
                out.extend(chunk)
        return out

    async def to_pandas(self) -> Any:
        """Run the stream and return its elements as a ``pandas.DataFrame`` (pandas must be installed).

        Elements whose type knows its own frame (``_to_pandas_``: events, with
        their dtypes) give that; mappings, dataclasses and named tuples give a
        column per field; anything else one ``value`` column.

        >>> frame = anyio.run(Stream.emits([{"n": 1, "v": "a"}, {"n": 2, "v": "b"}]).to_pandas)
        >>> list(frame.columns), frame["n"].tolist()
        (['n', 'v'], [1, 2])
        """
        rows = await self.to_list()
        own = getattr(type(rows[0]), "_to_pandas_", None) if rows else None
        if own is not None:
            return own(rows)
        try:
            import pandas  # optional: only this method needs it
        except ImportError:
            raise ImportError("Stream.to_pandas needs pandas: pip install 'streamsrc[notebooks]'") from None
        if rows and dataclasses.is_dataclass(rows[0]):
            return pandas.DataFrame([dataclasses.asdict(r) for r in rows])  # type: ignore[call-overload]
        if rows and (isinstance(rows[0], Mapping) or hasattr(rows[0], "_fields")):
            return pandas.DataFrame(rows)
        return pandas.DataFrame({"value": rows})

    async def count_result(self) -> Result[int, Exception]:
        """``count``, with an error returned as ``Failure`` instead of raised."""
        return await _as_result(self.count())

    async def drain_result(self) -> Result[None, Exception]:
        """``drain``, with an error returned as ``Failure`` instead of raised."""
        return await _as_result(self.drain())

    async def fold_result(self, init: U, f: Callable[[U, T], U]) -> Result[U, Exception]:
        """``fold``, with an error returned as ``Failure`` instead of raised.

        >>> anyio.run(Stream.emits([1, 0]).map(lambda x: 1 // x).fold_result, 0, max)
        <Failure: integer division or modulo by zero>
        """
        return await _as_result(self.fold(init, f))

    async def last_result(self) -> Result[Maybe[T], Exception]:
        """``last``, with an error returned as ``Failure`` instead of raised."""
        return await _as_result(self.last())

    async def to_list_result(self) -> Result[list[T], Exception]:
        """``to_list``, with an error returned as ``Failure`` instead of raised.

        >>> anyio.run(Stream.range(0, 3).to_list_result)
        <Success: [0, 1, 2]>
        """
        return await _as_result(self.to_list())

    async def show(self, n: int = 10) -> Preview[T]:
        """Run only the first ``n`` elements of the stream and return them for display.

        This is the way to look into a stream in a notebook: ``await
        s.show()`` as the last line of a cell shows a table of the first
        ``n`` elements (a :class:`Preview`; plain text outside Jupyter). The
        stream stops there, as with ``take(n)``: upstream is not pulled
        further and its finalizers run, so an endless stream (``subscribe``,
        ``repeat_eval``) previews as well as a finite one.

        A ``Stream`` has no ``_repr_html_`` of its own: displaying is
        synchronous, while running a stream is asynchronous work that belongs
        to the event loop the notebook already runs (and to the resources
        open on it), so looking at a stream is this explicit ``await``.

        Elements with fields (dataclasses, named tuples, mappings) get a
        column each; a stream of events gets the event table of
        :mod:`streamsrc.display` in HTML; anything else one ``value`` column.
        As text (and in HTML), a column of numbers is right-aligned, any
        other left-aligned; a cell longer than 80 characters is cut with an
        ellipsis.

        >>> async def ticks():
        ...     return "tick"
        >>> rows = Stream.repeat_eval(ticks).zip_with_index().map(lambda p: {"n": p[1] * 50, "v": p[0]})
        >>> anyio.run(rows.show, 3)
        first 3 elements (the stream was not run further):
            n  v
            0  tick
           50  tick
          100  tick
        >>> anyio.run(Stream.emits([7, 1250, 3.5]).show)
        all 3 elements:
           value
               7
            1250
             3.5
        """
        if n < 1:
            raise ValueError("show needs n >= 1")
        return Preview(await self.take(n).to_list(), n)


def _identity(x: T) -> T:
    return x


def _pull_of(stream: Stream[U]) -> Pull[U]:
    return stream._pull


def _concurrent_stage(pull: Pull[U]) -> Stream[U]:
    """A concurrent stage: it may interrupt or fail what runs downstream of it (see ``_nodes``)."""
    return Stream(Leaf(pull, scoped=True))


def _pipe_of(pipe: Callable[[Stream[T]], Stream[U]]) -> Callable[[Pull[T]], Pull[U]]:
    """A stream pipe as a function between pulls."""
    return lambda pull: pipe(Stream(pull))._pull


def _nothing(chunk: list[Any]) -> list[Any]:
    return []


async def _as_result(run: Awaitable[V]) -> Result[V, Exception]:
    try:
        return Success(await run)
    except Exception as exc:
        return Failure(exc)


class _Opened(Generic[T]):
    """The context manager that ``Stream.open`` returns; iterate what it gives."""

    __slots__ = ("_chunk", "_chunks", "_driver", "_index", "_pull", "_task_group", "_token")

    def __init__(self, pull: Pull[T]) -> None:
        self._pull = pull
        self._chunk: list[T] = []
        self._index = 0
        self._driver = Driver()

    async def __aenter__(self) -> AsyncIterator[T]:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._token = DRIVER.set(self._driver)
        self._chunks = self._pull(Run(self._task_group))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> bool:
        close_error: BaseException | None = None
        try:
            await self._chunks.aclose()
        except BaseException as exc:
            close_error = exc
            et, e, tb = type(exc), exc, exc.__traceback__
        finally:
            DRIVER.reset(self._token)
        try:
            suppressed = bool(await self._task_group.__aexit__(et, e, tb))
        except BaseExceptionGroup as group:
            reraise_unwrapped(group)
            raise
        if close_error is not None and not suppressed:
            raise close_error
        return suppressed

    def __aiter__(self) -> _Opened[T]:
        return self

    async def __anext__(self) -> T:
        driver = self._driver
        while self._index >= len(self._chunk):
            driver.check()
            if driver.interrupted:
                raise StopAsyncIteration
            # Pull under a fresh scope: a stage that must stop this driver cancels it (see Driver).
            driver.scope = anyio.CancelScope()
            with driver.scope:
                chunk = await anext(self._chunks, None)
            if driver.scope.cancelled_caught:
                driver.check()
                raise StopAsyncIteration
            if chunk is None:
                raise StopAsyncIteration
            self._chunk, self._index = chunk, 0
        self._index += 1
        return self._chunk[self._index - 1]


class Preview(Generic[T]):
    """The first elements of a stream, as :meth:`Stream.show` returns them: a table in Jupyter.

    ``items`` holds them and ``limit`` is how many were asked for; fewer
    means the stream ended (``complete``). The HTML form escapes every value.

    >>> p = Preview(["<script>alert(1)</script>"], limit=10)
    >>> p.complete, len(p), list(p)
    (True, 1, ['<script>alert(1)</script>'])
    >>> "&lt;script&gt;" in p._repr_html_(), "<script>" in p._repr_html_()
    (True, False)
    """

    __slots__ = ("items", "limit")

    def __init__(self, items: list[T], limit: int) -> None:
        self.items = items
        self.limit = limit

    @property
    def complete(self) -> bool:
        """Whether these are all the stream's elements (it ended before ``limit``)."""
        return len(self.items) < self.limit

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def _note(self) -> str:
        n = len(self.items)
        if self.complete:
            return "the stream is empty" if n == 0 else f"all {n} element{'s' if n != 1 else ''}"
        return f"first {n} element{'s' if n != 1 else ''} (the stream was not run further)"

    def __repr__(self) -> str:
        """The note, then the elements as an aligned text table (numbers right-aligned)."""
        if not self.items:
            return self._note()
        columns, cells = _columns_of(self.items)
        texts = [[_cell_text(v, _TEXT_CHARS).replace("\n", "\\n") for v in row] for row in cells]
        right = [_numeric(row[i] for row in cells) for i in range(len(columns))]
        widths = [max(len(columns[i]), *(len(row[i]) for row in texts)) for i in range(len(columns))]
        lines = [
            "  "
            + "  ".join(t.rjust(w) if r else t.ljust(w) for t, w, r in zip(row, widths, right, strict=True))
            for row in [columns, *texts]
        ]
        return "\n".join([self._note() + ":", *(line.rstrip() for line in lines)])

    def _repr_html_(self) -> str:
        """The elements as an HTML table, with a note saying whether the stream goes on."""
        note = f"<p><small>{html.escape(self._note())}</small></p>"
        items = self.items
        if items:
            kind = type(items[0])
            table_of = getattr(kind, "_repr_html_table_", None)  # e.g. RecordedEvent: its own columns
            if callable(table_of) and all(type(x) is kind for x in items):
                return f"<div>{table_of(items)}\n{note}</div>"
        return f"<div>{_html_table(items)}\n{note}</div>"


_MISSING = object()
_LEFT = ' style="text-align:left"'
_RIGHT = ' style="text-align:right; font-variant-numeric:tabular-nums"'
_TEXT_CHARS = 80
"""The longest cell of a preview's text table (the HTML one holds 200 characters)."""


def _numeric(values: Iterable[object]) -> bool:
    """Whether a column holds numbers (and at least one): it is right-aligned, as in an event table.

    >>> _numeric([1, 2.5, None, _MISSING]), _numeric([1, "2"]), _numeric([True]), _numeric([None])
    (True, False, False, False)
    """
    found = False
    for value in values:
        if value is None or value is _MISSING:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Number):
            return False
        found = True
    return found


def _fields_of(item: object) -> dict[str, Any] | None:
    """The named fields of ``item`` (named tuple, dataclass, mapping), or ``None``."""
    if isinstance(item, tuple) and hasattr(item, "_fields"):
        return {str(name): getattr(item, name) for name in item._fields}
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    if isinstance(item, Mapping):
        return {str(k): v for k, v in item.items()}
    return None


def _columns_of(items: Sequence[object]) -> tuple[list[str], list[list[object]]]:
    """The columns of a preview (the elements' fields, or ``value``) and each element's cells."""
    rows = [_fields_of(x) for x in items]
    if items and all(r is not None for r in rows):
        named = [r for r in rows if r is not None]
        columns = list(dict.fromkeys(name for r in named for name in r))
        return columns, [[r.get(c, _MISSING) for c in columns] for r in named]
    return ["value"], [[x] for x in items]


def _html_table(items: Sequence[object]) -> str:
    columns, cells = _columns_of(items)
    styles = [_RIGHT if _numeric(row[i] for row in cells) else _LEFT for i in range(len(columns))]
    head = "".join(f"<th{style}>{html.escape(c)}</th>" for c, style in zip(columns, styles, strict=True))
    body = "\n".join(
        "<tr>"
        + "".join(
            f"<td{style}>{html.escape(_cell_text(v))}</td>" for v, style in zip(row, styles, strict=True)
        )
        + "</tr>"
        for row in cells
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _cell_text(value: object, max_chars: int = 200) -> str:
    if value is _MISSING:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="milliseconds")
    elif isinstance(value, dict | list):
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
        except ValueError:  # a circular structure
            text = repr(value)
    else:
        text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
