"""Load mode (issue 5): --rate as Poisson arrivals, and the daily curve over a compressed day.

Seeded runs against the real SDK, counting the root spans of the reference profile (one
span per activity) by when they started.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
from types import ModuleType
from typing import Any

import pytest

from conftest import Collected

pytestmark = pytest.mark.timeout(60)

RATE = 300.0  # activities a second
SECONDS = 3.0
SETTLE_S = 0.2  # arrivals are counted from here to the end, clear of start-up


def clean_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for variable in os.environ:
        if variable.startswith(("DEMO_TRAFFIC_", "OTEL_SEMCONV")):
            monkeypatch.delenv(variable)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)


def starts_after_start(demo: ModuleType, collected: Collected, seconds: float) -> list[float]:
    """Run the generator; return each activity's start, in seconds after the generator's."""
    traffic = collected.traffic(demo, interval_ms=2000, seed=31)

    async def main() -> None:
        async with traffic.running():
            await asyncio.sleep(seconds)

    asyncio.run(main())
    started = next(
        record.timestamp
        for record in collected.log_records()
        if str(record.body).startswith("Demo traffic started")
    )
    return sorted((span.start_time - started) / 1e9 for span in collected.finished_spans())


def test_rate_holds_within_ten_percent(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_RATE=str(RATE))
    starts = starts_after_start(demo, collected, SECONDS)
    window_s = SECONDS - SETTLE_S - 0.1
    counted = [start for start in starts if SETTLE_S <= start < SETTLE_S + window_s]
    rate = len(counted) / window_s
    assert abs(rate - RATE) <= 0.1 * RATE, f"{rate:.0f} a second, asked for {RATE:.0f}"


def test_arrivals_are_poisson_not_ticks(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_RATE=str(RATE))
    starts = [start for start in starts_after_start(demo, collected, SECONDS) if start > 0.1]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Exponential gaps: the median gap is ln 2 = 0.69 of the mean (a tick's burst gives ~0
    # median gaps, an even pace 1.0). Unlike the standard deviation, the median barely moves
    # when a busy machine stalls the loop once and bunches a few arrivals.
    median_share = statistics.median(gaps) / statistics.mean(gaps)
    assert 0.55 < median_share < 0.85, f"median gap / mean gap {median_share:.2f}"
    # Counts in 50 ms bins: a Poisson count's variance equals its mean.
    bins = [0] * int((SECONDS - 0.2) / 0.05)
    for start in starts:
        index = int((start - 0.1) / 0.05)
        if index < len(bins):
            bins[index] += 1
    dispersion = statistics.variance(bins) / statistics.mean(bins)
    # (an even pace gives ~0; a loop stall bunches a few bins, hence the loose upper bound)
    assert 0.6 < dispersion < 2.5, f"index of dispersion {dispersion:.2f}"


def test_daily_curve_is_quiet_at_night_and_busy_at_noon(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(
        monkeypatch,
        DEMO_TRAFFIC_RATE=str(RATE),
        DEMO_TRAFFIC_DAILY_CURVE="on",
        DEMO_TRAFFIC_DAY_S="3",
    )
    starts = starts_after_start(demo, collected, 3.0)

    def rate_between(low: float, high: float) -> float:
        return sum(low <= start < high for start in starts) / (high - low)

    night = rate_between(0.0, 0.3)  # the curve's mean there: 0.26 of the peak
    noon = rate_between(1.2, 1.8)  # 0.96 of the peak
    assert noon > 0.8 * RATE, f"noon at {noon:.0f} a second"
    assert night < 0.45 * RATE, f"midnight at {night:.0f} a second"
    assert rate_between(2.7, 3.0) < 0.45 * RATE, "a day ends as it began"


def test_daily_curve_thins_ticks_too(
    demo: ModuleType, collected: Collected, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_DAILY_CURVE="on", DEMO_TRAFFIC_DAY_S="2")
    traffic = collected.traffic(demo, interval_ms=20, seed=32)
    assert traffic.settings.daily_curve and traffic.settings.day_s == 2.0

    async def main() -> None:
        async with traffic.running():
            await asyncio.sleep(2.0)

    asyncio.run(main())
    spans = sorted(span.start_time for span in collected.finished_spans())
    first = spans[0]
    night = sum(start - first < 0.25e9 for start in spans)
    noon = sum(0.875e9 <= start - first < 1.125e9 for start in spans)
    assert noon > 2 * night, (night, noon)


@pytest.mark.parametrize("value", ["0", "-5", "many", "inf"])
def test_a_bad_rate_is_refused_in_one_line(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    clean_environment(monkeypatch, DEMO_TRAFFIC_RATE=value)
    with pytest.raises(demo.ConfigurationError, match=r"^DEMO_TRAFFIC_RATE=") as raised:
        demo.DemoTraffic()
    assert "\n" not in str(raised.value)


def test_cli_rate_flag_sets_the_rate(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    clean_environment(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        demo.main(["--rate", "zero"])
    assert exited.value.code == 2
    assert "DEMO_TRAFFIC_RATE='zero' is not a number" in capsys.readouterr().err
