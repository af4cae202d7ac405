CREATE TABLE default.incidents_by_error_1m
(
    `minute` DateTime('UTC'),
    `tenant_id` LowCardinality(String),
    `provider` LowCardinality(String),
    `model` LowCardinality(String),
    `error_type` LowCardinality(String),
    `status` UInt16,
    `calls` UInt64
)
ENGINE = SummingMergeTree(calls)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, provider, model, error_type, status)
TTL toDateTime(minute) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
