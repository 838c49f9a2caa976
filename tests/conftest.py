"""Shared fixtures: render the template once per answer set, and collect telemetry.

Every test renders with the real Copier API from this repository's working tree and runs
what it renders against the real OpenTelemetry SDK with in-memory exporters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import copier
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The loopback OTLP receivers (fixtures ``otlp_http`` and ``otlp_grpc``) live in their own module.
pytest_plugins = ["otlp_receiver"]

REPO = Path(__file__).resolve().parent.parent

# A run started in the background (`nohup …`, `… &` in a script) inherits an ignored SIGINT,
# and so would every server the tests start: Python leaves an ignored SIGINT ignored, and
# the Ctrl-C tests could never stop them. The workers restore the default before any test.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DEFAULT_ANSWERS: dict[str, Any] = {"app_name": "myapp"}


def render(destination: Path, **answers: Any) -> Path:
    """Apply the template into ``destination`` (a sample project) with Copier's API."""
    data = {**DEFAULT_ANSWERS, **answers}
    package = destination / data.get("package_dir", data["app_name"])
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DirtyLocalWarning while developing the template
        copier.run_copy(
            str(REPO),
            destination,
            data=data,
            defaults=True,
            unsafe=False,
            quiet=True,
            vcs_ref="HEAD",
        )
    return destination


_module_numbers = itertools.count(1)


def load_module(path: Path) -> ModuleType:
    """Import a rendered module from its file under a unique name (variants share names)."""
    name = f"rendered_demo_traffic_{next(_module_numbers)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default answer set rendered once: a project with ``myapp/demo_traffic.py``."""
    return render(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="session")
def demo(rendered: Path) -> ModuleType:
    """The default rendered ``demo_traffic`` module, imported."""
    return load_module(rendered / "myapp" / "demo_traffic.py")


@dataclass
class Collected:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: InMemoryLogRecordExporter

    def traffic(self, demo: ModuleType, **settings: Any) -> Any:
        """A ``DemoTraffic`` from the rendered module ``demo`` that reports to these providers."""
        return demo.DemoTraffic(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **settings
        )

    def finished_spans(self) -> list[Any]:
        return list(self.spans.get_finished_spans())

    def log_records(self) -> list[Any]:
        return [data.log_record for data in self.logs.get_finished_logs()]

    def metric_points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@pytest.fixture
def collected(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collected]:
    """Real SDK providers with in-memory exporters; logs of ``myapp.demo_traffic`` captured.

    Pass ``tracer_provider=collected.tracer_provider, meter_provider=collected.meter_provider``
    to ``DemoTraffic``; log records reach ``collected.logs`` through the SDK's handler.
    """
    for variable in ("DEMO_TRAFFIC_ENABLED", "DEMO_TRAFFIC_INTERVAL_MS", "DEMO_TRAFFIC_SEED"):
        monkeypatch.delenv(variable, raising=False)
    with collecting() as providers:
        yield providers


@contextlib.contextmanager
def collecting() -> Iterator[Collected]:
    """What the ``collected`` fixture gives, for samples shared by a module's tests."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.sdk._logs import LoggingHandler

        handler = LoggingHandler(logger_provider=logger_provider)
    demo_logger = logging.getLogger("myapp.demo_traffic")
    demo_logger.addHandler(handler)
    try:
        yield Collected(tracer_provider, meter_provider, spans, reader, logs)
    finally:
        demo_logger.removeHandler(handler)
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
