"""Payload transforms: compress and encrypt event data (and snapshots) around any store.

A :class:`Transform` turns bytes into bytes and back: :class:`Zlib`
(compression, the standard library) and :class:`AesGcm` (authenticated
encryption, AES-256-GCM from ``cryptography``: the optional extra
``streamsrc[crypto]``). A :class:`Pipeline` applies a list of them in order to
the JSON text of an event's ``data``, and :class:`TransformingStore` puts a
pipeline around any store: appends are transformed, reads give the events back
as they were appended, and the store underneath never knows.

How a transformed event is stored (plain JSON, so every store takes it):

* ``data`` is ``{"$transformed": "<base64 of the bytes after the last transform>"}``;
* ``metadata`` gets the reserved key ``"$transforms"``: the transforms the
  event went through, in the order they were applied, each a list
  ``[name, *arguments]`` (``[["zlib"], ["aes-gcm", "2026-01", "1f0c9ab2"]]``:
  the key id and a check value of the key, so a wrong key is told from a
  damaged ciphertext). The event's type, id and other metadata stay readable.

It is recorded per event, so changing the pipeline never strands old events:
a reader decodes whatever each event says, given the transforms by name
(``zlib`` is always known; keep old keys in the keyring; pass transforms you
no longer write with as ``also_reads``). A transform may also skip an event
(``Zlib`` skips payloads too small to gain), which is then not listed.

Encryption binds each ciphertext to its event id (the associated data), so a
ciphertext moved onto another event does not decrypt (``CorruptEvent``).
Copies and exports that keep the event ids (``migrate.copy``, ``streamsrc
export``/``import`` of the *inner* store) keep the payloads as stored, byte for
byte, and they stay readable with the same keys.

>>> import anyio
>>> from streamsrc.events import EventData
>>> from streamsrc.store.memory import MemoryStore
>>> async def main() -> None:
...     keys = AesGcm({"2026-01": bytes(32)}, current="2026-01")
...     inner = MemoryStore()
...     async with TransformingStore(inner, [Zlib(min_size=0), keys]) as store:
...         registered = EventData("Registered", {"email": "ada@example.com", "bio": "la" * 99})
...         await store.append("user-1", [registered])
...         print((await store.read("user-1").to_list())[0].data["email"])
...         stored = (await inner.read("user-1").to_list())[0]
...         print(list(stored.data), [step[:2] for step in stored.metadata["$transforms"]])
>>> anyio.run(main)
ada@example.com
['$transformed'] [['zlib'], ['aes-gcm', '2026-01']]

zstd is left out on purpose: the standard library has it only from Python 3.14
(``compression.zstd``), and a :class:`Transform` is a dozen lines, so a user who
wants it adds it with the package they trust without streamsrc depending on one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import uuid
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result

from streamsrc.errors import CorruptEvent, InvalidEvent, KeyUnavailable, StoreError, UnknownTransform
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json
from streamsrc.store import ANY, AppendResult, Expected, Snapshot, Store
from streamsrc.stream import Stream
from streamsrc.tenancy import ForwardingStore

__all__ = [
    "TRANSFORMED",
    "TRANSFORMS",
    "AesGcm",
    "Pipeline",
    "Transform",
    "TransformingStore",
    "Zlib",
    "transforms_of",
]

TRANSFORMED = "$transformed"
"""The one key of a transformed event's stored ``data``: the payload, base64."""

TRANSFORMS = "$transforms"
"""The reserved metadata key listing the transforms an event went through, in order."""

_MARK = '"$transforms"'  # how the key looks in stored metadata text: found without decoding it
_FRAME = '{"$transformed":"'  # how stored data text starts: the base64 is read without a JSON decode


@runtime_checkable
class Transform(Protocol):
    """One reversible step on payload bytes, named in the events it was applied to.

    ``encode`` returns the new bytes and the arguments to record with the name
    (a key id, say), or ``None`` to skip this payload. ``decode`` undoes it,
    given the recorded arguments; it raises ``ValueError`` for bytes that do not
    decode (they become ``CorruptEvent``) and ``KeyUnavailable`` for a key it
    lacks. ``context`` is what the payload is bound to (the event id's bytes).

    >>> isinstance(Zlib(), Transform)
    True
    """

    name: str

    def encode(self, payload: bytes, context: bytes) -> tuple[bytes, list[str]] | None:
        """The transformed bytes and the arguments to record, or ``None`` to skip."""
        ...

    def decode(self, payload: bytes, args: Sequence[str], context: bytes) -> bytes:
        """The bytes before ``encode``."""
        ...


class Zlib:
    """Compression with zlib (standard library); payloads under ``min_size`` bytes, or that do not
    get smaller, are left as they are (and the event does not list ``zlib``).

    >>> z = Zlib(min_size=0)
    >>> packed, args = z.encode(b"abc" * 100, b"")
    >>> len(packed) < 300, args, z.decode(packed, args, b"") == b"abc" * 100
    (True, [], True)
    >>> Zlib().encode(b"tiny", b"") is None
    True
    """

    name = "zlib"

    def __init__(self, level: int = 6, min_size: int = 128) -> None:
        if not -1 <= level <= 9:
            raise ValueError("zlib levels are -1 to 9")
        self.level = level
        self.min_size = min_size

    def encode(self, payload: bytes, context: bytes) -> tuple[bytes, list[str]] | None:
        if len(payload) < self.min_size:
            return None
        packed = zlib.compress(payload, self.level)
        return (packed, []) if len(packed) < len(payload) else None

    def decode(self, payload: bytes, args: Sequence[str], context: bytes) -> bytes:
        try:
            return zlib.decompress(payload)
        except zlib.error as exc:
            raise ValueError(f"zlib: {exc}") from None

    def __repr__(self) -> str:
        return f"Zlib(level={self.level}, min_size={self.min_size})"


def _key_check(key: bytes) -> str:
    """A short, non-secret fingerprint of ``key``: tells a wrong key from a damaged ciphertext."""
    return hmac.new(key, b"streamsrc key check", hashlib.sha256).hexdigest()[:8]


class AesGcm:
    """Authenticated encryption with AES-GCM (``cryptography``), a key id per event: key rotation.

    ``keys`` maps key ids to keys (16, 24 or 32 bytes: AES-128/192/256);
    ``current`` is the id new payloads are encrypted with. Rotate by adding a
    key and making it current: events keep the id they were written with, so
    old keys must stay in ``keys`` for as long as their events are read. Each
    payload gets a fresh random 96-bit nonce (stored before the ciphertext)
    and is bound to ``context`` (the event id) as associated data. Keep a key
    to well under 2**32 encryptions (NIST's bound for random nonces): rotate.

    Decoding an event whose key id is not in ``keys`` raises ``KeyUnavailable``
    (``reason="missing"``); with a different key under that id, ``reason="wrong"``;
    a damaged ciphertext or tag, ``ValueError`` (``CorruptEvent`` from a store).

    >>> old, new = AesGcm({"k1": bytes(32)}, "k1"), AesGcm({"k1": bytes(32), "k2": b"2" * 32}, "k2")
    >>> sealed, args = old.encode(b"secret", b"event-id")
    >>> args[0], new.decode(sealed, args, b"event-id")
    ('k1', b'secret')
    >>> AesGcm({"k2": b"2" * 32}, "k2").decode(sealed, args, b"event-id")
    Traceback (most recent call last):
    ...
    streamsrc.errors.KeyUnavailable: encryption key 'k1' is missing from the keyring
    """

    name = "aes-gcm"

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - the optional extra is missing
            raise ImportError(
                "AesGcm needs the cryptography package: pip install 'streamsrc[crypto]'"
            ) from exc
        if current not in keys:
            raise ValueError(f"the current key {current!r} is not among the keys")
        self._ciphers: dict[str, tuple[Any, str]] = {}
        for key_id, key in keys.items():
            if not isinstance(key, bytes) or len(key) not in (16, 24, 32):
                raise ValueError(f"key {key_id!r} must be 16, 24 or 32 bytes")
            self._ciphers[key_id] = (AESGCM(key), _key_check(key))
        self.current = current

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys this can decrypt with."""
        return list(self._ciphers)

    def encode(self, payload: bytes, context: bytes) -> tuple[bytes, list[str]] | None:
        cipher, check = self._ciphers[self.current]
        nonce = os.urandom(12)
        return nonce + cipher.encrypt(nonce, payload, context), [self.current, check]

    def decode(self, payload: bytes, args: Sequence[str], context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not args or not isinstance(args[0], str):
            raise ValueError("aes-gcm: no key id recorded")
        key_id = args[0]
        found = self._ciphers.get(key_id)
        if found is None:
            raise KeyUnavailable(key_id, "missing")
        cipher, check = found
        if len(args) > 1 and args[1] != check:
            raise KeyUnavailable(key_id, "wrong")
        if len(payload) < 12 + 16:
            raise ValueError("aes-gcm: shorter than a nonce and a tag")
        try:
            plain: bytes = cipher.decrypt(payload[:12], payload[12:], context)
        except InvalidTag:
            raise ValueError(f"aes-gcm: the ciphertext (key {key_id!r}) does not authenticate") from None
        return plain

    def __repr__(self) -> str:  # never the keys
        return f"AesGcm(key_ids={self.key_ids!r}, current={self.current!r})"


class Pipeline:
    """Transforms applied in order on writes; on reads, each event's own list, undone last first.

    ``also_reads``: transforms known for reading only (one no longer written
    with). ``Zlib`` is always known for reading. Compress before encrypting
    (ciphertext does not compress).

    >>> pipeline = Pipeline([Zlib(min_size=0)])
    >>> data, metadata = pipeline.encode({"text": "hello " * 50}, {"by": "ada"}, b"")
    >>> metadata
    {'by': 'ada', '$transforms': [['zlib']]}
    >>> pipeline.decode(data, metadata, b"")
    ({'text': 'hello hello ... '}, {'by': 'ada'})
    """

    def __init__(self, transforms: Sequence[Transform], also_reads: Iterable[Transform] = ()) -> None:
        self.transforms = list(transforms)
        self.readers: dict[str, Transform] = {Zlib.name: Zlib()}
        for t in [*also_reads, *self.transforms]:
            self.readers[t.name] = t

    def encode(
        self, data: Any, metadata: dict[str, Any] | None, context: bytes
    ) -> tuple[Any, dict[str, Any] | None]:
        """``data`` and ``metadata`` as stored: transformed, and the transforms listed.

        Raises ``InvalidEvent`` if ``data`` is not JSON or ``metadata`` already has the reserved key.
        """
        if metadata is not None and TRANSFORMS in metadata:
            raise InvalidEvent(f"the metadata key {TRANSFORMS!r} is reserved for payload transforms")
        payload = encode_json(data).encode("utf-8")
        applied: list[list[str]] = []
        for t in self.transforms:
            done = t.encode(payload, context)
            if done is not None:
                payload, args = done
                applied.append([t.name, *args])
        if not applied:
            return data, metadata
        stored = {TRANSFORMED: base64.b64encode(payload).decode("ascii")}
        return stored, {**(metadata or {}), TRANSFORMS: applied}

    def decode(
        self, data: Any, metadata: dict[str, Any] | None, context: bytes, where: tuple[Any, ...] = (None,) * 3
    ) -> tuple[Any, dict[str, Any] | None]:
        """``data`` and ``metadata`` as they were before :meth:`encode` (both unchanged if not transformed).

        ``where`` (stream, seq, position) goes into the errors: ``CorruptEvent`` for a payload
        that does not decode, ``UnknownTransform``, ``KeyUnavailable``.
        """
        if metadata is None or TRANSFORMS not in metadata:
            return data, metadata
        rest = {k: v for k, v in metadata.items() if k != TRANSFORMS} or None
        return self.undo(data, metadata[TRANSFORMS], context, where), rest

    def undo(self, data: Any, applied: Any, context: bytes, where: tuple[Any, ...] = (None,) * 3) -> Any:
        """The data before the transforms ``applied`` (a ``$transforms`` list); errors as :meth:`decode`."""
        if type(applied) is not list or not applied:
            raise _corrupt(where, "metadata", f"{TRANSFORMS} is not a list of [name, *args] lists")
        readers = self.readers
        for step in applied:
            if type(step) is not list or not step or type(step[0]) is not str:
                raise _corrupt(where, "metadata", f"{TRANSFORMS} is not a list of [name, *args] lists")
            if step[0] not in readers:
                raise UnknownTransform(where[0], where[1], where[2], step[0])
        if type(data) is not dict or type(data.get(TRANSFORMED)) is not str:
            raise _corrupt(where, "data", f"a transformed payload is {{{TRANSFORMED!r}: base64}}")
        try:
            payload = binascii.a2b_base64(data[TRANSFORMED], strict_mode=True)
            for step in reversed(applied):
                payload = readers[step[0]].decode(payload, step[1:], context)
            return decode_json(payload)
        except StoreError:
            raise
        except (ValueError, binascii.Error, TypeError, RecursionError) as exc:
            raise _corrupt(where, "data", f"{type(exc).__name__}: {exc}") from None

    def decode_payload(self, data: Any, metadata: dict[str, Any] | None, context: bytes = b"") -> Any:
        """Just the decoded ``data`` (see :meth:`decode`)."""
        return self.decode(data, metadata, context)[0]


def _corrupt(where: tuple[Any, ...], field: str, problem: str) -> CorruptEvent:
    return CorruptEvent(where[0], where[1], where[2], field, problem)


def transforms_of(event: RecordedEvent | EventData) -> list[list[str]]:
    """The transforms a stored event went through (read from the store *under* a transforming one).

    >>> transforms_of(EventData("E", {"$transformed": "..."}, {"$transforms": [["zlib"]]}))
    [['zlib']]
    >>> transforms_of(EventData("E", {}))
    []
    """
    applied = (event.metadata or {}).get(TRANSFORMS, [])
    return list(applied) if isinstance(applied, list) else []


class _Payload:
    """A transformed event's payload, decoded when its ``data`` is first read."""

    __slots__ = ("context", "data", "metadata", "pipeline")

    def __init__(self, pipeline: Pipeline, data: Any, metadata: dict[str, Any], context: bytes) -> None:
        self.pipeline, self.data, self.metadata, self.context = pipeline, data, metadata, context

    def decode(self, where: tuple[Any, ...]) -> Any:
        data = self.data
        if type(data) is str:  # the stored JSON text: most often just the base64 in a fixed frame
            inner = data[len(_FRAME) : -2]
            if data.startswith(_FRAME) and data.endswith('"}') and '"' not in inner and "\\" not in inner:
                data = {TRANSFORMED: inner}
            else:
                try:
                    data = decode_json(data)
                except ValueError as exc:
                    raise _corrupt(where, "data", f"{type(exc).__name__}: {exc}") from None
        return self.pipeline.undo(data, self.metadata[TRANSFORMS], self.context, where)

    def __repr__(self) -> str:
        return f"<transformed: {self.metadata.get(TRANSFORMS)!r}>"


class _Thunk(Protocol):
    def decode(self, where: tuple[Any, ...]) -> Any: ...


class _LazyData:
    """The ``data`` of a :class:`_Decoded` event: undone on first read, then cached."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        payload: _Thunk = tuple.__getitem__(instance, 4)
        where = tuple(tuple.__getitem__(instance, i) for i in range(3))
        value = payload.decode(where)
        instance.__dict__["data"] = value
        return value


class _Decoded(RecordedEvent):
    """An event read through a :class:`TransformingStore`: ``data`` is decoded on first read."""

    if not TYPE_CHECKING:
        data = _LazyData()

    def __repr__(self) -> str:
        try:
            return super().__repr__()
        except StoreError as exc:  # a repr never raises: show what is stored and why it does not decode
            return f"RecordedEvent(stream={self.stream!r}, seq={self.seq}, type={self.type!r}, <{exc}>)"


def _decoded(event: RecordedEvent, payload: _Thunk, metadata: dict[str, Any] | None) -> RecordedEvent:
    """``event`` with ``metadata``, and data that ``payload`` decodes when first read."""
    item = tuple.__getitem__  # id and time as stored: still decoded only when read
    fields = (*(item(event, i) for i in range(4)), payload, None, item(event, 6), item(event, 7))
    decoded = tuple.__new__(_Decoded, fields)
    decoded.__dict__["metadata"] = metadata
    return decoded


def _context(event_id: uuid.UUID) -> bytes:
    return event_id.bytes


def _stored_context(event: RecordedEvent) -> bytes:
    """The event id's 16 bytes, from the stored id when it is those bytes (no UUID made)."""
    raw = tuple.__getitem__(event, 6)
    return raw if type(raw) is bytes and len(raw) == 16 else _context(event.id)


class TransformingStore(ForwardingStore):
    """A :class:`~streamsrc.store.Store` that transforms payloads on their way into ``inner`` and back.

    Appends and imports of plain events are encoded (see the module docs);
    ``read``, ``read_all`` and ``latest`` give events with their ``data`` as
    appended (decoded when first read, so code that looks only at types and
    positions pays nothing) and their metadata without ``$transforms``.
    Snapshots are transformed the same way (bound to their key and seq) unless
    ``snapshots=False``; checkpoints pass through. Events already in stored
    form (``$transforms`` in their metadata: a copy of another store's raw
    events) are imported as they are. Closing this store closes ``inner``.

    A read of an event whose key is missing raises ``KeyUnavailable`` when its
    ``data`` is read (in a projection: that event fails, by its policy); a
    damaged payload, ``CorruptEvent``.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store import Store
    >>> from streamsrc.store.memory import MemoryStore
    >>> store = TransformingStore(MemoryStore(), [Zlib(min_size=0)])
    >>> isinstance(store, Store)
    True
    >>> async def main() -> None:
    ...     await store.append("doc-1", [EventData("Written", {"text": "la " * 200}, {"by": "ada"})])
    ...     event = (await store.latest("doc-1")).unwrap()
    ...     print(len(event.data["text"]), event.metadata)
    >>> anyio.run(main)
    600 {'by': 'ada'}
    """

    def __init__(
        self,
        inner: Store,
        transforms: Sequence[Transform],
        *,
        also_reads: Iterable[Transform] = (),
        snapshots: bool = True,
    ) -> None:
        super().__init__(inner)
        self.pipeline = Pipeline(transforms, also_reads)
        self.transform_snapshots = snapshots

    def __repr__(self) -> str:
        return f"TransformingStore({self.inner!r}, {self.pipeline.transforms!r})"

    # -- encoding and decoding

    def encode_event(self, event: EventData) -> EventData:
        """``event`` as it is stored: its data transformed, the transforms in its metadata."""
        data, metadata = self.pipeline.encode(event.data, event.metadata, _context(event.id))
        if metadata is event.metadata:
            return event
        return EventData(event.type, data, metadata, event.id)

    def decode_event(self, event: RecordedEvent) -> RecordedEvent:
        """A stored event as it was appended (the same object if it was not transformed)."""
        raw = tuple.__getitem__(event, 5)
        if type(raw) is str and _MARK not in raw:
            return event  # the common case: decided without decoding any JSON
        metadata = event.metadata
        if metadata is None or TRANSFORMS not in metadata:
            return event
        rest = {k: v for k, v in metadata.items() if k != TRANSFORMS} or None
        stored = tuple.__getitem__(event, 4)
        data = stored if type(stored) is str else event.data
        return _decoded(event, _Payload(self.pipeline, data, metadata, _stored_context(event)), rest)

    def decode_payload(self, data: Any, metadata: dict[str, Any] | None, context: bytes = b"") -> Any:
        """The data of a stored event before its transforms (``context``: the event id's bytes)."""
        return self.pipeline.decode_payload(data, metadata, context)

    def _decode_page(self, page: list[RecordedEvent]) -> list[RecordedEvent]:
        decode = self.decode_event
        return [decode(e) for e in page]

    # -- the event store

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append ``events``, transformed (see :meth:`~streamsrc.store.EventStore.append`)."""
        try:
            encoded = [self.encode_event(e) if isinstance(e, EventData) else e for e in events]
        except InvalidEvent as exc:
            return Failure(exc)
        return await self.inner.append(stream, encoded, expected)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Import recorded events: those in stored form as they are, the others transformed."""
        out: list[RecordedEvent] = []
        try:
            for e in events:
                if not isinstance(e, RecordedEvent) or TRANSFORMS in (e.metadata or {}):
                    out.append(e)
                    continue
                data, metadata = self.pipeline.encode(e.data, e.metadata, _context(e.id))
                out.append(RecordedEvent(e.stream, e.seq, e.position, e.type, data, metadata, e.id, e.time))
        except InvalidEvent as exc:
            return Failure(exc)
        return await self.inner.import_events(stream, out)

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """The events of ``stream``, decoded (see :meth:`~streamsrc.store.EventStore.read`)."""
        return self.inner.read(stream, after, limit, backwards).map_chunks(self._decode_page)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """Every event in global order, decoded (see :meth:`~streamsrc.store.EventStore.read_all`)."""
        raw = self.inner.read_all(after, limit, types=types, stream_prefix=stream_prefix)
        return raw.map_chunks(self._decode_page)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """The last event of ``stream``, decoded."""
        return (await self.inner.latest(stream)).map(self.decode_event)

    # -- snapshots and checkpoints

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save a snapshot, transformed as a payload bound to ``key`` and ``seq``."""
        if self.transform_snapshots:
            data, metadata = self.pipeline.encode(state, None, _snapshot_context(key, seq))
            if metadata is not None:
                state = {**data, TRANSFORMS: metadata[TRANSFORMS]}
        await self.inner.save_snapshot(key, seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The latest snapshot, decoded; one that does not decode (a missing key, damage) is ``Nothing``:
        a snapshot is a shortcut, and the caller replays the events instead."""
        found = await self.inner.load_snapshot(key, schema_version, at_seq, at_time)
        if not isinstance(found, Some):
            return found
        snapshot: Snapshot = found.unwrap()
        state = snapshot.state
        if type(state) is not dict or TRANSFORMS not in state:
            return found
        stored = {k: v for k, v in state.items() if k != TRANSFORMS}
        try:
            plain = self.pipeline.decode_payload(
                stored, {TRANSFORMS: state[TRANSFORMS]}, _snapshot_context(key, snapshot.seq)
            )
        except StoreError:
            return Nothing
        return Some(Snapshot(snapshot.key, snapshot.seq, plain, snapshot.schema_version, snapshot.time))


def _snapshot_context(key: str, seq: int) -> bytes:
    return f"snapshot\x00{key}\x00{seq}".encode()
