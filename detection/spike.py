"""Spend spikes: an identity spending far above its own recent normal.

Six numbers per identity (O(1) state), updated per call in event time:

- `fast`: spend decayed with a 2-minute time constant; `fast / tau` is the current $/s;
- `fast_calls`: the same for the number of calls (minimum volume);
- `hourly`: spend decayed with a 1-hour time constant, bias-corrected for the identity's age:
  the smoothed rate, slow enough that a runaway loop barely moves it before it is caught;
- `peak`: the highest smoothed rate seen, decaying with a 2-day time constant, and frozen
  while the identity is anomalous. This is the seasonality: it remembers yesterday's busiest
  hour, so the ordinary daily peak (and a busy Monday morning at a few times the usual
  peak) stays under the threshold, while the night's low rate does not lower the bar.

The identity is anomalous when the current rate is at least `factor` (10) times its baseline,
max(peak, `floor_usd_per_hour`), with at least `min_calls` calls and `min_usd` spend in the
fast window; it stops being anomalous below `clear_factor` (5) times the baseline. A runaway
loop at R times the baseline crosses the line after -tau * ln(1 - factor / R): 13 s at
100x, 80 s at 20x, under 5 minutes from about 11x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpikeConfig:
    fast_seconds: float = 120.0
    hourly_seconds: float = 3600.0
    peak_seconds: float = 2 * 86400.0
    factor: float = 10.0
    clear_factor: float = 5.0
    floor_usd_per_hour: float = 1.0
    min_calls: float = 10.0
    min_usd: float = 0.5
    warmup_seconds: float = 600.0
    """Before an identity is this old its smoothed rate is too short-lived to raise the peak."""


@dataclass(frozen=True, slots=True)
class SpikeReading:
    rate_per_hour: float
    baseline_per_hour: float
    anomalous: bool
    cleared: bool
    """Below the clear threshold (the alert, if any, may resolve)."""

    @property
    def ratio(self) -> float:
        return self.rate_per_hour / self.baseline_per_hour


class SpendRate:
    """Spend rates of one identity; see the module docstring."""

    __slots__ = ("first_at", "last_at", "fast", "fast_calls", "hourly", "peak")

    def __init__(self, at: float) -> None:
        self.first_at = at
        self.last_at = at
        self.fast = 0.0
        self.fast_calls = 0.0
        self.hourly = 0.0
        self.peak = 0.0

    def add(self, at: float, cost: float, config: SpikeConfig, frozen: bool) -> bool:
        """Count one call at event time `at` (a late call counts as of the newest time seen);
        `frozen`: the identity is anomalous, so the peak must not learn from it. True when the
        identity is anomalous now (`reading` says by how much)."""
        elapsed = at - self.last_at
        if elapsed > 0:
            fast_decay = math.exp(-elapsed / config.fast_seconds)
            self.fast *= fast_decay
            self.fast_calls *= fast_decay
            self.hourly *= math.exp(-elapsed / config.hourly_seconds)
            self.peak *= math.exp(-elapsed / config.peak_seconds)
            self.last_at = at
        self.fast += cost
        self.fast_calls += 1.0
        self.hourly += cost
        age = self.last_at - self.first_at
        if not frozen and age >= config.warmup_seconds:
            weight = config.hourly_seconds * (1.0 - math.exp(-age / config.hourly_seconds))
            smoothed = self.hourly / weight
            if smoothed > self.peak:
                self.peak = smoothed
        return self._anomalous(self.fast / config.fast_seconds * 3600.0, self._baseline(config), config)

    def reading(self, config: SpikeConfig) -> SpikeReading:
        rate = self.fast / config.fast_seconds * 3600.0
        baseline = self._baseline(config)
        return SpikeReading(
            rate_per_hour=rate,
            baseline_per_hour=baseline,
            anomalous=self._anomalous(rate, baseline, config),
            cleared=rate < config.clear_factor * baseline,
        )

    def idle_reading(self, at: float, config: SpikeConfig) -> SpikeReading:
        """The reading at `at` with no new call (for resolving an identity that went quiet)."""
        elapsed = max(0.0, at - self.last_at)
        decay = math.exp(-elapsed / config.fast_seconds)
        rate = self.fast * decay / config.fast_seconds * 3600.0
        baseline = self._baseline(config)
        return SpikeReading(rate, baseline, False, rate < config.clear_factor * baseline)

    def _baseline(self, config: SpikeConfig) -> float:
        """Dollars an hour the identity is judged against: its decayed peak, at least the floor."""
        return max(self.peak * 3600.0, config.floor_usd_per_hour)

    def _anomalous(self, rate: float, baseline: float, config: SpikeConfig) -> bool:
        """Enough recent calls and dollars, spending `factor` times the baseline or more."""
        return self.fast_calls >= config.min_calls and self.fast >= config.min_usd and rate >= config.factor * baseline

    def snapshot(self) -> tuple[float, float, float, float, float, float]:
        return (self.first_at, self.last_at, self.fast, self.fast_calls, self.hourly, self.peak)

    @classmethod
    def restore(cls, state: tuple[float, float, float, float, float, float]) -> SpendRate:
        rate = cls(state[0])
        rate.first_at, rate.last_at, rate.fast, rate.fast_calls, rate.hourly, rate.peak = state
        return rate
