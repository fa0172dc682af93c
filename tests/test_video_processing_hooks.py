"""`processing/video_processing_clip2video.py`'s hooks mean what `BaseVideoProcessor`'s mean:
`_decode_and_sample_videos` decodes (only the sampled frames, checked against `read_video_frames` with the authors'
rule computed independently), `_prepare_input_videos` honours `do_convert_rgb`, and the earlier argument names
`max_frames` / `sampling_fps` still build a processor but warn once per process, as transformers' deprecations do."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clip2video.processing.frame_sampling_clip2video import select_source_frames
from clip2video.processing.video_decoding_clip2video import read_video_frames
from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor
from tests.helpers.processes import run_command
from tests.helpers.videos import frame_index, write_video


@pytest.fixture(scope="module")
def processor():
    return CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size=16, num_frames=4)


def test_decode_and_sample_videos_decodes_the_sampled_frames(processor, tmp_path):
    path = write_video(tmp_path / "clip.mp4", 50, 10)
    # Called with the base class's arguments only: the processor's own num_frames, fps and backend apply.
    videos, metadata = processor._decode_and_sample_videos(path, video_metadata=None, do_sample_frames=True)
    expected = select_source_frames([i / 10 for i in range(50)], [0.1] * 50, 10.0, sampling_fps=2.5, max_frames=4)
    (video,) = videos
    assert isinstance(video.frames, np.ndarray) and video.frames.dtype == np.uint8
    assert video.frames.shape == (len(expected), 48, 64, 3)
    assert [frame_index(frame) for frame in video.frames] == expected
    assert video.timestamps == pytest.approx([i / 10 for i in expected])
    assert metadata[0].frames_indices == expected and metadata[0].total_num_frames == 50
    decoded = read_video_frames(path, lambda table: expected)
    assert np.array_equal(video.frames, np.stack(decoded.frames))


def test_decode_and_sample_videos_uses_the_calls_options(processor, tmp_path):
    path = write_video(tmp_path / "clip.mp4", 50, 10)
    videos, _ = processor._decode_and_sample_videos([path], None, do_sample_frames=False, num_frames=50)
    assert [frame_index(frame) for frame in videos[0].frames] == list(range(50))
    with pytest.raises(ValueError, match=r"Video 0 \(.*clip\.mp4\) has 50 frames but `num_frames` is 49"):
        processor._decode_and_sample_videos([path], None, do_sample_frames=False, num_frames=49)


def grey_and_rgba(frames: np.ndarray):
    grey = frames[..., :1]
    rgba = np.concatenate([frames, np.full(frames.shape[:-1] + (1,), 7, np.uint8)], axis=-1)
    return grey, rgba


def test_prepare_input_videos_honours_do_convert_rgb(processor):
    rgb = np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    grey, rgba = grey_and_rgba(rgb)
    as_rgb = processor(rgb, return_tensors="pt")["pixel_values_videos"]
    assert torch.equal(processor(rgb, do_convert_rgb=False, return_tensors="pt")["pixel_values_videos"], as_rgb)
    assert torch.equal(processor(rgba, return_tensors="pt")["pixel_values_videos"], as_rgb)  # alpha dropped
    repeated = processor(np.repeat(grey, 3, axis=-1), return_tensors="pt")["pixel_values_videos"]
    assert torch.equal(processor(grey, return_tensors="pt")["pixel_values_videos"], repeated)
    for frames, channels in ((grey, 1), (rgba, 4)):
        with pytest.raises(ValueError, match=rf"have {channels} channel\(s\) .* and `do_convert_rgb=False`"):
            processor(frames, do_convert_rgb=False)
        with pytest.raises(ValueError, match=rf"have {channels} channel\(s\) .* and `do_convert_rgb=False`"):
            processor([list(frames)], do_convert_rgb=False)  # a list of frames
    with pytest.raises(ValueError, match="PIL image of mode L with `do_convert_rgb=False`"):
        processor([Image.fromarray(grey[0, ..., 0])], do_convert_rgb=False)
    images = [Image.fromarray(frame) for frame in rgb]
    assert torch.equal(processor(images, do_convert_rgb=False, return_tensors="pt")["pixel_values_videos"], as_rgb)


def test_decoded_frames_keep_their_layout_whatever_input_data_format_says(processor, tmp_path):
    # `input_data_format` describes the frames the caller gives, never the ones this processor decodes.
    path = write_video(tmp_path / "clip.mp4", 20, 10)
    frames = torch.from_numpy(np.stack(read_video_frames(path, lambda table: [0]).frames)).permute(0, 3, 1, 2)
    batch = processor([path, frames], input_data_format="channels_first", return_tensors="pt")
    alone = processor(path, return_tensors="pt")
    assert torch.equal(batch["pixel_values_videos"][0], alone["pixel_values_videos"][0])


WARN_TWICE = """
from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor
for _ in range(2):
    processor = CLIP2VideoVideoProcessor(max_frames=6, sampling_fps=5)
print(processor.num_frames, processor.fps, "num_frames" in processor.to_dict(), "max_frames" in processor.to_dict())
"""


def test_the_earlier_names_still_work_and_warn_once():
    result = run_command([sys.executable, "-c", WARN_TWICE], timeout=300)
    assert result.stdout.split() == ["6", "5", "True", "False"]
    assert result.stderr.count("`max_frames` is deprecated: the video processor's argument is `num_frames`") == 1
    assert result.stderr.count("`sampling_fps` is deprecated: the video processor's argument is `fps`") == 1
