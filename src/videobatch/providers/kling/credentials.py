"""Kling credentials: read from options or the environment, checked, held secret, turned into JWTs.

Two ways, as Kling's console offers them (docs/providers/kling.md, "Auth and hosts"):

* a console **API key** (``KLING_API_KEY``), sent as is: ``Authorization: Bearer <API key>``;
* an **access key + secret key** pair (``KLING_ACCESS_KEY`` / ``KLING_SECRET_KEY``) signing a
  short-lived JWT (HS256, ``{"iss": access, "exp": now + 1800, "nbf": now - 5}``) sent as
  ``Authorization: Bearer <token>``.

The API key wins when both are set. Keys and tokens live in ``Secret`` wrappers whose repr is
``'***'`` and which refuse to be pickled; no message shows a value.
"""

from __future__ import annotations

import os
import re
import warnings

import jwt

from ...errors import ConfigError
from ..setup import Secret
from .wire import ACCESS_ENV, API_KEY_ENV, SECRET_ENV

__all__ = ["TOKEN_RENEW_BEFORE", "TOKEN_TTL", "Credentials", "Secret", "api_key", "credential", "key_pair",
           "sign"]

TOKEN_TTL = 1800  # seconds a JWT is valid
TOKEN_RENEW_BEFORE = 300  # renew a JWT this long before it expires
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no whitespace
# PyJWT ≥ 2.10 warns about HMAC keys under 32 bytes; older versions have no such class.
_SHORT_KEY_WARNING: type[Warning] = getattr(
    getattr(jwt, "warnings", None), "InsecureKeyLengthWarning", RuntimeWarning
)



def credential(value: str | None, env: str) -> Secret | None:
    """``value``, else the environment variable ``env``; None when neither is set."""
    if value is None:
        value = os.environ.get(env)
    value = (value or "").strip()
    return Secret(value, "Kling credentials") if value else None


def _key_problem(value: str) -> str | None:
    if not _KEY_CHARS.match(value):
        return "it contains spaces or characters a key never has"
    if value[0] in "\"'<" or value[-1] in "\"'>":
        return "it is wrapped in quotes or angle brackets"
    if len(value) < 8:
        return "it is too short"
    return None


_NEITHER = (f"Kling credentials missing: set {API_KEY_ENV} (a console API key), or "
            f"{ACCESS_ENV} and {SECRET_ENV} (an access key and its secret key); or pass api_key=... "
            "/ access_key=... and secret_key=... Keys are in the Kling developer console.")


def api_key(held: Secret | None) -> str:
    """The console API key, checked, or a ConfigError naming the variable (never the value)."""
    if held is None:
        raise ConfigError(_NEITHER)
    problem = _key_problem(held.reveal())
    if problem:
        raise ConfigError(f"Kling credentials malformed: {API_KEY_ENV} (api_key) looks wrong: "
                          f"{problem}. Copy the key again from the Kling developer console.")
    return held.reveal()


def key_pair(access: Secret | None, secret: Secret | None) -> tuple[str, str]:
    """Both keys, or a ConfigError naming the variable to set (never showing a value)."""
    if access is None and secret is None:
        raise ConfigError(_NEITHER)
    values: list[str] = []
    for held, env, option in ((access, ACCESS_ENV, "access_key"), (secret, SECRET_ENV, "secret_key")):
        if held is None:
            raise ConfigError(
                f"Kling credentials missing: set the environment variable {env} "
                f"(or pass {option}=...), or use a console API key ({API_KEY_ENV}) instead. "
                "Keys are in the Kling developer console."
            )
        problem = _key_problem(held.reveal())
        if problem:
            raise ConfigError(
                f"Kling credentials malformed: {env} ({option}) looks wrong: {problem}. "
                "Copy the key again from the Kling developer console."
            )
        values.append(held.reveal())
    return values[0], values[1]


def sign(access: str, secret: str, now: float) -> tuple[Secret, int]:
    """A fresh JWT for ``now`` (epoch seconds) and the second it expires."""
    exp = int(now) + TOKEN_TTL
    claims = {"iss": access, "exp": exp, "nbf": int(now) - 5}
    with warnings.catch_warnings():
        # Kling issues the keys; a warning about their length helps no one.
        warnings.simplefilter("ignore", _SHORT_KEY_WARNING)
        token = jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
    return Secret(token, "Kling credentials"), exp


class Credentials:
    """What one provider object authenticates with: a console API key (it wins when both are
    set), or an access/secret key pair whose JWT is reused until shortly before it expires.
    Read from the options, else the environment; checked only when used (a dry run needs none)."""

    def __init__(self, api_key: str | None, access_key: str | None, secret_key: str | None) -> None:
        self._api_key = credential(api_key, API_KEY_ENV)
        self._access = credential(access_key, ACCESS_ENV)
        self._secret = credential(secret_key, SECRET_ENV)
        self._token: Secret | None = None
        self._token_exp = 0.0

    def check(self) -> None:
        """ConfigError naming what to set when the keys are missing or malformed."""
        self._held()

    def _held(self) -> tuple[str, str] | str:
        if self._api_key is not None:
            return api_key(self._api_key)
        return key_pair(self._access, self._secret)

    def signs_tokens(self) -> bool:
        """True when requests carry a JWT from a key pair, False for a console API key."""
        return not isinstance(self._held(), str)

    def bearer(self, now: float, *, renew: bool = False) -> str:
        """The Authorization bearer: the API key as is, or a JWT (a fresh one when ``renew``)."""
        held = self._held()
        if isinstance(held, str):
            return held
        access, secret = held
        if renew or self._token is None or now >= self._token_exp - TOKEN_RENEW_BEFORE:
            self._token, self._token_exp = sign(access, secret, now)
        return self._token.reveal()

    def __repr__(self) -> str:
        return "<Kling credentials ***>"
