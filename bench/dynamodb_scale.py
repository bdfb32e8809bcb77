"""DynamoDB store: how appends scale with writers in each mode, and the indexer of order=stream.

moto answers in microseconds and serialises requests, so on its own it says
nothing about concurrency; DynamoDB answers in ~10 ms whatever the number of
writers on distinct items. So every request here goes through a loopback proxy
that holds each request for a fixed latency (``--latency-ms``, 10) before
relaying it: throughput becomes a function of concurrency, as on DynamoDB.

1. appends/s with 1, 8, 32, 128 writers (quick: 1, 8, 32), each its own store
   (its own client, as separate processes), on distinct streams, one event
   per append, in ``order=stream`` and ``order=global``; target: order=stream
   at 32 writers >= 16x its 1 writer. moto itself handles one request at a time
   (its transactions copy tables): on a busy machine at ~25-40 ms a request it,
   not the latency, is the ceiling, and the ratio is capped near
   ``(latency + moto) / moto``; ``--latency-ms 1000 --orders stream`` shows the
   shape a 10 ms DynamoDB gives (writes on distinct items in parallel).
2. the indexer: events indexed per second vs the rate this process reads the
   same DynamoDB Streams records (target >= 0.5x), and the lag from an append
   to its visibility in ``read_all`` with ``run_indexer`` following the stream
   (median, p99).

On paper (docs/aws.md): WCU per append and a table's ceiling in each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from _common import Report, Table, add_common_args, parse_checked, skip, version, versions_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import contextlib

from moto_server import REGION, MotoUnavailable, session_endpoint, stop_session_server

from streamsrc.events import EventData
from streamsrc.store import open_store

SECTIONS = ("writers", "indexer")
TABLE = Table(["measure", "value", "ratio", "target", "result"], [44, 14, 10, 8, 6])


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that holds each chunk a client sends for ``latency`` seconds."""

    def __init__(self, target: tuple[str, int], latency: float) -> None:
        self.target, self.latency = target, latency
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b, delay in ((client, server, self.latency), (server, client, 0.0)):
                threading.Thread(target=self._pipe, args=(a, b, delay), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(1 << 16):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def url_of(endpoint: str, order: str, streams: bool = False) -> str:
    table = f"bench-{order}-{uuid.uuid4().hex[:8]}"
    return (
        f"dynamodb://{table}?region={REGION}&endpoint_url={endpoint}&create=true&order={order}"
        f"&streams={'true' if streams else 'false'}&retries=20"
    )


async def appends_per_second(endpoint: str, order: str, writers: int, per_writer: int) -> float:
    url = url_of(endpoint, order)
    async with open_store(url):
        pass  # the tables, made before the clock starts
    from streamsrc.store.dynamodb import DynamoDBStore

    stores = await asyncio.gather(*(DynamoDBStore(url).open() for _ in range(writers)))
    try:

        async def write(w: int) -> None:
            for n in range(per_writer):
                result = await stores[w].append(f"w-{w}", [EventData("E", {"n": n})])
                result.unwrap()

        start = time.perf_counter()
        await asyncio.gather(*(write(w) for w in range(writers)))
        return writers * per_writer / (time.perf_counter() - start)
    finally:
        for store in stores:
            await store.aclose()


async def bench_writers(endpoint: str, quick: bool, orders: Sequence[str], report: Report) -> None:
    counts = (1, 8, 32) if quick else (1, 8, 32, 128)
    per_writer = 8 if quick else 24
    rows = []
    for order in orders:
        rates = {n: await appends_per_second(endpoint, order, n, per_writer) for n in counts}
        for n in counts:
            ratio = rates[n] / rates[1]
            label = f"order={order}: {n} writers, appends/s"
            target = 16.0 if order == "stream" and n == 32 else None
            cells = report.target_cells(label, ratio, target)
            rows.append([label, f"{rates[n]:,.0f}", f"{ratio:.1f}x", *cells])
    TABLE.print([f"1. appends/s by writers ({per_writer} appends each, 1 event, distinct streams)"], rows)


async def bench_indexer(endpoint: str, direct: str, quick: bool, report: Report) -> None:
    from streamsrc.integrations.dynamodb_index import run_indexer
    from streamsrc.integrations.dynamodb_streams import aws_client, dynamodb_stream_source
    from streamsrc.store.dynamodb import DynamoDBStore, index_events

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
    async with aws_client("dynamodbstreams", region=REGION, endpoint_url=endpoint) as client:
        start = time.perf_counter()
        records = await dynamodb_stream_source(client, table=table).to_list()
        read_rate = len(records) / (time.perf_counter() - start)
    async with open_store(url) as store:
        assert isinstance(store, DynamoDBStore)
        events = [r.event for r in records]
        start = time.perf_counter()
        for k in range(0, len(events), 1000):
            await index_events(store, events[k : k + 1000])
        index_rate = len(events) / (time.perf_counter() - start)
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
    ]

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
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    rows.append(
        ["lag append -> read_all: median, ms", f"{statistics.median(lags) * 1000:,.0f}", "", "(info)", ""]
    )
    rows.append(["lag append -> read_all: p99, ms", f"{p99 * 1000:,.0f}", "", "(info)", ""])
    TABLE.print([f"2. the indexer ({len(events):,} events of {streams_n} streams; lag: 1 writer)"], rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=1)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added to each request (10)")
    parser.add_argument("--orders", default="stream,global", help="the modes of section 1 (stream,global)")
    return parse_checked(parser, argv)


async def run(args: argparse.Namespace, direct: str, report: Report) -> None:
    host, port = direct.removeprefix("http://").split(":")
    proxy = LatencyProxy((host, int(port)), args.latency_ms / 1000)
    endpoint = f"http://127.0.0.1:{proxy.port}"
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
        f"moto behind a proxy adding {args.latency_ms:g} ms per request"
        f"{'; QUICK sizes' if args.quick else ''}"
    )
    sections = args.only or list(SECTIONS)
    try:
        if "writers" in sections:
            await bench_writers(endpoint, args.quick, args.orders.split(","), report)
        if "indexer" in sections:
            await bench_indexer(endpoint, direct, args.quick, report)
    finally:
        proxy.close()


_MOTO = """
import logging, sys
sys.path.insert(0, sys.argv[1])
from moto_server import serialise_moto_requests, use_fake_credentials
serialise_moto_requests()  # moto's transactions copy tables: one request at a time, as in the tests
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%s" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the benchmark closes it
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
    # moto in a process of its own: the writers' CPU (signing, JSON) does not slow the server down.
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    moto = subprocess.Popen(
        [sys.executable, "-c", _MOTO, tests], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert moto.stdout is not None
        endpoint = moto.stdout.readline().strip()
        asyncio.run(run(args, endpoint, report))
    finally:
        assert moto.stdin is not None
        moto.stdin.close()
        try:
            moto.wait(timeout=30)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
