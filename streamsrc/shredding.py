"""Crypto-shredding: forget a person without rewriting the log.

Each *subject* (a person, a customer: an opaque id such as a user id, never
their name or email) has an encryption key of its own, kept in a
:class:`KeyStore`. A :class:`ShreddingStore` around any store encrypts the
*personal fields* of the events that name a subject with that subject's key
(AES-256-GCM, ``cryptography``: the extra ``streamsrc[crypto]``), and leaves
the rest of each event readable. ``forget(subject)`` deletes the subject's
keys: from then on every read of its events (``read``, ``read_all``,
``latest``; a projection rebuilt from zero; a replayed entity) gets them with
the personal fields replaced by a marker (:data:`FORGOTTEN` unless you choose
another) and ``"$forgotten": true`` in their metadata, never an exception.
The forgetting is itself an event, ``SubjectForgotten`` in the stream
``$forgotten-<subject>``: the audit trail of the erasure.

How an event with personal fields is stored:

* ``data``: the event's own fields, each personal one set to ``null``, and
  ``"$personal"``: base64 of a nonce and the AES-GCM ciphertext of the
  personal fields as a JSON object, bound to the event id;
* ``metadata``: ``"$subject"`` (whose data it is) and ``"$personal"``:
  ``{"key": <key id>, "fields": [<names>]}``.

An event names its subject in its metadata (``"$subject"``), or through the
``subject`` function given to the store (of the stream and the event). Which
fields are personal is said per event type (``personal``). Snapshots of a
subject's state (``snapshot_subject``: snapshot key -> subject) are encrypted
whole with its key; once it is forgotten they load as nothing, and the state
is replayed from the events, markers and all.

The default key store, :class:`StoreKeyStore`, keeps the keys in the same
store (see its documentation for what *deleted* means there);
:class:`MemoryKeyStore` keeps them in this process. Any object with the
:class:`KeyStore` methods will do (a KMS, a vault).

>>> import anyio
>>> from streamsrc.events import EventData
>>> from streamsrc.store.memory import MemoryStore
>>> async def main() -> None:
...     store = ShreddingStore(MemoryStore(), personal={"Registered": ["email"]})
...     meta = {"$subject": "u1"}
...     await store.append("user-1", [EventData("Registered", {"user": "u1", "email": "a@x.org"}, meta)])
...     print((await store.latest("user-1")).unwrap().data)
...     await store.forget("u1")
...     event = (await store.latest("user-1")).unwrap()
...     print(event.data, event.metadata)
>>> anyio.run(main)
{'user': 'u1', 'email': 'a@x.org'}
{'user': 'u1', 'email': '[forgotten]'} {'$subject': 'u1', '$forgotten': True}
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result

from streamsrc.errors import CorruptEvent, InvalidEvent, StoreError, WrongExpectedVersion
from streamsrc.events import EventData, RecordedEvent, decode_json, encode_json
from streamsrc.store import ANY, AppendResult, Expected, Snapshot, Store
from streamsrc.stream import Stream
from streamsrc.tenancy import ForwardingStore
from streamsrc.transforms import _decoded

__all__ = [
    "FORGOTTEN",
    "PERSONAL",
    "SUBJECT",
    "KeyStore",
    "MemoryKeyStore",
    "ShreddingStore",
    "StoreKeyStore",
    "SubjectKey",
    "copy_keys",
]

FORGOTTEN = "[forgotten]"
"""The default marker that replaces a forgotten subject's personal fields."""

SUBJECT = "$subject"
"""The metadata key naming an event's subject."""

PERSONAL = "$personal"
"""The reserved key of the encrypted personal fields (in data) and of their key id and names (in metadata)."""

FORGOTTEN_FLAG = "$forgotten"
"""Set (``True``) in the metadata of an event read after its subject was forgotten."""

_MARK = '"$personal"'
_NONCE = 12


def _aesgcm(key: bytes) -> Any:
    """The AES-GCM cipher of ``key`` (the last few made are kept: a page of events shares few keys)."""
    cipher = _CIPHERS.get(key)
    if cipher is not None:
        return cipher
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the optional extra is missing
        raise ImportError("crypto-shredding needs cryptography: pip install 'streamsrc[crypto]'") from exc
    if len(_CIPHERS) >= 1024:
        _CIPHERS.clear()
    cipher = _CIPHERS[key] = AESGCM(key)
    return cipher


_CIPHERS: dict[bytes, Any] = {}


@dataclass(frozen=True)
class SubjectKey:
    """A subject's data key: its id (recorded in every event it encrypts) and its 32 bytes.

    >>> SubjectKey("k-1", bytes(32))  # the key itself is never shown
    SubjectKey(key_id='k-1')
    """

    key_id: str
    key: bytes = field(repr=False)


@runtime_checkable
class KeyStore(Protocol):
    """Where subjects' keys live: made on first use, found by id, deleted to forget a subject.

    >>> isinstance(MemoryKeyStore(), KeyStore)
    True
    """

    async def current(self, subject: str) -> SubjectKey:
        """The key new events of ``subject`` are encrypted with (made now if it has none; a
        forgotten subject gets a new key, which its old events never used).

        :raises StoreError: if the keys cannot be reached.
        """
        ...

    async def find(self, subject: str, key_id: str) -> bytes | None:
        """The key ``key_id`` of ``subject``, or ``None`` if it was deleted (or never existed).

        :raises StoreError: if the keys cannot be reached.
        """
        ...

    async def forget(self, subject: str) -> None:
        """Delete every key of ``subject``.

        :raises StoreError: if the keys cannot be reached (call it again).
        """
        ...


class MemoryKeyStore:
    """Keys in a dict of this process: for tests, and a model of what a key store does.

    >>> import anyio
    >>> async def main() -> None:
    ...     keys = MemoryKeyStore()
    ...     first = await keys.current("u1")
    ...     print(await keys.find("u1", first.key_id) == first.key)
    ...     await keys.forget("u1")
    ...     print(await keys.find("u1", first.key_id), (await keys.current("u1")).key_id != first.key_id)
    >>> anyio.run(main)
    True
    None True
    """

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, bytes]] = {}
        self._current: dict[str, str] = {}

    async def current(self, subject: str) -> SubjectKey:
        key_id = self._current.get(subject)
        if key_id is None:
            key_id = uuid.uuid4().hex
            self._keys.setdefault(subject, {})[key_id] = os.urandom(32)
            self._current[subject] = key_id
        return SubjectKey(key_id, self._keys[subject][key_id])

    async def find(self, subject: str, key_id: str) -> bytes | None:
        return self._keys.get(subject, {}).get(key_id)

    async def forget(self, subject: str) -> None:
        self._keys.pop(subject, None)
        self._current.pop(subject, None)


KEY_CREATED = "SubjectKeyCreated"
KEY_DELETED = "SubjectKeysDeleted"
KEY_SCHEMA = 1  # the snapshot schema version under which StoreKeyStore keeps keys


class StoreKeyStore:
    """The default key store: keys kept in the event store itself, deletable.

    The key bytes of a subject are a snapshot row (key ``$key:<subject>:<key id>``);
    the stream ``$keys-<subject>`` records, as events, which key is current
    (``SubjectKeyCreated``: appended with an expected version, so two processes
    that make a subject's first key at once agree on one) and when the keys
    were deleted (``SubjectKeysDeleted``). No key bytes are ever in an event.
    Forgetting overwrites each key's row with a tombstone.

    What "deleted" means physically, per backend (the row is overwritten in
    place through the store's snapshot upsert):

    * memory: the dict entry is replaced; the old bytes object is freed (Python
      does not zero memory).
    * SQLite: the row is rewritten; the old bytes may stay in free pages of the
      file and in the WAL until the next checkpoint and ``VACUUM`` (or always
      with ``PRAGMA secure_delete=ON``), and in any copy of the file.
    * PostgreSQL: an update writes a new row version; the old one stays until
      ``VACUUM`` reclaims it, and in the WAL and base backups until they age out.
    * DynamoDB: the item is replaced; the old value stays in point-in-time
      recovery backups (up to 35 days) and in the table's stream (24 hours).

    So a backup taken before the forgetting still holds the key: keep backups
    for less time than the erasure deadline, or put the store's snapshots
    under a master key (wrap the store given here in a
    :class:`~streamsrc.transforms.TransformingStore` with
    :class:`~streamsrc.transforms.AesGcm`: each key row is then encrypted, and
    rotating out the master key retires old backups' keys too), or use a key
    store of your own (a KMS).

    Keys found are cached in this process for ``cache_seconds``: another
    process's ``forget`` is seen within that time (a ``forget`` through this
    object, at once).

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     keys = StoreKeyStore(store)
    ...     key = await keys.current("u1")
    ...     print((await StoreKeyStore(store).current("u1")) == key)  # one key per subject, shared
    ...     await keys.forget("u1")
    ...     print(await StoreKeyStore(store).find("u1", key.key_id))
    ...     print([e.type for e in await store.read("$keys-u1").to_list()])
    >>> anyio.run(main)
    True
    None
    ['SubjectKeyCreated', 'SubjectKeysDeleted']
    """

    def __init__(self, store: Store, cache_seconds: float = 60.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._current: dict[str, tuple[float, SubjectKey]] = {}
        self._found: dict[tuple[str, str], tuple[float, bytes | None]] = {}

    def _fresh(self, at: float) -> bool:
        return time.monotonic() - at < self.cache_seconds

    async def current(self, subject: str) -> SubjectKey:
        cached = self._current.get(subject)
        if cached is not None and self._fresh(cached[0]):
            return cached[1]
        stream = f"$keys-{subject}"
        while True:
            last = (await self.store.latest(stream)).value_or(None)
            if last is not None and last.type == KEY_CREATED:
                key_id = str(last.data["key_id"])
                found = await self.find(subject, key_id)
                if found is not None:
                    key = SubjectKey(key_id, found)
                    self._current[subject] = (time.monotonic(), key)
                    return key
            key = SubjectKey(uuid.uuid4().hex, os.urandom(32))
            row = _key_row(subject, key.key_id)
            await self.store.save_snapshot(row, 1, {"key": base64.b64encode(key.key).decode()}, KEY_SCHEMA)
            created = EventData(KEY_CREATED, {"subject": subject, "key_id": key.key_id})
            result = await self.store.append(stream, [created], expected=0 if last is None else last.seq)
            if isinstance(result, Failure):
                await self.store.save_snapshot(row, 1, {"deleted": True}, KEY_SCHEMA)  # not used: gone
                if isinstance(result.failure(), WrongExpectedVersion):
                    continue  # another process made one first: use theirs
                raise result.failure()
            self._current[subject] = (time.monotonic(), key)
            self._found[(subject, key.key_id)] = (time.monotonic(), key.key)
            return key

    async def find(self, subject: str, key_id: str) -> bytes | None:
        cached = self._found.get((subject, key_id))
        if cached is not None and (cached[1] is None or self._fresh(cached[0])):
            return cached[1]  # a deleted key stays deleted: cached for good
        row = await self.store.load_snapshot(_key_row(subject, key_id), KEY_SCHEMA)
        state = row.map(lambda s: s.state).value_or(None)
        key: bytes | None = None
        if isinstance(state, dict) and isinstance(state.get("key"), str):
            try:
                key = base64.b64decode(state["key"], validate=True)
            except binascii.Error:
                key = None
        self._found[(subject, key_id)] = (time.monotonic(), key)
        return key

    async def forget(self, subject: str) -> None:
        stream = f"$keys-{subject}"
        events = await self.store.read(stream).to_list()
        key_ids = [str(e.data["key_id"]) for e in events if e.type == KEY_CREATED]
        for key_id in key_ids:
            await self.store.save_snapshot(_key_row(subject, key_id), 1, {"deleted": True}, KEY_SCHEMA)
            self._found[(subject, key_id)] = (time.monotonic(), None)
        self._current.pop(subject, None)
        if events and events[-1].type != KEY_DELETED:
            deleted = EventData(KEY_DELETED, {"subject": subject, "key_ids": key_ids})
            result = await self.store.append(stream, [deleted])
            if isinstance(result, Failure):
                raise result.failure()


async def copy_keys(source: Store, target: Store) -> int:
    """Copy the :class:`StoreKeyStore` key rows of ``source`` into ``target``; returns how many.

    ``migrate.copy`` copies events, not snapshot rows: after copying a store
    whose keys a ``StoreKeyStore`` keeps, run this too, or every subject looks
    forgotten in the copy. Deleted keys are copied as deleted.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.migrate import copy
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     old, new = MemoryStore(), MemoryStore()
    ...     note = EventData("Note", {"text": "hi"}, {"$subject": "s1"})
    ...     await ShreddingStore(old, {"Note": ["text"]}).append("notes", [note])
    ...     await copy(old, new)
    ...     print(await copy_keys(old, new), (await ShreddingStore(new, {}).latest("notes")).unwrap().data)
    >>> anyio.run(main)
    1 {'text': 'hi'}
    """
    copied = 0
    async with source.streams().filter(lambda name: name.startswith("$keys-")).open() as names:
        async for stream in names:
            for event in await source.read(stream).to_list():
                if event.type != KEY_CREATED:
                    continue
                row = _key_row(str(event.data["subject"]), str(event.data["key_id"]))
                found = await source.load_snapshot(row, KEY_SCHEMA)
                if isinstance(found, Some):
                    await target.save_snapshot(row, 1, found.unwrap().state, KEY_SCHEMA)
                    copied += 1
    return copied


def _key_row(subject: str, key_id: str) -> str:
    return f"$key:{subject}:{key_id}"


def _metadata_subject(stream: str, event: EventData) -> str | None:
    subject = (event.metadata or {}).get(SUBJECT)
    return subject if isinstance(subject, str) and subject else None


class _Personal:
    """The data of an event with personal fields: decrypted (or marked) when first read."""

    __slots__ = ("event", "fields", "key", "marker")

    def __init__(self, event: RecordedEvent, key: bytes | None, fields: Sequence[str], marker: Any) -> None:
        self.event, self.key, self.fields, self.marker = event, key, fields, marker

    def decode(self, where: tuple[Any, ...]) -> Any:
        data = self.event.data
        if type(data) is not dict or not isinstance(data.get(PERSONAL), str):
            problem = f"personal fields are stored as {{{PERSONAL!r}: base64}}"
            raise CorruptEvent(where[0], where[1], where[2], "data", problem)
        if self.key is None:
            marker, fields = self.marker, self.fields
            return {k: (marker if k in fields else v) for k, v in data.items() if k != PERSONAL}
        try:
            sealed = base64.b64decode(data[PERSONAL], validate=True)
            plain = _aesgcm(self.key).decrypt(sealed[:_NONCE], sealed[_NONCE:], self.event.id.bytes)
            secret = decode_json(plain.decode("utf-8"))
            if type(secret) is not dict:
                raise ValueError("the personal fields are not a JSON object")
        except Exception as exc:  # InvalidTag, binascii.Error, ValueError: damaged
            problem = f"personal fields do not decrypt: {type(exc).__name__}: {exc}"
            raise CorruptEvent(where[0], where[1], where[2], "data", problem) from None
        return {k: secret.get(k, v) for k, v in data.items() if k != PERSONAL}


class ShreddingStore(ForwardingStore):
    """A :class:`~streamsrc.store.Store` that encrypts personal fields per subject; see the module docs.

    ``personal`` maps event types to the names of their personal fields;
    ``subject(stream, event)`` names an event's subject (default: its
    ``"$subject"`` metadata); ``keys`` defaults to a :class:`StoreKeyStore` on
    ``inner``; ``marker`` replaces forgotten fields; ``snapshot_subject(key)``
    names the subject of a snapshot key (its whole state is then encrypted).
    Other events, snapshots and checkpoints pass through. It composes with
    :class:`~streamsrc.transforms.TransformingStore` (put this one outside:
    ``ShreddingStore(TransformingStore(store, ...), ...)``). Closing it closes ``inner``.

    >>> from streamsrc.store.memory import MemoryStore
    >>> from streamsrc.store import Store
    >>> isinstance(ShreddingStore(MemoryStore(), personal={}), Store)
    True
    """

    def __init__(
        self,
        inner: Store,
        personal: Mapping[str, Collection[str]],
        *,
        keys: KeyStore | None = None,
        subject: Callable[[str, EventData], str | None] | None = None,
        marker: Any = FORGOTTEN,
        snapshot_subject: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.personal = {t: list(fields) for t, fields in personal.items()}
        self.keys: KeyStore = StoreKeyStore(inner) if keys is None else keys
        self.subject = subject or _metadata_subject
        self.marker = marker
        self.snapshot_subject = snapshot_subject

    def __repr__(self) -> str:
        return f"ShreddingStore({self.inner!r})"

    # -- forgetting

    async def forget(self, subject: str, metadata: dict[str, Any] | None = None) -> int:
        """Forget ``subject``: record ``SubjectForgotten`` (with ``metadata``: who asked, why) in
        ``$forgotten-<subject>``, then delete its keys. Returns the audit event's position.

        Idempotent: forgetting again records another audit event and deletes nothing more.

        :raises StoreError: if the store or the key store fails (call it again).
        """
        audit = EventData("SubjectForgotten", {"subject": subject}, metadata)
        result = await self.inner.append(f"$forgotten-{subject}", [audit])
        if isinstance(result, Failure):
            raise result.failure()
        await self.keys.forget(subject)
        _CIPHERS.clear()  # no cipher of a deleted key stays in this process
        return result.unwrap().positions[0]

    # -- encoding

    async def encode_event(self, stream: str, event: EventData) -> EventData:
        """``event`` as stored: its personal fields encrypted with its subject's key (if it has both).

        :raises InvalidEvent: the event uses the reserved ``"$personal"`` key.
        :raises StoreError: the key store fails.
        """
        if PERSONAL in (event.metadata or {}) or (type(event.data) is dict and PERSONAL in event.data):
            raise InvalidEvent(f"the key {PERSONAL!r} is reserved for personal fields")
        fields = self.personal.get(event.type)
        if not fields or type(event.data) is not dict:
            return event
        present = [f for f in fields if f in event.data]
        subject = self.subject(stream, event) if present else None
        if subject is None:
            return event
        key = await self.keys.current(subject)
        secret = encode_json({f: event.data[f] for f in present}).encode("utf-8")
        nonce = os.urandom(_NONCE)
        sealed = nonce + _aesgcm(key.key).encrypt(nonce, secret, event.id.bytes)
        data: dict[str, Any] = {k: (None if k in present else v) for k, v in event.data.items()}
        data[PERSONAL] = base64.b64encode(sealed).decode("ascii")
        metadata = {
            **(event.metadata or {}),
            SUBJECT: subject,
            PERSONAL: {"key": key.key_id, "fields": present},
        }
        return EventData(event.type, data, metadata, event.id)

    async def decode_events(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Stored events as appended, or with the marker where their subject was forgotten."""
        out: list[RecordedEvent] = []
        for e in events:
            raw = tuple.__getitem__(e, 5)
            if type(raw) is str and _MARK not in raw:
                out.append(e)
                continue
            metadata = e.metadata
            info = None if metadata is None else metadata.get(PERSONAL)
            if info is None or metadata is None:
                out.append(e)
                continue
            subject, key_id = metadata.get(SUBJECT), info.get("key") if type(info) is dict else None
            fields = info.get("fields") if type(info) is dict else None
            rest = {k: v for k, v in metadata.items() if k != PERSONAL}
            if not isinstance(subject, str) or not isinstance(key_id, str) or not isinstance(fields, list):
                raise CorruptEvent(e.stream, e.seq, e.position, "metadata", f"{PERSONAL!r} is malformed")
            key = await self.keys.find(subject, key_id)
            if key is None:
                rest[FORGOTTEN_FLAG] = True
            out.append(_decoded(e, _Personal(e, key, fields, self.marker), rest))
        return out

    # -- the event store

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append ``events``, their personal fields encrypted."""
        try:
            encoded = [await self.encode_event(stream, e) if isinstance(e, EventData) else e for e in events]
        except StoreError as exc:
            return Failure(exc)
        return await self.inner.append(stream, encoded, expected)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Import recorded events: those already in stored form as they are, the others encrypted."""
        out: list[RecordedEvent] = []
        try:
            for e in events:
                if not isinstance(e, RecordedEvent) or PERSONAL in (e.metadata or {}):
                    out.append(e)
                    continue
                enc = await self.encode_event(stream, EventData(e.type, e.data, e.metadata, e.id))
                out.append(
                    RecordedEvent(e.stream, e.seq, e.position, e.type, enc.data, enc.metadata, e.id, e.time)
                )
        except StoreError as exc:
            return Failure(exc)
        return await self.inner.import_events(stream, out)

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """The events of ``stream``, personal fields decrypted or marked."""
        return self.inner.read(stream, after, limit, backwards).eval_map_chunks(self.decode_events)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """Every event in global order, personal fields decrypted or marked."""
        raw = self.inner.read_all(after, limit, types=types, stream_prefix=stream_prefix)
        return raw.eval_map_chunks(self.decode_events)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """The last event of ``stream``, personal fields decrypted or marked."""
        found = await self.inner.latest(stream)
        if not isinstance(found, Some):
            return found
        return Some((await self.decode_events([found.unwrap()]))[0])

    # -- snapshots and checkpoints

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save a snapshot; one of a subject's state (``snapshot_subject``) is encrypted with its key."""
        subject = None if self.snapshot_subject is None else self.snapshot_subject(key)
        if subject is not None:
            subject_key = await self.keys.current(subject)
            nonce = os.urandom(_NONCE)
            plain = encode_json(state).encode("utf-8")
            sealed = nonce + _aesgcm(subject_key.key).encrypt(nonce, plain, _snapshot_context(key, seq))
            state = {
                PERSONAL: base64.b64encode(sealed).decode("ascii"),
                SUBJECT: subject,
                "key": subject_key.key_id,
            }
        await self.inner.save_snapshot(key, seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The latest snapshot; an encrypted one whose subject was forgotten (or that does not
        decrypt) is ``Nothing``: the caller replays the events instead."""
        found = await self.inner.load_snapshot(key, schema_version, at_seq, at_time)
        if not isinstance(found, Some):
            return found
        snapshot: Snapshot = found.unwrap()
        state = snapshot.state
        if type(state) is not dict or PERSONAL not in state:
            return found
        subject, key_id = state.get(SUBJECT), state.get("key")
        if not isinstance(subject, str) or not isinstance(key_id, str):
            return Nothing
        subject_key = await self.keys.find(subject, key_id)
        if subject_key is None:
            return Nothing
        try:
            sealed = base64.b64decode(state[PERSONAL], validate=True)
            plain = _aesgcm(subject_key).decrypt(
                sealed[:_NONCE], sealed[_NONCE:], _snapshot_context(key, snapshot.seq)
            )
            value = decode_json(plain.decode("utf-8"))
        except Exception:  # damaged: a snapshot is a shortcut
            return Nothing
        return Some(Snapshot(snapshot.key, snapshot.seq, value, snapshot.schema_version, snapshot.time))


def _snapshot_context(key: str, seq: int) -> bytes:
    return f"snapshot\x00{key}\x00{seq}".encode()
