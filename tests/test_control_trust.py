"""Trust in the control plane, on real Kafka and real gateway processes (issue 12).

Revocation and freezes cascade to delegated keys on every replica within a second and cut
running streams; a replica cut off from the control topics fails closed.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest

from schemas.models import Actor, Freeze
from schemas.signing import KeySet
from tests.fixtures.gateway import gateway_env, raw_records, spawn_gateway, wait_for_key

pytestmark = pytest.mark.kafka
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def status_of(url: str, key: str) -> int:
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=orjson.dumps(CHAT),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def seconds_until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - started


class SlowStream:
    """A streamed chat call (one chunk a second, about 11 s in all) read in a thread, to see when it ends."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        body = orjson.dumps({**CHAT, "stream": True, "max_tokens": 200})
        self.connection.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "x-mock-chunk-delay-ms": "1000",
            },
        )
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.ended = threading.Event()
        self.received = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self.response.read1(65536):
                self.received += chunk
        except (http.client.HTTPException, OSError):
            pass
        self.ended.set()


@pytest.fixture
def two_gateways(kafka_topics, mock_upstream, tmp_path):
    env = gateway_env(kafka_topics, mock_upstream.url)
    replicas = [spawn_gateway(env, tmp_path / f"gateway-{n}") for n in (1, 2)]
    yield replicas
    for replica in replicas:
        replica.stop()


@pytest.fixture
def chain(two_gateways, control):
    """human -> agent -> sub-agent keys, live on both replicas."""
    human, human_key = control.create_key("acme", Actor(type="human", id="hannah"))
    agent, agent_key = control.create_key("acme", Actor(type="agent", id="planner"), human.key_id)
    sub, sub_key = control.create_key("acme", Actor(type="agent", id="searcher"), agent.key_id)
    for replica in two_gateways:
        wait_for_key(replica, sub_key)
    return {"human": human, "agent": agent, "sub": sub, "keys": (human_key, agent_key, sub_key)}


def test_revoking_a_human_cuts_her_agents_on_every_replica_and_their_running_stream(
    two_gateways, chain, control, kafka_topics
):
    human_key, agent_key, sub_key = chain["keys"]
    stream = SlowStream(two_gateways[1].url, sub_key)
    time.sleep(0.5)
    assert not stream.ended.is_set()

    control.revoke_key(chain["human"].key_id)
    revoked_at = time.monotonic()
    for replica in two_gateways:
        for key in (agent_key, sub_key, human_key):
            seconds_until(
                lambda url=replica.url, key=key: status_of(url, key) == 401,
                timeout=max(0.05, 1.0 - (time.monotonic() - revoked_at)),
            )
    assert stream.ended.wait(max(0.0, 1.0 - (time.monotonic() - revoked_at))), "the running stream was not cut"
    assert time.monotonic() - revoked_at < 1.0
    assert b"[DONE]" not in stream.received

    calls = [r for r in raw_records(kafka_topics, expected=1, timeout=10) if r["kind"] == "call"]
    [cut] = [c for c in calls if c["stream"]]
    assert cut["error_type"] == "key_revoked" and [link["actor"]["id"] for link in cut["chain"]] == [
        "hannah",
        "planner",
        "searcher",
    ]


def test_freezing_a_key_freezes_its_delegates_and_cuts_their_streams(two_gateways, chain, control):
    human_key, agent_key, sub_key = chain["keys"]
    stream = SlowStream(two_gateways[0].url, sub_key)
    scope = f"key:{chain['agent'].key_id}"
    control.put_control(Freeze(scope=scope, frozen=True, reason="runaway", changed_at=datetime.now(UTC)))
    frozen_at = time.monotonic()
    for replica in two_gateways:
        seconds_until(lambda url=replica.url: status_of(url, sub_key) == 403, timeout=1.0)
        assert status_of(replica.url, agent_key) == 403
        assert status_of(replica.url, human_key) == 200  # the freeze goes down the chain, not up
    assert stream.ended.wait(max(0.0, 1.0 - (time.monotonic() - frozen_at))), "the running stream was not cut"
    control.put_control(Freeze(scope=scope, frozen=False, changed_at=datetime.now(UTC)))
    seconds_until(lambda: status_of(two_gateways[0].url, sub_key) == 200, timeout=2.0)


def test_a_replica_cut_off_from_the_control_topics_fails_closed(
    kafka_broker, kafka_topics, mock_upstream, control, tmp_path
):
    """The broker is paused (SIGSTOP) under a gateway with a 2 s staleness limit, then resumed."""
    env = {**gateway_env(kafka_topics, mock_upstream.url), "TOKENTRAIL_CONTROL_STALE_AFTER_S": "2"}
    _, key = control.create_key("acme", Actor(type="human", id="alice"))
    gateway = spawn_gateway(env, tmp_path / "gateway")
    try:
        wait_for_key(gateway, key)
        pausing_at = time.monotonic()
        os.kill(kafka_broker.pid, signal.SIGSTOP)
        try:
            seconds_until(lambda: status_of(gateway.url, key) == 503, timeout=15)
            # Last contact is at most one heartbeat (1 s) before the pause: not before 2 - 1 s.
            assert time.monotonic() - pausing_at >= 1.0
            request = urllib.request.Request(
                gateway.url + "/v1/chat/completions",
                data=orjson.dumps(CHAT),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert "has not heard from the control topics" in orjson.loads(refused.value.read())["error"]["message"]
            with pytest.raises(urllib.error.HTTPError) as not_ready:
                urllib.request.urlopen(gateway.url + "/readyz", timeout=5)
            assert not_ready.value.code == 503 and orjson.loads(not_ready.value.read())["ready"] is False
        finally:
            os.kill(kafka_broker.pid, signal.SIGCONT)
        seconds_until(lambda: status_of(gateway.url, key) == 200, timeout=30)  # Kafka answers: admitted again
    finally:
        gateway.stop()


def test_identity_and_control_records_without_the_operator_key_are_refused(gateway, control, kafka_topics):
    """Whoever can write to Kafka but lacks TOKENTRAIL_OPERATOR_KEY can neither mint a key nor lift a freeze."""
    from schemas import wire
    from tokentrail.control.publish import publish
    from tokentrail.control.records import encode, mint_identity

    forged, forged_key = mint_identity("acme", Actor(type="human", id="mallory"), None, datetime.now(UTC))
    publish(
        {"bootstrap.servers": kafka_topics.bootstrap},
        kafka_topics.name("tokentrail.identities"),
        forged.key_id,
        wire.dumps(forged),
    )
    wrong = KeySet(b"a-key-that-is-not-the-operators-0123456789")
    other, other_key = mint_identity("acme", Actor(type="human", id="eve"), None, datetime.now(UTC))
    publish(
        {"bootstrap.servers": kafka_topics.bootstrap},
        kafka_topics.name("tokentrail.identities"),
        other.key_id,
        encode(other, wrong),
    )

    _, key = control.create_key("acme", Actor(type="human", id="alice"))
    control.put_control(Freeze(scope="tenant:acme", frozen=True, changed_at=datetime.now(UTC)))
    seconds_until(lambda: status_of(gateway.url, key) == 403, timeout=5)
    thaw = Freeze(scope="tenant:acme", frozen=False, changed_at=datetime.now(UTC))
    publish(
        {"bootstrap.servers": kafka_topics.bootstrap},
        kafka_topics.name("tokentrail.controls"),
        "freeze:tenant:acme",
        wire.dumps(thaw),
    )
    publish(
        {"bootstrap.servers": kafka_topics.bootstrap},
        kafka_topics.name("tokentrail.controls"),
        "freeze:tenant:acme",
        None,
    )

    refused = 'tokentrail_gateway_control_records_refused_total{reason="%s",topic="%s"}'
    seconds_until(lambda: gateway.metrics().get(refused % ("tombstone", "controls")) == 1.0, timeout=5)
    samples = gateway.metrics()
    assert samples[refused % ("signature", "identities")] == 2.0
    assert samples[refused % ("signature", "controls")] == 1.0
    assert status_of(gateway.url, key) == 403  # still frozen
    assert status_of(gateway.url, forged_key) == 401 and status_of(gateway.url, other_key) == 401
    assert gateway.logs().count("refused a record on") == 3  # the first of each kind, then only counted
