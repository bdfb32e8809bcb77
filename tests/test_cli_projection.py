"""``streamsrc projection status`` and ``switch`` beyond SQLite, run as users run them (a subprocess):
status on DynamoDB (moto's server) lists the store's checkpoints and the partitions with their DynamoDB
leases; switch moves a rebuilt PostgreSQL read model in (tables, constraints, indexes, sequences, rows,
checkpoint, marks, dead letters) in one transaction of the real PostgreSQL server, or nothing at all."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_cli import json_lines, ok, one_line_error, streamsrc

# ------------------------------------------------------------------------------------------ DynamoDB

DYNAMODB_VIEWS = """
import sys

import anyio
from streamsrc.projections import CallbackReadModel, Projection, Projector
from streamsrc.projections.dynamodb import DynamoDBLeases
from streamsrc.store import open_store


def ignore(events):
    pass


mailer = Projection("mailer", ignore)
parted = [Projection(f"parted[{i}/3]", ignore, stream_prefix="user-") for i in range(3)]


async def main(url):
    async with open_store(url) as store, DynamoDBLeases(url) as leases:
        model = CallbackReadModel(checkpoints=store)  # checkpoints in the store's checkpoints table
        await Projector(store, mailer, model).catch_up()
        await Projector(store, parted[1], model).catch_up()
        await leases.acquire("parted", 1, "worker-b", ttl=600)
        await leases.heartbeat("parted", "worker-b", ttl=600)


anyio.run(main, sys.argv[1], backend="asyncio")
"""


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    ok(streamsrc("demo", cwd=folder))
    return folder / "streamsrc.db"


def _rows(status: str) -> dict[str, list[str]]:
    lines = status.splitlines()
    assert lines[0].split() == ["PROJECTION", "POSITION", "HEAD", "LAG"], lines
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_status_on_dynamodb_lists_the_stores_checkpoints_and_the_partitions_leases(
    demo_db: Path, tmp_path: Path
) -> None:
    """The status of a DynamoDB store showed only the projections given with --projection: now every
    checkpoint of its checkpoints table (a paged Scan), and each partition with its lease's owner."""
    from store_urls import fresh_dynamodb_url

    url = fresh_dynamodb_url()
    empty = streamsrc("--url", url, "projection", "status", cwd=tmp_path)
    assert ok(empty) == ""
    assert "no projections recorded" in empty.stderr
    ok(streamsrc("copy", f"sqlite:///{demo_db}", url, cwd=tmp_path))
    head = len(json_lines(ok(streamsrc("--url", url, "read-all", "--json", cwd=tmp_path))))
    (tmp_path / "dynviews.py").write_text(DYNAMODB_VIEWS)
    ran = subprocess.run(
        [sys.executable, "dynviews.py", url], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    status = streamsrc("--url", url, "projection", "status", cwd=tmp_path, env={"COLUMNS": ""})
    rows = _rows(ok(status))
    assert rows["mailer"] == [str(head), str(head), "0"]
    [copied] = [line for line in status.stdout.splitlines() if line.startswith("streamsrc.migrate")]
    assert copied.split()[-3:] == [str(head), str(head), "0"]  # copy's checkpoint
    assert rows["parted"] == ["0", str(head), str(head)]  # as far as its slowest partition
    assert rows["parted[1/3]"][:3] == [str(head), str(head), "0"]
    assert rows["parted[1/3]"][3] == "worker-b"  # the lease, from DynamoDBLeases
    assert rows["parted[0/3]"] == ["0", str(head), str(head), "-"]  # never run, nobody holds it
    assert rows["parted[2/3]"] == ["0", str(head), str(head), "-"]
    assert not any("lease" in name or "member" in name for name in rows)  # leases are no checkpoints
    assert "\x00" not in status.stdout
    # rebuild and switch work on a DynamoDB store too: the read model is a SQLite file (--model).
    for into in ("live.db", "rebuilt.db"):
        done = streamsrc(
            "--url", url, "projection", "rebuild", "account-user-search", "--into", into, cwd=tmp_path
        )
        assert f"up to position {head}" in ok(done)
    with sqlite3.connect(tmp_path / "live.db") as conn:
        conn.execute("DELETE FROM users")
    model = ["--model", "live.db"]
    switch = ["projection", "switch", "account-user-search", "--from", "rebuilt.db", *model]
    assert f"at position {head}" in ok(streamsrc("--url", url, *switch, cwd=tmp_path))
    with sqlite3.connect(tmp_path / "live.db") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    both = _rows(
        ok(streamsrc("--url", url, "projection", "status", *model, cwd=tmp_path, env={"COLUMNS": ""}))
    )
    assert both["account-user-search"] == [str(head), str(head), "0"]  # the read model's checkpoint
    assert both["mailer"] == [str(head), str(head), "0"]  # and the store's


# ---------------------------------------------------------------------------------------- PostgreSQL

PG_VIEWS = """
from streamsrc.projections import Projection

SCHEMA = '''
CREATE TABLE IF NOT EXISTS kinds (kind TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0));
CREATE TABLE IF NOT EXISTS seen (
    id SERIAL PRIMARY KEY,
    kind TEXT NOT NULL REFERENCES kinds (kind),
    stream TEXT NOT NULL,
    tag BIGINT GENERATED BY DEFAULT AS IDENTITY,
    upper_kind TEXT GENERATED ALWAYS AS (upper(kind)) STORED,
    note TEXT DEFAULT 'none'
);
CREATE INDEX IF NOT EXISTS seen_by_stream ON seen (stream);
'''


async def count(conn, events):
    for e in events:
        await conn.execute(
            "INSERT INTO kinds VALUES ($1, 1) ON CONFLICT (kind) DO UPDATE SET n = kinds.n + 1", e.type
        )
        await conn.execute("INSERT INTO seen (kind, stream) VALUES ($1, $2)", e.type, e.stream)


kinds = Projection("kinds", count)
"""


@pytest.fixture
def databases(postgres_server: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases on the test server: the store's (the live read model too) and a rebuild's."""
    from pg_server import create_database, drop_database, run_async

    names = [f"streamsrc_switch_{os.getpid()}_{kind}" for kind in ("live", "rebuilt")]
    urls = [run_async(lambda name=name: create_database(postgres_server, name)) for name in names]  # type: ignore[misc]
    try:
        yield urls[0], urls[1]
    finally:
        for name in names:
            run_async(lambda name=name: drop_database(postgres_server, name))  # type: ignore[misc]


def _sql(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    from pg_server import run_async

    async def run() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return run_async(run)


def test_a_rebuilt_postgresql_read_model_is_switched_in_whole_in_one_transaction(
    demo_db: Path, tmp_path: Path, databases: tuple[str, str]
) -> None:
    """switch refused PostgreSQL ('works on SQLite read models'): now the rebuilt database's tables, with
    their constraints, indexes, sequences and rows, and the projection's checkpoint, marks and dead
    letters replace the live ones in one transaction; the live model goes on from there."""
    live, rebuilt = databases
    (tmp_path / "pgviews.py").write_text(PG_VIEWS)
    ok(streamsrc("copy", f"sqlite:///{demo_db}", live, cwd=tmp_path))
    head = len(json_lines(ok(streamsrc("--url", live, "read-all", "--json", cwd=tmp_path))))
    views = ["--projection", "pgviews:kinds", "--schema", "pgviews:SCHEMA"]
    ok(streamsrc("--url", live, "projection", "rebuild", "kinds", *views, "--into", live, cwd=tmp_path))
    # The live model is damaged: rows lost, a dead letter and a stream mark that the rebuild has not.
    _sql(live, "DELETE FROM seen WHERE stream LIKE 'user-%'")
    _sql(live, "INSERT INTO streamsrc_dead_letters VALUES ('kinds', 3, 's', 1, 'T', 'x', 'boom', 0)")
    _sql(live, "INSERT INTO streamsrc_projection_streams VALUES ('kinds', 'user-x', 99)")
    _sql(live, "INSERT INTO streamsrc_projections VALUES ('other', 7, 0)")  # another projection: kept
    ok(streamsrc("--url", live, "projection", "rebuild", "kinds", *views, "--into", rebuilt, cwd=tmp_path))
    switched = ok(streamsrc("--url", live, "projection", "switch", "kinds", "--from", rebuilt, cwd=tmp_path))
    assert f"at position {head}" in switched
    assert rebuilt.rsplit("/", 1)[1] in switched
    password = urlsplit(rebuilt).password
    assert password
    assert password not in switched  # the URL is shown with ***
    assert "(kinds, seen)" in switched
    assert _sql(live, "SELECT count(*) FROM seen") == [(head,)]
    assert _sql(live, "SELECT sum(n) FROM kinds") == [(head,)]
    assert _sql(live, "SELECT count(*) FROM streamsrc_dead_letters") == [(0,)]
    assert _sql(live, "SELECT count(*) FROM streamsrc_projection_streams") == [(0,)]
    assert _sql(live, "SELECT name, position FROM streamsrc_projections ORDER BY name") == [
        ("kinds", head),
        ("other", 7),
    ]
    # The tables came over whole: index, foreign key, check, defaults, sequences at their values.
    assert _sql(live, "SELECT indexname FROM pg_indexes WHERE tablename = 'seen' ORDER BY 1") == [
        ("seen_by_stream",),
        ("seen_pkey",),
    ]
    kinds = _sql(live, "SELECT contype::text FROM pg_constraint WHERE conrelid = 'seen'::regclass ORDER BY 1")
    assert [k for (k,) in kinds] == ["f", "p"]
    added = _sql(
        live,
        "INSERT INTO seen (kind, stream) VALUES ('UserRegistered', 'z') RETURNING id, tag, upper_kind, note",
    )
    assert added == [(head + 1, head + 1, "USERREGISTERED", "none")]
    with pytest.raises(Exception, match="violates"):
        _sql(live, "INSERT INTO seen (kind, stream) VALUES ('NoSuchKind', 'z')")
    status = _rows(ok(streamsrc("--url", live, "projection", "status", cwd=tmp_path, env={"COLUMNS": ""})))
    assert status["kinds"] == [str(head), str(head), "0"]
    # Again, from the same rebuild: the same result (the rows are the rebuild's, not added twice).
    ok(streamsrc("--url", live, "projection", "switch", "kinds", "--from", rebuilt, cwd=tmp_path))
    assert _sql(live, "SELECT count(*) FROM seen") == [(head,)]


def test_a_postgresql_switch_that_fails_changes_nothing(
    demo_db: Path, tmp_path: Path, databases: tuple[str, str]
) -> None:
    live, rebuilt = databases
    (tmp_path / "pgviews.py").write_text(PG_VIEWS)
    ok(streamsrc("copy", f"sqlite:///{demo_db}", live, cwd=tmp_path))
    views = ["--projection", "pgviews:kinds", "--schema", "pgviews:SCHEMA"]
    ok(streamsrc("--url", live, "projection", "rebuild", "kinds", *views, "--into", live, cwd=tmp_path))
    _sql(live, "DELETE FROM seen")
    missing = streamsrc("--url", live, "projection", "switch", "kinds", "--from", rebuilt, cwd=tmp_path)
    one_line_error(missing, "has no projection 'kinds'", "rebuild it first")
    ok(streamsrc("--url", live, "projection", "rebuild", "kinds", *views, "--into", rebuilt, cwd=tmp_path))
    # A table of a type the live database lacks: its CREATE TABLE fails after the others were replaced.
    _sql(rebuilt, "CREATE TYPE mood AS ENUM ('ok')")
    _sql(rebuilt, "CREATE TABLE zz (m mood)")
    failed = streamsrc("--url", live, "projection", "switch", "kinds", "--from", rebuilt, cwd=tmp_path)
    one_line_error(failed, "cannot switch 'kinds' in", "mood")
    assert _sql(live, "SELECT count(*) FROM seen") == [(0,)]  # rolled back: the live tables as they were
    assert _sql(live, "SELECT to_regclass('zz')") == [(None,)]
    _sql(rebuilt, "DROP TABLE zz")
    _sql(rebuilt, "CREATE TABLE parted (k INT) PARTITION BY RANGE (k)")
    _sql(rebuilt, "CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (10)")
    parted = streamsrc("--url", live, "projection", "switch", "kinds", "--from", rebuilt, cwd=tmp_path)
    one_line_error(parted, "partitioned tables", "parted, parted_low")
    assert _sql(live, "SELECT count(*) FROM seen") == [(0,)]
    one_line_error(
        streamsrc("--url", live, "projection", "switch", "kinds", "--from", "rebuilt.db", cwd=tmp_path),
        "give --from postgresql://",
    )
    one_line_error(
        streamsrc("--url", live, "projection", "switch", "kinds", "--from", live, cwd=tmp_path),
        "is the live read model itself",
    )
    password = urlsplit(rebuilt).password
    assert password
    assert password not in failed.stderr  # never a password


# -------------------------------------------------------------------------------------------- SQLite


def test_a_sqlite_switch_moves_the_projections_stream_marks_with_its_checkpoint(
    demo_db: Path, tmp_path: Path
) -> None:
    """The live model's marks (how far each stream got past its checkpoint) stayed after a switch: the
    projection would skip those streams' events between the rebuilt checkpoint and the old marks."""
    db = tmp_path / "live.db"
    shutil.copy(demo_db, db)
    url = f"sqlite:///{db}"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO streamsrc_projection_streams VALUES ('account-user-search', 'user-x', 999)")
    rebuilt = tmp_path / "rebuilt.db"
    ok(
        streamsrc(
            "--url", url, "projection", "rebuild", "account-user-search", "--into", str(rebuilt), cwd=tmp_path
        )
    )
    ok(
        streamsrc(
            "--url", url, "projection", "switch", "account-user-search", "--from", str(rebuilt), cwd=tmp_path
        )
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM streamsrc_projection_streams").fetchall() == []
    again = ["projection", "switch", "account-user-search", "--from", f"sqlite:///{rebuilt}"]
    assert "switched in" in ok(streamsrc("--url", url, *again, cwd=tmp_path))  # a sqlite:/// URL as well
    one_line_error(
        streamsrc(
            "--url", url, "projection", "switch", "account-user-search", "--from", str(db), cwd=tmp_path
        ),
        "is the live read model itself",
    )
