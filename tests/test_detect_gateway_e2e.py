"""Detection end to end, from HTTP calls through the gateway to Prometheus Alertmanager.

One stack per module, every part a real process: the Kafka broker (session fixture), the mock
provider (`tokentrail mock-upstream`, told by x-mock-* headers which error to answer), the
gateway (`python -m gateway`, keys minted by the control plane as `tokentrail keys` does), the
flows (`tokentrail flows --flow enrich --flow detect -w 2`, embedded ClickHouse; two workers, so
tenant buckets, ticks and the system state cross workers), the relay
(`tokentrail alerts deliver`) and Debian's `prometheus-alertmanager` on loopback.

Event time is the gateway's wall clock, so two detection settings are shortened (everything
else is the default: 99% SLO, minimum volume 5 / 2, pattern window 10 minutes, 3 identities):
- `TOKENTRAIL_DETECT_BURN_RULES=page:14.4:1m:5s`: the SRE Workbook's fast page pair (14.4x over
  1 h and 5 m) scaled down 60x, alone: with the slower pairs (6 h / 30 m, 3 d / 6 h) an alert
  keeps holding on them (at a lower severity) for as long as their windows remember the burst.
- `TOKENTRAIL_DETECT_CLEAR_SECONDS=5` instead of 300: how long a cleared condition must stay
  clear before its alert resolves.
With the defaults, recovery would take over five minutes of wall clock per test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.models import Actor
from tests.fixtures.alertmanager import AlertmanagerProcess, start_alertmanager, wait_for
from tests.fixtures.gateway import OPERATOR_KEY, SIGNING_KEY, GatewayProcess, gateway_env, spawn_gateway, wait_for_key
from tests.fixtures.kafka import KafkaTopics, consume_all
from tests.test_alertmanager_e2e import active_alerts
from tests.test_flows_e2e import FlowsProcess
from tokentrail import topics
from tokentrail.broker.admin import delete_topics, ensure_topics
from tokentrail.broker.server import free_port
from tokentrail.control.plane import ControlPlane
from tokentrail.processes import die_with_parent, stop_process
from tokentrail.settings import CoreSettings
from tokentrail.topics import TOPICS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 180.0
"""Seconds any one condition may take: the flows start in a few seconds, but CI may be loaded."""
SYSTEM_PROMPT = "You are the support bot of Acme. Answer in JSON."
SHORTENED = {"TOKENTRAIL_DETECT_BURN_RULES": "page:14.4:1m:5s", "TOKENTRAIL_DETECT_CLEAR_SECONDS": "5"}
RESEND_SECONDS = 60.0
"""The relay's default: a firing alert's endsAt in Alertmanager is 4 minutes ahead, so an alert
that leaves Alertmanager's active list within the test was resolved by tokentrail, not expired."""


@dataclass
class Stack:
    topics: KafkaTopics
    gateway: GatewayProcess
    control: ControlPlane
    flows: FlowsProcess
    alertmanager: AlertmanagerProcess
    relay: subprocess.Popen[bytes]
    relay_log: Path

    def key(self, tenant: str, name: str) -> tuple[str, str]:
        """(key_id, key) of a new human identity of `tenant`, once the gateway accepts it."""
        identity, key = self.control.create_key(tenant, Actor(type="human", id=name))
        wait_for_key(self.gateway, key, timeout=30)
        return identity.key_id, key

    def chat(self, key: str, user: str = "hello", status: int | None = None, error_type: str | None = None) -> int:
        """One chat completion through the gateway; the mock answers `status` (and `error_type`)."""
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
        }
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if status is not None:
            headers["x-mock-status"] = str(status)
        if error_type is not None:
            headers["x-mock-error-type"] = error_type
        request = urllib.request.Request(
            self.gateway.url + "/v1/chat/completions", data=orjson.dumps(body), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.read()
            return int(error.code)

    def events(self) -> list[dict[str, Any]]:
        """Every record on the events topic (calls and detection events)."""
        records = consume_all(self.topics.bootstrap, self.topics.name(topics.EVENTS), timeout=30)
        return [orjson.loads(r.value()) for r in records]

    def logs(self) -> str:
        parts = {"flows": self.flows.log, "relay": self.relay_log, "gateway": self.gateway.log_file}
        return "\n".join(f"--- {name}:\n{path.read_text(errors='replace')[-2500:]}" for name, path in parts.items())


def wait_until(condition: Callable[[], Any], stack: Stack, what: str, timeout: float = DEADLINE) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what`, with the logs."""
    try:
        return wait_for(condition, timeout)
    except AssertionError:
        raise AssertionError(f"{what}: not within {timeout:.0f}s\n{stack.logs()}") from None


def detections(events: list[dict[str, Any]], event_type: str, tenant: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type and tenant in (None, e["tenant_id"])]


@pytest.fixture(scope="module")
def stack(kafka_broker, mock_upstream, alertmanager_binary, tmp_path_factory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("detect-gateway")
    kafka = KafkaTopics(kafka_broker.bootstrap, f"t{os.urandom(4).hex()}.")
    ensure_topics(kafka.bootstrap, prefix=kafka.prefix)
    with ExitStack() as cleanup:
        cleanup.callback(delete_topics, kafka.bootstrap, [kafka.name(spec.name) for spec in TOPICS])
        gateway = spawn_gateway(gateway_env(kafka, mock_upstream.url), home / "gateway")
        cleanup.callback(gateway.stop)
        control = ControlPlane(
            CoreSettings(kafka_bootstrap=kafka.bootstrap, topic_prefix=kafka.prefix, operator_key=OPERATOR_KEY)
        )
        common = {
            **os.environ,
            **kafka.env,
            "TOKENTRAIL_SIGNING_KEY": SIGNING_KEY,
            "TOKENTRAIL_OPERATOR_KEY": OPERATOR_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        common.pop("TOKENTRAIL_CLICKHOUSE_URL", None)  # the embedded engine, held by the flows process
        flows_home = home / "flows"
        flows_home.mkdir()
        flows = FlowsProcess(
            flows_home,
            {
                **common,
                **SHORTENED,
                "TOKENTRAIL_HOME": str(flows_home),
                "TOKENTRAIL_FLOWS_METRICS_PORT": str(free_port()),
                "TOKENTRAIL_FLOWS_SNAPSHOT_SECONDS": "1",
            },
        )
        flows.start("--flow", "enrich", "--flow", "detect", "-w", "2")  # keying across workers
        cleanup.callback(flows.kill)
        alertmanager = start_alertmanager(alertmanager_binary, home)
        cleanup.callback(alertmanager.stop)
        relay_log = home / "relay.log"
        with relay_log.open("ab") as out:
            relay = subprocess.Popen(
                [sys.executable, "-m", "tokentrail", "alerts", "deliver"],
                env={
                    **common,
                    "TOKENTRAIL_HOME": str(home / "relay"),
                    "TOKENTRAIL_ALERTMANAGER_URL": alertmanager.url,
                    "TOKENTRAIL_ALERT_RESEND_SECONDS": str(RESEND_SECONDS),
                },
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        cleanup.callback(stop_process, relay, 15)
        yield Stack(kafka, gateway, control, flows, alertmanager, relay, relay_log)


def test_through_the_gateway_four_identities_make_one_pattern_one_identity_none_and_a_failing_tenant_pages(
    stack: Stack,
) -> None:
    """Issue 10's must-show: four identities of tenant A hitting the same upstream error make one
    `pattern_detected` naming all four; B's one identity failing thirty times the same way makes
    none; C, whose every call fails with 503, gets an error-budget page."""
    a_keys = [stack.key("det-a", f"a-human-{n}") for n in range(4)]
    (b_key_id, b_key) = stack.key("det-b", "b-human")
    c_keys = [stack.key("det-c", f"c-human-{n}") for n in range(2)]
    same_error = {"status": 502, "error_type": "upstream_overloaded"}

    for n in range(30):  # B first: its failures are in the topic before A's pattern can form
        assert stack.chat(b_key, user=f"question {n}", **same_error) == 502
    for round_ in range(3):  # each identity asks its own question: the user's text is not the shape
        for index, (_, key) in enumerate(a_keys):
            assert stack.chat(key, user=f"identity {index} asks question {round_}", **same_error) == 502
    for n in range(20):
        assert stack.chat(c_keys[n % 2][1], user=f"call {n}", status=503) == 503

    def pages(events: list[dict[str, Any]], tenant: str) -> list[dict[str, Any]]:
        return [
            e
            for e in detections(events, "alert_fired", tenant)
            if (e["payload"]["rule"], e["payload"]["severity"], e["payload"]["scope"])
            == ("error_budget_burn", "page", "tenant")
        ]

    def settled() -> list[dict[str, Any]] | None:
        events = stack.events()
        four = [p for p in detections(events, "pattern_detected", "det-a") if len(p["payload"]["identities"]) == 4]
        # B's page proves the detect flow has read B's failures (at least the 5 of minimum volume).
        return events if four and pages(events, "det-b") and pages(events, "det-c") else None

    events = wait_until(settled, stack, "A's four-identity pattern and the pages of B and C")
    patterns = detections(events, "pattern_detected")
    assert {p["tenant_id"] for p in patterns} == {"det-a"}, patterns  # not B, not C, no provider incident
    a_ids = sorted(key_id for key_id, _ in a_keys)
    naming_four = [p for p in patterns if p["payload"]["identities"] == a_ids]
    assert len(naming_four) == 1, naming_four
    [pattern] = naming_four
    assert len({p["payload"]["pattern_id"] for p in patterns}) == 1  # one pattern, published as it grew
    payload = pattern["payload"]
    assert (payload["provider"], payload["model"], payload["status"], payload["error_type"]) == (
        "openai",
        "gpt-4o-mini",
        502,
        "upstream_overloaded",
    )
    assert payload["context_hash"], "the gateway computes the request's shape hash"
    # Published as the fourth identity joined: after 4 to 12 of A's failures (the enrich flow
    # may hand a tenant's events to detection in another order than the gateway answered them).
    assert payload["tenants"] == ["det-a"] and 4 <= payload["count"] <= 12
    failed_a = [e for e in events if e["event_type"] == "llm_call_failed" and e["tenant_id"] == "det-a"]
    assert len(failed_a) == 12 and {e["payload"]["context_hash"] for e in failed_a} == {payload["context_hash"]}
    assert not detections(events, "pattern_detected", "det-b")
    b_failed = [e for e in events if e["event_type"] == "llm_call_failed" and e["tenant_id"] == "det-b"]
    assert len(b_failed) == 30 and {e["payload"]["key_id"] for e in b_failed} == {b_key_id}
    [c_page] = pages(events, "det-c")
    assert c_page["severity"] == "ERROR"
    assert "burns its error budget" in c_page["payload"]["summary"]

    # The same pattern is in the events table, so `tokentrail events --tenant det-a` shows it.
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")

    def in_timeline() -> list[dict[str, Any]] | None:
        listed = subprocess.run(
            [sys.executable, "-m", "tokentrail", "events", "--tenant", "det-a", "--since", since, "--format", "jsonl"],
            env=stack.flows.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        return [r for r in rows if r["event_type"] == "pattern_detected" and r["event_id"] == pattern["event_id"]]

    [row] = wait_until(in_timeline, stack, "the pattern in `tokentrail events --tenant det-a`", timeout=60)
    assert row["payload"]["identities"] == a_ids


def am_alerts(stack: Stack, tenant: str) -> list[dict[str, Any]]:
    return [a for a in active_alerts(stack.alertmanager.url) if a["labels"].get("tenant") == tenant]


def test_an_incident_through_the_gateway_pages_in_alertmanager_and_resolves_there_after_recovery(
    stack: Stack,
) -> None:
    """Issue 10's must-show: an injected incident (tenant D's calls fail with 500 through the
    gateway) reaches Alertmanager's /api/v2/alerts with the right labels, through the detect flow
    and `tokentrail alerts deliver`; after recovery (successful calls) it is resolved there."""
    (key_id, key) = stack.key("det-d", "d-human")
    for n in range(5):
        assert stack.chat(key, user=f"warm-up {n}") == 200
    for n in range(10):
        assert stack.chat(key, user=f"incident {n}", status=500) == 500

    [shown] = wait_until(lambda: am_alerts(stack, "det-d"), stack, "det-d's page in Alertmanager")
    assert shown["labels"] == {
        "alertname": "error_budget_burn",
        "rule": "error_budget_burn",
        "tenant": "det-d",
        "severity": "page",
        "scope": "tenant",
        "fingerprint": shown["labels"]["fingerprint"],
    }
    fired = [
        e for e in detections(stack.events(), "alert_fired", "det-d") if e["payload"]["rule"] == "error_budget_burn"
    ]
    assert [e["payload"]["fingerprint"] for e in fired] == [shown["labels"]["fingerprint"]]
    assert shown["status"]["state"] == "active"
    assert "burns its error budget" in shown["annotations"]["summary"]
    assert float(shown["annotations"]["value"]) >= 14.4 and shown["annotations"]["threshold"] == "14.4"
    assert shown["annotations"]["failed_calls"] == "5", "fires on the failure that completes the minimum volume"
    expires = datetime.fromisoformat(shown["endsAt"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC) + timedelta(minutes=3), "a firing alert must not expire on its own in the test"

    # Recovery: the tenant's calls succeed again; each one re-judges its firing alert. (Should a
    # loaded machine leave the tenant quiet for 20 s before they start, the idle ticks of the next
    # test resolve it first: the incident is over either way.)
    def resolved() -> list[dict[str, Any]] | None:
        assert stack.chat(key, user="recovered") == 200
        events = detections(stack.events(), "alert_resolved", "det-d")
        return events if events and not am_alerts(stack, "det-d") else None

    [event] = wait_until(resolved, stack, "det-d's alert resolved in Alertmanager")
    assert event["payload"]["fingerprint"] == shown["labels"]["fingerprint"]
    assert event["payload"]["status"] == "resolved" and event["payload"]["ends_at"]
    assert datetime.now(UTC) < expires, "gone from Alertmanager before its endsAt: resolved, not expired"
    assert stack.relay.poll() is None, stack.logs()


def test_the_page_of_a_tenant_that_goes_quiet_resolves_without_its_next_call(stack: Stack) -> None:
    """A tenant fails every call, then stops calling (the agent that failed was switched off), and
    nobody else's calls share its state bucket: its page still resolves, in Alertmanager too.
    Event time stands still without events; the detect flow's idle ticks move it on."""
    (_, key) = stack.key("det-e", "e-human")
    for n in range(8):
        assert stack.chat(key, user=f"incident {n}", status=503) == 503
    [shown] = wait_until(lambda: am_alerts(stack, "det-e"), stack, "det-e's page in Alertmanager")
    assert (shown["labels"]["alertname"], shown["labels"]["severity"]) == ("error_budget_burn", "page")
    expires = datetime.fromisoformat(shown["endsAt"].replace("Z", "+00:00"))

    def resolved() -> list[dict[str, Any]] | None:
        events = detections(stack.events(), "alert_resolved", "det-e")
        return events if events and not am_alerts(stack, "det-e") else None

    [event] = wait_until(resolved, stack, "the quiet tenant's page resolved")
    assert event["payload"]["fingerprint"] == shown["labels"]["fingerprint"]
    assert datetime.now(UTC) < expires, "gone from Alertmanager before its endsAt: resolved, not expired"
