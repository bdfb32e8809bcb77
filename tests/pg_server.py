"""A throwaway PostgreSQL cluster for the tests: started by the tests themselves, gone afterwards.

``ThrowawayCluster`` runs ``initdb`` into a temporary folder and starts the
server on a free port of 127.0.0.1 with durability off (``fsync``,
``synchronous_commit``, ``full_page_writes``), so it starts in a second or two.
As root (``initdb`` refuses root) the server runs as the ``postgres`` user.

Roles: ``streamsrc`` (superuser, password :data:`PASSWORD`, trusted on
127.0.0.1 so any password is accepted) and ``locked`` (password
:data:`LOCKED_PASSWORD`, checked with scram-sha-256), for tests of a refused
login.

:func:`session_url` is the one server of a test session: the server named by
``STREAMSRC_TEST_POSTGRES_URL`` if set, else a cluster started on first use
and stopped by :func:`stop_session_cluster` (called at the end of the session
by ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "LOCKED_PASSWORD",
    "PASSWORD",
    "SKIP_REASON",
    "USER",
    "PostgresUnavailable",
    "ThrowawayCluster",
    "create_database",
    "drop_database",
    "find_binaries",
    "session_url",
    "stop_session_cluster",
]

USER = "streamsrc"
PASSWORD = "streamsrc-test-pw"
LOCKED_USER = "locked"
LOCKED_PASSWORD = "locked-test-pw"
URL_VARIABLE = "STREAMSRC_TEST_POSTGRES_URL"
BIN_VARIABLE = "STREAMSRC_PG_BIN"
SKIP_REASON = (
    "PostgreSQL tests need the server binaries (initdb, pg_ctl) or STREAMSRC_TEST_POSTGRES_URL; "
    "install postgresql or set the variable"
)
_SERVER_OPTIONS = "-c max_connections=200 -c listen_addresses=127.0.0.1"
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # the tests' default
_DURABLE = "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"  # as in production
_HBA = f"""\
local all all trust
host all {LOCKED_USER} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""

T = TypeVar("T")


class PostgresUnavailable(RuntimeError):
    """No server to test against: no binaries, no URL, or asyncpg missing."""


def _has_server_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def find_binaries() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``/``postgres``: ``$STREAMSRC_PG_BIN``, else the newest
    ``/usr/lib/postgresql/<version>/bin``, else the folder of ``pg_ctl`` on ``PATH``; ``None`` if none."""
    named = os.environ.get(BIN_VARIABLE)
    if named:
        return Path(named) if _has_server_binaries(Path(named)) else None

    def version(folder: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in folder.parent.name.split("."))
        except ValueError:
            return (-1,)

    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True):
        if _has_server_binaries(folder):
            return folder
    on_path = shutil.which("pg_ctl")
    if on_path and _has_server_binaries(Path(on_path).parent):
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh asyncio loop in another thread.

    So synchronous code can use asyncpg even when called from inside a running
    event loop (asyncio or trio).
    """

    async def main() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_database(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(base_url: str, name: str) -> str:
    """Create an empty database ``name`` (from ``template0``) on the server of ``base_url``; its URL."""
    import asyncpg

    connection = await asyncpg.connect(base_url)
    try:
        await connection.execute(f"CREATE DATABASE {_quote_identifier(name)} TEMPLATE template0")
    finally:
        await connection.close()
    return with_database(base_url, name)


async def drop_database(base_url: str, name: str) -> None:
    """Drop database ``name`` (if it exists), disconnecting its sessions."""
    import asyncpg

    connection = await asyncpg.connect(base_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)")
    finally:
        await connection.close()


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only.

    Use it as ``with ThrowawayCluster() as cluster:``; ``cluster.url`` is like
    ``postgresql://streamsrc:streamsrc-test-pw@127.0.0.1:54321/postgres``.
    :meth:`stop` (``mode="fast"`` keeps every committed transaction, even with
    ``synchronous_commit=off``) and :meth:`start` restart it on the same port
    and data, e.g. to take the server away in the middle of a test.
    """

    def __init__(self, binaries: Path | None = None, *, durable: bool = False) -> None:
        """``durable``: with ``fsync`` and ``synchronous_commit`` on, as in production (the
        benchmarks' writers and soak); off by default, which the tests need for speed."""
        found = binaries or find_binaries()
        if found is None:
            raise PostgresUnavailable(SKIP_REASON)
        self.binaries = found
        self.port = 0
        self.folder: Path | None = None
        self.running = False
        self.durability = _DURABLE if durable else _FAST
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The ``postgres`` database as the superuser ``streamsrc``, with its password."""
        if not self.port:
            raise RuntimeError("the cluster was never started")
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def _run(self, *command: str | Path) -> None:
        argv = [str(part) for part in command]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.folder / "server.log" if self.folder else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{tail}"
            )

    def _create(self) -> None:
        # As root, the postgres user must reach the folder: /tmp, not a private $TMPDIR.
        self.folder = Path(
            tempfile.mkdtemp(prefix="streamsrc-pg-", dir="/tmp" if self._as_postgres else None)
        )
        pwfile = self.folder / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            for path in (self.folder, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            self.binaries / "initdb",
            "-D",
            self.data,
            "-A",
            "trust",
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        (self.data / "pg_hba.conf").write_text(_HBA)

    def _pg_ctl_start(self) -> None:
        assert self.folder is not None
        self._run(
            self.binaries / "pg_ctl",
            "-w",
            "-D",
            self.data,
            "-l",
            self.folder / "server.log",
            "-o",
            f"-p {self.port} -k {self.folder} {_SERVER_OPTIONS} {self.durability}",
            "start",
        )
        self.running = True

    def start(self) -> Self:
        """Start the server: the first time, create the cluster on a free port; later, the same again."""
        if self.running:
            return self
        if self.folder is not None:
            self._pg_ctl_start()
            return self
        try:
            self._create()
            for attempt in range(3):  # the free port may be taken before the server binds it
                self.port = _free_port()
                try:
                    self._pg_ctl_start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
            run_async(self._create_locked_role)
        except BaseException:
            self.remove()
            raise
        return self

    async def _create_locked_role(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f"CREATE ROLE {LOCKED_USER} LOGIN PASSWORD '{LOCKED_PASSWORD}'")
        finally:
            await connection.close()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (``fast``: sessions are ended, then a checkpoint;
        ``immediate``: a crash, which may lose the last commits since ``synchronous_commit=off``)."""
        if self.running:
            self.running = False
            self._run(self.binaries / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self, down_for: float = 1.0, mode: str = "fast") -> float:
        """Stop the server, leave it down for ``down_for`` seconds, start it again on the same port
        and data (blocking: run it in a thread from async code); the seconds it was really away,
        from the stop's start to the start's end."""
        began = time.monotonic()
        self.stop(mode)
        time.sleep(down_for)
        self.start()
        return time.monotonic() - began

    def remove(self) -> None:
        """Stop the server at once and delete the cluster."""
        try:
            self.stop("immediate")
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


_lock = threading.Lock()
_session_cluster: ThrowawayCluster | None = None
_session_failure: PostgresUnavailable | RuntimeError | None = None


def session_url() -> str:
    """The base URL (database ``postgres``) of the session's server, starting it on first use.

    Raises :class:`PostgresUnavailable` (with the reason to skip) when there is
    neither ``STREAMSRC_TEST_POSTGRES_URL`` nor a usable local installation.
    """
    global _session_cluster, _session_failure
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable("PostgreSQL tests need asyncpg: pip install -e '.[test]'") from None
    named = os.environ.get(URL_VARIABLE)
    if named:
        return named
    with _lock:
        if _session_failure is not None:  # tried before, in vain: the same answer, at once
            raise type(_session_failure)(str(_session_failure))
        if _session_cluster is None:
            try:
                _session_cluster = ThrowawayCluster().start()
                atexit.register(stop_session_cluster)  # if the session does not end normally
            except RuntimeError as exc:  # PostgresUnavailable (a skip) or binaries that fail (an error)
                _session_failure = exc
                raise
        return _session_cluster.url


def stop_session_cluster() -> None:
    """Remove the session's cluster, if one was started."""
    global _session_cluster
    with _lock:
        if _session_cluster is not None:
            _session_cluster.remove()
            _session_cluster = None
