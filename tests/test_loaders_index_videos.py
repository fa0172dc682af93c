"""`training.loaders.index_videos`: how the published sets' video files are found by id."""

import warnings

import pytest

from clip2video.training.loaders import index_videos


def test_a_video_file_wins_over_other_files_of_the_same_stem(tmp_path):
    (tmp_path / "video7.json").write_text("{}")
    (tmp_path / "video7.mp4").write_bytes(b"")
    (tmp_path / "video8.avi").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".video9.mp4").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = index_videos(tmp_path)
    assert index["video7"] == str(tmp_path / "video7.mp4")
    assert index["video8"] == str(tmp_path / "video8.avi")
    assert index["notes"] == str(tmp_path / "notes.txt")  # any extension still counts when nothing else matches
    assert ".video9" not in index


def test_two_video_files_of_one_id_take_the_first_sorted_and_warn(tmp_path):
    for folder in ("b_test", "a_train"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "video1.mp4").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 video ids .* more than one video file.*video1"):
        index = index_videos(tmp_path)
    assert index["video1"] == str(tmp_path / "a_train" / "video1.mp4")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="videos folder not found: .*absent"):
        index_videos(tmp_path / "absent")
