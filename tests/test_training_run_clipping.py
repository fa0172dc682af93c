"""`training/run.py`'s gradient clipping under accumulation, against the step computed here: with
`--gradient_accumulation_steps 2` the gradients of the two micro-batches are summed (each loss divided by 2), the
sum is clipped to `--max_grad_norm` once, then AdamW steps. Clipping each micro-batch's partial sum instead gives
another step. The norm is set so small that AdamW's update is proportional to the clipped gradient (below its eps),
so the direction the clipping leaves shows in the weights. Which two pairs share a micro-batch is the sampler's
choice: the run must equal the step of one of the three pairings, and the per-micro-batch clipping of that pairing
must not be it."""

import copy
import csv
import itertools

import pytest
import torch
from safetensors.torch import load_file

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.models import tiny_checkpoint_config, tiny_processor
from tests.helpers.processes import environment, run_training
from tests.helpers.videos import write_square_video


PAIRS = [
    ("red.mp4", (230, 20, 20), "a red square"), ("green.mp4", (20, 200, 20), "a green square"),
    ("blue.mp4", (20, 20, 230), "a blue square"), ("white.mp4", (240, 240, 240), "a white square"),
]
RATE, MAX_NORM = 1e-2, 1e-4


def step(model, micro_batches, clip_each_micro_batch=False):
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=RATE, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    weight = model.config.global_similarity_weight
    for inputs in micro_batches:
        loss = global_contrastive_loss(ContrastiveEmbedder(model)(**inputs), weight) / len(micro_batches)
        loss.backward()
        if clip_each_micro_batch:
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def agreement(trained, expected, original):
    """Fraction of the weights the step moves that are within 2% of the step's size of `expected`."""
    close = total = 0
    for name, value in expected.items():
        moving = value != original[name]
        tolerance = 0.02 * (value - original[name]).abs().max().item() + 1e-9
        close += torch.isclose(trained[name], value, rtol=0, atol=tolerance)[moving].sum().item()
        total += moving.sum().item()
    return close / max(total, 1)


@pytest.mark.slow
def test_the_sum_of_the_micro_batches_is_clipped_once(tmp_path):
    for name, colour, _ in PAIRS:
        write_square_video(tmp_path / name, colour, num_frames=12)
    with open(tmp_path / "metadata.csv", "w", newline="") as file:
        csv.writer(file).writerows([["file_name", "caption"], *[[name, caption] for name, _, caption in PAIRS]])
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_checkpoint_config()).eval()
    processor = tiny_processor()
    model.save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    run_training(
        "--dataset", "videofolder", "--train_dir", tmp_path, "--eval_dir", tmp_path, "--model_name_or_path",
        tmp_path / "start", "--output_dir", tmp_path / "out", "--num_frames", "4", "--max_train_steps", "1",
        "--global_batch_size", "4", "--gradient_accumulation_steps", "2", "--eval_batch_size", "4",
        "--learning_rate", RATE, "--clip_learning_rate_scale", "1", "--weight_decay", "0", "--warmup_proportion", "0",
        "--max_grad_norm", MAX_NORM, "--no-random_frame_jitter", "--num_workers", "0", "--checkpointing_steps", "no",
        "--report_to", "none", "--no-mean_pooling_baseline",
        cwd=tmp_path, env=environment(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home")),
    )
    trained = load_file(tmp_path / "out" / "model.safetensors")
    original = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def inputs(indices):
        return processor(text=[PAIRS[i][2] for i in indices], videos=[str(tmp_path / PAIRS[i][0]) for i in indices],
                         return_tensors="pt")

    # Precondition: the clipping binds (the gradient's norm is far above MAX_NORM).
    probe = copy.deepcopy(model)
    global_contrastive_loss(ContrastiveEmbedder(probe)(**inputs([0, 1])), model.config.global_similarity_weight).backward()
    assert torch.nn.utils.clip_grad_norm_(probe.parameters(), float("inf")).item() > 100 * MAX_NORM

    pairings = [((0, a), tuple(sorted({1, 2, 3} - {a}))) for a in (1, 2, 3)]
    scores = {}
    for first, second in pairings:
        batches = [inputs(first), inputs(second)]
        scores[first, second] = agreement(trained, step(model, batches), original)
    (first, second), best = max(scores.items(), key=lambda item: item[1])
    assert best > 0.99, scores
    for order in itertools.permutations([first, second]):
        wrong = step(model, [inputs(indices) for indices in order], clip_each_micro_batch=True)
        assert agreement(trained, wrong, original) < 0.9, order
