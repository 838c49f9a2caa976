"""The command line, end to end: `python -m myapp.demo_traffic` in real subprocesses.

Each test runs the rendered module the way a user would (cwd = the project), with the real
SDK and exporters, against the loopback OTLP receivers of ``otlp_receiver.py``. Every wait
is bounded and every process is killed by pid if it outlives its test.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import render
from otlp_receiver import LogRecord, OtlpReceiver

PYTHON = sys.executable
BIN = Path(PYTHON).parent
SIGNALS = ("traces", "metrics", "logs")
ALL_OTLP = {f"OTEL_{signal_name.upper()}_EXPORTER": "otlp" for signal_name in SIGNALS}
DEMO_METRICS = {
    "http.server.request.duration",
    "db.client.operation.duration",
    "job.duration",
}
REQUEST_LOG = re.compile(r"^(GET|POST|PUT|DELETE) /\S* — \d{3} in \d+ms$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of its own: the generator's host-wide lock is per project folder, so no
    generator another test module left running can put these CLIs on standby."""
    return render(tmp_path_factory.mktemp("cli"))


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any OTEL_* or DEMO_TRAFFIC_* setting, plus these."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "DEMO_TRAFFIC_"))
    }
    return {**clean, **variables}


def run_cli(
    project: Path,
    *args: str,
    env: dict[str, str],
    command: tuple[str, ...] = (PYTHON,),
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; ``subprocess.run`` kills it if it outlives ``timeout``."""
    return subprocess.run(
        [*command, "-m", "myapp.demo_traffic", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Task was destroyed" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def console_objects(stdout: str) -> list[dict[str, object]]:
    """The JSON documents the console exporters print one after another."""
    decoder = json.JSONDecoder()
    objects, position = [], 0
    while (position := _skip_space(stdout, position)) < len(stdout):
        document, position = decoder.raw_decode(stdout, position)
        objects.append(document)
    return objects


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def demo_log_records(receiver: OtlpReceiver) -> list[LogRecord]:
    return [record for record in receiver.log_records() if record.scope == "myapp.demo_traffic"]


def received_everything(receiver: OtlpReceiver) -> bool:
    return bool(
        receiver.spans()
        and receiver.metric_names() >= DEMO_METRICS
        and any(REQUEST_LOG.match(str(record.body)) for record in demo_log_records(receiver))
    )


# --- default: the console ---------------------------------------------------------------------


def test_console_is_the_default_and_shows_spans_metrics_and_logs(project: Path) -> None:
    started = time.monotonic()
    result = run_cli(
        project, "--duration", "1", "--interval-ms", "100", "--seed", "1", env=environment()
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    assert 1 <= elapsed < 15  # ran for --duration, then ended
    objects = console_objects(result.stdout)
    spans = [obj for obj in objects if "kind" in obj and "context" in obj]
    metrics = [obj for obj in objects if "resource_metrics" in obj]
    logs = [obj for obj in objects if "severity_text" in obj]
    assert len(spans) >= 20
    assert {span["kind"] for span in spans} >= {"SpanKind.SERVER", "SpanKind.CLIENT"}
    metric_names = {
        metric["name"]
        for document in metrics
        for resource in document["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }
    assert metric_names >= DEMO_METRICS
    assert any(REQUEST_LOG.match(str(log["body"])) for log in logs)
    assert {log["resource"]["attributes"]["service.name"] for log in logs} == {"myapp"}


# --- OTLP ---------------------------------------------------------------------------------------


def assert_demo_telemetry(receiver: OtlpReceiver, service_name: str) -> None:
    assert receiver.wait_for(received_everything, timeout=10), receiver.received
    spans = receiver.spans()
    records = demo_log_records(receiver)
    assert {span.kind for span in spans} >= {"SERVER", "CLIENT", "CONSUMER"}
    assert any(re.fullmatch(r"(GET|POST|PUT|DELETE) /\S*", span.name) for span in spans)
    assert receiver.metric_names() >= DEMO_METRICS
    assert {record.severity_text for record in records} >= {"INFO", "DEBUG", "WARN", "ERROR"}
    # The generator's records arrive with the span they were logged in.
    span_ids = {span.span_id for span in spans}
    correlated = [record for record in records if record.span_id in span_ids]
    assert len(correlated) >= 10
    everything = [*spans, *receiver.metrics(), *receiver.log_records()]
    assert {item.service_name for item in everything} == {service_name}


def test_otlp_over_http_delivers_spans_metrics_and_logs(
    project: Path, otlp_http: OtlpReceiver
) -> None:
    env = environment(**ALL_OTLP, **otlp_http.env(), OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    result = run_cli(project, "--duration", "1", "--interval-ms", "100", env=env)

    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    assert result.stdout == ""  # nothing went to the console exporters
    assert_demo_telemetry(otlp_http, service_name="myapp")
    assert {received.content_encoding for received in otlp_http.received} == {"gzip"}
    assert {received.signal for received in otlp_http.received} == set(SIGNALS)


def test_otlp_over_grpc_honours_service_name(project: Path, otlp_grpc: OtlpReceiver) -> None:
    env = environment(**ALL_OTLP, **otlp_grpc.env(), OTEL_SERVICE_NAME="checkout")
    result = run_cli(project, "--duration", "1", "--interval-ms", "100", env=env)

    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    assert result.stdout == ""
    assert_demo_telemetry(otlp_grpc, service_name="checkout")


@pytest.mark.parametrize("silenced", [("traces",), ("metrics", "logs")])
def test_none_sends_nothing_for_that_signal(
    project: Path, otlp_http: OtlpReceiver, silenced: tuple[str, ...]
) -> None:
    exporters = {
        f"OTEL_{signal_name.upper()}_EXPORTER": "none" if signal_name in silenced else "otlp"
        for signal_name in SIGNALS
    }
    result = run_cli(
        project,
        "--duration",
        "1",
        "--interval-ms",
        "100",
        env=environment(**exporters, **otlp_http.env()),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    sent = set(SIGNALS) - set(silenced)
    assert otlp_http.wait_for(
        lambda receiver: all(receiver.requests(signal_name) for signal_name in sent), timeout=10
    )
    time.sleep(0.2)  # the process has exited; nothing more is on its way
    assert {received.signal for received in otlp_http.received} == sent


# --- stopping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)
def test_signal_finishes_in_flight_work_flushes_and_exits_0(
    project: Path, otlp_http: OtlpReceiver, tmp_path: Path, signal_number: signal.Signals
) -> None:
    env = environment(**ALL_OTLP, **otlp_http.env())
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [PYTHON, "-m", "myapp.demo_traffic", "--interval-ms", "100"],
            cwd=project,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 15
        while "Demo traffic started" not in stderr_path.read_text():
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "the CLI never started"
            time.sleep(0.05)
        time.sleep(0.7)  # jobs last 50-500 ms: some are in flight now
        signalled_ns = time.time_ns()
        signalled = time.monotonic()
        process.send_signal(signal_number)
        returncode = process.wait(timeout=10)
        exit_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    stderr_text = stderr_path.read_text()
    assert returncode == 0, stderr_text
    assert_clean(stderr_text)
    assert exit_s < 5
    assert otlp_http.wait_for(lambda receiver: receiver.spans() and receiver.metrics(), timeout=10)
    # Work that was in flight when the signal came finished, and its spans were exported.
    assert max(span.end_ns for span in otlp_http.spans()) > signalled_ns
    records = demo_log_records(otlp_http)
    started = {
        record.attributes["job_id"]
        for record in records
        if "started" in str(record.body) and "job_id" in record.attributes
    }
    completed = {
        record.attributes["job_id"] for record in records if "completed" in str(record.body)
    }
    assert started, "no job ran"
    assert started == completed
    assert any(record.body == "Demo traffic stopped" for record in records)
    print(f"{signal_number.name}: exit {exit_s:.2f}s after it; {len(started)} jobs completed")


# --- mistakes get one line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "args", "expected"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            (),
            ("OTEL_TRACES_EXPORTER", "use console, otlp or none"),
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            (),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "use http/protobuf or grpc"),
        ),
        ({"DEMO_TRAFFIC_INTERVAL_MS": "fast"}, (), ("DEMO_TRAFFIC_INTERVAL_MS", "whole number")),
        ({"DEMO_TRAFFIC_INTERVAL_MS": "0"}, (), ("DEMO_TRAFFIC_INTERVAL_MS", "at least 1")),
        ({}, ("--interval-ms", "0"), ("--interval-ms", "use 1 or more")),
    ],
    ids=[
        "traces-exporter",
        "otlp-protocol",
        "interval-env-text",
        "interval-env-zero",
        "interval-flag-zero",
    ],
)
def test_invalid_configuration_exits_2_with_one_line(
    project: Path, variables: dict[str, str], args: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    result = run_cli(project, *args, "--duration", "3", env=environment(**variables), timeout=20)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_clean(result.stderr)
    # argparse adds its usage lines for a bad flag; the error itself is one line.
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("usage:", " "))
    ]
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in expected), lines[0]


@pytest.fixture(scope="session")
def sdk_only_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A throwaway venv with only opentelemetry-api and -sdk (this suite's versions), installed
    by pip from the package index: a real environment with no OTLP exporter package.

    Built once per run: xdist workers share the folder above their own and take turns on a
    lock, so the first builds it and the others reuse it.
    """
    shared = tmp_path_factory.getbasetemp().parent
    venv = shared / "sdk-only-venv"
    python = venv / "bin" / "python"
    with (shared / "sdk-only-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "ready").exists():
            build_sdk_only_venv(venv)
            (venv / "ready").touch()
    probe = "import opentelemetry.sdk, importlib.util; "
    probe += "print(importlib.util.find_spec('opentelemetry.exporter'))"
    found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert found.stdout.strip() == "None", "the venv unexpectedly has an exporter package"
    return str(python)


def build_sdk_only_venv(venv: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    packages = [
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("opentelemetry-api", "opentelemetry-sdk")
    ]
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--quiet", "--disable-pip-version-check", *packages),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, f"could not build the SDK-only venv:\n{install.stderr}"


@pytest.mark.parametrize(
    ("protocol", "package"),
    [
        ("http/protobuf", "opentelemetry-exporter-otlp-proto-http"),
        ("grpc", "opentelemetry-exporter-otlp-proto-grpc"),
    ],
)
def test_missing_exporter_package_names_the_pip_install(
    project: Path, sdk_only_python: str, protocol: str, package: str
) -> None:
    env = environment(OTEL_METRICS_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    result = run_cli(project, "--duration", "3", env=env, command=(sdk_only_python,), timeout=20)

    assert result.returncode == 2, result.stderr
    assert_clean(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"pip install {package}" in result.stderr


def test_console_needs_only_the_sdk(project: Path, sdk_only_python: str) -> None:
    result = run_cli(
        project,
        "--duration",
        "0.5",
        "--interval-ms",
        "100",
        env=environment(),
        command=(sdk_only_python,),
    )

    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    assert '"resource_metrics"' in result.stdout


# --- under opentelemetry-instrument -------------------------------------------------------------


@pytest.mark.parametrize(
    "sdk_logging_handler", ["", "true"], ids=["default", "auto-logging-handler"]
)
def test_under_opentelemetry_instrument_uses_its_sdk(
    project: Path, otlp_http: OtlpReceiver, sdk_logging_handler: str
) -> None:
    env = environment(
        **ALL_OTLP,
        **otlp_http.env(),
        OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=sdk_logging_handler,
    )
    instrument = (str(BIN / "opentelemetry-instrument"), PYTHON)
    result = run_cli(
        project, "--duration", "1", "--interval-ms", "100", env=env, command=instrument
    )

    assert result.returncode == 0, result.stderr
    assert_clean(result.stderr)
    assert result.stdout == ""  # the CLI configured no console exporter of its own
    assert otlp_http.wait_for(received_everything, timeout=10), otlp_http.received
    spans, records = otlp_http.spans(), demo_log_records(otlp_http)
    everything = [*spans, *otlp_http.metrics(), *otlp_http.log_records()]
    # Only the SDK that opentelemetry-instrument set up exported: its resource says so, and
    # the CLI's own (service.name "myapp") never ran.
    assert all("telemetry.auto.version" in item.resource for item in everything)
    assert "myapp" not in {item.service_name for item in everything}
    # Each span and each log record arrives exactly once.
    assert len({span.span_id for span in spans}) == len(spans)
    assert len({(record.time_ns, record.body) for record in records}) == len(records)
    assert any(REQUEST_LOG.match(str(record.body)) for record in records)


# --- reproducibility ------------------------------------------------------------------------------


def span_names_in_start_order(receiver: OtlpReceiver, service_name: str) -> list[str]:
    spans = [span for span in receiver.spans() if span.service_name == service_name]
    return [span.name for span in sorted(spans, key=lambda span: span.start_ns)]


def test_seed_repeats_the_span_name_sequence(project: Path, otlp_http: OtlpReceiver) -> None:
    runs = {"first": "42", "again": "42", "other": "43"}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service_name, seed in runs.items():
            env = environment(
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="none",
                OTEL_LOGS_EXPORTER="none",
                OTEL_SERVICE_NAME=service_name,
                # Three at once in one project: each its own generator, not a standby.
                DEMO_TRAFFIC_ONE_PER="process",
                **otlp_http.env(),
            )
            processes[service_name] = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "myapp.demo_traffic",
                    "--duration",
                    "1",
                    "--interval-ms",
                    "50",
                    "--seed",
                    seed,
                ],
                cwd=project,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        assert all(process.wait(timeout=30) == 0 for process in processes.values())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)

    first, again, other = (span_names_in_start_order(otlp_http, name) for name in runs)
    # The runs may differ by a tick at the very end, never in what they chose before it.
    common = min(len(first), len(again)) - 6
    assert common >= 30
    assert first[:common] == again[:common]
    assert first[:common] != other[:common]
