"""Every flag of training/run.py is checked before any work, with a message that says what to pass instead; the
annotation readers name the file and the row of every problem."""

import json

import pytest

from clip2video.training.loaders import AnnotationFileError, BadRowsError, load_msrvtt, load_video_folder
from clip2video.training.checkpoints import run_fingerprint
from clip2video.training.run import parse_args
from clip2video.training.synthetic import write_mp4

INVALID = [
    (["--checkpointing_steps", "abc"], '"epoch", "no" or a positive number'),
    (["--checkpointing_steps", "0"], '"epoch", "no" or a positive number'),
    (["--checkpointing_steps", "-3"], '"epoch", "no" or a positive number'),
    (["--global_batch_size", "0"], "positive integer"),
    (["--gradient_accumulation_steps", "0"], "positive integer"),
    (["--global_batch_size", "10", "--gradient_accumulation_steps", "4"], "multiple of --gradient_accumulation_steps"),
    (["--num_train_epochs", "0"], "--eval_only"),
    (["--num_train_epochs", "-1"], "integer >= 0"),
    (["--max_train_steps", "0"], "positive integer"),
    (["--num_frames", "0"], "positive integer"),
    (["--max_text_length", "x"], "positive integer"),
    (["--eval_batch_size", "0"], "positive integer"),
    (["--num_workers", "-1"], "integer >= 0"),
    (["--learning_rate", "0"], "number in (0"),
    (["--learning_rate", "nan"], "number in (0"),
    (["--learning_rate", "inf"], "number in (0"),
    (["--warmup_proportion", "1.5"], "number in [0"),
    (["--weight_decay", "-0.1"], "number in [0"),
    (["--max_grad_norm", "-1"], "number in [0"),
    (["--clip_learning_rate_scale", "2"], "number in [0"),
    (["--seed", "-5"], "integer >= 0"),
    (["--cpu_threads", "0"], "positive integer"),
    (["--max_bad_videos", "-1"], "a count"),
    (["--max_bad_videos", "2.5"], "a count"),
    (["--max_bad_videos", "lots"], "a count"),
    (["--num_synthetic_train_clips", "0"], "positive integer"),
    (["--shuffle_block_size", "0"], "positive integer"),
    (["--push_to_hub"], "--hub_model_id"),
    (["--push_to_hub", "--hub_model_id", "no namespace"], "--hub_model_id"),
    (["--push_to_hub", "--hub_model_id", "just-a-name"], "namespace"),
    (["--hub_model_id", "me/model"], "--push_to_hub"),
    (["--streaming"], "--dataset_name"),
    (["--dataset_name", "webdataset", "--model_name_or_path", "m", "--streaming"], "--max_train_steps"),
    (["--data_files", "a.tar"], "--dataset_name"),
    (["--dataset", "msrvtt", "--model_name_or_path", "m"], "--annotations_dir"),
    (["--dataset", "videofolder", "--model_name_or_path", "m", "--train_dir", "t"], "--eval_dir"),
    (["--dataset", "msvd", "--annotations_dir", "a", "--videos_dir", "v"], "--model_name_or_path"),
    (["--cache_frames", "--random_frame_jitter"], "--no-cache_frames"),
    # Two data sources, or a flag the chosen source never reads: refused, not silently ignored.
    (["--dataset", "videofolder", "--dataset_name", "parquet", "--model_name_or_path", "m", "--train_dir", "t",
      "--eval_dir", "e"], "name two data sources"),
    (["--dataset_name", "parquet", "--model_name_or_path", "m", "--train_dir", "t"],
     "--train_dir is not read with --dataset_name parquet"),
    (["--dataset_name", "parquet", "--model_name_or_path", "m", "--videos_dir", "v"], "--videos_dir is not read"),
    (["--dataset", "videofolder", "--model_name_or_path", "m", "--train_dir", "t", "--eval_dir", "e",
      "--dataset_dir", "d"], "--dataset_dir is not read with --dataset videofolder"),
    (["--dataset", "msvd", "--annotations_dir", "a", "--videos_dir", "v", "--model_name_or_path", "m",
      "--train_dir", "t"], "--train_dir is not read with --dataset msvd"),
    (["--dataset", "msvd", "--annotations_dir", "a", "--videos_dir", "v", "--model_name_or_path", "m",
      "--caption_column", "c"], "--caption_column is not read"),
    (["--eval_split", "test"], "--eval_split is not read with --dataset synthetic"),
    (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"], "--resume_from_checkpoint latest would"),
    (["--resume_from_checkpoint", "/no/such/checkpoint"], "no such folder"),
    (["--report_to", "nonsense"], "invalid choice"),
    (["--mixed_precision", "fp8"], "invalid choice"),
]


@pytest.mark.parametrize("argv,message", INVALID, ids=[" ".join(argv) for argv, _ in INVALID])
def test_invalid_flags_are_refused_at_start_with_a_hint(argv, message, capsys):
    with pytest.raises(SystemExit, match="^2$") as exit_info:  # argparse's usage error; the message goes to stderr
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_valid_flags_and_defaults():
    args = parse_args([])
    assert args.checkpointing_steps == "epoch" and args.max_bad_videos == 0.05 and args.cache_frames
    args = parse_args(["--checkpointing_steps", "7", "--max_bad_videos", "3", "--num_train_epochs", "0", "--eval_only"])
    assert args.checkpointing_steps == "7" and args.max_bad_videos == 3
    streaming = parse_args(["--dataset_name", "webdataset", "--data_files", "train=a.tar", "--model_name_or_path", "m",
                            "--streaming", "--max_train_steps", "5"])
    assert streaming.dataset == "hub" and not streaming.cache_frames and not streaming.distinct_captions_in_batch


def test_fingerprint_ignores_operational_flags_only():
    base = run_fingerprint(parse_args([]))
    assert run_fingerprint(parse_args(["--num_workers", "3", "--output_dir", "x", "--report_to", "none",
                                       "--checkpointing_steps", "5"]))["fingerprint"] == base["fingerprint"]
    assert run_fingerprint(parse_args(["--learning_rate", "1e-3"]))["fingerprint"] != base["fingerprint"]
    assert run_fingerprint(parse_args(["--seed", "1"]))["fingerprint"] != base["fingerprint"]


# Annotation files ------------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    import numpy as np

    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_mp4(tmp_path / name, frames, 2.5)
    return tmp_path


def test_csv_quoting_extra_columns_and_repeated_rows(folder):
    (folder / "metadata.csv").write_text(
        "file_name,caption\n"
        'a.mp4,"a dog, a cat, and a bird"\n'  # quoted commas: one caption
        "b.mp4,a dog, a cat\n"  # unquoted comma: a bad row, not a cut caption
        'c.mp4,"a caption\nover two lines"\n'  # a quoted newline stays in the caption
        'a.mp4,"a dog, a cat, and a bird"\n'  # the same row again
        "b.mp4\n"  # too few fields
        "c.mp4,fine\n",
        encoding="utf-8",
    )
    with pytest.raises(BadRowsError, match="3 bad rows") as error:
        load_video_folder(folder)
    where = sorted(row.where for row in error.value.bad_rows)
    assert where == ["metadata.csv:3", "metadata.csv:6", "metadata.csv:7"]
    message = str(error.value)
    assert "3 fields, the header has 2" in message and "repeated row" in message and "1 fields" in message
    with pytest.warns(UserWarning):
        dataset = load_video_folder(folder, on_bad_row="skip")
    assert dataset["caption"] == ["a dog, a cat, and a bird", "a caption\nover two lines", "fine"]


def test_every_bad_row_is_listed_not_the_first_five(folder):
    lines = "".join(f"a.mp4,caption {i}, extra\n" for i in range(12))
    (folder / "metadata.csv").write_text("file_name,caption\n" + lines + "b.mp4,good\n")
    with pytest.raises(BadRowsError, match="12 bad rows") as error:
        load_video_folder(folder)
    assert len(error.value.bad_rows) == 12
    assert all(f"metadata.csv:{line}" in str(error.value) for line in range(2, 14))


def test_non_utf8_file_names_the_file_and_line(folder):
    (folder / "metadata.csv").write_bytes("file_name,caption\na.mp4,caf\u00e9\n".encode() + b"b.mp4,caf\xe9\n")
    with pytest.raises(AnnotationFileError, match=r"metadata.csv:3: not UTF-8"):
        load_video_folder(folder)


def test_utf8_byte_order_mark_is_accepted(folder):
    (folder / "metadata.csv").write_bytes(b"\xef\xbb\xbffile_name,caption\na.mp4,hello\n")
    assert load_video_folder(folder)["caption"] == ["hello"]


def test_paths_outside_the_folder_are_bad_rows(folder):
    (folder / "metadata.jsonl").write_text('{"file_name": "../../etc/passwd", "caption": "x"}\n'
                                           '{"file_name": "a.mp4", "caption": "ok"}\n')
    with pytest.raises(BadRowsError, match="outside"):
        load_video_folder(folder)


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", r"MSRVTT_data.json:1:2: not valid JSON"),
        ("[1, 2]", "expected an object"),
        ('{"sentences": {"a": 1}}', 'expected a "sentences" list'),
    ],
)
def test_malformed_json_names_the_file(tmp_path, content, message):
    (tmp_path / "videos").mkdir()
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n")
    (tmp_path / "MSRVTT_data.json").write_text(content)
    with pytest.raises(AnnotationFileError, match=message):
        load_msrvtt(tmp_path, tmp_path / "videos", "train_9k")


def test_repeated_ids_in_a_split_list_are_reported(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo0\n")
    sentences = [{"video_id": "video0", "caption": "a"}, {"video_id": "video1", "caption": "b"}]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    with pytest.raises(BadRowsError, match=r"MSRVTT_train.9k.csv:4: repeated video id 'video0' \(first at line 2\)"):
        load_msrvtt(tmp_path, tmp_path / "videos", "train_9k")


def test_the_fingerprint_covers_the_training_data(tmp_path):
    import shutil

    import numpy as np

    from clip2video.training.checkpoints import check_same_data, data_identity

    def folder(name, captions):
        root = tmp_path / name
        (root / "videos").mkdir(parents=True)
        for index in range(len(captions)):
            frames = np.full((4, 16, 16, 3), 40 * index, dtype=np.uint8)
            write_mp4(root / "videos" / f"{index}.mp4", frames, 2.5)
        (root / "metadata.csv").write_text("file_name,caption\n" + "".join(
            f"videos/{index}.mp4,{caption}\n" for index, caption in enumerate(captions)))
        return root

    original = folder("a", ["a red square", "a blue circle"])
    identity = data_identity(load_video_folder(original))
    shutil.copytree(original, tmp_path / "moved")
    assert data_identity(load_video_folder(tmp_path / "moved")) == identity  # the same data elsewhere: resumable
    recaptioned = data_identity(load_video_folder(folder("b", ["a red square", "a green circle"])))
    with (original / "videos" / "1.mp4").open("ab") as file:
        file.write(b"\0" * 10)  # another video file under the same name
    rewritten = data_identity(load_video_folder(original))
    assert len({identity["digest"], recaptioned["digest"], rewritten["digest"]}) == 3

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "run.json").write_text(json.dumps({"fingerprint": "f", "data": identity}))
    check_same_data(str(checkpoint), identity)
    with pytest.raises(ValueError, match=r"was trained on other data: 2 training rows \(digest \w+\) there, 2 "):
        check_same_data(str(checkpoint), rewritten)
    (checkpoint / "run.json").write_text(json.dumps({"fingerprint": "f"}))
    with pytest.warns(UserWarning, match="does not record its training data"):
        check_same_data(str(checkpoint), identity)


def test_latest_checkpoint_survives_a_kill_while_a_step_is_saved_again(tmp_path):
    from clip2video.training.checkpoints import resolve_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for name in ("step_00000002", "step_00000004.replaced", "step_00000004.partial", "step_00000010.partial"):
        (checkpoints / name).mkdir(parents=True)
    # Killed between setting the old step 4 aside and renaming the new one into place: the old one is the latest.
    assert resolve_checkpoint("latest", tmp_path) == str(checkpoints / "step_00000004.replaced")
    (checkpoints / "step_00000004").mkdir()
    assert resolve_checkpoint("latest", tmp_path) == str(checkpoints / "step_00000004")
