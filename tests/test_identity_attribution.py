"""Identity state and attribution: the caller owns the call, the root is kept, nothing is dropped."""

import pytest

from flows.identity import IdentityEntry, IdentityTable, attribute, decode_identity
from schemas import wire
from schemas.signing import KeySet
from tests.fixtures.flows import ALICE, BILLING, OPERATOR_KEYS, PLANNER, SEARCHER, identity_bytes, make_call
from tokentrail.control.records import RecordError, encode


def table_of(*identities) -> IdentityTable:
    table = IdentityTable()
    for identity in identities:
        table.apply(*decode_identity(identity.key_id.encode(), identity_bytes(identity), OPERATOR_KEYS))
    return table


def test_three_deep_chain_attributes_to_the_caller_with_the_human_as_root():
    table = table_of(ALICE, PLANNER, SEARCHER)
    who = attribute(wire.to_dict(make_call(SEARCHER)), table.get("k_searcher"))
    assert who.identity_known
    assert who.tenant_id == "acme"
    assert who.caller == ("k_searcher", "agent", "searcher")
    assert who.root == ("k_alice", "human", "alice")
    assert [link[0] for link in who.chain] == ["k_alice", "k_planner", "k_searcher"]


def test_unknown_key_is_kept_and_attributed_from_the_signed_call():
    call = wire.to_dict(make_call(PLANNER))
    who = attribute(call, IdentityTable().get("k_planner"))
    assert not who.identity_known
    assert who.tenant_id == "acme" and who.key_id == "k_planner"
    assert who.caller == ("k_planner", "agent", "planner")
    assert who.root == ("k_alice", "human", "alice")


def test_the_registry_wins_over_the_recorded_chain_when_it_knows_the_key():
    call = wire.to_dict(make_call(BILLING))
    call["chain"] = [{"key_id": "k_billing", "actor": {"type": "human", "id": "stale"}}]
    who = attribute(call, table_of(BILLING).get("k_billing"))
    assert who.caller == ("k_billing", "system", "billing-job") and who.tenant_id == "globex"


def test_tombstone_deletes_and_revocation_is_kept():
    table = table_of(ALICE)
    revoked = ALICE.model_copy(update={"revoked_at": ALICE.created_at})
    table.apply(*decode_identity(b"k_alice", identity_bytes(revoked), OPERATOR_KEYS))
    assert table.get("k_alice").revoked
    table.apply(*decode_identity(b"k_alice", None, OPERATOR_KEYS))
    assert table.get("k_alice") is None and len(table) == 0


@pytest.mark.parametrize(
    "key, value, reason",
    [
        (None, b"{}", "identity record without a key"),
        (b"k_x", b"{oops", "identity k_x: not valid JSON: "),
        (b"k_x", b'{"signature": "' + OPERATOR_KEYS.sign({}).encode() + b'"}', "identity k_x: Identity: key_id: Field"),
        (b"k_x", b"{}", "identity k_x: operator signature: record has no signature"),
        (b"k_alice", wire.dumps(ALICE), "identity k_alice: operator signature: record has no signature"),
        (b"k_alice", identity_bytes(ALICE).replace(b"alice", b"mallory"), "does not match the record"),
        (b"k_alice", encode(ALICE, KeySet(b"not-the-operator-key-0123456789abcdef")), "not among the keys accepted"),
        (b"k_other", None, None),
    ],
)
def test_bad_identity_records_say_why(key, value, reason):
    if reason is None:
        assert decode_identity(key, value, OPERATOR_KEYS) == ("k_other", None)
        return
    with pytest.raises(RecordError, match=reason.replace("(", r"\(")):
        decode_identity(key, value, OPERATOR_KEYS)


def test_identity_key_must_match_its_record():
    with pytest.raises(RecordError, match="does not match"):
        decode_identity(b"k_wrong", identity_bytes(ALICE), OPERATOR_KEYS)


def test_entries_are_compact_and_picklable():
    import pickle

    entry = IdentityEntry.from_identity(SEARCHER)
    assert pickle.loads(pickle.dumps(entry)) == entry
    assert entry.chain[0] == ("k_alice", "human", "alice")
