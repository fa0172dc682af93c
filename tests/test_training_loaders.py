"""Loaders on small files written in each published annotation format, with bad rows."""

import json
import pickle
import warnings

import datasets
import numpy as np
import pytest

from clip2video.training.loaders import (
    BadRowsError,
    BadRowsSkipped,
    group_by_video,
    load_hub_dataset,
    load_lsmdc,
    load_msrvtt,
    load_msvd,
    load_vatex,
    load_video_folder,
    video_files_by_stem,
)
from clip2video.training.synthetic import write_mp4


def make_videos(folder, names):
    """Real tiny H.264 files: 4 frames of 16x16."""
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 16, 16, 3), dtype=np.uint8)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(path, frames, 2.5)


def load_skipping(loader, *args, **kwargs):
    with pytest.warns(BadRowsSkipped) as record:
        dataset = loader(*args, on_bad_row="skip", **kwargs)
    (warning,) = [w for w in record if issubclass(w.category, BadRowsSkipped)]
    return dataset, warning.message.bad_rows


@pytest.fixture
def msrvtt(tmp_path):
    annotations, videos = tmp_path / "msrvtt_data", tmp_path / "videos"
    annotations.mkdir()
    make_videos(videos, ["video0.mp4", "video1.mp4", "video7010.mp4", "video7011.mkv"])  # video2 missing
    (annotations / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\n")
    (annotations / "MSRVTT_test.full.csv").write_text("video_id\nvideo7010\nvideo7011\n")
    (annotations / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7010,video7010,a man is cooking\n"
        "ret1,msr7011,video7011,   \n"  # empty caption
        "ret2,msr7012,video7012,a dog runs\n"  # missing video
        "ret3,msr7010\n"  # malformed: too few fields
    )
    sentences = [
        {"caption": "a cat plays", "video_id": "video0", "sen_id": 0},
        {"caption": "a kitten plays with yarn", "video_id": "video0", "sen_id": 1},
        {"caption": "people dance", "video_id": "video1", "sen_id": 2},
        {"caption": "a car drives", "video_id": "video2", "sen_id": 3},
        {"caption": "someone cooks", "video_id": "video7010", "sen_id": 4},
        {"caption": "", "video_id": "video7011", "sen_id": 5},
        {"caption": "a webm clip", "video_id": "video7011", "sen_id": 6},
        {"video_id": "video1", "sen_id": 7},  # malformed: no caption
    ]
    videos_json = [{"video_id": f"video{i}", "url": "https://www.youtube.com/watch?v=x", "split": "train"} for i in range(3)]
    (annotations / "MSRVTT_data.json").write_text(json.dumps({"videos": videos_json, "sentences": sentences}))
    return annotations, videos


def test_msrvtt_train_unfolds_every_caption_and_reports_bad_rows(msrvtt):
    annotations, videos = msrvtt
    with pytest.raises(BadRowsError, match="malformed record") as error:
        load_msrvtt(annotations, videos, "train_9k")
    reasons = [row.reason for row in error.value.bad_rows]
    assert len(reasons) == 1 and "malformed record" in reasons[0] and "sentences[7]" in str(error.value)

    # A missing video is not a bad row: the run counts it among its bad videos (its path says where it was expected).
    dataset, bad_rows = load_skipping(load_msrvtt, annotations, videos, "train_9k")
    assert len(bad_rows) == 1
    assert dataset["caption"] == ["a cat plays", "a kitten plays with yarn", "people dance", "a car drives"]
    assert dataset["video_id"] == ["video0", "video0", "video1", "video2"]
    assert dataset[0]["video"] == {"path": str((videos / "video0.mp4").resolve()), "bytes": None}
    assert dataset.features["video"] == datasets.Video(decode=False)
    assert dataset[3]["video"]["path"] == str((videos / "video2").resolve())


def test_msrvtt_test_splits(msrvtt):
    annotations, videos = msrvtt
    full, bad_rows = load_skipping(load_msrvtt, annotations, videos, "test_full")
    assert [row.reason for row in bad_rows] == ["empty caption for video 'video7011'"]
    assert full["caption"] == ["someone cooks", "a webm clip"]
    assert full[1]["video"]["path"].endswith("video7011.mkv")  # found by stem, any extension

    one_k, bad_rows = load_skipping(load_msrvtt, annotations, videos, "test_1k_a")
    assert sorted(row.where for row in bad_rows) == ["MSRVTT_JSFUSION_test.csv:3", "MSRVTT_JSFUSION_test.csv:5"]
    assert one_k["video_id"] == ["video7010", "video7012"] and one_k["caption"] == ["a man is cooking", "a dog runs"]
    with pytest.raises(ValueError, match="unknown MSR-VTT split"):
        load_msrvtt(annotations, videos, "test_2k")


def test_msvd_many_captions_per_video(tmp_path):
    make_videos(tmp_path / "YouTubeClips", ["-4wsuPCjDBc_5_15.avi", "bQJQGoJF7_k_162_169.avi"])
    captions = {
        "-4wsuPCjDBc_5_15": [["a", "man", "sings"], ["someone", "is", "singing"], []],  # last caption is empty
        "bQJQGoJF7_k_162_169": [["a", "woman", "slices", "an", "onion"]],
        "missing_1_2": [["nothing", "here"]],
    }
    with open(tmp_path / "raw-captions.pkl", "wb") as file:
        pickle.dump(captions, file)
    (tmp_path / "test_list.txt").write_text("-4wsuPCjDBc_5_15\nbQJQGoJF7_k_162_169\nmissing_1_2\nnot_in_pickle\n")
    dataset, bad_rows = load_skipping(load_msvd, tmp_path, tmp_path / "YouTubeClips", "test")
    assert sorted(row.reason.split(" for ")[0] for row in bad_rows) == ["empty caption", "malformed: no caption list"]
    assert dataset["caption"] == ["a man sings", "someone is singing", "a woman slices an onion", "nothing here"]
    video_ids, videos, caption_video_index = group_by_video(dataset)
    assert video_ids == ["-4wsuPCjDBc_5_15", "bQJQGoJF7_k_162_169", "missing_1_2"] and caption_video_index == [0, 0, 1, 2]


def test_msvd_refuses_a_pickle_that_imports_code(tmp_path):
    with open(tmp_path / "raw-captions.pkl", "wb") as file:
        pickle.dump({"video": [np.float64(1.0)]}, file)  # needs numpy's reconstructor: not plain data
    (tmp_path / "test_list.txt").write_text("video\n")
    tmp_path.joinpath("videos").mkdir()
    with pytest.raises(pickle.UnpicklingError, match="plain data"):
        load_msvd(tmp_path, tmp_path / "videos", "test")


def test_vatex_hgr_and_random_1k5_splits(tmp_path):
    make_videos(tmp_path / "vatex", ["G9zN5TTuGO4_000179_000189.mp4", "3c0hLqxvSSI_000000_000010.mp4"])
    annotations = {
        "G9zN5TTuGO4_000179_000189": {"enCap": ["A man plays a guitar.", "Someone strums."], "chCap": ["x"]},
        "3c0hLqxvSSI_000000_000010": {"enCap": ["Kids jump on a trampoline.", ""]},
        "nM_ySHgMPW0_000000_000010": {"chCap": ["only chinese"]},  # malformed: no enCap
    }
    (tmp_path / "vatex_data.json").write_text(json.dumps(annotations))
    (tmp_path / "test_list.txt").write_text("3c0hLqxvSSI_000000_000010\nnM_ySHgMPW0_000000_000010\n")
    (tmp_path / "test1k5_sec_list.txt").write_text("G9zN5TTuGO4_000179_000189\n")
    one_k5 = load_vatex(tmp_path, tmp_path / "vatex", "test_1k5")
    assert one_k5["caption"] == ["A man plays a guitar.", "Someone strums."]
    hgr, bad_rows = load_skipping(load_vatex, tmp_path, tmp_path / "vatex", "test")
    assert hgr["caption"] == ["Kids jump on a trampoline."]
    assert {row.reason.split(" for ")[0] for row in bad_rows} == {"empty caption", "malformed: no enCap list"}


def test_lsmdc_tab_separated(tmp_path):
    make_videos(tmp_path / "avi", ["0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi"])
    clip = "0001_American_Beauty_00.00.51.926-00.00.54.129"
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text(
        f"{clip}\t00.00.51.926\t00.00.54.129\t00.00.51.000\t00.00.55.000\tSOMEONE walks down the street.\n"
        f"{clip}\t00.00.51.926\t00.00.54.129\tonly four fields\n"
        "0002_missing\t0\t1\t0\t1\tSomeone waits.\n"
    )
    with pytest.raises(BadRowsError, match="1 bad rows"):
        load_lsmdc(tmp_path, tmp_path / "avi", "test")
    dataset, bad_rows = load_skipping(load_lsmdc, tmp_path, tmp_path / "avi", "test")
    assert [row.where for row in bad_rows] == ["LSMDC16_challenge_1000_publictect.csv:2"]
    assert dataset["caption"] == ["SOMEONE walks down the street.", "Someone waits."]
    assert dataset["video_id"] == [clip, "0002_missing"]


def test_video_folder_csv_one_row_per_caption(tmp_path):
    make_videos(tmp_path, ["clips/a.mp4", "clips/b.mp4"])
    (tmp_path / "metadata.csv").write_text(
        "file_name,caption\nclips/a.mp4,a red ball\nclips/a.mp4,a ball that is red\nclips/b.mp4,\nclips/c.mp4,gone\n"
    )
    dataset, bad_rows = load_skipping(load_video_folder, tmp_path)
    assert [row.where for row in bad_rows] == ["metadata.csv:4"]
    assert dataset["caption"] == ["a red ball", "a ball that is red", "gone"]
    assert group_by_video(dataset)[2] == [0, 0, 1]


def test_video_folder_jsonl_caption_lists(tmp_path):
    make_videos(tmp_path, ["a.mp4", "b.mp4"])
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.mp4", "caption": ["one", "two"]}\n'
        '{"file_name": "b.mp4", "caption": "three"}\n'
        "{not json\n"
        '{"file_name": "b.mp4"}\n'
    )
    with pytest.raises(BadRowsError, match="metadata.jsonl:3") as error:
        load_video_folder(tmp_path)
    assert len(error.value.bad_rows) == 2 and "metadata.jsonl:3" in str(error.value)
    dataset, _ = load_skipping(load_video_folder, tmp_path)
    assert dataset["caption"] == ["one", "two", "three"] and dataset["video_id"] == ["a.mp4", "a.mp4", "b.mp4"]


def test_clean_data_gives_no_warning(tmp_path):
    make_videos(tmp_path, ["a.mp4"])
    (tmp_path / "metadata.csv").write_text("file_name,caption\na.mp4,hello\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_video_folder(tmp_path, on_bad_row="skip")) == 1
    with pytest.raises(ValueError, match="on_bad_row"):
        load_video_folder(tmp_path, on_bad_row="ignore")


def test_a_video_file_wins_over_other_files_of_the_same_stem(tmp_path):
    (tmp_path / "video7.json").write_text("{}")
    (tmp_path / "video7.mp4").write_bytes(b"")
    (tmp_path / "video8.avi").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".video9.mp4").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = video_files_by_stem(tmp_path)
    assert index["video7"] == str(tmp_path / "video7.mp4")
    assert index["video8"] == str(tmp_path / "video8.avi")
    assert index["notes"] == str(tmp_path / "notes.txt")  # any extension still counts when nothing else matches
    assert ".video9" not in index


def test_two_video_files_of_one_id_take_the_first_sorted_and_warn(tmp_path):
    for folder in ("b_test", "a_train"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "video1.mp4").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 video ids .* more than one video file.*video1"):
        index = video_files_by_stem(tmp_path)
    assert index["video1"] == str(tmp_path / "a_train" / "video1.mp4")


def test_a_missing_videos_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="videos folder not found: .*absent"):
        video_files_by_stem(tmp_path / "absent")


# One video per id; unreadable shards named; each split read from its own files --------------------------------------


def _parquet(path, videos, captions, ids=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"video": videos, "caption": captions, **({"video_id": ids} if ids else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _splits(*argv):
    from contextlib import nullcontext

    from clip2video.training.run import parse_args
    from clip2video.training.splits import load_splits

    class MainProcess:
        is_main_process = True

        def main_process_first(self):
            return nullcontext()

    return load_splits(parse_args([*argv, "--model_name_or_path", "m"]), MainProcess())


def test_embedded_videos_without_ids_or_paths_stay_distinct(tmp_path):
    from tests.helpers.training_data import CONFIG, clip_plans
    from tests.helpers.videos import mp4_bytes

    plans = clip_plans(4, seed=0)
    videos = [{"bytes": mp4_bytes(frames, CONFIG.frames_per_second), "path": None} for _, frames in plans]
    captions = [caption for caption, _ in plans]
    for split in ("train", "test"):
        _parquet(tmp_path / f"{split}.parquet", videos + videos[:1], captions + ["the first video again"])
    train, evaluation, _ = _splits("--dataset_name", "parquet", "--data_files", f"train={tmp_path}/train.parquet",
                                   f"test={tmp_path}/test.parquet")
    for split in (train, evaluation):
        video_ids, _, caption_video = group_by_video(split)
        assert len(video_ids) == 4 and caption_video == [0, 1, 2, 3, 0]  # the same bytes: the same video


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_id_naming_two_videos_is_refused_with_its_rows(tmp_path, split):
    from tests.helpers.training_data import CONFIG, clip_plans
    from tests.helpers.videos import mp4_bytes

    plans = clip_plans(4, seed=0)
    videos = [{"bytes": mp4_bytes(frames, CONFIG.frames_per_second), "path": "clip.mp4"} for _, frames in plans]
    good = _parquet(tmp_path / "good.parquet", videos, [caption for caption, _ in plans], ["a", "b", "c", "d"])
    clashing = _parquet(tmp_path / "bad.parquet", videos, [caption for caption, _ in plans], None)  # path for id
    files = {"train": good, "test": good, split: clashing}
    with pytest.raises(ValueError, match=r"1 video ids each name more than one video \(id 'clip.mp4': rows 0, 1, 2, "
                                         r"3\)"):
        _splits("--dataset_name", "parquet", "--data_files", f"train={files['train']}", f"test={files['test']}")


def test_every_loader_refuses_an_id_with_two_videos(tmp_path):
    from clip2video.training.loaders import FEATURES, check_video_ids

    rows = {"video_id": ["x", "y", "x"], "caption": ["a", "b", "c"],
            "video": [{"path": "/v/1.mp4", "bytes": None}, {"path": "/v/2.mp4", "bytes": None},
                      {"path": "/v/3.mp4", "bytes": None}]}
    with pytest.raises(ValueError, match=r"the training split: 1 video ids .*id 'x': rows 0, 2"):
        check_video_ids(datasets.Dataset.from_dict(rows, features=FEATURES), "the training split")
    rows["video"][2] = {"path": "/v/1.mp4", "bytes": None}  # another caption of the same video: fine
    check_video_ids(datasets.Dataset.from_dict(rows, features=FEATURES), "the training split")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_truncated_shard_is_named(tmp_path, streaming):
    from clip2video.training.data import StreamingBatches
    from clip2video.training.loaders import local_data_files
    from tests.helpers.training_data import write_shards

    shards = write_shards(tmp_path / "shards", "train", 9, seed=0, num_shards=3)
    write_shards(tmp_path / "shards", "test", 3, seed=1, num_shards=1)
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    argv = ["--dataset_name", "webdataset", "--data_files", f"train={tmp_path}/shards/train-*.tar",
            f"test={tmp_path}/shards/test-*.tar", *(["--streaming", "--max_train_steps", "1"] if streaming else [])]
    message = rf"1 data file\(s\) cannot be read .*\n  {shards[1]}: (ReadError|EOFError)"
    if not streaming:
        with pytest.raises(ValueError, match=message):
            _splits(*argv)
        return
    train, evaluation, _ = _splits(*argv)
    assert len(evaluation) == 3
    stream = StreamingBatches(train, 2, None, seed=0, data_files=local_data_files([str(tmp_path / "shards" / "t*")]))
    with pytest.raises(ValueError, match=message):
        list(stream._ordered_rows())


def test_a_streamed_training_split_is_not_copied_into_the_cache(tmp_path):
    from pathlib import Path

    from tests.helpers.training_data import write_shards

    write_shards(tmp_path / "shards", "train", 8, seed=0, num_shards=2)
    write_shards(tmp_path / "shards", "test", 3, seed=1, num_shards=1)
    train, evaluation, _ = _splits("--dataset_name", "webdataset", "--data_files",
                                   f"train={tmp_path}/shards/train-*.tar", f"test={tmp_path}/shards/test-*.tar",
                                   "--streaming", "--max_train_steps", "1")
    assert isinstance(train, datasets.IterableDataset) and len(evaluation) == 3
    prepared = {path.name for file in evaluation.cache_files for path in Path(file["filename"]).parent.iterdir()}
    assert "webdataset-test.arrow" in prepared and not any("train" in name for name in prepared), prepared
    with pytest.raises(ValueError, match=r"--data_files gives no files for the split 'validation'"):
        _splits("--dataset_name", "webdataset", "--data_files", f"train={tmp_path}/shards/train-*.tar",
                f"test={tmp_path}/shards/test-*.tar", "--eval_split", "validation")


def test_streamed_rows_without_a_caption_are_left_out_with_a_warning(tmp_path):
    rows = [{"video": f"clip{index}.mp4", "caption": "" if index in (1, 4) else f"caption {index}"} for index in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    stream = load_hub_dataset("json", data_files={"train": [str(tmp_path / "train.jsonl")]}, split="train",
                              streaming=True, video_column="video", caption_column="caption")
    with pytest.warns(UserWarning, match=r"json train: 2 of 6 streamed rows without a video or a non-empty caption"):
        kept = [row["caption"] for row in stream]
    assert kept == ["caption 0", "caption 2", "caption 3", "caption 5"]
