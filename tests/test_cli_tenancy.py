"""``streamsrc --tenant NAME`` (or ``STREAMSRC_TENANT``): every command on a tenant's view of the store,
run as users run it (a subprocess), never showing another tenant's streams, events or checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_cli import TIMEOUT, json_lines, ok, streamsrc

from streamsrc.events import EventData
from streamsrc.store import open_store


def usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``streamsrc.db`` holds the demo's events imported into tenant ``acme``, some
    events of tenant ``globex`` under the same names, the operator's own, and checkpoints of each."""
    folder = tmp_path_factory.mktemp("tenants")
    demo = tmp_path_factory.mktemp("demo")
    ok(streamsrc("demo", cwd=demo))
    dump = ok(streamsrc("export", cwd=demo))
    ok(streamsrc("--tenant", "acme", "import", cwd=folder, stdin=dump))

    async def more() -> None:
        async with open_store(f"sqlite:///{folder}/streamsrc.db") as opened:
            store: Any = opened  # a SqliteStore: tenant() is StoreBase's
            globex = store.tenant("globex")
            await globex.append("user-ada-1", [EventData("Secret", {"card": "4111"})])
            await globex.append("orders-1", [EventData("Secret", {"card": "5500"})])
            await globex.save_checkpoint("billing", 7)
            await store.tenant("acme").save_checkpoint("billing", 3)
            await store.append("operator-1", [EventData("Secret", {"note": "ops"})])
            await store.save_checkpoint("ops-view", 1)

    anyio.run(more)
    return folder


def test_streams_read_and_read_all_see_only_the_tenant(shared: Path) -> None:
    acme = json_lines(ok(streamsrc("--tenant", "acme", "streams", "--json", cwd=shared)))
    names = [s["stream"] for s in acme]
    assert "user-ada-1" in names
    assert "orders-1" not in names
    assert not any(n.startswith(("@", "operator")) for n in names)
    globex = json_lines(ok(streamsrc("streams", "--json", cwd=shared, env={"STREAMSRC_TENANT": "globex"})))
    assert [s["stream"] for s in globex] == ["orders-1", "user-ada-1"]
    everything = ok(streamsrc("--tenant", "acme", "read-all", "--json", cwd=shared))
    assert "Secret" not in everything
    assert "@" not in "".join(e["stream"] for e in json_lines(everything))
    ada = json_lines(ok(streamsrc("--tenant", "acme", "read", "user-ada-1", "--json", cwd=shared)))
    assert [e["stream"] for e in ada] == ["user-ada-1"] * len(ada)
    assert "Secret" not in json.dumps(ada)
    theirs = json_lines(ok(streamsrc("--tenant", "globex", "read", "user-ada-1", "--json", cwd=shared)))
    assert [e["type"] for e in theirs] == ["Secret"]
    # the operator's view (no --tenant) sees everyone, under their prefixes
    operator = [s["stream"] for s in json_lines(ok(streamsrc("streams", "--json", cwd=shared)))]
    assert "@globex/orders-1" in operator
    assert "operator-1" in operator


@pytest.mark.parametrize(
    "args",
    [
        ["read", "../globex/orders-1"],
        ["read", "@globex/orders-1"],
        ["read", "/../@globex/orders-1"],
        ["read", "operator-1"],
        ["read", "../operator-1", "--backwards"],
        ["read-all", "--prefix", "@globex/"],
        ["read-all", "--prefix", "../"],
        ["read-all", "--prefix", "operator"],
        ["read-all", "--type", "Secret"],
        ["state", "user-/../@globex/user-ada-1"],
    ],
)
def test_no_command_reaches_another_tenant(shared: Path, args: list[str]) -> None:
    result = streamsrc("--tenant", "acme", *args, cwd=shared)
    assert "Traceback" not in result.stderr
    assert "Secret" not in result.stdout
    assert "4111" not in result.stdout + result.stderr
    assert result.returncode in (0, 1)
    if result.returncode == 0:
        assert result.stdout == ""  # nothing: said on stderr


def test_state_export_and_copy_work_on_the_tenants_view(shared: Path, tmp_path: Path) -> None:
    state = json.loads(ok(streamsrc("--tenant", "acme", "state", "user-ada-1", cwd=shared)))
    assert state["state"]["username"]
    missing = streamsrc("--tenant", "globex", "state", "group-chess-1", cwd=shared)
    assert missing.returncode == 1
    assert "has no events" in missing.stderr
    exported = json_lines(ok(streamsrc("--tenant", "globex", "export", cwd=shared)))
    assert sorted(e["stream"] for e in exported) == ["orders-1", "user-ada-1"]
    target = f"sqlite:///{tmp_path}/copy.db"
    ok(streamsrc("--tenant", "globex", "copy", f"sqlite:///{shared}/streamsrc.db", target, cwd=tmp_path))
    copied = [
        s["stream"] for s in json_lines(ok(streamsrc("--url", target, "streams", "--json", cwd=tmp_path)))
    ]
    assert copied == ["@globex/orders-1", "@globex/user-ada-1"]
    back = json_lines(
        ok(streamsrc("--url", target, "--tenant", "globex", "read-all", "--json", cwd=tmp_path))
    )
    assert [e["data"] for e in back] == [{"card": "4111"}, {"card": "5500"}]


def test_projection_status_and_rebuild_on_a_tenant(shared: Path, tmp_path: Path) -> None:
    status = ok(streamsrc("--tenant", "acme", "projection", "status", cwd=shared)).splitlines()
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in status[1:]}
    assert set(rows) == {"billing"}  # acme's own checkpoint: not globex's, not the operator's
    acme_events = json_lines(ok(streamsrc("--tenant", "acme", "read-all", "--json", cwd=shared)))
    assert rows["billing"][:2] == [3, acme_events[-1]["position"]]
    theirs = ok(streamsrc("--tenant", "globex", "projection", "status", cwd=shared)).splitlines()
    assert [line.split()[:2] for line in theirs[1:]] == [["billing", "7"]]
    into = tmp_path / "search.db"
    rebuilt = streamsrc(
        "--tenant", "acme", "projection", "rebuild", "account-user-search", "--into", str(into), cwd=shared
    )
    assert f"up to position {acme_events[-1]['position']}" in ok(rebuilt)


def test_tail_on_a_tenant_follows_only_its_appends(shared: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tail.db"

    async def before() -> None:  # the store exists, other tenants' events first
        async with open_store(url) as opened:
            store: Any = opened
            await store.tenant("globex").append("s", [EventData("Theirs", {})])

    anyio.run(before)
    follower = subprocess.Popen(
        [sys.executable, "-m", "streamsrc", "--url", url, "--tenant", "acme", "tail", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )

    async def append() -> None:
        async with open_store(url) as opened:
            store: Any = opened
            await store.tenant("globex").append("s", [EventData("Theirs", {})])
            await store.append("s", [EventData("Operator", {})])
            await store.tenant("acme").append("s", [EventData("Mine", {})])

    try:
        assert follower.stderr is not None
        assert follower.stdout is not None
        assert "following" in follower.stderr.readline()
        anyio.run(append)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen:
            seen.append(json.loads(follower.stdout.readline()))
        assert [(e["stream"], e["type"]) for e in seen] == [("s", "Mine")]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=TIMEOUT) == 0
    finally:
        follower.kill()
        follower.wait()


@pytest.mark.parametrize("tenant", ["", "Acme", "a/b", "-x", "x" * 64, "ac me"])
def test_an_invalid_tenant_is_a_usage_error(shared: Path, tenant: str) -> None:
    usage_error(streamsrc("--tenant", tenant, "streams", cwd=shared), "tenant")
    usage_error(streamsrc("streams", cwd=shared, env={"STREAMSRC_TENANT": tenant}), "STREAMSRC_TENANT")


def test_demo_refuses_a_tenant(tmp_path: Path) -> None:
    usage_error(streamsrc("--tenant", "acme", "demo", cwd=tmp_path), "without --tenant")
    assert not (tmp_path / "streamsrc.db").exists()
