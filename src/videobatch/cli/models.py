"""``python -m videobatch models``: each provider's model catalogue, as the run will check rows.

One line per model: its name, status (retired ones with the replacement), what it takes
(text/image input, durations, aspect ratios, resolutions, optional fields and options) and what a
clip of its default length costs. The catalogues are data (``videobatch.catalog``): the packaged
file, overridden by the user's own; ``--files`` says where each is read from.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..catalog import Catalog, ModelCard, user_catalog_dir
from ..providers import _provider_class, available, catalog_of
from ._options import command_parser

__all__ = ["models_main"]


def models_main(argv: Sequence[str]) -> int:
    p = command_parser("models", "List the models each provider offers: what a row for each may "
                       "ask for and what a clip costs. Catalogues are data: a file of your own "
                       f"(in {user_catalog_dir()}, one per provider, e.g. kling.toml) adds or "
                       "changes models; see videobatch.catalog for the format.")
    p.add_argument("--provider", metavar="NAME", help=f"only this provider ({', '.join(available())})")
    p.add_argument("--all", action="store_true", help="retired models too")
    p.add_argument("--files", action="store_true", help="where each catalogue is read from")
    args = p.parse_args(list(argv))
    names = [args.provider] if args.provider else available()
    shown = 0
    for name in names:
        if name not in available():
            print(f"error: unknown provider {name!r}; available: {', '.join(available())}", file=sys.stderr)
            return 2
        catalog = catalog_of(name)
        if catalog is None:
            continue
        shown += 1
        print(_heading(name, catalog, files=args.files))
        for card in catalog.models.values():
            if card.retired and not args.all:
                continue
            print(_line(catalog, card))
        print()
    if not shown:
        print("no provider with a model catalogue", file=sys.stderr)
        return 1
    return 0


def _heading(name: str, catalog: Catalog, *, files: bool) -> str:
    retired = sum(card.retired for card in catalog.models.values())
    head = f"{name}: default model {catalog.default_model or '(none)'}"
    if catalog.updated:
        head += f" · checked {catalog.updated}"
    if retired:
        head += f" · {retired} retired (--all shows them)"
    if files:
        cls = _provider_class(name)
        packaged = cls.models_file if cls is not None else None
        head += f"\n  packaged: {packaged}\n  yours:    {user_catalog_dir() / f'{name}.toml'}"
    return head


def _line(catalog: Catalog, card: ModelCard) -> str:
    name = card.id + (f" ({', '.join(card.aliases[:2])})" if card.aliases else "")
    if card.retired:
        when = f" on {card.retired_on}" if card.retired_on else ""
        return f"  {name:<42} retired{when}; use {card.replacement or 'a current model'}"
    takes = ["+".join(sorted(card.inputs))]
    takes.append(f"{card.allowed_durations()} s" if card.durations else card.allowed_durations())
    if card.aspect_ratios:
        takes.append("/".join(card.aspect_ratios))
    if card.resolutions:
        takes.append("/".join(card.resolutions))
    extras = sorted(card.fields - {"resolution"}) + [
        f"{o.name}={'/'.join(map(str, o.choices))}" if o.choices else o.name for o in card.options.values()]
    if extras:
        takes.append(", ".join(extras))
    price = _price(catalog, card)
    status = "" if card.status == "current" else f" [{card.status}]"
    return f"  {name:<42}{status} {' · '.join(takes)}{price}"


def _price(catalog: Catalog, card: ModelCard) -> str:
    values = card.complete({})
    amount = catalog.to_usd(card.estimate(values))
    if amount is None:
        return " · price unknown"
    unit = "" if catalog.currency == "USD" else f" {catalog.currency}"
    return f" · ${amount:,.2f}{unit} per {values.get('duration', '?')}s clip"
