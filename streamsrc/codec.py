"""Typed events: map dataclasses or pydantic models to ``EventData`` and back, upcasting old versions.

A :class:`Codec` knows, for each event type name, the dataclass (or pydantic v2
model) that holds it and its current schema version. Encoding turns an instance into JSON
``data`` (dataclasses, lists, tuples, sets, dicts, ``datetime``, ``date``,
``UUID``, ``Decimal`` and ``Enum`` values are handled) and records a
version above 1 in the metadata key ``"schema_version"``. Decoding reads that version
(1 if absent: version 1 is not written) and, if it is older, runs the registered upcasters
``v1 -> v2 -> ... -> current`` over the JSON data before building the class:
a schema change never rewrites history.

>>> from dataclasses import dataclass
>>> codec = Codec()
>>> @codec.register("UserRenamed", version=2)
... @dataclass(frozen=True)
... class UserRenamed:
...     user_id: str
...     full_name: str
>>> @codec.upcaster("UserRenamed", from_version=1)
... def _split_to_full(data):
...     return {"user_id": data["user_id"], "full_name": f"{data['first']} {data['last']}"}
>>> codec.encode(UserRenamed("u1", "Ada Lovelace")).data
{'user_id': 'u1', 'full_name': 'Ada Lovelace'}

Dataclasses were chosen over msgspec Structs: they need no dependency, and
building one from decoded JSON costs about a microsecond, small next to the
JSON decoding the store already does.

pydantic models (``pydantic.BaseModel`` subclasses, pydantic v2: the optional
extra ``streamsrc[pydantic]``) are registered the same way, as events and as
entity states: they are dumped with ``model_dump(mode="json")`` and rebuilt with
``model_validate``, after the same upcasters. This module never imports pydantic
itself: a class is a pydantic model only if pydantic is already imported (by the
code that defined it), so a program without pydantic neither pays for it nor
needs it installed. A stored event that does not validate is an
:class:`~streamsrc.errors.UndecodableEvent` (a ``CorruptEvent``) naming the field
(``data.email``); encoding a model holding a value of the wrong type is an
``InvalidEvent`` naming it too.

>>> from pydantic import BaseModel
>>> @codec.register("EmailChanged")
... class EmailChanged(BaseModel):
...     user_id: str
...     email: str
>>> codec.decode(codec.encode(EmailChanged(user_id="u1", email="ada@example.com")))
EmailChanged(user_id='u1', email='ada@example.com')
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import sys
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

from streamsrc.errors import InvalidEvent, UndecodableEvent, UnknownEventType
from streamsrc.events import EventData, RecordedEvent
from streamsrc.stream import Stream

__all__ = ["Codec", "conforms", "from_json_value", "is_pydantic_model", "to_json_value"]

C = TypeVar("C")
E = TypeVar("E", RecordedEvent, EventData)

VERSION_KEY = "schema_version"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: type[Any]
    version: int
    model: bool = False  # a pydantic model (else a dataclass)


def is_pydantic_model(cls: object) -> bool:
    """Whether ``cls`` is a pydantic (v2) model class; never imports pydantic to find out.

    If pydantic is not imported, no class can be one of its models.

    >>> from dataclasses import dataclass
    >>> from pydantic import BaseModel
    >>> class Model(BaseModel):
    ...     n: int
    >>> is_pydantic_model(Model), is_pydantic_model(Model(n=1)), is_pydantic_model(dict)
    (True, False, False)
    """
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


def _model_dump(value: Any) -> Any:
    """A pydantic model instance as JSON; ``InvalidEvent`` naming the field if one holds a wrong value."""
    try:
        return value.model_dump(mode="json", warnings="error")
    except Exception as exc:  # pydantic_core.PydanticSerializationError: what it says names the field
        where = _invalid_field(value)
        raise InvalidEvent(f"cannot encode {type(value).__name__}{where}: {exc}") from None


def _invalid_field(value: Any) -> str:
    """`` (field 'x')`` for the first field of a model instance that does not validate, else ``''``."""
    try:
        type(value).model_validate(dict(value))
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if errors is not None and errors():
            return f" (field {_loc(errors()[0]['loc'])!r})"
    return ""


def _loc(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def _model_validate(cls: Any, value: Any) -> Any:
    return cls.model_validate(value)


class Codec:
    """Event type names <-> dataclasses, with versioned upcasting (see the module docs).

    ``on_unknown`` decides what :meth:`decode_all` does with an event type
    that has no class: ``"raise"`` (``UnknownEventType``, the default) or
    ``"skip"`` (drop it).

    >>> from dataclasses import dataclass
    >>> codec = Codec()
    >>> @codec.register()
    ... @dataclass(frozen=True)
    ... class Deposited:
    ...     amount: int
    >>> data = codec.encode(Deposited(5))
    >>> data.type, data.data, codec.decode(data)
    ('Deposited', {'amount': 5}, Deposited(amount=5))
    """

    def __init__(self, on_unknown: Literal["raise", "skip"] = "raise") -> None:
        if on_unknown not in ("raise", "skip"):
            raise ValueError("on_unknown must be 'raise' or 'skip'")
        self.on_unknown = on_unknown
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type[Any], str] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, name: str | None = None, version: int = 1) -> Callable[[type[C]], type[C]]:
        """Class decorator: store instances of the class as event type ``name`` (default: class name)."""

        def add(cls: type[C]) -> type[C]:
            model = is_pydantic_model(cls)
            if not model and not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} is not a dataclass or a pydantic model")
            if version < 1:
                raise ValueError("versions start at 1")
            event_type = name or cls.__name__
            if event_type in self._by_name:
                raise ValueError(f"event type {event_type!r} is already registered")
            self._by_name[event_type] = _Entry(cls, version, model)
            self._by_class[cls] = event_type
            return cls

        return add

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: a pure function upgrading ``name``'s JSON data from ``from_version`` to the next."""

        def add(fn: Upcaster) -> Upcaster:
            key = (name, from_version)
            if key in self._upcasters:
                raise ValueError(f"an upcaster for {name!r} v{from_version} is already registered")
            self._upcasters[key] = fn
            return fn

        return add

    def type_of(self, event: object) -> str:
        """The event type name ``event`` is stored under."""
        try:
            return self._by_class[type(event)]
        except KeyError:
            raise InvalidEvent(f"{type(event).__name__} is not a registered event class") from None

    def encode(
        self, event: object, metadata: dict[str, Any] | None = None, id: uuid.UUID | None = None
    ) -> EventData:
        """The ``EventData`` for an instance of a registered dataclass or pydantic model.

        >>> from dataclasses import dataclass
        >>> codec = Codec()
        >>> @codec.register()
        ... @dataclass
        ... class Deposited:
        ...     amount: Decimal
        >>> e = codec.encode(Deposited(Decimal("9.50")))
        >>> e.type, e.data, e.metadata
        ('Deposited', {'amount': '9.50'}, None)
        """
        event_type = self.type_of(event)
        entry = self._by_name[event_type]
        version = entry.version
        # Version 1 is what a missing key means: most events then carry no metadata at all,
        # which saves a JSON decode per event on every read.
        meta = dict(metadata or {})
        if version > 1:
            meta[VERSION_KEY] = version
        data = _model_dump(event) if entry.model else to_json_value(event)
        if id is None:
            return EventData(event_type, data, meta or None)
        return EventData(event_type, data, meta or None, id)

    def decode(self, event: RecordedEvent | EventData) -> Any:
        """The dataclass (or model) instance for a stored event, upcast to the current version.

        Raises ``UnknownEventType`` for a type with no registered class,
        ``InvalidEvent`` for a schema version it cannot upcast, and
        ``UndecodableEvent`` (a ``CorruptEvent`` and an ``InvalidEvent``) naming the
        field when the data does not fit the class.
        """
        entry = self._by_name.get(event.type)
        if entry is None:
            raise UnknownEventType(event.type)
        data = event.data
        version = (event.metadata or {}).get(VERSION_KEY, 1)
        if not isinstance(version, int) or version > entry.version:
            raise InvalidEvent(
                f"{event.type} has schema version {version!r}; this codec knows up to {entry.version}"
            )
        while version < entry.version:
            step = self._upcasters.get((event.type, version))
            if step is None:
                raise InvalidEvent(f"no upcaster for {event.type} from version {version}")
            data = step(data)
            version += 1
        try:
            if entry.model:
                return entry.cls.model_validate(data)
            return from_json_value(entry.cls, data)
        except (TypeError, ValueError, KeyError) as exc:
            raise _undecodable(event, exc) from exc

    def knows(self, event_type: str) -> bool:
        """Whether ``event_type`` has a registered class."""
        return event_type in self._by_name

    def decode_all(self, events: Stream[E]) -> Stream[Any]:
        """A pipe: decode every event of a stream, applying the ``on_unknown`` policy.

        >>> import anyio
        >>> from dataclasses import dataclass
        >>> codec = Codec(on_unknown="skip")
        >>> @codec.register()
        ... @dataclass
        ... class Pinged:
        ...     n: int
        >>> raw = Stream.emits([EventData("Pinged", {"n": 1}), EventData("Other", {})])
        >>> anyio.run((raw | codec.decode_all).to_list)
        [Pinged(n=1)]
        """
        if self.on_unknown == "skip":
            events = events.filter(lambda e: e.type in self._by_name)
        return events.map(self.decode)


def _undecodable(event: RecordedEvent | EventData, exc: Exception) -> UndecodableEvent:
    """The error for ``event``'s data not fitting its class: where it is stored, which field, why."""
    where: list[Any] = [getattr(event, name, None) for name in ("stream", "seq", "position")]
    errors = getattr(exc, "errors", None)  # a pydantic ValidationError: each error has its field
    if callable(errors) and errors():
        first = errors()[0]
        field = _loc(("data", *first["loc"]))
        more = f" (and {len(errors()) - 1} more)" if len(errors()) > 1 else ""
        problem = f"{event.type}: {first['msg']}{more}"
    else:
        field, problem = "data", f"{event.type}: {type(exc).__name__}: {exc}"
    return UndecodableEvent(where[0], where[1], where[2], field, problem)


@functools.cache
def _shape(cls: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved field types and the names ``__init__`` takes."""
    fields = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    return typing.get_type_hints(cls), fields


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON (the inverse of :func:`from_json_value`).

    >>> to_json_value({"when": date(2026, 1, 2), "ids": (1, 2), "tags": {"b", "a"}})
    {'when': '2026-01-02', 'ids': [1, 2], 'tags': ['a', 'b']}

    Anything else is left as it is, for the store to check (``InvalidEvent`` if it is not JSON).
    A pydantic model is dumped as JSON (``model_dump(mode="json")``).
    """
    if type(value) in _SCALARS:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):  # a JSON list, sorted if it can be: equal sets encode alike
        items = [to_json_value(v) for v in value]
        with contextlib.suppress(TypeError):
            items.sort()
        return items
    if is_pydantic_model(type(value)):
        return _model_dump(value)
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def from_json_value(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` (a dataclass, ``list[X]``, ``X | None``, ...) from JSON.

    >>> from_json_value(tuple[date, ...], ["2026-01-02"])
    (datetime.date(2026, 1, 2),)
    """
    decode = _decoder(tp)
    return value if decode is None else decode(value)


def conforms(tp: Any, value: Any) -> bool:
    """Whether ``value`` (decoded, e.g. by :func:`from_json_value`) has the type ``tp`` says, deeply.

    Decoding trusts JSON's scalars (a string where an ``int`` field is declared
    passes through); this checks them, for values read rarely and trusted
    long, such as snapshots. Types it cannot check (``Literal``, type
    variables, ...) are taken as matching.

    >>> @dataclasses.dataclass
    ... class Tally:
    ...     total: int
    ...     names: list[str]
    >>> conforms(Tally, Tally(3, ["a"])), conforms(Tally, Tally("3", ["a"])), conforms(Tally, Tally(3, [1]))
    (True, False, False)
    """
    if tp in (Any, object):
        return True
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(a, value) for a in args)
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and (not args or all(conforms(args[0], v) for v in value))
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(args[0], v) for v in value)
        return not args or (len(args) == len(value) and all(map(conforms, args, value)))
    if origin is dict:
        return isinstance(value, dict) and (
            len(args) != 2 or all(conforms(args[0], k) and conforms(args[1], v) for k, v in value.items())
        )
    if not isinstance(tp, type):
        return True
    if not isinstance(value, tp):
        return False
    if dataclasses.is_dataclass(tp):
        hints, fields = _shape(tp)
        return all(conforms(hints.get(name, Any), getattr(value, name)) for name in fields)
    if is_pydantic_model(tp):
        model_fields: dict[str, Any] = getattr(tp, "model_fields", {})
        return all(conforms(f.annotation, getattr(value, n, None)) for n, f in model_fields.items())
    return True


Decoder = Callable[[Any], Any]
_PASS_THROUGH: frozenset[Any] = frozenset({int, str, float, bool, type(None), Any, object})
_BUILDING: set[Any] = set()


@functools.cache
def _decoder(tp: Any) -> Decoder | None:
    """A function from JSON to ``tp``, built once per type; ``None`` when JSON is already it.

    Decoding runs once per event read, so the type is inspected here, once,
    and not on every call.
    """
    if tp in _PASS_THROUGH:
        return None
    if tp in _BUILDING:  # a recursive type: look the finished decoder up when called
        return lambda v: from_json_value(tp, v)
    _BUILDING.add(tp)
    try:
        return _build_decoder(tp)
    finally:
        _BUILDING.discard(tp)


def _build_decoder(tp: Any) -> Decoder | None:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        optional = _decoder(inner[0]) if len(inner) == 1 else None
        if optional is None:
            return None
        return lambda v: None if v is None else optional(v)
    if origin in (list, tuple, set, frozenset):
        item = _decoder(args[0]) if args else None
        if origin is list:
            return None if item is None else (lambda v: [item(x) for x in v])
        collection = origin
        return collection if item is None else (lambda v: collection(item(x) for x in v))
    if origin is dict:
        value = _decoder(args[1]) if len(args) == 2 else None
        return None if value is None else (lambda v: {k: value(x) for k, x in v.items()})
    if not isinstance(tp, type):
        return None
    if dataclasses.is_dataclass(tp):
        return _dataclass_decoder(tp)
    if is_pydantic_model(tp):
        return functools.partial(_model_validate, tp)
    if issubclass(tp, enum.Enum) or tp in (uuid.UUID, Decimal):
        return tp
    if tp is datetime:
        return datetime.fromisoformat
    if tp is date:
        return date.fromisoformat
    return None


def _dataclass_decoder(cls: Any) -> Decoder:
    hints, fields = _shape(cls)
    convert = {name: d for name in fields if (d := _decoder(hints.get(name, Any))) is not None}

    def build(value: Any) -> Any:
        if type(value) is not dict:
            raise TypeError(f"{cls.__name__} is stored as a JSON object, not {type(value).__name__}")
        unknown = value.keys() - fields
        if unknown:
            raise ValueError(f"unexpected fields {sorted(unknown)}")
        if convert:
            value = {k: (convert[k](x) if k in convert else x) for k, x in value.items()}
        return cls(**value)

    return build
