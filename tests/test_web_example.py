"""The web example (examples/web): the account example over HTTP, ETags as seqs, on real SQLite files.

The app runs in-process behind httpx's ASGI transport, with its lifespan
(which opens the store) run by asgi-lifespan, on asyncio and trio.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager

from streamsrc.store import open_store

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples/ is a folder of the repository, not of the installed package
    sys.path.insert(0, str(ROOT))

from examples.web.app import create_app  # noqa: E402

pytestmark = pytest.mark.anyio

ADA = {"id": "u1", "username": "ada", "name": "Ada Lovelace", "email": "ada@example.com"}


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app on ``url``, its lifespan running (store open) for the duration."""
    async with (
        LifespanManager(create_app(url)) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as client,
    ):
        yield client


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/accounts.db"


@pytest.fixture
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(url) as client:
        yield client


async def head(url: str) -> int:
    """The store's global position, read through a store of its own (the app's stays open)."""
    async with open_store(url) as store:
        return int(await store.head())


async def register(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await client.post("/users", json=ADA | fields, headers={"X-Actor": "admin"})


# ------------------------------------------------------------------------------------------- success


async def test_registering_answers_201_with_the_etag_and_location_that_get_then_serves(
    client: httpx.AsyncClient,
) -> None:
    created = await register(client)
    assert created.status_code == 201
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == "http://test/users/u1"
    assert created.json() == {
        "user_id": "u1",
        "username": "ada",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "exists": True,
        "seq": 1,
    }
    health = await client.get("/health")
    assert (health.status_code, health.json()) == (
        200,
        {"store": "ok", "head": 2},
    )  # the username's claim too
    got = await client.get(created.headers["Location"])
    assert got.status_code == 200
    assert got.headers["ETag"] == '"1"'
    assert got.json() == created.json()
    # A client that has seq 1 already is told nothing changed.
    assert (await client.get("/users/u1", headers={"If-None-Match": '"1"'})).status_code == 304
    # Without an id, the app picks one and says where the user is.
    anonymous = await client.post("/users", json={"username": "bob", "name": "Bob", "email": "b@example.com"})
    assert anonymous.status_code == 201
    assert (await client.get(anonymous.headers["Location"])).json()["username"] == "bob"


async def test_a_patch_with_the_current_etag_applies_and_returns_the_next_one(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    patched = await client.patch(
        "/users/u1", json={"name": "Ada King", "username": "countess"}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 200
    assert patched.headers["ETag"] == '"3"'  # two events: the username, then the name
    assert patched.headers["Location"] == "http://test/users/u1"
    assert patched.json()["name"] == "Ada King"
    got = await client.get("/users/u1")
    assert (got.headers["ETag"], got.json()["username"]) == ('"3"', "countess")
    # The old username is free again, the new one taken.
    assert (await register(client, id="u2", username="ada")).status_code == 201
    assert (await register(client, id="u3", username="countess")).status_code == 409
    # Any of several ETags may match; If-Match: * acts on whatever the seq is.
    listed = await client.patch("/users/u1", json={"name": "Ada"}, headers={"If-Match": '"9", "3"'})
    assert (listed.status_code, listed.headers["ETag"]) == (200, '"4"')
    anyway = await client.patch("/users/u1", json={"email": "ada@king.example"}, headers={"If-Match": "*"})
    assert (anyway.status_code, anyway.headers["ETag"]) == (200, '"5"')


# ------------------------------------------------------------------------------------------- preconditions


async def test_a_stale_etag_is_answered_412_with_the_current_seq_and_writes_nothing(
    client: httpx.AsyncClient, url: str
) -> None:
    await register(client)
    assert (
        await client.patch("/users/u1", json={"name": "A"}, headers={"If-Match": '"1"'})
    ).status_code == 200
    before = await head(url)
    stale = await client.patch(
        "/users/u1", json={"name": "B", "username": "countess"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["seq"] == 2
    assert stale.json()["etag"] == '"2"'
    assert await head(url) == before  # not even a claim of the new username
    for path, body in [("/users/u1/delete", None), ("/users/u1/revert", {"to": "2020-01-01T00:00:00Z"})]:
        assert (await client.post(path, json=body, headers={"If-Match": '"1"'})).status_code == 412
    assert await head(url) == before
    assert (await client.get("/users/u1")).json()["name"] == "A"


async def test_a_change_without_if_match_is_answered_428(client: httpx.AsyncClient, url: str) -> None:
    await register(client)
    before = await head(url)
    missing = await client.patch("/users/u1", json={"name": "B"})
    assert missing.status_code == 428
    assert "If-Match" in missing.json()["error"]
    assert (await client.post("/users/u1/delete")).status_code == 428
    malformed = await client.patch("/users/u1", json={"name": "B"}, headers={"If-Match": "1"})
    assert malformed.status_code == 400  # an ETag is quoted
    weak = await client.patch("/users/u1", json={"name": "B"}, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 412  # If-Match compares strongly: a weak ETag never matches
    assert await head(url) == before


async def test_of_concurrent_patches_with_the_same_etag_exactly_one_wins(client: httpx.AsyncClient) -> None:
    await register(client)
    statuses: dict[str, int] = {}

    async def patch(name: str) -> None:
        response = await client.patch("/users/u1", json={"name": name}, headers={"If-Match": '"1"'})
        statuses[name] = response.status_code

    async with anyio.create_task_group() as tg:
        for name in ("A", "B", "C", "D"):
            tg.start_soon(patch, name)
    assert sorted(statuses.values()) == [200, 412, 412, 412]
    winner = next(name for name, status in statuses.items() if status == 200)
    got = await client.get("/users/u1")
    assert (got.headers["ETag"], got.json()["name"]) == ('"2"', winner)


# ------------------------------------------------------------------------------------------- refusals


async def test_a_domain_rejection_is_answered_409_with_its_reasons(client: httpx.AsyncClient) -> None:
    await register(client)
    taken = await register(client, id="u2")
    assert taken.status_code == 409
    assert taken.json() == {"error": "rejected", "reasons": ["username 'ada' is taken"]}
    assert (await client.get("/users/u2")).status_code == 404
    await register(client, id="u2", username="bob")
    rename = await client.patch("/users/u2", json={"username": "ada"}, headers={"If-Match": '"1"'})
    assert (rename.status_code, rename.json()["reasons"]) == (409, ["username 'ada' is taken"])
    bad_email = await client.patch("/users/u2", json={"email": "nowhere"}, headers={"If-Match": '"1"'})
    assert (bad_email.status_code, bad_email.json()["reasons"]) == (
        409,
        ["'nowhere' is not an email address"],
    )
    orphan = await client.post("/groups", json={"id": "g1", "name": "chess", "owner": "nobody"})
    assert (orphan.status_code, orphan.json()["reasons"]) == (409, ["user 'nobody' does not exist"])


async def test_an_unknown_entity_is_answered_404(client: httpx.AsyncClient) -> None:
    for path in ("/users/nobody", "/users/nobody/history", "/groups/nothing"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"].startswith("no ")
    assert (
        await client.patch("/users/nobody", json={"name": "X"}, headers={"If-Match": '"1"'})
    ).status_code == 404
    assert (
        await client.post("/groups/nothing/members", json={"user_id": "u1"}, headers={"If-Match": '"1"'})
    ).status_code == 404


async def test_a_malformed_body_is_answered_422_with_what_is_wrong(client: httpx.AsyncClient) -> None:
    not_json = await client.post("/users", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()["error"]) == (422, "the body is not JSON")
    assert (await client.post("/users", json=["ada"])).status_code == 422
    wrong = await client.post("/users", json={"username": "ada", "name": 7, "colour": "red"})
    assert wrong.status_code == 422
    assert sorted(wrong.json()["reasons"]) == [
        "'email' is missing",
        "'name' must be a string",
        "unknown field 'colour'",
    ]
    assert (await register(client, id="not/an id")).status_code == 422
    await register(client)
    for body in ({}, {"name": None}):
        assert (await client.patch("/users/u1", json=body, headers={"If-Match": '"1"'})).status_code == 422
    assert (await client.get("/users/u1?at=yesterday")).status_code == 422
    assert (await client.get("/users/u1")).headers["ETag"] == '"1"'


# ------------------------------------------------------------------------------------------- queries


async def test_history_time_travel_and_revert(client: httpx.AsyncClient) -> None:
    await register(client)
    headers = {"X-Actor": "ada"}
    await client.patch("/users/u1", json={"name": "Ada King"}, headers=headers | {"If-Match": '"1"'})
    await client.patch("/users/u1", json={"email": "ada@king.example"}, headers=headers | {"If-Match": '"2"'})

    history = await client.get("/users/u1/history")
    assert history.status_code == 200
    assert history.headers["ETag"] == '"3"'
    entries = history.json()
    assert [(e["seq"], e["type"], e["by"]) for e in entries] == [
        (1, "UserRegistered", "admin"),
        (2, "NameChanged", "ada"),
        (3, "EmailChanged", "ada"),
    ]
    assert entries[1]["event"] == {"user_id": "u1", "name": "Ada King"}
    assert entries[1]["state"]["name"] == "Ada King"
    assert entries[1]["state"]["email"] == "ada@example.com"

    at_seq = await client.get("/users/u1", params={"at": "1"})
    assert (at_seq.headers["ETag"], at_seq.json()["name"]) == ('"1"', "Ada Lovelace")
    at_time = await client.get("/users/u1", params={"at": entries[1]["time"]})
    assert at_time.json() | {"seq": 0} == entries[1]["state"] | {"seq": 0}
    assert at_time.json()["seq"] == 2
    assert (await client.get("/users/u1", params={"at": "2000-01-01T00:00:00Z"})).status_code == 404

    reverted = await client.post(
        "/users/u1/revert", json={"to": entries[0]["time"]}, headers={"If-Match": '"3"'}
    )
    assert reverted.status_code == 200
    assert reverted.headers["ETag"] == '"5"'  # compensating events: the name, then the email
    assert (reverted.json()["name"], reverted.json()["email"]) == ("Ada Lovelace", "ada@example.com")
    assert len((await client.get("/users/u1/history")).json()) == 5  # history is never rewritten


async def test_deleting_a_user_and_group_membership(client: httpx.AsyncClient) -> None:
    await register(client)
    await register(client, id="u2", username="bob")
    group = await client.post("/groups", json={"id": "g1", "name": "chess", "owner": "u1"})
    assert (group.status_code, group.headers["ETag"], group.headers["Location"]) == (
        201,
        '"1"',
        "http://test/groups/g1",
    )
    added = await client.post("/groups/g1/members", json={"user_id": "u2"}, headers={"If-Match": '"1"'})
    assert (added.status_code, added.headers["ETag"], added.json()["members"]) == (200, '"2"', ["u1", "u2"])
    stale = await client.post("/groups/g1/members", json={"user_id": "u1"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    removed = await client.delete("/groups/g1/members/u1", headers={"If-Match": '"2"'})
    assert (removed.status_code, removed.json()["members"]) == (200, ["u2"])
    assert (await client.get("/groups/g1", params={"at": "2"})).json()["members"] == ["u1", "u2"]

    deleted = await client.post("/users/u2/delete", headers={"If-Match": '"1"'})
    assert (deleted.status_code, deleted.headers["ETag"], deleted.json()["exists"]) == (200, '"2"', False)
    again = await client.post("/users/u2/delete", headers={"If-Match": '"2"'})
    assert (again.status_code, again.json()["reasons"]) == (409, ["user 'u2' does not exist"])
    late = await client.post("/groups/g1/members", json={"user_id": "u2"}, headers={"If-Match": '"3"'})
    assert (late.status_code, late.json()["reasons"]) == (409, ["user 'u2' does not exist"])


# ------------------------------------------------------------------------------------------- store failures


async def test_a_store_that_cannot_be_opened_is_answered_503_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "accounts.db").write_bytes(b"this is not a SQLite database\n" * 200)
    async with serving(f"sqlite:///{tmp_path}/accounts.db") as client:
        for response in (await client.get("/health"), await client.get("/users/u1"), await register(client)):
            assert response.status_code == 503
            error = response.json()["error"]
            assert error.startswith("store unavailable: cannot open SQLite database")
            assert "\n" not in response.text
            assert "Traceback" not in response.text


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another process's view: a connection that holds the database's write lock meanwhile."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.rollback()
        conn.close()


async def test_a_store_that_fails_writes_is_answered_503_and_the_command_can_be_sent_again(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/accounts.db?busy_timeout=0.02"
    async with serving(url) as client:
        await register(client)
        with write_locked(tmp_path / "accounts.db"):
            refused = await register(client, id="u2", username="bob")
            assert refused.status_code == 503
            error = refused.json()["error"]
            assert error.startswith("store unavailable: append to 'username-bob' on <SqliteStore")
            patched = await client.patch("/users/u1", json={"name": "X"}, headers={"If-Match": '"1"'})
            assert patched.status_code == 503
            assert (await client.get("/users/u1")).status_code == 200  # reads go on
        assert (await register(client, id="u2", username="bob")).status_code == 201
        assert (
            await client.patch("/users/u1", json={"name": "X"}, headers={"If-Match": '"1"'})
        ).status_code == 200
