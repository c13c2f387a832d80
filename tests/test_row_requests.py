"""Rows' requests built when asked for (RowRequests) and jobs that take theirs when first asked."""

from __future__ import annotations

from json.encoder import encode_basestring

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from videobatch._input_keys import escaped_rows, request_text
from videobatch._inputs import load_prompts
from videobatch._jobs import Job
from videobatch._row_requests import RowRequests, distinct
from videobatch.request import VideoRequest

ROWS = pd.DataFrame({
    "prompt": ["a fox", "a cat", "", "an owl", "a bee", "a fox"],
    "duration": [None, 10, None, None, 10, None],
    "image": [None, None, "https://x/a.png", None, None, None],
    "aspect_ratio": [None, "1:1", None, None, "1:1", None],
})


@pytest.fixture
def requests() -> RowRequests:
    made = load_prompts(ROWS).requests
    assert isinstance(made, RowRequests)
    return made


def test_a_row_request_is_what_pydantic_builds_for_the_row(requests: RowRequests) -> None:
    assert len(requests) == len(ROWS)
    for request, (_, row) in zip(requests, ROWS.iterrows(), strict=True):
        given = {k: v for k, v in row.items() if (isinstance(v, str) and v) or (isinstance(v, float) and v == v)}
        alone = VideoRequest.model_validate(given)
        assert request == alone
        assert request.model_fields_set == alone.model_fields_set
        assert request.model_dump_json() == alone.model_dump_json()


def test_row_requests_index_like_a_list(requests: RowRequests) -> None:
    built = list(requests)
    assert requests[-1] == built[-1] and requests[0] == built[0]
    assert requests[1:5:2] == built[1:5:2]
    assert requests[::-1] == built[::-1]
    with pytest.raises(IndexError):
        requests[len(built)]
    with pytest.raises(IndexError):
        requests[-len(built) - 1]
    assert requests.index(built[3]) == 3
    assert "RowRequests(6 rows" in repr(requests)


def test_each_ask_builds_an_equal_request_of_its_own(requests: RowRequests) -> None:
    first, again = requests[1], requests[1]
    assert first == again and first is not again
    with pytest.raises(ValidationError, match="frozen"):  # as pydantic built it
        first.prompt = "changed"  # type: ignore[misc]
    assert requests[1].prompt == "a cat"


def test_distinct_holds_every_value_but_the_prompts(requests: RowRequests) -> None:
    shown = list(distinct(requests))
    assert len(shown) < len(requests)  # the fox, cat/bee and owl rows share their combinations
    def but_prompt(r: VideoRequest) -> str:
        return r.model_copy(update={"prompt": None}).model_dump_json()
    assert {but_prompt(r) for r in shown} == {but_prompt(r) for r in requests}
    assert any(r.image for r in shown)  # a row with an image is its own
    plain = [VideoRequest(prompt="x")]
    assert distinct(plain) is plain  # any other sequence as it is


def test_a_fresh_job_takes_its_request_when_first_asked(requests: RowRequests) -> None:
    jobs = Job.fresh([f"k{i}" for i in range(len(requests))], requests)
    assert all("request" not in vars(job) for job in jobs)  # nothing built yet
    assert jobs[2].request == requests[2] and jobs[2].request.image == "https://x/a.png"
    assert jobs[2].request is jobs[2].request  # then kept
    assert "request" not in vars(jobs[3])
    jobs[3].request = VideoRequest(prompt="set")  # setting it works as for any job
    assert jobs[3].request.prompt == "set"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        jobs[0].nothing  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ValueError, match="one request per key"):
        Job.fresh(["a"], requests)


def test_a_job_made_whole_has_no_hidden_request() -> None:
    job = Job("k", 0, VideoRequest(prompt="p"))
    assert job.request.prompt == "p"
    del job.request
    with pytest.raises(AttributeError):
        job.request  # noqa: B018


def test_row_requests_equal_lists_of_equal_requests(requests: RowRequests) -> None:
    built = list(requests)
    assert requests == built and built == requests
    assert requests == load_prompts(ROWS).requests
    assert requests != built[:-1] and requests != built[::-1]
    assert requests != tuple(built)  # as a list is not equal to a tuple


def test_texts_are_each_rows_request_json_however_the_rows_are_mixed() -> None:
    # Column-wise spelling (escapes by Python only where JSON needs them) against request_text of
    # each built request; chunks of two put rows with their own request beside combination rows.
    rows = pd.DataFrame({
        "prompt": ['say "hi"', "back\\slash", "tab\there", "é 🎬 \u2028", "plain", "", "ctl\x01",
                   "plain", "  padded  "],
        "image": [None, None, None, None, None, "https://x/a.png", None, None, None],
        "duration": [None, 10, None, 10, None, None, None, 10, None],
    })
    requests = load_prompts(rows).requests
    assert isinstance(requests, RowRequests)
    expected = [request_text(r) for r in requests]
    for chunk in (1, 2, 3, 100):
        assert requests.texts(chunk).to_pylist() == expected
    assert RowRequests([], [], [], []).texts().to_pylist() == []


def test_escaped_rows_are_those_json_spells_with_an_escape() -> None:
    texts = ["plain", 'a "q"', "é 🎬", "back\\", "", "nl\n", "\x1f", "ok ~\x7f", "\u2028"] * 3
    array = pa.array(texts, pa.string())
    for part in (array, array.slice(5), array.slice(2, 1), array.slice(0, 0)):
        wanted = [encode_basestring(t) != f'"{t}"' for t in part.to_pylist()]
        found = escaped_rows(part)
        assert (found.to_pylist() if found is not None else [False] * len(part)) == wanted
