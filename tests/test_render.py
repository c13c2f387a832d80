"""render_clip writes real, deterministic, prompt-dependent MP4s atomically; probe reads them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from videobatch.providers.local import render
from videobatch.providers.local.render import InvalidVideo, clip_size, probe, render_clip


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize(
    ("aspect", "size"), [("16:9", (170, 96)), ("9:16", (54, 96)), ("1:1", (96, 96))]
)
def test_clip_is_a_valid_mp4_of_the_asked_shape(tmp_path: Path, aspect: str, size: tuple[int, int]):
    out = render_clip(tmp_path / "clip.mp4", "a red fox in snow", aspect_ratio=aspect)
    assert out == tmp_path / "clip.mp4"
    info = probe(out)
    assert (info["width"], info["height"]) == size
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert info["frames"] == 24
    assert info["codec"] == "h264"
    assert info["fps"] == pytest.approx(12)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_length_and_rate_follow_the_arguments(tmp_path: Path):
    info = probe(render_clip(tmp_path / "c.mp4", "x", seconds=1.5, fps=8, height=64))
    assert info["frames"] == 12
    assert info["duration"] == pytest.approx(1.5, abs=0.1)
    assert info["height"] == 64
    assert clip_size("16:9", 95) == (170, 96)  # odd sizes are made even


def test_different_prompts_give_different_clips(tmp_path: Path):
    a = render_clip(tmp_path / "a.mp4", "a red fox in snow")
    b = render_clip(tmp_path / "b.mp4", "a blue whale at night")
    assert a.read_bytes() != b.read_bytes()
    fa, fb = frames_of(a), frames_of(b)
    assert len(fa) == len(fb)
    # visibly different: a large mean pixel difference, not just encoder noise
    assert np.mean(np.abs(fa[0].astype(int) - fb[0].astype(int))) > 10


def test_frames_move_over_time(tmp_path: Path):
    frames = frames_of(render_clip(tmp_path / "a.mp4", "a red fox in snow"))
    assert np.mean(np.abs(frames[0].astype(int) - frames[-1].astype(int))) > 1


def test_same_prompt_gives_the_same_clip(tmp_path: Path):
    a = render_clip(tmp_path / "a.mp4", "same prompt")
    b = render_clip(tmp_path / "b.mp4", "same prompt")
    assert all(np.array_equal(x, y) for x, y in zip(frames_of(a), frames_of(b), strict=True))
    assert a.read_bytes() == b.read_bytes()


def test_no_temp_file_is_left_behind(tmp_path: Path):
    render_clip(tmp_path / "sub" / "clip.mp4", "p")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["clip.mp4"]


def test_existing_file_is_replaced_whole(tmp_path: Path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    render_clip(target, "p")
    assert probe(target)["frames"] == 24


def test_a_failed_render_leaves_nothing_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = 0
    real = render.av.VideoFrame.from_ndarray

    def explode(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("crash mid-encode")
        return real(*args, **kwargs)

    monkeypatch.setattr(render.av.VideoFrame, "from_ndarray", explode)
    with pytest.raises(RuntimeError, match="mid-encode"):
        render_clip(tmp_path / "clip.mp4", "p")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="aspect ratio"):
        render_clip(tmp_path / "c.mp4", "p", aspect_ratio="4:3")
    with pytest.raises(ValueError, match="positive"):
        render_clip(tmp_path / "c.mp4", "p", seconds=0)
    assert list(tmp_path.iterdir()) == []


def test_probe_rejects_what_is_not_a_video(tmp_path: Path):
    with pytest.raises(InvalidVideo, match="not a readable video"):
        probe(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(InvalidVideo):
        probe(junk)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(render_clip(tmp_path / "ok.mp4", "p").read_bytes()[:300])
    with pytest.raises(InvalidVideo):
        probe(truncated)
