-- Cross-identity failure patterns (DESIGN 5): the same failure signature (provider, model,
-- status, error type and code, request-shape context hash) from several identities of one
-- tenant, or from several tenants: then the row belongs to the system tenant (`_system`) and
-- `tenants` names every tenant affected (a provider or model incident).
--
-- Engine: ReplacingMergeTree(detected_at). A pattern is re-published as identities join it
-- (and the events topic is at-least-once): every copy has the same key, the latest detection
-- wins, also over an older copy replayed later. Read with FINAL (`tokentrail report patterns` does).
-- ORDER BY (tenant_id, first_seen, signature): "patterns of tenant T since X" is one range;
-- (signature, first_seen) identifies one episode of a pattern within a tenant.
-- PARTITION BY toYYYYMM(first_seen): retention drops whole months; every copy of an episode
-- shares first_seen, hence a partition, which ReplacingMergeTree needs.
-- detection_id names one detection (pattern/signature/detected_at): the flows sink drops ids
-- already stored; its bloom_filter index serves that lookup.
-- non_replicated_deduplication_window: as on every table (docs/storage.md).
CREATE TABLE IF NOT EXISTS failure_patterns
(
    detection_id String,
    tenant_id LowCardinality(String),
    pattern_id String,
    scope LowCardinality(String),
    signature String,
    provider LowCardinality(String),
    model LowCardinality(String),
    status UInt16,
    error_type LowCardinality(String),
    error_code String,
    context_hash String,
    identities Array(String),
    identity_count UInt32,
    tenants Array(String),
    tenant_count UInt32,
    calls UInt64,
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    detected_at DateTime64(3, 'UTC'),
    INDEX idx_detection_id detection_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (tenant_id, first_seen, signature)
SETTINGS non_replicated_deduplication_window = 1000;
