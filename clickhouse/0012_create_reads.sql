-- Who read a tenant's data, when, through which surface: one row per `tokentrail report`,
-- `tokentrail events` or HTML report run. The Customers dashboard's silent-churn panel looks
-- for tenants whose API traffic continues while nobody has read anything about them for 7
-- days; System pulse counts reads as investigation activity.
--
-- A table of its own rather than a UnifiedEvent type: a read is not something a tenant's
-- keys did, it must not show in `events`, in the event stream or in the policy rollups, and
-- the CLI writes it directly (no Kafka needed to read a report).
--
-- Engine: ReplacingMergeTree on read_id (a UUIDv7), the same last line of defence against a
-- repeated insert as the other base tables. tenant_id '' means a read across all tenants.
-- PARTITION BY month (retention TTL set by migrate); ORDER BY (tenant_id, read_at, read_id).
-- non_replicated_deduplication_window: every MergeTree carries it (docs/storage.md).
CREATE TABLE IF NOT EXISTS reads
(
    read_id String,
    read_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    reader String,
    surface LowCardinality(String),
    since Nullable(DateTime64(3, 'UTC')),
    until Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(read_at)
ORDER BY (tenant_id, read_at, read_id)
SETTINGS non_replicated_deduplication_window = 1000;
