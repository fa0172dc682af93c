"""Optimizer steps of `training/run.py`, run as users run it, against the same steps computed here by hand, from
checkpoints whose loss pulls the logit scale up: one at CLIP's ln 100 (released CLIP stores it: float32 rounds it
6e-8 above the cap, where the loss's clamp stops the gradient) and one just below it, where the step itself would
pass the cap. The scale must stay capped at ln 100, and every other weight must be where AdamW puts it with the
paper's loss (global/aligned weight 0.8 here, where swapping w and 1 - w shows), the two learning rates (CLIP's
weights at `--clip_learning_rate_scale` times the rate) and weight decay on matrices only."""

import copy
import csv
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.contrastive import MAX_LOGIT_SCALE, ContrastiveEmbedder
from tests.helpers.models import tiny_checkpoint_config, tiny_processor
from tests.helpers.processes import environment, run_training
from tests.helpers.videos import write_square_video

LN_100 = math.log(100.0)
WEIGHT = 0.8
PAIRS = [("red.mp4", (230, 20, 20), "a red square slides to the right"), ("green.mp4", (20, 200, 20), "a green square")]
# One Adam step moves a weight by about the learning rate: far above float32 resolution.
LEARNING_RATE, CLIP_RATE_SCALE, WEIGHT_DECAY = 1e-2, 0.5, 0.1
CLIP_PREFIXES = ("text_model.", "vision_model.", "text_projection.", "visual_projection.", "logit_scale")
EMBEDDING_TABLES = {
    "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
    "vision_model.embeddings.position_embedding.weight", "frame_position_embeddings.weight",
    "temporal_difference_block.type_embeddings.weight",
}


def infonce(logits: torch.Tensor) -> torch.Tensor:
    rows = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
    columns = -torch.diagonal(torch.log_softmax(logits, dim=0)).mean()
    return (rows + columns) / 2


def paper_loss(model: CLIP2VideoModel, inputs, weight: float) -> torch.Tensor:
    """Symmetric InfoNCE on the global and on the aligned scores, weighted w and 1 - w, at the capped scale."""
    text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    video = model.get_video_features(inputs["pixel_values_videos"], inputs["video_mask"])
    scale = model.logit_scale.clamp(max=LN_100).exp()
    global_scores = scale * text.global_embeds @ video.global_embeds.T
    aligned_scores = scale * text.aligned_embeds @ video.aligned_embeds.T
    return weight * infonce(global_scores) + (1 - weight) * infonce(aligned_scores)


def adamw_steps(model: CLIP2VideoModel, inputs, weight: float, steps: int) -> dict[str, torch.Tensor]:
    """`steps` AdamW steps written out, on a copy of `model`, over the whole batch each time, with the script's
    schedule (no warm-up, cosine decay to 0 over `steps`: rate factor (1 + cos(pi t / steps)) / 2 at step t = 0, 1...)
    and the cap on the logit scale after each step. AdamW (betas 0.9, 0.98, eps 1e-6): decoupled decay
    p * (1 - lr * wd) on matrices that are not embedding tables, m = 0.9 m + 0.1 g, v = 0.98 v + 0.02 g^2,
    p - lr * (m / (1 - 0.9^t)) / (sqrt(v / (1 - 0.98^t)) + eps)."""
    model = copy.deepcopy(model)
    moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in model.named_parameters()}
    for step in range(1, steps + 1):
        model.zero_grad()
        paper_loss(model, inputs, weight).backward()
        schedule = (1 + math.cos(math.pi * (step - 1) / steps)) / 2
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                lr = LEARNING_RATE * (CLIP_RATE_SCALE if name.startswith(CLIP_PREFIXES) else 1.0) * schedule
                decay = WEIGHT_DECAY if parameter.ndim >= 2 and name not in EMBEDDING_TABLES else 0.0
                gradient = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
                m, v = moments[name]
                m.mul_(0.9).add_(0.1 * gradient)
                v.mul_(0.98).add_(0.02 * gradient * gradient)
                parameter.mul_(1 - lr * decay)
                parameter.sub_(lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.98**step)).sqrt() + 1e-6))
            model.logit_scale.clamp_(max=LN_100)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


# Where the checkpoints' logit scale starts: CLIP's value, and half a step of the scale below the cap.
STARTS = {"at_ln_100": LN_100, "just_below_ln_100": LN_100 - LEARNING_RATE * CLIP_RATE_SCALE / 2}


def matched_model(folder: Path) -> tuple[CLIP2VideoModel, dict]:
    """A tiny model (w = 0.8) fitted to the two pairs until, near the cap, the loss pulls the scale up (not further:
    a saturated loss has no gradient left)."""
    processor = tiny_processor()
    inputs = processor(
        text=[caption for _, _, caption in PAIRS], videos=[str(folder / name) for name, _, _ in PAIRS],
        return_tensors="pt",
    )
    torch.manual_seed(0)
    config = tiny_checkpoint_config()
    config.global_similarity_weight = WEIGHT
    model = CLIP2VideoModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(STARTS["just_below_ln_100"])
    optimizer = torch.optim.Adam([p for name, p in model.named_parameters() if name != "logit_scale"], lr=1e-4)
    for _ in range(30):
        model.zero_grad()
        paper_loss(model, inputs, WEIGHT).backward()
        if model.logit_scale.grad.item() < -0.05:
            break
        optimizer.step()
    model.zero_grad()
    return model, inputs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clamp")
    for name, colour, _ in PAIRS:
        write_square_video(folder / name, colour, num_frames=12)
    with open(folder / "metadata.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file_name", "caption"])
        writer.writerows([name, caption] for name, _, caption in PAIRS)
    model, inputs = matched_model(folder)
    return folder, model, inputs, tiny_processor()


def train(folder: Path, model: CLIP2VideoModel, processor, start: str, steps: int) -> dict[str, torch.Tensor]:
    """Saves the model with the logit scale at `STARTS[start]` and returns its weights after `steps` optimizer steps
    of run.py (one epoch each: the two pairs are one batch)."""
    with torch.no_grad():
        model.logit_scale.fill_(STARTS[start])
    model.save_pretrained(folder / start)
    processor.save_pretrained(folder / start)
    run_training(
        "--dataset", "videofolder", "--train_dir", folder, "--eval_dir", folder, "--model_name_or_path",
        folder / start, "--output_dir", folder / f"out_{start}", "--num_frames", "4", "--max_train_steps", steps,
        "--global_batch_size", "2", "--eval_batch_size", "2", "--learning_rate", LEARNING_RATE,
        "--clip_learning_rate_scale", CLIP_RATE_SCALE, "--weight_decay", WEIGHT_DECAY, "--warmup_proportion", "0",
        "--max_grad_norm", "0", "--no-random_frame_jitter", "--num_workers", "0", "--checkpointing_steps", "no",
        "--report_to", "none", "--no-mean_pooling_baseline",
        cwd=folder, env=environment(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home")),
    )
    return load_file(folder / f"out_{start}" / "model.safetensors")


@pytest.mark.slow
def test_one_step_from_clips_ln_100_stays_at_the_cap(fitted):
    folder, model, inputs, processor = fitted
    trained = train(folder, model, processor, "at_ln_100", steps=1)
    stored = load_file(folder / "at_ln_100" / "model.safetensors")["logit_scale"]
    assert stored.item() == torch.tensor(LN_100).item()  # exactly CLIP's float32 value
    assert trained["logit_scale"].item() <= stored.item()
    assert trained["logit_scale"].item() == pytest.approx(LN_100, abs=1e-6)


@pytest.mark.slow
def test_two_steps_from_below_ln_100_are_capped_and_equal_adamw_on_the_papers_loss(fitted):
    folder, model, inputs, processor = fitted
    trained = train(folder, model, processor, "just_below_ln_100", steps=2)
    # Precondition, computed here: the loss wants a larger scale, and a full step would pass the cap.
    model.zero_grad()
    paper_loss(model, inputs, WEIGHT).backward()
    assert model.logit_scale.grad.item() < -0.05
    model.zero_grad()
    assert trained["logit_scale"].item() == pytest.approx(LN_100, abs=1e-6)

    expected = adamw_steps(model, inputs, WEIGHT, steps=2)
    swapped = adamw_steps(model, inputs, 1 - WEIGHT, steps=2)
    assert set(trained) == set(expected)

    original = model.state_dict()

    def agreeing(reference: dict[str, torch.Tensor]) -> float:
        """Fraction of the weights the steps move (most rows of the token table have no gradient) that are within
        1e-3 of a step of the reference: a weight whose gradient is within rounding of zero may move either way."""
        close = total = 0
        for name, value in reference.items():
            moving = (expected[name] != original[name]) | (swapped[name] != original[name])
            close += torch.isclose(trained[name], value, rtol=0, atol=1e-3 * LEARNING_RATE + 1e-7)[moving].sum().item()
            total += moving.sum().item()
        return close / total

    assert sum((trained[name] != original[name]).sum().item() for name in trained) > 100_000
    assert agreeing(swapped) < 0.9  # the loss weights matter for this step
    assert agreeing(expected) > 0.999


def test_the_loss_sees_the_capped_scale():
    """A checkpoint above the cap (saved by other code): the loss uses ln 100, and no gradient pushes the stored
    value further up."""
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_checkpoint_config())
    with torch.no_grad():
        model.logit_scale.fill_(LN_100 + 1.0)
    assert MAX_LOGIT_SCALE == pytest.approx(LN_100)
    processor = tiny_processor()
    frames = torch.randint(0, 256, (2, 6, 40, 40, 3), dtype=torch.uint8)
    inputs = processor(text=["one", "two"], videos=list(frames), return_tensors="pt")
    embeddings = ContrastiveEmbedder(model)(**inputs)
    assert embeddings.logit_scale.item() == pytest.approx(LN_100, abs=1e-6)
    embeddings.logit_scale.backward()
    assert model.logit_scale.grad.item() == 0.0
