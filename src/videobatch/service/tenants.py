"""Who the gateway's clients are: tenants, their bearer tokens and their limits, from the settings.

Sources (all optional, combined; at least one token is needed or every request is refused):

    VIDEOBATCH_API_TOKENS       comma-separated; each entry its own tenant. ``name:token`` names
                                the tenant; a bare ``token`` is a tenant named by a keyed hash of it
                                (a token with a ':' in it must be given as ``name:token``)
    VIDEOBATCH_API_TOKENS_FILE  a TOML (or, ending in ``.json``, JSON) file naming tenants::

                                    [tenants.acme]
                                    tokens = ["tok-a1", "tok-a2"]   # any number, one tenant
                                    max_rows = 500                  # rows per batch (optional)
                                    requests_per_minute = 120       # all /api/ calls (optional)

    VIDEOBATCH_ADMIN_TOKEN      a token that reads every tenant's requests and batches
    VIDEOBATCH_TOKEN_SECRET     the key of the hash of bare tokens (HMAC-SHA256)

What is stored in Redis per tenant (its requests, batches, Idempotency-Keys) carries the tenant's
id: ``n:<name>`` for a named tenant, ``h:<HMAC(secret, token)>`` for a bare token; never a token.
Without ``VIDEOBATCH_TOKEN_SECRET`` a random secret is made per process (and a warning logged):
after a restart, or in a second API process, a bare token's earlier requests are no longer its own
(the admin still sees them). Named tenants do not depend on the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["ADMIN", "Tenant", "Tenants"]

log = logging.getLogger("videobatch.service")

TOKENS_ENV = "VIDEOBATCH_API_TOKENS"
TOKENS_FILE_ENV = "VIDEOBATCH_API_TOKENS_FILE"
ADMIN_ENV = "VIDEOBATCH_ADMIN_TOKEN"
SECRET_ENV = "VIDEOBATCH_TOKEN_SECRET"  # noqa: S105 (a setting's name)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LIMITS = ("max_rows", "requests_per_minute")


@dataclass(frozen=True)
class Tenant:
    """One client of the service. ``id`` is what Redis stores; ``admin`` reads every tenant's."""

    id: str
    name: str
    admin: bool = False
    max_rows: int | None = None  # rows per batch, under the service-wide limit
    requests_per_minute: int | None = None

    def sees(self, owner: str | None) -> bool:
        """Whether a record owned by ``owner`` (None: stored before tenants) is visible."""
        return self.admin or (owner is not None
                              and hmac.compare_digest(owner.encode(), self.id.encode()))


ADMIN = Tenant(id="n:admin", name="admin", admin=True)


class Tenants:
    """The configured tenants, looked up by token. Only keyed hashes of tokens are kept."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._by_hash: dict[str, Tenant] = {}

    def _hash(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def add(self, token: str, tenant: Tenant) -> None:
        token = token.strip()
        if not token:
            raise ConfigError(f"tenant {tenant.name!r}: an empty token")
        digest = self._hash(token)
        known = self._by_hash.get(digest)
        if known is not None and known != tenant:
            raise ConfigError(f"one token is given to two tenants ({known.name!r} and "
                              f"{tenant.name!r}): give each token to one tenant")
        self._by_hash[digest] = tenant

    def add_bare(self, token: str) -> None:
        """A token that is a tenant of its own, named by its keyed hash."""
        digest = self._hash(token.strip())[:32]
        self.add(token, Tenant(id=f"h:{digest}", name=f"token-{digest[:8]}"))

    def of(self, token: str) -> Tenant | None:
        """The tenant ``token`` stands for, or None (an empty token never stands for one)."""
        return self._by_hash.get(self._hash(token)) if token else None

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def __len__(self) -> int:
        return len(self._by_hash)

    @classmethod
    def build(cls, tokens: Iterable[str] = (), *, file: str | Path | None = None,
              admin_token: str | None = None, secret: str | bytes | None = None) -> Tenants:
        """Tenants from ``tokens`` (``name:token`` or bare), a tokens ``file`` and an admin token."""
        key = secret.encode() if isinstance(secret, str) else secret
        tenants = cls(key or None)
        bare = False
        for entry in (t.strip() for t in tokens):
            if not entry:
                continue
            name, sep, token = entry.partition(":")
            if sep and _NAME.fullmatch(name) and token.strip():
                tenants.add(token, _named(name))
            else:
                tenants.add_bare(entry)
                bare = True
        if file:
            for token, tenant in _read_file(Path(file)):
                tenants.add(token, tenant)
        if admin_token and admin_token.strip():
            tenants.add(admin_token, ADMIN)
        if bare and not key:
            log.warning("%s is not set: bare tokens are hashed with a secret made for this process, "
                        "so after a restart (or in another API process) their earlier requests and "
                        "Idempotency-Keys are no longer theirs; set it, or name the tenants "
                        "(name:token)", SECRET_ENV)
        return tenants

    @classmethod
    def from_env(cls, tokens: Sequence[str] | None = None) -> Tenants:
        """Tenants from the environment (``tokens``, if given, replace ``VIDEOBATCH_API_TOKENS``)."""
        given = tokens if tokens is not None else os.environ.get(TOKENS_ENV, "").split(",")
        return cls.build(given, file=os.environ.get(TOKENS_FILE_ENV) or None,
                         admin_token=os.environ.get(ADMIN_ENV) or None,
                         secret=os.environ.get(SECRET_ENV) or None)


def _named(name: str, **limits: Any) -> Tenant:
    if name == ADMIN.name:
        raise ConfigError(f"the tenant name {name!r} is reserved: use {ADMIN_ENV} for the admin")
    return Tenant(id=f"n:{name}", name=name, **limits)


def _read_file(path: Path) -> list[tuple[str, Tenant]]:
    """(token, tenant) pairs of a tokens file; every problem a ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"{TOKENS_FILE_ENV}={path}: cannot read it ({exc})") from None
    table = data.get("tenants") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a [tenants.<name>] table per tenant (see the README)")
    pairs: list[tuple[str, Tenant]] = []
    for name, entry in table.items():
        where = f"{path}: tenant {name!r}"
        if not _NAME.fullmatch(str(name)):
            raise ConfigError(f"{where}: a name is letters, digits, '_', '.', '-' (at most 64)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table with tokens = [...]")
        unknown = set(entry) - {"tokens", *_LIMITS}
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: tokens, "
                              f"{', '.join(_LIMITS)}")
        tokens = entry.get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(
                isinstance(t, str) and t.strip() for t in tokens):
            raise ConfigError(f"{where}: tokens must be a list of non-empty strings")
        limits: dict[str, int] = {}
        for setting in _LIMITS:
            value = entry.get(setting)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: {setting} must be a whole number of at least 1")
            limits[setting] = value
        tenant = _named(str(name), **limits)
        pairs.extend((token, tenant) for token in tokens)
    return pairs
