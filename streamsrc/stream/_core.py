"""The small core under ``Stream``: pulls, runs, helper tasks, and running a pull.

A *pull* is an async generator function from a :class:`Run` to chunks
(non-empty lists of elements). A ``Stream`` is a facade over one pull;
running the stream calls the pull afresh, which is what makes a stream a
re-runnable value rather than a one-shot generator.

Rules every pull keeps (the combinators in ``_pipes`` and ``_concurrent`` and
the sources in ``_sources`` are written to them):

* It never yields an empty chunk, and never mutates a chunk after yielding it.
* It closes its upstream pulls before it finishes, however it finishes
  (``contextlib.aclosing``), and awaits in ``finally`` only under a shielded
  cancel scope, so finalizers run exactly once, innermost first.
* It never yields while inside a cancel scope or task group. Work that must
  run concurrently is a :class:`Helper`: a task started in the task group of
  the terminal operation (``Run.task_group``), owning its own cancel scope and
  handing chunks over through a memory object stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Generic, TypeAlias, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

T = TypeVar("T")

CHUNK_SIZE = 256
"""How many elements sources such as ``range`` and ``emits`` put in one chunk."""


class Run:
    """One execution of a stream: what every stage of it shares."""

    __slots__ = ("task_group",)

    def __init__(self, task_group: TaskGroup) -> None:
        self.task_group = task_group


Pull: TypeAlias = Callable[[Run], AsyncGenerator[list[T], None]]


def unwrap_group(exc: BaseException) -> BaseException:
    """The error to show for what a task group raised: never a group.

    A group is flattened: a lone exception comes out as itself; when several
    branches failed together, the first one comes out (a ``BaseException``
    such as ``KeyboardInterrupt`` first), with a note naming the others.
    Callers can then ``except ValueError`` as if nothing ran concurrently.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = list(_leaves(exc))
    first = next((e for e in leaves if not isinstance(e, Exception)), leaves[0])
    others = [e for e in leaves if e is not first]
    if others:
        first.add_note(
            f"({len(others)} more concurrent failure(s): {', '.join(repr(e) for e in others[:5])})"
        )
    return first


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def reraise_unwrapped(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise :func:`unwrap_group` of what a task group raised, keeping the leaf's own context."""
    leaf = unwrap_group(group)
    if leaf is group:
        raise group
    context = leaf.__context__
    try:
        raise leaf
    finally:
        leaf.__context__ = context


@asynccontextmanager
async def running(pull: Pull[T]) -> AsyncIterator[AsyncGenerator[list[T], None]]:
    """Run ``pull`` inside a fresh task group; yield its chunks; close everything on exit.

    The chunk iterator is closed before the task group exits, so every stage's
    finalizer (including those that stop helper tasks) has run by the time the
    task group waits for its children.
    """
    try:
        async with anyio.create_task_group() as tg, aclosing(pull(Run(tg))) as chunks:
            yield chunks
    except BaseExceptionGroup as group:
        reraise_unwrapped(group)


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


Body: TypeAlias = Callable[[MemoryObjectSendStream[list[T]]], Awaitable[None]]


class Helper(Generic[T]):
    """A task that produces chunks for the stage that started it.

    ``body`` receives the sending end of a memory object stream with room for
    ``buffer`` chunks; the stage calls :meth:`receive` until it returns
    ``None``. An exception in ``body`` is re-raised by :meth:`receive` in the
    stage's own task (unwrapped from a one-exception group). :meth:`aclose`
    cancels the helper and waits, shielded, until its finalizers have run.
    """

    __slots__ = ("_cancel", "_done", "_recv", "_send")

    def __init__(self, run: Run, body: Body[T], buffer: int = 0) -> None:
        send, recv = anyio.create_memory_object_stream[list[T] | _Raised](buffer)
        self._send = send
        self._recv = recv
        self._cancel = anyio.CancelScope()
        self._done = anyio.Event()
        run.task_group.start_soon(self._main, body)

    async def _main(self, body: Body[T]) -> None:
        try:
            with self._cancel:
                async with self._send:
                    try:
                        await body(self._send)
                    except Exception as exc:
                        with suppress(anyio.BrokenResourceError):
                            await self._send.send(_Raised(unwrap_group(exc)))
        finally:
            self._done.set()

    async def receive(self) -> list[T] | None:
        """The next chunk, or ``None`` once the helper has finished."""
        try:
            msg = await self._recv.receive()
        except anyio.EndOfStream:
            return None
        if type(msg) is _Raised:
            raise msg.exc
        return msg  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Cancel the helper and wait for it to finish."""
        self._cancel.cancel()
        with anyio.CancelScope(shield=True):
            await self._done.wait()
        self._recv.close()


async def pump(pull: Pull[T], run: Run, send: MemoryObjectSendStream[list[T]]) -> None:
    """Send every chunk of ``pull`` to ``send`` (waiting for room: backpressure)."""
    async with aclosing(pull(run)) as chunks:
        async for chunk in chunks:
            await send.send(chunk)


def from_helper(body: Callable[[Run], Body[T]], buffer: int = 0) -> Pull[T]:
    """A pull that emits what a :class:`Helper` running ``body(run)`` sends."""

    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        helper = Helper(run, body(run), buffer)
        try:
            while (chunk := await helper.receive()) is not None:
                yield chunk
        finally:
            await helper.aclose()

    return pull


class Signal:
    """A level-less wake-up call for tasks of one event loop (a reusable ``Event``)."""

    __slots__ = ("_event", "_waiting")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._waiting = 0

    def wake(self) -> None:
        """Wake every task waiting now; later waiters wait for the next wake."""
        if self._waiting:
            self._event.set()
            self._event = anyio.Event()

    async def wait(self) -> None:
        """Wait for the next :meth:`wake`."""
        self._waiting += 1
        try:
            await self._event.wait()
        finally:
            self._waiting -= 1
