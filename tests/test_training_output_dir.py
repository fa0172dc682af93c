"""One run per output folder: another run's folder is refused (unless cleared, or resumed with the same training
arguments, checked by the run fingerprint stored in every checkpoint), and the published folder appears whole."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clip2video.pipelines.publishing.staging import STAGING_NAME, publish_atomically
from tests.helpers.processes import run_module, run_training

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
def test_overwrite_clears_only_what_a_run_wrote(finished, tmp_path):
    shutil.copytree(finished / "data", tmp_path / "data")
    shutil.copytree(finished / "run", tmp_path / "run")
    (tmp_path / "run" / "someone_elses_file.txt").write_text("x")
    (tmp_path / "run" / "checkpoints" / "my_notes").mkdir()
    before = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*"))
    result = run_training(*TINY, "--overwrite_output_dir", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "clears only what training/run.py wrote" in result.stderr
    assert "checkpoints/my_notes, someone_elses_file.txt" in result.stderr
    assert sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*")) == before

    (tmp_path / "run" / "someone_elses_file.txt").unlink()
    (tmp_path / "run" / "checkpoints" / "my_notes").rmdir()
    (tmp_path / "run" / "checkpoints" / "step_00000004").rename(tmp_path / "run" / "checkpoints" / "step_00000099")
    run_training(*TINY, "--overwrite_output_dir", cwd=tmp_path)
    assert not (tmp_path / "run" / "checkpoints" / "step_00000099").exists()  # the earlier run's, cleared
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
        publish_atomically(output_dir, failing_write)
    assert (output_dir / "model.safetensors").read_text() == "old weights"  # untouched
    assert not (output_dir / STAGING_NAME).exists()  # no staging folder left

    def write(folder: Path):
        (folder / "model.safetensors").write_text("new weights")
        (folder / "results.json").write_text("{}")

    publish_atomically(output_dir, write)
    assert (output_dir / "model.safetensors").read_text() == "new weights"
    assert (output_dir / "checkpoints" / "state.bin").read_text() == "kept"  # what is not published stays
    assert sorted(path.name for path in tmp_path.iterdir()) == ["published"]
    assert sorted(path.name for path in output_dir.iterdir()) == [
        ".published.json", "checkpoints", "model.safetensors", "results.json"
    ]


# --overwrite_output_dir never clears what the run reads ------------------------------------------------------------

def _input_layouts(root: Path):
    """(argv, the flag named in the refusal) for every input a run reads, placed inside (or as) the output folder."""
    out = root / "out"
    (out / "data" / "train").mkdir(parents=True)
    (out / "checkpoints" / "step_00000002").mkdir(parents=True)
    (out / "shards").mkdir()
    real = ["--model_name_or_path", str(root / "elsewhere_model")]
    (root / "elsewhere_model").mkdir()
    return [
        (["--resume_from_checkpoint", "latest"], "--resume_from_checkpoint latest would resume"),
        (["--resume_from_checkpoint", str(out / "checkpoints" / "step_00000002")], "--resume_from_checkpoint"),
        (["--eval_only", "--model_name_or_path", str(out), "--dataset", "videofolder", "--eval_dir", str(root)],
         f"--model_name_or_path {out}"),
        (["--data_dir", str(out / "data")], "--data_dir"),
        (["--data_dir", str(root)], "--data_dir"),  # the output folder lies inside the data folder's tree: equal?
        ([*real, "--dataset", "videofolder", "--train_dir", str(out / "data" / "train"), "--eval_dir", str(root)],
         "--train_dir"),
        ([*real, "--dataset", "videofolder", "--train_dir", str(root), "--eval_dir", str(out)], "--eval_dir"),
        ([*real, "--dataset", "msvd", "--annotations_dir", str(out / "data"), "--videos_dir", str(root)],
         "--annotations_dir"),
        ([*real, "--dataset", "msvd", "--annotations_dir", str(root), "--videos_dir", str(out / "data" / "train")],
         "--videos_dir"),
        ([*real, "--dataset_name", "parquet", "--data_files", f"train={out}/shards/*.parquet"], "--data_files"),
        ([*real, "--dataset_name", "videofolder", "--dataset_dir", str(out / "data")], "--dataset_dir"),
    ]


def test_overwrite_is_refused_when_the_output_folder_holds_an_input(tmp_path, capsys):
    from clip2video.training.checkpoints import check_output_dir_against_inputs
    from clip2video.training.run import parse_args

    for argv, flag in _input_layouts(tmp_path):
        argv = [*argv, "--output_dir", str(tmp_path / "out"), "--overwrite_output_dir"]
        if flag == "--data_dir" and str(tmp_path / "out") not in argv[1]:
            # An output folder inside the data folder is not the data folder: allowed (only `out` is cleared).
            parse_args(argv)
            continue
        with pytest.raises(SystemExit, match="2"):  # argparse's usage error, before anything is touched
            parse_args(argv)
        assert flag in capsys.readouterr().err
        with pytest.raises(ValueError, match=re.escape(flag)):  # and claim_output_dir's own check
            args = parse_args([item for item in argv if item != "--overwrite_output_dir"])
            args.overwrite_output_dir = True
            check_output_dir_against_inputs(args)


def test_an_output_folder_reached_through_a_link_is_the_same_folder(tmp_path):
    from clip2video.training.checkpoints import check_output_dir_against_inputs
    from clip2video.training.run import parse_args

    (tmp_path / "model").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "model")
    args = parse_args(["--eval_only", "--model_name_or_path", str(tmp_path / "model"), "--dataset", "videofolder",
                       "--eval_dir", str(tmp_path), "--output_dir", str(tmp_path / "link")])
    args.overwrite_output_dir = True
    with pytest.raises(ValueError, match="holds what this run reads"):
        check_output_dir_against_inputs(args)


@pytest.mark.slow
def test_evaluating_the_output_folder_with_overwrite_deletes_nothing(tiny_checkpoint, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    before = sorted((path.name, path.stat().st_size) for path in model.iterdir())
    result = run_training("--eval_only", "--model_name_or_path", model, "--output_dir", model,
                          "--overwrite_output_dir", "--dataset", "videofolder", "--eval_dir", tmp_path, cwd=tmp_path,
                          check=False)
    assert result.returncode != 0 and f"--model_name_or_path {model}" in result.stderr
    assert "nothing was deleted" in result.stderr
    assert sorted((path.name, path.stat().st_size) for path in model.iterdir()) == before


# A real run killed while publishing --------------------------------------------------------------------------------

PUBLISH_MODULE = "import os\nfrom clip2video.pipelines.publishing import staging as publish\n"
KILLS = {
    # Killed while the staging folder is being written (before its manifest): the previous files stay published.
    "staging": "publish._write_json_atomically = lambda *args: os._exit(9)",
    # Killed after three of the staged files were moved into place: the next start moves the rest.
    "applying": """
apply = publish._apply_publish
def apply_then_die(output_dir, staging):
    replace, moved = os.replace, []
    def counted(*args):
        replace(*args)
        moved.append(args)
        if len(moved) == 3:
            os._exit(9)
    os.replace = counted
    apply(output_dir, staging)
publish._apply_publish = apply_then_die
""",
}


@pytest.mark.slow
def test_a_run_killed_while_publishing_loses_nothing(finished, tmp_path):
    """Resumed at its end, the run publishes again: killed while staging, then (the next start) while moving the
    staged files into place, then started once more."""
    shutil.copytree(finished / "data", tmp_path / "data")
    shutil.copytree(finished / "run", tmp_path / "run")

    def checkpoints():
        return {path.relative_to(tmp_path).as_posix(): path.read_bytes()
                for path in (tmp_path / "run" / "checkpoints").rglob("*") if path.is_file()}

    before = checkpoints()
    published = load_file(finished / "run" / "model.safetensors")
    argv = [str(tmp_path / item) if item in ("data", "run") else item for item in TINY]
    for kill, found in (("staging", None), ("applying", "cleared the incomplete publish of")):
        killed = run_module("clip2video.training.run", *argv, "--resume_from_checkpoint", "latest",
                            prelude=PUBLISH_MODULE + KILLS[kill],
                            env={"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, check=False)
        assert killed.returncode == 9, killed.stderr[-3000:]
        assert found is None or f"{found} {tmp_path / 'run'}" in killed.stdout  # the real files, all cleared
        assert (tmp_path / "run" / STAGING_NAME).is_dir()
        assert checkpoints() == before  # every checkpoint, right after the kill

    rerun = run_training(*TINY, "--resume_from_checkpoint", "latest", cwd=tmp_path)
    assert "finished the publish of run" in rerun.stdout
    assert not (tmp_path / "run" / STAGING_NAME).exists()
    after = load_file(tmp_path / "run" / "model.safetensors")
    assert sorted(after) == sorted(published) and all(torch.equal(after[name], published[name]) for name in after)
    assert checkpoints() == before


def test_overwrite_names_every_file_a_run_did_not_write(tmp_path):
    from clip2video.training.checkpoints import _clear_run, _foreign_entries

    run = tmp_path / "run"
    ours = ["run.json", "checkpoints/step_00000002/model.safetensors", "checkpoints/step_00000004.partial/x",
            "logs/events.out", "frame_cache/0123456789abcdef01234567.masks.npy", "model.safetensors", "config.json"]
    for name in ours:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (run / ".published.json").write_text(json.dumps({"files": ["model.safetensors", "config.json"]}))
    assert _foreign_entries(run) == []

    foreign = ["notes.txt", "tokenizer.json", "checkpoints/best_model", "frame_cache/my.npy"]
    for name in foreign:
        (run / name).write_text("mine")
    (tmp_path / "elsewhere").mkdir()
    (run / "logs_link").symlink_to(tmp_path / "elsewhere")
    assert _foreign_entries(run) == sorted(["checkpoints/best_model", "frame_cache/my.npy", "logs_link", "notes.txt",
                                            "tokenizer.json"])
    for name in foreign:
        (run / name).unlink()
    (run / "logs_link").unlink()
    _clear_run(run)
    assert list(run.iterdir()) == [] and (tmp_path / "elsewhere").is_dir()


def test_an_earlier_versions_interrupted_publish_is_reported_not_deleted(tmp_path):
    from clip2video.training.checkpoints import _refuse_earlier_version_leftovers

    leftover = tmp_path / ".run.publishing-abc123" / "checkpoints" / "step_00000004"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_text("the only copy")
    with pytest.raises(FileExistsError, match=r"an interrupted publish of an earlier version left .*\.run\.publishing-"
                                              r"abc123 beside --output_dir"):
        _refuse_earlier_version_leftovers(tmp_path / "run")
    assert (leftover / "model.safetensors").read_text() == "the only copy"
    _refuse_earlier_version_leftovers(tmp_path / "other_run")  # another folder's name: not its leftover
