"""images: every row's image checked before anything is paid, for every provider. Local files (real
files), image data, and http(s) URLs against a real loopback server (an image, a 404, an HTML page,
one that never answers, a redirect); fetched concurrently within bounds, each distinct URL once, and
through an injected address guard (the service's policy) when one is given."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest

import videobatch
from image_server import JPEG, PNG, ImageServer
from videobatch._images import ImageCheck, image_problems
from videobatch.cli.main import main
from videobatch.errors import InputError
from videobatch.media import image_mime, image_type


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as s:
        yield s


def problems(cells, **check):
    found = asyncio.run(image_problems(cells, ImageCheck(**check)))
    return {(p.row, p.column): p.message for p in found}


# ---------------------------------------------------------------------- judging bytes and files
def test_image_type_judges_by_content():
    assert image_type(PNG) == "image/png"
    assert image_type(JPEG) == "image/jpeg"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_type(b"GIF89a\x01\x00") == "image/gif"
    assert image_type(b"\x00\x00\x00\x1cftypavif") == "image/avif"
    assert image_type(b"<!doctype html>") is None
    assert image_type(b"\x00\x00\x00\x18ftypmp42") is None  # a video, not an image
    assert image_type(b"") is None
    # the web formats providers and the service take are the subset image_mime keeps
    assert image_mime(PNG) == "image/png" and image_mime(b"GIF89a\x01\x00") is None


def test_local_files_must_exist_and_be_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "notes.png").write_text("not an image at all")
    found = problems([(1, "image", "cat.png"), (2, "image", "gone/dog.png"),
                      (3, "end_image", "notes.png"), (4, "image", f"file://{tmp_path / 'cat.png'}")])
    assert set(found) == {(2, "image"), (3, "end_image")}
    assert "image file not found" in found[2, "image"] and str(tmp_path / "gone") in found[2, "image"]
    assert "is not an image" in found[3, "end_image"]


def test_image_data_is_judged_by_its_bytes():
    good = base64.b64encode(PNG).decode()
    found = problems([(1, "image", f"data:image/png;base64,{good}"), (2, "image", good),
                      (3, "image", "data:image/png;base64," + base64.b64encode(b"<html>" * 9).decode()),
                      (4, "image", "data:image/png,rawtext"),
                      (5, "image", "YWJjZGVmZ2hpamtsbW5vcA")])  # base64 of text, no path
    assert set(found) == {(3, "image"), (4, "image"), (5, "image")}
    assert "does not hold an image" in found[3, "image"]
    assert "base64" in found[4, "image"]


def test_without_local_files_no_path_is_looked_at(tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    found = problems([(1, "image", str(tmp_path / "cat.png"))], local_files=False)
    assert "no file of this machine is read" in found[1, "image"]


# ---------------------------------------------------------------------- URLs on a real server
def test_urls_answer_with_an_image_or_are_refused_all_at_once(server):
    started = time.monotonic()
    found = problems([(1, "image", f"{server.url}/cat.png"), (2, "image", f"{server.url}/missing.png"),
                      (3, "image", f"{server.url}/page.html"), (4, "end_image", f"{server.url}/hang"),
                      (5, "image", f"{server.url}/moved"), (6, "image", f"{server.url}/as-text")],
                     timeout=0.5)
    elapsed = time.monotonic() - started
    assert set(found) == {(2, "image"), (3, "image"), (4, "end_image")}
    assert "HTTP 404" in found[2, "image"]
    assert "text/html, not an image" in found[3, "image"]
    assert "did not answer within 0.5 s" in found[4, "end_image"]
    assert elapsed < 3  # the hanging URL costs its timeout, concurrently with the rest
    assert server.hits["/cat.png"] == 2  # directly, and after the redirect


def test_each_distinct_url_is_fetched_once(server):
    url = f"{server.url}/cat.png"
    missing = f"{server.url}/missing.png"
    found = problems([(row, "image", url) for row in range(1, 51)]
                     + [(row, "end_image", missing) for row in (3, 9)])
    assert server.hits["/cat.png"] == 1 and server.hits["/missing.png"] == 1
    assert set(found) == {(3, "end_image"), (9, "end_image")}  # every row naming it is reported


def test_fetches_run_concurrently_within_the_bound(server):
    cells = [(row, "image", f"{server.url}/slow/{row}") for row in range(1, 9)]
    started = time.monotonic()
    assert problems(cells, concurrency=4) == {}
    elapsed = time.monotonic() - started
    assert server.peak <= 4
    assert server.peak >= 2 and elapsed < 8 * server.slow  # not one by one


def test_a_budget_bounds_all_fetches_of_one_check(server):
    # One at a time, 0.3 s each: about three of eight are judged in 1 s; the rest are problems
    # saying so, rather than the check running on (a server's client cannot hold it for hours).
    cells = [(row, "image", f"{server.url}/slow/{row}") for row in range(1, 9)]
    started = time.monotonic()
    found = problems(cells, concurrency=1, budget=1.0)
    elapsed = time.monotonic() - started
    assert 1 <= 8 - len(found) <= 4, found  # judged (and fine) in time
    assert all(message.startswith("not checked: the image URLs of one request are given 1 s")
               for message in found.values())
    assert elapsed < 3


def test_a_shared_gate_bounds_fetches_across_checks(server):
    # Two requests of one client, each allowed 4 at once, share the client's gate of 2.
    gate_of_client = asyncio.Semaphore(2)

    async def both() -> list[list[object]]:
        return list(await asyncio.gather(*(image_problems(
            [(row, "image", f"{server.url}/slow/{n}-{row}") for row in range(1, 5)],
            ImageCheck(concurrency=4, shared=gate_of_client)) for n in range(2))))

    assert asyncio.run(both()) == [[], []]
    assert server.peak == 2


def test_a_guard_is_asked_before_every_hop(server):
    asked: list[str] = []

    async def guard(url: str) -> str | None:
        asked.append(url)
        return "cat.png is off limits" if url.endswith("/cat.png") else None

    found = problems([(1, "image", f"{server.url}/moved"), (2, "image", f"{server.url}/cat.png")],
                     guard=guard)
    assert found == {(1, "image"): "image URL refused: cat.png is off limits",
                     (2, "image"): "image URL refused: cat.png is off limits"}
    assert server.hits["/cat.png"] == 0  # refused before connecting, also after the redirect
    assert server.hits["/moved"] == 1


def test_the_service_address_policy_plugs_in_as_guard_and_transport(server):
    from videobatch.service.addresses import AddressPolicy, guarded_transport

    strict = AddressPolicy()  # loopback is not a public address
    found = problems([(1, "image", f"{server.url}/cat.png")], guard=strict.refusal,
                     transport=guarded_transport(strict))
    assert "loopback" in found[1, "image"]
    assert server.hits["/cat.png"] == 0
    allowed = AddressPolicy(["127.0.0.1/32"])  # an operator's allowlist
    assert problems([(1, "image", f"{server.url}/cat.png")], guard=allowed.refusal,
                    transport=guarded_transport(allowed)) == {}
    assert server.hits["/cat.png"] == 1


# ---------------------------------------------------------------------- before paying
def rows_with_images(server, tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    return [{"prompt": "a cat", "image": str(tmp_path / "cat.png")},
            {"prompt": "a dog", "image": str(tmp_path / "dog.png")},
            {"prompt": "a fox", "image": f"{server.url}/cat.png"},
            {"prompt": "a page", "end_image": f"{server.url}/page.html"}]


def test_a_batch_refuses_bad_images_before_its_checkpoint_exists(server, tmp_path):
    checkpoint = tmp_path / "run.parquet"
    with pytest.raises(InputError) as info:
        videobatch.Batch(rows_with_images(server, tmp_path), "local", checkpoint=checkpoint)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "image"), (4, "end_image")]
    assert not checkpoint.exists()  # fixing the rows then starts afresh, nothing to reconcile
    with pytest.raises(InputError):  # a dry run tells the same: the run would stop here
        videobatch.plan(rows_with_images(server, tmp_path), "local", checkpoint=checkpoint)
    batch = videobatch.Batch(rows_with_images(server, tmp_path), "local", checkpoint=checkpoint,
                             check_images=False)
    assert batch.plan().paid == 4


def test_rows_not_sent_again_are_not_fetched_again(server, tmp_path):
    rows = [{"prompt": "a fox", "image": f"{server.url}/cat.png"}]
    checkpoint = tmp_path / "run.parquet"
    options = {"checkpoint": checkpoint, "progress": False, "latency": 0}
    assert videobatch.run(rows, "local", **options)["status"].tolist() == ["completed"]
    assert server.hits["/cat.png"] == 1
    videobatch.run(rows, "local", **options)  # resumed: the completed row is kept, not re-checked
    assert server.hits["/cat.png"] == 1


def test_the_check_works_inside_a_running_event_loop(server, tmp_path):
    rows = [{"prompt": "a page", "image": f"{server.url}/page.html"}]

    async def in_a_notebook_cell() -> None:
        videobatch.Batch(rows, "local")

    with pytest.raises(InputError, match="not an image"):
        asyncio.run(in_a_notebook_cell())


def test_the_command_checks_images_unless_told_not_to(server, tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text(f"prompt,image\na fox,{server.url}/missing.png\n", encoding="utf-8")
    args = [str(csv), "-P", "latency=0", "-q", "--out", str(tmp_path / "r.csv")]
    assert main([*args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'image': the image URL answered HTTP 404" in err
    assert "the run would stop here" in err
    assert main([*args, "--no-check-images"]) == 0  # (the offline provider ignores images)
    assert server.hits["/missing.png"] == 1
