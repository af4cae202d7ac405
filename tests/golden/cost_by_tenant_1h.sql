CREATE TABLE default.cost_by_tenant_1h
(
    `hour` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `calls` UInt64,
    `failed_calls` UInt64,
    `input_tokens` UInt64,
    `output_tokens` UInt64,
    `cache_read_tokens` UInt64,
    `cache_write_tokens` UInt64,
    `reasoning_tokens` UInt64,
    `cost_usd` Decimal(38, 10),
    `unpriced_calls` UInt64
)
ENGINE = SummingMergeTree((calls, failed_calls, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, unpriced_calls))
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour)
TTL toDateTime(hour) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
