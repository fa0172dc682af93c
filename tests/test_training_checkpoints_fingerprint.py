"""`training/checkpoints.py`'s run fingerprint, from docs/training.md: it holds "the arguments that change what is
trained (model, data, recipe, seed, ...)", and operational flags ("--num_workers, --report_to, --checkpointing_steps,
data locations, Hub options, ...") may change on a resume. Every flag of `training/run.py` is classified here, on its
own, by what it does; a result-changing flag that leaves the fingerprint alone would let a resume silently mix two
different runs. A new flag fails `test_every_flag_is_classified` until someone decides which class it is in."""

import argparse
import copy

import pytest

from clip2video.training.checkpoints import run_fingerprint
from clip2video.training.run import parse_args


# What is trained, and from what: a checkpoint of one value must not be resumed with another.
CHANGES_RESULTS = {
    # data
    "dataset", "num_synthetic_train_clips", "train_split", "on_bad_row", "dataset_name", "dataset_config",
    "dataset_dir", "dataset_revision", "video_column", "caption_column", "id_column", "streaming",
    "shuffle_block_size", "random_frame_jitter", "distinct_captions_in_batch",
    # model
    "model_name_or_path", "architecture", "num_frames", "max_text_length", "mean_pooling_baseline",
    # recipe
    "learning_rate", "clip_learning_rate_scale", "weight_decay", "warmup_proportion", "num_train_epochs",
    "max_train_steps", "global_batch_size", "gradient_accumulation_steps", "max_grad_norm", "mixed_precision", "seed",
}
# How the run is carried out or reported: free to change on a resume (data locations are checked apart, by the
# data's identity).
OPERATIONAL = {
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "eval_only", "num_workers", "cpu_threads",
    "report_to", "checkpointing_steps", "eval_batch_size", "dual_softmax", "max_bad_videos", "push_to_hub",
    "hub_model_id", "hub_token", "hub_private", "hub_revision", "hub_create_pr", "data_dir", "videos_dir",
    "annotations_dir", "train_dir", "eval_dir", "data_files", "eval_split", "max_eval_samples",
}
# The same numbers either way, but resuming across them is refused too (the safe side): recomputing activations
# (`gradient_checkpointing`) and caching decoded frames (`cache_frames`, which also decides the jitter's default).
EITHER = {"gradient_checkpointing", "cache_frames"}


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return value + ["other"]
    return "other"  # None


def fingerprint_with(name, value):
    args = copy.deepcopy(parse_args([]))
    setattr(args, name, value)
    return run_fingerprint(args)["fingerprint"]


BASE = run_fingerprint(parse_args([]))["fingerprint"]


def test_every_flag_is_classified():
    flags = set(vars(parse_args([])))
    assert not CHANGES_RESULTS & OPERATIONAL and not EITHER & (CHANGES_RESULTS | OPERATIONAL)
    assert flags == CHANGES_RESULTS | OPERATIONAL | EITHER, (
        f"unclassified: {sorted(flags - CHANGES_RESULTS - OPERATIONAL - EITHER)}; "
        f"gone: {sorted(CHANGES_RESULTS | OPERATIONAL | EITHER - flags)}"
    )


@pytest.mark.parametrize("name", sorted(CHANGES_RESULTS))
def test_a_flag_that_changes_results_changes_the_fingerprint(name):
    value = getattr(parse_args([]), name)
    assert fingerprint_with(name, changed(value)) != BASE, name
    assert fingerprint_with(name, value) == BASE  # and only the change does


@pytest.mark.parametrize("name", sorted(OPERATIONAL))
def test_an_operational_flag_leaves_the_fingerprint_alone(name):
    assert fingerprint_with(name, changed(getattr(parse_args([]), name))) == BASE, name


@pytest.mark.parametrize("name", sorted(EITHER))
def test_a_flag_that_keeps_the_numbers_but_is_refused_on_a_resume_changes_the_fingerprint(name):
    value = getattr(parse_args([]), name)
    assert fingerprint_with(name, changed(value)) != BASE, name


def test_the_fingerprint_lists_the_arguments_it_holds_and_never_a_secret():
    args = parse_args([])
    args.hub_token = "hf_secret"
    held = run_fingerprint(args)
    assert held["arguments"] == {name: value for name, value in vars(args).items() if name not in OPERATIONAL}
    assert "hf_secret" not in repr(held)


def test_values_parsed_from_equivalent_command_lines_share_a_fingerprint():
    # The same run written two ways (defaults spelled out, flags reordered): one fingerprint.
    spelled = parse_args(["--seed", "42", "--learning_rate", "0.002", "--num_frames", "8"])
    reordered = parse_args(["--num_frames", "8", "--learning_rate", "2e-3"])
    assert isinstance(spelled, argparse.Namespace)
    assert run_fingerprint(spelled)["fingerprint"] == run_fingerprint(reordered)["fingerprint"] == BASE
