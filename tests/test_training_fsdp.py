"""FSDP2 on two CPU processes (gloo) trains like one unsharded process (tests/scripts/training_fsdp_step.py)."""

import functools
import math

import pytest
import torch

from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.distributed import fixed_batch, tiny_model
from tests.helpers.processes import REPO, environment, in_two_gloo_processes, launcher, run_command


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


def test_a_global_batch_two_processes_cannot_split_is_refused_before_anything_is_written(tmp_path):
    # Two real processes in one gloo group (forked from this one): the refusal names the batch and the process count.
    # (The FSDP config's fallback on CPUs is test_training_distributed.py's two-process run.)
    in_two_gloo_processes(functools.partial(_unsplittable_global_batch, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _unsplittable_global_batch(output_dir):
    from clip2video.training.run import main

    # Data that does not exist: had the batch been accepted, the run fails at once reading it (never decodes or hangs).
    missing = str(output_dir.parent / "no_such_data")
    with pytest.raises(ValueError, match=r"^--global_batch_size 3 must split evenly into 1 accumulation steps on 2 "
                                         r"processes .*: pass a multiple of 2$"):
        main(["--global_batch_size", "3", "--output_dir", str(output_dir), "--report_to", "none", "--dataset",
              "videofolder", "--train_dir", missing, "--eval_dir", missing, "--model_name_or_path", missing])
