"""What every lifespan host (FastAPI, Starlette, Litestar) must show once its server runs:
the checks themselves, shared by ``test_host_<framework>.py``.

Servers come from ``host_servers``; telemetry from the loopback receivers in
``otlp_receiver``. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from host_servers import (
    DEMO_LOGGER,
    TICK_MS,
    Server,
    demo_logs,
    demo_warnings,
    flock_holder,
    generators_started,
    lines_without,
    wait_for,
)
from otlp_receiver import OtlpReceiver

DEMO_METRICS = {
    "http.server.request.duration",
    "db.client.operation.duration",
    "job.duration",
    "cache.operations",
}
# A second generator would have said so within this long of the first.
SETTLE_S = 4 * TICK_MS / 1000 + 1.0
STOP_WITHIN_S = 5.0


def assert_demo_telemetry(receiver: OtlpReceiver, service_name: str) -> None:
    """Demo spans, metrics and logs arrive, each under the app's ``service.name``."""

    def arrived(receiver: OtlpReceiver) -> bool:
        spans = [span for span in receiver.spans() if span.scope == DEMO_LOGGER]
        metrics = {m.name for m in receiver.metrics() if m.scope == DEMO_LOGGER}
        logs = [record for record in demo_logs(receiver) if record.trace_id]
        return bool(spans and logs and metrics >= DEMO_METRICS)

    wait_for(receiver, arrived, "demo spans, metrics and logs", timeout=20)
    spans = [span for span in receiver.spans() if span.scope == DEMO_LOGGER]
    assert {span.service_name for span in spans} == {service_name}
    assert all(not span.parent_span_id for span in spans), "a demo span inherited a parent"
    metrics = [m for m in receiver.metrics() if m.scope == DEMO_LOGGER]
    assert {m.service_name for m in metrics} == {service_name}
    assert {record.service_name for record in demo_logs(receiver)} == {service_name}


def assert_one_generator(receiver: OtlpReceiver, standing_by: int = 0) -> None:
    """One 'Demo traffic started' and one first warning, however many workers serve;
    ``standing_by`` other workers say they stand by."""
    wait_for(receiver, generators_started, "a generator to start", timeout=20)
    wait_for(
        receiver,
        lambda r: len(demo_logs(r, "Demo traffic is already running")) >= standing_by,
        f"{standing_by} standby generator(s)",
        timeout=20,
    )
    time.sleep(SETTLE_S)
    started = generators_started(receiver)
    assert len(started) == 1, [record.body for record in started]
    first_beat_ns = started[0].time_ns + 5_000_000_000  # the next warning comes at 10 s
    at_start = [w for w in demo_warnings(receiver) if w.time_ns < first_beat_ns]
    assert len(at_start) == 1, [record.body for record in at_start]
    assert len(demo_logs(receiver, "Demo traffic is already running")) == standing_by


def assert_takeover_after_leader_dies(receiver: OtlpReceiver) -> None:
    """Kill the worker that holds the host lock: a standby starts generating within two ticks
    (plus the time for its first records to be exported)."""
    standby = demo_logs(receiver, "Demo traffic is already running")[0]
    lock_file = str(standby.attributes["lock_file"])
    leader = flock_holder(lock_file)
    assert leader is not None, f"nobody holds {lock_file}"
    os.kill(leader, signal.SIGKILL)
    wait_for(
        receiver,
        lambda r: len(generators_started(r)) == 2,
        "a standby worker to take over",
        timeout=2 * TICK_MS / 1000 + 5,
    )
    new_leader = flock_holder(lock_file)
    assert new_leader not in (None, leader)


def assert_takeover_within_two_ticks(receiver: OtlpReceiver) -> None:
    killed_at = time.time_ns()
    assert_takeover_after_leader_dies(receiver)
    took_over_at = generators_started(receiver)[1].time_ns
    assert (took_over_at - killed_at) / 1e9 < 2 * TICK_MS / 1000 + 0.3


def assert_quiet_prompt_stop(server: Server) -> None:
    """Ctrl-C with a reloader: its parent SIGKILLs the serving child 0.25 s later (that is
    what subprocess.call does on KeyboardInterrupt), often before the generator's last
    records are exported, so only a prompt exit with nothing unclean printed is checked."""
    took = server.stop(signal.SIGINT)
    assert took < 5, f"took {took:.1f} s to stop:\n{server.output()}"
    assert not list(lines_without(server.output())), server.output()


def assert_clean_stop(
    server: Server,
    receiver: OtlpReceiver,
    signal_number: int,
    *,
    main_only: bool = False,
    stop_record: bool = True,
) -> None:
    """The signal stops the server promptly, the generator says it stopped, nothing leaks.

    Without ``stop_record`` the generator's last words are not required: for servers that
    may kill a worker before its shutdown hooks finish.

    The signal goes to the server's whole process group (Ctrl-C in a terminal), or with
    ``main_only`` to its main process alone (what ``docker stop`` or ``kill PID`` do).
    """
    if main_only:
        started = time.monotonic()
        os.kill(server.process.pid, signal_number)
        try:
            server.process.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running:\n{server.output()}") from None
        took = time.monotonic() - started
    else:
        took = server.stop(signal_number)
    assert took < STOP_WITHIN_S, f"took {took:.1f} s to stop:\n{server.output()}"
    if stop_record:
        wait_for(receiver, lambda r: demo_logs(r, "Demo traffic stopped"), "the stop record", 15)
    unclean = list(lines_without(server.output()))
    assert not unclean, server.output()


SCRIPT_PRELUDE = """\
import logging
import sys
import time

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
records = []
logging.getLogger("myapp.demo_traffic").addHandler(
    type("Keep", (logging.Handler,), {"emit": lambda self, record: records.append(record)})()
)


def started() -> int:
    return sum(r.getMessage().startswith("Demo traffic started") for r in records)


def stopped() -> int:
    return sum(r.getMessage() == "Demo traffic stopped" for r in records)


def standing_by() -> int:
    return sum(r.getMessage().startswith("Demo traffic is already running") for r in records)


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)

"""


def run_script(project: Path, body: str, timeout: float = 30.0) -> str:
    """Run ``body`` (with the prelude's ``started()``, ``stopped()``, ``standing_by()`` and
    ``wait_until()``) in a fresh interpreter in ``project``; it must exit 0 and print
    nothing unclean."""
    script = project / f"check_{time.monotonic_ns()}.py"
    script.write_text(SCRIPT_PRELUDE + textwrap.dedent(body))
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "DEMO_TRAFFIC_INTERVAL_MS": str(TICK_MS),
        "PYTHONDEVMODE": "1",  # unclosed resources and never-awaited coroutines warn
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not list(lines_without(output)), output
    return output
