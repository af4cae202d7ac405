"""Multi-window, multi-burn-rate alerting (Google SRE Workbook, ch. 5, table 5-8), for the
error budget of an SLO and for a spending budget.

A rule (factor F, long window L, short window S) holds when the burn rate is at least F over
both L and S: the long window proves the burn is significant, the short one that it is
still going on, so the alert resets soon after the burn stops. Defaults: page at 14.4x over
1 h and 5 m (2% of a 30-day budget in an hour), page at 6x over 6 h and 30 m (5% in six
hours), ticket at 1x over 3 d and 6 h.

Minimum volume (error budget): a rule also needs at least `min_bad` (5) budget errors in its
long window and `min_short_bad` (2) in its short one. A tenant with ten calls an hour is at
10x burn after a single failure against a 99% SLO; with these defaults a page needs five
failures in the long window and two in the short one, which a real outage of even that tenant
gives within about half an hour (on the 6 h / 30 m pair), and one unlucky call never does. At volume the rule changes nothing (a 14.4x burn at 100 calls a
minute is 72 errors in the 5-minute window alone).

History: a ticket rule (a slow burn) is only judged once the scope's history covers its long
window; on two hours of history the 3-day window is two hours long, and a fast outage would
open a ticket seconds before its page. Page rules judge whatever history there is, so a new
tenant whose every call fails still pages within about a minute.

Hysteresis: once an alert fires, its condition keeps holding while some rule's long-window
burn stays at or above `hold` (0.5) times its factor and its short-window burn at or above
`hold_short` (0.25) times it. Near a threshold, at low volume, the 5-minute window swings
above and below 14.4x from one call to the next; without this an incident fires and resolves
every few minutes. After a real recovery the short windows empty of errors within their
length (5 or 30 minutes), and the alert resolves after the lifecycle's clear delay.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from detection.windows import MultiWindow

Severity = Literal["page", "ticket"]


@dataclass(frozen=True, slots=True)
class BurnRule:
    severity: Severity
    factor: float
    long_seconds: float
    short_seconds: float


DEFAULT_RULES: tuple[BurnRule, ...] = (
    BurnRule("page", 14.4, 3600, 300),
    BurnRule("page", 6.0, 6 * 3600, 1800),
    BurnRule("ticket", 1.0, 3 * 86400, 6 * 3600),
)


_GOOD = (1.0, 0.0)
_BAD = (1.0, 1.0)
"""(calls, budget errors) of one call."""


def windows_of(rules: tuple[BurnRule, ...]) -> tuple[float, ...]:
    return tuple(sorted({w for rule in rules for w in (rule.long_seconds, rule.short_seconds)}))


@dataclass(frozen=True, slots=True)
class Hold:
    """Relaxed thresholds that keep a firing alert firing (module docstring)."""

    long: float = 0.5
    short: float = 0.25


@dataclass(frozen=True, slots=True)
class BurnReading:
    """The most severe rule that holds (first in rule order among equals), with its numbers."""

    rule: BurnRule
    long_burn: float
    short_burn: float
    long_bad: float
    long_total: float


class ErrorBudget:
    """Error-budget burn of one scope (a tenant, or a tenant's model): two counters (calls,
    budget errors) in one ring per distinct window length."""

    __slots__ = ("counts", "first_at")

    def __init__(self, windows: tuple[float, ...]) -> None:
        self.counts = MultiWindow(windows, 2)
        self.first_at = float("inf")

    def add(self, at: float, bad: bool) -> None:
        if at < self.first_at:
            self.first_at = at
        self.counts.add(at, _BAD if bad else _GOOD)

    def reading(
        self,
        rules: tuple[BurnRule, ...],
        target: float,
        min_bad: float,
        min_short_bad: float,
        at: float,
        hold: Hold | None = None,
    ) -> BurnReading | None:
        """The most severe rule that holds; with `hold` (the alert is firing), the relaxed
        thresholds apply and the minimum volume does not."""
        allowed = 1.0 - target
        best: BurnReading | None = None
        long_part, short_part = (hold.long, hold.short) if hold else (1.0, 1.0)
        for rule in rules:
            if not judged(rule, at - self.first_at):
                continue
            total_l, bad_l = self.counts.sums(rule.long_seconds)
            total_s, bad_s = self.counts.sums(rule.short_seconds)
            if total_l <= 0 or total_s <= 0 or (hold is None and (bad_l < min_bad or bad_s < min_short_bad)):
                continue
            long_burn = bad_l / total_l / allowed
            short_burn = bad_s / total_s / allowed
            if long_burn >= rule.factor * long_part and short_burn >= rule.factor * short_part:
                if best is None or (rule.severity == "page" and best.rule.severity != "page"):
                    best = BurnReading(rule, long_burn, short_burn, bad_l, total_l)
        return best


def judged(rule: BurnRule, history: float) -> bool:
    """Whether `rule` applies to a scope with `history` seconds of events (module docstring)."""
    return rule.severity == "page" or history >= rule.long_seconds


def period_bounds(period: Literal["day", "month"], at: float) -> tuple[float, float]:
    """UTC start and end of the budget period containing `at`."""
    day = datetime.fromtimestamp(at, UTC).date()
    if period == "day":
        start = calendar.timegm(day.timetuple())
        return float(start), float(start + 86400)
    first = calendar.timegm(day.replace(day=1).timetuple())
    days = calendar.monthrange(day.year, day.month)[1]
    return float(first), float(first + days * 86400)


@dataclass(frozen=True, slots=True)
class SpendReading:
    rule: BurnRule | None
    """The most severe burn rule that holds, None when none does."""
    long_burn: float
    short_burn: float
    spent: float
    """Spent in the current period."""
    amount: float
    rate_per_second: float
    """Spend rate over the rule's long window (or the shortest window when no rule holds)."""

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.amount

    def seconds_left(self) -> float | None:
        """At the current rate, seconds until the budget is gone (None: not spending)."""
        if self.exhausted:
            return 0.0
        if self.rate_per_second <= 0:
            return None
        return (self.amount - self.spent) / self.rate_per_second


class SpendBudget:
    """Spend against a budget of `amount` USD per day or month: period-to-date total plus the
    burn-rate windows, where burn = spend in a window / (amount * window / period length)."""

    __slots__ = ("period", "amount", "spend", "period_start", "period_end", "spent", "first_at")

    def __init__(self, period: Literal["day", "month"], amount: float, windows: tuple[float, ...]) -> None:
        self.period = period
        self.amount = amount
        self.spend = MultiWindow(windows, 1)
        self.period_start = float("-inf")
        self.period_end = float("-inf")
        self.spent = 0.0
        self.first_at = float("inf")

    def add(self, at: float, cost: float) -> None:
        self.first_at = min(self.first_at, at)
        if at >= self.period_end:
            self.period_start, self.period_end = period_bounds(self.period, at)
            self.spent = 0.0
        if at >= self.period_start:
            self.spent += cost
        self.spend.add(at, (cost,))

    def reading(self, rules: tuple[BurnRule, ...], at: float, hold: Hold | None = None) -> SpendReading:
        length = self.period_end - self.period_start
        best: tuple[BurnRule, float, float] | None = None
        long_part, short_part = (hold.long, hold.short) if hold else (1.0, 1.0)
        for rule in rules:
            if not judged(rule, at - self.first_at):
                continue
            long_burn = self._burn(rule.long_seconds, length)
            short_burn = self._burn(rule.short_seconds, length)
            if long_burn >= rule.factor * long_part and short_burn >= rule.factor * short_part:
                if best is None or (rule.severity == "page" and best[0].severity != "page"):
                    best = (rule, long_burn, short_burn)
        if best is None:
            shortest = min(self.spend.spans)
            rate = self.spend.sums(shortest)[0] / shortest
            return SpendReading(None, 0.0, 0.0, self.spent, self.amount, rate)
        rule, long_burn, short_burn = best
        rate = self.spend.sums(rule.long_seconds)[0] / rule.long_seconds
        return SpendReading(rule, long_burn, short_burn, self.spent, self.amount, rate)

    def _burn(self, window: float, period_length: float) -> float:
        allowed = self.amount * window / period_length
        return self.spend.sums(window)[0] / allowed


def duration_text(seconds: float) -> str:
    """`3 h 10 m`, `2 d 4 h`, `45 m`, `30 s`: what a human reads in an alert."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} m"
    return f"{secs} s"
