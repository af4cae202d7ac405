"""`tokentrail slo set|list` and `tokentrail budget set|list`: the objectives detection follows.

Each `set` publishes the existing `Slo` / `Budget` control record (compacted, one live record
per scope); `list` reads the controls topic from the beginning. The gateway enforces neither:
the flows' detectors follow them (error-budget burn, budget burn; docs/architecture.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from tokentrail.control.cli import _now, _plane, _run
from tokentrail.errors import CliError

if TYPE_CHECKING:  # the CLI hub imports every command module: pydantic waits for the command
    from schemas.models import Budget
    from tokentrail.control.registry import KeyEntry


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    slo = subparsers.add_parser("slo", help="availability objective of a tenant (error-budget burn alerts)")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True, metavar="ACTION")
    slo_set = slo_sub.add_parser(
        "set",
        help="set a tenant's SLO: the share of calls that must not fail with a 5xx, 429 or timeout",
    )
    slo_set.add_argument("--tenant", required=True)
    slo_set.add_argument("--target", required=True, type=_target, help="e.g. 0.99 or 0.999 (default objective 0.99)")
    slo_set.set_defaults(func=_slo_set)
    slo_list = slo_sub.add_parser("list", help="SLOs set, read from the controls topic")
    slo_list.add_argument("--tenant")
    slo_list.add_argument("--json", action="store_true", help="one JSON object per line")
    slo_list.set_defaults(func=_slo_list)

    budget = subparsers.add_parser("budget", help="spend budget of a tenant or one of its keys (budget burn alerts)")
    budget_sub = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    budget_set = budget_sub.add_parser("set", help="set the budget of a tenant, or of one key with --key")
    budget_set.add_argument("--tenant", required=True)
    budget_set.add_argument("--key", metavar="KEY_ID", help="a key of the tenant (default: the whole tenant)")
    budget_set.add_argument("--usd", required=True, type=_usd, help="amount in US dollars, e.g. 500")
    budget_set.add_argument("--period", required=True, choices=("day", "month"))
    budget_set.set_defaults(func=_budget_set)
    budget_list = budget_sub.add_parser("list", help="budgets set, read from the controls topic")
    budget_list.add_argument("--tenant", help="only this tenant's budgets (its keys' need the registry: included)")
    budget_list.add_argument("--json", action="store_true", help="one JSON object per line")
    budget_list.set_defaults(func=_budget_list)


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 exclusive (e.g. 0.99), got {text}")
    return value


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive amount, got {text}")
    return value


def _slo_set(args: argparse.Namespace) -> int:
    from schemas.models import Slo

    if not args.tenant.strip():
        raise CliError("--tenant must not be empty")
    plane = _plane()
    record = Slo(scope=f"tenant:{args.tenant}", target=args.target, changed_at=_now())
    _run(lambda: plane.put_control(record))
    print(f"slo tenant {args.tenant}: {args.target:g} of calls without a 5xx, 429 or timeout")
    return 0


def _budget_set(args: argparse.Namespace) -> int:
    from schemas.models import Budget

    if not args.tenant.strip():
        raise CliError("--tenant must not be empty")
    plane = _plane()
    scope = f"tenant:{args.tenant}"
    if args.key is not None:
        _run(plane.follower.catch_up)
        entry = plane.identities.get(args.key)
        if entry is None:
            raise CliError(f"key {args.key} is not in the registry")
        if entry.tenant_id != args.tenant:
            raise CliError(f"key {args.key} belongs to tenant {entry.tenant_id!r}, not {args.tenant!r}")
        scope = f"key:{args.key}"
    record = Budget(scope=scope, period=args.period, amount_usd=args.usd, changed_at=_now())
    _run(lambda: plane.put_control(record))
    print(f"budget {scope}: ${args.usd:f} per {args.period}")
    return 0


def _print_records(records: list[Any], as_json: bool, line: Callable[[Any], str]) -> None:
    import orjson

    from schemas import wire

    for record in sorted(records, key=lambda r: r.scope):
        print(orjson.dumps(wire.to_dict(record)).decode() if as_json else line(record))


def _slo_list(args: argparse.Namespace) -> int:
    plane = _plane()
    _run(plane.follower.catch_up)
    slos = [s for s in plane.controls.slos() if args.tenant is None or s.scope == f"tenant:{args.tenant}"]
    _print_records(slos, args.json, lambda s: f"{s.scope}  target {s.target:g}  set {s.changed_at.isoformat()}")
    return 0


def _budget_list(args: argparse.Namespace) -> int:
    plane = _plane()
    _run(plane.follower.catch_up)

    def tenant_of(budget: Budget) -> str | None:
        kind, _, name = budget.scope.partition(":")
        if kind == "tenant":
            return name
        entry: KeyEntry | None = plane.identities.get(name)
        return entry.tenant_id if entry is not None else None

    budgets = [b for b in plane.controls.budgets() if args.tenant is None or tenant_of(b) == args.tenant]
    _print_records(
        budgets,
        args.json,
        lambda b: f"{b.scope}  ${b.amount_usd:f} per {b.period}  set {b.changed_at.isoformat()}",
    )
    return 0
