"""The video processor's arguments, from its contract (docs/processing.md, the class docstring), fast and on real
frames and files: how a call's `num_frames`, `fps`, `random_frame_jitter`, `do_sample_frames`, `pad_to_max_frames`,
`return_timestamps`, `return_metadata`, `do_*` flags, sizes and decoding limits reach the frames chosen and the
tensors returned (`processing/video_processing_clip2video.py`), and what `video_metadata` may say about frames given
directly (`processing/video_inputs_clip2video.py`). Frame choices are compared with the authors' rule computed here
(`select_source_frames` on the frames' times, or `np.linspace` rounded down for frames without a rate), pixel values
with the CLIP normalisation written out; hypothesis covers metadata, rates and counts."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.video_utils import VideoMetadata

from clip2video.processing.frame_sampling_clip2video import select_source_frames
from clip2video.processing.video_inputs_clip2video import checked_frame_rate, frames_metadata
from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor, SampledVideo, stack_videos
from tests.helpers.videos import frame_index, index_frame, write_video, write_video_after_audio


SIZE = 16


@pytest.fixture(scope="module")
def processor():
    return CLIP2VideoVideoProcessor(size={"shortest_edge": SIZE}, crop_size=SIZE, num_frames=4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 30-frame, 10 fps MP4 whose frames show their own index."""
    return write_video(tmp_path_factory.mktemp("mapping") / "clip.mp4", 30, 10)


def grey(count, height=12, width=20):
    """`count` uint8 RGB frames, frame i filled with the value 6 * i (so a frame tells its index after processing)."""
    return np.stack([np.full((height, width, 3), 6 * i, dtype=np.uint8) for i in range(count)])


def normalised(value):
    """The CLIP-normalised channels of a constant uint8 value, written out."""
    return [(value / 255 - mean) / std for mean, std in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]


def shown_values(pixels, mask):
    """The uint8 value each real frame of one processed constant-colour video had (red channel)."""
    red = pixels[: int(mask.sum()), 0].mean(dim=(-1, -2)).double()
    return [round(((value * OPENAI_CLIP_STD[0] + OPENAI_CLIP_MEAN[0]) * 255).item() / 6) for value in red]


def authors_rule(positions, rate, fps, num_frames):
    """Indices into the given frames that the authors' rule keeps for frames at `positions / rate`."""
    times = [position / rate for position in positions]
    durations = [(after - before) / rate for before, after in zip(positions, positions[1:])] + [1 / rate]
    return select_source_frames(times, durations, rate, sampling_fps=fps, max_frames=num_frames)


def uniform(count, num_frames):
    """Frames without a rate: all of them, or `num_frames` picked by `np.linspace` rounded down."""
    if count <= num_frames:
        return list(range(count))
    return [int(position) for position in np.floor(np.linspace(0, count - 1, num_frames))]


# -- a call's sampling arguments for frames given directly ----------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(1, 40), rate=st.sampled_from([1.0, 7.5, 10.0, 24.0, 29.97, 60.0]),
    fps=st.sampled_from([0.5, 1.0, 2.5, 4.0, 5.0]), num_frames=st.integers(1, 9), by_duration=st.booleans(),
)
def test_a_calls_fps_and_num_frames_choose_frames_given_directly_by_the_authors_rule(
    processor, count, rate, fps, num_frames, by_duration
):
    entry = {"total_num_frames": count, "duration": count / rate} if by_duration else {"fps": rate}
    out = processor(videos=grey(count), video_metadata=entry, fps=fps, num_frames=num_frames, return_metadata=True,
                    return_timestamps=True, return_tensors="pt")
    expected = authors_rule(list(range(count)), count / (count / rate) if by_duration else rate, fps, num_frames)
    metadata = out["video_metadata"][0]
    assert metadata.frames_indices == expected
    assert (metadata.total_num_frames, metadata.fps) == (count, pytest.approx(rate))
    assert metadata.duration == pytest.approx(count / rate)
    assert out["video_mask"][0].tolist() == [1] * len(expected) + [0] * (num_frames - len(expected))
    assert shown_values(out["pixel_values_videos"][0], out["video_mask"][0]) == expected
    timestamps = out["video_timestamps"][0].tolist()
    assert timestamps[: len(expected)] == pytest.approx([index / rate for index in expected])
    assert all(math.isnan(value) for value in timestamps[len(expected) :])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=st.lists(st.integers(0, 200), min_size=1, max_size=12, unique=True).map(sorted),
       extra=st.integers(1, 50), fps=st.sampled_from([1.0, 2.5, 5.0]), num_frames=st.integers(1, 6))
def test_frames_sampled_from_a_longer_video_are_timed_by_their_frames_indices(processor, positions, extra, fps,
                                                                              num_frames):
    total = positions[-1] + extra
    entry = {"fps": 10, "total_num_frames": total, "frames_indices": np.asarray(positions)}
    out = processor(videos=grey(len(positions)), video_metadata=[entry], fps=fps, num_frames=num_frames,
                    return_metadata=True, return_timestamps=True, return_tensors="pt")
    chosen = authors_rule(positions, 10.0, fps, num_frames)
    metadata = out["video_metadata"][0]
    assert metadata.frames_indices == [positions[i] for i in chosen]
    assert (metadata.total_num_frames, metadata.duration) == (total, pytest.approx(total / 10))
    assert shown_values(out["pixel_values_videos"][0], out["video_mask"][0]) == chosen
    assert out["video_timestamps"][0, : len(chosen)].tolist() == pytest.approx([positions[i] / 10 for i in chosen])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 30), num_frames=st.integers(1, 9), fps=st.sampled_from([0.5, 2.5, 5.0]))
def test_frames_without_a_rate_are_all_kept_up_to_num_frames_whatever_the_fps(processor, count, num_frames, fps):
    out = processor(videos=[list(grey(count))], fps=fps, num_frames=num_frames, return_metadata=True,
                    return_timestamps=True, pad_to_max_frames=False, return_tensors="pt")
    expected = uniform(count, num_frames)
    assert out["video_metadata"][0].frames_indices == expected
    assert out["video_metadata"][0].fps is None and out["video_metadata"][0].duration is None
    assert shown_values(out["pixel_values_videos"][0], out["video_mask"][0]) == expected
    assert out["video_mask"].shape == (1, len(expected))
    assert all(math.isnan(value) for value in out["video_timestamps"][0].tolist())


def test_the_processors_own_arguments_apply_where_the_call_gives_none(processor):
    frames, entry = grey(40), {"fps": 10}
    out = processor(videos=frames, video_metadata=entry, return_metadata=True, num_frames=None, fps=None,
                    do_sample_frames=None, random_frame_jitter=None)
    assert out["video_metadata"][0].frames_indices == authors_rule(list(range(40)), 10.0, 2.5, 4)
    assert out["pixel_values_videos"].shape == (1, 4, 3, SIZE, SIZE)
    # sample_frames called with the base class's argument only.
    assert processor.sample_frames(VideoMetadata(total_num_frames=40, fps=10)).tolist() == authors_rule(
        list(range(40)), 10.0, 2.5, 4
    )
    assert processor.sample_frames(VideoMetadata(total_num_frames=40, fps=10), num_frames=2, fps=5).tolist() == (
        authors_rule(list(range(40)), 10.0, 5.0, 2)
    )
    assert processor.sample_frames(VideoMetadata(total_num_frames=9)).tolist() == uniform(9, 4)


def test_a_calls_jitter_moves_inner_picks_and_the_processors_default_does_not(processor):
    frames, entry = np.zeros((100, 8, 8, 3), np.uint8), {"fps": 10}
    fixed = processor(videos=frames, video_metadata=entry, return_metadata=True, fps=5.0)
    runs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = processor(videos=frames, video_metadata=entry, return_metadata=True, fps=5.0, random_frame_jitter=True)
        runs.add(tuple(out["video_metadata"][0].frames_indices))
    assert tuple(fixed["video_metadata"][0].frames_indices) == tuple(authors_rule(list(range(100)), 10.0, 5.0, 4))
    assert len(runs) > 1
    jittering = CLIP2VideoVideoProcessor(size={"shortest_edge": SIZE}, crop_size=SIZE, num_frames=4,
                                         random_frame_jitter=True)
    with_rate, without_rate = set(), set()
    for seed in range(6):
        torch.manual_seed(seed)
        with_rate.add(tuple(jittering.sample_frames(VideoMetadata(total_num_frames=100, fps=10), fps=5.0)))
        without_rate.add(tuple(jittering.sample_frames(VideoMetadata(total_num_frames=100), fps=5.0)))
    assert len(with_rate) > 1 and len(without_rate) > 1  # the processor's own jitter, for frames with and without a rate
    assert tuple(jittering.sample_frames(VideoMetadata(total_num_frames=100, fps=10), fps=5.0,
                                         random_frame_jitter=False)) == tuple(fixed["video_metadata"][0].frames_indices)


# -- do_sample_frames=False and num_frames --------------------------------------------------------------------------


def test_without_sampling_exactly_num_frames_frames_are_used_and_one_more_is_refused(processor, clip):
    out = processor(videos=grey(4), do_sample_frames=False, return_metadata=True)
    assert out["video_metadata"][0].frames_indices == [0, 1, 2, 3] and out["video_mask"].tolist() == [[1, 1, 1, 1]]
    with pytest.raises(ValueError, match=r"^Video 1 has 5 frames but `num_frames` is 4: with `do_sample_frames=False` "
                                         r"every frame is used\. Sample them"):
        processor(videos=[grey(2), grey(5)], do_sample_frames=False)
    out = processor(videos=[clip], do_sample_frames=False, num_frames=30, return_metadata=True)
    assert out["video_metadata"][0].frames_indices == list(range(30)) and int(out["video_mask"].sum()) == 30
    assert [frame_index(frame) for frame in _decoded(processor, clip, num_frames=30)] == list(range(30))
    with pytest.raises(ValueError, match=r"^Video 0 \(.*clip\.mp4.*\) has 30 frames but `num_frames` is 29"):
        processor(videos=[clip], do_sample_frames=False, num_frames=29)


def _decoded(processor, video, **arguments):
    videos, _ = processor._decode_and_sample_videos(video, video_metadata=None, do_sample_frames=False, **arguments)
    return videos[0].frames


@pytest.mark.parametrize("num_frames", [1, 1024])
def test_num_frames_from_1_to_1024_is_accepted(processor, num_frames):
    out = processor(videos=grey(2), video_metadata={"fps": 1}, num_frames=num_frames, fps=5.0)
    assert out["video_mask"].shape == (1, num_frames) and int(out["video_mask"].sum()) == min(2, num_frames)
    assert CLIP2VideoVideoProcessor(num_frames=num_frames).num_frames == num_frames


@pytest.mark.parametrize("num_frames", [0, 1025, -3, True, 2.0, "4"])
def test_num_frames_outside_1_to_1024_is_refused_by_name(processor, num_frames):
    message = rf"^`num_frames` must be an integer from 1 to 1024 \(CLIP2Video scores at most 77 frames\), got {num_frames!r}\.$"
    if isinstance(num_frames, int) and not isinstance(num_frames, bool):  # other types: transformers' validation first
        with pytest.raises(ValueError, match=message):
            processor(videos=grey(2), num_frames=num_frames)
    with pytest.raises(ValueError, match=message):
        CLIP2VideoVideoProcessor(num_frames=num_frames)
    with pytest.raises(ValueError, match=message):
        processor.sample_frames(VideoMetadata(total_num_frames=3), num_frames=num_frames)


@pytest.mark.parametrize("fps", [5, 5.0, 1e-9, 0.5])
def test_fps_up_to_5_is_accepted(processor, fps):
    assert processor(videos=grey(3), video_metadata={"fps": 5}, fps=fps)["video_mask"].sum() >= 1
    assert CLIP2VideoVideoProcessor(fps=fps).fps == fps


@pytest.mark.parametrize("fps", [0, -1.0, 5.000001, 6, math.inf, math.nan, True])
def test_fps_outside_0_to_5_is_refused_by_name(processor, fps):
    if not isinstance(fps, bool):  # a bool: transformers' validation first
        with pytest.raises(ValueError, match=rf"^`fps` must be in \(0, 5\], got {fps!r}\.$"):
            processor(videos=grey(3), fps=fps)
    with pytest.raises(ValueError, match=rf"^`fps` must be in \(0, 5\], got {fps!r}\.$"):
        CLIP2VideoVideoProcessor(fps=fps)
    with pytest.raises(ValueError, match=rf"^`fps` must be in \(0, 5\], got {fps!r}\.$"):
        processor.sample_frames(VideoMetadata(total_num_frames=3, fps=5), fps=fps)
    with pytest.raises(ValueError, match=rf"^`fps` must be in \(0, 5\], got {fps!r}\.$"):
        processor.sample_frames(VideoMetadata(total_num_frames=3), fps=fps)


# -- construction aliases -------------------------------------------------------------------------------------------


def test_max_frames_and_sampling_fps_are_the_earlier_names_of_num_frames_and_fps():
    old = CLIP2VideoVideoProcessor(max_frames=7, sampling_fps=1.25)
    assert (old.num_frames, old.fps) == (7, 1.25)
    assert not hasattr(old, "max_frames") and not hasattr(old, "sampling_fps")
    both = CLIP2VideoVideoProcessor(max_frames=7, num_frames=7, sampling_fps=None, fps=1.0)
    assert (both.num_frames, both.fps) == (7, 1.0)
    assert CLIP2VideoVideoProcessor(max_frames=None).num_frames == 12
    with pytest.raises(ValueError, match=r"^Got max_frames=7 and num_frames=8; `max_frames` is `num_frames`\.$"):
        CLIP2VideoVideoProcessor(max_frames=7, num_frames=8)
    with pytest.raises(ValueError, match=r"^Got sampling_fps=1\.0 and fps=2\.0; `sampling_fps` is `fps`\.$"):
        CLIP2VideoVideoProcessor(sampling_fps=1.0, fps=2.0)
    with pytest.raises(ValueError, match=r"`fps` must be in \(0, 5\], got 6"):
        CLIP2VideoVideoProcessor(sampling_fps=6)
    with pytest.raises(ValueError, match=r"`video_backend` must be one of pyav, torchcodec, decord, got 'PyAV'\.$"):
        CLIP2VideoVideoProcessor(video_backend="PyAV")


def test_the_defaults_are_the_authors_msrvtt_settings():
    default = CLIP2VideoVideoProcessor()
    assert (default.num_frames, default.fps, default.random_frame_jitter, default.pad_to_max_frames) == (12, 2.5, False,
                                                                                                         True)
    assert (default.size, default.crop_size, default.video_backend) == (
        {"shortest_edge": 224}, {"height": 224, "width": 224}, "pyav"
    )


# -- metadata of frames given directly ------------------------------------------------------------------------------


def test_frames_indices_must_be_increasing_and_below_total_num_frames():
    accepted = frames_metadata({"fps": 10, "total_num_frames": 10, "frames_indices": [0, 4, 9]}, 3, 0)
    assert (accepted.frames_indices, accepted.total_num_frames, accepted.fps, accepted.duration) == ([0, 4, 9], 10,
                                                                                                     10.0, 1.0)
    for bad in ([0, 4, 10], [0, 4, 4], [4, 0, 9], [-1, 4, 9], [0, 4], [0, 4, 9, 9]):
        with pytest.raises(ValueError, match=r"^Video 2 has 3 frames but its `video_metadata` frames_indices are not 3 "
                                             r"increasing indices below total_num_frames=10\.$"):
            frames_metadata({"fps": 10, "total_num_frames": 10, "frames_indices": bad}, 3, 2)
    for bad in ([0.0, 4.0, 9.0], np.asarray([0.0, 4.0, 9.0]), "049", [0, True, 9]):
        with pytest.raises(ValueError, match=r"^Video 2: `video_metadata` frames_indices must be a list of integers"):
            frames_metadata({"total_num_frames": 10, "frames_indices": bad}, 3, 2)
    assert frames_metadata({"total_num_frames": 10, "frames_indices": torch.tensor([1, 2, 3])}, 3, 0).frames_indices == [
        1, 2, 3
    ]


def test_total_num_frames_and_rates_in_metadata_are_checked_by_name():
    assert frames_metadata(None, 5, 0).total_num_frames == 5 and frames_metadata(None, 5, 0).fps is None
    assert frames_metadata({"fps": None, "duration": None, "total_num_frames": None}, 5, 0).total_num_frames == 5
    with pytest.raises(ValueError, match=r"^Video 1 has 5 frames but its `video_metadata` says total_num_frames=6 "
                                         r"without the frames_indices of the given frames\.$"):
        frames_metadata({"total_num_frames": 6}, 5, 1)
    with pytest.raises(ValueError, match=r"^Video 1: `video_metadata` total_num_frames must be an integer, got 5\.0\.$"):
        frames_metadata({"total_num_frames": 5.0}, 5, 1)
    for key in ("fps", "duration"):
        for value in (0, -1, math.inf, math.nan, True, "10"):
            with pytest.raises(ValueError, match=rf"^Video 1: `video_metadata` {key} must be a positive number, got "):
                frames_metadata({key: value}, 5, 1)
    by_duration = frames_metadata({"duration": 2.0}, 5, 0)
    assert (by_duration.fps, by_duration.duration) == (2.5, 2.0)
    both = frames_metadata({"fps": 10, "duration": 2.0}, 5, 0)  # the rate wins, the duration follows from it
    assert (both.fps, both.duration) == (10, 0.5)
    assert frames_metadata({"fps": np.float32(2.0)}, 4, 0).duration == 2.0


def test_a_frame_rate_is_accepted_up_to_a_span_of_a_billion_seconds():
    assert checked_frame_rate(1e-9, 1, "The video") == 1e-9
    assert isinstance(checked_frame_rate(np.int64(3), 10, "The video"), float)
    with pytest.raises(ValueError, match=r"^Video 0: `video_metadata` fps=1e-09 puts 2 frames 2e\+09 s apart, over "
                                         r"1e\+09 s; give the frame rate in frames per second\.$"):
        checked_frame_rate(1e-9, 2, "Video 0")
    for value in (0, -2.0, math.inf, math.nan, False, None):
        with pytest.raises(ValueError, match=rf"^The video: `video_metadata` fps must be a positive number, got "):
            checked_frame_rate(value, 1, "The video")


def test_video_metadata_entries_match_the_videos(processor, clip):
    out = processor(videos=[grey(3), grey(2)], video_metadata=[[{"fps": 5}], [{"fps": 1}]], return_metadata=True,
                    fps=5.0)
    assert [metadata.fps for metadata in out["video_metadata"]] == [5.0, 1.0]
    assert out["video_mask"].sum(dim=1).tolist() == [3, 2]
    with pytest.raises(ValueError, match=r"^Got 2 videos but 1 `video_metadata` entries\.$"):
        processor(videos=[grey(3), grey(2)], video_metadata=[{"fps": 5}])
    with pytest.raises(ValueError, match=r"^Video 0 \(.*clip\.mp4.*\) is an encoded video whose frame rate and "
                                         r"timestamps are read from the file: `video_metadata` is only for videos given "
                                         r"as frames \(pass None for it\)\.$"):
        processor(videos=[clip], video_metadata=[{"fps": 10}])
    with pytest.raises(ValueError, match=r"^Video 1 has no frames\.$"):
        processor(videos=[grey(2), np.zeros((0, 4, 4, 3), np.uint8)])


# -- metadata of files ----------------------------------------------------------------------------------------------


def test_return_metadata_of_a_file_is_its_average_rate_and_the_frames_decoded(processor, tmp_path):
    # 20 frames at 20 fps, a one-second gap, 10 frames: the nominal rate stays 20, the average is 30 / 2.5 s = 12.
    # MPEG-4 Part 2 without B-frames: the file's own packet durations (0.05 s) are the frames' durations.
    times = [i / 20 for i in range(20)] + [2 + i / 20 for i in range(10)]
    path = write_video(tmp_path / "vfr.mp4", 30, 20, frame_times=times, codec="mpeg4")
    out = processor(videos=[path], return_metadata=True, return_timestamps=True, num_frames=6, fps=5.0)
    metadata = out["video_metadata"][0]
    assert metadata.fps == pytest.approx(30 / 2.5)
    assert (metadata.total_num_frames, metadata.duration) == (30, pytest.approx(2.5))
    assert (metadata.height, metadata.width, metadata.video_backend) == (48, 64, "pyav")
    expected = select_source_frames(times, [b - a for a, b in zip(times, times[1:])] + [0.05], 20.0, sampling_fps=5.0,
                                    max_frames=6)
    assert metadata.frames_indices == expected
    assert out["video_timestamps"][0].tolist() == pytest.approx([times[i] for i in expected])
    assert "video_metadata" not in processor(videos=[path], num_frames=6)
    assert "video_timestamps" not in processor(videos=[path], num_frames=6)


def test_a_calls_backend_and_decoding_limits_reach_the_decoder(processor, clip):
    out = processor(videos=[clip], video_backend="torchcodec", return_metadata=True)
    assert out["video_metadata"][0].video_backend == "torchcodec"
    size = len(open(clip, "rb").read())
    assert processor(videos=[clip], max_input_bytes=size)["video_mask"].sum() == 4
    with pytest.raises(ValueError, match=rf"max_input_bytes.*{size - 1}|{size - 1}.*max_input_bytes"):
        processor(videos=[clip], max_input_bytes=size - 1)
    with pytest.raises(ValueError, match=r"`video_backend` must be one of pyav, torchcodec, decord, got 'av'\."):
        processor(videos=[clip], video_backend="av")


# -- do_* flags, sizes, padding -------------------------------------------------------------------------------------


def test_pixels_are_resized_cropped_rescaled_and_normalised_as_clip_does(processor):
    out = processor(videos=grey(2) + 100, video_metadata={"fps": 5}, fps=5.0, return_tensors="pt")
    pixels = out["pixel_values_videos"]
    assert pixels.shape == (1, 4, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    for index, value in enumerate((100, 106)):
        for channel, expected in enumerate(normalised(value)):
            assert torch.allclose(pixels[0, index, channel], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    assert torch.count_nonzero(pixels[0, 2:]) == 0
    raw = processor(videos=grey(2) + 100, video_metadata={"fps": 5}, fps=5.0, do_normalize=False)
    assert torch.allclose(raw["pixel_values_videos"][0, 0], torch.tensor(100 / 255), atol=1e-6)
    unscaled = processor(videos=grey(2) + 100, video_metadata={"fps": 5}, fps=5.0, do_normalize=False,
                         do_rescale=False)
    assert torch.equal(unscaled["pixel_values_videos"][0, 0], torch.full((3, SIZE, SIZE), 100.0))


def test_size_and_crop_arguments_shape_the_frames(processor):
    frames = grey(2, height=12, width=20)
    assert processor(videos=frames, size={"shortest_edge": 8}, crop_size=8)["pixel_values_videos"].shape[-2:] == (8, 8)
    uncropped = processor(videos=frames, size={"shortest_edge": 6}, do_center_crop=False)
    assert uncropped["pixel_values_videos"].shape[-2:] == (6, 10)
    assert processor(videos=frames, crop_size={"height": 6, "width": 10})["pixel_values_videos"].shape[-2:] == (6, 10)
    assert processor(videos=frames, do_resize=False, crop_size=10)["pixel_values_videos"].shape[-2:] == (10, 10)
    assert processor(videos=frames, do_resize=False, do_center_crop=False)["pixel_values_videos"].shape[-2:] == (12, 20)
    with pytest.raises(ValueError, match=r"^Frames of video 1 are \(3, 6, 6\) after resizing but \(3, 6, 10\) for video "
                                         r"0; keep `do_center_crop=True` to batch videos of different sizes\.$"):
        processor(videos=[frames, grey(2, 8, 8)], size={"shortest_edge": 6}, do_center_crop=False)


def test_an_off_centre_crop_rounds_its_offset_like_torchvision():
    # 5 columns cropped to 2: torchvision's CenterCrop starts at round((5 - 2) / 2) = 2 (int() would give 1).
    frames = np.stack([np.stack([np.full((2, 3), 40 * column, np.uint8) for column in range(5)], axis=1)])
    processor = CLIP2VideoVideoProcessor(do_resize=False, crop_size={"height": 2, "width": 2}, do_normalize=False,
                                         do_rescale=False, num_frames=1)
    out = processor(videos=frames, do_sample_frames=False)
    assert out["pixel_values_videos"][0, 0, 0].tolist() == [[80.0, 120.0], [80.0, 120.0]]


def test_do_convert_rgb_decides_what_happens_to_grey_and_alpha_frames(processor):
    grey_frames = np.full((2, 6, 6, 1), 50, np.uint8)
    converted = processor(videos=grey_frames, do_normalize=False, do_rescale=False)
    assert torch.equal(converted["pixel_values_videos"][0, 0], torch.full((3, SIZE, SIZE), 50.0))
    with pytest.raises(ValueError, match=r"have 1 channel\(s\) .* and `do_convert_rgb=False`"):
        processor(videos=grey_frames, do_convert_rgb=False)
    rgba = np.concatenate([np.full((2, 6, 6, 3), 70, np.uint8), np.zeros((2, 6, 6, 1), np.uint8)], axis=-1)
    assert torch.equal(processor(videos=rgba, do_normalize=False, do_rescale=False)["pixel_values_videos"][0, 1],
                       torch.full((3, SIZE, SIZE), 70.0))
    with pytest.raises(ValueError, match=r"have 4 channel\(s\) .* and `do_convert_rgb=False`"):
        processor(videos=rgba, do_convert_rgb=False)


def test_padding_goes_to_num_frames_or_to_the_longest_video(processor):
    out = processor(videos=[grey(1), grey(3)], do_sample_frames=False, return_timestamps=True)
    assert out["video_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 1, 0]]
    short = processor(videos=[grey(1), grey(3)], do_sample_frames=False, pad_to_max_frames=False,
                      return_timestamps=True)
    assert short["video_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert short["pixel_values_videos"].shape == (2, 3, 3, SIZE, SIZE)
    assert torch.count_nonzero(short["pixel_values_videos"][0, 1:]) == 0
    assert all(math.isnan(value) for value in short["video_timestamps"].flatten().tolist())
    assert short["video_mask"].dtype == torch.int64 and short["video_timestamps"].dtype == torch.float64


def test_stack_videos_pads_with_zeros_and_nan_and_refuses_to_cut():
    one = {"pixel_values_videos": torch.ones(1, 2, 3, 2, 2), "video_mask": torch.ones(1, 2, dtype=torch.int64),
           "video_timestamps": torch.tensor([[0.0, 0.5]], dtype=torch.float64)}
    two = {key: value[:, :1] for key, value in one.items()}
    stacked = stack_videos([one, two])
    assert stacked["video_mask"].tolist() == [[1, 1], [1, 0]]
    assert torch.equal(stacked["pixel_values_videos"][1, 1], torch.zeros(3, 2, 2))
    assert stacked["video_timestamps"][0].tolist() == [0.0, 0.5] and math.isnan(stacked["video_timestamps"][1, 1])
    padded = stack_videos([one], 4)
    assert padded["video_mask"].tolist() == [[1, 1, 0, 0]] and padded["pixel_values_videos"].shape == (1, 4, 3, 2, 2)
    assert set(stack_videos([two], 1)) == set(one) and stack_videos([two], 1)["video_mask"].tolist() == [[1]]
    without = stack_videos([{"pixel_values_videos": one["pixel_values_videos"], "video_mask": one["video_mask"]}])
    assert set(without) == {"pixel_values_videos", "video_mask"}
    with pytest.raises(ValueError, match=r"^cannot pad 2 frames to 1$"):
        stack_videos([one, two], 1)


def test_unknown_arguments_are_refused(processor):
    with pytest.raises((TypeError, ValueError), match=r"max_frames|sampling_fps"):
        processor(videos=grey(2), max_frames=2)


def test_a_calls_input_data_format_and_device_reach_frames_given_directly(processor):
    # (frames, 3, 5, 4): the last axis could be RGBA, so only `input_data_format` says the channels come first.
    rng = np.random.default_rng(0)
    last = rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    first = np.ascontiguousarray(last.transpose(0, 3, 1, 2))
    expected = processor(videos=last, do_sample_frames=False, input_data_format="channels_last")["pixel_values_videos"]
    given = processor(videos=first, do_sample_frames=False, input_data_format="channels_first", device="cpu",
                      return_tensors="pt")
    assert torch.equal(given["pixel_values_videos"], expected) and given["pixel_values_videos"].device.type == "cpu"
    inferred = processor(videos=first, do_sample_frames=False)["pixel_values_videos"]
    assert not torch.equal(inferred, expected)  # read as 3x5 RGBA frames: the argument is what made the difference


def test_the_decoding_hook_samples_frames_given_directly_with_the_calls_options(processor):
    # Called as the base class calls it, without `sample_indices_fn`: the call's num_frames and fps still apply.
    videos, metadata = processor._decode_and_sample_videos(grey(40), video_metadata={"fps": 10}, do_sample_frames=True,
                                                           num_frames=2, fps=5.0)
    expected = authors_rule(list(range(40)), 10.0, 5.0, 2)
    assert metadata[0].frames_indices == expected and len(videos[0].frames) == len(expected)
    assert [int(frame[0, 0, 0]) // 6 for frame in videos[0].frames] == expected
    assert videos[0].timestamps == pytest.approx([index / 10 for index in expected]) and videos[0].data_format is None


def test_only_the_chosen_frame_images_are_read_under_the_calls_limits(processor, tmp_path):
    from PIL import Image

    paths = []
    for index in range(10):
        Image.fromarray(np.full((8, 8, 3), 6 * index, np.uint8)).save(tmp_path / f"{index:02d}.png")
        paths.append(str(tmp_path / f"{index:02d}.png"))
    (tmp_path / "03.png").write_bytes(b"not an image")  # never chosen below, so never read
    out = processor(videos=[paths], video_metadata=[{"fps": 5}], fps=1.0, num_frames=4, return_metadata=True)
    expected = authors_rule(list(range(10)), 5.0, 1.0, 4)
    assert 3 not in expected and out["video_metadata"][0].frames_indices == expected
    assert shown_values(out["pixel_values_videos"][0], out["video_mask"][0]) == expected
    size = (tmp_path / "00.png").stat().st_size
    with pytest.raises(ValueError, match=r"max_input_bytes"):
        processor(videos=[paths], video_metadata=[{"fps": 5}], fps=1.0, max_input_bytes=size - 1)


def test_the_earlier_names_warn_once_naming_the_new_ones(caplog):
    import logging

    # transformers' `warning_once` remembers what it said in this process: forget, so that this test sees it.
    logging.Logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            CLIP2VideoVideoProcessor(max_frames=6, sampling_fps=5)
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("`max_frames` is deprecated: the video processor's argument is `num_frames`. Saved folders "
                          "with `max_frames` still load; save them again to write `num_frames`.") == 1, messages
    assert messages.count("`sampling_fps` is deprecated: the video processor's argument is `fps`. Saved folders with "
                          "`sampling_fps` still load; save them again to write `fps`.") == 1, messages


def test_a_calls_jitter_moves_the_inner_picks_of_a_file_too(processor, tmp_path):
    path = write_video(tmp_path / "long.mp4", 100, 10)
    fixed = processor(videos=[path], fps=5.0, return_metadata=True)["video_metadata"][0].frames_indices
    assert fixed == authors_rule(list(range(100)), 10.0, 5.0, 4)
    runs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        metadata = processor(videos=[path], fps=5.0, random_frame_jitter=True, return_metadata=True)["video_metadata"]
        runs.add(tuple(metadata[0].frames_indices))
    assert len(runs) > 1


def test_a_datasets_video_dict_is_decoded_from_its_bytes_or_its_path(processor, clip):
    content = open(clip, "rb").read()
    expected = processor(videos=[clip], return_metadata=True)["video_metadata"][0].frames_indices
    for video in ({"path": clip, "bytes": None}, {"bytes": content}, {"path": "elsewhere.mp4", "bytes": content}):
        out = processor(videos=[video], return_metadata=True)
        assert out["video_metadata"][0].frames_indices == expected and out["video_metadata"][0].total_num_frames == 30
    with pytest.raises(ValueError, match=r"^Video 1 is a \{'path', 'bytes'\} dict whose 'bytes' is a str, not bytes\.$"):
        processor(videos=[clip, {"path": None, "bytes": "clip.mp4"}])


def test_the_metadata_of_a_file_is_read_from_the_decoded_frames(processor, tmp_path):
    # Video starting 0.5 s after the audio: the duration is from its first frame to the end of its last.
    late = write_video_after_audio(tmp_path / "late.mp4", 10, 10, 5)
    metadata = processor(videos=[late], num_frames=1, return_metadata=True)["video_metadata"][0]
    assert (metadata.duration, metadata.fps, metadata.total_num_frames) == (pytest.approx(1.0), 10.0, 10)
    assert (metadata.height, metadata.width, len(metadata.frames_indices)) == (48, 64, 1)
    # The second frame lasts 0.45 s, the last 0.05 s: the duration ends with the last one's.
    uneven = write_video(tmp_path / "uneven.mp4", 6, 20, frame_times=[0, 0.05, 0.5, 0.55, 0.6, 0.65], codec="mpeg4")
    assert processor(videos=[uneven], return_metadata=True)["video_metadata"][0].duration == pytest.approx(0.7)


def test_a_torchcodec_decoder_is_read_by_torchcodec_whatever_the_backend(processor, clip):
    from torchcodec.decoders import VideoDecoder

    metadata = processor(videos=[VideoDecoder(clip)], return_metadata=True)["video_metadata"][0]
    assert (metadata.video_backend, metadata.total_num_frames) == ("torchcodec", 30)


def test_the_span_of_frames_given_directly_counts_every_source_frame(processor):
    # Two frames at 1.5e-9 fps are 1.3e9 s apart: over the limit, whatever the frames given.
    with pytest.raises(ValueError, match=r"^The video: `video_metadata` fps=1\.5e-09 puts 2 frames 1\.33e\+09 s apart"):
        processor.sample_frames(VideoMetadata(total_num_frames=2, fps=1.5e-9))
    with pytest.raises(ValueError, match=r"^The video: `video_metadata` fps must be a positive number, got -1\.$"):
        processor.sample_frames(VideoMetadata(total_num_frames=2, fps=-1))
    assert checked_frame_rate(0.5, 500_000_000, "Video 0") == 0.5  # exactly 10^9 s
    with pytest.raises(ValueError, match=r"puts 500000001 frames 1e\+09 s apart"):
        checked_frame_rate(0.5, 500_000_001, "Video 0")


def test_refusals_of_video_metadata_name_the_video_and_show_the_value(processor):
    with pytest.raises(ValueError, match=r"^Video 1: `video_metadata` frames_indices must be a list of integers \(one "
                                         r"source frame index per given frame\), got \[0\.0, 4\.0, 9\.0\]\.$"):
        frames_metadata({"total_num_frames": 10, "frames_indices": [0.0, 4.0, 9.0]}, 3, 1)
    with pytest.raises(ValueError, match=r"^Video 1: `video_metadata` fps=1\.5e-09 puts 2 frames 1\.33e\+09 s apart"):
        processor(videos=[grey(2), grey(2)], video_metadata=[{"fps": 1}, {"fps": 1.5e-9}])


# -- what the hooks are given (the base class's contract), found unpinned by the in-process mutmut run -----------------


def test_a_calls_device_is_where_the_frames_are_processed(processor, clip):
    # transformers' `device`: the frames are moved there before resizing. The meta device shows it without a GPU.
    for video in (grey(3), clip):
        out = processor(videos=[video], device="meta", return_tensors="pt")
        assert out["pixel_values_videos"].device.type == "meta"
        assert out["pixel_values_videos"].shape == (1, 4, 3, SIZE, SIZE)
    assert processor(videos=[grey(3)], return_tensors="pt")["pixel_values_videos"].device.type == "cpu"


def test_the_decoding_hook_samples_with_the_sample_indices_fn_it_is_given(processor):
    # `sample_indices_fn(metadata=...)` is how `BaseVideoProcessor.preprocess` says which frames to keep.
    seen = []

    def every_third(metadata):
        seen.append(metadata.total_num_frames)
        return list(range(0, metadata.total_num_frames, 3))

    videos, metadata = processor._decode_and_sample_videos(grey(10), video_metadata={"fps": 10}, do_sample_frames=True,
                                                           sample_indices_fn=every_third)
    assert seen == [10] and metadata[0].frames_indices == [0, 3, 6, 9]
    assert [int(frame[0, 0, 0]) // 6 for frame in videos[0].frames] == [0, 3, 6, 9]
    # Without sampling every frame is used, whatever function is given.
    videos, metadata = processor._decode_and_sample_videos(grey(4), video_metadata=None, do_sample_frames=False,
                                                           sample_indices_fn=every_third)
    assert seen == [10] and metadata[0].frames_indices == [0, 1, 2, 3] and len(videos[0].frames) == 4


def test_the_decoding_hook_jitters_frames_given_directly_when_asked(processor, tmp_path):
    fixed = authors_rule(list(range(100)), 10.0, 5.0, 4)
    runs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        _, metadata = processor._decode_and_sample_videos(np.zeros((100, 4, 4, 3), np.uint8), video_metadata={"fps": 10},
                                                          do_sample_frames=True, fps=5.0, random_frame_jitter=True)
        runs.add(tuple(metadata[0].frames_indices))
    assert len(runs) > 1 and all(run[0] == fixed[0] and len(run) == 4 for run in runs)
    _, metadata = processor._decode_and_sample_videos(np.zeros((100, 4, 4, 3), np.uint8), video_metadata={"fps": 10},
                                                      do_sample_frames=True, fps=5.0)
    assert metadata[0].frames_indices == fixed
    # Not told, the hook jitters as the processor does, for frames given directly and for files.
    jittering = CLIP2VideoVideoProcessor(size={"shortest_edge": SIZE}, crop_size=SIZE, num_frames=4,
                                         random_frame_jitter=True)
    path = write_video(tmp_path / "long.mp4", 100, 10)
    for video, entry in ((np.zeros((100, 4, 4, 3), np.uint8), {"fps": 10}), (path, None)):
        runs = set()
        for seed in range(6):
            torch.manual_seed(seed)
            _, metadata = jittering._decode_and_sample_videos(video, video_metadata=entry, do_sample_frames=True,
                                                              fps=5.0)
            runs.add(tuple(metadata[0].frames_indices))
        assert len(runs) > 1 and all(run[0] == fixed[0] and len(run) == 4 for run in runs)


def test_input_data_format_describes_frames_given_never_frame_images_read(processor, tmp_path):
    from PIL import Image

    paths = []
    for index in range(3):
        Image.fromarray(np.full((6, 10, 3), 6 * index, np.uint8)).save(tmp_path / f"{index}.png")
        paths.append(str(tmp_path / f"{index}.png"))
    alone = processor(videos=[paths], do_sample_frames=False)["pixel_values_videos"]
    batch = processor(videos=[paths, np.ascontiguousarray(grey(3, 6, 10).transpose(0, 3, 1, 2))],
                      do_sample_frames=False, input_data_format="channels_first")["pixel_values_videos"]
    assert torch.equal(batch[0], alone[0])
    assert shown_values(alone[0], torch.tensor([1, 1, 1])) == [0, 1, 2]


def test_the_decoding_hook_takes_no_metadata_for_some_videos_of_a_batch(processor):
    # transformers' type check refuses None entries in a call's `video_metadata`; the hook takes one entry or None
    # per video (what `as_metadata_list` makes of every form).
    videos, metadata = processor._decode_and_sample_videos([grey(6), grey(40)], video_metadata=[None, {"fps": 10}],
                                                           do_sample_frames=True, fps=5.0)
    assert metadata[0].fps is None and metadata[0].frames_indices == uniform(6, 4)
    assert all(math.isnan(value) for value in videos[0].timestamps)
    assert metadata[1].fps == 10 and metadata[1].frames_indices == authors_rule(list(range(40)), 10.0, 5.0, 4)
    assert videos[1].timestamps == pytest.approx([index / 10 for index in metadata[1].frames_indices])


def test_return_tensors_np_gives_numpy_arrays_of_the_documented_dtypes(processor):
    out = processor(videos=[grey(2), grey(3)], do_sample_frames=False, return_timestamps=True, return_tensors="np")
    assert all(isinstance(value, np.ndarray) for value in out.values())
    assert (out["pixel_values_videos"].dtype, out["video_mask"].dtype, out["video_timestamps"].dtype) == (
        np.float32, np.int64, np.float64)
    assert out["pixel_values_videos"].shape == (2, 4, 3, SIZE, SIZE) and out["video_mask"].tolist() == [
        [1, 1, 0, 0], [1, 1, 1, 0]]


def test_the_decoding_hook_reads_frame_images_under_the_default_limits(processor, tmp_path):
    # Called with the base class's arguments only: `DecodeLimits.from_env()` applies.
    from PIL import Image

    paths = []
    for index in range(5):
        Image.fromarray(np.full((6, 8, 3), 6 * index, np.uint8)).save(tmp_path / f"{index}.png")
        paths.append(str(tmp_path / f"{index}.png"))
    videos, metadata = processor._decode_and_sample_videos(paths, video_metadata=None, do_sample_frames=True)
    assert metadata[0].frames_indices == uniform(5, 4) and videos[0].data_format == "channels_last"
    assert [int(frame[0, 0, 0]) // 6 for frame in videos[0].frames] == uniform(5, 4)


def test_the_preparing_hook_converts_as_the_processor_does_when_not_told(processor):
    # `do_convert_rgb` defaults to the processor's own (True here, False for the second processor).
    video = SampledVideo(np.full((2, 6, 6, 1), 50, np.uint8), [math.nan, math.nan])
    (prepared,) = processor._prepare_input_videos([video])
    assert prepared.frames.dtype == torch.uint8 and torch.equal(prepared.frames, torch.full((2, 3, 6, 6), 50,
                                                                                           dtype=torch.uint8))
    keeping = CLIP2VideoVideoProcessor(size={"shortest_edge": SIZE}, crop_size=SIZE, num_frames=4, do_convert_rgb=False)
    with pytest.raises(ValueError, match=r"have 1 channel\(s\) .* and `do_convert_rgb=False`"):
        keeping._prepare_input_videos([video])


def test_a_decoding_limit_given_as_none_is_a_limit_not_given(processor, clip):
    # As for every argument: None means the processor's own value (here the `DecodeLimits` defaults).
    limits = {name: None for name in ("max_input_bytes", "max_frame_pixels", "max_duration_seconds", "max_source_frames",
                                      "url_timeout_seconds", "allow_private_urls", "max_download_seconds",
                                      "max_decoded_pixels")}
    for video in (grey(3), clip):
        given = processor(videos=[video], return_metadata=True, **limits)
        default = processor(videos=[video], return_metadata=True)
        assert torch.equal(given["pixel_values_videos"], default["pixel_values_videos"])
        assert given["video_metadata"][0].frames_indices == default["video_metadata"][0].frames_indices
