"""Leases of partitioned projections in a DynamoDB store (moto's server): each step a conditional write,
fencing tokens that grow with every owner, workers sharing partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from store_urls import fresh_dynamodb_url

from streamsrc.errors import ProjectionOwnedElsewhere
from streamsrc.events import EventData
from streamsrc.projections import MemoryReadModel, Projection, ProjectionWorker
from streamsrc.projections.dynamodb import DynamoDBLeases
from streamsrc.store import open_store
from streamsrc.store.memory import MemoryStore

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


@pytest.fixture
async def leases() -> AsyncIterator[DynamoDBLeases]:
    url = fresh_dynamodb_url()
    async with open_store(url), DynamoDBLeases(url) as opened:  # the store makes the tables
        yield opened


async def test_a_lease_is_taken_once_renewed_by_its_owner_and_fenced_after_a_takeover(
    leases: DynamoDBLeases,
) -> None:
    first = await leases.acquire("emails", 0, "a", ttl=30)
    assert first is not None
    assert first.token == 1
    assert await leases.acquire("emails", 0, "b", ttl=30) is None  # held by a
    again = await leases.acquire("emails", 0, "a", ttl=30)  # a again: the same token
    assert again is not None
    assert again.token == 1
    assert await leases.renew(first, "a", ttl=30)
    assert not await leases.renew(first, "b", ttl=30)
    await leases.release(first, "a")
    taken = await leases.acquire("emails", 0, "b", ttl=30)  # free: b takes it, with a new token
    assert taken is not None
    assert taken.token == 2
    assert not await leases.holds(first)
    assert await leases.holds(taken)
    assert not await leases.renew(first, "a", ttl=30)  # a's old lease cannot come back
    with pytest.raises(ProjectionOwnedElsewhere):
        await first.check("emails")
    [lease] = await leases.leases("emails")
    assert (lease.partition, lease.owner, lease.token, lease.live) == (0, "b", 2, True)


async def test_an_expired_lease_is_taken_over_with_a_larger_token(leases: DynamoDBLeases) -> None:
    old = await leases.acquire("emails", 3, "a", ttl=0.2)
    assert old is not None
    await anyio.sleep(0.3)
    new = await leases.acquire("emails", 3, "b", ttl=30)
    assert new is not None
    assert new.token == old.token + 1
    assert not await leases.renew(old, "a", ttl=30)


async def test_of_workers_racing_for_a_lease_exactly_one_gets_it(leases: DynamoDBLeases) -> None:
    got: list[str] = []

    async def claim(owner: str) -> None:
        if await leases.acquire("race", 0, owner, ttl=30) is not None:
            got.append(owner)

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(claim, f"w{n}")
    assert len(got) == 1


async def test_heartbeats_tell_the_live_workers(leases: DynamoDBLeases) -> None:
    assert await leases.heartbeat("emails", "b", ttl=30) == ["b"]
    assert await leases.heartbeat("emails", "a", ttl=30) == ["a", "b"]
    assert await leases.heartbeat("other", "c", ttl=30) == ["c"]
    await leases.leave("emails", "b")
    assert await leases.heartbeat("emails", "a", ttl=30) == ["a"]


async def test_workers_share_partitions_through_dynamodb_leases_and_apply_every_event_once(
    leases: DynamoDBLeases,
) -> None:
    store = MemoryStore()
    for k in range(12):
        await store.append(f"s-{k}", [EventData("E", {"n": n}) for n in range(5)])
    model: MemoryReadModel[int] = MemoryReadModel(0)
    count = Projection("count", lambda n, events: n + len(events))
    a = ProjectionWorker(store, count, model, leases, partitions=4, owner="a", lease_ttl=1.0)
    b = ProjectionWorker(store, count, model, leases, partitions=4, owner="b", lease_ttl=1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        await anyio.sleep(0.3)
        tg.start_soon(b.run)
        with anyio.fail_after(30):
            while not (len(a.held) == 2 and len(b.held) == 2 and model.state == 60):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        owners = sorted(lease.owner or "" for lease in await leases.leases("count"))
        tg.cancel_scope.cancel()
    assert model.state == 60
    assert owners == ["a", "a", "b", "b"]
    assert all(lease.owner is None for lease in await leases.leases("count"))  # given up on the way out
