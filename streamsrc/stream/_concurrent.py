"""Concurrent and timed stages.

Each runs its concurrent work in a :class:`~streamsrc.stream._core.Helper`
(a task in the terminal operation's task group) and hands chunks to the
consuming stage through a memory object stream, so no async generator ever
yields inside a cancel scope or task group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from streamsrc.effect import run_effect
from streamsrc.stream._core import (
    Body,
    Helper,
    Lease,
    Pull,
    Run,
    Signal,
    aclosing,
    cancel_requested,
    combine,
    drain,
    errors_of,
    from_helper,
    pump,
)

T = TypeVar("T")
U = TypeVar("U")


def merge(left: Pull[T], right: Pull[T], halt: str = "none") -> Pull[T]:
    """Both sides at once; end when both end, or once a side ``halt`` names ends (stopping the other)."""

    def body(run: Run, helper: Helper[Any]) -> Body[T]:
        async def main(send: MemoryObjectSendStream[list[T]]) -> None:
            async with anyio.create_task_group() as tg:

                async def side(pull: Pull[T], halts: bool) -> None:
                    await pump(pull, run, send)
                    if halts:
                        tg.cancel_scope.cancel()

                tg.start_soon(side, left, halt in ("left", "both"))
                tg.start_soon(side, right, halt in ("right", "both"))

        return main

    return from_helper(body, urgent=True)


def switch_map(outer: Pull[T], f: Callable[[T], Pull[U]]) -> Pull[U]:
    """For each element, the stream ``f`` makes of it; a new element stops the inner stream still running."""

    def body(run: Run, helper: Helper[Any]) -> Body[U]:
        async def main(send: MemoryObjectSendStream[list[U]]) -> None:
            async with anyio.create_task_group() as tg:
                current: tuple[anyio.CancelScope, anyio.Event] | None = None

                async def inner(pull: Pull[U], scope: anyio.CancelScope, done: anyio.Event) -> None:
                    try:
                        with scope:
                            await pump(pull, run, send)
                    finally:
                        done.set()

                async with aclosing(outer(run)) as xs:
                    async for chunk in xs:
                        for x in chunk:
                            pull = f(x)
                            if current is not None:
                                current[0].cancel()
                                await current[1].wait()
                            current = (anyio.CancelScope(), anyio.Event())
                            tg.start_soon(inner, pull, *current)

        return main

    return from_helper(body, urgent=True)


def debounce(pull: Pull[T], seconds: float) -> Pull[T]:
    """The last element of each burst: one that no newer element followed within ``seconds``."""

    def body(run: Run, helper: Helper[Any]) -> Body[T]:
        async def main(send: MemoryObjectSendStream[list[T]]) -> None:
            latest: list[T] = []
            arrived = Signal()
            stamp = 0.0
            exhausted = False

            async def producer() -> None:
                nonlocal stamp, exhausted
                async with aclosing(pull(run)) as up:
                    async for chunk in up:
                        latest[:] = chunk[-1:]
                        stamp = anyio.current_time()
                        arrived.wake()
                exhausted = True
                arrived.wake()

            async with anyio.create_task_group() as tg:
                tg.start_soon(producer)
                while True:
                    if not latest:
                        if exhausted:
                            return
                        await arrived.wait()
                        continue
                    wait = stamp + seconds - anyio.current_time()
                    if exhausted or wait <= 0:
                        out = latest[:]
                        latest.clear()
                        await send.send(out)
                        continue
                    with anyio.move_on_after(wait):
                        await arrived.wait()

        return main

    return from_helper(body)


def broadcast_through(pull: Pull[T], pipes: list[Callable[[Pull[T]], Pull[Any]]], emit: bool) -> Pull[Any]:
    """Every chunk of ``pull`` to each pipe (the slowest sets the pace); their outputs merged.

    With ``emit`` false (``observe``) the pipes' outputs are dropped and the
    source's chunks go downstream instead, each after every pipe has taken it.
    """

    def body(run: Run, helper: Helper[Any]) -> Body[Any]:
        async def main(send: MemoryObjectSendStream[list[Any]]) -> None:
            channels = [anyio.create_memory_object_stream[list[T]](0) for _ in pipes]

            async def branch(pipe: Callable[[Pull[T]], Pull[Any]], index: int) -> None:
                receive = channels[index][1]

                async def source(run: Run) -> AsyncGenerator[list[T], None]:
                    async with receive:
                        async for chunk in receive:
                            yield chunk

                if emit:
                    await pump(pipe(source), run, send)
                else:
                    await drain(pipe(source), run)
                with receive:  # a pipe that stops early stops taking chunks
                    pass

            async with anyio.create_task_group() as tg:
                for index, pipe in enumerate(pipes):
                    tg.start_soon(branch, pipe, index)
                senders = [s for s, _ in channels]
                async with aclosing(pull(run)) as up:
                    async for chunk in up:
                        for s in senders:
                            with suppress(anyio.BrokenResourceError):
                                await s.send(chunk)
                        if not emit:
                            await send.send(chunk)
                for s in senders:
                    s.close()

        return main

    return from_helper(body, urgent=True)


def par_join(outer: Pull[Pull[T]], n: int) -> Pull[T]:
    if n < 1:
        raise ValueError("par_join needs n >= 1")

    def body(run: Run, helper: Helper[Any]) -> Body[T]:
        async def main(send: MemoryObjectSendStream[list[T]]) -> None:
            slots = anyio.Semaphore(n)

            async def inner(pull: Pull[T]) -> None:
                try:
                    await pump(pull, run, send)
                finally:
                    slots.release()

            # The outer stream's resources outlive every inner stream (as in fs2): it closes after
            # the task group, and the releases of resources it closed earlier wait for the end too.
            lease = Lease()
            try:
                async with aclosing(outer(run)) as pulls, anyio.create_task_group() as tg:
                    while (chunk := await lease.pulling(pulls)) is not None:
                        for pull in chunk:
                            await slots.acquire()
                            tg.start_soon(inner, pull)
            except BaseException as exc:
                try:
                    await lease.end()
                except Exception as release_error:
                    raise combine([exc, release_error]) from None
                raise
            await lease.end()

        return main

    return from_helper(body, urgent=True)


def par_eval_map(pull: Pull[T], n: int, f: Callable[[T], Any], ordered: bool) -> Pull[Any]:
    """Evaluate ``f`` on up to ``n`` elements at once with a fixed pool of ``n`` workers.

    A feeder task reads upstream at most ``16 * n`` elements (plus one chunk)
    ahead of what has been emitted; workers take elements from a shared deque;
    the helper's main task gathers results, in input order when ``ordered``,
    and sends them downstream a chunk at a time.
    """
    if n < 1:
        raise ValueError("par_eval_map needs n >= 1")
    ahead = 16 * n  # room for stragglers: one late element holds back every later result

    def body(run: Run, helper: Helper[Any]) -> Body[Any]:
        async def main(send: MemoryObjectSendStream[list[Any]]) -> None:
            pending: deque[tuple[int, T]] = deque()
            ready: dict[int, Any] = {}
            unordered: list[Any] = []
            work, room, done = Signal(), Signal(), Signal()
            issued = emitted = 0
            exhausted = False

            async def feeder() -> None:
                nonlocal issued, exhausted
                async with aclosing(pull(run)) as up:
                    async for chunk in up:
                        pending.extend(zip(range(issued, issued + len(chunk)), chunk, strict=True))
                        issued += len(chunk)
                        work.wake()
                        while issued - emitted >= ahead:
                            await room.wait()
                exhausted = True
                work.wake()
                done.wake()

            async def worker() -> None:
                while True:
                    while not pending:
                        if exhausted:
                            return
                        await work.wait()
                    index, x = pending.popleft()
                    try:
                        y = await run_effect(f(x))
                    except Exception:
                        if cancel_requested():
                            return  # the stream no longer needs this result (fs2 drops its error too)
                        raise
                    if ordered:
                        ready[index] = y
                        if index == emitted:
                            done.wake()
                    else:
                        unordered.append(y)
                        done.wake()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feeder)
                for _ in range(n):
                    tg.start_soon(worker)
                while True:
                    out: list[Any] = []
                    if ordered:
                        while emitted + len(out) in ready:
                            out.append(ready.pop(emitted + len(out)))
                    else:
                        out = unordered.copy()
                        unordered.clear()
                    if out:
                        emitted += len(out)
                        room.wake()
                        await send.send(out)
                    elif exhausted and emitted == issued:
                        return
                    else:
                        await done.wait()

        return main

    # Room for one chunk: workers and the gathering go on while downstream takes the last one.
    return from_helper(body, buffer=1)


def buffer(pull: Pull[T], n: int) -> Pull[T]:
    if n < 1:
        raise ValueError("buffer needs n >= 1")

    def body(run: Run, helper: Helper[Any]) -> Body[T]:
        async def main(send: MemoryObjectSendStream[list[T]]) -> None:
            await pump(pull, run, send)

        return main

    return from_helper(body, buffer=n)


def group_within(pull: Pull[T], n: int, seconds: float) -> Pull[list[T]]:
    """Groups of up to ``n`` elements; a group is cut early ``seconds`` after its first element.

    A producer task moves upstream chunks into a shared list (at most about
    ``n`` elements plus one chunk ahead); the helper's main task cuts groups
    from it. Waiting for the deadline cancels only a wait on a :class:`Signal`,
    never a receive, so no element can be lost to the timer.
    """
    if n < 1 or seconds <= 0:
        raise ValueError("group_within needs n >= 1 and seconds > 0")

    def body(run: Run, helper: Helper[Any]) -> Body[list[T]]:
        async def main(send: MemoryObjectSendStream[list[list[T]]]) -> None:
            buf: list[T] = []
            arrived, room = Signal(), Signal()
            exhausted = False

            async def producer() -> None:
                nonlocal exhausted
                async with aclosing(pull(run)) as up:
                    async for chunk in up:
                        buf.extend(chunk)
                        arrived.wake()
                        while len(buf) >= n:
                            await room.wait()
                exhausted = True
                arrived.wake()

            async with anyio.create_task_group() as tg:
                tg.start_soon(producer)
                deadline: float | None = None
                while True:
                    if len(buf) >= n:
                        full = len(buf) - len(buf) % n
                        groups = [buf[i : i + n] for i in range(0, full, n)]
                        del buf[:full]
                        room.wake()
                        deadline = anyio.current_time() + seconds if buf else None
                        await send.send(groups)
                    elif exhausted:
                        if buf:
                            await send.send([buf[:]])
                        return
                    elif not buf:
                        await arrived.wait()
                    elif deadline is None:
                        deadline = anyio.current_time() + seconds
                    elif anyio.current_time() >= deadline:
                        group = buf[:]
                        del buf[:]
                        room.wake()
                        deadline = None
                        await send.send([group])
                    else:
                        with anyio.move_on_after(deadline - anyio.current_time()):
                            await arrived.wait()

        return main

    return from_helper(body)


def watched(pull: Pull[T], watch: Callable[[Helper[T]], Awaitable[None]]) -> Pull[T]:
    """``pull``'s chunks, while ``watch(helper)`` runs beside it (it may interrupt or fail the stream).

    The watcher lives until downstream has closed this stage, not only until
    upstream ends, so an element still being worked on downstream (an
    ``eval_map`` waiting on a hung call) is covered by what it does.
    """

    async def out(run: Run) -> AsyncGenerator[list[T], None]:
        helper: Helper[T] = Helper(run, None, 0, urgent=True)
        scope = anyio.CancelScope()
        watched = anyio.Event()

        async def watcher() -> None:
            try:
                with scope:
                    try:
                        await watch(helper)
                    except BaseException as exc:
                        errors = errors_of(exc)
                        if not errors:
                            raise
                        helper.fail(combine(errors))
            finally:
                watched.set()

        async def main(send: MemoryObjectSendStream[list[T]]) -> None:
            await pump(pull, run, send)

        run.task_group.start_soon(watcher)
        helper.start(main)
        try:
            while (chunk := await helper.receive()) is not None:
                yield chunk
        finally:
            scope.cancel()
            with anyio.CancelScope(shield=True):
                await watched.wait()
            await helper.aclose()

    return out


def concurrently(pull: Pull[T], background: Pull[Any]) -> Pull[T]:
    async def watch(helper: Helper[T]) -> None:
        async with anyio.create_task_group() as tg:
            await drain(background, Run(tg))

    return watched(pull, watch)


def interrupt_when(pull: Pull[T], signal: Callable[[], Awaitable[object]]) -> Pull[T]:
    async def watch(helper: Helper[T]) -> None:
        await signal()
        helper.interrupt()

    return watched(pull, watch)


def timeout(pull: Pull[T], seconds: float) -> Pull[T]:
    """Fail with ``TimeoutError`` once ``seconds`` have passed, unless downstream has closed this stage."""

    async def watch(helper: Helper[T]) -> None:
        await anyio.sleep(seconds)
        raise TimeoutError(f"the stream did not end within {seconds:g} s")

    return watched(pull, watch)
