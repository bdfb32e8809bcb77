"""The account example's read models agree with the write side, on every store."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from returns.result import Success
from store_urls import STORE_URLS, opened_store

from streamsrc.examples import account_views as views
from streamsrc.examples.accounts import Accounts
from streamsrc.projections import ProjectionService, Projector
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import EventStore

pytestmark = pytest.mark.anyio

URLS = [name for name, url in STORE_URLS.items() if "page_size" not in url]


@pytest.fixture(params=URLS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with opened_store(request.param, tmp_path) as s:
        yield s


NAMES = ["Ada", "Adam", "Bob", "Bobby", "Cy", "Zoë", "zoe"]
DOMAINS = ["example.com", "Example.org", "analytical.org"]


async def play(accounts: Accounts, rng: random.Random, steps: int) -> list[str]:
    """Random commands (some refused); returns the user ids ever registered."""
    users: list[str] = []
    groups: list[str] = []
    for step in range(steps):
        roll = rng.random()
        if roll < 0.3 or not users:
            uid = f"u{step}"
            name = rng.choice(NAMES)
            email = f"{name.lower()}{rng.randrange(3)}@{rng.choice(DOMAINS)}"
            await accounts.register(uid, f"{name.lower()}{rng.randrange(5)}", name, email, by="t")
            users.append(uid)
        elif roll < 0.5:
            uid = rng.choice(users)
            await accounts.update(
                uid,
                by="t",
                name=rng.choice([None, *NAMES]),
                email=rng.choice([None, f"x{step}@{rng.choice(DOMAINS)}"]),
                username=rng.choice([None, f"n{rng.randrange(8)}"]),
            )
        elif roll < 0.6:
            await accounts.delete(rng.choice(users), by="t")
        elif roll < 0.7 and groups:
            await accounts.remove_member(rng.choice(groups), rng.choice(users), by="t")
        elif roll < 0.8:
            gid = f"g{step}"
            if isinstance(await accounts.create_group(gid, "G", rng.choice(users), by="t"), Success):
                groups.append(gid)
        elif groups:
            await accounts.add_member(rng.choice(groups), rng.choice(users), by="t")
    return users


async def expected_users(accounts: Accounts, users: list[str]) -> list[tuple[str, str, str, str]]:
    out = []
    for uid in dict.fromkeys(users):  # a later round may try an id again (refused)
        state = (await accounts.users.load(uid)).state
        if state.exists:
            out.append((uid, state.username, state.name, state.email))
    return out


@pytest.mark.parametrize("seed", [1, 2])
async def test_read_models_match_the_write_side(store: EventStore, tmp_path: Path, seed: int) -> None:
    accounts = Accounts(store)
    rng = random.Random(seed)
    path = str(tmp_path / "views.db")
    async with (
        SqliteReadModel(path, views.USER_SEARCH_SCHEMA) as search_model,
        SqliteReadModel(path, views.GROUP_MEMBERS_SCHEMA) as members_model,
    ):
        users = await play(accounts, rng, 40)
        # Catch up half-way, then more commands, then catch up again: incremental = from scratch.
        await Projector(store, views.user_search, search_model, batch_size=7).catch_up()
        await Projector(store, views.group_members, members_model, batch_size=7).catch_up()
        users += await play(accounts, rng, 40)
        for projection, model in ((views.user_search, search_model), (views.group_members, members_model)):
            status = await Projector(store, projection, model).catch_up()
            assert status.lag == 0

        search = views.UserSearch(search_model)
        live = await expected_users(accounts, users)
        for email in {e for *_, e in live}:
            found = [(u.user_id, u.username, u.name, u.email) for u in await search.by_email(email.upper())]
            assert found == sorted(u for u in live if u[3].casefold() == email.casefold())
        for prefix in ["a", "AD", "bob", "zo", "Zoë", "q", ""]:
            found_ids = [u.user_id for u in await search.by_name_prefix(prefix, limit=1000)]
            want = sorted(
                (u for u in live if u[2].casefold().startswith(prefix.casefold())),
                key=lambda u: (u[2].casefold(), u[0]),
            )
            assert found_ids == [u[0] for u in want]

        members = views.GroupMembers(members_model)
        group_ids = await members_model.query("SELECT group_id FROM groups ORDER BY group_id")
        assert group_ids, "the scenario made no group"
        by_user: dict[str, list[str]] = {}
        for (gid,) in group_ids:
            state = (await accounts.groups.load(gid)).state
            assert await members.members(gid) == sorted(state.members)
            for uid in state.members:
                by_user.setdefault(uid, []).append(gid)
        for uid in users:
            assert await members.groups_of(uid) == sorted(by_user.get(uid, []))

        # Added later: a new projection replays the whole log into its own fresh table.
        async with SqliteReadModel(str(tmp_path / "domains.db"), views.EMAIL_DOMAINS_SCHEMA) as model:
            status = await Projector(store, views.email_domains, model).catch_up()
            assert status.position == await store.head()
            want_domains = Counter(email.rpartition("@")[2].casefold() for *_, email in live)
            assert await views.EmailDomains(model).counts() == dict(sorted(want_domains.items()))


async def caught_up(service: ProjectionService[SqliteReadModel]) -> None:
    """Wait until the service's live projection has read the whole log."""
    with anyio.fail_after(10):
        while (await service.status()).lag:  # noqa: ASYNC110 (the projection runs in the background)
            await anyio.sleep(0.01)


async def test_blue_green_rebuild_of_user_search(store: EventStore, tmp_path: Path) -> None:
    accounts = Accounts(store)
    rng = random.Random(7)
    users = await play(accounts, rng, 30)
    blue = await SqliteReadModel(str(tmp_path / "blue.db"), views.USER_SEARCH_SCHEMA).open()
    green = await SqliteReadModel(str(tmp_path / "green.db"), views.USER_SEARCH_SCHEMA).open()
    try:
        async with ProjectionService(store, views.user_search, blue, batch_size=5) as service:
            await caught_up(service)
            users += await play(accounts, rng, 10)
            old = await service.rebuild(green)
            assert old is blue
            assert service.model is green
            users += await play(accounts, rng, 10)
            await caught_up(service)
            live = await expected_users(accounts, users)
            rows = await green.query("SELECT user_id, username, name, email FROM users WHERE deleted = 0")
            assert sorted(rows) == sorted(live)
    finally:
        await blue.aclose()
        await green.aclose()
