"""A loopback OTLP receiver for tests: what a collector would receive, decoded.

Two pytest fixtures, each a started :class:`OtlpReceiver` on 127.0.0.1 with an ephemeral
port, stopped when the test ends:

- ``otlp_http``: OTLP/HTTP with protobuf bodies on ``/v1/traces``, ``/v1/metrics`` and
  ``/v1/logs`` (``Content-Encoding: gzip`` understood);
- ``otlp_grpc``: OTLP/gRPC with the TraceService, MetricsService and LogsService.

Both decode with the official ``opentelemetry-proto`` messages. Point a process at one with
``receiver.env()`` (``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_PROTOCOL``),
then read what arrived, waiting a bounded time::

    assert otlp_http.wait_for(lambda r: r.spans() and r.log_records(), timeout=10)
    names = {span.name for span in otlp_http.spans()}

Readers return plain frozen dataclasses (:class:`Span`, :class:`LogRecord`,
:class:`Metric` with :class:`Point`); ids are lowercase hex ("" when absent), attribute
values plain Python. ``received`` keeps every raw request for anything not covered here.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status

__all__ = ["LogRecord", "Metric", "OtlpReceiver", "Point", "Received", "Span"]

# signal -> (request message, response message)
_MESSAGES: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


@dataclass(frozen=True)
class Received:
    """One export request as it arrived."""

    signal: str  # "traces", "metrics" or "logs"
    message: Any  # the decoded Export*ServiceRequest
    content_encoding: str = ""  # HTTP only: "gzip" or ""


@dataclass(frozen=True)
class Span:
    name: str
    kind: str  # "SERVER", "CLIENT", "CONSUMER", "INTERNAL", "PRODUCER"
    attributes: Mapping[str, Any]
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status: str  # "UNSET", "OK", "ERROR"
    scope: str
    resource: Mapping[str, Any]

    @property
    def service_name(self) -> str | None:
        return self.resource.get("service.name")


@dataclass(frozen=True)
class LogRecord:
    body: Any
    severity_text: str
    severity_number: int
    attributes: Mapping[str, Any]
    trace_id: str
    span_id: str
    time_ns: int
    scope: str  # for Python logging records, the logger's name
    resource: Mapping[str, Any]

    @property
    def service_name(self) -> str | None:
        return self.resource.get("service.name")


@dataclass(frozen=True)
class Point:
    attributes: Mapping[str, Any]
    value: float | None  # sums and gauges
    count: int | None  # histograms
    sum: float | None  # histograms
    exemplars: tuple[tuple[str, str], ...]  # (trace_id, span_id) of each exemplar


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    type: str  # "sum", "gauge", "histogram", "exponential_histogram", "summary"
    points: tuple[Point, ...]
    scope: str
    resource: Mapping[str, Any]

    @property
    def service_name(self) -> str | None:
        return self.resource.get("service.name")


class OtlpReceiver:
    """Collects decoded OTLP export requests; thread-safe; see the module docstring."""

    protocol: str  # the OTEL_EXPORTER_OTLP_PROTOCOL value that reaches it

    def __init__(self) -> None:
        self.endpoint = ""  # e.g. "http://127.0.0.1:40123", set by start()
        self.received: list[Received] = []
        self._changed = threading.Condition()

    # --- for subclasses: transport ---------------------------------------------------------

    def start(self) -> OtlpReceiver:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _accept(self, received: Received) -> None:
        with self._changed:
            self.received.append(received)
            self._changed.notify_all()

    # --- for tests ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The variables that send a process's OTLP exporters here."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
        }

    def wait_for(self, predicate: Callable[[OtlpReceiver], object], timeout: float) -> bool:
        """Wait until ``predicate(self)`` is truthy, at most ``timeout`` seconds; say if it was."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
        return True

    def requests(self, signal: str) -> list[Received]:
        with self._changed:
            return [received for received in self.received if received.signal == signal]

    def spans(self) -> list[Span]:
        found: list[Span] = []
        for received in self.requests("traces"):
            for resource_spans in received.message.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    scope = scope_spans.scope.name
                    found.extend(_span(span, scope, resource) for span in scope_spans.spans)
        return found

    def log_records(self) -> list[LogRecord]:
        found: list[LogRecord] = []
        for received in self.requests("logs"):
            for resource_logs in received.message.resource_logs:
                resource = _attributes(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    scope = scope_logs.scope.name
                    found.extend(
                        _log_record(record, scope, resource) for record in scope_logs.log_records
                    )
        return found

    def metrics(self) -> list[Metric]:
        """Every metric of every request (a metric exported twice appears twice)."""
        found: list[Metric] = []
        for received in self.requests("metrics"):
            for resource_metrics in received.message.resource_metrics:
                resource = _attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    scope = scope_metrics.scope.name
                    found.extend(
                        _metric(metric, scope, resource) for metric in scope_metrics.metrics
                    )
        return found

    def metric_names(self) -> set[str]:
        return {metric.name for metric in self.metrics()}

    def clear(self) -> None:
        with self._changed:
            self.received.clear()


# --- OTLP/HTTP ------------------------------------------------------------------------------


class OtlpHttpReceiver(OtlpReceiver):
    protocol = "http/protobuf"

    def __init__(self) -> None:
        super().__init__()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OtlpHttpReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                signal = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
                name = signal.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
                if name is None:
                    return self._reply(404, b"")
                if "protobuf" not in (self.headers.get("Content-Type") or ""):
                    return self._reply(415, b"")
                request_type, response_type = _MESSAGES[name]
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    message = request_type.FromString(body)
                except (OSError, zlib.error, DecodeError):
                    return self._reply(400, b"")
                receiver._accept(Received(name, message, encoding))
                return self._reply(200, response_type().SerializeToString())

            def _reply(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


# --- OTLP/gRPC ------------------------------------------------------------------------------


class OtlpGrpcReceiver(OtlpReceiver):
    protocol = "grpc"

    def __init__(self) -> None:
        super().__init__()
        self._server: grpc.Server | None = None

    def start(self) -> OtlpGrpcReceiver:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                receiver._accept(Received("traces", request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                receiver._accept(Received("metrics", request))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                receiver._accept(Received("logs", request))
                return logs_service_pb2.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)


# --- decoding helpers -----------------------------------------------------------------------


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _enum_name(number: int, prefix: str) -> str:
    enum = SpanMessage.SpanKind if prefix == "SPAN_KIND_" else Status.StatusCode
    return str(enum.Name(number)).removeprefix(prefix)


def _span(span: Any, scope: str, resource: dict[str, Any]) -> Span:
    return Span(
        name=span.name,
        kind=_enum_name(span.kind, "SPAN_KIND_"),
        attributes=_attributes(span.attributes),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=_enum_name(span.status.code, "STATUS_CODE_"),
        scope=scope,
        resource=resource,
    )


def _log_record(record: Any, scope: str, resource: dict[str, Any]) -> LogRecord:
    return LogRecord(
        body=_value(record.body),
        severity_text=record.severity_text,
        severity_number=record.severity_number,
        attributes=_attributes(record.attributes),
        trace_id=record.trace_id.hex(),
        span_id=record.span_id.hex(),
        time_ns=record.time_unix_nano,
        scope=scope,
        resource=resource,
    )


def _metric(metric: Any, scope: str, resource: dict[str, Any]) -> Metric:
    kind = metric.WhichOneof("data") or ""
    points = getattr(metric, kind).data_points if kind else ()
    return Metric(
        name=metric.name,
        unit=metric.unit,
        type=kind,
        points=tuple(_point(point) for point in points),
        scope=scope,
        resource=resource,
    )


def _point(point: Any) -> Point:
    fields = {field.name for field, _ in point.ListFields()}
    value: float | None = None
    if "as_double" in fields:
        value = point.as_double
    elif "as_int" in fields:
        value = float(point.as_int)
    has_count = hasattr(point, "count")  # histogram-like points; number points have a value
    return Point(
        attributes=_attributes(point.attributes),
        value=value,
        count=point.count if has_count else None,
        sum=point.sum if has_count else None,
        exemplars=tuple(
            (exemplar.trace_id.hex(), exemplar.span_id.hex())
            for exemplar in getattr(point, "exemplars", ())
        ),
    )


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def otlp_http() -> Iterator[OtlpHttpReceiver]:
    """An OTLP/HTTP (protobuf) receiver on 127.0.0.1, for this test only."""
    receiver = OtlpHttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otlp_grpc() -> Iterator[OtlpGrpcReceiver]:
    """An OTLP/gRPC receiver on 127.0.0.1, for this test only."""
    receiver = OtlpGrpcReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
