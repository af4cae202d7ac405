"""Grafana dashboards as code: `panels.DASHBOARDS` -> `dashboards/<uid>.json`, built with the
official grafana-foundation-sdk.

The SDK has builders for Grafana's panels, variables and Prometheus queries but none for the
ClickHouse plugin's query, so `ClickHouseQuery` below is that one missing piece, written
against the SDK's own `Dataquery` variant (the extension point the SDK provides for plugin
queries). The query shape (`editorType`, `format` 0/1, `queryType`, `rawSql`) is the plugin's
(grafana-clickhouse-datasource 4.x, src/data/utils.ts).

    python -m tokentrail.dashboards.grafana            # regenerate dashboards/*.json
    python -m tokentrail.dashboards.grafana --check    # exit 1 if a checked-in file is stale

Every query refers to its data source through the `${datasource}` / `${prometheus}` variables,
never a uid, so the JSON works with whatever data source a Grafana has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import barchart, dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from tokentrail.dashboards.panels import DASHBOARDS, Dashboard, PromPanel, SqlPanel

OUTPUT = Path(__file__).resolve().parents[2] / "dashboards"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_TYPE = "prometheus"
CLICKHOUSE = model.DataSourceRef(type_val=CLICKHOUSE_TYPE, uid="${datasource}")
PROMETHEUS = model.DataSourceRef(type_val=PROMETHEUS_TYPE, uid="${prometheus}")
TIME_SERIES_FORMAT, TABLE_FORMAT = 0, 1
HEIGHTS = {"stat": 5, "table": 9, "timeseries": 9, "barchart": 9, "heatmap": 9}


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL query of the ClickHouse data source plugin."""

    def __init__(self, raw_sql: str, time_series: bool, ref_id: str = "A") -> None:
        self.raw_sql = raw_sql
        self.time_series = time_series
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": CLICKHOUSE,
            "editorType": "sql",
            "format": TIME_SERIES_FORMAT if self.time_series else TABLE_FORMAT,
            "queryType": "timeseries" if self.time_series else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self, raw_sql: str, time_series: bool) -> None:
        self._internal = ClickHouseQuery(raw_sql, time_series)

    def build(self) -> ClickHouseQuery:
        return self._internal


PanelBuilder = timeseries.Panel | table.Panel | stat.Panel | barchart.Panel | heatmap.Panel


def _sql_panel(panel: SqlPanel) -> PanelBuilder:
    time_series = panel.kind in ("timeseries", "heatmap")
    query = ClickHouseQueryBuilder(panel.sql, time_series)
    built: PanelBuilder
    if panel.kind == "timeseries":
        built = timeseries.Panel().interval("1m")
    elif panel.kind == "heatmap":
        built = heatmap.Panel().calculate(False).interval("1m")
    elif panel.kind == "barchart":
        built = barchart.Panel().x_field(panel.columns[0])
    elif panel.kind == "stat":
        built = stat.Panel()
    else:
        built = table.Panel()
    return (
        built.title(panel.title)
        .description(panel.description)
        .datasource(CLICKHOUSE)
        .with_target(query)
        .unit(panel.unit)
    )


def _prom_panel(panel: PromPanel) -> timeseries.Panel:
    query = prometheus.Dataquery().expr(panel.expr).legend_format(panel.legend).range().datasource(PROMETHEUS)
    return (
        timeseries.Panel()
        .title(panel.title)
        .description(panel.description)
        .datasource(PROMETHEUS)
        .with_target(query)
        .unit(panel.unit)
    )


def _variables(spec: Dashboard) -> list[cogbuilder.Builder[model.VariableModel]]:
    variables: list[cogbuilder.Builder[model.VariableModel]] = [
        dashboard.DatasourceVariable("datasource").label("ClickHouse").type(CLICKHOUSE_TYPE)
    ]
    if any(isinstance(p, PromPanel) for p in spec.panels):
        variables.append(dashboard.DatasourceVariable("prometheus").label("Prometheus").type(PROMETHEUS_TYPE))
    variables.append(
        dashboard.QueryVariable("tenant")
        .label("Tenant")
        .datasource(CLICKHOUSE)
        .query("SELECT DISTINCT tenant_id FROM cost_by_tenant_1h ORDER BY tenant_id")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    for variable in spec.variables:
        variables.append(
            dashboard.TextBoxVariable(variable.name)
            .label(variable.label)
            .description(variable.description)
            .default_value(variable.default)
            .current(model.VariableOption(selected=True, text=variable.default, value=variable.default))
        )
    return variables


def build(spec: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard."""
    board = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.question)
        .tags(["tokentrail"])
        .timezone("utc")
        .time("now-7d", "now")
        .refresh("1m")
        .editable()
        .variables(_variables(spec))
    )
    x = y = row_height = 0
    for panel in spec.panels:
        height = HEIGHTS[panel.kind] if isinstance(panel, SqlPanel) else HEIGHTS["timeseries"]
        if x + panel.width > 24:  # the SDK's own layout would overflow the row: wrap explicitly
            x, y, row_height = 0, y + row_height, 0
        built = _sql_panel(panel) if isinstance(panel, SqlPanel) else _prom_panel(panel)
        board.with_panel(built.grid_pos(model.GridPos(h=height, w=panel.width, x=x, y=y)))
        x, row_height = x + panel.width, max(row_height, height)
    rendered: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel_json in enumerate(rendered["panels"], start=1):
        panel_json["id"] = number
    return rendered


def render(spec: Dashboard) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def files() -> dict[Path, str]:
    """Every dashboard file and the text it must hold."""
    return {OUTPUT / f"{spec.uid}.json": render(spec) for spec in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a checked-in dashboard differs")
    args = parser.parse_args(argv)
    stale = [path for path, text in files().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.name} (run `make dashboards`)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files().items():
        path.write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
