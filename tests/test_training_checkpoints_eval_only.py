"""`training/checkpoints.py`' output-folder claim under `--eval_only`, from docs/training.md ("a training run owns its
`--output_dir`"): evaluating into a folder that holds a model (a published run, a checkpoint folder) is refused
before anything is written, and the folder is left byte for byte as it was; only a folder of earlier evaluation
results may be evaluated into again."""

import csv
import hashlib
import shutil

import pytest

from tests.helpers.processes import run_training
from tests.helpers.videos import write_square_video


def snapshot(folder):
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("published", ["model.safetensors", "checkpoints"])
def test_evaluating_into_a_folder_holding_a_model_is_refused_and_writes_nothing(tiny_checkpoint, tmp_path, published):
    data = tmp_path / "data"
    data.mkdir()
    for name, colour in (("red.mp4", (230, 20, 20)), ("green.mp4", (20, 200, 20))):
        write_square_video(data / name, colour, num_frames=10)
    with open(data / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows([["file_name", "caption"], ["red.mp4", "a red square"], ["green.mp4", "green"]])
    target = tmp_path / "published"
    shutil.copytree(tiny_checkpoint, target)
    if published == "checkpoints":
        (target / "model.safetensors").rename(target / "weights.bin")
        (target / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        (target / "checkpoints" / "checkpoint-1" / "model.safetensors").write_bytes(b"weights")
    before = snapshot(target)
    result = run_training("--eval_only", "--model_name_or_path", tiny_checkpoint, "--output_dir", target,
                          "--dataset", "videofolder", "--eval_dir", data, "--num_frames", "4", "--report_to", "none",
                          cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"--output_dir {target} already holds another run's files" in result.stderr
    assert snapshot(target) == before
