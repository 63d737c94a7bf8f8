"""API keys: made once, shown once, kept only as hashes.

A key reads ``cv_<32 random url-safe characters>``; the service keeps the SHA-256 of it (a key has
192 random bits, so a fast hash is as safe as a slow one) with a name and a scope:

* ``read``: predictions, stored customers, models;
* ``admin``: also switching the active model.

Keys come from ``CUSTVAL_API_KEYS`` (entries ``name:scope:sha256hex`` separated by commas, as
``custval api-key new`` prints them) and from the store's ``api_keys`` table (``custval api-key
new --store``). A request carries its key as ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from custval.errors import CustvalError

__all__ = ["ApiKey", "KeyRing", "new_key", "parse_env"]

SCOPES = ("read", "events", "admin")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    sha256: str

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope

    @property
    def entry(self) -> str:
        """The key's line for ``CUSTVAL_API_KEYS``."""
        return f"{self.name}:{self.scope}:{self.sha256}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, scope: str) -> tuple[str, ApiKey]:
    """A new key (to show once) and its stored form."""
    if scope not in SCOPES:
        raise CustvalError(f"unknown scope '{scope}'", hint="Use read, events or admin")
    if not name or ":" in name or "," in name:
        raise CustvalError(f"a key name must be non-empty without ':' or ',', not '{name}'")
    key = "cv_" + secrets.token_urlsafe(24)
    return key, ApiKey(name, scope, digest(key))


def parse_env(text: str | None = None) -> list[ApiKey]:
    """The keys of ``CUSTVAL_API_KEYS`` (or ``text``); a malformed entry is a clear error."""
    text = os.environ.get("CUSTVAL_API_KEYS", "") if text is None else text
    keys = []
    for n, entry in enumerate(e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if (
            len(parts) != 3
            or parts[1] not in SCOPES
            or len(parts[2]) != 64
            or any(ch not in "0123456789abcdef" for ch in parts[2])
        ):
            raise CustvalError(
                f"entry {n + 1} of CUSTVAL_API_KEYS is not name:scope:sha256 (scope read, "
                "events or admin, 64 lowercase hex digits)",
                hint="Make keys with 'custval api-key new --name NAME --scope read'",
            )
        keys.append(ApiKey(parts[0], parts[1], parts[2]))
    return keys


class KeyRing:
    """The keys a service accepts, looked up by the hash of the presented key."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def find(self, presented: str) -> ApiKey | None:
        found = self._by_hash.get(digest(presented))
        # the dictionary lookup has matched the hash; compare in constant time all the same
        if found is not None and hmac.compare_digest(found.sha256, digest(presented)):
            return found
        return None

    def by_digest(self, sha256: str) -> ApiKey | None:
        """The key whose hash is ``sha256`` (a dashboard session names its key so)."""
        return self._by_hash.get(sha256)
