"""Incidents (issue 5): trouble on a schedule, exactly inside its windows, and marked.

Each kind runs once against the real SDK with short windows. A window opens and closes with
a WARNING record carrying its ``demo.incident.id``; every span, log record and metric point
the incident touched carries that id, none outside the window does, and every operation of
the target that started inside the window was touched (for a share of 1).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections import Counter
from types import ModuleType
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Collected

pytestmark = pytest.mark.timeout(60)

ID = "demo.incident.id"
KIND = "demo.incident.kind"


def clean_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for variable in os.environ:
        if variable.startswith(("DEMO_TRAFFIC_", "OTEL_SEMCONV")):
            monkeypatch.delenv(variable)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)


def attributes(item: Any) -> dict[str, Any]:
    return dict(item.attributes or {})


def run(demo: ModuleType, collected: Collected, seconds: float, seed: int) -> None:
    traffic = collected.traffic(demo, interval_ms=20, seed=seed)

    async def main() -> None:
        async with traffic.running():
            await asyncio.sleep(seconds)

    asyncio.run(main())


def windows(collected: Collected) -> dict[str, tuple[int, int]]:
    """Each incident window's id, from its 'started' record to its 'ended' record (ns)."""
    opened: dict[str, int] = {}
    closed: dict[str, int] = {}
    for record in collected.log_records():
        body = str(record.body)
        if not body.startswith("Incident "):
            continue
        assert record.severity_number == SeverityNumber.WARN, body
        incident_id = attributes(record)[ID]
        assert body.startswith(f"Incident {incident_id} ")
        if " started: " in body:
            opened[incident_id] = record.timestamp
        else:
            assert body == f"Incident {incident_id} ended"
            closed[incident_id] = record.timestamp
    assert set(opened) == set(closed), "every window that opened closed"
    return {incident_id: (opened[incident_id], closed[incident_id]) for incident_id in opened}


def target_of(span: Any) -> str:
    if span.kind == SpanKind.SERVER:
        return "http"
    if span.kind == SpanKind.CONSUMER:
        return "job"
    if span.kind == SpanKind.PRODUCER:
        return "send"
    return "cache" if span.name == "GET cache" else "db"


def window_holding(instant: int, spans: dict[str, tuple[int, int]]) -> str | None:
    found = [incident_id for incident_id, (start, end) in spans.items() if start <= instant <= end]
    assert len(found) <= 1
    return found[0] if found else None


def assert_marks_exactly_inside(
    collected: Collected, target: str, kind: str, expected_windows: int
) -> list[Any]:
    """The marked spans of ``target`` are those that started inside a window; return them."""
    spans = collected.finished_spans()
    open_windows = windows(collected)
    assert len(open_windows) == expected_windows, open_windows
    marked = []
    for span in spans:
        marks = attributes(span)
        inside = window_holding(span.start_time, open_windows)
        if target_of(span) == target:
            assert marks.get(ID) == inside, (span.name, marks.get(ID), inside)
        elif marks.get(ID) is not None:
            # Only a request or job failing because of its call carries another target's id.
            assert marks.get(KIND) in {"errors", "outage"}, span.name
            assert span.status.status_code == StatusCode.ERROR, span.name
        if marks.get(ID) is not None:
            assert marks[KIND] == kind
            marked.append(span)
    per_window = Counter(attributes(span)[ID] for span in marked if target_of(span) == target)
    assert set(per_window) == set(open_windows), "every window touched operations"
    assert min(per_window.values()) >= 5, per_window
    return marked


def assert_logs_and_metrics_follow_the_spans(collected: Collected, marked: list[Any]) -> None:
    by_span = {span.context.span_id: span for span in marked}
    for record in collected.log_records():
        incident_id = attributes(record).get(ID)
        if incident_id is None or str(record.body).startswith("Incident "):
            continue
        span = by_span.get(record.span_id)
        assert span is not None, f"{record.body!r} is marked outside any marked span"
        assert attributes(span)[ID] == incident_id
    duration_metric = {
        "http": "http.server.request.duration",
        "db": "db.client.operation.duration",
        "job": "job.duration",
    }
    recorded = Counter[tuple[str, str]]()
    for name in (*duration_metric.values(), "cache.operations"):
        for point in collected.metric_points(name):
            incident_id = point.attributes.get(ID)
            if incident_id is not None:
                count = point.count if hasattr(point, "count") else point.value
                recorded[name, incident_id] += count
    expected = Counter[tuple[str, str]]()
    for span in marked:
        target = target_of(span)
        name = duration_metric.get(target, "cache.operations")
        expected[name, attributes(span)[ID]] += 1
    assert recorded == expected


# --- Specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("latency:db:5", ("latency", "db", 5.0, None, None)),
        ("latency:db:x5:every=10m:for=2m", ("latency", "db", 5.0, 600.0, 120.0)),
        ("latency:job:2.5x", ("latency", "job", 2.5, None, None)),
        ("errors:http:30%:every=15m:for=1m", ("errors", "http", 0.3, 900.0, 60.0)),
        ("outage:cache:100%", ("outage", "cache", 1.0, None, None)),
        ("latency:db:2.5x:for=90s", ("latency", "db", 2.5, None, 90.0)),
        ("errors:http:0.2:every=10m:for=2m", ("errors", "http", 0.2, 600.0, 120.0)),
        ("ERRORS:job:20%:for=500ms", ("errors", "job", 0.2, None, 0.5)),
        ("outage:cache:1:every=1h:for=30", ("outage", "cache", 1.0, 3600.0, 30.0)),
    ],
)
def test_incident_specs_read_as_written(demo: ModuleType, spec: str, expected: tuple) -> None:
    (incident,) = demo.parse_incidents(spec)
    assert (
        incident.kind,
        incident.target,
        incident.amount,
        incident.every_s,
        incident.for_s,
    ) == pytest.approx(expected)


def test_several_specs_separated_by_commas(demo: ModuleType) -> None:
    incidents = demo.parse_incidents(" latency:db:3 , outage:cache:1:for=1s,")
    assert [(incident.kind, incident.target) for incident in incidents] == [
        ("latency", "db"),
        ("outage", "cache"),
    ]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("slow:db:5", "KIND 'slow' is not one of latency, errors, outage"),
        ("latency:queue:5", "TARGET 'queue' is not one of http, db, job, cache"),
        ("latency:db", "it needs at least KIND:TARGET:AMOUNT"),
        ("latency:db:0.5", "AMOUNT '0.5' is not a slowdown factor above 1"),
        ("errors:http:1.5", "AMOUNT '1.5' is not a share of failures"),
        ("errors:http:nan", "AMOUNT 'nan' is not a share of failures"),
        ("outage:db:1:for=soon", "'soon' is not a duration"),
        ("outage:db:1:every=1m", "every= needs a for= shorter than it"),
        ("outage:db:1:every=1m:for=2m", "every= needs a for= shorter than it"),
        ("outage:db:1:at=noon", "'at=noon' is not every=DURATION or for=DURATION"),
    ],
)
def test_a_bad_spec_is_one_clear_line(demo: ModuleType, spec: str, complaint: str) -> None:
    with pytest.raises(demo.ConfigurationError) as raised:
        demo.parse_incidents(spec)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"incident {spec!r}: {complaint}")
    assert "KIND:TARGET:AMOUNT[:every=DURATION][:for=DURATION]" in message


def test_a_bad_spec_stops_the_cli_before_it_starts(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_environment(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        demo.main(["--incidents", "latency:dbs:5", "--duration", "5"])
    assert exited.value.code == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.count("\n") == 1
    assert "TARGET 'dbs' is not one of http, db, job, cache" in output.err


def test_a_bad_spec_in_the_environment_starts_no_generator(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_INCIDENTS="errors:db:lots")
    with pytest.raises(demo.ConfigurationError, match="AMOUNT 'lots'"):
        demo.DemoTraffic()


# --- Windows and effects ----------------------------------------------------------------------


def test_latency_windows_are_exact_and_slow_the_target(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_INCIDENTS="latency:http:4:every=0.8s:for=0.3s")
    run(demo, collected, seconds=2.0, seed=21)  # windows open at 0, 0.8 and 1.6 s
    marked = assert_marks_exactly_inside(collected, "http", "latency", expected_windows=3)
    assert_logs_and_metrics_follow_the_spans(collected, marked)
    requests = [span for span in collected.finished_spans() if span.kind == SpanKind.SERVER]
    slow = [span.end_time - span.start_time for span in requests if ID in attributes(span)]
    usual = [span.end_time - span.start_time for span in requests if ID not in attributes(span)]
    # Uniform 5-150 ms, four times slower: 20-600 ms, the means 77.5 ms and 310 ms.
    assert min(slow) >= 20e6 - 0.5e6 and max(slow) > 400e6 and max(usual) < 200e6
    assert 2.5 < statistics.mean(slow) / statistics.mean(usual) < 5.5
    assert all(span.status.status_code == StatusCode.UNSET for span in requests)


def test_error_windows_fail_the_target_and_the_requests_that_needed_it(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(
        monkeypatch,
        DEMO_TRAFFIC_PROFILE="realistic",
        DEMO_TRAFFIC_INCIDENTS="errors:db:1:every=1s:for=0.4s",
    )
    run(demo, collected, seconds=1.8, seed=22)
    marked = assert_marks_exactly_inside(collected, "db", "errors", expected_windows=2)
    assert_logs_and_metrics_follow_the_spans(collected, marked)
    spans = collected.finished_spans()
    for span in spans:
        failed = span.status.status_code == StatusCode.ERROR
        assert failed == (ID in attributes(span)), span.name
        if target_of(span) == "db" and failed:
            assert attributes(span)["error.type"] == "DeadlockDetected"
    failed_requests = [span for span in marked if span.kind == SpanKind.SERVER]
    assert failed_requests, "a request whose query failed fails too"
    assert {attributes(span)["http.status_code"] for span in failed_requests} == {500}


def test_outage_windows_fail_fast_and_reads_fall_back_to_the_database(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(
        monkeypatch,
        DEMO_TRAFFIC_PROFILE="realistic",
        DEMO_TRAFFIC_INCIDENTS="outage:cache:1:for=0.6s",
    )
    run(demo, collected, seconds=1.2, seed=23)
    marked = assert_marks_exactly_inside(collected, "cache", "outage", expected_windows=1)
    assert_logs_and_metrics_follow_the_spans(collected, marked)
    assert {target_of(span) for span in marked} == {"cache"}, "requests survive a cache outage"
    for span in marked:
        assert attributes(span)["error.type"] == "ConnectionRefusedError"
        assert attributes(span)["cache.hit"] is False
        assert span.end_time - span.start_time < 20_000_000  # refused at once
    spans = {span.context.span_id: span for span in collected.finished_spans()}
    for lookup in marked:
        siblings = [
            span
            for span in spans.values()
            if span.parent is not None and span.parent.span_id == lookup.parent.span_id
        ]
        assert any(span.name.startswith("SELECT ") for span in siblings), "no fallback query"
