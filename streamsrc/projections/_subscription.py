"""Subscriptions: read the global log from a position, catch up, then follow new events live."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeAlias

import anyio

from streamsrc.events import RecordedEvent
from streamsrc.store import EventFilter, EventStore, NotifyingStore
from streamsrc.stream import Stream

__all__ = ["Poll", "Tick", "subscribe", "subscribe_with_ticks"]


@dataclass(frozen=True, slots=True)
class Tick:
    """The subscription has read the log up to ``position`` (inclusive).

    Emitted after each page, between the events, by
    :func:`subscribe_with_ticks`. With a filter, ``position`` can be past the
    last event delivered (the events in between were read and did not match),
    so a checkpoint can move on without waiting for a matching event.
    ``caught_up`` is true when the page reached the head of the log as it was
    when the page was read.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import subscribe_with_ticks
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("user-1", [EventData("Registered", {}), EventData("LoggedIn", {})])
    ...     print(await subscribe_with_ticks(store, types={"LoggedIn"}).take(2).to_list())
    >>> anyio.run(main)
    [RecordedEvent(...), Tick(position=2, caught_up=True)]
    """

    position: int
    caught_up: bool


Item: TypeAlias = RecordedEvent | Tick


@dataclass(frozen=True, slots=True)
class Poll:
    """How a live subscription waits for new events when it has caught up.

    It waits ``min_delay`` seconds, then twice as long each time nothing new
    has come, up to ``max_delay``; a new event resets the wait. A store that
    notifies appends (``store.appended``, see
    :class:`~streamsrc.store.AppendSignal`) wakes it at once for appends
    made through it in this process; the polling is then only for writers in
    other processes.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import subscribe
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("s", [EventData("Noted", {})])
    ...     patient = Poll(min_delay=0.01, max_delay=2.0)
    ...     print(await subscribe(store, poll=patient).take(1).count())
    >>> anyio.run(main)
    1
    """

    min_delay: float = 0.002
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.min_delay <= self.max_delay:
            raise ValueError("Poll needs 0 < min_delay <= max_delay")


DEFAULT_POLL = Poll()


def subscribe(
    store: EventStore,
    after: int = 0,
    *,
    types: Collection[str] | None = None,
    stream_prefix: str | None = None,
    live: bool = True,
    page_size: int = 1000,
    poll: Poll = DEFAULT_POLL,
) -> Stream[RecordedEvent]:
    """The events after global position ``after``: the log so far, then new events as they come.

    Every event with ``position > after`` (and passing the filters, which the
    store applies where it reads) is delivered once, in global order, with no
    gap or repeat where catching up turns into following: the subscription
    always asks for the events after the last position it has delivered. With
    ``live=False`` the stream ends once it has caught up. Stopping the stream
    (``take``, ``interrupt_when``, a timeout, cancellation) stops the reads.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main():
    ...     store = MemoryStore()
    ...     for n in range(3):
    ...         await store.append("counter-1", [EventData("Bumped", {"n": n})])
    ...     return [e.data["n"] for e in await subscribe(store, after=1, live=False).to_list()]
    >>> anyio.run(main)
    [1, 2]
    """
    items = subscribe_with_ticks(
        store, after, types=types, stream_prefix=stream_prefix, live=live, page_size=page_size, poll=poll
    )
    return items.map_chunks(_events_only)


def _events_only(chunk: list[Item]) -> list[RecordedEvent]:
    # Every chunk ends with its one Tick: drop it without testing every element.
    if chunk and type(chunk[-1]) is Tick:
        return chunk[:-1]  # type: ignore[return-value]
    return [x for x in chunk if type(x) is not Tick]  # type: ignore[misc]


def subscribe_with_ticks(
    store: EventStore,
    after: int = 0,
    *,
    types: Collection[str] | None = None,
    stream_prefix: str | None = None,
    live: bool = True,
    page_size: int = 1000,
    poll: Poll = DEFAULT_POLL,
) -> Stream[RecordedEvent | Tick]:
    """:func:`subscribe`, with a :class:`Tick` after each page saying how far the log was read.

    This is what a projection runner needs to move its checkpoint past
    events its filter skipped, and to know when it has caught up.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main():
    ...     store = MemoryStore()
    ...     await store.append("a-1", [EventData("Opened", {}), EventData("Noted", {})])
    ...     items = subscribe_with_ticks(store, types={"Opened"}, live=False)
    ...     return [x.type if isinstance(x, RecordedEvent) else x for x in await items.to_list()]
    >>> anyio.run(main)
    ['Opened', Tick(position=2, caught_up=True)]
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    keep = EventFilter.of(types, stream_prefix)
    signal = store.appended if isinstance(store, NotifyingStore) else None

    async def read_page(position: int) -> tuple[list[RecordedEvent], int]:
        """A page of events after ``position`` and how far the log is known to be read."""
        head = 0 if keep.everything else await store.head()  # before the read: see below
        page = await store.read_all(
            position, page_size, types=keep.types, stream_prefix=keep.stream_prefix
        ).to_list()
        if len(page) == page_size:
            return page, page[-1].position
        # A short page read everything committed when it ran; everything at or below
        # ``head`` had committed before (positions are given in commit order).
        return page, max(head, page[-1].position if page else position)

    async def step(state: tuple[int, float, bool]) -> tuple[list[Item], tuple[int, float, bool]] | None:
        position, delay, reported = state
        while True:
            version = signal.version if signal is not None else 0
            page, scanned = await read_page(position)
            caught_up = len(page) < page_size
            if page or scanned > position or (caught_up and not reported):
                out: list[Item] = [*page, Tick(scanned, caught_up)]
                return out, (scanned, poll.min_delay, caught_up)
            if signal is not None:
                await signal.wait(version, delay)
            else:
                await anyio.sleep(delay)
            delay = min(delay * 2, poll.max_delay)

    stop_after_catch_up = not live

    async def bounded(state: tuple[int, float, bool]) -> tuple[list[Item], tuple[int, float, bool]] | None:
        if stop_after_catch_up and state[2]:
            return None
        return await step(state)

    start: tuple[int, float, bool] = (after, poll.min_delay, False)
    return Stream.unfold_chunk_eval(start, bounded)
