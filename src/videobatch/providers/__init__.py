"""The provider registry: names users type (``provider="kling"``) mapped to provider factories.

Built-in providers register through the same ``register`` call (or the ``videobatch.providers``
entry-point group) that a third-party provider uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from .base import Limits, PollHint, Provider, TaskState, TaskStatus, Video

__all__ = [
    "Limits",
    "PollHint",
    "Provider",
    "TaskState",
    "TaskStatus",
    "Video",
    "available",
    "get_provider",
    "register",
]

Factory = Callable[..., Provider]

_REGISTRY: dict[str, Factory | str] = {
    # built-ins, imported lazily so an unused provider costs nothing at start-up
    "local": "videobatch.providers.local:LocalProvider",
    "kling": "videobatch.providers.kling:KlingProvider",
}


def register(name: str, factory: Factory | str) -> None:
    """Make ``provider=name`` build providers with ``factory(**options)``.

    ``factory`` is a callable or a ``"module:attribute"`` string (imported on first use).
    """
    _REGISTRY[name] = factory


def _load_entry_points() -> None:
    for ep in entry_points(group="videobatch.providers"):
        _REGISTRY.setdefault(ep.name, ep.value)


def available() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def _resolve(factory: Factory | str) -> Factory:
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    obj = importlib.import_module(module)
    resolved: Factory = getattr(obj, attr)
    return resolved


def get_provider(provider: str | Provider, **options: Any) -> Provider:
    """A provider object from a name (plus options) or an already-built provider."""
    if isinstance(provider, Provider):
        if options:
            raise ConfigError(
                f"provider options {sorted(options)} were given with a ready provider object; "
                "pass them to its constructor instead"
            )
        return provider
    if provider not in _REGISTRY:
        _load_entry_points()
    if provider not in _REGISTRY:
        raise ConfigError(
            f"unknown provider {provider!r}; available: {', '.join(available())}. "
            "Install the plugin that provides it, or register it with videobatch.providers.register()."
        )
    factory = _resolve(_REGISTRY[provider])
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"provider {provider!r}: bad option: {exc}") from None
