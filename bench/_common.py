"""What the benchmark scripts share: rates and ratios, targets and the final summary, tables,
peak memory, the common command-line flags, the versions line that starts a run, and the
machine-readable results (``--json PATH``) that ``python -m bench`` turns into a report.

The scripts run as ``python bench/<name>.py``, so this folder is on ``sys.path``
and they import this module as ``from _common import ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------- machine-readable results


@dataclass
class Results:
    """What a run printed, kept for ``--json PATH``: the header lines, every table (notes, header,
    rows of cells as printed), the memory verdicts, the missed targets, anything else a script
    adds to ``extra`` (the soak's series), or why the run was skipped."""

    script: str = field(default_factory=lambda: Path(sys.argv[0]).stem)
    path: str | None = None
    argv: list[str] = field(default_factory=lambda: sys.argv[1:])
    header: list[str] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float | None = None

    def write(self) -> None:
        """Write the results as JSON to ``path`` (nothing without ``--json``)."""
        if self.path is None:
            return
        fields = {k: v for k, v in vars(self).items() if k != "path"}
        Path(self.path).write_text(json.dumps(fields, indent=1, default=str) + "\n", encoding="utf-8")


RESULTS = Results()
"""This run's results (one per process)."""


def skip(reason: str, check: bool) -> int:
    """Print why the benchmark is skipped, record it; the exit code (1 only with ``--check``)."""
    print(reason)
    RESULTS.skipped = reason
    RESULTS.write()
    return 1 if check else 0


# ---------------------------------------------------------------------------- rates and ratios


@dataclass
class Rates:
    """The per-round rates of one variant (a base for each script's ``Variant``)."""

    rates: list[float] = field(default_factory=list, kw_only=True)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def ratio_cells(ratio: float, rounds: Sequence[float]) -> list[str]:
    """The ``ratio`` and ``rounds`` (range of the per-round ratios) cells of a table row."""
    return [f"{ratio:.2f}x", f"{min(rounds):.2f}..{max(rounds):.2f}"]


def versus_ratio(subject: Rates, reference: Rates) -> tuple[float, list[str]]:
    """The ratio of medians ``subject / reference``, and its ``ratio`` and ``rounds`` cells."""
    ratio = subject.median / reference.median
    rounds = [s / r for s, r in zip(subject.rates, reference.rates, strict=True)]
    return ratio, ratio_cells(ratio, rounds)


# ---------------------------------------------------------------------------- targets and summary


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def verdict(self, label: str, ratio: float, threshold: float) -> str:
        if ratio >= threshold:
            return "PASS"
        self.failures.append(f"{label}: {ratio:.2f}x < {threshold}x")
        return "FAIL"

    def target_cells(self, label: str, ratio: float, threshold: float | None) -> list[str]:
        """The ``target`` and ``result`` cells of a row; no threshold: an info row, not judged."""
        if threshold is None:
            return ["(info)", ""]
        return [f">={threshold:g}x", self.verdict(label, ratio, threshold)]

    def memory_verdict(self, label: str, growth: float, limit: float, limit_text: str) -> str:
        """PASS if peak RSS grew by at most ``limit`` MB (``limit_text`` is how it is printed)."""
        verdict = "PASS" if growth <= limit else "FAIL"
        RESULTS.memory.append({"label": label, "growth_mb": growth, "limit_mb": limit, "result": verdict})
        if verdict == "FAIL":
            self.failures.append(f"{label}: peak RSS grew {growth:.1f} MB > {limit_text} MB")
        return verdict

    def finish(self, check: bool) -> int:
        """Print the missed targets and the run time; the exit code (1 only with ``--check``)."""
        print()
        if self.failures:
            print("Missed targets:")
            for failure in self.failures:
                print(f"  {failure}")
        else:
            print("All targets met.")
        elapsed = time.perf_counter() - self.started
        print(f"({elapsed:.0f} s)")
        RESULTS.failures = list(self.failures)
        RESULTS.seconds = elapsed
        RESULTS.write()
        return 1 if check and self.failures else 0


# ---------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    widths: Sequence[int]

    def row(self, cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, self.widths, strict=True)):
            parts.append(cell.ljust(width) if i == 0 else cell.rjust(width))
        return "  ".join(parts).rstrip()

    def print(self, notes: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A blank line, the notes (title lines), the header, a rule, the rows."""
        print()
        for line in notes:
            print(line)
        print(self.row(self.header))
        print(self.row(["-" * w for w in self.widths]))
        for cells in rows:
            print(self.row(cells))
        sys.stdout.flush()
        RESULTS.tables.append(
            {"notes": list(notes), "header": list(self.header), "rows": [list(cells) for cells in rows]}
        )


# ---------------------------------------------------------------------------- peak memory


def ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KiB


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image (Linux ``VmHWM``), or ``None`` where there is no /proc.

    ``ru_maxrss`` carries over from the parent across fork + exec, so a child
    started by a big parent would show no growth; ``VmHWM`` does not.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def max_rss_mb() -> float:
    """Peak RSS of this process image: ``VmHWM`` where there is /proc, else ``ru_maxrss``."""
    hwm = vm_hwm_mb()
    return ru_maxrss_mb() if hwm is None else hwm


# ---------------------------------------------------------------------------- command line and versions


def add_common_args(
    parser: argparse.ArgumentParser,
    sections: Sequence[str],
    default_repeat: int,
    backends: Sequence[str] | None = None,
) -> None:
    """``--quick``, ``--repeat``, ``--backend`` (if there are ``backends``; the first is the default),
    ``--check``, ``--only`` (one of ``sections``, repeatable) and ``--json PATH``."""
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test for CI)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=default_repeat,
        metavar="K",
        help=f"rounds (default {default_repeat})",
    )
    if backends:
        parser.add_argument("--backend", choices=backends, default=backends[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--only", action="append", choices=sections, help="run only this section (repeatable)"
    )
    add_json_arg(parser)


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results (tables, verdicts) as JSON to PATH"
    )


def parse_checked(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    RESULTS.path = args.json
    return args


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions_line(parts: Sequence[str], cpus: bool = False) -> str:
    """The first line of a run: ``parts`` (what is measured, with versions), then Python and the
    platform (and with ``cpus``, the number of CPUs)."""
    line = f"{', '.join(parts)}; Python {platform.python_version()} on {platform.platform()}"
    line = f"{line}, {os.cpu_count()} CPUs" if cpus else line
    RESULTS.header.append(line)
    return line


async def timed_appends(url: str, work: Sequence[tuple[str, Sequence[Any]]]) -> float:
    """Seconds taken by ``store.append(stream, events)`` for each pair of ``work``, one after another,
    through ``open_store(url)`` (opening and closing the store are not timed)."""
    import gc

    from returns.result import Success

    from streamsrc.store import open_store

    async with open_store(url) as store:
        gc.collect()
        t0 = time.perf_counter()
        for stream, events in work:
            if not isinstance(await store.append(stream, events), Success):
                raise RuntimeError(f"streamsrc append to {stream} failed")
        return time.perf_counter() - t0
