"""Django host: runserver (with its autoreloader), gunicorn (WSGI) and uvicorn (ASGI).

The generator starts from the server entry points that demo_traffic_settings names, never
from AppConfig.ready(), so management commands and the test client start nothing.
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

DEMO_SETTINGS = {"DJANGO_SETTINGS_MODULE": "myapp.demo_traffic_settings"}
BIN = Path(sys.executable).parent


def django_project(tmp_path: Path) -> Path:
    return sample_project("django", tmp_path, framework="django")


def test_runserver_with_its_autoreloader_runs_one_generator(
    tmp_path: Path, otlp_http: OtlpReceiver
) -> None:
    project = django_project(tmp_path)
    command = ["python", "manage.py", "runserver", "127.0.0.1:{port}"]
    with Server.start(command, project, otlp_http, env=DEMO_SETTINGS) as server:
        assert server.wait_until_serving("/polls/").status == 200
        assert server.children(), "the autoreloader should serve from a child process"
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http)
        assert_quiet_prompt_stop(server)


def test_gunicorn_wsgi_two_preloaded_workers_run_one_generator(
    tmp_path: Path, otlp_http: OtlpReceiver
) -> None:
    project = django_project(tmp_path)
    command = ["gunicorn", "-w", "2", "--preload", "-b", "127.0.0.1:{port}"]
    with Server.start([*command, "myapp.demo_traffic_wsgi"], project, otlp_http) as server:
        assert server.wait_until_serving("/polls/").status == 200
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http)
        assert_clean_stop(server, otlp_http, signal.SIGTERM)


def test_uvicorn_asgi_two_workers_one_generator_that_moves_when_its_worker_dies(
    tmp_path: Path, otlp_http: OtlpReceiver
) -> None:
    project = django_project(tmp_path)
    command = ["uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", "{port}"]
    with Server.start([*command, "myapp.demo_traffic_asgi:application"], project, otlp_http) as (
        server
    ):
        assert server.wait_until_serving("/polls/").status == 200
        # No request needed: each worker's lifespan starts a generator; one leads.
        assert_demo_telemetry(otlp_http, SERVICE)
        assert_one_generator(otlp_http, standing_by=1)
        assert_takeover_within_two_ticks(otlp_http)
        assert_clean_stop(server, otlp_http, signal.SIGTERM)


def test_management_commands_and_the_test_client_start_nothing(
    tmp_path: Path, otlp_http: OtlpReceiver
) -> None:
    project = django_project(tmp_path)
    env = {
        **os.environ,
        **telemetry_env(otlp_http, SERVICE),
        **DEMO_SETTINGS,
        "PYTHONPATH": str(project),
    }
    test_client = (
        "import threading\n"
        "from django.test import Client\n"
        "from django.test.utils import setup_test_environment\n"
        "setup_test_environment()\n"
        "assert Client().get('/polls/').status_code == 200\n"
        "assert 'demo-traffic' not in {t.name for t in threading.enumerate()}\n"
    )
    for arguments in (["check"], ["migrate", "--no-input"], ["shell", "-c", test_client]):
        subprocess.run(
            [BIN / "opentelemetry-instrument", BIN / "python", "manage.py", *arguments],
            cwd=project,
            env=env,
            capture_output=True,
            timeout=60,
            check=True,
        )
    # Each command flushed its telemetry on exit; Django's own logs got through, ours did not.
    assert not demo_logs(otlp_http)
    assert not any(span.scope == "myapp.demo_traffic" for span in otlp_http.spans())


def test_rendered_django_files_pass_ruff_and_mypy_strict(tmp_path: Path) -> None:
    # In a subpackage, so the dotted paths in the settings and the relative imports count.
    project = sample_project(
        "django", tmp_path, framework="django", package_dir="myapp/observability"
    )
    settings = project / "myapp" / "settings.py"  # mypy --strict wants its one bare list typed
    settings.write_text(
        settings.read_text().replace("ALLOWED_HOSTS = []", "ALLOWED_HOSTS: list[str] = []")
    )
    package = project / "myapp" / "observability"
    files = [package / f"demo_traffic{suffix}.py" for suffix in ("", "_settings", "_wsgi", "_asgi")]
    for path in files:
        assert_reads_hand_written(path)
    assert 'WSGI_APPLICATION = "myapp.observability.demo_traffic_wsgi.application"' in (
        files[1].read_text()
    )
    check_python_files(files, cwd=project)


@pytest.mark.parametrize("entry", ["wsgi", "asgi"])
def test_entry_modules_point_at_the_demo_settings(tmp_path: Path, entry: str) -> None:
    project = django_project(tmp_path)
    probe = (
        f"import os, myapp.demo_traffic_{entry} as entry\n"
        "from django.conf import settings\n"
        "print(os.environ['DJANGO_SETTINGS_MODULE'], settings.WSGI_APPLICATION)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=project,
        env={**env, "PYTHONPATH": str(project), "OTEL_SDK_DISABLED": "true"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [
        "myapp.demo_traffic_settings",
        "myapp.demo_traffic_wsgi.application",
    ]
