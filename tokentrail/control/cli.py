"""`tokentrail keys create|revoke|list|rotate-signing`, `tokentrail freeze`, `tokentrail limits`,
`tokentrail capture`, `tokentrail controls list`.

Every command writes to (or reads from the beginning of) a compacted topic, so every gateway
replica sees the change within a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from tokentrail.errors import CliError

if TYPE_CHECKING:
    from schemas.models import ControlRecord
    from tokentrail.control.plane import ControlPlane

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser("keys", help="mint, revoke and list tokentrail keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = keys_sub.add_parser("create", help="mint a key (shown once; only its hash is stored)")
    create.add_argument("--tenant", required=True, help="the tenant the key's calls are billed to")
    create.add_argument("--actor-type", required=True, choices=["human", "agent", "system"], help="who holds the key")
    create.add_argument("--actor-id", required=True, help="the holder's name, e.g. alice or planner")
    create.add_argument("--parent", metavar="KEY_ID", help="the key this one acts on behalf of")
    create.add_argument(
        "--expires-in",
        type=_duration,
        metavar="DURATION",
        help="refuse the key after this long: seconds, or a number with s, m, h or d (e.g. 90m, 30d)",
    )
    create.add_argument(
        "--models",
        type=_model_list,
        metavar="M1,M2",
        help="the only models the key may call (exact names, comma-separated); default any",
    )
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=_create)

    revoke = keys_sub.add_parser(
        "revoke", help="revoke a key, and every key delegated from it, on every gateway within a second"
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key id (`keys list`), or the whole key")
    revoke.set_defaults(func=_revoke)

    listing = keys_sub.add_parser("list", help="list keys (read from the identities topic)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)

    rotate = keys_sub.add_parser(
        "rotate-signing",
        help="re-sign every identity and control record with the current TOKENTRAIL_OPERATOR_KEY "
        "(after a rotation, so TOKENTRAIL_OPERATOR_KEYS_PREVIOUS can be dropped); see docs/gateway.md",
    )
    rotate.set_defaults(func=_rotate_signing)

    freeze = subparsers.add_parser("freeze", help="kill switch: refuse a tenant's or a key's calls (403)")
    _add_scope(freeze)
    freeze.add_argument("--off", action="store_true", help="lift the freeze")
    freeze.add_argument("--reason", help="shown to refused clients and recorded with the freeze")
    freeze.set_defaults(func=_freeze)

    limits = subparsers.add_parser("limits", help="per-identity rate limits of a tenant or a key (429)")
    _add_scope(limits)
    limits.add_argument("--rpm", type=_positive, help="requests per minute")
    limits.add_argument("--tpm", type=_positive, help="LLM tokens per minute")
    limits.add_argument("--off", action="store_true", help="remove the limits of this scope")
    limits.set_defaults(func=_limits)

    capture = subparsers.add_parser("capture", help="opt a tenant in to (redacted) body capture")
    capture.add_argument("--tenant", required=True, help="the tenant whose request and response bodies are kept")
    capture.add_argument("--off", action="store_true", help="stop capturing")
    capture.set_defaults(func=_capture)

    controls = subparsers.add_parser("controls", help="the freezes, limits, capture, budgets and SLOs in force")
    controls_sub = controls.add_subparsers(dest="controls_command", required=True, metavar="ACTION")
    listing = controls_sub.add_parser("list", help="list the control records in force")
    listing.add_argument("--tenant", help="only this tenant's records (and those of its keys)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_controls_list)


def _add_scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--tenant", help="every key of this tenant")
    scope.add_argument("--key", metavar="KEY_ID", help="this key and every key delegated from it")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = int(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 30d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return seconds


def _model_list(text: str) -> list[str]:
    models = [model.strip() for model in text.split(",") if model.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give at least one model name")
    return models


def _scope(args: argparse.Namespace) -> str:
    return f"tenant:{args.tenant}" if args.tenant is not None else f"key:{args.key}"


KAFKA_WAIT_S = 3.0
"""How long a command waits for Kafka to answer before it says none is there."""


def _plane() -> ControlPlane:
    from tokentrail.control.plane import ControlPlane
    from tokentrail.kafka_reach import require_kafka
    from tokentrail.settings import CoreSettings, load

    core = load(CoreSettings)
    require_kafka(core.bootstrap(), core.home, KAFKA_WAIT_S)
    return ControlPlane(core)


def _run(action: Callable[[], T]) -> T:
    """Turn the control plane's one-line errors into CliError."""
    from tokentrail.control.follower import FollowerError
    from tokentrail.control.publish import PublishError

    try:
        return action()
    except (ValueError, FollowerError, PublishError) as exc:
        raise CliError(str(exc)) from None


def _create(args: argparse.Namespace) -> int:
    from datetime import timedelta

    import orjson

    from schemas.models import Actor
    from tokentrail.control.records import created_key_json

    plane = _plane()
    if not args.tenant.strip() or not args.actor_id.strip():
        raise CliError("--tenant and --actor-id must not be empty")
    expires_at = _now() + timedelta(seconds=args.expires_in) if args.expires_in else None
    identity, key = _run(
        lambda: plane.create_key(
            args.tenant, Actor(type=args.actor_type, id=args.actor_id), args.parent, expires_at, args.models
        )
    )
    if args.json:
        print(orjson.dumps(created_key_json(identity, key)).decode())
    else:
        print(f"key (shown once, store it now): {key}")
        links = " -> ".join(f"{link.actor.type}:{link.actor.id}" for link in identity.chain())
        print(f"key_id: {identity.key_id}  tenant: {identity.tenant_id}  chain: {links}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from tokentrail.control import keys

    plane = _plane()
    key_id = keys.key_id_of(args.key_id)
    if key_id is not None:  # a whole key: revoke it if it is one of ours (its hash proves it)
        _run(plane.follower.catch_up)
        entry = plane.identities.get(key_id)
        if entry is None or not keys.matches(args.key_id, entry.key_hash):
            raise CliError("that key is not in the registry; pass its key id (see `tokentrail keys list`)")
    else:
        key_id = args.key_id
    identity = _run(lambda: plane.revoke_key(key_id))
    assert identity.revoked_at is not None  # revoke_key returns the revoked record
    print(f"revoked {identity.key_id} (tenant {identity.tenant_id}) at {identity.revoked_at.isoformat()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import orjson

    from tokentrail.control.records import public_json

    plane = _plane()
    _run(plane.follower.catch_up)
    identities = sorted(plane.identities.identities(), key=lambda i: (i.tenant_id, i.created_at, i.key_id))
    if not args.json:
        print(f"{'KEY_ID':16}  {'TENANT':16}  {'STATE':7}  CHAIN (root first)")
    for identity in identities:
        if args.tenant is not None and identity.tenant_id != args.tenant:
            continue
        if args.json:
            print(orjson.dumps(public_json(identity)).decode())
        else:
            state = "revoked" if identity.revoked_at else "active"
            chain = " -> ".join(f"{link.actor.type}:{link.actor.id}" for link in identity.chain())
            print(f"{identity.key_id:16}  {identity.tenant_id:16}  {state:7}  {chain}")
    return 0


def _rotate_signing(args: argparse.Namespace) -> int:
    plane = _plane()
    identities, records = _run(plane.resign_all)
    print(
        f"re-signed {identities} identity and {records} control records with operator key {plane.operator_keys.current_id}; "
        "TOKENTRAIL_OPERATOR_KEYS_PREVIOUS can now be dropped"
    )
    return 0


def _check_scope(plane: ControlPlane, args: argparse.Namespace) -> None:
    """A key scope must name a key of the registry; a tenant with no key gets a warning (a typo
    in a kill switch must not pass unnoticed), the record is published all the same."""
    _run(plane.follower.catch_up)
    if getattr(args, "key", None) is not None:
        if plane.identities.get(args.key) is None:
            raise CliError(f"key {args.key} is not in the registry")
    elif not any(identity.tenant_id == args.tenant for identity in plane.identities.identities()):
        print(f"warning: unknown tenant {args.tenant!r}: no key of it is in the registry", file=sys.stderr)


def _freeze(args: argparse.Namespace) -> int:
    from schemas.models import Freeze

    scope = _scope(args)
    plane = _plane()
    _check_scope(plane, args)
    record = _run(
        lambda: Freeze(scope=scope, frozen=not args.off, reason=args.reason, changed_at=_now(), changed_by=_who())
    )
    _run(lambda: plane.put_control(record))
    print(f"{'unfrozen' if args.off else 'frozen'}: {scope}")
    return 0


def _limits(args: argparse.Namespace) -> int:
    from schemas.models import Limits

    if not args.off and args.rpm is None and args.tpm is None:
        raise CliError("give --rpm and/or --tpm, or --off to remove the limits")
    scope = _scope(args)
    plane = _plane()
    _check_scope(plane, args)
    if args.off:
        _run(lambda: plane.put_control(Limits(scope=scope, changed_at=_now())))
        print(f"limits removed: {scope}")
    else:
        record = Limits(scope=scope, requests_per_minute=args.rpm, tokens_per_minute=args.tpm, changed_at=_now())
        _run(lambda: plane.put_control(record))
        print(f"limits {scope}: {args.rpm or 'unlimited'} requests/min, {args.tpm or 'unlimited'} tokens/min")
    return 0


def _capture(args: argparse.Namespace) -> int:
    from schemas.models import Capture

    plane = _plane()
    _check_scope(plane, args)
    _run(lambda: plane.put_control(Capture(scope=f"tenant:{args.tenant}", enabled=not args.off, changed_at=_now())))
    print(f"body capture {'off' if args.off else 'on (redacted)'}: tenant {args.tenant}")
    if not args.off:
        print(
            "request and response bodies of this tenant's calls from now on are redacted by the gateway and kept "
            "in each call's record on the raw topic (7 days). Read one with `tokentrail calls show CALL_ID`; "
            f"call ids are in `tokentrail events --tenant {args.tenant} --since ... --until ...` (details: call_id=...)"
        )
    return 0


def _in_force(record: ControlRecord) -> bool:
    """Freezes that are lifted, capture that is off and empty limits change nothing."""
    from schemas.models import Capture, Freeze, Limits

    if isinstance(record, Freeze):
        return record.frozen
    if isinstance(record, Capture):
        return record.enabled
    if isinstance(record, Limits):
        return bool(record.requests_per_minute or record.tokens_per_minute)
    return True


def _controls_list(args: argparse.Namespace) -> int:
    import orjson

    from schemas import wire

    plane = _plane()
    _run(plane.follower.catch_up)
    tenant_keys = {i.key_id for i in plane.identities.identities() if i.tenant_id == args.tenant}
    records = [
        record
        for _, record in sorted(plane.records.items())
        if _in_force(record)
        and (
            args.tenant is None
            or record.scope == f"tenant:{args.tenant}"
            or record.scope.removeprefix("key:") in tenant_keys
        )
    ]
    if not args.json:
        print(f"{'KIND':8}  {'SCOPE':30}  {'CHANGED (UTC)':19}  SETTING")
    for record in records:
        data = wire.to_dict(record)
        data.pop("signature")
        if args.json:
            print(orjson.dumps(data).decode())
            continue
        setting = ", ".join(
            f"{name}={value}"
            for name, value in data.items()
            if name not in ("kind", "scope", "changed_at") and value is not None
        )
        print(f"{record.kind:8}  {record.scope:30}  {data['changed_at'][:19].replace('T', ' '):19}  {setting}")
    return 0


def _now() -> datetime:
    from datetime import datetime

    return datetime.now(UTC)


def _who() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
