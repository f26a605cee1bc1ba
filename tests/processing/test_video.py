"""Video files: every container decodes, frames are chosen evenly or at an fps, bad files are named."""

from __future__ import annotations

import numpy as np
import pytest

from theworld.processing.video import VideoDecodeError, choose_frames, load_video, video_problem
from theworld.testing.inputs import moving_frames, write_video


@pytest.mark.parametrize("extension", [".mp4", ".webm", ".mov", ".gif"])
def test_each_container_decodes_the_chosen_frames(tmp_path, extension):
    frames = moving_frames(23, size=48, seed=1)
    path = write_video(tmp_path / f"clip{extension}", frames, fps=10)
    clip = load_video(path, num_frames=9)
    assert len(clip) == 9 and clip.source == path
    assert clip.frame_times == pytest.approx([round(i * 22 / 8) / 10 for i in range(9)])
    for image, t in zip(clip, clip.frame_times):
        assert image.mode == "RGB" and image.size == (48, 48)
        original = np.asarray(frames[round(t * 10)], dtype=np.float32)
        other = np.asarray(frames[(round(t * 10) + 6) % 23], dtype=np.float32)
        error = np.abs(np.asarray(image, dtype=np.float32) - original).mean()
        assert error < 16 and error < np.abs(np.asarray(image, dtype=np.float32) - other).mean()


def test_choose_frames_evenly_at_fps_and_short_clips():
    times = [i / 10 for i in range(23)]
    assert choose_frames(times, 9) == [0, 3, 6, 8, 11, 14, 16, 19, 22]
    assert choose_frames(times, 5, fps=5) == [14, 16, 18, 20, 22]  # 0.2 s apart, ending at the last frame
    assert choose_frames(times[:4], 9) == [3]  # 4 frames: the largest 4k+1 is 1, the present frame
    assert choose_frames(times[:7], 9) == [0, 2, 3, 4, 6]  # 7 frames: 5 of them
    assert len(choose_frames(times, 17, fps=2)) == 5  # 2.2 s at 2 fps holds 5 moments


def test_short_clip_gives_fewer_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", moving_frames(7, size=32), fps=10)
    clip = load_video(path, num_frames=17)
    assert len(clip) == 5 and clip.frame_times[0] == 0.0 and clip.frame_times[-1] == pytest.approx(0.6)


def test_undecodable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        load_video(bad, num_frames=9)
    with pytest.raises(VideoDecodeError, match="not found: .*nowhere.mp4"):
        load_video(tmp_path / "nowhere.mp4", num_frames=9)
    assert "broken.mp4" in video_problem(str(bad))
    good = write_video(tmp_path / "good.gif", moving_frames(5, size=16), fps=10)
    assert video_problem(good) is None


def test_max_frames_limit_is_named(tmp_path):
    path = write_video(tmp_path / "long.webm", moving_frames(30, size=16), fps=10)
    with pytest.raises(VideoDecodeError, match="max_clip_frames=20"):
        load_video(path, num_frames=9, max_frames=20)
    with open(path, "rb") as handle:
        assert len(load_video(handle.read(), num_frames=9, max_frames=30)) == 9  # bytes work too


def test_world_pixels_of_a_video_file_equal_its_decoded_clip(tmp_path):
    """The latent cache computes world pixels without a processor: a `VideoFile` decodes the same way."""
    from theworld.processing.processor import world_pixels
    from theworld.processing.video import VideoFile

    path = write_video(tmp_path / "clip.mp4", moving_frames(13, size=32), fps=10)
    assert np.array_equal(world_pixels(VideoFile(path), 32, 9), world_pixels(load_video(path, 9), 32, 9))
