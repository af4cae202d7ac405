"""`tokentrail calls show CALL_ID`: the call's row from ClickHouse and its captured (redacted)
bodies from its signed record on the real raw topic."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Producer

from schemas import wire
from schemas.signing import sign
from tests.fixtures.clickhouse import call_row, cli_runner
from tests.fixtures.flows import make_call
from tokentrail.topics import CALLS_RAW

pytestmark = pytest.mark.kafka
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def cli(store, storage_env, kafka_topics, monkeypatch, capsys):
    return cli_runner({**storage_env, **kafka_topics.env}, monkeypatch, capsys)


def record_call(store, kafka_topics, **bodies) -> str:
    """One call as the flows and the gateway leave it: a row in llm_calls, a signed RawCall on the raw topic."""
    call = wire.to_dict(make_call(received_at=NOW, **bodies))
    call["signature"] = sign(call, b"k")
    producer = Producer({"bootstrap.servers": kafka_topics.bootstrap})
    producer.produce(kafka_topics.name(CALLS_RAW), orjson.dumps(call), call["tenant_id"].encode())
    assert producer.flush(10) == 0
    store.insert_rows(
        "llm_calls",
        [
            call_row(
                call_id=call["call_id"], tenant_id=call["tenant_id"], timestamp=NOW.strftime("%Y-%m-%d %H:%M:%S.000")
            )
        ],
    )
    return call["call_id"]


def test_a_captured_call_is_shown_with_its_redacted_bodies(cli, store, kafka_topics):
    call_id = record_call(
        store,
        kafka_topics,
        request_body='{"messages":[{"content":"mail [REDACTED:email]"}]}',
        response_body='{"choices":[]}',
    )
    record_call(store, kafka_topics)  # another call on the topic is not it
    code, out, err = cli("calls", "show", call_id)
    assert code == 0, err
    assert f"call_id          {call_id}" in out
    assert "request body (redacted):\n" + '{"messages":[{"content":"mail [REDACTED:email]"}]}' in out
    assert "response body (redacted):\n" + '{"choices":[]}' in out
    code, out, _ = cli("calls", "show", call_id, "--json")
    shown = orjson.loads(out)
    assert shown["call_id"] == call_id and shown["response_body"] == '{"choices":[]}' and shown["raw_record_found"]


def test_a_call_without_capture_says_how_to_turn_it_on(cli, store, kafka_topics):
    call_id = record_call(store, kafka_topics)
    code, out, _ = cli("calls", "show", call_id)
    assert code == 0
    assert "not captured: capture was off for tenant" in out and "`tokentrail capture --tenant" in out


def test_an_unknown_call_is_one_line(cli, store):
    code, out, err = cli("calls", "show", "nosuch")
    assert code == 2 and out == ""
    assert err.startswith("tokentrail calls: no call nosuch in llm_calls") and err.count("\n") == 1
