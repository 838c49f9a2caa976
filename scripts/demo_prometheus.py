"""``scripts/demo --prometheus [SECONDS] [--output PNG]``: the demo as a real backend sees it.

Renders the template into a sample FastAPI app, serves it with uvicorn under
``opentelemetry-instrument`` (metrics exposed for Prometheus, traces and logs sent over
OTLP to a loopback receiver), lets Debian's ``prometheus`` scrape it every second, then:

- draws a dashboard (PNG) from Prometheus' own ``query_range`` answers: request rate by
  status, p50/p95/p99 latency, database and job durations;
- prints the PromQL figures it read, and a text waterfall of one tick of the generator,
  each activity a trace with the log records that carry its trace and span ids.

Everything listens on 127.0.0.1 and is stopped by process id when it ends.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the test suite's server, receiver and Prometheus helpers

from host_servers import DEMO_LOGGER, TICK_MS, Server, free_port, sample_project  # noqa: E402
from otlp_receiver import LogRecord, OtlpHttpReceiver, Span  # noqa: E402
from prometheus_server import (  # noqa: E402
    Prometheus,
    prometheus_exporter_env,
    wait_until_exposed,
)

JOB = "shop"
SCOPE = DEMO_LOGGER  # the generator's instrumentation scope (and logger) in the sample app
WINDOW = "10s"
DEMO = f'job="{JOB}",otel_scope_name="{SCOPE}"'
HTTP = "http_server_request_duration_seconds"
DB = "db_client_operation_duration_seconds"
JOBS = "job_duration_seconds"


def main(arguments: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo --prometheus", description=__doc__)
    parser.add_argument("seconds", nargs="?", type=float, default=60.0, help="default 60")
    parser.add_argument(
        "--warm-up",
        type=float,
        default=20.0,
        help="seconds of traffic before the first scrape (default 20)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(tempfile.gettempdir()) / "demo-traffic-dashboard.png",
        help="where to write the PNG (docs/demo-dashboard.png regenerates the README's)",
    )
    options = parser.parse_args(arguments)
    with tempfile.TemporaryDirectory(prefix="demo-traffic-") as folder, ExitStack() as stack:
        project = Path(folder) / "project"
        print(f"==> copier copy {REPO} {project}  (framework=fastapi, app_target=myapp.main:app)")
        sample_project("fastapi", project, framework="fastapi", app_target="myapp.main:app")
        receiver = OtlpHttpReceiver().start()
        stack.callback(receiver.stop)
        exporter_port = free_port()
        command = ["uvicorn", "myapp.demo_traffic_app:app", "--port", "{port}"]
        print(f"==> opentelemetry-instrument {' '.join(command)}  (a tick every {TICK_MS} ms)")
        server = stack.enter_context(
            Server.start(
                command,
                project,
                receiver,
                service_name=JOB,
                env=prometheus_exporter_env(exporter_port),
            )
        )
        # The generator records first: see tests/test_prometheus.py for why that matters.
        wait_until_exposed(server, exporter_port, f"{HTTP}_count", SCOPE)
        assert server.wait_until_serving("/").status == 200
        print(f"    app on 127.0.0.1:{server.port}, /metrics on 127.0.0.1:{exporter_port}")
        # rate() cannot count the first increment of a series it has not seen before: let
        # most label combinations (method x route x status …) exist before the first scrape.
        print(f"==> {options.warm_up:.0f} s of traffic before Prometheus starts")
        time.sleep(options.warm_up)
        prometheus = stack.enter_context(Prometheus.start({JOB: exporter_port}, Path(folder)))
        started = time.time()
        print(f"==> prometheus on {prometheus.url}, scraping every second")
        while (elapsed := time.time() - started) < options.seconds:
            time.sleep(min(10.0, options.seconds - elapsed))
            print(f"    {time.time() - started:3.0f} s of {options.seconds:.0f}", flush=True)
        end = time.time()
        print_figures(prometheus)
        draw_dashboard(prometheus, started + 10, end, options.output)
        print(f"==> wrote {options.output}")
        receiver.wait_for(lambda r: len(r.spans()) > 0, timeout=5)
        print(waterfall(receiver.spans(), receiver.log_records()))
    return 0


# --- PromQL ---------------------------------------------------------------------------------


def rate(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{DEMO}}}[{WINDOW}]))"


def mean(histogram: str, by: str = "") -> str:
    return f"{rate(histogram + '_sum', by)} / {rate(histogram + '_count', by)}"


def quantile(q: float, histogram: str, by: str = "") -> str:
    grouping = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', grouping)})"


def print_figures(prometheus: Prometheus) -> None:
    """The instant answers a dashboard's stat panels would show."""
    figures = {
        "requests/s by status": prometheus.values(
            rate(f"{HTTP}_count", "http_response_status_code"), "http_response_status_code"
        ),
        "request latency p50/p95/p99 (s)": {
            f"p{round(q * 100)}": prometheus.scalar(quantile(q, HTTP)) for q in (0.5, 0.95, 0.99)
        },
        "db queries/s by operation": prometheus.values(
            rate(f"{DB}_count", "db_operation_name"), "db_operation_name"
        ),
        "db mean / p95 (s)": {
            "mean": prometheus.scalar(mean(DB)),
            "p95": prometheus.scalar(quantile(0.95, DB)),
        },
        "jobs/s by job_type": prometheus.values(rate(f"{JOBS}_count", "job_type"), "job_type"),
        "job mean (s) by job_type": prometheus.values(mean(JOBS, "job_type"), "job_type"),
        "cache operations/s by cache_hit": prometheus.values(
            rate("cache_operations_total", "cache_hit"), "cache_hit"
        ),
    }
    print(f"==> PromQL, over the last {WINDOW}:")
    for title, values in figures.items():
        shown = ", ".join(f"{key}={value:.3g}" for key, value in sorted(values.items()))
        print(f"    {title:34} {shown}")


def _series(
    prometheus: Prometheus, promql: str, label: str, start: float, end: float
) -> dict[str, tuple[list[float], list[float]]]:
    """``{label value: (seconds since start, values)}`` from a range query."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    for series in prometheus.query_range(promql, start, end, step=1):
        points = [(float(t) - start, float(v)) for t, v in series["values"] if v != "NaN"]
        found[series["metric"].get(label, "")] = ([t for t, _ in points], [v for _, v in points])
    return dict(sorted(found.items()))


def draw_dashboard(prometheus: Prometheus, start: float, end: float, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    figure, axes = plt.subplots(2, 2, figsize=(10, 6.2), dpi=90, sharex=True)
    panels: list[tuple[Any, str, str, dict[str, tuple[list[float], list[float]]], float]] = [
        (
            axes[0][0],
            "HTTP requests/s by status",
            "req/s",
            _series(
                prometheus,
                rate(f"{HTTP}_count", "http_response_status_code"),
                "http_response_status_code",
                start,
                end,
            ),
            1,
        ),
        (
            axes[0][1],
            "http.server.request.duration p50 / p95 / p99",
            "ms",
            {
                f"p{round(q * 100)}": _series(prometheus, quantile(q, HTTP), "", start, end)[""]
                for q in (0.5, 0.95, 0.99)
            },
            1000,
        ),
        (
            axes[1][0],
            "db.client.operation.duration, mean by operation",
            "ms",
            _series(prometheus, mean(DB, "db_operation_name"), "db_operation_name", start, end),
            1000,
        ),
        (
            axes[1][1],
            "job.duration, mean by job.type",
            "ms",
            _series(prometheus, mean(JOBS, "job_type"), "job_type", start, end),
            1000,
        ),
    ]
    for axis, title, unit, series, scale in panels:
        for name, (times, values) in series.items():
            axis.plot(times, [value * scale for value in values], label=name, linewidth=1.4)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(unit)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2, loc="lower left", framealpha=0.8)
    for axis in axes[1]:
        axis.set_xlabel("seconds")
    when = datetime.fromtimestamp(end).strftime("%Y-%m-%d %H:%M")
    figure.suptitle(
        f"demo-traffic in a FastAPI app, as Prometheus sees it (PromQL query_range, "
        f"rate over {WINDOW}) · {when}",
        fontsize=10,
    )
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    image = io.BytesIO()
    figure.savefig(image, format="png")
    plt.close(figure)
    # A 64-colour palette keeps the committed chart small and loses nothing a reader sees.
    with Image.open(image) as drawn:
        drawn.convert("RGB").quantize(colors=64).save(output, optimize=True)


# --- trace waterfall ------------------------------------------------------------------------


def waterfall(spans: Sequence[Span], logs: Sequence[LogRecord], width: int = 44) -> str:
    """One tick of the generator: the activities it started together, each its own trace,
    drawn on one time line, with the log records that carry each span's ids under it."""
    demo = sorted((span for span in spans if span.scope == SCOPE), key=lambda s: s.start_ns)
    if not demo:
        return "==> no spans arrived: no waterfall"
    ticks: list[list[Span]] = [[demo[0]]]
    for span in demo[1:]:
        if span.start_ns - ticks[-1][0].start_ns < 20_000_000:  # started together: one tick
            ticks[-1].append(span)
        else:
            ticks.append([span])
    middle = ticks[len(ticks) // 4 : 3 * len(ticks) // 4] or ticks
    tick = max(middle, key=lambda group: (len({s.kind for s in group}), len(group)))
    origin = min(span.start_ns for span in tick)
    total_ms = max((span.end_ns - origin) / 1e6 for span in tick)
    scale = width / total_ms
    at = f"{datetime.fromtimestamp(origin / 1e9):%H:%M:%S.%f}"[:-3]
    lines = [
        f"==> one tick of the generator at {at}: {len(tick)} activities, each its own trace",
        f"    {'span':24} {'kind':9} {'trace id':12}0 ms{total_ms:{width - 4}.0f} ms",
    ]
    for span in tick:
        begin = round((span.start_ns - origin) / 1e6 * scale)
        length = max(1, round((span.end_ns - span.start_ns) / 1e6 * scale))
        bar = " " * begin + "█" * length
        duration_ms = (span.end_ns - span.start_ns) / 1e6
        lines.append(
            f"    {span.name:24} {span.kind:9} {span.trace_id[:8]}…  |{bar:{width}}| "
            f"{duration_ms:4.0f} ms"
        )
        for log in sorted(logs, key=lambda record: record.time_ns):
            if log.trace_id == span.trace_id and log.span_id == span.span_id:
                at_ms = (log.time_ns - span.start_ns) / 1e6
                lines.append(f"        log +{at_ms:4.0f} ms {log.severity_text:7} {log.body}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
