"""The seven dashboards, one per question, as data: every panel's title, chart kind and SQL.

The Grafana JSON (`tokentrail.dashboards.grafana`) and the HTML report
(`tokentrail.dashboards.html`) are both generated from these definitions, so a panel's SQL is
written once. SQL uses the ClickHouse plugin's macros (`$__timeFilter(col)`,
`$__timeInterval(col)`, `$__toTime`, `$__conditionalAll`) and the dashboard variables below;
`tokentrail.dashboards.macros` expands them as Grafana does. Time-series SQL returns
`time` first, then either one column per series or (`series`, value) rows, which the plugin
turns into one series per value (long to wide).

Alerts and failure patterns are read from the `events` table (`alert_fired`,
`alert_resolved`, `pattern_detected`, payloads in the `Alert` / `FailurePattern` shape), so
the panels do not depend on how the `alerts` / `failure_patterns` tables are laid out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChartKind = Literal["timeseries", "table", "stat", "barchart", "heatmap"]

TENANT = "$__conditionalAll(tenant_id IN (${tenant}), $tenant)"
"""Filter on the `tenant` variable; `1=1` when All is selected (the plugin's conditionalAll)."""

SEVEN_DAYS = "INTERVAL 7 DAY"


def annotation(name: str) -> str:
    """An annotation of an alert event's payload (a string: `Alert.annotations`)."""
    return f"JSONExtractString(JSONExtractRaw(payload, 'annotations'), '{name}')"


@dataclass(frozen=True)
class Variable:
    """A dashboard text-box variable with its default (thresholds the user may change)."""

    name: str
    label: str
    default: str
    description: str


@dataclass(frozen=True)
class SqlPanel:
    """A ClickHouse panel. `columns` are the columns its SQL must return, in order; `seeded`
    says the test seed makes it non-empty (at least one row with a non-zero number)."""

    title: str
    kind: ChartKind
    sql: str
    columns: tuple[str, ...]
    description: str
    unit: str = "short"
    width: int = 12
    seeded: bool = True


@dataclass(frozen=True)
class PromPanel:
    """A Prometheus panel: live process metrics that are not in ClickHouse."""

    title: str
    expr: str
    legend: str
    description: str
    unit: str = "short"
    width: int = 12


Panel = SqlPanel | PromPanel


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    question: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()

    @property
    def sql_panels(self) -> tuple[SqlPanel, ...]:
        return tuple(p for p in self.panels if isinstance(p, SqlPanel))


# --- Cost ---------------------------------------------------------------------------------

COST = Dashboard(
    uid="tokentrail-cost",
    title="tokentrail / Cost",
    question="Who spends what, on which model, and when does the money run out?",
    panels=(
        SqlPanel(
            "Spend",
            "stat",
            f"SELECT sum(cost_usd) AS spend_usd, sum(calls) AS calls FROM cost_by_tenant_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT}",
            ("spend_usd", "calls"),
            "Priced spend and calls in the time range.",
            unit="currencyUSD",
            width=6,
        ),
        SqlPanel(
            "Unpriced calls",
            "stat",
            f"SELECT sum(unpriced_calls) AS unpriced_calls FROM cost_by_tenant_1m WHERE $__timeFilter(minute) AND {TENANT}",
            ("unpriced_calls",),
            "Calls genai-prices could not price (cost unknown, not zero): they are missing from every spend figure.",
            width=6,
        ),
        SqlPanel(
            "Hourly spend by tenant",
            "timeseries",
            "SELECT $__timeInterval(hour) AS time, tenant_id AS series, sum(cost_usd) AS spend_usd "
            f"FROM cost_by_tenant_1h WHERE $__timeFilter(hour) AND {TENANT} GROUP BY time, series ORDER BY time",
            ("time", "series", "spend_usd"),
            "Spend per tenant per hour (hourly rollup).",
            unit="currencyUSD",
        ),
        SqlPanel(
            "Top spenders (calling identity)",
            "table",
            "SELECT tenant_id, key_id, concat(actor_type, ':', actor_id) AS actor, sum(calls) AS calls, "
            "sum(cost_usd) AS spend_usd, sum(unpriced_calls) AS unpriced_calls FROM cost_by_identity_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT} GROUP BY tenant_id, key_id, actor "
            "ORDER BY spend_usd DESC, calls DESC LIMIT 20",
            ("tenant_id", "key_id", "actor", "calls", "spend_usd", "unpriced_calls"),
            "Attribution goes to the key that made the call and its actor.",
        ),
        SqlPanel(
            "Spend by root human (delegation roll-up)",
            "barchart",
            "SELECT concat(tenant_id, ' / ', root_actor_type, ':', root_actor_id) AS root, sum(cost_usd) AS spend_usd "
            f"FROM cost_by_root_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY root ORDER BY spend_usd DESC LIMIT 20",
            ("root", "spend_usd"),
            "Every call rolled up to the first link of its delegation chain: whom the agents worked for.",
            unit="currencyUSD",
        ),
        SqlPanel(
            "Spend by model",
            "barchart",
            "SELECT concat(provider, '/', model) AS model, sum(cost_usd) AS spend_usd FROM cost_by_model_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT} GROUP BY model HAVING spend_usd > 0 ORDER BY spend_usd DESC LIMIT 20",
            ("model", "spend_usd"),
            "Spend per served model (unpriced models are in their own panel).",
            unit="currencyUSD",
        ),
        SqlPanel(
            "Unpriced calls by model",
            "table",
            "SELECT provider, model, sum(unpriced_calls) AS unpriced_calls, sum(calls) AS calls FROM cost_by_model_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT} GROUP BY provider, model HAVING unpriced_calls > 0 "
            "ORDER BY unpriced_calls DESC",
            ("provider", "model", "unpriced_calls", "calls"),
            "Models without a price: add a price override (TOKENTRAIL_PRICE_OVERRIDES) to count them.",
        ),
        SqlPanel(
            "Month to date and projected month end",
            "table",
            "SELECT tenant_id, sum(cost_usd) AS month_to_date_usd, "
            "sumIf(cost_usd, hour > $__toTime - INTERVAL 24 HOUR) AS last_24h_usd, "
            "month_to_date_usd + last_24h_usd / 24 * "
            "dateDiff('hour', $__toTime, toDateTime(toStartOfMonth($__toTime) + INTERVAL 1 MONTH, 'UTC')) "
            "AS projected_month_usd FROM cost_by_tenant_1h "
            f"WHERE hour >= toStartOfMonth($__toTime) AND hour <= $__toTime AND {TENANT} "
            "GROUP BY tenant_id ORDER BY projected_month_usd DESC",
            ("tenant_id", "month_to_date_usd", "last_24h_usd", "projected_month_usd"),
            "Spend of the month up to the end of the range, and where the last 24 h burn rate takes it by month end.",
        ),
        SqlPanel(
            "Budget burn alerts and projected exhaustion",
            "table",
            "SELECT tenant_id, argMax(JSONExtractString(payload, 'scope'), timestamp) AS scope, "
            "argMax(JSONExtractString(payload, 'status'), timestamp) AS status, "
            f"argMax({annotation('spent_usd')}, timestamp) AS spent_usd, "
            f"argMax({annotation('budget_usd')}, timestamp) AS budget_usd, "
            f"argMax({annotation('exhausted_in')}, timestamp) AS exhausted_in, "
            "argMax(JSONExtractString(payload, 'summary'), timestamp) AS summary, min(timestamp) AS since FROM events "
            "WHERE event_type IN ('alert_fired', 'alert_resolved') "
            "AND JSONExtractString(payload, 'rule') IN ('budget_burn', 'budget_exhausted') "
            f"AND $__timeFilter(timestamp) AND {TENANT} "
            "GROUP BY tenant_id, JSONExtractString(payload, 'fingerprint') ORDER BY since DESC",
            ("tenant_id", "scope", "status", "spent_usd", "budget_usd", "exhausted_in", "summary", "since"),
            "Budget alerts of the detect flow at their latest state: spend so far, the budget, and when it runs "
            "out at the current burn (`tokentrail budget set` defines budgets).",
            width=24,
        ),
    ),
)

# --- Incidents ----------------------------------------------------------------------------

FAILED_MODEL = "concat(provider, '/', if(model = '', requested_model, model))"
"""A failed call often has no served model (the provider never answered), so failures by model
read `llm_calls` and fall back to the requested model; `incidents_by_error_1m` keys on the
served model only."""

INCIDENTS = Dashboard(
    uid="tokentrail-incidents",
    title="tokentrail / Incidents",
    question="What is failing, where, and since when?",
    panels=(
        SqlPanel(
            "Failure rate",
            "timeseries",
            "SELECT $__timeInterval(minute) AS time, sum(failed_calls) / greatest(sum(calls), 1) AS failure_rate "
            f"FROM cost_by_tenant_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY time ORDER BY time",
            ("time", "failure_rate"),
            "Share of calls that failed (4xx or 5xx answers, upstream errors).",
            unit="percentunit",
        ),
        SqlPanel(
            "Failures by provider",
            "timeseries",
            "SELECT $__timeInterval(minute) AS time, provider AS series, sum(calls) AS failures "
            f"FROM incidents_by_error_1m WHERE $__timeFilter(minute) AND {TENANT} "
            "GROUP BY time, series ORDER BY time",
            ("time", "series", "failures"),
            "Failed calls per provider.",
        ),
        SqlPanel(
            "Failures over time by model",
            "heatmap",
            f"SELECT $__timeInterval(timestamp) AS time, {FAILED_MODEL} AS series, count() AS failures "
            f"FROM llm_calls WHERE failed AND $__timeFilter(timestamp) AND {TENANT} "
            "GROUP BY time, series ORDER BY time",
            ("time", "series", "failures"),
            "Where and when failures concentrate: one row per model.",
            width=24,
        ),
        SqlPanel(
            "Failures by model",
            "barchart",
            f"SELECT {FAILED_MODEL} AS model, count() AS failures FROM llm_calls "
            f"WHERE failed AND $__timeFilter(timestamp) AND {TENANT} GROUP BY model ORDER BY failures DESC LIMIT 20",
            ("model", "failures"),
            "Failed calls per model (the requested one when none was served).",
        ),
        SqlPanel(
            "Failures by error type",
            "table",
            "SELECT provider, error_type, status, sum(calls) AS failures, uniqExact(tenant_id) AS tenants "
            f"FROM incidents_by_error_1m WHERE $__timeFilter(minute) AND {TENANT} "
            "GROUP BY provider, error_type, status ORDER BY failures DESC LIMIT 50",
            ("provider", "error_type", "status", "failures", "tenants"),
            "Provider error type and HTTP status; several tenants on one error points at the provider.",
        ),
    ),
)

# --- Failure patterns ---------------------------------------------------------------------

PATTERN_TENANTS = "$__conditionalAll(hasAny(JSONExtract(payload, 'tenants', 'Array(String)'), [${tenant}]), $tenant)"
"""A pattern matches the tenant filter when any tenant it affected is selected (provider
incidents are recorded under the system tenant and list the tenants they hit)."""

PATTERNS = Dashboard(
    uid="tokentrail-failure-patterns",
    title="tokentrail / Failure patterns",
    question="Which failures repeat across identities or tenants, and who do they hit?",
    panels=(
        SqlPanel(
            "Detected patterns",
            "table",
            "SELECT timestamp AS detected_at, JSONExtractString(payload, 'scope') AS scope, "
            "JSONExtractString(payload, 'provider') AS provider, JSONExtractString(payload, 'model') AS model, "
            "JSONExtractInt(payload, 'status') AS status, JSONExtractString(payload, 'error_type') AS error_type, "
            "JSONExtractInt(payload, 'count') AS failures, "
            "length(JSONExtract(payload, 'identities', 'Array(String)')) AS identities, "
            "arrayStringConcat(JSONExtract(payload, 'tenants', 'Array(String)'), ', ') AS tenants "
            "FROM events WHERE event_type = 'pattern_detected' "
            f"AND $__timeFilter(timestamp) AND {PATTERN_TENANTS} ORDER BY detected_at DESC LIMIT 100",
            ("detected_at", "scope", "provider", "model", "status", "error_type", "failures", "identities", "tenants"),
            "The same failure signature from several identities (tenant scope) or several tenants (provider scope).",
            width=24,
        ),
        SqlPanel(
            "Patterns detected over time",
            "timeseries",
            "SELECT $__timeInterval(timestamp) AS time, JSONExtractString(payload, 'scope') AS series, "
            "count() AS patterns FROM events WHERE event_type = 'pattern_detected' "
            f"AND $__timeFilter(timestamp) AND {PATTERN_TENANTS} GROUP BY time, series ORDER BY time",
            ("time", "series", "patterns"),
            "Timeline of detections, by scope.",
        ),
        SqlPanel(
            "Affected identities",
            "table",
            "SELECT identity, count() AS patterns, sum(JSONExtractInt(payload, 'count')) AS failures, "
            "max(timestamp) AS last_detected FROM events "
            "ARRAY JOIN JSONExtract(payload, 'identities', 'Array(String)') AS identity "
            "WHERE event_type = 'pattern_detected' "
            f"AND $__timeFilter(timestamp) AND {PATTERN_TENANTS} GROUP BY identity ORDER BY patterns DESC, identity",
            ("identity", "patterns", "failures", "last_detected"),
            "Keys that failed with a detected signature.",
        ),
        SqlPanel(
            "Affected tenants",
            "barchart",
            "SELECT affected_tenant, count() AS patterns FROM events "
            "ARRAY JOIN JSONExtract(payload, 'tenants', 'Array(String)') AS affected_tenant "
            "WHERE event_type = 'pattern_detected' "
            f"AND $__timeFilter(timestamp) AND {PATTERN_TENANTS} GROUP BY affected_tenant ORDER BY patterns DESC",
            ("affected_tenant", "patterns"),
            "Tenants hit by a detected pattern.",
        ),
    ),
)

# --- Governance ---------------------------------------------------------------------------

GOVERNANCE = Dashboard(
    uid="tokentrail-governance",
    title="tokentrail / Governance",
    question="What did protection allow, throttle and refuse, and who was refused?",
    panels=(
        SqlPanel(
            "Protection decisions",
            "timeseries",
            "SELECT time, series, sum(requests) AS requests FROM ("
            "SELECT $__timeInterval(minute) AS time, 'allowed' AS series, sum(calls) AS requests "
            f"FROM cost_by_tenant_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY time "
            "UNION ALL SELECT $__timeInterval(minute) AS time, "
            "if(reason = 'rate_limited', 'throttled', 'rejected') AS series, sum(events) AS requests "
            f"FROM policy_decisions_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY time, series"
            ") GROUP BY time, series ORDER BY time",
            ("time", "series", "requests"),
            "Allowed = calls that reached a provider; throttled = rate limited; rejected = every other refusal.",
            width=24,
        ),
        SqlPanel(
            "Denials by reason",
            "barchart",
            "SELECT concat(event_type, ': ', reason) AS reason, sum(events) AS denials FROM policy_decisions_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT} GROUP BY reason ORDER BY denials DESC",
            ("reason", "denials"),
            "Refusals by the gateway, by event type and reason (unknown or revoked key, frozen, rate limited, ...).",
        ),
        SqlPanel(
            "Refused identities",
            "table",
            "SELECT tenant_id, concat(actor_type, ':', actor_id) AS actor, reason, sum(events) AS denials, "
            "max(minute) AS last_denied FROM policy_decisions_1m "
            f"WHERE $__timeFilter(minute) AND {TENANT} GROUP BY tenant_id, actor, reason "
            "ORDER BY denials DESC LIMIT 50",
            ("tenant_id", "actor", "reason", "denials", "last_denied"),
            "Who was refused, and why; unknown keys are the system tenant's anonymous actor.",
        ),
        SqlPanel(
            "Freezes in force",
            "table",
            "SELECT tenant_id, JSONExtractString(payload, 'key_id') AS key_id, "
            "JSONExtractString(payload, 'freeze_reason') AS freeze_reason, count() AS refused_requests, "
            "min(timestamp) AS first_refused, max(timestamp) AS last_refused FROM events "
            "WHERE event_type = 'protection_decision' AND JSONExtractString(payload, 'reason') = 'frozen' "
            f"AND $__timeFilter(timestamp) AND {TENANT} GROUP BY tenant_id, key_id, freeze_reason "
            "ORDER BY last_refused DESC",
            ("tenant_id", "key_id", "freeze_reason", "refused_requests", "first_refused", "last_refused"),
            "Frozen tenants and keys, seen through the requests their freeze refused.",
        ),
        SqlPanel(
            "Unauthorized attempts",
            "timeseries",
            "SELECT $__timeInterval(minute) AS time, reason AS series, sum(events) AS attempts "
            "FROM policy_decisions_1m WHERE event_type = 'unauthorized_access_attempt' "
            f"AND $__timeFilter(minute) AND {TENANT} GROUP BY time, series ORDER BY time",
            ("time", "series", "attempts"),
            "Requests with a missing, unknown or revoked key, by reason.",
        ),
    ),
)

# --- System pulse -------------------------------------------------------------------------

PULSE_VARIABLES = (
    Variable("failure_threshold", "Failure rate threshold (%)", "5", "ACTIVE FAILURE above this failure rate"),
    Variable("saturation_threshold", "Saturation threshold (%)", "80", "ACTIVE FAILURE above this rate-limit share"),
    Variable("drop_threshold", "Drop threshold (%)", "25", "SILENT DEGRADATION when activity falls more than this"),
)

LAST_24H = "minute > $__toTime - INTERVAL 24 HOUR"
WINDOW_48H = "minute > $__toTime - INTERVAL 48 HOUR AND minute <= $__toTime"


def _change(current: str, previous: str) -> str:
    return f"if({previous} = 0, NULL, round(({current} - {previous}) / {previous} * 100, 1))"


ALERT_STATES = (
    "SELECT JSONExtractString(payload, 'fingerprint') AS fingerprint, tenant_id, "
    "argMaxIf(event_type, timestamp, timestamp <= $__toTime) AS state_now, "
    "argMaxIf(event_type, timestamp, timestamp <= $__toTime - INTERVAL 24 HOUR) AS state_24h_ago "
    "FROM events WHERE event_type IN ('alert_fired', 'alert_resolved') AND timestamp <= $__toTime "
    "GROUP BY fingerprint, tenant_id"
)

PULSE_STATE = (
    "SELECT multiIf("
    "failure_rate_1h * 100 > ${failure_threshold} OR saturation_1h * 100 > ${saturation_threshold}, 'ACTIVE FAILURE', "
    "calls_change_pct < -${drop_threshold} OR tenants_change_pct < -${drop_threshold} "
    "OR reads_change_pct < -${drop_threshold}, 'SILENT DEGRADATION', 'STABLE') AS state, "
    "round(failure_rate_1h * 100, 2) AS failure_rate_pct, round(saturation_1h * 100, 2) AS saturation_pct, "
    "calls_change_pct, tenants_change_pct, reads_change_pct FROM ("
    "SELECT sumIf(failed_calls, minute > $__toTime - INTERVAL 1 HOUR) "
    "/ greatest(sumIf(calls, minute > $__toTime - INTERVAL 1 HOUR), 1) AS failure_rate_1h, "
    f"{_change(f'sumIf(calls, {LAST_24H})', f'sumIf(calls, NOT {LAST_24H})')} AS calls_change_pct, "
    f"{_change(f'uniqIf(tenant_id, {LAST_24H} AND calls > 0)', f'uniqIf(tenant_id, NOT {LAST_24H} AND calls > 0)')} "
    "AS tenants_change_pct, "
    f"(SELECT {_change('countIf(read_at > $__toTime - INTERVAL 24 HOUR)', 'countIf(read_at <= $__toTime - INTERVAL 24 HOUR)')} "
    f"FROM reads WHERE read_at > $__toTime - INTERVAL 48 HOUR AND read_at <= $__toTime AND {TENANT}) AS reads_change_pct, "
    "(SELECT sumIf(events, reason = 'rate_limited') / greatest(sumIf(events, reason = 'rate_limited') + "
    f"(SELECT sum(calls) FROM cost_by_tenant_1m WHERE minute > $__toTime - INTERVAL 1 HOUR AND minute <= $__toTime "
    f"AND {TENANT}), 1) FROM policy_decisions_1m WHERE minute > $__toTime - INTERVAL 1 HOUR "
    f"AND minute <= $__toTime AND {TENANT}) AS saturation_1h "
    f"FROM cost_by_tenant_1m WHERE {WINDOW_48H} AND {TENANT})"
)

PULSE = Dashboard(
    uid="tokentrail-system-pulse",
    title="tokentrail / System pulse",
    question="Is the system healthy right now, and is anything quietly getting worse?",
    variables=PULSE_VARIABLES,
    panels=(
        SqlPanel(
            "State",
            "table",
            PULSE_STATE,
            (
                "state",
                "failure_rate_pct",
                "saturation_pct",
                "calls_change_pct",
                "tenants_change_pct",
                "reads_change_pct",
            ),
            "ACTIVE FAILURE: failure rate (last hour) or rate-limit saturation above its threshold. SILENT "
            "DEGRADATION: calls, active tenants or report reads down more than the drop threshold against the "
            "previous 24 h. Otherwise STABLE. Thresholds are the dashboard variables.",
            width=24,
        ),
        SqlPanel(
            "Active tenants (24 h)",
            "stat",
            f"SELECT uniqIf(tenant_id, {LAST_24H}) AS active_tenants_24h, "
            f"uniqIf(tenant_id, NOT {LAST_24H}) AS previous_24h, "
            f"{_change('active_tenants_24h', 'previous_24h')} AS change_pct "
            f"FROM cost_by_tenant_1m WHERE {WINDOW_48H} AND calls > 0 AND {TENANT}",
            ("active_tenants_24h", "previous_24h", "change_pct"),
            "Tenants with at least one call in the last 24 h, against the 24 h before.",
            width=6,
        ),
        SqlPanel(
            "Calls (24 h)",
            "stat",
            f"SELECT sumIf(calls, {LAST_24H}) AS calls_24h, sumIf(calls, NOT {LAST_24H}) AS previous_24h, "
            f"{_change('calls_24h', 'previous_24h')} AS change_pct FROM cost_by_tenant_1m WHERE {WINDOW_48H} AND {TENANT}",
            ("calls_24h", "previous_24h", "change_pct"),
            "Calls in the last 24 h, against the 24 h before.",
            width=6,
        ),
        SqlPanel(
            "Failures (24 h)",
            "stat",
            f"SELECT sumIf(failed_calls, {LAST_24H}) AS failures_24h, "
            f"sumIf(failed_calls, NOT {LAST_24H}) AS previous_24h, {_change('failures_24h', 'previous_24h')} AS change_pct FROM cost_by_tenant_1m "
            f"WHERE {WINDOW_48H} AND {TENANT}",
            ("failures_24h", "previous_24h", "change_pct"),
            "Failed calls in the last 24 h, against the 24 h before.",
            width=6,
        ),
        SqlPanel(
            "Alerts firing",
            "stat",
            "SELECT countIf(state_now = 'alert_fired') AS firing, countIf(state_24h_ago = 'alert_fired') AS firing_24h_ago, "
            f"firing - firing_24h_ago AS change FROM ({ALERT_STATES}) WHERE {TENANT}",
            ("firing", "firing_24h_ago", "change"),
            "Alerts whose latest record at the end of the range is a firing one, against 24 h earlier.",
            width=6,
        ),
        SqlPanel(
            "Calls and failures",
            "timeseries",
            "SELECT $__timeInterval(minute) AS time, sum(calls) AS calls, sum(failed_calls) AS failures "
            f"FROM cost_by_tenant_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY time ORDER BY time",
            ("time", "calls", "failures"),
            "Traffic over the range.",
            width=24,
        ),
    ),
)

# --- Customers ----------------------------------------------------------------------------

CUSTOMERS = Dashboard(
    uid="tokentrail-customers",
    title="tokentrail / Customers",
    question="Which tenants use the product, keep using it, and which are quietly leaving?",
    panels=(
        SqlPanel(
            "Tenant activity (30 days to the end of the range)",
            "table",
            "SELECT tenant_id, sumIf(calls, minute > $__toTime - INTERVAL 7 DAY) AS calls_7d, "
            "sumIf(cost_usd, minute > $__toTime - INTERVAL 7 DAY) AS spend_7d_usd, "
            "uniqExactIf(key_id, minute > $__toTime - INTERVAL 7 DAY) AS identities_7d, "
            "uniqExact(toDate(minute)) AS active_days_30d, "
            "round(uniqExact(toDate(minute), key_id) / 30 / greatest(uniqExact(key_id), 1), 2) AS stickiness, "
            "max(minute) AS last_call FROM cost_by_identity_1m "
            f"WHERE minute > $__toTime - INTERVAL 30 DAY AND minute <= $__toTime AND {TENANT} "
            "GROUP BY tenant_id ORDER BY calls_7d DESC",
            ("tenant_id", "calls_7d", "spend_7d_usd", "identities_7d", "active_days_30d", "stickiness", "last_call"),
            "Stickiness = average daily active identities / identities active in 30 days (1.0: all of them, every day).",
            width=24,
        ),
        SqlPanel(
            "Silent churn: API traffic, nobody looking",
            "table",
            "SELECT traffic.tenant_id AS tenant_id, traffic.calls_7d AS calls_7d, "
            "if(seen.last_read = 0, NULL, seen.last_read) AS last_read, "
            "if(seen.last_read = 0, NULL, dateDiff('day', seen.last_read, $__toTime)) AS days_since_read FROM "
            "(SELECT tenant_id, sum(calls) AS calls_7d FROM cost_by_tenant_1h "
            f"WHERE hour > $__toTime - {SEVEN_DAYS} AND hour <= $__toTime AND {TENANT} GROUP BY tenant_id "
            "HAVING calls_7d > 0) AS traffic LEFT JOIN "
            "(SELECT tenant_id, max(read_at) AS last_read FROM reads WHERE read_at <= $__toTime GROUP BY tenant_id) "
            f"AS seen ON traffic.tenant_id = seen.tenant_id WHERE seen.last_read <= $__toTime - {SEVEN_DAYS} "
            "ORDER BY calls_7d DESC",
            ("tenant_id", "calls_7d", "last_read", "days_since_read"),
            "Tenants whose API traffic continues while nobody has read a report, an event list or an alert "
            "for them in 7 days (reads are recorded by `report`, `events` and the HTML report).",
            width=24,
        ),
        SqlPanel(
            "Daily active identities",
            "timeseries",
            "SELECT toStartOfDay(minute) AS time, tenant_id AS series, uniqExact(key_id) AS active_identities "
            f"FROM cost_by_identity_1m WHERE $__timeFilter(minute) AND {TENANT} GROUP BY time, series ORDER BY time",
            ("time", "series", "active_identities"),
            "Distinct calling keys per tenant per day.",
        ),
        SqlPanel(
            "Reads per day",
            "timeseries",
            "SELECT toStartOfDay(read_at) AS time, if(tenant_id = '', '(all tenants)', tenant_id) AS series, "
            "count() AS reads FROM reads "
            f"WHERE $__timeFilter(read_at) AND {TENANT} GROUP BY time, series ORDER BY time",
            ("time", "series", "reads"),
            "Reports, event lists and HTML reports read, per tenant and day.",
        ),
    ),
)

# --- Limits and pipeline ------------------------------------------------------------------

LIMITS = Dashboard(
    uid="tokentrail-limits",
    title="tokentrail / Limits and pipeline",
    question="How close is each part to its limit, and when does it get there?",
    panels=(
        PromPanel(
            "Gateway throughput",
            "sum by (status) (rate(tokentrail_gateway_requests_total[$__rate_interval]))",
            "{{status}}",
            "Requests answered per second, by HTTP status.",
            unit="reqps",
        ),
        PromPanel(
            "Spool depth",
            "sum(tokentrail_gateway_spool_records)",
            "records waiting",
            "Records the gateway wrote to its spool because Kafka did not acknowledge them; drained when it is back.",
        ),
        PromPanel(
            "Kafka unacknowledged (gateway)",
            "sum(tokentrail_gateway_kafka_unacknowledged)",
            "unacknowledged",
            "Records handed to the producer and not yet acknowledged: what a crash would lose.",
        ),
        PromPanel(
            "Raw topic backlog growth",
            'sum(rate(kafka_topic_partition_current_offset{topic=~".*calls.raw"}[$__rate_interval]))'
            ' - sum(rate(tokentrail_flows_records_total{source="raw"}[$__rate_interval]))',
            "produced - consumed (records/s)",
            "Records produced to the raw topic minus records the flows read, per second: above zero the flows "
            "fall behind. (The flows keep offsets in Bytewax recovery, not in a consumer group, so Kafka "
            "reports no group lag.)",
        ),
        PromPanel(
            "Dead-letter rate",
            "sum by (reason) (rate(tokentrail_flows_rejected_total[$__rate_interval]))",
            "{{reason}}",
            "Records sent to the dead-letter topic per second, by reason.",
        ),
        PromPanel(
            "Rate-limit hits (gateway)",
            'sum(rate(tokentrail_gateway_denied_total{reason="rate_limited"}[$__rate_interval]))',
            "rate limited",
            "Requests refused by a rate limit, per second.",
            unit="reqps",
        ),
        SqlPanel(
            "Rate-limit hits by identity",
            "timeseries",
            "SELECT $__timeInterval(minute) AS time, concat(tenant_id, ' / ', actor_type, ':', actor_id) AS series, "
            "sum(events) AS hits FROM policy_decisions_1m WHERE reason = 'rate_limited' "
            f"AND $__timeFilter(minute) AND {TENANT} GROUP BY time, series ORDER BY time",
            ("time", "series", "hits"),
            "Requests refused by a rate limit, per identity.",
        ),
        SqlPanel(
            "Headroom against rate limits",
            "table",
            "SELECT limits.tenant_id AS tenant_id, limits.key_id AS key_id, limits.requests_per_minute AS limit_rpm, "
            "usage.peak_rpm AS peak_rpm, round(100 * (1 - usage.peak_rpm / limits.requests_per_minute), 1) "
            "AS headroom_pct, round(usage.growth_rpm_per_hour, 2) AS growth_rpm_per_hour, "
            "if(usage.growth_rpm_per_hour > 0, round(greatest(0, limits.requests_per_minute - usage.peak_rpm) "
            "/ usage.growth_rpm_per_hour, 1), NULL) AS hours_to_limit FROM "
            "(SELECT tenant_id, JSONExtractString(payload, 'key_id') AS key_id, "
            "argMax(JSONExtractUInt(payload, 'requests_per_minute'), timestamp) AS requests_per_minute FROM events "
            "WHERE event_type = 'protection_decision' AND JSONExtractString(payload, 'reason') = 'rate_limited' "
            f"AND timestamp <= $__toTime AND {TENANT} GROUP BY tenant_id, key_id "
            "HAVING requests_per_minute > 0) AS limits INNER JOIN "
            "(SELECT tenant_id, key_id, max(per_minute) AS peak_rpm, "
            "simpleLinearRegression(toUnixTimestamp(minute) / 3600, per_minute).1 AS growth_rpm_per_hour FROM "
            "(SELECT tenant_id, key_id, minute, sum(calls) AS per_minute FROM cost_by_identity_1m "
            f"WHERE minute > $__toTime - INTERVAL 1 HOUR AND minute <= $__toTime AND {TENANT} "
            "GROUP BY tenant_id, key_id, minute) GROUP BY tenant_id, key_id) AS usage "
            "ON limits.tenant_id = usage.tenant_id AND limits.key_id = usage.key_id ORDER BY headroom_pct",
            (
                "tenant_id",
                "key_id",
                "limit_rpm",
                "peak_rpm",
                "headroom_pct",
                "growth_rpm_per_hour",
                "hours_to_limit",
            ),
            "Identities whose limit is known (from their rate-limit refusals): peak calls per minute in the "
            "last hour of the range against the limit, and hours until the limit at the last hour's growth.",
            width=24,
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (COST, INCIDENTS, PATTERNS, GOVERNANCE, PULSE, CUSTOMERS, LIMITS)
