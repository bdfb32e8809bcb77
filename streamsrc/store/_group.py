"""Client-side group commit, shared by the SQL stores: appends that arrive while one is in flight
are queued and sent together, in one transaction, by the first of them.

The first caller to find nothing in flight sends its append alone (``alone``), as without group
commit; callers arriving meanwhile queue, and when it is done the first of them leads the next
group: every append queued by then, sent by ``together`` in one transaction where each append
gets its own outcome. Each later group is led the same way by the first caller that queued while
the previous one was in flight. After a group of several appends, the first caller to find
nothing in flight lets the event loop run once before leading, so the callers that group just
answered (appending again) join it instead of waiting for a commit of one.

Cancellation: a queued append that was never sent is dropped; one that was sent (or whose
caller was woken to lead) has its outcome settled first, then the cancellation takes effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

A = TypeVar("A")
R = TypeVar("R")

__all__ = ["GroupCommit"]


class _Waiting(Generic[A, R]):
    """An append waiting in the queue, and then its outcome."""

    __slots__ = ("args", "done", "lead", "outcome", "taken")

    def __init__(self, args: A) -> None:
        self.args = args
        self.done = anyio.Event()
        self.taken = False  # sent in a group
        self.lead = False  # woken (or chosen) to lead the next group
        self.outcome: R | BaseException | None = None

    def answer(self) -> R:
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


class GroupCommit(Generic[A, R]):
    """The queue of one store's appends (see the module docs).

    ``alone(args)`` sends one append straight away (a cancellation must wait for its outcome);
    ``together(group)`` sends several in one transaction and returns one outcome per append (an
    exception for one that failed alone), or raises if the whole group failed (then every
    append of it gets that error).

    >>> async def main() -> None:
    ...     sent: list[list[int]] = []
    ...     async def alone(n: int) -> int:
    ...         sent.append([n])
    ...         await anyio.sleep(0.01)
    ...         return n * 10
    ...     async def together(group: list[int]) -> list[int | BaseException]:
    ...         sent.append(group)
    ...         return [n * 10 for n in group]
    ...     queue: GroupCommit[int, int] = GroupCommit(alone, together)
    ...     results = [0] * 4
    ...     async def one(n: int) -> None:
    ...         results[n] = await queue.submit(n)
    ...     async with anyio.create_task_group() as tg:
    ...         for n in range(4):
    ...             tg.start_soon(one, n)
    ...     print(results, sent)
    >>> anyio.run(main)
    [0, 10, 20, 30] [[0], [1, 2, 3]]
    """

    __slots__ = ("_alone", "_company", "_leading", "_queue", "_together")

    def __init__(
        self,
        alone: Callable[[A], Awaitable[R]],
        together: Callable[[list[A]], Awaitable[Sequence[R | BaseException]]],
    ) -> None:
        self._alone = alone
        self._together = together
        self._queue: list[_Waiting[A, R]] = []  # appends waiting for the next group
        self._leading = False  # a group is in flight, or its successor leader is being woken
        self._company = False  # the last group had several appends: gather the next one

    async def submit(self, args: A) -> R:
        """Send ``args`` alone or in a group; its own outcome."""
        if not self._leading and not self._company:  # alone: straight to the database
            self._leading = True
            try:
                return await self._alone(args)
            finally:
                self._pass_lead()
        item: _Waiting[A, R] = _Waiting(args)
        self._queue.append(item)
        if not self._leading:  # the last group had company: its callers are likely appending again
            self._leading = item.lead = True
            await anyio.lowlevel.cancel_shielded_checkpoint()  # let them join this group
            await self._lead()
            await anyio.lowlevel.checkpoint_if_cancelled()
            return item.answer()
        try:
            await item.done.wait()
        except anyio.get_cancelled_exc_class():
            if not item.taken and not item.lead:  # never sent: nothing written, nothing to wait for
                self._queue.remove(item)
                raise
            with anyio.CancelScope(shield=True):  # sent (or made leader): settle its outcome first
                if not item.taken:
                    await self._lead()
                else:
                    await item.done.wait()
            raise
        if not item.taken:  # woken to lead the next group, its own in it
            await self._lead()
            await anyio.lowlevel.checkpoint_if_cancelled()
        return item.answer()

    async def _lead(self) -> None:
        """Send every queued append as one group, hand each its outcome, pass the lead on."""
        with anyio.CancelScope(shield=True):
            group, self._queue = self._queue, []
            for item in group:
                item.taken = True
            outcomes: Sequence[R | BaseException]
            try:
                outcomes = await self._together([item.args for item in group])
            except Exception as exc:  # the group failed as a whole: nothing of it was committed
                outcomes = [exc] * len(group)
            for item, outcome in zip(group, outcomes, strict=True):
                item.outcome = outcome
                item.done.set()
            self._company = len(group) > 1
            self._pass_lead()

    def _pass_lead(self) -> None:
        """Wake the first waiting caller to lead the next group, or leave the lead free."""
        if self._queue:
            successor = self._queue[0]
            successor.lead = True
            successor.done.set()
        else:
            self._leading = False
