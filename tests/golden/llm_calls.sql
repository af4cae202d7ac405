CREATE TABLE default.llm_calls
(
    `call_id` String,
    `timestamp` DateTime64(3, 'UTC'),
    `completed_at` DateTime64(3, 'UTC'),
    `tenant_id` LowCardinality(String),
    `key_id` String,
    `actor_type` LowCardinality(String),
    `actor_id` String,
    `root_key_id` String,
    `root_actor_type` LowCardinality(String),
    `root_actor_id` String,
    `chain_key_ids` Array(String),
    `chain_actors` Array(String),
    `identity_known` Bool,
    `provider` LowCardinality(String),
    `api_flavor` LowCardinality(String),
    `endpoint` LowCardinality(String),
    `requested_model` LowCardinality(String),
    `model` LowCardinality(String),
    `stream` Bool,
    `status` UInt16,
    `failed` Bool,
    `error_type` LowCardinality(String),
    `error_code` String,
    `client_disconnected` Bool,
    `input_tokens` UInt64,
    `output_tokens` UInt64,
    `cache_read_tokens` UInt64,
    `cache_write_tokens` UInt64,
    `reasoning_tokens` UInt64,
    `input_cost_usd` Nullable(Decimal(20, 10)),
    `output_cost_usd` Nullable(Decimal(20, 10)),
    `cost_usd` Nullable(Decimal(20, 10)),
    `unpriced` Bool,
    `latency_ms` Float64,
    `ttft_ms` Nullable(Float64),
    `request_id` String,
    `trace_id` String,
    `end_user` String,
    `session_id` String,
    `gateway_id` LowCardinality(String),
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, timestamp, call_id)
TTL toDateTime(timestamp) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192
