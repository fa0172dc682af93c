"""The training part of benchmarks/gpu_check.py runs (tiny, on the CPU): both variants train, the loss is finite."""

import math
import sys
from pathlib import Path

import pytest

from tests.helpers.distributed import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_training_check_runs_plain_and_fsdp_small():
    import gpu_check_training

    config = tiny_model().config
    figures = gpu_check_training.run(steps=2, batch=4, frames=4, config=config, device="cpu")
    assert set(figures) == {"plain bf16 autocast", "FSDP2 bf16 (1 GPU)"}
    for figure in figures.values():
        assert figure["steps_per_second"] > 0 and math.isfinite(figure["last_loss"])
