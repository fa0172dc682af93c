"""Which frames of a video CLIP2Video looks at.

The authors never decode videos at training or test time. They first run, once per video,

    ffmpeg -i video.mp4 -r 5 -q 0 frames/%08d.jpg

and their data loader then keeps `len(frames) // feature_framerate` of those JPEGs (`np.linspace`, rounded down) and,
if more than `max_frames` remain, `max_frames` of them (`np.linspace` again; in training the inner picks are jittered).
This module reproduces that choice from the video's own frame timestamps, so the frames can be decoded directly:

1. `ffmpeg_cfr_frame_indices`: the source frame behind every image `ffmpeg -r 5` writes (ffmpeg's constant frame rate
   conversion, including its first two frames and duplicates for videos slower than 5 fps).
2. `uniform_positions`: the authors' two `linspace` passes and the training jitter over those images.
3. `select_source_frames`: both, plus removal of duplicated source frames (we never feed the model the same frame
   twice, the authors' pipeline would for videos under the sampling rate).
"""

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch


# The authors' `sample_frame.py` extracts frames with `ffmpeg -r 5`.
FRAME_EXTRACTION_FPS = 5


def ffmpeg_cfr_frame_indices(
    frame_times: Sequence[float],
    frame_durations: Sequence[float | None],
    average_fps: float,
    output_fps: float = FRAME_EXTRACTION_FPS,
) -> list[int]:
    """Source frame index of every image written by `ffmpeg -i video -r output_fps frame_%08d.jpg`.

    ffmpeg (checked against the ffmpeg 5.1 command line on H.264 and MPEG-4 files from 1 to 60 fps) converts to a
    constant output rate by walking the decoded frames in presentation order and comparing each frame's time with the
    next output slot, both counted in output frames: a frame is dropped when it ends more than 1.1 slots before the
    next slot, and written `round(delta)` times when it ends more than 1.1 slots after it. For videos of 10 fps and
    more this means: images 0 and 1 are frames 0 and 1, and image `k >= 2` is the first frame still on screen at
    `(k - 1.1) / 5` seconds (the first whose end, start + 1 / fps, is at or after that time); e.g. frames
    0, 1, 5, 11, 17, ... of a 30 fps video.

    Args:
        frame_times (`Sequence[float]`):
            Presentation time of every frame in seconds, relative to the start of the video, increasing.
        frame_durations (`Sequence[float | None]`):
            Duration of every frame in seconds as stored in its packet, `None` where unknown. Only durations over
            0.1 s matter (videos under 10 fps, gaps in variable-rate videos); on B-frame MP4 streams ffmpeg 5.1 takes
            a neighbouring frame's duration instead, so such gaps can shift an image by one frame.
        average_fps (`float`):
            The stream's average frame rate, used where a frame's duration is unknown or shorter than half a slot.
        output_fps (`float`, *optional*, defaults to 5):
            The `-r` of the ffmpeg command.

    Returns:
        `list[int]`: one index into `frame_times` per written image, non-decreasing, with repeats where ffmpeg
        duplicates a frame.
    """
    chosen = []
    next_slot = 0
    recent_previous_repeats = [0, 0, 0]
    for index, (time, duration) in enumerate(zip(frame_times, frame_durations)):
        # ffmpeg rescales the timestamp to 1/65536 of a slot and nudges it away from exact midpoints.
        slot_time = np.floor(time * output_fps * 65536 + 0.5) / 65536
        slot_time += (1 if slot_time > 0 else -1) / 131072
        slot_duration = output_fps / average_fps
        if duration is not None and round(duration * output_fps) > 0:
            slot_duration = round(duration * output_fps)

        drift = slot_time - next_slot
        delta = drift + slot_duration
        if drift < 0 < delta:
            drift = 0
        repeats, previous_repeats = 1, 0
        if delta < -1.1:
            repeats = 0
        elif delta > 1.1:
            repeats = round(delta)
            if drift > 1.1:
                previous_repeats = round(drift - 0.6)
        recent_previous_repeats = [previous_repeats] + recent_previous_repeats[:2]
        for repeat in range(repeats):
            chosen.append(index - 1 if repeat < previous_repeats and index > 0 else index)
        next_slot += repeats
    # At the end of the stream ffmpeg repeats the last frame as often as the median of its last previous-frame repeats.
    if frame_times:
        chosen += [len(frame_times) - 1] * sorted(recent_previous_repeats)[1]
    return chosen


def uniform_positions(
    num_extracted: int,
    sampling_fps: float,
    max_frames: int,
    random_jitter: bool = False,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Positions, among the images extracted at 5 fps, of the frames the model sees (the authors' `video_to_tensor`).

    `floor(num_extracted * sampling_fps / 5)` images are kept uniformly (`np.linspace` rounded down, so the first and
    last image are always kept; at least one image, where the authors would return no frame at all), then, if more
    than `max_frames` remain, `max_frames` of those, uniformly again. With `random_jitter` (the authors' training mode)
    each inner pick of the second pass moves by a random offset in `[-s, s)`, `s` being half the gap between picks,
    when `s > 2`; the first and the last pick stay.

    Returns:
        `np.ndarray`: increasing int64 positions in `[0, num_extracted)`.
    """
    if num_extracted < 1:
        raise ValueError(f"`num_extracted` must be at least 1, got {num_extracted}.")
    # Exact arithmetic so that e.g. 25 images at 2.4 fps keep 12, not 11.
    num_kept = max(1, int(num_extracted * Fraction(repr(float(sampling_fps))) / FRAME_EXTRACTION_FPS))
    kept = np.linspace(0, num_extracted - 1, num=num_kept, dtype=int)
    if num_kept <= max_frames:
        return kept.astype(np.int64)

    picks = np.linspace(0, num_kept - 1, num=max_frames, dtype=int)
    if random_jitter and max_frames > 2:
        half_gap = int(picks[1] - picks[0]) // 2
        if half_gap > 2:
            offsets = torch.randint(-half_gap, half_gap, (max_frames - 2,), generator=generator).numpy()
            picks[1:-1] += offsets
    return kept[picks].astype(np.int64)


def select_source_frames(
    frame_times: Sequence[float],
    frame_durations: Sequence[float | None],
    average_fps: float,
    sampling_fps: float,
    max_frames: int,
    random_jitter: bool = False,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices (into `frame_times`, increasing, without repeats) of the frames CLIP2Video samples from a video."""
    extracted = ffmpeg_cfr_frame_indices(frame_times, frame_durations, average_fps)
    if not extracted:
        return []
    positions = uniform_positions(len(extracted), sampling_fps, max_frames, random_jitter, generator)
    return sorted({extracted[position] for position in positions})
