"""Events and rows built from a priced call follow the storage and UnifiedEvent contracts."""

from datetime import datetime

import orjson

from flows.events import call_outputs
from flows.identity import IdentityEntry, attribute
from flows.pricing import Pricer
from schemas import wire
from schemas.models import UnifiedEvent
from tests.fixtures.flows import SEARCHER, make_call
from tokentrail.storage.event_rows import EVENT_COLUMNS, event_row

LLM_CALLS_COLUMNS = """call_id timestamp completed_at tenant_id key_id actor_type actor_id root_key_id
root_actor_type root_actor_id chain_key_ids chain_actors identity_known provider api_flavor endpoint
requested_model model stream status failed error_type error_code client_disconnected input_tokens
output_tokens cache_read_tokens cache_write_tokens reasoning_tokens input_cost_usd output_cost_usd
cost_usd unpriced latency_ms ttft_ms request_id trace_id end_user session_id gateway_id""".split()
EVENTS_COLUMNS = list(EVENT_COLUMNS)  # the contract; test_storage_contract checks it against the table


def outputs(**overrides):
    call = wire.to_dict(make_call(SEARCHER, **overrides))
    who = attribute(call, IdentityEntry.from_identity(SEARCHER))
    at = datetime.fromisoformat(call["received_at"])
    priced = Pricer().price(
        call["provider"], call["api_flavor"], call["served_model"], call["usage"], at, failed=call["status"] >= 400
    )
    return call, call_outputs(call, who, priced)


def test_a_call_becomes_a_valid_unified_event_owned_by_the_caller():
    call, (event, row, erow) = outputs()
    parsed = UnifiedEvent.model_validate(event)
    assert parsed.event_id == call["call_id"] and parsed.event_type == "llm_call"
    assert parsed.actor.type == "agent" and parsed.actor.id == "searcher"
    assert event["payload"]["root_actor"] == {"type": "human", "id": "alice"}
    assert [link["key_id"] for link in event["payload"]["chain"]] == ["k_alice", "k_planner", "k_searcher"]
    assert event["payload"]["cost_usd"] == "0.0057500000"
    assert orjson.loads(orjson.dumps(event)) == event


def test_rows_have_exactly_the_contract_columns():
    _, (event, row, erow) = outputs()
    assert list(row) == LLM_CALLS_COLUMNS
    assert list(erow) == EVENTS_COLUMNS
    assert row["timestamp"] == "2026-11-28 12:00:00.123"
    assert row["chain_actors"] == ["human:alice", "agent:planner", "agent:searcher"]
    assert (row["root_actor_id"], row["actor_id"]) == ("alice", "searcher")
    assert row["input_tokens"] == 1200 and row["cache_read_tokens"] == 200
    assert orjson.loads(erow["payload"]) == event["payload"]
    orjson.dumps(row)


def test_failed_calls_are_llm_call_failed_with_severity_by_status():
    _, (event, row, _) = outputs(
        status=503, error_type="upstream_unavailable", usage=None, context_hash="3f2a9c0d1e4b5a67"
    )
    assert event["event_type"] == "llm_call_failed" and event["severity"] == "ERROR"
    assert event["payload"]["context_hash"] == "3f2a9c0d1e4b5a67", "part of the failure signature detection reads"
    assert row["failed"] and row["cost_usd"] == "0.0000000000"
    _, (event, _, _) = outputs(status=429, error_type="rate_limited", usage=None)
    assert event["severity"] == "WARN"


def test_unpriced_calls_carry_null_cost_never_zero():
    _, (event, row, _) = outputs(served_model="my-private-model", requested_model="my-private-model")
    assert row["cost_usd"] is None and row["unpriced"]
    assert event["payload"]["cost_usd"] is None and "my-private-model" in event["payload"]["unpriced_reason"]


def test_gateway_events_become_rows_too():
    event = {
        "event_id": "e1",
        "event_type": "protection_decision",
        "event_source": "gateway",
        "tenant_id": "acme",
        "timestamp": "2026-11-28T12:00:00.123Z",
        "severity": "WARN",
        "actor": {"type": "human", "id": "bob"},
        "context": {"request_id": "r", "trace_id": None},
        "payload": {"decision": "frozen"},
    }
    row = event_row(event)
    assert list(row) == EVENTS_COLUMNS
    assert row["timestamp"] == "2026-11-28 12:00:00.123" and row["trace_id"] == ""
    assert orjson.loads(row["payload"]) == {"decision": "frozen"}


def test_a_refused_call_is_rolled_up_under_the_model_it_asked_for():
    """An upstream 429 names no served model; `report cost --by model` must not show a blank row."""
    _, (event, row, _) = outputs(status=429, error_type="rate_limited", usage=None, served_model=None)
    assert row["requested_model"] == "gpt-4o" and row["model"] == "gpt-4o"
    assert event["payload"]["model"] is None  # the event keeps what was served: nothing
