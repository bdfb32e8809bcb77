"""Small helpers shared by the stream test modules."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from streamsrc import Stream


def task_count() -> int:
    """How many tasks the event loop runs now (to check that a stage leaves none behind)."""
    return len(anyio.get_running_tasks())


async def checkpoint(_: object) -> None:
    """An effect that only yields to the event loop."""
    await anyio.lowlevel.checkpoint()


async def forever() -> int:
    """An effect that never finishes (until cancelled)."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def drain_cancelled_once(stream: Stream[Any], blocked: anyio.Event) -> bool:
    """Drain ``stream`` in a task, cancel it once ``blocked`` is set; whether the drain finished."""
    finished = False

    async def consume() -> None:
        nonlocal finished
        await stream.drain()
        finished = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await blocked.wait()
        tg.cancel_scope.cancel()
    return finished
