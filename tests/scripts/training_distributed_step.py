"""One training step of the global contrastive loss, run by `test_training_distributed.py`.

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        -m tests.scripts.training_distributed_step <out.pt>      # from the repository's root

Every process gets its half of a fixed global batch through accelerate's data loader (split_batches), the loss is
computed over the gathered global batch, and process 0 saves the loss and the (DDP-averaged) gradients.
"""

import sys

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torch.utils.data import DataLoader

from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.distributed import GLOBAL_BATCH, fixed_batch, tiny_model

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
