"""benchmarks/benchmark_main_job.py: two fresh runs of the main job (small settings) train bit-identical weights and
print the same metrics, and its weight comparison sees a one-ulp difference."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "benchmarks"))


def test_same_weights_sees_one_ulp(tmp_path):
    import benchmark_main_job

    weights = {"a": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), "b": torch.ones(2)}
    nudged = {name: value.clone() for name, value in weights.items()}
    nudged["a"][1, 2] = torch.nextafter(nudged["a"][1, 2], torch.tensor(float("inf")))
    for name, tensors in (("first", weights), ("same", weights), ("nudged", nudged)):
        (tmp_path / name).mkdir()
        save_file(tensors, tmp_path / name / "model.safetensors")
    assert benchmark_main_job.same_weights(tmp_path / "first", tmp_path / "same")
    assert not benchmark_main_job.same_weights(tmp_path / "first", tmp_path / "nudged")


@pytest.mark.slow
def test_two_fresh_runs_train_identical_weights(tmp_path):
    record_path = tmp_path / "record.json"
    # Small settings: what is checked is that two fresh processes train the same bits and the benchmark records
    # it, not the metrics' level, so two optimizer steps per model, four frames and 24 test captions suffice.
    small = ["--num_synthetic_train_clips", "16", "--global_batch_size", "8", "--num_train_epochs", "1",
             "--num_frames", "4", "--max_eval_samples", "24", "--report_to", "none"]
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "benchmark_main_job.py"), "--runs", "2",
         "--workdir", str(tmp_path / "runs"), "--record", str(record_path), "--", *small],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "identical weights in the 2 runs" in result.stdout
    record = json.loads(record_path.read_text())
    assert record["identical_weights"] is True
    first, second = (run["metrics"] for run in record["runs"])
    assert first == second and set(first) == {"clip2video", "mean_pooling"}
    assert {"torch", "av", "libavcodec", "torch CPU kernels", "torch threads (--cpu_threads auto)"} <= set(
        record["versions"]
    )
