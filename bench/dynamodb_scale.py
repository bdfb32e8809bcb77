"""DynamoDB store: how appends scale with writers in each mode, and the indexer of order=stream.

moto answers in milliseconds and handles one request at a time; DynamoDB
answers in ~10 ms whatever the number of writers on distinct items. So every
request here goes through a loopback proxy (a process of its own) that holds
each request for a fixed latency (``--latency-ms``, 10) before relaying it:
throughput becomes a function of concurrency, as on DynamoDB. The proxy keeps
the clients' connections alive, as DynamoDB does (moto's server closes each
connection after one answer: a TCP connect a request otherwise).

1. appends/s with 1, 8, 32, 128 writers (quick: 1, 8, 32), each its own store
   (its own client, as separate processes would), on distinct streams, one
   event per append, for ``--seconds`` each, in ``order=stream`` and
   ``order=global``. Each row also says what the emulation cost: moto's
   requests per append, moto's service time per request and how busy it was
   (one request at a time), and this process's CPU per append (the store,
   botocore's signing, validation and parsing). Target: order=stream at 32
   writers >= 16x its 1 writer. At 10 ms the ceiling is this machine's, not
   the store's: every writer shares this one process, and the driver
   (botocore/aiohttp) spends ~6 ms of CPU an append (the store's own code
   ~0.4 ms), so N writers cannot beat ``1 / cpu`` appends/s whatever
   DynamoDB does; moto, one request at a time, adds its service time. So the
   section runs again for ``order=stream`` with ``--scaled-latency-ms``
   (500), a latency large next to those costs, as DynamoDB's 10 ms is large
   next to a real deployment's (writers on many machines, a service whose
   partitions work in parallel). That run measures the store's own scaling
   (no shared item, no lost races, one transaction an append); the first
   one says what this machine shows at 10 ms.

   moto's ``TransactWriteItems`` deep-copies each table it touches to roll a
   cancelled transaction back: ~36 ms an append at 100 items, ~140 ms at 500
   on this 2-CPU machine, a cost DynamoDB does not have that grows with the
   table (so a run of 32 writers, writing 32 times the items, was slower
   than one writer). The benchmark's moto checks every condition of a
   transaction first and writes only if all pass (the same outcome for the
   store's transactions, at a cost independent of the table's size);
   ``--moto-table-copies`` keeps moto's own.
2. the indexer: events indexed per second vs the rate this process reads the
   same DynamoDB Streams records (target >= 0.5x), and the lag from an append
   to its visibility in ``read_all`` with ``run_indexer`` following the stream
   (median, p99).

On paper (docs/aws.md): WCU per append and a table's ceiling in each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import Report, Table, add_common_args, parse_checked, skip, version, versions_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from moto_server import REGION, MotoUnavailable, session_endpoint, stop_session_server

from streamsrc.events import EventData
from streamsrc.store import open_store

SECTIONS = ("writers", "indexer")
TABLE = Table(["measure", "value", "ratio", "target", "result"], [44, 14, 10, 8, 6])
WRITERS = Table(
    [
        "writers",
        "appends/s",
        "ratio",
        "target",
        "result",
        "moto req/append",
        "moto ms/req",
        "moto busy",
        "cpu ms/append",
    ],
    [30, 10, 8, 7, 6, 15, 11, 9, 13],
)


class Moto:
    """moto's server in a process of its own (the writers' CPU does not slow it down), one request at
    a time, telling its busy seconds and requests on demand."""

    def __init__(self, rollback: str) -> None:
        tests = str(Path(__file__).resolve().parent.parent / "tests")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _MOTO, tests, rollback],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.endpoint = self.process.stdout.readline().strip()

    def counters(self) -> tuple[float, int]:
        """The seconds moto has spent on requests, and the requests, so far."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        seconds, requests = self.process.stdout.readline().split()
        return float(seconds), int(requests)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LatencyProxy:
    """A loopback HTTP proxy, in a process of its own, that relays each request ``latency`` seconds
    after it came and keeps the client's connections alive (moto closes each one after its answer;
    DynamoDB's clients keep theirs)."""

    def __init__(self, target: tuple[str, int], latency: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PROXY, target[0], str(target[1]), str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def url_of(endpoint: str, order: str, streams: bool = False) -> str:
    table = f"bench-{order}-{uuid.uuid4().hex[:8]}"
    return (
        f"dynamodb://{table}?region={REGION}&endpoint_url={endpoint}&create=true&order={order}"
        f"&streams={'true' if streams else 'false'}&retries=20"
    )


@dataclass
class Writers:
    """One measure of section 1."""

    rate: float  # appends/s
    requests: float  # moto's requests per append
    service_ms: float  # moto's service time per request
    busy: float  # the share of the run moto was busy
    cpu_ms: float  # this process's CPU per append


async def appends_per_second(endpoint: str, moto: Moto, order: str, writers: int, seconds: float) -> Writers:
    """``writers`` stores each appending to its own stream, one append after the other, for
    ``seconds`` (after each wrote its stream's first event); appends finished in that time."""
    url = url_of(endpoint, order)
    async with open_store(url):
        pass  # the tables, made before the clock starts
    from streamsrc.store.dynamodb import DynamoDBStore

    stores = await asyncio.gather(*(DynamoDBStore(url).open() for _ in range(writers)))
    done = 0

    async def write(w: int, counted: bool) -> None:
        nonlocal done
        n = 0
        while True:
            (await stores[w].append(f"w-{w}", [EventData("E", {"n": n})])).unwrap()
            n += 1
            if not counted:
                return
            done += 1

    try:
        await asyncio.gather(*(write(w, False) for w in range(writers)))  # streams made, connections open
        busy, requests = moto.counters()
        cpu = time.process_time()
        tasks = [asyncio.ensure_future(write(w, True)) for w in range(writers)]
        await asyncio.sleep(seconds)
        appended = done
        cpu = time.process_time() - cpu
        busy_after, requests_after = moto.counters()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for store in stores:
            await store.aclose()
    served = max(1, requests_after - requests)
    return Writers(
        rate=appended / seconds,
        requests=served / max(1, appended),
        service_ms=(busy_after - busy) / served * 1000,
        busy=(busy_after - busy) / seconds,
        cpu_ms=cpu / max(1, appended) * 1000,
    )


async def bench_writers(
    direct: str,
    moto: Moto,
    quick: bool,
    orders: Sequence[str],
    latency_ms: float,
    seconds: float,
    report: Report,
    judged: bool,
) -> None:
    counts = (1, 8, 32) if quick else (1, 8, 32, 128)
    host, port = direct.removeprefix("http://").split(":")
    proxy = LatencyProxy((host, int(port)), latency_ms / 1000)
    endpoint = f"http://127.0.0.1:{proxy.port}"
    rows = []
    try:
        for order in orders:
            measures = {n: await appends_per_second(endpoint, moto, order, n, seconds) for n in counts}
            for n in counts:
                m = measures[n]
                ratio = m.rate / measures[1].rate
                label = f"order={order} at {latency_ms:g} ms: {n} writers"
                target = 16.0 if order == "stream" and n == 32 and judged else None
                rows.append(
                    [
                        label,
                        f"{m.rate:,.1f}",
                        f"{ratio:.1f}x",
                        *report.target_cells(label + ", appends/s", ratio, target),
                        f"{m.requests:.2f}",
                        f"{m.service_ms:.1f}",
                        f"{m.busy:.0%}",
                        f"{m.cpu_ms:.1f}",
                    ]
                )
    finally:
        proxy.close()
    WRITERS.print(
        [
            f"1. appends/s by writers, moto behind a proxy adding {latency_ms:g} ms a request "
            f"({seconds:g} s each, 1 event an append, distinct streams; ratio: vs 1 writer)"
        ],
        rows,
    )


async def bench_indexer(direct: str, moto: Moto, latency_ms: float, quick: bool, report: Report) -> None:
    from streamsrc.integrations.dynamodb_index import run_indexer
    from streamsrc.integrations.dynamodb_streams import aws_client, dynamodb_stream_source
    from streamsrc.store.dynamodb import DynamoDBStore, index_events

    host, port = direct.removeprefix("http://").split(":")
    proxy = LatencyProxy((host, int(port)), latency_ms / 1000)
    endpoint = f"http://127.0.0.1:{proxy.port}"
    streams_n, per_stream = (20, 10) if quick else (50, 40)
    # The events are written without the proxy (faster to set up); both measures go through it.
    setup = url_of(direct, "stream")
    async with open_store(setup) as store:
        assert isinstance(store, DynamoDBStore)
        # The events table's stream only: moto copies a table's stream records in every transaction
        # it runs (to roll back), so with the log table's stream on (the projections' stream, not
        # measured here) each index transaction would cost moto more as the index grows.
        await store._call(
            "bench",
            "update_table",
            TableName=store.tables["events"],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        for n in range(per_stream):
            await asyncio.gather(
                *(store.append(f"s-{s}", [EventData("E", {"n": n, "s": s})]) for s in range(streams_n))
            )
    url = setup.replace(direct, endpoint)
    table = url.split("//", 1)[1].split("?", 1)[0]
    try:
        async with aws_client("dynamodbstreams", region=REGION, endpoint_url=endpoint) as client:
            busy = moto.counters()[0]
            start = time.perf_counter()
            records = await dynamodb_stream_source(client, table=table).to_list()
            read_seconds = time.perf_counter() - start
            read_moto = moto.counters()[0] - busy
            read_rate = len(records) / read_seconds
        async with open_store(url) as store:
            assert isinstance(store, DynamoDBStore)
            events = [r.event for r in records]
            busy = moto.counters()[0]
            start = time.perf_counter()
            for k in range(0, len(events), 1000):
                await index_events(store, events[k : k + 1000])
            index_seconds = time.perf_counter() - start
            index_moto = moto.counters()[0] - busy
            index_rate = len(events) / index_seconds
            assert await store.head() == len(events)
        ratio = index_rate / read_rate
        rows = [
            ["records read from DynamoDB Streams /s", f"{read_rate:,.0f}", "", "(info)", ""],
            [
                "events indexed /s",
                f"{index_rate:,.0f}",
                f"{ratio:.2f}x",
                *report.target_cells("indexer", ratio, 0.5),
            ],
            [
                "moto's share of the read / of the indexing",
                f"{read_moto / read_seconds:.0%} / {index_moto / index_seconds:.0%}",
                "",
                "(info)",
                "",
            ],
        ]
        # Without moto's time (one request at a time, so the client waits it out): what the client and
        # the latency take, as against a service whose own time is small.
        bare = (len(events) / max(1e-9, index_seconds - index_moto)) / (
            len(records) / max(1e-9, read_seconds - read_moto)
        )
        rows.append(["the same ratio without moto's time", "", f"{bare:.2f}x", "(info)", ""])

        # Lag: an indexer process follows the stream; each append waits for its positions.
        lag_url = url_of(endpoint, "stream", streams=True)
        lags: list[float] = []
        async with open_store(lag_url) as store:
            assert isinstance(store, DynamoDBStore)
            indexer = asyncio.ensure_future(run_indexer(lag_url))
            try:
                for n in range(15 if quick else 60):
                    written = (await store.append(f"lag-{n % 5}", [EventData("E", {"n": n})])).unwrap()
                    start = time.perf_counter()
                    await store.indexed(written, timeout=30)
                    lags.append(time.perf_counter() - start)
            finally:
                indexer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await indexer
    finally:
        proxy.close()
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    rows.append(
        ["lag append -> read_all: median, ms", f"{statistics.median(lags) * 1000:,.0f}", "", "(info)", ""]
    )
    rows.append(["lag append -> read_all: p99, ms", f"{p99 * 1000:,.0f}", "", "(info)", ""])
    TABLE.print(
        [
            f"2. the indexer ({len(events):,} events of {streams_n} streams, "
            f"{latency_ms:g} ms a request; lag: 1 writer)"
        ],
        rows,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=1)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added to each request (10)")
    parser.add_argument(
        "--scaled-latency-ms",
        type=float,
        default=500.0,
        help="section 1 again for order=stream at this latency, large next to moto's service time "
        "and the client's CPU (500; 0: not run)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="each measure of section 1 (8; quick 4)")
    parser.add_argument("--orders", default="stream,global", help="the modes of section 1 (stream,global)")
    parser.add_argument(
        "--moto-table-copies",
        action="store_true",
        help="keep moto's own rollback (a deep copy of each table a transaction touches)",
    )
    return parse_checked(parser, argv)


async def run(args: argparse.Namespace, moto: Moto, report: Report) -> None:
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"aiobotocore {version('aiobotocore')}",
                f"moto {version('moto')}",
            ],
            cpus=True,
        )
    )
    print(
        f"moto in a process of its own, one request at a time, behind a proxy adding "
        f"{args.latency_ms:g} ms a request; rollback: "
        f"{'moto own (table copies)' if args.moto_table_copies else 'conditions first (no table copies)'}"
        f"{'; QUICK sizes' if args.quick else ''}"
    )
    sections = args.only or list(SECTIONS)
    seconds = args.seconds or (4.0 if args.quick else 8.0)
    if "writers" in sections:
        orders = args.orders.split(",")
        await bench_writers(
            moto.endpoint, moto, args.quick, orders, args.latency_ms, seconds, report, judged=True
        )
        if args.scaled_latency_ms and "stream" in orders:
            await bench_writers(
                moto.endpoint,
                moto,
                args.quick,
                ["stream"],
                args.scaled_latency_ms,
                max(seconds, args.scaled_latency_ms / 1000 * 20),  # 20 appends of 1 writer
                report,
                judged=True,
            )
    if "indexer" in sections:
        await bench_indexer(moto.endpoint, moto, args.latency_ms, args.quick, report)


_PROXY = r"""
import asyncio, sys, time

upstream_host, upstream_port, latency = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])


async def relay(reader, writer):
    # One client connection, kept alive as DynamoDB's are; each request goes to moto (which closes
    # every connection) over a connection of its own, ``latency`` seconds after it came.
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            came = time.monotonic()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            await asyncio.sleep(max(0.0, came + latency - time.monotonic()))
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
            up_writer.write(head + body)
            await up_writer.drain()
            response = await up_reader.read()
            up_writer.close()
            head_end = response.index(b"\r\n\r\n")
            lines = [
                line for line in response[:head_end].split(b"\r\n")
                if line.partition(b":")[0].strip().lower() != b"connection"
            ]
            writer.write(b"\r\n".join(lines) + b"\r\nConnection: keep-alive" + response[head_end:])
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(relay, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes it


asyncio.run(main())
"""

_MOTO = r"""
import logging, sys, threading, time
sys.path.insert(0, sys.argv[1])
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.core.responses import BaseResponse

# One request at a time (moto's state is not safe under concurrent writes), timed: the server's busy
# seconds and requests, asked for by a line on stdin.
busy = [0.0, 0]
lock = threading.Lock()
original = BaseResponse.call_action


def call_action(self):
    with lock:
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            busy[0] += time.perf_counter() - start
            busy[1] += 1


BaseResponse.call_action = call_action

if sys.argv[2] == "items":
    # moto's TransactWriteItems deep-copies every table it touches (to roll back a cancelled
    # transaction): a cost that grows with the table (~36 ms an append at 100 items, ~140 ms at 500
    # here) and that DynamoDB does not have. Instead: check every condition first (a transaction's
    # keys are distinct, so no check sees another's write), then write only if all pass. The same
    # outcome for the store's transactions, whatever the table's size.
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed, MockValidationException, MultipleTransactionsException,
        TooManyTransactionsException, TransactionCanceledException, TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend

    def transact_write_items(self, transact_items):
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        seen, errors, writes = set(), [], []
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            old = None
            try:
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                name = op["TableName"]
                if op_type == "Put":
                    table = self.get_table(name)
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                unique = (str(name), str(dict(sorted(key.items()))))
                if unique in seen:
                    raise MultipleTransactionsException()
                seen.add(unique)
                current = self.get_item(name, key)
                condition = op.get("ConditionExpression")
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                check = condition is None or get_filter_expression(condition, names, values).expr(current)
                if not check:
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        old = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=old)
                writes.append((op_type, op, name, key, names, values))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), old))
            except Exception as e:
                errors.append((type(e).__name__, str(e), old))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, name, key, names, values in writes:
            if op_type == "Put":
                self.put_item(name, op["Item"])
            elif op_type == "Delete":
                self.delete_item(name, key)
            elif op_type == "Update":
                self.update_item(name, key, update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names, expression_attribute_values=values)

    DynamoDBBackend.transact_write_items = transact_write_items

from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%s" % server.get_host_and_port(), flush=True)
for _ in sys.stdin:  # a line: the busy seconds and requests so far; end of input: stop
    print(busy[0], busy[1], flush=True)
server.stop()
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    try:
        session_endpoint()  # only to learn that moto is here, and to set the fake credentials
    except MotoUnavailable as exc:
        return skip(f"{exc}: the DynamoDB scaling benchmark is skipped", args.check)
    stop_session_server()
    moto = Moto("tables" if args.moto_table_copies else "items")
    try:
        asyncio.run(run(args, moto, report))
    finally:
        moto.close()
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
