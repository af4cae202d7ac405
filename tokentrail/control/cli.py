"""`tokentrail keys create|revoke|list`, `tokentrail freeze`, `tokentrail limits`, `tokentrail capture`.

Every command writes to (or reads from the beginning of) a compacted topic, so every gateway
replica sees the change within a second.
"""

from __future__ import annotations

import argparse
from datetime import UTC

from tokentrail.errors import CliError


def register(subparsers) -> None:
    keys = subparsers.add_parser("keys", help="mint, revoke and list tokentrail keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = keys_sub.add_parser("create", help="mint a key (shown once; only its hash is stored)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--actor-type", required=True, choices=["human", "agent", "system"])
    create.add_argument("--actor-id", required=True)
    create.add_argument("--parent", metavar="KEY_ID", help="the key this one acts on behalf of")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=_create)

    revoke = keys_sub.add_parser("revoke", help="revoke a key on every gateway within a second")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(func=_revoke)

    listing = keys_sub.add_parser("list", help="list keys (read from the identities topic)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)

    freeze = subparsers.add_parser("freeze", help="kill switch: refuse a tenant's or a key's calls (403)")
    _add_scope(freeze)
    freeze.add_argument("--off", action="store_true", help="lift the freeze")
    freeze.add_argument("--reason")
    freeze.set_defaults(func=_freeze)

    limits = subparsers.add_parser("limits", help="per-identity rate limits of a tenant or a key (429)")
    _add_scope(limits)
    limits.add_argument("--rpm", type=_positive, help="requests per minute")
    limits.add_argument("--tpm", type=_positive, help="LLM tokens per minute")
    limits.add_argument("--off", action="store_true", help="remove the limits of this scope")
    limits.set_defaults(func=_limits)

    capture = subparsers.add_parser("capture", help="opt a tenant in to (redacted) body capture")
    capture.add_argument("--tenant", required=True)
    capture.add_argument("--off", action="store_true")
    capture.set_defaults(func=_capture)


def _add_scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--tenant")
    scope.add_argument("--key", metavar="KEY_ID")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _scope(args) -> str:
    return f"tenant:{args.tenant}" if args.tenant is not None else f"key:{args.key}"


KAFKA_WAIT_S = 3.0
"""How long a command waits for Kafka to answer before it says none is there."""


def _plane():
    from tokentrail.control.plane import ControlPlane
    from tokentrail.kafka_reach import require_kafka
    from tokentrail.settings import CoreSettings, load

    core = load(CoreSettings)
    require_kafka(core.bootstrap(), core.home, KAFKA_WAIT_S)
    return ControlPlane(core)


def _run(action):
    """Turn the control plane's one-line errors into CliError."""
    from tokentrail.control.follower import FollowerError
    from tokentrail.control.publish import PublishError

    try:
        return action()
    except (ValueError, FollowerError, PublishError) as exc:
        raise CliError(str(exc)) from None


def _create(args) -> int:
    import orjson

    from schemas.models import Actor

    plane = _plane()
    if not args.tenant.strip() or not args.actor_id.strip():
        raise CliError("--tenant and --actor-id must not be empty")
    identity, key = _run(
        lambda: plane.create_key(args.tenant, Actor(type=args.actor_type, id=args.actor_id), args.parent)
    )
    chain = [link.model_dump() for link in identity.chain()]
    if args.json:
        print(
            orjson.dumps(
                {
                    "key": key,
                    "key_id": identity.key_id,
                    "tenant_id": identity.tenant_id,
                    "actor": identity.actor.model_dump(),
                    "parent_key_id": identity.parent_key_id,
                    "chain": chain,
                }
            ).decode()
        )
    else:
        print(f"key (shown once, store it now): {key}")
        links = " -> ".join(f"{link.actor.type}:{link.actor.id}" for link in identity.chain())
        print(f"key_id: {identity.key_id}  tenant: {identity.tenant_id}  chain: {links}")
    return 0


def _revoke(args) -> int:
    plane = _plane()
    identity = _run(lambda: plane.revoke_key(args.key_id))
    print(f"revoked {identity.key_id} (tenant {identity.tenant_id}) at {identity.revoked_at.isoformat()}")
    return 0


def _list(args) -> int:
    import orjson

    from schemas import wire

    plane = _plane()
    _run(plane.follower.catch_up)
    identities = sorted(plane.identities.identities(), key=lambda i: (i.tenant_id, i.created_at, i.key_id))
    for identity in identities:
        if args.tenant is not None and identity.tenant_id != args.tenant:
            continue
        if args.json:
            record = wire.to_dict(identity)
            record.pop("key_hash")
            print(orjson.dumps(record).decode())
        else:
            state = "revoked" if identity.revoked_at else "active"
            chain = " -> ".join(f"{link.actor.type}:{link.actor.id}" for link in identity.chain())
            print(f"{identity.key_id}  {identity.tenant_id}  {state:7}  {chain}")
    return 0


def _freeze(args) -> int:
    from schemas.models import Freeze

    scope = _scope(args)
    plane = _plane()
    if args.key is not None:
        _run(plane.follower.catch_up)
        if plane.identities.get(args.key) is None:
            raise CliError(f"key {args.key} is not in the registry")
    record = _run(
        lambda: Freeze(scope=scope, frozen=not args.off, reason=args.reason, changed_at=_now(), changed_by=_who())
    )
    _run(lambda: plane.put_control(record))
    print(f"{'unfrozen' if args.off else 'frozen'}: {scope}")
    return 0


def _limits(args) -> int:
    from schemas.models import Limits

    if not args.off and args.rpm is None and args.tpm is None:
        raise CliError("give --rpm and/or --tpm, or --off to remove the limits")
    scope = _scope(args)
    plane = _plane()
    if args.off:
        _run(lambda: plane.put_control(Limits(scope=scope, changed_at=_now())))
        print(f"limits removed: {scope}")
    else:
        record = Limits(scope=scope, requests_per_minute=args.rpm, tokens_per_minute=args.tpm, changed_at=_now())
        _run(lambda: plane.put_control(record))
        print(f"limits {scope}: {args.rpm or 'unlimited'} requests/min, {args.tpm or 'unlimited'} tokens/min")
    return 0


def _capture(args) -> int:
    from schemas.models import Capture

    plane = _plane()
    _run(lambda: plane.put_control(Capture(scope=f"tenant:{args.tenant}", enabled=not args.off, changed_at=_now())))
    print(f"body capture {'off' if args.off else 'on (redacted)'}: tenant {args.tenant}")
    if not args.off:
        print(
            "request and response bodies of this tenant's calls from now on are redacted by the gateway and kept "
            "in each call's record on the raw topic (7 days). Read one with `tokentrail calls show CALL_ID`; "
            f"call ids are in `tokentrail events --tenant {args.tenant} --since ... --until ...` (details: call_id=...)"
        )
    return 0


def _now():
    from datetime import datetime

    return datetime.now(UTC)


def _who() -> str:
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
