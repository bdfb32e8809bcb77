"""The demo that ``streamsrc demo`` runs: the account-management example against a store."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
from returns.result import Failure, Result, Success

from streamsrc.events import EventData
from streamsrc.examples import account_views as views
from streamsrc.examples.accounts import Accounts
from streamsrc.projections import Projector
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store, redact_url
from streamsrc.store.sqlite import SqliteStore


def _outcome(result: Result[Any, Any]) -> str:
    match result:
        case Success(saved):
            return f"saved, now at seq {saved.seq}"
        case Failure(error):
            return f"refused: {error}"
    return repr(result)


async def run_demo(url: str, say: Callable[[str], object]) -> None:
    """Run the demo against the store at ``url``, reporting each step through ``say``.

    >>> import anyio
    >>> anyio.run(run_demo, "memory://", print)
    demo run 1 on memory://
    register ada-1: saved, now at seq 1
    register bob-1: saved, now at seq 1
    register eve-1 as ada1: refused: username 'ada1' is taken
    ...
    new read model account-email-domains, built by replaying 18 events: {'example.com': 2, 'example.org': 1}
    """
    async with open_store(url) as store:
        # Each run gets a number, so the demo can run again on the same file.
        last_run = await store.latest("demo-runs")
        run = last_run.map(lambda e: e.seq).value_or(0) + 1
        await store.append("demo-runs", [EventData("DemoRun", {"run": run})], expected=run - 1)
        say(f"demo run {run} on {redact_url(url)}")
        accounts = Accounts(store)
        ada, bob = f"ada-{run}", f"bob-{run}"

        say(
            f"register {ada}: "
            + _outcome(await accounts.register(ada, f"ada{run}", "Ada", "ada@example.com", by="admin"))
        )
        say(
            f"register {bob}: "
            + _outcome(await accounts.register(bob, f"bob{run}", "Bob", "bob@example.com", by="admin"))
        )
        taken = await accounts.register(f"eve-{run}", f"ada{run}", "Eve", "eve@example.com", by="eve")
        say(f"register eve-{run} as ada{run}: " + _outcome(taken))

        await anyio.sleep(0.01)
        before_changes = (await accounts.users.load(ada)).state
        moment = (await store.latest(f"user-{ada}")).unwrap().time
        await anyio.sleep(0.01)
        renamed = await accounts.update(ada, by="ada", username=f"countess{run}", email="ada@analytical.org")
        say(f"{ada} renames herself countess{run}: " + _outcome(renamed))
        say(
            f"{bob} tries the name countess{run}: "
            + _outcome(await accounts.update(bob, by="bob", username=f"countess{run}"))
        )
        holder = (await accounts.usernames.load(f"ada{run}")).state
        say(f"the name ada{run} is free again: {holder == ''}")
        wrong_version = await accounts.update(ada, by="admin", name="A. Lovelace", if_seq=1)
        say(f"an edit based on seq 1 of {ada} (a stale ETag): " + _outcome(wrong_version))

        now = (await accounts.users.load(ada)).state
        then = (await accounts.users.state_at(ada, time=moment)).state
        say(f"{ada} now: {now}")
        say(f"{ada} at {moment.isoformat()}: {then}")
        assert then == before_changes

        say(f"revert {ada} to that moment: " + _outcome(await accounts.revert(ada, moment, by="admin")))
        say(f"audit trail of {ada}:")
        async with accounts.audit(ada).open() as trail:
            async for entry in trail:
                say(f"  {entry.time.isoformat()} by {entry.by}: {entry.event}")

        group = f"chess-{run}"
        await accounts.create_group(group, "Chess club", ada, by="ada")
        await accounts.add_member(group, bob, by="ada")
        await accounts.remove_member(group, ada, by="ada")
        members = (await accounts.groups.load(group)).state.members
        after_two = (await accounts.groups.state_at(group, seq=2)).state.members
        say(f"members of {group} now: {sorted(members)}; after event 2: {sorted(after_two)}")

        await _settle(store)
        types = await store.read_all().fold(Counter[str](), lambda c, e: c + Counter([e.type]))
        say(f"global log: {await store.head()} events, by type: {dict(sorted(types.items()))}")

        with tempfile.TemporaryDirectory() as scratch:
            await _read_side(store, accounts, run, scratch, say)


async def _settle(store: Any) -> None:
    """Index what was appended so far, on a DynamoDB table in ``order=stream`` mode (its global log
    is written by an indexer: in a deployment a Lambda or ``streamsrc dynamodb index`` does this a
    moment after each append); nothing on every other store."""
    if getattr(store, "scale", False):
        from streamsrc.store.dynamodb import rebuild_index

        await rebuild_index(store)


async def _read_side(
    store: Any, accounts: Accounts, run: int, scratch: str, say: Callable[[str], object]
) -> None:
    """Read models kept by projections, and one added later and built by replay."""
    ada, bob = f"ada-{run}", f"bob-{run}"
    # On SQLite the read models live in the store's own file (their checkpoints commit with
    # their rows); elsewhere in a scratch file.
    path = store.path if isinstance(store, SqliteStore) else os.path.join(scratch, "views.db")
    async with (
        SqliteReadModel(path, views.USER_SEARCH_SCHEMA) as search_model,
        SqliteReadModel(path, views.GROUP_MEMBERS_SCHEMA) as members_model,
    ):
        for projection, model in ((views.user_search, search_model), (views.group_members, members_model)):
            before = await model.load_position(projection.name)
            status = await Projector(store, projection, model).catch_up()
            say(
                f"read model {projection.name}: caught up from position {before} to "
                f"{status.position} (head {status.head}, lag {status.lag})"
            )
        search, members = views.UserSearch(search_model), views.GroupMembers(members_model)
        found = [u.user_id for u in await search.by_email("ADA@example.com")]
        say(f"users with email ada@example.com: {found[-3:]}")
        named = [f"{u.name} ({u.username})" for u in await search.by_name_prefix("bo")]
        say(f"users whose name starts with 'bo': {named[-3:]}")
        say(f"members of chess-{run}: {await members.members(f'chess-{run}')}")
        say(f"groups of {bob}: {await members.groups_of(bob)}; of {ada}: {await members.groups_of(ada)}")

        # Follow the log live: the projection applies new events as they are appended.
        live = Projector(store, views.user_search, search_model).progress(live=True)
        async with anyio.create_task_group() as tg:

            async def register_cy() -> None:
                await accounts.register(f"cy-{run}", f"cy{run}", "Cy", "cy@example.org", "admin")
                await _settle(store)

            tg.start_soon(register_cy)
            with anyio.fail_after(10):
                await live.take_while(lambda p: not p.events).drain()  # until a batch applied something
        cys = [u.user_id for u in await search.by_email("CY@example.org")]
        say(f"followed live: cy-{run} registered; users with email cy@example.org: {cys[-3:]}")

    # A query nobody planned for: users per email domain. No migration: a new projection
    # replays the whole log into a new table.
    async with SqliteReadModel(os.path.join(scratch, "domains.db"), views.EMAIL_DOMAINS_SCHEMA) as model:
        done = await Projector(store, views.email_domains, model).catch_up()
        say(
            f"new read model {views.email_domains.name}, built by replaying {done.head} events: "
            f"{await views.EmailDomains(model).counts()}"
        )
