"""One benchmark report: every benchmark and the soak, side by side with their references.

Run from the repository root::

    python -m bench                              # everything, full sizes (about 20-30 min)
    python -m bench --quick --out /tmp/report    # small sizes: a smoke test (a few minutes)
    python -m bench --only store_sqlite --only soak
    python -m bench --only store_sqlite --keep   # rerun one script, keep the others' results in OUT

Each script in ``bench/`` runs in its own subprocess with ``--json``; its
output goes to ``OUT/logs/<name>.log`` and its results to
``OUT/json/<name>.json``. Then ``OUT/README.md`` is written: the machine,
one Markdown table per benchmark (streamsrc and each reference measured in
the same run, their ratio, the target, PASS or FAIL), the soak's summary,
and PNG plots (matplotlib, Agg backend): throughput bars, ratios against
their targets, latency percentiles, the soak's throughput and memory over
time. A script that fails or is skipped (no server, a reference not
installed) gets a line saying so; the report is written anyway. Exit 1 if
a script failed (exit code not 0, which for the soak includes a read model
that differs from its rebuild); missed targets are reported, not judged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SCRIPTS = (
    "stream_pipeline",
    "stream_stack",
    "store_sqlite",
    "entity_sqlite",
    "projection_sqlite",
    "projection_parallel",
    "store_postgres",
    "store_dynamodb",
    "dynamodb_scale",
    "store_writers",
    "kinesis_moto",
    "migrate",
    "transforms",
    "tenancy",
    "soak",
)
TITLES = {
    "stream_pipeline": "Stream core vs raw async generators, sync generators, aiostream",
    "stream_stack": "Stream core at the default recursion limit: 100,000-deep nesting, 1,000 maps",
    "store_sqlite": "SQLite event store vs raw sqlite3, eventsourcing",
    "entity_sqlite": "Entities (load, handle) on SQLite vs hand-written sqlite3, eventsourcing",
    "projection_sqlite": "Projections on SQLite vs raw paging, eventsourcing; live latency",
    "projection_parallel": "Projections: N streams at once (I/O-bound), worker processes, lease overhead",
    "store_postgres": "PostgreSQL event store vs raw asyncpg",
    "store_dynamodb": "DynamoDB event store vs raw aiobotocore (moto's server)",
    "dynamodb_scale": "DynamoDB appends by writers in each mode, and the order=stream indexer (moto+latency)",
    "store_writers": "Concurrent writers (group commit) on SQLite and PostgreSQL (fsync on) vs raw loops",
    "kinesis_moto": "Kinesis sink vs raw put_records (moto's server)",
    "migrate": "streamsrc.migrate.copy vs a raw sqlite3 copy loop",
    "soak": "Soak: concurrent writers and live projections on SQLite and PostgreSQL",
    "tenancy": "Multi-tenancy: a tenant's view vs the plain store on SQLite (appends, reads)",
}
TIMEOUT = {False: 1800.0, True: 600.0}
"""Seconds a script may take (full, quick) before the report gives up on it."""

COLOURS = {"streamsrc": "#1f77b4", "raw": "#7f7f7f", "eventsourcing": "#ff7f0e", "aiostream": "#2ca02c"}


# ---------------------------------------------------------------------------- running the scripts


@dataclass
class Run:
    name: str
    code: int | None = None  # None: timed out or did not start
    seconds: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    finished: str = ""  # when it ended (UTC, minutes): a report made with --keep mixes runs

    @property
    def skipped(self) -> str | None:
        skipped = self.results.get("skipped")
        return str(skipped) if skipped else None

    @property
    def status(self) -> str:
        if self.code is None:
            return f"did not finish: {self.error}"
        if self.code != 0:
            return f"FAILED (exit {self.code}; see the log)"
        if self.skipped:
            return "skipped"
        if not self.results:
            return "ran, but wrote no results"
        missed = len(self.results.get("failures", []))
        return "all targets met" if missed == 0 else f"{missed} target(s) missed"


def run_script(name: str, quick: bool, out: Path) -> Run:
    run = Run(name)
    json_path = out / "json" / f"{name}.json"
    log_path = out / "logs" / f"{name}.log"
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(json_path)]
    if quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        try:
            done = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=TIMEOUT[quick], check=False
            )
            run.code = done.returncode
        except subprocess.TimeoutExpired:
            run.error = f"timed out after {TIMEOUT[quick]:.0f} s"
        except OSError as exc:
            run.error = str(exc)
    run.seconds = time.perf_counter() - t0
    run.finished = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    if json_path.exists():
        try:
            run.results = json.loads(json_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            run.error = run.error or f"unreadable results: {exc}"
    return run


KEPT = (
    " Only the scripts named by `--only` ran then; the others' results are from earlier runs (see *ended*)."
)


def kept_run(name: str, out: Path) -> Run | None:
    """The results of ``name`` already in ``out`` (from an earlier run), or ``None`` if there are none."""
    json_path = out / "json" / f"{name}.json"
    if not json_path.exists():
        return None
    runs_path = out / "runs.json"
    earlier = json.loads(runs_path.read_text(encoding="utf-8")) if runs_path.exists() else {}
    results = json.loads(json_path.read_text(encoding="utf-8"))
    written = datetime.datetime.fromtimestamp(json_path.stat().st_mtime, datetime.UTC)
    meta: dict[str, Any] = {
        "code": 0,
        "seconds": results.get("seconds") or 0.0,
        "error": "",
        "finished": f"{written:%Y-%m-%d %H:%M}",
    }
    meta.update(earlier.get(name, {}))
    return Run(name, meta["code"], meta["seconds"], results, meta["error"], meta["finished"])


# ---------------------------------------------------------------------------- reading the tables


SUFFIXES = {"k": 1e3, "M": 1e6}


def number(cell: str) -> float | None:
    """The figure in a cell: ``1,234``, ``0.91x``, ``50.8k``, ``1.2M``; ``None`` if there is none."""
    text = cell.strip().removesuffix("x").replace(",", "")
    scale = SUFFIXES.get(text[-1:], 1.0)
    if scale != 1.0:
        text = text[:-1]
    try:
        return float(text) * scale
    except ValueError:
        return None


def column(header: Sequence[str], *names: str) -> int | None:
    for i, h in enumerate(header):
        if h in names:
            return i
    return None


def rate_column(header: Sequence[str]) -> int | None:
    for i, h in enumerate(header):
        if h.endswith("/s"):
            return i
    return None


def who(variant: str) -> str:
    """Which side a row measures: streamsrc or one of the references."""
    v = variant.strip()
    if "eventsourcing" in v:
        return "eventsourcing"
    if "aiostream" in v:
        return "aiostream"
    if "streamsrc" in v or v.startswith(("subscribe(", "store.", "par_eval_map")):
        return "streamsrc"
    return "raw"


def title_of(table: dict[str, Any]) -> str:
    notes: list[str] = table.get("notes", [])
    return notes[0].split("\n")[0].strip() if notes else ""


# ---------------------------------------------------------------------------- plots


def plot_throughput(name: str, tables: list[dict[str, Any]], out: Path) -> str | None:
    """Horizontal bars of every rate of every table of one script, coloured by side."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    charts = []
    for table in tables:
        col = rate_column(table["header"])
        if col is None:
            continue
        bars = [(row[0].strip(), number(row[col])) for row in table["rows"]]
        bars = [(label, value) for label, value in bars if value is not None]
        if bars:
            charts.append((title_of(table), table["header"][col], bars))
    if not charts:
        return None
    heights = [0.6 + 0.32 * len(bars) for _, _, bars in charts]
    fig, axes = plt.subplots(len(charts), 1, figsize=(10, sum(heights) + 0.4 * len(charts)), squeeze=False)
    for ax, (title, unit, bars) in zip(axes[:, 0], charts, strict=True):
        labels = [label[:60] for label, _ in bars][::-1]
        values = [value for _, value in bars][::-1]
        colours = [COLOURS[who(label)] for label, _ in bars][::-1]
        ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_title(title[:110], fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="upper right", fontsize=8, ncols=len(COLOURS))
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = out / f"throughput-{name}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


@dataclass
class Judged:
    label: str
    ratio: float
    target: float
    passed: bool


def judged_rows(runs: Sequence[Run]) -> list[Judged]:
    """Every row with a ratio target (``>=N x``) of every script."""
    out = []
    for run in runs:
        for table in run.results.get("tables", []):
            header = table["header"]
            r, t, res = column(header, "ratio"), column(header, "target"), column(header, "result")
            if r is None or t is None or res is None:
                continue
            for row in table["rows"]:
                target = row[t].strip()
                ratio = number(row[r])
                if not target.startswith((">=", "<=")) or ratio is None:
                    continue
                goal = number(target[2:])
                if goal is None:
                    continue
                label = f"{run.name}: {row[0].strip()}"[:60]
                if target.startswith("<="):
                    label += " (time ratio: lower is better)"
                out.append(Judged(label, ratio, goal, row[res].strip() == "PASS"))
    return out


def plot_ratios(rows: list[Judged], out: Path) -> str | None:
    """Each judged ratio (streamsrc / reference) as a bar, its target as a tick."""
    if not rows:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.3 * len(rows)))
    ys = range(len(rows))[::-1]
    ax.barh(list(ys), [r.ratio for r in rows], color=["#2ca02c" if r.passed else "#d62728" for r in rows])
    ax.scatter([r.target for r in rows], list(ys), marker="|", s=300, color="black", zorder=3, label="target")
    ax.set_yticks(list(ys), [r.label for r in rows], fontsize=7)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel(
        "streamsrc / reference (median rates: higher is better, unless marked; log scale);"
        " green PASS, red FAIL",
        fontsize=8,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "ratios.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def latency_sets(runs: Sequence[Run]) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """(title, [(label, p50 ms, p99 ms)]) for the soak's backends and projection_sqlite's live table."""
    sets = []
    for run in runs:
        for backend, soak in run.results.get("extra", {}).get("soak", {}).items():
            rows = [(n, p["p50_ms"], p["p99_ms"]) for n, p in soak["latency"].items()]
            sets.append((f"soak on {backend}", rows))
        for table in run.results.get("tables", []):
            header = table["header"]
            p50, p99 = column(header, "median ms", "p50 ms"), column(header, "p99 ms")
            if p50 is None or p99 is None or run.name == "soak":
                continue
            rows = []
            for row in table["rows"]:
                a, b = number(row[p50]), number(row[p99])
                if a is not None and b is not None:
                    rows.append((row[0].strip()[:40], a, b))
            if rows:
                sets.append((f"{run.name}: {title_of(table)[:60]}", rows))
    return sets


def plot_latency(runs: Sequence[Run], out: Path) -> str | None:
    sets = latency_sets(runs)
    if not sets:
        return None
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(sets), 1, figsize=(10, sum(1.0 + 0.45 * len(r) for _, r in sets)), squeeze=False
    )
    for ax, (title, rows) in zip(axes[:, 0], sets, strict=True):
        ys = list(range(len(rows)))[::-1]
        ax.barh([y + 0.2 for y in ys], [r[1] for r in rows], height=0.4, label="p50", color="#1f77b4")
        ax.barh([y - 0.2 for y in ys], [r[2] for r in rows], height=0.4, label="p99", color="#aec7e8")
        ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
        ax.set_xlabel("ms", fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path.name


def plot_soak(soaks: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """The soak's throughput over time and memory over time, one line per backend (and projection)."""
    if not soaks:
        return []
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(len(soaks), 1, figsize=(10, 3.2 * len(soaks)), squeeze=False)
    for ax, (backend, soak) in zip(axes[:, 0], soaks.items(), strict=True):
        s = soak["series"]
        ax.plot(s["t"], s["appended_per_s"], label="appended", linewidth=2, color="black")
        for key, values in s.items():
            if key.startswith("projected_per_s:"):
                ax.plot(s["t"], values, label=f"projected: {key.split(':', 1)[1]}", linewidth=1)
        ax.set_title(f"soak on {backend}: events per second", fontsize=9, loc="left")
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, ncols=4)
    fig.tight_layout()
    fig.savefig(out / "soak-throughput.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    names.append("soak-throughput.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    for backend, soak in soaks.items():
        s = soak["series"]
        (line,) = ax.plot(s["t"], s["rss_mb"], label=f"{backend}: RSS", linewidth=1)
        ax.plot(
            s["t"],
            s["net_rss_mb"],
            label=f"{backend}: RSS less latency arrays",
            linestyle="--",
            color=line.get_color(),
        )
    ax.set_title("soak: memory over time (VmRSS, sampled every second)", fontsize=9, loc="left")
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_ylabel("MB", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "soak-memory.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    names.append("soak-memory.png")
    return names


# ---------------------------------------------------------------------------- the Markdown


def cell(text: str) -> str:
    return text.strip().replace("|", "\\|") or " "


def numeric(values: Sequence[str]) -> bool:
    """Whether a column holds figures (right-aligned): every filled cell starts like a number."""
    filled = [v.strip() for v in values if v.strip()]
    return bool(filled) and all(v[0].isdigit() or v[0] in "+-.>(" for v in filled)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    right = [i > 0 and numeric([row[i] for row in rows if i < len(row)]) for i in range(len(header))]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    for row in rows:
        cells = [cell(c) for c in row]
        if len(header) > 0 and header[-1] == "result" and cells[-1] == "FAIL":
            cells[-1] = "**FAIL**"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_version(runs: Sequence[Run]) -> str:
    for run in runs:
        found = run.results.get("extra", {}).get("postgres_version")
        if found:
            return str(found)
        for line in run.results.get("header", []):
            for part in str(line).split(", "):
                if part.startswith("PostgreSQL "):
                    return part.split()[1].rstrip(";")
    return "not measured"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def log_tail(path: Path, lines: int = 12) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return [f"(no log: {exc})"]


def soak_lines(soaks: dict[str, dict[str, Any]]) -> list[str]:
    header = [
        "backend",
        "seconds",
        "writers",
        "events",
        "ev/s",
        "conflicts",
        "append p50/p99 ms",
        "projection p50/p99 ms (worst)",
        "caught up after",
        "memory start/mid/end MB",
        "2nd-half growth",
        "memory",
        "rebuild",
    ]
    rows = []
    for backend, s in soaks.items():
        lat = s["latency"]
        projections = [p for n, p in lat.items() if n != "append"]
        worst = max(projections, key=lambda p: p["p99_ms"]) if projections else {"p50_ms": 0, "p99_ms": 0}
        mem = s["memory"]
        equal = all(r["equal"] for r in s["rebuild"].values()) and not s["problems"]
        rows.append(
            [
                backend,
                f"{s['seconds']:.0f}",
                str(s["settings"]["writers"]),
                f"{s['appended']:,}",
                f"{s['events_per_s']:,.0f}",
                f"{s['conflicts']:,}",
                f"{lat['append']['p50_ms']:.1f} / {lat['append']['p99_ms']:.1f}",
                f"{worst['p50_ms']:.1f} / {worst['p99_ms']:.1f}",
                f"{s['drain_s']:.2f} s",
                f"{mem['start_mb']:.0f} / {mem['middle_mb']:.0f} / {mem['end_mb']:.0f}",
                f"{mem['second_half_growth_mb']:+.1f} MB (limit {mem['limit_mb']:g})",
                mem["result"] if mem["result"] == "PASS" else "**FAIL**",
                "equal" if equal else "**DIFFERENT**",
            ]
        )
    return markdown_table(header, rows)


def write_report(
    runs: Sequence[Run], out: Path, quick: bool, started: datetime.datetime, argv: Sequence[str]
) -> None:
    inside = out.is_relative_to(ROOT)
    readme = Path(os.path.relpath(HERE / "README.md", out)).as_posix() if inside else str(HERE / "README.md")
    lines = [
        "# streamsrc benchmark report",
        "",
        f"Generated {started:%Y-%m-%d %H:%M} UTC by `python -m bench {' '.join(argv)}`"
        f"{' (QUICK sizes: a smoke test, ratios indicative only)' if quick else ''}."
        f"{KEPT if '--keep' in argv else ''}",
        "",
        f"Machine: Python {platform.python_version()} ({platform.python_implementation()}),"
        f" SQLite {sqlite3.sqlite_version}, PostgreSQL {postgres_version(runs)},"
        f" {os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()};"
        f" load average at the start {os.getloadavg()[0]:.2f}.",
        "",
        f"Libraries: streamsrc {version('streamsrc')}, anyio {version('anyio')},"
        f" asyncpg {version('asyncpg')},"
        f" references: aiostream {version('aiostream')}, eventsourcing {version('eventsourcing')}.",
        "",
        "Every target is a ratio of streamsrc to a reference measured in the same process, the variants"
        f" interleaved (see [bench/README.md]({readme}) for each benchmark, its reference and how to"
        " read the columns). Absolute rates depend on the machine and its load; ratios are what is judged.",
        "",
        "## Summary",
        "",
    ]
    summary = [
        [f"[{r.name}](#{r.name})", r.status, f"{r.seconds:.0f} s", r.finished, f"[log](logs/{r.name}.log)"]
        for r in runs
    ]
    lines += markdown_table(["benchmark", "result", "time", "ended (UTC)", "output"], summary)
    judged = judged_rows(runs)
    ratios_png = plot_ratios(judged, out)
    if ratios_png:
        passed = sum(j.passed for j in judged)
        lines += [
            "",
            f"{passed} of {len(judged)} ratio targets met.",
            "",
            f"![ratios against targets]({ratios_png})",
        ]
    latency_png = plot_latency(runs, out)

    soaks: dict[str, dict[str, Any]] = {}
    for run in runs:
        lines += ["", f"## {run.name}", "", f"{TITLES.get(run.name, run.name)}: {run.status}."]
        if run.skipped:
            lines += ["", f"Skipped: {run.skipped}"]
            continue
        if run.code != 0:
            tail = log_tail(out / "logs" / f"{run.name}.log")
            lines += ["", f"It did not finish cleanly; the end of [its log](logs/{run.name}.log):", ""]
            lines += ["```", *tail, "```"]
        if not run.results:
            lines += ["", "It wrote no results."]
            continue
        header = run.results.get("header", [])
        if header:
            lines += ["", *[f"`{h}`  " for h in header]]
        if run.name == "soak":
            soaks = run.results.get("extra", {}).get("soak", {})
            for backend, why in run.results.get("extra", {}).get("soak_skipped", {}).items():
                lines += ["", f"{backend}: {why}"]
            if soaks:
                lines += ["", *soak_lines(soaks)]
                for png in plot_soak(soaks, out):
                    lines += ["", f"![{png[:-4]}]({png})"]
        for table in run.results.get("tables", []):
            notes = [n for note in table.get("notes", []) for n in str(note).split("\n")]
            lines += [""]
            if notes:
                lines += [f"**{notes[0].strip()}**", ""]
                lines += [f"> {n.strip()}  " for n in notes[1:]]
                if len(notes) > 1:
                    lines += [""]
            lines += markdown_table(table["header"], table["rows"])
        for m in run.results.get("memory", []):
            lines += [
                "",
                f"Memory check ({m['label']}): peak RSS grew {m['growth_mb']:.2f} MB"
                f" (limit {m['limit_mb']:g} MB): {m['result']}.",
            ]
        failures = run.results.get("failures", [])
        if failures:
            lines += ["", "Missed targets:", "", *[f"- {f}" for f in failures]]
        if run.name != "soak":
            chart = plot_throughput(run.name, run.results.get("tables", []), out)
            if chart:
                lines += ["", f"![throughput of {run.name}]({chart})"]
    if latency_png:
        lines += ["", "## Latency percentiles", "", f"![latency p50 and p99]({latency_png})"]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: every script's --quick")
    parser.add_argument(
        "--only", action="append", choices=SCRIPTS, metavar="NAME", help="run only this script (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "reports" / "latest", help="the report's folder")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with --only: keep the other scripts' results already in --out (rerun a noisy one)",
    )
    args = parser.parse_args(argv)
    if args.keep and not args.only:
        parser.error("--keep needs --only (the scripts to run again)")
    import matplotlib

    matplotlib.use("Agg")
    out: Path = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "json").mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    started = datetime.datetime.now(datetime.UTC)
    runs = []
    for name in SCRIPTS if args.keep else args.only or SCRIPTS:
        if args.keep and name not in args.only:
            kept = kept_run(name, out)
            if kept is not None:
                runs.append(kept)
            continue
        print(f"{name} ...", end=" ", flush=True)
        run = run_script(name, args.quick, out)
        print(f"{run.status} ({run.seconds:.0f} s)", flush=True)
        runs.append(run)
    (out / "runs.json").write_text(
        json.dumps(
            {
                r.name: {"code": r.code, "seconds": r.seconds, "error": r.error, "finished": r.finished}
                for r in runs
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    write_report(runs, out, args.quick, started, sys.argv[1:] if argv is None else argv)
    print(f"report: {out / 'README.md'}")
    return 1 if any(r.code != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
