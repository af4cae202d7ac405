"""The detectors of a set of tenants behind one call: `Detector.observe(event)`.

A `Detector` holds the state of the tenants routed to it (the detect flow keys tenants into
buckets; the benchmark uses one): the dedup memory, error-budget and spend windows, spend
rates per identity, failure signatures, and the alert book. It returns what changed: alert
state changes, tenant failure patterns, and the provider-level failures that
`ProviderIncidents` (one instance, all tenants) turns into incidents under the system tenant.

Firing alerts are re-evaluated every `sweep_seconds` of event time (the newest timestamp the
detector has seen), so an alert resolves even when its tenant or identity went quiet while
other tenants of its state call on; `idle(seconds)` does the same when no event came at all
(the detect flow calls it from wall-clock ticks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from detection.burn import (
    DEFAULT_RULES,
    BurnReading,
    BurnRule,
    ErrorBudget,
    Hold,
    SpendBudget,
    duration_text,
    windows_of,
)
from detection.calls import Call, read_call
from detection.dedup import RecentIds
from detection.evidence import budget_sql, error_budget_sql, pattern_sql, spike_sql
from detection.lifecycle import AlertBook, Change, Finding, fingerprint, moment
from detection.patterns import Members, PatternConfig, Signature, SignatureWindow
from detection.spike import SpendRate, SpikeConfig
from schemas.models import SYSTEM_TENANT, Alert, FailurePattern

ERROR_BUDGET = "error_budget_burn"
BUDGET_BURN = "budget_burn"
BUDGET_EXHAUSTED = "budget_exhausted"
SPEND_SPIKE = "spend_spike"
FAILURE_PATTERN = "failure_pattern"
PROVIDER_INCIDENT = "provider_incident"
PERIOD_WORD = {"day": "daily", "month": "monthly"}
CONCENTRATION = 1.5
"""A tenant x model alert needs the model's error ratio at this multiple of the tenant's."""


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    rules: tuple[BurnRule, ...] = DEFAULT_RULES
    slo_target: float = 0.99
    """Default SLO target of a tenant without an `Slo` record."""
    min_bad: float = 5
    """Minimum-volume rule: budget errors a burn rule needs in its long window."""
    min_short_bad: float = 2
    """... and in its short window."""
    hold: Hold = Hold()
    """Hysteresis of the burn-rate alerts: relaxed thresholds while firing (see detection.burn)."""
    per_model: bool = True
    """Also watch each tenant x model error budget."""
    spike: SpikeConfig = SpikeConfig()
    patterns: PatternConfig = PatternConfig()
    clear_for: float = 300.0
    """Hysteresis: a condition must stay false this long (event time) before its alert resolves."""
    update_every: float = 60.0
    """Least event time between two updates of a firing alert."""
    sweep_seconds: float = 30.0
    dedup_horizon: float = 3 * 86400.0
    """Event ids are remembered this long behind the newest event (the longest default window) ..."""
    dedup_capacity: int = 200_000
    """... but at most this many per detector; older ones are refused as too late (see dedup)."""


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """A failure routed to `ProviderIncidents`: the signature without the context hash."""

    signature: Signature
    tenant_id: str
    key_id: str
    at: float


@dataclass(slots=True)
class Result:
    changes: list[Change] = field(default_factory=list)
    patterns: list[FailurePattern] = field(default_factory=list)
    provider_failures: list[ProviderFailure] = field(default_factory=list)

    def extend(self, other: Result) -> None:
        self.changes.extend(other.changes)
        self.patterns.extend(other.patterns)
        self.provider_failures.extend(other.provider_failures)


@dataclass(slots=True)
class Who:
    """Who an identity is, kept with its spend rate for the alert text."""

    actor: tuple[str, str]
    root: tuple[str, str]


@dataclass(slots=True)
class Tenant:
    slo: dict[str, ErrorBudget] = field(default_factory=dict)
    """By scope: `tenant`, `model:<provider>/<model>`."""
    spend: dict[str, SpendBudget] = field(default_factory=dict)
    """By budget scope: `tenant`, `key:<key_id>`."""
    rates: dict[str, SpendRate] = field(default_factory=dict)
    who: dict[str, Who] = field(default_factory=dict)
    signatures: SignatureWindow | None = None
    model_scopes: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    period: Literal["day", "month"]
    amount_usd: float


class Controls:
    """SLO targets and budgets in force (from `tokentrail.controls`), shared by detectors."""

    def __init__(self) -> None:
        self.slo_targets: dict[str, float] = {}
        self.tenant_budgets: dict[str, BudgetLimit] = {}
        self.key_budgets: dict[str, BudgetLimit] = {}
        self.version = 0

    def apply(self, record: Any) -> None:
        """Apply an `Slo` or `Budget` record (other kinds are not detection's business)."""
        kind, scope = record.kind, record.scope
        name = scope.split(":", 1)[1]
        if kind == "slo":
            self.slo_targets[name] = float(record.target)
        elif kind == "budget":
            limit = BudgetLimit(record.period, float(record.amount_usd))
            (self.tenant_budgets if scope.startswith("tenant:") else self.key_budgets)[name] = limit
        else:
            return
        self.version += 1

    def remove(self, kind: str, scope: str) -> None:
        """A tombstone: the control no longer exists."""
        name = scope.split(":", 1)[1]
        if kind == "slo":
            self.slo_targets.pop(name, None)
        elif kind == "budget":
            (self.tenant_budgets if scope.startswith("tenant:") else self.key_budgets).pop(name, None)
        self.version += 1


class Detector:
    """The detectors of the tenants routed to one state; see the module docstring.

    A failure pattern is published (`Result.patterns`) when it fires and again whenever
    another identity joins it (or, for a provider incident, another tenant), so the
    `failure_patterns` row and the latest `pattern_detected` event name everyone affected."""

    def __init__(self, config: DetectionConfig | None = None, controls: Controls | None = None) -> None:
        self.config = config or DetectionConfig()
        self.controls = controls or Controls()
        self.windows = windows_of(self.config.rules)
        self.tenants: dict[str, Tenant] = {}
        self.dedup = RecentIds(self.config.dedup_horizon, self.config.dedup_capacity)
        self.book = AlertBook(self.config.clear_for, self.config.update_every)
        self.newest = float("-inf")
        self._last_sweep = float("-inf")

    def __getstate__(self) -> dict[str, Any]:
        """Recovery snapshots leave the controls out: they are followed live, not restored."""
        state = dict(self.__dict__)
        state["controls"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.controls = Controls()

    def observe(self, event: dict[str, Any], into: Result | None = None) -> Result:
        """One UnifiedEvent (JSON form); EventError when a call event is unreadable. What
        changed is added to `into` (a batch's result) or to a new Result."""
        result = Result() if into is None else into
        call = read_call(event)
        if call is not None and self.dedup.first_time(call.event_id, call.at):
            self.observe_call(call, result)
        return result

    def observe_call(self, call: Call, result: Result) -> None:
        """One call already known to be new."""
        tenant = self.tenants.get(call.tenant_id)
        if tenant is None:
            tenant = self.tenants[call.tenant_id] = Tenant()
        if call.at > self.newest:
            self.newest = call.at
        self._error_budget(tenant, call, "tenant", result)
        if self.config.per_model and call.model:
            scope = tenant.model_scopes.get((call.provider, call.model))
            if scope is None:
                scope = tenant.model_scopes[(call.provider, call.model)] = f"model:{call.provider}/{call.model}"
            self._error_budget(tenant, call, scope, result)
        if call.cost_usd:
            self._spend(tenant, call, result)
        if call.failed:
            self._failure(tenant, call, result)
        if self.newest - self._last_sweep >= self.config.sweep_seconds:
            self._last_sweep = self.newest
            self.sweep(self.newest, result)

    # ---- error budget ---------------------------------------------------------------------

    def _error_budget(self, tenant: Tenant, call: Call, scope: str, result: Result) -> None:
        budget = tenant.slo.get(scope)
        if budget is None:
            budget = tenant.slo[scope] = ErrorBudget(self.windows)
        budget.add(call.at, call.budget_error)
        if call.budget_error or (self.book.firing and self.book.is_firing(call.tenant_id, ERROR_BUDGET, scope)):
            self._judge_error_budget(call.tenant_id, scope, budget, call.at, result)

    def _judge_error_budget(self, tenant_id: str, scope: str, budget: ErrorBudget, at: float, result: Result) -> None:
        config = self.config
        target = self.controls.slo_targets.get(tenant_id, config.slo_target)
        firing = self.book.severity(tenant_id, ERROR_BUDGET, scope)
        reading = budget.reading(config.rules, target, config.min_bad, config.min_short_bad, at)
        severity: str | None = None if reading is None else reading.rule.severity
        if reading is None and firing is not None:
            reading = budget.reading(config.rules, target, config.min_bad, config.min_short_bad, at, config.hold)
            severity = firing  # held, never raised, by the relaxed thresholds
        if reading is None or severity is None:
            _add(result, self.book.clear(tenant_id, ERROR_BUDGET, scope, at))
            return
        if firing is None and scope != "tenant" and not self._concentrated(tenant_id, reading):
            return  # the tenant's alert tells this story: one notification per incident
        rule = reading.rule
        allowed = 1.0 - target
        what = "the tenant" if scope == "tenant" else scope.removeprefix("model:")
        summary = (
            f"{tenant_id}: {what} burns its error budget at {reading.long_burn:.1f}x over "
            f"{duration_text(rule.long_seconds)} and {reading.short_burn:.1f}x over {duration_text(rule.short_seconds)} "
            f"({reading.long_bad:.0f} of {reading.long_total:.0f} calls failed; SLO {target:.4g})"
        )
        finding = Finding(
            tenant_id=tenant_id,
            rule=ERROR_BUDGET,
            scope=scope,
            severity=severity,  # type: ignore[arg-type]
            summary=summary,
            value=reading.long_burn,
            threshold=rule.factor,
            annotations={
                "burn_rate_long": f"{reading.long_burn:.2f}",
                "burn_rate_short": f"{reading.short_burn:.2f}",
                "long_window": duration_text(rule.long_seconds),
                "short_window": duration_text(rule.short_seconds),
                "error_ratio": f"{reading.long_bad / reading.long_total:.4f}",
                "allowed_error_ratio": f"{allowed:.4f}",
                "failed_calls": f"{reading.long_bad:.0f}",
                "calls": f"{reading.long_total:.0f}",
            },
            evidence_sql=error_budget_sql(tenant_id, scope, at - rule.long_seconds),
        )
        _add(result, self.book.holds(finding, at))

    def _concentrated(self, tenant_id: str, reading: BurnReading) -> bool:
        """Whether a model's burn is its own story: the tenant's alert is not firing, and the
        model burns at least `CONCENTRATION` times the tenant as a whole (when every model
        fails alike, the tenant's alert is the one to send)."""
        if self.book.is_firing(tenant_id, ERROR_BUDGET, "tenant"):
            return False
        whole = self.tenants[tenant_id].slo["tenant"].counts.sums(reading.rule.long_seconds)
        tenant_ratio = whole[1] / whole[0] if whole[0] else 0.0
        return reading.long_bad / reading.long_total >= CONCENTRATION * tenant_ratio

    # ---- spend ----------------------------------------------------------------------------

    def _spend(self, tenant: Tenant, call: Call, result: Result) -> None:
        config = self.config
        rate = tenant.rates.get(call.key_id)
        if rate is None:
            rate = tenant.rates[call.key_id] = SpendRate(call.at)
            tenant.who[call.key_id] = Who(call.actor, call.root)
        scope = f"key:{call.key_id}"
        firing = bool(self.book.firing) and self.book.is_firing(call.tenant_id, SPEND_SPIKE, scope)
        anomalous = rate.add(call.at, call.cost_usd, config.spike, frozen=firing)
        if anomalous:
            reading = rate.reading(config.spike)
            actor, root = call.actor, call.root
            rollup = "" if actor == root else f" (on behalf of {root[0]} {root[1]})"
            finding = Finding(
                tenant_id=call.tenant_id,
                rule=SPEND_SPIKE,
                scope=scope,
                severity="page",
                summary=(
                    f"{call.tenant_id}: {actor[0]} {actor[1]}{rollup} spends ${reading.rate_per_hour:.2f}/h, "
                    f"{reading.ratio:.0f}x its baseline of ${reading.baseline_per_hour:.2f}/h"
                ),
                value=reading.ratio,
                threshold=config.spike.factor,
                annotations={
                    "rate_usd_per_hour": f"{reading.rate_per_hour:.4f}",
                    "baseline_usd_per_hour": f"{reading.baseline_per_hour:.4f}",
                    "ratio": f"{reading.ratio:.1f}",
                },
                labels={"actor": f"{actor[0]}:{actor[1]}"},
                key_id=call.key_id,
                actor=actor,
                root_actor=root,
                evidence_sql=spike_sql(call.tenant_id, call.key_id, call.at - 3600),
            )
            _add(result, self.book.holds(finding, call.at))
        elif firing and rate.reading(config.spike).cleared:
            _add(result, self.book.clear(call.tenant_id, SPEND_SPIKE, scope, call.at))
        if call.tenant_id not in self.controls.tenant_budgets and not self.controls.key_budgets:
            return
        for budget_scope, limit in self._budgets_of(call):
            budget = tenant.spend.get(budget_scope)
            if budget is None or (budget.period, budget.amount) != (limit.period, limit.amount_usd):
                budget = tenant.spend[budget_scope] = SpendBudget(limit.period, limit.amount_usd, self.windows)
            budget.add(call.at, call.cost_usd)
            self._judge_budget(call.tenant_id, budget_scope, budget, call.at, result)

    def _budgets_of(self, call: Call) -> list[tuple[str, BudgetLimit]]:
        found = []
        tenant_limit = self.controls.tenant_budgets.get(call.tenant_id)
        if tenant_limit is not None:
            found.append(("tenant", tenant_limit))
        if self.controls.key_budgets:
            for key_id in call.chain_keys or (call.key_id,):
                limit = self.controls.key_budgets.get(key_id)
                if limit is not None:
                    found.append((f"key:{key_id}", limit))
        return found

    def _judge_budget(self, tenant_id: str, scope: str, budget: SpendBudget, at: float, result: Result) -> None:
        firing = self.book.severity(tenant_id, BUDGET_BURN, scope)
        reading = budget.reading(self.config.rules, at)
        severity: str | None = None if reading.rule is None else reading.rule.severity
        if reading.rule is None and firing is not None:
            reading = budget.reading(self.config.rules, at, self.config.hold)
            severity = firing  # held, never raised, by the relaxed thresholds
        if not reading.exhausted and (reading.rule is None or severity is None):  # the usual case: nothing to say
            _add(result, self.book.clear(tenant_id, BUDGET_EXHAUSTED, scope, at))
            _add(result, self.book.clear(tenant_id, BUDGET_BURN, scope, at))
            return
        whose = "the tenant" if scope == "tenant" else scope
        spent = f"${reading.spent:,.2f} of ${reading.amount:,.2f} this {budget.period}"
        sql = budget_sql(tenant_id, scope, budget.period_start)
        if reading.exhausted:
            finding = Finding(
                tenant_id=tenant_id,
                rule=BUDGET_EXHAUSTED,
                scope=scope,
                severity="page",
                summary=f"{tenant_id}: {whose} has spent its budget: {spent}",
                value=reading.spent,
                threshold=reading.amount,
                annotations={"spent_usd": f"{reading.spent:.4f}", "budget_usd": f"{reading.amount:.2f}"},
                evidence_sql=sql,
            )
            _add(result, self.book.holds(finding, at))
        else:
            _add(result, self.book.clear(tenant_id, BUDGET_EXHAUSTED, scope, at))
        if reading.rule is None or severity is None:
            _add(result, self.book.clear(tenant_id, BUDGET_BURN, scope, at))
            return
        if reading.exhausted and firing is None:
            return  # gone already: the exhaustion alert says it, a burn alert would only repeat it
        left = reading.seconds_left()
        outlook = (
            "the budget is gone"
            if left == 0
            else f"at this rate the budget is gone in {duration_text(left)}"
            if left
            else ""
        )
        finding = Finding(
            tenant_id=tenant_id,
            rule=BUDGET_BURN,
            scope=scope,
            severity=severity,  # type: ignore[arg-type]
            summary=(
                f"{tenant_id}: {whose} spends at {reading.long_burn:.1f}x its {PERIOD_WORD[budget.period]} budget over "
                f"{duration_text(reading.rule.long_seconds)} ({spent}); {outlook}"
            ),
            value=reading.long_burn,
            threshold=reading.rule.factor,
            annotations={
                "burn_rate_long": f"{reading.long_burn:.2f}",
                "burn_rate_short": f"{reading.short_burn:.2f}",
                "spent_usd": f"{reading.spent:.4f}",
                "budget_usd": f"{reading.amount:.2f}",
                "usd_per_hour": f"{reading.rate_per_second * 3600:.4f}",
                "exhausted_in": "" if left is None else duration_text(left),
            },
            evidence_sql=sql,
        )
        _add(result, self.book.holds(finding, at))

    # ---- failure patterns -----------------------------------------------------------------

    def _failure(self, tenant: Tenant, call: Call, result: Result) -> None:
        config = self.config.patterns
        signature = Signature(
            call.provider, call.model, call.status, call.error_type, call.error_code, call.context_hash
        )
        if tenant.signatures is None:
            tenant.signatures = SignatureWindow(config)
        members = tenant.signatures.add(signature, call.key_id, call.at)
        self._judge_pattern(call.tenant_id, signature, members, call.at, result)
        result.provider_failures.append(
            ProviderFailure(
                Signature(call.provider, call.model, call.status, call.error_type, call.error_code, ""),
                call.tenant_id,
                call.key_id,
                call.at,
            )
        )

    def _judge_pattern(self, tenant_id: str, signature: Signature, members: Members, at: float, result: Result) -> None:
        config = self.config.patterns
        scope = f"signature:{signature.digest()}"
        count = members.distinct(at, config, config.min_identities)
        if count < config.min_identities:
            _add(result, self.book.clear(tenant_id, FAILURE_PATTERN, scope, at))
            return
        identities = sorted(members.last_seen)
        finding = Finding(
            tenant_id=tenant_id,
            rule=FAILURE_PATTERN,
            scope=scope,
            severity="ticket",
            summary=(
                f"{tenant_id}: {count} identities fail with {signature.text()} "
                f"({members.count} failures in {duration_text(at - members.first_seen)})"
            ),
            value=float(count),
            threshold=float(config.min_identities),
            labels=_signature_labels(signature),
            annotations={"identities": ",".join(identities[:50]), "failures": str(members.count)},
            evidence_sql=pattern_sql(tenant_id, signature, members.first_seen),
        )
        before = self.book.alert(tenant_id, FAILURE_PATTERN, scope)
        grew = before is not None and (before.value or 0) < count
        change = self.book.holds(finding, at, news=grew)
        if change is not None and (change.kind == "fired" or grew):
            result.patterns.append(_pattern(change, "tenant", signature, identities, [tenant_id], members, at))
        _add(result, change)

    # ---- sweep ----------------------------------------------------------------------------

    def sweep(self, now: float, result: Result) -> None:
        """Re-evaluate every firing alert at event time `now`."""
        for firing in list(self.book.firing.values()):
            alert = firing.alert
            tenant = self.tenants.get(alert.tenant_id)
            if tenant is None:
                continue
            if alert.rule == ERROR_BUDGET:
                budget = tenant.slo[alert.scope]
                budget.counts.advance(now)
                self._judge_error_budget(alert.tenant_id, alert.scope, budget, now, result)
            elif alert.rule == SPEND_SPIKE:
                key_id = alert.scope.removeprefix("key:")
                if tenant.rates[key_id].idle_reading(now, self.config.spike).cleared:
                    _add(result, self.book.clear(alert.tenant_id, SPEND_SPIKE, alert.scope, now))
            elif alert.rule in (BUDGET_BURN, BUDGET_EXHAUSTED):
                spend = tenant.spend.get(alert.scope)
                if spend is not None:
                    spend.spend.advance(now)
                    if now >= spend.period_end:
                        spend.add(now, 0.0)
                    self._judge_budget(alert.tenant_id, alert.scope, spend, now, result)
            elif alert.rule == FAILURE_PATTERN and tenant.signatures is not None:
                self._sweep_pattern(alert.tenant_id, alert.scope, tenant.signatures, now, result)

    def idle(self, seconds: float, result: Result) -> None:
        """No event for `seconds` (of wall clock, measured by the caller): re-evaluate the firing
        alerts as if event time had moved on that far from the newest event, so the alert of a
        tenant that went quiet resolves without waiting for the next event of its state."""
        if self.book.firing:
            self.sweep(self.newest + seconds, result)

    def _sweep_pattern(self, tenant_id: str, scope: str, window: SignatureWindow, now: float, result: Result) -> None:
        for signature, members in window.signatures.items():
            if f"signature:{signature.digest()}" == scope:
                members.pruned_at = float("-inf")
                self._judge_pattern(tenant_id, signature, members, now, result)
                return
        _add(result, self.book.clear(tenant_id, FAILURE_PATTERN, scope, now))


class ProviderIncidents:
    """The same failure from many tenants: a provider or model incident, under the system tenant.

    A tenant counts toward `min_tenants` when it failed with the signature at least twice
    inside the window: at a few thousand calls an hour across tenants, background errors
    (a 0.3% rate of 503s) put single failures with the same signature in three tenants
    within ten minutes all the time, but rarely repeats. Every tenant that failed with it is
    named as affected."""

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        patterns = self.config.patterns
        self.failing = SignatureWindow(patterns)
        """Every tenant that failed with a signature (the affected ones)."""
        self.tenants = SignatureWindow(patterns)
        """Tenants that failed with it repeatedly (the ones that count)."""
        self.identities = SignatureWindow(patterns)
        self.book = AlertBook(self.config.clear_for, self.config.update_every)
        self.newest = float("-inf")
        self._last_sweep = float("-inf")
        self.complete_until = float("inf")
        """Event time up to which every failure has arrived (the detect flow: the slowest input
        partition's clock, `InputClocks`). An incident is judged over only at a time `t` with
        newest failure <= t <= complete_until: read as a backlog, one partition runs hours
        (in the harness up to a day) of event time ahead of another, and judged earlier an
        incident would resolve while the failures still to come from the one behind fire it
        a second time."""

    def observe(self, failure: ProviderFailure, into: Result | None = None) -> Result:
        """What changed is added to `into` (a batch's result) or to a new Result."""
        result = Result() if into is None else into
        signature, at, tenant_id = failure.signature, failure.at, failure.tenant_id
        seen = self.failing.signatures.get(signature)
        previous = seen.last_seen.get(tenant_id) if seen is not None else None
        self.failing.add(signature, tenant_id, at)
        identities = self.identities.add(signature, f"{tenant_id}/{failure.key_id}", at)
        if previous is not None and at - previous <= self.config.patterns.window_seconds:
            self.tenants.add(signature, tenant_id, at)
        tenants = self.tenants.signatures.get(signature)
        if tenants is not None:
            self._judge(signature, tenants, identities, at, result)
        if at > self.newest:
            self.newest = at
        if self.newest - self._last_sweep >= self.config.sweep_seconds:
            self._last_sweep = self.newest
            for firing in list(self.book.firing.values()):
                self._sweep(firing.alert, min(self.newest, self.complete_until), result)
        return result

    def advance(self, result: Result) -> None:
        """Every failure up to `complete_until` has arrived: re-evaluate the firing incidents
        there (at most every `sweep_seconds`), so an incident resolves while calls go on
        without failures."""
        now = self.complete_until
        if self.book.firing and now != float("inf") and now - self._last_sweep >= self.config.sweep_seconds:
            self._last_sweep = now
            for firing in list(self.book.firing.values()):
                self._sweep(firing.alert, now, result)

    def idle(self, seconds: float, result: Result) -> None:
        """No failure for `seconds` (wall clock, measured by the caller): see `Detector.idle`.
        Quiet input has nothing on its way, so `complete_until` no longer holds anything back
        (the next failures' clocks set it again)."""
        self.complete_until = float("inf")
        for firing in list(self.book.firing.values()):
            self._sweep(firing.alert, self.newest + seconds, result)

    def _judge(self, signature: Signature, tenants: Members, identities: Members, at: float, result: Result) -> None:
        config = self.config.patterns
        scope = f"signature:{signature.digest()}"
        tenant_count = tenants.distinct(at, config, config.min_tenants)
        identity_count = identities.distinct(at, config, config.min_identities)
        if tenant_count < config.min_tenants or identity_count < config.min_identities:
            self._clear(scope, identities.newest, at, result)
            return
        failing = self.failing.signatures.get(signature)
        affected = sorted(set(tenants.last_seen) | set(failing.last_seen if failing is not None else ()))
        finding = Finding(
            tenant_id=SYSTEM_TENANT,
            rule=PROVIDER_INCIDENT,
            scope=scope,
            severity="page",
            summary=(
                f"provider incident: {signature.text()} from {len(affected)} tenants and {identity_count} identities "
                f"({identities.count} failures in {duration_text(at - identities.first_seen)}): {', '.join(affected[:20])}"
            ),
            value=float(tenant_count),
            threshold=float(config.min_tenants),
            labels=_signature_labels(signature),
            annotations={
                "tenants": ",".join(affected),
                "identities": str(identity_count),
                "failures": str(identities.count),
            },
            evidence_sql=pattern_sql(None, signature, identities.first_seen),
        )
        before = self.book.alert(SYSTEM_TENANT, PROVIDER_INCIDENT, scope)
        grew = before is not None and (before.value or 0) < tenant_count
        change = self.book.holds(finding, at, news=grew)
        if change is not None and (change.kind == "fired" or grew):
            members = sorted(identities.last_seen)
            result.patterns.append(_pattern(change, "provider", signature, members, affected, identities, at))
        _add(result, change)

    def _sweep(self, alert: Alert, now: float, result: Result) -> None:
        scope = alert.scope
        for signature, tenants in self.tenants.signatures.items():
            if f"signature:{signature.digest()}" == scope:
                identities = self.identities.signatures.get(signature)
                if identities is not None:
                    tenants.pruned_at = identities.pruned_at = float("-inf")
                    self._judge(signature, tenants, identities, now, result)
                    return
        # its failures have left the windows (a newer failure moved them on): its last update
        # stands for its newest failure
        self._clear(scope, (alert.updated_at or alert.starts_at).timestamp(), now, result)

    def _clear(self, scope: str, newest_failure: float, at: float, result: Result) -> None:
        """The incident's condition does not hold at `at`: counted toward its resolution only
        when `at` is neither before its newest failure nor past `complete_until` (see there)."""
        if newest_failure <= at <= self.complete_until:
            _add(result, self.book.clear(SYSTEM_TENANT, PROVIDER_INCIDENT, scope, at))


class Detection:
    """Everything in one process (tests and the in-process benchmark): one Detector for all
    tenants feeding one ProviderIncidents."""

    def __init__(self, config: DetectionConfig | None = None, controls: Controls | None = None) -> None:
        self.detector = Detector(config, controls)
        self.incidents = ProviderIncidents(config)

    def observe(self, event: dict[str, Any], into: Result | None = None) -> Result:
        """What changed is added to `into` (a batch's result) or to a new Result."""
        result = Result() if into is None else into
        failures = result.provider_failures
        known = len(failures)
        self.detector.observe(event, result)
        if len(failures) > known:
            for failure in failures[known:]:
                self.incidents.observe(failure, result)
            del failures[known:]  # consumed here
        return result


def _add(result: Result, change: Change | None) -> None:
    if change is not None:
        result.changes.append(change)


def _signature_labels(signature: Signature) -> dict[str, str]:
    return {
        "provider": signature.provider,
        "model": signature.model,
        "status": str(signature.status),
        "error_type": signature.error_type,
        "error_code": signature.error_code,
    }


def _pattern(
    change: Change,
    scope: Literal["tenant", "provider"],
    signature: Signature,
    identities: list[str],
    tenants: list[str],
    members: Members,
    at: float,
) -> FailurePattern:
    return FailurePattern(
        pattern_id=change.alert.fingerprint,
        tenant_id=change.alert.tenant_id,
        scope=scope,
        signature=signature.digest(),
        provider=signature.provider,
        model=signature.model,
        status=signature.status,
        error_type=signature.error_type,
        error_code=signature.error_code,
        context_hash=signature.context_hash,
        identities=identities,
        tenants=tenants,
        count=max(1, members.count),
        first_seen=moment(members.first_seen),
        last_seen=moment(members.newest),
        detected_at=moment(at),
    )


__all__ = ["Controls", "Detection", "DetectionConfig", "Detector", "ProviderIncidents", "Result", "fingerprint"]
