"""The gateway's key admin API: applications and agents mint, list and revoke keys over HTTP.

    POST   /tokentrail/v1/keys            {"actor_type", "actor_id", "expires_at"?, "models"?,
                                           "tenant_id"?, "parent_key_id"?}  -> 201, as `keys create --json`
    GET    /tokentrail/v1/keys[?tenant=T] -> 200 {"keys": [...]}
    DELETE /tokentrail/v1/keys/{key_id}   -> 200 {"key_id", "revoked_at"}

Who may do what (`Authorization: Bearer ...`):
- the operator token (TOKENTRAIL_ADMIN_TOKEN) manages any key of any tenant;
- a live tokentrail key mints keys delegated from itself (same tenant, never wider: expiry and
  model allow-list within its own, revoked with it), and lists and revokes itself and the keys
  delegated from it.
Keys are minted and revoked through the control plane (signed with the operator key, published
on the identities topic), so every replica applies them within a second; the answer comes once
this replica's registry holds the change, so the new key works here at once.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import wire
from schemas.models import Actor, ActorType, Identity, NonEmpty, UtcTimestamp
from tokentrail.control.follower import FollowerError
from tokentrail.control.plane import ControlPlane
from tokentrail.control.publish import PublishError
from tokentrail.control.records import created_key_json, public_json
from tokentrail.control.registry import KeyEntry

KEYS_PATH = "/tokentrail/v1/keys"
APPLIED_WITHIN_S = 5.0
"""How long an answer waits for this replica's registry to hold the change it published."""
MAX_BODY_BYTES = 64 * 1024
T = TypeVar("T")

Caller = Literal["operator"] | KeyEntry
"""The operator token, or the registry entry of the tokentrail key that called."""


class KeyRequest(BaseModel):
    """The body of POST /tokentrail/v1/keys."""

    model_config = ConfigDict(extra="forbid")

    actor_type: ActorType
    actor_id: NonEmpty
    expires_at: UtcTimestamp | None = None
    models: list[NonEmpty] | None = Field(default=None, min_length=1)
    tenant_id: NonEmpty | None = None
    """Required with the operator token; with a key, its own tenant (the default)."""
    parent_key_id: NonEmpty | None = None
    """Operator token only: the key the new one acts for. With a key, the parent is that key."""


def _error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "unavailable")
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


class KeyAdmin:
    def __init__(self, plane: ControlPlane, operator_token: bytes | None) -> None:
        self.plane = plane
        self.operator_token = operator_token

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post(KEYS_PATH, self.create)
        router.add_get(KEYS_PATH, self.list_keys)
        router.add_delete(KEYS_PATH + "/{key_id}", self.revoke)

    def _caller(self, request: web.Request) -> Caller | web.Response:
        authorization = request.headers.get("Authorization", "")
        if authorization[:7].lower() != "bearer " or not authorization[7:].strip():
            return _error(401, "send the operator token or a tokentrail key as 'Authorization: Bearer ...'")
        presented = authorization[7:].strip()
        if self.operator_token is not None and hmac.compare_digest(presented.encode(), self.operator_token):
            return "operator"
        entry = self.plane.identities.authenticate(presented)
        if isinstance(entry, str):
            return _error(401, f"not the operator token nor a live tokentrail key ({entry})")
        if self.plane.controls.freeze_of(entry.tenant_id, entry.key_id, entry.ancestors) is not None:
            return _error(403, "this tokentrail key is frozen")
        return entry

    async def create(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(400, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            wanted = KeyRequest.model_validate(wire.decode_json(await request.read()))
        except wire.SchemaError as exc:
            return _error(400, str(exc))
        except ValidationError as exc:
            return _error(400, wire.describe(exc))
        if caller == "operator":
            if wanted.tenant_id is None:
                return _error(400, "tenant_id: required with the operator token")
            tenant_id, parent = wanted.tenant_id, None
            if wanted.parent_key_id is not None:
                entry = self.plane.identities.get(wanted.parent_key_id)
                if entry is None:
                    return _error(404, f"parent key {wanted.parent_key_id} is not in the registry")
                parent = entry.identity
        else:
            if wanted.parent_key_id not in (None, caller.key_id):
                return _error(403, "a key mints keys delegated from itself only (leave parent_key_id out)")
            if wanted.tenant_id not in (None, caller.tenant_id):
                return _error(403, f"a key of tenant {caller.tenant_id!r} cannot mint keys of another tenant")
            tenant_id, parent = caller.tenant_id, caller.identity
        actor = Actor(type=wanted.actor_type, id=wanted.actor_id)
        outcome = await self._publish(
            lambda: self.plane.mint(tenant_id, actor, parent, wanted.expires_at, wanted.models),
            lambda result: self.plane.identities.get(result[0].key_id) is not None,
        )
        if isinstance(outcome, web.Response):
            return outcome
        identity, key = outcome
        return web.json_response(created_key_json(identity, key), status=201)

    async def list_keys(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        tenant = request.query.get("tenant")
        visible = [
            identity
            for identity in self.plane.identities.identities()
            if self._may_manage(caller, identity) and (tenant is None or identity.tenant_id == tenant)
        ]
        visible.sort(key=lambda i: (i.tenant_id, i.created_at, i.key_id))
        return web.json_response({"keys": [public_json(identity) for identity in visible]})

    async def revoke(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        entry = self.plane.identities.get(request.match_info["key_id"])
        if entry is None or not self._may_manage(caller, entry.identity):
            return _error(404, f"key {request.match_info['key_id']} is not in the registry or not yours to manage")
        outcome = await self._publish(
            lambda: self.plane.revoke(entry.identity),
            lambda revoked: (current := self.plane.identities.get(revoked.key_id)) is not None and current.revoked,
        )
        if isinstance(outcome, web.Response):
            return outcome
        return web.json_response({"key_id": outcome.key_id, "revoked_at": wire.to_dict(outcome)["revoked_at"]})

    @staticmethod
    def _may_manage(caller: Caller, identity: Identity) -> bool:
        """The operator manages every key; a key itself and the keys delegated from it."""
        if caller == "operator":
            return True
        return identity.key_id == caller.key_id or any(link.key_id == caller.key_id for link in identity.ancestors)

    async def _publish(self, action: Callable[[], T], applied: Callable[[T], bool]) -> T | web.Response:
        """Run a blocking control-plane write off the event loop, then wait (briefly) until this
        replica's registry shows it; a one-line 400/503 when it cannot be done."""
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, action)
        except ValueError as exc:
            return _error(400, str(exc))
        except (PublishError, FollowerError) as exc:
            return _error(503, str(exc))
        deadline = time.monotonic() + APPLIED_WITHIN_S
        while not applied(result) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return result
