"""Control domain without Kafka: keys, registry, control state, rate limiter, record decoding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from schemas import wire
from schemas.models import Actor, Budget, Capture, Freeze, Limits, Slo
from tokentrail.control import keys
from tokentrail.control.limits import RateLimiter
from tokentrail.control.records import RecordError, decode_control, decode_identity, mint_identity
from tokentrail.control.registry import ControlState, IdentityRegistry, RateLimits

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HUMAN = Actor(type="human", id="alice")
AGENT = Actor(type="agent", id="planner")


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
    assert decode_identity(key, wire.dumps(identity)) == (identity.key_id, identity)
    assert decode_identity(key, None) == (identity.key_id, None)
    with pytest.raises(RecordError, match="not valid JSON"):
        decode_identity(key, b"{nope")
    with pytest.raises(RecordError, match="does not match its key_id"):
        decode_identity(b"other", wire.dumps(identity))
    with pytest.raises(RecordError, match="without a key"):
        decode_identity(None, wire.dumps(identity))


def test_control_record_decoding():
    freeze = Freeze(scope="tenant:acme", frozen=True, changed_at=NOW)
    assert decode_control(b"freeze:tenant:acme", wire.dumps(freeze)) == ("freeze:tenant:acme", freeze)
    with pytest.raises(RecordError, match="does not match its kind and scope"):
        decode_control(b"freeze:tenant:other", wire.dumps(freeze))
    with pytest.raises(RecordError, match="ControlRecord"):
        decode_control(b"freeze:tenant:acme", b'{"kind": "freeze"}')


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
