"""Which frames of a video CLIP2Video looks at.

The authors never decode videos at training or test time. They first run, once per video,

    ffmpeg -i video.mp4 -r 5 -q 0 frames/%08d.jpg

and their data loader then keeps `len(frames) // feature_framerate` of those JPEGs (`np.linspace`, rounded down) and,
if more than `max_frames` remain, `max_frames` of them (`np.linspace` again; in training the inner picks are jittered).
This module reproduces that choice from the video's own frame timestamps, so the frames can be decoded directly:

1. `ffmpeg_cfr_frame_runs`: the source frame behind every image `ffmpeg -r 5` writes (ffmpeg's constant frame rate
   conversion, including its first two frames and duplicates for videos slower than 5 fps), as runs of
   `(source frame, images)` so that the work does not grow with the video's duration (`ffmpeg_cfr_frame_indices`
   writes them out one image at a time, for tests).
2. `uniform_positions`: the authors' two `linspace` passes and the training jitter over those images.
3. `select_source_frames`: both, plus removal of duplicated source frames (we never feed the model the same frame
   twice, the authors' pipeline would for videos under the sampling rate).
"""

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch


# The authors' `sample_frame.py` extracts frames with `ffmpeg -r 5`.
FRAME_EXTRACTION_FPS = 5


def ffmpeg_cfr_frame_runs(
    frame_times: Sequence[float],
    frame_durations: Sequence[float | None],
    nominal_fps: float,
    output_fps: float = FRAME_EXTRACTION_FPS,
) -> list[tuple[int, int]]:
    """The images written by `ffmpeg -i video -r output_fps frame_%08d.jpg`, as runs `(source frame index, count)`.

    ffmpeg (checked against the ffmpeg 5.1 command line on H.264 and MPEG-4 files, constant rates from 1 to 60 fps
    and variable rates) converts to a constant output rate by walking the decoded frames in presentation order and
    comparing each frame's time with the next output slot, both counted in output frames: a frame is dropped when it
    ends more than 1.1 slots before the next slot, and written `round(delta)` times when it ends more than 1.1 slots
    after it. For videos of 12 fps and more this means: images 0 and 1 are frames 0 and 1, and image `k >= 2` is the
    first frame still on screen at `(k - 1.1) / 5` seconds (the first whose end, start + 1 / fps, is at or after that
    time); e.g. frames 0, 1, 5, 11, 17, ... of a 30 fps video. (Under about 11 fps frame 1 is still on screen at
    image 2's time, and image 2 is frame 2.)

    A frame ends `duration` after its start where its packet gives a duration longer than half a slot (0.1 s at
    5 fps), otherwise `1 / nominal_fps` after it, at most one slot: for a variable-rate video that is the nominal
    rate (FFmpeg's `r_frame_rate`, what `av_guess_frame_rate` returns), not the average rate, so a 30 fps phone
    video whose average is 20 fps still has its short frames last 1/30 s.

    Runs instead of one entry per image: a gap between two frames (or a frame's duration) writes images in
    proportion to its length, and a hostile file can make that length 10^9 seconds; the runs stay at most two per
    source frame whatever the timestamps.

    Args:
        frame_times (`Sequence[float]`):
            Presentation time of every frame in seconds, relative to the start of the video, increasing and finite.
        frame_durations (`Sequence[float | None]`):
            Duration of every frame in seconds as ffmpeg's demuxer gives it in the frame's packet, `None` where
            unknown. Only durations over 0.1 s matter (videos under 10 fps, gaps in variable-rate videos).
        nominal_fps (`float`):
            The stream's nominal frame rate (`r_frame_rate` as `av_guess_frame_rate` corrects it; PyAV's
            `stream.guessed_rate`), used where a frame's duration is unknown or shorter than half a slot. Equal to the
            average rate for constant-rate videos.
        output_fps (`float`, *optional*, defaults to 5):
            The `-r` of the ffmpeg command.

    Returns:
        `list[tuple[int, int]]`: `(index into frame_times, number of images)` with positive counts, in output order
        (indices non-decreasing).

    Raises:
        `ValueError`: a rate that is not a positive finite number, times and durations of different lengths, or a
            time or duration that is not a finite number.
    """
    nominal_fps = _positive_rate(nominal_fps, "nominal_fps")
    output_fps = _positive_rate(output_fps, "output_fps")
    # ffmpeg's fallback duration: one nominal frame, capped at one output slot (`do_video_out` in fftools/ffmpeg.c).
    nominal_slots = min(output_fps / nominal_fps, 1.0)
    if len(frame_times) != len(frame_durations):
        raise ValueError(f"Got {len(frame_times)} frame times but {len(frame_durations)} frame durations.")
    runs: list[tuple[int, int]] = []

    def write(index: int, count: int) -> None:
        if count <= 0:
            return
        if runs and runs[-1][0] == index:
            runs[-1] = (index, runs[-1][1] + count)
        else:
            runs.append((index, count))

    next_slot = 0
    recent_previous_repeats = [0, 0, 0]
    for index, (time, duration) in enumerate(zip(frame_times, frame_durations)):
        if not _is_finite_number(time) or not (duration is None or _is_finite_number(duration)):
            raise ValueError(f"Frame {index} has time {time!r} and duration {duration!r}: both must be finite numbers.")
        # ffmpeg rescales the timestamp to 1/65536 of a slot and nudges it away from exact midpoints.
        slot_time = np.floor(time * output_fps * 65536 + 0.5) / 65536
        slot_time += (1 if slot_time > 0 else -1) / 131072
        slot_duration = nominal_slots
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
        # The first `previous_repeats` of the `repeats` images show the previous frame (ffmpeg fills the gap with it).
        shown_previous = min(previous_repeats, repeats) if index > 0 else 0
        write(index - 1, shown_previous)
        write(index, repeats - shown_previous)
        next_slot += repeats
    # At the end of the stream ffmpeg repeats the last frame as often as the median of its last previous-frame repeats.
    if len(frame_times):
        write(len(frame_times) - 1, sorted(recent_previous_repeats)[1])
    return runs


def ffmpeg_cfr_frame_indices(
    frame_times: Sequence[float],
    frame_durations: Sequence[float | None],
    nominal_fps: float,
    output_fps: float = FRAME_EXTRACTION_FPS,
) -> list[int]:
    """Source frame index of every image written by `ffmpeg -i video -r output_fps frame_%08d.jpg`: the runs of
    `ffmpeg_cfr_frame_runs` written out, one entry per image (for inspection and tests; its length grows with the
    video's duration, so sampling uses the runs).

    Returns:
        `list[int]`: one index into `frame_times` per written image, non-decreasing, with repeats where ffmpeg
        duplicates a frame.
    """
    runs = ffmpeg_cfr_frame_runs(frame_times, frame_durations, nominal_fps, output_fps)
    return [index for index, count in runs for _ in range(count)]


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
    than `max_frames` remain, `max_frames` of them, uniformly again. With `random_jitter` (the authors' training mode)
    each inner pick of the second pass moves by a random offset in `[-s, s)`, `s` being half the gap between picks,
    when `s > 2`; the first and the last pick stay.

    Only the at most `max_frames` positions returned are computed (with `np.linspace`'s own arithmetic), never the
    `num_extracted` images, so the work does not grow with the video's length.

    Returns:
        `np.ndarray`: increasing int64 positions in `[0, num_extracted)`, at most `max_frames` of them.

    Raises:
        `ValueError`: `num_extracted` or `max_frames` is not a positive integer, or `sampling_fps` is not a positive
            finite number.
    """
    if not _is_integer(num_extracted) or num_extracted < 1:
        raise ValueError(f"`num_extracted` must be a positive integer, got {num_extracted!r}.")
    if not _is_integer(max_frames) or max_frames < 1:
        raise ValueError(f"`max_frames` must be a positive integer, got {max_frames!r}.")
    sampling_fps = _positive_rate(sampling_fps, "sampling_fps")
    num_extracted, max_frames = int(num_extracted), int(max_frames)
    # Exact arithmetic so that e.g. 25 images at 2.4 fps keep 12, not 11.
    num_kept = max(1, int(num_extracted * Fraction(repr(float(sampling_fps))) / FRAME_EXTRACTION_FPS))
    if num_kept <= max_frames:
        return _linspace_floor(num_extracted - 1, num_kept, np.arange(num_kept))

    picks = _linspace_floor(num_kept - 1, max_frames, np.arange(max_frames))
    if random_jitter and max_frames > 2:
        half_gap = int(picks[1] - picks[0]) // 2
        if half_gap > 2:
            offsets = torch.randint(-half_gap, half_gap, (max_frames - 2,), generator=generator).numpy()
            picks[1:-1] += offsets
    return _linspace_floor(num_extracted - 1, num_kept, picks)


def _linspace_floor(stop: int, num: int, at: np.ndarray) -> np.ndarray:
    """`np.linspace(0, stop, num=num, dtype=int)[at]`, computed for the entries `at` only, with numpy's arithmetic
    (`floor(i * (stop / (num - 1)))`, the last entry exactly `stop`)."""
    at = np.asarray(at, dtype=np.int64)
    if num == 1:
        return np.zeros(len(at), dtype=np.int64)
    step = np.float64(stop) / np.float64(num - 1)
    values = np.floor(at.astype(np.float64) * step).astype(np.int64)
    values[at == num - 1] = stop
    return values


def select_source_frames(
    frame_times: Sequence[float],
    frame_durations: Sequence[float | None],
    nominal_fps: float,
    sampling_fps: float,
    max_frames: int,
    random_jitter: bool = False,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices (into `frame_times`, increasing, without repeats) of the frames CLIP2Video samples from a video.

    The work is proportional to the number of source frames and `max_frames`, whatever the span of the timestamps.
    """
    runs = ffmpeg_cfr_frame_runs(frame_times, frame_durations, nominal_fps)
    if not runs:
        return []
    # Image position -> source frame: the run whose first image is the last at or before the position.
    run_starts = np.cumsum([0] + [count for _, count in runs[:-1]], dtype=np.int64)
    num_extracted = int(run_starts[-1]) + runs[-1][1]
    positions = uniform_positions(num_extracted, sampling_fps, max_frames, random_jitter, generator)
    run_of_position = np.searchsorted(run_starts, positions, side="right") - 1
    return sorted({runs[run][0] for run in run_of_position.tolist()})


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(value)


def _positive_rate(value, name: str) -> float:
    """A frame rate as a float, or a `ValueError` saying what is wrong with it (strings, NaN, infinities, zero and
    negative rates are refused; `Fraction`s, as PyAV gives, are fine)."""
    if isinstance(value, Fraction):
        value = float(value)
    if not _is_finite_number(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number of frames per second, got {value!r}.")
    return float(value)
