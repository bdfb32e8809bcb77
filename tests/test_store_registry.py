"""``open_store``'s schemes: built in, registered at run time, or from an installed package's entry point;
and the type it gives (a ``Store``, which mypy checks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from streamsrc.errors import InvalidStoreURL
from streamsrc.events import EventData
from streamsrc.store import ENTRY_POINT_GROUP, Store, open_store, register_scheme
from streamsrc.store.base import StoreBase
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


async def test_a_registered_scheme_opens_and_closes_its_store() -> None:
    opened: list[MemoryStore] = []

    async def open_counting(url: str) -> MemoryStore:
        store = MemoryStore(page_size=int(url.rpartition("=")[2]))
        opened.append(store)
        return store

    register_scheme("counting", open_counting)
    async with open_store("counting://?page=7") as store:
        assert isinstance(store, Store)
        await store.append("s", [EventData("E", {})])
        assert [e.type for e in await store.read("s").to_list()] == ["E"]
    assert opened[0].page_size == 7
    result = await opened[0].append("s", [EventData("E", {})])
    assert "closed" in str(result.failure())  # open_store closed it at the block's end


def test_a_built_in_scheme_cannot_be_replaced() -> None:
    async def opener(url: str) -> MemoryStore:
        return MemoryStore()

    for scheme in ("sqlite", "memory", "POSTGRESQL", "dynamodb"):
        with pytest.raises(ValueError, match="built-in"):
            register_scheme(scheme, opener)


async def test_an_opener_that_gives_no_store_is_refused_and_what_it_gave_is_closed() -> None:
    closed: list[bool] = []

    class NotAStore:
        async def aclose(self) -> None:
            closed.append(True)

    async def opener(url: str) -> NotAStore:
        return NotAStore()

    register_scheme("notastore", opener)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Store"):
        async with open_store("notastore://x"):
            pass
    assert closed == [True]


async def test_an_unknown_scheme_names_itself_with_the_password_hidden() -> None:
    with pytest.raises(InvalidStoreURL) as caught:
        async with open_store("nosuchdb://app:s3cret@host/db"):
            pass
    assert "nosuchdb" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_a_block_cancelled_inside_open_store_still_closes_the_store() -> None:
    store: Store | None = None
    with anyio.CancelScope() as scope:
        async with open_store("memory://") as opened:
            store = opened
            scope.cancel()
            await anyio.sleep(1)
    assert store is not None
    assert isinstance(store, StoreBase)
    with pytest.raises(Exception, match="closed"):
        await store.head()


PLUGIN = '''
"""A third-party backend, installed as a package with an entry point."""
from streamsrc.store.memory import MemoryStore


class PluginStore(MemoryStore):
    def __repr__(self) -> str:
        return "<PluginStore>"


async def open_url(url: str) -> PluginStore:
    return PluginStore(page_size=2)


async def broken(url: str) -> PluginStore:
    raise AssertionError("never called")
'''

USE = """
import anyio
from streamsrc.errors import InvalidStoreURL
from streamsrc.events import EventData
from streamsrc.store import open_store

async def main() -> None:
    async with open_store("plugin://anything") as store:
        await store.append("s", [EventData("E", {"n": n}) for n in range(5)])
        print(repr(store), store.page_size, [e.data["n"] for e in await store.read("s").to_list()])
    try:
        async with open_store("brokenplugin://x"):
            pass
    except InvalidStoreURL as exc:
        print("refused:", exc)

anyio.run(main)
"""


def test_an_installed_package_registers_its_scheme_through_the_entry_point_group(tmp_path: Path) -> None:
    """A real distribution on the path (its dist-info with entry_points.txt, as pip leaves it),
    found by importlib.metadata in a fresh interpreter."""
    (tmp_path / "plugin_store.py").write_text(PLUGIN)
    info = tmp_path / "plugin_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nplugin = plugin_store:open_url\nbrokenplugin = no_such_module:open_url\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", USE],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "<PluginStore> 2 [0, 1, 2, 3, 4]"
    refused = "refused: the store for brokenplugin:// (entry point 'no_such_module:open_url')"
    assert lines[1].startswith(refused)


def test_mypy_sees_the_type_open_store_gives(tmp_path: Path) -> None:
    """``open_store`` gives a ``Store``: a misspelt method is a type error, a right one is not."""
    mypy_api = pytest.importorskip("mypy.api")
    program = tmp_path / "uses_store.py"
    program.write_text(
        textwrap.dedent(
            """
            from streamsrc.events import EventData
            from streamsrc.store import open_store

            async def main() -> None:
                async with open_store("memory://") as store:
                    await store.append("s", [EventData("E", {})])
                    await store.apend("s", [EventData("E", {})])
            """
        )
    )
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "--python-version=3.11", str(program)]
    )
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    assert '"Store" has no attribute "apend"' in errors[0]
