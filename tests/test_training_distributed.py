"""Two CPU processes (gloo) compute the loss and gradients of one process on the full batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from training_distributed_step import fixed_batch, tiny_model  # noqa: E402

SCRIPT = Path(__file__).parent / "training_distributed_step.py"


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_full_batch(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    output = tmp_path / "two_processes.pt"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"}
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--main_process_port", "29517", str(SCRIPT), str(output)],
        capture_output=True, text=True, env=environment, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    distributed = torch.load(output)
    assert distributed["num_processes"] == 2 and distributed["local_batch_size"] == 4

    # Reference: one process, the whole batch, the model's own loss (no gather involved).
    model = tiny_model()
    loss = model(**fixed_batch(), return_loss=True).loss
    loss.backward()
    torch.testing.assert_close(distributed["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    reference = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert distributed["gradients"].keys() == reference.keys()
    for name, gradient in reference.items():
        torch.testing.assert_close(distributed["gradients"][name], gradient, rtol=1e-4, atol=1e-7, msg=name)
    # Not vacuous: the temporal modules and both towers received gradient.
    assert reference["temporal_difference_block.type_embeddings.weight"].abs().sum() > 0
    assert reference["vision_model.embeddings.patch_embedding.weight"].abs().sum() > 0


RUN = Path(__file__).resolve().parents[1] / "training" / "run.py"
TINY_RUN = ["--num_synthetic_train_clips", "64", "--num_train_epochs", "1", "--global_batch_size", "16",
            "--num_frames", "4", "--eval_batch_size", "60", "--checkpointing_steps", "no", "--no-mean_pooling_baseline",
            "--report_to", "none", "--data_dir", "data"]


@pytest.mark.slow
def test_run_py_on_two_cpu_processes_equals_one_process(tmp_path):
    # `accelerate launch --multi_gpu` on a machine without a GPU: run.py must form one gloo group, not run twice.
    from safetensors.torch import load_file

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(RUN), *TINY_RUN, "--output_dir", "one"], cwd=tmp_path,
                         capture_output=True, text=True, env=environment, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    two = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--main_process_port", "29519", str(RUN), *TINY_RUN, "--output_dir", "two"],
        cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-4000:]
    expected, actual = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(expected["text_projection.weight"], tiny_model().text_projection.weight)


@pytest.mark.slow
def test_streaming_on_two_processes_splits_shards_and_resumes_exactly(tmp_path):
    # Each process reads its own shards; evaluation's DataLoader worker is forked after the decoding threads stop
    # (a fork while they run could deadlock); a resume restores every process's own stream position.
    from safetensors.torch import load_file

    from tiny_checkpoint import save_tiny_checkpoint
    from training_data_builders import write_shards

    save_tiny_checkpoint(tmp_path / "tiny", with_apps=False)
    write_shards(tmp_path / "shards", "train", 32, seed=0, num_shards=2)
    write_shards(tmp_path / "shards", "test", 8, seed=1, num_shards=1)
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    arguments = [
        "--dataset_name", "webdataset", "--data_files", "train=shards/train-*.tar", "test=shards/test-*.tar",
        "--streaming", "--max_train_steps", "6", "--shuffle_block_size", "8", "--global_batch_size", "8",
        "--num_frames", "4", "--model_name_or_path", "tiny", "--report_to", "none", "--checkpointing_steps", "3",
        "--num_workers", "1",
    ]

    def launch(*extra):
        result = subprocess.run(
            [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
             "no", "--main_process_port", "29521", str(RUN), *arguments, *extra],
            cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    launch("--output_dir", "full")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_00000003",
                    tmp_path / "resumed" / "checkpoints" / "step_00000003")
    assert "step 3" in launch("--output_dir", "resumed", "--resume_from_checkpoint", "latest").stdout
    expected, actual = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
