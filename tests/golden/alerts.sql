CREATE TABLE default.alerts
(
    `alert_id` String,
    `fingerprint` String,
    `status` LowCardinality(String),
    `rule` LowCardinality(String),
    `severity` LowCardinality(String),
    `tenant_id` LowCardinality(String),
    `scope` String,
    `key_id` String,
    `actor` String,
    `root_actor` String,
    `summary` String,
    `labels` Map(String, String),
    `annotations` Map(String, String),
    `value` Nullable(Float64),
    `threshold` Nullable(Float64),
    `starts_at` DateTime64(3, 'UTC'),
    `ends_at` Nullable(DateTime64(3, 'UTC')),
    `updated_at` DateTime64(3, 'UTC'),
    `revision` UInt32,
    `evidence_sql` String,
    `evidence_url` String,
    INDEX idx_alert_id alert_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (tenant_id, starts_at, fingerprint, status)
TTL toDateTime(starts_at) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
