"""`training/run.py` under gradient accumulation, against an independent computation of what docs/training.md
states: `--global_batch_size` pairs per optimizer step, split into `--gradient_accumulation_steps` micro-batches, so
an epoch of N pairs is `N // global_batch_size` optimizer steps; the schedule (linear warmup over
`warmup_proportion` of the steps, then cosine to 0) is sized and stepped in optimizer steps, not micro-batches. A
real run on tiny synthetic data, logged to TensorBoard; the learning rate of every optimizer step is read back."""

import math

import pytest

from tests.helpers.processes import run_training


CLIPS, GLOBAL_BATCH, ACCUMULATION, EPOCHS, RATE, WARMUP = 48, 16, 2, 2, 5e-3, 0.4


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """The learning rate after `step` optimizer steps, written out from the schedule's definition."""
    if step < warmup:
        return RATE * step / warmup
    progress = (step - warmup) / (total - warmup)
    return RATE * 0.5 * (1.0 + math.cos(math.pi * progress))


def scalars(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


@pytest.mark.slow
def test_steps_and_learning_rate_are_counted_in_optimizer_steps(tmp_path):
    run_training(
        "--num_synthetic_train_clips", CLIPS, "--num_train_epochs", EPOCHS, "--global_batch_size", GLOBAL_BATCH,
        "--gradient_accumulation_steps", ACCUMULATION, "--num_frames", "2", "--eval_batch_size", "48",
        "--learning_rate", RATE, "--warmup_proportion", WARMUP, "--checkpointing_steps", "no",
        "--no-mean_pooling_baseline", "--report_to", "tensorboard", "--data_dir", "data", "--output_dir", "run",
        cwd=tmp_path,
    )
    total = CLIPS // GLOBAL_BATCH * EPOCHS  # 6 optimizer steps, from 12 micro-batches
    warmup = int(WARMUP * total)
    logs = next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*")).parent
    rates = scalars(logs, "train/lr")
    assert sorted(rates) == list(range(1, total + 1))  # one log per optimizer step, none per micro-batch
    expected = {step: cosine_with_warmup(step, total, warmup) for step in rates}
    # Sized in micro-batches the schedule would give other rates at every step after the first.
    assert cosine_with_warmup(2, 2 * total, 2 * warmup) != pytest.approx(expected[2])
    assert rates == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert rates[total] == pytest.approx(0.0, abs=1e-9)
    assert set(scalars(logs, "eval/t2v_R1")) == {total // EPOCHS, total}  # evaluated after each epoch
