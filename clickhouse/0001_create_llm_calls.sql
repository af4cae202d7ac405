-- One row per LLM call (invariant 2: the whole delegation chain is kept, root first).
--
-- Engine: ReplacingMergeTree, so a duplicate row that slipped past the sink's dedup would
-- still collapse on merge. It is only a second line of defence: the rollups below are fed at
-- insert time and would already have counted it, which is why the sink drops known call ids
-- and inserts with an insert_deduplication_token (see docs/storage.md).
-- PARTITION BY month: retention (TTL, set by `tokentrail migrate` from
-- TOKENTRAIL_RETENTION_DAYS) drops whole old parts, and time-bounded queries prune months.
-- ORDER BY (tenant_id, timestamp, call_id): every dashboard and CLI query filters by tenant
-- and time first; call_id makes the key unique per call, which ReplacingMergeTree needs.
-- The bloom_filter index on call_id serves the sink's "which of these ids exist" lookup,
-- which cannot use the primary key (call_id is its last column).
-- non_replicated_deduplication_window: a repeated insert with the same
-- insert_deduplication_token is dropped (the rollup targets carry the same setting).
CREATE TABLE IF NOT EXISTS llm_calls
(
    call_id String,
    timestamp DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    key_id String,
    actor_type LowCardinality(String),
    actor_id String,
    root_key_id String,
    root_actor_type LowCardinality(String),
    root_actor_id String,
    chain_key_ids Array(String),
    chain_actors Array(String),
    identity_known Bool,
    provider LowCardinality(String),
    api_flavor LowCardinality(String),
    endpoint LowCardinality(String),
    requested_model LowCardinality(String),
    model LowCardinality(String),
    stream Bool,
    status UInt16,
    failed Bool,
    error_type LowCardinality(String),
    error_code String,
    client_disconnected Bool,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    input_cost_usd Nullable(Decimal(20, 10)),
    output_cost_usd Nullable(Decimal(20, 10)),
    cost_usd Nullable(Decimal(20, 10)),
    unpriced Bool,
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    request_id String,
    trace_id String,
    end_user String,
    session_id String,
    gateway_id LowCardinality(String),
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, timestamp, call_id)
SETTINGS non_replicated_deduplication_window = 1000;
