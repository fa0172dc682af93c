"""`training/run.py`'s gradient clipping under accumulation, against the step computed here: with
`--gradient_accumulation_steps 2` the gradients of the two micro-batches are summed (each loss divided by 2), the
sum is clipped to `--max_grad_norm` once, then AdamW steps. Clipping each micro-batch's partial sum instead gives
another step. The norm is set so small that AdamW's update is proportional to the clipped gradient (below its eps),
so the direction the clipping leaves shows in the weights. Which two pairs share a micro-batch is the sampler's
choice: the run must equal the step of one of the three pairings, and the per-micro-batch clipping of that pairing
must not be it."""

import copy
import itertools

import pytest
import torch

from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from tests.helpers.training_steps import PAIRINGS, agreement, one_step_run, optimizer_step, pair_inputs

RATE, MAX_NORM = 1e-2, 1e-4


@pytest.mark.slow
def test_the_sum_of_the_micro_batches_is_clipped_once(tmp_path):
    model, processor, trained = one_step_run(tmp_path, "--learning_rate", RATE, "--max_grad_norm", MAX_NORM,
                                             "--report_to", "none")
    original = {name: value.detach().clone() for name, value in model.state_dict().items()}

    def inputs(indices):
        return pair_inputs(processor, tmp_path, indices)

    # Precondition: the clipping binds (the gradient's norm is far above MAX_NORM).
    probe = copy.deepcopy(model)
    global_contrastive_loss(ContrastiveEmbedder(probe)(**inputs([0, 1])), model.config.global_similarity_weight).backward()
    assert torch.nn.utils.clip_grad_norm_(probe.parameters(), float("inf")).item() > 100 * MAX_NORM

    scores = {}
    for first, second in PAIRINGS:
        batches = [inputs(first), inputs(second)]
        scores[first, second] = agreement(trained, optimizer_step(model, batches, RATE, MAX_NORM), original)
    (first, second), best = max(scores.items(), key=lambda item: item[1])
    assert best > 0.99, scores
    for order in itertools.permutations([first, second]):
        wrong = optimizer_step(model, [inputs(indices) for indices in order], RATE, MAX_NORM,
                               clip_each_micro_batch=True)
        assert agreement(trained, wrong, original) < 0.9, order
