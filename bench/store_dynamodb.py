"""Benchmark of streamsrc's DynamoDB store against the same raw aiobotocore calls, on one moto server.

Run from the repository root::

    python bench/store_dynamodb.py                  # full run (about 3 minutes), a report; exit 0
    python bench/store_dynamodb.py --check          # same, exit 1 if a target is missed
    python bench/store_dynamodb.py --quick          # small sizes: a smoke test for CI (~25 s)
    python bench/store_dynamodb.py --repeat 5 --only single

The server is the one named by ``STREAMSRC_TEST_AWS_ENDPOINT`` if set, else a
``ThreadedMotoServer`` on 127.0.0.1 started by the tests' own
``tests/moto_server.py`` (fake credentials). moto does the work of DynamoDB
in Python and copies every table a transaction touches, so absolute rates
are moto's, not DynamoDB's; what is measured is what the store adds.

As in the other store benchmarks every target is a *ratio* measured in one
run: the variants run interleaved (A B A B ...) ``--repeat`` times after an
untimed warm-up round, and the tables show median rates and the ratio of
medians ``streamsrc / reference``. Every run gets fresh tables (made by
``create_tables``, not timed), so both sides write into tables of the same
size. The reference makes the same calls the store makes, built by hand:

* single-event appends (awaited one by one, over a few streams): per append
  one ``TransactWriteItems`` of the event item, its id item, the commit item
  and the head update (and the stream item for a new stream);
* batches of 48 events, each to a new stream: one ``TransactWriteItems`` of
  99 items;
* ``read_all`` of the events written, a handler reading ``e.data``:
  strongly consistent ``Query`` pages of commit items (1,000 per page), each
  commit's copy of its events decoded with ``json.loads``, then each event's
  data.

Target for each: streamsrc >= 0.83x the reference's throughput (costs at most 1.2x).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    parse_checked,
    skip,
    timed_appends,
    version,
    versions_line,
    versus_ratio,
)
from returns.result import Success

from streamsrc.events import EventData, RecordedEvent
from streamsrc.store import open_store
from streamsrc.store.dynamodb import MAX_BATCH, Settings, create_tables, store_client, table_names

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from moto_server import REGION, MotoUnavailable, session_endpoint, stop_session_server

SECTIONS = ("single", "batch", "read")
TARGET = 0.83
PAGE = 1000

ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
"""The reference encodes JSON exactly as streamsrc does (compact, UTF-8, no NaN)."""


@dataclass(frozen=True)
class Sizes:
    single: int  # single-event appends ...
    single_streams: int  # ... over this many streams
    batches: int  # batches of MAX_BATCH events, each to a new stream
    read: int  # events read by read_all (written in batches of MAX_BATCH)


FULL = Sizes(single=120, single_streams=10, batches=8, read=960)
QUICK = Sizes(single=16, single_streams=4, batches=2, read=96)


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "name": f"item-{i}", "amount": i / 4}


def now_us() -> int:
    return time.time_ns() // 1000


Run = Callable[[str, int], Awaitable[float]]
"""A variant's run: given the URL of fresh tables and a number of units, the timed seconds."""


@dataclass
class Variant(Rates):
    name: str
    units: int
    per_unit: int
    run: Run


_tables = 0


def fresh_url(endpoint: str) -> str:
    global _tables
    _tables += 1
    table = f"bench-{os.getpid()}-{_tables}-{uuid.uuid4().hex[:6]}"
    # order=global: the references below make the head-item mode's calls (bench/dynamodb_scale.py
    # measures order=stream, the default for new tables).
    return f"dynamodb://{table}?region={REGION}&endpoint_url={endpoint}&order=global"


async def measure(endpoint: str, variants: Sequence[Variant], repeat: int, warm_up: int = 10) -> None:
    """A warm-up round (``1 / warm_up`` of the units), then ``repeat`` interleaved rounds on fresh tables."""
    for r in range(-1, repeat):
        for v in variants:
            url = fresh_url(endpoint)
            await create_tables(url)
            units = max(1, v.units // warm_up) if r < 0 else v.units
            gc.collect()
            elapsed = await v.run(url, units)
            if r >= 0:
                v.rates.append(units * v.per_unit / elapsed)


TABLE = Table(
    header=("variant", "events", "ev/s", "ms/ev", "min..max", "ratio", "rounds", "target", "result"),
    widths=(52, 7, 8, 7, 13, 7, 11, 7, 6),
)


def rate_cells(v: Variant) -> list[str]:
    return [
        v.name,
        f"{v.units * v.per_unit:,}",
        f"{v.median:,.0f}",
        f"{1000 / v.median:.2f}",
        f"{min(v.rates):,.0f}..{max(v.rates):,.0f}",
    ]


def rows(report: Report, label: str, subject: Variant, reference: Variant) -> list[list[str]]:
    ratio, cells = versus_ratio(subject, reference)
    return [
        [*rate_cells(subject), "", "", "", ""],
        [*rate_cells(reference), *cells, *report.target_cells(label, ratio, TARGET)],
    ]


# ---------------------------------------------------------------------------- the reference's calls


class Raw:
    """The store's writes, made by hand with aiobotocore (versions and head kept in the client)."""

    def __init__(self, client: Any, url: str) -> None:
        names = table_names(Settings.from_url(url).table)
        self.client, self.events, self.log = client, names["events"], names["log"]
        self.head = 0
        self.seqs: dict[str, int] = {}

    async def append(self, stream: str, events: Sequence[EventData]) -> None:
        current = self.seqs.get(stream, 0)  # the store assumes a stream it has not seen is new
        head, t = self.head, now_us()
        items, ids, copy = [], [], []
        for k, e in enumerate(events):
            seq, position, data = current + k + 1, head + k + 1, ENCODE(e.data)
            item = {
                "stream": {"S": stream},
                "seq": {"N": str(seq)},
                "position": {"N": str(position)},
                "type": {"S": e.type},
                "data": {"S": data},
                "id": {"S": str(e.id)},
                "time": {"N": str(t)},
            }
            items.append(
                {
                    "Put": {
                        "TableName": self.events,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(#q)",
                        "ExpressionAttributeNames": {"#q": "seq"},
                    }
                }
            )
            ids.append(
                {
                    "Put": {
                        "TableName": self.log,
                        "Item": {
                            "pk": {"S": f"id:{e.id}"},
                            "sk": {"S": "-"},
                            "stream": {"S": stream},
                            "seq": {"N": str(seq)},
                            "position": {"N": str(position)},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            copy.append((e.type, data, None, str(e.id), t))
        items += ids
        if current == 0:
            items.append(
                {"Put": {"TableName": self.log, "Item": {"pk": {"S": "streams"}, "sk": {"S": stream}}}}
            )
        n = len(events)
        commit = {
            "pk": {"S": "log"},
            "sk": {"S": f"{head + n:020d}"},
            "stream": {"S": stream},
            "seq": {"N": str(current + 1)},
            "position": {"N": str(head + 1)},
            "events": {"S": ENCODE(copy)},
        }
        items.append(
            {
                "Put": {
                    "TableName": self.log,
                    "Item": commit,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        )
        update: dict[str, Any] = {
            "TableName": self.log,
            "Key": {"pk": {"S": "head"}, "sk": {"S": "0"}},
            "UpdateExpression": "SET #p = :new",
            "ExpressionAttributeNames": {"#p": "position"},
            "ExpressionAttributeValues": {":new": {"N": str(head + n)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if head == 0:
            update["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            update["ConditionExpression"] = "#p = :old"
            update["ExpressionAttributeValues"][":old"] = {"N": str(head)}
        items.append({"Update": update})
        await self.client.transact_write_items(TransactItems=items)
        self.head, self.seqs[stream] = head + n, current + n

    async def read_all_sum(self) -> int:
        total, start = 0, None
        while True:
            params: dict[str, Any] = {
                "TableName": self.log,
                "KeyConditionExpression": "pk = :log AND sk > :after",
                "ExpressionAttributeValues": {":log": {"S": "log"}, ":after": {"S": f"{0:020d}"}},
                "Limit": PAGE,
                "ConsistentRead": True,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            response = await self.client.query(**params)
            for item in response["Items"]:
                for _type, data, _meta, _id, _t in json.loads(item["events"]["S"]):
                    total += json.loads(data)["n"]
            start = response.get("LastEvaluatedKey")
            if start is None:
                return total


async def check_count(url: str, expected: int, who: str) -> None:
    async with open_store(url) as store:
        got = await store.head()
    if got != expected:
        raise RuntimeError(f"{who} wrote up to position {got}, expected {expected}")


Work = list[tuple[str, list[EventData]]]


def append_runs(work: Work) -> tuple[Run, Run]:
    async def streamsrc_run(url: str, units: int) -> float:
        elapsed = await timed_appends(url, work[:units])
        await check_count(url, sum(len(e) for _, e in work[:units]), "streamsrc")
        return elapsed

    async def raw_run(url: str, units: int) -> float:
        async with store_client(Settings.from_url(url)) as client:
            raw = Raw(client, url)
            gc.collect()
            t0 = time.perf_counter()
            for stream, events in work[:units]:
                await raw.append(stream, events)
            elapsed = time.perf_counter() - t0
        await check_count(url, sum(len(e) for _, e in work[:units]), "raw")
        return elapsed

    return streamsrc_run, raw_run


async def bench_single(endpoint: str, sizes: Sizes, repeat: int, report: Report) -> None:
    n, k = sizes.single, sizes.single_streams
    work = [(f"stream-{i % k}", [EventData("Bumped", payload(i))]) for i in range(n)]
    streamsrc_run, raw_run = append_runs(work)
    subject = Variant("streamsrc append([e])", n, 1, streamsrc_run)
    raw = Variant("raw TransactWriteItems of the same items", n, 1, raw_run)
    await measure(endpoint, [raw, subject], repeat)
    TABLE.print(
        [f"1. Single-event appends: {n:,} events over {k} streams, each awaited"],
        rows(report, "single appends vs raw", subject, raw),
    )


async def bench_batch(endpoint: str, sizes: Sizes, repeat: int, report: Report) -> None:
    b, size = sizes.batches, MAX_BATCH
    work = [
        (f"stream-{j}", [EventData("Bumped", payload(j * size + i)) for i in range(size)]) for j in range(b)
    ]
    streamsrc_run, raw_run = append_runs(work)
    subject = Variant(f"streamsrc append(<{size} events>)", b, size, streamsrc_run)
    raw = Variant(f"raw TransactWriteItems of {2 * size + 3} items", b, size, raw_run)
    await measure(endpoint, [raw, subject], repeat, warm_up=b)
    TABLE.print(
        [f"2. Batched appends: {b:,} batches of {size} (the largest batch), each to a new stream"],
        rows(report, "batched appends vs raw", subject, raw),
    )


def add_n(total: int, e: RecordedEvent) -> int:
    n: int = e.data["n"]
    return total + n


async def bench_read(endpoint: str, sizes: Sizes, repeat: int, report: Report) -> None:
    n = sizes.read
    url = fresh_url(endpoint)
    await create_tables(url)
    async with open_store(url) as store:
        for j in range(0, n, MAX_BATCH):
            events = [EventData("Bumped", payload(i)) for i in range(j, min(n, j + MAX_BATCH))]
            if not isinstance(await store.append(f"stream-{j // MAX_BATCH % 10}", events), Success):
                raise RuntimeError("writing the events to read failed")
    want = sum(range(n))

    async def streamsrc_run(_: str, units: int) -> float:
        async with open_store(url) as store:
            gc.collect()
            t0 = time.perf_counter()
            got = await store.read_all().fold(0, add_n)
            elapsed = time.perf_counter() - t0
        if got != want:
            raise RuntimeError(f"streamsrc read {got}, expected {want}")
        return elapsed

    async def raw_run(_: str, units: int) -> float:
        async with store_client(Settings.from_url(url)) as client:
            gc.collect()
            t0 = time.perf_counter()
            got = await Raw(client, url).read_all_sum()
            elapsed = time.perf_counter() - t0
        if got != want:
            raise RuntimeError(f"raw read {got}, expected {want}")
        return elapsed

    subject = Variant("streamsrc read_all(), handler reads e.data", 1, n, streamsrc_run)
    raw = Variant("raw Query pages + json.loads", 1, n, raw_run)
    for r in range(-1, repeat):
        for v in (raw, subject):
            elapsed = await v.run(url, 1)
            if r >= 0:
                v.rates.append(n / elapsed)
    TABLE.print(
        [f"3. read_all of {n:,} events (written in batches of {MAX_BATCH})"],
        rows(report, "read_all vs raw", subject, raw),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3)
    return parse_checked(parser, argv)


async def run(args: argparse.Namespace, endpoint: str, report: Report) -> None:
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
        f"{args.repeat} interleaved rounds after a warm-up{', QUICK sizes' if args.quick else ''};"
        f" rates are medians over rounds; server: moto at {endpoint}"
    )
    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    if "single" in sections:
        await bench_single(endpoint, sizes, args.repeat, report)
    if "batch" in sections:
        await bench_batch(endpoint, sizes, args.repeat, report)
    if "read" in sections:
        await bench_read(endpoint, sizes, args.repeat, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    try:
        endpoint = session_endpoint()
    except MotoUnavailable as exc:
        return skip(f"{exc}: the DynamoDB store benchmark is skipped", args.check)
    try:
        asyncio.run(run(args, endpoint, report))
    finally:
        stop_session_server()
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
