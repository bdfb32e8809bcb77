"""The demo that ``streamsrc demo`` runs: the account-management example against a store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
from returns.result import Failure, Result, Success

from streamsrc.events import EventData
from streamsrc.examples.accounts import Accounts
from streamsrc.store import open_store


def _outcome(result: Result[Any, Any]) -> str:
    match result:
        case Success(saved):
            return f"saved, now at seq {saved.seq}"
        case Failure(error):
            return f"refused: {error}"
    return repr(result)


async def run_demo(url: str, say: Callable[[str], object]) -> None:
    """Run the demo against the store at ``url``, reporting each step through ``say``."""
    async with open_store(url) as store:
        # Each run gets a number, so the demo can run again on the same file.
        last_run = await store.latest("demo-runs")
        run = last_run.map(lambda e: e.seq).value_or(0) + 1
        await store.append("demo-runs", [EventData("DemoRun", {"run": run})], expected=run - 1)
        say(f"demo run {run} on {url}")
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

        types = await store.read_all().fold(Counter[str](), lambda c, e: c + Counter([e.type]))
        say(f"global log: {await store.head()} events, by type: {dict(sorted(types.items()))}")
