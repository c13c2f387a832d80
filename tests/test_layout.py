"""The package's shape is a rule, not a habit: the public surface, import direction, module size.

Layers, from the faces users touch down to the shared vocabulary (``../shared/design.md``):

    faces       videobatch (the public __init__), _api, cli, service, testing
    ui          progress bar, dashboard model, widgets
    delivery    downloads, thumbnails, contact sheet, webhooks
    engine      _runner, _store, _jobs, _inputs, _pacing, _polling, _retry, _events, ...
    interface   providers (registry), providers.base, request, errors, models, _text
    concrete    providers.kling, providers.local, ...

A module may import its own layer and the layers below it; concrete providers may use the
interface, the vocabulary and the engine's pacing, paced-HTTP and retry helpers, and nothing imports
a concrete provider by name except the faces (and the test servers).

One exception points up: the provider base class (``providers.base``) may import those same helpers,
because it hands every provider its paced HTTP client (``Provider.http_client``, so no provider can
forget the rate limit). The helpers import only the engine's leaf modules and the vocabulary, never
``providers``, so this makes no circle (``test_no_import_circles`` checks).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import videobatch

SRC = Path(videobatch.__file__).parent
FACES = ("videobatch", "videobatch.__main__", "videobatch._api", "videobatch._run", "videobatch.cli",
         "videobatch.service", "videobatch.testing")
UI = ("videobatch.ui",)
DELIVERY = ("videobatch.delivery",)
INTERFACE = ("videobatch.providers", "videobatch.providers.base", "videobatch.request", "videobatch.errors",
             "videobatch.catalog", "videobatch.providers.setup", "videobatch.media", "videobatch._text")
CONCRETE = ("videobatch.providers.kling", "videobatch.providers.local", "videobatch.providers.google",
            "videobatch.providers.fal", "videobatch.providers.runway", "videobatch.providers.replicate")
PROVIDER_HELPERS = ("videobatch._pacing", "videobatch._http", "videobatch._retry")
BASE = "videobatch.providers.base"
MAX_LINES = 400
# Modules still over MAX_LINES, each to be split by concept (issue 10); the list may only shrink.
TOO_LONG_FOR_NOW: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, type-checking-only imports included (absolute names)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from . import x" may be a module
    return {m for m in found if m == "videobatch" or m.startswith("videobatch.")}


def _within(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def _layer(module: str) -> str:
    if module in ("videobatch", "videobatch.__main__") or _within(module, FACES[2:]):
        return "face"
    for label, roots in (("ui", UI), ("delivery", DELIVERY), ("concrete", CONCRETE)):
        if _within(module, roots):
            return label
    if module in INTERFACE:
        return "interface"
    return "engine"


ALLOWED = {
    "face": {"face", "ui", "delivery", "engine", "interface", "concrete"},
    "ui": {"ui", "engine", "interface"},
    "delivery": {"delivery", "engine", "interface"},
    "engine": {"engine", "interface"},
    "interface": {"interface"},
    "concrete": {"concrete", "interface"},
}


def _provider_of(module: str) -> str:
    return next(c for c in CONCRETE if _within(module, (c,)))


def _existing(module: str) -> bool:
    path = SRC.parent / Path(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_imports_point_down_the_layers():
    broken = []
    for path in sorted(SRC.rglob("*.py")):
        here = _module_name(path)
        mine = _layer(here)
        for target in sorted(_imports(path)):
            if not _existing(target) or target == here:
                continue
            theirs = _layer(target)
            if theirs in ALLOWED[mine]:
                continue
            if (mine == "concrete" or here == BASE) and _within(target, PROVIDER_HELPERS):
                continue
            if mine == "concrete" and theirs == "concrete" and _provider_of(here) != _provider_of(target):
                broken.append(f"{here} imports another provider's module {target}")
                continue
            broken.append(f"{here} ({mine}) imports {target} ({theirs})")
    assert not broken, "\n".join(broken)


def test_public_surface_is_what_all_says():
    public = {n for n in dir(videobatch) if not n.startswith("_")}
    listed = set(videobatch.__all__)
    assert listed <= public | {n for n in listed if getattr(videobatch, n, None) is not None}
    for name in listed:
        assert getattr(videobatch, name) is not None, name
    # Nothing public that __all__ does not list, apart from the subpackages Python adds on import.
    subpackages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists() or p.suffix == ".py"}
    extra = public - listed - {n.removesuffix(".py") for n in subpackages} - {"annotations"}
    assert not extra, f"public names missing from __all__: {sorted(extra)}"
    out = subprocess.run([sys.executable, "-c", "import videobatch; print(videobatch.__all__)"],
                         capture_output=True, text=True, check=True).stdout
    assert "'run'" in out and "'Batch'" in out
    assert (SRC / "py.typed").exists()
    assert videobatch.__version__ != "0.0.0+unknown"


def test_modules_stay_readable_in_one_sitting():
    sizes = {str(p.relative_to(SRC.parent)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    too_long = {name for name, n in sizes.items() if n > MAX_LINES}
    assert too_long <= TOO_LONG_FOR_NOW, f"over {MAX_LINES} lines: {sorted(too_long - TOO_LONG_FOR_NOW)}"
    split_already = TOO_LONG_FOR_NOW - too_long
    assert not split_already, f"now short enough, drop from TOO_LONG_FOR_NOW: {sorted(split_already)}"


def test_no_import_circles():
    graph = {_module_name(p): {t for t in _imports(p) if _existing(t)} for p in SRC.rglob("*.py")}
    # "from . import x" names both the package and x; a package importing its own submodules
    # (re-exports in __init__) is not a circle back from them.
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start and len(path) > 1 and not any(_within(m, (start,)) for m in path[1:]) \
                        and not any(_within(start, (m,)) for m in path[1:]):
                    circles.append(" -> ".join([*path, nxt]))
                elif nxt not in seen and nxt in graph:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "\n".join(sorted(set(circles))[:20])
