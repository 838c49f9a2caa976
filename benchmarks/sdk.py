"""The OpenTelemetry SDK set-up every measurement shares, engine and baseline alike.

Batch span and log processors (what a production app runs) in front of exporters that
drop what they get, optionally after a delay (a slow backend), plus counters of ended
spans and emitted log records, so a measurement knows how much work was done.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

LOGGER_NAME = "myapp.demo_traffic"


class DroppingSpanExporter(SpanExporter):
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return SpanExportResult.SUCCESS


class DroppingLogExporter(LogRecordExporter):
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class DroppingMetricExporter(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class SpanCounter(SpanProcessor):
    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class LogCounter(LogRecordProcessor):
    def __init__(self) -> None:
        self.emitted = 0

    def on_emit(self, log_record: Any) -> None:  # the SDK renamed emit to on_emit
        self.emitted += 1

    emit = on_emit

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Sdk:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    spans: SpanCounter
    logs: LogCounter
    handler: logging.Handler

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()

    def shutdown(self) -> None:
        logging.getLogger(LOGGER_NAME).removeHandler(self.handler)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


def configure(*, export_delay_s: float = 0.0, periodic_metrics: bool = False) -> Sdk:
    """Providers as an app would set them up; logs of ``myapp.demo_traffic`` go to the SDK."""
    spans, logs = SpanCounter(), LogCounter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DroppingSpanExporter(export_delay_s)))
    tracer_provider.add_span_processor(spans)
    # In-memory metrics cost nothing until read; the periodic reader is what apps run.
    reader = (
        PeriodicExportingMetricReader(DroppingMetricExporter())
        if periodic_metrics
        else InMemoryMetricReader()
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(DroppingLogExporter(export_delay_s))
    )
    logger_provider.add_log_record_processor(logs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.sdk._logs import LoggingHandler

        handler = LoggingHandler(logger_provider=logger_provider)
    demo_logger = logging.getLogger(LOGGER_NAME)
    demo_logger.addHandler(handler)
    demo_logger.setLevel(logging.DEBUG)
    demo_logger.propagate = False  # nothing else prints: the SDK is the only consumer
    return Sdk(tracer_provider, meter_provider, logger_provider, spans, logs, handler)
