"""One run per output folder: another run's folder is refused (unless cleared, or resumed with the same training
arguments, checked by the run fingerprint stored in every checkpoint), and the published folder appears whole."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clip2video.training.publish import _stage_and_swap
from tests.helpers.processes import run_training

TINY = ["--num_synthetic_train_clips", "64", "--num_train_epochs", "1", "--global_batch_size", "16",
        "--num_frames", "4", "--eval_batch_size", "60", "--checkpointing_steps", "2", "--no-mean_pooling_baseline",
        "--report_to", "none", "--data_dir", "data", "--output_dir", "run"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("output_dir")
    run_training(*TINY, cwd=workdir)
    return workdir


@pytest.mark.slow
def test_another_runs_folder_is_refused(finished):
    result = run_training(*TINY, cwd=finished, check=False)
    assert result.returncode != 0
    assert "--output_dir run already holds another run's files" in result.stderr
    assert "--overwrite_output_dir" in result.stderr and "--resume_from_checkpoint latest" in result.stderr


@pytest.mark.slow
def test_resume_needs_the_same_training_arguments(finished):
    result = run_training(*TINY, "--resume_from_checkpoint", "latest", "--learning_rate", "1e-3", cwd=finished,
                          check=False)
    assert result.returncode != 0
    assert "belongs to a run with other training arguments" in result.stderr and "--learning_rate" in result.stderr
    # An operational flag may change; the finished run is evaluated and published again, the same weights.
    before = load_file(finished / "run" / "model.safetensors")
    run_training(*TINY, "--resume_from_checkpoint", "latest", "--num_workers", "0", cwd=finished)
    after = load_file(finished / "run" / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.slow
def test_a_checkpoint_without_fingerprint_is_refused(finished, tmp_path):
    foreign = tmp_path / "run" / "checkpoints" / "step_00000002"
    shutil.copytree(finished / "run" / "checkpoints" / "step_00000002", foreign)
    (foreign / "run.json").unlink()
    shutil.copytree(finished / "data", tmp_path / "data")
    result = run_training(*TINY, "--resume_from_checkpoint", "latest", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "has no run.json" in result.stderr


@pytest.mark.slow
def test_overwrite_clears_the_folder(finished, tmp_path):
    shutil.copytree(finished / "data", tmp_path / "data")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "someone_elses_file.txt").write_text("x")
    run_training(*TINY, "--overwrite_output_dir", cwd=tmp_path)
    assert not (tmp_path / "run" / "someone_elses_file.txt").exists()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["fingerprint"] == results["run_fingerprint"]


def test_published_folder_appears_whole(tmp_path):
    output_dir = tmp_path / "published"
    output_dir.mkdir()
    (output_dir / "checkpoints").mkdir()
    (output_dir / "checkpoints" / "state.bin").write_text("kept")
    (output_dir / "model.safetensors").write_text("old weights")

    def failing_write(folder: Path):
        (folder / "model.safetensors").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _stage_and_swap(output_dir, failing_write)
    assert (output_dir / "model.safetensors").read_text() == "old weights"  # untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["published"]  # no staging folder left

    def write(folder: Path):
        (folder / "model.safetensors").write_text("new weights")
        (folder / "results.json").write_text("{}")

    _stage_and_swap(output_dir, write)
    assert (output_dir / "model.safetensors").read_text() == "new weights"
    assert (output_dir / "checkpoints" / "state.bin").read_text() == "kept"  # what is not published stays
    assert sorted(path.name for path in tmp_path.iterdir()) == ["published"]
    assert oct(output_dir.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
