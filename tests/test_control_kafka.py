"""The control CLI against real Kafka: keys and freezes reach a follower within a second."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.fixtures.gateway import OPERATOR_KEY
from tokentrail.cli import main
from tokentrail.control.plane import ControlPlane
from tokentrail.settings import CoreSettings

pytestmark = pytest.mark.kafka


@pytest.fixture
def env(kafka_topics, monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENTRAIL_HOME", str(tmp_path))
    for name, value in kafka_topics.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOKENTRAIL_OPERATOR_KEY", OPERATOR_KEY)
    return kafka_topics


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def following_plane() -> ControlPlane:
    plane = ControlPlane(CoreSettings())
    plane.follower.start()
    assert plane.follower.ready.wait(10)
    return plane


def wait_until(condition, timeout=1.0) -> float:
    """Seconds until condition() holds; fails the test past `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "not applied within the deadline"
        time.sleep(0.01)
    return time.monotonic() - start


def test_keys_create_list_revoke_reach_a_follower_within_a_second(env, capsys):
    plane = following_plane()
    try:
        code, out, _ = run(
            capsys, "keys", "create", "--tenant", "acme", "--actor-type", "human", "--actor-id", "alice", "--json"
        )
        assert code == 0
        root = orjson.loads(out)
        assert set(root) >= {"key", "key_id", "tenant_id", "actor", "chain"}
        assert root["key"].startswith(f"tt_{root['key_id']}_")
        assert root["actor"] == {"type": "human", "id": "alice"}
        wait_until(lambda: not isinstance(plane.identities.authenticate(root["key"]), str))

        code, out, _ = run(
            capsys,
            "keys",
            "create",
            "--tenant",
            "acme",
            "--actor-type",
            "agent",
            "--actor-id",
            "planner",
            "--parent",
            root["key_id"],
            "--json",
        )
        child = orjson.loads(out)
        assert [link["key_id"] for link in child["chain"]] == [root["key_id"], child["key_id"]]

        code, out, _ = run(capsys, "keys", "list", "--json")
        listed = [orjson.loads(line) for line in out.splitlines()]
        assert {item["key_id"] for item in listed} == {root["key_id"], child["key_id"]}
        assert all("key_hash" not in item and "key" not in item for item in listed)

        code, out, _ = run(capsys, "keys", "revoke", child["key_id"])
        assert code == 0 and child["key_id"] in out
        wait_until(lambda: plane.identities.authenticate(child["key"]) == "revoked")
        _, out, _ = run(capsys, "keys", "list")
        assert "revoked" in next(line for line in out.splitlines() if child["key_id"] in line)
        assert root["key"] not in out and child["key"] not in out
    finally:
        plane.follower.stop()


def test_freeze_and_limits_reach_a_follower_within_a_second(env, capsys):
    plane = following_plane()
    try:
        assert run(capsys, "freeze", "--tenant", "acme", "--reason", "incident")[0] == 0
        wait_until(lambda: plane.controls.freeze_of("acme", "k") is not None)
        assert run(capsys, "freeze", "--tenant", "acme", "--off")[0] == 0
        wait_until(lambda: plane.controls.freeze_of("acme", "k") is None)
        assert run(capsys, "limits", "--tenant", "acme", "--rpm", "5")[0] == 0
        wait_until(lambda: plane.controls.limits_of("acme", "k").requests_per_minute == 5)
        assert run(capsys, "capture", "--tenant", "acme")[0] == 0
        wait_until(lambda: plane.controls.capture_enabled("acme"))
    finally:
        plane.follower.stop()


def test_cli_refuses_bad_input_with_one_line(env, capsys):
    code, _, err = run(
        capsys,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--actor-type",
        "agent",
        "--actor-id",
        "x",
        "--parent",
        "0000000000000000",
    )
    assert code == 2 and err.count("\n") == 1 and "parent key 0000000000000000 is not in the registry" in err
    code, _, err = run(capsys, "keys", "revoke", "0000000000000000")
    assert code == 2 and "not in the registry" in err
    code, _, err = run(capsys, "freeze", "--key", "0000000000000000")
    assert code == 2 and "not in the registry" in err
    code, _, err = run(capsys, "limits", "--tenant", "acme")
    assert code == 2 and "--rpm" in err
    code, _, err = run(capsys, "keys", "create", "--tenant", " ", "--actor-type", "human", "--actor-id", "a")
    assert code == 2 and "must not be empty" in err


def test_a_bad_record_on_a_control_topic_is_skipped_and_the_rest_applied(env, capsys):
    from tokentrail.control.publish import publish

    plane = following_plane()
    try:
        publish(
            {"bootstrap.servers": env.bootstrap}, env.name("tokentrail.identities"), "0000000000000000", b"{not json"
        )
        publish(
            {"bootstrap.servers": env.bootstrap},
            env.name("tokentrail.controls"),
            "freeze:tenant:acme",
            b'{"kind": "freeze"}',
        )
        _, out, _ = run(
            capsys, "keys", "create", "--tenant", "acme", "--actor-type", "human", "--actor-id", "alice", "--json"
        )
        key = orjson.loads(out)["key"]
        wait_until(lambda: not isinstance(plane.identities.authenticate(key), str))
        assert plane.follower.bad_records == 2 and plane.controls.freeze_of("acme", "k") is None
    finally:
        plane.follower.stop()


def test_rotate_signing_re_signs_every_record_so_the_previous_operator_key_can_go(env, capsys, monkeypatch):
    from tokentrail.settings import ConfigError

    code, out, _ = run(
        capsys, "keys", "create", "--tenant", "acme", "--actor-type", "human", "--actor-id", "alice", "--json"
    )
    key = orjson.loads(out)["key"]
    assert run(capsys, "freeze", "--tenant", "acme", "--reason", "audit")[0] == 0

    new_key = "rotated-operator-key-0123456789abcdef"
    monkeypatch.setenv("TOKENTRAIL_OPERATOR_KEY", new_key)
    monkeypatch.setenv("TOKENTRAIL_OPERATOR_KEYS_PREVIOUS", OPERATOR_KEY)
    code, out, _ = run(capsys, "keys", "rotate-signing")
    assert code == 0 and "re-signed 1 identity and 1 control records" in out

    monkeypatch.delenv("TOKENTRAIL_OPERATOR_KEYS_PREVIOUS")
    plane = following_plane()  # the new key only
    try:
        assert not isinstance(plane.identities.authenticate(key), str)
        assert plane.controls.freeze_of("acme", "k").reason == "audit"
        # The records signed with the old key are still on the topic (until compaction) and refused:
        assert plane.refused[("identities", "signature")] == 1 and plane.refused[("controls", "signature")] == 1
    finally:
        plane.follower.stop()
    monkeypatch.setenv("TOKENTRAIL_OPERATOR_KEY", "short")
    with pytest.raises(ConfigError, match="TOKENTRAIL_OPERATOR_KEY is too short"):
        ControlPlane(CoreSettings())


def test_controls_list_unknown_tenant_warning_revoke_by_whole_key_and_subcommand_usage(env, capsys):
    from datetime import UTC, datetime
    from decimal import Decimal

    from schemas.models import Budget

    code, out, _ = run(
        capsys, "keys", "create", "--tenant", "acme", "--actor-type", "human", "--actor-id", "alice", "--json"
    )
    alice = orjson.loads(out)
    code, _, err = run(capsys, "freeze", "--tenant", "acmee", "--reason", "typo")
    assert code == 0 and err.strip() == "warning: unknown tenant 'acmee': no key of it is in the registry"
    code, _, err = run(capsys, "freeze", "--tenant", "acme", "--reason", "incident 9")
    assert code == 0 and err == ""
    assert run(capsys, "limits", "--key", alice["key_id"], "--rpm", "30")[0] == 0
    assert run(capsys, "capture", "--tenant", "acme")[0] == 0
    assert run(capsys, "capture", "--tenant", "globex")[0] == 0
    assert run(capsys, "capture", "--tenant", "globex", "--off")[0] == 0  # off: not in force
    ControlPlane(CoreSettings()).put_control(
        Budget(scope="tenant:acme", period="month", amount_usd=Decimal("250"), changed_at=datetime.now(UTC))
    )

    code, out, _ = run(capsys, "controls", "list", "--tenant", "acme", "--json")
    listed = {(r["kind"], r["scope"]): r for r in map(orjson.loads, out.splitlines())}
    assert set(listed) == {
        ("budget", "tenant:acme"),
        ("capture", "tenant:acme"),
        ("freeze", "tenant:acme"),
        ("limits", f"key:{alice['key_id']}"),
    }
    assert (
        listed[("freeze", "tenant:acme")]["reason"] == "incident 9"
        and "signature" not in listed[("freeze", "tenant:acme")]
    )
    code, out, _ = run(capsys, "controls", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "SCOPE", "CHANGED", "(UTC)", "SETTING"] and len(lines) == 6
    assert any("freeze" in line and "acmee" in line for line in lines)

    code, out, _ = run(capsys, "keys", "list")
    assert out.splitlines()[0].split()[:3] == ["KEY_ID", "TENANT", "STATE"]
    code, _, err = run(capsys, "keys", "revoke", alice["key"][:-2] + "xx")
    assert code == 2 and "pass its key id" in err
    code, out, _ = run(capsys, "keys", "revoke", alice["key"])
    assert code == 0 and f"revoked {alice['key_id']}" in out and alice["key"] not in out

    with pytest.raises(SystemExit) as exited:
        main(["limits", "--tenant", "acme", "--rpn", "5"])
    _, err = capsys.readouterr()
    # one line naming the sub-command (not the top-level usage) and where its help is
    assert exited.value.code == 2 and err.startswith("tokentrail limits: ") and "--rpn" in err
    assert "`tokentrail limits --help`" in err and len(err.strip().splitlines()) == 1
