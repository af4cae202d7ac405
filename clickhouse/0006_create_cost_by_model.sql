-- Rollups of llm_calls: cost by provider and served model, per minute and per hour.
--
-- Engine: SummingMergeTree, because every measure is additive: merges add up rows with the
-- same key, and readers still sum() with GROUP BY (merging is eventual). Cost: cost_usd of
-- llm_calls is NULL for unpriced calls; sum() skips NULLs, so the view sums ifNull(cost, 0)
-- and counts those calls in unpriced_calls instead, so "$0" and "unknown" stay apart.
-- PARTITION BY month and ORDER BY (tenant_id, <time>, <dimension>): dashboards ask for one
-- tenant over a time range, grouped by the dimension.
-- non_replicated_deduplication_window: as on llm_calls; without it here a replayed insert
-- carrying the same insert_deduplication_token is dropped from llm_calls but counted again
-- by this view (DESIGN 4, invariant 5).
-- Change a view's query with ALTER TABLE ... MODIFY QUERY, never drop-and-recreate.

CREATE TABLE IF NOT EXISTS cost_by_model_1m
(
    minute DateTime('UTC'),
    tenant_id LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    calls UInt64,
    failed_calls UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost_usd Decimal(38, 10),
    unpriced_calls UInt64
)
ENGINE = SummingMergeTree((calls, failed_calls, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, unpriced_calls))
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, provider, model)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_by_model_1m_mv TO cost_by_model_1m AS
SELECT
    toStartOfMinute(toDateTime(timestamp, 'UTC')) AS minute,
    tenant_id,
    provider,
    model,
    count() AS calls,
    countIf(failed) AS failed_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(ifNull(cost_usd, 0)), 10) AS cost_usd,
    countIf(unpriced) AS unpriced_calls
FROM llm_calls
GROUP BY tenant_id, minute, provider, model;

CREATE TABLE IF NOT EXISTS cost_by_model_1h
(
    hour DateTime('UTC'),
    tenant_id LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    calls UInt64,
    failed_calls UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost_usd Decimal(38, 10),
    unpriced_calls UInt64
)
ENGINE = SummingMergeTree((calls, failed_calls, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, unpriced_calls))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, provider, model)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_by_model_1h_mv TO cost_by_model_1h AS
SELECT
    toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour,
    tenant_id,
    provider,
    model,
    count() AS calls,
    countIf(failed) AS failed_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(ifNull(cost_usd, 0)), 10) AS cost_usd,
    countIf(unpriced) AS unpriced_calls
FROM llm_calls
GROUP BY tenant_id, hour, provider, model;
