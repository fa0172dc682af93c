"""The torchcodec backend (`video_backend="torchcodec"`) samples the frames the PyAV path samples, also from
variable-frame-rate videos: its frame table is the PyAV path's (packet times, FFmpeg's durations, the nominal rate),
not evenly spaced frames at the average rate. `.ci/run` installs torchcodec, so these run there."""

import random
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor
from tests.helpers.videos import write_video


pytest.importorskip("torchcodec")

_jitter = random.Random(1)
# Presentation times in seconds (as in tests/test_frame_sampling_vfr.py): the average rate misplaces these frames.
PATTERNS = {
    "slow_then_fast": [i / 5 for i in range(6)] + [1.2 + i / 30 for i in range(1, 61)],
    "pause": [i / 30 for i in range(16)] + [0.5 + 2 + i / 30 for i in range(1, 30)],
    "jitter": [i / 30 + _jitter.uniform(-0.008, 0.008) * (i > 0) for i in range(90)],
    "constant": [i / 30 for i in range(45)],
}
ENCODINGS = {"h264": ({"bf": "0"}, Fraction(1, 90000)), "h264_bframes": ({"bf": "3"}, Fraction(1, 1000))}


@pytest.fixture(scope="module")
def processor():
    return CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_same_frames_and_times_as_pyav(processor, tmp_path, pattern, encoding):
    options, time_base = ENCODINGS[encoding]
    times = PATTERNS[pattern]
    path = write_video(tmp_path / f"{pattern}.mp4", len(times), 30, frame_times=times, time_base=time_base, **options)
    reference = processor(path, return_timestamps=True)
    for video in (path, Path(path).read_bytes()):  # a file, and bytes (decoded from memory)
        decoded = processor(video, return_timestamps=True, video_backend="torchcodec")
        torch.testing.assert_close(decoded["video_timestamps"], reference["video_timestamps"], equal_nan=True,
                                   rtol=0, atol=0)
        torch.testing.assert_close(decoded["pixel_values_videos"], reference["pixel_values_videos"], rtol=0,
                                   atol=0.05)
        torch.testing.assert_close(decoded["video_mask"], reference["video_mask"], rtol=0, atol=0)


def test_the_average_rate_would_have_sampled_other_frames(processor, tmp_path):
    """The check above can fail: on the slow-then-fast clip, evenly spaced times at the average rate (what this
    backend assumed before) pick other frames than the nominal-rate rule."""
    times = PATTERNS["slow_then_fast"]
    path = write_video(tmp_path / "vfr.mp4", len(times), 30, frame_times=times, time_base=Fraction(1, 90000), bf="0")
    reference = processor(path, return_timestamps=True)["video_timestamps"][0]
    average_rate = len(times) / (times[-1] + 1 / 30)
    evenly_spaced = processor(
        [torch.zeros(len(times), 8, 8, 3, dtype=torch.uint8)],
        video_metadata=[{"fps": average_rate, "total_num_frames": len(times)}],
        return_timestamps=True,
    )["video_timestamps"][0]
    assert not torch.allclose(evenly_spaced, reference, equal_nan=True)
