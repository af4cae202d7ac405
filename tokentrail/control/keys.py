"""tokentrail keys: `tt_<key_id>_<secret>`, shown once; only the SHA-256 of the whole key is kept.

The key id is part of the key, so the gateway finds the one candidate record by id and
compares hashes once (in constant time) instead of hashing against every known key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "tt_"
KEY_ID_HEX_CHARS = 16


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key). The key is the secret the client presents."""
    key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    """Lowercase hex SHA-256 of the whole key: what the identities topic stores."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id a presented key claims, or None when it is not shaped like one of ours."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id = key[len(KEY_PREFIX) : len(KEY_PREFIX) + KEY_ID_HEX_CHARS]
    if len(key) <= len(KEY_PREFIX) + KEY_ID_HEX_CHARS + 1 or key[len(KEY_PREFIX) + KEY_ID_HEX_CHARS] != "_":
        return None
    return key_id


def matches(key: str, key_hash: str) -> bool:
    """Constant-time comparison of a presented key against a stored hash."""
    return hmac.compare_digest(hash_key(key), key_hash)


def fingerprint(key: str) -> dict[str, str]:
    """What an event may say about a presented key: the id it claims (or its first 3
    characters when it is not one of ours, e.g. a provider key sent by mistake) and its hash,
    never the secret."""
    key_id = key_id_of(key)
    prefix = f"{KEY_PREFIX}{key_id}" if key_id else key[:3]
    return {"key_prefix": prefix, "key_sha256": hash_key(key)}
