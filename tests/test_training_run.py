"""`training/run.py` end to end on tiny synthetic data: exact resume after a kill, evaluation-only, and the
publishable folder loaded in a fresh process with remote code."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers.models import assert_resumed_exactly, tiny_processor
from tests.helpers.processes import RUN, environment, run_isolated, run_training, start_process
from tests.helpers.retrieval import independent_metrics
from tests.helpers.training_steps import PAIRINGS, one_step_run, optimizer_step, pair_inputs

TINY = [
    "--num_synthetic_train_clips", "96", "--num_train_epochs", "3", "--global_batch_size", "16",
    "--num_frames", "4", "--eval_batch_size", "48", "--checkpointing_steps", "2", "--no-mean_pooling_baseline",
    "--report_to", "none", "--learning_rate", "5e-3",
]  # 6 optimizer steps per epoch, 18 in all
STEP_RATE, STEP_MAX_NORM = 1e-2, 1e-4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("training_run")
    run_training(*TINY, "--data_dir", "data", "--output_dir", "uninterrupted", cwd=workdir)
    return workdir


@pytest.mark.slow
def test_kill_and_resume_reaches_the_same_weights(uninterrupted):
    workdir = uninterrupted
    command = [sys.executable, RUN, "--cpu_threads", "1", *TINY, "--data_dir", "data", "--output_dir", "interrupted"]
    process = start_process(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=environment(OMP_NUM_THREADS="1"))
    first_checkpoint = workdir / "interrupted" / "checkpoints" / "step_00000004"
    deadline = time.monotonic() + 600
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "interrupted" / "model.safetensors").exists()  # killed mid-training

    resumed = run_training(*TINY, "--data_dir", "data", "--output_dir", "interrupted", "--resume_from_checkpoint",
                           "latest", cwd=workdir)
    resumed_step = int(resumed.stdout.split("Resumed from ")[1].split("step ")[1].split()[0])
    assert 4 <= resumed_step < 18

    reference = workdir / "uninterrupted"
    assert_resumed_exactly(reference, workdir / "interrupted", early_checkpoint=reference / "checkpoints" / "step_00000002")


@pytest.mark.slow
def test_eval_only_reproduces_the_reported_metrics(uninterrupted):
    workdir = uninterrupted
    reported = json.loads((workdir / "uninterrupted" / "results.json").read_text())
    run_training(*TINY, "--data_dir", "data", "--eval_only", "--model_name_or_path", "uninterrupted",
                 "--output_dir", "evaluated", "--dual_softmax", cwd=workdir)
    evaluated = json.loads((workdir / "evaluated" / "results.json").read_text())
    expected = reported["runs"]["clip2video"]["metrics"]
    actual = evaluated["runs"]["clip2video"]["metrics"]
    dual_softmax = {key: actual.pop(key) for key in list(actual) if key.startswith("dsl_")}
    assert actual == pytest.approx(expected)
    assert set(dual_softmax) == {f"dsl_{key}" for key in expected if not key.startswith("num_")}
    assert actual["num_captions"] == actual["num_videos"] == 120
    assert evaluated["test_split"]["captions"] == reported["test_split"]["captions"]
    assert len(set(reported["test_split"]["captions"])) >= 100


@pytest.mark.slow
def test_output_folder_loads_with_remote_code_in_a_fresh_process(uninterrupted):
    folder = uninterrupted / "uninterrupted"
    results = json.loads((folder / "results.json").read_text())
    card = (folder / "README.md").read_text()
    # A plain `hf upload` of the folder skips the run's own files (the Hub applies the published .gitignore).
    assert "checkpoints/" in (folder / ".gitignore").read_text().splitlines()
    assert "model-index" in card and f"value: {round(results['runs']['clip2video']['metrics']['t2v_R1'], 2)}" in card
    videos = results["test_split"]["video_paths"][:3]
    captions = results["test_split"]["captions"][:3]

    # Fresh interpreter, outside the repository, this project's packages unimportable, no network.
    code = f"""
        import sys
        for name in ("clip2video", "modeling_clip2video", "processing", "training"):
            sys.modules[name] = None
        import json, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        inputs = processor(text={captions!r}, videos={videos!r}, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits_per_text
        print(json.dumps({{"class": type(model).__name__, "logits": logits.tolist(),
                          "frames": list(inputs["pixel_values_videos"].shape)}}))
    """
    result = run_isolated(code, cwd=uninterrupted)
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert fresh["class"] == "CLIP2VideoModel" and fresh["frames"] == [3, 4, 3, 32, 32]

    # The same scores from this project's own classes: the weights saved, and the processor run.py trains with.
    from clip2video.modeling_clip2video import CLIP2VideoModel
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

    model = CLIP2VideoModel.from_pretrained(folder).eval()
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=4
    )
    processor = CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())
    with torch.no_grad():
        expected = model(**processor(text=captions, videos=videos, return_tensors="pt")).logits_per_text
    torch.testing.assert_close(torch.tensor(fresh["logits"]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_mixed_precision_gradient_checkpointing_and_accumulation_take_effect(tmp_path):
    """One optimizer step with `--mixed_precision bf16 --gradient_checkpointing --gradient_accumulation_steps 2`
    equals the step written out in tests/helpers/training_steps.py: embeddings under bfloat16 autocast, the two
    micro-batches' gradients summed. It is far from the float32 step (autocast took effect) and from one batch of
    four pairs (accumulation took effect); that the recomputed activations are the ones stored shows in the match
    (checkpointing's memory saving is measured on a GPU, benchmarks/gpu_check_training.py). The gradient is
    clipped to a tiny norm so that AdamW's first update follows the gradient, not only its sign."""
    model, processor, trained = one_step_run(
        tmp_path, "--learning_rate", STEP_RATE, "--max_grad_norm", STEP_MAX_NORM, "--mixed_precision", "bf16",
        "--gradient_checkpointing", "--report_to", "tensorboard",
    )
    original = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def step(pairing, **options):
        batches = [pair_inputs(processor, tmp_path, indices) for indices in pairing]
        return optimizer_step(model, batches, STEP_RATE, STEP_MAX_NORM, **options)

    def distance(first, second):
        return sum(((first[name] - second[name]) ** 2).sum().item() for name in second) ** 0.5

    expected = {pairing: step(pairing, bf16=True) for pairing in PAIRINGS}
    pairing = min(expected, key=lambda key: distance(trained, expected[key]))
    float32, one_batch = step(pairing), step([(0, 1, 2, 3)], bf16=True)
    # Measured: 1e-6 from the bfloat16 step, 4e-3 from the float32 one, 0.3 from one batch of four (0.5 moved).
    assert distance(trained, expected[pairing]) < 0.01 * distance(expected[pairing], float32)
    assert distance(trained, expected[pairing]) < 0.01 * distance(expected[pairing], one_batch)
    assert distance(expected[pairing], original) > 100 * distance(trained, expected[pairing])  # the step moved
    assert not (tmp_path / "out" / "checkpoints").exists()  # --checkpointing_steps no
    assert list((tmp_path / "out" / "logs" / "clip2video").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_own_videos_decoded_in_workers_with_training_jitter(uninterrupted):
    # The real-data path from a checkpoint: no frame cache, videos decoded in two DataLoader workers, training
    # frames jittered.
    workdir = uninterrupted
    run_training(*TINY, "--dataset", "videofolder", "--train_dir", "data/train", "--eval_dir", "data/test",
                 "--model_name_or_path", "uninterrupted",
                 "--output_dir", "from_files", "--num_workers", "2", "--num_train_epochs", "2",
                 "--checkpointing_steps", "no", cwd=workdir)
    folder = workdir / "from_files"
    results = json.loads((folder / "results.json").read_text())
    assert results["args"]["random_frame_jitter"] is True and results["args"]["cache_frames"] is False
    metrics = results["runs"]["clip2video"]["metrics"]
    assert metrics["num_captions"] == 120

    # The metrics are those of the published weights, recounted here from the model's own scores.
    from clip2video.modeling_clip2video import CLIP2VideoModel

    model = CLIP2VideoModel.from_pretrained(folder).eval()
    processor = tiny_processor()  # the synthetic recipe's: 32 x 32 pixels, 4 frames
    split = results["test_split"]
    with torch.no_grad():
        text = model.get_text_features(**processor(text=split["captions"], return_tensors="pt")).pooler_output
        videos = torch.cat([
            model.get_video_features(
                **processor(videos=split["video_paths"][start : start + 40], return_tensors="pt")
            ).pooler_output
            for start in range(0, len(split["video_paths"]), 40)
        ])
        scores = model.logit_scale.exp() * text @ videos.t()
    expected = independent_metrics(scores.tolist(), split["caption_video_index"])
    assert {key: metrics[key] for key in expected} == pytest.approx(expected, abs=1e-9)
    start = json.loads((workdir / "uninterrupted" / "results.json").read_text())["runs"]["clip2video"]["metrics"]
    assert metrics != start  # precondition: the two epochs changed the model
