"""Synthetic multi-tenant traffic with labelled incidents, for `bench/detection/run.py`.

Tenants have heavy-tailed sizes (a Pareto tail capped at 6,000 calls an hour, and a few at
about 10 calls an hour), humans with delegated agents, Poisson arrivals under a daily cycle,
log-normal call costs and background errors (0.3% 5xx/429, 0.5% 4xx), for `days` days. The
last day carries the incidents below, each labelled with the detector that must catch it
(`required`) or that may rightly fire on it (not required, not a false positive either),
and decoys that no detector may fire on:

- error bursts: 100% for 15 min, 25x for 40 min, 12x for 4 h (error_budget_burn);
- runaway agents: a loop at a call a second (spend_spike, within 5 min);
- slow cost drift: spend ramping to 15x over 8 h against a daily budget (budget burn);
- a provider outage: one model fails with 529 for every tenant using it, 12 min (provider_incident);
- one failure signature from exactly N-1, N and 2N identities (failure_pattern for N and 2N);
- decoys: one identity failing 1,000 times; 30 identities failing with 30 different errors;
  a busy Monday morning at 3x the usual traffic; the slow drift (no spend spike).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from detection.synthetic import call_event
from schemas.models import SYSTEM_TENANT

MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4"))
OUTAGE_MODEL = MODELS[2]
BACKGROUND_ERRORS = ((503, "overloaded_error"), (500, "api_error"), (429, "rate_limit_error"), (502, "upstream_error"))
CLIENT_ERRORS = ("context_length_exceeded", "invalid_image", "bad_tool_schema")
DETECTOR_RULES = {
    "error_budget": ("error_budget_burn",),
    "budget": ("budget_burn", "budget_exhausted"),
    "spend_spike": ("spend_spike",),
    "failure_pattern": ("failure_pattern",),
    "provider_incident": ("provider_incident",),
}


@dataclass(frozen=True, slots=True)
class Incident:
    name: str
    detector: str
    tenant_id: str
    start: float
    end: float
    scope: str | None = None
    """The alert scope that must match; None: any scope of the tenant."""
    required: bool = True


@dataclass(slots=True)
class Identity:
    key_id: str
    actor: tuple[str, str]
    root: tuple[str, str]
    weight: float
    cost_scale: float
    shape: str


@dataclass(slots=True)
class Tenant:
    tenant_id: str
    calls_per_hour: float
    identities: list[Identity]
    models: list[tuple[str, str]]
    budget_usd_per_day: float | None = None


@dataclass(slots=True)
class Scenario:
    start: float
    days: int
    tenants: list[Tenant]
    incidents: list[Incident] = field(default_factory=list)
    decoys: list[str] = field(default_factory=list)
    modifiers: list[Any] = field(default_factory=list)
    """Functions (tenant, identity, at, call) -> call or None, applied in order."""
    extra: list[dict[str, Any]] = field(default_factory=list)
    """Calls added on top of the background traffic (loops, failures)."""


def daily_factor(at: float) -> float:
    """0.15 at night to 1.0 at 14:00 UTC."""
    hour = (at % 86400) / 3600
    return 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) ** 2


def build(seed: int = 7, tenants: int = 40, days: int = 2, start: float = 1_780_012_800.0) -> Scenario:
    rng = random.Random(seed)
    population = []
    for index in range(tenants):
        tiny = index % 8 == 7
        rate = 10.0 if tiny else min(6000.0, 100.0 * rng.paretovariate(1.2))
        tenant_id = f"t{index:02d}"
        humans = max(1, int(math.sqrt(rate / 5)))
        identities = []
        for human in range(humans):
            root = ("human", f"{tenant_id}-u{human}")
            identities.append(_identity(rng, f"{tenant_id}-h{human}", root, root))
            for agent in range(rng.randint(0, 2)):
                actor = ("agent", f"{tenant_id}-u{human}-bot{agent}")
                identities.append(_identity(rng, f"{tenant_id}-h{human}-a{agent}", actor, root))
        models = rng.sample(MODELS, rng.randint(1, 3))
        population.append(Tenant(tenant_id, rate, identities, models))
    scenario = Scenario(start, days, population)
    _inject(scenario, rng)
    return scenario


def _identity(rng: random.Random, key_id: str, actor: tuple[str, str], root: tuple[str, str]) -> Identity:
    return Identity(key_id, actor, root, rng.paretovariate(1.5), rng.lognormvariate(0, 0.5), f"shape-{key_id}")


def _inject(scenario: Scenario, rng: random.Random) -> None:
    day = scenario.start + (scenario.days - 1) * 86400
    busy = sorted((t for t in scenario.tenants if t.calls_per_hour >= 300), key=lambda t: -t.calls_per_hour)
    medium = [t for t in scenario.tenants if 100 <= t.calls_per_hour < 1500 and len(t.identities) >= 6]
    used: set[str] = set()

    def take(pool: list[Tenant]) -> Tenant:
        tenant = next(t for t in pool if t.tenant_id not in used)
        used.add(tenant.tenant_id)
        return tenant

    # error bursts at several burn rates
    for rate, minutes, hour in ((1.0, 15, 10), (0.25, 40, 14), (0.12, 240, 5)):
        tenant = take(busy)
        begin, end = day + hour * 3600, day + hour * 3600 + minutes * 60
        scenario.modifiers.append(_error_burst(tenant.tenant_id, begin, end, rate, rng))
        scenario.incidents.append(
            Incident(f"{rate:.0%} errors {minutes} m", "error_budget", tenant.tenant_id, begin, end)
        )
    # runaway agents: loops at a call a second for 30 min
    for hour in (3, 16, 21):
        tenant = take(medium)
        agent = next(i for i in tenant.identities if i.actor[0] == "agent")
        begin = day + hour * 3600
        for second in range(1800):
            scenario.extra.append(
                _call(
                    tenant,
                    agent,
                    begin + second,
                    OUTAGE_MODEL if OUTAGE_MODEL in tenant.models else tenant.models[0],
                    0.05,
                )
            )
        scenario.incidents.append(
            Incident("runaway agent", "spend_spike", tenant.tenant_id, begin, begin + 1800, scope=f"key:{agent.key_id}")
        )
        scenario.incidents.append(  # the loop may rightly trip the tenant's budget too, if it has one
            Incident("runaway agent", "budget", tenant.tenant_id, begin, begin + 1800, required=False)
        )
    # slow cost drift against a daily budget of twice the usual daily spend
    tenant = take(medium)
    tenant.budget_usd_per_day = 2.0 * _daily_spend(tenant)
    begin, ramp_end, end = day + 4 * 3600, day + 12 * 3600, day + 20 * 3600
    scenario.modifiers.append(_drift(tenant.tenant_id, begin, ramp_end, end, 15.0))
    scenario.incidents.append(Incident("slow cost drift", "budget", tenant.tenant_id, begin, end + 4 * 3600))
    scenario.decoys.append(f"slow cost drift in {tenant.tenant_id}: no spend spike")
    # provider outage across every tenant using the model
    begin, end = day + 20 * 3600, day + 20 * 3600 + 720
    scenario.modifiers.append(_provider_outage(begin, end))
    scenario.incidents.append(Incident("provider outage", "provider_incident", SYSTEM_TENANT, begin, end))
    for tenant in scenario.tenants:
        if OUTAGE_MODEL in tenant.models:
            for detector in ("error_budget", "failure_pattern"):
                scenario.incidents.append(
                    Incident("provider outage", detector, tenant.tenant_id, begin, end, required=False)
                )
    # one signature from N-1, N and 2N identities (a broken prompt template: 400s, shared shape)
    for count, required in ((2, False), (3, True), (6, True)):
        tenant = take(medium)
        begin = day + 9 * 3600
        for index, identity in enumerate(tenant.identities[:count]):
            for attempt in range(5):
                at = begin + 60 * attempt + index
                scenario.extra.append(
                    _call(
                        tenant,
                        identity,
                        at,
                        tenant.models[0],
                        0.0,
                        400,
                        "invalid_request_error",
                        "tool_schema",
                        f"broken-{tenant.tenant_id}",
                    )
                )
        if required:
            scenario.incidents.append(
                Incident(f"pattern x{count}", "failure_pattern", tenant.tenant_id, begin, begin + 300)
            )
        else:
            scenario.decoys.append(f"pattern from {count} identities in {tenant.tenant_id}")
    # decoys
    tenant = take(medium)
    for n in range(1000):
        scenario.extra.append(
            _call(
                tenant,
                tenant.identities[0],
                day + 12 * 3600 + 3.6 * n,
                tenant.models[0],
                0.0,
                400,
                "invalid_request_error",
                "tool_schema",
                "one-shape",
            )
        )
    scenario.decoys.append(f"one identity failing 1,000 times in {tenant.tenant_id}")
    tenant = take([t for t in medium if len(t.identities) >= 10] or medium)
    for n in range(30):
        identity = tenant.identities[n % len(tenant.identities)]
        scenario.extra.append(
            _call(
                tenant,
                identity,
                day + 15 * 3600 + 20 * n,
                tenant.models[0],
                0.0,
                400,
                "invalid_request_error",
                f"code-{n}",
                f"shape-{n}",
            )
        )
    scenario.decoys.append(f"30 identities with 30 different errors in {tenant.tenant_id}")
    tenant = take(busy)
    scenario.modifiers.append(_monday(tenant.tenant_id, day + 8 * 3600, day + 12 * 3600))
    scenario.decoys.append(f"busy Monday morning (3x traffic) in {tenant.tenant_id}")


def _daily_spend(tenant: Tenant) -> float:
    mean_cost = (
        0.004
        * math.exp(1.1**2 / 2)
        * sum(i.cost_scale * i.weight for i in tenant.identities)
        / sum(i.weight for i in tenant.identities)
    )
    return tenant.calls_per_hour * 24 * 0.52 * mean_cost  # 0.52: mean of the daily factor


def _error_burst(tenant_id: str, begin: float, end: float, rate: float, rng: random.Random) -> Any:
    def modify(tenant: Tenant, call: dict[str, Any]) -> dict[str, Any]:
        if tenant.tenant_id == tenant_id and begin <= call["at"] < end and rng.random() < rate:
            call.update(status=503, error_type="overloaded_error", error_code=None, cost=0.0)
        return call

    return modify


def _provider_outage(begin: float, end: float) -> Any:
    def modify(tenant: Tenant, call: dict[str, Any]) -> dict[str, Any]:
        if begin <= call["at"] < end and call["model"] == OUTAGE_MODEL:
            call.update(status=529, error_type="overloaded_error", error_code=None, cost=0.0)
        return call

    return modify


def _drift(tenant_id: str, begin: float, ramp_end: float, end: float, factor: float) -> Any:
    def modify(tenant: Tenant, call: dict[str, Any]) -> dict[str, Any]:
        at = call["at"]
        if tenant.tenant_id == tenant_id and begin <= at < end:
            ramp = min(1.0, (at - begin) / (ramp_end - begin))
            call["cost"] *= 1 + (factor - 1) * ramp
        return call

    return modify


def _monday(tenant_id: str, begin: float, end: float) -> Any:
    def modify(tenant: Tenant, call: dict[str, Any]) -> dict[str, Any]:
        return call  # the extra traffic is generated by `rate_boost`

    modify.boost = (tenant_id, begin, end, 3.0)  # type: ignore[attr-defined]
    return modify


def _call(
    tenant: Tenant,
    identity: Identity,
    at: float,
    model: tuple[str, str],
    cost: float,
    status: int = 200,
    error_type: str | None = None,
    error_code: str | None = None,
    shape: str | None = None,
) -> dict[str, Any]:
    return {
        "at": at,
        "tenant": tenant,
        "identity": identity,
        "model": model,
        "cost": cost,
        "status": status,
        "error_type": error_type,
        "error_code": error_code,
        "shape": shape or identity.shape,
    }


def _background(tenant: Tenant, scenario: Scenario, rng: random.Random) -> Iterator[dict[str, Any]]:
    boosts = [m.boost for m in scenario.modifiers if hasattr(m, "boost") and m.boost[0] == tenant.tenant_id]
    peak = tenant.calls_per_hour / 3600 * max([3.0] + [b[3] for b in boosts])
    weights = [i.weight for i in tenant.identities]
    at, stop = scenario.start, scenario.start + scenario.days * 86400
    while True:
        at += rng.expovariate(peak)
        if at >= stop:
            return
        rate = tenant.calls_per_hour / 3600 * daily_factor(at)
        for _, begin, end, factor in boosts:
            if begin <= at < end:
                rate *= factor
        if rng.random() * peak > rate:
            continue
        identity = rng.choices(tenant.identities, weights)[0]
        model = rng.choice(tenant.models)
        roll = rng.random()
        if roll < 0.003:
            status, error_type = rng.choice(BACKGROUND_ERRORS)
            yield _call(tenant, identity, at, model, 0.0, status, error_type)
        elif roll < 0.008:
            yield _call(tenant, identity, at, model, 0.0, 400, "invalid_request_error", rng.choice(CLIENT_ERRORS))
        else:
            yield _call(tenant, identity, at, model, 0.004 * identity.cost_scale * rng.lognormvariate(0, 1.1))


def calls(scenario: Scenario, seed: int = 7) -> list[dict[str, Any]]:
    """Every call of the scenario in event-time order (compact dicts; see `to_event`)."""
    rng = random.Random(seed + 1)
    everything = [call for tenant in scenario.tenants for call in _background(tenant, scenario, rng)]
    everything.extend(scenario.extra)
    modifiers = [m for m in scenario.modifiers if not hasattr(m, "boost")]
    for call in everything:
        for modify in modifiers:
            modify(call["tenant"], call)
    everything.sort(key=lambda call: call["at"])
    return everything


def to_event(call: dict[str, Any], number: int) -> dict[str, Any]:
    identity: Identity = call["identity"]
    provider, model = call["model"]
    return call_event(
        call["tenant"].tenant_id,
        call["at"],
        key_id=identity.key_id,
        actor=identity.actor,
        root=identity.root,
        status=call["status"],
        error_type=call["error_type"],
        error_code=call["error_code"],
        provider=provider,
        model=model,
        cost_usd=call["cost"],
        context_hash=call["shape"],
        event_id=f"{number:012d}-{identity.key_id}",
    )
