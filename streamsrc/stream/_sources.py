"""Pulls that start a stream: constants, ranges, effects, pagination, resources, time."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

from streamsrc.effect import run_effect
from streamsrc.stream._core import ExitCase, Pull, Run, current_lease, exit_case

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


def range_(start: int, stop: int, step: int, chunk_size: int) -> Pull[int]:
    if step == 0:
        raise ValueError("range step must not be zero")

    async def pull(run: Run) -> AsyncGenerator[list[int], None]:
        span = step * chunk_size
        for lo in range(start, stop, span):
            hi = min(lo + span, stop) if step > 0 else max(lo + span, stop)
            yield list(range(lo, hi, step))

    return pull


def eval_(effect: Callable[[], Any] | Awaitable[Any]) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        value = effect() if callable(effect) else effect
        yield [await run_effect(value)]

    return pull


def repeat_eval(effect: Callable[[], Any]) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        while True:
            yield [await run_effect(effect())]

    return pull


def unfold_chunk_eval(state: S, step: Callable[[S], Any]) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        current = state
        while True:
            page = await run_effect(step(current))
            if page is None:
                return
            chunk, current = page
            if chunk:
                yield list(chunk)

    return pull


def from_async_iterable(source: AsyncIterable[T]) -> Pull[T]:
    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        iterator = aiter(source)
        try:
            async for item in iterator:
                yield [item]
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    return pull


def bracket(
    acquire: Callable[[], Awaitable[R]], release: Callable[[R, ExitCase], Awaitable[object]]
) -> Pull[R]:
    """One resource; ``acquire`` cannot be cancelled, so ``release`` runs once it has completed."""

    async def pull(run: Run) -> AsyncGenerator[list[R], None]:
        with anyio.CancelScope(shield=True):
            resource = await acquire()
        lease = current_lease()
        case = ExitCase.SUCCEEDED
        try:
            yield [resource]
        except BaseException as exc:
            case = exit_case(exc)
            raise
        finally:
            if lease is not None:
                lease.hold(partial(release, resource, case))
            else:
                with anyio.CancelScope(shield=True):
                    await release(resource, case)

    return pull


def fixed_delay(seconds: float) -> Pull[None]:
    async def pull(run: Run) -> AsyncGenerator[list[None], None]:
        while True:
            await anyio.sleep(seconds)
            yield [None]

    return pull


def iterate(start: T, f: Callable[[T], T], chunk_size: int) -> Pull[T]:
    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        x = start
        while True:
            chunk = [x]
            for _ in range(chunk_size - 1):
                x = f(x)
                chunk.append(x)
            x = f(x)
            yield chunk

    return pull


def iterate_eval(start: T, f: Callable[[T], Any]) -> Pull[T]:
    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        x = start
        while True:
            yield [x]
            x = await run_effect(f(x))

    return pull


def unfold(state: S, step: Callable[[S], tuple[T, S] | None], chunk_size: int) -> Pull[T]:
    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        current = state
        while True:
            chunk: list[T] = []
            while len(chunk) < chunk_size:
                nxt = step(current)
                if nxt is None:
                    if chunk:
                        yield chunk
                    return
                value, current = nxt
                chunk.append(value)
            yield chunk

    return pull


def unfold_eval(state: S, step: Callable[[S], Any]) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        current = state
        while (nxt := await run_effect(step(current))) is not None:
            value, current = nxt
            yield [value]

    return pull


def awake_every(seconds: float) -> Pull[float]:
    """Seconds since the start at fixed rate, a tick at ``start + k * seconds`` (late ticks not doubled)."""

    async def pull(run: Run) -> AsyncGenerator[list[float], None]:
        start = anyio.current_time()
        k = 1
        while True:
            await anyio.sleep(max(0.0, start + k * seconds - anyio.current_time()))
            now = anyio.current_time()
            yield [now - start]
            k = max(k + 1, int((anyio.current_time() - start) / seconds) + 1)

    return pull
