CREATE TABLE default.failure_patterns
(
    `detection_id` String,
    `tenant_id` LowCardinality(String),
    `pattern_id` String,
    `scope` LowCardinality(String),
    `signature` String,
    `provider` LowCardinality(String),
    `model` LowCardinality(String),
    `status` UInt16,
    `error_type` LowCardinality(String),
    `error_code` String,
    `context_hash` String,
    `identities` Array(String),
    `identity_count` UInt32,
    `tenants` Array(String),
    `tenant_count` UInt32,
    `calls` UInt64,
    `first_seen` DateTime64(3, 'UTC'),
    `last_seen` DateTime64(3, 'UTC'),
    `detected_at` DateTime64(3, 'UTC'),
    INDEX idx_detection_id detection_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (tenant_id, first_seen, signature)
TTL toDateTime(first_seen) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
