"""What the SQLite benchmarks (``store_sqlite.py``, ``entity_sqlite.py``, ``projection_sqlite.py``)
share: database files, eventsourcing's application on a ``synchronous=NORMAL`` pool, variants
measured in interleaved rounds, the start of a run, table rows with ratios.

Imported as ``from _sqlite import ...``, like ``_common``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Any

from _common import Rates, Report, version, versions_line, versus_ratio

# ---------------------------------------------------------------------------- database files


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}?synchronous=normal"


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"{path}: journal_mode is {mode}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def count_rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


# ---------------------------------------------------------------------------- eventsourcing


def es_available() -> bool:
    return util.find_spec("eventsourcing") is not None


def _es_app_class() -> type[Any]:
    from eventsourcing.application import Application
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool, SQLiteFactory
    from eventsourcing.utils import Environment

    class SyncPool(SQLiteConnectionPool):
        """eventsourcing's pool, plus ``PRAGMA synchronous`` on every new connection."""

        synchronous = "NORMAL"

        def _create_connection(self) -> SQLiteConnection:
            conn = super()._create_connection()
            conn._sqlite_conn.execute(f"PRAGMA synchronous={self.synchronous}")
            return conn

    class BenchApp(Application[Any]):
        """An application on eventsourcing's SQLite module, with ``synchronous`` from ``env``.

        ``BENCH_SYNCHRONOUS`` is the benchmarks' own key (eventsourcing has none):
        empty keeps eventsourcing's default.
        """

        def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
            factory = super().construct_factory(env)
            synchronous = env.get("BENCH_SYNCHRONOUS")
            if synchronous:
                if not isinstance(factory, SQLiteFactory):
                    raise RuntimeError(f"expected eventsourcing's SQLiteFactory, got {factory!r}")
                old = factory.datastore.pool
                pool = SyncPool(db_name=old.db_name, lock_timeout=old.lock_timeout)
                pool.synchronous = synchronous
                factory.datastore.pool = pool  # before the first connection is made
                old.close()
            return factory

        def pragma_synchronous(self) -> int:
            factory = self.factory
            assert isinstance(factory, SQLiteFactory)
            with factory.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA synchronous")
                return int(c.fetchone()[0])

    return BenchApp


_ES_APP: type[Any] | None = None


def es_app_class() -> type[Any]:
    """``BenchApp``, eventsourcing's ``Application`` with ``synchronous`` taken from its env (see
    :func:`es_env`): defined on first use, so the benchmarks run without eventsourcing."""
    global _ES_APP
    if _ES_APP is None:
        _ES_APP = _es_app_class()
    return _ES_APP


def es_env(path: Path, synchronous: str | None) -> dict[str, str]:
    """The env of a ``BenchApp`` on the file ``path``; ``synchronous`` None: eventsourcing's default."""
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "BENCH_SYNCHRONOUS": synchronous or "",
    }


def es_synchronous_name(app: Any) -> str:
    """The ``synchronous`` setting of ``app``'s connections, by name."""
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return names.get(app.pragma_synchronous(), "?")


# ---------------------------------------------------------------------------- measuring


Run = Callable[[Path, int], Awaitable[float]]
"""A variant: given a fresh folder and a number of units, do the work; return the timed seconds."""


@dataclass
class Variant(Rates):
    name: str
    units: int  # units (events, streams, batches, loads or commands) of a timed round
    per_unit: int  # what one unit counts for in the rate (events per unit, 1 per command)
    run: Run

    @property
    def events(self) -> int:
        return self.units * self.per_unit


async def measure(variants: Sequence[Variant], repeat: int, root: Path, warm_up: int) -> None:
    """An untimed warm-up round (``1 / warm_up`` of the units), then ``repeat`` rounds of the
    variants, interleaved; each run gets a fresh folder."""
    for r in range(-1, repeat):
        for i, v in enumerate(variants):
            folder = root / f"r{r + 1}-v{i}"
            folder.mkdir()
            units = max(1, v.units // warm_up) if r < 0 else v.units
            gc.collect()
            elapsed = await v.run(folder, units)
            if r >= 0:
                v.rates.append(units * v.per_unit / elapsed)
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- the start of a run


@contextmanager
def bench_root(args: argparse.Namespace, es_report: Callable[[Path], str]) -> Iterator[Path]:
    """Print the header (versions, rounds, the temporary folder, eventsourcing's ``es_report``
    or that it is missing); the temporary folder for the database files, removed afterwards."""
    print(
        versions_line(
            [
                f"streamsrc {version('streamsrc')}",
                f"eventsourcing {version('eventsourcing')}",
                f"SQLite {sqlite3.sqlite_version}",
            ],
            cpus=True,
        )
    )
    print(
        f"{args.repeat} interleaved rounds after a warm-up{', QUICK sizes' if args.quick else ''};"
        " WAL, synchronous=NORMAL; rates are medians over rounds"
    )
    with tempfile.TemporaryDirectory(prefix="streamsrc-bench-") as tmp:
        root = Path(tmp)
        print(f"database files in {root}")
        if es_available():
            print(es_report(root))
        else:
            print("eventsourcing not installed (pip install eventsourcing): its rows are skipped")
        yield root


# ---------------------------------------------------------------------------- table rows


def rate_cells(v: Variant) -> list[str]:
    """Name, events, k events/s, µs per event and the spread of a variant's rounds."""
    return [
        v.name,
        f"{v.events:,}",
        f"{v.median / 1e3:.1f}",
        f"{1e6 / v.median:.2f}",
        f"{min(v.rates) / 1e3:.4g}..{max(v.rates) / 1e3:.4g}",
    ]


def subject_row(v: Variant) -> list[str]:
    """The row of the measured side: rates, no ratio."""
    return [*rate_cells(v), "", "", "", ""]


def versus(
    report: Report | None, subject: Variant, reference: Variant, threshold: float | None, label: str
) -> list[str]:
    """A row for ``reference``: ratio of medians ``subject / reference``; no threshold: info only."""
    ratio, cells = versus_ratio(subject, reference)
    targets = ["(info)", ""] if report is None else report.target_cells(label, ratio, threshold)
    return [*rate_cells(reference), *cells, *targets]
