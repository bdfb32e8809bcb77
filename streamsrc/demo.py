"""The demo that ``streamsrc demo`` runs: the account example written to a store and read back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from returns.result import Failure, Success

from streamsrc.events import EventData
from streamsrc.examples.accounts import (
    Group,
    GroupCreated,
    MemberAdded,
    MemberRemoved,
    User,
    UserRegistered,
    codec,
    evolve_group,
    evolve_user,
    group_stream,
    user_stream,
)
from streamsrc.store import NO_STREAM, open_store


async def run_demo(url: str, say: Callable[[str], object]) -> None:
    """Run the demo against the store at ``url``, reporting each step through ``say``."""
    async with open_store(url) as store:
        # Each run gets a number, so the demo can run again on the same file.
        last_run = await store.latest("demo-runs")
        run = last_run.map(lambda e: e.seq).value_or(0) + 1
        started = await store.append("demo-runs", [EventData("DemoRun", {"run": run})], expected=run - 1)
        say(f"demo run {run} on {url}: {started}")

        ada, bob = f"ada{run}", f"bob{run}"
        for user_id, email, name in [(ada, "ada@example.com", "Ada"), (bob, "bob@example.com", "Bob")]:
            saved = await store.append(
                user_stream(user_id), [codec.encode(UserRegistered(user_id, email, name))], NO_STREAM
            )
            say(f"registered {name}: {saved}")

        again = await store.append(
            user_stream(ada), [codec.encode(UserRegistered(ada, "other@example.com", "Eve"))], NO_STREAM
        )
        match again:
            case Failure(error):
                say(f"registering {ada} twice is refused, as a value: {error!r}")
            case Success(_):
                raise AssertionError("a second registration must be refused")

        group = f"chess{run}"
        batch = [
            codec.encode(GroupCreated(group, "Chess club", ada)),
            codec.encode(MemberAdded(group, bob)),
        ]
        first = await store.append(group_stream(group), batch, NO_STREAM)
        retry = await store.append(group_stream(group), batch, NO_STREAM)
        say(f"group created: {first}; the same batch retried: {retry} (nothing written twice)")
        await store.append(group_stream(group), [codec.encode(MemberRemoved(group, ada))], expected=2)

        history = store.read(group_stream(group)) | codec.decode_all
        now = await history.fold(Group(), evolve_group)
        before = await history.take(2).fold(Group(), evolve_group)
        say(f"members of {group} now: {sorted(now.members)}; after event 2: {sorted(before.members)}")

        user = await (store.read(user_stream(ada)) | codec.decode_all).fold(User(), evolve_user)
        say(f"state of {ada}: {user}")

        types = await store.read_all().fold(Counter[str](), lambda c, e: c + Counter([e.type]))
        say(f"global log: {await store.head()} events, by type: {dict(sorted(types.items()))}")
