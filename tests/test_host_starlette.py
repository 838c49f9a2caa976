"""Starlette host: ``hypercorn myapp.demo_traffic_app:app`` serves the user's app (built by
its factory, with a pure ASGI middleware in its stack), unchanged, plus demo traffic."""

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

SERVICE = "shop-starlette"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_project(
        "starlette",
        tmp_path_factory.mktemp("starlette") / "project",
        framework="starlette",
        app_target="myapp.main:create_app()",
    )


def test_hypercorn_serves_the_app_and_its_lifespan_with_demo_traffic(
    project: Path, otlp_grpc: OtlpReceiver
) -> None:
    command = ["hypercorn", "myapp.demo_traffic_app:app", "--bind", "127.0.0.1:{port}"]
    with Server.start(command, project, otlp_grpc, service_name=SERVICE) as server:
        response = server.wait_until_serving("/")
        assert response.status == 200
        assert response.body == '{"hello":"world","lifespan_ran":true}'
        assert_demo_telemetry(otlp_grpc, SERVICE)
        assert_one_generator(otlp_grpc)
        # hypercorn serves from a worker process that SIGTERM kills outright: the signal is
        # for the main process, which tells its workers to shut down gracefully.
        assert_clean_stop(server, otlp_grpc, signal.SIGTERM, main_only=True)


def test_two_hypercorn_workers_run_one_generator(project: Path, otlp_http: OtlpReceiver) -> None:
    command = [
        "hypercorn", "myapp.demo_traffic_app:app", "--bind", "127.0.0.1:{port}", "--workers", "2"
    ]  # fmt: skip
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        assert server.wait_until_serving("/").status == 200
        assert_one_generator(otlp_http, standing_by=1)
        # Ctrl-C: hypercorn's workers ignore SIGINT and stop when the main process says so.
        # As soon as one worker has exited, hypercorn terminates the others, so the leader,
        # still finishing its in-flight work, may die before its last records are sent.
        assert_clean_stop(server, otlp_http, signal.SIGINT, stop_record=False)


def test_attach_through_plain_asgi_middleware_keeps_lifespan_state_and_headers(
    project: Path,
) -> None:
    output = run_script(
        project,
        """
        from starlette.testclient import TestClient

        from myapp import demo_traffic
        from myapp.main import ServerHeaderMiddleware, create_app

        # The app wrapped in plain ASGI middleware, as a deployment might hand it over.
        wrapped = demo_traffic.attach(ServerHeaderMiddleware(create_app()))
        demo_traffic.attach(wrapped)  # twice: still one generator

        # A test client used without its lifespan starts nothing.
        assert TestClient(wrapped).get("/").json() == {"hello": "world", "lifespan_ran": False}
        assert started() == 0

        with TestClient(wrapped) as client:
            response = client.get("/")
            assert response.json() == {"hello": "world", "lifespan_ran": True}
            assert response.headers.get_list("x-served-by") == ["myapp", "myapp"]
            wait_until(lambda: started() == 1)
            time.sleep(0.3)
        assert started() == 1 and stopped() == 1
        assert standing_by() == 0  # a second generator would have stood by
        """,
    )
    assert output.index("myapp's own lifespan started") < output.index("Demo traffic started")
    assert output.index("Demo traffic stopped") < output.index("myapp's own lifespan ended")


def test_attach_says_what_it_needs_when_given_something_else(project: Path) -> None:
    run_script(
        project,
        """
        from myapp import demo_traffic

        async def bare_asgi_app(scope, receive, send) -> None:
            pass

        try:
            demo_traffic.attach(bare_asgi_app)
        except TypeError as error:
            assert "needs a Starlette app or ASGI middleware around one" in str(error), error
        else:
            raise AssertionError("attach() accepted an app without a router")
        """,
    )


def test_rendered_files_read_as_hand_written_and_pass_ruff_and_mypy_strict(project: Path) -> None:
    files = [project / "myapp" / "demo_traffic.py", project / "myapp" / "demo_traffic_app.py"]
    for path in files:
        assert_reads_hand_written(path)
    check_python_files(files, cwd=project)
