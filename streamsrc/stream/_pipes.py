"""Sequential stages: each takes the pull(s) upstream and returns a new pull.

They work a chunk at a time, so the per-element cost is close to a plain
loop, and they never emit an empty chunk.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from itertools import accumulate, dropwhile, pairwise, takewhile
from typing import Any, TypeVar

import anyio
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.effect import RetryPolicy, run_effect
from streamsrc.stream._core import Pull, Run, aclosing

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
V = TypeVar("V")

_UNSET: Any = object()


def collect_chunk(f: Callable[[T], Maybe[U]]) -> Callable[[list[T]], list[U]]:
    """The chunk function of ``collect``: keep ``x`` for each ``Some(x)``."""

    def chunk_f(chunk: list[T]) -> list[U]:
        return [m.unwrap() for m in map(f, chunk) if m is not Nothing]

    return chunk_f


def map_chunks(pull: Pull[T], f: Callable[[list[T]], Sequence[U]]) -> Pull[U]:
    async def out(run: Run) -> AsyncGenerator[list[U], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if result := f(chunk):
                    yield list(result)

    return out


def eval_map(pull: Pull[T], f: Callable[[T], Any]) -> Pull[Any]:
    # One element per chunk out: each result goes downstream before the next effect
    # runs, so ``take(n)`` runs exactly n effects and a failure loses no result.
    async def out(run: Run) -> AsyncGenerator[list[Any], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    yield [await run_effect(f(x))]

    return out


def eval_map_chunks(pull: Pull[T], f: Callable[[list[T]], Any]) -> Pull[Any]:
    async def out(run: Run) -> AsyncGenerator[list[Any], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if result := await run_effect(f(chunk)):
                    yield list(result)

    return out


def eval_tap(pull: Pull[T], f: Callable[[T], Any]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    await run_effect(f(x))
                    yield [x]

    return out


def foreach(pull: Pull[T], f: Callable[[T], Any]) -> Pull[Any]:
    async def out(run: Run) -> AsyncGenerator[list[Any], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    await run_effect(f(x))
        return
        yield  # emits nothing

    return out


def scan(pull: Pull[T], init: U, f: Callable[[U, T], U]) -> Pull[U]:
    async def out(run: Run) -> AsyncGenerator[list[U], None]:
        acc = init
        yield [acc]
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                steps = accumulate(chunk, f, initial=acc)
                next(steps)
                result: list[U] = list(steps)
                acc = result[-1]
                yield result

    return out


def take(pull: Pull[T], n: int) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        left = n
        if left <= 0:
            return
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if len(chunk) < left:
                    left -= len(chunk)
                    yield chunk
                else:
                    yield chunk[:left]
                    return

    return out


def take_while(pull: Pull[T], p: Callable[[T], object], take_failure: bool) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                kept = list(takewhile(p, chunk))
                if len(kept) == len(chunk):
                    yield chunk
                    continue
                if take_failure:
                    kept.append(chunk[len(kept)])
                if kept:
                    yield kept
                return

    return out


def drop(pull: Pull[T], n: int) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        left = n
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if left <= 0:
                    yield chunk
                elif len(chunk) <= left:
                    left -= len(chunk)
                else:
                    yield chunk[left:]
                    left = 0

    return out


def drop_while(pull: Pull[T], p: Callable[[T], object]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        dropping = True
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if dropping:
                    chunk = list(dropwhile(p, chunk))
                    if not chunk:
                        continue
                    dropping = False
                yield chunk

    return out


def chunk_n(pull: Pull[T], n: int, allow_fewer: bool) -> Pull[list[T]]:
    if n < 1:
        raise ValueError("chunk_n needs n >= 1")

    async def out(run: Run) -> AsyncGenerator[list[list[T]], None]:
        buffer: list[T] = []
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                buffer.extend(chunk)
                if len(buffer) >= n:
                    full = len(buffer) - len(buffer) % n
                    yield [buffer[i : i + n] for i in range(0, full, n)]
                    buffer = buffer[full:]
        if buffer and allow_fewer:
            yield [buffer]

    return out


def chunks(pull: Pull[T]) -> Pull[list[T]]:
    async def out(run: Run) -> AsyncGenerator[list[list[T]], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                yield [chunk]

    return out


def unchunks(pull: Pull[Sequence[T]]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for inner in chunk:
                    if inner:
                        yield list(inner)

    return out


def group_adjacent_by(pull: Pull[T], key: Callable[[T], K]) -> Pull[tuple[K, list[T]]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[K, list[T]]], None]:
        current: K = _UNSET
        group: list[T] = []
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                done: list[tuple[K, list[T]]] = []
                for x in chunk:
                    k = key(x)
                    if k != current or current is _UNSET:
                        if group:
                            done.append((current, group))
                        current, group = k, []
                    group.append(x)
                if done:
                    yield done
        if group:
            yield [(current, group)]

    return out


def zip_with(left: Pull[T], right: Pull[U], f: Callable[[T, U], V]) -> Pull[V]:
    async def out(run: Run) -> AsyncGenerator[list[V], None]:
        async with aclosing(left(run)) as lefts, aclosing(right(run)) as rights:
            a: list[T] = []
            b: list[U] = []
            while True:
                if not a and (a := await anext(lefts, None)) is None:  # type: ignore[arg-type]
                    return
                if not b and (b := await anext(rights, None)) is None:  # type: ignore[arg-type]
                    return
                n = min(len(a), len(b))
                yield list(map(f, a[:n], b[:n]))
                a, b = a[n:], b[n:]

    return out


def zip_all(left: Pull[T], right: Pull[U], pad_left: T, pad_right: U) -> Pull[tuple[T, U]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[T, U]], None]:
        async with aclosing(left(run)) as lefts, aclosing(right(run)) as rights:
            a: list[T] | None = []
            b: list[U] | None = []
            while True:
                if a is not None and not a:
                    a = await anext(lefts, None)
                if b is not None and not b:
                    b = await anext(rights, None)
                if a is None and b is None:
                    return
                if a is None:
                    yield [(pad_left, y) for y in b]  # type: ignore[union-attr]
                    b = []
                elif b is None:
                    yield [(x, pad_right) for x in a]
                    a = []
                else:
                    n = min(len(a), len(b))
                    yield list(zip(a[:n], b[:n], strict=True))
                    a, b = a[n:], b[n:]

    return out


def zip_with_next(pull: Pull[T]) -> Pull[tuple[T, Maybe[T]]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[T, Maybe[T]]], None]:
        last: Any = _UNSET
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                xs = chunk if last is _UNSET else [last, *chunk]
                last = xs[-1]
                if len(xs) > 1:
                    yield [(x, Some(y)) for x, y in pairwise(xs)]
        if last is not _UNSET:
            yield [(last, Nothing)]

    return out


def zip_with_previous(pull: Pull[T]) -> Pull[tuple[Maybe[T], T]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[Maybe[T], T]], None]:
        previous: Maybe[T] = Nothing
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                pairs = [(previous, chunk[0])]
                pairs.extend((Some(x), y) for x, y in pairwise(chunk))
                previous = Some(chunk[-1])
                yield pairs

    return out


def zip_with_index(pull: Pull[T]) -> Pull[tuple[T, int]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[T, int]], None]:
        index = 0
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                yield list(zip(chunk, range(index, index + len(chunk)), strict=True))
                index += len(chunk)

    return out


def interleave(left: Pull[T], right: Pull[T]) -> Pull[T]:
    return map_chunks(zip_with(left, right, pair), lambda pairs: [x for pair in pairs for x in pair])


def pair(x: T, y: U) -> tuple[T, U]:
    return (x, y)


def changes_by(pull: Pull[T], key: Callable[[T], object]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        last: object = _UNSET
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                kept = []
                for x in chunk:
                    k = key(x)
                    if last is _UNSET or k != last:
                        kept.append(x)
                        last = k
                if kept:
                    yield kept

    return out


def on_finalize(pull: Pull[T], finalizer: Callable[[], Any]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        try:
            async with aclosing(pull(run)) as up:
                async for chunk in up:
                    yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await run_effect(finalizer())

    return out


def attempt(pull: Pull[T]) -> Pull[Result[T, Exception]]:
    async def out(run: Run) -> AsyncGenerator[list[Result[T, Exception]], None]:
        try:
            async with aclosing(pull(run)) as up:
                async for chunk in up:
                    yield list(map(Success, chunk))
        except Exception as exc:
            yield [Failure(exc)]

    return out


def retry(pull: Pull[T], policy: RetryPolicy) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        attempt_no = 0
        while True:
            try:
                async with aclosing(pull(run)) as up:
                    async for chunk in up:
                        yield chunk
                return
            except Exception as exc:
                if not policy.should_retry(attempt_no, exc):
                    raise
            await anyio.sleep(policy.delay(attempt_no))
            attempt_no += 1

    return out


def scan1(pull: Pull[T], f: Callable[[T, T], T]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        acc: Any = _UNSET
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                steps = list(accumulate(chunk, f) if acc is _UNSET else accumulate(chunk, f, initial=acc))
                if acc is not _UNSET:
                    del steps[0]
                acc = steps[-1]
                yield steps

    return out


def reduce(pull: Pull[T], f: Callable[[T, T], T]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        acc: Any = _UNSET
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                acc = functools.reduce(f, chunk) if acc is _UNSET else functools.reduce(f, chunk, acc)
        if acc is not _UNSET:
            yield [acc]

    return out


def eval_scan(pull: Pull[T], init: U, f: Callable[[U, T], Any]) -> Pull[U]:
    async def out(run: Run) -> AsyncGenerator[list[U], None]:
        acc = init
        yield [acc]
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    acc = await run_effect(f(acc, x))
                    yield [acc]

    return out


def map_accumulate(pull: Pull[T], init: S, f: Callable[[S, T], tuple[S, U]]) -> Pull[tuple[S, U]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[S, U]], None]:
        state = init
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                result = []
                for x in chunk:
                    state, y = f(state, x)
                    result.append((state, y))
                yield result

    return out


def eval_filter(pull: Pull[T], p: Callable[[T], Any]) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    if await run_effect(p(x)):
                        yield [x]

    return out


def sliding(pull: Pull[T], n: int, step: int) -> Pull[list[T]]:
    """Windows of ``n`` elements starting every ``step`` elements (Scala's ``List.sliding(n, step)``)."""
    if n < 1 or step < 1:
        raise ValueError("sliding needs n >= 1 and step >= 1")

    async def out(run: Run) -> AsyncGenerator[list[list[T]], None]:
        window: deque[T] = deque()
        skip = 0  # elements still to drop before the next window starts (when step > n)
        fresh = 0  # elements in ``window`` not yet emitted in any window
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                windows: list[list[T]] = []
                for x in chunk:
                    if skip:
                        skip -= 1
                        continue
                    window.append(x)
                    fresh += 1
                    if len(window) == n:
                        windows.append(list(window))
                        fresh = 0
                        for _ in range(min(step, n)):
                            window.popleft()
                        skip = max(0, step - n)
                if windows:
                    yield windows
        if fresh:
            yield [list(window)]

    return out


def split(pull: Pull[T], p: Callable[[T], object]) -> Pull[list[T]]:
    async def out(run: Run) -> AsyncGenerator[list[list[T]], None]:
        current: list[T] = []
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                parts: list[list[T]] = []
                for x in chunk:
                    if p(x):
                        parts.append(current)
                        current = []
                    else:
                        current.append(x)
                if parts:
                    yield parts
        if current:
            yield [current]

    return out


def intersperse(pull: Pull[T], separator: T) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        first = True
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                result: list[T] = []
                for x in chunk:
                    if not first:
                        result.append(separator)
                    result.append(x)
                    first = False
                yield result

    return out


def chunk_limit(pull: Pull[T], n: int) -> Pull[T]:
    if n < 1:
        raise ValueError("chunk_limit needs n >= 1")

    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if len(chunk) <= n:
                    yield chunk
                else:
                    for i in range(0, len(chunk), n):
                        yield chunk[i : i + n]

    return out


def chunk_min(pull: Pull[T], n: int, allow_fewer: bool) -> Pull[T]:
    if n < 1:
        raise ValueError("chunk_min needs n >= 1")

    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        buffer: list[T] = []
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                if not buffer and len(chunk) >= n:
                    yield chunk
                    continue
                buffer = buffer + chunk
                if len(buffer) >= n:
                    yield buffer
                    buffer = []
        if buffer and allow_fewer:
            yield buffer

    return out


def rechunk(pull: Pull[T], n: int) -> Pull[T]:
    if n < 1:
        raise ValueError("rechunk needs n >= 1")

    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        buffer: list[T] = []
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                buffer.extend(chunk)
                while len(buffer) >= n:
                    yield buffer[:n]
                    buffer = buffer[n:]
        if buffer:
            yield buffer

    return out


def metered(pull: Pull[T], seconds: float, immediately: bool) -> Pull[T]:
    """One element per ``seconds`` at fixed rate: element k goes at ``start + (k + 1) * seconds``."""

    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        start = anyio.current_time()
        k = 0 if immediately else 1
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    await anyio.sleep(max(0.0, start + k * seconds - anyio.current_time()))
                    k = max(k + 1, int((anyio.current_time() - start) / seconds) + 1)
                    yield [x]

    return out


def spaced(pull: Pull[T], seconds: float) -> Pull[T]:
    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        first = True
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for x in chunk:
                    if not first:
                        await anyio.sleep(seconds)
                    first = False
                    yield [x]

    return out
