"""Seen in a real backend: Prometheus scrapes a served FastAPI app and a served Flask app,
and PromQL finds what a dashboard needs: request rates by route and status, latency
histograms in seconds with the semantic conventions' buckets, database, job and cache series.

Both apps run under ``opentelemetry-instrument`` with ``OTEL_METRICS_EXPORTER=prometheus``
(``opentelemetry-exporter-prometheus`` serves ``/metrics``); Debian's ``prometheus`` binary,
started here on 127.0.0.1, scrapes them every second. Nothing is mocked.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from host_servers import Server, demo_logs, free_port, sample_project
from otlp_receiver import OtlpHttpReceiver
from prometheus_server import Prometheus, prometheus_exporter_env, wait_until_exposed

# The generator's catalog, as the sample apps render it.
ROUTES = {"/users", "/orders", "/products", "/api/health", "/search"}
STATUSES = {"200", "201", "301", "404"}
TABLES = {"users", "orders", "products", "sessions", "events"}
JOB_TYPES = {"send_email", "process_payment", "generate_report", "sync_inventory"}
# The semantic conventions' bucket advice, as Prometheus prints the `le` labels.
HTTP_BUCKETS = {"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1"}
HTTP_BUCKETS |= {"2.5", "5", "7.5", "10", "+Inf"}
DB_BUCKETS = {"0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "+Inf"}

APPS = {
    "fastapi": (
        {"framework": "fastapi", "app_target": "myapp.main:app"},
        ["uvicorn", "myapp.demo_traffic_app:app", "--port", "{port}"],
    ),
    "flask": (
        {"framework": "flask", "app_target": "myapp.app:app"},
        ["flask", "--app", "myapp.demo_traffic_app", "run", "--port", "{port}"],
    ),
}
# The generator's series; an app's own instrumentation may use the same names (FastAPI's does).
SCOPE = "myapp.demo_traffic"
SCRAPES = 12  # seconds of data (one scrape a second) before asking anything
WINDOW = "10s"  # the rate() window: ten scrapes


def test_prometheus_scrapes_fastapi_and_flask_and_promql_sees_every_demo_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The servers inherit this process's environment: no DEMO_TRAFFIC_* setting that another
    # test left behind may change what they play.
    for variable in [name for name in os.environ if name.startswith("DEMO_TRAFFIC_")]:
        monkeypatch.delenv(variable)
    with ExitStack() as stack:
        receiver = OtlpHttpReceiver().start()  # traces and logs; metrics go to Prometheus
        stack.callback(receiver.stop)
        exporter_ports = {}
        for job, (answers, command) in APPS.items():
            project = sample_project(job, tmp_path / job, **answers)
            exporter_ports[job] = free_port()
            environment = {
                **prometheus_exporter_env(exporter_ports[job]),
                "DEMO_TRAFFIC_SEED": "7",
            }
            server = stack.enter_context(
                Server.start(
                    command, project, receiver, service_name=f"shop-{job}", env=environment
                )
            )
            if job == "flask":
                # Flask starts the generator with the first request a process serves.
                assert server.wait_until_serving("/").status == 200
            # opentelemetry-exporter-prometheus names a metric family's labels after the first
            # scope that records it, and FastAPI's own http.server.request.duration has one
            # attribute more than the generator's: whichever records second has its label
            # values shifted. So the generator records first, as in an app not yet serving.
            requests = "http_server_request_duration_seconds_count"
            try:
                wait_until_exposed(server, exporter_ports[job], requests, SCOPE)
            except AssertionError as error:
                said = [str(record.body) for record in demo_logs(receiver)]
                raise AssertionError(f"{error}\nthe generator said: {said}") from None
            assert server.wait_until_serving("/").status == 200
        prometheus = stack.enter_context(Prometheus.start(exporter_ports, tmp_path / "prometheus"))
        prometheus.wait_for_scrapes(SCRAPES)

        assert prometheus.targets() == {"fastapi": "up", "flask": "up"}
        for job in APPS:
            assert_service_name(prometheus, job)
            assert_request_rate_by_route_and_status(prometheus, job)
            assert_http_latency_in_seconds_with_semconv_buckets(prometheus, job)
            assert_db_operation_and_pool_wait_series(prometheus, job)
            assert_job_durations_by_type(prometheus, job)
            assert_cache_hits_and_misses(prometheus, job)


def series(metric: str, job: str) -> str:
    """A PromQL selector for the generator's ``metric`` as scraped from ``job``'s app."""
    return f'{metric}{{job="{job}",otel_scope_name="{SCOPE}"}}'


def rate(metric: str, job: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({series(metric, job)}[{WINDOW}]))"


def mean(histogram: str, job: str) -> str:
    return f"{rate(histogram + '_sum', job)} / {rate(histogram + '_count', job)}"


def quantile(q: float, histogram: str, job: str) -> str:
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', job, by='le')})"


def assert_service_name(prometheus: Prometheus, job: str) -> None:
    """The exporter's ``target_info`` carries the app's resource: its service.name."""
    names = prometheus.values(f'target_info{{job="{job}"}}', "service_name")
    assert set(names) == {f"shop-{job}"}


def assert_request_rate_by_route_and_status(prometheus: Prometheus, job: str) -> None:
    requests = "http_server_request_duration_seconds_count"
    by_route = prometheus.values(rate(requests, job, by="http_route"), "http_route")
    assert set(by_route) == ROUTES, f"{job}: {by_route}"
    assert all(value > 0 for value in by_route.values()), f"{job}: {by_route}"
    status = "http_response_status_code"
    by_status = prometheus.values(
        f"sum by ({status}) (increase({series(requests, job)}[1m]))", status
    )
    assert set(by_status) <= STATUSES, by_status
    # 200 carries four of the seven weights, so it leads, and the rarer codes show up too.
    assert max(by_status, key=by_status.__getitem__) == "200", by_status
    assert len(by_status) >= 3, by_status
    total = prometheus.scalar(rate(requests, job))
    assert 0.5 < total < 60, f"{job}: {total} requests/s"


def assert_http_latency_in_seconds_with_semconv_buckets(prometheus: Prometheus, job: str) -> None:
    histogram = "http_server_request_duration_seconds"
    buckets = prometheus.values(f"count by (le) ({series(histogram + '_bucket', job)})", "le")
    assert set(buckets) == HTTP_BUCKETS
    # The catalog plays 5-150 ms: in seconds, that is 0.005-0.15 (milliseconds would be 5-150).
    average = prometheus.scalar(mean(histogram, job))
    assert 0.03 < average < 0.15, f"{job}: mean request {average}s"
    p50, p95, p99 = (prometheus.scalar(quantile(q, histogram, job)) for q in (0.5, 0.95, 0.99))
    assert 0.005 < p50 <= p95 <= p99 <= 0.25, (p50, p95, p99)


def assert_db_operation_and_pool_wait_series(prometheus: Prometheus, job: str) -> None:
    histogram = "db_client_operation_duration_seconds"
    by_table = prometheus.values(
        rate(histogram + "_count", job, by="db_collection_name"), "db_collection_name"
    )
    assert set(by_table) == TABLES, by_table
    assert all(value > 0 for value in by_table.values()), by_table
    systems = prometheus.values(
        rate(histogram + "_count", job, by="db_system_name"), "db_system_name"
    )
    assert set(systems) == {"postgresql"}
    buckets = prometheus.values(f"count by (le) ({series(histogram + '_bucket', job)})", "le")
    assert set(buckets) == DB_BUCKETS
    average = prometheus.scalar(mean(histogram, job))
    assert 0.005 < average < 0.05, f"{job}: mean query {average}s (the catalog plays 1-50 ms)"
    assert prometheus.scalar(rate("db_client_connection_wait_time_seconds_count", job)) > 0


def assert_job_durations_by_type(prometheus: Prometheus, job: str) -> None:
    histogram = "job_duration_seconds"
    by_type = prometheus.values(rate(histogram + "_count", job, by="job_type"), "job_type")
    assert set(by_type) == JOB_TYPES, by_type
    assert all(value > 0 for value in by_type.values()), by_type
    p95 = prometheus.scalar(quantile(0.95, histogram, job))
    assert 0.1 < p95 <= 0.75, f"{job}: job p95 {p95}s (the catalog plays 50-500 ms)"


def assert_cache_hits_and_misses(prometheus: Prometheus, job: str) -> None:
    counter = "cache_operations_total"
    by_hit = prometheus.values(rate(counter, job, by="cache_hit"), "cache_hit")
    assert set(by_hit) == {"true", "false"}, by_hit
    assert all(value > 0 for value in by_hit.values()), by_hit
    hits = prometheus.values(
        f"sum by (cache_hit) (increase({series(counter, job)}[1m]))", "cache_hit"
    )
    ratio = hits["true"] / (hits["true"] + hits["false"])
    assert 0.5 < ratio < 0.95, f"{job}: hit ratio {ratio} (the catalog plays 75 %)"
