CREATE TABLE default.events
(
    `event_id` String,
    `event_type` LowCardinality(String),
    `event_source` LowCardinality(String),
    `tenant_id` LowCardinality(String),
    `timestamp` DateTime64(3, 'UTC'),
    `severity` LowCardinality(String),
    `actor_type` LowCardinality(String),
    `actor_id` String,
    `request_id` String,
    `trace_id` String,
    `payload` String,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
