"""Quart host: ``hypercorn myapp.demo_traffic_app:app`` and ``quart --app ... run`` serve the
user's app plus one demo traffic generator, run from ``before_serving`` / ``after_serving``.

The sample app (tests/apps/quart) is the one Quart's docs write, with a before_serving hook of
its own. Servers run under ``opentelemetry-instrument`` and export to a loopback receiver.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from quart import Quart

from conftest import load_module
from host_servers import (
    Response,
    Server,
    demo_logs,
    demo_warnings,
    generators_started,
    sample_project,
    wait_for,
)
from lifespan_hosts import (
    assert_clean_stop,
    assert_demo_telemetry,
    assert_one_generator,
)
from otlp_receiver import OtlpHttpReceiver
from test_quality import assert_reads_hand_written, check_python_files

SERVICE = "shop-quart"
HYPERCORN = ["hypercorn", "--bind", "127.0.0.1:{port}", "myapp.demo_traffic_app:app"]
QUART_RUN = ["quart", "--app", "myapp.demo_traffic_app", "run", "--host", "127.0.0.1"]
QUART_RUN += ["--port", "{port}"]
# The user also wired the demo into their own code: the wiring file then attaches twice.
PERMANENT_WIRING = "\nfrom myapp.demo_traffic import attach  # noqa: E402\n\nattach(app)\n"


def quart_project(destination: Path, app_target: str = "myapp.app:app") -> Path:
    return sample_project("quart", destination, framework="quart", app_target=app_target)


# --- The real server: hypercorn ---------------------------------------------------------


@dataclass
class Served:
    server: Server
    receiver: OtlpHttpReceiver
    home: Response


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the read-only promises, booted once and asked once."""
    project = quart_project(tmp_path_factory.mktemp("quart_served"))
    with (project / "myapp" / "app.py").open("a") as app_module:
        app_module.write(PERMANENT_WIRING)
    receiver = OtlpHttpReceiver().start()
    try:
        with Server.start(HYPERCORN, project, receiver, service_name=SERVICE) as server:
            home = server.wait_until_serving("/")
            wait_for(receiver, generators_started, "the generator's start")
            yield Served(server, receiver, home)
    finally:
        receiver.stop()


def test_users_routes_and_startup_hook_still_answer(served: Served) -> None:
    assert (served.home.status, served.home.body) == (200, "hello (startup hook ran: True)")


def test_demo_spans_metrics_and_logs_arrive_with_the_apps_service_name(served: Served) -> None:
    assert_demo_telemetry(served.receiver, SERVICE)


def test_one_generator_although_attached_twice(served: Served) -> None:
    assert_one_generator(served.receiver)


# How each server is stopped in practice: a process manager signals hypercorn's main process
# (its spawned worker then shuts down through after_serving), Ctrl-C signals the whole
# foreground group, and `quart run` is a single process.
STOPS = {
    "hypercorn-TERM-main": (HYPERCORN, signal.SIGTERM, False),
    "hypercorn-INT-group": (HYPERCORN, signal.SIGINT, True),
    "quart-run-TERM": (QUART_RUN, signal.SIGTERM, False),
}


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_signal_stops_server_and_generator_cleanly(
    stop: str, tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    command, signal_number, whole_group = STOPS[stop]
    project = quart_project(tmp_path)
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        server.wait_until_serving("/")
        wait_for(otlp_http, generators_started, "the generator's start")
        assert_clean_stop(server, otlp_http, signal_number, main_only=not whole_group)
        assert server.process.returncode == 0, server.output()


def test_quart_run_reloader_restarts_with_exactly_one_generator(
    tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    """Quart's reloader re-executes the serving process; an app factory target, too."""
    project = quart_project(tmp_path, app_target="myapp.app:create_app()")
    with Server.start([*QUART_RUN, "--reload"], project, otlp_http, service_name=SERVICE) as server:
        server.wait_until_serving("/")
        wait_for(otlp_http, generators_started, "the first generator's start")
        edited = project / "myapp" / "app.py"
        later = time.time() + 5
        os.utime(edited, (later, later))
        wait_for(otlp_http, lambda r: len(generators_started(r)) == 2, "the restart's generator")
        home = server.wait_until_serving("/")
        time.sleep(1.0)
        assert home.body == "hello (startup hook ran: True)"
        assert server.children() == []  # the reloader runs in the serving process itself
    assert len(generators_started(otlp_http)) == 2
    assert demo_logs(otlp_http, "Demo traffic is already running") == []
    assert len(demo_warnings(otlp_http)) == 2  # one at each generator's start, never two at once


def test_two_hypercorn_workers_run_one_generator_and_a_standby(
    tmp_path: Path, otlp_http: OtlpHttpReceiver
) -> None:
    """(A worker that dies makes hypercorn stop them all, so there is no takeover to see.)"""
    project = quart_project(tmp_path)
    command = [*HYPERCORN, "--workers", "2"]
    with Server.start(command, project, otlp_http, service_name=SERVICE) as server:
        server.wait_until_serving("/")
        assert_one_generator(otlp_http, standing_by=1)


# --- The adapter in-process, with Quart's own test client and test app --------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    project = quart_project(tmp_path_factory.mktemp("quart_adapter"))
    return load_module(project / "myapp" / "demo_traffic.py")


def messages(caplog: pytest.LogCaptureFixture, prefix: str) -> int:
    return sum(record.getMessage().startswith(prefix) for record in caplog.records)


def sample_app() -> Quart:
    app = Quart(__name__)

    @app.route("/")
    async def hello() -> str:
        return "hello"

    return app


def test_test_client_without_serving_hooks_starts_nothing(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = adapter.attach(sample_app())

    async def scenario() -> bytes:
        response = await app.test_client().get("/")
        await asyncio.sleep(0.1)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return await response.get_data()

    assert asyncio.run(scenario()) == b"hello"
    assert messages(caplog, "Demo traffic started") == 0


def test_serving_twice_runs_one_generator_each_time_for_two_attaches(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = adapter.attach(adapter.attach(sample_app()))

    async def scenario() -> None:
        for serving in (1, 2):
            async with app.test_app() as test_app:
                response = await test_app.test_client().get("/")
                assert await response.get_data() == b"hello"
                await asyncio.sleep(0.2)
                assert messages(caplog, "Demo traffic started") == serving
                assert messages(caplog, "Demo traffic is already running") == 0
            assert messages(caplog, "Demo traffic stopped") == serving
            assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_bad_setting_turns_the_demo_off_not_the_app(
    adapter: ModuleType, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_TRAFFIC_INTERVAL_MS", "soon")
    app = adapter.attach(sample_app())

    async def scenario() -> bytes:
        async with app.test_app() as test_app:
            response = await test_app.test_client().get("/")
            return await response.get_data()

    assert asyncio.run(scenario()) == b"hello"
    assert messages(caplog, "Demo traffic is off") == 1


# --- What users receive: readable, lint-clean, type-checked --------------------------------


def test_rendered_files_pass_ruff_and_mypy_strict(tmp_path: Path) -> None:
    for variant, app_target in enumerate(["myapp.app:app", "myapp.app:create_app()"]):
        project = quart_project(tmp_path / str(variant), app_target=app_target)
        files = [project / "myapp" / "demo_traffic.py", project / "myapp" / "demo_traffic_app.py"]
        for path in files:
            assert_reads_hand_written(path)
        check_python_files(files, cwd=project, mypy_cache=tmp_path / "mypy")
