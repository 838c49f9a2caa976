"""Run a real Prometheus server on 127.0.0.1 and ask it PromQL, as a dashboard would.

The served sample apps expose their OpenTelemetry metrics with
``opentelemetry-exporter-prometheus`` (``OTEL_METRICS_EXPORTER=prometheus`` under
``opentelemetry-instrument``); Prometheus scrapes them every second::

    with Prometheus.start({"fastapi": metrics_port}, tmp_path) as prometheus:
        prometheus.wait_for_scrapes(10)
        prometheus.values("sum by (job) (rate(job_duration_seconds_count[10s]))", "job")

The binary is Debian's ``prometheus`` package (``.ci/run`` installs it); the package's own
service is never used: each run gets its own process, ephemeral port and temporary storage,
and is stopped by its process id, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_servers import Server, free_port

SCRAPE_INTERVAL_S = 1
INSTALL_HINT = "apt-get install -y prometheus  (.ci/run installs it; see the README)"


def prometheus_exporter_env(port: int) -> dict[str, str]:
    """What a served app needs to expose its metrics to Prometheus on 127.0.0.1:``port``."""
    return {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }


def wait_until_exposed(
    server: Server, port: int, metric: str, scope: str, timeout: float = 30.0
) -> str:
    """GET the app's ``/metrics`` on ``port`` until it has a ``metric`` series of ``scope``."""
    needle = re.compile(rf'^{metric}\{{[^}}]*otel_scope_name="{re.escape(scope)}"', re.MULTILINE)
    deadline = time.monotonic() + timeout
    page = ""
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited ({server.process.returncode}):\n{server.output()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                page = response.read().decode()
        except OSError:
            pass
        if needle.search(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {metric} of {scope} on :{port}/metrics after {timeout}s:\n{page[-2000:]}\n"
                f"{server.output()}"
            )
        time.sleep(0.2)


def _config(targets: dict[str, int]) -> str:
    lines = [
        "global:",
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s",
        f"  scrape_timeout: {SCRAPE_INTERVAL_S}s",
        f"  evaluation_interval: {SCRAPE_INTERVAL_S}s",
        "scrape_configs:",
    ]
    for job, port in targets.items():
        lines += [
            f"  - job_name: {json.dumps(job)}",
            "    static_configs:",
            f'      - targets: ["127.0.0.1:{port}"]',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Prometheus:
    """A Prometheus process scraping ``targets`` (scrape job name -> port on 127.0.0.1)."""

    process: subprocess.Popen[bytes]
    port: int
    output_path: Path

    @classmethod
    def start(cls, targets: dict[str, int], folder: Path) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError(
                f"the prometheus binary is not on PATH; install it: {INSTALL_HINT}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(_config(targets))
        port = free_port()
        output_path = folder / "prometheus.log"
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        prometheus = cls(process, port, output_path)
        try:
            prometheus.wait_until_ready()
        except BaseException:
            prometheus.stop()
            raise
        return prometheus

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited ({self.process.returncode}):\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def api(self, endpoint: str, **parameters: str | float) -> Any:
        """GET ``/api/v1/<endpoint>``; return its ``data`` (fails on any error status)."""
        query = urllib.parse.urlencode(parameters)
        address = f"{self.url}/api/v1/{endpoint}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(address, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{address}: {error.code} {error.read().decode()}") from None
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant vector: ``[{"metric": {label: value}, "value": [time, "number"]}, …]``."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, promql: str, label: str) -> dict[str, float]:
        """An instant vector as ``{value of label: number}``."""
        return {
            sample["metric"].get(label, ""): float(sample["value"][1])
            for sample in self.query(promql)
        }

    def scalar(self, promql: str) -> float:
        """The single number an aggregated query gives (fails if it gives none)."""
        samples = self.query(promql)
        assert len(samples) == 1, f"{promql} gave {samples}"
        return float(samples[0]["value"][1])

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """A range matrix: ``[{"metric": {…}, "values": [[time, "number"], …]}, …]``."""
        data = self.api("query_range", query=promql, start=start, end=end, step=step)
        assert data["resultType"] == "matrix", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> dict[str, str]:
        """Scrape job name -> health ("up", "down" or "unknown") of its target."""
        active = self.api("targets", state="active")["activeTargets"]
        return {target["labels"]["job"]: target["health"] for target in active}

    def wait_for_scrapes(self, count: int, timeout: float = 45.0) -> None:
        """Wait until every target has been scraped successfully ``count`` times."""
        deadline = time.monotonic() + timeout
        window = f"{count * SCRAPE_INTERVAL_S + 30}s"
        while True:
            successes = self.values(f"sum by (job) (sum_over_time(up[{window}]))", "job")
            jobs = self.targets()
            if jobs and all(successes.get(job, 0) >= count for job in jobs):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout}s, successful scrapes per job: {successes}, "
                    f"targets: {jobs}\n{self.output()}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes and exits), SIGKILL if it has not within ``timeout``."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
