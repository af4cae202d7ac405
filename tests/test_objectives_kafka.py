"""`tokentrail slo` and `tokentrail budget` against real Kafka: the records reach a follower's
ControlState (what the detect flow follows) and `list` reads them back."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from tests.test_control_kafka import env, following_plane, run, wait_until  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.kafka


def test_slo_and_budgets_reach_a_follower_and_are_listed(env, capsys):  # noqa: F811
    code, out, err = run(
        capsys, "keys", "create", "--tenant", "acme", "--actor-type", "agent", "--actor-id", "bot", "--json"
    )
    assert code == 0, err
    key_id = orjson.loads(out)["key_id"]
    plane = following_plane()
    try:
        assert run(capsys, "slo", "set", "--tenant", "acme", "--target", "0.995")[0] == 0
        wait_until(lambda: plane.controls.slo_of("acme") is not None)
        assert plane.controls.slo_of("acme").target == 0.995  # type: ignore[union-attr]
        assert run(capsys, "budget", "set", "--tenant", "acme", "--usd", "500", "--period", "month")[0] == 0
        assert (
            run(capsys, "budget", "set", "--tenant", "acme", "--key", key_id, "--usd", "12.50", "--period", "day")[0]
            == 0
        )
        wait_until(lambda: len(plane.controls.budgets_of("acme", key_id)) == 2)
        tenant_budget, key_budget = plane.controls.budgets_of("acme", key_id)
        assert (tenant_budget.amount_usd, tenant_budget.period) == (Decimal("500"), "month")
        assert (key_budget.scope, key_budget.amount_usd, key_budget.period) == (
            f"key:{key_id}",
            Decimal("12.50"),
            "day",
        )
        assert run(capsys, "slo", "set", "--tenant", "acme", "--target", "0.99")[0] == 0
        wait_until(lambda: plane.controls.slo_of("acme").target == 0.99)  # type: ignore[union-attr]
    finally:
        plane.follower.stop()

    code, out, _ = run(capsys, "slo", "list", "--json")
    assert code == 0 and [orjson.loads(line)["scope"] for line in out.splitlines()] == ["tenant:acme"]
    assert orjson.loads(out)["target"] == 0.99
    code, out, _ = run(capsys, "budget", "list", "--tenant", "acme")
    assert code == 0 and len(out.splitlines()) == 2 and "$500 per month" in out and "$12.50 per day" in out
    code, out, _ = run(capsys, "budget", "list", "--tenant", "globex")
    assert code == 0 and out == ""


def test_budget_set_refuses_a_key_of_another_tenant_or_unknown(env, capsys):  # noqa: F811
    code, out, _ = run(
        capsys, "keys", "create", "--tenant", "globex", "--actor-type", "human", "--actor-id", "g", "--json"
    )
    key_id = orjson.loads(out)["key_id"]
    code, _, err = run(capsys, "budget", "set", "--tenant", "acme", "--key", key_id, "--usd", "5", "--period", "day")
    assert code == 2 and err.count("\n") == 1 and "belongs to tenant 'globex'" in err
    code, _, err = run(
        capsys, "budget", "set", "--tenant", "acme", "--key", "0000000000000000", "--usd", "5", "--period", "day"
    )
    assert code == 2 and "not in the registry" in err
    code, _, err = run(capsys, "slo", "set", "--tenant", " ", "--target", "0.9")
    assert code == 2 and "must not be empty" in err
