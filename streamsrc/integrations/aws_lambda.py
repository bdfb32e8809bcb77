"""AWS Lambda handlers for DynamoDB Streams and Kinesis events, with partial batch failures.

Wrap a projection and its read model (:func:`projection_handler`), any pipe
of recorded events (:func:`pipe_handler`) or an async function of one event
(:func:`event_handler`), or fold a tumbling window's events into its state
(:func:`window_handler`), and hand the result to Lambda as the function's
handler::

    model = MemoryReadModel(Counter())
    handler = projection_handler(Projection("counts", each(count)), model)
    # Lambda calls handler(event, context): a plain function, which runs the work with anyio.run;
    # in a running event loop: await handler.handle(event, context)

The handler accepts the envelopes AWS sends:

* DynamoDB Streams (``Records[].dynamodb``): an ``INSERT`` of a streamsrc
  event item is an event, decoded from ``NewImage`` (the table's stream must
  show new images: ``NEW_IMAGE`` or ``NEW_AND_OLD_IMAGES``). Events are never
  changed, so a ``MODIFY`` or ``REMOVE`` (a TTL expiry, an edit by hand) is
  not a new event, and an ``INSERT`` of an item that is not an event (a
  snapshot or checkpoint item kept in the same table) is not one either:
  such records are skipped, as handled.
* Kinesis (``Records[].kinesis.data``): the base64 of the JSON object of
  :func:`~streamsrc.events.recorded_to_json`, as
  :func:`~streamsrc.integrations.kinesis.kinesis_sink` publishes it; or a
  record aggregated by the Kinesis Producer Library (KPL: the magic number
  ``F3 89 9A C2``, a protobuf message, an MD5), whose user records are
  each such an object, applied in order (see :mod:`streamsrc.integrations._kpl`).
* Either of them with a tumbling window (``window``, ``state``,
  ``isFinalInvokeForWindow``): the answer then carries the window's
  ``state``, as AWS requires (unchanged, unless :func:`window_handler`
  folds the events into it).

It answers ``{"batchItemFailures": [{"itemIdentifier": SEQUENCE_NUMBER}]}``
(empty when all went well), for an event source mapping with
``FunctionResponseTypes: ["ReportBatchItemFailures"]``. Both sources are
ordered (a batch comes from one shard), so the handler stops at the first
record that fails, reports that one, and does not apply the records after it:
AWS retries the batch from that record, so they are delivered again and no
record is applied out of order. A malformed record (not base64, not JSON, not
an event, an event item that does not decode) is a failure of that record,
never an exception that fails the whole invocation; its error is logged. As it
fails again on every retry, give the mapping a ``MaximumRetryAttempts`` and
an on-failure destination, or it holds its shard until the record expires.
A KPL aggregate is one Kinesis record to AWS: if one of its user records
fails, the whole record is reported, and the user records before it in the
aggregate are delivered again.

The handler reads the time left from the Lambda context
(``context.get_remaining_time_in_millis()``): ``safety_margin`` seconds
(:data:`DEFAULT_SAFETY_MARGIN`) before the timeout it stops, cancelling
the work in flight, and reports the first record not processed, so that
AWS sends the rest again instead of Lambda killing the invocation and
retrying the whole batch.

Delivery is at least once: AWS sends a whole batch again when an invocation
times out or crashes, so handlers should be idempotent (each event's
``stream`` and ``seq``, or its ``id``, tell a repeat). A read model that
writes a batch and its checkpoint atomically (``exactly_once``) leaves nothing
of a failed batch before the records are applied one by one to find the one
at fault.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import anyio
import anyio.lowlevel

from streamsrc.effect import run_effect
from streamsrc.errors import CorruptEvent, InvalidEvent
from streamsrc.events import RecordedEvent, decode_json, recorded_from_json
from streamsrc.integrations._aws import Malformed, Skipped
from streamsrc.integrations._kpl import AggregationError, deaggregate, is_aggregated
from streamsrc.integrations.dynamodb_streams import decode_image
from streamsrc.projections import Projection, ReadModel
from streamsrc.store import EventFilter
from streamsrc.store.dynamodb import commit_events  # the codec alone: no AWS driver
from streamsrc.stream import Stream

__all__ = [
    "DEFAULT_SAFETY_MARGIN",
    "BatchItem",
    "LambdaHandler",
    "Malformed",
    "Skipped",
    "Window",
    "decode_record",
    "decode_records",
    "event_handler",
    "pipe_handler",
    "projection_handler",
    "window_handler",
]

log = logging.getLogger(__name__)

H = TypeVar("H")

DEFAULT_SAFETY_MARGIN = 1.0
"""Seconds before the function's timeout at which a handler stops and reports the records left."""

MAX_WINDOW_STATE_BYTES = 1024 * 1024
"""AWS ends a tumbling window early when its state grows past this (1 MB per shard)."""

JsonObject = dict[str, Any]
"""A tumbling window's state: a JSON object."""

Decoded = RecordedEvent | Skipped | Malformed
"""What a record holds: an event, nothing to apply, or something unreadable."""


class BatchItem(NamedTuple):
    """A user record of a Lambda batch: its record's sequence number, its place in a KPL aggregate, content.

    ``sub_sequence`` is ``None`` for a record that is not aggregated, and the
    index of the user record in its aggregate otherwise (the KCL's
    sub-sequence number). AWS knows only the record's ``sequence``: a failure
    is reported with it, and AWS retries from the whole record.

    >>> item = BatchItem("49590338271490256608559692538361571095921575989136588898", 3, Skipped("example"))
    >>> print(item)  # as logs name it
    49590338271490256608559692538361571095921575989136588898/3
    """

    sequence: str | None
    sub_sequence: int | None
    content: Decoded

    def __str__(self) -> str:
        return str(self.sequence) if self.sub_sequence is None else f"{self.sequence}/{self.sub_sequence}"


def decode_records(record: Any) -> list[BatchItem]:
    """The user records of one record of a Lambda event (one, or each of a KPL aggregate), decoded.

    A Kinesis record whose data starts with the KPL's magic number is an
    aggregate: each user record in it is an item of its own, numbered by its
    sub-sequence. An aggregate that does not read (a wrong MD5, a truncated
    message) is one malformed item, a failure of that Kinesis record.

    >>> import base64, hashlib
    >>> message = b"\\x0a\\x01k\\x1a\\x05\\x08\\x00\\x1a\\x01x"  # one user record, b"x", partition key "k"
    >>> aggregate = b"\\xf3\\x89\\x9a\\xc2" + message + hashlib.md5(message).digest()
    >>> data = base64.b64encode(aggregate).decode()
    >>> decode_records({"kinesis": {"sequenceNumber": "49", "data": data}})
    [BatchItem(sequence='49', sub_sequence=0, content=Malformed(reason='user record 0 of KPL ...'))]
    >>> data = base64.b64encode(aggregate[:-1]).decode()
    >>> decode_records({"kinesis": {"sequenceNumber": "50", "data": data}})
    [BatchItem(sequence='50', sub_sequence=None, content=Malformed(reason='Kinesis record 50 is a KPL
    aggregated record that does not read: its MD5 checksum does not match its message ...'))]
    """
    if not isinstance(record, Mapping):
        return [
            BatchItem(None, None, Malformed(f"a record must be a JSON object, not {type(record).__name__}"))
        ]
    if isinstance(record.get("kinesis"), Mapping):
        return _kinesis_records(record["kinesis"])
    if isinstance(record.get("dynamodb"), Mapping):
        commits = _commit_record(record.get("eventName"), record["dynamodb"])
        if commits is not None:
            return commits
        sequence, item = _dynamodb_record(record.get("eventName"), record["dynamodb"])
        return [BatchItem(sequence, None, item)]
    source = record.get("eventSource")
    return [
        BatchItem(None, None, Malformed(f"not a Kinesis or DynamoDB Streams record (eventSource {source!r})"))
    ]


def decode_record(record: Any) -> tuple[str | None, Decoded]:
    """The sequence number of one record of a Lambda event, and the event in it (or why there is none).

    A KPL aggregate holds several user records: :func:`decode_records` gives each.

    >>> import base64, json
    >>> data = base64.b64encode(b"not json").decode()
    >>> decode_record({"kinesis": {"sequenceNumber": "49", "data": data}, "eventSource": "aws:kinesis"})
    ('49', Malformed(reason='Kinesis record 49 is not a recorded event: ...'))
    >>> decode_record({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "7", "Keys": {}}})
    ('7', Skipped(reason='REMOVE: not a new event'))
    """
    items = decode_records(record)
    first = items[0]
    if len(items) == 1 and first.sub_sequence is None:
        return first.sequence, first.content
    return first.sequence, Malformed(
        f"Kinesis record {first.sequence} is a KPL aggregate of {len(items)} user records: "
        "decode_records gives each"
    )


def _kinesis_records(kinesis: Mapping[str, Any]) -> list[BatchItem]:
    sequence = kinesis.get("sequenceNumber")
    sequence = sequence if isinstance(sequence, str) and sequence else None
    try:
        data = base64.b64decode(kinesis["data"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        what = "no data" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        return [
            BatchItem(sequence, None, Malformed(f"Kinesis record {sequence} is not a recorded event: {what}"))
        ]
    if not is_aggregated(data):
        return [BatchItem(sequence, None, _event(data, f"Kinesis record {sequence}"))]
    try:
        users = deaggregate(data)
    except AggregationError as exc:
        reason = f"Kinesis record {sequence} is a KPL aggregated record that does not read: {exc}"
        return [BatchItem(sequence, None, Malformed(reason))]
    if not users:
        return [BatchItem(sequence, None, Skipped("a KPL aggregated record of no user records"))]
    return [
        BatchItem(
            sequence, i, _event(user.data, f"user record {i} of KPL aggregated Kinesis record {sequence}")
        )
        for i, user in enumerate(users)
    ]


def _event(data: bytes, what: str) -> RecordedEvent | Malformed:
    try:
        return recorded_from_json(decode_json(data))
    except (TypeError, ValueError, InvalidEvent) as exc:
        return Malformed(f"{what} is not a recorded event: {type(exc).__name__}: {exc}")


def _commit_record(event_name: object, dynamodb: Mapping[str, Any]) -> list[BatchItem] | None:
    """The events of a commit item of a DynamoDB store's log table (its index, in ``order=stream``
    mode), each an item with its position; ``None`` for any other record."""
    image = dynamodb.get("NewImage")
    if event_name != "INSERT" or not isinstance(image, Mapping):
        return None
    sequence = dynamodb.get("SequenceNumber")
    sequence = sequence if isinstance(sequence, str) and sequence else None
    try:
        events = commit_events(image)
    except CorruptEvent as exc:
        return [BatchItem(sequence, None, Malformed(f"DynamoDB Streams record {sequence}: {exc}"))]
    if events is None:
        return None
    return [BatchItem(sequence, i, e) for i, e in enumerate(events)]


def _dynamodb_record(event_name: object, dynamodb: Mapping[str, Any]) -> tuple[str | None, Decoded]:
    sequence = dynamodb.get("SequenceNumber")
    sequence = sequence if isinstance(sequence, str) and sequence else None
    if event_name != "INSERT":
        return sequence, Skipped(f"{event_name}: not a new event")
    image = dynamodb.get("NewImage")
    if not isinstance(image, Mapping):
        return sequence, Malformed(
            f"DynamoDB Streams record {sequence} has no NewImage: "
            "the table's stream must show new images (NEW_IMAGE or NEW_AND_OLD_IMAGES)"
        )
    return sequence, decode_image(image, f"DynamoDB Streams record {sequence}")


# ---------------------------------------------------------------------- tumbling windows


@dataclass(frozen=True, slots=True)
class Window:
    """The tumbling window of a Lambda event (an event source mapping with ``TumblingWindowInSeconds``).

    ``final`` is AWS's ``isFinalInvokeForWindow`` (the window is over: its
    state is final); ``terminated_early`` is ``isWindowTerminatedEarly`` (AWS
    ended it before its time, its state having grown past 1 MB; the window
    goes on with a fresh state).

    >>> Window.of({"window": {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"},
    ...            "state": {}, "shardId": "shardId-000000000006", "isFinalInvokeForWindow": True})
    Window(start=datetime.datetime(2020, 12, 9, 7, 4, tzinfo=datetime.timezone.utc), end=..., final=True, ...)
    >>> Window.of({"Records": []}) is None
    True
    """

    start: datetime
    end: datetime
    final: bool = False
    terminated_early: bool = False
    shard_id: str | None = None
    event_source_arn: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> Window | None:
        """The window of a Lambda event, or ``None``; ``ValueError`` if it is not as AWS sends it."""
        window = event.get("window")
        if window is None:
            return None
        if not isinstance(window, Mapping):
            raise ValueError(f"a tumbling window event's 'window' must be an object, not {window!r}")
        shard = event.get("shardId")
        arn = event.get("eventSourceARN")
        return cls(
            _window_time(window, "start"),
            _window_time(window, "end"),
            event.get("isFinalInvokeForWindow") is True,
            event.get("isWindowTerminatedEarly") is True,
            shard if isinstance(shard, str) else None,
            arn if isinstance(arn, str) else None,
        )


def _window_time(window: Mapping[str, Any], key: str) -> datetime:
    value = window.get(key)
    try:
        time = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"a tumbling window's {key!r} must be an ISO 8601 time, not {value!r}") from None
    return time if time.tzinfo is not None else time.replace(tzinfo=UTC)


def _incoming_state(event: Mapping[str, Any]) -> JsonObject:
    state = event.get("state")
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise ValueError(f"a tumbling window's state must be a JSON object, not {type(state).__name__}")
    return state


# ---------------------------------------------------------------------- one invocation


class _Invocation:
    """What one call of a handler knows: the time left (from the Lambda context) and the window's state."""

    def __init__(self, context: Any, safety_margin: float, state: JsonObject) -> None:
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        self._remaining: Callable[[], float] | None = remaining if callable(remaining) else None
        self.safety_margin = safety_margin
        self.initial = state
        self.states: list[JsonObject] = []  # the window's state after each event folded
        self.cut = False  # stopped by the deadline

    def seconds_left(self) -> float:
        """Seconds until the handler must stop: the function's time left less the safety margin."""
        if self._remaining is None:
            return math.inf
        return float(self._remaining()) / 1000 - self.safety_margin

    def deadline(self) -> float:
        """:meth:`seconds_left` as a deadline on anyio's clock (for a cancel scope)."""
        left = self.seconds_left()
        return math.inf if left == math.inf else anyio.current_time() + left

    @property
    def state(self) -> JsonObject:
        return self.states[-1] if self.states else self.initial

    def state_before(self, events: int) -> JsonObject:
        """The window's state with the first ``events`` events of the batch folded in."""
        return self.states[events - 1] if 0 < events <= len(self.states) else self.initial


Target = Callable[[list[RecordedEvent], _Invocation], Awaitable[int | None]]
"""Applies events in order; gives back the index of the first that failed (or was not reached) or ``None``."""

WindowEnd = Callable[["Window", JsonObject], object]
"""Called with the window and its final state when a tumbling window ends."""


def _refuse_a_running_loop(name: str) -> None:
    try:
        token = anyio.lowlevel.current_token()
    except RuntimeError:  # anyio.NoEventLoopError: none, as in Lambda
        return
    library = token.backend_class.__module__.rpartition("._")[2]
    raise RuntimeError(
        f"{name}: handler(event, context) runs an event loop of its own and this thread already runs "
        f"one ({library}); in async code call `await handler.handle(event, context)` instead"
    )


class LambdaHandler:
    """A synchronous AWS Lambda handler ``handler(event, context) -> dict`` (made by the functions below).

    Each call runs the work on a fresh asyncio event loop with
    ``anyio.run``; inside a running event loop (tests, another framework)
    ``await handler.handle(event, context)`` instead: calling the handler
    there raises ``RuntimeError`` saying so.

    >>> import base64
    >>> from streamsrc.events import new_event_id, stored_event
    >>> from streamsrc.integrations.kinesis import encode_record
    >>> payload = '{"email": "ada@example.com"}'
    >>> event = stored_event("user-1", 1, 1, "Registered", payload, None, new_event_id(), 0)
    >>> data = base64.b64encode(encode_record(event)[0]["Data"]).decode()
    >>> lambda_event = {"Records": [{"kinesis": {"sequenceNumber": "49", "data": data}}]}  # from Kinesis
    >>> async def send_mail(event: RecordedEvent) -> None:
    ...     raise ConnectionError("mail server down")
    >>> event_handler(send_mail)(lambda_event, None)  # AWS retries from the record that failed
    {'batchItemFailures': [{'itemIdentifier': '49'}]}
    """

    def __init__(
        self,
        apply: Target,
        name: str,
        *,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
        on_window_end: WindowEnd | None = None,
        needs_window: bool = False,
    ) -> None:
        if not safety_margin >= 0:
            raise ValueError(f"safety_margin must be 0 or more seconds, not {safety_margin!r}")
        self._apply = apply
        self.name = name
        self.safety_margin = safety_margin
        self._on_window_end = on_window_end
        self._needs_window = needs_window

    def __repr__(self) -> str:
        return f"<LambdaHandler {self.name}>"

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        """Handle one Lambda invocation; answer the partial batch failures (and a window's state)."""
        _refuse_a_running_loop(self.name)
        return anyio.run(self.handle, event, context, backend="asyncio")

    async def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        """What :meth:`__call__` does, in the running event loop.

        ``context`` is the Lambda context: its ``get_remaining_time_in_millis()``
        gives the deadline. Without one (``None``) there is no deadline.
        """
        if not isinstance(event, Mapping):
            raise ValueError("not a DynamoDB Streams or Kinesis event: it has no 'Records' list")
        window = Window.of(event)
        if window is None and self._needs_window:
            raise ValueError(
                f"{self.name} folds tumbling windows, and this event has none: give its event source "
                "mapping a TumblingWindowInSeconds"
            )
        state = _incoming_state(event) if window is not None else {}
        records = event.get("Records")
        if records is None and window is not None:
            records = []  # a window's final invocation may come without records
        if not isinstance(records, list):
            raise ValueError("not a DynamoDB Streams or Kinesis event: it has no 'Records' list")
        per_record = [decode_records(r) for r in records]
        missing = next((i for i, items in enumerate(per_record) if items[0].sequence is None), None)
        if missing is not None:
            # Nothing to point AWS at: an empty identifier makes it retry the whole batch; apply none of it.
            log.error("%s: record %d has no sequence number; failing the whole batch", self.name, missing)
            return self._answer(window, state, [""])
        items = [item for items in per_record for item in items]
        run = _Invocation(context, self.safety_margin, state)
        failed = await self._first_failure(items, run)
        if failed is not None:
            return self._partial(window, items, failed, run, len(records))
        if window is not None and window.final and not await self._end_window(window, run):
            return self._answer(window, state, [""])  # AWS calls the final invocation again
        return self._answer(window, run.state, [])

    def _partial(
        self, window: Window | None, items: list[BatchItem], failed: int, run: _Invocation, records: int
    ) -> dict[str, Any]:
        """The answer for a batch that failed (or stopped) at ``items[failed]``: AWS retries its record."""
        sequence = items[failed].sequence
        assert sequence is not None
        # The record's user records before the failed one were applied, but AWS sends the whole record
        # again: the window's state is the one before that record, so that they are not folded twice.
        first = next(i for i in range(failed + 1) if items[i].sequence == sequence)
        events_before = sum(1 for item in items[:first] if isinstance(item.content, RecordedEvent))
        if run.cut:
            unprocessed = records - len({item.sequence for item in items[:first]})
            log.warning(
                "%s: stopped %.3g s before the function's timeout (safety_margin); %d of %d records "
                "not processed, reported as failures from %s so that AWS sends them again",
                self.name,
                self.safety_margin,
                unprocessed,
                records,
                items[failed],
                extra={"handler": self.name, "sequence": sequence, "unprocessed": unprocessed},
            )
        return self._answer(window, run.state_before(events_before), [sequence])

    def _answer(self, window: Window | None, state: JsonObject, failures: list[str]) -> dict[str, Any]:
        response: dict[str, Any] = {}
        if window is not None:  # AWS counts a window's invocation without a state as failed
            try:
                size = len(json.dumps(state).encode())
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{self.name}: the window's state is not JSON: {exc}") from exc
            if size > MAX_WINDOW_STATE_BYTES:
                log.warning(
                    "%s: the window's state is %d bytes, over AWS's 1 MB: AWS ends the window early",
                    self.name,
                    size,
                )
            response["state"] = state
        response["batchItemFailures"] = [{"itemIdentifier": sequence} for sequence in failures]
        return response

    async def _first_failure(self, items: list[BatchItem], run: _Invocation) -> int | None:
        """Apply the events up to the first malformed item; the index of the first failure, if any."""
        stop = next((i for i, item in enumerate(items) if isinstance(item.content, Malformed)), len(items))
        indices = [i for i in range(stop) if isinstance(items[i].content, RecordedEvent)]
        events: list[RecordedEvent] = [items[i].content for i in indices]  # type: ignore[misc]
        if events:
            bad = await self._apply(events, run)
            if bad is not None:
                return indices[bad]
        if stop < len(items):
            item = items[stop].content
            assert isinstance(item, Malformed)
            log.error("%s: %s", self.name, item.reason)
            return stop
        return None

    async def _end_window(self, window: Window, run: _Invocation) -> bool:
        """Call the window's final callback (if any) with its state; whether it went through."""
        if self._on_window_end is None:
            return True
        if run.seconds_left() > 0:
            with anyio.CancelScope(deadline=run.deadline()):
                try:
                    await run_effect(self._on_window_end(window, run.state))
                    return True
                except Exception:
                    log.exception(
                        "%s: the final callback of window %s - %s failed; failing the invocation so that "
                        "AWS calls it again",
                        self.name,
                        window.start.isoformat(),
                        window.end.isoformat(),
                    )
                    return False
            # here only if the deadline cancelled the callback
        log.warning(
            "%s: no time left for the final callback of window %s - %s before the function's timeout "
            "(safety_margin %.3g s); failing the invocation so that AWS calls it again",
            self.name,
            window.start.isoformat(),
            window.end.isoformat(),
            self.safety_margin,
        )
        return False


async def _one_by_one(
    apply_one: Callable[[RecordedEvent], Awaitable[object]],
    events: list[RecordedEvent],
    name: str,
    run: _Invocation,
) -> int | None:
    """Apply the events in turn until one fails or the deadline comes; the index of that one, if any."""
    for i, event in enumerate(events):
        if run.seconds_left() <= 0:
            run.cut = True
            return i
        with anyio.CancelScope(deadline=run.deadline()) as scope:
            try:
                await apply_one(event)
            except Exception as exc:
                log.exception("%s: failed on %r #%d (%s): %s", name, event.stream, event.seq, event.type, exc)
                return i
        if scope.cancelled_caught:  # still running at the deadline: not applied
            run.cut = True
            return i
    return None


async def _batch_then_one_by_one(
    apply: Callable[[list[RecordedEvent]], Awaitable[object]],
    events: list[RecordedEvent],
    name: str,
    run: _Invocation,
) -> int | None:
    """Apply the batch at once; if that fails, apply it again event by event to find the one at fault.

    A batch still running at the deadline is cut short and counts as not applied (all of it is reported).
    """
    if run.seconds_left() <= 0:
        run.cut = True
        return 0
    with anyio.CancelScope(deadline=run.deadline()) as scope:
        try:
            await apply(events)
            return None
        except Exception:
            if len(events) == 1:
                e = events[0]
                log.exception("%s: failed on %r #%d (%s)", name, e.stream, e.seq, e.type)
                return 0
    if scope.cancelled_caught:
        run.cut = True
        return 0

    async def single(event: RecordedEvent) -> None:
        await apply([event])

    return await _one_by_one(single, events, name, run)


def event_handler(
    fn: Callable[[RecordedEvent], Awaitable[object]],
    *,
    name: str | None = None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> LambdaHandler:
    """A Lambda handler calling the async ``fn`` on each event in turn.

    ``fn`` fails an event by raising, or by returning a ``returns``
    ``Failure`` (or an ``IOFailure``, or a ``FutureResult`` that fails). An
    event still being handled ``safety_margin`` seconds before the function's
    timeout is cancelled, and reported with the rest as not processed.

    >>> import base64
    >>> from streamsrc.events import new_event_id, stored_event
    >>> from streamsrc.integrations.kinesis import encode_record
    >>> payload = '{"email": "ada@example.com"}'
    >>> event = stored_event("user-1", 1, 1, "Registered", payload, None, new_event_id(), 0)
    >>> data = base64.b64encode(encode_record(event)[0]["Data"]).decode()
    >>> lambda_event = {"Records": [{"kinesis": {"sequenceNumber": "49", "data": data}}]}  # from Kinesis
    >>> async def welcome(event: RecordedEvent) -> None:
    ...     print("welcome", event.data["email"])
    >>> handler = event_handler(welcome)  # give it to Lambda as the function's handler
    >>> handler(lambda_event, None)
    welcome ada@example.com
    {'batchItemFailures': []}
    """
    label = name or str(getattr(fn, "__qualname__", "event handler"))

    async def one(event: RecordedEvent) -> None:
        await run_effect(fn(event))

    async def apply(events: list[RecordedEvent], run: _Invocation) -> int | None:
        return await _one_by_one(one, events, label, run)

    return LambdaHandler(apply, label, safety_margin=safety_margin)


def pipe_handler(
    pipe: Callable[[Stream[RecordedEvent]], Stream[Any]],
    *,
    name: str | None = None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> LambdaHandler:
    """A Lambda handler running the batch's events through ``pipe`` (the stream is drained).

    The whole batch goes through the pipe at once; if the stream fails, the
    events go through again one at a time (each in its own run of the pipe)
    to find the one at fault, so the events before it may go through twice:
    the pipe must be idempotent, as for any at-least-once delivery.

    >>> import base64
    >>> from streamsrc.events import new_event_id, stored_event
    >>> from streamsrc.integrations.kinesis import encode_record
    >>> payload = '{"email": "ada@example.com"}'
    >>> event = stored_event("user-1", 1, 1, "Registered", payload, None, new_event_id(), 0)
    >>> data = base64.b64encode(encode_record(event)[0]["Data"]).decode()
    >>> lambda_event = {"Records": [{"kinesis": {"sequenceNumber": "49", "data": data}}]}  # from Kinesis
    >>> handler = pipe_handler(lambda events: events.map(lambda e: print(e.stream, e.type)))
    >>> handler(lambda_event, None)
    user-1 Registered
    {'batchItemFailures': []}
    """
    label = name or str(getattr(pipe, "__qualname__", "pipe"))

    async def drain(events: list[RecordedEvent]) -> None:
        await Stream.emits(events).through(pipe).drain()

    async def apply(events: list[RecordedEvent], run: _Invocation) -> int | None:
        return await _batch_then_one_by_one(drain, events, label, run)

    return LambdaHandler(apply, label, safety_margin=safety_margin)


ModelSource = ReadModel[H] | Callable[[], AbstractAsyncContextManager[ReadModel[H]]]
"""A read model, or a function giving an ``async with`` that opens one (a model bound to an event loop)."""


class _ModelApplier(Generic[H]):
    def __init__(self, projection: Projection[H], model: ModelSource[H]) -> None:
        self.projection = projection
        self.model = model
        self.keep = EventFilter.of(projection.types, projection.stream_prefix)

    async def __call__(self, events: list[RecordedEvent], run: _Invocation) -> int | None:
        model = self.model
        if hasattr(model, "apply"):
            return await self.apply(model, events, run)  # type: ignore[arg-type]
        assert callable(model)
        async with model() as opened:
            return await self.apply(opened, events, run)

    async def apply(self, model: ReadModel[H], events: list[RecordedEvent], run: _Invocation) -> int | None:
        p = self.projection
        if not self.keep.everything:
            kept = [i for i, e in enumerate(events) if self.keep.keeps(e.stream, e.type)]
            events_kept = [events[i] for i in kept]
        else:
            kept, events_kept = list(range(len(events))), events
        if not events_kept:
            return None
        checkpoint = await model.load_position(p.name)

        async def write(batch: list[RecordedEvent]) -> None:
            # Shards are read in parallel, so positions come in no global order: the checkpoint
            # only moves forward, to the highest position applied, for progress reports.
            position = max(checkpoint, max(e.position for e in batch))
            await model.apply(p.name, p.handler, batch, position)

        bad = await _batch_then_one_by_one(write, events_kept, p.name, run)
        return None if bad is None else kept[bad]


def projection_handler(
    projection: Projection[H], model: ModelSource[H], *, safety_margin: float = DEFAULT_SAFETY_MARGIN
) -> LambdaHandler:
    """A Lambda handler applying the events the ``projection`` wants to ``model`` with its handler.

    The projection's filters (``types``, ``stream_prefix``) are applied
    here; the events it does not want are handled by doing nothing. The batch
    is applied at once (one transaction for an exactly-once model); if it
    fails, the events are applied one at a time to find the one at fault,
    which is reported to AWS (the projection's ``on_error`` policies are the
    Projector's: here AWS retries). The model's checkpoint is moved to the
    highest position applied, for progress reports only: events from
    different shards arrive in no global order, so it says nothing about
    which events are in. ``model`` may be a function returning an
    ``async with`` that opens the model, opened for each invocation. A batch
    still being applied ``safety_margin`` seconds before the function's
    timeout is cancelled (its transaction rolled back, for a transactional
    model) and reported as not processed: give the mapping a ``BatchSize``
    that one invocation can apply.

    >>> import base64
    >>> from streamsrc.events import new_event_id, stored_event
    >>> from streamsrc.integrations.kinesis import encode_record
    >>> from streamsrc.projections import MemoryReadModel
    >>> payload = '{"email": "ada@example.com"}'
    >>> event = stored_event("user-1", 1, 1, "Registered", payload, None, new_event_id(), 0)
    >>> data = base64.b64encode(encode_record(event)[0]["Data"]).decode()
    >>> lambda_event = {"Records": [{"kinesis": {"sequenceNumber": "49", "data": data}}]}  # from Kinesis
    >>> registrations = MemoryReadModel(0)
    >>> count = Projection("registrations", lambda n, events: n + len(events))
    >>> handler = projection_handler(count, registrations)
    >>> handler(lambda_event, None), registrations.state
    ({'batchItemFailures': []}, 1)
    """
    return LambdaHandler(_ModelApplier(projection, model), projection.name, safety_margin=safety_margin)


def window_handler(
    fold: Callable[[JsonObject, RecordedEvent], object],
    on_window_end: WindowEnd | None = None,
    *,
    name: str | None = None,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
) -> LambdaHandler:
    """A Lambda handler for tumbling windows: ``fold`` the events into the window's state; ``on_window_end``.

    For an event source mapping with ``TumblingWindowInSeconds``. AWS keeps
    the window's state between invocations: each one gets the state so far
    (``{}`` when the window starts), the handler folds the batch's events
    into it with ``fold(state, event) -> state`` and answers it as AWS wants,
    ``{"state": {...}, "batchItemFailures": [...]}``. The state is a JSON
    object (a ``dict``); ``fold`` returns a new one, and must not change the
    one it is given. It may also be ``async``, or return a ``returns``
    ``Result`` (a ``Failure`` fails the event).

    When the window ends (AWS's final invocation, ``isFinalInvokeForWindow``),
    ``on_window_end(window, state)`` (plain or ``async``) gets the final state:
    write the window's aggregate somewhere. If it raises (or returns a
    ``Failure``), the final invocation fails as a whole, and AWS calls it again
    with the same state before going on.

    If an event fails, it is reported (AWS retries from its record) with the
    state as it was before that record, so that nothing is folded twice. The
    same holds when the handler stops at the deadline.

    >>> from streamsrc.events import new_event_id, stored_event
    >>> from streamsrc.integrations.kinesis import encode_record
    >>> def record(sequence: str, stream: str, seq: int) -> dict[str, Any]:
    ...     event = stored_event(stream, seq, seq, "Placed", "{}", None, new_event_id(), 0)
    ...     data = base64.b64encode(encode_record(event)[0]["Data"]).decode()
    ...     return {"kinesis": {"sequenceNumber": sequence, "data": data}, "eventSource": "aws:kinesis"}
    >>> def count(state: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
    ...     return {**state, event.type: state.get(event.type, 0) + 1}
    >>> def report(window: Window, state: dict[str, Any]) -> None:
    ...     print(window.start.isoformat(), window.end.isoformat(), state)
    >>> handler = window_handler(count, report)
    >>> window = {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"}
    >>> handler({"Records": [record("49", "order-1", 1), record("50", "order-2", 1)], "window": window,
    ...          "state": {}, "isFinalInvokeForWindow": False, "isWindowTerminatedEarly": False}, None)
    {'state': {'Placed': 2}, 'batchItemFailures': []}
    >>> handler({"Records": [], "window": window, "state": {"Placed": 2},
    ...          "isFinalInvokeForWindow": True, "isWindowTerminatedEarly": False}, None)
    2020-12-09T07:04:00+00:00 2020-12-09T07:06:00+00:00 {'Placed': 2}
    {'state': {'Placed': 2}, 'batchItemFailures': []}
    """
    label = name or str(getattr(fold, "__qualname__", "window fold"))

    async def apply(events: list[RecordedEvent], run: _Invocation) -> int | None:
        async def one(event: RecordedEvent) -> None:
            state = await run_effect(fold(run.state, event))
            if not isinstance(state, dict):
                raise TypeError(f"the fold returned a {type(state).__name__}, not a JSON object (a dict)")
            run.states.append(state)

        return await _one_by_one(one, events, label, run)

    return LambdaHandler(
        apply, label, safety_margin=safety_margin, on_window_end=on_window_end, needs_window=True
    )
