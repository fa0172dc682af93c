"""The indexing part of benchmarks/gpu_check.py on the CPU: its torchcodec path feeds the model exactly what the
processor gives, and the whole part runs at tiny size (its CPU smoke mode)."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest.importorskip("torchcodec.decoders", reason="the torchcodec path needs torchcodec and a system FFmpeg")


def test_torchcodec_inputs_are_the_processors(tmp_path):
    import gpu_check_indexing

    from clip2video.processing import CLIP2VideoVideoProcessor

    # 2 s and 1 s at 30 fps: the processor keeps 6 and 3 frames (2.5 fps), so padding and timestamps are checked too.
    paths = gpu_check_indexing.write_clips(tmp_path, 1, seconds=2, width=96, height=64)
    paths.append(gpu_check_indexing.write_clip(tmp_path / "short.mp4", seconds=1, width=96, height=64))
    video_processor = CLIP2VideoVideoProcessor()
    expected = video_processor(videos=[str(path) for path in paths], return_tensors="pt", return_timestamps=True)
    got = gpu_check_indexing.torchcodec_inputs(paths, video_processor, torch.device("cpu"))

    assert expected["video_mask"].sum(dim=1).tolist() == [6, 3]
    assert torch.equal(got["video_mask"], expected["video_mask"])
    assert torch.equal(got["pixel_values_videos"], expected["pixel_values_videos"])
    torch.testing.assert_close(got["video_timestamps"], expected["video_timestamps"], equal_nan=True)


@pytest.mark.slow
def test_indexing_check_smoke_mode_on_cpu():
    import gpu_check_indexing

    figures = gpu_check_indexing.run(device="cpu", tiny=True, num_workers=1)
    assert figures["videos"] == 6 and figures["clip seconds"] == 2
    for path in ("cpu decode", "torchcodec cpu decode", "model only"):
        rate = figures[f"{path} videos/s"]
        assert math.isfinite(rate) and rate > 0, (path, rate)
