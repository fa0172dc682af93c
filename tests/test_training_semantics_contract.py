"""`training/run.py`'s training loop, in process, against computations written out here from docs/training.md:

- gradient accumulation: `--global_batch_size` pairs per optimizer step in `--gradient_accumulation_steps`
  micro-batches, each loss divided by their number; an epoch of N pairs is `N // global_batch_size` optimizer steps,
  `--max_train_steps` cuts the schedule (and the epochs) short;
- the schedule: linear warm-up over `int(warmup_proportion * steps)` optimizer steps, then cosine to 0, sized and
  stepped in optimizer steps, never in micro-batches; the learning rate logged at each step is the rate it used;
- clipping: the accumulated gradient is clipped to `--max_grad_norm` once, before the step (clipping a partial sum,
  or not at all, gives other weights);
- the epochs' orders: each epoch its own shuffle of the usable rows, the same for the same seed;
- bad videos: replaced in their batch, reported, counted in the rows read, and capped at every optimizer step.

`prepare_training` and `train_one_epoch` run for real (accelerate's Accelerator on the CPU, a tiny CLIP2Video, real
mp4 files decoded by the processor); the reference is a plain PyTorch loop over the same micro-batches with a
hand-written learning-rate function. Logged values are read through an accelerate tracker (`GeneralTracker`)."""

import copy
import functools
import json
import math
import os

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import GeneralTracker

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.bad_videos import BadVideos
from clip2video.training.checkpoints import TrainingProgress, run_fingerprint
from clip2video.training.contrastive import ContrastiveEmbedder, clamp_logit_scale, global_contrastive_loss
from clip2video.training.data import EpochShuffleSampler, VideoTextCollator, video_key
from clip2video.training.frame_cache import FrameCache
from clip2video.training.recipes import parameter_groups
from clip2video.training.run import (
    Run,
    StreamingBatches,
    epoch_batches,
    parse_args,
    prepare_training,
    train_one_epoch,
)
from tests.helpers.models import tiny_checkpoint_config, tiny_processor
from tests.helpers.videos import write_square_video

COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 240, 240)]
NUM_ROWS = 8  # each video with two captions


class Recorder(GeneralTracker):
    """An accelerate tracker that keeps what is logged, by step."""

    name = "recorder"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self):
        super().__init__()
        self.logs: dict[int, dict] = {}

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        pass

    def log(self, values, step=None, **kwargs):
        assert step not in self.logs, f"step {step} logged twice"
        self.logs[step] = dict(values)


class Silent:
    def update(self, count):
        pass

    def set_postfix(self, **values):
        pass


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("semantics_videos")
    paths = [str(write_square_video(folder / f"{i}.mp4", colour, num_frames=8, size=32)) for i, colour in
             enumerate(COLOURS)]
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return paths, str(garbage)


@functools.cache
def processor():
    return tiny_processor()


def rows(videos, bad=()):
    """NUM_ROWS pairs; the rows in `bad` name the undecodable file instead of their video."""
    paths, garbage = videos
    video_paths = [garbage if i in bad else paths[i % len(paths)] for i in range(NUM_ROWS)]
    return {"video_id": [f"v{i}" if i in bad else f"v{i % len(paths)}" for i in range(NUM_ROWS)],
            "video": [{"path": path, "bytes": None} for path in video_paths],
            "caption": [f"square number {i}" for i in range(NUM_ROWS)]}


def learning_rate(step: int, total: int, warmup: int) -> float:
    """The factor of the base rate after `step` optimizer steps: linear warm-up, then cosine to 0."""
    if step < warmup:
        return step / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def arguments(**values):
    args = parse_args(["--no-cache_frames", "--no-random_frame_jitter", "--no-distinct_captions_in_batch",
                       "--num_workers", "0", "--report_to", "none"])
    settings = dict(global_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=1e-3,
                    clip_learning_rate_scale=0.5, weight_decay=0.1, warmup_proportion=0.5, max_grad_norm=0.0,
                    max_text_length=16, seed=7)
    for name, value in {**settings, **values}.items():
        setattr(args, name, value)
    return args


def start(args, train, bad_cap=math.inf, known_before=None, output_dir=None, checkpointing="no", config=None,
          frame_cache=None, num_workers=0):
    """The run, a tiny model and its untouched copy, the training prepared by `prepare_training`, and the tracker."""
    recorder = Recorder()
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=args.gradient_accumulation_steps, log_with=[recorder],
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    accelerator.init_trackers("semantics")
    total = None if isinstance(train, datasets.IterableDataset) else len(set(train["video_id"]))
    train_bad = BadVideos("training", bad_cap, total, known_before)
    run = Run(args, accelerator, output_dir, run_fingerprint(args), processor(), train, None, frame_cache, train_bad,
              None)
    torch.manual_seed(0)
    model = CLIP2VideoModel(config or tiny_checkpoint_config())
    original = copy.deepcopy(model)
    training = prepare_training(run, model, ContrastiveEmbedder(model), train_bad, num_workers, checkpointing, "")
    return run, model, original, training, recorder


def train(run, training, epochs=None):
    progress = TrainingProgress()
    while progress.epoch < (epochs or training.num_epochs) and progress.optimizer_steps < training.total_steps:
        train_one_epoch(run, training, progress, run.train_bad, Silent())
    return progress


def reference(args, original, micro_batches_per_step, total, warmup, clip_each_micro_batch=False):
    """The weights after the optimizer steps, each over its micro-batches, written out in plain PyTorch; and per
    step (learning rate, last micro-batch's loss, logit scale)."""
    model = copy.deepcopy(original).train()
    embedder = ContrastiveEmbedder(model)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.clip_learning_rate_scale, args.weight_decay),
        betas=(0.9, 0.98), eps=1e-6,
    )
    base = [group["lr"] for group in optimizer.param_groups]
    weight = model.config.global_similarity_weight
    logged = {}
    for step, micro_batches in enumerate(micro_batches_per_step, start=1):
        factor = learning_rate(step - 1, total, warmup)
        for group, rate in zip(optimizer.param_groups, base):
            group["lr"] = rate * factor
        for inputs in micro_batches:
            embeddings = embedder(**inputs)
            loss = global_contrastive_loss(embeddings, weight)
            (loss / len(micro_batches)).backward()
            if clip_each_micro_batch and args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        clamp_logit_scale(embedder)
        logged[step] = (base[0] * learning_rate(step, total, warmup), loss.item(),
                        embeddings.logit_scale.detach().exp().item())
    return model.state_dict(), logged


def micro_batches(args, dataset, epochs, candidates=None):
    """Each epoch's micro-batches, in the order of its shuffle (`EpochShuffleSampler`), as the collator makes them."""
    collator = VideoTextCollator(processor(), args.max_text_length)
    sampler = EpochShuffleSampler(len(dataset), args.seed, indices=candidates)
    size = args.global_batch_size // args.gradient_accumulation_steps
    batches = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = list(sampler)
        for first in range(0, len(order) - size + 1, size):
            batch = collator([dataset[i] for i in order[first:first + size]])
            batches.append({key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values_videos",
                                                        "video_mask")})
    return batches


def steps_of(batches, accumulation, steps):
    grouped = [batches[i:i + accumulation] for i in range(0, len(batches) - accumulation + 1, accumulation)]
    return grouped[:steps]


def assert_same_weights(model, expected, original):
    moved = 0
    for name, value in model.state_dict().items():
        step = (expected[name] - original.state_dict()[name]).abs().max().item()
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-3 * step + 1e-7, msg=name)
        moved += step > 0
    assert moved > 10  # the steps moved the weights: the comparison means something


@pytest.mark.parametrize("accumulation, max_train_steps", [(2, None), (2, 3), (1, None)])
def test_accumulated_steps_and_the_learning_rate_of_each_step_match_a_loop_written_out(
    videos, accumulation, max_train_steps
):
    args = arguments(gradient_accumulation_steps=accumulation, max_train_steps=max_train_steps)
    dataset = datasets.Dataset.from_dict(rows(videos))
    run, model, original, training, recorder = start(args, dataset)
    per_epoch = NUM_ROWS // args.global_batch_size  # 2 optimizer steps an epoch, whatever the accumulation
    total = min(per_epoch * args.num_train_epochs, max_train_steps or math.inf)
    warmup = int(args.warmup_proportion * total)
    assert (training.total_steps, training.num_epochs) == (total, math.ceil(total / per_epoch))
    progress = train(run, training)
    assert (progress.optimizer_steps, progress.epoch, progress.batches_done_in_epoch) == (total, training.num_epochs, 0)
    assert sorted(recorder.logs) == list(range(1, total + 1))  # one log per optimizer step, none per micro-batch

    batches = micro_batches(args, dataset, training.num_epochs)
    expected, logged = reference(args, original, steps_of(batches, accumulation, total), total, warmup)
    assert_same_weights(model, expected, original)
    for step, (rate, loss, logit_scale) in logged.items():
        values = recorder.logs[step]
        assert values["train/lr"] == pytest.approx(rate, rel=1e-6, abs=1e-12), step
        assert values["train/loss"] == pytest.approx(loss, rel=1e-4), step
        assert values["train/logit_scale"] == pytest.approx(logit_scale, rel=1e-5), step
        assert values["train/bad_videos"] == 0
    assert recorder.logs[total]["train/lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ends at 0 on the last step
    # A schedule sized in micro-batches would have logged other rates (checks the check).
    if accumulation > 1:
        in_micro_batches = [learning_rate(step, accumulation * total, accumulation * warmup) for step in logged]
        assert in_micro_batches != pytest.approx([learning_rate(step, total, warmup) for step in logged])


def test_the_accumulated_gradient_is_clipped_once_before_the_step(videos):
    # A norm so small that it binds, and that AdamW's update is proportional to the clipped gradient (below eps):
    # the direction the clipping leaves shows in the weights.
    args = arguments(max_grad_norm=1e-4, max_train_steps=1, warmup_proportion=0.0)
    dataset = datasets.Dataset.from_dict(rows(videos))
    run, model, original, training, _ = start(args, dataset)
    train(run, training)
    steps = steps_of(micro_batches(args, dataset, 1), 2, 1)
    expected, _ = reference(args, original, steps, 1, 0)
    assert_same_weights(model, expected, original)
    for wrong in (reference(args, original, steps, 1, 0, clip_each_micro_batch=True)[0],
                  reference(arguments(max_grad_norm=0.0), original, steps, 1, 0)[0]):
        differs = any(not torch.allclose(value, wrong[name], rtol=0, atol=1e-3 * (
            wrong[name] - original.state_dict()[name]).abs().max().item() + 1e-7)
            for name, value in model.state_dict().items())
        assert differs, "clipping each micro-batch, or not at all, gives the same weights: the test cannot tell"


def test_every_epoch_is_a_new_shuffle_of_the_usable_rows_and_the_seed_fixes_it(videos):
    args = arguments(global_batch_size=2, gradient_accumulation_steps=1, num_train_epochs=3)
    dataset = datasets.Dataset.from_dict(rows(videos))
    run, _, _, training, _ = start(args, dataset)
    orders = []
    for epoch in range(3):
        training.loader.set_epoch(epoch)
        orders.append([tuple(ids) for batch in training.loader for ids in batch["input_ids"].tolist()])
    assert len({tuple(order) for order in orders}) == 3, "an epoch repeated another epoch's order"
    again = start(args, dataset)[3]
    again.loader.set_epoch(1)
    assert [tuple(ids) for batch in again.loader for ids in batch["input_ids"].tolist()] == orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) and len(set(orders[0])) == NUM_ROWS  # every row once an epoch


@pytest.mark.parametrize("bad", [{6, 7}, {7}])
def test_rows_known_to_be_bad_are_never_drawn_and_only_whole_steps_are_trained(videos, bad):
    # The rows in `bad` name a video known to be bad before training: 6 (or 7) usable pairs make 1 step of 4 an
    # epoch, in 3 micro-batches of 2 (the seventh pair is no micro-batch), and the third micro-batch is left out (a
    # step on it would have half the pairs, and the schedule does not count it).
    paths, garbage = videos
    dataset = datasets.Dataset.from_dict(rows(videos, bad=bad))
    args = arguments()
    run, model, original, training, recorder = start(args, dataset, bad_cap=2,
                                                     known_before={garbage: "FileNotFoundError: missing"})
    assert (training.total_steps, training.num_epochs) == (2, 2)
    progress = train(run, training)
    assert (progress.epoch, progress.optimizer_steps, sorted(recorder.logs)) == (2, 2, [1, 2])
    assert len(training.loader) == 3
    batches = micro_batches(args, dataset, 2, candidates=[i for i in range(NUM_ROWS) if i not in bad])
    assert len(batches) == 6
    expected, _ = reference(args, original, [batches[0:2], batches[3:5]], 2, 1)
    assert_same_weights(model, expected, original)


def test_a_bad_video_met_in_training_is_replaced_reported_counted_and_capped(videos):
    _, garbage = videos
    dataset = datasets.Dataset.from_dict(rows(videos, bad={3}))
    args = arguments(num_train_epochs=1)
    run, _, _, training, recorder = start(args, dataset, bad_cap=1)
    train(run, training)
    assert set(run.train_bad.videos) == {garbage}
    assert run.train_bad.rows_read == NUM_ROWS + 1  # eight pairs trained on, one bad row replaced
    assert recorder.logs[2]["train/bad_videos"] == 1
    # The same run with no bad video allowed ends at the optimizer step that met it, naming the cap and the video.
    run, _, _, training, recorder = start(args, dataset, bad_cap=0)
    with pytest.raises(RuntimeError, match=r"^1 training videos could not be decoded, more than --max_bad_videos 0 "
                                           r"allows \(of 4 videos\).*\n  .*garbage\.mp4: "):
        train(run, training)


def test_an_epoch_that_makes_no_optimizer_step_is_refused_by_name(videos):
    args = arguments(global_batch_size=16, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match=r"^8 usable training pairs make no batch of 16: lower --global_batch_size"):
        start(args, datasets.Dataset.from_dict(rows(videos)))


def test_a_stream_is_scheduled_over_max_train_steps_and_runs_until_them(videos):
    args = arguments(streaming=True, max_train_steps=3, shuffle_block_size=4, num_workers=1,
                     clip_learning_rate_scale=1.0)
    stream = datasets.Dataset.from_dict(rows(videos)).to_iterable_dataset(num_shards=2)
    run, model, original, training, recorder = start(args, stream)
    assert isinstance(training.stream, StreamingBatches) and training.loader is None
    assert (training.total_steps, training.num_epochs) == (3, math.inf)
    assert (training.stream.batch_size, training.stream.block_size, training.stream.seed) == (2, 4, args.seed)
    progress = train(run, training)
    assert (progress.optimizer_steps, progress.epoch) == (3, 2)  # two steps of eight rows an epoch, then one
    assert sorted(recorder.logs) == [1, 2, 3]
    for step in (1, 2, 3):
        assert recorder.logs[step]["train/lr"] == pytest.approx(args.learning_rate * learning_rate(step, 3, 1))
    assert run.train_bad.rows_read == 12


def test_the_logit_scale_is_capped_at_ln_100_after_every_optimizer_step(videos):
    args = arguments(learning_rate=0.5, clip_learning_rate_scale=1.0, weight_decay=0.0, warmup_proportion=0.0,
                     max_train_steps=1)
    dataset = datasets.Dataset.from_dict(rows(videos))
    run, model, _, training, recorder = start(args, dataset)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 1)  # over the cap (e.g. a checkpoint's): the step brings it back
    train(run, training)
    assert model.logit_scale.item() == pytest.approx(math.log(100), abs=1e-6)
    assert recorder.logs[1]["train/logit_scale"] == pytest.approx(100, rel=1e-6)  # the forward's, clamped


@pytest.mark.parametrize("every, saved", [("2", ["step_00000002", "step_00000004"]), ("3", ["step_00000003"]),
                                          ("epoch", []), ("no", [])])
def test_checkpoints_are_saved_every_n_optimizer_steps_in_the_epoch(videos, tmp_path, every, saved):
    args = arguments(global_batch_size=2, gradient_accumulation_steps=1, num_train_epochs=1)
    dataset = datasets.Dataset.from_dict(rows(videos))
    run, _, _, training, _ = start(args, dataset, output_dir=tmp_path, checkpointing=every)
    progress = train(run, training)
    assert progress.optimizer_steps == 4
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) if saved else []
    assert names == saved
    for name in saved:
        assert json.loads((tmp_path / "checkpoints" / name / "run.json").read_text())["fingerprint"] == (
            run.fingerprint["fingerprint"])


def test_without_the_alignment_block_the_global_loss_has_weight_one(videos):
    args = arguments(max_train_steps=1, warmup_proportion=0.0)
    dataset = datasets.Dataset.from_dict(rows(videos))
    config = tiny_checkpoint_config()
    config.use_temporal_alignment_block = False
    config.global_similarity_weight = 0.3  # read only with the alignment block
    run, model, original, training, recorder = start(args, dataset, config=config)
    assert training.loss_weight == 1.0
    train(run, training)
    batches = steps_of(micro_batches(args, dataset, 1), 2, 1)
    expected, logged = reference(args, original, batches, 1, 0)
    assert_same_weights(model, expected, original)
    assert recorder.logs[1]["train/loss"] == pytest.approx(logged[1][1], rel=1e-4)


def test_the_collator_draws_its_jitter_and_replacements_from_the_seed_among_the_usable_rows(videos):
    _, garbage = videos
    dataset = datasets.Dataset.from_dict(rows(videos, bad={6}))
    args = arguments(random_frame_jitter=True, seed=11)
    _, _, _, training, _ = start(args, dataset, known_before={garbage: "missing"})
    collator = training.collator
    assert (collator.random_frame_jitter, collator.jitter_seed, collator.dataset) == (True, 11, dataset)
    assert collator.max_text_length == args.max_text_length and collator.frame_cache is None
    assert collator.candidates == [0, 1, 2, 3, 4, 5, 7] and collator.bad_videos.reason(garbage) == "missing"


def test_with_distinct_captions_no_batch_holds_one_caption_twice(videos):
    data = rows(videos)
    data["caption"] = ["a red thing", "a blue thing"] * (NUM_ROWS // 2)  # two captions, four pairs each
    dataset = datasets.Dataset.from_dict(data)
    args = arguments(global_batch_size=2, gradient_accumulation_steps=1, distinct_captions_in_batch=True)
    _, _, _, training, _ = start(args, dataset)
    plain_orders = []
    for epoch in range(3):
        training.loader.set_epoch(epoch)
        batches = [batch["input_ids"].tolist() for batch in training.loader]
        assert len(batches) == 4 and all(len(batch) == 2 and batch[0] != batch[1] for batch in batches), epoch
        sampler = EpochShuffleSampler(NUM_ROWS, args.seed)
        sampler.set_epoch(epoch)
        order = list(sampler)
        plain_orders += [data["caption"][order[i]] == data["caption"][order[i + 1]] for i in range(0, NUM_ROWS, 2)]
    assert any(plain_orders)  # batches of the plain shuffle would have held a caption twice (checks the check)


def test_a_streams_checkpoint_every_n_steps_holds_where_the_stream_stands(videos, tmp_path):
    args = arguments(streaming=True, max_train_steps=3, shuffle_block_size=4, num_workers=1)
    stream = datasets.Dataset.from_dict(rows(videos)).to_iterable_dataset(num_shards=2)
    run, _, _, training, _ = start(args, stream, output_dir=tmp_path, checkpointing="2")
    progress = TrainingProgress()
    train_one_epoch(run, training, progress, run.train_bad, Silent())
    assert (tmp_path / "checkpoints" / "step_00000002").is_dir()
    # Saved at step 2, the last of the first epoch: every row of it read (two blocks of 4), the next block not begun.
    assert progress.stream_states is not None and len(progress.stream_states) == 1
    assert {key: progress.stream_states[0][key] for key in ("epoch", "block", "position")} == {
        "epoch": 0, "block": 1, "position": 4}


def streamed_micro_batches(args, stream, epochs):
    """Each epoch's micro-batches of a stream, as `StreamingBatches` reads that epoch (its own shuffle each epoch)."""
    collator = VideoTextCollator(processor(), args.max_text_length)
    size = args.global_batch_size // args.gradient_accumulation_steps
    batches = StreamingBatches(stream, size, collator, args.seed, block_size=args.shuffle_block_size)
    per_epoch = []
    for _ in range(epochs):  # each pass ends by moving the stream's state to the next epoch
        per_epoch.append([{key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values_videos",
                                                         "video_mask")} for batch, _ in batches])
    return per_epoch


@pytest.mark.parametrize("global_batch_size, accumulation, steps", [(4, 2, 3), (6, 3, 2)])
def test_a_streamed_run_trains_each_epoch_in_its_own_order_as_a_loop_written_out(
    videos, global_batch_size, accumulation, steps
):
    # Eight rows make four micro-batches of 2 an epoch. The second epoch must be read in its own order (not the
    # first epoch's again), and a stream's micro-batches are accumulated across the epoch's end (its length is not
    # known ahead): with 3 micro-batches a step, step 2 is the first epoch's last micro-batch and the second's first
    # two.
    args = arguments(streaming=True, max_train_steps=steps, shuffle_block_size=8, num_workers=1,
                     global_batch_size=global_batch_size, gradient_accumulation_steps=accumulation)
    stream = datasets.Dataset.from_dict(rows(videos)).to_iterable_dataset(num_shards=2)
    run, model, original, training, recorder = start(args, stream)
    progress = train(run, training)
    assert (progress.optimizer_steps, progress.epoch, sorted(recorder.logs)) == (steps, 2, list(range(1, steps + 1)))
    first, second = streamed_micro_batches(args, stream, 2)
    assert len(first) == len(second) == 4
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second))  # checks the check
    warmup = int(args.warmup_proportion * steps)
    expected, logged = reference(args, original, steps_of(first + second, accumulation, steps), steps, warmup)
    assert_same_weights(model, expected, original)
    for step, (rate, loss, _) in logged.items():
        assert recorder.logs[step]["train/lr"] == pytest.approx(rate, rel=1e-6, abs=1e-12), step
        assert recorder.logs[step]["train/loss"] == pytest.approx(loss, rel=1e-4), step
    # The second epoch read in the first epoch's order: other weights (checks the check; with blocks of 8 rows,
    # seed 7's second epoch starts with other pairs than its first).
    repeated, _ = reference(args, original, steps_of(first + first, accumulation, steps), steps, warmup)
    assert any(not torch.allclose(value, repeated[name], rtol=0, atol=1e-7)
               for name, value in model.state_dict().items())


def test_a_run_with_cached_frames_trains_on_the_cached_frames(videos):
    # --cache_frames: the run's FrameCache is what the training batches read (the files are not decoded again).
    dataset = datasets.Dataset.from_dict(rows(videos))
    keys = sorted({video_key(video) for video in dataset["video"]})
    frames = np.stack([np.full((2, 3, 4, 4), index + 1, dtype=np.float16) for index in range(len(keys))])
    cache = FrameCache(keys, frames, np.ones((len(keys), 2), dtype=np.int64), {})
    args = arguments(global_batch_size=2, gradient_accumulation_steps=1)
    _, _, _, training, _ = start(args, dataset, frame_cache=cache)
    assert training.collator.frame_cache is cache
    batch = next(iter(training.loader))
    expected = torch.stack([torch.from_numpy(frames[keys.index(video_key(dataset[int(i)]["video"]))]).float()
                            for i in list(EpochShuffleSampler(NUM_ROWS, args.seed))[:2]])
    torch.testing.assert_close(batch["pixel_values_videos"], expected, rtol=0, atol=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_has_the_workers_it_is_given(videos, num_workers):
    args = arguments()
    _, _, _, training, _ = start(args, datasets.Dataset.from_dict(rows(videos)), num_workers=num_workers)
    assert training.loader.num_workers == num_workers


@pytest.mark.parametrize("num_workers", [None, 0, 3])
def test_a_stream_decodes_in_num_workers_threads_or_one_per_cpu_and_knows_its_local_shards(videos, tmp_path,
                                                                                          num_workers):
    # docs: --num_workers is the decoding threads with --streaming (default: the number of CPUs); a shard that
    # cannot be read is named, so the stream is told the local files of the training split's --data_files.
    for name in ("train-00001.parquet", "train-00000.parquet", "test-00000.parquet"):
        (tmp_path / name).write_bytes(b"PAR1")
    args = arguments(streaming=True, max_train_steps=2, shuffle_block_size=4, num_workers=num_workers,
                     data_files=[f"train={tmp_path}/train-*.parquet", f"test={tmp_path}/test-*.parquet"])
    stream = datasets.Dataset.from_dict(rows(videos)).to_iterable_dataset(num_shards=2)
    _, _, _, training, _ = start(args, stream)
    assert training.stream.num_threads == (num_workers or os.cpu_count())
    assert training.stream.data_files == [str(tmp_path / "train-00000.parquet"), str(tmp_path / "train-00001.parquet")]


def frames_by_caption(run, training, epoch, batches_done=0):
    progress = TrainingProgress(epoch=epoch, batches_done_in_epoch=batches_done)
    return [(tuple(ids), frames) for batch in epoch_batches(run.accelerator, training, progress)
            for ids, frames in zip(batch["input_ids"].tolist(), batch["pixel_values_videos"])]


def test_each_epoch_jitters_the_frames_anew_and_a_resumed_epoch_goes_on_from_its_batch(videos, tmp_path):
    # docs: the training jitter is drawn anew every epoch, the same on every process and after a resume; a resumed
    # epoch yields that epoch's batches past those already trained on, in the same order. Twelve-second videos of a
    # moving square: 30 images at 2.5 fps, four picks far enough apart to be jittered.
    long_videos = [str(write_square_video(tmp_path / f"{i}.mp4", colour, num_frames=60, fps=5, size=32))
                   for i, colour in enumerate(COLOURS)]
    args = arguments(random_frame_jitter=True, global_batch_size=2, gradient_accumulation_steps=1)
    run, _, _, training, _ = start(args, datasets.Dataset.from_dict(rows((long_videos, videos[1]))))
    first, second = frames_by_caption(run, training, 0), frames_by_caption(run, training, 1)
    assert [ids for ids, _ in first] != [ids for ids, _ in second]  # each epoch its own order
    assert sorted(ids for ids, _ in first) == sorted(ids for ids, _ in second)
    by_caption = dict(second)
    assert any(not torch.equal(frames, by_caption[ids]) for ids, frames in first), "the same jitter every epoch"
    resumed = frames_by_caption(run, training, 1, batches_done=2)
    assert len(resumed) == NUM_ROWS - 4
    for (ids, frames), (expected_ids, expected) in zip(resumed, second[4:], strict=True):
        assert ids == expected_ids and torch.equal(frames, expected)
