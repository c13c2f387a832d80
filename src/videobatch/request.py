"""The provider-neutral request one row asks for, validated with pydantic.

The core knows only what every video API shares: the prompt and negative prompt, a start and an
end image, duration, aspect ratio, resolution, seed, audio, and the model. Everything else is a
provider's *option* (Kling's ``mode``, say): ``options`` holds them, typed by the provider's own
schema and checked against the provider's model catalogue (``videobatch.catalog``).

A request holds what the row *gave* (``None``: not given; the provider fills in its model's
defaults when it sends it), so a row keeps its identity when a catalogue's defaults change. Rules
come from the provider through the validation context (``RequestRules``); without them only the
shared fields are checked. Errors carry an ``allowed`` hint (in the pydantic error context) that
the input validation shows next to the problem; a row's several problems come as one ``many`` error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .catalog import Catalog, ModelCard

__all__ = ["REQUEST_FIELDS", "RequestRules", "VideoRequest", "earlier_spellings", "is_unicode", "not_unicode",
           "request_errors"]

# Fields of the first release that are now options (of Kling, where they came from), and renamed ones.
_NOW_OPTIONS = ("mode", "cfg_scale", "camera_control")
_RENAMED = {"image_tail": "end_image"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def earlier_spellings(data: Mapping[str, Any]) -> dict[str, Any]:
    """A request as the first release wrote it (checkpoints, Python calls) in today's terms:
    ``image_tail`` is ``end_image``; ``mode``, ``cfg_scale`` and ``camera_control`` are options."""
    out = dict(data)
    if not any(k in out for k in (*_NOW_OPTIONS, *_RENAMED)):
        return out
    for old, new in _RENAMED.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    moved = {name: out.pop(name) for name in _NOW_OPTIONS if name in out}
    moved = {name: value for name, value in moved.items() if value is not None}
    if moved:
        out["options"] = {**moved, **(out.get("options") or {})}
    return out


def _rules(info: ValidationInfo) -> RequestRules | None:
    rules = (info.context or {}).get("rules") if isinstance(info.context, Mapping) else None
    return rules if isinstance(rules, RequestRules) else None


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8: no lone surrogate (which Python strings, a
    DataFrame or JSON's ``\\ud800`` escapes can hold)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def not_unicode(column: str, text: str) -> tuple[str, str]:
    """The problem of a cell that is not Unicode text: its message and what is allowed."""
    return (f"{column} holds a lone surrogate, which is not text, got {repr(text)[:60]}",
            "Unicode text (encodable as UTF-8)")


def _unicode(text: str, info: ValidationInfo) -> str:
    if not is_unicode(text):
        message, allowed = not_unicode(str(info.field_name), text)
        raise PydanticCustomError("unicode", message, {"allowed": allowed})
    return text


def _problem(field: str, message: str, allowed: str) -> dict[str, str]:
    return {"field": field, "message": message, "allowed": allowed}


@dataclass(frozen=True)
class RequestRules:
    """What a provider adds to the neutral request: its options' typed schema and its catalogue.

    ``options``: a pydantic model whose fields are the provider's option names (types only; which
    values each model takes is the catalogue's business). ``catalog``: its models, or None when it
    takes any model name.
    """

    provider: str
    options: type[BaseModel] | None = None
    catalog: Catalog | None = None
    # A mixed table: the rules of the other providers its ``provider`` column names (this one is
    # the run's default, for rows that name none).
    others: Mapping[str, RequestRules] = field(default_factory=dict, compare=False)

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(self.options.model_fields) if self.options is not None else ()

    @property
    def all_option_names(self) -> tuple[str, ...]:
        """Option names of this provider and of the others, each once."""
        names = [*self.option_names]
        for other in self.others.values():
            names += other.option_names
        return tuple(dict.fromkeys(names))

    def for_provider(self, name: str | None) -> RequestRules | None:
        """The rules of a row naming provider ``name`` (None: the default), or None when the
        table's providers do not include it."""
        if name is None or name == self.provider:
            return self
        return self.others.get(name)

    def with_others(self, others: Mapping[str, RequestRules]) -> RequestRules:
        """These rules, for a table whose rows also name ``others``."""
        return replace(self, others={**self.others, **{n: r for n, r in others.items() if n != self.provider}})

    def card(self, model: str | None) -> ModelCard | None:
        return None if self.catalog is None else self.catalog.resolve(model)

    def resolved(self, request: VideoRequest) -> dict[str, Any]:
        """``request``'s values as they are sent: its model's defaults (and its options' defaults)
        filled in, the model named by its id."""
        card = self.card(request.model)
        values = request.values()
        if card is not None:
            values = card.complete(values)
            values["model"] = card.id
        return values

    def typed_options(self, request: VideoRequest) -> BaseModel | None:
        """``request.options`` as the provider's typed schema (None when it has none)."""
        if self.options is None:
            return None
        return self.options.model_validate(request.options or {})


class VideoRequest(BaseModel):
    """What to generate for one row. Field names are the optional columns of the prompts table;
    ``options`` holds the provider's own (columns named after them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = ""
    negative_prompt: str | None = None
    image: str | None = None
    end_image: str | None = None
    duration: int | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    seed: int | None = None
    audio: bool | None = None
    model: str | None = None
    # Which provider makes the clip (a mixed table); None: the run's provider.
    provider: str | None = None
    options: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any, info: ValidationInfo) -> Any:
        """Columns named after the provider's options go into ``options``; the first release's
        spellings are read as today's (``earlier_spellings``)."""
        if not isinstance(data, Mapping):
            return data
        rules = _rules(info)
        names = rules.all_option_names if rules is not None else ()
        data = earlier_spellings(data)
        moved = {name: data.pop(name) for name in names if name in data and name not in cls.model_fields}
        moved = {name: value for name, value in moved.items() if value is not None}
        if moved:
            data["options"] = {**moved, **(data.get("options") or {})}
        return data

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_text(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return _unicode(v, info).strip() if isinstance(v, str) else v

    @field_validator("negative_prompt", "image", "end_image", "aspect_ratio", "resolution", "model",
                     "provider", mode="before")
    @classmethod
    def _text_or_none(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str):
            return _unicode(v, info).strip() or None
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    @field_validator("duration", "seed", mode="before")
    @classmethod
    def _whole_number(cls, v: Any, info: ValidationInfo) -> Any:
        # CSV cells arrive as "5", 5.0 or "5s"; all mean 5 (seconds, for a duration).
        if v is None:
            return None
        text = v.strip().removesuffix("s").strip() if isinstance(v, str) and info.field_name == "duration" else v
        try:
            number = float(text)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(v, bool) or not number.is_integer() or number < 0:
            what = "a whole number of seconds" if info.field_name == "duration" else "a whole number"
            raise PydanticCustomError("whole", f"{info.field_name} must be {what}, got {{value}}",
                                      {"value": repr(v), "allowed": what})
        return int(number)

    @field_validator("audio", mode="before")
    @classmethod
    def _yes_or_no(cls, v: Any) -> Any:
        if isinstance(v, str):
            word = v.strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise PydanticCustomError("yes_no", "audio must be on or off, got {value}",
                                      {"value": repr(v), "allowed": "on, off, true, false"})
        return v

    @model_validator(mode="after")
    def _fits_provider(self, info: ValidationInfo) -> VideoRequest:
        """Every problem of the row against its provider's rules at once (``many`` if several)."""
        found: list[dict[str, str]] = []
        if not self.prompt and not self.image:
            found.append(_problem("prompt", "prompt is empty",
                                  "any non-empty text (or an image for image-to-video)"))
        rules = _rules(info)
        if rules is not None:
            own = rules.for_provider(self.provider)
            if own is None:
                found.append(_problem("provider", f"no provider {self.provider!r}",
                                      ", ".join(sorted({rules.provider, *rules.others}))))
            else:
                found += self._against(own)
        if len(found) == 1:
            one = found[0]
            raise PydanticCustomError("not_allowed", one["message"].replace("{", "{{").replace("}", "}}"),
                                      {"allowed": one["allowed"], "field": one["field"]})
        if found:
            raise PydanticCustomError("many", "{count} problems", {"count": len(found), "problems": found})
        return self

    def _against(self, rules: RequestRules) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        options = dict(self.options or {})
        if rules.options is None:
            found += [_problem(name, f"{rules.provider} takes no option {name!r}", "no options")
                      for name in options]
        else:
            try:
                typed = rules.options.model_validate(options)
            except ValidationError as exc:
                for e in exc.errors(include_url=False):
                    name = str(e["loc"][0]) if e["loc"] else "options"
                    if e["type"] == "extra_forbidden":
                        found.append(_problem(name, f"{rules.provider} has no option {name!r}",
                                              ", ".join(rules.option_names) or "no options"))
                    else:
                        found.append(_problem(name, e["msg"], str((e.get("ctx") or {}).get(
                            "allowed", "see the provider's options"))))
            else:
                options = typed.model_dump(exclude_none=True)
                object.__setattr__(self, "options", options or None)  # typed, as the provider reads them
        if rules.catalog is None:
            return found
        card = rules.card(self.model)
        if card is None:
            listed = ", ".join(c.id for c in rules.catalog.current())
            found.append(_problem("model", f"{rules.provider} has no model {self.model!r}", listed))
            return found
        if self.model is not None and self.model != card.id:
            object.__setattr__(self, "model", card.id)  # one spelling per model (aliases resolved)
        seen = {p["field"] for p in found}  # an option the schema refused is reported once
        found += [_problem(f, m, a) for f, m, a in card.check(card.complete(self.values(options)))
                  if f not in seen]
        return found

    def values(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The row's given values, shared fields and options in one flat mapping."""
        flat = {name: value for name, value in self.__dict__.items()
                if value is not None and name not in _NOT_VALUES}
        flat.update(self.options or {} if options is None else options)
        return flat

    def summary(self, width: int = 60) -> str:
        """A one-line description for dry runs and logs."""
        text = self.prompt if len(self.prompt) <= width else self.prompt[: width - 1] + "…"
        given = [self.model or "default model"]
        given += [f"{v}" for v in (self.options or {}).values() if isinstance(v, str)]
        given += [f"{self.duration}s"] if self.duration else []
        given += [self.aspect_ratio] if self.aspect_ratio else []
        extra = " +image" if self.image else ""
        return f"{' '.join(given)}{extra}: {text}"


REQUEST_FIELDS: tuple[str, ...] = tuple(name for name in VideoRequest.model_fields if name != "options")
# Not values sent to the provider: where the row goes, and the options (flattened in separately).
_NOT_VALUES = frozenset({"provider", "options"})


def request_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """``exc.errors()`` with a row's several problems (type ``many``) spelled out one by one, each
    shaped like a pydantic error: ``loc`` (the field), ``msg``, ``ctx['allowed']``."""
    out: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        if error["type"] != "many":
            out.append(dict(error))
            continue
        for one in error["ctx"]["problems"]:
            out.append({"type": "not_allowed", "loc": (), "msg": one["message"], "input": None,
                        "ctx": {"allowed": one["allowed"], "field": one["field"]}})
    return out
