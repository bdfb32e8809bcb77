"""Sequential stages: each takes the pull(s) upstream and returns a new pull.

They work a chunk at a time, so the per-element cost is close to a plain
loop, and they never emit an empty chunk.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from itertools import accumulate, dropwhile, takewhile
from typing import Any, TypeVar

import anyio
from returns.maybe import Maybe, Nothing
from returns.result import Failure, Result, Success

from streamsrc.effect import RetryPolicy, run_effect
from streamsrc.stream._core import Pull, Run, aclosing

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K", bound=Hashable)

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


def zip_(left: Pull[T], right: Pull[U]) -> Pull[tuple[T, U]]:
    async def out(run: Run) -> AsyncGenerator[list[tuple[T, U]], None]:
        async with aclosing(left(run)) as lefts, aclosing(right(run)) as rights:
            a: list[T] = []
            b: list[U] = []
            while True:
                if not a and (a := await anext(lefts, None)) is None:  # type: ignore[arg-type]
                    return
                if not b and (b := await anext(rights, None)) is None:  # type: ignore[arg-type]
                    return
                n = min(len(a), len(b))
                yield list(zip(a[:n], b[:n], strict=True))
                a, b = a[n:], b[n:]

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
    return map_chunks(zip_(left, right), lambda pairs: [x for pair in pairs for x in pair])


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
