"""Render the template, run every measurement in a fresh process, print one table.

    scripts/bench            # the full run, about four minutes on an idle 2-core machine
    scripts/bench --quick    # shorter runs, for trying a change
    scripts/bench --profile  # pyinstrument over the engine at peak rate and over the floor

Every figure compares two things measured in the same run (see BENCHMARKS.md for what
each measurement does and why), so a slower or busier machine moves both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MEASURE = Path(__file__).resolve().parent / "measure.py"


def render(destination: Path) -> Path:
    import copier

    (destination / "myapp").mkdir(parents=True)
    (destination / "myapp" / "__init__.py").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DirtyLocalWarning while developing the template
        copier.run_copy(
            str(REPO),
            destination,
            data={"app_name": "myapp"},
            defaults=True,
            quiet=True,
            vcs_ref="HEAD",
        )
    return destination


def measure(name: str, project: Path, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(MEASURE), name, str(project), str(seconds)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"{name} failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> list[str]:
    cpu = "unknown"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("opentelemetry-api", "opentelemetry-sdk", "copier", "pyinstrument")
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        (
            f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu}; "
            f"load average before the run {load}"
        ),
        (
            f"python: {platform.python_implementation()} {platform.python_version()} "
            f"on {platform.system()} {platform.release()}"
        ),
        f"packages: {packages}",
    ]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(r: dict[str, dict[str, Any]]) -> list[str]:
    o, t, c, i = r["overhead"], r["throughput"], r["default_rate"], r["idle_sdk"]
    tm, s, imp = r["timing"], r["stop_latency"], r["import_cost"]
    m, ms = r["memory"], r["memory_slow_exporter"]
    net = c["cpu_share"] - i["cpu_share"]
    rows = [
        (
            "CPU per activity, engine (10 ms tick, real waits) vs SDK floor at the same pace",
            f"{o['engine_us']:.0f} µs vs {o['floor_us']:.0f} µs",
            f"{o['ratio']:.2f}×",
            "≤ 1.3×",
            verdict(o["ratio"] <= 1.3),
        ),
        (
            "peak activities/s on one core, no waits: engine vs SDK floor's max",
            f"{t['engine_per_s']:.0f}/s vs {t['floor_per_s']:.0f}/s",
            f"{t['ratio']:.2f}×",
            "≥ 0.8×",
            verdict(t["ratio"] >= 0.8),
        ),
        (
            (
                f"CPU at the default rate, batch processors, {c['wall_s']:.0f} s "
                "(net of an idle SDK run beside it)"
            ),
            f"{c['cpu_share']:.3%} of a core (idle SDK {i['cpu_share']:.3%})",
            f"{net:.3%} net",
            "< 0.2 %",
            verdict(c["cpu_share"] < 0.002),
        ),
        (
            (
                f"tick lateness over {tm['ticks']} ticks at 10 ms "
                f"({tm['missed_beats']} beats missed and skipped)"
            ),
            f"mean {tm['mean_ms']:.2f} ms, p99 {tm['p99_ms']:.2f} ms",
            (
                f"ticks 2–101: {tm['first_100_mean_ms']:.2f} ms, "
                f"901–1000: {tm['last_100_mean_ms']:.2f} ms"
            ),
            "mean < 1 ms, no drift",
            verdict(tm["mean_ms"] < 1 and tm["last_100_mean_ms"] <= tm["first_100_mean_ms"] + 0.5),
        ),
        (
            "stop() latency, idle (thread host / event-loop host)",
            f"p99 {s['idle_thread_p99_ms']:.1f} ms / {s['idle_loop_p99_ms']:.1f} ms",
            f"{max(s['idle_thread_p99_ms'], s['idle_loop_p99_ms']) / 50:.2f}× the bound",
            "< 50 ms",
            verdict(max(s["idle_thread_p99_ms"], s["idle_loop_p99_ms"]) < 50),
        ),
        (
            f"stop() latency, ~{s['busy_in_flight_median']:.0f} activities in flight",
            f"p99 {s['busy_p99_ms']:.0f} ms (median {s['busy_median_ms']:.0f} ms)",
            "≤ longest activity (500 ms) + grace",
            "bounded by STOP_GRACE_S (1 s)",
            verdict(s["busy_p99_ms"] < 1000),
        ),
        (
            f"traced memory growth over {m['activities']:,} activities after warm-up",
            f"{m['growth_bytes'] / 1e6:.3f} MB",
            f"{m['growth_bytes'] / 1e6:.3f} / 1 MB",
            "< 1 MB",
            verdict(m["growth_bytes"] < 1e6),
        ),
        (
            f"… with an exporter taking {ms['export_delay_s'] * 1000:.0f} ms per batch",
            f"{ms['growth_bytes'] / 1e6:.3f} MB",
            f"{ms['growth_bytes'] / 1e6:.3f} / 1 MB",
            "< 1 MB",
            verdict(ms["growth_bytes"] < 1e6),
        ),
        (
            "import of the generated module once opentelemetry-api is imported",
            f"+{imp['module_ms']:.1f} ms (the API: {imp['api_ms']:.1f} ms)",
            f"{imp['ratio']:.2f}× the API's own import",
            "(reported)",
            "—",
        ),
    ]
    header = ("measurement", "figures", "ratio", "goal", "verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--profile", action="store_true", help="profile instead of measuring")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    env = {"BENCH_MEMORY_ACTIVITIES": "20000"} if args.quick else {}
    for line in machine():
        print(line)
    with tempfile.TemporaryDirectory(prefix="demo-traffic-bench-") as folder:
        project = render(Path(folder))
        if args.profile:
            reports = measure("profile", project, 10 * scale, env)
            for name, text in reports.items():
                print(f"\n--- pyinstrument: {name} ---\n{text}")
            return 0
        results: dict[str, dict[str, Any]] = {}
        print("import cost …", flush=True)
        results["import_cost"] = measure("import_cost", project, 0, env)
        for name, seconds in (
            ("overhead", 12),
            ("throughput", 9),
            ("timing", 0),
            ("stop_latency", 0),
        ):
            print(f"{name} …", flush=True)
            results[name] = measure(name, project, seconds * scale, env)
        # Two processes side by side on two cores: each pair shares the machine alike.
        for pair, seconds in (
            (("memory", "memory_slow_exporter"), 0),
            (("default_rate", "idle_sdk"), 60),
        ):
            print(" and ".join(pair) + " …", flush=True)
            with ThreadPoolExecutor(2) as pool:
                futures = {
                    name: pool.submit(measure, name, project, seconds * scale, env) for name in pair
                }
                results.update({name: future.result() for name, future in futures.items()})
    print()
    print("\n".join(table(results)))
    print(
        f"\nchecks: log records per span, engine {results['overhead']['engine_logs_per_span']:.3f} "
        f"vs floor {results['overhead']['floor_logs_per_span']:.3f}; SDK floor in a tight loop "
        f"{results['overhead']['floor_tight_loop_us']:.0f} µs per activity; "
        f"activities skipped at peak rate while measuring memory: "
        f"{results['memory']['skipped_in_flight']}"
    )
    print("\nraw: " + json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
