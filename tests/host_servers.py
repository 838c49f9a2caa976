"""Boot real servers in subprocesses, under ``opentelemetry-instrument``, and stop them.

A host test copies a sample app (``tests/apps/<framework>``), renders the template into it,
and serves it on 127.0.0.1 with the telemetry going to a loopback OTLP receiver::

    project = sample_project("flask", tmp_path, framework="flask", app_target="myapp.app:app")
    with Server.start(["flask", "--app", "myapp.demo_traffic_app", "run", "--port", "{port}"],
                      project, otlp_http) as server:
        assert server.get("/").status == 200
        ...

Every server runs in its own process group and is killed (whole group) when the ``with``
block ends, whatever happened; every wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import render
from otlp_receiver import LogRecord, OtlpReceiver

APPS = Path(__file__).resolve().parent / "apps"
VENV_BIN = Path(sys.executable).parent
TICK_MS = 250  # DEMO_TRAFFIC_INTERVAL_MS for served apps: fast enough to see takeovers
DEMO_LOGGER = "myapp.demo_traffic"
# What a clean stop never prints.
UNCLEAN = (
    "Traceback",
    "Exception ignored",
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "Exception in thread",
    "ResourceWarning",
)


def sample_project(app: str, destination: Path, **answers: Any) -> Path:
    """Copy ``tests/apps/<app>`` to ``destination`` and render the template into it."""
    shutil.copytree(APPS / app, destination, dirs_exist_ok=True)
    return render(destination, **answers)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Response:
    status: int
    body: str


@dataclass
class Server:
    """A server process (and its children) serving ``project`` on ``port``."""

    process: subprocess.Popen[str]
    port: int
    output_path: Path
    started_at_ns: int = field(default_factory=time.time_ns)

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        project: Path,
        receiver: OtlpReceiver,
        *,
        service_name: str = "shop-web",
        env: dict[str, str] | None = None,
    ) -> Server:
        """Run ``command`` (``{port}`` filled in) under opentelemetry-instrument in ``project``."""
        port = free_port()
        argv = [str(VENV_BIN / "opentelemetry-instrument")]
        argv += [part.format(port=port) for part in command]
        if not Path(argv[1]).is_absolute() and (VENV_BIN / argv[1]).exists():
            argv[1] = str(VENV_BIN / argv[1])
        environment = {
            **os.environ,
            **telemetry_env(receiver, service_name),
            "PYTHONPATH": str(project),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        }
        for variable in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD", "DJANGO_AUTORELOAD_ENV"):
            environment.pop(variable, None)
        output_path = project / f"server-{port}.log"
        with output_path.open("w") as output:
            process = subprocess.Popen(
                argv,
                cwd=project,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group: reloaders and workers too
            )
        return cls(process, port, output_path)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": "127.0.0.1"})
            response = connection.getresponse()
            return Response(response.status, response.read().decode(errors="replace"))
        finally:
            connection.close()

    def wait_until_serving(self, path: str, timeout: float = 30.0) -> Response:
        """GET ``path`` until the server answers; fail with its output if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited ({self.process.returncode}):\n{self.output()}")
            try:
                return self.get(path)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer on {path}:\n{self.output()}") from None
                time.sleep(0.1)

    def stop(self, signal_number: int, timeout: float = 15.0) -> float:
        """Send ``signal_number`` to the server's process group; return the seconds it took."""
        started = time.monotonic()
        with _no_such_process():
            os.killpg(self.process.pid, signal_number)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout}s after {signal_number}") from None
        # Reloader children and workers get the signal too; give them the same bound.
        deadline = started + timeout
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(self.process.pid), "a child outlived the server"
        return time.monotonic() - started

    def kill(self) -> None:
        with _no_such_process():
            os.killpg(self.process.pid, signal.SIGKILL)
        with _no_such_process(), _suppress_timeout():
            self.process.wait(5)

    def children(self) -> list[int]:
        """Process ids of the server's direct children (reloader child, workers)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []


def telemetry_env(receiver: OtlpReceiver, service_name: str) -> dict[str, str]:
    """What opentelemetry-instrument needs to send all three signals, promptly, to ``receiver``."""
    return {
        **receiver.env(),
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "DEMO_TRAFFIC_INTERVAL_MS": str(TICK_MS),
    }


def demo_logs(receiver: OtlpReceiver, prefix: str = "") -> list[LogRecord]:
    """Records of the generator's logger whose message starts with ``prefix``."""
    return [
        record
        for record in receiver.log_records()
        if record.scope == DEMO_LOGGER and str(record.body).startswith(prefix)
    ]


def generators_started(receiver: OtlpReceiver) -> list[LogRecord]:
    return demo_logs(receiver, "Demo traffic started")


def demo_warnings(receiver: OtlpReceiver) -> list[LogRecord]:
    """The catalog's periodic warnings (the first of each generator comes at its start)."""
    catalog = (
        "Connection pool running low",
        "Slow query detected",
        "Rate limit approaching",
        "Memory usage elevated",
    )
    return [record for record in demo_logs(receiver) if str(record.body) in catalog]


def wait_for(
    receiver: OtlpReceiver,
    predicate: Callable[[OtlpReceiver], object],
    what: str,
    timeout: float = 20.0,
) -> None:
    assert receiver.wait_for(predicate, timeout), f"timed out waiting for {what}"


def hold_a_worker(port: int) -> socket.socket:
    """Open a connection and send half a request: a sync worker is busy until it is closed.

    With every request on such a worker's socket queued behind it, the next request goes to
    another worker, so a test can make each of two workers serve one.
    """
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return held


def flock_holder(lock_file: str) -> int | None:
    """The process id that holds an ``flock`` on ``lock_file``, from /proc/locks."""
    inode = os.stat(lock_file).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
            return int(fields[-4])
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; count only processes that still run.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class _no_such_process:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return isinstance(value, ProcessLookupError | ChildProcessError)


class _suppress_timeout:  # noqa: N801
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return isinstance(value, subprocess.TimeoutExpired)


def lines_without(output: str, markers: Sequence[str] = UNCLEAN) -> Iterator[str]:
    """Lines of ``output`` that show an unclean stop."""
    return (line for line in output.splitlines() if any(marker in line for marker in markers))
