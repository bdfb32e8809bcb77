"""``open_store(url)``: pick the interpreter for a URL, open it, close it afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamsrc.errors import InvalidStoreURL
from streamsrc.store._url import positive_int, redact_url, seconds, synchronous, url_options

__all__ = ["open_store", "redact_url"]


_COMMON: dict[str, Callable[[str], Any]] = {"page_size": positive_int, "max_event_size": positive_int}


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Any]:
    """Open the store a URL names, and close it when the block ends.

    * ``memory://`` — in this process only, gone when closed;
    * ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` —
      options ``synchronous=normal|full``, ``readers``, ``busy_timeout``;
    * ``postgresql://user:password@host:port/database`` — options ``pool_min``,
      ``pool_max``, ``timeout`` (needs the ``postgres`` extra);
    * ``dynamodb://TABLE?region=...&endpoint_url=...`` — options ``consistent``,
      ``create``, ``timeout``, ``retries`` (needs the ``aws`` extra; see
      :mod:`streamsrc.store.dynamodb`);
    * every store: ``page_size`` (events per read page), ``max_event_size``.

    A URL that cannot be used raises ``InvalidStoreURL`` naming it, with any
    password hidden.

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
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidStoreURL(f"cannot parse store URL {redact_url(url)}: {exc}") from None
    scheme = parts.scheme.lower()
    store: Any
    if scheme == "memory":
        from streamsrc.store.memory import MemoryStore

        if parts.netloc or parts.path not in ("", "/"):
            raise InvalidStoreURL(f"memory:// takes no host or path: {redact_url(url)}")
        store = MemoryStore(**url_options(url, parts.query, _COMMON))
    elif scheme == "sqlite":
        from streamsrc.store.sqlite import SqliteStore

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
            {
                **_COMMON,
                "synchronous": synchronous,
                "readers": positive_int,
                "busy_timeout": seconds,
            },
        )
        store = await SqliteStore(path, **options).open()
    elif scheme in ("postgresql", "postgres"):
        try:
            from streamsrc.store.postgres import PostgresStore
        except ImportError:
            raise InvalidStoreURL(
                f"{redact_url(url)} needs asyncpg: pip install 'streamsrc[postgres]'"
            ) from None
        if not parts.hostname and not parts.path.strip("/"):
            raise InvalidStoreURL(f"no host or database in {redact_url(url)}")
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise InvalidStoreURL(f"bad port in {redact_url(url)}") from None
        ours = {**_COMMON, "pool_min": positive_int, "pool_max": positive_int, "timeout": seconds}
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        options = url_options(url, urlencode([(k, v) for k, v in pairs if k in ours]), ours)
        rest = urlencode([(k, v) for k, v in pairs if k not in ours])
        dsn = urlunsplit(parts._replace(scheme="postgresql", query=rest))
        store = await PostgresStore(dsn, **options).open()
    elif scheme == "dynamodb":
        try:
            from streamsrc.store.dynamodb import DynamoDBStore, Settings
        except ImportError:
            raise InvalidStoreURL(
                f"{redact_url(url)} needs aiobotocore: pip install 'streamsrc[aws]'"
            ) from None
        store = await DynamoDBStore(url, Settings.from_url(url)).open()
    else:
        raise InvalidStoreURL(
            f"unknown store URL scheme {parts.scheme!r} in {redact_url(url)} "
            "(use memory://, sqlite:///path.db, postgresql://user:password@host:port/database, "
            "dynamodb://TABLE?region=...)"
        )
    try:
        yield store
    finally:
        await store.aclose()
