"""FastAPI host: ``uvicorn myapp.observability.demo_traffic_app:app`` serves the user's app,
plus demo traffic started and stopped by the app's lifespan."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from host_servers import Server, demo_logs, generators_started, sample_project, wait_for
from lifespan_hosts import (
    assert_clean_stop,
    assert_demo_telemetry,
    assert_one_generator,
    assert_takeover_after_leader_dies,
    run_script,
)
from otlp_receiver import OtlpReceiver
from test_quality import assert_reads_hand_written, check_python_files

SERVICE = "shop-fastapi"


def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_project(
        "fastapi",
        tmp_path_factory.mktemp("fastapi") / "project",
        framework="fastapi",
        app_target="myapp.main:app",
        package_dir="myapp/observability",  # generated files in a subpackage of the app
    )


def test_uvicorn_serves_the_app_and_its_lifespan_with_demo_traffic(
    project: Path, otlp_http: OtlpReceiver
) -> None:
    command = ["uvicorn", "myapp.observability.demo_traffic_app:app", "--port", "{port}"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        response = server.wait_until_serving("/")
        assert response.status == 200
        assert '"lifespan_ran":true' in response.body
        assert server.get("/items/42").body == '{"item_id":42}'
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http)
        assert_clean_stop(server, otlp_http, signal.SIGTERM)


def test_two_uvicorn_workers_run_one_generator_and_a_standby_takes_over(
    project: Path, otlp_http: OtlpReceiver
) -> None:
    command = [
        "uvicorn",
        "myapp.observability.demo_traffic_app:app",
        "--port",
        "{port}",
        "--workers",
        "2",
    ]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        assert server.wait_until_serving("/").status == 200
        assert_one_generator(otlp_http, standing_by=1)
        assert_takeover_after_leader_dies(otlp_http)
        # uvicorn replaces the killed worker; a Ctrl-C while the replacement is still
        # importing would interrupt Python's own start-up, which is not ours to test.
        wait_until(
            lambda: server.output().count("Application startup complete.") >= 3,
            "uvicorn to replace the killed worker",
            timeout=30,
        )
        assert_clean_stop(server, otlp_http, signal.SIGINT)


def test_uvicorn_reload_runs_one_generator_in_the_serving_child(
    project: Path, otlp_http: OtlpReceiver
) -> None:
    command = ["uvicorn", "myapp.observability.demo_traffic_app:app", "--port", "{port}"]
    command += ["--reload", "--reload-dir", str(project / "myapp")]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        assert server.wait_until_serving("/").status == 200
        assert_one_generator(otlp_http)
        os.utime(project / "myapp" / "main.py")  # a code change: uvicorn restarts its child
        wait_for(
            otlp_http,
            lambda r: len(generators_started(r)) == 2,
            "the restarted child's generator",
            timeout=20,
        )
        # The old child's generator stopped before the new one started: never two at once.
        stops = demo_logs(otlp_http, "Demo traffic stopped")
        assert len(stops) == 1
        assert stops[0].time_ns < generators_started(otlp_http)[1].time_ns
        assert_clean_stop(server, otlp_http, signal.SIGINT)
        assert len(demo_logs(otlp_http, "Demo traffic stopped")) == 2


def test_attach_keeps_the_apps_lifespan_and_starts_one_generator_however_often_attached(
    project: Path,
) -> None:
    output = run_script(
        project,
        """
        from fastapi.testclient import TestClient

        from myapp.observability import demo_traffic
        from myapp.main import app

        demo_traffic.attach(app)
        demo_traffic.attach(app)  # twice: still one generator

        # A test client used without its lifespan starts nothing.
        assert TestClient(app).get("/").json() == {"Hello": "World", "lifespan_ran": False}
        assert started() == 0

        with TestClient(app) as client:
            assert client.get("/").json() == {"Hello": "World", "lifespan_ran": True}
            wait_until(lambda: started() == 1)
            time.sleep(0.3)
        assert started() == 1 and stopped() == 1
        assert standing_by() == 0  # a second generator would have stood by
        """,
    )
    assert output.index("myapp's own lifespan started") < output.index("Demo traffic started")
    assert output.index("Demo traffic stopped") < output.index("myapp's own lifespan ended")


def test_lifespan_argument_and_attach_together_still_start_one_generator(project: Path) -> None:
    run_script(
        project,
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        from myapp.observability import demo_traffic

        app = FastAPI(lifespan=demo_traffic.lifespan)
        demo_traffic.attach(app)

        @app.get("/")
        async def root() -> dict[str, str]:
            return {"ok": "yes"}

        with TestClient(app) as client:
            assert client.get("/").json() == {"ok": "yes"}
            wait_until(lambda: started() == 1)
            time.sleep(0.3)
        assert started() == 1 and stopped() == 1
        assert standing_by() == 0  # a second generator would have stood by
        """,
    )


def test_rendered_files_read_as_hand_written_and_pass_ruff_and_mypy_strict(project: Path) -> None:
    package = project / "myapp" / "observability"
    files = [package / "demo_traffic.py", package / "demo_traffic_app.py"]
    for path in files:
        assert_reads_hand_written(path)
    # The user's module sorts before the generated one, as isort wants it.
    assert (
        "from myapp.main import app as your_app\nfrom myapp.observability" in files[1].read_text()
    )
    check_python_files(files, cwd=project)
