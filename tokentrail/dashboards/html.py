"""`tokentrail report --html FILE [--since T] [--until T] [--tenant T]`: the dashboards' panels,
from the same SQL, in one self-contained HTML page for users without Grafana.

Charts are plotly's (the `plotly` package's bundled plotly.js, inlined once in the page's
head): a well-kept library whose bundle needs no network, CDN or server to draw, and whose
Python side already speaks time series, bars and heatmaps. The page weighs ~5 MB, mostly
that bundle; a lighter library would mean writing our own axes and heatmap. Stats and tables
are plain HTML. Prometheus panels (live process metrics) are listed but not drawn: they are
not in ClickHouse.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokentrail.dashboards.macros import ALL, QueryContext, expand, grafana_interval
from tokentrail.dashboards.panels import DASHBOARDS, Dashboard, PromPanel, SqlPanel
from tokentrail.storage.base import Store

DEFAULT_RANGE = timedelta(days=7)
TABLE_ROWS = 25
CHART_HEIGHT = 300
PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00")

Row = dict[str, Any]


def register(subparsers: Any) -> None:
    """Add `--html FILE` and its options to the `report` parser `tokentrail.storage.cli` made
    (listed after it in COMMAND_MODULES); the sub-reports keep their own options."""
    report: argparse.ArgumentParser = subparsers.choices["report"]
    report.add_argument("--html", metavar="FILE", help="write every dashboard's panels to one self-contained HTML page")
    report.add_argument("--since", dest="html_since", metavar="ISO", help="with --html: start (default: 7 days ago)")
    report.add_argument("--until", dest="html_until", metavar="ISO", help="with --html: end (default: now)")
    report.add_argument("--tenant", dest="html_tenant", metavar="T", help="with --html: only this tenant")
    report.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tokentrail.errors import CliError
    from tokentrail.storage.cli import opened_store, parse_timestamp, storage_errors
    from tokentrail.storage.reads import record_read

    if not args.html:
        raise CliError("choose a report: `report cost ...`, or `report --html FILE` for every dashboard")
    until = parse_timestamp("--until", args.html_until) or datetime.now(UTC)
    since = parse_timestamp("--since", args.html_since) or until - DEFAULT_RANGE
    if since >= until:
        raise CliError(f"--since ({since.isoformat()}) is not before --until ({until.isoformat()})")
    path = Path(args.html)
    if not path.parent.is_dir():
        raise CliError(f"--html: no such directory: {path.parent}")
    with opened_store() as (store, _), storage_errors():
        page = render(store, since, until, args.html_tenant)
        record_read(store, "report html", args.html_tenant, since, until)
    path.write_text(page, encoding="utf-8")
    print(
        f"wrote {path} ({len(page) // 1024:,} KiB): {len(DASHBOARDS)} dashboards, {since:%Y-%m-%d %H:%M} to "
        f"{until:%Y-%m-%d %H:%M} UTC{', tenant ' + args.html_tenant if args.html_tenant else ''}"
    )
    return 0


def context(since: datetime, until: datetime, tenant: str | None, spec: Dashboard) -> QueryContext:
    variables: dict[str, str | list[str]] = {"tenant": [tenant] if tenant else ALL}
    variables.update({v.name: v.default for v in spec.variables})
    return QueryContext(since, until, grafana_interval(since, until, max_points=200), variables)


def render(store: Store, since: datetime, until: datetime, tenant: str | None) -> str:
    """The whole page: every dashboard's ClickHouse panels over [since, until]."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    sections = []
    for spec in DASHBOARDS:
        ctx = context(since, until, tenant, spec)
        panels = [
            _panel(p, store.query(expand(p.sql, ctx)), (since, until)) if isinstance(p, SqlPanel) else _prom(p)
            for p in spec.panels
        ]
        sections.append(
            f'<section id="{spec.uid}"><h2>{html.escape(spec.title.split(" / ")[-1])}</h2>'
            f'<p class="question">{html.escape(spec.question)}</p><div class="grid">{"".join(panels)}</div></section>'
        )
    scope = f"tenant {html.escape(tenant)}" if tenant else "all tenants"
    nav = " · ".join(f'<a href="#{s.uid}">{html.escape(s.title.split(" / ")[-1])}</a>' for s in DASHBOARDS)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tokentrail report: {since:%Y-%m-%d} to {until:%Y-%m-%d}</title>"
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<header><h1>tokentrail report</h1><p>{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC, {scope}. "
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from ClickHouse.</p><nav>{nav}</nav></header>"
        f"{''.join(sections)}</body></html>"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return value


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, Decimal) and column.endswith("_usd"):
        return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}"
    if isinstance(value, Decimal):
        return f"{value:,.4f}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def _frame(panel: SqlPanel | PromPanel, body: str, wide: bool) -> str:
    return (
        f'<div class="panel{" wide" if wide else ""}"><h3>{html.escape(panel.title)}</h3>{body}'
        f'<p class="description">{html.escape(panel.description)}</p></div>'
    )


def _prom(panel: PromPanel) -> str:
    body = f'<p class="empty">Live metric (Prometheus): <code>{html.escape(panel.expr)}</code></p>'
    return _frame(panel, body, False)


def _panel(panel: SqlPanel, rows: list[Row], time_range: tuple[datetime, datetime]) -> str:
    wide = panel.width > 12
    if not rows:
        return _frame(panel, '<p class="empty">No data in this range.</p>', wide)
    if panel.kind == "stat":
        row = rows[0]
        figures = "".join(
            f'<div class="stat"><span class="value">{_cell(row[c], c)}</span><span class="label">{html.escape(c)}</span></div>'
            for c in panel.columns
        )
        return _frame(panel, f'<div class="stats">{figures}</div>', wide)
    if panel.kind == "table":
        return _frame(panel, _table(panel.columns, rows), wide)
    return _frame(panel, _chart(panel, rows, time_range), wide)


def _table(columns: Sequence[str], rows: list[Row]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row[c], c)}</td>" for c in columns) + "</tr>" for row in rows[:TABLE_ROWS]
    )
    more = f'<p class="more">{len(rows) - TABLE_ROWS} more rows not shown</p>' if len(rows) > TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _chart(panel: SqlPanel, rows: list[Row], time_range: tuple[datetime, datetime]) -> str:
    """A plotly chart; time axes span the report's range (as Grafana's do), so a lone point
    sits at its moment instead of being zoomed to milliseconds."""
    import plotly.graph_objects as go  # type: ignore[import-untyped]
    import plotly.io  # type: ignore[import-untyped]

    figure = go.Figure()
    if panel.kind == "barchart":
        label, value = panel.columns[0], panel.columns[1]
        ordered = list(reversed(rows))
        figure.add_bar(
            x=[_plain(r[value]) for r in ordered],
            y=[r[label] for r in ordered],
            orientation="h",
            marker_color=PALETTE[0],
        )
    elif panel.kind == "heatmap":
        times = sorted({r["time"] for r in rows})
        series = sorted({r["series"] for r in rows})
        cells = {(r["series"], r["time"]): _plain(r[panel.columns[2]]) for r in rows}
        figure.add_heatmap(
            x=times, y=series, z=[[cells.get((s, t), 0) for t in times] for s in series], colorscale="YlOrRd"
        )
    elif "series" in panel.columns:
        value = panel.columns[2]
        for index, name in enumerate(sorted({r["series"] for r in rows})):
            mine = [r for r in rows if r["series"] == name]
            figure.add_scatter(
                x=[r["time"] for r in mine],
                y=[_plain(r[value]) for r in mine],
                name=str(name),
                mode=_mode(len(mine)),
                marker={"size": 6},
                line={"color": PALETTE[index % len(PALETTE)]},
            )
    else:
        for index, value in enumerate(panel.columns[1:]):
            figure.add_scatter(
                x=[r["time"] for r in rows],
                y=[_plain(r[value]) for r in rows],
                name=value,
                mode=_mode(len(rows)),
                marker={"size": 6},
                line={"color": PALETTE[index % len(PALETTE)]},
            )
    figure.update_layout(
        height=CHART_HEIGHT,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        showlegend=panel.kind == "timeseries",
        legend={"orientation": "h", "y": -0.15},
        template="plotly_white",
    )
    figure.update_yaxes(automargin=True, tickformat=".1%" if panel.unit == "percentunit" else None)
    if panel.kind != "barchart":
        figure.update_xaxes(range=list(time_range))
    if panel.kind == "timeseries":
        figure.update_yaxes(rangemode="tozero")
    if panel.unit == "currencyUSD":
        money_axis = figure.update_xaxes if panel.kind == "barchart" else figure.update_yaxes
        money_axis(tickprefix="$")
    chart: str = plotly.io.to_html(
        figure, include_plotlyjs=False, full_html=False, config={"displayModeBar": False, "staticPlot": False}
    )
    return f'<div class="chart" data-kind="{panel.kind}">{chart}</div>'


def _mode(points: int) -> str:
    """Markers where points are few (a lone point must show), plain lines where they are dense."""
    return "lines+markers" if points <= 60 else "lines"


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 16px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0 0 8px; color: #c9cfdb; }
nav a { color: #9cc3ff; text-decoration: none; margin-right: 4px; }
section { padding: 8px 28px 20px; }
section h2 { margin: 18px 0 2px; font-size: 20px; }
.question { margin: 0 0 12px; color: #5a6275; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
.panel { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 10px 14px; min-width: 0; }
.panel.wide { grid-column: 1 / -1; }
.panel h3 { margin: 0 0 6px; font-size: 15px; }
.description { margin: 6px 0 0; font-size: 12px; color: #6b7385; }
.empty { color: #8a91a1; font-style: italic; }
.stats { display: flex; gap: 28px; flex-wrap: wrap; }
.stat .value { display: block; font-size: 28px; font-weight: 600; }
.stat .label { font-size: 12px; color: #6b7385; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eceef2; white-space: nowrap; }
th { background: #f7f8fa; font-weight: 600; }
.more { font-size: 12px; color: #6b7385; }
"""
