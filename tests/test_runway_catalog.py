"""Runway's option schema and model catalogue: bad rows are refused before any request is sent."""

from __future__ import annotations

import pytest

import videobatch
from videobatch.errors import InputError
from videobatch.providers import catalog_of, rules_of
from videobatch.providers.runway import RunwayProvider
from videobatch.testing.runway_server import API_SECRET, running_server


def problems(rows: list[dict[str, object]]) -> list[str]:
    with pytest.raises(InputError) as caught:
        videobatch.load_prompts(rows, rules=rules_of("runway"))
    return [str(p) for p in caught.value.problems]


def test_the_catalogue_reads_and_prices_in_credits():
    catalog = catalog_of("runway")
    assert catalog is not None and catalog.unit == "credit" and catalog.unit_price == 0.01
    assert catalog.default_model == "gen4.5"
    assert {c.id for c in catalog.current()} >= {"gen4.5", "gen4_turbo", "veo3.1", "veo3.1_fast", "seedance2"}
    retired = {c.id: c for c in catalog.models.values() if c.retired}
    assert set(retired) == {"gen3a_turbo", "gen4_aleph", "veo3", "upscale_v1"}
    assert retired["gen3a_turbo"].retired_on == "2026-07-30" and retired["gen3a_turbo"].replacement == "gen4_turbo"
    provider = RunwayProvider(api_secret=API_SECRET)
    assert provider.estimate_cost(videobatch.VideoRequest(prompt="p")) == pytest.approx(0.60)  # 5 s x 12
    veo = videobatch.VideoRequest(prompt="p", model="veo3.1", audio=True)
    assert provider.estimate_cost(veo) == pytest.approx(3.20)  # 8 s x 40 credits


def test_every_model_has_sizes_for_its_default_shape():
    provider = RunwayProvider(api_secret=API_SECRET)
    catalog = catalog_of("runway")
    assert catalog is not None
    for card in catalog.current():
        kind = {"image": "https://example.com/a.jpg"} if "text" not in card.inputs else {}
        request = videobatch.VideoRequest(prompt="p", model=card.id, **kind)
        assert provider.check([request]) == [], card.id


@pytest.mark.parametrize(("row", "words"), [
    ({"prompt": "p", "model": "gen3a_turbo"}, "retired on 2026-07-30; use gen4_turbo"),
    ({"prompt": "p", "model": "veo3"}, "retired"),
    ({"prompt": "p", "model": "gen5"}, "no model 'gen5'"),
    ({"prompt": "p", "model": "gen4_turbo"}, "does not take text-to-video"),
    ({"prompt": "p", "duration": 11}, "duration 11 is not allowed"),
    ({"prompt": "p", "model": "veo3.1", "duration": 5}, "duration 5 is not allowed"),
    ({"prompt": "p", "aspect_ratio": "2:1"}, "aspect_ratio '2:1' is not allowed"),
    ({"prompt": "p", "resolution": "1080p"}, "does not take resolution"),
    ({"prompt": "p", "model": "veo3.1", "resolution": "4k"}, "resolution '4k' is not allowed"),
    ({"prompt": "p", "audio": True}, "does not take audio"),
    ({"prompt": "p", "negative_prompt": "blur"}, "does not take negative_prompt"),
    ({"prompt": "p", "public_figure_threshold": "none"}, "public_figure_threshold"),
    ({"prompt": "p", "ratio": "wide"}, "pixel size"),
    ({"prompt": "p", "ratio": "1920:1080"}, "ratio"),
])
def test_bad_rows_are_refused_by_the_rules(row, words):
    found = problems([{"prompt": "fine"}, row])
    assert any(words in p and "row 2" in p for p in found), found


def test_run_refuses_bad_rows_before_any_request():
    retired = [{"prompt": "ok"}, {"prompt": "x", "model": "gen3a_turbo"}]
    unmappable = [{"prompt": "ok"}, {"prompt": "y", "aspect_ratio": "4:3"},  # gen4.5 t2v: no 4:3 size
                  {"prompt": "z", "image": "http://example.com/a.jpg"}]
    with running_server() as server:
        with pytest.raises(InputError) as first:
            videobatch.run(retired, "runway", base_url=server.url, api_secret=API_SECRET, progress=False)
        with pytest.raises(InputError) as second:  # the provider's own pre-flight (check)
            videobatch.run(unmappable, "runway", base_url=server.url, api_secret=API_SECRET, progress=False)
        counters = server.counters()
    assert "row 2" in str(first.value) and "retired" in str(first.value)
    assert "row 2" in str(second.value) and "text-to-video size" in str(second.value)
    assert "row 3" in str(second.value) and "https" in str(second.value)
    assert counters["requests"] == 0
