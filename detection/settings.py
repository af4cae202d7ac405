"""Settings of the detect flow, from TOKENTRAIL_DETECT_* variables (defaults: docs/detection.md)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from detection.burn import BurnRule
from detection.engine import DetectionConfig
from detection.patterns import PatternConfig
from detection.spike import SpikeConfig
from tokentrail.settings import ENV

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RULE = re.compile(r"^(page|ticket):([0-9]*\.?[0-9]+):([0-9]+)([smhd]):([0-9]+)([smhd])$")


def parse_rules(text: str) -> tuple[BurnRule, ...]:
    """`page:14.4:1h:5m,page:6:6h:30m,ticket:1:3d:6h` -> burn rules; ValueError says which part is wrong."""
    rules = []
    for part in text.split(","):
        match = _RULE.match(part.strip())
        if match is None:
            raise ValueError(f"burn rule {part.strip()!r} is not severity:factor:long:short (e.g. page:14.4:1h:5m)")
        severity, factor, long_n, long_u, short_n, short_u = match.groups()
        long_seconds, short_seconds = int(long_n) * _UNITS[long_u], int(short_n) * _UNITS[short_u]
        if short_seconds >= long_seconds or float(factor) <= 0:
            raise ValueError(f"burn rule {part.strip()!r}: the short window must be shorter than the long one")
        rules.append(BurnRule(severity, float(factor), long_seconds, short_seconds))  # type: ignore[arg-type]
    return tuple(rules)


class DetectSettings(BaseSettings):
    model_config = ENV

    detect_burn_rules: str = "page:14.4:1h:5m,page:6:6h:30m,ticket:1:3d:6h"
    """TOKENTRAIL_DETECT_BURN_RULES: multi-window burn-rate rules (severity:factor:long:short),
    for error budgets and spending budgets alike (SRE Workbook table 5-8 by default)."""

    detect_slo_target: float = Field(default=0.99, gt=0, lt=1)
    """TOKENTRAIL_DETECT_SLO_TARGET: SLO of a tenant without an `slo set` record (share of calls
    without a 5xx, 429 or timeout)."""

    detect_min_bad: int = Field(default=5, ge=1)
    """TOKENTRAIL_DETECT_MIN_BAD: minimum volume: budget errors a burn rule needs in its long window."""

    detect_min_short_bad: int = Field(default=2, ge=1)
    """TOKENTRAIL_DETECT_MIN_SHORT_BAD: ... and in its short window."""

    detect_pattern_identities: int = Field(default=3, ge=2)
    """TOKENTRAIL_DETECT_PATTERN_IDENTITIES: distinct identities with one failure signature that make a pattern."""

    detect_pattern_tenants: int = Field(default=3, ge=2)
    """TOKENTRAIL_DETECT_PATTERN_TENANTS: tenants with one failure signature that make a provider incident."""

    detect_pattern_window_seconds: float = Field(default=600, gt=0)
    """TOKENTRAIL_DETECT_PATTERN_WINDOW_SECONDS: sliding window of the failure patterns."""

    detect_spike_factor: float = Field(default=10, gt=1)
    """TOKENTRAIL_DETECT_SPIKE_FACTOR: spend rate over an identity's baseline that is a spike."""

    detect_spike_floor_usd_per_hour: float = Field(default=1.0, ge=0)
    """TOKENTRAIL_DETECT_SPIKE_FLOOR_USD_PER_HOUR: the lowest baseline (a new or idle identity's)."""

    detect_clear_seconds: float = Field(default=300, ge=0)
    """TOKENTRAIL_DETECT_CLEAR_SECONDS: event time a condition must stay false before its alert resolves."""

    detect_dedup_capacity: int = Field(default=200_000, gt=0)
    """TOKENTRAIL_DETECT_DEDUP_CAPACITY: event ids remembered per state bucket (16 buckets), for
    at-least-once input; older events are refused rather than risk counting twice."""

    @field_validator("detect_burn_rules")
    @classmethod
    def _valid_rules(cls, value: str) -> str:
        parse_rules(value)
        return value

    def config(self) -> DetectionConfig:
        return DetectionConfig(
            rules=parse_rules(self.detect_burn_rules),
            slo_target=self.detect_slo_target,
            min_bad=self.detect_min_bad,
            min_short_bad=self.detect_min_short_bad,
            spike=SpikeConfig(factor=self.detect_spike_factor, floor_usd_per_hour=self.detect_spike_floor_usd_per_hour),
            patterns=PatternConfig(
                window_seconds=self.detect_pattern_window_seconds,
                min_identities=self.detect_pattern_identities,
                min_tenants=self.detect_pattern_tenants,
            ),
            clear_for=self.detect_clear_seconds,
            dedup_capacity=self.detect_dedup_capacity,
        )
