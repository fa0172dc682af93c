"""The training script's evaluation, run as users run it (`--eval_only` on a video folder), against metrics computed
here from the model's own `logits_per_text` with ranks counted one by one: on a split with several captions per
video (non-square) and on a one-caption-per-video split where text-to-video and video-to-text differ, so that a
similarity built as videos x captions, or the two directions traded, cannot pass."""

import csv
import json

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import save_tiny_checkpoint, tiny_processor
from tests.helpers.processes import environment, run_training
from tests.helpers.retrieval import independent_metrics
from tests.helpers.videos import write_square_videos

SPLITS = {
    # 3 videos, 7 captions.
    "several_captions": [
        ("red", "a red square"), ("red", "red moves right"), ("red", "a cooking show"),
        ("green", "a green square"), ("blue", "a blue square"), ("blue", "the sea"), ("blue", "a dog runs"),
    ],
    # 4 videos, one caption each.
    "one_caption": [("red", "a red square"), ("green", "a cat sleeps"), ("blue", "a blue square"), ("yellow", "sunny")],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluation")
    save_tiny_checkpoint(folder / "checkpoint", with_apps=False, seed=3)
    videos = {}
    for split, rows in SPLITS.items():
        videos[split] = write_square_videos(folder / split, num_frames=12)
        with open(folder / split / "metadata.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["file_name", "caption"])
            writer.writerows([f"{colour}.mp4", caption] for colour, caption in rows)
    return folder, videos


@pytest.mark.slow
@pytest.mark.parametrize("split", list(SPLITS))
def test_eval_only_metrics_equal_an_independent_count(workdir, split):
    folder, videos = workdir
    rows, videos = SPLITS[split], videos[split]
    colours = list(dict.fromkeys(colour for colour, _ in rows))  # the split's videos, in order of appearance
    caption_video = [colours.index(colour) for colour, _ in rows]
    model = CLIP2VideoModel.from_pretrained(folder / "checkpoint").eval()
    inputs = tiny_processor()(
        text=[caption for _, caption in rows], videos=[videos[colour] for colour in colours], return_tensors="pt"
    )
    with torch.no_grad():
        scores = model(**inputs).logits_per_text
    assert scores.shape == (len(rows), len(colours))
    expected = independent_metrics(scores.tolist(), caption_video)
    # The directions must differ, or trading them would go unnoticed.
    assert any(expected[f"t2v_{name}"] != expected[f"v2t_{name}"] for name in ("R1", "MedianR", "MeanR"))

    output_dir = folder / f"out_{split}"
    run_training(
        "--eval_only", "--dataset", "videofolder", "--eval_dir", folder / split, "--model_name_or_path",
        folder / "checkpoint", "--output_dir", output_dir, "--num_frames", "4", "--eval_batch_size", "3",
        "--num_workers", "0", "--report_to", "none",
        cwd=folder, env=environment(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home")),
    )
    metrics = next(iter(json.loads((output_dir / "results.json").read_text())["runs"].values()))["metrics"]
    assert (metrics["num_captions"], metrics["num_videos"]) == (len(rows), len(colours))
    assert {name: metrics[name] for name in expected} == pytest.approx(expected, abs=1e-9)
