"""Cross-identity failure patterns.

A failure's signature is (provider, model, status, error type, error code, context hash).
Within a tenant, a pattern is one signature from at least `min_identities` (3) distinct
identities inside the trailing `window` (10 minutes). Across tenants, the signature without
the context hash (request shapes differ from tenant to tenant; the provider's failure does
not) from at least `min_tenants` (3) tenants and `min_identities` identities in all is a
provider or model incident, recorded under the system tenant.

One identity failing a thousand times is one identity: no pattern. Many identities failing
with different errors are different signatures: no pattern.

State per signature: the last failure time of each identity (and tenant) that failed with it,
pruned to the window; signatures with nobody left in their window are dropped. Memory is
bounded by the failures of the last window; per-signature identity sets are capped at
`max_members` (the pattern is long established by then).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PatternConfig:
    window_seconds: float = 600.0
    min_identities: int = 3
    min_tenants: int = 3
    max_members: int = 10_000


@dataclass(frozen=True, slots=True)
class Signature:
    provider: str
    model: str
    status: int
    error_type: str
    error_code: str
    context_hash: str

    def digest(self) -> str:
        text = "\x1f".join(
            (self.provider, self.model, str(self.status), self.error_type, self.error_code, self.context_hash)
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def text(self) -> str:
        error = "/".join(part for part in (self.error_type, self.error_code) if part) or "no error type"
        return f"{self.provider}/{self.model} HTTP {self.status} {error}"


@dataclass(slots=True)
class Members:
    """Who failed with one signature lately: member -> last failure time, plus counters."""

    last_seen: dict[str, float] = field(default_factory=dict)
    first_seen: float = 0.0
    newest: float = float("-inf")
    count: int = 0
    """Failures since `first_seen` (the current run of failures with this signature)."""
    pruned_at: float = float("-inf")

    def add(self, member: str, at: float, config: PatternConfig) -> None:
        if at - self.newest > config.window_seconds:  # a new run: nobody left in the window
            self.last_seen, self.first_seen, self.count = {}, at, 0
        if member in self.last_seen or len(self.last_seen) < config.max_members:
            self.last_seen[member] = max(self.last_seen.get(member, at), at)
        self.count += 1
        if at > self.newest:
            self.newest = at

    def distinct(self, now: float, config: PatternConfig, threshold: int) -> int:
        """Members seen inside the window ending at `now`, to within 1/60 of the window. A
        count under `threshold` needs no pruning (pruning only lowers it); above it, members
        are pruned at most every 1/60 of the window, so a long-lived pattern stays cheap."""
        if len(self.last_seen) >= threshold and now - self.pruned_at >= config.window_seconds / 60:
            horizon = now - config.window_seconds
            self.last_seen = {member: seen for member, seen in self.last_seen.items() if seen >= horizon}
            self.pruned_at = now
        return len(self.last_seen)


class SignatureWindow:
    """Members per signature over the trailing window (one tenant, or all tenants)."""

    def __init__(self, config: PatternConfig) -> None:
        self.config = config
        self.signatures: dict[Signature, Members] = {}
        self._last_sweep = float("-inf")

    def add(self, signature: Signature, member: str, at: float) -> Members:
        members = self.signatures.get(signature)
        if members is None:
            members = self.signatures[signature] = Members()
        members.add(member, at, self.config)
        self._sweep(at)
        return members

    def _sweep(self, now: float) -> None:
        """Drop signatures nobody failed with inside the window (every half window)."""
        if now - self._last_sweep < self.config.window_seconds / 2:
            return
        self._last_sweep = now
        horizon = now - self.config.window_seconds
        self.signatures = {sig: members for sig, members in self.signatures.items() if members.newest >= horizon}
