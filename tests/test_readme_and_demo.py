"""The README's examples and the ``streamsrc demo`` command run as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    lines = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert lines[0].startswith("pip install . && streamsrc demo")
    assert lines[1].startswith("pip install -e '.[test]' && pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && pytest" in ci


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(source: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", source], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # Every "# value" comment after a print(...) in the example is what that line prints.
    printed = done.stdout.splitlines()
    expected = [m.group(1) for m in re.finditer(r"print\(.*\)\s+# (\[.*\]|<.*>)$", source, re.M)]
    for line in expected:
        assert line in printed


def test_demo_command_runs_twice_on_one_file(tmp_path: Path) -> None:
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "streamsrc", "demo"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert f"demo run {run} on sqlite:///streamsrc.db" in out
        assert f"register eve-{run} as ada{run}: refused: username 'ada{run}' is taken" in out
        assert f"bob-{run} tries the name countess{run}: refused: username 'countess{run}' is taken" in out
        assert "(a stale ETag): refused: stream" in out
        assert f"revert ada-{run} to that moment: saved" in out
        assert f"members of chess-{run} now: ['bob-{run}']; after event 2: ['ada-{run}', 'bob-{run}']" in out
        trail = [line for line in out.splitlines() if line.startswith("  ")]
        assert [line.split(": ", 1)[1].split("(")[0] for line in trail] == [
            "UserRegistered",
            "UsernameChanged",
            "EmailChanged",
            "UsernameChanged",
            "EmailChanged",
        ]
        assert [line.split(" by ")[1].split(":")[0] for line in trail] == [
            "admin",
            "ada",
            "ada",
            "admin",
            "admin",
        ]
    assert (tmp_path / "streamsrc.db").exists()


def test_demo_with_a_bad_url_prints_one_line_and_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamsrc", "demo", "--url", "postgresql://app:s3cret@db:99999/events"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "InvalidStoreURL" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_demo_runs_on_a_new_dynamodb_table_in_the_default_mode(moto_endpoint: str, tmp_path: Path) -> None:
    """A new table is in ``order=stream`` mode: the demo indexes what it appended before it reads the
    global log (it waited for an indexer nobody ran, and failed with a TimeoutError)."""
    url = f"dynamodb://demo-{tmp_path.name[-12:]}?endpoint_url={moto_endpoint}&region=us-east-1"
    for command in (["dynamodb", "create-tables"], ["demo"]):
        done = subprocess.run(
            [sys.executable, "-m", "streamsrc", "--url", url, *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"global log: [1-9]\d* events", out), out
    assert "read model account-user-search: caught up from position 0 to" in out
    assert "followed live: cy-1 registered; users with email cy@example.org: ['cy-1']" in out
