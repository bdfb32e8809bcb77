"""Benchmark of payload transforms and crypto-shredding on SQLite: cost per event against the plain path.

Run from the repository root::

    python bench/transforms.py              # 20k events per variant, 3 rounds (about a minute); exit 0
    python bench/transforms.py --quick      # 2k events, 1 round: the CI smoke test (seconds)
    python bench/transforms.py --only shredding --repeat 5

What is measured, in a fresh SQLite file per variant and round (WAL,
``synchronous=NORMAL``; in ``/dev/shm`` where there is one, so the disk's
waits do not drown the CPU cost being measured): appending N events (batches of 10 per stream, 200
streams; a user-profile event of about 400 bytes of JSON, half of it free text)
and reading them all back with ``read_all``, touching every event's ``data``
(so lazy decoding is paid for).

* **plain**: the store itself;
* **zlib**, **aes-gcm**, **zlib + aes-gcm**: ``TransformingStore`` around it;
* **shredding**: ``ShreddingStore`` (name and email personal, 200 subjects,
  keys in a ``StoreKeyStore`` on the same store; key creation is part of the
  first appends);
* **shredding, forgotten**: the same events read after every subject was
  forgotten: the personal fields come back as the marker. The target: no
  slower than reading them with their keys (ratio >= 1).

Ratios are of median rates over the plain path (append, read) measured in
the same run, the variants interleaved round by round; the stored size per
event is the average of ``length(data) + length(metadata)`` in the file.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    parse_checked,
    version,
    versions_line,
    versus_ratio,
)

from streamsrc.events import EventData
from streamsrc.shredding import ShreddingStore
from streamsrc.store import Store, open_store
from streamsrc.transforms import AesGcm, TransformingStore, Zlib

SECTIONS = ("transforms", "shredding")
STREAMS = 200
BATCH = 10
KEY = AesGcm({"k1": b"k" * 32}, "k1")
PERSONAL = {"ProfileUpdated": ["name", "email"]}


def event(n: int) -> EventData:
    subject = f"u{n % STREAMS}"
    return EventData(
        "ProfileUpdated",
        {
            "user_id": subject,
            "name": f"User Number {n}",
            "email": f"user{n}@example.com",
            "plan": "pro" if n % 3 else "free",
            "score": n * 7 % 1000,
            "bio": f"Writes about engines, looms and numbers; note {n}. " * 3,
        },
        {"by": "bench", "$subject": subject},
    )


def work(n: int) -> list[tuple[str, list[EventData]]]:
    """The appends: batches of ``BATCH`` events, streams round-robin."""
    events = [event(i) for i in range(n)]
    return [(f"user-{k // BATCH % STREAMS}", events[k : k + BATCH]) for k in range(0, n, BATCH)]


Wrap = Callable[[Store], Any]

VARIANTS: dict[str, tuple[str, Wrap]] = {
    "plain": ("transforms", lambda s: s),
    "zlib": ("transforms", lambda s: TransformingStore(s, [Zlib()])),
    "aes-gcm": ("transforms", lambda s: TransformingStore(s, [KEY])),
    "zlib + aes-gcm": ("transforms", lambda s: TransformingStore(s, [Zlib(), KEY])),
    "shredding": ("shredding", lambda s: ShreddingStore(s, PERSONAL)),
}


@dataclass
class Variant(Rates):
    name: str
    stored_bytes: float = 0.0


async def run_variant(
    path: Path, wrap: Wrap, todo: list[tuple[str, list[EventData]]], forget: bool
) -> tuple[float, float, float | None]:
    """(append seconds, read seconds, read seconds after forgetting every subject or None)."""
    async with open_store(f"sqlite:///{path}?synchronous=normal") as inner:
        store = wrap(inner)
        t0 = time.perf_counter()
        for stream, batch in todo:
            (await store.append(stream, batch)).unwrap()
        appended = time.perf_counter() - t0
        read = await timed_read(store)
        forgotten = None
        if forget:
            for k in range(STREAMS):
                await store.forget(f"u{k}")
            forgotten = await timed_read(store)
        return appended, read, forgotten


async def timed_read(store: Any) -> float:
    t0 = time.perf_counter()
    count = 0
    async with store.read_all(types={"ProfileUpdated"}).open() as events:
        async for e in events:
            count += len(e.data)
    assert count > 0
    return time.perf_counter() - t0


def stored_size(path: Path) -> float:
    with sqlite3.connect(path) as db:
        (size,) = db.execute(
            "SELECT avg(length(data) + coalesce(length(metadata), 0)) FROM events"
            " WHERE type = 'ProfileUpdated'"
        ).fetchone()
    return float(size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3)
    args = parse_checked(parser, argv)
    n = 2_000 if args.quick else 20_000
    repeat = 1 if args.quick and args.repeat == 3 else args.repeat
    report = Report()
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"cryptography {version('cryptography')}",
                f"SQLite {sqlite3.sqlite_version}",
            ],
            cpus=True,
        )
    )
    print(
        f"{repeat} interleaved round(s){', QUICK sizes' if args.quick else ''}; {n:,} events per variant "
        f"in batches of {BATCH}; rates are medians over rounds; ratio = variant / plain"
    )
    todo = work(n)
    wanted = {"plain"} | {v for v, (section, _) in VARIANTS.items() if not args.only or section in args.only}
    appends = {v: Variant(v) for v in VARIANTS if v in wanted}
    reads = {v: Variant(v) for v in VARIANTS if v in wanted}
    forgotten = Variant("shredding, forgotten")
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="streamsrc-bench-", dir=shm) as tmp:
        for r in range(repeat):
            for name in appends:
                path = Path(tmp) / f"{r}-{name.replace(' ', '')}.db"
                wrap = VARIANTS[name][1]
                a, b, c = anyio.run(run_variant, path, wrap, todo, name == "shredding")
                appends[name].rates.append(n / a)
                reads[name].rates.append(n / b)
                appends[name].stored_bytes = reads[name].stored_bytes = stored_size(path)
                if c is not None:
                    forgotten.rates.append(n / c)
                path.unlink()
    table = Table(
        [
            "variant",
            "k events/s",
            "µs/event",
            "+µs/event",
            "bytes/event",
            "ratio",
            "rounds",
            "target",
            "result",
        ],
        [22, 11, 9, 10, 12, 7, 11, 7, 6],
    )
    for label, variants in (("append", appends), ("read_all, every event's data", reads)):
        plain = variants["plain"]
        rows = []
        for v in variants.values():
            _, cells = versus_ratio(v, plain)
            extra = 1e6 / v.median - 1e6 / plain.median
            rows.append(
                [
                    v.name,
                    f"{v.median / 1e3:.1f}",
                    f"{1e6 / v.median:.2f}",
                    f"{extra:+.2f}" if v is not plain else "",
                    f"{v.stored_bytes:.0f}",
                    *cells,
                    "(info)",
                    "",
                ]
            )
        table.print([f"{label.capitalize()} on SQLite: each variant against the plain path"], rows)
    if forgotten.rates:
        shredded = reads["shredding"]
        ratio, cells = versus_ratio(forgotten, shredded)
        rows = []
        for v, tail in ((forgotten, [*cells, *report.target_cells("forgotten read", ratio, 1.0)]),):
            rows.append([v.name, f"{v.median / 1e3:.1f}", f"{1e6 / v.median:.2f}", "", "", *tail])
        rows.append(
            [
                shredded.name,
                f"{shredded.median / 1e3:.1f}",
                f"{1e6 / shredded.median:.2f}",
                "",
                "",
                "",
                "",
                "",
                "",
            ]
        )
        table.print(["Reading a forgotten subject's events vs reading them with their keys"], rows)
    return report.finish(args.check)


if __name__ == "__main__":
    raise SystemExit(main())
