"""`processing/frame_sampling_clip2video.py`'s sampling rule over the whole input space (hypothesis), against an
independent statement of the authors' data loader: keep `floor(n * fps / 5)` of the `n` extracted images with
`np.linspace(0, n - 1, kept, dtype=int)` (at least one), then, when more than `max_frames` remain, `max_frames` of
those with `np.linspace(0, kept - 1, max_frames, dtype=int)`. Positions and source indices stay inside the video at
every size (`frames_indices < total_num_frames`), and the argument checks refuse exactly the values outside the
documented ranges."""

import math
import re
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.processing.frame_sampling_clip2video import (
    ffmpeg_cfr_frame_indices,
    ffmpeg_cfr_frame_runs,
    select_source_frames,
    uniform_positions,
)
from clip2video.processing.video_decoding_clip2video import read_video_frames
from tests.helpers.videos import frame_index, write_video, write_video_after_audio


# Rates as users write them (decimal), so that `floor(n * fps / 5)` has one exact answer.
RATES = st.decimals(min_value="0.01", max_value="5", places=2).map(str)


def authors_positions(num_extracted: int, fps: str, max_frames: int) -> np.ndarray:
    kept = max(1, num_extracted * Fraction(fps) // 5)
    first = np.linspace(0, num_extracted - 1, num=kept, dtype=int)
    if kept <= max_frames:
        return first
    return first[np.linspace(0, kept - 1, num=max_frames, dtype=int)]


@settings(max_examples=400, deadline=None)
@given(
    num_extracted=st.one_of(st.integers(1, 400), st.integers(1, 2_000_000)),
    fps=RATES,
    max_frames=st.integers(1, 100),
)
def test_positions_equal_the_authors_two_linspace_passes(num_extracted, fps, max_frames):
    positions = uniform_positions(num_extracted, float(fps), max_frames)
    expected = authors_positions(num_extracted, fps, max_frames)
    np.testing.assert_array_equal(positions, expected)
    assert positions.dtype == np.int64
    kept = max(1, num_extracted * Fraction(fps) // 5)
    assert len(positions) == min(kept, max_frames)
    assert positions[0] == 0 and positions[-1] == (num_extracted - 1 if min(kept, max_frames) > 1 else 0)


@settings(max_examples=300, deadline=None)
@given(
    num_extracted=st.integers(1, 100_000),
    fps=RATES,
    max_frames=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_jittered_positions_stay_inside_increasing_and_keep_both_ends(num_extracted, fps, max_frames, seed):
    plain = uniform_positions(num_extracted, float(fps), max_frames)
    generator = torch.Generator().manual_seed(seed)
    jittered = uniform_positions(num_extracted, float(fps), max_frames, random_jitter=True, generator=generator)
    assert len(jittered) == len(plain)
    assert jittered[0] == plain[0] and jittered[-1] == plain[-1]
    assert np.all(np.diff(jittered) > 0) and 0 <= jittered.min() and jittered.max() < num_extracted
    kept = max(1, num_extracted * Fraction(fps) // 5)
    if kept > max_frames > 2:
        # Each inner pick moves by less than half the gap between picks (the authors' `[-s, s)`), counted in kept
        # images, and only when that half gap is over 2.
        half_gap = int(np.linspace(0, kept - 1, num=max_frames, dtype=int)[1]) // 2
        first = np.linspace(0, num_extracted - 1, num=kept, dtype=int)
        picks = np.searchsorted(first, jittered)
        np.testing.assert_array_equal(first[picks], jittered)
        base = np.linspace(0, kept - 1, num=max_frames, dtype=int)
        offsets = picks - base
        if half_gap > 2:
            assert np.all(offsets[1:-1] >= -half_gap) and np.all(offsets[1:-1] < half_gap)
        else:
            assert not offsets.any()


def test_jitter_moves_picks_exactly_when_the_half_gap_is_over_two():
    # 5 fps keeps every image: picks 0, g, 2g, ... with half gap g // 2.
    for gap, moves in ((4, False), (5, False), (6, True), (7, True)):
        num_extracted = gap * 11 + 1
        plain = uniform_positions(num_extracted, 5.0, 12)
        assert np.diff(plain).tolist() == [gap] * 11
        changed = any(
            not np.array_equal(
                uniform_positions(num_extracted, 5.0, 12, True, torch.Generator().manual_seed(seed)), plain
            )
            for seed in range(5)
        )
        assert changed == moves, gap


@settings(max_examples=200, deadline=None)
@given(
    num_frames=st.integers(1, 600),
    source_fps=st.sampled_from([1, 2, 3, 4.5, 5, 7, 10, 12, 23.976, 25, 29.97, 30, 50, 60]),
    fps=RATES,
    max_frames=st.integers(1, 32),
)
def test_source_frames_are_increasing_distinct_and_inside_the_video(num_frames, source_fps, fps, max_frames):
    times = [index / source_fps for index in range(num_frames)]
    indices = select_source_frames(times, [None] * num_frames, source_fps, float(fps), max_frames)
    assert 1 <= len(indices) <= max_frames
    assert all(0 <= index < num_frames for index in indices)  # frames_indices < total_num_frames
    assert indices == sorted(set(indices))
    # The images ffmpeg writes at 5 fps, sampled by the authors' rule, name exactly these source frames.
    images = ffmpeg_cfr_frame_indices(times, [None] * num_frames, source_fps)
    expected = sorted({images[position] for position in authors_positions(len(images), fps, max_frames)})
    assert indices == expected


@settings(max_examples=100, deadline=None)
@given(num_frames=st.integers(2, 400), source_fps=st.sampled_from([12, 15, 23.976, 24, 25, 29.97, 30, 50, 60]))
def test_ffmpeg_images_of_fast_constant_rate_videos_follow_the_documented_rule(num_frames, source_fps):
    # Documented for 12 fps and more: images 0 and 1 are frames 0 and 1, image k >= 2 the first frame still on
    # screen at (k - 1.1) / 5 s, i.e. whose end (start + 1 / fps) is at or after that time. (Under 11.1 fps frame 1
    # is still on screen then, but it is image 1 already: ffmpeg, and the port, write frame 2 as image 2.)
    times = [index / source_fps for index in range(num_frames)]
    images = ffmpeg_cfr_frame_indices(times, [None] * num_frames, source_fps)
    assert images[:2] == [0, 1]
    for k, index in enumerate(images[2:], start=2):
        slot = (k - 1.1) / 5
        expected = next((i for i in range(num_frames) if (i + 1) / source_fps >= slot - 1e-9), num_frames - 1)
        assert index == expected, (k, images)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((0, 2.5, 12), r"`num_extracted` must be a positive integer, got 0"),
        ((10, 2.5, 0), r"`max_frames` must be a positive integer, got 0"),
        ((True, 2.5, 12), r"`num_extracted` must be a positive integer, got True"),
        ((10, 0.0, 12), r"`sampling_fps` must be a positive finite number of frames per second, got 0.0"),
        ((10, -1.0, 12), r"`sampling_fps` must be a positive finite number"),
        ((10, math.inf, 12), r"`sampling_fps` must be a positive finite number"),
        ((10, math.nan, 12), r"`sampling_fps` must be a positive finite number"),
    ],
)
def test_arguments_out_of_range_are_refused_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        uniform_positions(*arguments)


def test_the_smallest_valid_arguments_are_accepted():
    assert uniform_positions(1, 2.5, 1).tolist() == [0]
    assert uniform_positions(1, 1e-9, 1).tolist() == [0]  # keeps no image: still the first frame
    assert uniform_positions(2, 5.0, 1).tolist() == [0]
    assert uniform_positions(2, 5.0, 2).tolist() == [0, 1]
    assert uniform_positions(np.int64(3), 5.0, np.int32(3)).tolist() == [0, 1, 2]
    assert select_source_frames([0.0], [None], 30.0, 2.5, 12) == [0]
    assert select_source_frames([], [], 30.0, 2.5, 12) == []


def test_select_source_frames_jitters_with_the_generator_it_is_given():
    # 20 s at 30 fps, every image kept (5 fps), 12 picks: half gaps of 4, so the training jitter moves picks.
    times = [index / 30 for index in range(600)]
    images = ffmpeg_cfr_frame_indices(times, [None] * 600, 30.0)
    plain = select_source_frames(times, [None] * 600, 30.0, 5.0, 12)
    jittered_results = []
    for seed in range(4):
        positions = uniform_positions(len(images), 5.0, 12, True, torch.Generator().manual_seed(seed))
        expected = sorted({images[position] for position in positions})
        torch.manual_seed(1000 + seed)  # the global generator differs: only the given one may decide
        result = select_source_frames(times, [None] * 600, 30.0, 5.0, 12, True, torch.Generator().manual_seed(seed))
        assert result == expected, seed
        jittered_results.append(result)
    assert any(result != plain for result in jittered_results)  # the jitter is applied
    assert len({tuple(result) for result in jittered_results}) > 1  # and depends on the seed


@pytest.mark.parametrize("argument", ["nominal_fps", "output_fps"])
@pytest.mark.parametrize("value", [0, -5.0, math.nan, math.inf, "30", None, True])
def test_the_rate_conversion_refuses_a_bad_rate_by_name(argument, value):
    rates = {"nominal_fps": 30.0, "output_fps": 5.0, argument: value}
    with pytest.raises(ValueError, match=rf"^`{argument}` must be a positive finite number of frames per second"):
        ffmpeg_cfr_frame_runs([0.0, 0.1], [None, None], **rates)


def test_the_rate_conversion_refuses_mismatched_or_non_finite_timings_by_name():
    with pytest.raises(ValueError, match=r"^Got 2 frame times but 1 frame durations\."):
        ffmpeg_cfr_frame_runs([0.0, 0.1], [None], 30.0)
    with pytest.raises(ValueError, match=r"^Frame 1 has time nan and duration None: both must be finite numbers"):
        ffmpeg_cfr_frame_runs([0.0, math.nan], [None, None], 30.0)
    with pytest.raises(ValueError, match=r"^Frame 0 has time 0.0 and duration inf"):
        ffmpeg_cfr_frame_runs([0.0, 0.1], [math.inf, None], 30.0)


@pytest.mark.parametrize("output_fps", [1.0, 5.0, 10.0, 25.0])
def test_frame_indices_are_the_runs_at_the_output_rate_written_out(output_fps):
    times = [index / 30 for index in range(90)]
    runs = ffmpeg_cfr_frame_runs(times, [None] * 90, 30.0, output_fps)
    indices = ffmpeg_cfr_frame_indices(times, [None] * 90, 30.0, output_fps)
    assert indices == [index for index, count in runs for _ in range(count)]
    assert len(indices) == pytest.approx(3 * output_fps, abs=2)  # 3 s at the output rate


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.one_of(st.floats(0.001, 0.2), st.floats(0.2, 5.0), st.just(1 / 30)), min_size=1, max_size=80),
    durations=st.lists(st.one_of(st.none(), st.floats(0.0, 3.0)), min_size=80, max_size=80),
    nominal_fps=st.sampled_from([1.0, 4.0, 25.0, 30.0, 60.0]),
)
def test_runs_have_positive_counts_and_at_most_two_per_source_frame(gaps, durations, nominal_fps):
    # Documented: "(index, number of images) with positive counts, in output order (indices non-decreasing)"; "the
    # runs stay at most two per source frame whatever the timestamps".
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])]).tolist()
    runs = ffmpeg_cfr_frame_runs(times, durations[: len(times)], nominal_fps)
    assert runs and all(count > 0 for _, count in runs)
    indices = [index for index, _ in runs]
    assert indices == sorted(indices) and all(0 <= index < len(times) for index in indices)
    assert all(indices.count(index) <= 2 for index in set(indices))
    assert all(a != b for a, b in zip(indices, indices[1:]))  # a frame's consecutive images are one run


# Clips of one to four frames, with gaps and late starts: the rate conversion's first frames and its end-of-stream
# repeats (the median of the last three previous-frame repeats, fewer than three frames in) against ffmpeg itself.
SHORT_CLIPS = {"two": [0.0, 1.0], "two_far": [0.0, 2.0], "three": [0.0, 0.9, 2.0], "four": [0.0, 0.7, 1.5, 1.6]}
LATE_CLIPS = [(1, 10), (1, 30), (2, 30), (3, 20)]  # (frames, frames of 0.1 s before the video starts)


def ffmpeg_images(path, folder):
    from PIL import Image

    subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-r", "5", "-q", "0",
                    str(folder / "%08d.jpg")], check=True)
    return [frame_index(np.asarray(Image.open(jpeg))) for jpeg in sorted(folder.glob("*.jpg"))]


def port_images(path):
    tables = []
    read_video_frames(str(path), lambda table: tables.append(table) or list(range(len(table.times))))
    table = tables[0]
    return ffmpeg_cfr_frame_indices(table.times, table.durations, table.nominal_fps)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
@pytest.mark.parametrize("case", [*[(name, container) for name in SHORT_CLIPS for container in ("mkv", "mp4")],
                                  *LATE_CLIPS])
def test_short_and_late_clips_match_the_ffmpeg_command_line(tmp_path, case):
    if isinstance(case[0], str):
        name, container = case
        times = SHORT_CLIPS[name]
        path = write_video(tmp_path / f"clip.{container}", len(times), 30, frame_times=times, bf="0")
    else:
        path = write_video_after_audio(tmp_path / "clip.mp4", case[0], 10, case[1])
    assert port_images(path) == ffmpeg_images(path, tmp_path)


@pytest.mark.parametrize("max_frames", [3, 4])
def test_training_jitters_the_inner_picks_from_three_frames_on(max_frames):
    # 100 images at 5 fps all kept; picks 0, 49, 99 (three frames) or 0, 33, 66, 99 (four): half gaps of 24 and 16,
    # over the jitter's threshold of 2, so training moves the inner picks and never the first or the last.
    plain = uniform_positions(100, 5.0, max_frames)
    middles = set()
    for seed in range(20):
        jittered = uniform_positions(100, 5.0, max_frames, random_jitter=True,
                                     generator=torch.Generator().manual_seed(seed))
        assert (jittered[0], jittered[-1]) == (plain[0], plain[-1]) == (0, 99)
        middles.add(tuple(jittered[1:-1]))
    assert len(middles) > 1 and any(middle != tuple(plain[1:-1]) for middle in middles)


def test_each_inner_pick_moves_by_an_offset_drawn_from_minus_half_the_gap_to_half_the_gap():
    # The docstring's rule: an offset in [-s, s), s half the gap between picks. 100 images at 5 fps are all kept (the
    # positions are the picks themselves); ten frames are picked every 11 images, s = 5. 1600 draws reach both ends.
    plain = uniform_positions(100, 5.0, 10)
    assert list(plain) == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    offsets = np.concatenate([
        uniform_positions(100, 5.0, 10, random_jitter=True, generator=torch.Generator().manual_seed(seed))[1:-1]
        - plain[1:-1]
        for seed in range(200)
    ])
    assert set(offsets.tolist()) == set(range(-5, 5))


COUNTS_REFUSED = [0, -3, 2.0, True, "5", None, np.float64(5)]
RATES_REFUSED = [0, 0.0, -1.0, math.inf, -math.inf, math.nan, "2.5", None, False, np.float64(-1.0), Fraction(0)]


def refused_whole(message):
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("value", COUNTS_REFUSED)
@pytest.mark.parametrize("argument", ["num_extracted", "max_frames"])
def test_a_count_that_is_not_a_positive_integer_is_refused_naming_the_argument_and_the_value(argument, value):
    arguments = {"num_extracted": 10, "sampling_fps": 2.5, "max_frames": 12, argument: value}
    with pytest.raises(ValueError, match=refused_whole(f"`{argument}` must be a positive integer, got {value!r}.")):
        uniform_positions(**arguments)


@pytest.mark.parametrize("value", RATES_REFUSED)
def test_a_rate_that_is_not_a_positive_finite_number_is_refused_naming_the_argument_and_the_value(value):
    shown = float(value) if isinstance(value, Fraction) else value  # a Fraction is read as the float it is
    message = "`{}` must be a positive finite number of frames per second, got {!r}."
    with pytest.raises(ValueError, match=refused_whole(message.format("sampling_fps", shown))):
        uniform_positions(10, value, 12)
    for argument in ("nominal_fps", "output_fps"):
        rates = {"nominal_fps": 30.0, "output_fps": 5.0, argument: value}
        with pytest.raises(ValueError, match=refused_whole(message.format(argument, shown))):
            ffmpeg_cfr_frame_runs([0.0, 0.1], [None, None], **rates)
        with pytest.raises(ValueError, match=refused_whole(message.format(argument, shown))):
            ffmpeg_cfr_frame_indices([0.0, 0.1], [None, None], **rates)
    with pytest.raises(ValueError, match=refused_whole(message.format("nominal_fps", shown))):
        select_source_frames([0.0, 0.1], [None, None], value, 2.5, 12)
    with pytest.raises(ValueError, match=refused_whole(message.format("sampling_fps", shown))):
        select_source_frames([0.0, 0.1], [None, None], 30.0, value, 12)


def test_rates_are_any_positive_finite_real_number_and_counts_any_integer_type():
    # PyAV gives rates as Fractions, NumPy gives numpy scalars: each is the number it stands for.
    for rate in (Fraction(5, 2), np.float32(2.5), np.int64(2), 2):
        assert uniform_positions(100, rate, 40).tolist() == uniform_positions(100, float(rate), 40).tolist()
    times = [index / 30 for index in range(60)]
    for rate in (Fraction(30000, 1001), np.float64(30000 / 1001), np.int32(30), 30):
        assert ffmpeg_cfr_frame_runs(times, [None] * 60, rate) == ffmpeg_cfr_frame_runs(times, [None] * 60, float(rate))
        assert ffmpeg_cfr_frame_runs(times, [None] * 60, 30.0, rate) == ffmpeg_cfr_frame_runs(
            times, [None] * 60, 30.0, float(rate))
    for count in (np.int8(12), np.uint16(12), np.int64(12)):
        assert uniform_positions(count, 5.0, count).tolist() == list(range(12))


@pytest.mark.parametrize(
    "times, durations, message",
    [
        ([0.0, 0.1], [None], "Got 2 frame times but 1 frame durations."),
        ([0.0], [None, None], "Got 1 frame times but 2 frame durations."),
        ([0.0, math.nan], [None, None], "Frame 1 has time nan and duration None: both must be finite numbers."),
        ([0.0, 0.1], [math.inf, None], "Frame 0 has time 0.0 and duration inf: both must be finite numbers."),
        ([0.0, "0.1"], [None, None], "Frame 1 has time '0.1' and duration None: both must be finite numbers."),
        ([0.0, 0.1], [None, -math.inf], "Frame 1 has time 0.1 and duration -inf: both must be finite numbers."),
        ([True, 0.1], [None, None], "Frame 0 has time True and duration None: both must be finite numbers."),
        ([0.0, 0.1], [None, "1"], "Frame 1 has time 0.1 and duration '1': both must be finite numbers."),
    ],
)
def test_timings_that_do_not_describe_frames_are_refused_naming_the_frame_and_its_values(times, durations, message):
    for convert in (ffmpeg_cfr_frame_runs, ffmpeg_cfr_frame_indices):
        with pytest.raises(ValueError, match=refused_whole(message)):
            convert(times, durations, 30.0)
    with pytest.raises(ValueError, match=refused_whole(message)):
        select_source_frames(times, durations, 30.0, 2.5, 12)


@pytest.mark.parametrize("source_fps", [24, 30])
def test_the_documented_rule_holds_an_hour_into_a_video(source_fps):
    # The docstring's rule for videos of 12 fps and more: image k >= 2 is the first frame whose end, start + 1 / fps,
    # is at or after (k - 1.1) / 5 s. An hour in, a rate or rounding error of a hundred-thousandth shows as wrong frames.
    num_frames = 3600 * source_fps
    times = [index / source_fps for index in range(num_frames)]
    runs = ffmpeg_cfr_frame_runs(times, [None] * num_frames, float(source_fps))
    starts = np.cumsum([0] + [count for _, count in runs[:-1]])
    num_images = int(starts[-1]) + runs[-1][1]
    assert num_images == 5 * 3600 + 2  # ffmpeg's two first images, then one per slot to the end
    for k in range(num_images - 300, num_images - 5):
        index = runs[np.searchsorted(starts, k, side="right") - 1][0]
        slot = (k - 1.1) / 5
        expected = next(i for i in range(math.floor(slot * source_fps) - 2, num_frames) if (i + 1) / source_fps >= slot)
        assert index == expected, k
