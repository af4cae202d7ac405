"""The request-shape context hash (gateway/context_hash.py): same shape, same hash, whatever the
user wrote; any change of endpoint, model, tools, response format or system prompt changes it."""

from __future__ import annotations

import urllib.request
from typing import Any

import orjson
import pytest

from gateway.context_hash import context_hash
from schemas.models import Actor
from tests.fixtures.gateway import raw_records, wait_for_key

CHAT = "/v1/chat/completions"


def chat(user: str = "hello", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are the support bot."},
            {"role": "user", "content": user},
        ],
        "tools": [
            {"type": "function", "function": {"name": "lookup_order", "parameters": {}}},
            {"type": "function", "function": {"name": "refund", "parameters": {}}},
        ],
        "response_format": {"type": "json_object"},
    }
    body.update(changes)
    return body


def test_user_text_and_conversation_length_never_change_the_hash():
    base = context_hash(CHAT, chat("where is my order 1234?"))
    assert len(base) == 16 and int(base, 16) >= 0
    assert context_hash(CHAT, chat("my email is ana@example.com")) == base
    longer = chat()
    longer["messages"] += [{"role": "assistant", "content": "sure"}, {"role": "user", "content": "and now?"}]
    assert context_hash(CHAT, longer) == base
    late_system = chat()
    late_system["messages"].append({"role": "system", "content": "the user is angry"})
    assert context_hash(CHAT, late_system) == base, "a system message after the first user turn is conversation"


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "gpt-4o-mini"},
        {"tools": [{"type": "function", "function": {"name": "lookup_order"}}]},
        {"response_format": {"type": "json_schema", "json_schema": {}}},
        {"response_format": None},
        {"messages": [{"role": "system", "content": "You are the sales bot."}, {"role": "user", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hello"}]},
    ],
)
def test_each_part_of_the_shape_changes_the_hash(changes):
    assert context_hash(CHAT, chat(**changes)) != context_hash(CHAT, chat())


def test_endpoint_is_part_of_the_shape_and_tool_order_is_not():
    assert context_hash("/v1/completions", chat()) != context_hash(CHAT, chat())
    body = chat()
    body["tools"] = list(reversed(body["tools"]))
    assert context_hash(CHAT, body) == context_hash(CHAT, chat())


def test_developer_role_and_text_parts_count_as_the_system_prompt():
    parts = chat(messages=[{"role": "developer", "content": [{"type": "text", "text": "You are the support bot."}]}])
    plain = chat(messages=[{"role": "developer", "content": "You are the support bot."}])
    assert context_hash(CHAT, parts) == context_hash(CHAT, plain)


def test_anthropic_system_string_or_blocks_and_tools_by_name():
    def message(system: Any, user: str) -> dict[str, Any]:
        return {
            "model": "claude-sonnet-4-5",
            "system": system,
            "tools": [{"name": "get_weather", "input_schema": {}}],
            "messages": [{"role": "user", "content": user}],
        }

    as_text = context_hash("/v1/messages", message("Be terse.", "hi"))
    assert context_hash("/v1/messages", message([{"type": "text", "text": "Be terse."}], "other")) == as_text
    assert context_hash("/v1/messages", message("Be verbose.", "hi")) != as_text


def test_responses_api_instructions_tools_and_text_format():
    def request(instructions: str, fmt: str, user: str) -> dict[str, Any]:
        return {
            "model": "gpt-4o",
            "instructions": instructions,
            "input": user,
            "tools": [{"type": "web_search"}, {"type": "function", "name": "lookup"}],
            "text": {"format": {"type": fmt}},
        }

    base = context_hash("/v1/responses", request("Be kind.", "json_schema", "a"))
    assert context_hash("/v1/responses", request("Be kind.", "json_schema", "b")) == base
    assert context_hash("/v1/responses", request("Be kind.", "text", "a")) != base
    assert context_hash("/v1/responses", request("Be rude.", "json_schema", "a")) != base


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": 7, "messages": "not a list", "tools": {"a": 1}, "response_format": "json"},
        {"messages": [None, 3, {"role": "system", "content": {"odd": True}}], "tools": [None, {"function": "x"}]},
        {"system": 12, "text": [], "functions": [{"name": None}]},
    ],
)
def test_any_json_object_gets_a_hash_without_error(body):
    assert len(context_hash(CHAT, body)) == 16


@pytest.mark.kafka
def test_the_gateway_carries_the_hash_in_the_raw_call(gateway, mock_upstream, control, kafka_topics):
    _, key = control.create_key("acme", Actor(type="human", id="alice"))
    wait_for_key(gateway, key)
    bodies = [chat("first question"), chat("second question"), chat("third", model="gpt-4o-mini")]
    for body in bodies:
        request = urllib.request.Request(
            gateway.url + CHAT,
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    records = sorted(raw_records(kafka_topics, expected=3), key=lambda r: r["received_at"])
    assert [r["context_hash"] for r in records] == [context_hash(CHAT, body) for body in bodies]
    assert records[0]["context_hash"] == records[1]["context_hash"] != records[2]["context_hash"]
