"""`training/run.py` end to end on tiny synthetic data: exact resume after a kill, evaluation-only, and the
publishable folder loaded in a fresh process with remote code."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers.models import assert_resumed_exactly
from tests.helpers.processes import RUN, environment, run_isolated, run_training

TINY = [
    "--num_synthetic_train_clips", "96", "--num_train_epochs", "3", "--global_batch_size", "16",
    "--num_frames", "4", "--eval_batch_size", "48", "--checkpointing_steps", "2", "--no-mean_pooling_baseline",
    "--report_to", "none", "--learning_rate", "5e-3",
]  # 6 optimizer steps per epoch, 18 in all


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("training_run")
    run_training(*TINY, "--data_dir", "data", "--output_dir", "uninterrupted", cwd=workdir)
    return workdir


@pytest.mark.slow
def test_kill_and_resume_reaches_the_same_weights(uninterrupted):
    workdir = uninterrupted
    command = [sys.executable, RUN, *TINY, "--data_dir", "data", "--output_dir", "interrupted"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
def test_mixed_precision_gradient_checkpointing_and_accumulation_run(uninterrupted):
    workdir = uninterrupted
    run_training(*TINY, "--data_dir", "data", "--output_dir", "bf16", "--mixed_precision", "bf16",
                 "--gradient_checkpointing", "--gradient_accumulation_steps", "2", "--num_train_epochs", "1", "--checkpointing_steps", "no",
                 "--report_to", "tensorboard", cwd=workdir)
    results = json.loads((workdir / "bf16" / "results.json").read_text())
    metrics = results["runs"]["clip2video"]["metrics"]
    assert metrics["num_captions"] == 120 and 0 <= metrics["t2v_R1"] <= 100 and metrics["t2v_MeanR"] >= 1
    assert not (workdir / "bf16" / "checkpoints").exists()
    assert list((workdir / "bf16" / "logs" / "clip2video").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_own_videos_decoded_in_workers_with_training_jitter(uninterrupted):
    # The real-data path from a checkpoint: no frame cache, videos decoded in two DataLoader workers, training
    # frames jittered.
    workdir = uninterrupted
    run_training(*TINY, "--dataset", "videofolder", "--train_dir", "data/train", "--eval_dir", "data/test",
                 "--model_name_or_path", "uninterrupted",
                 "--output_dir", "from_files", "--num_workers", "2", "--num_train_epochs", "2",
                 "--checkpointing_steps", "no", cwd=workdir)
    results = json.loads((workdir / "from_files" / "results.json").read_text())
    assert results["args"]["random_frame_jitter"] is True and results["args"]["cache_frames"] is False
    metrics = results["runs"]["clip2video"]["metrics"]
    assert metrics["num_captions"] == 120 and 0 <= metrics["t2v_R1"] <= 100
