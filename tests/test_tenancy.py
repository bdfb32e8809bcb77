"""Multi-tenancy (``store.tenant(name)``, ``streamsrc.tenancy``): a tenant's view is a full store that
never sees another tenant's events, on every backend.

The whole store conformance suite runs on a tenant's view of every store (memory, SQLite, PostgreSQL,
DynamoDB on moto) while other tenants and the operator have events, snapshots and checkpoints of
the same names in it; then every operation is tried across tenants.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from returns.maybe import Nothing
from returns.result import Failure, Success
from store_urls import DYNAMODB_STORE_URLS, STORE_URLS, opened_store

from streamsrc.errors import CheckpointMoved, DuplicateEvent, InvalidEvent, WrongExpectedVersion
from streamsrc.events import MAX_NAME_LENGTH, EventData
from streamsrc.projections import MemoryReadModel, Projection, Projector
from streamsrc.shredding import ShreddingStore
from streamsrc.store import Store
from streamsrc.store.memory import MemoryStore
from streamsrc.tenancy import (
    ForwardingStore,
    InvalidTenant,
    TenantStore,
    check_tenant,
    tenant_prefix,
)
from streamsrc.testing import (
    BatchLimitedStoreConformance,
    ConformantStore,
    StoreConformance,
    conformance,
)
from streamsrc.testing.conformance import RetiringStoreConformance
from streamsrc.transforms import TransformingStore, Zlib

pytestmark = pytest.mark.anyio

FAST_STORES = sorted(set(STORE_URLS) - {"memory-small-pages", "sqlite-small-pages"})


async def neighbours(store: Store) -> None:
    """Other tenants' and the operator's data under the names the suites use (``s``, ``a``, ``b``, ...)."""
    for owner in (store.tenant("globex"), store.tenant("acme-eu"), store):  # type: ignore[attr-defined]
        for name in ("s", "a", "b", "x", "stream-1"):
            result = await owner.append(name, [EventData("Other", {"secret": name})])
            assert isinstance(result, Success), result
        await owner.save_snapshot("s", 1, {"secret": True}, 1)
        await owner.save_checkpoint("s", 99)


class _Shifted(TenantStore):
    """A tenant view whose ``head()`` counts from the neighbours' last event: for the one suite test that
    asks for an absolute head (``3`` after three events), on a store where others' events come first."""

    offset = 0

    async def head(self) -> int:
        head = await super().head()
        return head - self.offset if head else 0


class _TenantSuite(StoreConformance):
    """The conformance suite on a tenant's view; names are up to the tenant's room long, not
    ``MAX_NAME_LENGTH`` (the prefix takes the rest: ``test_names_too_long_for_the_tenants_range``)."""

    @pytest.fixture
    def short_names(self, monkeypatch: pytest.MonkeyPatch) -> None:
        room = MAX_NAME_LENGTH - len(tenant_prefix("acme"))
        special = tuple(n if len(n) <= room else n[:room] for n in conformance._SPECIAL_NAMES)
        monkeypatch.setattr(conformance, "_SPECIAL_NAMES", special)
        monkeypatch.setattr(conformance, "MAX_NAME_LENGTH", room)

    async def test_invalid_stream_names(self, store: Any, short_names: None) -> None:  # type: ignore[override]
        await super().test_invalid_stream_names(store)

    async def test_special_stream_names_are_isolated(  # type: ignore[override]
        self, store: Any, short_names: None
    ) -> None:
        await super().test_special_stream_names_are_isolated(store)

    async def test_append_signal_moves_on_appends_that_write(self, store: Any) -> None:
        shifted = _Shifted(store.inner, "acme")
        shifted.offset = await store.inner.head()
        await super().test_append_signal_moves_on_appends_that_write(shifted)


class TestTenantViewConformance(_TenantSuite):
    """A tenant's view gives every guarantee of the contract, with other tenants' data in the store."""

    @pytest.fixture(params=sorted(set(STORE_URLS) - set(DYNAMODB_STORE_URLS)))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as inner:
            await neighbours(inner)
            yield TenantStore(inner, "acme")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiobotocore runs on asyncio only
class TestTenantViewConformanceDynamoDB(_TenantSuite, BatchLimitedStoreConformance):
    """The same on DynamoDB (moto's server), batch limited as the store is (see test_store_conformance)."""

    large_event_bytes = 390_000
    concurrent_writer_tasks = 6

    @pytest.fixture(params=sorted(DYNAMODB_STORE_URLS))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as inner:
            await neighbours(inner)
            yield TenantStore(inner, "acme")


class TestTenantViewRetiring(RetiringStoreConformance):
    """Deleting and truncating a tenant's streams (the backends that retire streams), beside other
    tenants' streams of the same names, which stay as they were."""

    @pytest.fixture(params=sorted(set(STORE_URLS) - set(DYNAMODB_STORE_URLS)))
    async def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConformantStore]:
        async with opened_store(request.param, tmp_path) as inner:
            await neighbours(inner)
            before = await inner.tenant("globex").read_all().to_list()
            yield TenantStore(inner, "acme")
            assert await inner.tenant("globex").read_all().to_list() == before

    async def test_truncate_removes_the_first_events_from_every_read(self, store: Any) -> None:
        shifted = _Shifted(store.inner, "acme")  # the suite asks for head() == 8: others' events came first
        shifted.offset = await store.inner.head()
        await super().test_truncate_removes_the_first_events_from_every_read(shifted)


@pytest.fixture(params=FAST_STORES)
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with opened_store(request.param, tmp_path) as store:
        yield store


async def test_no_operation_of_a_tenant_reaches_another_tenants_data(shared: Any) -> None:
    acme, globex = shared.tenant("acme"), shared.tenant("globex")
    secret = EventData("Secret", {"card": "4111"}, {"k": "v"})
    written = (await globex.append("orders/1", [secret])).unwrap()
    await globex.save_snapshot("orders/1", 1, {"card": "4111"}, 1)
    await globex.save_checkpoint("billing", written.positions[-1])
    await shared.append("plain", [EventData("Operator", {})])
    names = [
        "orders/1",
        "../globex/orders/1",
        "/../globex/orders/1",
        "@globex/orders/1",
        "globex/orders/1",
        "../@globex/orders/1",
        "\\@globex/orders/1",
        "plain",
        "../plain",
        "",
        "x" * (MAX_NAME_LENGTH + 1),
    ]
    for name in names:
        assert await acme.read(name).to_list() == []
        assert await acme.read(name, backwards=True).to_list() == []
        assert await acme.latest(name) == Nothing
        assert await acme.load_snapshot(name, 1) == Nothing
        assert await acme.load_checkpoint(name) == 0
    for prefix in (None, "", "@", "@globex/", "../", "/", "o", "orders/", "plain", "\\"):
        assert await acme.read_all(stream_prefix=prefix).to_list() == []
        assert await acme.read_all(types={"Secret", "Operator"}, stream_prefix=prefix).to_list() == []
    assert await acme.streams().to_list() == []
    assert await acme.head() == 0
    # writing under the same names stays in acme's range
    assert (await acme.append("orders/1", [EventData("Mine", {})], expected=0)).unwrap().last_seq == 1
    assert (await acme.append("@globex/orders/1", [EventData("Mine", {})], expected=0)).unwrap().last_seq == 1
    await acme.save_checkpoint("billing", 1)
    await acme.save_snapshot("orders/1", 1, {"mine": True}, 1)
    assert [e.type for e in await globex.read("orders/1").to_list()] == ["Secret"]
    assert await globex.load_checkpoint("billing") == written.positions[-1]
    assert (await globex.load_snapshot("orders/1", 1)).unwrap().state == {"card": "4111"}
    assert await globex.streams().to_list() == ["orders/1"]
    assert await acme.streams().to_list() == ["@globex/orders/1", "orders/1"]
    assert {e.type for e in await acme.read_all().to_list()} == {"Mine"}
    # the operator's view sees everyone's, under their prefixes
    assert await shared.streams().to_list() == [
        "@acme/@globex/orders/1",
        "@acme/orders/1",
        "@globex/orders/1",
        "plain",
    ]


async def test_a_tenant_sees_its_own_names_and_global_positions(shared: Any) -> None:
    acme, globex = shared.tenant("acme"), shared.tenant("globex")
    a1 = (await acme.append("cart-1", [EventData("Added", {"n": 1})])).unwrap()
    await globex.append("cart-1", [EventData("Added", {"n": 2}), EventData("Added", {"n": 3})])
    a2 = (await acme.append("cart-1", [EventData("Added", {"n": 4})], expected=1)).unwrap()
    assert (a1.stream, a2.stream, a2.last_seq) == ("cart-1", "cart-1", 2)
    events = await acme.read_all().to_list()
    assert [(e.stream, e.seq, e.position, e.data) for e in events] == [
        ("cart-1", 1, a1.positions[0], {"n": 1}),
        ("cart-1", 2, a2.positions[0], {"n": 4}),
    ]
    assert a2.positions[0] - a1.positions[0] == 3  # the store's positions: a gap where globex's are
    assert [e.position for e in await acme.read_all(after=a1.positions[0]).to_list()] == [a2.positions[0]]
    assert (await acme.latest("cart-1")).unwrap().stream == "cart-1"
    assert [e.stream for e in await acme.read("cart-1", backwards=True).to_list()] == ["cart-1"] * 2
    assert await acme.head() == a2.positions[0]
    assert await globex.head() == a2.positions[0] - 1
    assert (await acme.load_snapshot("nothing", 1)) == Nothing


async def test_errors_name_the_tenants_own_stream_and_checkpoint(shared: Any) -> None:
    acme = shared.tenant("acme")
    event = EventData("Added", {})
    await acme.append("cart-1", [event])
    wrong = await acme.append("cart-1", [EventData("Added", {})], expected=0)
    assert wrong == Failure(WrongExpectedVersion("cart-1", 0, 1))
    duplicate = await acme.append("cart-2", [event])
    assert isinstance(duplicate, Failure)
    assert isinstance(duplicate.failure(), DuplicateEvent)
    assert duplicate.failure().stream == "cart-2"
    assert "@acme" not in str(duplicate.failure())
    await acme.save_checkpoint("view", 5)
    with pytest.raises(CheckpointMoved) as moved:
        await acme.save_checkpoint("view", 6, expected=4)
    assert (moved.value.name, moved.value.found) == ("view", 5)
    # an event id taken in another tenant is refused, and nothing is written
    other = await shared.tenant("globex").append("cart-1", [event])
    assert isinstance(other.failure(), DuplicateEvent)
    assert await shared.tenant("globex").streams().to_list() == []


async def test_names_too_long_for_the_tenants_range_are_refused(shared: Any) -> None:
    acme = shared.tenant("acme")
    room = MAX_NAME_LENGTH - len(tenant_prefix("acme"))
    assert isinstance((await acme.append("x" * room, [EventData("T", {})])), Success)
    too_long = await acme.append("x" * (room + 1), [EventData("T", {})])
    assert isinstance(too_long, Failure)
    assert isinstance(too_long.failure(), InvalidEvent)
    assert f"longer than {room}" in str(too_long.failure())
    for bad in ("", "a\x00b"):
        assert isinstance((await acme.append(bad, [EventData("T", {})])).failure(), InvalidEvent)
        with pytest.raises(InvalidEvent):
            await acme.save_checkpoint(bad, 1)
        with pytest.raises(InvalidEvent):
            await acme.save_snapshot(bad, 1, {}, 1)
    assert await acme.streams().to_list() == ["x" * room]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("a/b", "may hold only"),
        ("Acme", "may hold only"),
        ("-acme", "may hold only"),
        ("ac me", "may hold only"),
        ("acme\n", "may hold only"),
        ("é", "may hold only"),
        ("..", "may hold only"),
        ("a" * 64, "longer than 63"),
        (None, "a string"),
    ],
)
def test_an_invalid_tenant_name_is_a_typed_error(name: Any, why: str) -> None:
    with pytest.raises(InvalidTenant, match=why):
        MemoryStore().tenant(name)
    with pytest.raises(InvalidEvent):  # an InvalidTenant is an InvalidEvent (a StoreError)
        check_tenant(name)


def test_valid_tenant_names() -> None:
    for name in ("a", "acme", "acme-eu_1", "0", "a" * 63):
        assert MemoryStore().tenant(name).prefix == f"@{name}/"


async def test_streams_stop_at_the_end_of_the_tenants_range(tmp_path: Path) -> None:
    async with opened_store("sqlite-small-pages", tmp_path) as store:
        pages: list[str] = []
        inner_names = store.stream_names

        async def counting(after: str, size: int) -> Any:
            pages.append(after)
            return await inner_names(after, size)

        store.stream_names = counting
        for tenant in ("acm", "acme", "acme-a", "acmf", "b"):
            for n in range(7):
                await store.tenant(tenant).append(f"s{n}", [EventData("T", {})])
        await store.append("@acme0", [EventData("T", {})])
        assert await store.tenant("acme").streams().to_list() == [f"s{n}" for n in range(7)]
        assert pages == ["@acme/", "@acme/s2", "@acme/s5"]  # three pages of 3, none past the range


async def test_head_is_the_tenants_last_event_and_its_mark_is_saved(tmp_path: Path) -> None:
    import streamsrc.tenancy as tenancy

    async with opened_store("sqlite", tmp_path) as store:
        acme = store.tenant("acme")
        assert await acme.head() == 0
        last = (await acme.append("a", [EventData("T", {})])).unwrap().positions[-1]
        for n in range(5):
            await store.tenant("globex").append(f"g{n}", [EventData("T", {})])
        assert await acme.head() == last
        assert await store.head() == last + 5
        # a new view (another process) starts from the saved mark
        saved = tenancy.HEAD_SAVE_EVERY
        tenancy.HEAD_SAVE_EVERY = 1
        try:
            await store.tenant("acme").head()
        finally:
            tenancy.HEAD_SAVE_EVERY = saved
        mark = (await store.load_snapshot("@acme#head", 0)).unwrap()
        assert (mark.seq, mark.state) == (last + 5, {"head": last})
        assert await store.tenant("acme").head() == last
        assert await store.tenant("acme").read_all().to_list() != []
        # the mark is outside every tenant's range
        assert await acme.load_snapshot("#head", 0) == Nothing


async def test_a_projection_on_a_tenant_view_sees_only_the_tenant_and_has_no_lag(tmp_path: Path) -> None:
    async with opened_store("sqlite", tmp_path) as store:
        for tenant, n in (("acme", 3), ("globex", 5)):
            for k in range(n):
                await store.tenant(tenant).append(f"order-{k}", [EventData("OrderPlaced", {"k": k})])

        def fold(seen: list[tuple[str, str]], events: Any) -> list[tuple[str, str]]:
            return seen + [(e.stream, e.type) for e in events]

        model = MemoryReadModel[list[tuple[str, str]]]([])
        orders = Projection("orders", fold)
        status = await Projector(store.tenant("acme"), orders, model).catch_up()
        assert model.state == [(f"order-{k}", "OrderPlaced") for k in range(3)]
        assert status.head == status.position
        assert status.lag == 0
        assert status.head == (await store.tenant("acme").latest("order-2")).unwrap().position


async def test_wrappers_compose_with_tenant_views(tmp_path: Path) -> None:
    async with opened_store("sqlite", tmp_path) as store:
        # payload transforms outside a tenant view, and a tenant view of a transforming store
        zipped = TransformingStore(store.tenant("acme"), [Zlib(min_size=0)])
        await zipped.append("doc", [EventData("Written", {"text": "la" * 100})])
        also = TransformingStore(store, [Zlib(min_size=0)]).tenant("globex")
        await also.append("doc", [EventData("Written", {"text": "lo" * 100})])
        assert [e.data["text"][:2] for e in await zipped.read_all().to_list()] == ["la"]
        assert [e.data["text"][:2] for e in await also.read_all().to_list()] == ["lo"]
        assert isinstance(also, TenantStore)
        assert isinstance(zipped.tenant("sub"), TenantStore)
        # crypto-shredding inside one tenant: its keys live in the tenant's range
        shredding = ShreddingStore(store.tenant("acme"), personal={"Registered": ["email"]})
        meta = {"$subject": "u1"}
        await shredding.append("user-1", [EventData("Registered", {"email": "a@x.org"}, meta)])
        await shredding.forget("u1")
        forgotten = (await shredding.latest("user-1")).unwrap()
        assert forgotten.data["email"] == "[forgotten]"
        assert all(n.startswith(("@acme/", "@globex/")) for n in await store.streams().to_list())


async def test_closing_a_view_leaves_the_store_open_but_an_owning_wrapper_closes_it() -> None:
    store = MemoryStore()
    async with store.tenant("acme") as acme:
        await acme.append("s", [EventData("T", {})])
    assert await store.head() == 1
    async with TenantStore(store, "acme") as owning:
        assert await owning.head() == 1
    assert isinstance(await store.append("s", [EventData("T", {})]), Failure)  # closed


def test_every_forwarded_method_is_mapped_by_the_tenant_view() -> None:
    """A method added to ForwardingStore (a new contract method) must be given its tenant mapping too:
    forwarded as it is, it would take a name outside the tenant's range."""
    unmapped = {"appended", "aclose", "tenant", "page_size", "max_event_size", "max_batch"}  # no names
    forwarded = {n for n, _ in inspect.getmembers(ForwardingStore) if not n.startswith("_")} - unmapped
    assert forwarded
    assert sorted(n for n in forwarded if n not in TenantStore.__dict__) == []


async def test_import_events_keeps_the_tenants_names(shared: Any) -> None:
    source = MemoryStore()
    await source.append("s", [EventData("T", {"n": 1}), EventData("T", {"n": 2})])
    recorded = await source.read("s").to_list()
    acme = shared.tenant("acme")
    assert (await acme.import_events("s", recorded)).unwrap().stream == "s"
    assert [e.data for e in await acme.read("s").to_list()] == [{"n": 1}, {"n": 2}]
    refused = await acme.import_events("t", recorded)
    assert isinstance(refused.failure(), InvalidEvent)
    assert "@acme" not in str(refused.failure())
    assert await shared.read("s").to_list() == []
    assert await shared.tenant("globex").read("s").to_list() == []
