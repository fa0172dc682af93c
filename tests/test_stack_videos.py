"""`stack_videos`, the one rule for padding the time axis (the processor and the search indexer both use it)."""

import math

import pytest
import torch

from clip2video.processing.video_processing_clip2video import stack_videos


def video(frames: int, value: float, batch: int = 1) -> dict[str, torch.Tensor]:
    return {
        "pixel_values_videos": torch.full((batch, frames, 3, 2, 2), value),
        "video_mask": torch.ones((batch, frames), dtype=torch.int64),
        "video_timestamps": torch.arange(frames, dtype=torch.float64).expand(batch, frames) * 0.5,
    }


def test_pads_to_the_longest_with_zero_frames_mask_zero_and_nan_times():
    batch = stack_videos([video(2, 1.0), video(4, 2.0, batch=2)])
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 2, 2)
    assert batch["video_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.all(batch["pixel_values_videos"][0, :2] == 1) and torch.all(batch["pixel_values_videos"][0, 2:] == 0)
    assert torch.all(batch["pixel_values_videos"][1:] == 2)
    times = batch["video_timestamps"][0].tolist()
    assert times[:2] == [0.0, 0.5] and all(math.isnan(t) for t in times[2:])
    assert batch["video_timestamps"].dtype == torch.float64 and batch["video_mask"].dtype == torch.int64


def test_pads_to_a_given_length_and_refuses_a_shorter_one():
    without_times = {key: value for key, value in video(3, 1.0).items() if key != "video_timestamps"}
    batch = stack_videos([without_times], num_frames=5)
    assert set(batch) == {"pixel_values_videos", "video_mask"}
    assert batch["video_mask"].tolist() == [[1, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="cannot pad 3 frames to 2"):
        stack_videos([without_times], num_frames=2)
