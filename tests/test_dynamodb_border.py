"""The DynamoDB store at the store's border (issue 19): its item codec loads no AWS driver, ``read_all``
decodes lazily, and closing the store ends every operation in flight (the error rule's conformance
suite runs on DynamoDB in ``test_store_conformance.py``).

Everything runs against moto's real HTTP server; damaged items are written
with raw ``put_item`` calls through the store's own client, as a hand edit or
another program would.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from returns.result import Failure
from store_urls import fresh_dynamodb_url

from streamsrc.errors import CorruptEvent, StoreUnavailable
from streamsrc.events import EventData
from streamsrc.store import open_store
from streamsrc.store.dynamodb import DynamoDBStore
from streamsrc.testing.conformance import append_ok, make_events

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def store(moto_endpoint: str) -> AsyncIterator[DynamoDBStore]:
    async with open_store(fresh_dynamodb_url()) as opened:
        assert isinstance(opened, DynamoDBStore)
        yield opened


# ------------------------------------------------------------------------------ the codec alone


def test_decoding_items_loads_no_aws_driver() -> None:
    """A Lambda function decoding stream records (through the store's codec or the Lambda integration)
    never imports aiobotocore or botocore."""
    code = textwrap.dedent(
        """
        import sys
        from streamsrc.store.dynamodb import MAX_BATCH, BatchTooLarge, Settings, event_from_item
        from streamsrc.store.dynamodb import is_event_item, table_names
        from streamsrc.integrations.aws_lambda import decode_record
        image = {
            "stream": {"S": "order-1"}, "seq": {"N": "1"}, "position": {"N": "7"}, "type": {"S": "Placed"},
            "data": {"S": "{}"}, "id": {"S": "00000000-0000-0000-0000-000000000001"}, "time": {"N": "0"}}
        assert is_event_item(image) and event_from_item(image).position == 7
        record = {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "1", "NewImage": image}}
        assert decode_record(record)[1].type == "Placed"
        assert Settings.from_url("dynamodb://shop?region=eu-west-1").table == "shop"
        assert MAX_BATCH == 48 and table_names("shop")["log"] == "shop.log" and BatchTooLarge
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aiobotocore", "botocore", "aiohttp"))
        assert not loaded, loaded
        from streamsrc.store.dynamodb import DynamoDBStore, create_tables  # the driver, on demand
        assert "aiobotocore" in sys.modules and DynamoDBStore and create_tables
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ lazy read_all


async def _commit_item(store: DynamoDBStore) -> dict[str, Any]:
    response = await store._client.query(
        TableName=store.tables["log"],
        KeyConditionExpression="pk = :log",
        ExpressionAttributeValues={":log": {"S": "log"}},
        ConsistentRead=True,
    )
    [item] = response["Items"]
    return dict(item)


@pytest.mark.parametrize("where", ["commit copy", "events table"])
async def test_read_all_decodes_a_payload_only_when_it_is_read(store: DynamoDBStore, where: str) -> None:
    """Issue 19, bug 6: ``read_all`` decoded every event eagerly, so a damaged payload failed a reader
    of types and positions. Events come from the commit item's copy, or from the events table when a
    commit carries none (a batch too large to copy)."""
    await append_ok(store, "order-1", [EventData("Placed", {"n": 1}), EventData("Paid", {"n": 2})])
    commit = await _commit_item(store)
    if where == "commit copy":
        copy = json.loads(commit["events"]["S"])
        copy[1][1] = "{not json"  # the second event's data text
        commit["events"] = {"S": json.dumps(copy)}
    else:
        del commit["events"]
        item = (
            await store._client.get_item(
                TableName=store.tables["events"],
                Key={"stream": {"S": "order-1"}, "seq": {"N": "2"}},
                ConsistentRead=True,
            )
        )["Item"]
        item["data"] = {"S": "{not json"}
        await store._client.put_item(TableName=store.tables["events"], Item=item)
    await store._client.put_item(TableName=store.tables["log"], Item=commit)

    events = await store.read_all().to_list()
    assert [(e.type, e.position) for e in events] == [("Placed", 1), ("Paid", 2)]
    assert [e.type for e in await store.read_all(types=["Paid"]).to_list()] == ["Paid"]
    assert events[0].data == {"n": 1}
    with pytest.raises(CorruptEvent) as caught:
        _ = events[1].data
    assert (caught.value.stream, caught.value.seq, caught.value.position) == ("order-1", 2, 2)


async def test_read_all_after_a_position_inside_a_commit(store: DynamoDBStore) -> None:
    await append_ok(store, "s", make_events(4))
    assert [e.position for e in await store.read_all(after=2).to_list()] == [3, 4]
    assert [e.position for e in await store.read_all(after=1, limit=2).to_list()] == [2, 3]


# ------------------------------------------------------------------------------ closing with work in flight


class HoldingRelay:
    """A loopback TCP relay between the store and moto that, once :meth:`hold` is called, keeps each
    answer back (all of it, or only its last byte: the headers and all but the end of the body reach
    the client) and leaves the connection open: a server that stalls before or inside an answer."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.keep_back: int | None = None  # bytes of an answer kept back, 0: relay everything
        self.held = threading.Event()  # an answer was held back
        self.released = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def hold(self, everything: bool) -> None:
        """Keep back every answer from now on (``everything=False``: only the last byte of it)."""
        self.keep_back = 1 << 30 if everything else 1

    def _serve(self) -> None:
        while not self.released.is_set():
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self.keep_back is not None:
                    sink.sendall(data[: max(0, len(data) - self.keep_back)])
                    self.held.set()
                    self.released.wait()
                    return
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.released.set()
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def relay(moto_endpoint: str) -> Iterator[HoldingRelay]:
    parts = urlsplit(moto_endpoint)
    assert parts.hostname is not None
    assert parts.port is not None
    relay = HoldingRelay((parts.hostname, parts.port))
    yield relay
    relay.close()


IN_FLIGHT: dict[str, Callable[[DynamoDBStore], Awaitable[object]]] = {
    "read": lambda store: store.read("s").to_list(),
    "read_all": lambda store: store.read_all().to_list(),
    "latest": lambda store: store.latest("s"),
    "append": lambda store: store.append("s", make_events(1, "late")),
    "streams": lambda store: store.streams().to_list(),
    "load_checkpoint": lambda store: store.load_checkpoint("c"),
}


@pytest.mark.parametrize("everything", [True, False], ids=["no answer", "all but the last byte"])
@pytest.mark.parametrize("operation", list(IN_FLIGHT))
async def test_closing_the_store_ends_an_operation_in_flight_at_once(
    moto_endpoint: str, relay: HoldingRelay, operation: str, everything: bool
) -> None:
    """Issue 19, bug 7: a read in flight when the store closed could wait for ever (here: until the
    read timeout) when the server had sent the answer's headers but not all its body (aiohttp waits
    on the body of a connection the close took away; the old store hung here every time). Now the
    close cancels every call in flight: each operation ends with ``StoreUnavailable`` saying that the
    store was closed."""
    # The read timeout is far beyond the hang guard: only the close can end the operation in time.
    url = fresh_dynamodb_url("timeout=600&retries=0").replace(moto_endpoint, f"http://127.0.0.1:{relay.port}")
    outcome: list[object] = []
    store = await DynamoDBStore(url).open()
    try:
        await append_ok(store, "s", make_events(2))
        relay.hold(everything)

        async def run() -> None:
            try:
                answer = await IN_FLIGHT[operation](store)
            except StoreUnavailable as exc:
                answer = exc
            outcome.append(answer.failure() if isinstance(answer, Failure) else answer)

        with anyio.fail_after(120):  # a hang guard, not a timing: the old store waited 600 s here
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await anyio.to_thread.run_sync(relay.held.wait)
                await store.aclose()
    finally:
        await store.aclose()
    [ended] = outcome
    assert isinstance(ended, StoreUnavailable), f"{operation} in flight at the close: {ended!r}"
    assert "closed" in str(ended)


async def test_a_filtered_read_all_scans_each_commit_once(moto_endpoint: str) -> None:
    """A page of commits with no event the filter keeps says how far it scanned (``Page.resume``): the
    next page starts after it, so the log is read once, a page of commits per query."""
    async with open_store(fresh_dynamodb_url("page_size=2")) as store:
        assert isinstance(store, DynamoDBStore)
        for k in range(9):
            await append_ok(store, f"other-{k}", make_events(1, f"a{k}"))
        await append_ok(store, "wanted-1", [EventData("Wanted", {"n": 1})])
        queries: list[dict[str, Any]] = []

        def before(params: dict[str, Any], **_: Any) -> None:
            if params.get("TableName") == store.tables["log"]:
                queries.append(params)

        store._client.meta.events.register("provide-client-params.dynamodb.Query", before)
        found = await store.read_all(types=["Wanted"]).to_list()
        assert [(e.stream, e.position) for e in found] == [("wanted-1", 10)]
        starts = [q["ExpressionAttributeValues"][":after"]["S"] for q in queries]
        # 10 commits, 2 a page, each read once (DynamoDB may answer the last full page with a key to go
        # on from, which costs one more, empty, query; moto does not)
        assert [int(s) for s in starts] in ([0, 2, 4, 6, 8], [0, 2, 4, 6, 8, 10])
        found = await store.read_all(stream_prefix="wanted-").to_list()
        assert [e.position for e in found] == [10]
