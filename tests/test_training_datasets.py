"""training/run.py on the formats real data comes in, each to a published folder: a `videofolder` read by
`datasets.load_dataset`, parquet with embedded video bytes, webdataset shards streamed (with an exact resume), and
training sets with broken videos."""

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.models import assert_resumed_exactly
from tests.helpers.processes import environment, run_training
from tests.helpers.training_data import break_videos, write_parquet, write_shards, write_videofolder

TINY = ["--global_batch_size", "8", "--eval_batch_size", "16", "--num_frames", "4", "--report_to", "none",
        "--learning_rate", "1e-3", "--clip_learning_rate_scale", "1", "--num_workers", "0"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoints):
    workdir = tmp_path_factory.mktemp("training_datasets")
    shutil.copytree(tiny_checkpoints(with_apps=False), workdir / "tiny")
    return workdir


def offline(workdir: Path) -> dict[str, str]:
    """The training runs' environment: offline, one thread, `datasets`' cache in the work folder."""
    return environment(OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(workdir / "datasets_cache"), HF_HUB_OFFLINE="1")


def published(folder: Path) -> dict:
    """results.json of a published folder, after checking the folder is complete."""
    for name in ("model.safetensors", "config.json", "README.md", "results.json", "processor_config.json",
                 "pipeline_clip2video.py", "handler.py"):
        assert (folder / name).is_file(), name
    assert not (folder / ".publishing").exists()  # the staging folder was emptied into place
    return json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_videofolder_read_by_load_dataset(workdir):
    write_videofolder(workdir / "vf" / "train", 24, seed=0)
    write_videofolder(workdir / "vf" / "test", 12, seed=1)
    run_training(*TINY, "--dataset_name", "videofolder", "--dataset_dir", "vf", "--model_name_or_path", "tiny",
                 "--num_train_epochs", "1", "--output_dir", "out_videofolder", cwd=workdir, env=offline(workdir))
    results = published(workdir / "out_videofolder")
    metrics = results["runs"]["clip2video"]["metrics"]
    assert metrics["num_captions"] == metrics["num_videos"] == 12 and metrics["num_dropped_videos"] == 0
    assert results["test_split"]["dataset_name"] == "videofolder" and results["bad_videos"]["training"] == []


@pytest.mark.slow
def test_parquet_with_embedded_video_bytes(workdir):
    write_parquet(workdir / "pq" / "train.parquet", 24, seed=0)
    write_parquet(workdir / "pq" / "test.parquet", 12, seed=1)
    run_training(*TINY, "--dataset_name", "parquet", "--data_files", "train=pq/train.parquet", "test=pq/test.parquet",
                 "--model_name_or_path", "tiny", "--num_train_epochs", "1", "--output_dir", "out_parquet",
                 cwd=workdir, env=offline(workdir))
    results = published(workdir / "out_parquet")
    assert results["runs"]["clip2video"]["metrics"]["num_videos"] == 12
    assert results["test_split"]["video_ids"][0] == "clip0000.mp4"  # no id column: the embedded file's name


@pytest.mark.slow
def test_streamed_webdataset_shards_resume_exactly(workdir):
    write_shards(workdir / "shards", "train", 40, seed=0, num_shards=4)
    write_shards(workdir / "shards", "test", 12, seed=1, num_shards=1)
    # 40 pairs in blocks of 16, batches of 8: 5 batches an epoch; 8 steps cross an epoch and a block boundary.
    stream = ["--dataset_name", "webdataset", "--data_files", "train=shards/train-*.tar", "test=shards/test-*.tar",
              "--streaming", "--max_train_steps", "8", "--shuffle_block_size", "16", "--model_name_or_path", "tiny",
              "--checkpointing_steps", "3"]
    run_training(*TINY, *stream, "--output_dir", "stream_full", cwd=workdir, env=offline(workdir))
    results = published(workdir / "stream_full")
    assert results["args"]["streaming"] and results["runs"]["clip2video"]["metrics"]["num_videos"] == 12

    # "Killed" after step 3: a new folder holding only that checkpoint, resumed.
    resumed_dir = workdir / "stream_resumed"
    shutil.copytree(workdir / "stream_full" / "checkpoints" / "step_00000003",
                    resumed_dir / "checkpoints" / "step_00000003")
    result = run_training(*TINY, *stream, "--output_dir", "stream_resumed", "--resume_from_checkpoint", "latest",
                          cwd=workdir, env=offline(workdir))
    assert "Resumed from" in result.stdout and "step 3" in result.stdout
    full = workdir / "stream_full"
    assert_resumed_exactly(full, resumed_dir, early_checkpoint=full / "checkpoints" / "step_00000003")


@pytest.mark.slow
def test_three_corrupt_training_videos_are_skipped_and_listed(workdir):
    train = write_videofolder(workdir / "broken" / "train", 24, seed=0)
    test = write_videofolder(workdir / "broken" / "test", 12, seed=1)
    broken = break_videos([train / "videos" / f"{index:04d}.mp4" for index in (2, 9, 17)])
    (train / "videos" / "0020.mp4").unlink()  # and one missing
    broken_test = break_videos([test / "videos" / "0005.mp4"])
    arguments = ["--dataset", "videofolder", "--train_dir", "broken/train", "--eval_dir", "broken/test",
                 "--model_name_or_path", "tiny", "--num_train_epochs", "2", "--checkpointing_steps", "no"]
    result = run_training(*TINY, *arguments, "--output_dir", "out_broken", "--max_bad_videos", "0.25", cwd=workdir,
                          env=offline(workdir))
    results = published(workdir / "out_broken")
    listed = {entry["video"]: entry["reason"] for entry in results["bad_videos"]["training"]}
    assert set(listed) == set(broken) | {str((train / "videos" / "0020.mp4").resolve())}
    assert "FileNotFoundError" in listed[str((train / "videos" / "0020.mp4").resolve())]
    assert all(reason for reason in listed.values())
    assert "bad training video, skipped" in result.stdout
    metrics = results["runs"]["clip2video"]["metrics"]
    # The broken test video and its caption are left out of the ranking, and counted.
    assert metrics["num_dropped_videos"] == 1 and metrics["num_dropped_captions"] == 1 and metrics["num_videos"] == 11
    assert [entry["video"] for entry in results["bad_videos"]["evaluation"]] == list(broken_test)

    # Broken wholesale: more bad videos than --max_bad_videos allows ends the run with the reason, nothing published.
    failed = run_training(*TINY, *arguments, "--output_dir", "out_capped", "--max_bad_videos", "2", cwd=workdir,
                          env=offline(workdir), check=False)
    assert failed.returncode != 0
    assert "more than --max_bad_videos 2 allows" in failed.stderr and "0020.mp4" in failed.stderr
    assert not (workdir / "out_capped" / "model.safetensors").exists()
