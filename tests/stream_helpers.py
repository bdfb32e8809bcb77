"""Small helpers shared by the stream test modules."""

from __future__ import annotations

import anyio
import anyio.lowlevel


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
