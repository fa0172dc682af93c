"""CLIP's cap on the inverse temperature (logit scale at most ln 100) during fine-tuning: released CLIP stores exactly
ln 100, so the very first optimizer step from it would pass the cap if the clamp were missing. The training script is
run as users run it, from a checkpoint at ln 100 whose pairs already match (the loss pulls the scale up)."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.contrastive import MAX_LOGIT_SCALE, ContrastiveEmbedder
from tiny_checkpoint import tiny_config, tiny_processor, write_video

RUN = Path(__file__).resolve().parents[1] / "training" / "run.py"
LN_100 = math.log(100.0)
PAIRS = [("red.mp4", (230, 20, 20), "a red square slides to the right"), ("green.mp4", (20, 200, 20), "a green square")]
LEARNING_RATE = 1e-2  # one Adam step moves the scale by about this much, far above float32 resolution


def matched_checkpoint(folder: Path) -> tuple[CLIP2VideoModel, dict]:
    """A tiny model fitted to the two pairs until, at CLIP's logit scale ln 100, the loss pulls the scale up (not
    further: a saturated loss has no gradient left), saved with the scale at ln 100."""
    processor = tiny_processor()
    inputs = processor(
        text=[caption for _, _, caption in PAIRS], videos=[str(folder / name) for name, _, _ in PAIRS],
        return_tensors="pt",
    )
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config())
    with torch.no_grad():
        model.logit_scale.fill_(LN_100)
    optimizer = torch.optim.Adam([p for name, p in model.named_parameters() if name != "logit_scale"], lr=1e-4)
    for _ in range(30):
        model.zero_grad()
        model(**inputs, return_loss=True).loss.backward()
        if model.logit_scale.grad.item() < -0.05:
            break
        optimizer.step()
    model.zero_grad()
    model.save_pretrained(folder / "checkpoint")
    processor.save_pretrained(folder / "checkpoint")
    return model, inputs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clamp")
    for name, colour, _ in PAIRS:
        write_video(folder / name, colour, num_frames=12)
    with open(folder / "metadata.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file_name", "caption"])
        writer.writerows([name, caption] for name, _, caption in PAIRS)
    model, inputs = matched_checkpoint(folder)
    return folder, model, inputs


@pytest.mark.slow
def test_one_step_from_ln_100_stays_at_the_cap(workdir):
    folder, model, inputs = workdir
    original = load_file(folder / "checkpoint" / "model.safetensors")
    assert original["logit_scale"].item() == pytest.approx(LN_100, abs=1e-6)
    # Precondition, computed here: the loss wants a larger scale (positives score above negatives).
    model.zero_grad()
    model(**inputs, return_loss=True).loss.backward()
    assert model.logit_scale.grad.item() < -0.05

    result = subprocess.run(
        [
            sys.executable, str(RUN), "--dataset", "videofolder", "--train_dir", str(folder), "--eval_dir",
            str(folder), "--model_name_or_path", str(folder / "checkpoint"), "--output_dir", str(folder / "out"),
            "--num_frames", "4", "--max_train_steps", "1", "--global_batch_size", "2", "--eval_batch_size", "2",
            "--learning_rate", str(LEARNING_RATE), "--clip_learning_rate_scale", "1.0", "--warmup_proportion", "0",
            "--no-random_frame_jitter", "--num_workers", "0", "--checkpointing_steps", "no", "--report_to", "none",
            "--no-mean_pooling_baseline",
        ],
        cwd=folder, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf_home")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    trained = load_file(folder / "out" / "model.safetensors")
    # The step did happen (other weights moved) but the scale is capped, exactly at the float32 value of ln 100.
    centres = "temporal_alignment_block.assignment_centers"
    assert not torch.equal(trained[centres], original[centres])
    assert trained["logit_scale"].item() <= LN_100 + 1e-6
    assert trained["logit_scale"].item() == pytest.approx(LN_100, abs=1e-6)


def test_the_loss_sees_the_capped_scale():
    """A checkpoint above the cap (saved by other code): the loss uses ln 100, and no gradient pushes the stored
    value further up."""
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config())
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
