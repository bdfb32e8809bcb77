"""SQLite off the event loop: threads that own a connection each, and the transactions run in them.

Used by both SQLite components, the event store (:mod:`streamsrc.store.sqlite`)
and the read model (:mod:`streamsrc.projections.sqlite`), so both open their
connections the same way (:func:`connect`), run their writes the same way
(:func:`write_transaction`) and recover the same way from a transaction that
a failure left open.

* :class:`ConnectionThreads` — threads that each own one connection and run
  the calls handed to them; before each call a connection still inside a
  transaction (a ``COMMIT`` that failed, a call that left one open) is rolled
  back, and one that cannot be is closed and opened again.
* :func:`connect` — a connection in autocommit mode with the ``synchronous``
  setting and a busy timeout; if its setup fails, the connection is closed at
  once (not left to the garbage collector).
* :func:`write_transaction` / :func:`read_transaction` — a body run in
  ``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``BEGIN`` ... ``COMMIT``) that rolls
  back whenever it does not commit, a failed ``COMMIT`` included.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from streamsrc.errors import StoreUnavailable

__all__ = ["ConnectionThreads", "connect", "read_transaction", "rollback", "write_transaction"]

T = TypeVar("T")


def connect(
    path: str,
    *,
    synchronous: str = "NORMAL",
    busy_timeout: float = 5.0,
    on_connect: Callable[[sqlite3.Connection], object] | None = None,
) -> sqlite3.Connection:
    """A connection to the SQLite file at ``path`` for a thread of :class:`ConnectionThreads`.

    Autocommit mode (transactions are begun explicitly), usable from the
    thread that owns it, with ``PRAGMA synchronous`` set and ``busy_timeout``
    seconds to wait for another connection's lock; ``on_connect(conn)`` runs
    last (pragmas, functions of the application). If any of it fails, the
    connection is closed before the error is raised: a caller that retries
    does not pile up open files.

    >>> conn = connect(":memory:", synchronous="FULL")
    >>> conn.execute("PRAGMA synchronous").fetchone(), conn.in_transaction
    ((2,), False)
    >>> conn.close()
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    try:
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if on_connect is not None:
            on_connect(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction ``conn`` is in, if it is in one (``ROLLBACK`` raises otherwise).

    >>> conn = connect(":memory:")
    >>> _ = conn.execute("BEGIN")
    >>> rollback(conn); rollback(conn)
    >>> conn.in_transaction
    False
    >>> conn.close()
    """
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def write_transaction(
    conn: sqlite3.Connection,
    body: Callable[[], T],
    keep: Callable[[T], bool] | None = None,
    failed: Callable[[str, sqlite3.Error], BaseException] | None = None,
) -> T:
    """Run ``body()`` in ``BEGIN IMMEDIATE`` ... ``COMMIT`` and return its result.

    The transaction is rolled back if ``body`` raises, if ``keep(result)`` is
    false (the body decided to write nothing), and if ``COMMIT`` itself fails
    (a deferred foreign key, a full disk, a lock): SQLite may leave the
    transaction open after a failed ``COMMIT``, and a connection left so
    refuses every later ``BEGIN``. The error of the body or of ``COMMIT`` is
    raised, never one of the rollback; ``failed(step, error)``, if given,
    makes the exception raised when ``BEGIN`` or ``COMMIT`` (``step``) fails,
    to tell the file's failure from the body's own errors.

    >>> conn = connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE t (x INTEGER)")
    >>> write_transaction(conn, lambda: conn.execute("INSERT INTO t VALUES (1)").rowcount)
    1
    >>> insert = lambda: conn.execute("INSERT INTO t VALUES (2)").rowcount
    >>> write_transaction(conn, insert, keep=lambda n: n > 1)  # rolled back
    1
    >>> conn.execute("SELECT x FROM t").fetchall(), conn.in_transaction
    ([(1,)], False)
    >>> conn.close()
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if failed is None:
            raise
        raise failed("begin", exc) from exc
    try:
        result = body()
        if keep is not None and not keep(result):
            conn.execute("ROLLBACK")
            return result
    except BaseException:
        with suppress(sqlite3.Error):  # the first error is the one to tell
            rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException as exc:
        with suppress(sqlite3.Error):
            rollback(conn)
        if failed is None or not isinstance(exc, sqlite3.Error):
            raise
        raise failed("commit", exc) from exc
    return result


def read_transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run ``body()`` in one read transaction (every query in it sees one snapshot of the file).

    >>> conn = connect(":memory:")
    >>> read_transaction(conn, lambda: conn.execute("SELECT 6 * 7").fetchone())
    (42,)
    >>> conn.close()
    """
    conn.execute("BEGIN")
    try:
        result = body()
    except BaseException:
        with suppress(sqlite3.Error):
            rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            rollback(conn)
        raise
    return result


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():  # a cancelled caller has stopped waiting
        future.set_result(None)


class ConnectionThreads:
    """Threads that each own one SQLite connection and run the calls handed to them.

    A call goes over in a queue; its result comes back through the event
    loop's thread-safe wake-up: on asyncio straight to a future, elsewhere
    (trio) through anyio's ``run_sync_soon`` and an ``anyio.Event``. The
    worker belongs to the event loop that made it. Each thread opens its
    connection with ``connect()`` on its first call (a failure goes to that
    call, and the next call tries again), and before every call rolls back
    a transaction the previous one left open.

    >>> def open_connection() -> sqlite3.Connection:
    ...     return connect(":memory:")
    >>> async def main() -> None:
    ...     threads = ConnectionThreads(open_connection, 1, "example")
    ...     try:
    ...         print(await threads.call(lambda conn: conn.execute("SELECT 1 + 1").fetchone()))
    ...         await threads.call(lambda conn: conn.execute("BEGIN"))  # and never committed
    ...         print(await threads.call(lambda conn: conn.in_transaction))
    ...     finally:
    ...         await threads.aclose()
    >>> anyio.run(main)
    (2,)
    False
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], threads: int, name: str) -> None:
        self.token = anyio.lowlevel.current_token()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio
            self._loop = None
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._closed = False
        self._threads = [
            threading.Thread(target=self._main, args=(connect,), name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _main(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while (job := self._jobs.get()) is not None:
                fn, box, wake = job
                try:
                    if conn is not None and conn.in_transaction:
                        conn = _reset(conn)
                    if conn is None:
                        conn = connect()
                    box.append((True, fn(conn)))
                except BaseException as exc:  # handed back to the caller
                    box.append((False, exc))
                # If the caller's event loop is gone, nobody waits for the result.
                with suppress(Exception):
                    wake()
                del job, fn, box, wake  # hold on to no result (nor error) while waiting for the next
        finally:
            if conn is not None:
                conn.close()

    async def call(self, fn: Callable[[sqlite3.Connection], T], shield: bool = False) -> T:
        """Run ``fn(connection)`` in one of the threads and return its result.

        With ``shield``, a cancellation first waits for the call to finish (so
        its outcome is settled) and then takes effect.
        """
        if self._closed:  # a job queued behind the threads' stop signal would never run
            raise StoreUnavailable(f"the {self._name} threads are closed")
        box: list[tuple[bool, Any]] = []
        try:
            if self._loop is not None:
                future = self._loop.create_future()
                self._jobs.put((fn, box, partial(self._loop.call_soon_threadsafe, _settle, future)))
                await future
            else:
                done = anyio.Event()
                token = self.token
                wake = partial(token.backend_class.run_sync_soon, done.set, (), token.native_token)
                self._jobs.put((fn, box, wake))
                await done.wait()
        except anyio.get_cancelled_exc_class():
            if shield:
                with anyio.CancelScope(shield=True):
                    while not box:  # noqa: ASYNC110 (rare: cheaper than a second wake-up per call)
                        await anyio.sleep(0.001)
            raise
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Let the calls queued so far finish, stop the threads and close their connections; a call
        made from now on raises ``StoreUnavailable``. Shielded: a cancelled caller still waits for the
        threads to stop (their connections closed), then the cancellation takes effect."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        with anyio.CancelScope(shield=True):
            for t in self._threads:
                await anyio.to_thread.run_sync(t.join)


def _reset(conn: sqlite3.Connection) -> sqlite3.Connection | None:
    """``conn`` out of the transaction a call left open; ``None`` (closed) if it cannot be rolled back."""
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        conn.close()
        return None
    return conn
