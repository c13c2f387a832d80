"""Fault injection for the Kling-compatible test server: which request gets which fault.

A fault is a *kind* with a *scope* (which requests it may hit) and either a *rate* (probability per
eligible request, from a seeded RNG) or a count of the *next* N eligible requests (deterministic,
consumed first). Spec strings, as on the command line, are comma-separated ``kind[@scope]=value``
where value is a rate (``0.05``) or ``next:N``::

    rate_limit=0.05,server_error@create=next:2,lost=0.03,fail=0.1,code_1102=next:1

Kinds, and when they act:

=================  ===========  ======================================================================
kind               phase        effect
=================  ===========  ======================================================================
rate_limit         before       429 / 1302 with ``Retry-After``
rate_limit_bare    before       429 / 1302 without ``Retry-After``
server_error       before       500 / 5000; nothing was created
policy             before       400 / 1301 content-policy refusal (create only)
code_NNNN          before       the HTTP status and message Kling gives for business code NNNN
garbage            after        200 with a body that is not JSON (a create *was* accepted)
slow               after        the answer comes ``slow_seconds`` late (a create *was* accepted)
lost               after        the connection drops mid-answer (a create *was* accepted)
lost_500           after        500 / 5000 (a create *was* accepted)
fail               task         the accepted task ends ``failed``
=================  ===========  ======================================================================

Scopes: ``create`` (POST), ``query`` (every GET: by id, by external id, list), ``all``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AFTER", "BEFORE", "CODES", "FaultRule", "Faults", "parse_rules"]

BEFORE = frozenset({"rate_limit", "rate_limit_bare", "server_error", "policy"})
AFTER = frozenset({"garbage", "slow", "lost", "lost_500"})
TASK = frozenset({"fail"})
_DEFAULT_SCOPE = {"policy": "create", "lost": "create", "lost_500": "create", "fail": "task"}

# business code -> (HTTP status, Kling's message)
CODES: dict[int, tuple[int, str]] = {
    1000: (401, "Authentication failed"),
    1001: (401, "Authorization is empty"),
    1002: (401, "Authorization is invalid"),
    1003: (401, "Authorization is not yet valid"),
    1004: (401, "Authorization has expired"),
    1100: (429, "Account exception"),
    1101: (429, "Account in arrears (postpaid scenario)"),
    1102: (429, "Resource pack depleted or expired (prepaid scenario)"),
    1103: (403, "Unauthorized access to requested resource"),
    1200: (400, "Invalid request parameters"),
    1201: (400, "Invalid parameters"),
    1202: (404, "The requested method is invalid"),
    1203: (404, "The requested resource does not exist"),
    1300: (400, "Trigger strategy of the platform"),
    1301: (400, "Trigger the content security policy of the platform"),
    1302: (429, "The API request is too fast, please slow down the request frequency"),
    1303: (429, "Concurrency or QPS exceeds the prepaid resource package limit"),
    1304: (429, "Trigger the IP whitelisting policy of the platform"),
    5000: (500, "Server internal error"),
    5001: (503, "Server temporarily unavailable, usually due to maintenance"),
    5002: (504, "Server internal timeout, usually due to a backlog"),
}


def phase_of(kind: str) -> str:
    if kind in BEFORE or kind.startswith("code_"):
        return "before"
    if kind in AFTER:
        return "after"
    if kind in TASK:
        return "task"
    raise ValueError(
        f"unknown fault kind {kind!r}; known: {sorted(BEFORE | AFTER | TASK)} or code_NNNN"
    )


@dataclass
class FaultRule:
    kind: str
    scope: str = "all"
    rate: float = 0.0
    next: int = 0

    def __post_init__(self) -> None:
        phase_of(self.kind)
        if self.kind.startswith("code_") and int(self.kind[5:]) not in CODES:
            raise ValueError(f"fault {self.kind}: unknown Kling business code")
        if self.scope not in ("create", "query", "all", "task"):
            raise ValueError(f"fault {self.kind}: unknown scope {self.scope!r}")
        if not 0.0 <= self.rate <= 1.0 or self.next < 0:
            raise ValueError(f"fault {self.kind}: rate must be in [0, 1] and next ≥ 0")

    def applies(self, scope: str) -> bool:
        return self.scope in ("all", scope)


def _rule(key: str, value: Any) -> FaultRule:
    kind, _, scope = key.partition("@")
    kind = kind.strip()
    scope = scope.strip() or _DEFAULT_SCOPE.get(kind, "all")
    if isinstance(value, dict):
        return FaultRule(kind, str(value.get("scope", scope)), float(value.get("rate", 0.0)),
                         int(value.get("next", 0)))
    if isinstance(value, bool):
        raise ValueError(f"fault {key}: give a rate (0.05), next:N or an int N")
    if isinstance(value, int):
        return FaultRule(kind, scope, next=value)
    if isinstance(value, str) and value.strip().startswith("next:"):
        return FaultRule(kind, scope, next=int(value.strip()[5:]))
    return FaultRule(kind, scope, rate=float(value))


def parse_rules(spec: str | dict[str, Any] | None) -> list[FaultRule]:
    """Rules from a spec string (``kind[@scope]=value,...``) or a mapping ``{kind[@scope]: value}``.

    A value is a rate (float), ``"next:N"`` or an int N (the next N eligible requests).
    """
    if not spec:
        return []
    if isinstance(spec, str):
        items: list[tuple[str, Any]] = []
        for part in spec.split(","):
            if part.strip():
                key, sep, value = part.partition("=")
                if not sep:
                    raise ValueError(f"fault {part!r}: expected kind=value")
                items.append((key, value))
        return [_rule(k, v) for k, v in items]
    return [_rule(k, v) for k, v in spec.items()]


class Faults:
    """The active rules; picks at most one fault per request and phase."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int = 0) -> None:
        self.rules: list[FaultRule] = list(rules or [])
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {}

    def set(self, rules: list[FaultRule], *, replace: bool = False) -> None:
        """Add rules (a rule for an existing kind and scope replaces it); ``replace`` clears first."""
        if replace:
            self.rules = []
        for rule in rules:
            self.rules = [r for r in self.rules if (r.kind, r.scope) != (rule.kind, rule.scope)]
            if rule.rate > 0 or rule.next > 0:
                self.rules.append(rule)

    def pick(self, phase: str, scope: str) -> str | None:
        """The fault this request gets in ``phase`` (before / after / task), or None."""
        eligible = [r for r in self.rules if phase_of(r.kind) == phase and r.applies(scope)]
        chosen = next((r for r in eligible if r.next > 0), None)
        if chosen is not None:
            chosen.next -= 1
        else:
            chosen = next((r for r in eligible if r.rate > 0 and self._rng.random() < r.rate),
                          None)
        if chosen is None:
            return None
        self.injected[chosen.kind] = self.injected.get(chosen.kind, 0) + 1
        return chosen.kind

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rules]
