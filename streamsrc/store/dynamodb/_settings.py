"""What a ``dynamodb://`` URL says (:class:`Settings`). Imports no AWS driver."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from streamsrc.errors import InvalidStoreURL
from streamsrc.store._contract import DEFAULT_PAGE_SIZE
from streamsrc.store._url import positive_int, redact_url, seconds, url_options
from streamsrc.store.dynamodb._items import MAX_EVENT_SIZE, ORDERS

__all__ = ["Settings"]


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def _event_size(raw: str) -> int:
    value = positive_int(raw)
    if value > MAX_EVENT_SIZE:
        raise ValueError(raw)
    return value


def _retries(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 100:
        raise ValueError(raw)
    return value


def _text(raw: str) -> str:
    if not raw:
        raise ValueError(raw)
    return raw


def _order(raw: str) -> str:
    if raw not in ORDERS:
        raise ValueError(raw)
    return raw


_URL_OPTIONS = {
    "order": _order,
    "region": _text,
    "endpoint_url": _text,
    "consistent": _boolean,
    "create": _boolean,
    "streams": _boolean,
    "page_size": positive_int,
    "max_event_size": _event_size,
    "timeout": seconds,
    "retries": _retries,
}

_TABLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Settings:
    """What a ``dynamodb://`` URL says: the table, where it is, and how to use it.

    >>> settings = Settings.from_url("dynamodb://shop-events?region=eu-west-1&endpoint_url=http://127.0.0.1:8000")
    >>> settings.table, settings.region, settings.endpoint_url, settings.consistent
    ('shop-events', 'eu-west-1', 'http://127.0.0.1:8000', True)
    """

    table: str
    region: str | None = None
    endpoint_url: str | None = None
    consistent: bool = True
    create: bool = False
    streams: bool = True
    page_size: int = DEFAULT_PAGE_SIZE
    max_event_size: int = MAX_EVENT_SIZE
    timeout: float = 10.0
    retries: int = 5
    order: str | None = None
    """``stream`` (scale-out), ``global`` (head item), or ``None``: the table's own (``stream`` for a
    table made now)."""

    @classmethod
    def from_url(cls, url: str) -> Settings:
        """Parse ``dynamodb://TABLE?option=value&...``; ``InvalidStoreURL`` (secrets hidden) if unusable.

        >>> Settings.from_url("dynamodb://shop-events?region=eu-west-1&consistent=false")
        Settings(table='shop-events', region='eu-west-1', endpoint_url=None, consistent=False, ...)
        """
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidStoreURL(f"cannot parse store URL {shown}: {exc}") from None
        if parts.scheme.lower() != "dynamodb":
            raise InvalidStoreURL(f"not a dynamodb:// URL: {shown}")
        if "@" in parts.netloc or parts.path not in ("", "/") or parts.fragment:
            raise InvalidStoreURL(
                f"write dynamodb://TABLE?region=...&endpoint_url=..., not {shown} "
                "(credentials come from the environment, never from the URL)"
            )
        table = parts.netloc
        longest = 255 - len(".checkpoints")
        if not 3 <= len(table) <= longest or not set(table) <= _TABLE_CHARS:
            raise InvalidStoreURL(
                f"bad table name {table!r} in {shown}: "
                f"3 to {longest} characters of a-z, A-Z, 0-9, '_', '.', '-'"
            )
        options = url_options(url, parts.query, _URL_OPTIONS)
        endpoint = options.get("endpoint_url")
        if endpoint is not None:
            try:
                endpoint_parts = urlsplit(endpoint)
            except ValueError:
                endpoint_parts = None
            if endpoint_parts is None or endpoint_parts.scheme not in ("http", "https"):
                raise InvalidStoreURL(f"endpoint_url must be an http(s) URL in {shown}")
            if "@" in endpoint_parts.netloc:  # never usable (requests are signed), and botocore logs it
                raise InvalidStoreURL(
                    f"endpoint_url must not hold credentials in {shown} (they come from the environment)"
                )
        return cls(table, **options)
