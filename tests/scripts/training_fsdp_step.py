"""FSDP2 on two CPU processes (gloo), run by `test_training_fsdp.py`:

    torchrun --nproc_per_node 2 -m tests.scripts.training_fsdp_step <out.pt>      # from the repository's root

accelerate does not run FSDP on a CPU-only machine (it falls back to independent processes), so this script shards
the training wrapper itself with `torch.distributed.fsdp.fully_shard`, the way accelerate's FSDP2 path does: one
unit per module of a class the wrapper lists in `_no_split_modules` (bottom-up), then the root. One optimizer step of the global
contrastive loss on half of a fixed batch per process; then the pieces training/run.py relies on under FSDP: the
in-place logit-scale clamp on the sharded parameter, evaluation embeddings through the sharded module's forward, and
the full state dict gathered from the shards. Process 0 saves them for comparison with one unsharded process.
"""

import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from clip2video.training.contrastive import (
    ContrastiveEmbedder,
    clamp_logit_scale,
    global_contrastive_loss,
    make_logit_scale_shardable,
    scalar_logit_scale,
)
from tests.helpers.distributed import GLOBAL_BATCH, fixed_batch, tiny_model


def shard(embedder: ContrastiveEmbedder) -> ContrastiveEmbedder:
    unit_classes = set(embedder._no_split_modules)
    assert unit_classes, "the wrapper must expose the model's _no_split_modules"
    # Bottom-up, as accelerate's FSDP2 preparation does: a temporal block is a unit that holds encoder layers.
    units = [module for module in reversed(list(embedder.modules())) if type(module).__name__ in unit_classes]
    for module in units:
        fully_shard(module)
    fully_shard(embedder)
    return embedder


def main(output_path: str):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = tiny_model()
    make_logit_scale_shardable(model)  # as training/run.py does under FSDP
    embedder = shard(ContrastiveEmbedder(model))
    batch = fixed_batch()
    local = GLOBAL_BATCH // world
    mine = {name: tensor[rank * local : (rank + 1) * local] for name, tensor in batch.items()}
    optimizer = torch.optim.SGD(embedder.parameters(), lr=0.5)

    loss = global_contrastive_loss(embedder(**mine), model.config.global_similarity_weight)
    loss.backward()
    # FSDP reduce-scatters the mean of the processes' gradients; the loss is already the global batch's on each
    # process, as under DDP.
    optimizer.step()
    with torch.no_grad():
        for name, parameter in embedder.named_parameters():
            if name.endswith("logit_scale"):
                parameter.fill_(10.0)  # above the bound, so the clamp has work to do
    clamp_logit_scale(embedder)

    with torch.no_grad():
        captions = embedder(input_ids=mine["input_ids"], attention_mask=mine["attention_mask"])
        text, logit_scale = captions.text_embeds, captions.logit_scale
        video = embedder(pixel_values_videos=mine["pixel_values_videos"], video_mask=mine["video_mask"]).video_embeds
    texts = [torch.empty_like(text) for _ in range(world)]
    videos = [torch.empty_like(video) for _ in range(world)]
    dist.all_gather(texts, text.contiguous())
    dist.all_gather(videos, video.contiguous())
    state = scalar_logit_scale(
        get_model_state_dict(embedder, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    )
    sharded = sum(1 for parameter in embedder.parameters() if type(parameter).__name__ == "DTensor")
    if rank == 0:
        torch.save({"loss": loss.detach(), "state": state, "text": torch.cat(texts), "video": torch.cat(videos),
                    "logit_scale": logit_scale, "sharded_parameters": sharded, "world": world}, output_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
