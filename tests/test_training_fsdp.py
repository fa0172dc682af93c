"""FSDP2 on two CPU processes (gloo) trains like one unsharded process (tests/scripts/training_fsdp_step.py)."""

import math

import pytest
import torch

from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.distributed import fixed_batch, tiny_model
from tests.helpers.processes import REPO, environment, launcher, run_command
from tests.helpers.servers import free_port


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_matches_one_process(tmp_path):
    output = tmp_path / "fsdp.pt"
    run_command(
        [launcher("torchrun"), "--nproc_per_node", "2", "--master_port", "29631", "-m", "tests.scripts.training_fsdp_step",
         output],
        cwd=REPO, env=environment(OMP_NUM_THREADS="1"),
    )
    sharded = torch.load(output)
    assert sharded["world"] == 2 and sharded["sharded_parameters"] > 100  # every parameter is a DTensor shard

    # One process, unsharded, the whole batch: the same loss, step, clamp and embeddings.
    model = tiny_model()
    embedder = ContrastiveEmbedder(model)
    batch = fixed_batch()
    loss = global_contrastive_loss(embedder(**batch), model.config.global_similarity_weight)
    loss.backward()
    torch.optim.SGD(embedder.parameters(), lr=0.5).step()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # what clamping 10.0 gives
        text = embedder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds
        video = embedder(pixel_values_videos=batch["pixel_values_videos"], video_mask=batch["video_mask"]).video_embeds
    torch.testing.assert_close(sharded["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sharded["logit_scale"].reshape(()), model.logit_scale.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sharded["text"], text, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sharded["video"], video, rtol=1e-4, atol=1e-5)
    reference = embedder.state_dict()
    assert sharded["state"].keys() == reference.keys()
    for name, tensor in reference.items():
        assert sharded["state"][name].shape == tensor.shape, name  # logit_scale a scalar again
        torch.testing.assert_close(sharded["state"][name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    # Not vacuous: the step moved the weights.
    assert not torch.equal(reference["model.text_projection.weight"], tiny_model().text_projection.weight)


@pytest.mark.slow
def test_the_fsdp_config_without_a_gpu_says_it_falls_back_to_data_parallel(tmp_path):
    # A global batch that two processes cannot split stops the run right after the launch, before any data is read.
    result = run_command(
        [launcher("accelerate"), "launch", "--config_file", REPO / "training" / "configs" / "fsdp.yaml",
         "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
         REPO / "training" / "run.py", "--global_batch_size", "3", "--output_dir", tmp_path / "out"],
        cwd=tmp_path, env=environment(OMP_NUM_THREADS="1"), check=False,
    )
    assert "without one this run falls back to data parallel (MULTI_CPU, 2 processes" in result.stdout, result.stdout
    assert "--global_batch_size 3 must split evenly" in result.stderr
    assert not (tmp_path / "out").exists()
