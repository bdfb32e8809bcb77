"""Store URLs: reading their options, and showing them with passwords hidden."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from streamsrc.errors import InvalidStoreURL

__all__ = ["positive_int", "redact_url", "seconds", "synchronous", "url_options"]


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
    >>> redact_url("sqlite:////data/events.db?password=abc#x")  # the path kept as written
    'sqlite:////data/events.db?password=***#x'
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
        shown = url
        if netloc != parts.netloc:  # the address as written, once, after the scheme
            shown = shown.replace(parts.netloc, netloc, 1)
        if query != parts.query:  # the query as written, between '?' and any '#'
            head, _, rest = shown.partition("?")
            fragment = rest[len(parts.query) :]
            shown = f"{head}?{query}{fragment}"
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


def url_options(url: str, query: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The options of a URL's ``query``, each read by its function in ``allowed``; ``InvalidStoreURL``
    names an unknown option or a bad value (with the URL's password hidden)."""
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


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(raw)
    return value


def synchronous(raw: str) -> str:
    if raw.lower() not in ("normal", "full"):
        raise ValueError(raw)
    return raw.lower()
