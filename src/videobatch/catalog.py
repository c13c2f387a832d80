"""Model catalogues as data: which models a provider offers, what each accepts, and what it costs.

Providers retire and add models every few months, so a catalogue is a TOML file, not code: each
provider package ships one (``providers/<name>/models.toml``) and a user extends or overrides it
without a release, with a file of their own (``$VIDEOBATCH_CATALOG_DIR/<provider>.toml``, else
``~/.config/videobatch/catalog/<provider>.toml``) or from Python (``Catalog.add``). Later entries
replace earlier ones model by model; a user's file may change a single field of a packaged model.

One file describes one provider::

    provider = "kling"
    updated = "2026-11-27"            # when its facts were checked
    source = "docs/providers/kling.md"
    default_model = "kling-v2-6"
    currency = "USD"
    unit = "unit"                     # what prices below count in
    unit_price = 0.14                 # currency per unit (1.0 when prices are in currency)

    [models.kling-v2-6]
    aliases = ["kling-v2.6"]
    status = "current"                # current | preview | retired
    replacement = ""                  # for retired models: what to use instead
    inputs = ["text", "image"]        # text-to-video, image-to-video
    durations = [5, 10]               # seconds; or duration_range = [3, 15]
    aspect_ratios = ["16:9", "9:16", "1:1"]
    resolutions = []                  # empty: the model takes no resolution
    fields = ["negative_prompt", "end_image", "audio", "seed"]  # optional shared fields it takes
    defaults = { duration = 5, aspect_ratio = "16:9" }
    options.mode = { choices = ["std", "pro"], default = "pro" }
    requires.end_image = { mode = ["pro"] }   # a field (or option) taken only with these values
    prices = [ { when = { mode = "pro", audio = true }, per_clip = { 5 = 5.0, 10 = 10.0 } },
               { when = { mode = "pro" }, per_second = 0.5 } ]

``check`` says every problem of one row against its model at once; ``estimate`` prices a row
(first price rule whose ``when`` matches; ``per_second`` times the duration, or ``per_clip`` by
duration) in the catalogue's currency.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["CATALOG_DIR_ENV", "Catalog", "ModelCard", "OptionSpec", "PriceRule", "user_catalog_dir"]

CATALOG_DIR_ENV = "VIDEOBATCH_CATALOG_DIR"
SHARED_FIELDS = ("negative_prompt", "image", "end_image", "audio", "seed", "resolution")
Status = Literal["current", "preview", "retired"]
_STATUSES = ("current", "preview", "retired")
_INPUTS = ("text", "image")
_OPTION_TYPES = {"choice", "bool", "int", "float", "text", "json"}


def user_catalog_dir() -> Path:
    """Where a user's own catalogue files are read from (``$VIDEOBATCH_CATALOG_DIR`` wins)."""
    given = os.environ.get(CATALOG_DIR_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "videobatch" / "catalog"


@dataclass(frozen=True)
class OptionSpec:
    """One provider-specific option a model takes (e.g. Kling's ``mode``)."""

    name: str
    type: str = "choice"  # choice | bool | int | float | text | json
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if self.type == "choice" and value not in self.choices:
            return f"{self.name} {value!r} is not one of {', '.join(map(repr, self.choices))}"
        if self.type == "bool" and not isinstance(value, bool):
            return f"{self.name} must be true or false, got {value!r}"
        if self.type in ("int", "float"):
            kind = int if self.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                return f"{self.name} must be a{'n integer' if self.type == 'int' else ' number'}, got {value!r}"
            if self.minimum is not None and value < self.minimum:
                return f"{self.name} {value!r} is below the minimum {self.minimum:g}"
            if self.maximum is not None and value > self.maximum:
                return f"{self.name} {value!r} is above the maximum {self.maximum:g}"
        if self.type == "text" and not isinstance(value, str):
            return f"{self.name} must be text, got {value!r}"
        return None

    def allowed(self) -> str:
        if self.type == "choice":
            return ", ".join(map(str, self.choices))
        if self.type in ("int", "float") and (self.minimum is not None or self.maximum is not None):
            low = "" if self.minimum is None else f"{self.minimum:g}"
            high = "" if self.maximum is None else f"{self.maximum:g}"
            return f"{'a whole number' if self.type == 'int' else 'a number'} from {low or '…'} to {high or '…'}"
        return {"bool": "true or false", "int": "a whole number", "float": "a number",
                "text": "text", "json": "a JSON value"}[self.type]


@dataclass(frozen=True)
class PriceRule:
    """Price of a row whose values match ``when``: ``per_second`` × duration, else ``per_clip``."""

    when: Mapping[str, Any] = field(default_factory=dict)
    per_second: float | None = None
    per_clip: Mapping[int, float] = field(default_factory=dict)  # duration -> price

    def matches(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name) == want for name, want in self.when.items())

    def price(self, duration: int | None) -> float | None:
        if self.per_second is not None and duration is not None:
            return self.per_second * duration
        if duration is not None and duration in self.per_clip:
            return self.per_clip[duration]
        return None


@dataclass(frozen=True)
class ModelCard:
    """What one model accepts and costs; see the module docstring for the file format."""

    provider: str
    id: str
    aliases: tuple[str, ...] = ()
    status: Status = "current"
    replacement: str | None = None
    retired_on: str | None = None
    inputs: frozenset[str] = frozenset(_INPUTS)
    durations: tuple[int, ...] = ()
    duration_range: tuple[int, int] | None = None
    aspect_ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    fields: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, OptionSpec] = field(default_factory=dict)
    requires: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    prices: tuple[PriceRule, ...] = ()
    notes: str = ""

    @property
    def retired(self) -> bool:
        return self.status == "retired"

    def allowed_durations(self) -> str:
        if self.duration_range is not None:
            return f"{self.duration_range[0]} to {self.duration_range[1]} seconds"
        return ", ".join(map(str, self.durations)) or "any"

    def takes_duration(self, seconds: int) -> bool:
        if self.duration_range is not None:
            return self.duration_range[0] <= seconds <= self.duration_range[1]
        return not self.durations or seconds in self.durations

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the model's defaults (and its options' defaults) filled in where unset."""
        out = {name: value for name, value in values.items() if value is not None}
        for name, value in self.defaults.items():
            out.setdefault(name, value)
        for name, spec in self.options.items():
            if spec.default is not None:
                out.setdefault(name, spec.default)
        return out

    def check(self, values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """Every problem of one row's ``values`` (shared fields and options, defaults applied)
        against this model: ``(field, message, allowed)`` each. Nothing is sent for a row with any."""
        found: list[tuple[str, str, str]] = []
        name = f"{self.provider} model {self.id}"
        if self.retired:
            when = f" on {self.retired_on}" if self.retired_on else ""
            instead = f"; use {self.replacement}" if self.replacement else ""
            found.append(("model", f"{name} was retired{when}{instead}", self.replacement or "a current model"))
            return found  # nothing else matters: it cannot run
        kind = "image" if values.get("image") else "text"
        if kind not in self.inputs:
            found.append(("image" if kind == "text" else "prompt",
                          f"{name} does not take {kind}-to-video rows",
                          "an image column" if kind == "text" else "a model that takes text"))
        duration = values.get("duration")
        if duration is not None and not self.takes_duration(duration):
            found.append(("duration", f"duration {duration!r} is not allowed for {name}", self.allowed_durations()))
        for column, allowed_values in (("aspect_ratio", self.aspect_ratios), ("resolution", self.resolutions)):
            value = values.get(column)
            if value is not None and allowed_values and value not in allowed_values:
                found.append((column, f"{column} {value!r} is not allowed for {name}", ", ".join(allowed_values)))
        for column in SHARED_FIELDS:
            if column == "image" or values.get(column) in (None, "", False):
                continue
            if column == "resolution" and self.resolutions:
                continue
            if column not in self.fields:
                found.append((column, f"{name} does not take {column}", "leave it empty for this model"))
        for option, value in values.items():
            if option in SHARED_FIELDS or option in ("prompt", "duration", "aspect_ratio", "model"):
                continue
            spec = self.options.get(option)
            if spec is None:
                found.append((option, f"{name} has no option {option!r}",
                              ", ".join(self.options) or "no options"))
            elif value is not None and (why := spec.problem(value)):
                found.append((option, f"{why} for {name}", spec.allowed()))
        for column, conditions in self.requires.items():
            if values.get(column) in (None, "", False):
                continue
            for other, wanted in conditions.items():
                if values.get(other) not in wanted:
                    spelled = " or ".join(_spell(w) for w in wanted)
                    found.append((column, f"{column} needs {other} {spelled} on {name}",
                                  f"set {other} to {spelled}, or leave {column} empty"))
        return found

    def estimate(self, values: Mapping[str, Any]) -> float | None:
        """Price of one row in the catalogue's unit (first matching rule), None when unknown."""
        for rule in self.prices:
            if rule.matches(values):
                return rule.price(values.get("duration"))
        return None


@dataclass
class Catalog:
    """One provider's models; built from its packaged file, the user's file and ``add`` calls."""

    provider: str
    default_model: str | None = None
    currency: str = "USD"
    unit: str = "USD"
    unit_price: float = 1.0
    updated: str | None = None
    source: str | None = None
    models: dict[str, ModelCard] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, provider: str, packaged: Path | None = None, *, user: bool = True) -> Catalog:
        """The packaged file, then the user's own (when ``user``), merged model by model."""
        catalog = cls(provider)
        paths = [packaged] if packaged is not None else []
        if user:
            paths.append(user_catalog_dir() / f"{provider}.toml")
        for path in paths:
            if path.is_file():
                catalog.merge_file(path)
        return catalog

    def merge_file(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"model catalogue {path}: {exc}; fix or remove the file") from None
        try:
            self.merge(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"model catalogue {path}: {exc}; see videobatch.catalog for the format") from None

    def merge(self, data: Mapping[str, Any]) -> None:
        """Add a parsed catalogue file: its header replaces what it names, its models replace (or,
        for models already known, update field by field) the ones here."""
        if data.get("provider", self.provider) != self.provider:
            raise ValueError(f"the file is for provider {data['provider']!r}, not {self.provider!r}")
        for name in ("default_model", "currency", "unit", "updated", "source"):
            if name in data:
                setattr(self, name, str(data[name]))
        if "unit_price" in data:
            self.unit_price = float(data["unit_price"])
        for model_id, raw in (data.get("models") or {}).items():
            base = self.models.get(model_id)
            self.add(_card(self.provider, str(model_id), raw, base))
        if self.default_model and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not among its models")

    def add(self, card: ModelCard) -> None:
        """Add or replace one model; its id and aliases (case-insensitive) name it from now on."""
        self.models[card.id] = card
        for name in (card.id, *card.aliases):
            self._aliases[name.lower()] = card.id

    def resolve(self, name: str | None) -> ModelCard | None:
        """The model a user means (id or alias, any case; None: the default), or None if unknown."""
        if name is None or not str(name).strip():
            name = self.default_model
            if name is None:
                return None
        model_id = self._aliases.get(str(name).strip().lower())
        return self.models[model_id] if model_id else None

    def current(self) -> list[ModelCard]:
        return [card for card in self.models.values() if not card.retired]

    def to_usd(self, amount: float | None) -> float | None:
        return None if amount is None else amount * self.unit_price


def _spell(value: Any) -> str:
    """A value as a user types it in a table (true/false, not Python's True/False)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _tuple(raw: Any, name: str) -> tuple[Any, ...]:
    if not isinstance(raw, list | tuple):
        raise TypeError(f"{name} must be a list, got {raw!r}")
    return tuple(raw)


def _card(provider: str, model_id: str, raw: Mapping[str, Any], base: ModelCard | None) -> ModelCard:
    if not isinstance(raw, Mapping):
        raise TypeError(f"model {model_id!r} must be a table")
    known = {f.name for f in dataclasses.fields(ModelCard)} - {"provider", "id"}
    unknown = set(raw) - known
    if unknown:
        raise KeyError(f"model {model_id!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"model {model_id!r} {name}"
        if name == "status":
            if value not in _STATUSES:
                raise ValueError(f"{where} must be one of {_STATUSES}, got {value!r}")
            changes[name] = value
        elif name == "notes":
            changes[name] = str(value)
        elif name in ("replacement", "retired_on"):
            changes[name] = str(value) or None
        elif name in ("inputs", "fields"):
            values = frozenset(map(str, _tuple(value, where)))
            allowed = _INPUTS if name == "inputs" else SHARED_FIELDS
            if not values <= set(allowed):
                raise ValueError(f"{where}: {sorted(values - set(allowed))} not among {allowed}")
            changes[name] = values
        elif name == "durations":
            changes[name] = tuple(int(v) for v in _tuple(value, where))
        elif name == "duration_range":
            low, high = (int(v) for v in _tuple(value, where))
            changes[name] = (low, high)
        elif name in ("aliases", "aspect_ratios", "resolutions"):
            changes[name] = tuple(map(str, _tuple(value, where)))
        elif name == "defaults":
            changes[name] = MappingProxyType(dict(value))
        elif name == "options":
            changes[name] = MappingProxyType({str(k): _option(str(k), v, where) for k, v in value.items()})
        elif name == "requires":
            changes[name] = MappingProxyType({str(k): {str(o): _tuple(w, where) for o, w in v.items()}
                                              for k, v in value.items()})
        elif name == "prices":
            changes[name] = tuple(_price(v, where) for v in _tuple(value, where))
    if base is not None:
        return dataclasses.replace(base, **changes)
    return ModelCard(provider=provider, id=model_id, **changes)


def _option(name: str, raw: Mapping[str, Any], where: str) -> OptionSpec:
    raw = dict(raw)
    kind = raw.pop("type", "choice" if "choices" in raw else "text")
    if kind not in _OPTION_TYPES:
        raise ValueError(f"{where}.{name}: type {kind!r} is not one of {sorted(_OPTION_TYPES)}")
    choices = _tuple(raw.pop("choices", []), f"{where}.{name}.choices")
    spec = OptionSpec(name, kind, choices, raw.pop("minimum", None), raw.pop("maximum", None),
                      raw.pop("default", None), str(raw.pop("help", "")))
    if raw:
        raise KeyError(f"{where}.{name}: unknown keys {sorted(raw)}")
    if spec.default is not None and spec.problem(spec.default):
        raise ValueError(f"{where}.{name}: default {spec.default!r} is not allowed by the option itself")
    return spec


def _price(raw: Mapping[str, Any], where: str) -> PriceRule:
    if not isinstance(raw, Mapping) or not {"per_second", "per_clip"} & set(raw):
        raise ValueError(f"{where}: each price needs per_second or per_clip, got {raw!r}")
    per_clip = {int(k): float(v) for k, v in dict(raw.get("per_clip") or {}).items()}
    per_second = raw.get("per_second")
    return PriceRule(MappingProxyType(dict(raw.get("when") or {})),
                     None if per_second is None else float(per_second), MappingProxyType(per_clip))

