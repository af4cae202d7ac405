"""The SQL an alert carries: a query over `llm_calls` a human can paste to see the evidence.

Values are quoted literals (`tokentrail.storage.sqltext.quote_string`): the text is meant to
be read and pasted, so it cannot use bound parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tokentrail.storage.sqltext import quote_string

if TYPE_CHECKING:
    from detection.patterns import Signature

BUDGET_ERROR_SQL = "status >= 500 OR status = 429 OR positionCaseInsensitive(error_type, 'timeout') > 0"
"""`detection.calls.is_budget_error` in SQL."""


def _since(at: float) -> str:
    return quote_string(datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S"))


def _model_filter(model: str) -> str:
    literal = quote_string(model)
    return f"(model = {literal} OR (model = '' AND requested_model = {literal}))"


def error_budget_sql(tenant_id: str, scope: str, since: float) -> str:
    where = f"tenant_id = {quote_string(tenant_id)} AND timestamp >= {_since(since)}"
    if scope.startswith("model:"):
        provider, _, model = scope.removeprefix("model:").partition("/")
        where += f" AND provider = {quote_string(provider)} AND {_model_filter(model)}"
    return (
        "SELECT toStartOfMinute(timestamp) AS minute, count() AS calls, "
        f"countIf({BUDGET_ERROR_SQL}) AS budget_errors FROM llm_calls WHERE {where} GROUP BY minute ORDER BY minute"
    )


def budget_sql(tenant_id: str, scope: str, since: float) -> str:
    where = f"tenant_id = {quote_string(tenant_id)} AND timestamp >= {_since(since)}"
    if scope.startswith("key:"):
        where += f" AND has(chain_key_ids, {quote_string(scope.removeprefix('key:'))})"
    return (
        "SELECT toStartOfHour(timestamp) AS hour, sum(cost_usd) AS spent_usd, count() AS calls "
        f"FROM llm_calls WHERE {where} GROUP BY hour ORDER BY hour"
    )


def spike_sql(tenant_id: str, key_id: str, since: float) -> str:
    return (
        "SELECT toStartOfMinute(timestamp) AS minute, count() AS calls, sum(cost_usd) AS spent_usd "
        f"FROM llm_calls WHERE tenant_id = {quote_string(tenant_id)} AND key_id = {quote_string(key_id)} "
        f"AND timestamp >= {_since(since)} GROUP BY minute ORDER BY minute"
    )


def pattern_sql(tenant_id: str | None, signature: Signature, since: float) -> str:
    where = [] if tenant_id is None else [f"tenant_id = {quote_string(tenant_id)}"]
    where += [
        f"timestamp >= {_since(since)}",
        f"provider = {quote_string(signature.provider)}",
        _model_filter(signature.model),
        f"status = {signature.status}",
        f"error_type = {quote_string(signature.error_type)}",
        f"error_code = {quote_string(signature.error_code)}",
    ]
    return (
        "SELECT tenant_id, key_id, root_actor_id, count() AS failures, min(timestamp) AS first, max(timestamp) AS last "
        f"FROM llm_calls WHERE {' AND '.join(where)} GROUP BY tenant_id, key_id, root_actor_id ORDER BY failures DESC"
    )
