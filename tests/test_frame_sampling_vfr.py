"""Variable-frame-rate videos: the frames the processor samples are the ones the authors' `ffmpeg -i video -r 5`
writes, checked against the ffmpeg command line.

Every frame of the test videos shows its own index in binary, so each image ffmpeg writes maps back to the source
frame behind it. The videos are MP4s with irregular timestamps (a slow stretch then a fast one, a frame on screen for
2 s, jittered times), written with and without B-frames (MP4 composition offsets, which the ffmpeg of the authors' era
reads differently from our PyAV's), and MOV / AVI files made by the ffmpeg command line itself (an AVI stores dropped
frames as empty chunks).
"""

import random
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip2video.processing.frame_sampling_clip2video import ffmpeg_cfr_frame_indices
from clip2video.processing.video_decoding_clip2video import FrameTable, read_video_frames
from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor
from tests.helpers.videos import frame_index, index_frame, write_video


needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)"
)

_jitter = random.Random(0)
# Presentation time of every frame in seconds.
PATTERNS = {
    # 6 frames at 5 fps, then 60 at 30 fps: nominal rate 30 fps, average about 20.
    "slow_then_fast": [i / 5 for i in range(6)] + [1.2 + i / 30 for i in range(1, 61)],
    # 30 frames at 30 fps, then 10 at 4 fps (nominal 60 in MP4: the rate all timestamps fit).
    "fast_then_slow": [i / 30 for i in range(30)] + [1 + i / 4 for i in range(10)],
    # 30 fps with frame 15 on screen for 2 s.
    "pause": [i / 30 for i in range(16)] + [0.5 + 2 + i / 30 for i in range(1, 30)],
    # 30 fps, each time moved by up to 8 ms (the nominal rate becomes the time base's; ffmpeg then uses the average).
    "jitter": [i / 30 + _jitter.uniform(-0.008, 0.008) * (i > 0) for i in range(90)],
    # Constant 7 and 3 fps: under 10 fps each frame's duration decides how often it is written; under 5 fps a frame
    # without one lasts one image.
    "seven_fps": [i / 7 for i in range(30)],
    "three_fps": [i / 3 for i in range(12)],
}

# codec, encoder options, time base of the frame timestamps.
ENCODINGS = {
    "h264": ("libx264", {"bf": "0"}, Fraction(1, 90000)),
    "h264_bframes": ("libx264", {"bf": "3"}, Fraction(1, 1000)),
    "mpeg4_bframes": ("mpeg4", {"bf": "2", "b": "2000000"}, Fraction(1, 1000)),
}


def ffmpeg_images(path: str, folder: Path) -> list[int]:
    """The frame shown in every image of the authors' extraction (`ffmpeg -i video -r 5`; PNG instead of JPEG so
    that the stripes read back exactly, which changes nothing about which frames are written)."""
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-r", "5", str(folder / "%08d.png")], check=True)
    return [frame_index(np.asarray(Image.open(image).convert("RGB"))) for image in sorted(folder.glob("*.png"))]


def frame_table(path: str) -> FrameTable:
    """The timing table the decoder builds for `path` (what sampling sees)."""
    tables = []

    def keep_table(table):
        tables.append(table)
        return [0]

    read_video_frames(path, keep_table)
    return tables[0]


def authors_sample(images: list[int], feature_framerate: int, max_frames: int) -> list[int]:
    """The authors' `RawFrameExtractor.video_to_tensor` over the extracted images (two `np.linspace`, rounded down),
    each source frame once."""
    kept = np.linspace(0, len(images) - 1, num=max(1, len(images) // feature_framerate), dtype=int)
    if len(kept) > max_frames:
        kept = kept[np.linspace(0, len(kept) - 1, num=max_frames, dtype=int)]
    return sorted({images[i] for i in kept})


@pytest.fixture(scope="module")
def processor():
    return CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@needs_ffmpeg
@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_pyav_written_variable_rate_mp4_matches_the_ffmpeg_command_line(tmp_path, processor, pattern, encoding):
    codec, options, time_base = ENCODINGS[encoding]
    times = PATTERNS[pattern]
    path = write_video(tmp_path / "video.mp4", len(times), 30, codec, frame_times=times, time_base=time_base, **options)
    from_ffmpeg = ffmpeg_images(path, tmp_path / "images")
    assert sorted(set(from_ffmpeg)) != [0]  # the stripes were read back

    table = frame_table(path)
    assert ffmpeg_cfr_frame_indices(table.times, table.durations, table.nominal_fps) == from_ffmpeg

    # The processor end to end: MSR-VTT's rule (2.5 fps, 12 frames) and every extracted image (5 fps).
    for fps, num_frames in ((2.5, 12), (5, 200)):
        output = processor(
            videos=[path], fps=fps, num_frames=num_frames, return_metadata=True, return_timestamps=True,
            return_tensors="pt",
        )
        chosen = output["video_metadata"][0].frames_indices
        assert chosen == authors_sample(from_ffmpeg, int(5 / fps), num_frames)
        timestamps = output["video_timestamps"][0][: len(chosen)].tolist()
        assert timestamps == pytest.approx([float(round(times[i] / time_base) * time_base) for i in chosen], abs=1e-6)


# Variable-rate files made by the ffmpeg command line from numbered PNG frames: `setpts` gives the irregular
# timestamps. An AVI cannot store them: ffmpeg writes an empty chunk for every frame slot left out.
CLI_VIDEOS = {
    "mov_h264_bframes_pause": ("mov", "PTS+gt(N\\,40)*20/TB", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
    "mp4_h264_slow_then_fast": (
        "mp4", "if(lt(N\\,20)\\,N*6\\,N+100)/(30*TB)", ["-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p"]
    ),
    "avi_mpeg4_dropped_frames": ("avi", "if(lt(N\\,20)\\,N*6\\,N+100)/(30*TB)", ["-c:v", "mpeg4", "-q:v", "2"]),
}


@needs_ffmpeg
@pytest.mark.parametrize("name", list(CLI_VIDEOS))
def test_ffmpeg_written_variable_rate_files_match_the_ffmpeg_command_line(tmp_path, processor, name):
    extension, timestamps, encoder = CLI_VIDEOS[name]
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(60):
        Image.fromarray(index_frame(index)).save(frames / f"{index:04d}.png")
    path = str(tmp_path / f"video.{extension}")
    command = ["ffmpeg", "-v", "error", "-framerate", "30", "-i", str(frames / "%04d.png"), "-vf"]
    subprocess.run(command + [f"setpts={timestamps}", "-vsync", "vfr", *encoder, path], check=True)
    from_ffmpeg = ffmpeg_images(path, tmp_path / "images")

    # Source frame -> the index it shows (ffmpeg may leave frames out when it encodes).
    every_frame = read_video_frames(path, lambda table: list(range(len(table.times)))).frames
    shown = [frame_index(frame) for frame in every_frame]
    table = frame_table(path)
    gaps = np.diff(table.times)
    assert gaps.max() > 3 * gaps.min() > 0  # really variable-rate
    assert [shown[i] for i in ffmpeg_cfr_frame_indices(table.times, table.durations, table.nominal_fps)] == from_ffmpeg

    output = processor(videos=[path], return_metadata=True, return_tensors="pt")
    assert [shown[i] for i in output["video_metadata"][0].frames_indices] == authors_sample(from_ffmpeg, 2, 12)


@needs_ffmpeg
def test_a_truncated_avi_with_dropped_frames_is_still_refused(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(60):
        Image.fromarray(index_frame(index)).save(frames / f"{index:04d}.png")
    path = tmp_path / "video.avi"
    command = ["ffmpeg", "-v", "error", "-framerate", "30", "-i", str(frames / "%04d.png"), "-vf"]
    command += ["setpts=if(lt(N\\,20)\\,N*6\\,N+100)/(30*TB)", "-vsync", "vfr", "-c:v", "mpeg4", str(path)]
    subprocess.run(command, check=True)
    assert len(read_video_frames(str(path), lambda table: list(range(len(table.times)))).frames) == 60

    content = path.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_video_frames(str(truncated), lambda table: [0])


def test_the_table_of_a_variable_rate_mp4_has_its_nominal_rate(tmp_path):
    # The root cause of the bug this file guards: ffmpeg's rate conversion gives a frame without a usable packet
    # duration one frame of the nominal rate (r_frame_rate, 30 here), not of the average rate (about 20 here).
    times = PATTERNS["slow_then_fast"]
    path = write_video(tmp_path / "video.mp4", len(times), 30, frame_times=times, time_base=Fraction(1, 90000), bf="0")
    table = frame_table(path)
    assert table.nominal_fps == 30
    # MP4's average: 66 frames over the stream's duration (to the end of the last frame).
    assert table.average_fps == pytest.approx(66 / (times[-1] + 1 / 30), rel=0.02)
    # With the average rate the fast frames would last 1.5 times too long and ffmpeg's images 8 and on would differ.
    with_nominal = ffmpeg_cfr_frame_indices(table.times, table.durations, table.nominal_fps)
    with_average = ffmpeg_cfr_frame_indices(table.times, table.durations, table.average_fps)
    assert with_nominal[:8] == with_average[:8] and with_nominal[8:] != with_average[8:]


def test_a_table_built_from_one_rate_has_it_as_nominal_rate():
    table = FrameTable(times=[0.0, 0.04], durations=[0.04, 0.04], average_fps=25.0)
    assert table.nominal_fps == 25.0
