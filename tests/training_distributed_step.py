"""One training step of the global contrastive loss, run by `test_training_distributed.py`.

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        tests/training_distributed_step.py <out.pt>

Every process gets its half of a fixed global batch through accelerate's data loader (split_batches), the loss is
computed over the gathered global batch, and process 0 saves the loss and the (DDP-averaged) gradients.
"""

import sys

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch.utils.data import DataLoader

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from clip2video.training.recipes import small_synthetic_config

GLOBAL_BATCH = 8
NUM_FRAMES = 4


def tiny_model() -> CLIP2VideoModel:
    torch.manual_seed(0)
    return CLIP2VideoModel(small_synthetic_config(NUM_FRAMES, "clip2video"))


def fixed_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 9, (GLOBAL_BATCH,), generator=generator)
    input_ids = torch.randint(1, 49406, (GLOBAL_BATCH, 10), generator=generator)
    attention_mask = (torch.arange(10) < lengths[:, None]).long()
    input_ids[:, 0] = 49406
    input_ids[torch.arange(GLOBAL_BATCH), lengths - 1] = 49407
    video_mask = (torch.arange(NUM_FRAMES) < torch.randint(2, NUM_FRAMES + 1, (GLOBAL_BATCH, 1), generator=generator)).long()
    pixels = torch.randn(GLOBAL_BATCH, NUM_FRAMES, 3, 32, 32, generator=generator) * video_mask[:, :, None, None, None]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values_videos": pixels, "video_mask": video_mask}


def main(output_path: str):
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=True))
    model = tiny_model()
    batch = fixed_batch()
    rows = [{name: tensor[index] for name, tensor in batch.items()} for index in range(GLOBAL_BATCH)]
    loader = DataLoader(rows, batch_size=GLOBAL_BATCH)
    embedder, loader = accelerator.prepare(ContrastiveEmbedder(model), loader)
    (local_batch,) = list(loader)
    loss = global_contrastive_loss(embedder(**local_batch), model.config.global_similarity_weight)
    accelerator.backward(loss)
    if accelerator.is_main_process:
        gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
        torch.save(
            {"loss": loss.detach(), "gradients": gradients, "num_processes": accelerator.num_processes,
             "local_batch_size": local_batch["input_ids"].shape[0]},
            output_path,
        )


if __name__ == "__main__":
    main(sys.argv[1])
