"""aiohttp host: ``python -m aiohttp.web myapp.demo_traffic_app:create_app`` serves the user's
app plus one demo traffic generator, run from the app's ``cleanup_ctx``.

The sample app (tests/apps/aiohttp) is the one aiohttp's docs write, with a startup hook of
its own. Servers run under ``opentelemetry-instrument`` and export to a loopback receiver.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from conftest import load_module
from host_servers import (
    Response,
    Server,
    generators_started,
    sample_project,
    wait_for,
)
from lifespan_hosts import (
    assert_clean_stop,
    assert_demo_telemetry,
    assert_one_generator,
    assert_takeover_after_leader_dies,
)
from otlp_receiver import OtlpHttpReceiver
from test_quality import assert_reads_hand_written, check_python_files

SERVICE = "shop-aiohttp"
SERVE = ["python", "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "{port}"]
# The user also wired the demo into their own code: the wiring file then attaches twice.
PERMANENT_WIRING = "\nfrom myapp.demo_traffic import attach  # noqa: E402\n\nattach(app)\n"


def aiohttp_project(destination: Path, app_target: str = "myapp.main:app") -> Path:
    return sample_project("aiohttp", destination, framework="aiohttp", app_target=app_target)


# --- The real server: python -m aiohttp.web ---------------------------------------------


@dataclass
class Served:
    server: Server
    receiver: OtlpHttpReceiver
    home: Response
    named: Response


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the read-only promises, booted once and asked once."""
    project = aiohttp_project(tmp_path_factory.mktemp("aiohttp_served"))
    with (project / "myapp" / "main.py").open("a") as main:
        main.write(PERMANENT_WIRING)
    receiver = OtlpHttpReceiver().start()
    command = [*SERVE, "myapp.demo_traffic_app:create_app"]
    try:
        with Server.start(command, project, receiver, service_name=SERVICE) as server:
            home = server.wait_until_serving("/")
            named = server.get("/Bob")
            wait_for(receiver, generators_started, "the generator's start")
            yield Served(server, receiver, home, named)
    finally:
        receiver.stop()


def test_users_routes_and_startup_hook_still_answer(served: Served) -> None:
    assert (served.home.status, served.home.body) == (
        200,
        "Hello, Anonymous (startup hook ran: True)",
    )
    assert served.named.body == "Hello, Bob (startup hook ran: True)"


def test_demo_spans_metrics_and_logs_arrive_with_the_apps_service_name(served: Served) -> None:
    assert_demo_telemetry(served.receiver, SERVICE)


def test_one_generator_although_attached_twice(served: Served) -> None:
    assert_one_generator(served.receiver)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_server_and_generator_cleanly(
    signal_number: signal.Signals, tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    project = aiohttp_project(tmp_path)
    command = [*SERVE, "myapp.demo_traffic_app:create_app"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        server.wait_until_serving("/")
        wait_for(otlp_http, generators_started, "the generator's start")
        assert_clean_stop(server, otlp_http, signal_number)
        assert server.process.returncode == 0, server.output()


def test_app_factory_target_serves_with_one_generator(
    tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    project = aiohttp_project(tmp_path, app_target="myapp.main:create_app()")
    command = [*SERVE, "myapp.demo_traffic_app:create_app"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        assert server.wait_until_serving("/").body.endswith("(startup hook ran: True)")
        assert_one_generator(otlp_http)


def test_two_gunicorn_workers_run_one_generator_and_a_standby_takes_over(
    tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    project = aiohttp_project(tmp_path)
    command = ["gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "2"]
    command += ["--worker-class", "aiohttp.GunicornWebWorker", "myapp.demo_traffic_app:app"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        server.wait_until_serving("/")
        assert_one_generator(otlp_http, standing_by=1)
        assert_takeover_after_leader_dies(otlp_http)


# --- The adapter in-process, with aiohttp's own test server ------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    project = aiohttp_project(tmp_path_factory.mktemp("aiohttp_adapter"))
    return load_module(project / "myapp" / "demo_traffic.py")


def starts(caplog: pytest.LogCaptureFixture) -> int:
    return sum(record.getMessage().startswith("Demo traffic started") for record in caplog.records)


def test_attach_starts_nothing_until_the_app_starts(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        adapter.attach(web.Application())
        await asyncio.sleep(0.1)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
    assert starts(caplog) == 0


def test_test_server_runs_one_generator_for_two_attaches_and_stops_it(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = adapter.attach(adapter.attach(web.Application()))

    async def scenario() -> None:
        async with TestClient(TestServer(app)):
            await asyncio.sleep(0.2)
            assert starts(caplog) == 1
            assert "Demo traffic is already running" not in caplog.text
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records].count("Demo traffic stopped") == 1


def test_attaching_a_started_app_says_it_is_too_late(adapter: ModuleType) -> None:
    async def scenario() -> None:
        app = web.Application()
        async with TestClient(TestServer(app)):
            with pytest.raises(RuntimeError, match=r"too late.*before web.run_app"):
                adapter.attach(app)

    asyncio.run(scenario())


def test_bad_setting_turns_the_demo_off_not_the_app(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_TRAFFIC_INTERVAL_MS", "soon")
    app = adapter.attach(web.Application())
    app.router.add_get("/", ok)

    async def scenario() -> str:
        async with TestClient(TestServer(app)) as client:
            return await (await client.get("/")).text()

    assert asyncio.run(scenario()) == "ok"
    assert any("Demo traffic is off" in record.getMessage() for record in caplog.records)


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


# --- What users receive: readable, lint-clean, type-checked --------------------------------


def test_rendered_files_pass_ruff_and_mypy_strict(tmp_path: Path) -> None:
    for variant, app_target in enumerate(["myapp.main:app", "myapp.main:create_app()"]):
        project = aiohttp_project(tmp_path / str(variant), app_target=app_target)
        files = [project / "myapp" / "demo_traffic.py", project / "myapp" / "demo_traffic_app.py"]
        for path in files:
            assert_reads_hand_written(path)
        check_python_files(files, cwd=project, mypy_cache=tmp_path / "mypy")
