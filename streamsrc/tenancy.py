"""Multi-tenancy: one store shared by tenants, each seeing only its own events.

``store.tenant("acme")`` is a :class:`TenantStore`: a view of ``store`` whose
streams, ``read``, ``read_all``, ``latest``, ``head``, ``streams()``,
subscriptions, snapshots and checkpoints (and so the projections run over
it) never see another tenant's events. Every store has ``tenant()`` (every
:class:`~streamsrc.store.base.StoreBase` and every wrapper store), and a view
is itself a full :class:`~streamsrc.store.Store`: an entity, a projection,
``migrate.copy`` or the CLI (``streamsrc --tenant acme ...``) run on it as on
any store.

The design: a name prefix, in one wrapper
----------------------------------------
A tenant's names live in the shared store under a reserved prefix:
stream ``order-1`` of tenant ``acme`` is ``@acme/order-1`` there, and so are
its snapshot keys and checkpoint names. It works the same on every backend
(memory, SQLite, PostgreSQL, DynamoDB) with no schema change, and composes
with the other wrapper stores (a :class:`~streamsrc.shredding.ShreddingStore`
or :class:`~streamsrc.transforms.TransformingStore` around a tenant view keeps
its keys and payloads inside the tenant: put the view innermost). A schema
(or table set) per tenant was the other choice: stronger at the database's
level, but PostgreSQL-only, one pool or one set of tables per tenant, and
every migration run once per tenant.

Why no name can reach another tenant:

* a tenant name is 1 to :data:`MAX_TENANT_LENGTH` characters of ``a-z``,
  ``0-9``, ``-`` and ``_``, starting with a letter or digit
  (:func:`check_tenant`; anything else is :class:`InvalidTenant`), so it never
  holds the separator ``/`` and no tenant's prefix ``@name/`` starts another's;
* every name the view is given (stream, snapshot key, checkpoint name,
  ``read_all``'s ``stream_prefix``) is put *after* the prefix, as it is: a
  name holding ``/`` or ``../other`` is just a name in the tenant's range
  (``@acme/../other``), never a path, and there is nothing to escape;
* reads filter on the prefix (the backends' own ``stream_prefix`` filter),
  and every event a read returns is checked against it once more.

What a tenant sees
------------------
* **Names** without the prefix: streams, events' ``stream``, snapshot keys
  and checkpoint names are the tenant's own. A name may be up to
  ``MAX_NAME_LENGTH`` minus the prefix's length characters.
* **Positions** are the store's global positions: increasing in commit
  order, with gaps where other tenants' events are. ``read_all(after=p)``
  and checkpoints take them as they are.
* ``read_all`` asks the store for the events whose stream starts with the
  prefix: SQLite and PostgreSQL filter in the ``WHERE`` clause (other
  tenants' rows are skipped in the database, never sent; they are still
  walked in position order, so a small tenant's read of a log dominated by
  others costs the rows between its events); DynamoDB reads the log's
  commit items and drops other tenants' in the client (they cost read units,
  not decoding).
* ``head()`` is the position of the **tenant's own last event** (0 if none):
  what a projection's lag is measured against. No store keeps that per
  prefix, so the view keeps a mark: the last tenant event and how far the
  log was looked at. A ``head()`` reads, with the prefix filter, only the log
  after that mark (the tenant's events since the last call); the mark is
  kept in the view and saved in the store (as the snapshot ``@acme#head``,
  outside the tenant's range) every :data:`HEAD_SAVE_EVERY` positions, so a
  new process starts near the end, not from the beginning.
* ``streams()`` lists the names from the prefix on (the store's names in
  code-point order, as every store gives them: PostgreSQL's name columns
  collate as ``"C"``) and stops at the end of the range: it never pages
  through other tenants' names.
* ``appended`` is the store's signal: a subscription is woken by any
  tenant's append, then finds nothing new of its own and waits again.

The un-scoped store is the **operator's view**: it sees every tenant's
events under their prefixes (``@acme/order-1``), and reads, copies, exports
and retires them all. Names starting with ``@`` are reserved for tenants in a
store that has any.

>>> import anyio
>>> from streamsrc.events import EventData
>>> from streamsrc.store.memory import MemoryStore
>>> async def main() -> None:
...     store = MemoryStore()
...     acme, globex = store.tenant("acme"), store.tenant("globex")
...     await acme.append("order-1", [EventData("OrderPlaced", {"total": 12})])
...     await globex.append("order-1", [EventData("OrderPlaced", {"total": 99})])
...     print([(e.stream, e.data) for e in await acme.read_all().to_list()])
...     print(await globex.streams().to_list(), await globex.head())
...     print(await store.streams().to_list())  # the operator's view
>>> anyio.run(main)
[('order-1', {'total': 12})]
['order-1'] 2
['@acme/order-1', '@globex/order-1']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Self

from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc.errors import (
    CheckpointMoved,
    DuplicateEvent,
    InvalidEvent,
    InvalidTruncation,
    StoreError,
    StreamDeleted,
    WrongExpectedVersion,
)
from streamsrc.events import MAX_NAME_LENGTH, EventData, RecordedEvent, validate_stream_name
from streamsrc.store import ANY, AppendResult, AppendSignal, Expected, Snapshot, Store
from streamsrc.store.forwarding import ForwardedReads
from streamsrc.stream import Stream

__all__ = [
    "HEAD_SAVE_EVERY",
    "MAX_TENANT_LENGTH",
    "SEPARATOR",
    "TENANT_MARK",
    "ForwardingStore",
    "InvalidTenant",
    "TenantStore",
    "check_tenant",
    "tenant_prefix",
]

TENANT_MARK = "@"
"""The first character of every tenant's names in the shared store."""

SEPARATOR = "/"
"""Ends a tenant's prefix: ``@acme/`` (a tenant name never holds it)."""

MAX_TENANT_LENGTH = 63
"""The longest tenant name."""

HEAD_SAVE_EVERY = 10_000
"""How many positions of the log a tenant view's head mark may move before it is saved in the store."""

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_HEAD_VERSION = 0


class InvalidTenant(InvalidEvent):
    """A tenant name that cannot be used (empty, too long, a character outside ``a-z0-9-_``).

    >>> check_tenant("Acme/east")
    Traceback (most recent call last):
    ...
    streamsrc.tenancy.InvalidTenant: tenant name 'Acme/east' may hold only a-z, 0-9, '-' and '_' ...
    """


def check_tenant(name: object) -> str:
    """``name`` if it is a valid tenant name, else raise :class:`InvalidTenant` saying why.

    A tenant name is 1 to 63 characters of ``a-z``, ``0-9``, ``-`` and ``_``,
    starting with a letter or a digit: never the separator, a control
    character, or two spellings of one tenant.

    >>> check_tenant("acme-eu_1")
    'acme-eu_1'
    >>> check_tenant("")
    Traceback (most recent call last):
    ...
    streamsrc.tenancy.InvalidTenant: a tenant name must not be empty
    """
    if not isinstance(name, str):
        raise InvalidTenant(f"a tenant name is a string, not {type(name).__name__}")
    if not name:
        raise InvalidTenant("a tenant name must not be empty")
    if len(name) > MAX_TENANT_LENGTH:
        raise InvalidTenant(f"tenant name {name[:20]!r}... is longer than {MAX_TENANT_LENGTH} characters")
    if _TENANT.fullmatch(name) is None:
        raise InvalidTenant(
            f"tenant name {name!r} may hold only a-z, 0-9, '-' and '_' (and start with a letter or digit)"
        )
    return name


def tenant_prefix(tenant: str) -> str:
    """The prefix of ``tenant``'s names in the shared store.

    >>> tenant_prefix("acme")
    '@acme/'
    """
    return f"{TENANT_MARK}{check_tenant(tenant)}{SEPARATOR}"


class ForwardingStore(ForwardedReads):
    """A :class:`~streamsrc.store.Store` that hands every call to ``inner``: the base of wrapper stores.

    A wrapper overrides what it changes and inherits the rest, so a method
    added to the store contract is forwarded here, once, for every wrapper
    (:class:`~streamsrc.transforms.TransformingStore`,
    :class:`~streamsrc.shredding.ShreddingStore`, :class:`TenantStore`).
    Closing it closes ``inner``.

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> class Counting(ForwardingStore):
    ...     appends = 0
    ...     async def append(self, stream, events, expected=ANY):
    ...         self.appends += 1
    ...         return await super().append(stream, events, expected)
    >>> async def main() -> None:
    ...     async with Counting(MemoryStore()) as store:
    ...         await store.append("s", [EventData("Noted", {})])
    ...         print(store.appends, await store.head(), isinstance(store, Store))
    >>> anyio.run(main)
    1 1 True
    """

    inner: Store

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    # -- the event store

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append to the inner store (see :meth:`~streamsrc.store.EventStore.append`)."""
        return await self.inner.append(stream, events, expected)

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Import into the inner store (see :meth:`~streamsrc.store.ImportingStore.import_events`)."""
        return await self.inner.import_events(stream, events)

    async def delete_stream(self, stream: str, expected: Expected = ANY) -> Result[AppendResult, StoreError]:
        """Delete ``stream`` in the inner store (a tombstone; see ``RetiringStore.delete_stream``).

        :raises NotImplementedError: the inner store retires no streams.
        """
        result: Result[AppendResult, StoreError] = await _method(self.inner, "delete_stream")(
            stream, expected
        )
        return result

    async def truncate_before(self, stream: str, seq: int) -> Result[int, StoreError]:
        """Drop the events of ``stream`` below ``seq`` in the inner store (see
        ``RetiringStore.truncate_before``).

        :raises NotImplementedError: the inner store retires no streams.
        """
        result: Result[int, StoreError] = await _method(self.inner, "truncate_before")(stream, seq)
        return result

    async def stream_names(self, after: str, size: int) -> Sequence[str]:
        """Up to ``size`` stream names above ``after``, in sorted order: one page of :meth:`streams`
        from anywhere (how a tenant view lists its range without paging through others').

        :raises StoreUnavailable: if the database fails.
        """
        return await _names_after(self.inner, after, size)

    @property
    def appended(self) -> AppendSignal:
        """The inner store's append signal."""
        return self.inner.appended

    @property
    def page_size(self) -> int:
        """The inner store's events per read page (``AttributeError`` if it does not say)."""
        return int(getattr(self.inner, "page_size"))  # noqa: B009 (absent: absent here too)

    @property
    def max_event_size(self) -> int:
        """The inner store's limit on one event's encoded size (``AttributeError`` if it does not say)."""
        return int(getattr(self.inner, "max_event_size"))  # noqa: B009

    @property
    def max_batch(self) -> int:
        """The most events the inner store takes in one append, if it has a limit (a
        :class:`~streamsrc.store.BatchLimitedStore`; ``AttributeError`` otherwise)."""
        return int(getattr(self.inner, "max_batch"))  # noqa: B009

    # -- snapshots and checkpoints

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save a snapshot in the inner store."""
        await self.inner.save_snapshot(key, seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The inner store's snapshot of ``key``."""
        return await self.inner.load_snapshot(key, schema_version, at_seq, at_time)

    async def load_checkpoint(self, name: str) -> int:
        """The inner store's checkpoint ``name``."""
        return await self.inner.load_checkpoint(name)

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        """Save checkpoint ``name`` in the inner store (with ``expected``: its compare-and-set)."""
        await self.inner.save_checkpoint(name, position, expected)

    def checkpoints(self) -> Stream[tuple[str, int]]:
        """The inner store's saved checkpoints ``(name, position)``.

        :raises NotImplementedError: the inner store lists no checkpoints.
        """
        listing: Stream[tuple[str, int]] = _method(self.inner, "checkpoints")()
        return listing

    # -- views and life

    def tenant(self, name: str) -> TenantStore:
        """The view of this store that tenant ``name`` sees (see :mod:`streamsrc.tenancy`); closing
        the view leaves this store open.

        :raises InvalidTenant: ``name`` is not a valid tenant name.
        """
        return TenantStore(self, name, owns=False)

    async def aclose(self) -> None:
        """Close the inner store."""
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _method(store: Any, name: str) -> Any:
    """``store``'s method ``name``, or ``NotImplementedError`` saying it has none."""
    method = getattr(store, name, None)
    if method is None:
        raise NotImplementedError(f"{store!r} has no {name}")
    return method


async def _names_after(store: Any, after: str, size: int) -> Sequence[str]:
    """A page of ``store``'s stream names above ``after``: through its ``stream_names`` primitive when
    it has one (every ``StoreBase``, every wrapper over one), else from ``streams()`` (a full listing)."""
    lister = getattr(store, "stream_names", None)
    if lister is not None:
        guard = getattr(store, "guard", None)
        names: Sequence[str] = await (
            lister(after, size) if guard is None else guard("streams", lister(after, size))
        )
        return names
    found: list[str] = []
    async with store.streams().open() as all_names:
        async for name in all_names:
            if name > after:
                found.append(name)
                if len(found) >= size:
                    break
    return found


def _rename(event: RecordedEvent, name: str) -> RecordedEvent:
    """``event`` with stream ``name``: the same class, fields as stored, anything decoded kept."""
    kind = type(event)
    renamed: RecordedEvent = _new(kind, (name, *_item(event, _TAIL)))
    if kind is not RecordedEvent or type(_item(event, 4)) is not str:  # fields kept decoded, not stored
        renamed.__dict__.update(event.__dict__)
    return renamed


_new = tuple.__new__
_item = tuple.__getitem__
_TAIL = slice(1, None)


class TenantStore(ForwardingStore):
    """The view of ``inner`` that ``tenant`` sees: its own streams, snapshots and checkpoints only.

    See the module docs for the design (a reserved name prefix per tenant),
    what ``head()`` and positions mean, and the costs. ``store.tenant(name)``
    makes one that leaves ``store`` open when closed; ``TenantStore(inner,
    name)`` owns ``inner`` and closes it (``owns=False``: it does not).

    >>> import anyio
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     async with TenantStore(MemoryStore(), "acme") as acme:
    ...         await acme.append("cart-1", [EventData("Added", {"sku": "a"})])
    ...         await acme.save_checkpoint("carts", 1)
    ...         print((await acme.latest("cart-1")).unwrap().stream, await acme.load_checkpoint("carts"))
    ...         print(await acme.inner.load_checkpoint("@acme/carts"), acme.prefix)
    >>> anyio.run(main)
    cart-1 1
    1 @acme/
    """

    def __init__(self, inner: Store, tenant: str, *, owns: bool = True) -> None:
        super().__init__(inner)
        self.name = check_tenant(tenant)
        self.prefix = tenant_prefix(tenant)
        self.owns = owns
        self._cut = len(self.prefix)
        self._room = MAX_NAME_LENGTH - self._cut
        self._head_key = f"{TENANT_MARK}{tenant}#head"
        self._mark: tuple[int, int] | None = None  # (the tenant's last position, the log looked at up to)
        self._saved = 0  # how far the saved mark has looked
        self._names: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"TenantStore({self.inner!r}, {self.name!r})"

    # -- names

    def _full(self, name: str, what: str) -> str:
        """The shared store's name of the tenant's ``name``; raises ``InvalidEvent`` for an unusable one."""
        checked = validate_stream_name(name, what)
        if isinstance(checked, Failure):
            raise checked.failure()
        if len(name) > self._room:
            raise InvalidEvent(f"{what} is longer than {self._room} characters (in tenant {self.name!r})")
        return self.prefix + name

    def _usable(self, name: object) -> bool:
        return type(name) is str and 0 < len(name) <= self._room

    def _mine(self, page: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """A page of the shared log as the tenant sees it: its events only, renamed."""
        prefix, cut, item, new, tail, stored = self.prefix, self._cut, _item, _new, _TAIL, RecordedEvent
        # the store filtered already: never trust it with another's (every event is checked)
        names = self._names  # the tenant's name of each stored name seen (they repeat a lot)
        known = names.get
        out = []
        for e in page:
            full = item(e, 0)
            name = known(full)
            if name is None:
                if full[:cut] != prefix:
                    continue
                if len(names) >= 4096:
                    names.clear()
                name = names[full] = full[cut:]
            if type(e) is stored and type(item(e, 4)) is str:  # as stored: nothing decoded to keep
                out.append(new(stored, (name, *item(e, tail))))
            else:
                out.append(_rename(e, name))
        return out

    def _one(self, stream: str) -> Callable[[Sequence[RecordedEvent]], list[RecordedEvent]]:
        """``_mine`` for a page of one stream: the tenant's name of it is known."""
        full, item, new, tail, stored = self.prefix + stream, _item, _new, _TAIL, RecordedEvent

        def mine(page: Sequence[RecordedEvent]) -> list[RecordedEvent]:
            return [
                new(stored, (stream, *item(e, tail)))
                if type(e) is stored and type(item(e, 4)) is str
                else _rename(e, stream)
                for e in page
                if item(e, 0) == full
            ]

        return mine

    def _result(
        self, stream: str, result: Result[AppendResult, StoreError]
    ) -> Result[AppendResult, StoreError]:
        if isinstance(result, Success):
            written: AppendResult = result.unwrap()
            if written.positions and self._mark is not None:
                self._mark = (max(self._mark[0], written.positions[-1]), self._mark[1])
            return Success(AppendResult(stream, written.last_seq, written.positions, written.count))
        error = result.failure()
        if isinstance(error, WrongExpectedVersion):
            return Failure(WrongExpectedVersion(stream, error.expected, error.actual))
        if isinstance(error, DuplicateEvent):
            return Failure(DuplicateEvent(stream, error.event_id))
        if isinstance(error, StreamDeleted):
            return Failure(StreamDeleted(stream, error.version))
        return result

    # -- the event store

    async def append(
        self, stream: str, events: Sequence[EventData], expected: Expected = ANY
    ) -> Result[AppendResult, StoreError]:
        """Append ``events`` to the tenant's ``stream`` (see :meth:`~streamsrc.store.EventStore.append`)."""
        try:
            full = self._full(stream, "stream name")
        except InvalidEvent as exc:
            return Failure(exc)
        return self._result(stream, await self.inner.append(full, events, expected))

    async def import_events(
        self, stream: str, events: Sequence[RecordedEvent]
    ) -> Result[AppendResult, StoreError]:
        """Import recorded events of the tenant's ``stream`` (their ``stream`` is the tenant's name)."""
        try:
            full = self._full(stream, "stream name")
            moved: list[RecordedEvent] = []
            for event in events:
                if not isinstance(event, RecordedEvent):
                    raise InvalidEvent(f"expected RecordedEvent, got {type(event).__name__}")
                if event.stream != stream:
                    raise InvalidEvent(
                        f"an event of stream {event.stream!r} cannot be imported into {stream!r}"
                    )
                moved.append(_rename(event, full))
        except InvalidEvent as exc:
            return Failure(exc)
        return self._result(stream, await self.inner.import_events(full, moved))

    async def delete_stream(self, stream: str, expected: Expected = ANY) -> Result[AppendResult, StoreError]:
        """Delete the tenant's ``stream`` (a tombstone; see ``RetiringStore.delete_stream``)."""
        try:
            full = self._full(stream, "stream name")
        except InvalidEvent as exc:
            return Failure(exc)
        return self._result(stream, await super().delete_stream(full, expected))

    async def truncate_before(self, stream: str, seq: int) -> Result[int, StoreError]:
        """Drop the events of the tenant's ``stream`` below ``seq`` (see
        ``RetiringStore.truncate_before``)."""
        try:
            full = self._full(stream, "stream name")
        except InvalidEvent as exc:
            return Failure(exc)
        result = await super().truncate_before(full, seq)
        if isinstance(result, Failure):
            error = result.failure()
            if isinstance(error, InvalidTruncation):
                return Failure(InvalidTruncation(stream, error.seq, error.version))
            if isinstance(error, StreamDeleted):
                return Failure(StreamDeleted(stream, error.version))
        return result

    def read(
        self, stream: str, after: int = 0, limit: int | None = None, backwards: bool = False
    ) -> Stream[RecordedEvent]:
        """The events of the tenant's ``stream`` (see :meth:`~streamsrc.store.EventStore.read`)."""
        if not self._usable(stream):
            return Stream.empty()
        return self.inner.read(self.prefix + stream, after, limit, backwards).map_chunks(self._one(stream))

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        types: Collection[str] | None = None,
        stream_prefix: str | None = None,
    ) -> Stream[RecordedEvent]:
        """The tenant's events with ``position > after``, in global order; ``stream_prefix`` is a prefix of
        the tenant's stream names (see :meth:`~streamsrc.store.EventStore.read_all`)."""
        if stream_prefix is not None and not isinstance(stream_prefix, str):
            raise TypeError(f"stream_prefix must be a string, not {type(stream_prefix).__name__}")
        prefix = self.prefix + (stream_prefix or "")
        if len(prefix) > MAX_NAME_LENGTH:
            return Stream.empty()
        return self.inner.read_all(after, limit, types=types, stream_prefix=prefix).map_chunks(self._mine)

    async def latest(self, stream: str) -> Maybe[RecordedEvent]:
        """The last event of the tenant's ``stream``, or ``Nothing``."""
        if not self._usable(stream):
            return Nothing
        found = await self.inner.latest(self.prefix + stream)
        if not isinstance(found, Some):
            return found
        mine = self._one(stream)([found.unwrap()])
        return Some(mine[0]) if mine else Nothing

    async def head(self) -> int:
        """The position of the tenant's last event (0 if it has none); see the module docs for how.

        :raises StoreUnavailable: if the database fails.
        """
        if self._mark is None:
            saved = await self.inner.load_snapshot(self._head_key, _HEAD_VERSION)
            last, looked = 0, 0
            if isinstance(saved, Some):
                state = saved.unwrap().state
                if type(state) is dict and type(state.get("head")) is int:
                    last, looked = state["head"], saved.unwrap().seq
            self._mark, self._saved = (last, looked), looked
        last, looked = self._mark
        top = await self.inner.head()  # before the read: everything at or below it has committed
        async with self.inner.read_all(looked, stream_prefix=self.prefix).chunks().open() as pages:
            async for page in pages:
                for event in reversed(page):
                    if tuple.__getitem__(event, 0).startswith(self.prefix):
                        last = max(last, tuple.__getitem__(event, 2))
                        break
                looked = max(looked, tuple.__getitem__(page[-1], 2))
        looked = max(looked, top)
        self._mark = (max(last, self._mark[0]), max(looked, self._mark[1]))
        if self._mark[1] - self._saved >= HEAD_SAVE_EVERY:
            await self.inner.save_snapshot(
                self._head_key, self._mark[1], {"head": self._mark[0]}, _HEAD_VERSION
            )
            self._saved = self._mark[1]
        return self._mark[0]

    def streams(self) -> Stream[str]:
        """The tenant's stream names, in sorted order, lazily paged (never through others' names).

        :raises StoreUnavailable: while the stream runs, if the database fails.
        """
        page_size = max(1, int(getattr(self.inner, "page_size", 1000)))  # the stores' default page

        async def step(after: str | None) -> tuple[Sequence[str], str | None] | None:
            if after is None:
                return None
            names = await self.stream_names(after, page_size)
            return (names, names[-1] if len(names) == page_size else None) if names else None

        start: str | None = ""
        return Stream.unfold_chunk_eval(start, step)

    async def stream_names(self, after: str, size: int) -> Sequence[str]:
        """Up to ``size`` of the tenant's stream names above ``after``, in sorted order."""
        names = await _names_after(self.inner, self.prefix + after, size)
        prefix, cut = self.prefix, self._cut
        mine = []
        for name in names:
            if not name.startswith(prefix):
                break  # past the tenant's range: names are in code-point order
            mine.append(name[cut:])
        return mine

    # -- snapshots and checkpoints

    async def save_snapshot(self, key: str, seq: int, state: Any, schema_version: int) -> None:
        """Save a snapshot of the tenant's ``key``.

        :raises InvalidEvent: ``key`` is not a usable name, or ``state`` is not JSON.
        """
        await self.inner.save_snapshot(self._full(key, "snapshot key"), seq, state, schema_version)

    async def load_snapshot(
        self,
        key: str,
        schema_version: int,
        at_seq: int | None = None,
        at_time: datetime | None = None,
    ) -> Maybe[Snapshot]:
        """The latest snapshot of the tenant's ``key`` (see
        :meth:`~streamsrc.store.SnapshotStore.load_snapshot`)."""
        if not self._usable(key):
            return Nothing
        found = await self.inner.load_snapshot(self.prefix + key, schema_version, at_seq, at_time)
        if not isinstance(found, Some):
            return found
        snapshot: Snapshot = found.unwrap()
        return Some(Snapshot(key, snapshot.seq, snapshot.state, snapshot.schema_version, snapshot.time))

    async def load_checkpoint(self, name: str) -> int:
        """The tenant's checkpoint ``name``, or 0."""
        if not self._usable(name):
            return 0
        return await self.inner.load_checkpoint(self.prefix + name)

    async def save_checkpoint(self, name: str, position: int, expected: int | None = None) -> None:
        """Save the tenant's checkpoint ``name`` (with ``expected``: a compare-and-set).

        :raises CheckpointMoved: with ``expected``, the checkpoint was elsewhere.
        :raises InvalidEvent: ``name`` is not a usable name.
        """
        full = self._full(name, "checkpoint name")
        try:
            await self.inner.save_checkpoint(full, position, expected)
        except CheckpointMoved as exc:
            raise CheckpointMoved(name, exc.expected, exc.found) from None

    def checkpoints(self) -> Stream[tuple[str, int]]:
        """The tenant's saved checkpoints ``(name, position)``: the store's listing, kept to the
        tenant's names (the store lists every tenant's checkpoints: there are few)."""
        prefix, cut = self.prefix, self._cut
        listing = super().checkpoints()
        return listing.filter(lambda c: c[0].startswith(prefix)).map(lambda c: (c[0][cut:], c[1]))

    # -- life

    async def aclose(self) -> None:
        """Close the inner store if this view owns it (``store.tenant()``'s views do not)."""
        if self.owns:
            await self.inner.aclose()
