"""Flask host: `flask run` (with and without the reloader) and gunicorn, booted for real.

Flask has no startup hook, so the adapter starts the generator with the first request a
process serves: never in the reloader's parent, gunicorn's arbiter or `flask` commands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from host_servers import (
    Server,
    demo_logs,
    hold_a_worker,
    sample_project,
    telemetry_env,
)
from lifespan_hosts import (
    assert_clean_stop,
    assert_demo_telemetry,
    assert_one_generator,
    assert_quiet_prompt_stop,
    assert_takeover_within_two_ticks,
)
from otlp_receiver import OtlpReceiver
from test_quality import assert_reads_hand_written, check_python_files

SERVICE = "shop-web"  # what Server.start names the served app

DEMO_SPANS = {"GET cache", "SELECT users", "process send_email"}  # some of what it plays


def flask_project(tmp_path: Path, app_target: str = "myapp.app:app") -> Path:
    return sample_project("flask", tmp_path, framework="flask", app_target=app_target)


@pytest.mark.parametrize(
    ("reloader", "app_target", "path"),
    [(False, "myapp.app:app", "/"), (True, "myapp.factory:create_app()", "/hello")],
    ids=["plain", "debug-reloader-factory"],
)
def test_flask_run_serves_the_app_with_one_generator(
    tmp_path: Path, otlp_http: OtlpReceiver, reloader: bool, app_target: str, path: str
) -> None:
    project = flask_project(tmp_path, app_target)
    command = ["flask", "--app", "myapp.demo_traffic_app", "run", "--port", "{port}"]
    with Server.start([*command, "--debug"] if reloader else command, project, otlp_http) as server:
        assert server.wait_until_serving(path).status == 200
        if reloader:
            assert server.children(), "the reloader should serve from a child process"
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http)
        if reloader:
            assert_quiet_prompt_stop(server)
        else:
            assert_clean_stop(server, otlp_http, signal.SIGINT)


@pytest.mark.parametrize("preload", [False, True], ids=["workers", "preload"])
def test_gunicorn_two_workers_one_generator_that_moves_when_its_worker_dies(
    tmp_path: Path, otlp_http: OtlpReceiver, preload: bool
) -> None:
    project = flask_project(tmp_path)
    command = ["gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "myapp.demo_traffic_app:app"]
    with Server.start(
        [*command, "--preload"] if preload else command, project, otlp_http
    ) as server:
        assert server.wait_until_serving("/").status == 200
        # Each worker serves a request, so each has its generator: one leads, one stands by.
        held = hold_a_worker(server.port)
        assert server.get("/").status == 200
        held.sendall(b"\r\n")
        assert b" 200 " in held.recv(1024)
        held.close()
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http, standing_by=1)
        assert len(server.children()) == 2
        assert_takeover_within_two_ticks(otlp_http)
        assert_clean_stop(server, otlp_http, signal.SIGTERM)


def test_flask_commands_and_testing_clients_start_nothing(
    tmp_path: Path, otlp_http: OtlpReceiver
) -> None:
    project = flask_project(tmp_path)
    env = {**os.environ, **telemetry_env(otlp_http, SERVICE), "PYTHONPATH": str(project)}
    bin_dir = Path(sys.executable).parent
    routes = subprocess.run(
        [
            bin_dir / "opentelemetry-instrument",
            bin_dir / "flask",
            "--app",
            "myapp.demo_traffic_app",
            "routes",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "hello_world" in routes.stdout
    client_script = """
import threading
from myapp.demo_traffic import attach
from myapp.demo_traffic_app import app

assert attach(app) is app and len(app.before_request_funcs[None]) == 1, "attached twice"

app.testing = True
assert app.test_client().get("/").status_code == 200
assert "demo-traffic" not in {t.name for t in threading.enumerate()}, "started under TESTING"
app.testing = False
assert app.test_client().get("/").status_code == 200
assert "demo-traffic" in {t.name for t in threading.enumerate()}, "a served request starts it"
"""
    subprocess.run(
        [sys.executable, "-c", client_script],
        cwd=project,
        env={**env, "OTEL_SDK_DISABLED": "true"},
        timeout=60,
        check=True,
    )
    otlp_http.wait_for(lambda r: r.log_records(), timeout=1)
    assert not demo_logs(otlp_http)


def test_rendered_flask_files_pass_ruff_and_mypy_strict(tmp_path: Path) -> None:
    # A factory and a custom interval; the attribute form is served by the tests above.
    answers = {"app_target": "myapp.factory:create_app()", "interval_ms": 500}
    project = sample_project("flask", tmp_path, framework="flask", **answers)
    files = [project / "myapp" / "demo_traffic.py", project / "myapp" / "demo_traffic_app.py"]
    for path in files:
        assert_reads_hand_written(path)
    check_python_files(files, cwd=project)
