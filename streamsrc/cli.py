"""The ``streamsrc`` command line (on click): explore, follow, copy, export and import any store.

Every command takes the store URL from ``--url`` (before or after the
command, or ``STREAMSRC_URL``); the default is ``sqlite:///streamsrc.db``, a
file in the current directory. Errors print one line on stderr and exit with
status 1 (2 for a usage error), never a traceback; an empty result says so
on stderr and exits 0.

    streamsrc demo                       # the account example, end to end
    streamsrc streams                    # streams, their length, last event time
    streamsrc read user-ada-1 --json     # one stream, as JSON lines
    streamsrc read-all --type UserRegistered --limit 5
    streamsrc tail                       # follow the log live until Ctrl-C
    streamsrc state user-ada-1 --at 2    # an entity's state, now or back then
    streamsrc copy sqlite:///a.db postgresql://...   # migrate, resumable
    streamsrc export > log.jsonl && streamsrc --url sqlite:///b.db import < log.jsonl
    streamsrc projection status          # every recorded checkpoint and partition
    streamsrc projection rebuild orders --projection myapp.views:orders --into fresh.db
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from returns.result import Failure, Success

from streamsrc.errors import InvalidEvent, StreamsrcError
from streamsrc.events import RecordedEvent, recorded_from_json, recorded_to_json

T = TypeVar("T")

DEFAULT_URL = "sqlite:///streamsrc.db"


class CommandFailed(click.ClickException):
    """A command that could not do its job: one line on stderr, exit status 1.

    >>> error = CommandFailed("no event at seq 9 in 'user-u1'")
    >>> error.exit_code, error.format_message()
    (1, "no event at seq 9 in 'user-u1'")
    """

    def show(self, file: Any = None) -> None:
        click.echo(f"streamsrc: error: {redact_text(self.format_message())}", err=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


_EXPECTED = (StreamsrcError, OSError, ValueError)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on an event loop; expected failures become one line and exit status 1."""
    try:
        return anyio.run(main)
    except BaseException as exc:
        leaf = _first_leaf(exc)
        if isinstance(leaf, BrokenPipeError):
            raise leaf from None  # the reader left (``| head``): _quiet_pipe ends quietly
        if isinstance(leaf, click.ClickException):
            raise leaf from None
        if isinstance(leaf, _EXPECTED):
            raise CommandFailed(_one_line(leaf)) from None
        if leaf is not exc and isinstance(leaf, KeyboardInterrupt):
            raise leaf from None
        raise


@contextmanager
def _quiet_pipe() -> Iterator[None]:
    """``streamsrc read-all | head``: the reader leaving early is not an error."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _open(url: str, *, must_exist: bool = True, scoped: bool = True) -> Any:
    """``open_store(url)``; for commands that only read, a SQLite file that is not there is an error.
    With ``--tenant`` (and ``scoped``), the tenant's view of the store (closed with the store)."""
    from streamsrc.store import open_store

    if must_exist and url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].split("?", 1)[0]
        if path and path != ":memory:" and not Path(path).exists():
            raise CommandFailed(f"no store at {path} (run `streamsrc demo`, or give --url)")
    tenant = _tenant() if scoped else None
    return open_store(url) if tenant is None else _tenant_view(url, tenant)


@contextlib.asynccontextmanager
async def _tenant_view(url: str, tenant: str) -> AsyncIterator[Any]:
    from streamsrc.store import open_store
    from streamsrc.tenancy import TenantStore

    async with open_store(url) as store:
        yield TenantStore(store, tenant, owns=False)


# ----------------------------------------------------------------------------------------- output


def _compact(value: Any, width: int) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _width() -> int | None:
    """The width tables fit: ``COLUMNS`` if set, else the terminal's; ``None`` (no limit, names whole)
    when stdout is a pipe or a file."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _cell(text: str, width: int, align: str = "<") -> str:
    """``text`` in a column ``width`` wide, cut with an ellipsis when longer (never silently).

    >>> _cell("tenant-acme-corp-invoice-2026-000123-line-items", 24)
    'tenant-acme-corp-invoic…'
    >>> _cell("user-1", 8) + "|", _cell("42", 5, ">")
    ('user-1  |', '   42')
    """
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return f"{text:{align}{width}}"


def _fit(wanted: Sequence[int], least: Sequence[int], room: int | None) -> list[int]:
    """Widths of the columns that shrink: ``wanted`` each when there is room (or no limit), else
    cut in proportion, never below ``least``.

    >>> _fit([40, 24], [10, 8], None), _fit([40, 24], [10, 8], 100), _fit([40, 24], [10, 8], 32)
    ([40, 24], [40, 24], [20, 12])
    """
    if room is None or sum(wanted) <= room:
        return list(wanted)
    total = sum(wanted)
    return [max(low, want * room // total) for want, low in zip(wanted, least, strict=True)]


class _EventPrinter:
    """Events as an aligned table (header first) fitted to the terminal, or as JSON lines (``--json``).

    Stream and type names cut to fit end with an ellipsis; through a pipe (no
    terminal, no ``COLUMNS``) nothing is cut.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.header = False
        self.count = 0
        width = _width()
        fixed = 8 + 2 + 1 + 5 + 2 + 1 + 24 + 1  # position, seq, time and the spaces between
        self.limit = width is not None
        room = None if width is None else max(width - fixed, 24)
        names = None if room is None else room - min(20, room // 3)  # the rest is the data's
        self.stream_w, self.type_w = _fit([24, 20] if names is None else [48, 40], [8, 6], names)
        self.data_w = 60 if room is None else max(1, min(60, room - self.stream_w - self.type_w - 1))

    def __call__(self, event: RecordedEvent) -> None:
        self.count += 1
        if self.as_json:
            click.echo(json.dumps(recorded_to_json(event), ensure_ascii=False))
            return
        if not self.header:
            self.header = True
            click.echo(
                f"{'POSITION':>8}  {_cell('STREAM', self.stream_w)} {'SEQ':>5}  "
                f"{_cell('TYPE', self.type_w)} {'TIME (UTC)':<24} DATA"
            )
        stream, kind = event.stream, event.type
        if self.limit:
            stream, kind = _cell(stream, self.stream_w), _cell(kind, self.type_w)
        else:
            stream, kind = f"{stream:<{self.stream_w}}", f"{kind:<{self.type_w}}"
        click.echo(
            f"{event.position:>8}  {stream} {event.seq:>5}  {kind} "
            f"{_time(event.time):<24} {_compact(event.data, self.data_w)}"
        )


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _load_attribute(spec: str, what: str) -> Any:
    """``module:attribute`` → the object (a user's entity, projection or schema)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{what} must be given as module:attribute, not {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does: modules of the current folder
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {spec!r}: {exc}") from None
    return found


# ------------------------------------------------------------------------------------------ group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    "-u",
    envvar="STREAMSRC_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Store URL: sqlite:///path.db, memory://, postgresql://..., dynamodb://table?...",
)
@click.option(
    "--tenant",
    envvar="STREAMSRC_TENANT",
    default=None,
    metavar="NAME",
    help="Work on tenant NAME's view of the store: its streams, events and checkpoints only.",
)
@click.version_option(package_name="streamsrc")
@click.pass_context
def cli(ctx: click.Context, url: str, tenant: str | None) -> None:
    """Event sourcing on a streaming core: look into, follow, copy and set up event stores."""
    ctx.obj = url
    if tenant is None and os.environ.get("STREAMSRC_TENANT") == "":
        tenant = ""  # set but empty: refused, never the whole store
    if tenant is not None:
        from streamsrc.tenancy import InvalidTenant, check_tenant

        try:
            ctx.meta[_TENANT] = check_tenant(tenant)
        except InvalidTenant as exc:
            raise click.BadParameter(str(exc), param_hint="'--tenant' / STREAMSRC_TENANT") from None


_TENANT = "streamsrc.tenant"


def _tenant() -> str | None:
    """The tenant of ``--tenant``/``STREAMSRC_TENANT``, or ``None``: the whole store."""
    ctx = click.get_current_context(silent=True)
    tenant: str | None = None if ctx is None else ctx.meta.get(_TENANT)
    return tenant


def _url(ctx: click.Context) -> str:
    url: str = ctx.obj
    return url


@cli.command()
@click.option("--url", "demo_url", default=None, help="Store URL (default: the global --url).")
@click.pass_context
def demo(ctx: click.Context, demo_url: str | None) -> None:
    """Run the account-management example end to end and print what happened."""
    from streamsrc.demo import run_demo

    if _tenant() is not None:
        raise click.UsageError("demo writes the example into the whole store: run it without --tenant")

    def say(line: str) -> None:
        click.echo(redact_text(line))

    with _quiet_pipe():
        _run(functools.partial(run_demo, demo_url or _url(ctx), say))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def streams(ctx: click.Context, as_json: bool) -> None:
    """List the streams with their length and the time of their last event."""

    async def main() -> None:
        async with _open(_url(ctx)) as store:
            header = False
            width = _width()
            stream_w = 40 if width is None else max(10, width - 35)
            async with store.streams().open() as names:
                async for name in names:
                    last = (await store.latest(name)).value_or(None)
                    seq, moment = (0, None) if last is None else (last.seq, last.time)
                    if as_json:
                        when = None if moment is None else moment.isoformat()
                        click.echo(json.dumps({"stream": name, "events": seq, "last_event": when}))
                        header = True
                        continue
                    if not header:
                        header = True
                        click.echo(f"{_cell('STREAM', stream_w)} {'EVENTS':>8}  LAST EVENT (UTC)")
                    shown = f"{name:<{stream_w}}" if width is None else _cell(name, stream_w)
                    click.echo(f"{shown} {seq:>8}  {'-' if moment is None else _time(moment)}")
                    header = True
            if not header:
                click.echo("no streams in the store", err=True)

    with _quiet_pipe():
        _run(main)


_after = click.option("--after", type=click.IntRange(min=0), default=0, show_default=True)
_limit = click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many events.")
_types = click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
_json = click.option("--json", "as_json", is_flag=True, help="JSON lines (lossless) instead of a table.")


@cli.command()
@click.argument("stream")
@_after
@_limit
@_types
@_json
@click.option("--backwards", is_flag=True, help="Last event first.")
@click.pass_context
def read(
    ctx: click.Context,
    stream: str,
    after: int,
    limit: int | None,
    types: tuple[str, ...],
    as_json: bool,
    backwards: bool,
) -> None:
    """Print the events of STREAM (those with seq > --after)."""

    async def main() -> None:
        async with _open(_url(ctx)) as store:
            events = store.read(stream, after=after, backwards=backwards)
            if types:
                events = events.filter(lambda e: e.type in types)
            if limit is not None:
                events = events.take(limit)
            printer = _EventPrinter(as_json)
            await events.map(printer).drain()
            if not printer.count:
                what = "no events" if after == 0 and not types else "no events matching"
                click.echo(f"{what} in stream {stream!r}", err=True)

    with _quiet_pipe():
        _run(main)


@cli.command("read-all")
@_after
@_limit
@_types
@click.option("--prefix", default=None, help="Only streams whose name starts with this.")
@_json
@click.pass_context
def read_all(
    ctx: click.Context,
    after: int,
    limit: int | None,
    types: tuple[str, ...],
    prefix: str | None,
    as_json: bool,
) -> None:
    """Print the global log in order (events with position > --after)."""

    async def main() -> None:
        async with _open(_url(ctx)) as store:
            events = store.read_all(after, limit, types=types or None, stream_prefix=prefix)
            printer = _EventPrinter(as_json)
            await events.map(printer).drain()
            if not printer.count:
                filtered = after or types or prefix
                click.echo("no events matching" if filtered else "no events in the store", err=True)

    with _quiet_pipe():
        _run(main)


@cli.command()
@click.option(
    "--after", type=click.IntRange(min=0), default=None, help="Start after this position (default: now)."
)
@_types
@click.option("--prefix", default=None, help="Only streams whose name starts with this.")
@_json
@click.pass_context
def tail(
    ctx: click.Context, after: int | None, types: tuple[str, ...], prefix: str | None, as_json: bool
) -> None:
    """Follow the global log live, printing events as they are appended, until Ctrl-C."""
    from streamsrc.projections import subscribe

    async def main() -> None:
        async with _open(_url(ctx)) as store:
            start = await store.head() if after is None else after
            click.echo(redact_text(f"following {store!r} after position {start} (Ctrl-C to stop)"), err=True)
            printer = _EventPrinter(as_json)

            def show(event: RecordedEvent) -> None:
                printer(event)
                sys.stdout.flush()

            events = subscribe(store, start, types=types or None, stream_prefix=prefix)
            await events.map(show).drain()

    with _quiet_pipe():
        try:
            _run(main)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)


# ------------------------------------------------------------------------------------ entity state


def _example_entity(stream: str) -> tuple[Any, str] | None:
    from streamsrc.examples import accounts

    for prefix, entity in (
        ("user-", accounts.users),
        ("group-", accounts.groups),
        ("username-", accounts.usernames),
    ):
        if stream.startswith(prefix):
            return entity, stream[len(prefix) :]
    return None


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a seq nor an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@cli.command()
@click.argument("key")
@click.option(
    "--at", "at", default=None, metavar="SEQ|TIME", help="A seq, or an ISO 8601 time (UTC if no zone)."
)
@click.option(
    "--entity",
    "entity_spec",
    default=None,
    metavar="MODULE:ATTR",
    help="Your Entity (default: the example's, chosen by KEY's prefix user-/group-/username-).",
)
@click.pass_context
def state(ctx: click.Context, key: str, at: str | None, entity_spec: str | None) -> None:
    """Print the state of an entity, now or as it was at a seq or a time.

    KEY is the entity's stream name for the example (user-ID, group-ID,
    username-NAME), or the key your --entity takes.
    """
    from streamsrc.entity import Entity, Repository

    if entity_spec is not None:
        entity = _load_attribute(entity_spec, "--entity")
        if not isinstance(entity, Entity):
            raise click.BadParameter(f"{entity_spec} is a {type(entity).__name__}, not an Entity")
        entity_key: Any = key
    else:
        found = _example_entity(key)
        if found is None:
            raise click.BadParameter(
                f"{key!r} is no stream of the example (user-, group-, username-): give --entity"
            )
        entity, entity_key = found
    seq: int | None = None
    moment: datetime | None = None
    if at is not None:
        if at.isdigit():
            seq = int(at)
        else:
            moment = _moment(at)

    async def main() -> None:
        async with _open(_url(ctx)) as store:
            repository = Repository(store, entity)
            if seq is None and moment is None:
                loaded = await repository.load(entity_key)
            elif seq is not None and seq > (last := await _last_seq(store, entity.stream(entity_key))):
                raise CommandFailed(f"{entity.stream(entity_key)!r} has {last} events: there is no seq {seq}")
            else:
                loaded = await repository.state_at(entity_key, seq=seq, time=moment)
            if loaded.seq == 0:
                raise CommandFailed(
                    f"{entity.stream(entity_key)!r} has no events" + ("" if at is None else " by then")
                )
            click.echo(json.dumps({"seq": loaded.seq, "state": _jsonable(loaded.state)}, indent=2))

    _run(main)


async def _last_seq(store: Any, stream: str) -> int:
    last = (await store.latest(stream)).value_or(None)
    return 0 if last is None else int(last.seq)


# ------------------------------------------------------------------------------ copy, export, import


def _progress_line(done: int, total: int, rate: float, eta: float | None) -> str:
    width = 30
    filled = width if total <= 0 else min(width, done * width // total)
    eta_text = "--:--" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
    bar = "#" * filled + "." * (width - filled)
    speed = f"{rate:,.0f} ev/s" if rate > 0 else "-- ev/s"
    return f"[{bar}] {done:,}/{total:,} events  {speed}  ETA {eta_text}"


class _Bar:
    """Progress on stderr: a bar redrawn in place on a terminal; plain lines (every ``every``
    seconds, and the last) when stderr is a file or a pipe, so logs get no ``\\r`` frames.
    ``every`` is 10 s unless the environment's ``STREAMSRC_PROGRESS_EVERY`` says otherwise.

    >>> bar = _Bar(tty=False, every=3600)
    >>> bar.draw(0, 0, 0.0, None, final=True)  # nothing was done: no rate, no bar
    >>> bar.draw(5, 10, 50.0, 0.1)  # the first plain line; the next ones only after an hour
    >>> bar.draw(10, 10, 50.0, 0.0, final=True)
    """

    def __init__(self, *, tty: bool | None = None, every: float | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every = _progress_every() if every is None else every
        self.shown = False
        self.last = time.monotonic()

    def draw(self, done: int, total: int, rate: float, eta: float | None, final: bool = False) -> None:
        if total <= 0 and done <= 0:
            if self.shown:
                click.echo("", err=True)
            self.shown = False
            return  # an empty log: no bar, and never "0 ev/s"
        if self.tty:
            click.echo("\r" + _progress_line(done, total, rate, eta), err=True, nl=final)
            self.shown = not final
            return
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            click.echo(_progress_line(done, total, rate, eta), err=True)


def _progress_every() -> float:
    """Seconds between plain progress lines: ``STREAMSRC_PROGRESS_EVERY``, else 10.

    >>> import os
    >>> os.environ["STREAMSRC_PROGRESS_EVERY"] = "0.5"
    >>> _progress_every()
    0.5
    >>> del os.environ["STREAMSRC_PROGRESS_EVERY"]
    >>> _progress_every()
    10.0
    """
    raw = os.environ.get("STREAMSRC_PROGRESS_EVERY", "")
    try:
        every = float(raw) if raw else 10.0
    except ValueError:
        raise click.UsageError(f"STREAMSRC_PROGRESS_EVERY must be a number of seconds, not {raw!r}") from None
    return every if every >= 0 else 10.0


def _same_store(source_url: str, target_url: str) -> bool:
    """Whether two URLs name one store: the same URL, or the same SQLite file (by real path).

    >>> _same_store("sqlite:///a.db", "sqlite:///./a.db"), _same_store("memory://", "sqlite:///a.db")
    (True, False)
    """
    if source_url == target_url:
        return True
    paths = [_sqlite_path(url) for url in (source_url, target_url)]
    if paths[0] is None or paths[1] is None:
        return False
    return os.path.realpath(paths[0]) == os.path.realpath(paths[1])


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL (``None`` for other URLs and in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return path if path and path != ":memory:" else None


@cli.command()
@click.argument("source_url", metavar="FROM_URL")
@click.argument("target_url", metavar="TO_URL")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--checkpoint", default=None, help="Checkpoint name in the target (default: from FROM_URL).")
def copy(source_url: str, target_url: str, batch_size: int, checkpoint: str | None) -> None:
    """Copy every event from FROM_URL to TO_URL (seqs, ids, times and order kept); resumable."""
    from streamsrc.migrate import CopyProgress
    from streamsrc.migrate import copy as copy_events

    if _same_store(source_url, target_url):
        raise CommandFailed(
            f"{redact(source_url)} and {redact(target_url)} are the same store: nothing to copy"
        )
    bar = _Bar()

    def report(p: CopyProgress) -> None:
        bar.draw(p.position - p.start, p.head - p.start, p.rate, p.eta, final=p.done)

    async def main() -> tuple[CopyProgress, int]:
        async with _open(source_url) as source, _open(target_url, must_exist=False) as target:
            done = await copy_events(
                source, target, checkpoint=checkpoint, batch_size=batch_size, on_progress=report
            )
            return done, await target.head()

    done, head = _run(main)
    where = redact(target_url)
    click.echo(f"copied {done.events:,} events in {done.elapsed:.1f} s; {where} is at position {head}")


@cli.command("export")
@click.argument("url", required=False)
@_after
@click.pass_context
def export_events(ctx: click.Context, url: str | None, after: int) -> None:
    """Write every event (position > --after) as JSON lines on stdout: `streamsrc export > log.jsonl`."""

    async def main() -> int:
        count = 0
        async with _open(url or _url(ctx)) as store, store.read_all(after).open() as events:
            async for event in events:
                sys.stdout.write(json.dumps(recorded_to_json(event), ensure_ascii=False) + "\n")
                count += 1
        sys.stdout.flush()
        return count

    with _quiet_pipe():
        count = _run(main)
    click.echo(f"exported {count:,} events", err=True)


def _read_lines(lines: Iterator[str]) -> Iterator[tuple[int, RecordedEvent]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, recorded_from_json(json.loads(line))
        except (ValueError, InvalidEvent) as exc:
            raise CommandFailed(f"line {number}: {_one_line(exc)}") from None


@cli.command("import")
@click.argument("url", required=False)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.pass_context
def import_events(ctx: click.Context, url: str | None, batch_size: int) -> None:
    """Read JSON lines (from `streamsrc export`) on stdin into a store, keeping ids, seqs and times.

    The whole input is checked before anything is written. Running it again
    with the same input is harmless: events already there (same ids at the
    same seqs) are skipped.
    """
    from streamsrc.store import ImportingStore

    target = url or _url(ctx)
    # The whole input is read and checked first: a malformed line writes nothing (and makes no file).
    lines = list(_read_lines(iter(sys.stdin)))
    made = _sqlite_path(target)
    if made is not None and os.path.exists(made):
        made = None  # an existing file is never removed, whatever happens

    async def main() -> tuple[int, int]:
        count = 0
        async with _open(target, must_exist=False) as store:
            head: Callable[[], Awaitable[int]] = store.head
            before = await head()
            if not isinstance(store, ImportingStore):
                raise CommandFailed(redact_text(f"{store!r} cannot import recorded events"))
            batch: list[RecordedEvent] = []
            first_line = 0

            async def flush() -> None:
                nonlocal count
                if not batch:
                    return
                result = await store.import_events(batch[0].stream, batch)
                match result:
                    case Success(_):
                        count += len(batch)
                    case Failure(error):
                        raise CommandFailed(f"line {first_line}: {_one_line(error)}")
                batch.clear()

            for number, event in lines:
                if batch and (event.stream != batch[-1].stream or len(batch) >= batch_size):
                    await flush()
                if not batch:
                    first_line = number
                batch.append(event)
            await flush()
            return count, await head() - before

    try:
        count, written = _run(main)
    except BaseException:
        if made is not None:  # a failed import leaves no new file behind
            for leftover in (made, made + "-wal", made + "-shm", made + "-journal"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        raise
    click.echo(f"imported {written:,} events ({count - written:,} were there already)", err=True)


# ------------------------------------------------------------------------------------- projections


def _example_projections() -> dict[str, tuple[Any, str]]:
    from streamsrc.examples import account_views as views

    return {
        views.user_search.name: (views.user_search, views.USER_SEARCH_SCHEMA),
        views.group_members.name: (views.group_members, views.GROUP_MEMBERS_SCHEMA),
        views.email_domains.name: (views.email_domains, views.EMAIL_DOMAINS_SCHEMA),
    }


_PARTITION = re.compile(r"^(?P<name>.+)\[(?P<part>\d+)/(?P<parts>\d+)\]$")


def _read_model_at(where: str, schema: Any = "") -> Any:
    """A SQL read model: a PostgreSQL database (``postgresql://...``) or a SQLite file (a path or URL)."""
    if where.startswith(("postgresql://", "postgres://")):
        from streamsrc.projections.postgres import PostgresReadModel

        return PostgresReadModel(where, schema)
    from streamsrc.projections.sqlite import SqliteReadModel

    return SqliteReadModel(_sqlite_path(where) or where, schema)


def _models_of(url: str, model: str | None) -> str | None:
    """Where the read models are: ``--model``, else the store's own database (SQLite, PostgreSQL);
    ``None`` for a store that keeps only checkpoints (DynamoDB, memory)."""
    if model is not None:
        path = _sqlite_path(model) if model.startswith("sqlite:") else model
        if path is not None and "://" not in path and not Path(path).exists():
            raise CommandFailed(f"no read model at {path}")
        return model
    if _sqlite_path(url) is not None or url.startswith(("postgresql://", "postgres://")):
        return url
    return None


def _load_projections(specs: Sequence[str]) -> list[Any]:
    """``--projection module:attr`` (repeatable) → Projection objects (anything with a ``name``)."""
    found = []
    for spec in specs:
        projection = _load_attribute(spec, "--projection")
        if not isinstance(getattr(projection, "name", None), str):
            raise click.BadParameter(f"{spec} is a {type(projection).__name__}, not a Projection")
        found.append(projection)
    return found


async def _recorded(store: Any, model: Any) -> dict[str, int]:
    """Every checkpoint the store keeps (``store.checkpoints()``, on any backend: migrate.copy's,
    callback read models', partitions') and every one a SQL read model records (its own wins)."""
    listing = getattr(store, "checkpoints", None)
    rows = [] if listing is None else list(await listing().to_list())
    if model is not None:
        rows += await model.query("SELECT name, position FROM streamsrc_projections")
    return {str(name): int(position) for name, position in rows}


@cli.group()
def projection() -> None:
    """Projections of any application: where they are, rebuild them."""


_projection_option = click.option(
    "--projection",
    "projection_specs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Your Projection (repeatable), found like --entity; the recorded ones are listed too.",
)
_model_option = click.option(
    "--model",
    default=None,
    metavar="PATH|URL",
    help="The read models' SQLite file or PostgreSQL URL (default: the store's own database).",
)


@projection.command("status")
@_projection_option
@_model_option
@click.pass_context
def projection_status(ctx: click.Context, projection_specs: tuple[str, ...], model: str | None) -> None:
    """Checkpoint, head and lag of each projection: those given, and every one recorded.

    Besides those given with --projection, the projections are what the store records:
    every checkpoint of the read models' table (``--model``, by default the
    store's own SQLite file or PostgreSQL database) and every checkpoint of
    the store itself. A projection split into partitions (worker processes)
    shows one more line per partition: its checkpoint, head and lag, then
    the worker holding its lease and the seconds left on it (- when
    nobody holds it).
    """
    url = _url(ctx.find_root())
    given = [p.name for p in _load_projections(projection_specs)]
    # a tenant's projections: the store's checkpoints it sees, and a read model only if --model names its own
    where = _models_of(url, model) if _tenant() is None or model is not None else None

    async def main() -> None:
        async with _open(url) as store:
            head = await store.head()
            leases: Any = None
            read_model: Any = None
            async with contextlib.AsyncExitStack() as stack:
                if where is not None:
                    read_model = await stack.enter_async_context(_read_model_at(where))
                    leases = read_model.leases()
                elif url.startswith("dynamodb://"):
                    from streamsrc.projections.dynamodb import DynamoDBLeases

                    leases = await stack.enter_async_context(DynamoDBLeases(url))
                positions = await _recorded(store, read_model)
                for name in given:
                    if name not in positions:
                        positions[name] = await store.load_checkpoint(name)
                await _print_status(positions, head, leases)

    _run(main)


async def _print_status(positions: dict[str, int], head: int, leases: Any) -> None:
    import time as clock

    parts: dict[str, list[tuple[int, str, int]]] = {}
    names: dict[str, int | None] = {}
    for name, position in positions.items():
        found = _PARTITION.match(name)
        if found is None:
            names[name] = position
        else:
            base, count = found["name"], int(found["parts"])
            if base not in parts:  # every partition of the projection, those never run at 0
                parts[base] = [(i, f"{base}[{i}/{count}]", 0) for i in range(count)]
            parts[base] = [(i, n, position if n == name else at) for i, n, at in parts[base]]
            names.setdefault(base, None)
    if not names:
        click.echo("no projections recorded (give --projection MODULE:ATTR, or --model)", err=True)
        return
    width = _width()
    name_w = max([20, *(len(n) for n in names)]) if width is None else max(12, min(40, width - 31))
    click.echo(f"{_cell('PROJECTION', name_w)} {'POSITION':>9} {'HEAD':>9} {'LAG':>9}")
    for name in sorted(names):
        recorded = names[name]  # None: only partitions, the projection is as far as its slowest one
        position = min(at for _, _, at in parts[name]) if recorded is None else recorded
        label = redact_text(name)  # a checkpoint may be named after a URL (copy's: redacted already)
        shown = f"{label:<{name_w}}" if width is None else _cell(label, name_w)
        click.echo(f"{shown} {position:>9} {head:>9} {max(0, head - position):>9}")
        held = (
            {x.partition: x for x in await leases.leases(name)}
            if leases is not None and name in parts
            else {}
        )
        for part, part_name, at in sorted(parts.get(name, [])):
            lease = held.get(part)
            left = lease.expires - clock.time() if lease is not None and lease.owner else 0.0
            owner = f"{lease.owner} ({left:.0f} s)" if lease and lease.owner and left > 0 else "-"
            cut = f"{part_name:<{name_w - 2}}" if width is None else _cell(part_name, name_w - 2)
            click.echo(f"  {cut} {at:>9} {head:>9} {max(0, head - at):>9}  {owner}")


@projection.command("rebuild")
@click.argument("name")
@_projection_option
@click.option(
    "--schema",
    "schema_spec",
    default=None,
    metavar="MODULE:ATTR",
    help="SQL (or a function of the connection) that makes the read model's tables.",
)
@click.option(
    "--into",
    "into",
    default=None,
    metavar="PATH|URL",
    help="A fresh SQLite file or PostgreSQL database (default: NAME-rebuilt.db).",
)
@click.pass_context
def projection_rebuild(
    ctx: click.Context,
    name: str,
    projection_specs: tuple[str, ...],
    schema_spec: str | None,
    into: str | None,
) -> None:
    """Replay the whole log of the store (any backend) into a fresh read model NAME, with progress.

    NAME is one of the ``--projection`` given (its handler writes a SQLite
    file or, with ``--into postgresql://...``, a PostgreSQL database), or
    one of the example's projections.
    """
    from streamsrc.projections import Progress, Projector

    chosen: Any = next((p for p in _load_projections(projection_specs) if p.name == name), None)
    schema: Any = "" if schema_spec is None else _load_attribute(schema_spec, "--schema")
    if chosen is None:
        known = _example_projections()
        if name not in known:
            given = ", ".join(p.name for p in _load_projections(projection_specs)) or "none"
            raise click.BadParameter(
                f"no projection {name!r} (given: {given}; the example's: {', '.join(sorted(known))}):"
                " give --projection MODULE:ATTR"
            )
        chosen, schema = known[name] if schema_spec is None else (known[name][0], schema)
    target = into or f"{name}-rebuilt.db"
    path = None if target.startswith(("postgresql://", "postgres://")) else (_sqlite_path(target) or target)
    if path is not None and Path(path).exists():
        raise CommandFailed(f"{path} exists: a rebuild starts from a fresh file")
    bar = _Bar()
    rates = [0.0]

    def report(p: Progress) -> None:
        rate = rates[0] = p.events / p.elapsed if p.elapsed > 0 else 0.0
        eta = None if rate <= 0 else p.lag / rate
        bar.draw(p.position, p.head, rate, eta)

    async def main() -> int:
        async with _open(_url(ctx.find_root())) as store, _read_model_at(target, schema) as read_model:
            if path is None and await read_model.load_position(name):
                raise CommandFailed(
                    f"{redact(target)} already has {name!r}: a rebuild starts from a fresh one"
                )
            status = await Projector(store, chosen, read_model).catch_up(on_progress=report)
            bar.draw(status.position, status.head, rates[0], 0.0, final=True)
            return int(status.position)

    try:
        position = _run(main)
    except BaseException:
        if path is not None:  # a failed rebuild leaves no half-made file
            for leftover in (path, path + "-wal", path + "-shm"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        raise
    click.echo(f"{name} rebuilt into {redact(target)} up to position {position}")


_STORE_TABLES = frozenset({"events", "snapshots", "checkpoints", "streamsrc_meta"})


def _switch_sqlite(live: str, rebuilt: str, name: str) -> tuple[list[str], int]:
    """In one transaction of ``live``: replace each table of ``rebuilt`` (the projection's) with the
    rebuilt one, and NAME's checkpoint and dead letters with the rebuilt ones."""
    import sqlite3

    conn = sqlite3.connect(live, isolation_level=None, timeout=10.0)
    try:
        conn.execute("ATTACH DATABASE ? AS rebuilt", (f"file:{rebuilt}?mode=ro",))
        found = conn.execute("SELECT position FROM rebuilt.streamsrc_projections WHERE name = ?", (name,))
        row = found.fetchone()
        if row is None:
            raise CommandFailed(f"{rebuilt} has no projection {name!r}: rebuild it first")
        tables = conn.execute(
            "SELECT name, sql FROM rebuilt.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name NOT LIKE 'streamsrc_%' ORDER BY name"
        ).fetchall()
        if clash := sorted({t for t, _ in tables} & _STORE_TABLES):
            raise CommandFailed(f"{rebuilt} has tables of an event store: {', '.join(clash)}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, sql in tables:
                quoted = '"' + table.replace('"', '""') + '"'
                conn.execute(f"DROP TABLE IF EXISTS main.{quoted}")
                conn.execute(sql)  # CREATE TABLE name ...: made in main
                conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM rebuilt.{quoted}")
            for sql in conn.execute(
                "SELECT sql FROM rebuilt.sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                " AND tbl_name NOT LIKE 'streamsrc_%'"
            ).fetchall():
                conn.execute(sql[0])
            conn.execute("DELETE FROM main.streamsrc_dead_letters WHERE projection = ?", (name,))
            conn.execute(
                "INSERT INTO main.streamsrc_dead_letters SELECT * FROM rebuilt.streamsrc_dead_letters"
                " WHERE projection = ?",
                (name,),
            )
            conn.execute(
                "INSERT INTO main.streamsrc_projections SELECT * FROM rebuilt.streamsrc_projections"
                " WHERE name = ? ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
                " time = excluded.time",
                (name,),
            )
            conn.execute("DELETE FROM main.streamsrc_projection_streams WHERE name = ?", (name,))
            if conn.execute(  # how far each stream got past the checkpoint: the rebuilt model's
                "SELECT 1 FROM rebuilt.sqlite_master WHERE name = 'streamsrc_projection_streams'"
            ).fetchone():
                conn.execute(
                    "INSERT INTO main.streamsrc_projection_streams"
                    " SELECT * FROM rebuilt.streamsrc_projection_streams WHERE name = ?",
                    (name,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [t for t, _ in tables], int(row[0])
    except sqlite3.Error as exc:
        raise CommandFailed(f"cannot switch {name!r} in: {_one_line(exc)}") from None
    finally:
        conn.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PG_TABLES = """
SELECT c.oid, c.relname, c.relkind = 'p' OR c.relispartition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'streamsrc\\_%'
ORDER BY c.relname
"""
_PG_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       a.attidentity::text, a.attgenerated::text, pg_get_serial_sequence(quote_ident($2), a.attname)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
_PG_CONSTRAINTS = """
SELECT contype = 'f', 'CONSTRAINT ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'x', 'f') ORDER BY contype, conname
"""
_PG_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
WHERE i.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


async def _pg_table(source: Any, oid: int, table: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """How to make ``table`` of the rebuilt database again: its statements before the rows (sequences,
    CREATE TABLE), after them (indexes, sequence values), its foreign keys, and the columns to copy."""
    quoted = _quoted(table)
    columns, copied, before, after = [], [], [], []
    for column, kind, not_null, default, identity, generated, sequence in await source.fetch(
        _PG_COLUMNS, oid, table
    ):
        spec = f"{_quoted(column)} {kind}"
        if generated:
            spec += f" GENERATED ALWAYS AS ({default}) STORED"
        else:
            copied.append(column)
            if identity:
                spec += f" GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY"
            elif default is not None:
                spec += f" DEFAULT {default}"
                if sequence is not None and "nextval(" in default:  # serial: the sequence first
                    before.append(f"CREATE SEQUENCE IF NOT EXISTS {sequence}")
                    after.append(f"ALTER SEQUENCE {sequence} OWNED BY {quoted}.{_quoted(column)}")
        if not_null:
            spec += " NOT NULL"
        columns.append(spec)
        if sequence is not None:
            last, called = await source.fetchrow(f"SELECT last_value, is_called FROM {sequence}")
            literal = "'" + quoted.replace("'", "''") + "'"
            name = "'" + column.replace("'", "''") + "'"
            after.append(
                f"SELECT setval(pg_get_serial_sequence({literal}, {name}), {int(last)}, {bool(called)})"
            )
    keys = []
    for foreign, constraint in await source.fetch(_PG_CONSTRAINTS, oid):
        if foreign:
            keys.append(f"ALTER TABLE {quoted} ADD {constraint}")
        else:
            columns.append(constraint)
    before.append(f"CREATE TABLE {quoted} ({', '.join(columns)})")
    after += [row[0] for row in await source.fetch(_PG_INDEXES, oid)]
    return before, after, keys, copied


async def _switch_postgres(live: str, rebuilt: str, name: str) -> tuple[list[str], int]:
    """In one transaction of the ``live`` PostgreSQL database: replace each table of the ``rebuilt``
    database (the projection's: its columns, constraints, indexes, sequences and rows) and NAME's
    checkpoint, marks and dead letters with the rebuilt ones."""
    import asyncpg

    from streamsrc.projections.postgres import PostgresReadModel
    from streamsrc.store.postgres import connect

    async with PostgresReadModel(live):  # the live database has the models' bookkeeping tables
        pass
    try:
        source = await connect(rebuilt, timeout=10.0)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandFailed(f"cannot open {redact(rebuilt)}: {_one_line(exc)}") from None
    try:
        async with source.transaction(isolation="repeatable_read", readonly=True):  # one snapshot
            tables, position = await _copy_postgres(source, live, name, redact(rebuilt))
        return tables, position
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CommandFailed(f"cannot switch {name!r} in: {_one_line(exc)}") from None
    finally:
        await source.close()


async def _copy_postgres(source: Any, live: str, name: str, shown: str) -> tuple[list[str], int]:
    from streamsrc.store.postgres import connect

    if await source.fetchval("SELECT to_regclass('streamsrc_projections')") is None:
        row = None
    else:
        row = await source.fetchrow("SELECT position FROM streamsrc_projections WHERE name = $1", name)
    if row is None:
        raise CommandFailed(f"{shown} has no projection {name!r}: rebuild it first")
    found = await source.fetch(_PG_TABLES)
    tables = [(int(oid), str(table)) for oid, table, _ in found]
    if clash := sorted({t for _, t in tables} & _STORE_TABLES):
        raise CommandFailed(f"{shown} has tables of an event store: {', '.join(clash)}")
    if parted := sorted(str(table) for _, table, partitioned in found if partitioned):
        raise CommandFailed(f"{shown} has partitioned tables, which switch cannot copy: {', '.join(parted)}")
    made = [(table, await _pg_table(source, oid, table)) for oid, table in tables]
    kept = {
        bookkeeping: await source.fetch(f"SELECT * FROM {bookkeeping} WHERE {column} = $1", name)
        for bookkeeping, column in (
            ("streamsrc_dead_letters", "projection"),
            ("streamsrc_projection_streams", "name"),
        )
        if await source.fetchval("SELECT to_regclass($1)", bookkeeping) is not None
    }
    target = await connect(live, timeout=10.0)
    try:
        async with target.transaction():
            if made:  # in one statement: the tables may refer to each other
                await target.execute(f"DROP TABLE IF EXISTS {', '.join(_quoted(t) for t, _ in made)}")
            for table, (before, after, _, copied) in made:
                for sql in before:
                    await target.execute(sql)
                columns = ", ".join(_quoted(c) for c in copied)
                rows = source.cursor(f"SELECT {columns} FROM {_quoted(table)}")
                await target.copy_records_to_table(table, records=rows, columns=copied)
                for sql in after:
                    await target.execute(sql)
            for _, (_, _, keys, _) in made:
                for sql in keys:
                    await target.execute(sql)
            await target.execute("DELETE FROM streamsrc_dead_letters WHERE projection = $1", name)
            await target.execute("DELETE FROM streamsrc_projection_streams WHERE name = $1", name)
            for bookkeeping, rows in kept.items():
                if rows:
                    await target.copy_records_to_table(bookkeeping, records=rows)
            await target.execute(
                "INSERT INTO streamsrc_projections (name, position, time) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position, time = excluded.time",
                name,
                int(row[0]),
                int(time.time() * 1_000_000),
            )
    finally:
        await target.close()
    return [t for _, t in tables], int(row[0])


@projection.command("switch")
@click.argument("name")
@click.option(
    "--from",
    "rebuilt",
    required=True,
    metavar="PATH|URL",
    help="The rebuilt SQLite file or PostgreSQL database.",
)
@_model_option
@click.pass_context
def projection_switch(ctx: click.Context, name: str, rebuilt: str, model: str | None) -> None:
    """Switch a rebuilt read model in: NAME's tables, checkpoint and dead letters from --from.

    The tables of the rebuilt read model (made by `projection rebuild`)
    replace those of the live one (--model, by default the store's own
    SQLite file or PostgreSQL database) in one transaction, with NAME's
    checkpoint and dead letters: the projection goes on from where the
    rebuild stopped. A projector still running on the old tables finds its
    checkpoint moved and stops. SQLite into SQLite, PostgreSQL into
    PostgreSQL (another database of any server: its tables, constraints,
    indexes, sequences and rows are copied over).
    """
    where = _models_of(_url(ctx.find_root()), model)
    if where is not None and where.startswith(("postgresql://", "postgres://")):
        if not rebuilt.startswith(("postgresql://", "postgres://")):
            raise CommandFailed("the live read model is in PostgreSQL: give --from postgresql://...")
        if rebuilt == where:
            raise CommandFailed(f"{redact(rebuilt)} is the live read model itself: nothing to switch")

        async def switch() -> tuple[list[str], int]:
            return await _switch_postgres(where, rebuilt, name)

        tables, position = _run(switch)
    else:
        live = None if where is None else _sqlite_path(where) if "://" in where else where
        if live is None:
            raise CommandFailed(
                "projection switch works on SQLite and PostgreSQL read models: give --model PATH|URL"
            )
        rebuilt = _sqlite_path(rebuilt) or rebuilt  # sqlite:///PATH or PATH
        if "://" in rebuilt:
            raise CommandFailed(
                f"the live read model is a SQLite file: give --from PATH, not {redact(rebuilt)}"
            )
        if not Path(rebuilt).exists():
            raise CommandFailed(f"no rebuilt read model at {rebuilt}")
        if os.path.realpath(rebuilt) == os.path.realpath(live):
            raise CommandFailed(f"{rebuilt} is the live read model itself: nothing to switch")

        async def prepare() -> None:  # the live file has the model's bookkeeping tables
            from streamsrc.projections.sqlite import SqliteReadModel

            async with SqliteReadModel(live):
                pass

        _run(prepare)
        tables, position = _switch_sqlite(live, rebuilt, name)
    made = ", ".join(tables) or "no tables"
    click.echo(f"{name} switched in from {redact(rebuilt)} at position {position} ({made})")


# ------------------------------------------------------------------------------------------ set-up


@cli.group()
def postgres() -> None:
    """PostgreSQL set-up."""


@postgres.command("init")
@click.argument("url", required=False)
@click.pass_context
def postgres_init(ctx: click.Context, url: str | None) -> None:
    """Create (or upgrade) streamsrc's tables in the PostgreSQL database at URL."""
    target = url or _url(ctx.find_root())
    if not target.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter(f"not a PostgreSQL URL: {target.split('://', 1)[0]}://...")

    async def main() -> str:
        async with _open(target, must_exist=False, scoped=False) as store:  # the tables of every tenant
            return repr(store)

    click.echo(f"ready: {redact_text(_run(main))}")


@cli.group()
def dynamodb() -> None:
    """DynamoDB set-up."""


@dynamodb.command("create-tables")
@click.argument("url", required=False)
@click.pass_context
def dynamodb_create_tables(ctx: click.Context, url: str | None) -> None:
    """Create the DynamoDB tables of the store at URL (streams enabled); nothing if they exist."""
    target = url or _url(ctx.find_root())
    if not target.startswith("dynamodb://"):
        raise click.BadParameter(f"not a DynamoDB URL: {target.split('://', 1)[0]}://...")

    async def main() -> None:
        from streamsrc.store.dynamodb import create_tables

        await create_tables(target)

    _run(main)
    click.echo(f"ready: tables of {redact(target)}")


@dynamodb.command("index")
@click.argument("url", required=False)
@click.option("--once", is_flag=True, help="Stop once the table's stream is read to its end.")
@click.option("--rebuild", is_flag=True, help="First index what the index lacks from a table scan.")
@click.pass_context
def dynamodb_index(ctx: click.Context, url: str | None, once: bool, rebuild: bool) -> None:
    """Index the order=stream DynamoDB table at URL from its DynamoDB stream (runs until stopped)."""
    target = url or _url(ctx.find_root())
    if not target.startswith("dynamodb://"):
        raise click.BadParameter(f"not a DynamoDB URL: {target.split('://', 1)[0]}://...")

    async def main() -> int:
        from streamsrc.integrations.dynamodb_index import run_indexer

        return await run_indexer(target, live=not once, rebuild=rebuild)

    click.echo(f"indexed {_run(main)} events of {redact(target)}")


# ------------------------------------------------------------------------------------------ retention


@cli.group()
def retention() -> None:
    """Retention: truncate streams to an age or a count of events."""


@retention.command("apply")
@click.option("--prefix", required=True, help="Streams whose name starts with this ('' for every stream).")
@click.option(
    "--max-age",
    "max_age",
    default=None,
    metavar="AGE",
    help="Remove events older than AGE (30d, 12h, 2w, 1d12h).",
)
@click.option(
    "--max-count", "max_count", type=click.IntRange(min=1), default=None, help="Keep only the last N events."
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.pass_context
def retention_apply(
    ctx: click.Context, prefix: str, max_age: str | None, max_count: int | None, dry_run: bool
) -> None:
    """Truncate every stream starting with --prefix to --max-age and/or --max-count (a stream's last
    event always stays, so does a deleted stream's tombstone)."""
    from streamsrc.errors import InvalidRetentionPolicy
    from streamsrc.retention import RetentionPolicy, apply_retention, parse_duration

    try:
        age = None if max_age is None else parse_duration(max_age)
    except InvalidRetentionPolicy as exc:
        raise click.BadParameter(str(exc), param_hint="'--max-age'") from None
    if age is None and max_count is None:
        raise click.UsageError("give --max-age, --max-count or both: a policy must limit something")
    policy = RetentionPolicy(prefix, max_age=age, max_count=max_count)

    async def main() -> Any:
        async with _open(_url(ctx)) as store:
            return await apply_retention(store, [policy], dry_run=dry_run)

    with _quiet_pipe():
        report = _run(main)
        width = _width()
        stream_w = 40 if width is None else max(10, width - 22)
        if report.streams:
            click.echo(f"{_cell('STREAM', stream_w)} {'BEFORE':>8} {'REMOVED':>8}")
        for done in report.streams:
            shown = f"{done.stream:<{stream_w}}" if width is None else _cell(done.stream, stream_w)
            click.echo(f"{shown} {'#' + str(done.before):>8} {done.removed:>8}")
        verb = "would remove" if dry_run else "removed"
        summary = (
            f"{verb} {report.removed} events from {len(report.streams)} of {report.checked} "
            f"streams starting with {prefix!r}"
        )
        click.echo(summary, err=not report.streams)
    if report.failed:
        first = report.failed[0]
        raise CommandFailed(
            f"{len(report.failed)} streams were not truncated; {first.stream!r}: {first.error}"
        )


def redact(url: str) -> str:
    """``url`` with any password or secret replaced (for messages): every URL the CLI prints goes here.

    >>> redact("postgresql://app:s3cret@db.example.com/events")
    'postgresql://app:***@db.example.com/events'
    """
    from streamsrc.store import redact_url

    return redact_url(url)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\],;]+")
_USERINFO_IN_TEXT = re.compile(r"(://[^/?#@:\s'\"]*):(?!\*\*\*@)[^/?#\s]*@")


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact` (lines that may quote a URL).

    >>> redact_text("ready: <PostgresStore postgresql://app:s3cret@db/events>")
    'ready: <PostgresStore postgresql://app:***@db/events>'
    >>> redact_text("Invalid value for '--batch-size': 'postgresql://app:s3cret@db/x' is not a valid integer")
    "Invalid value for '--batch-size': 'postgresql://app:***@db/x' is not a valid integer"
    >>> redact_text("got postgresql://app:a(b,c@d@db/x?password=e")  # odd passwords too
    'got postgresql://app:***@db/x?password=***'
    """
    text = _USERINFO_IN_TEXT.sub(r"\1:***@", text)
    return _URL_IN_TEXT.sub(lambda found: redact(found.group(0)), text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    >>> main(["--url", "memory://", "demo"])
    demo run 1 on memory://
    register ada-1: saved, now at seq 1
    ...
    0
    >>> main(["--url", "ftp://example.com/events", "streams"])  # one line on stderr: unknown store URL scheme
    1
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="streamsrc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        shown = io.StringIO()  # a usage error may quote a URL given in the wrong place: redacted
        exc.show(file=shown)
        click.echo(redact_text(shown.getvalue()), err=True, nl=False)
        return exc.exit_code
    return 0


def _set_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--url`` given after a command: the store URL for that command (as the global one)."""
    if value is None:
        return
    here: click.Context | None = ctx
    while here is not None:
        here.obj = value
        here = here.parent


def _accept_url_everywhere(group: click.Group) -> None:
    """Every command takes ``--url``/``-u`` after its name too (``streamsrc streams --url ...``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_url_everywhere(command)
        elif not any("--url" in getattr(p, "opts", ()) for p in command.params):
            command.params.append(
                click.Option(
                    ["--url", "-u", "url_after_command"],
                    default=None,
                    expose_value=False,
                    is_eager=True,
                    callback=_set_url,
                    help="Store URL (the same as the global --url / STREAMSRC_URL).",
                )
            )


_accept_url_everywhere(cli)
