"""Benchmark of multi-tenancy on SQLite: a tenant's view (``store.tenant(name)``) against the plain store.

Run from the repository root::

    python bench/tenancy.py              # 20k events per variant, 4 other tenants, 5 rounds; exit 0
    python bench/tenancy.py --quick      # 2k events, 1 round: the CI smoke test (seconds)
    python bench/tenancy.py --check      # exit 1 if tenant scoping adds more than 10%

What is measured, in a SQLite file per round (WAL, ``synchronous=NORMAL``; in
``/dev/shm`` where there is one, so the disk's waits do not drown the CPU cost
being measured) that already holds four other tenants' events (N each,
interleaved in the log). Both variants run on the same file in the same
process, taking turns in small slices (20 batches, one read pass, one stream;
which goes first alternates), and each is timed in CPU seconds of the
process (SQLite's threads included: what the work costs, much less shaken by
the other processes of a busy machine than wall time, shown too):

* **append**: N events (about 400 bytes of JSON each) in batches of 10, 200
  streams round-robin, through ``store.tenant("acme")`` against the plain
  store appending the same events to the same names (``@acme/user-k``): the
  same rows written, so the difference is the view's own work (names
  checked and mapped, results mapped back);
* **read_all**: the tenant's 2N events through the view (``read_all()``)
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
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
SLICE = 20
"""Batches appended by one variant before the other takes its turn."""
READ_PASSES = 3


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


Todos = tuple[list[tuple[str, list[EventData]]], list[tuple[str, list[EventData]]]]
"""The plain store's appends and the view's: the same streams, events of their own."""


@dataclass
class Variant(Rates):
    name: str
    wall: list[float] = field(default_factory=list)


class Clock:
    """CPU and wall seconds of the timed blocks of one variant (alternating with the other's)."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall


async def run(path: Path, todos: Todos, r: int) -> dict[str, tuple[Clock, Clock]]:
    """Both variants on one file, alternating in small slices (which goes first alternates too):
    per section, the (plain, view) clocks. Each appends its own events (ids of their own) to the same
    streams."""
    async with open_store(url(path)) as opened:
        inner: Any = opened
        view = inner.tenant(TENANT)
        clocks = {s: (Clock(), Clock()) for s in SECTIONS}

        def pairs(k: int) -> list[tuple[bool, Clock]]:
            plain, scoped = clocks_now
            return [(False, plain), (True, scoped)] if (k + r) % 2 == 0 else [(True, scoped), (False, plain)]

        clocks_now = clocks["append"]
        for k in range(0, len(todos[0]), SLICE):
            for scoped, clock in pairs(k // SLICE):
                with clock.timed():
                    for stream, batch in todos[scoped][k : k + SLICE]:
                        if scoped:
                            (await view.append(stream, batch)).unwrap()
                        else:
                            (await inner.append(PREFIX + stream, batch)).unwrap()
        total = sum(len(b) for todo in todos for _, b in todo)
        clocks_now = clocks["read_all"]
        for k in range(READ_PASSES):
            for scoped, clock in pairs(k):
                with clock.timed():
                    events = view.read_all() if scoped else inner.read_all(stream_prefix=PREFIX)
                    assert await touch(events) == total
        clocks_now = clocks["read"]
        for k in range(STREAMS):
            for scoped, clock in pairs(k):
                with clock.timed():
                    await touch(view.read(f"user-{k}") if scoped else inner.read(f"{PREFIX}user-{k}"))
        return clocks


async def touch(events: Any) -> int:
    count = 0
    async with events.open() as opened:
        async for e in opened:
            count += len(e.stream) > 0 and len(e.data) > 0
    return count


async def own_store(path: Path, todos: Todos) -> float:
    """read_all CPU seconds of a store holding only the tenant's events (as many as the shared one's)."""
    async with open_store(url(path)) as store:
        for stream, batch in todos[0] + todos[1]:
            (await store.append(stream, batch)).unwrap()
        clock = Clock()
        for _ in range(READ_PASSES):
            with clock.timed():
                await touch(store.read_all())
        return clock.cpu


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
    todos: Todos = (work(n, TENANT), work(n, TENANT))
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
            path = Path(tmp) / f"{r}.db"
            shutil.copy(template, path)
            clocks = anyio.run(run, path, todos, r)
            for section, (p, v) in clocks.items():
                count = {"append": n, "read_all": 2 * n * READ_PASSES, "read": 2 * n}[section]
                plain[section].rates.append(count / p.cpu)
                view[section].rates.append(count / v.cpu)
                plain[section].wall.append(count / p.wall)
                view[section].wall.append(count / v.wall)
            a, b = anyio.run(heads, path)
            cold.append(a)
            warm.append(b)
            path.unlink()
            path = Path(tmp) / f"{r}-own.db"
            own.rates.append(2 * n * READ_PASSES / anyio.run(own_store, path, todos))
            path.unlink()
    table = Table(
        ["variant", "k ev/CPU s", "CPU µs/ev", "+µs/ev", "ratio", "rounds", "wall ratio", "target", "result"],
        [26, 11, 10, 8, 7, 11, 10, 7, 6],
    )

    def row(v: Variant, *cells: str) -> list[str]:
        return [v.name, f"{v.median / 1e3:.1f}", f"{1e6 / v.median:.2f}", *cells]

    for section in SECTIONS:
        if args.only and section not in args.only:
            continue
        reference, subject = plain[section], view[section]
        ratio, cells = versus_ratio(subject, reference)
        wall = statistics.median(subject.wall) / statistics.median(reference.wall)
        extra = 1e6 / subject.median - 1e6 / reference.median
        rows = [
            row(reference, "", "", "", "", "", ""),
            row(
                subject,
                f"{extra:+.2f}",
                *cells,
                f"{wall:.2f}x",
                *report.target_cells(f"tenant {names[section]}", ratio, TARGET),
            ),
        ]
        title = f"{names[section].capitalize()} on SQLite: a tenant's view against the plain store"
        table.print([title], rows)
    shared = view["read_all"]
    ratio, cells = versus_ratio(shared, own)
    table.print(
        ["For information: the tenant's read_all on the shared store vs a store holding only its events"],
        [row(own, "", "", "", "", "", ""), row(shared, "", *cells, "", "(info)", "")],
    )
    print(
        f"\nhead() of a new view with no saved mark: {1e3 * statistics.median(cold):.1f} ms "
        f"(reads the tenant's {2 * n:,} events among {n * (OTHERS + 2):,}); the next call: "
        f"{1e3 * statistics.median(warm):.2f} ms"
    )
    return report.finish(args.check)


if __name__ == "__main__":
    raise SystemExit(main())
