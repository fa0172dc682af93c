"""GPU check part: training (see gpu_check.py).

200 optimizer steps of a ViT-B/32-sized CLIP2Video (random weights: the default `CLIP2VideoConfig`, the paper's
architecture at CLIP ViT-B/32 size) on random clips (batch 32, 12 frames of 224x224, 32-token captions) with bf16
mixed precision, the contrastive loss and optimizer of training/run.py, twice: plain (one device, autocast), and FSDP2
(`fully_shard` by the wrapper's `_no_split_modules`, bf16 parameters for compute, a one-process group). Prints
steps/s and peak GPU memory of each; the loss must stay finite.

    PYTHONPATH=. python benchmarks/gpu_check.py --parts training
"""

import os
import time

import torch

STEPS = 200
BATCH = 32
FRAMES = 12
TEXT_LENGTH = 32


def random_batch(batch: int, frames: int, image_size: int, device, generator) -> dict[str, torch.Tensor]:
    input_ids = torch.randint(1, 49406, (batch, TEXT_LENGTH), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones(batch, TEXT_LENGTH, dtype=torch.long, device=device),
        "pixel_values_videos": torch.randn(batch, frames, 3, image_size, image_size, generator=generator).to(device),
        "video_mask": torch.ones(batch, frames, dtype=torch.long, device=device),
    }


def train_steps(embedder, model, steps: int, batch: int, frames: int, device, autocast: bool) -> dict:
    from clip2video.training.contrastive import global_contrastive_loss
    from clip2video.training.contrastive import clamp_logit_scale
    from clip2video.training.recipes import parameter_groups

    optimizer = torch.optim.AdamW(parameter_groups(embedder.model, 1e-4, 1e-3, 0.2), betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(0)
    inputs = [random_batch(batch, frames, model.config.vision_config.image_size, device, generator) for _ in range(4)]
    weight = model.config.global_similarity_weight if model.config.use_temporal_alignment_block else 1.0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started, losses = None, []
    for step in range(steps + 1):
        if step == 1:  # the first step compiles kernels and allocates; time the rest
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = global_contrastive_loss(embedder(**inputs[step % len(inputs)]), weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(embedder.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale(embedder)
        losses.append(loss.detach())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    losses = torch.stack(losses).float().cpu()
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"non-finite loss: {losses.tolist()}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"steps_per_second": steps / seconds, "peak_gib": peak, "first_loss": float(losses[0]),
            "last_loss": float(losses[-1])}


def run(steps: int = STEPS, batch: int = BATCH, frames: int = FRAMES, config=None, device=None) -> dict:
    """Both variants; returns their figures (printed too). `config`/`device` let a CPU smoke test run it small."""
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
    from clip2video.training.contrastive import ContrastiveEmbedder, make_logit_scale_shardable

    device = torch.device(device or "cuda")
    config = config or CLIP2VideoConfig(num_frames=frames)
    figures = {}

    torch.manual_seed(0)
    model = CLIP2VideoModel(config).to(device)
    figures["plain bf16 autocast"] = train_steps(ContrastiveEmbedder(model), model, steps, batch, frames, device, True)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    started_group = not dist.is_initialized()
    if started_group:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29561")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = CLIP2VideoModel(config).to(device)
        make_logit_scale_shardable(model)
        embedder = ContrastiveEmbedder(model)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        units = set(embedder._no_split_modules)
        for module in reversed(list(embedder.modules())):
            if type(module).__name__ in units:
                fully_shard(module, mp_policy=policy)
        fully_shard(embedder, mp_policy=policy)
        figures["FSDP2 bf16 (1 GPU)"] = train_steps(embedder, model, steps, batch, frames, device, False)
    finally:
        if started_group:
            dist.destroy_process_group()

    print(f"{steps} steps, batch {batch} x {frames} frames of {config.vision_config.image_size} px, "
          f"ViT width {config.vision_config.hidden_size}, {config.vision_config.num_hidden_layers} layers")
    for name, figure in figures.items():
        print(f"  {name}: {figure['steps_per_second']:.2f} steps/s, peak {figure['peak_gib']:.2f} GiB, "
              f"loss {figure['first_loss']:.3f} -> {figure['last_loss']:.3f}")
    return figures


if __name__ == "__main__":
    run()
