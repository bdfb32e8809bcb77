"""Benchmark of streamsrc's streaming core against hand-written and third-party references.

Run from the repository root::

    python bench/stream_pipeline.py                   # full run (asyncio), a report; exit 0
    python bench/stream_pipeline.py --check           # same, exit 1 if a target is missed
    python bench/stream_pipeline.py --quick           # small sizes: a smoke test for CI
    python bench/stream_pipeline.py --backend trio    # the same on trio
    python bench/stream_pipeline.py --repeat 9 --only pipeline

Machines are noisy, so every target is a *ratio* measured in one process run:
the variants being compared run interleaved (A B C A B C ...) ``--repeat``
times; the table shows the median rate of each variant and the ratio of the
medians (plus the range of the per-round ratios, to show the noise). A rate
is ``N / wall time``, where ``N`` is the size of the source ``range``.

Targets:

* pipeline ``range(N) -> map -> filter -> scan -> take(0.6 N) -> fold``:
  streamsrc >= 1.0x raw async generators passing chunks of 256,
  >= 25x aiostream, >= 0.5x sync generators (per element);
* ``par_eval_map(64, f)`` / ``par_eval_map_unordered`` with ``f`` sleeping 1 ms:
  >= 0.6x the ideal 64 / 1 ms = 64,000 elements/s;
* memory: draining ``Stream.range(0, 10M).map(...).filter(...)`` in a fresh
  subprocess grows peak RSS (``VmHWM``) by at most a few MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, closing
from dataclasses import dataclass
from importlib import util
from itertools import accumulate, islice
from typing import TypeVar, cast

import anyio
from _common import (
    Rates,
    Report,
    Table,
    add_common_args,
    max_rss_mb,
    parse_checked,
    ratio_cells,
    version,
    versions_line,
    versus_ratio,
)

from streamsrc import Stream

T = TypeVar("T")
U = TypeVar("U")

CHUNK = 256
"""Chunk size of the raw async generator reference (streamsrc's default ``CHUNK_SIZE``)."""

TAKE_FRACTION = 0.6
"""``take`` keeps this fraction of the source size; the filter keeps 80%, so ``take`` cuts."""

PAR_WORKERS = 64
PAR_SLEEP = 0.001
PAR_IDEAL = PAR_WORKERS / PAR_SLEEP
"""Elements/s if every effect took exactly ``PAR_SLEEP`` and nothing else took any time."""

MEMORY_LIMIT_MB = 4.0
"""Largest peak-RSS growth allowed while draining the memory benchmark's stream."""


@dataclass(frozen=True)
class Sizes:
    pipeline: int
    aiostream: int
    par: int
    memory: int


FULL = Sizes(pipeline=1_000_000, aiostream=200_000, par=20_000, memory=10_000_000)
QUICK = Sizes(pipeline=50_000, aiostream=10_000, par=5_000, memory=1_000_000)


# ---------------------------------------------------------------------------- the stage functions
# Every variant uses these same functions, so only the plumbing differs.


def inc(x: int) -> int:
    return x + 1


def keep(x: int) -> bool:
    return x % 5 != 0


add = operator.add


def take_count(n: int) -> int:
    return int(n * TAKE_FRACTION)


def expected_pipeline(n: int) -> int:
    """The pipeline's result, computed with builtins (untimed; the oracle for every variant)."""
    scanned = accumulate(filter(keep, map(inc, range(n))), add, initial=0)
    return sum(islice(scanned, take_count(n)))


# ---------------------------------------------------------------------------- pipeline variants


async def streamsrc_pipeline(n: int) -> int:
    s = Stream.range(0, n).map(inc).filter(keep).scan(0, add).take(take_count(n))
    return await s.fold(0, add)


# Raw async generators passing chunks of CHUNK elements: the hand-written lower bound of
# a chunked async pipeline. Each stage closes its upstream when it stops, as streamsrc's do.


async def raw_source(n: int) -> AsyncGenerator[list[int], None]:
    for lo in range(0, n, CHUNK):
        yield list(range(lo, min(lo + CHUNK, n)))


async def raw_map(up: AsyncGenerator[list[T], None], f: Callable[[T], U]) -> AsyncGenerator[list[U], None]:
    async with aclosing(up):
        async for chunk in up:
            yield list(map(f, chunk))


async def raw_filter(
    up: AsyncGenerator[list[T], None], p: Callable[[T], object]
) -> AsyncGenerator[list[T], None]:
    async with aclosing(up):
        async for chunk in up:
            if kept := list(filter(p, chunk)):
                yield kept


async def raw_scan(
    up: AsyncGenerator[list[T], None], init: U, f: Callable[[U, T], U]
) -> AsyncGenerator[list[U], None]:
    acc = init
    yield [acc]
    async with aclosing(up):
        async for chunk in up:
            steps = accumulate(chunk, f, initial=acc)
            next(steps)
            out = list(steps)
            acc = out[-1]
            yield out


async def raw_take(up: AsyncGenerator[list[T], None], n: int) -> AsyncGenerator[list[T], None]:
    left = n
    if left <= 0:
        return
    async with aclosing(up):
        async for chunk in up:
            if len(chunk) < left:
                left -= len(chunk)
                yield chunk
            else:
                yield chunk[:left]
                return  # stop pulling; aclosing closes upstream


async def raw_fold(up: AsyncGenerator[list[T], None], init: U, f: Callable[[U, T], U]) -> U:
    acc = init
    async with aclosing(up):
        async for chunk in up:
            for x in chunk:
                acc = f(acc, x)
    return acc


async def raw_async_pipeline(n: int) -> int:
    chain = raw_take(raw_scan(raw_filter(raw_map(raw_source(n), inc), keep), 0, add), take_count(n))
    return await raw_fold(chain, 0, add)


# Sync generators, one element at a time.


def sync_source(n: int) -> Iterator[int]:
    yield from range(n)


def sync_map(up: Iterator[T], f: Callable[[T], U]) -> Iterator[U]:
    for x in up:
        yield f(x)


def sync_filter(up: Iterator[T], p: Callable[[T], object]) -> Iterator[T]:
    for x in up:
        if p(x):
            yield x


def sync_scan(up: Iterator[T], init: U, f: Callable[[U, T], U]) -> Iterator[U]:
    acc = init
    yield acc
    for x in up:
        acc = f(acc, x)
        yield acc


def sync_take(up: Iterator[T], n: int) -> Iterator[T]:
    left = n
    if left <= 0:
        return
    with closing(up):  # type: ignore[type-var]  # generators have close()
        for x in up:
            yield x
            left -= 1
            if left == 0:
                return


def sync_pipeline(n: int) -> int:
    chain = sync_take(sync_scan(sync_filter(sync_map(sync_source(n), inc), keep), 0, add), take_count(n))
    acc = 0
    for x in chain:
        acc = add(acc, x)
    return acc


# aiostream (asyncio only: its sources await asyncio.sleep(0) per element).


def aiostream_emits_initializer() -> bool:
    """Whether this aiostream's ``accumulate(f, initializer=i)`` emits ``i`` first, like ``scan``.

    aiostream 0.8 does; some releases did not. When it does not, the pipeline
    prepends the initial value so that every variant computes the same thing.
    """
    from aiostream import pipe, stream

    async def probe() -> list[int]:
        xs = stream.range(2) | pipe.accumulate(add, initializer=100)
        out: list[int] = []
        async with xs.stream() as s:
            async for x in s:
                out.append(x)
        return out

    first = anyio.run(probe, backend="asyncio")
    return first[0] == 100 and len(first) == 3


def make_aiostream_pipeline(emits_initializer: bool) -> Callable[[int], Awaitable[int]]:
    from aiostream import pipe, stream

    async def aiostream_pipeline(n: int) -> int:
        # aiostream types map's function as taking *args (one per source): inc is fine.
        mapped = stream.range(n) | pipe.map(inc)  # type: ignore[arg-type]
        scanned = mapped | pipe.filter(keep)
        scanned = scanned | pipe.accumulate(add, initializer=0)
        if not emits_initializer:
            scanned = stream.chain(stream.just(0), scanned)
        xs = scanned | pipe.take(take_count(n))
        acc = 0
        async with xs.stream() as s:
            async for x in s:
                acc = add(acc, x)
        return acc

    return aiostream_pipeline


# ---------------------------------------------------------------------------- par_eval_map variants


async def sleepy(x: int) -> int:
    await anyio.sleep(PAR_SLEEP)
    return x * 2


async def par_ordered(n: int) -> list[int]:
    return await Stream.range(0, n).par_eval_map(PAR_WORKERS, sleepy).to_list()


async def par_unordered(n: int) -> list[int]:
    return await Stream.range(0, n).par_eval_map_unordered(PAR_WORKERS, sleepy).to_list()


async def task_pool(n: int) -> list[int]:
    """Hand-written reference: PAR_WORKERS tasks sharing one iterator, results put in place."""
    out = [0] * n
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            out[i] = await sleepy(i)

    async with anyio.create_task_group() as tg:
        for _ in range(PAR_WORKERS):
            tg.start_soon(worker)
    return out


# ---------------------------------------------------------------------------- measuring


@dataclass
class Variant(Rates):
    name: str
    n: int
    run: Callable[[int], Awaitable[object]]
    expected: object
    normalize: Callable[[object], object] | None = None
    """Applied to the result, outside the timing, before comparing it with ``expected``."""


async def measure(variants: Sequence[Variant], repeat: int, warmup_n: int) -> None:
    """Run the variants interleaved ``repeat`` times (after one small untimed warm-up each)."""
    for v in variants:
        await v.run(warmup_n)
    for _ in range(repeat):
        for v in variants:
            gc.collect()
            t0 = time.perf_counter()
            result = await v.run(v.n)
            elapsed = time.perf_counter() - t0
            if v.normalize is not None:
                result = v.normalize(result)
            if result != v.expected:
                raise RuntimeError(f"{v.name} computed a different result ({result!r})")
            v.rates.append(v.n / elapsed)


def as_async(f: Callable[[int], T]) -> Callable[[int], Awaitable[T]]:
    async def run(n: int) -> T:
        return f(n)

    return run


# ---------------------------------------------------------------------------- reporting


TABLE = Table(
    header=("variant", "N", "M elem/s", "min..max", "ratio", "rounds", "target", "result"),
    widths=(38, 10, 9, 15, 7, 12, 7, 6),
)


def rate_cells(v: Variant) -> list[str]:
    return [
        v.name,
        f"{v.n:,}",
        f"{v.median / 1e6:.4g}",
        f"{min(v.rates) / 1e6:.3g}..{max(v.rates) / 1e6:.3g}",
    ]


def versus(report: Report, subject: Variant, reference: Variant, threshold: float, label: str) -> list[str]:
    """A row for ``reference``: the ratio of medians ``subject / reference`` vs ``threshold``."""
    ratio, cells = versus_ratio(subject, reference)
    return [*rate_cells(reference), *cells, *report.target_cells(label, ratio, threshold)]


# ---------------------------------------------------------------------------- the benchmarks


def bench_pipeline(sizes: Sizes, repeat: int, backend: str, report: Report) -> None:
    n = sizes.pipeline
    t = take_count(n)
    subject = Variant("streamsrc Stream", n, streamsrc_pipeline, expected_pipeline(n))
    raw = Variant(f"raw async generators, chunks of {CHUNK}", n, raw_async_pipeline, subject.expected)
    sync = Variant("sync generators, per element", n, as_async(sync_pipeline), subject.expected)
    # Interleaving order: streamsrc sits between the two references it is closest to.
    variants = [raw, subject, sync]
    notes = [
        f"Pipeline: range({n:,}) -> map(x+1) -> filter(x%5!=0) -> scan(0,+) -> take({t:,}) -> fold(+)",
        "  ratio = streamsrc median rate / reference median rate; rounds = per-round streamsrc/reference",
    ]
    aio: Variant | None = None
    if util.find_spec("aiostream") is None:
        notes.append("  aiostream skipped: not installed (pip install -e '.[bench]').")
    elif backend != "asyncio":
        notes.append("  aiostream skipped: it runs on asyncio only.")
    else:
        emits_init = aiostream_emits_initializer()
        m = sizes.aiostream
        aio = Variant("aiostream pipe", m, make_aiostream_pipeline(emits_init), expected_pipeline(m))
        variants.append(aio)
        notes.append(
            f"  aiostream runs the same pipeline on a smaller N={m:,} (take {take_count(m):,})"
            " to keep the run short;"
        )
        notes.append("  rates are N / wall time, so they compare across N.")
        if not emits_init:
            notes.append(
                "  (this aiostream's accumulate omits the initial value: it is prepended with stream.chain)"
            )

    anyio.run(measure, variants, repeat, 1_000, backend=backend)

    rows = [[*rate_cells(subject), "", "", "", ""]]
    rows.append(versus(report, subject, raw, 1.0, "pipeline vs raw async generators"))
    if aio is not None:
        rows.append(versus(report, subject, aio, 25, "pipeline vs aiostream"))
    rows.append(versus(report, subject, sync, 0.5, "pipeline vs sync generators"))
    TABLE.print(notes, rows)


def sorted_ints(result: object) -> object:
    return sorted(cast("list[int]", result))


def bench_par(sizes: Sizes, repeat: int, backend: str, report: Report) -> None:
    n = sizes.par
    expected = [2 * i for i in range(n)]
    pool = Variant(f"hand-written pool of {PAR_WORKERS} tasks", n, task_pool, expected)
    ordered = Variant(f"par_eval_map({PAR_WORKERS})", n, par_ordered, expected)
    unordered = Variant(f"par_eval_map_unordered({PAR_WORKERS})", n, par_unordered, expected, sorted_ints)
    anyio.run(measure, [pool, ordered, unordered], repeat, 2 * PAR_WORKERS, backend=backend)

    def vs_ideal(v: Variant, threshold: float | None) -> list[str]:
        ratio = v.median / PAR_IDEAL
        rounds = [r / PAR_IDEAL for r in v.rates]
        cells = ratio_cells(ratio, rounds)
        return [*rate_cells(v), *cells, *report.target_cells(f"{v.name} vs ideal", ratio, threshold)]

    notes = [
        f"par_eval_map: {n:,} elements, f = anyio.sleep({PAR_SLEEP:g}), {PAR_WORKERS} at once",
        f"  ratio = median rate / ideal {PAR_IDEAL / 1e6:g} M elem/s"
        f" ({PAR_WORKERS} / {PAR_SLEEP * 1e3:g} ms); rounds = per-round rate / ideal",
        "  the hand-written task pool (not a target) shows what this machine and backend allow",
    ]
    rows = [vs_ideal(pool, None), vs_ideal(ordered, 0.6), vs_ideal(unordered, 0.6)]
    TABLE.print(notes, rows)


def memory_child(n: int, backend: str) -> None:
    """In a fresh process: peak RSS before and after draining the stream, as JSON on stdout."""

    def pipeline(size: int) -> Stream[int]:
        return Stream.range(0, size).map(inc).filter(keep)

    async def main() -> dict[str, float]:
        await pipeline(10_000).drain()  # warm up: imports, code paths, allocator arenas
        gc.collect()
        before = max_rss_mb()
        t0 = time.perf_counter()
        await pipeline(n).drain()
        elapsed = time.perf_counter() - t0
        return {"before": before, "after": max_rss_mb(), "seconds": elapsed}

    print(json.dumps(anyio.run(main, backend=backend)))


def bench_memory(sizes: Sizes, backend: str, report: Report) -> None:
    n = sizes.memory
    cmd = [sys.executable, __file__, "--memory-child", str(n), "--backend", backend]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = json.loads(done.stdout)
    growth = m["after"] - m["before"]
    verdict = report.memory_verdict("memory", growth, MEMORY_LIMIT_MB, f"{MEMORY_LIMIT_MB}")
    print()
    print(
        f"Memory: Stream.range(0, {n:,}).map(x+1).filter(x%5!=0).drain() in a fresh subprocess;"
        " peak RSS (VmHWM, else ru_maxrss)"
    )
    print(
        f"  before {m['before']:.1f} MB, after {m['after']:.1f} MB, growth {growth:.2f} MB"
        f" (limit {MEMORY_LIMIT_MB} MB): {verdict}"
        f"   [drained at {n / m['seconds'] / 1e6:.3g} M elem/s]"
    )


# ---------------------------------------------------------------------------- main

SECTIONS = ("pipeline", "par", "memory")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, SECTIONS, default_repeat=5, backends=("asyncio", "trio"))
    parser.add_argument("--memory-child", type=int, metavar="N", help=argparse.SUPPRESS)
    return parse_checked(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.backend)
        return 0

    sizes = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    report = Report()
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"aiostream {version('aiostream')}",
                f"anyio {version('anyio')}",
            ]
        )
    )
    print(f"backend {args.backend}, {args.repeat} interleaved rounds; rates are medians over rounds")
    if args.quick:
        print("QUICK sizes: a smoke test; fixed costs weigh more, so ratios are indicative only")
    if "pipeline" in sections:
        bench_pipeline(sizes, args.repeat, args.backend, report)
    if "par" in sections:
        bench_par(sizes, args.repeat, args.backend, report)
    if "memory" in sections:
        bench_memory(sizes, args.backend, report)
    return report.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
