"""The key admin API on a real gateway: agents mint delegated keys at run time (issue 13 item 9)."""

from __future__ import annotations

import http.client
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.models import Actor
from tests.fixtures.gateway import gateway_env, raw_records, spawn_gateway, wait_for_key

pytestmark = pytest.mark.kafka
ADMIN_TOKEN = "gateway-test-admin-token-0123456789abcdef"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def call(gateway, method: str, path: str, token: str | None = None, body=None) -> tuple[int, dict]:
    host, port = gateway.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=orjson.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read() or b"{}")
    finally:
        connection.close()


def chat(gateway, key: str, model: str = "gpt-4o-mini") -> int:
    return call(gateway, "POST", "/v1/chat/completions", key, {**CHAT, "model": model})[0]


@pytest.fixture
def admin_gateway(kafka_topics, mock_upstream, tmp_path):
    env = {**gateway_env(kafka_topics, mock_upstream.url), "TOKENTRAIL_ADMIN_TOKEN": ADMIN_TOKEN}
    process = spawn_gateway(env, tmp_path / "gateway-home")
    yield process
    process.stop()


def test_an_agent_mints_a_sub_agent_key_which_is_attributed_and_cut_with_it(admin_gateway, control, kafka_topics):
    gateway = admin_gateway
    human, human_key = control.create_key("acme", Actor(type="human", id="hannah"))
    wait_for_key(gateway, human_key)
    status, agent = call(
        gateway, "POST", "/tokentrail/v1/keys", human_key, {"actor_type": "agent", "actor_id": "planner"}
    )
    assert status == 201, agent
    status, sub = call(
        gateway, "POST", "/tokentrail/v1/keys", agent["key"], {"actor_type": "agent", "actor_id": "searcher"}
    )
    assert status == 201, sub
    assert set(sub) == {"key", "key_id", "tenant_id", "actor", "parent_key_id", "chain", "expires_at", "models"}
    assert sub["tenant_id"] == "acme" and sub["parent_key_id"] == agent["key_id"]
    assert [link["actor"]["id"] for link in sub["chain"]] == ["hannah", "planner", "searcher"]

    assert chat(gateway, sub["key"]) == 200  # usable at once on the replica that minted it
    [record] = [r for r in raw_records(kafka_topics, expected=1) if r["kind"] == "call"]
    assert record["key_id"] == sub["key_id"]
    assert [(link["key_id"], link["actor"]["id"]) for link in record["chain"]] == [
        (human.key_id, "hannah"),
        (agent["key_id"], "planner"),
        (sub["key_id"], "searcher"),
    ]

    status, listed = call(gateway, "GET", "/tokentrail/v1/keys", agent["key"])
    assert status == 200 and [k["key_id"] for k in listed["keys"]] == [agent["key_id"], sub["key_id"]]
    assert all("key_hash" not in k and "key" not in k and "signature" not in k for k in listed["keys"])
    # The sub-agent cannot manage its parent; the human revokes the agent, which cuts the sub-agent.
    assert call(gateway, "DELETE", f"/tokentrail/v1/keys/{agent['key_id']}", sub["key"])[0] == 404
    status, revoked = call(gateway, "DELETE", f"/tokentrail/v1/keys/{agent['key_id']}", human_key)
    assert status == 200 and revoked["key_id"] == agent["key_id"] and revoked["revoked_at"]
    assert chat(gateway, sub["key"]) == 401 and chat(gateway, agent["key"]) == 401
    assert chat(gateway, human_key) == 200
    assert call(gateway, "POST", "/tokentrail/v1/keys", sub["key"], {"actor_type": "agent", "actor_id": "x"})[0] == 401


def test_delegation_is_never_wider_and_expiry_and_models_are_enforced(admin_gateway, control):
    gateway = admin_gateway
    soon = datetime.now(UTC) + timedelta(hours=1)
    status, parent = call(
        gateway,
        "POST",
        "/tokentrail/v1/keys",
        ADMIN_TOKEN,
        {
            "tenant_id": "acme",
            "actor_type": "agent",
            "actor_id": "planner",
            "models": ["gpt-4o-mini"],
            "expires_at": soon.isoformat(),
        },
    )
    assert status == 201 and parent["models"] == ["gpt-4o-mini"]
    assert chat(gateway, parent["key"]) == 200
    status, refused = call(gateway, "POST", "/v1/chat/completions", parent["key"], {**CHAT, "model": "gpt-4o"})
    assert status == 403 and "may not call model 'gpt-4o'" in refused["error"]["message"]

    wider = [
        ({"actor_type": "agent", "actor_id": "a", "models": ["gpt-4o"]}, 400, "may not call gpt-4o"),
        (
            {"actor_type": "agent", "actor_id": "a", "expires_at": (soon + timedelta(days=1)).isoformat()},
            400,
            "cannot outlive its parent",
        ),
        ({"actor_type": "agent", "actor_id": "a", "tenant_id": "globex"}, 403, "another tenant"),
        ({"actor_type": "agent", "actor_id": "a", "parent_key_id": "0123456789abcdef"}, 403, "from itself only"),
        ({"actor_type": "robot", "actor_id": "a"}, 400, "actor_type"),
        ({"actor_type": "agent", "actor_id": "a", "surprise": 1}, 400, "surprise"),
    ]
    for body, status, message in wider:
        answer = call(gateway, "POST", "/tokentrail/v1/keys", parent["key"], body)
        assert answer[0] == status and message in answer[1]["error"]["message"], (body, answer)
    assert call(gateway, "POST", "/tokentrail/v1/keys", None, {"actor_type": "agent", "actor_id": "a"})[0] == 401
    assert call(gateway, "POST", "/tokentrail/v1/keys", "tt_wrong", {"actor_type": "agent", "actor_id": "a"})[0] == 401
    status, body = call(gateway, "POST", "/tokentrail/v1/keys", ADMIN_TOKEN, {"actor_type": "agent", "actor_id": "a"})
    assert status == 400 and "tenant_id" in body["error"]["message"]

    status, short = call(
        gateway,
        "POST",
        "/tokentrail/v1/keys",
        parent["key"],
        {
            "actor_type": "agent",
            "actor_id": "brief",
            "expires_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        },
    )
    assert status == 201 and short["models"] == ["gpt-4o-mini"]  # inherited from its parent
    assert chat(gateway, short["key"]) == 200
    time.sleep(2.1)
    status, expired = call(gateway, "POST", "/v1/chat/completions", short["key"], CHAT)
    assert status == 401 and "expired" in expired["error"]["message"]
