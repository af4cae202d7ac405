"""The flows never crash-loop on a record (issue 12): a raw record that Kafka accepted but whose
dead letter (the original, re-escaped) exceeds the broker's message size, then 100 good
records. The good ones land, the bad one is recorded (cut, with its size, hash and position),
and the one flows process runs throughout."""

from __future__ import annotations

import hashlib
import os
import signal

import orjson
import pytest

from tests import test_flows_e2e as flows_e2e
from tests.fixtures.flows import OPERATOR_KEY, SIGNING_KEY, identity_bytes, signed_bytes
from tests.fixtures.kafka import consume_all
from tokentrail import topics
from tokentrail.broker.server import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
BROKER_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default `message.max.bytes` (the test broker's)."""


def test_a_dead_letter_over_the_brokers_limit_is_cut_and_the_records_behind_it_land(tmp_path, kafka_topics):
    flows_env = {
        **os.environ,
        **kafka_topics.env,
        "TOKENTRAIL_HOME": str(tmp_path),
        "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY.decode(),
        "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY.decode(),
        "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port()),
        "TOKENTRAIL_FLOWS_SNAPSHOT_SECONDS": "1",
    }
    flows_env.pop("TOKENTRAIL_CLICKHOUSE_URL", None)
    identities = flows_e2e.population(tenants=1)
    flows_e2e.produce(
        kafka_topics.bootstrap,
        kafka_topics.name(topics.IDENTITIES),
        [(i.key_id.encode(), identity_bytes(i)) for i in identities],
    )
    poison = b"\xff" * 900_000  # fits in Kafka; as base64 in a dead letter it would be 1.2 MB
    assert len(poison) < BROKER_MAX_MESSAGE_BYTES < len(poison) * 4 // 3
    calls = flows_e2e.calls_for(identities, 100)
    raw = kafka_topics.name(topics.CALLS_RAW)
    flows_e2e.produce(kafka_topics.bootstrap, raw, [(b"mallory", poison)])
    flows_e2e.produce(kafka_topics.bootstrap, raw, [(c.tenant_id.encode(), signed_bytes(c)) for c in calls])

    flows = flows_e2e.FlowsProcess(tmp_path, flows_env)
    flows.start()
    try:
        assert flows.wait_for("llm_calls", len(calls)) == len(calls), flows.log.read_text()[-3000:]
        dead = consume_all(kafka_topics.bootstrap, kafka_topics.name(topics.DLQ), expected=1, timeout=30)
        pid = flows.process.pid
        assert flows.process.poll() is None, flows.log.read_text()[-3000:]
    finally:
        flows.kill(signal.SIGTERM)
    assert flows.process.pid == pid and flows.process.returncode in (0, 130), flows.log.read_text()[-3000:]
    assert "Traceback" not in flows.log.read_text()

    assert len(dead) == 1 and dead[0].key() == b"mallory"
    letter = orjson.loads(dead[0].value())
    assert letter["reason"].startswith("invalid JSON") and letter["truncated"] is True
    assert letter["original_bytes"] == len(poison)
    assert letter["original_sha256"] == hashlib.sha256(poison).hexdigest()
    assert (
        letter["topic"] == raw and type(letter["partition"]) is int and letter["offset"] == 0
    )  # first of its partition
    assert len(dead[0].value()) < BROKER_MAX_MESSAGE_BYTES
