"""Litestar host: ``litestar --app myapp.demo_traffic_app:app run`` serves the user's app,
unchanged, plus demo traffic started and stopped by the app's startup and shutdown hooks."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from host_servers import Server, sample_project
from lifespan_hosts import (
    assert_clean_stop,
    assert_demo_telemetry,
    assert_one_generator,
    run_script,
)
from otlp_receiver import OtlpReceiver
from test_quality import assert_reads_hand_written, check_python_files

SERVICE = "shop-litestar"
RUN = ["litestar", "--app", "myapp.demo_traffic_app:app", "run", "--host", "127.0.0.1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_project(
        "litestar",
        tmp_path_factory.mktemp("litestar") / "project",
        framework="litestar",
        app_target="myapp.app:app",
    )


def test_litestar_run_serves_the_app_and_its_lifespan_with_demo_traffic(
    project: Path, otlp_http: OtlpReceiver
) -> None:
    with Server.start(
        [*RUN, "--port", "{port}"], project, otlp_http, service_name=SERVICE
    ) as server:
        response = server.wait_until_serving("/")
        assert response.status == 200
        assert response.body == '{"hello":"world","lifespan_ran":true}'
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http)
        assert_clean_stop(server, otlp_http, signal.SIGTERM)


def test_two_workers_run_one_generator(project: Path, otlp_http: OtlpReceiver) -> None:
    command = [*RUN, "--port", "{port}", "--web-concurrency", "2"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        assert server.wait_until_serving("/").status == 200
        assert_one_generator(otlp_http, standing_by=1)
        assert_clean_stop(server, otlp_http, signal.SIGINT)


def test_attach_runs_after_the_apps_lifespan_and_starts_one_generator(project: Path) -> None:
    output = run_script(
        project,
        """
        from litestar.testing import TestClient

        from myapp import demo_traffic
        from myapp.app import app

        demo_traffic.attach(app)
        demo_traffic.attach(app)  # twice: still one generator

        # A test client used without its lifespan starts nothing.
        assert TestClient(app).get("/").json() == {"hello": "world", "lifespan_ran": False}
        assert started() == 0

        with TestClient(app) as client:
            assert client.get("/").json() == {"hello": "world", "lifespan_ran": True}
            wait_until(lambda: started() == 1)
            time.sleep(0.3)
        assert started() == 1 and stopped() == 1
        assert standing_by() == 0  # a second generator would have stood by
        """,
    )
    assert output.index("myapp's own lifespan started") < output.index("Demo traffic started")


def test_lifespan_in_the_constructor_keeps_the_apps_own(project: Path) -> None:
    output = run_script(
        project,
        """
        from litestar import Litestar
        from litestar.testing import TestClient

        from myapp import demo_traffic
        from myapp.app import index, lifespan

        app = Litestar(route_handlers=[index], lifespan=[lifespan, demo_traffic.lifespan])
        demo_traffic.attach(app)  # as well: still one generator

        with TestClient(app) as client:
            assert client.get("/").json() == {"hello": "world", "lifespan_ran": True}
            wait_until(lambda: started() == 1)
            time.sleep(0.3)
        assert started() == 1 and stopped() == 1
        assert standing_by() == 0  # a second generator would have stood by
        """,
    )
    assert output.index("myapp's own lifespan started") < output.index("Demo traffic started")
    assert output.index("Demo traffic stopped") < output.index("myapp's own lifespan ended")


def test_rendered_files_read_as_hand_written_and_pass_ruff_and_mypy_strict(project: Path) -> None:
    files = [project / "myapp" / "demo_traffic.py", project / "myapp" / "demo_traffic_app.py"]
    for path in files:
        assert_reads_hand_written(path)
    check_python_files(files, cwd=project)
