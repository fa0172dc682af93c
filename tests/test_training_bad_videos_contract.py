"""`training/bad_videos.py` beyond the cap (`test_training_bad_videos.py`), from docs/training.md: the videos known
to be bad before training (missing local files, found once before training) are reported again by every model the
job trains, however many; the report merged over processes is sorted by name; only local files that do not exist
are missing (embedded bytes and URLs are not files to look for)."""

import math
import re

import datasets
import pytest
from accelerate import Accelerator

from clip2video.training.bad_videos import BadVideos, missing_videos
from tests.helpers.processes import in_two_gloo_processes


def test_every_model_starts_from_what_was_known_before_training_however_many_restart():
    videos = BadVideos("training", cap=3, total=10, known_before={"a.mp4": "missing"})
    videos.add([("a.mp4", "missing")], known_at_start=True)
    videos.add([("b.mp4", "corrupt")])
    third = videos.restarted().restarted()
    assert third.videos == {"a.mp4": "missing"} and third.reason("a.mp4") == "missing"
    third.add([("c.mp4", "corrupt"), ("d.mp4", "corrupt")])
    third.check(None, collective=False)  # three in all: one known at the start, two found since
    third.add([("e.mp4", "corrupt")])
    with pytest.raises(RuntimeError, match=r"^4 training videos could not be decoded, more than --max_bad_videos 3"):
        third.check(None, collective=False)


def test_missing_videos_are_the_local_files_that_do_not_exist(tmp_path):
    present = tmp_path / "present.mp4"
    present.write_bytes(b"video")
    rows = {"video": [{"path": str(present), "bytes": None}, {"path": str(tmp_path / "gone.mp4"), "bytes": None},
                      {"path": "clip.mp4", "bytes": b"embedded"}, {"path": "https://example.com/v.mp4", "bytes": None},
                      {"path": str(tmp_path / "gone.mp4"), "bytes": None}, {"path": None, "bytes": b"x"}]}
    dataset = datasets.Dataset.from_dict(rows)
    assert missing_videos(dataset) == {str(tmp_path / "gone.mp4"): "FileNotFoundError: video file not found"}


def test_missing_videos_are_found_in_every_row_of_a_large_split(tmp_path):
    # The rows are read in chunks of 10,000: the first row, the first of the second chunk and a row past two chunks.
    (tmp_path / "here.mp4").write_bytes(b"video")
    paths = [str(tmp_path / "here.mp4")] * 20_001
    for index in (0, 10_000, 20_000):
        paths[index] = str(tmp_path / f"gone{index}.mp4")
    dataset = datasets.Dataset.from_dict({"video": [{"path": path, "bytes": None} for path in paths]})
    assert list(missing_videos(dataset)) == [str(tmp_path / f"gone{index}.mp4") for index in (0, 10_000, 20_000)]


def test_the_report_of_every_process_is_sorted_by_name():
    accelerator = Accelerator(cpu=True)
    videos = BadVideos("test", math.inf, 3)
    videos.add([("c.mp4", "corrupt"), ("a.mp4", "missing"), ("b.mp4", "corrupt")])
    assert list(videos.gathered(accelerator).items()) == [("a.mp4", "missing"), ("b.mp4", "corrupt"),
                                                          ("c.mp4", "corrupt")]
    videos.merge_processes(accelerator)
    assert list(videos.videos) == ["a.mp4", "b.mp4", "c.mp4"]


def test_the_cap_s_message_is_whole_and_lists_the_first_twenty_videos():
    # A split broken wholesale (25 bad videos of 40, at most 10 % allowed): the error says how many, of how many,
    # the cap, the first 20 videos with their reasons (not all of them), and what to do.
    videos = BadVideos("training", cap=0.1, total=40)
    videos.add([(f"v{index:02d}.mp4", f"ValueError: corrupt {index}") for index in range(25)])
    listed = "\n".join(f"  v{index:02d}.mp4: ValueError: corrupt {index}" for index in range(20))
    expected = ("25 training videos could not be decoded, more than --max_bad_videos 0.1 allows (of 40 videos): the "
                f"data looks broken wholesale. Some of them:\n{listed}\nFix or remove them, or raise "
                "--max_bad_videos.")
    with pytest.raises(RuntimeError, match=rf"^{re.escape(expected)}\Z"):
        videos.check(None, collective=False)


def test_a_stream_counts_the_rows_it_read_from_none():
    # The training loop adds each batch's rows to `rows_read` of a new BadVideos: after 99 rows a stream is not
    # judged yet, at 100 it is (one bad video is then over 0.5 % of them).
    videos = BadVideos("training", cap=0.005, total=None)
    videos.add([("v0.mp4", "ValueError: corrupt")])
    for _ in range(99):
        videos.rows_read += 1
    videos.check(None, collective=False)
    videos.rows_read += 1
    with pytest.raises(RuntimeError, match=r"^1 training videos could not be decoded, .* \(of 100 videos\)"):
        videos.check(None, collective=False)


def _each_process_within_the_cap_all_together_over_it():
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    # A split of 100 videos, at most 1 bad: each process met one, two in all.
    videos = BadVideos("training", cap=1, total=100)
    videos.add([(f"p{accelerator.process_index}.mp4", "ValueError: corrupt")])
    videos.check(accelerator, collective=False)  # on its own, each process is within the cap
    for check in (lambda: videos.check(accelerator), lambda: videos.check(accelerator, collective=True)):
        with pytest.raises(RuntimeError, match=r"^2 training videos could not be decoded, more than --max_bad_videos 1 "
                                               r"allows \(of 100 videos\)"):
            check()
    # A stream: 60 rows read on each process are 120 together, enough to judge; 2 bad of 120 is over 1 %.
    stream = BadVideos("training", cap=0.01, total=None)
    stream.add([(f"p{accelerator.process_index}.mp4", "ValueError: corrupt")])
    stream.rows_read = 60
    stream.check(accelerator, collective=False)  # 60 rows alone: too early to judge
    with pytest.raises(RuntimeError, match=r"^2 training videos could not be decoded, .* \(of 120 videos\)"):
        stream.check(accelerator)


def test_the_cap_counts_the_bad_videos_and_rows_of_every_process_together():
    # docs: the cap "ends the run ... on every process at once": the counts met by each process are summed at each
    # optimizer step, so every process reaches the same decision. Two real processes (gloo on the CPU).
    in_two_gloo_processes(_each_process_within_the_cap_all_together_over_it)
