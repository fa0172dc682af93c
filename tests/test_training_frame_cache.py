"""`training/frame_cache.py`: the cached frames equal decoding (to float16), the cache is rebuilt when a video
changes, and building it in forked workers after the parent decoded does not hang."""

import numpy as np
import pytest
import torch

from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.frame_cache import FrameCache
from clip2video.training.synthetic import write_mp4


def test_frame_cache_matches_decoding_and_rebuilds_on_change(tmp_path):
    video_processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                               num_frames=4)
    processor = CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())
    rng = np.random.default_rng(0)
    paths = []
    for index, num_frames in enumerate([8, 3]):  # at 2.5 fps: 8 frames kept as 4, 3 frames as 3 (one padded)
        path = tmp_path / f"clip{index}.mp4"
        write_mp4(path, rng.integers(0, 255, size=(num_frames, 16, 16, 3), dtype=np.uint8), 2.5)
        paths.append(str(path))
    cache = FrameCache.load_or_build(paths, processor, tmp_path / "cache")
    direct = processor.video_processor(videos=paths, return_tensors="pt")
    frames, mask = cache(paths[::-1])
    torch.testing.assert_close(frames, direct["pixel_values_videos"].flip(0), atol=2e-3, rtol=2e-3)  # float16
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]

    assert len(list((tmp_path / "cache").iterdir())) == 3 and cache.bad == {}
    FrameCache.load_or_build(paths, processor, tmp_path / "cache")  # cache hit: nothing new
    assert len(list((tmp_path / "cache").iterdir())) == 3
    write_mp4(tmp_path / "clip1.mp4", rng.integers(0, 255, size=(3, 16, 16, 3), dtype=np.uint8), 2.5)
    FrameCache.load_or_build(paths, processor, tmp_path / "cache")  # a changed file is decoded again
    assert len(list((tmp_path / "cache").iterdir())) == 6


@pytest.mark.slow
def test_frame_cache_workers_after_a_decode_in_the_parent(tmp_path):
    """The usual flow: look at one sample, then cache the frames in forked workers. A child that inherits the
    parent's decoding state, or torch's OpenMP pool after the parent used two threads, must not hang (a fresh
    process, killed by the timeout if it does). Frames are resized to 224 so that the children's resize runs
    torch's parallel kernels, as a real video does."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for index in range(6):
        write_mp4(tmp_path / f"clip{index}.mp4", rng.integers(0, 255, size=(6, 16, 16, 3), dtype=np.uint8), 2.5)
    code = f"""
import glob
import torch
torch.set_num_threads(2)
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.data import decode_video
from clip2video.training.frame_cache import FrameCache
video_processor = CLIP2VideoVideoProcessor(num_frames=4)
processor = CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())
paths = sorted(glob.glob({str(tmp_path)!r} + "/*.mp4"))
decode_video(processor, paths[0])  # the parent decodes first
cache = FrameCache.load_or_build(paths, processor, {str(tmp_path / "cache")!r}, num_workers=2)
print("cached", len(cache.position), len(cache.bad))
"""
    env = {key: value for key, value in __import__("os").environ.items() if key != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cached 6 0" in result.stdout
