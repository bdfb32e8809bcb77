"""Optional OpenTelemetry traces and metrics: ``pip install 'streamsrc[otel]'``, then :func:`enable`.

Until :func:`enable` is called nothing here runs and OpenTelemetry is not
even imported: the store, the command handler and the projection runner
each test one module attribute (:data:`hooks`, ``None``) and go on. Once
enabled, streamsrc uses the tracer and meter providers you give (by default
OpenTelemetry's global ones, set up by your application or its
auto-instrumentation) and records, following OpenTelemetry's semantic
conventions where they exist:

Spans

* ``append`` (kind ``CLIENT``) for every ``append``/``import_events`` of a
  :class:`~streamsrc.store.base.StoreBase`: ``db.system.name`` (and the older
  ``db.system``; ``sqlite``, ``postgresql``, ``aws.dynamodb``,
  ``streamsrc.memory``), ``db.operation.name`` = ``append``,
  ``streamsrc.stream``, ``streamsrc.events``; on failure ``error.type`` (the
  error's class: ``WrongExpectedVersion``, ``StoreUnavailable``, ...) and an
  error status.
* ``read`` (``CLIENT``) for each page a read fetches (``read``,
  ``read_all``): ``db.operation.name`` = ``read``, ``streamsrc.stream``
  (absent for the global log), ``streamsrc.events`` (the page's size).
* ``handle <Entity>`` (``INTERNAL``) around ``Repository.handle``:
  ``streamsrc.entity``, ``streamsrc.stream``, ``streamsrc.command`` (the
  command's class), ``streamsrc.command.outcome`` (``saved``, ``rejected``,
  ``conflict``, ``failed``) and ``streamsrc.command.attempts``; its appends and
  reads are its children.
* ``process <projection>`` (``CONSUMER``) for each batch a projector
  applies: ``messaging.system`` = ``streamsrc``,
  ``messaging.operation.type`` = ``process``, ``messaging.operation.name`` =
  ``apply``, ``messaging.consumer.group.name`` (the projection, with its
  partition), ``messaging.batch.message_count``, ``streamsrc.position`` (the
  checkpoint the batch moves to).

Metrics

* ``db.client.operation.duration`` (histogram, s): appends and page reads,
  by ``db.system.name``, ``db.operation.name`` and ``error.type``;
* ``streamsrc.events.appended`` (counter, ``{event}``) by ``db.system.name``;
* ``messaging.process.duration`` (histogram, s): projection batches, by
  ``messaging.consumer.group.name``;
* ``messaging.client.consumed.messages`` (counter, ``{message}``): events
  applied by projections;
* ``streamsrc.projection.lag`` (gauge, ``{position}``): head of the log minus
  the projection's checkpoint, after every batch;
* ``streamsrc.projection.dead_letters`` (counter, ``{event}``): events set
  aside by a projection's :class:`~streamsrc.projections.DeadLetters` policy.

>>> from streamsrc import telemetry
>>> telemetry.enabled()  # off until enable() is called
False
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from returns.result import Failure, Result

from streamsrc.errors import Conflict, Rejection

if TYPE_CHECKING:  # pragma: no cover - types only: OpenTelemetry is optional
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from streamsrc.events import RecordedEvent
    from streamsrc.projections import Progress

__all__ = ["Hooks", "disable", "enable", "enabled", "hooks"]

T = TypeVar("T")

SCOPE = "streamsrc"
"""The instrumentation scope's name (of the tracer and the meter)."""

_SYSTEMS = {
    "streamsrc.store.sqlite": "sqlite",
    "streamsrc.store.postgres": "postgresql",
    "streamsrc.store.dynamodb": "aws.dynamodb",
    "streamsrc.store.memory": "streamsrc.memory",
}


def _system_of(cls: type) -> str:
    """``db.system.name`` of a store class, from the module that defines it (or a base's)."""
    for klass in cls.__mro__:
        module = klass.__module__
        for prefix, system in _SYSTEMS.items():
            if module == prefix or module.startswith(prefix + "."):
                return system
    return "other"


class Hooks:
    """What the instrumented places call once :func:`enable` has made one (see the module docs).

    Each method takes the operation as an awaitable and awaits it inside a
    span, timing it; so a hook costs the caller one call, and nothing when
    telemetry is off (``hooks is None``).

    >>> import anyio
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from streamsrc.events import EventData
    >>> from streamsrc.store.memory import MemoryStore
    >>> spans = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(spans))
    >>> enable(tracer_provider=provider)
    >>> _ = anyio.run(MemoryStore().append, "s", [EventData("Noted", {})])
    >>> disable()
    >>> [(s.name, s.attributes["streamsrc.events"]) for s in spans.get_finished_spans()]
    [('append', 1)]
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from opentelemetry import metrics, trace

        try:
            release = version("streamsrc")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree
            release = "0"
        self._trace = trace
        self.tracer = trace.get_tracer(SCOPE, release, tracer_provider)
        meter = metrics.get_meter(SCOPE, release, meter_provider)
        self.kinds = trace.SpanKind
        self.error = trace.Status(trace.StatusCode.ERROR)
        self.systems: dict[type, str] = {}
        self.op_duration = meter.create_histogram(
            "db.client.operation.duration", unit="s", description="Duration of database client operations."
        )
        self.appended = meter.create_counter(
            "streamsrc.events.appended", unit="{event}", description="Events appended to a store."
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Duration of a projection batch."
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Events applied by projections.",
        )
        self.lag = meter.create_gauge(
            "streamsrc.projection.lag",
            unit="{position}",
            description="Positions of the log a projection has not applied yet.",
        )
        self.dead = meter.create_counter(
            "streamsrc.projection.dead_letters",
            unit="{event}",
            description="Events set aside as dead letters.",
        )

    def _system(self, store: object) -> str:
        cls = type(store)
        system = self.systems.get(cls)
        if system is None:
            system = self.systems[cls] = _system_of(cls)
        return system

    async def append(
        self, store: object, stream: str, count: int, write: Awaitable[Result[Any, Any]]
    ) -> Result[Any, Any]:
        """Await an append (``write``) in an ``append`` span; time it, count what it wrote."""
        system = self._system(store)
        attributes: dict[str, Any] = {
            "db.system.name": system,
            "db.system": system,
            "db.operation.name": "append",
            "streamsrc.stream": stream,
            "streamsrc.events": count,
        }
        metric = {"db.system.name": system, "db.operation.name": "append"}
        with self.tracer.start_as_current_span(
            "append", kind=self.kinds.CLIENT, attributes=attributes
        ) as span:
            start = time.perf_counter()
            try:
                result = await write
            except BaseException as exc:
                metric["error.type"] = type(exc).__name__
                self.op_duration.record(time.perf_counter() - start, metric)
                raise
            elapsed = time.perf_counter() - start
            if isinstance(result, Failure):
                failure = result.failure()
                metric["error.type"] = type(failure).__name__
                span.set_attribute("error.type", metric["error.type"])
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(failure)))
            else:
                self.appended.add(count, {"db.system.name": system})
            self.op_duration.record(elapsed, metric)
            return result

    async def read_page(self, store: object, stream: str | None, read: Awaitable[T]) -> T:
        """Await one page of a read (``read``) in a ``read`` span; time it."""
        system = self._system(store)
        attributes: dict[str, Any] = {
            "db.system.name": system,
            "db.system": system,
            "db.operation.name": "read",
        }
        if stream is not None:
            attributes["streamsrc.stream"] = stream
        metric = {"db.system.name": system, "db.operation.name": "read"}
        with self.tracer.start_as_current_span("read", kind=self.kinds.CLIENT, attributes=attributes) as span:
            start = time.perf_counter()
            try:
                page = await read
            except BaseException as exc:
                metric["error.type"] = type(exc).__name__
                raise
            finally:
                self.op_duration.record(time.perf_counter() - start, metric)
            span.set_attribute("streamsrc.events", len(getattr(page, "events", ())))
            return page

    async def command(
        self, entity: str, stream: str, command: object, handle: Awaitable[Result[Any, Any]]
    ) -> Result[Any, Any]:
        """Await a command (``handle``) in a ``handle <entity>`` span; say how it ended."""
        attributes = {
            "streamsrc.entity": entity,
            "streamsrc.stream": stream,
            "streamsrc.command": type(command).__name__,
        }
        with self.tracer.start_as_current_span(f"handle {entity}", attributes=attributes) as span:
            result = await handle
            if isinstance(result, Failure):
                failure = result.failure()
                if isinstance(failure, Rejection):  # the domain's answer, not an error
                    span.set_attribute("streamsrc.command.outcome", "rejected")
                    return result
                span.set_attribute(
                    "streamsrc.command.outcome", "conflict" if isinstance(failure, Conflict) else "failed"
                )
                if isinstance(failure, Conflict):
                    span.set_attribute("streamsrc.command.attempts", failure.attempts)
                span.set_attribute("error.type", type(failure).__name__)
                span.set_status(self.error)
            else:
                span.set_attribute("streamsrc.command.outcome", "saved")
                span.set_attribute("streamsrc.command.attempts", result.unwrap().retries + 1)
            return result

    async def batch(
        self, projection: str, events: Sequence[RecordedEvent], position: int, apply: Awaitable[T]
    ) -> T:
        """Await a projection batch (``apply``) in a ``process <projection>`` span; time and count it."""
        attributes: dict[str, Any] = {
            "messaging.system": "streamsrc",
            "messaging.operation.type": "process",
            "messaging.operation.name": "apply",
            "messaging.consumer.group.name": projection,
            "messaging.batch.message_count": len(events),
            "streamsrc.position": position,
        }
        metric = {
            "messaging.system": "streamsrc",
            "messaging.operation.name": "apply",
            "messaging.consumer.group.name": projection,
        }
        with self.tracer.start_as_current_span(
            f"process {projection}", kind=self.kinds.CONSUMER, attributes=attributes
        ):
            start = time.perf_counter()
            try:
                done = await apply
            except BaseException as exc:
                metric["error.type"] = type(exc).__name__
                raise
            finally:
                self.process_duration.record(time.perf_counter() - start, metric)
            if events:
                self.consumed.add(len(events), metric)
            return done

    def progress(self, progress: Progress) -> None:
        """Record a projection's lag after a batch."""
        self.lag.set(progress.lag, {"messaging.consumer.group.name": progress.name})

    def dead_letter(self, projection: str, event: RecordedEvent) -> None:
        """Count a dead letter; mark the current span (the batch's)."""
        self.dead.add(1, {"messaging.consumer.group.name": projection})
        span = self._trace.get_current_span()
        span.add_event(
            "dead_letter",
            {
                "streamsrc.stream": event.stream,
                "streamsrc.seq": event.seq,
                "streamsrc.position": event.position,
            },
        )


hooks: Hooks | None = None
"""The switch: ``None`` (telemetry off, the default) or the :class:`Hooks` the library calls."""


def enable(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Turn tracing and metrics on, with these providers (default: OpenTelemetry's global ones).

    :raises ModuleNotFoundError: ``opentelemetry-api`` is not installed
        (``pip install 'streamsrc[otel]'``).

    >>> enable()
    >>> enabled()
    True
    >>> disable()
    """
    global hooks
    hooks = Hooks(tracer_provider, meter_provider)


def disable() -> None:
    """Turn tracing and metrics off again (the library then calls nothing here).

    >>> disable()
    >>> enabled()
    False
    """
    global hooks
    hooks = None


def enabled() -> bool:
    """Whether :func:`enable` has turned telemetry on.

    >>> enabled()
    False
    """
    return hooks is not None
