-- Failed calls per minute by error signature (tenant, provider, model, error_type, status):
-- the Incidents dashboard and the "what is failing right now" question.
--
-- Engine: SummingMergeTree: the one measure (calls) is additive; read with sum() GROUP BY.
-- PARTITION BY month; ORDER BY (tenant_id, minute, provider, model, error_type, status):
-- one tenant over a time range first, then the signature.
-- non_replicated_deduplication_window: a replayed insert into llm_calls must not count twice
-- here either (DESIGN 4, invariant 5).
CREATE TABLE IF NOT EXISTS incidents_by_error_1m
(
    minute DateTime('UTC'),
    tenant_id LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    error_type LowCardinality(String),
    status UInt16,
    calls UInt64
)
ENGINE = SummingMergeTree(calls)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, provider, model, error_type, status)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS incidents_by_error_1m_mv TO incidents_by_error_1m AS
SELECT
    toStartOfMinute(toDateTime(timestamp, 'UTC')) AS minute,
    tenant_id,
    provider,
    model,
    error_type,
    status,
    count() AS calls
FROM llm_calls
WHERE failed
GROUP BY tenant_id, minute, provider, model, error_type, status;
