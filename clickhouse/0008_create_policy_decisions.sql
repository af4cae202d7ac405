-- Gateway policy decisions per minute (protection_decision and unauthorized_access_attempt
-- events): the Governance dashboard. `reason` is read from the event payload ('' if absent).
--
-- Engine: SummingMergeTree: the one measure (events) is additive; read with sum() GROUP BY.
-- PARTITION BY month; ORDER BY (tenant_id, minute, event_type, reason, actor_type, actor_id):
-- one tenant over a time range, then what was decided and against whom.
-- non_replicated_deduplication_window: a replayed insert into events must not count twice.
CREATE TABLE IF NOT EXISTS policy_decisions_1m
(
    minute DateTime('UTC'),
    tenant_id LowCardinality(String),
    event_type LowCardinality(String),
    reason LowCardinality(String),
    actor_type LowCardinality(String),
    actor_id String,
    events UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, event_type, reason, actor_type, actor_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS policy_decisions_1m_mv TO policy_decisions_1m AS
SELECT
    toStartOfMinute(toDateTime(timestamp, 'UTC')) AS minute,
    tenant_id,
    event_type,
    JSONExtractString(payload, 'reason') AS reason,
    actor_type,
    actor_id,
    count() AS events
FROM events
WHERE event_type IN ('protection_decision', 'unauthorized_access_attempt')
GROUP BY tenant_id, minute, event_type, reason, actor_type, actor_id;
