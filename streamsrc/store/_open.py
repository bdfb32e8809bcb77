"""``open_store(url)``: pick the interpreter for a URL, open it, close it afterwards.

The URL's scheme names the interpreter. The four that ship are built in;
others come from the entry point group ``streamsrc.stores`` of installed
packages (a package of a third-party backend declares, in its
``pyproject.toml``::

    [project.entry-points."streamsrc.stores"]
    mystore = "mystore_streamsrc:open_url"

where ``open_url`` is ``async def open_url(url: str) -> Store``), or from
:func:`register_scheme` at run time. A registered scheme never replaces a
built-in one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from streamsrc.errors import InvalidStoreURL
from streamsrc.store._contract import Store
from streamsrc.store._url import positive_int, redact_url, seconds, synchronous, url_options

__all__ = ["ENTRY_POINT_GROUP", "Opener", "open_store", "redact_url", "register_scheme"]

ENTRY_POINT_GROUP = "streamsrc.stores"
"""The entry point group where installed packages register store URL schemes."""

Opener: TypeAlias = Callable[[str], Awaitable[Store]]
"""Opens the store a URL names: ``async def open_url(url: str) -> Store``."""

_COMMON: dict[str, Callable[[str], Any]] = {"page_size": positive_int, "max_event_size": positive_int}


async def _open_memory(url: str) -> Store:
    from streamsrc.store.memory import MemoryStore

    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/"):
        raise InvalidStoreURL(f"memory:// takes no host or path: {redact_url(url)}")
    return MemoryStore(**url_options(url, parts.query, _COMMON))


async def _open_sqlite(url: str) -> Store:
    from streamsrc.store.sqlite import SqliteStore

    parts = urlsplit(url)
    if parts.netloc:
        raise InvalidStoreURL(
            f"sqlite URLs have no host: write sqlite:///relative.db or "
            f"sqlite:////absolute.db, not {redact_url(url)}"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path.endswith("/"):
        raise InvalidStoreURL(f"no database file in {redact_url(url)}")
    if path == ":memory:" or path.startswith("file:"):
        raise InvalidStoreURL(
            f"{redact_url(url)}: the SQLite store needs a database file (its threads each "
            "open a connection); use memory:// for a store in memory"
        )
    if "\x00" in path:
        raise InvalidStoreURL(f"NUL character in the path of {redact_url(url)}")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):  # noqa: ASYNC240 (a stat, once per open)
        raise InvalidStoreURL(f"folder {folder!r} of {redact_url(url)} does not exist")
    options = url_options(
        url,
        parts.query,
        {**_COMMON, "synchronous": synchronous, "readers": positive_int, "busy_timeout": seconds},
    )
    return await SqliteStore(path, **options).open()


async def _open_postgres(url: str) -> Store:
    try:
        from streamsrc.store.postgres import PostgresStore
    except ImportError:
        raise InvalidStoreURL(f"{redact_url(url)} needs asyncpg: pip install 'streamsrc[postgres]'") from None
    parts = urlsplit(url)
    if not parts.hostname and not parts.path.strip("/"):
        raise InvalidStoreURL(f"no host or database in {redact_url(url)}")
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise InvalidStoreURL(f"bad port in {redact_url(url)}") from None
    ours = {
        **_COMMON,
        "pool_min": positive_int,
        "pool_max": positive_int,
        "timeout": seconds,
        "retry_for": seconds,
    }
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    options = url_options(url, urlencode([(k, v) for k, v in pairs if k in ours]), ours)
    rest = urlencode([(k, v) for k, v in pairs if k not in ours])
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    return await PostgresStore(dsn, **options).open()


async def _open_dynamodb(url: str) -> Store:
    try:
        from streamsrc.store.dynamodb import DynamoDBStore, Settings
    except ImportError:
        raise InvalidStoreURL(f"{redact_url(url)} needs aiobotocore: pip install 'streamsrc[aws]'") from None
    return await DynamoDBStore(url, Settings.from_url(url)).open()


_BUILT_IN: dict[str, Opener] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
    "dynamodb": _open_dynamodb,
}
_REGISTERED: dict[str, Opener] = {}


def register_scheme(scheme: str, opener: Opener) -> None:
    """Make ``open_store`` open URLs of ``scheme`` with ``opener`` (in this process).

    Installed packages do the same through the ``streamsrc.stores`` entry
    point group, with no code to run. A built-in scheme cannot be replaced.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def open_scratch(url: str) -> MemoryStore:
    ...     return MemoryStore(page_size=10)
    >>> register_scheme("scratch", open_scratch)
    >>> async def main() -> None:
    ...     async with open_store("scratch://") as store:
    ...         print(store.page_size)
    >>> anyio.run(main)
    10
    """
    scheme = scheme.lower()
    if scheme in _BUILT_IN:
        raise ValueError(f"{scheme!r} is a built-in store scheme")
    _REGISTERED[scheme] = opener


def _opener(scheme: str, url: str) -> Opener:
    found = _BUILT_IN.get(scheme) or _REGISTERED.get(scheme)
    if found is not None:
        return found
    for point in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plug-in: say which, never crash with its import error
            raise InvalidStoreURL(
                f"the store for {scheme}:// (entry point {point.value!r}) cannot be loaded: {exc!r}"
            ) from None
        if not callable(loaded):
            raise InvalidStoreURL(f"entry point {point.value!r} for {scheme}:// is not an opener")
        opener: Opener = loaded
        return opener
    raise InvalidStoreURL(
        f"unknown store URL scheme {scheme!r} in {redact_url(url)} "
        "(use memory://, sqlite:///path.db, postgresql://user:password@host:port/database, "
        "dynamodb://TABLE?region=..., or install a package that registers the scheme)"
    )


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    """Open the store a URL names, and close it when the block ends.

    * ``memory://`` — in this process only, gone when closed;
    * ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` —
      options ``synchronous=normal|full``, ``readers``, ``busy_timeout``;
    * ``postgresql://user:password@host:port/database`` — options ``pool_min``,
      ``pool_max``, ``timeout`` (needs the ``postgres`` extra);
    * ``dynamodb://TABLE?region=...&endpoint_url=...`` — options ``consistent``,
      ``create``, ``timeout``, ``retries`` (needs the ``aws`` extra; see
      :mod:`streamsrc.store.dynamodb`);
    * every store: ``page_size`` (events per read page), ``max_event_size``;
    * any other scheme registered by an installed package (entry point group
      ``streamsrc.stores``) or by :func:`register_scheme`.

    A URL that cannot be used raises ``InvalidStoreURL`` naming it, with any
    password hidden; a database that cannot be reached, ``StoreUnavailable``.
    The store is closed when the block ends, however it ends (closing is
    shielded from cancellation, so a cancelled block leaves nothing open).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> async def demo():
    ...     async with open_store("memory://") as store:
    ...         await store.append("greetings", [EventData("Said", {"text": "hi"})])
    ...         return [e.data for e in await store.read("greetings").to_list()]
    >>> anyio.run(demo)
    [{'text': 'hi'}]
    """
    if not isinstance(url, str):
        raise InvalidStoreURL(f"a store URL is a string, not {type(url).__name__}")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise InvalidStoreURL(f"cannot parse store URL {redact_url(url)}: {exc}") from None
    store = await _opener(scheme, url)(url)
    if not isinstance(store, Store):
        with anyio.CancelScope(shield=True):
            aclose = getattr(store, "aclose", None)
            if aclose is not None:
                await aclose()
        raise TypeError(f"the opener of {scheme}:// returned {type(store).__name__}, which is not a Store")
    try:
        yield store
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()
