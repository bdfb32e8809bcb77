"""Partitions and leases: a projection split by stream, its partitions claimed by workers.

A projection with ``partitions=P`` is P projections in one: partition ``i``
takes the events of the streams whose :func:`partition_of` is ``i`` (a stable
hash of the stream name, the same in every process and every Python), each
with its own checkpoint, named ``name[i/P]``. Workers claim partitions
through *leases* kept next to the read model (tables of their own, in the
same SQLite file or PostgreSQL database; :class:`MemoryLeases` for tests). A
lease has an owner, an expiry the owner keeps pushing back, and a *fencing
token* that grows with every new owner: the read model's transaction checks
that the token it was given is still the partition's, so a worker that lost
its lease (paused, partitioned from the database, too slow to renew) can no
longer write, even if it does not know yet.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from streamsrc.errors import ProjectionOwnedElsewhere

__all__ = ["Fence", "Lease", "Leases", "MemoryLeases", "partition_name", "partition_of"]


def partition_of(stream: str, partitions: int) -> int:
    """The partition of ``stream`` among ``partitions``: CRC-32 of its UTF-8 name, modulo.

    Stable across processes, machines and Python versions (not Python's ``hash``).

    >>> partition_of("user-1", 4), partition_of("user-1", 4) == partition_of("user-1", 4)
    (0, True)
    >>> partition_of("anything", 1)
    0
    """
    if partitions == 1:
        return 0
    return zlib.crc32(stream.encode()) % partitions


def partition_name(name: str, partition: int, partitions: int) -> str:
    """The checkpoint name of one partition of projection ``name`` (``name`` itself when P is 1).

    >>> partition_name("emails", 2, 4), partition_name("emails", 0, 1)
    ('emails[2/4]', 'emails')
    """
    return name if partitions == 1 else f"{name}[{partition}/{partitions}]"


@dataclass(frozen=True, slots=True)
class Lease:
    """One partition's lease: who holds it, until when (seconds since the epoch), its token.

    ``owner`` is ``None`` for a partition never claimed or released.

    >>> Lease("emails", 0, None, 0.0, 3).live
    False
    """

    projection: str
    partition: int
    owner: str | None
    expires: float
    token: int

    @property
    def live(self) -> bool:
        """Whether the lease is held and not expired."""
        return self.owner is not None and self.expires > time.time()


@dataclass(frozen=True, slots=True)
class Fence:
    """The proof a worker gives the read model with each batch: the partition and its token.

    An exactly-once model checks, in the batch's transaction, that ``token``
    is still the partition's token in its lease table; otherwise the batch
    rolls back with :class:`~streamsrc.errors.ProjectionOwnedElsewhere`.

    >>> Fence("emails", 2, token=7)
    Fence(projection='emails', partition=2, token=7)
    """

    projection: str
    partition: int
    token: int
    leases: Leases | None = field(default=None, compare=False, repr=False)

    async def check(self, name: str) -> None:
        """Raise ``ProjectionOwnedElsewhere`` if the token is no longer the partition's (not atomic)."""
        if self.leases is not None and not await self.leases.holds(self):
            raise ProjectionOwnedElsewhere(name, 0, None, token=self.token)


class Leases(Protocol):
    """Where workers claim partitions: leases with an expiry and a fencing token.

    Every method is one atomic step of the backing store (a transaction, a
    conditional write).

    >>> import anyio
    >>> leases: Leases = MemoryLeases()
    >>> async def main() -> None:
    ...     fence = await leases.acquire("emails", 0, "a", ttl=10)
    ...     print(await leases.renew(fence, "a", ttl=10), await leases.heartbeat("emails", "a", ttl=10))
    >>> anyio.run(main)
    True ['a']
    """

    async def acquire(self, projection: str, partition: int, owner: str, ttl: float) -> Fence | None:
        """Take the partition's lease for ``ttl`` seconds if it is free, expired or ``owner``'s
        already: a new fencing token (the old one if ``owner`` held it); ``None`` if another holds it."""
        ...

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        """Push the lease's expiry ``ttl`` seconds ahead; ``False`` if it is no longer ``fence``'s."""
        ...

    async def release(self, fence: Fence, owner: str) -> None:
        """Give the lease up (if it is still ``fence``'s); its token stays, so old writes stay fenced."""
        ...

    async def holds(self, fence: Fence) -> bool:
        """Whether ``fence`` is still the partition's token."""
        ...

    async def leases(self, projection: str) -> list[Lease]:
        """Every partition's lease of ``projection`` ever claimed, by partition."""
        ...

    async def heartbeat(self, projection: str, owner: str, ttl: float) -> list[str]:
        """Say ``owner`` works on ``projection`` for ``ttl`` seconds; the live workers, sorted."""
        ...

    async def leave(self, projection: str, owner: str) -> None:
        """Say ``owner`` stopped working on ``projection``."""
        ...


class MemoryLeases:
    """Leases in memory, for workers in one process (tests, examples).

    >>> import anyio
    >>> async def main() -> None:
    ...     leases = MemoryLeases()
    ...     fence = await leases.acquire("emails", 0, "worker-a", ttl=10)
    ...     print(fence.token, await leases.acquire("emails", 0, "worker-b", ttl=10))
    >>> anyio.run(main)
    1 None
    """

    def __init__(self) -> None:
        self._leases: dict[tuple[str, int], Lease] = {}
        self._members: dict[tuple[str, str], float] = {}

    async def acquire(self, projection: str, partition: int, owner: str, ttl: float) -> Fence | None:
        now = time.time()
        old = self._leases.get((projection, partition))
        if old is not None and old.owner == owner and old.expires > now:
            token = old.token
        elif old is None or old.owner is None or old.expires <= now:
            token = (old.token if old else 0) + 1
        else:
            return None
        self._leases[projection, partition] = Lease(projection, partition, owner, now + ttl, token)
        return Fence(projection, partition, token, self)

    async def renew(self, fence: Fence, owner: str, ttl: float) -> bool:
        old = self._leases.get((fence.projection, fence.partition))
        if old is None or old.token != fence.token or old.owner != owner:
            return False
        self._leases[fence.projection, fence.partition] = Lease(
            fence.projection, fence.partition, owner, time.time() + ttl, fence.token
        )
        return True

    async def release(self, fence: Fence, owner: str) -> None:
        old = self._leases.get((fence.projection, fence.partition))
        if old is not None and old.token == fence.token and old.owner == owner:
            self._leases[fence.projection, fence.partition] = Lease(
                fence.projection, fence.partition, None, 0.0, fence.token
            )

    def holds_now(self, fence: Fence) -> bool:
        """:meth:`holds`, synchronously."""
        old = self._leases.get((fence.projection, fence.partition))
        return old is not None and old.token == fence.token

    async def holds(self, fence: Fence) -> bool:
        return self.holds_now(fence)

    async def leases(self, projection: str) -> list[Lease]:
        return sorted((v for (p, _), v in self._leases.items() if p == projection), key=lambda x: x.partition)

    async def heartbeat(self, projection: str, owner: str, ttl: float) -> list[str]:
        now = time.time()
        self._members[projection, owner] = now + ttl
        return sorted(o for (p, o), t in self._members.items() if p == projection and t > now)

    async def leave(self, projection: str, owner: str) -> None:
        self._members.pop((projection, owner), None)
