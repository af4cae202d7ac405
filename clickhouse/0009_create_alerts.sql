-- Alert state changes (DESIGN 5, `tokentrail.alerts`): an alert fires, is re-published with
-- new numbers while it fires, and resolves. One row per (fingerprint, status, starts_at): the
-- firing state of an episode and its resolution, each at its latest update.
--
-- Engine: ReplacingMergeTree(revision). The alerts topic is at-least-once and a firing alert
-- is re-published while its numbers change (revision 0, 1, 2, ...); every copy of one state
-- has the same key, so it replaces the row instead of adding one, and the highest revision
-- wins even when an older copy is replayed after a newer one. Merging is eventual:
-- read with FINAL (`tokentrail report alerts` does). No rollup reads this table, so a
-- duplicate that waits for its merge is never counted twice anywhere.
-- ORDER BY (tenant_id, starts_at, fingerprint, status): "alerts of tenant T since X" is one
-- range; fingerprint, status and starts_at identify one state of one episode, and status in
-- the key keeps the fired and the resolved row of an episode apart (the timeline has both).
-- PARTITION BY toYYYYMM(starts_at): retention drops whole months; both rows of an episode
-- share starts_at, hence a partition, which ReplacingMergeTree needs to collapse them.
-- alert_id names one published state (fingerprint/starts_at/status/revision): the flows sink
-- drops ids already stored; its bloom_filter index serves that lookup.
-- non_replicated_deduplication_window: a repeated insert with the same
-- insert_deduplication_token is dropped, as on every table (docs/storage.md).
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    fingerprint String,
    status LowCardinality(String),
    rule LowCardinality(String),
    severity LowCardinality(String),
    tenant_id LowCardinality(String),
    scope String,
    key_id String,
    actor String,
    root_actor String,
    summary String,
    labels Map(String, String),
    annotations Map(String, String),
    value Nullable(Float64),
    threshold Nullable(Float64),
    starts_at DateTime64(3, 'UTC'),
    ends_at Nullable(DateTime64(3, 'UTC')),
    updated_at DateTime64(3, 'UTC'),
    revision UInt32,
    evidence_sql String,
    evidence_url String,
    INDEX idx_alert_id alert_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (tenant_id, starts_at, fingerprint, status)
SETTINGS non_replicated_deduplication_window = 1000;
