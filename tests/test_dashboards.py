"""The Grafana dashboards (dashboards/*.json, generated from tokentrail/dashboards/panels.py):
fresh, valid, data-source independent, and every ClickHouse panel's SQL, expanded as the
plugin expands it, runs on the embedded engine over the seed and returns what the panel shows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import GatewayMetrics
from tests.fixtures.dashboard_seed import NOW, START
from tokentrail.dashboards import grafana
from tokentrail.dashboards.macros import ALL, ExpansionError, QueryContext, expand, grafana_interval
from tokentrail.dashboards.panels import DASHBOARDS, PULSE, PULSE_STATE, PromPanel, SqlPanel

ROOT = Path(__file__).resolve().parents[1]
FILES = {spec.uid: ROOT / "dashboards" / f"{spec.uid}.json" for spec in DASHBOARDS}
DEFAULTS = {v.name: v.default for spec in DASHBOARDS for v in spec.variables}


def load(uid: str) -> dict[str, Any]:
    return json.loads(FILES[uid].read_text())


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def context(tenant: str | list[str] = ALL, **variables: str) -> QueryContext:
    return QueryContext(START, NOW, grafana_interval(START, NOW), {"tenant": tenant, **DEFAULTS, **variables})


def test_checked_in_dashboards_are_the_generated_ones():
    for path, text in grafana.files().items():
        assert path.exists(), f"{path.name} missing: run `make dashboards`"
        assert path.read_text() == text, f"{path.name} is stale: run `make dashboards`"
    assert sorted(p.name for p in (ROOT / "dashboards").glob("*.json")) == sorted(p.name for p in FILES.values())
    assert grafana.main(["--check"]) == 0


def test_seven_dashboards_one_per_question_with_readable_uids():
    titles = [spec.title.split(" / ")[1] for spec in DASHBOARDS]
    assert titles == [
        "Cost",
        "Incidents",
        "Failure patterns",
        "Governance",
        "System pulse",
        "Customers",
        "Limits and pipeline",
    ]
    for uid in FILES:
        board = load(uid)
        assert board["uid"] == uid and re.fullmatch(r"tokentrail-[a-z-]+", uid) and len(uid) <= 40
        assert [p["id"] for p in board["panels"]] == list(range(1, len(board["panels"]) + 1))


@pytest.mark.parametrize("uid", list(FILES))
def test_no_hard_coded_data_source_and_the_variables_grafana_needs(uid):
    board = load(uid)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "grafana-clickhouse-datasource"
    assert variables["tenant"]["type"] == "query" and variables["tenant"]["includeAll"] is True
    refs = [node["datasource"] for node in walk(board) if isinstance(node.get("datasource"), dict)]
    assert refs, "no data source reference at all"
    for ref in refs:
        assert ref["uid"] in ("${datasource}", "${prometheus}"), ref
        assert (
            ref["type"] == {"${datasource}": "grafana-clickhouse-datasource", "${prometheus}": "prometheus"}[ref["uid"]]
        )
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            if target["datasource"]["uid"] == "${datasource}":
                sql = target["rawSql"]
                assert "$__timeFilter(" in sql or "$__toTime" in sql, f"{panel['title']}: not bounded by the time range"
                assert "${tenant}" in sql, f"{panel['title']}: ignores the tenant variable"


def panels_in_files() -> list[tuple[str, dict[str, Any], SqlPanel]]:
    """(uid, panel JSON, its spec) for every ClickHouse panel, read from the checked-in files."""
    out = []
    for spec in DASHBOARDS:
        by_title = {p.title: p for p in spec.sql_panels}
        for panel in load(spec.uid)["panels"]:
            if panel["datasource"]["uid"] == "${datasource}":
                out.append((spec.uid, panel, by_title[panel["title"]]))
    return out


PANELS = panels_in_files()


def has_a_number(rows: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) and v != 0
        for row in rows
        for v in row.values()
    )


@pytest.mark.parametrize(("uid", "panel", "spec"), PANELS, ids=[f"{u}:{p['title']}" for u, p, _ in PANELS])
def test_panel_sql_runs_over_the_seed_and_returns_its_columns(seeded_store, uid, panel, spec):
    sql = expand(panel["targets"][0]["rawSql"], context())
    rows = seeded_store.query(sql)
    if spec.seeded:
        assert rows, f"{panel['title']}: no rows over the seed"
        assert spec.kind == "table" or has_a_number(rows), f"{panel['title']}: only zeros over the seed"
    for row in rows:
        assert tuple(row) == spec.columns
    if panel["type"] in ("timeseries", "heatmap"):
        assert all(isinstance(row["time"], datetime) for row in rows)
        times = [row["time"] for row in rows]
        bucket = timedelta(days=1)  # the first bucket (at most a day: daily panels) may start before the range
        assert times == sorted(times) and START - bucket <= times[0] and times[-1] <= NOW

    one_tenant = seeded_store.query(expand(panel["targets"][0]["rawSql"], context(["globex"])))
    for row in one_tenant:
        assert tuple(row) == spec.columns
        if "tenant_id" in row:
            assert row["tenant_id"] == "globex"


def test_the_tenant_variable_filters_spend():
    assert "tenant_id IN ('globex')" in expand(PANELS[0][1]["targets"][0]["rawSql"], context(["globex"]))


def test_tenant_filter_changes_the_totals(seeded_store):
    spend = next(p for u, p, _ in PANELS if p["title"] == "Spend")["targets"][0]["rawSql"]
    everyone = seeded_store.query(expand(spend, context()))[0]["calls"]
    parts = [seeded_store.query(expand(spend, context([t])))[0]["calls"] for t in ("acme", "globex", "initech")]
    assert all(parts) and sum(parts) == everyone


def pulse_state(store, **variables: str) -> dict[str, Any]:
    return store.query(expand(PULSE_STATE, context(**variables)))[0]


def test_system_pulse_derives_its_state_from_the_thresholds(seeded_store):
    # initech went quiet 36 h before the end: 2 active tenants against 3 the day before.
    state = pulse_state(seeded_store)
    assert state["tenants_change_pct"] == pytest.approx(-33.3)
    assert state["state"] == "SILENT DEGRADATION"
    assert pulse_state(seeded_store, drop_threshold="40", saturation_threshold="95")["state"] == "STABLE"
    # triage hit its rate limit in the last hour: a saturation of a few percent.
    assert 0 < state["saturation_pct"] < 20
    assert pulse_state(seeded_store, saturation_threshold="1")["state"] == "ACTIVE FAILURE"


def test_silent_churn_lists_tenants_with_traffic_and_no_reader(seeded_store):
    churn = next(p for p in DASHBOARDS[5].sql_panels if p.title.startswith("Silent churn"))
    rows = seeded_store.query(expand(churn.sql, context()))
    # acme's alice reads every day; globex was last read 10 days ago; nobody ever read initech.
    assert {r["tenant_id"]: r["days_since_read"] for r in rows} == {"globex": 10, "initech": None}


def test_headroom_projects_the_time_to_a_rate_limit(seeded_store):
    limits = DASHBOARDS[6]
    headroom = next(p for p in limits.sql_panels if p.title.startswith("Headroom"))
    (row,) = seeded_store.query(expand(headroom.sql, context()))
    assert (row["tenant_id"], row["key_id"], row["limit_rpm"]) == ("acme", "k_triage", 60)
    assert row["growth_rpm_per_hour"] > 0 and row["peak_rpm"] >= 60


def test_prometheus_panels_name_metrics_the_processes_export():
    from prometheus_client import REGISTRY, generate_latest

    import flows.metrics  # noqa: F401  (registers the flows' metrics in the default registry)

    exported = generate_latest(GatewayMetrics().registry).decode() + generate_latest(REGISTRY).decode()
    names = set(re.findall(r"^# TYPE (\w+) (\w+)", exported, re.M))
    known = {name for name, _ in names}
    for spec in DASHBOARDS:
        for panel in spec.panels:
            if isinstance(panel, PromPanel):
                for metric in re.findall(r"\b(tokentrail_\w+)", panel.expr):
                    assert metric in known, f"{panel.title}: {metric} is not exported"


def test_pulse_variables_are_text_boxes_with_defaults():
    variables = {v["name"]: v for v in load(PULSE.uid)["templating"]["list"]}
    assert {n: variables[n]["query"] for n in ("failure_threshold", "saturation_threshold", "drop_threshold")} == {
        "failure_threshold": "5",
        "saturation_threshold": "80",
        "drop_threshold": "25",
    }


# --- macro expansion, as grafana-clickhouse-datasource does it ---------------------------------

T0, T1 = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)


def test_time_macros_expand_like_the_plugin():
    ctx = QueryContext(T0, T1, 300, {})
    assert (
        expand("$__timeFilter(minute)", ctx) == "minute >= toDateTime(1772323200) AND minute <= toDateTime(1772409600)"
    )
    assert expand("$__timeInterval(ts)", ctx) == "toStartOfInterval(toDateTime(ts), INTERVAL 300 second)"
    assert expand("$__fromTime $__toTime $__interval_s", ctx) == "toDateTime(1772323200) toDateTime(1772409600) 300"
    assert expand("$__timeFilter_ms(t)", ctx) == (
        "t >= fromUnixTimestamp64Milli(1772323200000) AND t <= fromUnixTimestamp64Milli(1772409600000)"
    )
    assert expand("$__timeInterval(toStartOfMinute(ts))", ctx) == (
        "toStartOfInterval(toDateTime(toStartOfMinute(ts)), INTERVAL 300 second)"
    )


def test_conditional_all_and_multi_value_variables():
    sql = "WHERE $__conditionalAll(tenant_id IN (${tenant}), $tenant)"
    assert expand(sql, QueryContext(T0, T1, 60, {"tenant": ALL})) == "WHERE 1=1"
    assert expand(sql, QueryContext(T0, T1, 60, {"tenant": ["a", "b"]})) == "WHERE tenant_id IN ('a','b')"
    assert expand(sql, QueryContext(T0, T1, 60, {"tenant": ["o'hara"]})) == "WHERE tenant_id IN ('o\\'hara')"
    assert expand("x > ${threshold}", QueryContext(T0, T1, 60, {"threshold": "5"})) == "x > 5"


def test_unexpanded_or_malformed_macros_are_errors():
    with pytest.raises(ExpansionError, match=r"\$nope"):
        expand("SELECT $nope", QueryContext(T0, T1, 60, {}))
    with pytest.raises(ExpansionError, match="expected 1 argument"):
        expand("$__timeFilter(a, b)", QueryContext(T0, T1, 60, {}))
    with pytest.raises(ExpansionError, match="All outside"):
        expand("tenant_id IN (${tenant})", QueryContext(T0, T1, 60, {"tenant": ALL}))
