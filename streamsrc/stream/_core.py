"""The small core under ``Stream``: pulls, runs, drivers, helper tasks, the error rule, and running a pull.

A *pull* is an async generator function from a :class:`Run` to chunks
(non-empty lists of elements). A ``Stream`` is a facade over a small tree of
nodes (``_nodes``) whose leaves are pulls; running the stream compiles the
tree to one pull and calls it afresh, which is what makes a stream a
re-runnable value rather than a one-shot generator.

Rules every pull keeps (the combinators in ``_pipes`` and ``_concurrent``, the
sources in ``_sources`` and the interpreter in ``_nodes`` are written to them):

* It never yields an empty chunk, and never mutates a chunk after yielding it.
* It closes its upstream pulls before it finishes, however it finishes
  (:class:`aclosing`, which tells the brackets it closes why: see
  :class:`ExitCase`), and awaits in ``finally`` only under a shielded cancel
  scope, so finalizers run exactly once, innermost first.
* It never yields while inside a cancel scope or task group. Work that must
  run concurrently is a :class:`Helper`: a task started in the task group of
  the terminal operation (``Run.task_group``), owning its own cancel scope and
  handing chunks over through a memory object stream.
* Whoever pulls is a :class:`Driver` (the terminal operation, a helper's
  pump, a scoped leaf of the interpreter): a concurrent stage that must stop
  the work downstream of it (an interrupt, a failing background stream)
  stops the driver, which cancels what it is waiting on.
* Errors follow one rule (:func:`combine`): the first is raised as itself,
  later ones become notes on it; no group ever reaches a caller.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

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


# ------------------------------------------------------------------ errors: one rule


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``: itself, or every leaf of a (nested) group, in order."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    out: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(reversed(e.exceptions))
        else:
            out.append(e)
    return out


def combine(errors: Sequence[BaseException]) -> BaseException:
    """The one error to raise for ``errors`` (in the order they happened): never a group.

    The rule for every stage, helper task, finalizer and terminal operation:
    the first error is raised as itself, and each later one is added to it as
    a note (``add_note``) naming it, so nothing is lost and ``except
    StoreUnavailable`` still works. A ``BaseException`` that is not an
    ``Exception`` (``KeyboardInterrupt``, a cancellation) comes first when
    there is one.
    """
    flat = [leaf for e in errors for leaf in leaves(e)]
    first = next((e for e in flat if not isinstance(e, Exception)), flat[0])
    for other in flat:
        if other is not first and not isinstance(other, anyio.get_cancelled_exc_class()):
            note = f"another error happened too: {other!r}"
            if note not in getattr(first, "__notes__", ()):
                first.add_note(note)
    return first


def unwrap_group(exc: BaseException) -> BaseException:
    """The error to show for what a task group raised: never a group (see :func:`combine`)."""
    return combine([exc]) if isinstance(exc, BaseExceptionGroup) else exc


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


def errors_of(exc: BaseException) -> list[Exception]:
    """The ``Exception`` leaves of ``exc`` (cancellations and other base exceptions left out)."""
    return [e for e in leaves(exc) if isinstance(e, Exception)]


def cancel_requested() -> bool:
    """Whether the current task is inside a cancelled scope (its next checkpoint would raise)."""
    return anyio.current_effective_deadline() == -math.inf


# ------------------------------------------------------------------ closing, and how a stream ended


class ExitCase:
    """How a stream ended, as the release of :meth:`Stream.bracket_case` sees it (fs2's ``ExitCase``).

    ``succeeded`` when the stream ran to its end or downstream stopped
    pulling (``take``); ``errored`` (with :attr:`error`) when it failed;
    ``canceled`` when it was cancelled or interrupted.

    >>> ExitCase.SUCCEEDED, ExitCase.errored(ValueError("x")), ExitCase.CANCELED
    (ExitCase.SUCCEEDED, ExitCase.errored(ValueError('x')), ExitCase.CANCELED)
    """

    __slots__ = ("error", "kind")

    SUCCEEDED: ClassVar[ExitCase]
    CANCELED: ClassVar[ExitCase]

    def __init__(self, kind: str, error: BaseException | None = None) -> None:
        self.kind = kind
        self.error = error

    @staticmethod
    def errored(error: BaseException) -> ExitCase:
        """The exit case of a stream that failed with ``error``."""
        return ExitCase("errored", error)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExitCase) and (self.kind, self.error) == (other.kind, other.error)

    def __hash__(self) -> int:
        return hash((self.kind, id(self.error)))

    def __repr__(self) -> str:
        return (
            f"ExitCase.errored({self.error!r})" if self.kind == "errored" else f"ExitCase.{self.kind.upper()}"
        )


ExitCase.SUCCEEDED = ExitCase("succeeded")
ExitCase.CANCELED = ExitCase("canceled")

_CLOSING: ContextVar[ExitCase | None] = ContextVar("streamsrc_stream_closing", default=None)


def exit_case(exc: BaseException | None) -> ExitCase:
    """The exit case of a pull that stops with ``exc`` (``GeneratorExit`` when closed from outside)."""
    if exc is None:
        return ExitCase.SUCCEEDED
    if isinstance(exc, GeneratorExit):
        why = _CLOSING.get()
        if why is not None:
            return why
        return ExitCase.CANCELED if cancel_requested() else ExitCase.SUCCEEDED
    if isinstance(exc, Exception):
        return ExitCase.errored(exc)
    return ExitCase.CANCELED


async def close_because(gen: AsyncGenerator[Any, None], why: BaseException | None) -> None:
    """Close ``gen``; the brackets it closes see ``exit_case(why)`` (an error, or a cancellation)."""
    if why is None or isinstance(why, GeneratorExit):
        await gen.aclose()
        return
    token = _CLOSING.set(exit_case(why))
    try:
        await gen.aclose()
    finally:
        _CLOSING.reset(token)


class aclosing(AbstractAsyncContextManager[AsyncGenerator[T, None]]):
    """``contextlib.aclosing``, telling the closed pulls why they are closed (see :class:`ExitCase`)."""

    __slots__ = ("gen",)

    def __init__(self, gen: AsyncGenerator[T, None]) -> None:
        self.gen = gen

    async def __aenter__(self) -> AsyncGenerator[T, None]:
        return self.gen

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await close_because(self.gen, e)


class Lease:
    """Releases held back until a stage's end: ``par_join`` keeps its outer stream's resources open.

    A bracket acquired while :meth:`pulling` runs is leased: when its stream
    closes it, its release is queued, and :meth:`end` runs the queue (last
    acquired first) once every inner stream has finished.
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: list[Callable[[], Awaitable[object]]] = []

    async def pulling(self, chunks: AsyncGenerator[list[T], None]) -> list[T] | None:
        """The next chunk of ``chunks`` (``None`` at the end), with the lease in force while pulling."""
        token = _LEASE.set(self)
        try:
            return await anext(chunks, None)
        finally:
            _LEASE.reset(token)

    def hold(self, release: Callable[[], Awaitable[object]]) -> None:
        self._queue.append(release)

    async def end(self) -> None:
        """Run the held releases, shielded, last first; raise their errors (see :func:`combine`)."""
        errors: list[BaseException] = []
        with anyio.CancelScope(shield=True):
            while self._queue:
                try:
                    await self._queue.pop()()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise combine(errors)


_LEASE: ContextVar[Lease | None] = ContextVar("streamsrc_stream_lease", default=None)


def current_lease() -> Lease | None:
    """The lease in force in this task now, if any (see :class:`Lease`)."""
    return _LEASE.get()


# ------------------------------------------------------------------ drivers: who pulls


class Driver:
    """What pulls a stream's chunks: a terminal operation, a helper's pump, or an interpreter's leaf.

    It pulls inside :attr:`scope`. A concurrent stage whose work must stop
    everything downstream of it (an interrupt, a failed background stream)
    calls :meth:`stop`, which cancels the scope wherever the driver is
    waiting (an ``eval_map`` on a hung call, say); the driver then ends
    normally (an interrupt) or raises the error. A driver that is not pulling
    at that moment (an interpreter leaf whose chunk went downstream of the
    interpreter) passes the stop on to its ``parent``.
    """

    __slots__ = ("active", "error", "frame", "interrupted", "parent", "scope")

    def __init__(self, parent: Driver | None = None, active: bool = True) -> None:
        self.scope = anyio.CancelScope()
        self.error: BaseException | None = None
        self.interrupted = False
        self.parent = parent
        self.active = active
        self.frame: object = None

    def stop(self, error: BaseException | None) -> None:
        """Stop pulling: with ``error`` to raise, or ``None`` to end normally."""
        if not self.active and self.parent is not None:
            self.parent.stop(error)
            return
        if error is None:
            self.interrupted = True
        elif self.error is None:
            self.error = error
        self.scope.cancel()

    @property
    def stopped(self) -> bool:
        return self.interrupted or self.error is not None

    def check(self) -> None:
        """Raise the error :meth:`stop` was given, if any."""
        if self.error is not None:
            error, self.error = self.error, None
            raise error


DRIVER: ContextVar[Driver | None] = ContextVar("streamsrc_stream_driver", default=None)


@asynccontextmanager
async def running(pull: Pull[T]) -> AsyncIterator[AsyncGenerator[list[T], None]]:
    """Run ``pull`` inside a fresh task group; yield its chunks; close everything on exit.

    The chunk iterator is closed before the task group exits, so every stage's
    finalizer (including those that stop helper tasks) has run by the time the
    task group waits for its children. The body runs under the driver's
    scope: when a stage stops the driver, the body ends there (and the error
    it was given, if any, is raised).
    """
    driver = Driver()
    token = DRIVER.set(driver)
    try:
        async with anyio.create_task_group() as tg, aclosing(pull(Run(tg))) as chunks:
            with driver.scope:
                yield chunks
            driver.check()
    except BaseExceptionGroup as group:
        reraise_unwrapped(group)
    finally:
        DRIVER.reset(token)


Body: TypeAlias = Callable[[MemoryObjectSendStream[list[T]]], Awaitable[None]]


class Helper(Generic[T]):
    """A task that produces chunks for the stage that started it.

    ``body`` receives the sending end of a memory object stream with room for
    ``buffer`` chunks; the stage calls :meth:`receive` until it returns
    ``None``. An exception in ``body`` is re-raised by :meth:`receive` in the
    stage's own task (never as a group). When ``urgent`` and the stage's
    driver is busy downstream rather than waiting in :meth:`receive`, the
    error stops the driver at once instead. :meth:`aclose` cancels the
    helper, waits (shielded) until its finalizers have run, and raises an
    error the helper hit that nobody has seen yet (a failing release), so no
    error is lost behind a concurrent stage.
    """

    __slots__ = (
        "_cancel",
        "_delivered",
        "_done",
        "_driver",
        "_failed",
        "_receiving",
        "_recv",
        "_run",
        "_send",
        "_urgent",
    )

    def __init__(self, run: Run, body: Body[T] | None = None, buffer: int = 0, urgent: bool = False) -> None:
        send, recv = anyio.create_memory_object_stream[list[T]](buffer)
        self._send = send
        self._recv = recv
        self._cancel = anyio.CancelScope()
        self._done = anyio.Event()
        self._driver = DRIVER.get()
        self._urgent = urgent
        self._receiving = False
        self._failed: BaseException | None = None
        self._delivered = False
        self._run = run
        if body is not None:
            self.start(body)

    def start(self, body: Body[T]) -> None:
        """Start ``body`` in the run's task group."""
        self._run.task_group.start_soon(self._main, body)

    async def _main(self, body: Body[T]) -> None:
        try:
            with self._cancel:
                async with self._send:
                    try:
                        await body(self._send)
                    except BaseException as exc:
                        errors = errors_of(exc)
                        if not errors:
                            raise
                        self.fail(combine(errors))
        finally:
            self._done.set()

    def fail(self, error: BaseException) -> None:
        """Fail the stream with ``error``: stop the body; the error comes after the chunks already sent.

        When the helper is urgent and its driver is busy downstream (not
        waiting in :meth:`receive`), the driver is stopped with the error at once.
        """
        if self._failed is None:
            self._failed = error
        elif error is not self._failed:
            self._failed = combine([self._failed, error])
        self._cancel.cancel()
        if self._urgent and not self._receiving and self._driver is not None and not self._delivered:
            self._delivered = True
            self._driver.stop(self._failed)

    def interrupt(self) -> None:
        """End the stream here (cancel the body); if the driver is busy downstream, stop it too."""
        self._cancel.cancel()
        if not self._receiving and self._driver is not None:
            self._driver.stop(None)

    async def receive(self) -> list[T] | None:
        """The next chunk, or ``None`` once the helper has finished (raising its error, if it failed)."""
        self._receiving = True
        try:
            return await self._recv.receive()
        except anyio.EndOfStream:
            if self._failed is not None and not self._delivered:
                self._delivered = True
                raise self._failed from None
            return None
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Cancel the helper, wait for it to finish, and raise an error it hit that nobody saw."""
        self._cancel.cancel()
        with anyio.CancelScope(shield=True):
            await self._done.wait()
        self._recv.close()
        if self._failed is not None and not self._delivered:
            self._delivered = True
            raise self._failed


async def pump(pull: Pull[T], run: Run, send: MemoryObjectSendStream[list[T]]) -> None:
    """Send every chunk of ``pull`` to ``send`` (waiting for room: backpressure).

    The task that calls it becomes the stream's driver (see :class:`Driver`).
    """
    driver = Driver()
    token = DRIVER.set(driver)
    try:
        async with aclosing(pull(run)) as chunks:
            with driver.scope:
                async for chunk in chunks:
                    await send.send(chunk)
            driver.check()
    finally:
        DRIVER.reset(token)


async def drain(pull: Pull[Any], run: Run) -> None:
    """Pull every chunk of ``pull`` and drop it (the task that calls it drives the stream)."""
    driver = Driver()
    token = DRIVER.set(driver)
    try:
        async with aclosing(pull(run)) as chunks:
            with driver.scope:
                async for _ in chunks:
                    pass
            driver.check()
    finally:
        DRIVER.reset(token)


def from_helper(body: Callable[[Run, Helper[T]], Body[T]], buffer: int = 0, urgent: bool = False) -> Pull[T]:
    """A pull that emits what a :class:`Helper` running ``body(run, helper)`` sends."""

    async def pull(run: Run) -> AsyncGenerator[list[T], None]:
        helper: Helper[T] = Helper(run, None, buffer, urgent)
        helper.start(body(run, helper))
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
