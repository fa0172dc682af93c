"""CLIP2VideoVideoProcessor on real video files written here: which frames are sampled, how they are prepared, which
inputs are accepted and how bad ones fail."""

import fractions
import math
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from clip2video.processing import CLIP2VideoVideoProcessor
from clip2video.processing.frame_sampling_clip2video import ffmpeg_cfr_frame_indices, select_source_frames, uniform_positions
from clip2video.processing.video_decoding_clip2video import read_video_frames
from clip2video.processing.video_processing_clip2video import stack_videos
from tests.helpers.videos import (
    HEIGHT,
    WIDTH,
    frame_index,
    index_frame,
    natural_frames,
    write_audio_only,
    write_video,
    write_video_after_audio,
)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------------------------------
# Test videos: frame i shows its index in binary (`helpers.videos.index_frame`), so that a decoded frame tells which
# source frame it is.


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "30fps_10s": write_video(folder / "30fps_10s.mp4", 300, 30),
        "25fps_4s_mpeg4": write_video(folder / "25fps_4s.mp4", 100, 25, codec="mpeg4", qscale="2"),
        "24fps_5s": write_video(folder / "24fps_5s.mp4", 120, 24),
        "10fps_60s": write_video(folder / "10fps_60s.mp4", 600, 10, g="25"),
        "one_frame": write_video(folder / "one_frame.mp4", 1, 30),
        "2fps_4s": write_video(folder / "2fps_4s.mp4", 8, 2),
        "30fps_1s": write_video(folder / "30fps_1s.mp4", 30, 30),
    }


def decoded_indices(path, fps=2.5, num_frames=12):
    """Source frame indices and times the processor's sampling decodes from a file."""

    def select(table):
        return select_source_frames(table.times, table.durations, table.average_fps, fps, num_frames)

    decoded = read_video_frames(path, select)
    return [frame_index(frame) for frame in decoded.frames], decoded.timestamps


# ----------------------------------------------------------------------------------------------------------------------
# Sampled frames follow the authors' rule, computed here independently from the known frame rate and length.


def expected_extracted_frames(num_frames: int, fps: int) -> list[int]:
    """Source frame behind each image of `ffmpeg -r 5` for a constant-rate video of at least 10 fps: images 0 and 1
    are frames 0 and 1, image k >= 2 is the first frame still on screen at (k - 1.1) / 5 s, i.e. the smallest j with
    (j + 1) / fps >= (k - 1.1) / 5, for as long as such a frame exists."""
    images = [0, 1][:num_frames]
    k = 2
    while True:
        target = fractions.Fraction(10 * k - 11, 50)  # (k - 1.1) / 5 seconds, exactly
        j = math.ceil(target * fps - 1)
        if j > num_frames - 1:
            return images
        images.append(j)
        k += 1


def expected_sample(num_frames: int, fps: int, feature_framerate: int = 2, max_frames: int = 12) -> list[int]:
    """The authors' `RawFrameExtractor.video_to_tensor` over those images (np.linspace, rounded down, twice)."""
    images = expected_extracted_frames(num_frames, fps)
    kept = np.linspace(0, len(images) - 1, num=len(images) // feature_framerate, dtype=int)
    if len(kept) > max_frames:
        kept = kept[np.linspace(0, len(kept) - 1, num=max_frames, dtype=int)]
    return [images[i] for i in kept]


def test_extraction_rule_closed_form_matches_known_ffmpeg_output():
    # ffmpeg 5.1 `-r 5` on a 300-frame 30 fps and a 100-frame 24 fps video wrote exactly these frames.
    assert expected_extracted_frames(300, 30) == [0, 1] + [6 * k - 1 for k in range(1, 51)]
    assert expected_extracted_frames(100, 24)[:10] == [0, 1, 4, 9, 13, 18, 23, 28, 33, 37]
    assert len(expected_extracted_frames(100, 24)) == 22


@pytest.mark.parametrize(
    "name, num_frames, fps",
    [
        ("30fps_10s", 300, 30),
        ("25fps_4s_mpeg4", 100, 25),
        ("24fps_5s", 120, 24),
        ("10fps_60s", 600, 10),
        ("30fps_1s", 30, 30),
    ],
)
def test_sampled_frames_follow_the_authors_rule(videos, name, num_frames, fps):
    expected = expected_sample(num_frames, fps)
    indices, timestamps = decoded_indices(videos[name])
    assert indices == expected
    assert timestamps == pytest.approx([index / fps for index in expected])


@pytest.mark.parametrize(
    "filename, codec",
    [("clip.mkv", "libx264"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4"), ("clip.mov", "mpeg4"),
     ("clip.h264", "libx264")],  # the last one is a raw stream without timestamps: frames numbered at its rate
)
def test_other_containers_and_codecs(tmp_path, filename, codec):
    path = write_video(tmp_path / filename, 60, 30, codec=codec)
    indices, timestamps = decoded_indices(path)
    assert indices == expected_sample(60, 30) == [0, 5, 17, 29, 41, 59]
    assert timestamps == pytest.approx([index / 30 for index in indices], abs=1e-3)  # Matroska counts milliseconds


def test_thirty_fps_ten_seconds_gives_these_twelve_moments(videos):
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32)
    output = processor(videos["30fps_10s"], return_timestamps=True)
    expected = [0, 17, 41, 65, 101, 125, 149, 173, 209, 233, 257, 299]
    assert output["video_timestamps"][0].tolist() == pytest.approx([index / 30 for index in expected])


def test_vatex_rate_and_max_frames(videos):
    # feature_framerate 1 (VATEX, 5 fps) keeps every extracted image before the reduction to max_frames.
    indices, _ = decoded_indices(videos["30fps_10s"], fps=5)
    assert indices == expected_sample(300, 30, feature_framerate=1)
    indices, _ = decoded_indices(videos["30fps_10s"], num_frames=4)
    assert indices == expected_sample(300, 30, max_frames=4) == [0, 89, 185, 299]


def test_short_videos_give_fewer_frames_and_never_repeat_one(videos):
    indices, timestamps = decoded_indices(videos["one_frame"])
    assert indices == [0] and timestamps == [0.0]
    # 1 s at 30 fps: 7 images, 3 kept.
    assert decoded_indices(videos["30fps_1s"])[0] == expected_sample(30, 30) == [0, 11, 29]
    # 2 fps is slower than ffmpeg's 5 fps: ffmpeg repeats frames, we keep each once, in order.
    indices, timestamps = decoded_indices(videos["2fps_4s"])
    assert indices == sorted(set(indices)) and len(indices) >= 4
    assert timestamps == pytest.approx([index / 2 for index in indices])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
@pytest.mark.parametrize("fps", [30, fractions.Fraction(30000, 1001), 24, 12, 7, 3])
def test_extraction_matches_the_ffmpeg_command_line(tmp_path, fps):
    path = write_video(tmp_path / "video.mp4", 45, fps)
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-r", "5", "-q", "0", str(tmp_path / "%08d.jpg")], check=True)
    from_ffmpeg = [frame_index(np.asarray(Image.open(jpeg))) for jpeg in sorted(tmp_path.glob("*.jpg"))]
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.duration) for p in container.demux(stream) if p.size)
        times = [float(pts * stream.time_base) for pts, _ in packets]
        durations = [float(duration * stream.time_base) for _, duration in packets]
        assert ffmpeg_cfr_frame_indices(times, durations, float(stream.average_rate)) == from_ffmpeg


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
def test_extraction_matches_ffmpeg_when_the_video_starts_after_the_audio(tmp_path):
    # ffmpeg counts time from the start of the file (here the audio), so the first image is repeated: kept once.
    path = write_video_after_audio(tmp_path / "late_video.mp4", 45, 30, video_start_frames=9)  # starts at 0.3 s
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-r", "5", "-q", "0", str(tmp_path / "%08d.jpg")], check=True)
    from_ffmpeg = [frame_index(np.asarray(Image.open(jpeg))) for jpeg in sorted(tmp_path.glob("*.jpg"))]
    assert from_ffmpeg[:2] == [0, 0]
    indices, timestamps = decoded_indices(path, fps=5, num_frames=100)
    assert indices == sorted(set(from_ffmpeg))
    assert timestamps == pytest.approx([0.3 + index / 30 for index in indices], abs=1e-3)


def test_uniform_positions_reproduce_the_authors_linspace():
    # np.linspace's own float rounding is part of the rule (31 images, 23 kept: not the exact-fraction floor).
    assert uniform_positions(62, 2.5, 100).tolist() == np.linspace(0, 61, 31, dtype=int).tolist()
    kept = np.linspace(0, 61, 31, dtype=int)
    assert uniform_positions(62, 2.5, 23).tolist() == kept[np.linspace(0, 30, 23, dtype=int)].tolist()
    assert uniform_positions(1, 2.5, 12).tolist() == [0]


def test_training_jitter_moves_inner_frames_within_their_interval():
    plain = uniform_positions(400, 2.5, 12)  # 200 kept images, picks every ~18: half gap 9
    picks = np.linspace(0, 199, 12, dtype=int)
    half_gap = (picks[1] - picks[0]) // 2
    kept = np.linspace(0, 399, 200, dtype=int)
    seen_offsets = set()
    for seed in range(30):
        jittered = uniform_positions(400, 2.5, 12, random_jitter=True, generator=torch.Generator().manual_seed(seed))
        assert jittered[0] == plain[0] and jittered[-1] == plain[-1]
        assert np.all(np.diff(jittered) > 0)
        positions_in_kept = np.searchsorted(kept, jittered)
        offsets = positions_in_kept[1:-1] - picks[1:-1]
        assert np.all((offsets >= -half_gap) & (offsets < half_gap))
        seen_offsets.update(offsets.tolist())
    assert min(seen_offsets) == -half_gap and max(seen_offsets) == half_gap - 1
    # Too few images for a half gap above 2: no jitter, as in the authors' code.
    assert uniform_positions(60, 2.5, 12, random_jitter=True).tolist() == uniform_positions(60, 2.5, 12).tolist()


def test_training_jitter_through_the_processor_is_seeded_by_torch():
    frames = np.zeros((400, 8, 8, 3), np.uint8)
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 8}, crop_size=8, random_frame_jitter=True)

    def times(seed):
        torch.manual_seed(seed)
        return processor(frames, video_metadata={"fps": 10}, return_timestamps=True)["video_timestamps"][0].tolist()

    assert times(0) == times(0)
    assert any(times(0) != times(seed) for seed in range(1, 4))
    evaluation = CLIP2VideoVideoProcessor(size={"shortest_edge": 8}, crop_size=8)
    assert evaluation(frames, video_metadata={"fps": 10}, return_timestamps=True)["video_timestamps"][0].tolist() == [
        index / 10 for index in expected_sample(400, 10)
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Outputs and CLIP preprocessing.


def authors_transform(image: Image.Image) -> torch.Tensor:
    """The authors' `RawFrameExtractor._transform` (torchvision on PIL)."""
    return transforms.Compose(
        [
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )(image.convert("RGB"))


def test_defaults_are_the_papers():
    processor = CLIP2VideoVideoProcessor()
    assert processor.fps == 2.5 and processor.num_frames == 12 and not processor.random_frame_jitter
    assert processor.size.shortest_edge == 224 and (processor.crop_size.height, processor.crop_size.width) == (224, 224)
    assert tuple(processor.image_mean) == CLIP_MEAN and tuple(processor.image_std) == CLIP_STD
    assert processor.resample == 3  # bicubic


def test_default_output_on_a_file(videos):
    output = CLIP2VideoVideoProcessor()(videos["30fps_10s"], return_tensors="pt")
    assert set(output) == {"pixel_values_videos", "video_mask"}
    assert output["pixel_values_videos"].shape == (1, 12, 3, 224, 224)
    assert output["pixel_values_videos"].dtype == torch.float32
    assert output["video_mask"].dtype == torch.int64 and output["video_mask"].tolist() == [[1] * 12]


@pytest.mark.parametrize("height, width", [(240, 320), (61, 97), (720, 404)])
def test_frames_are_prepared_like_the_authors_pil_transform(height, width):
    frames = natural_frames(3, height, width)
    ours = CLIP2VideoVideoProcessor()(frames)["pixel_values_videos"][0, :3]
    theirs = torch.stack([authors_transform(Image.fromarray(frame)) for frame in frames])
    # Same geometry; resampling differs by rounding only (one grey level is 1/255/0.27 = 0.015 here).
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().mean() < 0.01
    assert (ours - theirs).abs().max() < 0.1


def test_file_frames_equal_the_decoded_frames_processed_directly(videos):
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32)
    from_file = processor(videos["24fps_5s"])["pixel_values_videos"][0]
    indices = expected_sample(120, 24)
    with av.open(videos["24fps_5s"]) as container:
        all_frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    from_arrays = processor(all_frames[indices])["pixel_values_videos"][0, : len(indices)]
    torch.testing.assert_close(from_file[: len(indices)], from_arrays)


@pytest.mark.parametrize("name", ["10fps_60s", "30fps_10s"])
def test_seeking_and_skipping_decode_the_same_pixels_as_a_full_decode(videos, name):
    # 10fps_60s has a keyframe every 2.5 s (one seek per sampled frame), 30fps_10s every 8.3 s; both have B-frames.
    def every_frame(table):
        return select_source_frames(table.times, table.durations, table.average_fps, 2.5, 12)

    decoded = read_video_frames(videos[name], every_frame)
    with av.open(videos[name]) as container:
        full = {round(frame.time, 6): frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)}
    for timestamp, frame in zip(decoded.timestamps, decoded.frames):
        np.testing.assert_array_equal(frame, full[round(timestamp, 6)])


def test_the_reused_rgb_converter_follows_each_files_size_and_thread(tmp_path):
    # The RGB converter is kept per thread across files; files of other sizes and pixel formats, read in turn and
    # from two threads at once, must still give exactly what a fresh conversion of each frame gives.
    from concurrent.futures import ThreadPoolExecutor

    paths = [
        write_video(tmp_path / "small.mp4", 10, 5, width=64, height=48),
        write_video(tmp_path / "large.mp4", 10, 5, width=320, height=240),
        write_video(tmp_path / "mpeg4.avi", 10, 5, codec="mpeg4", width=96, height=64),
    ]

    def read(path):
        return read_video_frames(path, lambda table: list(range(len(table.times)))).frames

    expected = {}
    for path in paths:
        with av.open(path) as container:
            expected[path] = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    order = paths * 3
    with ThreadPoolExecutor(2) as pool:
        for path, frames in zip(order + order, [read(path) for path in order] + list(pool.map(read, order))):
            assert len(frames) == len(expected[path])
            for frame, reference in zip(frames, expected[path]):
                np.testing.assert_array_equal(frame, reference)


def test_batch_of_mixed_lengths_and_sizes_is_padded_with_zeros(videos, tmp_path):
    odd = write_video(tmp_path / "odd.mp4", 30, 30, width=98, height=62)
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32)
    output = processor([videos["30fps_10s"], videos["one_frame"], odd], return_timestamps=True)
    pixels, mask = output["pixel_values_videos"], output["video_mask"]
    assert pixels.shape == (3, 12, 3, 32, 32)
    assert mask.tolist() == [[1] * 12, [1] + [0] * 11, [1] * 3 + [0] * 9]
    assert torch.all(pixels[1, 1:] == 0) and torch.all(pixels[2, 3:] == 0)
    assert torch.isnan(output["video_timestamps"][1, 1:]).all()
    # The same video alone gives the same values.
    torch.testing.assert_close(processor(odd)["pixel_values_videos"][0], pixels[2])

    longest = processor([videos["one_frame"], odd], pad_to_max_frames=False)
    assert longest["pixel_values_videos"].shape == (2, 3, 3, 32, 32)
    assert longest["video_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


# ----------------------------------------------------------------------------------------------------------------------
# Inputs other than files.


@pytest.fixture(scope="module")
def small_processor():
    return CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size=16, num_frames=4)


def test_array_tensor_and_pil_inputs_agree(small_processor):
    frames = natural_frames(3, 24, 40)
    reference = small_processor(frames)["pixel_values_videos"]
    as_list = [frames[i] for i in range(3)]
    for video in (
        torch.from_numpy(frames),
        torch.from_numpy(frames).permute(0, 3, 1, 2),
        as_list,
        [Image.fromarray(frame) for frame in frames],
        [Image.fromarray(frame).convert("RGBA") for frame in frames],
        np.concatenate([frames, np.full((3, 24, 40, 1), 7, np.uint8)], axis=-1),  # RGBA: alpha dropped as PIL does
    ):
        torch.testing.assert_close(small_processor(video)["pixel_values_videos"], reference)
    batch = small_processor(np.stack([frames, frames[::-1]]))["pixel_values_videos"]
    torch.testing.assert_close(batch[0], reference[0])
    torch.testing.assert_close(batch[1, :3], reference[0, [2, 1, 0]])


def test_grey_frames_are_repeated_to_rgb(small_processor):
    grey = natural_frames(2, 24, 40)[..., :1]
    rgb = np.repeat(grey, 3, axis=-1)
    reference = small_processor(rgb)["pixel_values_videos"]
    as_pil = [Image.fromarray(frame[..., 0], mode="L") for frame in grey]
    for video in (grey, [frame[..., 0] for frame in grey], as_pil):
        torch.testing.assert_close(small_processor(video)["pixel_values_videos"], reference)


def test_frames_given_directly_are_kept_or_reduced_uniformly(small_processor):
    frames = np.stack([index_frame(i) for i in range(10)])
    output = small_processor(frames, return_timestamps=True)
    assert output["video_mask"].tolist() == [[1, 1, 1, 1]]
    assert torch.isnan(output["video_timestamps"]).all()
    # With their frame rate they are sampled like a file: 10 frames at 30 fps are 1/3 s, 2 images, 1 kept.
    with_rate = small_processor(frames, video_metadata={"fps": 30}, return_timestamps=True)
    assert with_rate["video_mask"].tolist() == [[1, 0, 0, 0]]
    assert with_rate["video_timestamps"][0, 0].item() == 0.0


def test_rotation_metadata_turns_frames_upright(tmp_path):
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:10, :10] = 255  # white patch in the top-left corner
    # Display rotation is counter-clockwise (as ffmpeg shows the video): where the top-left corner ends up.
    corner_after = {0: "top-left", 90: "bottom-left", 180: "bottom-right", 270: "top-right"}
    for rotation, corner in corner_after.items():
        path = write_video(tmp_path / f"rotated_{rotation}.mp4", 3, 10, frames=[image] * 3, rotation=rotation)
        decoded = read_video_frames(path, lambda table: [0]).frames[0].mean(axis=-1)
        assert decoded.shape == ((HEIGHT, WIDTH) if rotation in (0, 180) else (WIDTH, HEIGHT))
        corners = {
            "top-left": decoded[:8, :8], "top-right": decoded[:8, -8:],
            "bottom-left": decoded[-8:, :8], "bottom-right": decoded[-8:, -8:],
        }
        assert corners.pop(corner).mean() > 200, (rotation, corner)
        assert all(pixels.mean() < 50 for pixels in corners.values()), rotation


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
def test_rotation_matches_ffmpeg_autorotate(tmp_path):
    image = natural_frames(1, HEIGHT, WIDTH)[0]
    path = write_video(tmp_path / "rotated.mp4", 2, 10, frames=[image] * 2, rotation=270)
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", str(tmp_path / "first.png")], check=True)
    from_ffmpeg = np.asarray(Image.open(tmp_path / "first.png").convert("RGB")).astype(int)
    ours = read_video_frames(path, lambda table: [0]).frames[0].astype(int)
    assert ours.shape == from_ffmpeg.shape == (WIDTH, HEIGHT, 3)
    assert np.abs(ours - from_ffmpeg).mean() < 3


def test_http_url_gives_the_same_output_as_the_path(videos, small_processor, monkeypatch, serve_folder):
    # The server is on loopback, which URLs may reach only when the deployment opts in (trusted local use).
    monkeypatch.setenv("CLIP2VIDEO_ALLOW_PRIVATE_URLS", "1")
    server = serve_folder(Path(videos["30fps_1s"]).parent)
    from_url = small_processor(f"{server.url}/{Path(videos['30fps_1s']).name}")["pixel_values_videos"]
    torch.testing.assert_close(from_url, small_processor(videos["30fps_1s"])["pixel_values_videos"])


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: exact error types, messages naming the input and the reason.


def test_missing_file(small_processor, tmp_path):
    missing = tmp_path / "no_such_video.mp4"
    with pytest.raises(FileNotFoundError, match="Video file not found: .*no_such_video.mp4"):
        small_processor(str(missing))


def test_not_a_video(small_processor, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    with pytest.raises(ValueError, match=r"Cannot read video .*notes\.mp4: not a video file, or a truncated"):
        small_processor(str(text))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Cannot read video .*empty\.mp4: the file is empty"):
        small_processor(str(empty))


def test_audio_only_file_has_no_video_stream(small_processor, tmp_path):
    path = write_audio_only(tmp_path / "speech.m4a")
    with pytest.raises(ValueError, match=r"Cannot read video .*speech\.m4a: it has no video stream"):
        small_processor(path)


def test_truncated_file(small_processor, videos, tmp_path):
    data = Path(videos["30fps_1s"]).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: cut off
    with pytest.raises(ValueError, match=r"Cannot read video .*truncated\.mp4: not a video file, or a truncated"):
        small_processor(str(truncated))


def test_truncated_fast_start_file(small_processor, tmp_path):
    path = tmp_path / "fast_start.mp4"
    frames = [natural_frames(1, HEIGHT, WIDTH, index)[0] for index in range(60)]
    write_video(path, 60, 30, frames=frames, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    truncated = tmp_path / "fast_start_truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.6)])  # index intact, last frames' data missing
    with pytest.raises(ValueError, match=r"fast_start_truncated\.mp4.*(truncated or corrupt)"):
        small_processor(str(truncated))


def test_no_decodable_frame(small_processor, videos, tmp_path):
    data = bytearray(Path(videos["30fps_1s"]).read_bytes())
    start = data.find(b"mdat") + 4
    size = int.from_bytes(data[start - 8 : start - 4], "big") - 8
    data[start : start + size] = bytes(size)  # every frame's data zeroed, container intact
    corrupt = tmp_path / "zeroed.mp4"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"zeroed\.mp4.*(no decodable frame|corrupt)"):
        small_processor(str(corrupt))


@pytest.mark.parametrize(
    "video, message",
    [
        (np.full((2, 8, 8, 3), 255.0, np.float32), "must lie in \\[0, 1\\]"),
        (np.zeros((2, 8, 8, 3), np.int16), "must be uint8"),
        (np.zeros((2, 8, 8, 2), np.uint8), "1 \\(grey\\), 3 \\(RGB\\) or 4 \\(RGBA\\) channels"),
        (np.zeros((2, 2, 8, 8, 3, 1), np.uint8), "4 dimensions"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "same size"),
        ([3, 4], "Video 0 of the batch is a int"),
    ],
)
def test_bad_frames(small_processor, video, message):
    with pytest.raises(ValueError, match=message):
        small_processor(video)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": 6}, "`fps` must be in \\(0, 5\\]"),
        ({"video_backend": "opencv"}, "`video_backend` must be one of pyav, torchcodec, decord"),
    ],
)
def test_bad_options(small_processor, videos, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_processor(videos["one_frame"], **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Optional decoders: same frames as PyAV where installed.


@pytest.mark.parametrize("backend", ["torchcodec", "decord"])
def test_optional_backends_agree_with_pyav(videos, backend):
    pytest.importorskip(backend)
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32)
    reference = processor(videos["30fps_10s"], return_timestamps=True)
    other = processor(videos["30fps_10s"], video_backend=backend, return_timestamps=True)
    torch.testing.assert_close(other["video_timestamps"], reference["video_timestamps"])
    torch.testing.assert_close(other["pixel_values_videos"], reference["pixel_values_videos"], atol=0.05, rtol=0)


@pytest.mark.parametrize("backend", ["torchcodec", "decord"])
def test_optional_backends_report_bad_files_like_pyav(videos, tmp_path, backend):
    pytest.importorskip(backend)
    processor = CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size=16, video_backend=backend)
    with pytest.raises(FileNotFoundError, match="Video file not found: .*missing.mp4"):
        processor(str(tmp_path / "missing.mp4"))
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    data = Path(videos["30fps_1s"]).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    for path in (text, truncated):
        with pytest.raises(ValueError, match=f"Cannot read video .*{path.name}: not a video file, or a truncated"):
            processor(str(path))


# `stack_videos`, the one rule for padding the time axis (the processor and the search indexer both use it).


def stacked_input(frames: int, value: float, batch: int = 1) -> dict[str, torch.Tensor]:
    return {
        "pixel_values_videos": torch.full((batch, frames, 3, 2, 2), value),
        "video_mask": torch.ones((batch, frames), dtype=torch.int64),
        "video_timestamps": torch.arange(frames, dtype=torch.float64).expand(batch, frames) * 0.5,
    }


def test_stack_videos_pads_to_the_longest_with_zero_frames_mask_zero_and_nan_times():
    batch = stack_videos([stacked_input(2, 1.0), stacked_input(4, 2.0, batch=2)])
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 2, 2)
    assert batch["video_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert torch.all(batch["pixel_values_videos"][0, :2] == 1) and torch.all(batch["pixel_values_videos"][0, 2:] == 0)
    assert torch.all(batch["pixel_values_videos"][1:] == 2)
    times = batch["video_timestamps"][0].tolist()
    assert times[:2] == [0.0, 0.5] and all(math.isnan(t) for t in times[2:])
    assert batch["video_timestamps"].dtype == torch.float64 and batch["video_mask"].dtype == torch.int64


def test_stack_videos_pads_to_a_given_length_and_refuses_a_shorter_one():
    without_times = {key: value for key, value in stacked_input(3, 1.0).items() if key != "video_timestamps"}
    batch = stack_videos([without_times], num_frames=5)
    assert set(batch) == {"pixel_values_videos", "video_mask"}
    assert batch["video_mask"].tolist() == [[1, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="cannot pad 3 frames to 2"):
        stack_videos([without_times], num_frames=2)
