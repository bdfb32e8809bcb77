"""The account-management example on memory and SQLite: uniqueness, audit trail, revert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from returns.result import Failure, Success

from streamsrc.errors import Rejection
from streamsrc.examples.accounts import (
    Accounts,
    EmailChanged,
    User,
    UserDeleted,
    UsernameChanged,
    UserRegistered,
    UserRestored,
)
from streamsrc.store import open_store

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Accounts]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/accounts.db"
    async with open_store(url) as store:
        yield Accounts(store)


async def test_a_username_is_won_by_exactly_one_of_many_concurrent_registrations(accounts: Accounts) -> None:
    contenders = [f"user-{i}" for i in range(12)]
    results: dict[str, object] = {}

    async def register(user_id: str) -> None:
        results[user_id] = await accounts.register(user_id, "ada", user_id, f"{user_id}@example.com", by="t")

    async with anyio.create_task_group() as tg:
        for user_id in contenders:
            tg.start_soon(register, user_id)
    winners = [u for u, r in results.items() if isinstance(r, Success)]
    assert len(winners) == 1
    for user_id, result in results.items():
        if user_id != winners[0]:
            assert result == Failure(Rejection("username 'ada' is taken"))
            assert not (await accounts.users.load(user_id)).state.exists
    assert (await accounts.usernames.load("ada")).state == winners[0]


async def test_renaming_moves_the_claim_and_frees_the_old_name(accounts: Accounts) -> None:
    await accounts.register("u1", "ada", "Ada", "ada@example.com", by="t")
    await accounts.register("u2", "bob", "Bob", "bob@example.com", by="t")
    assert isinstance(await accounts.update("u2", by="t", username="ada"), Failure)
    assert isinstance(await accounts.update("u1", by="t", username="countess"), Success)
    assert (await accounts.usernames.load("ada")).state == ""
    assert (await accounts.usernames.load("countess")).state == "u1"
    assert isinstance(await accounts.update("u2", by="t", username="ada"), Success)
    assert (await accounts.users.load("u2")).state.username == "ada"
    # A refused user change (bad email) gives the newly claimed name back.
    assert isinstance(await accounts.update("u2", by="t", username="zed", email="nope"), Failure)
    assert (await accounts.usernames.load("zed")).state == ""


async def test_audit_trail_names_who_changed_what_and_when(accounts: Accounts) -> None:
    await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    await accounts.update("u1", by="ada", email="ada@analytical.org")
    await accounts.delete("u1", by="ops")
    trail = await accounts.audit("u1").to_list()
    assert [(e.by, type(e.event)) for e in trail] == [
        ("admin", UserRegistered),
        ("ada", EmailChanged),
        ("ops", UserDeleted),
    ]
    assert [e.state.exists for e in trail] == [True, True, False]
    assert trail[1].state.email == "ada@analytical.org"
    times = [e.time for e in trail]
    assert times == sorted(times)


async def test_revert_appends_compensating_events_back_to_an_earlier_time(accounts: Accounts) -> None:
    await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    moment = (await accounts.users.store.latest("user-u1")).unwrap().time
    await anyio.sleep(0.002)
    await accounts.update("u1", by="ada", username="countess", email="ada@analytical.org")
    await accounts.delete("u1", by="ops")
    before = await accounts.users.store.read("user-u1").count()
    reverted = await accounts.revert("u1", moment, by="admin")
    assert isinstance(reverted, Success)
    assert (await accounts.users.load("u1")).state == User("u1", "ada", "Ada", "ada@example.com", True)
    trail = await accounts.audit("u1").to_list()
    assert len(trail) > before  # history kept; the revert is in it
    assert {type(e.event) for e in trail[before:]} == {UserRestored, UsernameChanged, EmailChanged}
    assert (await accounts.usernames.load("ada")).state == "u1"
    assert (await accounts.usernames.load("countess")).state == ""


async def test_revert_is_refused_when_the_old_username_was_taken_meanwhile(accounts: Accounts) -> None:
    await accounts.register("u1", "ada", "Ada", "ada@example.com", by="t")
    moment = (await accounts.users.store.latest("user-u1")).unwrap().time
    await anyio.sleep(0.002)
    await accounts.update("u1", by="t", username="countess")
    await accounts.register("u2", "ada", "Other", "o@example.com", by="t")
    assert await accounts.revert("u1", moment, by="t") == Failure(Rejection("username 'ada' is taken"))
    assert (await accounts.users.load("u1")).state.username == "countess"


async def test_groups_need_existing_users(accounts: Accounts) -> None:
    await accounts.register("u1", "ada", "Ada", "ada@example.com", by="t")
    assert isinstance(await accounts.create_group("g", "Chess", "ghost", by="t"), Failure)
    assert isinstance(await accounts.create_group("g", "Chess", "u1", by="t"), Success)
    assert isinstance(await accounts.add_member("g", "ghost", by="t"), Failure)
    await accounts.register("u2", "bob", "Bob", "bob@example.com", by="t")
    await accounts.add_member("g", "u2", by="t")
    await accounts.remove_member("g", "u1", by="t")
    assert (await accounts.groups.load("g")).state.members == frozenset({"u2"})
    assert (await accounts.groups.state_at("g", seq=2)).state.members == frozenset({"u1", "u2"})
