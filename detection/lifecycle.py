"""Alert lifecycle: fire once, update while firing, resolve with hysteresis.

A detector reports, on each evaluation, whether its condition holds for a (tenant, rule,
scope) and the alert's current content. The book turns that into state changes:

- fire: the condition holds and the alert is not firing -> `Change("fired")`, revision 0;
- update: still holding, at most once per `update_every` seconds of event time (or at once
  when the severity rises, which notifies again) -> `Change("updated")`;
- resolve: the condition has been false continuously for `clear_for` seconds -> `Change("resolved")`.

The clear delay is the hysteresis: a condition that flickers around its threshold keeps one
alert firing instead of a storm of fire/resolve pairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from detection.burn import duration_text
from schemas.models import Actor, Alert

SEVERITY_RANK = {"info": 0, "ticket": 1, "page": 2}


def fingerprint(tenant_id: str, rule: str, scope: str) -> str:
    """Stable across processes and restarts: the same condition is always the same alert."""
    return hashlib.sha256(f"{tenant_id}\x1f{rule}\x1f{scope}".encode()).hexdigest()[:32]


def moment(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector says about one alert scope right now (its content when it fires)."""

    tenant_id: str
    rule: str
    scope: str
    severity: Literal["page", "ticket", "info"]
    summary: str
    value: float
    threshold: float
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    actor: tuple[str, str] | None = None
    root_actor: tuple[str, str] | None = None
    evidence_sql: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    kind: Literal["fired", "updated", "resolved"]
    alert: Alert

    @property
    def notifies(self) -> bool:
        """A receiver tells a human about fired and resolved (and escalations, sent as fired)."""
        return self.kind != "updated"


@dataclass(slots=True)
class _Firing:
    alert: Alert
    last_update: float
    clear_since: float | None = None


class AlertBook:
    """Firing alerts of one state partition (a tenant, or the system), by fingerprint."""

    def __init__(self, clear_for: float = 300.0, update_every: float = 60.0) -> None:
        self.clear_for = clear_for
        self.update_every = update_every
        self.firing: dict[tuple[str, str, str], _Firing] = {}
        """By (tenant, rule, scope), the labels the fingerprint is made of."""

    def holds(self, finding: Finding, at: float, news: bool = False) -> Change | None:
        """The condition of `finding` holds at event time `at`; `news`: its content changed in
        a way worth publishing now (an update without waiting for `update_every`)."""
        labels = (finding.tenant_id, finding.rule, finding.scope)
        current = self.firing.get(labels)
        if current is None:
            alert = _alert(fingerprint(*labels), finding, at)
            self.firing[labels] = _Firing(alert, at)
            return Change("fired", alert)
        current.clear_since = None
        old = current.alert
        escalated = SEVERITY_RANK[finding.severity] > SEVERITY_RANK[old.severity]
        if not escalated and not news and at - current.last_update < self.update_every:
            return None
        severity = finding.severity if escalated else old.severity
        alert = replace_alert(_alert(old.fingerprint, finding, at), old, severity)
        current.alert, current.last_update = alert, at
        return Change("fired" if escalated else "updated", alert)

    def clear(self, tenant_id: str, rule: str, scope: str, at: float) -> Change | None:
        """The condition does not hold at `at`: resolve once it has not held for `clear_for`."""
        labels = (tenant_id, rule, scope)
        current = self.firing.get(labels)
        if current is None:
            return None
        if current.clear_since is None:
            current.clear_since = at
        if at - current.clear_since < self.clear_for:
            return None
        del self.firing[labels]
        old = current.alert
        lasted = duration_text(at - old.starts_at.timestamp())
        ended = old.model_copy(
            update={
                "status": "resolved",
                "summary": f"resolved after {lasted}; last seen: {old.summary}",
                "ends_at": moment(at),
                "updated_at": moment(at),
                "revision": old.revision + 1,
            }
        )
        return Change("resolved", ended)

    def is_firing(self, tenant_id: str, rule: str, scope: str) -> bool:
        return (tenant_id, rule, scope) in self.firing

    def alert(self, tenant_id: str, rule: str, scope: str) -> Alert | None:
        """The firing alert's latest state, None when it is not firing."""
        current = self.firing.get((tenant_id, rule, scope))
        return None if current is None else current.alert

    def severity(self, tenant_id: str, rule: str, scope: str) -> str | None:
        """The severity of the firing alert, None when it is not firing."""
        current = self.firing.get((tenant_id, rule, scope))
        return None if current is None else current.alert.severity


def replace_alert(new: Alert, old: Alert, severity: str) -> Alert:
    """`new`'s content under `old`'s identity: same start, next revision."""
    labels = {**new.labels, "severity": severity}
    return new.model_copy(
        update={"starts_at": old.starts_at, "revision": old.revision + 1, "severity": severity, "labels": labels}
    )


def _alert(print_: str, finding: Finding, at: float) -> Alert:
    when = moment(at)
    labels = {
        "alertname": finding.rule,
        "tenant": finding.tenant_id,
        "rule": finding.rule,
        "scope": finding.scope,
        "severity": finding.severity,
        **finding.labels,
    }
    if finding.key_id:
        labels["key_id"] = finding.key_id
    if finding.root_actor:
        labels["root_actor"] = f"{finding.root_actor[0]}:{finding.root_actor[1]}"
    return Alert(
        fingerprint=print_,
        status="firing",
        rule=finding.rule,  # type: ignore[arg-type]
        severity=finding.severity,
        tenant_id=finding.tenant_id,
        scope=finding.scope,
        summary=finding.summary,
        labels=labels,
        annotations=finding.annotations,
        key_id=finding.key_id,
        actor=_actor(finding.actor),
        root_actor=_actor(finding.root_actor),
        value=finding.value,
        threshold=finding.threshold,
        starts_at=when,
        updated_at=when,
        evidence_sql=finding.evidence_sql,
    )


def _actor(pair: tuple[str, str] | None) -> Actor | None:
    return None if pair is None else Actor.model_validate({"type": pair[0], "id": pair[1]})
