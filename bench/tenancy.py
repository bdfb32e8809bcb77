"""Benchmark of multi-tenancy on SQLite: a tenant's view (``store.tenant(name)``) against the plain store.

Run from the repository root::

    python bench/tenancy.py              # 20k events per variant, 4 other tenants, 5 rounds; exit 0
    python bench/tenancy.py --quick      # 2k events, 1 round: the CI smoke test (seconds)
    python bench/tenancy.py --check      # exit 1 if tenant scoping adds more than 10%

What is measured, in SQLite files (WAL, ``synchronous=NORMAL``; in ``/dev/shm``
where there is one, so the disk's waits do not drown the CPU cost being
measured) that already hold four other tenants' events (N each, interleaved
in the log), each variant on its own copy of the same file:

* **append**: N events (about 400 bytes of JSON each) in batches of 10, 200
  streams round-robin, through ``store.tenant("acme")`` against the plain
  store appending the same events to the same names (``@acme/user-k``): the
  same rows written, so the difference is the view's own work (names
  checked and mapped, results mapped back);
* **read_all**: the tenant's N events through the view (``read_all()``)
  against the plain store's ``read_all(stream_prefix="@acme/")``: the same
  filtered query, so the difference is the view's (each event renamed and
  checked against the prefix); every event's ``stream`` and ``data`` is read;
* **read, 200 streams**: every stream read whole through the view against the
  plain store reading the same streams by their stored names.

Target: each view/plain ratio >= 0.90 (tenant scoping adds at most 10%).
For information: the tenant's ``read_all`` on the shared store against a
plain ``read_all`` of a store holding only the tenant's events (what sharing
the log costs: SQLite walks the other tenants' rows by position and skips them
in the ``WHERE``), and the time of a tenant's first ``head()`` (no saved mark:
its events read from the start of the log) and of the next one.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _common import Rates, Report, Table, add_common_args, parse_checked, version, versions_line, versus_ratio

from streamsrc.events import EventData
from streamsrc.store import open_store

SECTIONS = ("append", "read_all", "read")
STREAMS = 200
BATCH = 10
OTHERS = 4
TENANT = "acme"
PREFIX = f"@{TENANT}/"
TARGET = 0.90


def event(n: int, who: str) -> EventData:
    return EventData(
        "ProfileUpdated",
        {
            "user_id": f"u{n % STREAMS}",
            "name": f"User Number {n} of {who}",
            "email": f"user{n}@{who}.example.com",
            "plan": "pro" if n % 3 else "free",
            "score": n * 7 % 1000,
            "bio": f"Writes about engines, looms and numbers; note {n}. " * 3,
        },
        {"by": "bench"},
    )


def work(n: int, who: str) -> list[tuple[str, list[EventData]]]:
    """The appends: batches of ``BATCH`` events, streams round-robin (names as the tenant sees them)."""
    events = [event(i, who) for i in range(n)]
    return [(f"user-{k // BATCH % STREAMS}", events[k : k + BATCH]) for k in range(0, n, BATCH)]


def url(path: Path) -> str:
    return f"sqlite:///{path}?synchronous=normal"


async def prefill(path: Path, n: int) -> None:
    """The other tenants' events, interleaved batch by batch in the log."""
    async with open_store(url(path)) as opened:
        store: Any = opened
        todo = [(t, work(n, f"t{t}")) for t in range(OTHERS)]
        for k in range(len(todo[0][1])):
            for t, batches in todo:
                stream, batch = batches[k]
                (await store.tenant(f"t{t}").append(stream, batch)).unwrap()


@dataclass
class Variant(Rates):
    name: str


async def run(
    path: Path, scoped: bool, todo: list[tuple[str, list[EventData]]]
) -> tuple[float, float, float]:
    """(append, read_all, read of every stream) seconds, through the view or the plain store."""
    async with open_store(url(path)) as opened:
        inner: Any = opened
        store = inner.tenant(TENANT) if scoped else inner
        prefix = "" if scoped else PREFIX
        t0 = time.perf_counter()
        for stream, batch in todo:
            (await store.append(prefix + stream, batch)).unwrap()
        appended = time.perf_counter() - t0
        t0 = time.perf_counter()
        read_all = store.read_all() if scoped else store.read_all(stream_prefix=PREFIX)
        count = await touch(read_all)
        assert count == sum(len(b) for _, b in todo), count
        all_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        count = 0
        for k in range(STREAMS):
            count += await touch(store.read(f"{prefix}user-{k}"))
        assert count == sum(len(b) for _, b in todo), count
        streams_read = time.perf_counter() - t0
        return appended, all_read, streams_read


async def touch(events: Any) -> int:
    count = 0
    async with events.open() as opened:
        async for e in opened:
            count += len(e.stream) > 0 and len(e.data) > 0
    return count


async def own_store(path: Path, todo: list[tuple[str, list[EventData]]]) -> float:
    """read_all seconds of a store holding only the tenant's events."""
    async with open_store(url(path)) as store:
        for stream, batch in todo:
            (await store.append(stream, batch)).unwrap()
        t0 = time.perf_counter()
        await touch(store.read_all())
        return time.perf_counter() - t0


async def heads(path: Path) -> tuple[float, float]:
    """Seconds of a new view's first head() (no saved mark) and of the next one."""
    async with open_store(url(path)) as opened:
        inner: Any = opened
        view = inner.tenant(TENANT)
        t0 = time.perf_counter()
        first = await view.head()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert await view.head() == first > 0
        return cold, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=5)
    args = parse_checked(parser, argv)
    n = 2_000 if args.quick else 20_000
    repeat = 1 if args.quick and args.repeat == 5 else args.repeat
    report = Report()
    print(versions_line([f"streamsrc {version('streamsrc')}", f"SQLite {sqlite3.sqlite_version}"], cpus=True))
    print(
        f"{repeat} interleaved round(s){', QUICK sizes' if args.quick else ''}; {n:,} events per variant "
        f"in batches of {BATCH}, {OTHERS} other tenants with {n:,} each in the store; rates are medians "
        "over rounds; ratio = tenant view / plain store"
    )
    todo = work(n, TENANT)
    names = {"append": "append", "read_all": "read_all", "read": f"read, {STREAMS} streams"}
    plain = {s: Variant("plain store") for s in SECTIONS}
    view = {s: Variant(f'store.tenant("{TENANT}")') for s in SECTIONS}
    own = Variant("plain store of its own")
    cold: list[float] = []
    warm: list[float] = []
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="streamsrc-bench-", dir=shm) as tmp:
        template = Path(tmp) / "shared.db"
        anyio.run(prefill, template, n)
        for r in range(repeat):
            order = (False, True) if r % 2 == 0 else (True, False)
            for scoped in order:
                path = Path(tmp) / f"{r}-{scoped}.db"
                shutil.copy(template, path)
                seconds = anyio.run(run, path, scoped, todo)
                for section, s in zip(SECTIONS, seconds, strict=True):
                    (view if scoped else plain)[section].rates.append(n / s)
                if scoped:
                    a, b = anyio.run(heads, path)
                    cold.append(a)
                    warm.append(b)
                path.unlink()
            path = Path(tmp) / f"{r}-own.db"
            own.rates.append(n / anyio.run(own_store, path, todo))
            path.unlink()
    table = Table(
        ["variant", "k events/s", "µs/event", "+µs/event", "ratio", "rounds", "target", "result"],
        [26, 11, 9, 10, 7, 11, 7, 6],
    )
    for section in SECTIONS:
        if args.only and section not in args.only:
            continue
        reference, subject = plain[section], view[section]
        ratio, cells = versus_ratio(subject, reference)
        extra = 1e6 / subject.median - 1e6 / reference.median
        rows = [
            [
                reference.name,
                f"{reference.median / 1e3:.1f}",
                f"{1e6 / reference.median:.2f}",
                "",
                "",
                "",
                "",
                "",
            ],
            [
                subject.name,
                f"{subject.median / 1e3:.1f}",
                f"{1e6 / subject.median:.2f}",
                f"{extra:+.2f}",
                *cells,
                *report.target_cells(f"tenant {names[section]}", ratio, TARGET),
            ],
        ]
        table.print(
            [f"{names[section].capitalize()} on SQLite: a tenant's view against the plain store"], rows
        )
    shared = view["read_all"]
    ratio, cells = versus_ratio(shared, own)
    table.print(
        ["For information: the tenant's read_all on the shared store vs a store holding only its events"],
        [
            [own.name, f"{own.median / 1e3:.1f}", f"{1e6 / own.median:.2f}", "", "", "", "", ""],
            [
                shared.name,
                f"{shared.median / 1e3:.1f}",
                f"{1e6 / shared.median:.2f}",
                "",
                *cells,
                "(info)",
                "",
            ],
        ],
    )
    print(
        f"\nhead() of a new view with no saved mark: {1e3 * sorted(cold)[len(cold) // 2]:.1f} ms "
        f"(reads the tenant's {n:,} events among {n * (OTHERS + 1):,}); the next call: "
        f"{1e3 * sorted(warm)[len(warm) // 2]:.2f} ms"
    )
    return report.finish(args.check)


if __name__ == "__main__":
    raise SystemExit(main())
