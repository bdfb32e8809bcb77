"""The ``streamsrc`` command line, run as users run it: a real subprocess (``python -m streamsrc``).

Exit codes, the table and JSON-lines formats, ``copy``/``export``/``import``
round trips (SQLite to SQLite, and through a second backend), ``tail``
following appends made by another process until Ctrl-C, entity state at a
seq or a time, projection status and rebuild, and bad input giving one line
on stderr and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

TIMEOUT = 60


def streamsrc(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamsrc ARGS`` in ``cwd`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "streamsrc", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {}), "PYTHONWARNINGS": "ignore"},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failure: exit status 1, one line on stderr that names the problem, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamsrc: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``streamsrc.db`` (the default store) holds one run of the demo."""
    folder = tmp_path_factory.mktemp("demo")
    out = ok(streamsrc("demo", cwd=folder))
    assert "demo run 1 on sqlite:///streamsrc.db" in out
    assert (folder / "streamsrc.db").exists()
    return folder


def test_help_everywhere(tmp_path: Path) -> None:
    top = ok(streamsrc("--help", cwd=tmp_path))
    for command in ("demo", "streams", "read", "read-all", "tail", "state", "copy", "export", "import"):
        assert command in top
    commands: list[list[str]] = [
        ["read", "--help"],
        ["copy", "--help"],
        ["projection", "status", "--help"],
        ["dynamodb", "create-tables", "--help"],
        ["postgres", "init", "--help"],
    ]
    for args in commands:
        assert "Usage: streamsrc" in ok(streamsrc(*args, cwd=tmp_path))
    assert not (tmp_path / "streamsrc.db").exists()  # asking for help touches nothing


def test_demo_runs_again_on_the_same_file(tmp_path: Path) -> None:
    ok(streamsrc("demo", cwd=tmp_path))
    out = ok(streamsrc("demo", cwd=tmp_path))
    assert "demo run 2" in out
    assert "caught up from position" in out


def test_streams_lists_lengths_and_times(demo_dir: Path) -> None:
    table = ok(streamsrc("streams", cwd=demo_dir)).splitlines()
    assert table[0].split()[:2] == ["STREAM", "EVENTS"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["user-ada-1"][1] == "5"
    assert rows["demo-runs"][1] == "1"
    listed = json_lines(ok(streamsrc("streams", "--json", cwd=demo_dir)))
    by_name = {s["stream"]: s for s in listed}
    assert by_name["user-ada-1"]["events"] == 5
    assert by_name["user-ada-1"]["last_event"].startswith("20")
    assert [s["stream"] for s in listed] == sorted(by_name)


def test_read_and_read_all_with_filters(demo_dir: Path) -> None:
    events = json_lines(ok(streamsrc("read", "user-ada-1", "--json", cwd=demo_dir)))
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["type"] == "UserRegistered"
    later = json_lines(ok(streamsrc("read", "user-ada-1", "--after", "3", "--json", cwd=demo_dir)))
    assert [e["seq"] for e in later] == [4, 5]
    backwards = json_lines(
        ok(streamsrc("read", "user-ada-1", "--backwards", "--limit", "2", "--json", cwd=demo_dir))
    )
    assert [e["seq"] for e in backwards] == [5, 4]
    everything = json_lines(ok(streamsrc("read-all", "--json", cwd=demo_dir)))
    assert [e["position"] for e in everything] == list(range(1, len(everything) + 1))
    registered = json_lines(ok(streamsrc("read-all", "--type", "UserRegistered", "--json", cwd=demo_dir)))
    assert registered == [e for e in everything if e["type"] == "UserRegistered"]
    assert len(registered) == 3
    page = json_lines(ok(streamsrc("read-all", "--after", "2", "--limit", "3", "--json", cwd=demo_dir)))
    assert [e["position"] for e in page] == [3, 4, 5]
    table = ok(streamsrc("read-all", "--limit", "2", cwd=demo_dir)).splitlines()
    assert table[0].split()[:4] == ["POSITION", "STREAM", "SEQ", "TYPE"]
    assert table[1].split()[:4] == ["1", "demo-runs", "1", "DemoRun"]
    assert len(table) == 3


def test_state_now_at_a_seq_and_at_a_time(demo_dir: Path) -> None:
    now = json.loads(ok(streamsrc("state", "user-ada-1", cwd=demo_dir)))
    assert now["seq"] == 5
    first = json.loads(ok(streamsrc("state", "user-ada-1", "--at", "1", cwd=demo_dir)))
    assert first["seq"] == 1
    assert first["state"]["username"] == "ada1"
    assert first["state"]["email"] == "ada@example.com"
    renamed = json.loads(ok(streamsrc("state", "user-ada-1", "--at", "2", cwd=demo_dir)))
    assert renamed["seq"] == 2
    assert renamed["state"]["username"] == "countess1"
    events = json_lines(ok(streamsrc("read", "user-ada-1", "--json", cwd=demo_dir)))
    at_time = json.loads(ok(streamsrc("state", "user-ada-1", "--at", events[0]["time"], cwd=demo_dir)))
    assert at_time == first
    group = json.loads(ok(streamsrc("state", "group-chess-1", cwd=demo_dir)))
    assert "bob-1" in json.dumps(group["state"])
    custom = json.loads(
        ok(streamsrc("state", "ada-1", "--entity", "streamsrc.examples.accounts:users", cwd=demo_dir))
    )
    assert custom == now


def test_export_import_round_trip_is_lossless(demo_dir: Path, tmp_path: Path) -> None:
    exported = streamsrc("export", cwd=demo_dir)
    dump = ok(exported)
    assert "exported" in exported.stderr
    target = f"sqlite:///{tmp_path}/copy.db"
    imported = streamsrc("--url", target, "import", cwd=tmp_path, stdin=dump)
    ok(imported)
    total = len(dump.splitlines())
    assert f"imported {total} events (0 were there already)" in imported.stderr
    assert ok(streamsrc("--url", target, "export", cwd=tmp_path)) == dump
    # Importing the same file again is harmless: nothing doubles.
    again = streamsrc("--url", target, "import", cwd=tmp_path, stdin=dump)
    ok(again)
    assert f"imported 0 events ({total} were there already)" in again.stderr
    assert ok(streamsrc("--url", target, "export", cwd=tmp_path)) == dump


def test_copy_is_resumable_and_keeps_everything(demo_dir: Path, tmp_path: Path) -> None:
    source = f"sqlite:///{demo_dir}/streamsrc.db"
    target = f"sqlite:///{tmp_path}/copied.db"
    copied = streamsrc("copy", source, target, "--batch-size", "4", cwd=tmp_path)
    out = ok(copied)
    assert "copied" in out
    assert "ev/s" in copied.stderr  # the progress bar
    assert "ETA" in copied.stderr
    dump = ok(streamsrc("export", source, cwd=tmp_path))
    assert ok(streamsrc("export", target, cwd=tmp_path)) == dump
    again = ok(streamsrc("copy", source, target, cwd=tmp_path))
    assert "copied 0 events" in again


def test_round_trip_through_a_second_backend(demo_dir: Path, tmp_path: Path, postgres_server: str) -> None:
    """SQLite → PostgreSQL with ``copy``, back to a fresh SQLite file with export | import."""
    from pg_server import create_database, drop_database, run_async

    name = f"streamsrc_cli_{os.getpid()}"
    url = run_async(lambda: create_database(postgres_server, name))
    try:
        ok(streamsrc("postgres", "init", url, cwd=tmp_path))
        source = f"sqlite:///{demo_dir}/streamsrc.db"
        ok(streamsrc("copy", source, url, cwd=tmp_path))
        dump = ok(streamsrc("export", source, cwd=tmp_path))
        assert ok(streamsrc("export", url, cwd=tmp_path)) == dump
        back = f"sqlite:///{tmp_path}/back.db"
        ok(streamsrc("--url", back, "import", cwd=tmp_path, stdin=ok(streamsrc("export", url, cwd=tmp_path))))
        assert ok(streamsrc("export", back, cwd=tmp_path)) == dump
    finally:
        run_async(lambda: drop_database(postgres_server, name))


def test_projection_status_and_rebuild(demo_dir: Path, tmp_path: Path) -> None:
    status = ok(streamsrc("projection", "status", cwd=demo_dir)).splitlines()
    assert status[0].split() == ["PROJECTION", "POSITION", "HEAD", "LAG"]
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in status[1:]}
    head = len(json_lines(ok(streamsrc("read-all", "--json", cwd=demo_dir))))
    assert rows["account-user-search"][1] == head
    assert rows["account-user-search"][0] + rows["account-user-search"][2] == head
    into = tmp_path / "search.db"
    rebuilt = streamsrc("projection", "rebuild", "account-user-search", "--into", str(into), cwd=demo_dir)
    assert f"rebuilt into {into} up to position {head}" in ok(rebuilt)
    assert "ev/s" in rebuilt.stderr
    one_line_error(
        streamsrc("projection", "rebuild", "account-user-search", "--into", str(into), cwd=demo_dir), "exists"
    )


def test_tail_follows_appends_from_another_process_until_ctrl_c(demo_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "tail.db"
    url = f"sqlite:///{db}"
    ok(streamsrc("--url", url, "import", cwd=tmp_path, stdin=ok(streamsrc("export", cwd=demo_dir))))
    follower = subprocess.Popen(
        [sys.executable, "-m", "streamsrc", "--url", url, "tail", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert follower.stderr is not None
        assert follower.stdout is not None
        assert "following" in follower.stderr.readline()  # it has read the head: appends come after
        ok(streamsrc("--url", url, "demo", cwd=tmp_path))
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.append(json.loads(follower.stdout.readline()))
            if any(e["type"] == "DemoRun" for e in seen):
                break
        assert seen[0]["type"] == "DemoRun"
        assert seen[0]["data"] == {"run": 2}
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=TIMEOUT) == 0
        assert "Traceback" not in follower.stderr.read()
    finally:
        follower.kill()
        follower.wait()


BAD_INPUT: Sequence[tuple[list[str], str]] = [
    (["--url", "nosuch://x", "streams"], "InvalidStoreURL"),
    (["--url", "sqlite:///{tmp}/missing.db", "read-all"], "no store at"),
    (["--url", "postgresql://streamsrc:secret-pw@127.0.0.1:1/x", "streams"], "StoreUnavailable"),
    (["state", "user-nobody"], "has no events"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUT)
def test_bad_input_is_one_line_and_no_traceback(
    demo_dir: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    line = one_line_error(streamsrc(*[a.format(tmp=tmp_path) for a in args], cwd=demo_dir), fragment)
    assert "secret-pw" not in line


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_hidden(secret: str, results: Sequence[subprocess.CompletedProcess[str]]) -> None:
    """``secret`` appears nowhere in what the commands printed, and none of them shows a traceback."""
    for result in results:
        shown = result.stdout + result.stderr
        assert secret not in shown, (result.args[3:], shown)
        assert "Traceback" not in shown, shown


def test_a_password_in_a_url_is_never_printed_on_errors(demo_dir: Path, tmp_path: Path) -> None:
    """Store URLs with passwords, each command failing on them (nothing listens, bad URLs, usage errors)."""
    secret = "pw-that-must-not-show"
    pg = f"postgresql://app:{secret}@127.0.0.1:{closed_port()}/events"
    dynamodb = f"dynamodb://t?region=eu-west-1&aws_secret_access_key={secret}"
    source = f"sqlite:///{demo_dir}/streamsrc.db"
    target = f"sqlite:///{tmp_path}/target.db"
    failing = [
        ["copy", source, pg],
        ["copy", pg, target],
        ["copy", source, dynamodb],
        ["copy", source, f"ftp://app:{secret}@example.com/x"],
        ["copy", source, f"postgresql://app:{secret}@127.0.0.1:99999/events"],
        ["--url", pg, "streams"],
        ["--url", pg, "read", "user-ada-1"],
        ["--url", pg, "read-all"],
        ["--url", pg, "tail"],
        ["--url", pg, "state", "user-ada-1"],
        ["--url", pg, "export"],
        ["export", pg],
        ["--url", pg, "demo"],
        ["demo", "--url", pg],
        ["postgres", "init", pg],
        ["--url", pg, "projection", "status"],
        ["dynamodb", "create-tables", pg],
        ["copy", "--batch-size", pg, source, target],  # usage errors quoting the URL
        ["copy", source, target, pg],
        ["--url", pg, "import"],
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: streamsrc(*args, cwd=tmp_path, stdin=""), failing))
    for args, result in zip(failing, results, strict=True):
        assert result.returncode in (1, 2), (args, result.returncode, result.stdout, result.stderr)
    assert_hidden(secret, results)


def test_a_password_in_a_url_is_never_printed_by_a_working_command(
    demo_dir: Path, tmp_path: Path, postgres_server: str
) -> None:
    """SQLite → PostgreSQL and back with a password in the URL: success lines, progress, the demo."""
    from pg_server import LOCKED_USER, create_database, drop_database, run_async

    name = f"streamsrc_cli_secret_{os.getpid()}"
    url = run_async(lambda: create_database(postgres_server, name))
    secret = urlsplit(url).password
    if not secret:
        pytest.skip("the PostgreSQL server's URL has no password to hide")
    try:
        source = f"sqlite:///{demo_dir}/streamsrc.db"
        results = [streamsrc("postgres", "init", url, cwd=tmp_path)]
        results.append(streamsrc("copy", source, url, cwd=tmp_path))
        assert "copied" in ok(results[-1])
        assert f"{urlsplit(url).username}:***@" in results[-1].stdout
        results.append(streamsrc("copy", url, f"sqlite:///{tmp_path}/back.db", cwd=tmp_path))
        results.append(streamsrc("--url", url, "demo", cwd=tmp_path))
        assert "demo run" in ok(results[-1])
        results.append(streamsrc("--url", url, "streams", cwd=tmp_path))
        results.append(streamsrc("--url", url, "import", cwd=tmp_path, stdin=""))
        wrong = urlsplit(url)._replace(
            netloc=f"{LOCKED_USER}:{secret}@{urlsplit(url).hostname}:{urlsplit(url).port}"
        )
        results.append(streamsrc("--url", wrong.geturl(), "streams", cwd=tmp_path))  # a refused login
        assert results[-1].returncode == 1, results[-1].stderr
        for result in results[:-1]:
            ok(result)
        assert_hidden(secret, results)
    finally:
        run_async(lambda: drop_database(postgres_server, name))


def test_a_malformed_import_names_the_line_and_writes_nothing(demo_dir: Path, tmp_path: Path) -> None:
    dump = ok(streamsrc("export", cwd=demo_dir)).splitlines()
    broken = "\n".join([*dump[:3], "{not json", *dump[3:]]) + "\n"
    url = f"sqlite:///{tmp_path}/broken.db"
    one_line_error(streamsrc("--url", url, "import", cwd=tmp_path, stdin=broken), "line 4")
    assert not (tmp_path / "broken.db").exists()  # nothing written, not even an empty file


def test_a_reader_leaving_early_is_not_an_error(demo_dir: Path) -> None:
    for args in (["streams"], ["read-all"], ["export"]):
        command = [sys.executable, "-m", "streamsrc", *args]
        piped = subprocess.run(
            f"{' '.join(command)} | head -1",
            shell=True,
            cwd=demo_dir,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert piped.returncode == 0
        assert len(piped.stdout.splitlines()) == 1
        assert "rror" not in piped.stderr, piped.stderr


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    for args in (
        ["read"],
        ["read-all", "--limit", "-1"],
        ["no-such-command"],
        ["state", "x", "--at", "yesterday"],
    ):
        result = streamsrc(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "Error" in result.stderr


# --------------------------------------------------------------------- issue 20: the CLI for any application


def test_empty_results_say_so_on_stderr_and_exit_0(demo_dir: Path, tmp_path: Path) -> None:
    """An empty answer is not an error: stdout stays empty (pipelines get nothing), stderr says why."""
    missing = streamsrc("read", "no-such-stream", cwd=demo_dir)
    assert ok(missing) == ""
    assert "no events in stream 'no-such-stream'" in missing.stderr
    none = streamsrc("read-all", "--type", "NoSuchType", "--json", cwd=demo_dir)
    assert ok(none) == ""
    assert "no events matching" in none.stderr
    empty = f"sqlite:///{tmp_path}/empty.db"
    ok(streamsrc("--url", empty, "import", cwd=tmp_path, stdin=""))
    listed = streamsrc("--url", empty, "streams", cwd=tmp_path)
    assert ok(listed) == ""
    assert "no streams" in listed.stderr


def test_state_at_a_seq_past_the_end_is_an_error(demo_dir: Path) -> None:
    one_line_error(streamsrc("state", "user-ada-1", "--at", "99", cwd=demo_dir), "has 5 events", "no seq 99")


def test_copy_reports_the_targets_head_and_refuses_a_copy_onto_itself(demo_dir: Path, tmp_path: Path) -> None:
    source = f"sqlite:///{demo_dir}/streamsrc.db"
    target = tmp_path / "busy.db"
    first = json.loads(ok(streamsrc("export", cwd=demo_dir)).splitlines()[0])
    elsewhere = {**first, "stream": "elsewhere-1", "id": "00000000-0000-4000-8000-000000000002"}
    ok(streamsrc("--url", f"sqlite:///{target}", "import", cwd=tmp_path, stdin=json.dumps(elsewhere)))
    target_head = len(
        json_lines(ok(streamsrc("--url", f"sqlite:///{target}", "read-all", "--json", cwd=tmp_path)))
    )
    source_head = len(json_lines(ok(streamsrc("read-all", "--json", cwd=demo_dir))))
    copied = ok(streamsrc("copy", source, f"sqlite:///{target}", cwd=tmp_path))
    assert f"is at position {target_head + source_head}" in copied, copied
    one_line_error(streamsrc("copy", source, source, cwd=tmp_path), "same store")
    other_spelling = f"sqlite:///{os.path.relpath(demo_dir / 'streamsrc.db', tmp_path)}"
    one_line_error(streamsrc("copy", source, other_spelling, cwd=tmp_path), "same store")
    one_line_error(streamsrc("copy", "memory://", "memory://", cwd=tmp_path), "same store")


def test_progress_is_plain_lines_off_a_terminal_and_never_0_ev_s(demo_dir: Path, tmp_path: Path) -> None:
    source = f"sqlite:///{demo_dir}/streamsrc.db"
    target = f"sqlite:///{tmp_path}/copied.db"
    first = streamsrc("copy", source, target, "--batch-size", "2", cwd=tmp_path)
    ok(first)
    assert "\r" not in first.stderr  # stderr is a pipe: no frames redrawn in place
    assert "ev/s" in first.stderr
    again = streamsrc("copy", source, target, cwd=tmp_path)  # nothing new to copy
    assert "copied 0 events" in ok(again)
    assert "0 ev/s" not in again.stderr
    assert "\r" not in again.stderr
    empty = streamsrc("copy", f"sqlite:///{tmp_path}/copied.db", "memory://", cwd=tmp_path, stdin="")
    ok(empty)
    nothing = f"sqlite:///{tmp_path}/nothing.db"
    ok(streamsrc("--url", nothing, "import", cwd=tmp_path, stdin=""))
    void = streamsrc("copy", nothing, f"sqlite:///{tmp_path}/void.db", cwd=tmp_path)
    assert "copied 0 events" in ok(void)
    assert "ev/s" not in void.stderr


def test_a_failed_import_leaves_no_file_behind(demo_dir: Path, tmp_path: Path) -> None:
    dump = ok(streamsrc("export", cwd=demo_dir)).splitlines()
    broken = "\n".join([*dump[:3], "{not json", *dump[3:]]) + "\n"
    db = tmp_path / "new.db"
    one_line_error(streamsrc("--url", f"sqlite:///{db}", "import", cwd=tmp_path, stdin=broken), "line 4")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # A conflict found while writing (seq 1 of a stream twice, different ids) removes the new file too.
    clash = json.loads(dump[0])
    twice = (
        json.dumps(clash) + "\n" + json.dumps({**clash, "id": "00000000-0000-4000-8000-000000000001"}) + "\n"
    )
    failed = streamsrc("--url", f"sqlite:///{db}", "import", cwd=tmp_path, stdin=twice)
    assert failed.returncode == 1, failed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # An existing file is kept, whatever happens.
    kept = tmp_path / "kept.db"
    ok(streamsrc("--url", f"sqlite:///{kept}", "import", cwd=tmp_path, stdin=dump[0] + "\n"))
    one_line_error(streamsrc("--url", f"sqlite:///{kept}", "import", cwd=tmp_path, stdin=broken), "line 4")
    assert kept.exists()


LONG = "tenant-acme-corp-invoice-2026-000123-line-items"


def test_tables_fit_the_terminal_and_cut_names_with_an_ellipsis(demo_dir: Path, tmp_path: Path) -> None:
    first = json.loads(ok(streamsrc("export", cwd=demo_dir)).splitlines()[0])
    line = {**first, "stream": LONG, "type": "InvoiceLineItemsAmendedByAccountsPayable"}
    url = f"sqlite:///{tmp_path}/long.db"
    ok(streamsrc("--url", url, "import", cwd=tmp_path, stdin=json.dumps(line)))
    for args in (["streams"], ["read-all"], ["read", LONG]):
        narrow = ok(streamsrc("--url", url, *args, cwd=tmp_path, env={"COLUMNS": "80"})).splitlines()
        assert all(len(row) <= 80 for row in narrow), narrow
        assert LONG not in narrow[1], narrow
        assert "tenant-acme" in narrow[1], narrow
        assert "…" in narrow[1], narrow
        # Through a pipe with no COLUMNS, nothing is cut: the whole name, for grep.
        piped = ok(streamsrc("--url", url, *args, cwd=tmp_path, env={"COLUMNS": ""})).splitlines()
        assert LONG in piped[1], piped
    wide = ok(streamsrc("--url", url, "read-all", cwd=tmp_path, env={"COLUMNS": "250"})).splitlines()
    assert LONG in wide[1]
    assert "InvoiceLineItemsAmendedByAccountsPayable" in wide[1]


def test_the_url_is_given_one_way_before_or_after_the_command(demo_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{demo_dir}/streamsrc.db"
    before = ok(streamsrc("--url", url, "streams", cwd=tmp_path))
    assert "user-ada-1" in before
    assert ok(streamsrc("streams", "--url", url, cwd=tmp_path)) == before
    assert ok(streamsrc("streams", "-u", url, cwd=tmp_path)) == before
    assert ok(streamsrc("streams", cwd=tmp_path, env={"STREAMSRC_URL": url})) == before
    dump = ok(streamsrc("export", "--url", url, cwd=tmp_path))
    assert dump == ok(streamsrc("export", url, cwd=tmp_path))  # the old positional spelling still works
    assert "account-user-search" in ok(streamsrc("projection", "status", "--url", url, cwd=tmp_path))
    state = json.loads(ok(streamsrc("state", "user-ada-1", "--url", url, cwd=tmp_path)))
    assert state["seq"] == 5
    target = f"sqlite:///{tmp_path}/in.db"
    ok(streamsrc("import", "--url", target, cwd=tmp_path, stdin=dump))
    assert ok(streamsrc("export", "--url", target, cwd=tmp_path)) == dump
    assert not (tmp_path / "streamsrc.db").exists()  # the default store was never touched


VIEWS = """
import anyio
from streamsrc.projections import Projection, Projector
from streamsrc.projections.sqlite import SqliteReadModel
from streamsrc.store import open_store

SCHEMA = "CREATE TABLE IF NOT EXISTS types (type TEXT PRIMARY KEY, n INTEGER NOT NULL)"


def count(conn, events):
    for e in events:
        conn.execute(
            "INSERT INTO types VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1", (e.type,)
        )


types = Projection("tenant-acme-corp-invoice-2026-000123-line-items-view", count)
parted = [Projection(f"parted[{i}/2]", count, stream_prefix="user-") for i in range(2)]


async def main(url, model):
    async with open_store(url) as store, SqliteReadModel(model, SCHEMA) as read_model:
        await Projector(store, parted[0], read_model).catch_up()
        await read_model.leases().acquire("parted", 0, "worker-a", ttl=600)


if __name__ == "__main__":
    import sys

    anyio.run(main, sys.argv[1], sys.argv[2])
"""


def test_projections_of_any_application_status_and_rebuild(demo_dir: Path, tmp_path: Path) -> None:
    """--projection module:attr finds a user's projection; status lists every recorded checkpoint and
    partition (with the lease's owner), in the store's file or a separate read-model file."""
    (tmp_path / "myviews.py").write_text(VIEWS)
    store = f"sqlite:///{demo_dir}/streamsrc.db"
    model = tmp_path / "views.db"
    ran = subprocess.run(
        [sys.executable, "myviews.py", store, str(model)], cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    head = len(json_lines(ok(streamsrc("read-all", "--json", cwd=demo_dir))))
    status = ok(
        streamsrc(
            "--url",
            store,
            "projection",
            "status",
            "--model",
            str(model),
            "--projection",
            "myviews:types",
            cwd=tmp_path,
            env={"COLUMNS": ""},
        )
    ).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in status[1:]}
    assert rows["tenant-acme-corp-invoice-2026-000123-line-items-view"] == ["0", str(head), str(head)]
    assert "parted" in rows  # the partitions' projection, as far as its slowest partition
    assert rows["parted[0/2]"][1:3] == [str(head), "0"]
    assert rows["parted[0/2]"][3] == "worker-a"  # the lease's owner
    assert rows["parted[1/2]"][3] == "-"  # recorded? no: only partition 0 ran
    assert not any(name.startswith("account-") for name in rows)  # not the example's
    rebuilt = tmp_path / "rebuilt.db"
    done = streamsrc(
        "--url",
        store,
        "projection",
        "rebuild",
        "tenant-acme-corp-invoice-2026-000123-line-items-view",
        "--projection",
        "myviews:types",
        "--schema",
        "myviews:SCHEMA",
        "--into",
        str(rebuilt),
        cwd=tmp_path,
    )
    assert f"up to position {head}" in ok(done)
    import sqlite3

    with sqlite3.connect(rebuilt) as conn:
        assert sum(n for (n,) in conn.execute("SELECT n FROM types")) == head
    unknown = streamsrc("projection", "rebuild", "nope", "--projection", "myviews:types", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "give --projection" in unknown.stderr
    nothing = streamsrc("--url", "memory://", "projection", "status", cwd=tmp_path)
    assert ok(nothing) == ""
    assert "no projections recorded" in nothing.stderr


def test_projections_on_postgresql(demo_dir: Path, tmp_path: Path, postgres_server: str) -> None:
    """status and rebuild on a PostgreSQL store (they refused it: 'the store is not a SQLite file')."""
    from pg_server import create_database, drop_database, run_async

    name = f"streamsrc_cli_proj_{os.getpid()}"
    url = run_async(lambda: create_database(postgres_server, name))
    try:
        ok(streamsrc("copy", f"sqlite:///{demo_dir}/streamsrc.db", url, cwd=tmp_path))
        head = len(
            json_lines(
                ok(
                    streamsrc("export", "--json", cwd=demo_dir)
                    if False
                    else streamsrc("read-all", "--json", cwd=demo_dir)
                )
            )
        )
        status = ok(streamsrc("--url", url, "projection", "status", cwd=tmp_path)).splitlines()
        assert status[0].split() == ["PROJECTION", "POSITION", "HEAD", "LAG"]
        assert any(line.startswith("streamsrc.migrate") for line in status[1:]), status  # copy's checkpoint
        into = tmp_path / "search.db"
        rebuilt = streamsrc(
            "--url", url, "projection", "rebuild", "account-user-search", "--into", str(into), cwd=tmp_path
        )
        assert f"up to position {head}" in ok(rebuilt)
    finally:
        run_async(lambda: drop_database(postgres_server, name))


def test_a_rebuilt_model_is_switched_in(demo_dir: Path, tmp_path: Path) -> None:
    """rebuild into a fresh file, then switch: the live tables and checkpoint become the rebuilt ones."""
    import shutil
    import sqlite3

    db = tmp_path / "live.db"
    shutil.copy(demo_dir / "streamsrc.db", db)
    url = f"sqlite:///{db}"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM users")  # the live model lost its rows
    rebuilt = tmp_path / "rebuilt.db"
    ok(
        streamsrc(
            "--url", url, "projection", "rebuild", "account-user-search", "--into", str(rebuilt), cwd=tmp_path
        )
    )
    switched = ok(
        streamsrc(
            "--url", url, "projection", "switch", "account-user-search", "--from", str(rebuilt), cwd=tmp_path
        )
    )
    assert "switched in" in switched
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 3
    status = ok(streamsrc("--url", url, "projection", "status", cwd=tmp_path)).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in status[1:]}
    assert rows["account-user-search"][2] == "0"
    one_line_error(
        streamsrc("--url", url, "projection", "switch", "nope", "--from", str(rebuilt), cwd=tmp_path),
        "no projection 'nope'",
    )


def test_the_progress_bar_is_redrawn_in_place_on_a_terminal(demo_dir: Path, tmp_path: Path) -> None:
    """stderr on a terminal (a pseudo-terminal here): the bar is redrawn with ``\\r``, not new lines."""
    import pty

    main, secondary = pty.openpty()
    try:
        copied = subprocess.run(
            [sys.executable, "-m", "streamsrc", "copy", f"sqlite:///{demo_dir}/streamsrc.db", "memory://"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    assert copied.returncode == 0
    assert b"\r[" in shown
    assert b"ev/s" in shown
