"""`tokentrail migrate`, `tokentrail events`, `tokentrail report cost|alerts|patterns`: the storage surfaces
of docs/architecture.md. All three work while `tokentrail flows` holds the embedded store (they
read through its query server; migrate then says it cannot write)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, get_args

from tokentrail.errors import CliError

if TYPE_CHECKING:  # the CLI hub imports every command module: heavy imports wait for the command
    from tokentrail.storage import StorageSettings, Store

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

# `--by` -> (rollup table prefix, grouping columns); fixed names, never user text.
COST_DIMENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tenant": ("cost_by_tenant", ("tenant_id",)),
    "identity": ("cost_by_identity", ("tenant_id", "key_id", "actor_type", "actor_id")),
    "root": ("cost_by_root", ("tenant_id", "root_key_id", "root_actor_type", "root_actor_id")),
    "model": ("cost_by_model", ("provider", "model")),
}
COST_MEASURES = ("calls", "failed_calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls")
EVENTS_WINDOW = timedelta(hours=24)
"""What `tokentrail events` shows without --since."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2105, 12, 31, tzinfo=UTC)
"""Open-ended report bounds, inside the range of ClickHouse's DateTime."""


def register(subparsers: Subparsers) -> None:
    subparsers.add_parser(
        "migrate",
        help="apply pending ClickHouse migrations (clickhouse/NNNN_*.sql) in order",
        description="Apply the pending numbered SQL files of clickhouse/ in order, record them in "
        "schema_migrations, and set the retention TTL from TOKENTRAIL_RETENTION_DAYS.",
    ).set_defaults(func=_migrate)

    events = subparsers.add_parser(
        "events",
        help="what happened to a tenant between two moments",
        description="Events of one tenant with since <= timestamp < until, in (timestamp, event_id) "
        "order; by default the last 24 hours. Timestamps are ISO 8601; without a zone they mean UTC.",
    )
    events.add_argument("--tenant", required=True, help="tenant id")
    events.add_argument("--since", help="start, inclusive (ISO 8601; default: 24 hours before --until)")
    events.add_argument("--until", help="end, exclusive (ISO 8601; default: now)")
    events.add_argument(
        "--type", action="append", default=[], dest="types", metavar="TYPE", help="only this event type (repeatable)"
    )
    events.add_argument(
        "--source",
        action="append",
        default=[],
        dest="sources",
        metavar="SRC",
        help="only this event source (repeatable)",
    )
    events.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table (default) or jsonl: one UnifiedEvent per line",
    )
    events.add_argument("--limit", type=_positive, default=1000, help="at most N events (default 1000)")
    events.set_defaults(func=_events)

    report = subparsers.add_parser("report", help="spend reports from the ClickHouse rollups; --html: every dashboard")
    # Not required: `report --html FILE` (every dashboard) is added by tokentrail/dashboards/html.py.
    reports = report.add_subparsers(dest="report", metavar="REPORT")
    cost = reports.add_parser(
        "cost",
        help="calls, tokens and cost, largest spend first, with a total",
        description="Spend from the rollups, grouped by tenant, calling identity, root actor of the "
        "delegation chain, or model; largest first. Bounds round down to the minute (the hour "
        "when both are whole hours, which reads the smaller hourly rollup).",
    )
    cost.add_argument("--by", choices=tuple(COST_DIMENSIONS), default="tenant", help="grouping (default tenant)")
    cost.add_argument("--since", help="start, inclusive (ISO 8601; default: all)")
    cost.add_argument("--until", help="end, exclusive (ISO 8601; default: all)")
    cost.add_argument("--tenant", help="only this tenant")
    cost.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    cost.set_defaults(func=_report_cost)

    for name, help_text, func in (
        ("alerts", "alert episodes (fired, resolved) from the alerts table, oldest first", _report_alerts),
        ("patterns", "cross-identity failure patterns from the failure_patterns table", _report_patterns),
    ):
        detail = reports.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}, overlapping [--since, --until). "
            "--since/--until take ISO 8601 or a duration back from now (30m, 24h, 7d).",
        )
        detail.add_argument("--tenant", help="only this tenant (patterns: also system-wide ones naming it)")
        detail.add_argument("--since", help="start (ISO 8601 or a duration such as 24h; default: all)")
        detail.add_argument("--until", help="end, exclusive (ISO 8601 or a duration; default: now and later)")
        detail.add_argument("--json", action="store_true", help="one JSON object per line")
        detail.add_argument("--limit", type=_positive, default=1000, help="at most N rows (default 1000)")
        detail.set_defaults(func=func)


def parse_timestamp(flag: str, text: str | None) -> datetime | None:
    """ISO 8601 (`2026-03-01`, `2026-03-01T10:00`, `...Z`, `...+02:00`); naive means UTC.
    Parsed here rather than by argparse, so a bad value is one line (CliError), not usage text."""

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag}: not an ISO 8601 timestamp: {text!r} (e.g. 2026-03-01T10:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


@contextmanager
def storage_errors() -> Iterator[None]:
    """StorageError is something the user can act on (a held store, a bad URL): one line, exit 2."""
    from tokentrail.storage.errors import StorageError

    try:
        yield
    except StorageError as exc:
        if "UNKNOWN_TABLE" in str(exc):
            raise CliError(
                f"{exc}; the store has no tables yet: run `tokentrail migrate` or start `tokentrail flows`"
            ) from None
        raise CliError(str(exc)) from None


@contextmanager
def opened_store(reading: bool = True) -> Iterator[tuple[Store, StorageSettings]]:
    """The store of TOKENTRAIL_HOME. A reader never creates one: with no store in the home it
    fails in one line that names the home and what to start (an empty new store would only
    answer "unknown table")."""
    from tokentrail.settings import load
    from tokentrail.storage import StorageSettings, open_store

    settings = load(StorageSettings)
    if reading and settings.clickhouse_url is None:
        require_embedded_store(settings)
    with storage_errors():
        store = open_store(settings)
        try:
            yield store, settings
        finally:
            store.close()


def require_embedded_store(settings: StorageSettings) -> None:
    """CliError unless TOKENTRAIL_HOME holds a migrated embedded store (or a query server)."""
    path = settings.embedded_path()
    if not (path / "metadata").is_dir():
        raise CliError(
            f"no ClickHouse store in {path} (TOKENTRAIL_HOME={settings.home}): start `tokentrail flows` "
            "with this TOKENTRAIL_HOME (it creates the store), or set TOKENTRAIL_HOME to the home it uses"
        )


def _migrate(args: argparse.Namespace) -> int:
    from tokentrail.storage import migrate

    with opened_store(reading=False) as (store, settings), storage_errors():
        applied = migrate(store, settings)
    for name in applied:
        print(f"applied {name}")
    if not applied:
        print("schema up to date")
    print(f"retention: {settings.retention_days} days")
    return 0


def _bounds(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:

    since, until = parse_timestamp("--since", args.since), parse_timestamp("--until", args.until)
    if since is not None and until is not None and since > until:
        raise CliError(f"--since ({since.isoformat()}) is after --until ({until.isoformat()})")
    return since, until


def _check_choices(flag: str, given: list[str], allowed: tuple[str, ...]) -> None:

    unknown = [value for value in given if value not in allowed]
    if unknown:
        raise CliError(f"unknown {flag} {', '.join(map(repr, unknown))}; one of: {', '.join(allowed)}")


def _events(args: argparse.Namespace) -> int:
    from schemas.models import EventSource, EventType
    from tokentrail.storage.event_rows import EVENT_COLUMNS, unified_event
    from tokentrail.storage.reads import record_read

    since, until = _bounds(args)
    until = until or datetime.now(UTC)
    since = since or until - EVENTS_WINDOW
    _check_choices("--type", args.types, get_args(EventType))
    _check_choices("--source", args.sources, get_args(EventSource))
    sql = (
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events FINAL "
        "WHERE tenant_id = {tenant:String} "
        "AND timestamp >= {since:DateTime64(3, 'UTC')} AND timestamp < {until:DateTime64(3, 'UTC')} "
        "AND (empty({types:Array(String)}) OR has({types:Array(String)}, event_type)) "
        "AND (empty({sources:Array(String)}) OR has({sources:Array(String)}, event_source)) "
        "ORDER BY timestamp, event_id LIMIT {limit:UInt64}"
    )
    parameters = {
        "tenant": args.tenant,
        "since": since,
        "until": until,
        "types": args.types,
        "sources": args.sources,
        "limit": args.limit,
    }
    with opened_store() as (store, _), storage_errors():
        rows = store.query(sql, parameters)
        record_read(store, "events", args.tenant, since, until)
    events = [unified_event(row) for row in rows]
    if args.format == "jsonl":
        import orjson

        out = sys.stdout.buffer
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
        out.flush()
    else:
        print_table(EVENT_TABLE_COLUMNS, [event_cells(e) for e in events])
    if len(rows) == args.limit:
        print(f"(stopped at --limit {args.limit}; there may be more)", file=sys.stderr)
    return 0


EVENT_TABLE_COLUMNS = ("timestamp", "type", "severity", "source", "actor", "model", "status", "cost_usd", "details")


def event_cells(event: dict[str, Any]) -> tuple[str, ...]:
    """One `events` table line: the fields a reader looks for pulled out of the payload
    (model, status, cost or "unpriced"), then the rest as short key=value details."""
    payload = event["payload"]
    model = payload.get("model") or payload.get("requested_model") or ""
    status = payload.get("status")
    if payload.get("unpriced"):
        cost = "unpriced"
    else:
        cost = str(payload["cost_usd"]) if payload.get("cost_usd") is not None else ""
    details: list[str] = []
    tokens = payload.get("tokens")
    if isinstance(tokens, dict):
        details.append(f"tokens={tokens.get('input', 0)}/{tokens.get('output', 0)}")
    for name in ("error_type", "unpriced_reason", "decision", "reason", "endpoint", "key_id", "call_id"):
        value = payload.get(name)
        if value not in (None, "", False):
            details.append(f"{name}={value}")
    return (
        event["timestamp"],
        event["event_type"],
        event["severity"],
        event["event_source"],
        f"{event['actor']['type']}:{event['actor']['id']}",
        model,
        "" if status is None else str(status),
        cost,
        " ".join(details),
    )


def cost_report_query(by: str, hourly: bool) -> str:
    """SQL of `report cost --by`; names come from COST_DIMENSIONS, values bind as parameters."""
    prefix, columns = COST_DIMENSIONS[by]
    table, bucket = (f"{prefix}_1h", "hour") if hourly else (f"{prefix}_1m", "minute")
    keys = ", ".join(columns)
    measures = ", ".join(f"sum({m}) AS {m}" for m in COST_MEASURES)
    return (
        f"SELECT {keys}, {measures} FROM {table} "
        "WHERE ({tenant:String} = '' OR tenant_id = {tenant:String}) "
        f"AND {bucket} >= toStartOfMinute({{since:DateTime64(3, 'UTC')}}) "
        f"AND {bucket} < {{until:DateTime64(3, 'UTC')}} "
        f"GROUP BY {keys} ORDER BY cost_usd DESC, calls DESC, {keys}"
    )


def _whole_hour(moment: datetime | None) -> bool:
    return moment is None or (moment.minute, moment.second, moment.microsecond) == (0, 0, 0)


def _report_cost(args: argparse.Namespace) -> int:
    from tokentrail.storage.reads import record_read

    since, until = _bounds(args)
    hourly = _whole_hour(since) and _whole_hour(until)
    parameters = {
        "tenant": args.tenant or "",
        "since": since or EARLIEST,
        "until": until or LATEST,
    }
    with opened_store() as (store, _), storage_errors():
        rows = store.query(cost_report_query(args.by, hourly), parameters)
        record_read(store, "report cost", args.tenant, since, until)
    columns = (*COST_DIMENSIONS[args.by][1], *COST_MEASURES)
    if args.format == "jsonl":
        import orjson

        for row in rows:
            sys.stdout.buffer.write(orjson.dumps({c: _plain(row[c]) for c in columns}) + b"\n")
        sys.stdout.buffer.flush()
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(row[c]) for c in columns] for row in rows])
    else:
        total = {m: sum((row[m] for row in rows), Decimal(0) if m == "cost_usd" else 0) for m in COST_MEASURES}
        lines = [[_cost_cell(row, c) for c in columns] for row in rows]
        dims = len(COST_DIMENSIONS[args.by][1])
        lines.append(["TOTAL", *[""] * (dims - 1), *[_cost_cell(total, m) for m in COST_MEASURES]])
        print_table(columns, lines, numeric_from=dims, rule_before_last=True)
        if total["unpriced_calls"]:
            print(
                f"{total['unpriced_calls']:,} of {total['calls']:,} calls are unpriced (no known price for their model, "
                "or no usage reported): cost_usd is the cost of the priced calls only, '-' where none was priced; "
                "`tokentrail events --type llm_call` shows each one's unpriced_reason"
            )
    return 0


def _cost_cell(row: dict[str, Any], column: str) -> str:
    """A report table cell; the cost of a group none of whose calls could be priced is
    unknown ('-'), not $0."""
    if column == "cost_usd" and row["calls"] and row["unpriced_calls"] == row["calls"]:
        return "-"
    return _cell(row[column])


ALERT_COLUMNS = (
    "status",
    "severity",
    "rule",
    "scope",
    "key_id",
    "actor",
    "root_actor",
    "summary",
    "value",
    "threshold",
    "revision",
    "labels",
    "annotations",
    "evidence_sql",
    "evidence_url",
)
ALERTS_QUERY = (
    "SELECT tenant_id, fingerprint, starts_at, episode_end AS ends_at, "
    + ", ".join(f"latest.{n} AS {c}" for n, c in enumerate(ALERT_COLUMNS, 1))
    + " FROM (SELECT tenant_id, fingerprint, starts_at, max(ends_at) AS episode_end, "
    f"argMax(tuple({', '.join(ALERT_COLUMNS)}), (updated_at, status = 'resolved')) AS latest "
    "FROM alerts FINAL WHERE ({tenant:String} = '' OR tenant_id = {tenant:String}) "
    "AND starts_at < {until:DateTime64(3, 'UTC')} "
    "GROUP BY tenant_id, fingerprint, starts_at) "
    "WHERE episode_end IS NULL OR episode_end >= {since:DateTime64(3, 'UTC')} "
    "ORDER BY starts_at, fingerprint LIMIT {limit:UInt64}"
)
"""One line per alert episode (fingerprint, starts_at) at its latest state; a resolution wins a tie."""

PATTERNS_QUERY = (
    "SELECT tenant_id, pattern_id, scope, signature, provider, model, status, error_type, error_code, "
    "context_hash, identities, identity_count, tenants, tenant_count, calls, first_seen, last_seen, detected_at "
    "FROM failure_patterns FINAL "
    "WHERE ({tenant:String} = '' OR tenant_id = {tenant:String} OR has(tenants, {tenant:String})) "
    "AND last_seen >= {since:DateTime64(3, 'UTC')} AND first_seen < {until:DateTime64(3, 'UTC')} "
    "ORDER BY first_seen, tenant_id, signature LIMIT {limit:UInt64}"
)


def parse_moment(flag: str, text: str | None, now: datetime) -> datetime | None:
    """ISO 8601 as `parse_timestamp`, or a duration back from `now`: `90s`, `30m`, `24h`, `7d`."""
    import re
    from datetime import timedelta

    if text is not None and (match := re.fullmatch(r"(\d+)([smhd])", text.strip())):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - timedelta(**{unit: int(match.group(1))})
    return parse_timestamp(flag, text)


def _window(args: argparse.Namespace) -> dict[str, Any]:
    now = datetime.now(UTC)
    since, until = parse_moment("--since", args.since, now), parse_moment("--until", args.until, now)
    if since is not None and until is not None and since > until:
        raise CliError(f"--since ({since.isoformat()}) is after --until ({until.isoformat()})")
    return {"tenant": args.tenant or "", "since": since or EARLIEST, "until": until or LATEST, "limit": args.limit}


def _record_window_read(store: Store, surface: str, window: dict[str, Any]) -> None:
    """Who looked at alerts or patterns: a read for the Customers dashboard (open bounds as NULL)."""
    from tokentrail.storage.reads import record_read

    since = None if window["since"] == EARLIEST else window["since"]
    until = None if window["until"] == LATEST else window["until"]
    record_read(store, surface, window["tenant"] or None, since, until)


def _json_value(value: Any) -> Any:
    from schemas.models import format_timestamp

    return format_timestamp(value) if isinstance(value, datetime) else _plain(value)


def _print_json_lines(rows: list[dict[str, Any]]) -> None:
    import orjson

    for row in rows:
        sys.stdout.buffer.write(orjson.dumps({k: _json_value(v) for k, v in row.items()}) + b"\n")
    sys.stdout.buffer.flush()


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _who(actor: str, root_actor: str) -> str:
    """`agent:bot (for human:ana)`: the identity, and the human at the root of its chain."""
    if actor and root_actor and root_actor != actor:
        return f"{actor} (for {root_actor})"
    return actor or root_actor


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _detail_rows(args: argparse.Namespace, sql: str, surface: str) -> list[dict[str, Any]] | None:
    """The rows of a `report alerts|patterns` query; printed as JSON lines (None returned) with --json."""
    window = _window(args)
    with opened_store() as (store, _), storage_errors():
        rows = store.query(sql, window)
        _record_window_read(store, surface, window)
    if not args.json:
        return rows
    _print_json_lines(rows)
    return None


def _report_alerts(args: argparse.Namespace) -> int:
    rows = _detail_rows(args, ALERTS_QUERY, "report alerts")
    if rows is None:
        return 0
    print_table(
        (
            "starts_at",
            "ends_at",
            "tenant",
            "status",
            "severity",
            "rule",
            "scope",
            "who",
            "value",
            "threshold",
            "summary",
        ),
        [
            (
                _when(r["starts_at"]),
                _when(r["ends_at"]),
                r["tenant_id"],
                r["status"],
                r["severity"],
                r["rule"],
                r["scope"],
                _who(r["actor"], r["root_actor"]),
                _number(r["value"]),
                _number(r["threshold"]),
                _clip(r["summary"], 80),
            )
            for r in rows
        ],
    )
    return 0


def _report_patterns(args: argparse.Namespace) -> int:
    rows = _detail_rows(args, PATTERNS_QUERY, "report patterns")
    if rows is None:
        return 0
    print_table(
        ("first_seen", "last_seen", "tenant", "provider", "model", "status", "error", "identities", "tenants", "calls"),
        [
            (
                _when(r["first_seen"]),
                _when(r["last_seen"]),
                r["tenant_id"],
                r["provider"],
                r["model"],
                r["status"],
                r["error_code"] or r["error_type"],
                r["identity_count"],
                ",".join(r["tenants"]) if r["tenant_count"] > 1 else r["tenant_count"],
                f"{r['calls']:,}",
            )
            for r in rows
        ],
    )
    return 0


def _plain(value: Any) -> Any:
    """JSON/CSV value: money as a decimal string with cents precision kept (no float)."""
    return f"{value:f}" if isinstance(value, Decimal) else value


def _cell(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.quantize(Decimal('0.000001')):f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric_from: int | None = None,
    rule_before_last: bool = False,
) -> None:
    """A fixed-width table; columns from `numeric_from` on are right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(w) if numeric_from is not None and i >= numeric_from else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(line(header))
    print(rule)
    for i, row in enumerate(rows):
        if rule_before_last and i == len(rows) - 1:
            print(rule)
        print(line(row))
