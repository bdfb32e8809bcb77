"""AWS Lambda handlers for DynamoDB Streams and Kinesis events, with partial batch failures.

Wrap a projection and its read model (:func:`projection_handler`), any pipe
of recorded events (:func:`pipe_handler`) or an async function of one event
(:func:`event_handler`), and hand the result to Lambda as the function's
handler::

    model = MemoryReadModel(Counter())
    handler = projection_handler(Projection("counts", each(count)), model)
    # Lambda calls handler(event, context): a plain function, which runs the work with anyio.run

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
  :func:`~streamsrc.integrations.kinesis.kinesis_sink` publishes it.

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
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import anyio

from streamsrc.effect import run_effect
from streamsrc.errors import InvalidEvent
from streamsrc.events import RecordedEvent, decode_json, recorded_from_json
from streamsrc.integrations._aws import Malformed, Skipped
from streamsrc.integrations.dynamodb_streams import decode_image
from streamsrc.projections import Projection, ReadModel
from streamsrc.store import EventFilter
from streamsrc.stream import Stream

__all__ = [
    "LambdaHandler",
    "Malformed",
    "Skipped",
    "decode_record",
    "event_handler",
    "pipe_handler",
    "projection_handler",
]

log = logging.getLogger(__name__)

H = TypeVar("H")


Decoded = RecordedEvent | Skipped | Malformed
"""What a record holds: an event, nothing to apply, or something unreadable."""


def decode_record(record: Any) -> tuple[str | None, Decoded]:
    """The sequence number of one record of a Lambda event, and the event in it (or why there is none).

    >>> import base64, json
    >>> data = base64.b64encode(b"not json").decode()
    >>> decode_record({"kinesis": {"sequenceNumber": "49", "data": data}, "eventSource": "aws:kinesis"})
    ('49', Malformed(reason='Kinesis record 49 is not a recorded event: ...'))
    >>> decode_record({"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "7", "Keys": {}}})
    ('7', Skipped(reason='REMOVE: not a new event'))
    """
    if not isinstance(record, Mapping):
        return None, Malformed(f"a record must be a JSON object, not {type(record).__name__}")
    if isinstance(record.get("kinesis"), Mapping):
        return _kinesis_record(record["kinesis"])
    if isinstance(record.get("dynamodb"), Mapping):
        return _dynamodb_record(record.get("eventName"), record["dynamodb"])
    source = record.get("eventSource")
    return None, Malformed(f"not a Kinesis or DynamoDB Streams record (eventSource {source!r})")


def _kinesis_record(kinesis: Mapping[str, Any]) -> tuple[str | None, RecordedEvent | Malformed]:
    sequence = kinesis.get("sequenceNumber")
    sequence = sequence if isinstance(sequence, str) and sequence else None
    try:
        data = base64.b64decode(kinesis["data"], validate=True)
        return sequence, recorded_from_json(decode_json(data))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidEvent) as exc:
        what = "no data" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        return sequence, Malformed(f"Kinesis record {sequence} is not a recorded event: {what}")


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


Target = Callable[[list[RecordedEvent]], Awaitable[int | None]]
"""Applies events in order; gives back the index of the first that failed, or ``None``."""


class LambdaHandler:
    """A synchronous AWS Lambda handler ``handler(event, context) -> dict`` (made by the functions below).

    Each call runs the work on a fresh asyncio event loop with
    ``anyio.run``; inside a running event loop (tests, another framework)
    await :meth:`handle` instead.

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

    def __init__(self, apply: Target, name: str) -> None:
        self._apply = apply
        self.name = name

    def __repr__(self) -> str:
        return f"<LambdaHandler {self.name}>"

    def __call__(self, event: Any, context: Any = None) -> dict[str, list[dict[str, str]]]:
        """Handle one Lambda invocation; answer the partial batch failures."""
        return anyio.run(self.handle, event, backend="asyncio")

    async def handle(self, event: Any) -> dict[str, list[dict[str, str]]]:
        """What :meth:`__call__` does, in the running event loop."""
        records = event.get("Records") if isinstance(event, Mapping) else None
        if not isinstance(records, list):
            raise ValueError("not a DynamoDB Streams or Kinesis event: it has no 'Records' list")
        decoded = [decode_record(r) for r in records]
        missing = next((i for i, (sequence, _) in enumerate(decoded) if sequence is None), None)
        if missing is not None:
            # Nothing to point AWS at: an empty identifier makes it retry the whole batch; apply none of it.
            log.error("%s: record %d has no sequence number; failing the whole batch", self.name, missing)
            return {"batchItemFailures": [{"itemIdentifier": ""}]}
        failed = await self._first_failure(decoded)
        if failed is None:
            return {"batchItemFailures": []}
        sequence = decoded[failed][0]
        assert sequence is not None
        return {"batchItemFailures": [{"itemIdentifier": sequence}]}

    async def _first_failure(self, decoded: list[tuple[str | None, Decoded]]) -> int | None:
        """Apply the events up to the first malformed record; the index of the first failure, if any."""
        stop = next((i for i, (_, item) in enumerate(decoded) if isinstance(item, Malformed)), len(decoded))
        indices = [i for i in range(stop) if isinstance(decoded[i][1], RecordedEvent)]
        events: list[RecordedEvent] = [decoded[i][1] for i in indices]  # type: ignore[misc]
        if events:
            bad = await self._apply(events)
            if bad is not None:
                return indices[bad]
        if stop < len(decoded):
            item = decoded[stop][1]
            assert isinstance(item, Malformed)
            log.error("%s: %s", self.name, item.reason)
            return stop
        return None


async def _one_by_one(
    apply_one: Callable[[RecordedEvent], Awaitable[object]], events: list[RecordedEvent], name: str
) -> int | None:
    for i, event in enumerate(events):
        try:
            await apply_one(event)
        except Exception as exc:
            log.exception("%s: failed on %r #%d (%s): %s", name, event.stream, event.seq, event.type, exc)
            return i
    return None


async def _batch_then_one_by_one(
    apply: Callable[[list[RecordedEvent]], Awaitable[object]], events: list[RecordedEvent], name: str
) -> int | None:
    """Apply the batch at once; if that fails, apply it again event by event to find the one at fault."""
    try:
        await apply(events)
        return None
    except Exception:
        if len(events) == 1:
            log.exception("%s: failed on %r #%d (%s)", name, events[0].stream, events[0].seq, events[0].type)
            return 0

    async def single(event: RecordedEvent) -> None:
        await apply([event])

    return await _one_by_one(single, events, name)


def event_handler(
    fn: Callable[[RecordedEvent], Awaitable[object]], *, name: str | None = None
) -> LambdaHandler:
    """A Lambda handler calling the async ``fn`` on each event in turn.

    ``fn`` fails an event by raising, or by returning a ``returns``
    ``Failure`` (or an ``IOFailure``, or a ``FutureResult`` that fails).

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

    async def apply(events: list[RecordedEvent]) -> int | None:
        return await _one_by_one(one, events, label)

    return LambdaHandler(apply, label)


def pipe_handler(
    pipe: Callable[[Stream[RecordedEvent]], Stream[Any]], *, name: str | None = None
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

    async def run(events: list[RecordedEvent]) -> None:
        await Stream.emits(events).through(pipe).drain()

    async def apply(events: list[RecordedEvent]) -> int | None:
        return await _batch_then_one_by_one(run, events, label)

    return LambdaHandler(apply, label)


ModelSource = ReadModel[H] | Callable[[], AbstractAsyncContextManager[ReadModel[H]]]
"""A read model, or a function giving an ``async with`` that opens one (a model bound to an event loop)."""


class _ModelApplier(Generic[H]):
    def __init__(self, projection: Projection[H], model: ModelSource[H]) -> None:
        self.projection = projection
        self.model = model
        self.keep = EventFilter.of(projection.types, projection.stream_prefix)

    async def __call__(self, events: list[RecordedEvent]) -> int | None:
        model = self.model
        if hasattr(model, "apply"):
            return await self.apply(model, events)  # type: ignore[arg-type]
        assert callable(model)
        async with model() as opened:
            return await self.apply(opened, events)

    async def apply(self, model: ReadModel[H], events: list[RecordedEvent]) -> int | None:
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

        bad = await _batch_then_one_by_one(write, events_kept, p.name)
        return None if bad is None else kept[bad]


def projection_handler(projection: Projection[H], model: ModelSource[H]) -> LambdaHandler:
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
    ``async with`` that opens the model, opened for each invocation.

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
    return LambdaHandler(_ModelApplier(projection, model), projection.name)
