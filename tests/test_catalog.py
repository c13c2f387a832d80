"""Model catalogues are data: a packaged TOML file, a user's file over it, every problem of a row at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from videobatch.catalog import CATALOG_DIR_ENV, Catalog, ModelCard, user_catalog_dir
from videobatch.errors import ConfigError

PACKAGED = """
provider = "acme"
updated = "2026-11-27"
default_model = "acme-2"
unit = "credit"
unit_price = 0.01

[models.acme-1]
status = "retired"
retired_on = "2026-09-15"
replacement = "acme-2"

[models.acme-2]
aliases = ["acme-2.0", "Acme2"]
inputs = ["text", "image"]
durations = [5, 10]
aspect_ratios = ["16:9", "9:16"]
fields = ["negative_prompt", "end_image", "audio", "seed"]
defaults = { duration = 5, aspect_ratio = "16:9" }
options.mode = { choices = ["std", "pro"], default = "std" }
options.strength = { type = "float", minimum = 0, maximum = 1 }
requires.end_image = { mode = ["pro"] }
requires.audio = { mode = ["pro"] }
prices = [
  { when = { mode = "pro", audio = true }, per_clip = { 5 = 100, 10 = 200 } },
  { when = { mode = "pro" }, per_second = 10 },
  { per_second = 5 },
]

[models.acme-img]
inputs = ["image"]
duration_range = [3, 15]
"""


def catalog(tmp_path: Path, text: str = PACKAGED, user: str | None = None, monkeypatch=None) -> Catalog:
    packaged = tmp_path / "packaged.toml"
    packaged.write_text(text)
    if user is not None:
        assert monkeypatch is not None
        home = tmp_path / "user"
        home.mkdir(exist_ok=True)
        (home / "acme.toml").write_text(user)
        monkeypatch.setenv(CATALOG_DIR_ENV, str(home))
    return Catalog.load("acme", packaged, user=user is not None)


def test_models_resolve_by_id_alias_any_case_and_the_default(tmp_path):
    cat = catalog(tmp_path)
    assert cat.resolve("ACME-2.0").id == "acme-2"
    assert cat.resolve("acme2").id == "acme-2"
    assert cat.resolve(None).id == "acme-2"
    assert cat.resolve("").id == "acme-2"
    assert cat.resolve("acme-9") is None
    assert [card.id for card in cat.current()] == ["acme-2", "acme-img"]


def test_every_problem_of_a_row_is_reported_at_once(tmp_path):
    card = catalog(tmp_path).resolve("acme-2")
    values = card.complete({"duration": 7, "aspect_ratio": "4:3", "mode": "ultra", "end_image": "e.png",
                            "strength": 3.0, "colour": "red", "resolution": "1080p"})
    problems = {field: (message, allowed) for field, message, allowed in card.check(values)}
    assert set(problems) == {"duration", "aspect_ratio", "mode", "end_image", "strength", "colour", "resolution"}
    assert problems["duration"][1] == "5, 10"
    assert problems["aspect_ratio"][1] == "16:9, 9:16"
    assert "std, pro" in problems["mode"][1]
    assert "mode pro" in problems["end_image"][0]
    assert "maximum" in problems["strength"][0]
    assert "no option 'colour'" in problems["colour"][0]


def test_a_good_row_has_no_problem_and_defaults_are_filled_in(tmp_path):
    card = catalog(tmp_path).resolve("acme-2")
    values = card.complete({"prompt": "a fox", "mode": "pro", "end_image": "e.png", "audio": True})
    assert values["duration"] == 5 and values["aspect_ratio"] == "16:9"
    assert card.check(values) == []
    assert card.check(card.complete({"prompt": "a fox"})) == []


def test_a_retired_model_is_refused_naming_its_replacement(tmp_path):
    card = catalog(tmp_path).resolve("acme-1")
    [(field, message, allowed)] = card.check({"prompt": "x"})
    assert field == "model" and "retired on 2026-09-15" in message and "use acme-2" in message
    assert allowed == "acme-2"


def test_a_text_row_on_an_image_only_model_and_a_range_of_durations(tmp_path):
    card = catalog(tmp_path).resolve("acme-img")
    assert [f for f, _, _ in card.check({"prompt": "x", "duration": 7})] == ["image"]
    assert card.check({"prompt": "x", "image": "a.png", "duration": 15}) == []
    assert [f for f, _, _ in card.check({"image": "a.png", "duration": 16})] == ["duration"]
    assert card.allowed_durations() == "3 to 15 seconds"


def test_prices_follow_the_first_matching_rule_in_the_catalogue_unit(tmp_path):
    cat = catalog(tmp_path)
    card = cat.resolve("acme-2")
    assert card.estimate({"mode": "pro", "audio": True, "duration": 10}) == 200
    assert card.estimate({"mode": "pro", "duration": 10}) == 100
    assert card.estimate({"mode": "std", "duration": 5}) == 25
    assert cat.to_usd(card.estimate({"mode": "std", "duration": 5})) == pytest.approx(0.25)
    assert cat.resolve("acme-img").estimate({"duration": 5}) is None  # no price known


def test_a_users_file_adds_models_and_changes_single_fields_of_packaged_ones(tmp_path, monkeypatch):
    user = """
default_model = "acme-3"
unit_price = 0.008

[models.acme-2]
durations = [5, 10, 15]

[models.acme-3]
durations = [4, 8]
"""
    cat = catalog(tmp_path, user=user, monkeypatch=monkeypatch)
    assert cat.resolve(None).id == "acme-3"
    card = cat.resolve("acme-2")
    assert card.durations == (5, 10, 15) and card.aspect_ratios == ("16:9", "9:16")  # the rest kept
    assert "mode" in card.options
    assert cat.unit_price == 0.008
    assert user_catalog_dir() == tmp_path / "user"


def test_a_model_added_from_python_replaces_the_file_entry(tmp_path):
    cat = catalog(tmp_path)
    cat.add(ModelCard("acme", "acme-2", durations=(6,)))
    assert cat.resolve("acme-2").durations == (6,)
    assert cat.resolve("acme-2.0").durations == (6,)  # aliases of the old entry still lead to it


@pytest.mark.parametrize(("text", "words"), [
    ("provider = \"acme\"\n[models.a]\nstatus = \"gone\"", "status"),
    ("provider = \"acme\"\n[models.a]\ncolour = 1", "unknown keys ['colour']"),
    ("provider = \"acme\"\n[models.a]\noptions.mode = { choices = ['a'], default = 'b' }", "default 'b'"),
    ("provider = \"acme\"\n[models.a]\nprices = [{ when = {} }]", "per_second or per_clip"),
    ("provider = \"other\"", "not 'acme'"),
    ("provider = \"acme\"\ndefault_model = \"zzz\"", "default_model 'zzz'"),
    ("provider = [", "model catalogue"),
])
def test_a_broken_catalogue_file_names_the_file_and_the_problem(tmp_path, text, words):
    with pytest.raises(ConfigError) as caught:
        catalog(tmp_path, text)
    assert "packaged.toml" in str(caught.value) and words in str(caught.value)


# ---------------------------------------------------------------------------- packaged catalogues
@pytest.mark.parametrize("provider", ["kling", "local", "replicate", "fal", "runway", "google"])
def test_packaged_catalogues_are_whole(provider):
    from videobatch.providers import catalog_of

    cat = catalog_of(provider)
    assert cat is not None and cat.updated
    default = cat.resolve(None)
    assert default is not None and not default.retired  # the default model is a current one
    for card in cat.current():
        image = {} if "text" in card.inputs else {"image": "https://example.test/first.png"}
        values = card.complete({"prompt": "x", **image})
        assert card.check(values) == [], (card.id, card.check(values))  # its own defaults fit it
        assert card.durations or card.duration_range
    for card in cat.models.values():
        if card.retired:
            assert card.replacement and not cat.resolve(card.replacement).retired


def test_kling_prices_follow_its_published_units():
    from videobatch.providers import catalog_of

    cat = catalog_of("kling")
    v26 = cat.resolve("kling-v2-6")
    assert v26.estimate(v26.complete({"duration": 10})) == 5.0  # pro by default: 5 units
    assert v26.estimate(v26.complete({"duration": 5, "audio": True})) == 5.0
    v3 = cat.resolve("kling-v3")
    assert v3.estimate(v3.complete({"duration": 8})) == pytest.approx(4.8)  # std 0.6 a second
    assert cat.to_usd(1.0) == 0.14


def test_a_users_catalogue_file_is_what_runs_check_against(tmp_path, monkeypatch):
    """A model Kling adds tomorrow: a user's file makes it usable without a release."""
    from videobatch.providers import catalog_of

    home = tmp_path / "mine"
    home.mkdir()
    (home / "kling.toml").write_text('[models.kling-v4]\ninputs = ["text"]\ndurations = [5]\n'
                                     'options.mode = { choices = ["pro"] }\n')
    monkeypatch.setenv(CATALOG_DIR_ENV, str(home))
    card = catalog_of("kling").resolve("kling-v4")
    assert card is not None and card.check({"prompt": "x", "duration": 5, "mode": "pro"}) == []


def test_models_command_lists_current_models_with_prices(capsys):
    from videobatch.cli.models import models_main

    assert models_main(["--provider", "kling"]) == 0
    out = capsys.readouterr().out
    assert "default model kling-v2-6" in out
    assert "kling-v3" in out and "$0.42 per 5s clip" in out
    assert "kling-v1-6" not in out  # retired: shown with --all
    assert models_main(["--provider", "kling", "--all"]) == 0
    assert "kling-v1-6 (kling-v1.6, v1.6)" in capsys.readouterr().out
    assert models_main(["--provider", "nope"]) == 2
