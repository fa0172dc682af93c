"""Two CPU processes (gloo) compute the loss and gradients of one process on the full batch."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.distributed import fixed_batch, tiny_model
from tests.helpers.models import save_tiny_checkpoint
from tests.helpers.processes import REPO, accelerate_launch, environment, launcher, run_command, run_training
from tests.helpers.servers import free_port
from tests.helpers.training_data import write_shards


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_full_batch(tmp_path):
    output = tmp_path / "two_processes.pt"
    run_command([*accelerate_launch(2, port=29517), "-m", "tests.scripts.training_distributed_step", output],
                cwd=REPO, env=environment(OMP_NUM_THREADS="1", MASTER_PORT="29517"))
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


TINY_RUN = ["--num_synthetic_train_clips", "64", "--num_train_epochs", "1", "--global_batch_size", "16",
            "--num_frames", "4", "--eval_batch_size", "60", "--checkpointing_steps", "no", "--no-mean_pooling_baseline",
            "--report_to", "none", "--data_dir", "data"]


@pytest.mark.slow
def test_run_py_under_the_fsdp_config_on_two_cpu_processes_says_it_falls_back_and_equals_one_process(tmp_path):
    # accelerate runs FSDP on GPUs only: launched with training/configs/fsdp.yaml on CPUs, run.py must say so and train
    # as plain data parallel in one gloo group (not twice, not sharded), as one process on the whole batch does.
    # (`accelerate launch --multi_gpu`, the CPU launch the docs give, is the streaming test's below.)
    run_training(*TINY_RUN, "--output_dir", "one", cwd=tmp_path)
    fsdp_on_cpus = [
        launcher("accelerate"), "launch", "--config_file", REPO / "training" / "configs" / "fsdp.yaml",
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
    ]
    two = run_training(*TINY_RUN, "--output_dir", "two", cwd=tmp_path, launch=fsdp_on_cpus)
    assert "without one this run falls back to data parallel (MULTI_CPU, 2 processes" in two.stdout, two.stdout
    expected, actual = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(expected["text_projection.weight"], tiny_model().text_projection.weight)


@pytest.mark.slow
def test_streaming_on_two_processes_splits_shards_and_resumes_exactly(tmp_path):
    # Each process reads its own shards; evaluation's DataLoader worker is forked after the decoding threads stop
    # (a fork while they run could deadlock); a resume restores every process's own stream position.
    save_tiny_checkpoint(tmp_path / "tiny", with_apps=False)
    write_shards(tmp_path / "shards", "train", 32, seed=0, num_shards=2)
    write_shards(tmp_path / "shards", "test", 8, seed=1, num_shards=1)
    variables = environment(OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(tmp_path / "cache"))
    arguments = [
        "--dataset_name", "webdataset", "--data_files", "train=shards/train-*.tar", "test=shards/test-*.tar",
        "--streaming", "--max_train_steps", "6", "--shuffle_block_size", "8", "--global_batch_size", "8",
        "--num_frames", "4", "--model_name_or_path", "tiny", "--report_to", "none", "--checkpointing_steps", "3",
        "--num_workers", "1",
    ]

    def launch(*extra):
        return run_training(*arguments, *extra, cwd=tmp_path, launch=accelerate_launch(2, port=29521), env=variables,
                            timeout=300)

    launch("--output_dir", "full")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_00000003",
                    tmp_path / "resumed" / "checkpoints" / "step_00000003")
    assert "step 3" in launch("--output_dir", "resumed", "--resume_from_checkpoint", "latest").stdout
    expected, actual = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
