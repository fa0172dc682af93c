"""`training/splits.py`'s bad-video cap, from docs/training.md (`--max_bad_videos`: a count, an integer >= 0, or a
fraction of the videos in [0, 1)): exactly the cap is accepted and one video more ends the run with a message naming
the count and the flag; 1 is a count (one video), not 100%; a stream is judged on the rows read, once 100 are."""

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.training.run import _bad_video_cap
from clip2video.training.splits import BadVideos


def bad(count, split="train", cap=0.05, total=100, rows_read=0):
    videos = BadVideos(split, cap, total)
    videos.add([(f"v{i}.mp4", "corrupt") for i in range(count)])
    videos.rows_read = rows_read
    return videos


@pytest.mark.parametrize("cap, total, allowed", [(3, 1000, 3), (0.05, 100, 5), (0.05, 119, 5), (0.05, 120, 6),
                                                 (0, 100, 0), (1, 100, 1), (0.5, 3, 1), (0.999, 10, 9)])
def test_exactly_the_cap_is_accepted_and_one_more_is_refused(cap, total, allowed):
    bad(allowed, cap=cap, total=total).check(None, collective=False)
    with pytest.raises(RuntimeError, match=rf"^{allowed + 1} train videos could not be decoded, more than "
                                           rf"--max_bad_videos {cap:g} allows \(of {total} videos\)"):
        bad(allowed + 1, cap=cap, total=total).check(None, collective=False)


@settings(deadline=None)
@given(cap=st.floats(0, 1, exclude_max=True), total=st.integers(1, 10_000), count=st.integers(0, 10_000))
def test_a_fraction_caps_the_share_of_videos(cap, total, count):
    videos = bad(count, cap=cap, total=total)
    if count > cap * total:
        with pytest.raises(RuntimeError, match="more than --max_bad_videos"):
            videos.check(None, collective=False)
    else:
        videos.check(None, collective=False)


def test_a_stream_is_judged_on_the_rows_read_once_there_are_100():
    bad(50, cap=0.05, total=None, rows_read=99).check(None, collective=False)  # too early to judge
    bad(5, cap=0.05, total=None, rows_read=100).check(None, collective=False)
    with pytest.raises(RuntimeError, match=r"^6 train videos .* \(of 100 videos\)"):
        bad(6, cap=0.05, total=None, rows_read=100).check(None, collective=False)


def test_the_same_video_twice_counts_once():
    videos = bad(3, cap=3, total=1000)
    videos.add([("v0.mp4", "corrupt again"), ("v1.mp4", "corrupt")])
    videos.check(None, collective=False)


@pytest.mark.parametrize("text, value", [("0", 0.0), ("1", 1.0), ("20", 20.0), ("0.05", 0.05), ("0.999", 0.999)])
def test_counts_and_fractions_are_parsed(text, value):
    assert _bad_video_cap(text) == value


@pytest.mark.parametrize("text", ["-1", "1.5", "nan", "inf", "five", "-0.01"])
def test_other_caps_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a count \(an integer >= 0"):
        _bad_video_cap(text)
