"""Benchmark of the stream core's stack safety: deep nesting and map chains at the default recursion limit.

Run from the repository root::

    python bench/stream_stack.py                  # full run (asyncio), a report; exit 0
    python bench/stream_stack.py --check          # same, exit 1 if a target is missed
    python bench/stream_stack.py --quick          # small sizes: a smoke test for CI
    python bench/stream_stack.py --backend trio   # the same on trio

Everything runs at Python's default recursion limit (1,000), which the script
checks: a core that needed one Python frame per level could not pass.

Targets (ratios measured in one run; machines are noisy, so nothing here is
compared with figures from another run):

* depth: 100,000 nested ``+`` (left- and right-associated), ``flat_map``
  (left- and right-associated), ``handle_error_with``, and a stream that
  appends itself 100,000 times (each round with a bracket, every one
  released) complete; the time for 1k, 10k and 100k levels is reported, and
  the cost per level at 100k is at least 0.33x of that at 10k (linear time,
  with room for noise and the garbage collector); building the stream is
  timed with running it;
* maps: a chain of 1,000 ``map`` stages over 10,000 elements runs at >= 0.5x
  a plain Python loop calling the same 1,000 functions on each element.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    parse_checked,
    ratio_cells,
    version,
    versions_line,
    versus_ratio,
)

from streamsrc import Stream

DEFAULT_RECURSION_LIMIT = 1_000


@dataclass(frozen=True)
class Sizes:
    depths: tuple[int, ...]
    stages: int
    elements: int


FULL = Sizes(depths=(1_000, 10_000, 100_000), stages=1_000, elements=10_000)
QUICK = Sizes(depths=(1_000, 3_000, 10_000), stages=200, elements=2_000)


class Err(Exception):
    pass


# ---------------------------------------------------------------------------- the nested shapes


def left_append(n: int) -> tuple[Stream[int], int]:
    s = Stream.emit(0)
    for i in range(1, n):
        s = s + Stream.emit(i)
    return s, n


def right_append(n: int) -> tuple[Stream[int], int]:
    s = Stream.emit(n - 1)
    for i in range(n - 2, -1, -1):
        s = Stream.emit(i) + s
    return s, n


def left_flat_map(n: int) -> tuple[Stream[int], int]:
    s = Stream.emit(0)
    for _ in range(n):
        s = s.flat_map(lambda x: Stream.emit(x + 1))
    return s, 1


def right_flat_map(n: int) -> tuple[Stream[int], int]:
    def nest(acc: Stream[int], _: int) -> Stream[int]:
        return Stream.emit(0).flat_map(lambda _: acc)

    return functools.reduce(nest, range(n), Stream.emit(-1)), 1


def handle_error_with(n: int) -> tuple[Stream[int], int]:
    s: Stream[int] = Stream.raise_error(Err())
    for _ in range(n - 1):
        s = s.handle_error_with(lambda e: Stream.raise_error(e))
    return s.handle_error_with(lambda _: Stream.emit(1)), 1


RELEASED: list[int] = []


def recursive(n: int) -> tuple[Stream[int], int]:
    async def acquire() -> int:
        return 0

    async def release(_: int) -> None:
        RELEASED.append(1)

    def loop(i: int) -> Stream[int]:
        if i == n:
            return Stream.empty()
        return Stream.bracket(acquire, release).map(lambda _: i) + (lambda: loop(i + 1))

    return loop(0), n


SHAPES: dict[str, Callable[[int], tuple[Stream[int], int]]] = {
    "left-associated +": left_append,
    "right-associated +": right_append,
    "left-associated flat_map": left_flat_map,
    "right-associated flat_map": right_flat_map,
    "handle_error_with": handle_error_with,
    "self-recursive s + (lambda: loop())": recursive,
}


def time_shape(make: Callable[[int], tuple[Stream[int], int]], n: int, backend: str) -> float:
    """Seconds to build and run ``make(n)``; checks the count (and the releases)."""
    RELEASED.clear()
    t0 = time.perf_counter()
    stream, expected = make(n)
    count = anyio.run(stream.count, backend=backend)
    elapsed = time.perf_counter() - t0
    if count != expected:
        raise AssertionError(f"{make.__name__}({n}) emitted {count}, expected {expected}")
    if make is recursive and len(RELEASED) != n:
        raise AssertionError(f"recursive({n}) released {len(RELEASED)} of {n} brackets")
    return elapsed


DEPTH_TABLE = Table(
    header=[
        "shape",
        "1st depth s",
        "2nd depth s",
        "3rd depth s",
        "per level",
        "rate ratio",
        "target",
        "result",
    ],
    widths=[36, 11, 11, 11, 10, 10, 7, 6],
)


def bench_depth(sizes: Sizes, repeat: int, backend: str, report: Report) -> None:
    d1, d2, d3 = sizes.depths
    rows = []
    for name, make in SHAPES.items():
        times: dict[int, list[float]] = {d: [] for d in sizes.depths}
        for _ in range(repeat):
            for d in sizes.depths:
                times[d].append(time_shape(make, d, backend))
        med = {d: sorted(ts)[len(ts) // 2] for d, ts in times.items()}
        ratio = (d3 / med[d3]) / (d2 / med[d2])  # levels per second at the deepest / at the middle
        rows.append(
            [
                name,
                f"{med[d1]:.3f}",
                f"{med[d2]:.3f}",
                f"{med[d3]:.3f}",
                f"{med[d3] / d3 * 1e6:.1f} us",
                f"{ratio:.2f}x",
                *report.target_cells(f"{name}: linear in depth", ratio, 0.33),
            ]
        )
    notes = [
        f"Depth: build + run each shape at {d1:,}, {d2:,} and {d3:,} levels (median of {repeat}),"
        f" recursion limit {sys.getrecursionlimit():,}",
        f"  rate ratio = levels/s at {d3:,} / levels/s at {d2:,} (1.00x is exactly linear);"
        " per level = time at the deepest / depth",
    ]
    DEPTH_TABLE.print(notes, rows)


# ---------------------------------------------------------------------------- a long map chain


@dataclass
class Variant(Rates):
    name: str


def adder(j: int) -> Callable[[int], int]:
    return lambda x: x + j


def make_functions(k: int) -> list[Callable[[int], int]]:
    # Distinct function objects, as a real chain of stages would have.
    return [adder(j % 3 - 1) for j in range(k)]


def plain_loop(fs: Sequence[Callable[[int], int]], xs: Sequence[int]) -> int:
    total = 0
    for x in xs:
        for f in fs:
            x = f(x)
        total += x
    return total


async def chain_fold(fs: Sequence[Callable[[int], int]], n: int) -> int:
    s = Stream.range(0, n)
    for f in fs:
        s = s.map(f)
    return await s.fold(0, lambda a, x: a + x)


MAP_TABLE = Table(
    header=["variant", "M calls/s", "ratio", "rounds", "target", "result"],
    widths=[48, 10, 7, 11, 7, 6],
)


def bench_maps(sizes: Sizes, repeat: int, backend: str, report: Report) -> None:
    k, n = sizes.stages, sizes.elements
    fs = make_functions(k)
    xs = list(range(n))
    calls = k * n
    expected = plain_loop(fs, xs)
    stream = Variant(f"Stream.range(0, {n:,}) + {k:,} x map, fold")
    loop = Variant(f"plain loop: {k:,} function calls per element")
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = anyio.run(chain_fold, fs, n, backend=backend)
        stream.rates.append(calls / (time.perf_counter() - t0))
        if got != expected:
            raise AssertionError(f"map chain gave {got}, expected {expected}")
        t0 = time.perf_counter()
        plain_loop(fs, xs)
        loop.rates.append(calls / (time.perf_counter() - t0))
    ratio, cells = versus_ratio(stream, loop)
    rows = [
        [
            stream.name,
            f"{stream.median / 1e6:.3g}",
            *cells,
            *report.target_cells("map chain vs loop", ratio, 0.5),
        ],
        [loop.name, f"{loop.median / 1e6:.3g}", *ratio_cells(1.0, [1.0]), "", ""],
    ]
    notes = [
        f"Maps: {k:,} map stages over {n:,} elements ({calls:,} calls), interleaved, {repeat} rounds",
        "  ratio = stream median rate / plain loop median rate; rounds = per-round ratios",
    ]
    MAP_TABLE.print(notes, rows)


# ---------------------------------------------------------------------------- main

SECTIONS = ("depth", "maps")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=3, backends=("asyncio", "trio"))
    return parse_checked(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.getrecursionlimit() != DEFAULT_RECURSION_LIMIT:
        print(f"the recursion limit is {sys.getrecursionlimit()}, not Python's default: reset to it")
        sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    report = Report()
    print(versions_line([f"streamsrc {version('streamsrc')}", f"anyio {version('anyio')}"]))
    print(f"backend {args.backend}, {args.repeat} rounds; times and rates are medians over rounds")
    if args.quick:
        print("QUICK sizes: a smoke test; ratios are indicative only")
    if "depth" in sections:
        bench_depth(sizes, args.repeat, args.backend, report)
    if "maps" in sections:
        bench_maps(sizes, args.repeat, args.backend, report)
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
