"""Forwarding to an inner store: the base of wrapper stores.

:class:`ForwardedReads` hands the reads of the event store contract to
``self.inner``; wrappers that change how events are written build on it
(``streamsrc.testing.FaultyStore``), and so does
:class:`streamsrc.tenancy.ForwardingStore`, which forwards everything.
"""

from __future__ import annotations

from collections.abc import Collection

from returns.maybe import Maybe

from streamsrc.events import RecordedEvent
from streamsrc.store._contract import EventStore
from streamsrc.stream import Stream

__all__ = ["ForwardedReads"]


class ForwardedReads:
    """The reads of the event store contract, forwarded to ``self.inner``: a base for wrappers that
    change only how events are written (``FaultyStore``, the entity suite's scripted store,
    ``ForwardingStore``).

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> class Counting(ForwardedReads):
    ...     def __init__(self, inner: MemoryStore) -> None:
    ...         self.inner = inner
    >>> anyio.run(Counting(MemoryStore()).head)
    0
    """

    inner: EventStore

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """``inner.read``."""
        return self.inner.read(stream, after, limit, backwards)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """``inner.read_all``."""
        return self.inner.read_all(after, limit, types=types, stream_prefix=stream_prefix)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """``inner.latest``."""
        return await self.inner.latest(stream)

    async def head(self) -> int:
        """``inner.head``."""
        return await self.inner.head()

    def streams(self) -> Stream[str]:
        """``inner.streams``."""
        return self.inner.streams()
