"""Counting what a cancelled operation could leave behind: tasks, threads, file descriptors, sockets.

Every count here is read from the running process (``asyncio.all_tasks()``,
trio's task tree, ``/proc/self/fd``, ``/proc/self/net/tcp*``), never from the
library under test, so a leak the library does not know about is still seen.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel


def task_names() -> list[str]:
    """The tasks of the running event loop (asyncio: ``all_tasks()``; trio: the root task's tree)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no asyncio loop: trio
        import trio

        return sorted(task.name for task in _trio_tasks(trio.lowlevel.current_root_task()))
    return sorted(_asyncio_name(task) for task in tasks)


def _asyncio_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()


def _trio_tasks(root: Any) -> Iterator[Any]:
    if root is None:
        return
    yield root
    for nursery in root.child_nurseries:
        for child in nursery.child_tasks:
            yield from _trio_tasks(child)


def threads(prefix: str = "streamsrc-") -> list[str]:
    """The names of the threads alive now whose name starts with ``prefix`` (the stores' own)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))


def open_files(prefix: str) -> list[str]:
    """The open file descriptors of this process on paths starting with ``prefix`` (a SQLite file
    and its ``-wal`` and ``-shm``), as the paths they point to."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing (the listing's own descriptor, say)
            continue
        if target.startswith(prefix):
            found.append(target)
    return sorted(found)


def client_sockets(port: int) -> int:
    """The TCP sockets this process holds open to ``port`` on any address (client side only)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and fields[9] in inodes:
                        count += 1
        except FileNotFoundError:
            continue
    return count


async def settle() -> None:
    """Let every task that can run do so (what a cancelled operation left to finish), on either backend."""
    for _ in range(3):
        await anyio.wait_all_tasks_blocked()
        await anyio.lowlevel.checkpoint()


async def eventually_equal(
    measure: Callable[[], Awaitable[dict[str, Any]]], expected: dict[str, Any], limit: float = 10.0
) -> dict[str, Any]:
    """Measure until the counts equal ``expected`` (or ``limit`` seconds passed) and return the last.

    Some releases finish outside the event loop (a server ending a session, a
    thread closing a connection): this waits for them, and the caller
    asserts on what it returns, so a real leak still fails, after ``limit``.
    """
    with anyio.move_on_after(limit):
        delay = 0.0
        while True:
            await settle()
            now = await measure()
            if now == expected:
                return now
            await anyio.sleep(delay)
            delay = min(0.05, delay + 0.005)
    return await measure()
