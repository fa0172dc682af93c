"""One optimizer step of `training/run.py` written out, for the tests that run the script for one step on four
coloured-square videos and compare its weights with this computation."""

import contextlib
import copy
import csv
from pathlib import Path

import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.models import tiny_checkpoint_config, tiny_processor
from tests.helpers.processes import environment, run_training
from tests.helpers.videos import write_square_video

PAIRS = [
    ("red.mp4", (230, 20, 20), "a red square"), ("green.mp4", (20, 200, 20), "a green square"),
    ("blue.mp4", (20, 20, 230), "a blue square"), ("white.mp4", (240, 240, 240), "a white square"),
]
# Which two pairs share a micro-batch of two is the sampler's choice: the three ways of splitting the four.
PAIRINGS = [((0, a), tuple(sorted({1, 2, 3} - {a}))) for a in (1, 2, 3)]


def one_step_run(folder: Path, *arguments) -> tuple[CLIP2VideoModel, object, dict[str, torch.Tensor]]:
    """Writes the four videos, a randomly initialised tiny model to start from, and runs `training/run.py` for one
    optimizer step of the four pairs in two micro-batches (learning rate `--learning_rate`, the same for CLIP's
    weights, no weight decay, no warm-up, plus `arguments`). Returns (the starting model, its processor, the
    trained weights)."""
    from safetensors.torch import load_file

    for name, colour, _ in PAIRS:
        write_square_video(folder / name, colour, num_frames=12)
    with open(folder / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows([["file_name", "caption"], *[[name, caption] for name, _, caption in PAIRS]])
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_checkpoint_config()).eval()
    processor = tiny_processor()
    model.save_pretrained(folder / "start")
    processor.save_pretrained(folder / "start")
    run_training(
        "--dataset", "videofolder", "--train_dir", folder, "--eval_dir", folder, "--model_name_or_path",
        folder / "start", "--output_dir", folder / "out", "--num_frames", "4", "--max_train_steps", "1",
        "--global_batch_size", "4", "--gradient_accumulation_steps", "2", "--eval_batch_size", "4",
        "--clip_learning_rate_scale", "1", "--weight_decay", "0", "--warmup_proportion", "0",
        "--no-random_frame_jitter", "--num_workers", "0", "--checkpointing_steps", "no", "--no-mean_pooling_baseline",
        *arguments,
        cwd=folder, env=environment(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home")),
    )
    return model, processor, load_file(folder / "out" / "model.safetensors")


def pair_inputs(processor, folder: Path, indices) -> dict:
    return processor(text=[PAIRS[i][2] for i in indices], videos=[str(folder / PAIRS[i][0]) for i in indices],
                     return_tensors="pt")


def optimizer_step(model, micro_batches, rate: float, max_norm: float, clip_each_micro_batch: bool = False,
                   bf16: bool = False) -> dict[str, torch.Tensor]:
    """The weights after one AdamW step (run.py's betas and eps, no weight decay) on the sum of the micro-batches'
    losses, each divided by their number, the summed gradient clipped to `max_norm` (0: not clipped); with `bf16`,
    the embeddings computed under CPU bfloat16 autocast and the loss in float32, as accelerate's mixed precision does.
    """
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    weight = model.config.global_similarity_weight
    for inputs in micro_batches:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            embeddings = ContrastiveEmbedder(model)(**inputs)
        embeddings = embeddings.__class__(**{key: value.float() for key, value in embeddings.items()})
        loss = global_contrastive_loss(embeddings, weight) / len(micro_batches)
        loss.backward()
        if clip_each_micro_batch and max_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if max_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def agreement(trained, expected, original) -> float:
    """Fraction of the weights the step moves that are within 2% of the step's size of `expected`."""
    close = total = 0
    for name, value in expected.items():
        moving = value != original[name]
        tolerance = 0.02 * (value - original[name]).abs().max().item() + 1e-9
        close += torch.isclose(trained[name], value, rtol=0, atol=tolerance)[moving].sum().item()
        total += moving.sum().item()
    return close / max(total, 1)
