"""Retention: how long, or how many, events streams keep — applied by a maintenance call.

A :class:`RetentionPolicy` names a stream prefix and a limit: ``max_age`` (events older than that
are removed) and/or ``max_count`` (only the last ``max_count`` events of each stream are kept).
:func:`apply_retention` goes through the store's streams and truncates each one a policy covers
with ``truncate_before`` (see :class:`~streamsrc.store.base.RetiringStore`), which never removes a
stream's last event: a stream keeps its version, and appends go on as before. Written once over
the contract (``streams``, ``read``, ``latest``, ``truncate_before``), it works on every store.

>>> import anyio
>>> from datetime import timedelta
>>> from streamsrc.events import EventData
>>> from streamsrc.store.memory import MemoryStore
>>> async def main() -> None:
...     store = MemoryStore()
...     for n in range(5):
...         await store.append("audit-1", [EventData("Viewed", {"n": n})])
...     await store.append("order-1", [EventData("Placed", {})])
...     report = await apply_retention(store, [RetentionPolicy("audit-", max_count=2)])
...     print(report.removed, [e.seq for e in await store.read("audit-1").to_list()])
>>> anyio.run(main)
3 [4, 5]

Run it from a scheduler (cron, a periodic task), or with the command line:
``streamsrc retention apply --prefix audit- --max-age 30d --dry-run``.

Rules:

* **The most specific policy wins.** A stream is governed by the policy with the longest prefix it
  starts with (``""`` covers every stream); the others are not applied to it.
* **A prefix of the stream is removed, never a middle.** By age, events are removed from the
  start of the stream up to the first that is not older than ``now - max_age`` (events are in
  the order they were appended; one imported with an older time after a newer one stays).
* **The last event stays**, whatever the limits (``truncate_before``'s rule); so does a deleted
  stream's tombstone.
* **What readers see.** Removed events are gone from ``read`` and ``read_all``: a projection
  rebuilt afterwards never sees them (keep a snapshot, or a read model, of what they built);
  a copy starts each truncated stream at its first kept seq.
* **Dry runs** (``dry_run=True``) report what would be removed and change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure

from streamsrc.errors import InvalidRetentionPolicy, StoreError
from streamsrc.store import EventStore
from streamsrc.store.base import RetiringStore

__all__ = ["RetentionPolicy", "RetentionReport", "StreamRetention", "apply_retention", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+)\s*([smhdw])\s*")


def parse_duration(text: str) -> timedelta:
    """A duration written as a count and a unit — ``s``, ``m``, ``h``, ``d`` or ``w`` — or several
    (``1d12h``); what ``--max-age`` takes.

    >>> parse_duration("30d"), parse_duration("1d12h"), parse_duration("90m")
    (datetime.timedelta(days=30), datetime.timedelta(days=1, seconds=43200), datetime.timedelta(seconds=5400))
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    streamsrc.errors.InvalidRetentionPolicy: not a duration: 'soon' (write it as 30d, 12h, 90m, 2w or 1d12h)
    """
    seconds = 0
    at = 0
    for found in _DURATION.finditer(text):
        if found.start() != at:
            break
        seconds += int(found.group(1)) * _UNITS[found.group(2)]
        at = found.end()
    if at == 0 or at != len(text):
        raise InvalidRetentionPolicy(f"not a duration: {text!r} (write it as 30d, 12h, 90m, 2w or 1d12h)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long (``max_age``) and how many (``max_count``) events the streams whose name starts with
    ``prefix`` keep; at least one limit must be given.

    >>> from datetime import timedelta
    >>> RetentionPolicy("audit-", max_age=timedelta(days=30), max_count=1000).covers("audit-7")
    True

    :raises InvalidRetentionPolicy: no limit, a ``max_age`` that is not a positive ``timedelta``, a
        ``max_count`` that is not an int of at least 1, or a ``prefix`` that is not a string.
    """

    prefix: str
    max_age: timedelta | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise InvalidRetentionPolicy(f"a retention prefix must be a string, not {self.prefix!r}")
        if self.max_age is None and self.max_count is None:
            raise InvalidRetentionPolicy(
                f"retention policy {self.prefix!r} limits nothing: give max_age, max_count or both"
            )
        if self.max_age is not None and (
            not isinstance(self.max_age, timedelta) or self.max_age <= timedelta(0)
        ):
            raise InvalidRetentionPolicy(f"max_age must be a positive timedelta, not {self.max_age!r}")
        if self.max_count is not None and (type(self.max_count) is not int or self.max_count < 1):
            raise InvalidRetentionPolicy(
                f"max_count must be an int of at least 1 (the last event stays), not {self.max_count!r}"
            )

    def covers(self, stream: str) -> bool:
        """Whether ``stream``'s name starts with the policy's prefix."""
        return stream.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class StreamRetention:
    """What retention did (or, in a dry run, would do) to one stream: events below seq ``before``
    removed, ``removed`` of them, under the policy of ``prefix``; ``error`` if the store refused.

    >>> StreamRetention("audit-1", "audit-", before=4, removed=3)
    StreamRetention(stream='audit-1', prefix='audit-', before=4, removed=3, error=None)
    """

    stream: str
    prefix: str
    before: int
    removed: int
    error: StoreError | None = None


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """The outcome of :func:`apply_retention`: how many streams the policies covered (``checked``),
    each stream truncated (``streams``), and whether it was a dry run.

    >>> report = RetentionReport(checked=2, streams=(StreamRetention("a-1", "a-", 3, 2),), dry_run=True)
    >>> report.removed, report.failed
    (2, ())
    """

    checked: int
    streams: tuple[StreamRetention, ...] = field(default_factory=tuple)
    dry_run: bool = False

    @property
    def removed(self) -> int:
        """Events removed (or that would be, in a dry run), over every stream."""
        return sum(s.removed for s in self.streams)

    @property
    def failed(self) -> tuple[StreamRetention, ...]:
        """The streams whose truncation the store refused (their ``error`` says why)."""
        return tuple(s for s in self.streams if s.error is not None)


def _governing(policies: Sequence[RetentionPolicy], stream: str) -> RetentionPolicy | None:
    best: RetentionPolicy | None = None
    for policy in policies:
        if policy.covers(stream) and (best is None or len(policy.prefix) > len(best.prefix)):
            best = policy
    return best


async def _cut(store: EventStore, stream: str, policy: RetentionPolicy, now: datetime) -> tuple[int, int]:
    """``(first, before)``: the stream's first kept seq, and the seq retention truncates it before
    (``before <= first``: nothing to remove)."""
    head = await store.read(stream, limit=1).to_list()
    if not head:
        return 0, 0
    first = head[0].seq
    version = (await store.latest(stream)).map(lambda e: e.seq).value_or(first)
    before = first
    if policy.max_count is not None:
        before = max(before, version - policy.max_count + 1)
    if policy.max_age is not None and before < version:
        cutoff = now - policy.max_age
        old = await store.read(stream, after=before - 1).take_while(lambda e: e.time < cutoff).last()
        before = max(before, old.map(lambda e: e.seq + 1).value_or(before))
    return first, min(before, version)


async def apply_retention(
    store: EventStore,
    policies: Iterable[RetentionPolicy],
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Truncate every stream of ``store`` that a policy covers to what its policy keeps (see the
    module docs for the rules); ``now`` (aware) is the time ages are measured from (default: the
    clock); with ``dry_run``, only report.

    >>> import anyio
    >>> from datetime import timedelta
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     store = MemoryStore()
    ...     await store.append("log-1", [EventData("Line", {"n": n}) for n in range(3)])
    ...     later = datetime.now(UTC) + timedelta(days=31)  # a month on, every event is old
    ...     policy = RetentionPolicy("log-", max_age=timedelta(days=30))
    ...     planned = await apply_retention(store, [policy], now=later, dry_run=True)
    ...     print(planned.dry_run, [(s.stream, s.before, s.removed) for s in planned.streams])
    ...     print((await apply_retention(store, [policy], now=later)).removed)
    >>> anyio.run(main)
    True [('log-1', 3, 2)]
    2

    :raises TypeError: ``store`` cannot truncate (it is not a ``RetiringStore``), or ``now`` is naive.
    :raises InvalidRetentionPolicy: ``policies`` holds something that is not a ``RetentionPolicy``.
    :raises StoreUnavailable: if the database fails while streams are listed or read (what was
        truncated before stays truncated; running it again carries on).
    """
    chosen = list(policies)
    for given in chosen:
        if not isinstance(given, RetentionPolicy):
            raise InvalidRetentionPolicy(f"not a RetentionPolicy: {given!r}")
    if not isinstance(store, RetiringStore):
        raise TypeError(f"{store!r} cannot truncate streams (it is not a RetiringStore)")
    moment = datetime.now(UTC) if now is None else now
    if moment.utcoffset() is None:
        raise TypeError(f"now must know its timezone: {now!r}")
    checked = 0
    done: list[StreamRetention] = []
    if not chosen:
        return RetentionReport(0, (), dry_run)

    def governed(name: str) -> Maybe[tuple[str, RetentionPolicy]]:
        policy = _governing(chosen, name)
        return Nothing if policy is None else Some((name, policy))

    for stream, policy in await store.streams().collect(governed).to_list():
        checked += 1
        first, before = await _cut(store, stream, policy, moment)
        if before <= first:
            continue
        if dry_run:
            done.append(StreamRetention(stream, policy.prefix, before, before - first))
            continue
        result = await store.truncate_before(stream, before)
        if isinstance(result, Failure):
            done.append(StreamRetention(stream, policy.prefix, before, 0, result.failure()))
        else:
            done.append(StreamRetention(stream, policy.prefix, before, result.unwrap()))
    return RetentionReport(checked, tuple(done), dry_run)
