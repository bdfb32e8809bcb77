"""Crash safety: processes killed by SIGKILL mid-append, mid-projection and mid-copy leave consistent stores.

Each test runs a real child process (``crash_child.py`` with the public API,
or the ``streamsrc`` command line), kills it with SIGKILL at a seeded random
moment once it has reported some progress, then reopens what it was writing
and checks it, several times over on the same files and databases:

* appends (SQLite, PostgreSQL, DynamoDB on moto): every acknowledged batch
  is in the log where it was acknowledged, every batch in the log is whole,
  positions and seqs have no gaps, and the store takes new appends;
* projections: the read model's rows are exactly the events up to its
  checkpoint (never a row beyond it, none missing, none twice), and a restart
  catches up to every event applied once;
* ``streamsrc copy``: the target is the source's log up to a point at or after
  its checkpoint, cut only where the copy commits, and the rerun finishes
  with the target equal to the source on every field.

The parent kills a child at a seeded random moment after it has reported some
progress (so the kill lands mid-work however fast the machine), and every
child is killed and reaped when a test ends, failed or not.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import asyncpg
import pytest
from crash_child import (
    NAME,
    SELECT_ROWS,
    STREAMS,
    Row,
    batch_events,
    row,
)
from store_urls import fresh_dynamodb_url, fresh_postgres_database

from streamsrc.events import EventData, RecordedEvent
from streamsrc.migrate import checkpoint_name
from streamsrc.store import NO_STREAM, EventStore, open_store

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 3
"""Kills per test (the copy tests kill up to :data:`COPY_KILLS` times)."""

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]  # SQLite children: both


# ---------------------------------------------------------------------------------------- children


@pytest.fixture
def child_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    """A file for the children's stderr, shown when one ends by itself."""
    with open_log(tmp_path / "children.log") as log:
        yield log


@contextmanager
def open_log(path: Path) -> Iterator[IO[bytes]]:
    """A file for a child's stderr, readable back."""
    with open(path, "w+b") as log:
        yield log


def log_text(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-4000:]


@contextmanager
def spawned(
    args: Sequence[str], out: Path, log: IO[bytes], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process writing its stdout to ``out``, its stderr to ``log``: killed (if still
    running) and reaped when the block ends, whatever happened in it."""
    with open(out, "ab") as stdout:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def wait_until(
    proc: subprocess.Popen[bytes], progress: Callable[[], int], target: int, log: IO[bytes]
) -> bool:
    """Wait until ``progress()`` reaches ``target``; ``False`` if the child ended first (with status 0:
    else the test fails)."""
    with anyio.fail_after(30):  # a bound for a hung child, not a measurement
        while progress() < target:
            if proc.poll() is not None:
                assert proc.returncode == 0, log_text(log)
                return progress() >= target
            await anyio.sleep(0.003)
    return True


async def kill(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """SIGKILL the child and reap it; it must not have died by itself before."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    await anyio.to_thread.run_sync(proc.wait)
    assert proc.returncode == -signal.SIGKILL, log_text(log)


def lines(path: Path) -> list[str]:
    """The complete lines of ``path`` (a kill may leave the last one cut)."""
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


def acknowledged(out: Path) -> int:
    """How many appends the append child has acknowledged so far."""
    return max(0, len(lines(out)) - 1)  # after "ready"


@asynccontextmanager
async def store_url(kind: str, tmp_path: Path, name: str = "events") -> AsyncIterator[str]:
    """The URL of a fresh store: a SQLite file, a fresh database on the session's PostgreSQL, or fresh
    DynamoDB tables on the session's moto server (made by the first to open them)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/{name}.db"
    elif kind == "dynamodb":
        yield fresh_dynamodb_url()
    else:
        async with fresh_postgres_database() as url:
            yield url


OTHER_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


async def settled(url: str) -> None:
    """Wait until a killed child's sessions on the PostgreSQL database ``url`` are gone.

    The server finishes (and may commit) a statement a client sent before it
    died; once the sessions end, what a check reads stays as it is.
    """
    if url.startswith("dynamodb"):
        await dynamodb_settled(url)
    if not url.startswith("postgresql"):
        return
    conn = await asyncpg.connect(url)
    try:
        with anyio.fail_after(30):
            while await conn.fetchval(OTHER_SESSIONS):  # noqa: ASYNC110 (sessions of another process: no event to wait on)
                await anyio.sleep(0.01)
    finally:
        await conn.close()


async def dynamodb_settled(url: str) -> None:
    """Wait until moto has handled what a killed child sent: the head has not moved for 0.3 s.

    moto (in this process) finishes a request whose bytes arrived before the
    child died, as DynamoDB would; there are no sessions to watch, only the log.
    """
    async with open_store(url) as store:
        with anyio.fail_after(30):
            head, still = await store.head(), 0
            while still < 3:
                await anyio.sleep(0.1)
                now = await store.head()
                head, still = now, (still + 1 if now == head else 0)


def sqlite_integrity(url: str) -> None:
    path = url.removeprefix("sqlite:///").split("?")[0]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- the log


def check_log(events: Sequence[RecordedEvent], head: int) -> dict[str, list[RecordedEvent]]:
    """Gap-free positions and seqs, every batch whole and in one piece; the batches by id."""
    assert [e.position for e in events] == list(range(1, len(events) + 1))
    assert head == len(events)
    seqs: dict[str, list[int]] = defaultdict(list)
    batches: dict[str, list[RecordedEvent]] = defaultdict(list)
    for e in events:
        seqs[e.stream].append(e.seq)
        batches[e.data["batch"]].append(e)
    for stream, found in seqs.items():
        assert found == list(range(1, len(found) + 1)), stream
    for batch, members in batches.items():
        size = members[0].data["size"]
        assert [e.data["i"] for e in members] == list(range(size)), f"batch {batch} is torn"
        assert all(e.metadata == {"batch": batch, "size": size} for e in members)
        first = members[0]
        assert [(e.stream, e.seq, e.position) for e in members] == [
            (first.stream, first.seq + i, first.position + i) for i in range(size)
        ], f"batch {batch} is not in one piece"
    return batches


async def run_appends(
    url: str,
    backends: Sequence[str],
    tmp_path: Path,
    rng: random.Random,
    log: IO[bytes],
    most: int = 60,
    writers: int | None = None,
) -> None:
    """Rounds of a child appending, killed after 5 to ``most`` acknowledged appends, then checks."""
    acks: list[dict[str, Any]] = []
    for round_, backend in enumerate(backends):
        out = tmp_path / f"append-{round_}.out"
        args = [sys.executable, str(CHILD), "append", url, str(rng.randrange(10**6)), str(round_), backend]
        args += [] if writers is None else [str(writers)]
        enough = rng.randint(5, most)  # acknowledged appends before the kill
        with spawned(args, out, log) as proc:
            assert await wait_until(proc, partial(acknowledged, out), enough, log)
            await anyio.sleep(rng.uniform(0, 0.02))
            await kill(proc, log)
        said = lines(out)
        assert said[0] == "ready\n"
        acks += [json.loads(line) for line in said[1:]]
        await settled(url)
        if url.startswith("sqlite"):
            await anyio.to_thread.run_sync(sqlite_integrity, url)
        async with open_store(url) as store:
            events = await store.read_all().to_list()
            batches = check_log(events, await store.head())
            for ack in acks:  # every acknowledged batch, where it was acknowledged
                members = batches[ack["batch"]]
                assert [(e.stream, e.seq, e.position, str(e.id)) for e in members] == [
                    (ack["stream"], ack["first_seq"] + i, p, id_)
                    for i, (p, id_) in enumerate(zip(ack["positions"], ack["ids"], strict=True))
                ]
            # A writer retrying the last batch after the crash (same ids, same place) is told where
            # it went, and nothing is written twice.
            last = batches[events[-1].data["batch"]]
            retry = [EventData(e.type, e.data, e.metadata, e.id) for e in last]
            again = (await store.append(last[0].stream, retry, expected=last[0].seq - 1)).unwrap()
            assert again.positions == tuple(e.position for e in last)
            assert await store.head() == len(events)
            # The store takes appends after the crash.
            stream = f"parent-{round_}"
            appended = (await store.append(stream, batch_events(stream, 3), expected=NO_STREAM)).unwrap()
            assert appended.positions[0] > len(events)
            assert [e.position for e in await store.read(stream).to_list()] == list(appended.positions)
    async with open_store(url) as store:
        check_log(await store.read_all().to_list(), await store.head())


async def test_sqlite_appends_killed_mid_run_keep_whole_batches_where_acknowledged(
    tmp_path: Path, child_log: IO[bytes]
) -> None:
    async with store_url("sqlite", tmp_path) as url:
        await run_appends(url, ["asyncio", "trio", "asyncio"], tmp_path, random.Random(11), child_log)


async def test_postgres_appends_killed_mid_run_keep_whole_batches_where_acknowledged(
    tmp_path: Path, child_log: IO[bytes]
) -> None:
    async with store_url("postgres", tmp_path) as url:
        await run_appends(url, ["asyncio"] * ROUNDS, tmp_path, random.Random(12), child_log)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_appends_killed_mid_group_commit_keep_whole_batches_where_acknowledged(
    kind: str, tmp_path: Path, child_log: IO[bytes]
) -> None:
    """16 writers in the child: their appends commit in groups (issue 15), and the kill lands
    while one is in flight; no append of a group is torn, none acknowledged is lost."""
    async with store_url(kind, tmp_path) as url:
        durable = f"{url}?synchronous=full" if kind == "sqlite" else url
        await run_appends(
            durable, ["asyncio"] * 3, tmp_path, random.Random(14), child_log, most=120, writers=16
        )


async def test_dynamodb_appends_killed_mid_run_keep_whole_batches_where_acknowledged(
    tmp_path: Path, child_log: IO[bytes]
) -> None:
    async with store_url("dynamodb", tmp_path) as url:
        # moto copies the tables a transaction touches, so appends slow down as they grow: fewer.
        await run_appends(url, ["asyncio"] * ROUNDS, tmp_path, random.Random(13), child_log, most=12)


# ------------------------------------------------------------------------------------------ projections


async def read_model(kind: str, where: str) -> tuple[int, list[Row]]:
    """The checkpoint of :data:`NAME` and the rows of the read model, read in one transaction."""
    checkpoint_sql = "SELECT position FROM streamsrc_projections WHERE name = "
    if kind == "sqlite":

        def read() -> tuple[int, list[Row]]:
            conn = sqlite3.connect(where, isolation_level=None)
            try:
                conn.execute("BEGIN")
                found = conn.execute(checkpoint_sql + "?", (NAME,)).fetchall()
                rows = [(int(p), str(s), int(q), str(b)) for p, s, q, b in conn.execute(SELECT_ROWS)]
                conn.execute("COMMIT")
                return (found[0][0] if found else 0), rows
            finally:
                conn.close()

        return await anyio.to_thread.run_sync(read)
    conn = await asyncpg.connect(where)
    try:
        async with conn.transaction(isolation="repeatable_read"):
            position = await conn.fetchval(checkpoint_sql + "$1", NAME)
            rows = [(int(p), str(s), int(q), str(b)) for p, s, q, b in await conn.fetch(SELECT_ROWS)]
        return int(position or 0), rows
    finally:
        await conn.close()


async def append_some(store: EventStore, rng: random.Random, tag: str, count: int) -> None:
    """``count`` appends of 1 to 10 events to random streams, each batch marked with its id and size."""
    for k in range(count):
        stream, size = rng.choice(STREAMS), rng.randint(1, 10)
        (await store.append(stream, batch_events(f"{tag}-{k}", size))).unwrap()


def applied(out: Path) -> list[int]:
    """The positions the projection child reported after each batch."""
    return [int(line.split()[1]) for line in lines(out) if line.startswith("applied ")]


def batches_applied(out: Path) -> int:
    """How many batches the projection child has reported applied."""
    return len(applied(out))


@pytest.mark.parametrize("model", ["sqlite", "postgres"])
async def test_a_projection_killed_mid_batch_applies_every_event_once(
    model: str, tmp_path: Path, child_log: IO[bytes]
) -> None:
    """A projection from PostgreSQL into a SQLite file or into PostgreSQL (SQLite into SQLite: see
    ``test_projections.py``), killed while the parent appends; the checkpoint never moves without
    the rows, nor the rows without it."""
    rng = random.Random(f"project-{model}")
    async with store_url("postgres", tmp_path) as url:
        where = str(tmp_path / "model.db") if model == "sqlite" else url
        previous = 0
        for round_ in range(ROUNDS):
            out = tmp_path / f"project-{round_}.out"
            args = [sys.executable, str(CHILD), "project", url, model, where, "live", "asyncio"]
            async with open_store(url) as store:
                await append_some(store, rng, f"backlog-{round_}", 20)  # ~110 events waiting for the child
                with spawned(args, out, child_log) as proc:
                    enough = rng.randint(1, 5)  # batches applied before the parent starts its clock
                    assert await wait_until(proc, partial(batches_applied, out), enough, child_log)
                    deadline = time.monotonic() + rng.uniform(0.02, 0.3)
                    k = 0
                    while time.monotonic() < deadline:  # appends while the child follows the log
                        await append_some(store, rng, f"live-{round_}-{k}", 1)
                        k += 1
                        await anyio.sleep(0.002)
                    await kill(proc, child_log)
            await settled(url)
            checkpoint, rows = await read_model(model, where)
            async with open_store(url) as store:
                events = await store.read_all().to_list()
            # Exactly the events up to the checkpoint, each once, in order: no more, no fewer.
            assert rows == [row(e) for e in events if e.position <= checkpoint]
            assert checkpoint <= len(events)
            assert checkpoint >= max(applied(out))  # what it reported is kept
            assert checkpoint > previous  # this round applied something
            previous = checkpoint
        out = tmp_path / "project-last.out"
        args = [sys.executable, str(CHILD), "project", url, model, where, "catch-up", "asyncio"]
        with spawned(args, out, child_log) as proc:
            assert await anyio.to_thread.run_sync(proc.wait) == 0, log_text(child_log)
        checkpoint, rows = await read_model(model, where)
        async with open_store(url) as store:
            events = await store.read_all().to_list()
            assert checkpoint == await store.head() == len(events)
        assert rows == [row(e) for e in events]


# ------------------------------------------------------------------------------------------------- copy

SOURCE_EVENTS = 3000
COPY_BATCH = 16
"""``streamsrc copy --batch-size``: events per batch (and checkpoint)."""
COPY_KILLS = 4
PROGRESS = re.compile(r"\] ([\d,]+)/[\d,]+ events")


def shown(err: Path) -> int:
    """The last position the copy's progress bar showed (0 before the first batch)."""
    found = PROGRESS.findall(err.read_text(errors="replace") if err.exists() else "")
    return int(found[-1].replace(",", "")) if found else 0


async def make_source(url: str, rng: random.Random) -> list[RecordedEvent]:
    """A few thousand events in batches of 1 to 40 over 80 streams; the whole log."""
    async with open_store(url) as store:
        k = 0
        while await store.head() < SOURCE_EVENTS:
            stream = f"src-{rng.randrange(80)}"
            (await store.append(stream, batch_events(f"src-{k}", rng.randint(1, 40)))).unwrap()
            k += 1
        events: list[RecordedEvent] = await store.read_all().to_list()
    check_log(events, len(events))
    return events


def import_ends(source: Sequence[RecordedEvent], checkpoint: int) -> set[int]:
    """Where a target without batch transactions may end after a kill: at the checkpoint, or after
    one of the imports of the batch after it (each a run of consecutive events of one stream)."""
    batch = source[checkpoint : checkpoint + COPY_BATCH]
    return {checkpoint} | {
        e.position for i, e in enumerate(batch) if i + 1 == len(batch) or batch[i + 1].stream != e.stream
    }


async def check_target(kind: str, url: str, source: Sequence[RecordedEvent], name: str, seen: int) -> int:
    """Check a target after a kill; its checkpoint."""
    await settled(url)
    if kind == "sqlite":
        await anyio.to_thread.run_sync(sqlite_integrity, url)
    async with open_store(url) as target:
        checkpoint: int = await target.load_checkpoint(name)
        held = await target.read_all().to_list()
        assert await target.head() == len(held)
    assert seen <= checkpoint  # what the progress bar showed is kept
    # The source's log up to some point, on every field (so positions 1..n with no gap too) ...
    cut = len(held)
    assert held == list(source[:cut])
    # ... holding everything up to the checkpoint, cut only where the copy commits: SQLite imports a
    # batch and saves its checkpoint in one transaction; PostgreSQL imports run by run, then saves.
    if kind == "sqlite":
        assert cut == checkpoint
    else:
        assert cut in import_ends(source, checkpoint), f"cut at {cut}, checkpoint {checkpoint}"
    # So a batch of the source's appends is cut only where one of the copy's batches ends.
    if 0 < cut < len(source) and source[cut - 1].data["batch"] == source[cut].data["batch"]:
        assert cut in (checkpoint, checkpoint + COPY_BATCH)
    return checkpoint


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_copy_killed_at_random_moments_resumes_to_an_exact_copy(
    kind: str, tmp_path: Path, child_log: IO[bytes]
) -> None:
    rng = random.Random(f"copy-{kind}")
    source_url = f"sqlite:///{tmp_path}/source.db"
    source = await make_source(source_url, rng)
    async with open_store(source_url) as store:
        name = checkpoint_name(store)  # what the command line names its checkpoint
    async with store_url(kind, tmp_path, "target") as target_url:
        args = [
            sys.executable,
            "-m",
            "streamsrc",
            "copy",
            source_url,
            target_url,
            "--batch-size",
            str(COPY_BATCH),
        ]
        checkpoint = kills = 0
        for attempt in range(COPY_KILLS + 1):
            out, err_path = tmp_path / f"copy-{attempt}.out", tmp_path / f"copy-{attempt}.err"
            # A line per batch: stderr is a file, whose progress lines come every 10 s by default.
            with (
                open_log(err_path) as err,
                spawned(args, out, err, env={**os.environ, "STREAMSRC_PROGRESS_EVERY": "0"}) as proc,
            ):
                if attempt < COPY_KILLS:
                    at = checkpoint + rng.randint(1, max(1, (len(source) - checkpoint) // 3))
                    if await wait_until(proc, partial(shown, err_path), at, err):
                        await anyio.sleep(rng.uniform(0, 0.01))
                        await kill(proc, err)
                        kills += 1
                        checkpoint = await check_target(kind, target_url, source, name, shown(err_path))
                        continue
                assert await anyio.to_thread.run_sync(proc.wait) == 0, log_text(err)
            break
        assert kills >= 2  # the copy was interrupted (4 times unless it outran the parent)
        assert out.read_text().endswith(f"is at position {len(source)}\n")
        async with open_store(target_url) as target:
            assert await target.read_all().to_list() == source  # ids, streams, seqs, data, times, ...
            assert await target.load_checkpoint(name) == len(source)
            assert await target.streams().to_list() == sorted({e.stream for e in source})
