"""`processing/video_processing_clip2video.py`'s sampling arguments and metadata, from docs/processing.md: a call's
`fps` and `num_frames` apply to frames given directly exactly as to files (the authors' rule on the frames' times,
`select_source_frames`, computed here independently); `video_metadata` frames_indices must lie below
`total_num_frames` (the last valid index accepted, `total_num_frames` itself refused, named); `return_metadata`
reports the stream's average rate (frames / duration), not the nominal rate, for a variable-rate file."""

import av
import numpy as np
import pytest
import torch

from clip2video.processing.frame_sampling_clip2video import select_source_frames
from tests.helpers.models import tiny_processor
from tests.helpers.videos import write_video


@pytest.fixture(scope="module")
def processor():
    return tiny_processor().video_processor


FRAMES = np.zeros((60, 32, 32, 3), dtype=np.uint8)


def expected_indices(count, rate, fps, num_frames):
    times = [index / rate for index in range(count)]
    durations = [1 / rate] * count
    return select_source_frames(times, durations, rate, sampling_fps=fps, max_frames=num_frames)


@pytest.mark.parametrize("fps, num_frames", [(1.0, 12), (2.5, 12), (5.0, 12), (0.5, 3), (2.5, 2)])
def test_a_calls_fps_and_num_frames_apply_to_frames_given_directly(processor, fps, num_frames):
    out = processor(videos=[FRAMES], video_metadata=[{"fps": 10}], return_metadata=True, fps=fps,
                    num_frames=num_frames)
    expected = expected_indices(60, 10.0, fps, num_frames)
    assert out["video_metadata"][0].frames_indices == expected
    assert int(out["video_mask"].sum()) == len(expected)


def test_the_calls_fps_is_not_the_processors(processor):
    # Precondition: the two rates pick different frames of this clip, so ignoring the call's fps would show.
    assert expected_indices(60, 10.0, 1.0, 12) != expected_indices(60, 10.0, processor.fps, 12)
    by_call = processor(videos=[FRAMES], video_metadata=[{"fps": 10}], return_metadata=True, fps=1.0, num_frames=12)
    by_default = processor(videos=[FRAMES], video_metadata=[{"fps": 10}], return_metadata=True, num_frames=12)
    assert by_call["video_metadata"][0].frames_indices == expected_indices(60, 10.0, 1.0, 12)
    assert by_default["video_metadata"][0].frames_indices == expected_indices(60, 10.0, processor.fps, 12)


def test_frames_indices_must_lie_below_total_num_frames(processor):
    frames = FRAMES[:4]
    accepted = {"fps": 10, "total_num_frames": 10, "frames_indices": [0, 3, 6, 9]}
    out = processor(videos=[frames], video_metadata=[accepted], return_metadata=True, do_sample_frames=False)
    assert out["video_metadata"][0].frames_indices == [0, 3, 6, 9]
    for bad in ([0, 3, 6, 10], [0, 3, 3, 9], [-1, 3, 6, 9], [0, 3, 6]):
        entry = {"fps": 10, "total_num_frames": 10, "frames_indices": bad}
        with pytest.raises(ValueError, match=r"Video 0 has 4 frames but its `video_metadata` frames_indices are not 4 "
                                             r"increasing indices below total_num_frames=10"):
            processor(videos=[frames], video_metadata=[entry], return_metadata=True)


def test_return_metadata_reports_the_average_rate_of_a_variable_rate_file(processor, tmp_path):
    # 30 fps with a half-second gap: the nominal rate stays 30, the average is frames / duration.
    times = [i / 30 for i in range(20)] + [20 / 30 + 0.5 + i / 30 for i in range(20)]
    path = write_video(tmp_path / "vfr.mp4", 40, 30, frame_times=times)
    with av.open(path) as container:
        stream = container.streams.video[0]
        average, nominal = float(stream.average_rate), float(stream.guessed_rate)
    assert abs(average - nominal) > 5  # precondition: the two rates differ
    metadata = processor(videos=[path], return_metadata=True)["video_metadata"][0]
    assert metadata.fps == pytest.approx(average, rel=1e-6)
    assert metadata.total_num_frames == 40
    assert metadata.frames_indices == sorted(set(metadata.frames_indices))
    assert all(0 <= index < 40 for index in metadata.frames_indices)


@pytest.mark.parametrize("suffixes", [(".PNG", ".Png", ".pNg"), (".JPG", ".Jpeg", ".jpg"), (".BMP", ".TIFF", ".WebP")])
def test_frame_image_extensions_are_case_insensitive(processor, tmp_path, suffixes):
    from PIL import Image

    lower, mixed = [], []
    for index, suffix in enumerate(suffixes):
        image = Image.fromarray(np.full((32, 32, 3), 40 * index + 20, dtype=np.uint8))
        for names, name in ((lower, f"lower{index}{suffix.lower()}"), (mixed, f"mixed{index}{suffix}")):
            image.save(tmp_path / name, format={"jpg": "JPEG", "jpeg": "JPEG", "tiff": "TIFF"}.get(
                suffix[1:].lower(), suffix[1:].upper()))
            names.append(str(tmp_path / name))
    by_lower = processor(videos=[lower], do_sample_frames=False, return_tensors="pt")
    by_mixed = processor(videos=[mixed], do_sample_frames=False, return_tensors="pt")
    assert by_mixed["video_mask"].tolist() == by_lower["video_mask"].tolist() and int(by_mixed["video_mask"].sum()) == 3
    assert torch.equal(by_mixed["pixel_values_videos"], by_lower["pixel_values_videos"])
