"""``streamsrc retention apply``, run as users run it: a real subprocess on real stores."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import open_store

TIMEOUT = 60


def streamsrc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsrc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def usage_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr


async def fill(url: str) -> None:
    """audit-1 and audit-2 with 5 events (4 of them 40 days old), order-1 with 3."""
    now = datetime.now(UTC)
    async with open_store(url) as store:
        for stream in ("audit-1", "audit-2"):
            ages = [90, 60, 50, 40, 0]
            events = []
            for k, age in enumerate(ages):
                event = EventData("Viewed", {"k": k})
                moment = now - timedelta(days=age)
                events.append(RecordedEvent(stream, k + 1, 0, event.type, event.data, None, event.id, moment))
            assert (await store.import_events(stream, events)).unwrap()
        await store.append("order-1", [EventData("Placed", {"n": n}) for n in range(3)])


async def seqs(url: str, stream: str) -> list[int]:
    async with open_store(url) as store:
        return [e.seq for e in await store.read(stream).to_list()]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/events.db"
    anyio.run(fill, url)
    return url


def test_a_dry_run_lists_what_would_go_and_changes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    out = ok(
        streamsrc(
            "--url",
            sqlite_url,
            "retention",
            "apply",
            "--prefix",
            "audit-",
            "--max-count",
            "2",
            "--dry-run",
            cwd=tmp_path,
        )
    )
    lines = out.splitlines()
    assert lines[0].split() == ["STREAM", "BEFORE", "REMOVED"]
    assert [line.split() for line in lines[1:3]] == [["audit-1", "#4", "3"], ["audit-2", "#4", "3"]]
    assert lines[3] == "would remove 6 events from 2 of 2 streams starting with 'audit-'"
    result = streamsrc(
        "--url",
        sqlite_url,
        "retention",
        "apply",
        "--prefix",
        "audit-",
        "--max-count",
        "2",
        "--dry-run",
        cwd=tmp_path,
    )
    assert "would remove 6 events from 2 of 2 streams starting with 'audit-'" in result.stdout
    assert anyio.run(seqs, sqlite_url, "audit-1") == [1, 2, 3, 4, 5]


def test_max_count_then_max_age_truncate_the_covered_streams(sqlite_url: str, tmp_path: Path) -> None:
    out = ok(
        streamsrc(
            "retention", "apply", "--prefix", "audit-1", "--max-count", "3", "--url", sqlite_url, cwd=tmp_path
        )
    )
    assert "removed 2 events from 1 of 1 streams" in out
    assert anyio.run(seqs, sqlite_url, "audit-1") == [3, 4, 5]
    assert anyio.run(seqs, sqlite_url, "audit-2") == [1, 2, 3, 4, 5]
    out = ok(
        streamsrc(
            "--url", sqlite_url, "retention", "apply", "--prefix", "audit-", "--max-age", "30d", cwd=tmp_path
        )
    )
    assert [line.split() for line in out.splitlines()[1:3]] == [
        ["audit-1", "#5", "2"],
        ["audit-2", "#5", "4"],
    ]
    assert anyio.run(seqs, sqlite_url, "audit-2") == [5]
    assert anyio.run(seqs, sqlite_url, "order-1") == [1, 2, 3]
    again = streamsrc(
        "--url", sqlite_url, "retention", "apply", "--prefix", "audit-", "--max-age", "30d", cwd=tmp_path
    )
    assert ok(again) == ""  # nothing left to remove: said on stderr, exit 0
    assert "removed 0 events from 0 of 2 streams" in again.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give --max-age, --max-count or both"),
        (["--max-age", "soon"], "not a duration: 'soon'"),
        (["--max-age", "-3d"], "not a duration"),
        (["--max-count", "0"], "--max-count"),
        (["--max-count", "many"], "--max-count"),
    ],
)
def test_a_policy_that_limits_nothing_or_by_a_bad_amount_is_a_usage_error(
    sqlite_url: str, tmp_path: Path, args: list[str], fragment: str
) -> None:
    usage_error(
        streamsrc("--url", sqlite_url, "retention", "apply", "--prefix", "audit-", *args, cwd=tmp_path),
        fragment,
    )
    assert anyio.run(seqs, sqlite_url, "audit-1") == [1, 2, 3, 4, 5]


def test_the_prefix_is_required(sqlite_url: str, tmp_path: Path) -> None:
    usage_error(
        streamsrc("--url", sqlite_url, "retention", "apply", "--max-count", "1", cwd=tmp_path), "--prefix"
    )


def test_a_missing_store_is_one_line_of_error(tmp_path: Path) -> None:
    result = streamsrc(
        "--url",
        f"sqlite:///{tmp_path}/nothing.db",
        "retention",
        "apply",
        "--prefix",
        "a",
        "--max-count",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("streamsrc: error: no store at")
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncpg runs on asyncio only
async def test_retention_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    await fill(postgres_database)
    args = ("--url", postgres_database, "retention", "apply", "--prefix", "", "--max-count", "1")
    result = await anyio.to_thread.run_sync(lambda: streamsrc(*args, cwd=tmp_path))
    out = ok(result)
    assert "removed 10 events from 3 of 3 streams starting with ''" in out
    assert await seqs(postgres_database, "order-1") == [3]
