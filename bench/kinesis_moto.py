"""Benchmark of streamsrc's Kinesis sink against raw ``put_records`` of the same batches, on moto's server.

Run from the repository root::

    python bench/kinesis_moto.py                 # full run (2-3 minutes), a report; exit 0
    python bench/kinesis_moto.py --quick         # small sizes: a smoke test for CI (~15 s)
    python bench/kinesis_moto.py --only overhead # the client-side section alone (no moto calls)
    python bench/kinesis_moto.py --repeat 5

The server is the one named by ``STREAMSRC_TEST_AWS_ENDPOINT`` if set, else a
``ThreadedMotoServer`` started in this process by the tests' own
``tests/moto_server.py`` (127.0.0.1, a free port, fake credentials). With
moto in the same process, its request handling shares the interpreter with
the client: the figures are moto's speed, not Kinesis's, and only the ratios
mean something.

As in the other benchmarks the figure that matters is a *ratio* measured in
one run: the variants run interleaved (A B A B ...) ``--repeat`` times after
an untimed warm-up round, each round on a fresh Kinesis stream (made
untimed), and the table shows median rates and the ratio of medians. The
variants publish the same recorded events, in the same batches of 500:

* streamsrc: ``Stream.emits(events).through(kinesis_sink(client, name)).drain()``
  (JSON payload per event, size checks, batching, per-record results);
* raw: a loop calling ``put_records`` on each batch, with the payload encoded
  in the loop the same way (``recorded_to_json`` and compact JSON) and
  ``FailedRecordCount`` checked;
* raw, payloads encoded before the clock starts: the bare cost of the calls.

moto takes a few hundred microseconds a record and its speed varies with the
machine's load, so the ratios against it are noisy (see the ``rounds``
column). The second section (``overhead``) runs the same three variants
against an in-process client that answers ``put_records`` at once: what is
left is the client-side cost per record of the sink and of the raw loop
(mostly encoding the JSON payload), which is what the sink adds to any
Kinesis, real or not.

No target: the issue asks for the figures (records/s), reported as "(info)".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    parse_checked,
    skip,
    version,
    versions_line,
    versus_ratio,
)

from streamsrc.events import RecordedEvent, encode_json, recorded_to_json
from streamsrc.integrations.kinesis import MAX_RECORDS_PER_CALL, aws_client, kinesis_sink, partition_key
from streamsrc.stream import Stream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from moto_server import REGION, MotoUnavailable, session_endpoint, stop_session_server  # the tests' server

SECTIONS = ("sink", "overhead")
SHARDS = 4
STREAMS = 100


@dataclass(frozen=True)
class Sizes:
    events: int  # events published per timed round to moto
    overhead_events: int  # events per round to the in-process answering client


FULL = Sizes(events=6_000, overhead_events=50_000)
QUICK = Sizes(events=2_000, overhead_events=10_000)

Run = Callable[[Any, str, Any], Awaitable[None]]
"""A variant: publish the prepared events to the named Kinesis stream with the client."""


def _as_is(events: list[RecordedEvent]) -> Any:
    return events


@dataclass
class Variant(Rates):
    name: str
    run: Run
    prepare: Callable[[list[RecordedEvent]], Any] = _as_is
    """What the run gets, made from the events before the clock starts."""


def make_events(n: int) -> list[RecordedEvent]:
    """``n`` recorded events over ``STREAMS`` streams (the same for every variant)."""
    t0 = datetime(2026, 11, 27, tzinfo=UTC)
    out = []
    for i in range(n):
        data = {"n": i, "name": f"item-{i}", "amount": i / 4}
        moment = t0 + timedelta(microseconds=i)
        out.append(
            RecordedEvent(
                f"stream-{i % STREAMS}", i // STREAMS + 1, i + 1, "Bumped", data, None, uuid.uuid4(), moment
            )
        )
    return out


def entry(e: RecordedEvent) -> dict[str, Any]:
    return {"Data": encode_json(recorded_to_json(e)).encode("utf-8"), "PartitionKey": partition_key(e.stream)}


def batches_of(events: list[RecordedEvent]) -> list[list[RecordedEvent]]:
    return [events[i : i + MAX_RECORDS_PER_CALL] for i in range(0, len(events), MAX_RECORDS_PER_CALL)]


async def streamsrc_run(client: Any, name: str, events: list[RecordedEvent]) -> None:
    await Stream.emits(events, chunk_size=MAX_RECORDS_PER_CALL).through(kinesis_sink(client, name)).drain()


async def raw_run(client: Any, name: str, events: list[RecordedEvent]) -> None:
    for batch in batches_of(events):
        response = await client.put_records(StreamName=name, Records=[entry(e) for e in batch])
        if response["FailedRecordCount"]:
            raise RuntimeError(f"raw put_records: {response['FailedRecordCount']} records failed")


def encode_batches(events: list[RecordedEvent]) -> list[list[dict[str, Any]]]:
    return [[entry(e) for e in batch] for batch in batches_of(events)]


async def pre_encoded_run(client: Any, name: str, calls: list[list[dict[str, Any]]]) -> None:
    for records in calls:
        response = await client.put_records(StreamName=name, Records=records)
        if response["FailedRecordCount"]:
            raise RuntimeError(f"raw put_records: {response['FailedRecordCount']} records failed")


async def records_in(client: Any, name: str) -> int:
    """How many records the stream holds (every shard read from its start)."""
    total = 0
    for shard in (await client.list_shards(StreamName=name))["Shards"]:
        iterator = (
            await client.get_shard_iterator(
                StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while True:
            page = await client.get_records(ShardIterator=iterator, Limit=10_000)
            total += len(page["Records"])
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
    return total


async def measure(client: Any, variants: Sequence[Variant], events: list[RecordedEvent], repeat: int) -> None:
    """An untimed warm-up round (a tenth of the events), then ``repeat`` interleaved timed rounds; each run
    publishes to a fresh stream, deleted afterwards, and is checked to have published every event."""
    for r in range(-1, repeat):
        work = events[: max(MAX_RECORDS_PER_CALL, len(events) // 10)] if r < 0 else events
        for v in variants:
            name = f"bench-{uuid.uuid4().hex[:12]}"
            await client.create_stream(StreamName=name, ShardCount=SHARDS)
            try:
                prepared = v.prepare(work)
                gc.collect()
                t0 = time.perf_counter()
                await v.run(client, name, prepared)
                elapsed = time.perf_counter() - t0
                got = await records_in(client, name)
                if got != len(work):
                    raise RuntimeError(f"{v.name}: {got} records in the stream, expected {len(work)}")
                if r >= 0:
                    v.rates.append(len(work) / elapsed)
            finally:
                await client.delete_stream(StreamName=name)


class AnsweringKinesis:
    """A client answering ``put_records`` at once as Kinesis does when every record is taken: no network,
    no server, so what the variants cost beyond the calls is all that is timed."""

    def __init__(self) -> None:
        self.records = 0

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        await asyncio.sleep(0)
        first = self.records
        self.records += len(Records)
        results = [
            {"SequenceNumber": str(first + i), "ShardId": "shardId-000000000000"} for i in range(len(Records))
        ]
        return {"FailedRecordCount": 0, "Records": results}


async def measure_overhead(variants: Sequence[Variant], events: list[RecordedEvent], repeat: int) -> None:
    """As :func:`measure`, each run with a fresh :class:`AnsweringKinesis`."""
    for r in range(-1, repeat):
        work = events[: max(MAX_RECORDS_PER_CALL, len(events) // 10)] if r < 0 else events
        for v in variants:
            client = AnsweringKinesis()
            prepared = v.prepare(work)
            gc.collect()
            t0 = time.perf_counter()
            await v.run(client, "bench", prepared)
            elapsed = time.perf_counter() - t0
            if client.records != len(work):
                raise RuntimeError(f"{v.name}: {client.records} records put, expected {len(work)}")
            if r >= 0:
                v.rates.append(len(work) / elapsed)


TABLE = Table(
    header=("variant", "records", "k rec/s", "us/rec", "ratio", "rounds", "target", "result"),
    widths=(58, 8, 8, 7, 7, 11, 7, 6),
)


def row(v: Variant, n: int, ratio_cells: list[str], target: list[str]) -> list[str]:
    return [v.name, f"{n:,}", f"{v.median / 1000:.2f}", f"{1e6 / v.median:.0f}", *ratio_cells, *target]


async def bench_sink(client: Any, sizes: Sizes, repeat: int, report: Report) -> None:
    events = make_events(sizes.events)
    subject = Variant("streamsrc kinesis_sink (batches of 500)", run=streamsrc_run)
    raw = Variant("raw put_records of the same batches, encoding in the loop", run=raw_run)
    bare = Variant("raw put_records, payloads encoded before timing", pre_encoded_run, encode_batches)
    await measure(client, [raw, subject, bare], events, repeat)
    ratio, cells = versus_ratio(subject, raw)
    bare_ratio, bare_cells = versus_ratio(subject, bare)
    TABLE.print(
        [
            f"Kinesis sink: {sizes.events:,} recorded events of {STREAMS} streams to a {SHARDS}-shard stream,"
            " in put_records calls of 500",
            "  ratio = streamsrc median / reference median; rounds = per-round ratios (noise)",
        ],
        [
            row(subject, sizes.events, ["", ""], ["", ""]),
            row(raw, sizes.events, cells, report.target_cells("sink vs raw put_records", ratio, None)),
            row(bare, sizes.events, bare_cells, report.target_cells("", bare_ratio, None)),
        ],
    )


async def bench_overhead(sizes: Sizes, repeat: int, report: Report) -> None:
    n = sizes.overhead_events
    events = make_events(n)
    subject = Variant("streamsrc kinesis_sink (batches of 500)", run=streamsrc_run)
    raw = Variant("raw put_records loop, encoding in the loop", run=raw_run)
    bare = Variant("raw put_records loop, payloads encoded before timing", pre_encoded_run, encode_batches)
    await measure_overhead([raw, subject, bare], events, repeat)
    ratio, cells = versus_ratio(subject, raw)
    bare_ratio, bare_cells = versus_ratio(subject, bare)
    TABLE.print(
        [
            f"Client-side cost: the same, {n:,} events, to a client that answers at once (no server)",
            f"  per record: the sink {1e6 / subject.median:.1f} us, the raw loop {1e6 / raw.median:.1f} us"
            f" (of which encoding the payload: {1e6 / raw.median - 1e6 / bare.median:.1f} us)",
        ],
        [
            row(subject, n, ["", ""], ["", ""]),
            row(raw, n, cells, report.target_cells("", ratio, None)),
            row(bare, n, bare_cells, report.target_cells("", bare_ratio, None)),
        ],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser, SECTIONS, default_repeat=9)
    return parse_checked(parser, argv)


async def run(args: argparse.Namespace, endpoint: str, report: Report) -> None:
    sizes = QUICK if args.quick else FULL
    repeat = min(args.repeat, 2) if args.quick else args.repeat
    async with aws_client("kinesis", region=REGION, endpoint_url=endpoint) as client:
        if not args.only or "sink" in args.only:
            await bench_sink(client, sizes, repeat, report)
    if not args.only or "overhead" in args.only:
        await bench_overhead(sizes, repeat, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        endpoint = session_endpoint()
    except MotoUnavailable as exc:
        return skip(f"moto's server is not available: {exc}", args.check)
    print(
        versions_line(
            [
                "streamsrc Kinesis sink vs raw aiobotocore put_records",
                f"aiobotocore {version('aiobotocore')}",
                f"moto {version('moto')} at {endpoint}",
            ]
        )
    )
    report = Report()
    try:
        asyncio.run(run(args, endpoint, report))
    finally:
        stop_session_server()
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
