"""Admission of a request, before anything is sent upstream (docs/architecture.md, invariant 6): who is calling,
is it frozen, is it over its limits. Plain logic over the control plane's in-memory state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, final

from tokentrail.control import keys
from tokentrail.control.limits import RateLimiter
from tokentrail.control.registry import ControlState, IdentityRegistry, KeyEntry

UNAUTHORIZED_MESSAGES = {
    "missing": "no tokentrail key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
    "malformed": "not a tokentrail key",
    "unknown": "unknown tokentrail key",
    "mismatch": "unknown tokentrail key",
    "revoked": "this tokentrail key (or a key it was delegated from) has been revoked",
    "expired": "this tokentrail key has expired",
}


@final  # lets `type(x) is Denial` narrow both ways (gateway/proxy.py)
@dataclass(frozen=True, slots=True)
class Denial:
    """A refused request: the status and message for the client, the event for the record."""

    status: int
    reason: str
    """`missing`, `malformed`, `unknown`, `mismatch`, `revoked`, `frozen` or `rate_limited`."""
    message: str
    event_type: str
    entry: KeyEntry | None = None
    retry_after: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class Guard:
    def __init__(self, identities: IdentityRegistry, controls: ControlState, limiter: RateLimiter) -> None:
        self.identities = identities
        self.controls = controls
        self.limiter = limiter

    def admit(self, presented: str | None, now: float) -> KeyEntry | Denial:
        """The caller's registry entry if the request may go upstream, else why not.
        `now` is a monotonic clock reading (rate limits)."""
        entry = self.identities.authenticate(presented)
        if isinstance(entry, str):
            payload: dict[str, Any] = {"decision": "deny", "reason": entry}
            if presented:
                payload.update(keys.fingerprint(presented))
            known = (
                self.identities.get(keys.key_id_of(presented) or "")
                if presented and entry in ("revoked", "mismatch", "expired")  # these imply a key was presented
                else None
            )
            if known is not None:
                payload["key_id"] = known.key_id
            return Denial(
                401,
                entry,
                UNAUTHORIZED_MESSAGES[entry],
                "unauthorized_access_attempt",
                entry=known if entry in ("revoked", "expired") else None,
                payload=payload,
            )
        freeze = self.controls.freeze_of(entry.tenant_id, entry.key_id, entry.ancestors)
        if freeze is not None:
            what = "key" if freeze.scope.startswith("key:") else "tenant"
            message = f"this {what} is frozen" + (f": {freeze.reason}" if freeze.reason else "")
            return Denial(
                403,
                "frozen",
                message,
                "protection_decision",
                entry=entry,
                payload={
                    "decision": "deny",
                    "reason": "frozen",
                    "scope": freeze.scope,
                    "freeze_reason": freeze.reason,
                    "key_id": entry.key_id,
                    "chain": entry.chain,
                },
            )
        limits = self.controls.limits_of(entry.tenant_id, entry.key_id)
        if not limits.unlimited:
            retry_after = self.limiter.admit(entry.key_id, limits, now)
            if retry_after:
                return Denial(
                    429,
                    "rate_limited",
                    f"rate limit reached; retry after {retry_after}s",
                    "protection_decision",
                    entry=entry,
                    retry_after=retry_after,
                    payload={
                        "decision": "deny",
                        "reason": "rate_limited",
                        "key_id": entry.key_id,
                        "chain": entry.chain,
                        "retry_after_s": retry_after,
                        "requests_per_minute": limits.requests_per_minute,
                        "tokens_per_minute": limits.tokens_per_minute,
                    },
                )
        return entry

    def withdrawn(self, entry: KeyEntry) -> str | None:
        """Why a key admitted earlier may no longer call (`revoked` or `frozen`, itself or an
        ancestor), or None: running streams are cut on it."""
        if not self.identities.still_admitted(entry):
            return "revoked"
        if self.controls.freeze_of(entry.tenant_id, entry.key_id, entry.ancestors) is not None:
            return "frozen"
        return None

    def charge(self, entry: KeyEntry, tokens: int, now: float) -> None:
        """Count a finished call's LLM tokens against its identity's token limit."""
        if tokens:
            limits = self.controls.limits_of(entry.tenant_id, entry.key_id)
            if limits.tokens_per_minute is not None:
                self.limiter.spend_tokens(entry.key_id, limits, tokens, now)
