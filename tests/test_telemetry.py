"""OpenTelemetry spans and metrics (issue 20), read back from the SDK's in-memory exporter and reader."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from returns.result import Failure, Success
from test_logging import Add, Added, Racing, counter, fails_on_bad

from streamsrc import telemetry
from streamsrc.entity import Decider, Repository
from streamsrc.errors import Rejection, WrongExpectedVersion
from streamsrc.events import EventData
from streamsrc.projections import DeadLetters, MemoryReadModel, Projection, Projector
from streamsrc.store import open_store
from streamsrc.store.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)
        return out


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    t = Telemetry()
    telemetry.enable(tracer_provider=t.tracer_provider, meter_provider=t.meter_provider)
    try:
        yield t
    finally:
        telemetry.disable()


def test_off_by_default_and_opentelemetry_not_imported() -> None:
    code = (
        "import sys, anyio, streamsrc, streamsrc.entity, streamsrc.projections, streamsrc.telemetry\n"
        "from streamsrc.store.memory import MemoryStore\n"
        "from streamsrc.events import EventData\n"
        "anyio.run(MemoryStore().append, 's', [EventData('Noted', {})])\n"
        "assert streamsrc.telemetry.hooks is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_an_append_is_a_client_span_with_its_duration_and_count(otel: Telemetry) -> None:
    store = MemoryStore()
    assert isinstance(await store.append("s-1", [EventData("Noted", {}), EventData("Noted", {})]), Success)
    (span,) = otel.finished("append")
    assert span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes == {
        "db.system.name": "streamsrc.memory",
        "db.system": "streamsrc.memory",
        "db.operation.name": "append",
        "streamsrc.stream": "s-1",
        "streamsrc.events": 2,
    }
    assert span.status.status_code is StatusCode.UNSET
    (appended,) = otel.points("streamsrc.events.appended")
    assert appended.value == 2
    (duration,) = otel.points("db.client.operation.duration")
    assert duration.count == 1
    assert dict(duration.attributes) == {"db.system.name": "streamsrc.memory", "db.operation.name": "append"}


async def test_a_failed_append_says_why(otel: Telemetry) -> None:
    store = MemoryStore()
    result = await store.append("s-1", [EventData("Noted", {})], expected=3)
    assert isinstance(result.failure(), WrongExpectedVersion)
    (span,) = otel.finished("append")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "WrongExpectedVersion"
    assert otel.points("streamsrc.events.appended") == []
    (duration,) = otel.points("db.client.operation.duration")
    assert duration.attributes["error.type"] == "WrongExpectedVersion"


async def test_each_page_of_a_read_is_a_span(otel: Telemetry) -> None:
    store = MemoryStore()
    await store.append("s-1", [EventData("Noted", {"n": n}) for n in range(5)])
    store.page_size = 2
    assert len(await store.read("s-1").to_list()) == 5
    assert len(await store.read_all().to_list()) == 5
    reads = otel.finished("read")
    per_stream = [s for s in reads if (s.attributes or {}).get("streamsrc.stream") == "s-1"]
    global_log = [s for s in reads if "streamsrc.stream" not in (s.attributes or {})]
    assert [(s.attributes or {})["streamsrc.events"] for s in per_stream] == [2, 2, 1]
    assert len(global_log) == 3
    assert all((s.attributes or {})["db.operation.name"] == "read" for s in reads)


async def test_sqlite_is_named_by_its_semantic_convention(otel: Telemetry, tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'e.db'}") as store:
        await store.append("s-1", [EventData("Noted", {})])
    (span,) = otel.finished("append")
    assert (span.attributes or {})["db.system.name"] == "sqlite"


async def test_a_command_span_holds_its_reads_and_appends(otel: Telemetry) -> None:
    store = Racing(1)
    result = await Repository(store, counter).handle("c1", Add(1))
    assert isinstance(result, Success)
    (command,) = otel.finished("handle counter")
    attributes = dict(command.attributes or {})
    assert attributes["streamsrc.command"] == "Add"
    assert attributes["streamsrc.stream"] == "counter-c1"
    assert attributes["streamsrc.command.outcome"] == "saved"
    assert attributes["streamsrc.command.attempts"] == 2
    assert command.context is not None
    children = [
        s for s in otel.finished() if s.parent is not None and s.parent.span_id == command.context.span_id
    ]
    names = [s.name for s in children]
    assert "read" in names
    assert names.count("append") >= 2  # the lost race and the retry (the racer's own is inside too)


async def test_a_command_that_gives_up_or_is_rejected(otel: Telemetry) -> None:
    result = await Repository(Racing(100), counter).handle("c1", Add(1))
    assert isinstance(result, Failure)
    conflict = otel.finished("handle counter")[-1]
    assert (conflict.attributes or {})["streamsrc.command.outcome"] == "conflict"
    assert (conflict.attributes or {})["error.type"] == "Conflict"
    assert conflict.status.status_code is StatusCode.ERROR

    otel.spans.clear()
    refusing = dataclasses.replace(counter, decider=_refusing_decider())
    result = await Repository(MemoryStore(), refusing).handle("c2", Add(1))
    assert isinstance(result.failure(), Rejection)
    (rejected,) = otel.finished("handle counter")
    assert (rejected.attributes or {})["streamsrc.command.outcome"] == "rejected"
    assert rejected.status.status_code is StatusCode.UNSET


def _refusing_decider() -> Decider[Add, Added, int]:
    return Decider(0, lambda s, e: s, lambda c, s: Failure(Rejection("no")))


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_projection_batches_lag_and_dead_letters(otel: Telemetry, concurrency: int) -> None:
    store = MemoryStore()
    await store.append("a", [EventData("Good", {}), EventData("Bad", {}), EventData("Good", {})])
    await store.append("b", [EventData("Good", {}) for _ in range(4)])
    projection = Projection("p", fails_on_bad)
    model: MemoryReadModel[list[int]] = MemoryReadModel([])
    status = await Projector(
        store, projection, model, on_error=DeadLetters(), batch_size=2, concurrency=concurrency
    ).catch_up()
    assert status.dead_letters == 1
    batches = otel.finished("process p")
    assert batches
    for span in batches:
        attributes = dict(span.attributes or {})
        assert span.kind is SpanKind.CONSUMER
        assert attributes["messaging.system"] == "streamsrc"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.consumer.group.name"] == "p"
    counted = [(s.attributes or {})["messaging.batch.message_count"] for s in batches]
    assert all(isinstance(c, int) for c in counted)
    assert sum(c for c in counted if isinstance(c, int)) == 7
    dead = [e for s in batches for e in s.events if e.name == "dead_letter"]
    assert [(e.attributes or {})["streamsrc.seq"] for e in dead] == [2]
    (letters,) = otel.points("streamsrc.projection.dead_letters")
    assert letters.value == 1
    assert dict(letters.attributes) == {"messaging.consumer.group.name": "p"}
    (lag,) = otel.points("streamsrc.projection.lag")
    assert lag.value == 0
    (consumed,) = otel.points("messaging.client.consumed.messages")
    assert consumed.value == 7
    assert otel.points("messaging.process.duration")
