"""Expand a panel's SQL the way Grafana and the ClickHouse data source plugin do.

Grafana (the plugin's frontend, `CHDatasource.applyTemplateVariables`) first resolves
`$__conditionalAll(phrase, $var)` (the phrase, or `1=1` when `$var` is All), then template
variables: a multi-value variable becomes `'a','b'`, a single value is inserted as is. The
plugin's backend (`pkg/macros/macros.go`, grafana-clickhouse-datasource 4.x) then expands
the `$__` time macros against the query's range and interval. The HTML report and the
dashboard test run the same SQL through this module, so what they check is what Grafana runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

ALL = "$__all"
"""Grafana's value of a variable whose "All" option is selected."""

VariableValue = str | list[str]


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a panel's query: the dashboard's time range, the
    panel's interval, and the current value of each dashboard variable."""

    time_from: datetime
    time_to: datetime
    interval_s: int = 60
    variables: Mapping[str, VariableValue] = field(default_factory=dict)


class ExpansionError(ValueError):
    """A macro with the wrong arguments, or a `$` left over after expansion."""


def expand(sql: str, context: QueryContext) -> str:
    """The SQL Grafana sends to ClickHouse for this panel in this context."""
    sql = _conditional_all(sql, context.variables)
    sql = _template_variables(sql, context.variables)
    sql = _plugin_macros(sql, context)
    leftover = re.search(r"\$\w+", sql)
    if leftover:
        raise ExpansionError(f"unexpanded {leftover.group(0)} in: {sql}")
    return sql


def quote(value: str) -> str:
    """A ClickHouse string literal. Grafana itself joins multi-values as `'a','b'` without
    escaping; tenant ids contain no quotes, and the HTML report takes `--tenant` from a user."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments of the call whose `(` is at `open_paren`, and the
    index just after its `)`."""
    depth, start, args = 0, open_paren + 1, []
    in_string = False
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "'" and sql[index - 1] != "\\":
            in_string = not in_string
        if in_string:
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:index])
                return args, index + 1
        elif char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
    raise ExpansionError(f"unbalanced parentheses after position {open_paren}: {sql}")


def _conditional_all(sql: str, variables: Mapping[str, VariableValue]) -> str:
    macro = "$__conditionalAll("
    while (start := sql.rfind(macro)) != -1:
        args, end = _macro_args(sql, start + len(macro) - 1)
        if len(args) != 2:
            raise ExpansionError(f"$__conditionalAll takes 2 arguments, got {len(args)}")
        name = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", args[1].strip())
        phrase = args[0]
        if name and variables.get(name.group(0)) in (ALL, ""):
            phrase = "1=1"
        sql = sql[:start] + phrase + sql[end:]
    return sql


def _template_variables(sql: str, variables: Mapping[str, VariableValue]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            return match.group(0)
        value = variables[name]
        if value == ALL:
            raise ExpansionError(f"${name} is All outside $__conditionalAll: give it its options")
        return ",".join(quote(v) for v in value) if isinstance(value, list) else value

    return re.sub(r"\$\{(\w+)\}|\$(?!__)(\w+)", replace, sql)


def _to_datetime(moment: datetime) -> str:
    return f"toDateTime({int(moment.timestamp())})"


def _to_datetime64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(moment.timestamp() * 1000)})"


def _plugin_macros(sql: str, context: QueryContext) -> str:
    seconds = max(context.interval_s, 1)
    start, end = context.time_from, context.time_to

    def one_column(name: str, render: Callable[[str], str]) -> Callable[[list[str]], str]:
        def expand_one(args: list[str]) -> str:
            if len(args) != 1:
                raise ExpansionError(f"$__{name} expected 1 argument(s), received {len(args)}")
            return render(args[0].strip())

        return expand_one

    with_args: dict[str, Callable[[list[str]], str]] = {
        "timeFilter": one_column(
            "timeFilter", lambda c: f"{c} >= {_to_datetime(start)} AND {c} <= {_to_datetime(end)}"
        ),
        "timeFilter_ms": one_column(
            "timeFilter_ms", lambda c: f"{c} >= {_to_datetime64(start)} AND {c} <= {_to_datetime64(end)}"
        ),
        "timeInterval": one_column(
            "timeInterval", lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)"
        ),
        "timeFrom": one_column("timeFrom", lambda c: f"{c} >= {_to_datetime(start)}"),
        "timeTo": one_column("timeTo", lambda c: f"{c} <= {_to_datetime(end)}"),
    }
    plain = {
        "fromTime_ms": _to_datetime64(start),
        "toTime_ms": _to_datetime64(end),
        "fromTime": _to_datetime(start),
        "toTime": _to_datetime(end),
        "interval_s": str(seconds),
    }
    out: list[str] = []
    position = 0
    for match in re.finditer(r"\$__(\w+)", sql):
        if match.start() < position:
            continue
        name = match.group(1)
        out.append(sql[position : match.start()])
        if name in with_args and sql[match.end() : match.end() + 1] == "(":
            args, position = _macro_args(sql, match.end())
            out.append(with_args[name](args))
        elif name in plain:
            out.append(plain[name])
            position = match.end()
        else:
            out.append(match.group(0))
            position = match.end()
    out.append(sql[position:])
    return "".join(out)


def grafana_interval(time_from: datetime, time_to: datetime, max_points: int = 500, minimum_s: int = 60) -> int:
    """The interval Grafana would give a panel of `max_points` points over the range, in whole
    seconds, never under the panel's minimum (the rollups' minute)."""
    span = (time_to - time_from).total_seconds()
    return max(minimum_s, math.ceil(span / max_points))
