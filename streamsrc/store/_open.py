"""``open_store(url)``: pick the interpreter for a URL, open it, close it afterwards."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamsrc.errors import InvalidStoreURL

__all__ = ["open_store", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, logs and reprs).

    Passwords in the address, query values whose name says they are secret
    (``password``, ``secret``, ``token``, ``credential``, ``access_key``, ...)
    and passwords of URLs given as query values are all hidden.

    >>> redact_url("postgresql://app:s3cret@db:5432/events")
    'postgresql://app:***@db:5432/events'
    >>> redact_url("postgresql://app:s3cret@db:99999/events")  # a bad port is shown as written
    'postgresql://app:***@db:99999/events'
    >>> redact_url("dynamodb://events?endpoint_url=http://u:pw@localhost:8000&aws_secret_access_key=abc")
    'dynamodb://events?endpoint_url=http://u:***@localhost:8000&aws_secret_access_key=***'
    >>> redact_url("://app:s3cret@db/events")  # no scheme: not a URL to urlsplit, hidden all the same
    '://app:***@db/events'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:  # the host part as written: a bad port is still shown, not parsed
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            hidden = [(k, _redact_value(k, v)) for k, v in pairs]
            if hidden != pairs:
                query = urlencode(hidden, safe=":/@*")
        if netloc == parts.netloc and query == parts.query:
            shown = url
        else:
            shown = urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable URL>"
    # What urlsplit did not see as an address (no scheme, say: '://user:password@host'): hidden all the same.
    return _USERINFO.sub(r"\1:***@", shown)


_USERINFO = re.compile(r"(://[^/?#@:]*):(?!\*\*\*@)[^/?#@]*@")


_SECRET_NAMES = ("password", "passwd", "secret", "token", "credential", "access_key", "signature")


def _redact_value(name: str, value: str) -> str:
    if any(word in name.lower() for word in _SECRET_NAMES):
        return "***"
    if "://" in value and "@" in value:
        return redact_url(value)
    return value


def _options(url: str, query: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidStoreURL(f"unknown option {key!r} in {redact_url(url)} (known: {known})")
        try:
            options[key] = allowed[key](raw)
        except ValueError:
            raise InvalidStoreURL(f"bad value {raw!r} for {key!r} in {redact_url(url)}") from None
    return options


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(raw)
    return value


def _synchronous(raw: str) -> str:
    if raw.lower() not in ("normal", "full"):
        raise ValueError(raw)
    return raw.lower()


_COMMON: dict[str, Callable[[str], Any]] = {"page_size": _positive_int, "max_event_size": _positive_int}


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
        store = MemoryStore(**_options(url, parts.query, _COMMON))
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
        options = _options(
            url,
            parts.query,
            {
                **_COMMON,
                "synchronous": _synchronous,
                "readers": _positive_int,
                "busy_timeout": _seconds,
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
        ours = {**_COMMON, "pool_min": _positive_int, "pool_max": _positive_int, "timeout": _seconds}
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        options = _options(url, urlencode([(k, v) for k, v in pairs if k in ours]), ours)
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
