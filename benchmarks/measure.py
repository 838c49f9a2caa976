"""One measurement per call, in a fresh process: ``measure.py NAME PROJECT [SECONDS]``.

PROJECT is a project the template was rendered into (``myapp/demo_traffic.py``); the
result is one JSON object on stdout. ``bench.py`` runs them all and prints the table.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import random
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sdk as sdk_setup
from baseline import Floor

# Peak-rate runs: a tick every millisecond asking for more than one core can do, so the
# engine runs flat out (late beats are skipped, as they would be in an app).
PEAK_INTERVAL_MS = 1
PEAK_ACTIVITIES_PER_TICK = (50, 100)


def load(project: str) -> ModuleType:
    sys.path.insert(0, project)
    return importlib.import_module("myapp.demo_traffic")


def pin_to_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def engine(demo: ModuleType, sdk: sdk_setup.Sdk, **options: Any) -> Any:
    options.setdefault("seed", 1)
    options.setdefault("one_per", "process")
    return demo.DemoTraffic(
        tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider, **options
    )


async def run_until(traffic: Any, done: Callable[[], bool], poll_s: float = 0.005) -> None:
    async with traffic.running():
        while not done():  # noqa: ASYNC110 - the condition is a plain predicate
            await asyncio.sleep(poll_s)


def cpu_per_span(run: Callable[[], None], sdk: sdk_setup.Sdk) -> tuple[float, int, int]:
    """CPU seconds of the whole process (all threads) per span ended while ``run`` ran."""
    spans, logs = sdk.spans.ended, sdk.logs.emitted
    cpu = time.process_time()
    run()
    sdk.flush()  # the batch processors' export work belongs to the run that queued it
    cpu = time.process_time() - cpu
    spans, logs = sdk.spans.ended - spans, sdk.logs.emitted - logs
    return cpu / spans, spans, logs


# --- measurements ---------------------------------------------------------------------


def overhead(demo: ModuleType, seconds: float) -> dict[str, Any]:
    """CPU per activity at the same pace: the engine (10 ms tick, real waiting) vs the floor.

    The floor plays the same number of activities per 10 ms tick back to back, then sleeps
    to the next tick: work done in short bursts between sleeps costs several times more CPU
    per call than in a tight loop (cold caches, wake-ups), so both sides pay that alike.
    """
    period_s, rounds = 0.010, 3
    sdk = sdk_setup.configure()
    traffic = engine(demo, sdk, interval_ms=10)
    floor = Floor(demo, sdk)
    rng = random.Random(2)
    warm_until = time.monotonic() + 1.0
    asyncio.run(run_until(traffic, lambda: time.monotonic() > warm_until))
    floor.run(rng, 2000)

    def engine_run() -> None:
        until = time.monotonic() + seconds / rounds
        asyncio.run(run_until(traffic, lambda: time.monotonic() > until, poll_s=0.1))

    def floor_run() -> None:
        until = due = time.monotonic()
        until += seconds / rounds
        while due < until:
            floor.run(rng, rng.randint(*demo.ACTIVITIES_PER_TICK))
            due += period_s
            time.sleep(max(0.0, due - time.monotonic()))

    engine_us, floor_us, spans, logs = [], [], [0, 0], [0, 0]
    for _ in range(rounds):  # alternate, so drift in the machine's speed hits both alike
        cpu, ended, emitted = cpu_per_span(engine_run, sdk)
        engine_us.append(cpu * 1e6)
        spans[0], logs[0] = spans[0] + ended, logs[0] + emitted
        cpu, ended, emitted = cpu_per_span(floor_run, sdk)
        floor_us.append(cpu * 1e6)
        spans[1], logs[1] = spans[1] + ended, logs[1] + emitted
    tight_us = cpu_per_span(lambda: floor.run(rng, spans[1] // rounds), sdk)[0] * 1e6
    sdk.shutdown()
    ratios = [e / f for e, f in zip(engine_us, floor_us, strict=True)]
    return {
        "engine_us": statistics.median(engine_us),
        "floor_us": statistics.median(floor_us),
        "ratio": statistics.median(ratios),
        "floor_tight_loop_us": tight_us,
        "activities": spans[0],
        "floor_activities": spans[1],
        "engine_logs_per_span": logs[0] / spans[0],
        "floor_logs_per_span": logs[1] / spans[1],
    }


def throughput(demo: ModuleType, seconds: float) -> dict[str, Any]:
    """Activities per second on one core, no simulated waiting: engine vs plain loop."""
    cpu = pin_to_one_core()
    sdk = sdk_setup.configure()
    demo.SIMULATE_WAITING = False
    demo.ACTIVITIES_PER_TICK = PEAK_ACTIVITIES_PER_TICK
    traffic = engine(demo, sdk, interval_ms=PEAK_INTERVAL_MS)
    floor = Floor(demo, sdk)
    rng = random.Random(1)
    rates: dict[str, list[float]] = {"engine": [], "floor": []}
    for _ in range(3):  # alternate, so a noisy neighbour hits both alike
        before, started = sdk.spans.ended, time.perf_counter()
        until = time.monotonic() + seconds / 3
        asyncio.run(run_until(traffic, lambda u=until: time.monotonic() > u, poll_s=0.05))
        rates["engine"].append((sdk.spans.ended - before) / (time.perf_counter() - started))
        before, started = sdk.spans.ended, time.perf_counter()
        until = time.monotonic() + seconds / 3
        while time.monotonic() < until:
            floor.run(rng, 500)
        rates["floor"].append((sdk.spans.ended - before) / (time.perf_counter() - started))
    sdk.shutdown()
    engine_rate, floor_rate = max(rates["engine"]), max(rates["floor"])
    return {
        "cpu": cpu,
        "engine_per_s": engine_rate,
        "floor_per_s": floor_rate,
        "ratio": engine_rate / floor_rate,
    }


def default_rate(demo: ModuleType, seconds: float, with_engine: bool = True) -> dict[str, Any]:
    """CPU seconds per wall second at the generated defaults, SDK as an app runs it."""
    sdk = sdk_setup.configure(periodic_metrics=True)
    traffic = engine(demo, sdk) if with_engine else None

    async def idle() -> None:
        await asyncio.sleep(seconds)

    async def main() -> None:
        if traffic is None:
            await idle()
        else:
            async with traffic.running():
                await idle()

    cpu, wall = time.process_time(), time.monotonic()
    asyncio.run(main())
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    spans = sdk.spans.ended
    sdk.shutdown()
    return {"cpu_share": cpu / wall, "wall_s": wall, "activities": spans}


def idle_sdk(demo: ModuleType, seconds: float) -> dict[str, Any]:
    return default_rate(demo, seconds, with_engine=False)


def timing(demo: ModuleType, seconds: float) -> dict[str, Any]:
    """Lateness of 1,000 ticks at 10 ms, activities really waiting meanwhile."""
    ticks = 1000
    period_s = 0.010
    sdk = sdk_setup.configure()
    times: list[tuple[int, float]] = []

    class Timed(demo.DemoTraffic):  # type: ignore[name-defined,misc]
        """Notes when each tick runs, and which beat it is (missed beats are skipped)."""

        beat = 0

        def _tick(self) -> None:
            times.append((self.beat, asyncio.get_running_loop().time()))
            self.beat += 1
            super()._tick()

        def _skip(self, reason: str, count: int) -> None:
            if reason == "missed_tick":
                self.beat += count
            super()._skip(reason, count)

    traffic = Timed(
        interval_ms=10,
        seed=1,
        one_per="process",
        tracer_provider=sdk.tracer_provider,
        meter_provider=sdk.meter_provider,
    )
    asyncio.run(run_until(traffic, lambda: len(times) >= ticks, poll_s=0.05))
    sdk.shutdown()
    times = times[:ticks]
    started = times[0][1]
    late_ms = [(t - (started + beat * period_s)) * 1000 for beat, t in times]
    first, last = late_ms[1:101], late_ms[-100:]
    return {
        "mean_ms": statistics.fmean(late_ms[1:]),
        "p99_ms": statistics.quantiles(late_ms[1:], n=100)[98],
        "max_ms": max(late_ms),
        "first_100_mean_ms": statistics.fmean(first),
        "last_100_mean_ms": statistics.fmean(last),
        "tick_1000_ms": late_ms[-1],
        "ticks": len(times),
        "missed_beats": times[-1][0] + 1 - len(times),
        "wall_s": times[-1][1] - started,
    }


def stop_latency(demo: ModuleType, seconds: float) -> dict[str, Any]:
    """How long ``stop()`` takes: idle (nothing in flight) and with activities in flight."""
    sdk = sdk_setup.configure()
    results: dict[str, Any] = {}

    def thread_stops(samples: int, run_s: float, **options: Any) -> list[float]:
        latencies = []
        for _ in range(samples):
            traffic = engine(demo, sdk, **options)
            traffic.start()
            time.sleep(run_s)
            while options.get("interval_ms") == 2000 and traffic._in_flight:
                time.sleep(0.005)  # idle means nothing in flight
            in_flight = len(traffic._in_flight)
            started = time.perf_counter()
            traffic.stop(timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)
            assert traffic._thread is not None and not traffic._thread.is_alive()
            results.setdefault(f"in_flight_{options.get('interval_ms')}", []).append(in_flight)
        return latencies

    async def loop_stops(samples: int) -> list[float]:
        latencies = []
        for _ in range(samples):
            traffic = engine(demo, sdk, interval_ms=2000)
            async with traffic.running():
                await asyncio.sleep(0.02)
                started = time.perf_counter()
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98]

    demo.SIMULATE_WAITING = False  # idle: the tick's activities are over at once
    idle_thread = thread_stops(100, 0.02, interval_ms=2000)
    idle_loop = asyncio.run(loop_stops(100))
    demo.SIMULATE_WAITING = True
    busy = thread_stops(30, 0.3, interval_ms=10)
    sdk.shutdown()
    return {
        "idle_thread_p99_ms": p99(idle_thread),
        "idle_loop_p99_ms": p99(idle_loop),
        "busy_p99_ms": p99(busy),
        "busy_median_ms": statistics.median(busy),
        "busy_in_flight_median": statistics.median(results["in_flight_10"]),
        "idle_in_flight_max": max(results["in_flight_2000"]),
    }


def memory(demo: ModuleType, seconds: float, export_delay_s: float = 0.0) -> dict[str, Any]:
    """Traced memory growth over 100,000 activities after a 20,000-activity warm-up."""
    warm_up, measured = 20_000, int(os.environ.get("BENCH_MEMORY_ACTIVITIES", "100000"))
    sdk = sdk_setup.configure(export_delay_s=export_delay_s)
    demo.SIMULATE_WAITING = False
    demo.ACTIVITIES_PER_TICK = PEAK_ACTIVITIES_PER_TICK
    traffic = engine(demo, sdk, interval_ms=PEAK_INTERVAL_MS)

    def settle() -> int:
        sdk.flush()  # the batch queues hold up to 2,048 items each: empty them first
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    asyncio.run(run_until(traffic, lambda: sdk.spans.ended >= warm_up, poll_s=0.05))
    # Traced from here on: what the measured run allocates and still holds at its end.
    tracemalloc.start()
    before, spans, started = settle(), sdk.spans.ended, time.monotonic()
    asyncio.run(run_until(traffic, lambda: sdk.spans.ended >= spans + measured, poll_s=0.05))
    after = settle()
    tracemalloc.stop()
    done = sdk.spans.ended - spans
    sdk.shutdown()
    return {
        "growth_bytes": after - before,
        "activities": done,
        "export_delay_s": export_delay_s,
        "wall_s": time.monotonic() - started,
        "skipped_in_flight": traffic.skipped,
    }


def memory_slow_exporter(demo: ModuleType, seconds: float) -> dict[str, Any]:
    return memory(demo, seconds, export_delay_s=0.1)


def import_cost(demo_project: str, seconds: float) -> dict[str, Any]:
    """Importing the generated module once opentelemetry-api is loaded, in fresh processes."""
    import subprocess

    probe = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "import opentelemetry.context, opentelemetry.metrics, opentelemetry.trace\n"
        "import opentelemetry.util.types\n"
        "t1 = time.perf_counter(); known = set(sys.modules)\n"
        "import myapp.demo_traffic\n"
        "t2 = time.perf_counter()\n"
        "new = sorted(m for m in set(sys.modules) - known if not m.startswith('myapp'))\n"
        "print(t1 - t0, t2 - t1, ','.join(new))\n"
    )
    api, extra, modules = [], [], ""
    for _ in range(15):
        out = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=demo_project,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        api.append(float(out[0]))
        extra.append(float(out[1]))
        modules = out[2] if len(out) > 2 else ""
    return {
        "api_ms": statistics.median(api) * 1000,
        "module_ms": statistics.median(extra) * 1000,
        "ratio": statistics.median(extra) / statistics.median(api),
        "new_modules": modules.split(",") if modules else [],
    }


def profile(demo: ModuleType, seconds: float) -> dict[str, Any]:
    """pyinstrument over the engine at peak rate, then over the floor, as text."""
    from pyinstrument import Profiler

    sdk = sdk_setup.configure()
    demo.SIMULATE_WAITING = False
    demo.ACTIVITIES_PER_TICK = PEAK_ACTIVITIES_PER_TICK
    traffic = engine(demo, sdk, interval_ms=PEAK_INTERVAL_MS)
    reports = {}
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    until = time.monotonic() + seconds
    with profiler:
        asyncio.run(run_until(traffic, lambda: time.monotonic() > until, poll_s=0.05))
    reports["engine"] = profiler.output_text(show_all=False, color=False)
    floor = Floor(demo, sdk)
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    until = time.monotonic() + seconds
    with profiler:
        while time.monotonic() < until:
            floor.run(random.Random(1), 500)
    reports["floor"] = profiler.output_text(show_all=False, color=False)
    sdk.shutdown()
    return reports


MEASUREMENTS: dict[str, Callable[[ModuleType, float], dict[str, Any]]] = {
    "overhead": overhead,
    "throughput": throughput,
    "default_rate": default_rate,
    "idle_sdk": idle_sdk,
    "timing": timing,
    "stop_latency": stop_latency,
    "memory": memory,
    "memory_slow_exporter": memory_slow_exporter,
    "profile": profile,
}


def main() -> None:
    name, project = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    if name == "import_cost":
        result = import_cost(project, seconds)
    else:
        result = MEASUREMENTS[name](load(project), seconds)
    print(json.dumps(result))
    sys.stdout.flush()
    # Daemon threads (the SDK's, a generator's) must not delay the next measurement.
    os._exit(0) if threading.active_count() > 1 else None


if __name__ == "__main__":
    main()
