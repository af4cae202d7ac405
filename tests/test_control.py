"""Control domain without Kafka: keys, registry, control state, rate limiter, record decoding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from schemas import wire
from schemas.models import Actor, Budget, Capture, Freeze, Limits, Slo
from schemas.signing import KeySet
from tokentrail.control import keys
from tokentrail.control.limits import RateLimiter
from tokentrail.control.records import RecordError, decode_control, decode_identity, encode, mint_identity
from tokentrail.control.registry import ControlState, IdentityRegistry, RateLimits

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HUMAN = Actor(type="human", id="alice")
AGENT = Actor(type="agent", id="planner")
OPERATOR = KeySet(b"control-test-operator-key-0123456789")


def encode_dict(record: dict) -> bytes:
    return orjson.dumps({**record, "signature": OPERATOR.sign(record)})


def test_key_carries_its_id_and_only_the_hash_matches():
    key_id, key = keys.new_key()
    assert key.startswith(f"tt_{key_id}_") and len(key) > 40
    assert keys.key_id_of(key) == key_id
    assert keys.matches(key, keys.hash_key(key))
    assert not keys.matches(key + "x", keys.hash_key(key))


@pytest.mark.parametrize("presented", ["", "sk-abc", "tt_short_x", "tt_0123456789abcdef", "tt_0123456789abcdefX"])
def test_key_id_of_rejects_keys_not_shaped_like_ours(presented):
    assert keys.key_id_of(presented) is None


def test_fingerprint_never_holds_the_secret():
    _, key = keys.new_key()
    secret = key.split("_", 2)[2]
    assert secret not in str(keys.fingerprint(key))
    assert keys.fingerprint("sk-proj-verysecret")["key_prefix"] == "sk-"


def _registry_with(*identities):
    registry = IdentityRegistry()
    for identity in identities:
        registry.apply(identity.key_id, identity)
    return registry


def test_authenticate_gives_the_entry_or_the_reason():
    root, root_key = mint_identity("acme", HUMAN, None, NOW)
    registry = _registry_with(root)
    entry = registry.authenticate(root_key)
    assert entry.key_id == root.key_id and entry.tenant_id == "acme"
    assert entry.chain == [{"key_id": root.key_id, "actor": {"type": "human", "id": "alice"}}]
    assert registry.authenticate(None) == "missing"
    assert registry.authenticate("sk-not-ours") == "malformed"
    assert registry.authenticate(keys.new_key()[1]) == "unknown"
    assert registry.authenticate(root_key[:-1] + ("A" if root_key[-1] != "A" else "B")) == "mismatch"
    registry.apply(root.key_id, root.model_copy(update={"revoked_at": NOW}))
    assert registry.authenticate(root_key) == "revoked"
    registry.apply(root.key_id, None)
    assert registry.authenticate(root_key) == "unknown"


def test_delegated_key_carries_its_parents_chain_root_first():
    root, _ = mint_identity("acme", HUMAN, None, NOW)
    child, child_key = mint_identity("acme", AGENT, root, NOW)
    grandchild, _ = mint_identity("acme", Actor(type="system", id="tool"), child, NOW)
    assert child.parent_key_id == root.key_id
    assert [link.key_id for link in grandchild.chain()] == [root.key_id, child.key_id, grandchild.key_id]
    entry = _registry_with(root, child).authenticate(child_key)
    assert [link["actor"]["id"] for link in entry.chain] == ["alice", "planner"]


def test_mint_refuses_a_revoked_parent_or_another_tenant():
    root, _ = mint_identity("acme", HUMAN, None, NOW)
    with pytest.raises(ValueError, match="belongs to tenant 'acme'"):
        mint_identity("globex", AGENT, root, NOW)
    with pytest.raises(ValueError, match="is revoked"):
        mint_identity("acme", AGENT, root.model_copy(update={"revoked_at": NOW}), NOW)
    with pytest.raises(ValueError, match="tenant_id"):
        mint_identity("", AGENT, None, NOW)


def test_identity_record_decoding():
    identity, _ = mint_identity("acme", HUMAN, None, NOW)
    key = identity.key_id.encode()
    decoded = decode_identity(key, encode(identity, OPERATOR), OPERATOR)[1]
    assert decoded.model_copy(update={"signature": ""}) == identity and decoded.signature.startswith(
        OPERATOR.current_id
    )
    assert decode_identity(key, None, OPERATOR) == (identity.key_id, None)
    with pytest.raises(RecordError, match="not valid JSON"):
        decode_identity(key, b"{nope", OPERATOR)
    with pytest.raises(RecordError, match="does not match its key_id"):
        decode_identity(b"other", encode(identity, OPERATOR), OPERATOR)
    with pytest.raises(RecordError, match="without a key"):
        decode_identity(None, encode(identity, OPERATOR), OPERATOR)


def test_identity_and_control_records_need_the_operator_signature():
    identity, _ = mint_identity("acme", HUMAN, None, NOW)
    key = identity.key_id.encode()
    for forged in (wire.dumps(identity), encode(identity, KeySet(b"someone-elses-key-0123456789abcdef"))):
        with pytest.raises(RecordError, match="operator signature") as refused:
            decode_identity(key, forged, OPERATOR)
        assert refused.value.kind == "signature"
    tampered = encode(identity, OPERATOR).replace(b'"acme"', b'"globex"')
    with pytest.raises(RecordError, match="forged or altered"):
        decode_identity(key, tampered, OPERATOR)
    thaw = Freeze(scope="tenant:acme", frozen=False, changed_at=NOW)
    with pytest.raises(RecordError, match="operator signature"):
        decode_control(b"freeze:tenant:acme", wire.dumps(thaw), OPERATOR)
    with pytest.raises(RecordError, match="tombstone cannot be signed") as refused:
        decode_control(b"freeze:tenant:acme", None, OPERATOR)
    assert refused.value.kind == "tombstone"


def test_records_signed_with_a_previous_operator_key_still_verify():
    old, new = b"old-operator-key-0123456789abcdef0", b"new-operator-key-0123456789abcdef0"
    identity, _ = mint_identity("acme", HUMAN, None, NOW)
    before = encode(identity, KeySet(old))
    rotated = KeySet(new, [old])
    assert decode_identity(identity.key_id.encode(), before, rotated)[1].key_id == identity.key_id
    after = encode(identity, rotated)
    assert orjson.loads(after)["signature"].startswith(rotated.current_id + ":")
    with pytest.raises(RecordError, match="not among the keys"):
        decode_identity(identity.key_id.encode(), after, KeySet(old))


def test_control_record_decoding():
    freeze = Freeze(scope="tenant:acme", frozen=True, changed_at=NOW)
    name, decoded = decode_control(b"freeze:tenant:acme", encode(freeze, OPERATOR), OPERATOR)
    assert name == "freeze:tenant:acme" and decoded.model_copy(update={"signature": ""}) == freeze
    with pytest.raises(RecordError, match="does not match its kind and scope"):
        decode_control(b"freeze:tenant:other", encode(freeze, OPERATOR), OPERATOR)
    with pytest.raises(RecordError, match="ControlRecord"):
        decode_control(b"freeze:tenant:acme", encode_dict({"kind": "freeze"}), OPERATOR)


def test_freeze_by_key_or_tenant_and_lifting_it():
    state = ControlState()
    state.apply("freeze:tenant:acme", Freeze(scope="tenant:acme", frozen=True, changed_at=NOW))
    assert state.freeze_of("acme", "k1").scope == "tenant:acme"
    assert state.freeze_of("globex", "k1") is None
    state.apply("freeze:tenant:acme", Freeze(scope="tenant:acme", frozen=False, changed_at=NOW))
    assert state.freeze_of("acme", "k1") is None
    state.apply("freeze:key:k1", Freeze(scope="key:k1", frozen=True, changed_at=NOW))
    assert state.freeze_of("acme", "k1").scope == "key:k1"
    assert state.freeze_of("acme", "k2") is None
    state.apply("freeze:key:k1", None)
    assert state.freeze_of("acme", "k1") is None


def test_limits_key_beats_tenant_beats_default():
    state = ControlState(default_limits=RateLimits(requests_per_minute=1000))
    assert state.limits_of("acme", "k1") == RateLimits(1000, None)
    state.apply("limits:tenant:acme", Limits(scope="tenant:acme", requests_per_minute=10, changed_at=NOW))
    state.apply("limits:key:k1", Limits(scope="key:k1", tokens_per_minute=500, changed_at=NOW))
    assert state.limits_of("acme", "k1") == RateLimits(None, 500)
    assert state.limits_of("acme", "k2") == RateLimits(10, None)
    state.apply("limits:tenant:acme", None)
    assert state.limits_of("acme", "k2") == RateLimits(1000, None)


def test_capture_is_off_unless_a_record_turns_it_on():
    state = ControlState()
    assert not state.capture_enabled("acme")
    state.apply("capture:tenant:acme", Capture(scope="tenant:acme", enabled=True, changed_at=NOW))
    assert state.capture_enabled("acme") and not state.capture_enabled("globex")
    state.apply("capture:tenant:acme", Capture(scope="tenant:acme", enabled=False, changed_at=NOW))
    assert not state.capture_enabled("acme")


def test_slo_and_budget_records_are_kept_for_the_flows_and_change_nothing_the_gateway_enforces():
    state = ControlState()
    slo = Slo(scope="tenant:acme", target=0.995, changed_at=NOW)
    tenant_budget = Budget(scope="tenant:acme", period="month", amount_usd=Decimal("500"), changed_at=NOW)
    key_budget = Budget(scope="key:k1", period="day", amount_usd=Decimal("20"), changed_at=NOW)
    state.apply("slo:tenant:acme", slo)
    state.apply("budget:tenant:acme", tenant_budget)
    state.apply("budget:key:k1", key_budget)
    assert state.slo_of("acme") == slo and state.slo_of("globex") is None
    assert state.budgets_of("acme", "k1") == [tenant_budget, key_budget]
    assert state.budgets_of("acme") == [tenant_budget] and state.budgets_of("globex", "k2") == []
    assert state.slos() == [slo] and len(state.budgets()) == 2
    assert state.freeze_of("acme", "k1") is None and state.limits_of("acme", "k1").unlimited
    state.apply("slo:tenant:acme", None)  # tombstone
    state.apply("budget:key:k1", None)
    assert state.slo_of("acme") is None and state.budgets_of("acme", "k1") == [tenant_budget]


def test_request_bucket_admits_a_minutes_worth_then_says_when_to_retry():
    limiter, limits = RateLimiter(), RateLimits(requests_per_minute=3)
    assert [limiter.admit("k1", limits, 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.admit("k1", limits, 0.0) == 20  # one request every 20 s
    assert limiter.admit("k2", limits, 0.0) == 0  # buckets are per identity
    assert limiter.admit("k1", limits, 19.0) == 1
    assert limiter.admit("k1", limits, 20.0) == 0


def test_token_bucket_is_charged_after_the_call_and_refuses_while_in_debt():
    limiter, limits = RateLimiter(), RateLimits(tokens_per_minute=600)  # 10 tokens/s
    assert limiter.admit("k1", limits, 0.0) == 0
    limiter.spend_tokens("k1", limits, 1000, 0.0)  # 400 tokens of debt
    assert limiter.admit("k1", limits, 0.0) == 41  # until one token is back
    assert limiter.admit("k1", limits, 40.0) == 1
    assert limiter.admit("k1", limits, 41.0) == 0


def test_a_changed_limit_applies_at_once_and_removing_it_admits_all():
    limiter = RateLimiter()
    for _ in range(5):
        assert limiter.admit("k1", RateLimits(requests_per_minute=100), 0.0) == 0
    assert limiter.admit("k1", RateLimits(requests_per_minute=2), 0.0) == 0  # level clamped to 2, one taken
    assert limiter.admit("k1", RateLimits(requests_per_minute=2), 0.0) == 0
    assert limiter.admit("k1", RateLimits(requests_per_minute=2), 0.0) > 0
    assert limiter.admit("k1", RateLimits(), 0.0) == 0


def test_revoking_or_deleting_a_key_cuts_every_key_delegated_from_it():
    human, human_key = mint_identity("acme", HUMAN, None, NOW)
    agent, agent_key = mint_identity("acme", AGENT, human, NOW)
    sub, sub_key = mint_identity("acme", Actor(type="agent", id="searcher"), agent, NOW)
    registry = _registry_with(human, agent, sub)
    entries = [registry.authenticate(key) for key in (human_key, agent_key, sub_key)]
    assert all(not isinstance(entry, str) for entry in entries)
    registry.apply(agent.key_id, agent.model_copy(update={"revoked_at": NOW}))
    assert [registry.authenticate(key) for key in (agent_key, sub_key)] == ["revoked", "revoked"]
    assert registry.authenticate(human_key) == entries[0]
    assert not registry.still_admitted(entries[2]) and registry.still_admitted(entries[0])
    registry.apply(agent.key_id, agent)
    assert registry.still_admitted(entries[2])
    registry.apply(human.key_id, None)  # a deleted ancestor cuts its descendants too
    assert [registry.authenticate(key) for key in (agent_key, sub_key)] == ["revoked", "revoked"]


def test_freezing_a_key_freezes_every_key_delegated_from_it():
    human, _ = mint_identity("acme", HUMAN, None, NOW)
    agent, _ = mint_identity("acme", AGENT, human, NOW)
    sub, _ = mint_identity("acme", Actor(type="agent", id="searcher"), agent, NOW)
    lineage = tuple(link.key_id for link in sub.ancestors)
    state = ControlState()
    state.apply(f"freeze:key:{human.key_id}", Freeze(scope=f"key:{human.key_id}", frozen=True, changed_at=NOW))
    assert state.freeze_of("acme", sub.key_id, lineage).scope == f"key:{human.key_id}"
    assert state.freeze_of("acme", agent.key_id, (human.key_id,)).scope == f"key:{human.key_id}"
    assert state.freeze_of("acme", "k_other") is None
    state.apply(f"freeze:key:{agent.key_id}", Freeze(scope=f"key:{agent.key_id}", frozen=True, changed_at=NOW))
    assert state.freeze_of("acme", sub.key_id, lineage).scope == f"key:{agent.key_id}"  # the nearest first


def test_limits_off_on_a_key_falls_back_to_its_tenants_limit():
    state = ControlState(default_limits=RateLimits(requests_per_minute=1000))
    state.apply("limits:tenant:acme", Limits(scope="tenant:acme", requests_per_minute=10, changed_at=NOW))
    state.apply("limits:key:k1", Limits(scope="key:k1", requests_per_minute=5, changed_at=NOW))
    assert state.limits_of("acme", "k1") == RateLimits(5, None)
    state.apply("limits:key:k1", Limits(scope="key:k1", changed_at=NOW))  # what `limits --key k1 --off` publishes
    assert state.limits_of("acme", "k1") == RateLimits(10, None)


def test_a_delegated_key_is_never_wider_than_its_parent():
    from datetime import timedelta

    parent, _ = mint_identity("acme", HUMAN, None, NOW, expires_at=NOW + timedelta(days=1), models=["gpt-4o", "o3"])
    child, _ = mint_identity("acme", AGENT, parent, NOW)
    assert child.expires_at == parent.expires_at and child.models == ["gpt-4o", "o3"]  # inherited
    narrower, _ = mint_identity("acme", AGENT, parent, NOW, expires_at=NOW + timedelta(hours=1), models=["o3"])
    assert narrower.models == ["o3"]
    with pytest.raises(ValueError, match="cannot outlive its parent"):
        mint_identity("acme", AGENT, parent, NOW, expires_at=NOW + timedelta(days=2))
    with pytest.raises(ValueError, match="may not call gpt-5"):
        mint_identity("acme", AGENT, parent, NOW, models=["o3", "gpt-5"])
    with pytest.raises(ValueError, match="has expired"):
        mint_identity("acme", AGENT, parent, NOW + timedelta(days=2))
    with pytest.raises(ValueError, match="in the future"):
        mint_identity("acme", HUMAN, None, NOW, expires_at=NOW)


def test_an_expired_key_is_refused():
    from datetime import timedelta

    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    identity, key = mint_identity("acme", HUMAN, None, datetime.now(UTC), expires_at=soon)
    registry = _registry_with(identity)
    assert not isinstance(registry.authenticate(key), str)
    import time

    time.sleep(0.35)
    assert registry.authenticate(key) == "expired"
