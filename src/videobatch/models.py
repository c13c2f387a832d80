"""The catalogue of video models: names, aliases users type, what each accepts, and what it costs.

Kept in one place so providers, validation and cost estimates agree. Newer model names appear over
time: ``register_model`` adds or replaces an entry (a user's own, or a provider plugin's).
Prices are estimates in provider units (Kling: about USD 0.14 a unit); override with
``register_model(replace(spec, units=...))`` when your contract differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MODEL",
    "UNIT_PRICE_USD",
    "ModelSpec",
    "known_models",
    "register_model",
    "resolve_model",
]

UNIT_PRICE_USD = 0.14
DEFAULT_MODEL = "kling-v1-6"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    aliases: tuple[str, ...] = ()
    durations: tuple[int, ...] = (5, 10)
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16", "1:1")
    modes: tuple[str, ...] = ("std", "pro")
    cfg_scale: bool = True  # whether the model accepts cfg_scale
    camera_control: bool = False
    # units per 5 seconds of video, by mode
    units: dict[str, float] = field(default_factory=lambda: {"std": 1.0, "pro": 3.5})

    def units_for(self, mode: str, duration: int) -> float:
        return self.units.get(mode, max(self.units.values())) * (duration / 5)


_CATALOG: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec) -> None:
    """Add (or replace) a model; its name and aliases resolve to it from now on."""
    _CATALOG[spec.name] = spec
    for name in (spec.name, *spec.aliases):
        _ALIASES[name.lower()] = spec.name


def resolve_model(name: str) -> ModelSpec | None:
    """The model a user means by ``name`` (exact name or alias, case-insensitive), or None."""
    canonical = _ALIASES.get(name.strip().lower())
    return _CATALOG[canonical] if canonical else None


def known_models() -> list[str]:
    return sorted(_CATALOG)


for _spec in (
    ModelSpec("kling-v1", ("kling-v1.0", "v1"), camera_control=True),
    ModelSpec("kling-v1-5", ("kling-v1.5", "v1.5"), units={"std": 2.0, "pro": 3.5}),
    ModelSpec("kling-v1-6", ("kling-v1.6", "v1.6"), units={"std": 2.0, "pro": 3.5}),
    ModelSpec("kling-v2-master", ("kling-v2", "kling-v2.0", "v2-master"), cfg_scale=False,
              units={"std": 10.0, "pro": 10.0}),
    ModelSpec("kling-v2-1", ("kling-v2.1", "v2.1"), cfg_scale=False,
              units={"std": 2.0, "pro": 3.5}),
    ModelSpec("kling-v2-1-master", ("kling-v2.1-master", "v2.1-master"), cfg_scale=False,
              units={"std": 10.0, "pro": 10.0}),
    ModelSpec("kling-v2-5-turbo", ("kling-v2.5-turbo", "v2.5-turbo"), cfg_scale=False,
              units={"std": 1.5, "pro": 2.5}),
):
    register_model(_spec)
