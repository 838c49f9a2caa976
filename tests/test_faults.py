"""Faults the generator survives without hurting its host.

Each test breaks one thing (an exporter, the backend, an activity, the event loop, the
process) and checks the same three promises: the host keeps working (its own loop keeps
its beat, its process exits when told), the generator keeps generating afterwards, and
what it had to skip is counted in its ``demo_traffic.skipped`` metric, not replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from conftest import Collected

pytestmark = pytest.mark.timeout(60)

LOGGER = "myapp.demo_traffic"
# The host's 10 ms heartbeat may wait this long, at most: a shared CI machine adds a tenth of
# a second now and then, while a loop blocked by an export (a hang, a 1 s OTLP timeout) or
# by a burst of replayed ticks would miss it by seconds.
HOST_STALL_S = 0.5


# --- broken exporters -----------------------------------------------------------------


class Broken:
    """Counts export calls; raises on each, or hangs until released (a stuck backend)."""

    def __init__(self, *, hang: bool = False) -> None:
        self.calls = 0
        self.hang = hang
        self.release = threading.Event()

    def fail(self) -> None:
        self.calls += 1
        if self.hang:
            self.release.wait(30)
            return
        raise RuntimeError("the backend is down")


class BrokenSpanExporter(SpanExporter):
    def __init__(self, broken: Broken) -> None:
        self.broken = broken

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.broken.fail()
        return SpanExportResult.FAILURE


class BrokenLogExporter(LogRecordExporter):
    def __init__(self, broken: Broken) -> None:
        self.broken = broken

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.broken.fail()
        return LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class BrokenMetricExporter(MetricExporter):
    def __init__(self, broken: Broken) -> None:
        super().__init__()
        self.broken = broken

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        self.broken.fail()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class Witness(SpanProcessor):
    """Sees every span end, whatever the exporters do; notes how many were open at once."""

    def __init__(self) -> None:
        self.ended = 0
        self.open = 0
        self.most_open = 0
        self.started_ns: list[int] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self.started_ns.append(span.start_time)

    def on_end(self, span: ReadableSpan) -> None:
        self.open -= 1
        self.ended += 1


@dataclass
class Sdk:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    witness: Witness


@pytest.fixture
def sdk_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build real SDK providers around the given span, log and metric exporters."""
    for variable in ("DEMO_TRAFFIC_ENABLED", "DEMO_TRAFFIC_INTERVAL_MS", "DEMO_TRAFFIC_SEED"):
        monkeypatch.delenv(variable, raising=False)
    built: list[tuple[Sdk, LoggerProvider, logging.Handler]] = []

    def build(
        span_exporter: SpanExporter,
        log_exporter: LogRecordExporter,
        metric_exporter: MetricExporter | None = None,
        *,
        batch: bool,
    ) -> Sdk:
        witness = Witness()
        tracer_provider = TracerProvider()
        span_processor = BatchSpanProcessor if batch else SimpleSpanProcessor
        tracer_provider.add_span_processor(span_processor(span_exporter))
        tracer_provider.add_span_processor(witness)
        reader: Any = (
            InMemoryMetricReader()
            if metric_exporter is None
            else PeriodicExportingMetricReader(metric_exporter, export_interval_millis=50)
        )
        meter_provider = MeterProvider(metric_readers=[reader])
        logger_provider = LoggerProvider()
        log_processor = BatchLogRecordProcessor if batch else SimpleLogRecordProcessor
        logger_provider.add_log_record_processor(log_processor(log_exporter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from opentelemetry.sdk._logs import LoggingHandler

            handler = LoggingHandler(logger_provider=logger_provider)
        logging.getLogger(LOGGER).addHandler(handler)
        sdk = Sdk(tracer_provider, meter_provider, witness)
        built.append((sdk, logger_provider, handler))
        return sdk

    yield build
    for sdk, logger_provider, handler in built:
        logging.getLogger(LOGGER).removeHandler(handler)
        sdk.tracer_provider.shutdown()
        sdk.meter_provider.shutdown()
        logger_provider.shutdown()


# --- driving the generator on a host loop ----------------------------------------------


@dataclass
class HostRun:
    longest_gap_s: float  # the host's own 10 ms heartbeat: its longest wait
    stop_s: float  # how long leaving ``running()`` took
    unblocked_ns: int  # wall clock when the host stopped blocking its loop


async def host_with(traffic: Any, seconds: float, *, block_s: float = 0.0) -> HostRun:
    """Run ``traffic`` on this loop beside a host heartbeat; optionally block the loop."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    beat = asyncio.create_task(heartbeat())
    unblocked_ns = 0
    async with traffic.running():
        await asyncio.sleep(seconds / 2)
        if block_s:
            time.sleep(block_s)  # noqa: ASYNC251 - the host hogs its loop, as a blocking handler does
            gaps.clear()  # that gap is the host's doing, not the generator's
            unblocked_ns = time.time_ns()
        await asyncio.sleep(seconds / 2)
        leaving = time.perf_counter()
    stop_s = time.perf_counter() - leaving
    beat.cancel()
    await asyncio.gather(beat, return_exceptions=True)
    return HostRun(max(gaps, default=0.0), stop_s, unblocked_ns)


def generator(demo: ModuleType, sdk: Sdk | Collected, **options: Any) -> Any:
    options.setdefault("interval_ms", 10)
    return demo.DemoTraffic(
        seed=7,
        one_per="process",
        tracer_provider=sdk.tracer_provider,
        meter_provider=sdk.meter_provider,
        **options,
    )


def skipped(collected: Collected, reason: str) -> float:
    return sum(
        point.value
        for point in collected.metric_points("demo_traffic.skipped")
        if point.attributes.get("reason") == reason
    )


def keeps_generating(witness: Witness, *, after: int) -> bool:
    return witness.ended > after + 3


# --- the faults ---------------------------------------------------------------------------


def test_an_exporter_that_raises_on_every_export_costs_nothing_but_its_data(
    demo: ModuleType, sdk_with: Any
) -> None:
    broken = Broken()
    sdk = sdk_with(
        BrokenSpanExporter(broken),
        BrokenLogExporter(broken),
        BrokenMetricExporter(broken),
        batch=False,
    )
    # Simple processors export (and the SDK logs each failure) on the loop itself: a
    # tenth of a second between ticks keeps that below what would starve any host.
    traffic = generator(demo, sdk, interval_ms=100)

    host = asyncio.run(host_with(traffic, 1.0))

    assert broken.calls > 20, "the exporters were not even called"
    assert keeps_generating(sdk.witness, after=broken.calls // 10)
    assert host.longest_gap_s < HOST_STALL_S
    assert host.stop_s < 1.5


def test_a_hanging_exporter_neither_blocks_the_host_nor_grows_the_work(
    demo: ModuleType, sdk_with: Any
) -> None:
    broken = Broken(hang=True)
    sdk = sdk_with(BrokenSpanExporter(broken), BrokenLogExporter(broken), batch=True)
    traffic = generator(demo, sdk, max_in_flight=20)

    try:
        host = asyncio.run(host_with(traffic, 1.0))
        hung_since = sdk.witness.ended
        asyncio.run(host_with(traffic, 0.3))
    finally:
        broken.release.set()

    assert broken.calls >= 1, "nothing reached the stuck backend"
    assert keeps_generating(sdk.witness, after=hung_since)
    assert sdk.witness.most_open <= 20
    assert host.longest_gap_s < HOST_STALL_S
    assert host.stop_s < 1.5


def refused_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused


def test_an_otlp_endpoint_refusing_connections_is_survived(demo: ModuleType, sdk_with: Any) -> None:
    endpoint = refused_endpoint()
    sdk = sdk_with(
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=1),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", timeout=1),
        batch=True,
    )
    traffic = generator(demo, sdk)

    first = asyncio.run(host_with(traffic, 0.6))
    sdk.tracer_provider.force_flush(2_000)  # the exporter meets the refusal at least once
    refused_since = sdk.witness.ended
    then = asyncio.run(host_with(traffic, 0.4))

    assert keeps_generating(sdk.witness, after=refused_since)
    assert max(first.longest_gap_s, then.longest_gap_s) < HOST_STALL_S


def test_the_cli_exits_promptly_when_the_otlp_endpoint_refuses(rendered: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(rendered),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": refused_endpoint(),
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "myapp.demo_traffic", "--duration", "1", "--interval-ms", "20"],
        cwd=rendered,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "Demo traffic stopped" in result.stderr
    assert time.monotonic() - started < 30


def test_an_activity_that_raises_is_logged_and_the_others_go_on(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def flaky_payment(telemetry: Any, rng: Any) -> None:
        raise RuntimeError("card declined by a bug")

    monkeypatch.setattr(demo, "ACTIVITIES", (flaky_payment, demo.cache_operation))
    traffic = generator(demo, collected)

    host = asyncio.run(host_with(traffic, 0.4))

    failures = [
        record
        for record in collected.log_records()
        if "Demo activity flaky_payment failed" in str(record.body)
    ]
    assert failures, "the failing activity was not logged"
    assert "card declined by a bug" in str(failures[0].attributes)
    assert len(collected.finished_spans()) > 5, "the other activities stopped"
    assert host.longest_gap_s < HOST_STALL_S


def test_a_loop_blocked_for_2_seconds_skips_the_missed_ticks_instead_of_bursting(
    demo: ModuleType, collected: Collected
) -> None:
    witness = Witness()
    collected.tracer_provider.add_span_processor(witness)
    traffic = generator(demo, collected, interval_ms=100)

    host = asyncio.run(host_with(traffic, 0.6, block_s=2.0))

    right_after = [
        started
        for started in witness.started_ns
        if host.unblocked_ns <= started < host.unblocked_ns + 50_000_000
    ]
    later = [started for started in witness.started_ns if started >= host.unblocked_ns]
    # Without skipping, the ~20 missed ticks would start 60 to 120 activities at once.
    assert len(right_after) <= 2 * max(demo.ACTIVITIES_PER_TICK)
    assert 17 <= skipped(collected, "missed_tick") <= 20
    assert len(later) >= min(demo.ACTIVITIES_PER_TICK) * 2, "the generator did not go on"
    lines = [r for r in collected.log_records() if "missed_tick" in str(r.body)]
    assert len(lines) == 1


def test_in_flight_work_is_bounded_and_the_excess_skipped_counted_and_logged_once(
    demo: ModuleType, collected: Collected
) -> None:
    witness = Witness()
    collected.tracer_provider.add_span_processor(witness)
    traffic = generator(demo, collected, interval_ms=5, max_in_flight=4)

    host = asyncio.run(host_with(traffic, 0.8))

    assert witness.most_open <= 4
    assert traffic.skipped > 50
    assert skipped(collected, "max_in_flight") == traffic.skipped
    lines = [r for r in collected.log_records() if "max_in_flight" in str(r.body)]
    assert len(lines) == 1, "one line a minute about skipping, not one per skip"
    assert witness.ended > 4, "the bounded generator still generates"
    assert host.longest_gap_s < HOST_STALL_S


def test_the_skip_log_line_comes_again_once_its_interval_has_passed(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "SKIPPED_LOG_EVERY_S", 0.2)
    traffic = generator(demo, collected, interval_ms=5, max_in_flight=1)

    asyncio.run(host_with(traffic, 0.7))

    lines = [r for r in collected.log_records() if "max_in_flight" in str(r.body)]
    assert 2 <= len(lines) <= 5


# --- signals and fork: in their own processes ------------------------------------------


def start_and_wait_for(command: list[str], cwd: Path, marker: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 20
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if marker in line:
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"never saw {marker!r}:\n{''.join(seen)[-2000:]}")


def test_sigterm_under_load_stops_the_cli_promptly_and_cleanly(rendered: Path) -> None:
    process = start_and_wait_for(
        [sys.executable, "-m", "myapp.demo_traffic", "--interval-ms", "2"],
        rendered,
        "Demo traffic started",
    )
    time.sleep(0.5)  # a tick every 2 ms: dozens of activities in flight

    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)

    assert process.returncode == 0, stderr[-2000:]
    assert time.monotonic() - sent < 3
    assert "Demo traffic stopped" in stderr
    assert "Traceback" not in stderr
    assert "Task was destroyed" not in stderr


THREAD_HOST = """
import signal, sys, time
from myapp.demo_traffic import DemoTraffic, configure_sdk

shutdown = configure_sdk()
traffic = DemoTraffic(interval_ms=2, one_per="process")
traffic.start()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as a WSGI server does
print("host serving", file=sys.stderr, flush=True)
try:
    while True:
        sum(range(10_000))  # the host's own work
        time.sleep(0.001)
finally:
    traffic.stop()
    shutdown()
    print("host exited", file=sys.stderr, flush=True)
"""


def test_sigterm_under_load_ends_a_threaded_host_promptly_and_cleanly(
    rendered: Path,
) -> None:
    process = start_and_wait_for([sys.executable, "-c", THREAD_HOST], rendered, "host serving")
    time.sleep(0.5)

    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)

    assert process.returncode == 0, stderr[-2000:]
    assert time.monotonic() - sent < 3
    assert "host exited" in stderr
    assert "Traceback" not in stderr


FORK_HOST = r"""
import logging, os, sys, time
from myapp.demo_traffic import DemoTraffic

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(process)d %(message)s")
traffic = DemoTraffic(interval_ms=20, one_per=sys.argv[1])
traffic.start()
time.sleep(0.3)
child = os.fork()
if child == 0:
    traffic.start()  # what a worker's post_fork hook does
    time.sleep(0.9)  # the parent stops at 0.4 s: a standby takes over
    sys.stdout.write(f"{os.getpid()} child still serving {sum(range(1000))}\n")
    sys.stdout.flush()
    traffic.stop()
    os._exit(0)
# One write per line: the generator thread logs to the same stream meanwhile.
sys.stdout.write(f"{os.getpid()} forked child={child};\n")
sys.stdout.flush()
time.sleep(0.4)
traffic.stop()
_, status = os.waitpid(child, 0)
sys.stdout.write(f"{os.getpid()} child exit status {status};\n")
"""


@dataclass
class ForkRun:
    parent: str
    child: str
    lines: list[str]

    def said(self, pid: str, text: str) -> list[int]:
        # A fork mid-write hands the child the parent's half-written line: match anywhere.
        pattern = re.compile(rf"\b{pid} .*{re.escape(text)}")
        return [n for n, line in enumerate(self.lines) if pattern.search(line)]


def run_fork_host(rendered: Path, one_per: str) -> ForkRun:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_HOST, one_per],
        cwd=rendered,
        env={**os.environ, "PYTHONPATH": str(rendered)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    forked = re.search(r"(\d+) forked child=(\d+);", result.stdout)
    assert forked is not None and "child exit status 0;" in result.stdout
    return ForkRun(parent=forked[1], child=forked[2], lines=lines)


def test_a_child_forked_while_running_stands_by_when_one_per_host(rendered: Path) -> None:
    run = run_fork_host(rendered, "host")

    forked_at = run.said(run.parent, "forked")[0]
    parent_work_after_fork = [
        n for n in run.said(run.parent, " — ") if n > forked_at
    ]  # request log lines such as "GET /users — 200 in 42ms"
    standing_by = run.said(run.child, "standing by to take over")
    took_over = run.said(run.child, "Demo traffic started")
    assert parent_work_after_fork, "the parent's generator stopped at the fork"
    assert standing_by, f"the child ran a second generator on the same host: {run}"
    assert took_over and took_over[0] > run.said(run.parent, "Demo traffic stopped")[0]
    assert run.said(run.child, "child still serving")


def test_a_child_forked_while_running_starts_its_own_when_one_per_process(
    rendered: Path,
) -> None:
    run = run_fork_host(rendered, "process")

    assert run.said(run.child, "Demo traffic started"), f"the child did not start: {run}"
    assert not run.said(run.child, "standing by")
    assert run.said(run.child, "child still serving")
    assert run.said(run.parent, "Demo traffic stopped")
