"""OpenAI-compatible upstreams by configuration (TOKENTRAIL_UPSTREAMS): parsed with one-line
errors, routed by model prefix or header, recorded under their own provider name and priced
through genai-prices' provider ids (unpriced, with the reason, where it knows none)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import openai
import orjson
import pytest

from flows.pricing import Pricer
from gateway.compatible import UPSTREAM_HEADER, UpstreamRouter, parse_upstreams
from mock_upstream.process import spawn_mock_upstream
from schemas.models import Actor, RawCall
from tests.fixtures.gateway import raw_records, spawn_gateway

GROQ = {"name": "groq", "base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY"}


def test_a_json_list_and_a_yaml_file_give_the_same_upstreams(tmp_path):
    entries = [
        {**GROQ, "model_prefix": "groq/"},
        {"name": "azure", "base_url": "https://x.openai.azure.com/openai/v1/", "auth": "api-key"},
    ]
    from_json = parse_upstreams(orjson.dumps(entries).decode())
    yaml_file = tmp_path / "upstreams.yaml"
    yaml_file.write_text(
        "- name: groq\n  base_url: https://api.groq.com/openai/v1\n  api_key_env: GROQ_API_KEY\n  model_prefix: groq/\n"
        "- name: azure\n  base_url: https://x.openai.azure.com/openai/v1/\n  auth: api-key\n"
    )
    assert parse_upstreams(str(yaml_file)) == from_json
    assert [u.base_url for u in from_json] == ["https://api.groq.com/openai", "https://x.openai.azure.com/openai"]
    assert parse_upstreams(None) == [] and parse_upstreams("  ") == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{**GROQ, "base_url": "api.groq.com"}], "0.base_url: Value error, must start with http:// or https://"),
        ([{**GROQ, "name": "openai"}], "'openai' is built in"),
        ([GROQ, GROQ], "name used twice: groq"),
        ([{**GROQ, "prefix": "g/"}], "0.prefix: Extra inputs are not permitted"),
        ([{**GROQ, "name": "Groq Cloud"}], "0.name: String should match pattern"),
        ({"name": "groq"}, "Input should be a valid list"),
    ],
)
def test_bad_upstream_entries_are_one_line_naming_the_entry(entries, message):
    with pytest.raises(ValueError) as info:
        parse_upstreams(orjson.dumps(entries).decode())
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"cannot read {tmp_path / 'nope.json'}"):
        parse_upstreams(str(tmp_path / "nope.json"))


def test_routing_by_longest_prefix_and_by_header():
    router = UpstreamRouter(
        parse_upstreams(
            orjson.dumps(
                [
                    {"name": "azure", "base_url": "http://a", "model_prefix": "az/"},
                    {"name": "azure-eu", "base_url": "http://b", "model_prefix": "az/eu/"},
                    {"name": "ollama", "base_url": "http://c"},
                ]
            ).decode()
        )
    )
    assert [(u.name, model) for u, model in [router.by_model("az/eu/gpt-4o"), router.by_model("az/gpt-4o")]] == [
        ("azure-eu", "gpt-4o"),
        ("azure", "gpt-4o"),
    ]
    assert router.by_model("gpt-4o") is None and router.by_model("az/") is None and router.by_model(None) is None
    assert router.by_header(" Ollama ").name == "ollama"
    with pytest.raises(KeyError, match="unknown upstream 'olama'.*azure, azure-eu, ollama"):
        router.by_header("olama")


def test_compatible_providers_are_priced_by_genai_prices_id_or_unpriced_with_the_reason():
    pricer = Pricer()
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    at = datetime(2026, 11, 1, tzinfo=UTC)
    groq = pricer.price("groq", "chat", "llama-3.3-70b-versatile", usage, at)
    assert not groq.unpriced and groq.cost > 0 and (groq.input_tokens, groq.output_tokens) == (1000, 100)
    local = pricer.price("local-vllm", "chat", "llama", usage, at)
    assert (
        local.unpriced and local.input_tokens == 1000 and "genai-prices has no provider 'local-vllm'" in local.problem
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.kafka
@pytest.mark.slow
def test_a_call_through_a_second_compatible_upstream_is_routed_recorded_and_priced(kafka_topics, control, tmp_path):
    """OpenAI itself points at a closed port: only a call routed to the second mock process
    (by model prefix, or by header) can succeed."""
    second = spawn_mock_upstream()
    upstreams = [
        {"name": "groq", "base_url": second.url + "/v1", "api_key_env": "GROQ_API_KEY", "model_prefix": "groq/"},
        {"name": "local-vllm", "base_url": second.url},
    ]
    env = {
        **kafka_topics.env,
        "TOKENTRAIL_UPSTREAM_OPENAI_URL": f"http://127.0.0.1:{_closed_port()}",
        "TOKENTRAIL_UPSTREAMS": orjson.dumps(upstreams).decode(),
        "GROQ_API_KEY": "gsk-test",
        "TOKENTRAIL_UPSTREAM_CONNECT_TIMEOUT_S": "2",
    }
    gateway = spawn_gateway(env, tmp_path / "gateway-home")
    try:
        identity, key = control.create_key("acme", Actor(type="human", id="alice"))
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        reply = None
        deadline = time.monotonic() + 10
        while reply is None and time.monotonic() < deadline:  # until the gateway has the new key
            try:
                reply = client.chat.completions.create(model="groq/llama-3.3-70b-versatile", messages=messages)
            except openai.AuthenticationError:
                time.sleep(0.05)
        assert reply is not None, "the gateway did not accept the key within 10 s"
        assert reply.model == "llama-3.3-70b-versatile"  # the provider saw the model without our prefix
        local = client.chat.completions.create(
            model="llama", messages=messages, extra_headers={UPSTREAM_HEADER: "local-vllm"}
        )
        assert local.usage.prompt_tokens > 0
        with pytest.raises(openai.APIStatusError) as unrouted:
            client.chat.completions.create(model="gpt-4o", messages=messages)
        assert unrouted.value.status_code == 502
        with pytest.raises(openai.BadRequestError, match="unknown upstream 'nope'"):
            client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={UPSTREAM_HEADER: "nope"})
    finally:
        gateway.stop()
        second.stop()

    calls = [r for r in raw_records(kafka_topics, expected=4) if r["kind"] == "call" and r["status"] == 200]
    by_provider = {call["provider"]: RawCall.model_validate(call) for call in calls}
    assert set(by_provider) == {"groq", "local-vllm"}
    pricer = Pricer()
    groq = by_provider["groq"]
    assert groq.requested_model == "llama-3.3-70b-versatile" and groq.key_id == identity.key_id
    priced = pricer.price("groq", groq.api_flavor, groq.served_model, groq.usage, groq.received_at)
    assert not priced.unpriced and priced.cost > 0
    local = by_provider["local-vllm"]
    unpriced = pricer.price("local-vllm", local.api_flavor, local.served_model, local.usage, local.received_at)
    assert unpriced.unpriced and "genai-prices has no provider 'local-vllm'" in unpriced.problem
