"""SQLite at the store's border (issue 19): typed errors from a locked file (bug 2), a failed
``COMMIT`` that rolls back (bug 3), and failed opens that close their connections at once (bug 5).

Every failure here is SQLite's own, on real files: a second connection holding the write lock,
a deferred foreign key that fails at ``COMMIT``, a file that is not a database, one of a newer
schema, one that cannot be written (an immutable file as root, a read-only one otherwise).
"""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from returns.result import Success

from streamsrc.errors import IncompatibleSchema, StoreUnavailable
from streamsrc.events import RecordedEvent, new_event_id, stored_event
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store
from streamsrc.store.sqlite import SCHEMA_VERSION, SqliteStore
from streamsrc.testing.conformance import append_ok, expect_failure, make_events

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------------------- bug 2: a locked file


@asynccontextmanager
async def write_locked(path: Path) -> AsyncIterator[None]:
    """Another connection (as another process would) holds the file's write lock for the block."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await anyio.to_thread.run_sync(other.execute, "BEGIN IMMEDIATE")
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(other.execute, "ROLLBACK")
    finally:
        other.close()


async def _checkpoint_in_a_transaction(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        tx.save_checkpoint("view", 7)


async def test_saves_on_a_locked_file_raise_store_unavailable(tmp_path: Path) -> None:
    """Bug 2: ``save_checkpoint`` and ``save_snapshot`` raised sqlite3's own ``OperationalError``
    ("database is locked"); every write now fails with ``StoreUnavailable`` naming the file and the
    cause, writes nothing, and works again once the lock is gone."""
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}?busy_timeout=0.05") as store:
        assert isinstance(store, SqliteStore)
        await append_ok(store, "s", make_events(1))
        saves: list[Callable[[], Awaitable[None]]] = [
            lambda: store.save_checkpoint("view", 7),
            lambda: store.save_snapshot("s", 1, {"n": 1}, 1),
        ]
        async with write_locked(path):
            for save in saves:
                with pytest.raises(StoreUnavailable) as caught:
                    await save()
                assert "locked" in str(caught.value)
                assert str(path) in str(caught.value)
                assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            error = expect_failure(await store.append("s", make_events(1), 1), StoreUnavailable)
            assert "locked" in str(error)
            with pytest.raises(StoreUnavailable, match="locked"):
                await _checkpoint_in_a_transaction(store)
            # reads go on: WAL lets readers past a writer
            assert await store.read("s").count() == 1
        assert await store.load_checkpoint("view") == 0
        assert (await store.load_snapshot("s", 1)).value_or(None) is None
        await store.save_checkpoint("view", 7)
        await store.save_snapshot("s", 1, {"n": 1}, 1)
        await append_ok(store, "s", make_events(1), 1)
        assert await store.load_checkpoint("view") == 7


async def test_a_read_model_on_a_locked_file_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    async with SqliteReadModel(
        str(path), "CREATE TABLE IF NOT EXISTS rows (n INTEGER)", busy_timeout=0.05
    ) as model:
        async with write_locked(path):
            with pytest.raises(StoreUnavailable, match="locked"):
                await model.apply("p", lambda conn, events: None, [], 3)
        await model.apply("p", lambda conn, events: None, [], 3)
        assert await model.load_position("p") == 3


# ------------------------------------------------------------------------ bug 3: a failed COMMIT

# A deferred foreign key is checked at COMMIT: a COMMIT that fails on it leaves the transaction
# open (SQLite's rule), which is what a full disk or an I/O error at COMMIT may do too.
_DEFERRED = [
    "CREATE TABLE IF NOT EXISTS known (name TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS uses (name TEXT REFERENCES known (name) DEFERRABLE INITIALLY DEFERRED)",
    # every write of the store names something that must be known by the time it commits
    "CREATE TRIGGER IF NOT EXISTS event_uses AFTER INSERT ON events BEGIN "
    "INSERT INTO uses VALUES (new.stream); END",
    "CREATE TRIGGER IF NOT EXISTS checkpoint_uses AFTER INSERT ON checkpoints BEGIN "
    "INSERT INTO uses VALUES (new.name); END",
    "CREATE TRIGGER IF NOT EXISTS snapshot_uses AFTER INSERT ON snapshots BEGIN "
    "INSERT INTO uses VALUES (new.key); END",
    "INSERT OR IGNORE INTO known VALUES ('good')",
]


def _foreign_keys_on(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys = ON")


@asynccontextmanager
async def checked_store(path: Path) -> AsyncIterator[SqliteStore]:
    """A store whose connections enforce foreign keys, with ``_DEFERRED``'s tables and triggers."""
    store = await SqliteStore(str(path), on_connect=_foreign_keys_on).open()
    try:
        async with store.transaction() as tx:
            for statement in _DEFERRED:
                tx.execute(statement)
        yield store
    finally:
        await store.aclose()


WRITES: dict[str, Callable[[SqliteStore, str], Any]] = {
    "append": lambda store, name: store.append(name, make_events(1)),
    "save_checkpoint": lambda store, name: store.save_checkpoint(name, 5),
    "save_snapshot": lambda store, name: store.save_snapshot(name, 1, {"n": 1}, 1),
}


async def _unavailable(call: Callable[[], Any]) -> StoreUnavailable:
    """The ``StoreUnavailable`` a write raises or returns."""
    try:
        result = await call()
    except StoreUnavailable as exc:
        return exc
    return expect_failure(result, StoreUnavailable)


async def _store_works(store: SqliteStore) -> None:
    """Every kind of write and read goes through (bug 3: "cannot start a transaction within a
    transaction")."""
    written = await append_ok(store, "good", make_events(1))
    await store.save_checkpoint("good", written.positions[-1])
    await store.save_snapshot("good", written.last_seq, {"ok": True}, 1)
    async with store.transaction() as tx:
        tx.append("good", make_events(1), written.last_seq)
    assert isinstance(tx.results[0], Success)
    assert await store.load_checkpoint("good") == written.positions[-1]
    assert await store.read("good").count() == written.last_seq + 1


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_whose_commit_fails_rolls_back_and_the_store_goes_on(
    tmp_path: Path, write: str
) -> None:
    """Bug 3: a failed ``COMMIT`` left the writer connection inside the transaction, and every later
    write failed with "cannot start a transaction within a transaction"."""
    async with checked_store(tmp_path / "events.db") as store:
        error = await _unavailable(lambda: WRITES[write](store, "unknown"))
        assert "FOREIGN KEY" in str(error)
        # rolled back: nothing of it is stored
        assert await store.read("unknown").count() == 0
        assert await store.load_checkpoint("unknown") == 0
        assert (await store.load_snapshot("unknown", 1)).value_or(None) is None
        await _store_works(store)
        # and again: the failure does not stick either
        await _unavailable(lambda: WRITES[write](store, "unknown"))
        await _store_works(store)


async def _unknown_use_in_a_transaction(store: SqliteStore) -> None:
    async with store.transaction() as tx:
        tx.append("good", make_events(1))
        tx.execute("INSERT INTO uses VALUES ('unknown')")


async def test_a_transaction_whose_commit_fails_rolls_back_and_the_store_goes_on(tmp_path: Path) -> None:
    async with checked_store(tmp_path / "events.db") as store:
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match="FOREIGN KEY"):
                await _unknown_use_in_a_transaction(store)
            assert await store.read("good").count() == 0
            assert await store.read_all().count() == 0
        await _store_works(store)


async def test_a_read_model_whose_commit_fails_rolls_back_and_goes_on(tmp_path: Path) -> None:
    schema = (
        "PRAGMA foreign_keys = ON; "
        "CREATE TABLE IF NOT EXISTS known (name TEXT PRIMARY KEY); "
        "CREATE TABLE IF NOT EXISTS uses "
        "(name TEXT REFERENCES known (name) DEFERRABLE INITIALLY DEFERRED);"
    )

    def insert(conn: sqlite3.Connection, events: Any) -> None:
        conn.execute("INSERT INTO uses VALUES ('unknown')")

    async with SqliteReadModel(str(tmp_path / "views.db"), schema) as model:
        event = stored_event("s", 1, 1, "Used", "{}", None, new_event_id(), 0)
        with pytest.raises(StoreUnavailable, match="FOREIGN KEY"):
            await model.apply("p", insert, [event], 1)
        assert await model.load_position("p") == 0
        await model.apply("p", lambda conn, events: None, [], 2)
        assert await model.load_position("p") == 2
        assert await model.query("SELECT * FROM uses") == []


# --------------------------------------------------------------- bug 5: failed opens leak nothing


def _descriptors(folder: Path) -> list[str]:
    """This process's open file descriptors on files in ``folder`` (read from ``/proc/self/fd``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{folder}{os.sep}"):
            found.append(target)
    return sorted(found)


def _threads() -> list[str]:
    import threading

    return sorted(t.name for t in threading.enumerate() if t.name.startswith("streamsrc-"))


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """``path`` cannot be written for the block: immutable as root (whom permissions do not stop),
    else without write permission, its folder too (SQLite would make a journal there)."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make {path} immutable: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
            path.chmod(0o644)


def _make(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@contextmanager
def _failing_file(kind: str, path: Path) -> Iterator[type[BaseException]]:
    """A file whose open fails after ``sqlite3.connect``; gives the error the open raises."""
    if kind == "not-a-database":
        path.write_bytes(b"this is not an SQLite database. " * 200)
        yield StoreUnavailable
    elif kind == "newer-schema":
        _make(
            path,
            "CREATE TABLE streamsrc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            f"INSERT INTO streamsrc_meta VALUES ('schema_version', '{SCHEMA_VERSION + 1}')",
        )
        yield IncompatibleSchema
    elif kind == "read-only":
        _make(path, "CREATE TABLE other (x INTEGER)")
        with _read_only(path):
            yield StoreUnavailable
    else:  # "cancelled": a good file, an open cancelled while it creates the tables
        yield anyio.get_cancelled_exc_class()


async def _open_store(path: Path) -> None:
    store = await SqliteStore(str(path)).open()
    await store.aclose()


async def _open_read_model(path: Path) -> None:
    model = await SqliteReadModel(str(path)).open()
    await model.aclose()


OPENERS: dict[str, Callable[[Path], Any]] = {"store": _open_store, "read-model": _open_read_model}


async def _fail_to_open(opener: str, path: Path, kind: str, expected: type[BaseException]) -> None:
    if kind == "cancelled":
        with anyio.CancelScope() as scope:
            scope.cancel()
            await OPENERS[opener](path)
        assert scope.cancelled_caught
    else:
        with pytest.raises(expected):
            await OPENERS[opener](path)


FAILED_OPENS = [
    (opener, kind)
    for opener in OPENERS
    for kind in ("not-a-database", "newer-schema", "read-only", "cancelled")
    if (opener, kind) != ("read-model", "newer-schema")  # a read model's file has no schema version
]


@pytest.mark.parametrize(("opener", "kind"), FAILED_OPENS)
async def test_failed_opens_close_their_connections_at_once(tmp_path: Path, opener: str, kind: str) -> None:
    """Bug 5: an open failing after ``sqlite3.connect`` left its connection (a file descriptor, and for
    some failures a thread) to the garbage collector; a service retrying the open piled them up."""
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "events.db"
    threads_before = _threads()
    with _failing_file(kind, path) as expected:
        enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(50):
                await _fail_to_open(opener, path, kind, expected)
            assert _descriptors(folder) == []
            assert _threads() == threads_before
        finally:
            if enabled:
                gc.enable()
    # a good open of the same folder works and, closed, leaves nothing either
    good = folder / "good.db"
    if opener == "store":
        async with open_store(f"sqlite:///{good}") as store:
            await append_ok(store, "s", make_events(1))
    else:
        async with SqliteReadModel(str(good)) as model:
            await model.apply("p", lambda conn, events: None, [], 1)
    assert _descriptors(folder) == []


async def test_an_open_store_closed_by_its_block_leaves_nothing(tmp_path: Path) -> None:
    """What a failed open must match: a store that opened and closed holds no descriptor or thread."""
    before = _threads()
    async with open_store(f"sqlite:///{tmp_path}/e.db") as store:
        await append_ok(store, "s", make_events(2))
        assert any(name.startswith("streamsrc-sqlite") for name in _threads())
        events: list[RecordedEvent] = await store.read("s").to_list()
        assert len(events) == 2
    assert _descriptors(tmp_path) == []
    assert _threads() == before
