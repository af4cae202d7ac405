"""The contracts of docs/architecture.md, Contracts as pydantic v2 models.

Every record on a tokentrail topic is one of these, serialized as JSON with orjson
(`schemas.wire`). Timestamps are UTC, RFC 3339 with milliseconds (`2026-11-28T11:47:49.123Z`);
naive timestamps are rejected because their zone would be a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

SCHEMA_VERSION = 1

SYSTEM_TENANT = "_system"
"""Sentinel tenant that owns system events and calls nobody could be attributed to (docs/architecture.md, invariant 1)."""


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the one timestamp format on the wire."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _utc_millis(moment: datetime) -> datetime:
    """Reject naive datetimes; normalize to UTC at the wire's millisecond precision."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must carry a time zone (use UTC, e.g. ...Z)")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


UtcTimestamp = Annotated[
    datetime,
    AfterValidator(_utc_millis),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A timezone-aware datetime, normalized to UTC with millisecond precision, so it round-trips."""

NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]
ActorType = Literal["human", "agent", "system"]
Provider = Annotated[str, Field(min_length=1, max_length=64)]
"""`openai`, `anthropic`, or the name of an OpenAI-compatible upstream (TOKENTRAIL_UPSTREAMS),
which is genai-prices' provider id when it knows the provider."""
Severity = Literal["INFO", "WARN", "ERROR"]
EventSource = Literal["gateway", "flows", "control", "system"]
EventType = Literal[
    "llm_call",
    "llm_call_failed",
    "protection_decision",
    "unauthorized_access_attempt",
    "freeze_changed",
    "budget_evaluated",
    "pattern_detected",
    "alert_fired",
    "alert_resolved",
    "replay_executed",
]


class Contract(BaseModel):
    """Base of every wire record: unknown fields are rejected so typos surface at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Contract):
    type: ActorType
    id: NonEmpty


class ChainLink(Contract):
    """One hop of a delegation chain; chains are ordered root first, caller last (docs/architecture.md, invariant 2)."""

    key_id: NonEmpty
    actor: Actor


class EventContext(Contract):
    request_id: str | None = None
    trace_id: str | None = None


class UnifiedEvent(Contract):
    """Every event of the product, in one frozen shape; rows of the ClickHouse `events` table."""

    event_id: NonEmpty
    """UUIDv7, so ids sort by creation time."""
    event_type: EventType
    event_source: EventSource
    tenant_id: NonEmpty
    timestamp: UtcTimestamp
    severity: Severity
    actor: Actor
    context: EventContext
    payload: dict[str, Any]


class RawCall(Contract):
    """One LLM call as the gateway saw it, signed; the only input of the enrich flow.

    `usage` is the provider's own usage block, untouched: Anthropic's `input_tokens` exclude
    cache reads and writes, OpenAI's `prompt_tokens` include cached tokens, and genai-prices
    maps each with `extract_usage(..., provider_id=provider, api_flavor=api_flavor)`.
    """

    kind: Literal["call"] = "call"
    schema_version: int = SCHEMA_VERSION
    call_id: NonEmpty
    """UUIDv7 minted by the gateway; the idempotency key all the way to ClickHouse."""
    gateway_id: NonEmpty
    received_at: UtcTimestamp
    first_byte_at: UtcTimestamp | None = None
    completed_at: UtcTimestamp
    tenant_id: NonEmpty
    key_id: NonEmpty
    chain: list[ChainLink] = Field(min_length=1)
    """Delegation chain from the identity registry at request time, root first, caller last."""
    request_id: NonEmpty
    trace_id: str | None = None
    end_user: str | None = None
    """OpenAI `user` field, recorded as end-user context (never used for attribution)."""
    session_id: str | None = None
    """`x-tokentrail-session` header, if the client sent one."""
    provider: Provider
    api_flavor: str
    """genai-prices api flavor: `chat`, `responses`, `embeddings`, ... for OpenAI, `default` for Anthropic."""
    endpoint: NonEmpty
    requested_model: str | None = None
    served_model: str | None = None
    context_hash: str | None = Field(default=None, max_length=64)
    """Request-shape hash (endpoint, model, tool names, response format type, system prompt digest;
    never user text), part of a failure signature; see `gateway.context_hash`. None when the
    gateway refused the request before reading its body."""
    stream: bool = False
    status: int = Field(ge=100, le=599)
    """HTTP status the client received (502/504 when the upstream failed or timed out)."""
    error_type: str | None = None
    error_code: str | None = None
    client_disconnected: bool = False
    usage: dict[str, Any] | None = None
    latency_ms: float = Field(ge=0)
    ttft_ms: float | None = Field(default=None, ge=0)
    request_body: str | None = None
    """Redacted request body; present only when capture is on for the tenant (docs/architecture.md, invariant 8)."""
    response_body: str | None = None
    signature: str = ""
    """Hex HMAC-SHA256, see `schemas.signing`."""


class GatewayEvent(Contract):
    """A UnifiedEvent the gateway decided (protection decision, unauthorized attempt), signed
    and sent on the raw topic so the flows pass it through with the same verification."""

    kind: Literal["event"] = "event"
    schema_version: int = SCHEMA_VERSION
    event: UnifiedEvent
    signature: str = ""


RawRecord = Annotated[RawCall | GatewayEvent, Field(discriminator="kind")]
"""What `tokentrail.calls.raw` carries."""


class Identity(Contract):
    """A tokentrail key's owner, on the compacted `tokentrail.identities` topic keyed by key id.

    Only the SHA-256 of the secret is stored. A revoked key keeps its record (with
    `revoked_at`) so history stays attributable; a tombstone means deleted.
    """

    key_id: NonEmpty
    key_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    tenant_id: NonEmpty
    actor: Actor
    parent_key_id: str | None = None
    """The key this one acts on behalf of."""
    ancestors: list[ChainLink] = Field(default_factory=list)
    """The parent's chain, root first, resolved when the key is minted. A key's parent never
    changes, so storing it here lets every consumer resolve a full chain from one record."""
    created_at: UtcTimestamp
    revoked_at: UtcTimestamp | None = None
    expires_at: UtcTimestamp | None = None
    """After this the gateway refuses the key (401). A delegated key never outlives its parent."""
    models: list[NonEmpty] | None = None
    """Models the key may call (exact names, as the request's `model`); None means any. A
    delegated key's list is a subset of its parent's."""
    signature: str = ""
    """`<key id>:<hex HMAC>` with the operator key (`schemas.signing`); unsigned records are refused."""

    def chain(self) -> list[ChainLink]:
        """Root first, this key last (docs/architecture.md, invariant 2)."""
        return [*self.ancestors, ChainLink(key_id=self.key_id, actor=self.actor)]


class Freeze(Contract):
    """Kill switch for a tenant or a key; `frozen=False` lifts it."""

    kind: Literal["freeze"] = "freeze"
    scope: Annotated[str, Field(pattern=r"^(tenant|key):.+$")]
    frozen: bool
    reason: str | None = None
    changed_at: UtcTimestamp
    changed_by: str | None = None
    signature: str = ""
    """Operator signature, as on `Identity`."""


class Budget(Contract):
    kind: Literal["budget"] = "budget"
    scope: Annotated[str, Field(pattern=r"^(tenant|key):.+$")]
    period: Literal["day", "month"]
    amount_usd: Annotated[Decimal, Field(gt=0)]
    changed_at: UtcTimestamp
    signature: str = ""
    """Operator signature, as on `Identity`."""


class Slo(Contract):
    """Availability objective of a tenant: share of calls that must not fail with a 5xx."""

    kind: Literal["slo"] = "slo"
    scope: Annotated[str, Field(pattern=r"^tenant:.+$")]
    target: Annotated[float, Field(gt=0, lt=1)] = 0.99
    changed_at: UtcTimestamp
    signature: str = ""
    """Operator signature, as on `Identity`."""


class Limits(Contract):
    """Per-identity rate limits enforced by each gateway replica (None means unlimited)."""

    kind: Literal["limits"] = "limits"
    scope: Annotated[str, Field(pattern=r"^(tenant|key):.+$")]
    requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[int, Field(gt=0)] | None = None
    changed_at: UtcTimestamp
    signature: str = ""
    """Operator signature, as on `Identity`."""


class Capture(Contract):
    """Opt-in prompt/response capture for a tenant (off unless a record turns it on)."""

    kind: Literal["capture"] = "capture"
    scope: Annotated[str, Field(pattern=r"^tenant:.+$")]
    enabled: bool
    changed_at: UtcTimestamp
    signature: str = ""
    """Operator signature, as on `Identity`."""


ControlRecord = Annotated[Freeze | Budget | Slo | Limits | Capture, Field(discriminator="kind")]
"""What `tokentrail.controls` carries; the Kafka key is `control_key(record)`."""


def control_key(record: Freeze | Budget | Slo | Limits | Capture) -> str:
    """Compaction key: one live record per kind and scope."""
    return f"{record.kind}:{record.scope}"


AlertRule = Literal[
    "error_budget_burn", "budget_burn", "budget_exhausted", "spend_spike", "failure_pattern", "provider_incident"
]


class Alert(Contract):
    """An alert state change on `tokentrail.alerts`, keyed by its stable fingerprint.

    One alert is one (tenant, rule, scope). Its records on the topic are: the first firing
    record (`revision` 0: notify), updates while it keeps firing (`revision` 1, 2, ...: refresh
    receivers such as Alertmanager, do not notify again), and one resolved record (`ends_at`
    set: notify). Times are event time (the records' timestamps), not wall-clock.
    """

    fingerprint: NonEmpty
    """Hex SHA-256 prefix of (tenant, rule, scope): the same condition always has the same one."""
    status: Literal["firing", "resolved"]
    rule: AlertRule
    severity: Literal["page", "ticket", "info"]
    tenant_id: NonEmpty
    """The tenant alerted; `_system` for provider or model incidents spanning tenants."""
    scope: NonEmpty = "tenant"
    """What inside the tenant: `tenant`, `model:<provider>/<model>`, `key:<key_id>`, `signature:<hash>`."""
    summary: NonEmpty
    """One human sentence: who, what, how much, since when."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Identity of the alert (tenant, rule, scope, severity, key_id, root_actor, ...): what receivers group by."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Numbers and explanations (burn rates, spend, baseline, projected exhaustion, tenants)."""
    key_id: str | None = None
    """The identity (key) the alert is about, when it is about one."""
    actor: Actor | None = None
    """That identity's actor (a human or an agent)."""
    root_actor: Actor | None = None
    """The human at the root of the identity's delegation chain (invariant 2)."""
    value: float | None = None
    threshold: float | None = None
    starts_at: UtcTimestamp
    """Event time of the record that completed the condition."""
    updated_at: UtcTimestamp | None = None
    """Event time of this state change (equal to `starts_at` for the first firing record)."""
    ends_at: UtcTimestamp | None = None
    """Set on the resolved record only."""
    revision: Annotated[int, Field(ge=0)] = 0
    """0 for the first firing record; each update while firing adds one."""
    evidence_sql: str | None = None
    """A ClickHouse query over `llm_calls` that shows the calls behind the alert."""
    evidence_url: str | None = None


class FailurePattern(Contract):
    """The same failure signature seen from several identities (a tenant's pattern) or several
    tenants (a provider or model incident, recorded under the system tenant): the payload of a
    `pattern_detected` event and a row of the `failure_patterns` table."""

    pattern_id: NonEmpty
    """The fingerprint of the pattern's alert."""
    tenant_id: NonEmpty
    """The tenant, or `_system` for an incident across tenants."""
    scope: Literal["tenant", "provider"]
    signature: NonEmpty
    """Hex hash of (provider, model, status, error type, error code[, context hash])."""
    provider: str
    model: str
    status: int
    error_type: str = ""
    error_code: str = ""
    context_hash: str = ""
    """The request-shape hash the gateway computed; empty for provider incidents (shapes differ per tenant)."""
    identities: list[str]
    """Distinct key ids that failed with this signature in the window, sorted."""
    tenants: list[str]
    """Distinct tenants affected, sorted (one for a tenant's pattern)."""
    count: Annotated[int, Field(ge=1)]
    """Failures with this signature in the window."""
    first_seen: UtcTimestamp
    last_seen: UtcTimestamp
    detected_at: UtcTimestamp

    def breadth(self) -> tuple[int, int]:
        """(distinct identities, distinct tenants) it names: with `detected_at`, what tells one
        publication of a growing pattern from another (its event id and `detection_id`)."""
        return len(set(self.identities)), len(set(self.tenants))
