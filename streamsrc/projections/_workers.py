"""Workers: a partitioned projection spread over processes, partitions claimed through leases."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from streamsrc.errors import ProjectionOwnedElsewhere
from streamsrc.projections._leases import Fence, Leases, partition_name
from streamsrc.projections._models import ReadModel
from streamsrc.projections._runner import Projection, Projector, _reraise_unwrapped
from streamsrc.store import EventStore

__all__ = ["PartitionStatus", "ProjectionWorker", "partition_status"]

log = logging.getLogger(__name__)

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition of a projection: who holds its lease and until when, its checkpoint and lag.

    ``expires`` is in seconds since the epoch (0 when never claimed).

    >>> s = PartitionStatus("emails", 1, 4, "host:42:ab", 0.0, 3, 90, 100)
    >>> s.name, s.lag, s.live
    ('emails[1/4]', 10, False)
    """

    projection: str
    partition: int
    partitions: int
    owner: str | None
    expires: float
    token: int
    position: int
    head: int

    @property
    def name(self) -> str:
        """The partition's checkpoint name."""
        return partition_name(self.projection, self.partition, self.partitions)

    @property
    def lag(self) -> int:
        """Positions of the log the partition has not read yet."""
        return max(0, self.head - self.position)

    @property
    def live(self) -> bool:
        """Whether a worker holds the lease now."""
        return self.owner is not None and self.expires > time.time()


async def partition_status(
    store: EventStore, projection: str, model: ReadModel[Any], leases: Leases, partitions: int
) -> list[PartitionStatus]:
    """Every partition of ``projection``: owner, lease expiry, fencing token, checkpoint, lag.

    >>> import anyio
    >>> from streamsrc.projections import MemoryLeases, MemoryReadModel
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     leases = MemoryLeases()
    ...     await leases.acquire("emails", 1, "worker-a", ttl=10)
    ...     for s in await partition_status(MemoryStore(), "emails", MemoryReadModel(0), leases, 2):
    ...         print(s.name, s.owner, s.position, s.lag)
    >>> anyio.run(main)
    emails[0/2] None 0 0
    emails[1/2] worker-a 0 0
    """
    held = {lease.partition: lease for lease in await leases.leases(projection)}
    head = await store.head()
    out = []
    for i in range(partitions):
        lease = held.get(i)
        position = await model.load_position(partition_name(projection, i, partitions))
        owner, expires, token = (lease.owner, lease.expires, lease.token) if lease else (None, 0.0, 0)
        out.append(PartitionStatus(projection, i, partitions, owner, expires, token, position, head))
    return out


class _Claim:
    """A partition this worker holds: its fence, and the projector running it."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.lost = False


class ProjectionWorker(Generic[H]):
    """One of several workers (processes, machines) sharing a projection split into ``partitions``.

    Partition ``i`` takes the events of the streams whose
    :func:`~streamsrc.projections.partition_of` is ``i``, each partition with
    its own checkpoint. Every ``lease_ttl / 3`` seconds the worker says it is
    alive, renews its leases, gives up partitions beyond its fair share (the
    live workers share the partitions evenly) and claims free or expired
    ones up to it; it runs a :class:`Projector` on each partition it holds,
    with the lease's fencing token, which the read model checks in every
    batch's transaction. A worker that dies leaves its leases to expire
    (after ``lease_ttl``) and the others take its partitions over from their
    checkpoints; a worker that was paused past its lease finds its next
    batch refused (:class:`~streamsrc.errors.ProjectionOwnedElsewhere`),
    drops the partition and goes on with the others.

    ``options`` go to each partition's :class:`Projector` (``batch_size``,
    ``concurrency``, ``on_error``, ``poll``, ...).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.projections import MemoryLeases, MemoryReadModel, Projection
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store, model, leases = MemoryStore(), MemoryReadModel(0), MemoryLeases()
    ...     for n in range(8):
    ...         await store.append(f"user-{n}", [EventData("Registered", {})])
    ...     count = Projection("count", lambda total, events: total + len(events))
    ...     worker = ProjectionWorker(store, count, model, leases, partitions=4, owner="w1", lease_ttl=1)
    ...     with anyio.move_on_after(0.5):
    ...         await worker.run()
    ...     print(model.state, [(s.name, s.position, s.lag) for s in await worker.status()][:2])
    >>> anyio.run(main)
    8 [('count[0/4]', 8, 0), ('count[1/4]', 8, 0)]
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection[H],
        model: ReadModel[H],
        leases: Leases,
        *,
        partitions: int,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        **options: Any,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be > 0")
        self.store = store
        self.projection = projection
        self.model = model
        self.leases = leases
        self.partitions = partitions
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = lease_ttl
        self.options = options
        self._claims: dict[int, _Claim] = {}
        self._group: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"<ProjectionWorker {self.owner} of {self.projection.name!r}: partitions {sorted(self._claims)}>"
        )

    @property
    def held(self) -> list[int]:
        """The partitions this worker holds now."""
        return sorted(self._claims)

    async def status(self) -> list[PartitionStatus]:
        """Every partition of the projection (not only this worker's)."""
        return await partition_status(
            self.store, self.projection.name, self.model, self.leases, self.partitions
        )

    async def run(self, on_balance: Callable[[list[int]], Awaitable[object] | object] | None = None) -> None:
        """Work until cancelled (or a partition's projection fails): claim, run, renew, rebalance.

        On the way out (cancelled too) the worker stops its projectors and
        releases its leases, so others take its partitions at once.
        """
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                try:
                    while True:
                        await self._balance()
                        if on_balance is not None:
                            on_balance(self.held)
                        await anyio.sleep(self.lease_ttl / 3)
                finally:
                    with anyio.CancelScope(shield=True):
                        for i in list(self._claims):
                            await self._drop(i, release=True)
                        with contextlib.suppress(Exception):
                            await self.leases.leave(self.projection.name, self.owner)
        except BaseExceptionGroup as group:
            _reraise_unwrapped(group)

    async def _balance(self) -> None:
        name, ttl = self.projection.name, self.lease_ttl
        members = await self.leases.heartbeat(name, self.owner, ttl)
        if self.owner not in members:
            members = sorted([*members, self.owner])
        n, me = len(members), members.index(self.owner)
        share = self.partitions // n + (1 if me < self.partitions % n else 0)
        for i, claim in list(self._claims.items()):
            if claim.lost or not await self.leases.renew(claim.fence, self.owner, ttl):
                log.warning(
                    "worker %s lost the lease of partition %d of projection %r (fencing token %d): "
                    "another worker took it over; this one no longer writes it",
                    self.owner,
                    i,
                    name,
                    claim.fence.token,
                    extra=_lease_fields(name, i, self.partitions, self.owner, claim.fence.token, "lost"),
                )
                await self._drop(i, release=False)
        for i in sorted(self._claims, reverse=True)[: max(0, len(self._claims) - share)]:
            log.info(
                "worker %s gives up partition %d of projection %r to rebalance (%d workers)",
                self.owner,
                i,
                name,
                n,
                extra=_lease_fields(
                    name, i, self.partitions, self.owner, self._claims[i].fence.token, "rebalanced"
                ),
            )
            await self._drop(i, release=True)
        if len(self._claims) >= share:
            return
        held = {lease.partition: lease for lease in await self.leases.leases(name)}
        start = (me * self.partitions) // n
        for k in range(self.partitions):
            i = (start + k) % self.partitions
            lease = held.get(i)
            if i in self._claims or (lease is not None and lease.live):
                continue
            fence = await self.leases.acquire(name, i, self.owner, ttl)
            if fence is not None:
                log.info(
                    "worker %s acquired partition %d of projection %r (fencing token %d)",
                    self.owner,
                    i,
                    name,
                    fence.token,
                    extra=_lease_fields(name, i, self.partitions, self.owner, fence.token, "acquired"),
                )
                self._start(i, fence)
                if len(self._claims) >= share:
                    return

    def _start(self, i: int, fence: Fence) -> None:
        assert self._group is not None
        claim = self._claims[i] = _Claim(fence)
        projector = Projector(
            self.store,
            self.projection,
            self.model,
            partition=i,
            partitions=self.partitions,
            fence=fence,
            **self.options,
        )

        async def run() -> None:
            try:
                with claim.scope:
                    await projector.run()
            except ProjectionOwnedElsewhere:
                claim.lost = True  # another worker took the lease: the next balance drops it
            finally:
                claim.done.set()

        self._group.start_soon(run)

    async def _drop(self, i: int, *, release: bool) -> None:
        claim = self._claims.pop(i)
        claim.scope.cancel()
        await claim.done.wait()
        if release:
            try:
                await self.leases.release(claim.fence, self.owner)
            except Exception as exc:  # it expires on its own
                log.warning(
                    "worker %s could not release partition %d of projection %r (it will expire): %r",
                    self.owner,
                    i,
                    self.projection.name,
                    exc,
                    extra=_lease_fields(
                        self.projection.name,
                        i,
                        self.partitions,
                        self.owner,
                        claim.fence.token,
                        "release_failed",
                    ),
                )
            else:
                log.info(
                    "worker %s released partition %d of projection %r",
                    self.owner,
                    i,
                    self.projection.name,
                    extra=_lease_fields(
                        self.projection.name, i, self.partitions, self.owner, claim.fence.token, "released"
                    ),
                )


def _lease_fields(
    projection: str, partition: int, partitions: int, owner: str, token: int, change: str
) -> dict[str, Any]:
    """The structured fields of a log record about a lease."""
    return {
        "projection": projection,
        "partition": partition,
        "partitions": partitions,
        "owner": owner,
        "token": token,
        "lease": change,
    }
