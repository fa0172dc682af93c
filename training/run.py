"""Train and evaluate CLIP2Video with 🤗 Accelerate.

    accelerate launch training/run.py

With no arguments: generate the embedded synthetic data (coloured shapes moving in four directions, growing or
shrinking; once, cached), train a small CLIP2Video from scratch on the CPU, train a mean-pooling model (no temporal
modelling) with the same budget, evaluate both, write `outputs/clip2video-synthetic` (model, processor, remote code,
model card, `results.json`) and print a results table.

On a published dataset the defaults are the recipe of the paper's code base (CLIP4Clip), e.g. MSR-VTT 9k:

    accelerate launch training/run.py --dataset msrvtt --annotations_dir msrvtt_data --videos_dir MSRVTT/videos \\
        --model_name_or_path openai/clip-vit-base-patch32 --output_dir outputs/clip2video-msrvtt9k

Evaluate any CLIP2Video checkpoint (e.g. one converted from the authors' release) without training:

    accelerate launch training/run.py --eval_only --model_name_or_path converted/msrvtt9k --dataset msrvtt ...
"""

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration
from accelerate.utils import is_tensorboard_available, is_trackio_available, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.contrastive import ContrastiveEmbedder, global_contrastive_loss
from clip2video.training.data import DistinctCaptionBatchSampler, EpochShuffleSampler, FrameCache, VideoTextCollator
from clip2video.training.loaders import group_by_video, load_lsmdc, load_msrvtt, load_msvd, load_vatex, load_video_folder
from clip2video.training.metrics.video_text_retrieval.video_text_retrieval import compute_retrieval_metrics
from clip2video.training.publish import print_results_table, write_publishable_folder
from clip2video.training.synthetic import SyntheticConfig, generate_synthetic_dataset

# The recipe of CLIP4Clip, which CLIP2Video's authors trained with (their README and scripts): Adam(0.9, 0.98, 1e-6)
# with decoupled weight decay 0.2, learning rate 1e-4 for the new modules and 1e-4 * 1e-3 for CLIP's weights, 10%
# linear warm-up then cosine decay, 5 epochs, global batch 128, 12 frames, 32 tokens, gradient norm clipped at 1.
PAPER_RECIPE = dict(
    learning_rate=1e-4,
    clip_learning_rate_scale=1e-3,
    weight_decay=0.2,
    warmup_proportion=0.1,
    num_train_epochs=5,
    global_batch_size=128,
    num_frames=12,
    max_text_length=32,
    max_grad_norm=1.0,
    eval_batch_size=64,
    cache_frames=False,
    distinct_captions_in_batch=False,
    mean_pooling_baseline=False,
)
# The embedded default: a small model trained from scratch, so every weight learns at the full rate.
SYNTHETIC_RECIPE = dict(
    learning_rate=2e-3,
    clip_learning_rate_scale=1.0,
    weight_decay=0.05,
    warmup_proportion=0.1,
    num_train_epochs=10,
    global_batch_size=128,
    num_frames=8,
    max_text_length=32,
    max_grad_norm=1.0,
    eval_batch_size=60,
    cache_frames=True,
    distinct_captions_in_batch=True,
    mean_pooling_baseline=True,
)
DEFAULT_SPLITS = {
    "msrvtt": ("train_9k", "test_1k_a"),
    "msvd": ("train", "test"),
    "vatex": ("train", "test"),
    "lsmdc": ("train", "test"),
}
PUBLISHED_LOADERS = {"msrvtt": load_msrvtt, "msvd": load_msvd, "vatex": load_vatex, "lsmdc": load_lsmdc}
# Temporal modules per architecture; `clip2video` keeps the configuration's (the paper's) defaults.
ARCHITECTURES = {
    "clip2video": {},
    "mean_pooling": dict(
        temporal_pooling="mean",
        use_temporal_difference_block=False,
        difference_projection="none",
        use_temporal_alignment_block=False,
    ),
}
CLIP_PARAMETER_PREFIXES = ("text_model.", "vision_model.", "text_projection.", "visual_projection.", "logit_scale")
MAX_LOGIT_SCALE = math.log(100.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic", choices=["synthetic", "videofolder", *PUBLISHED_LOADERS])
    data.add_argument("--data_dir", default="outputs/data/synthetic", help="Where the synthetic data is generated.")
    data.add_argument("--num_synthetic_train_clips", type=int, default=SyntheticConfig.num_train_clips)
    data.add_argument("--annotations_dir", help="Annotation files of a published dataset (msrvtt, msvd, vatex, lsmdc).")
    data.add_argument("--videos_dir", help="Video files of a published dataset (searched recursively by file name).")
    data.add_argument("--train_split", help="Loader split name; defaults per dataset, e.g. msrvtt: train_9k.")
    data.add_argument("--eval_split", help="Loader split name; defaults per dataset, e.g. msrvtt: test_1k_a.")
    data.add_argument("--train_dir", help="videofolder: folder with metadata.csv / metadata.jsonl for training.")
    data.add_argument("--eval_dir", help="videofolder: folder with metadata.csv / metadata.jsonl for evaluation.")
    data.add_argument("--on_bad_row", default="error", choices=["error", "skip"])
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=None,
                      help="Decode every video once and keep the processed frames (default: on for synthetic data).")
    data.add_argument("--random_frame_jitter", action=argparse.BooleanOptionalAction, default=None,
                      help="Move each inner training frame at random within its sampling interval, as the authors' "
                      "loaders do (default: on unless --cache_frames, which samples every video once). "
                      "Evaluation always samples the fixed frames.")
    data.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: 0 with cached "
                      "frames, else the number of CPUs).")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", help="A CLIP checkpoint (Hub id or folder) to start from, or a "
                       "CLIP2Video checkpoint. Default: a small CLIP2Video from scratch (synthetic data only).")
    model.add_argument("--architecture", choices=list(ARCHITECTURES), help="Temporal modules; default: the "
                       "checkpoint's own, or the paper's full model when starting from CLIP.")
    model.add_argument("--num_frames", type=int)
    model.add_argument("--max_text_length", type=int)
    model.add_argument("--gradient_checkpointing", action="store_true")

    optim = parser.add_argument_group("optimisation (defaults: the paper's recipe, or the synthetic one)")
    optim.add_argument("--learning_rate", type=float)
    optim.add_argument("--clip_learning_rate_scale", type=float, help="CLIP's weights learn at this times the rate.")
    optim.add_argument("--weight_decay", type=float)
    optim.add_argument("--warmup_proportion", type=float)
    optim.add_argument("--num_train_epochs", type=int)
    optim.add_argument("--max_train_steps", type=int, help="Stop after this many optimizer steps.")
    optim.add_argument("--global_batch_size", type=int, help="Pairs per optimizer step, over all processes.")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--distinct_captions_in_batch", action=argparse.BooleanOptionalAction, default=None,
                       help="Never put two pairs with the same caption in one batch (they would be each other's "
                       "negatives); default: on for synthetic data (120 captions), off for real data as in the paper.")
    optim.add_argument("--max_grad_norm", type=float)
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="Default: accelerate's config.")
    optim.add_argument("--seed", type=int, default=42)
    optim.add_argument("--cpu_threads", default="auto", help='Torch threads per process on CPU. "auto": the '
                       "machine's cores shared among the local processes (`accelerate launch` otherwise sets 1).")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="outputs/clip2video-synthetic")
    run.add_argument("--checkpointing_steps", default="epoch", help='"epoch", a number of optimizer steps, or "no".')
    run.add_argument("--resume_from_checkpoint", help='A checkpoint folder, or "latest" in output_dir/checkpoints.')
    run.add_argument("--eval_only", action="store_true", help="Evaluate --model_name_or_path (or the resumed "
                     "checkpoint) and write results.json, without training.")
    run.add_argument("--eval_batch_size", type=int)
    run.add_argument("--dual_softmax", action="store_true", help="Also report inference-time dual softmax (DSL) "
                     "metrics, labelled dsl_; they use all test queries at once.")
    run.add_argument("--mean_pooling_baseline", action=argparse.BooleanOptionalAction, default=None,
                     help="Also train a mean-pooling model with the same budget (default: on for synthetic data).")
    run.add_argument("--report_to", default="auto", choices=["auto", "tensorboard", "trackio", "none"],
                     help="auto: TensorBoard if installed, else trackio if installed, else none.")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", help="Repository on the Hub, e.g. user/clip2video-msrvtt9k.")

    args = parser.parse_args(argv)
    recipe = SYNTHETIC_RECIPE if args.dataset == "synthetic" else PAPER_RECIPE
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.dataset != "synthetic" and args.model_name_or_path is None:
        parser.error("--model_name_or_path is required for real data (e.g. openai/clip-vit-base-patch32)")
    if args.dataset in PUBLISHED_LOADERS and not (args.annotations_dir and args.videos_dir):
        parser.error(f"--dataset {args.dataset} needs --annotations_dir and --videos_dir")
    if args.dataset == "videofolder" and not (args.eval_dir and (args.train_dir or args.eval_only)):
        parser.error("--dataset videofolder needs --train_dir and --eval_dir")
    if args.random_frame_jitter is None:
        args.random_frame_jitter = not args.cache_frames
    if args.random_frame_jitter and args.cache_frames:
        parser.error("--random_frame_jitter draws new frames every epoch; cached frames are drawn once: use "
                     "--no-cache_frames or --no-random_frame_jitter")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_splits(args, accelerator):
    """(train Dataset or None, eval Dataset, description of the eval split for results.json)."""
    if args.dataset == "synthetic":
        config = SyntheticConfig(num_train_clips=args.num_synthetic_train_clips, num_frames=args.num_frames)
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                generate_synthetic_dataset(args.data_dir, config)
        data_dir = Path(args.data_dir)
        train, evaluation = load_video_folder(data_dir / "train"), load_video_folder(data_dir / "test")
        source = {"dataset": "synthetic", "split": "test", "data_dir": str(data_dir), "generation": vars(config)}
    elif args.dataset == "videofolder":
        train = None if args.eval_only else load_video_folder(args.train_dir, on_bad_row=args.on_bad_row)
        evaluation = load_video_folder(args.eval_dir, on_bad_row=args.on_bad_row)
        source = {"dataset": "videofolder", "eval_dir": args.eval_dir}
    else:
        load = PUBLISHED_LOADERS[args.dataset]
        train_split = args.train_split or DEFAULT_SPLITS[args.dataset][0]
        eval_split = args.eval_split or DEFAULT_SPLITS[args.dataset][1]
        train = None if args.eval_only else load(args.annotations_dir, args.videos_dir, train_split, args.on_bad_row)
        evaluation = load(args.annotations_dir, args.videos_dir, eval_split, args.on_bad_row)
        source = {"dataset": args.dataset, "split": eval_split, "annotations_dir": args.annotations_dir}
    return train, evaluation, source


def build_frame_cache(args, accelerator, processor, datasets_to_cache):
    paths = sorted({path for dataset in datasets_to_cache if dataset is not None for path in dataset["video"]})
    cache_dir = Path(args.data_dir if args.dataset == "synthetic" else args.output_dir) / "frame_cache"
    with accelerator.main_process_first():
        return FrameCache.load_or_build(
            paths, processor, cache_dir, num_workers=os.cpu_count() or 1, build=accelerator.is_main_process
        )


# ---------------------------------------------------------------------------------------------------------------
# Model, processor, optimizer
# ---------------------------------------------------------------------------------------------------------------


def small_synthetic_config(num_frames: int, architecture: str) -> CLIP2VideoConfig:
    """A small CLIP for 32x32 frames: a 2-layer ViT of width 32 on 8x8-pixel patches (16 patches a frame: 4x4
    patches learned the motions in about two thirds of the optimizer steps, but each step cost 4.6 times as much), a
    2-layer text transformer of width 64, 64-d embeddings, and the 49,408-token embedding table of the CLIP
    tokenizer."""
    width = 64
    return CLIP2VideoConfig(
        projection_dim=width,
        text_config=dict(
            hidden_size=width, intermediate_size=4 * width, num_attention_heads=2, num_hidden_layers=2,
            max_position_embeddings=32,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2,
            image_size=32, patch_size=8,
        ),
        temporal_num_layers=2,
        num_frames=num_frames,
        max_frame_positions=max(16, num_frames),
        **ARCHITECTURES[architecture],
    )


def build_model(args, architecture: str | None) -> CLIP2VideoModel:
    if args.model_name_or_path is None:
        return CLIP2VideoModel(small_synthetic_config(args.num_frames, architecture or "clip2video"))
    overrides = dict(ARCHITECTURES[architecture]) if architecture else {}
    return CLIP2VideoModel.from_pretrained(args.model_name_or_path, num_frames=args.num_frames, **overrides)


def build_processor(args, config: CLIP2VideoConfig) -> CLIP2VideoProcessor:
    """The paper's video processing at the model's image size and `--num_frames`, and the checkpoint's CLIP tokenizer
    (the same vocabulary as OpenAI CLIP's, read from the open-clip-torch wheel when the checkpoint has none)."""
    image_size = config.vision_config.image_size
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        max_frames=args.num_frames,
    )
    tokenizer = None
    if args.model_name_or_path is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError):
            tokenizer = None
    return CLIP2VideoProcessor(video_processor=video_processor, tokenizer=tokenizer or offline_clip_tokenizer())


def parameter_groups(model: nn.Module, learning_rate: float, clip_learning_rate_scale: float, weight_decay: float):
    """CLIP's pretrained weights learn at `learning_rate * clip_learning_rate_scale`, the new temporal modules at
    `learning_rate`; biases, norms, embedding tables and the logit scale (every parameter of fewer than 2 dimensions,
    and every `nn.Embedding`) are not decayed."""
    embedding_weights = {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)
    }
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_clip = name.startswith(CLIP_PARAMETER_PREFIXES)
        decays = parameter.ndim >= 2 and name not in embedding_weights
        key = (is_clip, decays)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": learning_rate * (clip_learning_rate_scale if is_clip else 1.0),
                "weight_decay": weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(parameter)
    return list(groups.values())


class TrainingProgress:
    """Where training stands; saved in every checkpoint so a resume continues with the same data order."""

    def __init__(self):
        self.epoch = 0
        self.batches_done_in_epoch = 0
        self.optimizer_steps = 0

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


class EvaluationData:
    """The eval split as separate caption and video loaders (each video embedded once, whatever its caption count)."""

    def __init__(self, accelerator, evaluation, collator, batch_size, num_workers):
        _, video_paths, self.caption_video_index = group_by_video(evaluation)
        self.captions = list(evaluation["caption"])
        self.text_loader = accelerator.prepare_data_loader(
            DataLoader(self.captions, batch_size=batch_size, collate_fn=self._tokenize)
        )
        self.video_loader = accelerator.prepare_data_loader(
            DataLoader(video_paths, batch_size=batch_size, collate_fn=self._videos, num_workers=num_workers)
        )
        self.collator = collator

    def _tokenize(self, captions):
        input_ids, attention_mask = self.collator.tokenize(captions)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _videos(self, paths):
        pixel_values_videos, video_mask = self.collator.videos(paths)
        return {"pixel_values_videos": pixel_values_videos, "video_mask": video_mask}


@torch.no_grad()
def evaluate(accelerator, model: CLIP2VideoModel, data: EvaluationData, dual_softmax: bool) -> dict:
    model.eval()
    text_embeds = torch.cat(
        [accelerator.gather_for_metrics(model.get_text_features(**batch).pooler_output) for batch in data.text_loader]
    )
    video_embeds = torch.cat(
        [accelerator.gather_for_metrics(model.get_video_features(**batch).pooler_output) for batch in data.video_loader]
    )
    similarity = (model.logit_scale.exp() * text_embeds.float() @ video_embeds.float().t()).cpu().numpy()
    metrics = compute_retrieval_metrics(similarity, data.caption_video_index)
    if dual_softmax:
        metrics.update(compute_retrieval_metrics(similarity, data.caption_video_index, dual_softmax=True))
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def train_and_evaluate(
    args, accelerator, progress, train, evaluation, processor, frame_cache, architecture, output_dir, checkpointing,
    log_prefix="",
):
    """Trains (unless --eval_only) one model and returns (model, final metrics, timings). Tracker values are logged
    under `log_prefix` (the baseline's curves must not overwrite the main model's)."""
    accelerator.free_memory()  # forget the models, optimizers and loaders of a previous run in this process
    set_seed(args.seed)
    timings = {}
    model = build_model(args, architecture)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    collator = VideoTextCollator(processor, args.max_text_length, frame_cache)
    num_workers = args.num_workers if args.num_workers is not None else (0 if frame_cache else os.cpu_count() or 1)
    evaluation_data = EvaluationData(accelerator, evaluation, collator, args.eval_batch_size, num_workers)

    micro_batch_size = args.global_batch_size // args.gradient_accumulation_steps
    if args.global_batch_size % (args.gradient_accumulation_steps * accelerator.num_processes):
        raise ValueError(
            f"--global_batch_size {args.global_batch_size} must split evenly into {args.gradient_accumulation_steps} "
            f"accumulation steps on {accelerator.num_processes} processes (equal batches on every process)."
        )
    embedder = ContrastiveEmbedder(model)

    if args.eval_only:
        embedder = accelerator.prepare(embedder)
        if args.resume_from_checkpoint:
            accelerator.load_state(resolve_checkpoint(args.resume_from_checkpoint, output_dir))
        started = time.perf_counter()
        metrics = evaluate(accelerator, accelerator.unwrap_model(embedder).model, evaluation_data, args.dual_softmax)
        timings["evaluation_seconds"] = time.perf_counter() - started
        return accelerator.unwrap_model(embedder).model, metrics, timings

    sampler = EpochShuffleSampler(len(train), args.seed)
    if args.distinct_captions_in_batch:
        batching = dict(batch_sampler=DistinctCaptionBatchSampler(train["caption"], micro_batch_size, sampler))
    else:
        batching = dict(batch_size=micro_batch_size, sampler=sampler, drop_last=True)
    train_collator = collator
    if args.random_frame_jitter:  # training frames only; evaluation samples the fixed ones
        train_collator = VideoTextCollator(
            processor, args.max_text_length, random_frame_jitter=True, jitter_seed=args.seed
        )
    # Workers are started anew each epoch (not persistent) so that they copy the collator with that epoch's number.
    train_loader = DataLoader(train, collate_fn=train_collator, num_workers=num_workers, **batching)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.clip_learning_rate_scale, args.weight_decay),
        betas=(0.9, 0.98), eps=1e-6,
    )
    steps_per_epoch = len(train_loader) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training pairs make no batch of {args.global_batch_size}")
    total_steps = steps_per_epoch * args.num_train_epochs
    if args.max_train_steps:
        total_steps = min(total_steps, args.max_train_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_proportion * total_steps), total_steps)
    embedder, optimizer, train_loader, scheduler = accelerator.prepare(embedder, optimizer, train_loader, scheduler)

    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
        accelerator.load_state(checkpoint)
        accelerator.print(f"Resumed from {checkpoint}: epoch {progress.epoch}, step {progress.optimizer_steps}")

    num_epochs = math.ceil(total_steps / steps_per_epoch)
    weight = model.config.global_similarity_weight if model.config.use_temporal_alignment_block else 1.0
    progress_bar = tqdm(
        total=total_steps, initial=progress.optimizer_steps, disable=not accelerator.is_local_main_process,
        desc=f"training {architecture or 'clip2video'}",
    )
    metrics = None
    training_seconds = evaluation_seconds = 0.0
    started = time.perf_counter()
    while progress.epoch < num_epochs and progress.optimizer_steps < total_steps:
        embedder.train()
        train_loader.set_epoch(progress.epoch)
        train_collator.epoch = progress.epoch
        batches = train_loader
        if progress.batches_done_in_epoch:
            batches = accelerator.skip_first_batches(train_loader, progress.batches_done_in_epoch)
        for batch in batches:
            with accelerator.accumulate(embedder):
                loss = global_contrastive_loss(embedder(**batch), weight)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(embedder.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            progress.batches_done_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            with torch.no_grad():
                model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
            progress.optimizer_steps += 1
            progress_bar.update(1)
            progress_bar.set_postfix(loss=f"{loss.item():.3f}", epoch=progress.epoch)
            accelerator.log({f"{log_prefix}train/loss": loss.item(), f"{log_prefix}train/lr": scheduler.get_last_lr()[0],
                             f"{log_prefix}train/logit_scale": model.logit_scale.exp().item()},
                            step=progress.optimizer_steps)
            if checkpointing.isdigit() and progress.optimizer_steps % int(checkpointing) == 0:
                save_checkpoint(accelerator, output_dir, progress)
            if progress.optimizer_steps >= total_steps:
                break
        if progress.batches_done_in_epoch >= len(train_loader) or progress.optimizer_steps >= total_steps:
            progress.epoch += 1
            progress.batches_done_in_epoch = 0
        training_seconds += time.perf_counter() - started
        started = time.perf_counter()
        metrics = evaluate(accelerator, model, evaluation_data, args.dual_softmax)
        evaluation_seconds += time.perf_counter() - started
        accelerator.log({f"{log_prefix}eval/{name}": value for name, value in metrics.items()},
                        step=progress.optimizer_steps)
        accelerator.print(
            f"epoch {progress.epoch}: text-to-video R@1 {metrics['t2v_R1']:.1f}, video-to-text R@1 {metrics['v2t_R1']:.1f}"
        )
        if checkpointing == "epoch":
            save_checkpoint(accelerator, output_dir, progress)
        started = time.perf_counter()
    progress_bar.close()
    if metrics is None:  # resumed from the very end: nothing left to train
        metrics = evaluate(accelerator, model, evaluation_data, args.dual_softmax)
    timings.update(training_seconds=training_seconds, evaluation_seconds=evaluation_seconds)
    return accelerator.unwrap_model(embedder).model, metrics, timings


def save_checkpoint(accelerator, output_dir: Path, progress: TrainingProgress):
    """`accelerator.save_state` into `checkpoints/step_<n>`, written under another name and renamed when complete,
    so a run killed while saving never leaves a half-written latest checkpoint."""
    final = output_dir / "checkpoints" / f"step_{progress.optimizer_steps:08d}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def resolve_checkpoint(checkpoint: str, output_dir: Path) -> str:
    if checkpoint != "latest":
        return checkpoint
    candidates = sorted(path for path in (output_dir / "checkpoints").glob("step_*") if path.suffix != ".partial")
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {output_dir / 'checkpoints'}")
    return str(candidates[-1])


def main(argv=None):
    args = parse_args(argv)
    job_started = time.perf_counter()
    report_to = args.report_to
    if report_to == "auto":
        report_to = "tensorboard" if is_tensorboard_available() else "trackio" if is_trackio_available() else "none"
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if report_to == "none" else report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The data loader yields the global batch and each process takes its equal slice: the same pairs meet in
        # one contrastive loss whatever the number of processes.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    if accelerator.device.type == "cpu":
        threads = args.cpu_threads
        if threads == "auto":
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
            threads = max(1, len(os.sched_getaffinity(0)) // local_processes)
        torch.set_num_threads(int(threads))
    if report_to != "none":
        accelerator.init_trackers("clip2video", config={k: v for k, v in vars(args).items() if v is not None})

    started = time.perf_counter()
    train, evaluation, eval_source = load_splits(args, accelerator)
    timings = {"data_seconds": time.perf_counter() - started}
    first_model_config = (
        small_synthetic_config(args.num_frames, "clip2video") if args.model_name_or_path is None
        else CLIP2VideoConfig.from_pretrained(args.model_name_or_path)
    )
    processor = build_processor(args, first_model_config)
    frame_cache = None
    if args.cache_frames:
        started = time.perf_counter()
        frame_cache = build_frame_cache(args, accelerator, processor, [train, evaluation])
        timings["frame_cache_seconds"] = time.perf_counter() - started
    accelerator.print(
        f"{eval_source['dataset']}: {0 if train is None else len(train)} training pairs, {len(evaluation)} test "
        f"captions of {len(set(evaluation['video_id']))} videos"
    )

    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    model, metrics, model_timings = train_and_evaluate(
        args, accelerator, progress, train, evaluation, processor, frame_cache, args.architecture, output_dir,
        args.checkpointing_steps,
    )
    timings.update(model_timings)
    runs = {args.architecture or "clip2video": {"metrics": metrics, "timings": model_timings}}
    if args.mean_pooling_baseline and not args.eval_only:
        progress.__init__()
        _, baseline_metrics, baseline_timings = train_and_evaluate(
            args, accelerator, progress, train, evaluation, processor, frame_cache, "mean_pooling", output_dir,
            checkpointing="no",  # a comparison, not a model to resume or publish
            log_prefix="mean_pooling/",
        )
        runs["mean_pooling"] = {"metrics": baseline_metrics, "timings": baseline_timings}

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        started = time.perf_counter()
        evaluation_data = {
            **eval_source,
            **{key: value for key, value in zip(("video_ids", "video_paths", "caption_video_index"), group_by_video(evaluation))},
            "captions": list(evaluation["caption"]),
        }
        results = {
            "model": args.model_name_or_path or "small CLIP2Video from scratch",
            "runs": runs,
            "test_split": evaluation_data,
            "args": vars(args),
        }
        write_publishable_folder(output_dir, model, processor, results, push_to_hub=args.push_to_hub,
                                 hub_model_id=args.hub_model_id)
        timings["saving_seconds"] = time.perf_counter() - started
        timings["total_seconds"] = time.perf_counter() - job_started
        results["timings"] = timings
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        print_results_table(runs, eval_source, timings)
    accelerator.end_training()


if __name__ == "__main__":
    main()
