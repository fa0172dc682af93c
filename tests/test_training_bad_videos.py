"""`training/bad_videos.py`: the cap, from docs/training.md (`--max_bad_videos`: a count, an integer >= 0, or a
fraction of the videos in [0, 1)): exactly the cap is accepted and one video more ends the run with a message naming
the count and the flag; 1 is a count (one video), not 100%; a stream is judged on the rows read, once 100 are. And
detection: the collator skips, without decoding, what the `BadVideos` it is given knows, and marks there what fails;
another model's run starts from what was known before training only."""

import argparse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.bad_videos import BadVideos
from clip2video.training.data import VideoTextCollator
from clip2video.training.run import _bad_video_cap
from clip2video.training.synthetic import write_mp4


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


def test_the_collator_skips_what_its_bad_videos_know_and_marks_what_fails(tmp_path):
    processor = CLIP2VideoProcessor(
        video_processor=CLIP2VideoVideoProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                                                 num_frames=4),
        tokenizer=offline_clip_tokenizer(),
    )
    good, garbage = tmp_path / "good.mp4", tmp_path / "garbage.mp4"
    write_mp4(good, np.zeros((4, 16, 16, 3), dtype=np.uint8), 2.5)
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    # A video that decodes fine but was found bad before training (e.g. by the frame cache) is not decoded.
    bad = BadVideos("test", cap=0, total=2, known_before={str(good): "found bad before training"})
    collator = VideoTextCollator(processor, max_text_length=32, bad_videos=bad)
    batch = collator([{"video": str(good), "caption": "a"}, {"video": str(garbage), "caption": "b"}])
    assert batch["valid"].tolist() == [False, False]
    assert batch["bad_videos"][0] == (str(good), "found bad before training")
    assert bad.reason(str(garbage)) == batch["bad_videos"][1][1] and bad.reason(str(garbage))  # marked
    garbage.write_bytes(good.read_bytes())  # fixed on disk: a marked video is still not decoded again
    again = collator([{"video": str(garbage), "caption": "b"}])
    assert again["valid"].tolist() == [False] and again["bad_videos"] == [(str(garbage), bad.reason(str(garbage)))]
    # The report is what the batches report; the cap counts it.
    bad.add(batch["bad_videos"])
    with pytest.raises(RuntimeError, match=r"^2 test videos could not be decoded, more than --max_bad_videos 0 "):
        bad.check(None, collective=False)


def test_another_model_starts_from_what_was_known_before_training():
    videos = BadVideos("training", cap=0.5, total=10, known_before={"a.mp4": "missing"})
    videos.add([("a.mp4", "missing")], known_at_start=True)
    videos.mark("b.mp4", "corrupt")
    videos.add([("b.mp4", "corrupt")])
    fresh = videos.restarted()
    assert fresh.videos == {"a.mp4": "missing"} and fresh.reason("a.mp4") == "missing"
    assert fresh.reason("b.mp4") is None and (fresh.split, fresh.cap, fresh.total) == ("training", 0.5, 10)
    assert videos.videos == {"a.mp4": "missing", "b.mp4": "corrupt"}  # the first run's report is kept
