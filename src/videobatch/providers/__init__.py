"""The provider registry: names users type (``provider="kling"``) mapped to provider factories.

Built-in providers register through the same ``register`` call (or the ``videobatch.providers``
entry-point group) that a third-party provider uses.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ..catalog import Catalog
from ..errors import ConfigError
from ..request import RequestRules
from .base import Limits, PollHint, Provider, TaskState, TaskStatus, Video

__all__ = [
    "Limits",
    "PollHint",
    "Provider",
    "TaskState",
    "TaskStatus",
    "Video",
    "available",
    "catalog_of",
    "get_provider",
    "option_names",
    "register",
    "rules_of",
    "setting_names",
]

Factory = Callable[..., Provider]

_REGISTRY: dict[str, Factory | str] = {
    # built-ins, imported lazily so an unused provider costs nothing at start-up
    "local": "videobatch.providers.local:LocalProvider",
    "kling": "videobatch.providers.kling:KlingProvider",
    "google": "videobatch.providers.google:GoogleProvider",
    "fal": "videobatch.providers.fal:FalProvider",
    "runway": "videobatch.providers.runway:RunwayProvider",
    "replicate": "videobatch.providers.replicate:ReplicateProvider",
}


def register(name: str, factory: Factory | str) -> None:
    """Make ``provider=name`` build providers with ``factory(**options)``.

    ``factory`` is a callable or a ``"module:attribute"`` string (imported on first use).
    """
    _REGISTRY[name] = factory


def _load_entry_points() -> None:
    from importlib.metadata import entry_points  # (40 ms to import: only when a name is unknown)

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


def _provider_class(provider: str) -> type[Provider] | None:
    """The registered class of ``provider`` (not built), or None when its factory is no class."""
    if provider not in _REGISTRY:
        _load_entry_points()
    factory = _REGISTRY.get(provider)
    if factory is None:
        return None
    built = _resolve(factory)
    return built if isinstance(built, type) and issubclass(built, Provider) else None


def option_names(provider: str | Provider) -> tuple[str, ...]:
    """The names of the options rows may give for ``provider`` (its option schema's fields), known
    without building it; () when its factory is not a Provider class or it is unknown."""
    if isinstance(provider, Provider):
        return provider.rules().option_names
    cls = _provider_class(provider)
    schema = cls.option_schema if cls is not None else None
    return tuple(schema.model_fields) if schema is not None else ()


def setting_names(provider: str | Provider) -> frozenset[str]:
    """The keyword settings ``provider``'s factory takes (``base_url``, ``max_parallel``, ...);
    empty when it is a built object or takes ``**options``."""
    if isinstance(provider, Provider):
        return frozenset()
    cls = _provider_class(provider)
    if cls is None:
        return frozenset()
    params = inspect.signature(cls.__init__).parameters.values()
    return frozenset(p.name for p in params
                     if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self")


def catalog_of(provider: str) -> Catalog | None:
    """``provider``'s model catalogue (packaged file and the user's), without building it."""
    cls = _provider_class(provider)
    if cls is None or cls.models_file is None:
        return None
    return Catalog.load(cls.catalog_name(), cls.models_file)


def rules_of(provider: str) -> RequestRules:
    """What rows for ``provider`` are checked against (its options and catalogue), without
    building it: the service's API checks requests for the workers' provider this way."""
    cls = _provider_class(provider)
    if cls is None:
        if provider not in _REGISTRY:
            raise ConfigError(f"unknown provider {provider!r}; available: {', '.join(available())}")
        return RequestRules(provider)
    return RequestRules(provider, cls.option_schema, catalog_of(provider))


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
