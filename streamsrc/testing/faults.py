"""Fault injection for stores: :class:`FaultyStore` wraps any store and makes its appends fail on plan.

A store's append has one *commit point*: before it nothing is written,
after it everything is. Networks and timeouts fail on either side of it,
and the caller often cannot tell which: that is what ``StoreUnavailable``
means ("nothing, or everything, was written; retry with the same event ids").
:class:`FaultyStore` makes those failures happen on purpose, at chosen calls,
so a test can check what a backend, or code built on one, does with them:

* :attr:`Fault.BEFORE` — the inner store is not called; the append returns
  ``Failure(StoreUnavailable)``. Nothing may be written.
* :attr:`Fault.AFTER` — the inner append runs to its end (it commits, or is
  refused), then the caller gets ``Failure(StoreUnavailable)`` anyway: the
  ambiguous case.
* :class:`Timeout` — the inner append is cancelled (an anyio cancel scope)
  when it reaches its ``at``-th await point, as a client-side timeout would;
  the caller gets ``Failure(StoreUnavailable)``. What landed is up to the
  store's own atomicity: all of the batch or none of it. (If the append
  finishes before that point, the timeout fires just after it: ambiguous.)
* :attr:`Fault.RAISE_BEFORE`, :attr:`Fault.RAISE_AFTER` — as ``BEFORE`` and
  ``AFTER``, but the error is *raised* (``StoreUnavailable`` by default, or
  what ``error`` makes), as a driver's exception that escaped would be.

Faults apply to ``append`` and, if the inner store has it, ``import_events``;
everything else is forwarded unchanged. The plan is a sequence (one fault
per call, then none) or a function of the :class:`Call`; either way it is
deterministic, so Hypothesis can draw it and shrink it. Every call is
recorded in :attr:`FaultyStore.calls` as an :class:`Injected`.
"""

from __future__ import annotations

import enum
import types
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import anyio
from returns.result import Failure, Result

from streamsrc.errors import StoreError, StoreUnavailable
from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import ANY, AppendResult, EventStore, Expected
from streamsrc.store.forwarding import ForwardedReads

__all__ = ["Call", "Fault", "FaultPlan", "FaultyStore", "ForwardedReads", "Injected", "Timeout"]

T = TypeVar("T")


class Fault(enum.Enum):
    """A fault injected into one append (see the module's docstring); ``NONE`` forwards it as is.

    >>> [fault.name for fault in Fault]
    ['NONE', 'BEFORE', 'AFTER', 'RAISE_BEFORE', 'RAISE_AFTER']
    >>> Fault.AFTER.ambiguous, Fault.BEFORE.ambiguous
    (True, False)
    """

    NONE = "none"
    """No fault: the inner store's answer goes back to the caller."""
    BEFORE = "before"
    """``Failure(StoreUnavailable)`` without calling the inner store."""
    AFTER = "after"
    """The inner store's append runs, then ``Failure(StoreUnavailable)`` whatever it answered."""
    RAISE_BEFORE = "raise_before"
    """The error is raised without calling the inner store."""
    RAISE_AFTER = "raise_after"
    """The inner store's append runs, then the error is raised."""

    @property
    def ambiguous(self) -> bool:
        """Whether the inner store was called, so the caller cannot know what was written."""
        return self in (Fault.AFTER, Fault.RAISE_AFTER)

    def __repr__(self) -> str:
        return f"Fault.{self.name}"


@dataclass(frozen=True)
class Timeout:
    """Cancel the inner append at its ``at``-th await point (1: the first): ``StoreUnavailable``.

    >>> Timeout(2), Timeout(2).ambiguous
    (Timeout(at=2), True)
    """

    at: int = 1

    def __post_init__(self) -> None:
        if self.at < 1:
            raise ValueError("Timeout.at counts await points from 1")

    @property
    def ambiguous(self) -> bool:
        """Always: the inner store was called."""
        return True


Planned: TypeAlias = Fault | Timeout
"""One call's fault."""


@dataclass(frozen=True)
class Call:
    """One call of ``append`` or ``import_events`` on a :class:`FaultyStore`, as a plan sees it.

    >>> Call(0, "append", "order-1", 2, ANY)
    Call(index=0, method='append', stream='order-1', size=2, expected=ANY)
    """

    index: int
    """0 for the first call (of either method), then 1, 2, ..."""
    method: str
    """``"append"`` or ``"import_events"``."""
    stream: str
    size: int
    """The number of events in the batch."""
    expected: Expected
    """The expected version (an import's is its first seq minus one)."""


FaultPlan: TypeAlias = Callable[[Call], Planned] | Iterable[Planned]
"""One fault per call in order (then ``Fault.NONE``), or a function choosing the fault of each call."""


@dataclass(frozen=True)
class Injected:
    """What happened to one call: the fault, whether the inner store ran it to its end, and its answer.

    ``inner`` is the inner store's result when it finished (``None`` if it was
    not called or was cancelled); ``outcome`` is what the caller got: a
    ``Result``, or the exception raised.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> store = FaultyStore(MemoryStore(), [Fault.BEFORE])
    >>> _ = anyio.run(store.append, "s", [EventData("Opened", {})])
    >>> call = store.calls[0]
    >>> call.fault, call.called, call.completed, call.inner
    (Fault.BEFORE, False, False, None)
    >>> call.outcome
    <Failure: injected fault: append to 's' lost before the store was called>
    """

    call: Call
    ids: tuple[uuid.UUID, ...]
    fault: Planned
    called: bool
    """Whether the inner store's method was called at all."""
    completed: bool
    """Whether it ran to its end (not cancelled)."""
    inner: Result[AppendResult, StoreError] | None
    outcome: Result[AppendResult, StoreError] | BaseException


class FaultyStore(ForwardedReads):
    """A store that forwards everything to ``inner`` and injects the planned faults into its appends.

    ``plan`` gives each call of ``append`` (and ``import_events``, if
    ``inner`` has it) a :class:`Fault` or a :class:`Timeout`: a sequence is
    used one item per call, then no faults; a function is asked on every
    call. ``error(message)`` makes the exception the ``RAISE_*`` faults raise
    (``StoreUnavailable`` by default). Reads, snapshots, checkpoints and any
    other attribute of ``inner`` are passed through untouched, so the wrapper
    stands in for the store anywhere (a ``Repository``, a projection).

    A Hypothesis test draws a list of faults, runs operations against the
    wrapper and checks the log after each: a ``Success`` is in the log at
    the positions returned, a failure before the commit left nothing, and an
    ambiguous one left all of the batch or none of it.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     inner = MemoryStore()
    ...     store = FaultyStore(inner, [Fault.BEFORE, Fault.AFTER])
    ...     batch = [EventData("Opened", {}, id=uuid.UUID(int=1))]
    ...     print(await store.append("s", batch, expected=0))  # not sent: nothing written
    ...     print(await inner.head())
    ...     print(await store.append("s", batch, expected=0))  # written, but the answer was lost
    ...     print(await inner.head())
    ...     print(await store.append("s", batch, expected=0))  # the retry: same ids, no second copy
    ...     print([c.fault for c in store.calls])
    >>> anyio.run(main)
    <Failure: injected fault: append to 's' lost before the store was called>
    0
    <Failure: injected fault: append to 's' lost after the store answered>
    1
    <Success: AppendResult(stream='s', last_seq=1, positions=(1,))>
    [Fault.BEFORE, Fault.AFTER, Fault.NONE]
    """

    def __init__(
        self,
        inner: EventStore,
        plan: FaultPlan = (),
        *,
        error: Callable[[str], BaseException] = StoreUnavailable,
    ) -> None:
        self.inner = inner
        self.calls: list[Injected] = []
        """Every append and import so far, with its fault and what happened."""
        self.error = error
        self._choose: Callable[[Call], Planned]
        if callable(plan):
            self._choose = plan
        else:
            queue = iter(list(plan))
            self._choose = lambda call: next(queue, Fault.NONE)

    def __repr__(self) -> str:
        return f"<FaultyStore {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define: snapshots, checkpoints, ``appended``,
        # ``page_size``, ... (so ``isinstance`` against the store protocols answers as for ``inner``).
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        if name == "import_events":
            importer = inner.import_events  # AttributeError if ``inner`` has none

            async def import_events(
                stream: str, events: Sequence[RecordedEvent]
            ) -> Result[AppendResult, StoreError]:
                expected: Expected = events[0].seq - 1 if events else ANY
                return await self._faulty(
                    "import_events", stream, events, expected, lambda: importer(stream, events)
                )

            return import_events
        return getattr(inner, name)

    @property
    def injected(self) -> list[Injected]:
        """The calls that had a fault (``Fault.NONE`` left out)."""
        return [c for c in self.calls if c.fault is not Fault.NONE]

    # -- events

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """``inner.append``, with the planned fault."""
        return await self._faulty(
            "append", stream, events, expected, lambda: self.inner.append(stream, events, expected)
        )

    async def _faulty(
        self,
        method: str,
        stream: str,
        events: Sequence[EventData] | Sequence[RecordedEvent],
        expected: Expected,
        run: Callable[[], Awaitable[Result[AppendResult, StoreError]]],
    ) -> Result[AppendResult, StoreError]:
        call = Call(len(self.calls), method, stream, len(events), expected)
        ids = tuple(getattr(e, "id", None) for e in events)
        fault = self._choose(call)
        if not isinstance(fault, Fault | Timeout):
            raise TypeError(f"a fault plan gave {fault!r}: expected a Fault or a Timeout")
        called = completed = False
        inner: Result[AppendResult, StoreError] | None = None
        outcome: Result[AppendResult, StoreError] | BaseException
        try:
            if fault is Fault.BEFORE or fault is Fault.RAISE_BEFORE:
                outcome = self._lost(fault, f"{method} to {stream!r} lost before the store was called")
            elif isinstance(fault, Timeout):
                called = True
                with anyio.CancelScope() as scope:
                    inner = await _cancel_at(_coroutine(run()), fault.at, scope)
                    completed = True
                if scope.cancelled_caught:
                    inner = None
                where = "while the store was working" if inner is None else "just after the store answered"
                message = f"injected fault: {method} to {stream!r} timed out {where}"
                outcome = Failure(StoreUnavailable(message))
            else:
                called = True
                inner = await run()
                completed = True
                if fault is Fault.NONE:
                    outcome = inner
                else:
                    outcome = self._lost(fault, f"{method} to {stream!r} lost after the store answered")
        except BaseException as exc:
            if called and not completed:  # the inner store raised or was cancelled from outside
                self.calls.append(Injected(call, ids, fault, called, completed, inner, exc))  # type: ignore[arg-type]
                raise
            outcome = exc
        self.calls.append(Injected(call, ids, fault, called, completed, inner, outcome))  # type: ignore[arg-type]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _lost(self, fault: Fault, what: str) -> Result[AppendResult, StoreError]:
        message = f"injected fault: {what}"
        if fault is Fault.RAISE_BEFORE or fault is Fault.RAISE_AFTER:
            raise self.error(message)
        return Failure(StoreUnavailable(message))


async def _coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


@types.coroutine
def _cancel_at(coro: Coroutine[Any, Any, T], at: int, scope: anyio.CancelScope) -> Generator[Any, Any, T]:
    """Run ``coro``, cancelling ``scope`` when it suspends for the ``at``-th time (the cancellation
    arrives at that await point, as a timeout's would)."""
    suspended = 0
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                signal = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            suspended += 1
            if suspended == at:
                scope.cancel()
            try:
                value, error = (yield signal), None
            except BaseException as exc:  # delivered to the coroutine at its await point
                value, error = None, exc
    finally:
        coro.close()
