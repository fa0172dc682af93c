"""Frame sampling rules on the cases the other tests do not reach: the kept-image count `floor(n * fps / 5)` where
floating point gets it wrong (50 images at 2.3 fps keep 23; 50 * 2.3 / 5 is 22.999999999999996), the training
jitter's threshold, and ffmpeg's rate conversion on variable-rate clips with gaps (checked against the ffmpeg command
line: gap images show the previous frame)."""

import shutil
import subprocess

import av
import numpy as np
import pytest
import torch
from PIL import Image

from clip2video.processing.frame_sampling_clip2video import ffmpeg_cfr_frame_indices, uniform_positions
from tests.helpers.videos import frame_index, write_video


@pytest.mark.parametrize(
    "num_extracted, sampling_fps, kept",
    [(50, 2.3, 23), (25, 4.6, 23), (50, 4.1, 41), (175, 1.4, 49), (35, 1.7, 11), (10, 0.7, 1)],
)
def test_kept_image_count_is_exact(num_extracted, sampling_fps, kept):
    # In floating point the first four give one image less (e.g. 25 * 4.6 / 5 = 22.999999999999996); 35 * 1.7 / 5 =
    # 11.9 -> 11 and 10 * 0.7 / 5 = 1.4 -> 1 round down.
    positions = uniform_positions(num_extracted, sampling_fps, max_frames=100)
    assert len(positions) == kept
    # The authors' np.linspace, rounded down, over the extracted images.
    assert positions.tolist() == np.linspace(0, num_extracted - 1, num=kept, dtype=int).tolist()


@pytest.mark.parametrize("num_kept, jittered", [(13, False), (19, True)])
def test_training_jitter_only_when_half_the_gap_exceeds_two(num_kept, jittered):
    # 4 picks over 13 images: [0, 4, 8, 12], half gap 2, never moved; over 19: [0, 6, 12, 18], half gap 3, moved
    # by an offset in [-3, 3) for some draws, the first and last never.
    fixed = uniform_positions(num_kept, 5, max_frames=4).tolist()
    draws = [
        uniform_positions(num_kept, 5, max_frames=4, random_jitter=True, generator=torch.Generator().manual_seed(seed))
        for seed in range(20)
    ]
    assert any(draw.tolist() != fixed for draw in draws) == jittered
    for draw in draws:
        assert draw[0] == fixed[0] and draw[-1] == fixed[-1]
        assert all(-3 <= int(a) - b < 3 for a, b in zip(draw, fixed))


# Variable-rate clips (no B-frames) whose late frames leave gaps that ffmpeg fills with the previous frame: in MP4 the
# packet before a gap lasts until the next frame; in Matroska every packet keeps the nominal duration, so the gap
# is a drift that ffmpeg fills by repeating the previous frame, and repeats the last frame at the end.
VARIABLE_RATE = {
    "gaps_at_the_end": [i / 30 for i in range(30)] + [1.0 + 0.9 * k for k in range(1, 4)],
    "slow_end": [i / 30 for i in range(15)] + [0.5 + 0.7 * k for k in range(1, 5)],
    "mixed_gaps": [i / 30 for i in range(20)] + [0.7, 1.6, 1.7, 2.9, 3.0, 4.3],
}


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
@pytest.mark.parametrize("container", ["mp4", "mkv"])
@pytest.mark.parametrize("name", list(VARIABLE_RATE))
def test_variable_rate_gaps_match_the_ffmpeg_command_line(tmp_path, name, container):
    times = VARIABLE_RATE[name]
    path = write_video(tmp_path / f"video.{container}", len(times), 30, frame_times=times, bf="0")
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-r", "5", "-q", "0", str(tmp_path / "%08d.jpg")], check=True)
    from_ffmpeg = [frame_index(np.asarray(Image.open(jpeg))) for jpeg in sorted(tmp_path.glob("*.jpg"))]
    assert len(from_ffmpeg) > len(set(from_ffmpeg)) + 5  # gaps were filled by repeated frames
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.duration) for p in container.demux(stream) if p.size)
        times = [float(pts * stream.time_base) for pts, _ in packets]
        durations = [float(duration * stream.time_base) if duration else None for _, duration in packets]
        # The nominal rate (30), as ffmpeg's rate conversion reads it for frames without a usable duration.
        assert ffmpeg_cfr_frame_indices(times, durations, float(stream.guessed_rate)) == from_ffmpeg
