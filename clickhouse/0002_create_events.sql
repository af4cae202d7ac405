-- Every UnifiedEvent (DESIGN 4), append-only (invariant 3); `payload` is the JSON object as a
-- string, read it with JSONExtract*(payload, ...).
--
-- Engine: ReplacingMergeTree for the same reason as llm_calls: a duplicate that slipped past
-- the sink's dedup collapses on merge (event_id is part of the key).
-- PARTITION BY month: retention drops whole months; time-bounded queries prune months.
-- ORDER BY (tenant_id, timestamp, event_id): "what happened to tenant T between T1 and T2"
-- reads one contiguous range, already in the (timestamp, event_id) order of invariant 3.
-- The bloom_filter index on event_id serves the sink's existing-id lookup.
CREATE TABLE IF NOT EXISTS events
(
    event_id String,
    event_type LowCardinality(String),
    event_source LowCardinality(String),
    tenant_id LowCardinality(String),
    timestamp DateTime64(3, 'UTC'),
    severity LowCardinality(String),
    actor_type LowCardinality(String),
    actor_id String,
    request_id String,
    trace_id String,
    payload String,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, timestamp, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
