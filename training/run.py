"""Train and evaluate CLIP2Video with 🤗 Accelerate.

    accelerate launch training/run.py

With no arguments: generate the embedded synthetic data (coloured shapes moving in four directions, growing or
shrinking; once, cached), train a small CLIP2Video from scratch on the CPU, train a mean-pooling model (no temporal
modelling) with the same budget, evaluate both, write `outputs/clip2video-synthetic` (model, processor, remote code,
model card, `results.json`) and print a results table.

On a published dataset the defaults are the recipe of the paper's code base (CLIP4Clip), e.g. MSR-VTT 9k:

    accelerate launch training/run.py --dataset msrvtt --annotations_dir msrvtt_data --videos_dir MSRVTT/videos \\
        --model_name_or_path openai/clip-vit-base-patch32 --output_dir outputs/clip2video-msrvtt9k

Any dataset `datasets.load_dataset` reads (a Hub id, a local `videofolder`, parquet with video bytes, webdataset
shards), streamed or not:

    accelerate launch training/run.py --dataset_name webdataset --data_files "train=shards/train-*.tar" \\
        "test=shards/test-*.tar" --caption_column txt --streaming --max_train_steps 5000 \\
        --model_name_or_path openai/clip-vit-base-patch32 --output_dir outputs/clip2video-shards

Evaluate any CLIP2Video checkpoint (e.g. one converted from the authors' release) without training:

    accelerate launch training/run.py --eval_only --model_name_or_path converted/msrvtt9k --dataset msrvtt ...

Every flag is checked before any work starts. A run owns its `--output_dir`: a folder holding another run's files is
refused unless `--overwrite_output_dir`, or `--resume_from_checkpoint` of a run with the same training arguments.
Videos that cannot be decoded are skipped (training: replaced in their batch; evaluation: left out and counted) and
listed in `results.json`, up to `--max_bad_videos`. See docs/training.md.
"""

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedType
from accelerate.utils import ProjectConfiguration, send_to_device, set_seed
from accelerate.utils import is_tensorboard_available, is_trackio_available
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from clip2video.processing import CLIP2VideoProcessor
from clip2video.training.checkpoints import (
    TrainingProgress,
    check_output_dir_against_inputs,
    check_same_data,
    claim_output_dir,
    data_identity,
    public_args,
    resolve_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from clip2video.training.contrastive import (
    ContrastiveEmbedder,
    clamp_logit_scale,
    global_contrastive_loss,
    make_logit_scale_shardable,
    scalar_logit_scale,
)
from clip2video.training.bad_videos import BadVideos, missing_videos
from clip2video.training.data import (
    DistinctCaptionBatchSampler,
    EpochShuffleSampler,
    IndexedRows,
    StreamingBatches,
    VideoTextCollator,
    usable_rows,
    video_key,
)
from clip2video.training.distributed import fill_deepspeed_batch_sizes, set_cpu_threads
from clip2video.training.evaluation import EvaluationData, evaluate
from clip2video.training.loaders import group_by_video, local_data_files
from clip2video.pipelines.publishing import (
    build_results, prepare_hub_repo, print_results_table, push_folder, write_publishable_folder,
)
from clip2video.training.recipes import (
    ARCHITECTURES,
    PAPER_RECIPE,
    SYNTHETIC_RECIPE,
    build_model,
    build_processor,
    model_config,
    parameter_groups,
)
from clip2video.training.frame_cache import FrameCache, build_frame_cache
from clip2video.training.splits import DEFAULT_SPLITS, PUBLISHED_LOADERS, load_splits, split_data_files
from clip2video.training.synthetic import SyntheticConfig

TRACKERS = ("auto", "all", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "aim",
            "swanlab", "none")


def _int_at_least(minimum: int, description: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {description}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _float_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    return parse


def _checkpointing_steps(text: str) -> str:
    if text in ("epoch", "no"):
        return text
    try:
        if int(text) >= 1:
            return str(int(text))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f'expected "epoch", "no" or a positive number of optimizer steps, got {text!r}')


def _bad_video_cap(text: str) -> float:
    """An absolute count (an integer >= 0) or a fraction of the videos (a number in [0, 1))."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(
            f"expected a count (an integer >= 0, e.g. 20) or a fraction of the videos (e.g. 0.01), got {text!r}"
        )
    return value


def _cpu_threads(text: str) -> str:
    if text == "auto":
        return text
    return str(_positive_int(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=["synthetic", "videofolder", *PUBLISHED_LOADERS],
                      help="Default: synthetic, or the dataset --dataset_name names.")
    data.add_argument("--data_dir", default="outputs/data/synthetic", help="Where the synthetic data is generated.")
    data.add_argument("--num_synthetic_train_clips", type=_positive_int, default=SyntheticConfig.num_train_clips)
    data.add_argument("--annotations_dir", help="Annotation files of a published dataset (msrvtt, msvd, vatex, lsmdc).")
    data.add_argument("--videos_dir", help="Video files of a published dataset (searched recursively by file name).")
    data.add_argument("--train_split", help="Split name; defaults per dataset, e.g. msrvtt: train_9k, --dataset_name: "
                      "train.")
    data.add_argument("--eval_split", help="Split name; defaults per dataset, e.g. msrvtt: test_1k_a, --dataset_name: "
                      "test.")
    data.add_argument("--train_dir", help="videofolder: folder with metadata.csv / metadata.jsonl for training.")
    data.add_argument("--eval_dir", help="videofolder: folder with metadata.csv / metadata.jsonl for evaluation.")
    data.add_argument("--on_bad_row", default="error", choices=["error", "skip"],
                      help="Malformed annotation rows: stop with the list (default) or leave them out.")
    data.add_argument("--dataset_name", help="Any dataset datasets.load_dataset reads: a Hub id (user/name) or a "
                      "builder (videofolder, parquet, arrow, webdataset) with --data_files or --dataset_dir.")
    data.add_argument("--dataset_config", help="The dataset's configuration name.")
    data.add_argument("--dataset_dir", help="data_dir passed to load_dataset (e.g. a videofolder folder).")
    data.add_argument("--data_files", nargs="+", help='Files or globs, as "split=pattern" (e.g. '
                      '"train=shards/train-*.tar" "test=shards/test-*.tar") or plain patterns for the train split.')
    data.add_argument("--dataset_revision", help="Branch, tag or commit of a Hub dataset.")
    data.add_argument("--video_column", help="Default: the first Video column, or video / mp4 / ...")
    data.add_argument("--caption_column", help="Default: caption, text, txt, sentence, ... (json.caption reads a key "
                      "of webdataset .json files); a list of captions gives one pair each.")
    data.add_argument("--id_column", help="Default: video_id, __key__, id, ... or else the video's path.")
    data.add_argument("--streaming", action="store_true", help="Train from an IterableDataset (--dataset_name only): "
                      "shards split across processes, no length needed (--max_train_steps sets it), exact resume.")
    data.add_argument("--shuffle_block_size", type=_positive_int, default=1000,
                      help="--streaming: rows read and shuffled together (a resume re-reads at most one block).")
    data.add_argument("--max_eval_samples", type=_positive_int, help="Evaluate on the first N test pairs only.")
    data.add_argument("--cache_frames", action=argparse.BooleanOptionalAction, default=None,
                      help="Decode every video once and keep the processed frames (default: on for synthetic data).")
    data.add_argument("--random_frame_jitter", action=argparse.BooleanOptionalAction, default=None,
                      help="Move each inner training frame at random within its sampling interval, as the authors' "
                      "loaders do (default: on unless --cache_frames, which samples every video once). "
                      "Evaluation always samples the fixed frames.")
    data.add_argument("--num_workers", type=_non_negative_int, default=None, help="DataLoader workers (default: 0 "
                      "with cached frames, else the number of CPUs); decoding threads with --streaming.")
    data.add_argument("--max_bad_videos", type=_bad_video_cap, default=0.05, help="Videos that cannot be decoded "
                      "are skipped and listed; more than this many (an integer) or this fraction of the videos "
                      "(a number below 1) ends the run with an error. Default: 0.05.")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", help="A CLIP checkpoint (Hub id or folder) to start from, or a "
                       "CLIP2Video checkpoint. Default: a small CLIP2Video from scratch (synthetic data only).")
    model.add_argument("--architecture", choices=list(ARCHITECTURES), help="Temporal modules; default: the "
                       "checkpoint's own, or the paper's full model when starting from CLIP.")
    model.add_argument("--num_frames", type=_positive_int)
    model.add_argument("--max_text_length", type=_positive_int)
    model.add_argument("--gradient_checkpointing", action="store_true")

    optim = parser.add_argument_group("optimisation (defaults: the paper's recipe, or the synthetic one)")
    optim.add_argument("--learning_rate", type=_float_in(0, 1, low_open=True))
    optim.add_argument("--clip_learning_rate_scale", type=_float_in(0, 1), help="CLIP's weights learn at this "
                       "times the rate.")
    optim.add_argument("--weight_decay", type=_float_in(0, 1))
    optim.add_argument("--warmup_proportion", type=_float_in(0, 1))
    optim.add_argument("--num_train_epochs", type=_non_negative_int, help="0 only with --eval_only.")
    optim.add_argument("--max_train_steps", type=_positive_int, help="Stop after this many optimizer steps (needed "
                       "with --streaming).")
    optim.add_argument("--global_batch_size", type=_positive_int, help="Pairs per optimizer step, over all "
                       "processes.")
    optim.add_argument("--gradient_accumulation_steps", type=_positive_int, default=1)
    optim.add_argument("--distinct_captions_in_batch", action=argparse.BooleanOptionalAction, default=None,
                       help="Never put two pairs with the same caption in one batch (they would be each other's "
                       "negatives); default: on for synthetic data (120 captions), off for real data as in the paper.")
    optim.add_argument("--max_grad_norm", type=_float_in(0, math.inf, high_open=True), help="0: no clipping.")
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="Default: accelerate's config.")
    optim.add_argument("--seed", type=_non_negative_int, default=42)
    optim.add_argument("--cpu_threads", type=_cpu_threads, default="auto", help='Torch threads per process on CPU. '
                       '"auto": the machine\'s cores shared among the local processes (`accelerate launch` otherwise '
                       "sets 1).")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="outputs/clip2video-synthetic")
    run.add_argument("--overwrite_output_dir", action="store_true", help="Clear --output_dir when it holds another "
                     "run's files (otherwise the run is refused).")
    run.add_argument("--checkpointing_steps", type=_checkpointing_steps, default="epoch",
                     help='"epoch", a positive number of optimizer steps, or "no".')
    run.add_argument("--resume_from_checkpoint", help='A checkpoint folder, or "latest" in output_dir/checkpoints; '
                     "it must come from a run with the same training arguments.")
    run.add_argument("--eval_only", action="store_true", help="Evaluate --model_name_or_path (or the resumed "
                     "checkpoint) and write results.json, without training.")
    run.add_argument("--eval_batch_size", type=_positive_int)
    run.add_argument("--dual_softmax", action="store_true", help="Also report inference-time dual softmax (DSL) "
                     "metrics, labelled dsl_; they use all test queries at once.")
    run.add_argument("--mean_pooling_baseline", action=argparse.BooleanOptionalAction, default=None,
                     help="Also train a mean-pooling model with the same budget (default: on for synthetic data).")
    run.add_argument("--report_to", default="auto", choices=TRACKERS, help="Any tracker accelerate supports, or all "
                     "installed ones; auto: TensorBoard if installed, else trackio if installed, else none.")
    run.add_argument("--push_to_hub", action="store_true", help="Create the repository (and check write access) at "
                     "the start; push the published folder, results.json included, at the end.")
    run.add_argument("--hub_model_id", help="Repository on the Hub, e.g. user/clip2video-msrvtt9k.")
    run.add_argument("--hub_token", help="Default: the saved token (`hf auth login`) or HF_TOKEN.")
    run.add_argument("--hub_private", action=argparse.BooleanOptionalAction, default=None,
                     help="Create the repository private (default: the Hub's default).")
    run.add_argument("--hub_revision", help="Branch to push to (created if needed); default: main.")
    run.add_argument("--hub_create_pr", action="store_true", help="Open a pull request instead of pushing directly.")
    return parser


# The data flags and the data sources that read them (published: msrvtt, msvd, vatex, lsmdc; hub: --dataset_name).
SOURCE_FLAGS = {
    "train_dir": ("videofolder",), "eval_dir": ("videofolder",),
    "annotations_dir": ("published",), "videos_dir": ("published",),
    "train_split": ("published", "hub"), "eval_split": ("published", "hub"),
    **{flag: ("hub",) for flag in ("dataset_config", "dataset_dir", "dataset_revision", "video_column",
                                   "caption_column", "id_column")},
}
SOURCE_DESCRIPTIONS = {"videofolder": "--dataset videofolder", "published": "--dataset msrvtt/msvd/vatex/lsmdc",
                       "hub": "--dataset_name"}


def parse_args(argv=None):
    """Parses and checks every flag, before any work: a wrong value stops here with what to pass instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset_name:
        if args.dataset:
            parser.error(f"--dataset {args.dataset} and --dataset_name {args.dataset_name} name two data sources: "
                         "pass one of them")
        args.dataset = "hub"
    args.dataset = args.dataset or "synthetic"
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
    if args.data_files and not args.dataset_name:
        parser.error("--data_files needs --dataset_name (e.g. webdataset, parquet, videofolder)")
    source = "published" if args.dataset in PUBLISHED_LOADERS else args.dataset
    for flag, readers in SOURCE_FLAGS.items():
        if getattr(args, flag) is not None and source not in readers:
            given = f"--dataset_name {args.dataset_name}" if args.dataset_name else f"--dataset {args.dataset}"
            parser.error(f"--{flag} is not read with {given}: it takes effect with "
                         f"{' or '.join(SOURCE_DESCRIPTIONS[reader] for reader in readers)}; drop it")
    if args.streaming:
        if not args.dataset_name:
            parser.error("--streaming reads a dataset through datasets.load_dataset: pass --dataset_name")
        if not args.max_train_steps and not args.eval_only:
            parser.error("--streaming has no length: pass --max_train_steps")
        if args.cache_frames:
            parser.error("--streaming decodes as it reads: use --no-cache_frames")
        args.distinct_captions_in_batch = False  # blocks are shuffled as read; batches are not planned ahead
    if args.num_train_epochs == 0 and not args.eval_only:
        parser.error("--num_train_epochs 0 trains nothing: pass a positive number of epochs, or --eval_only to "
                     "evaluate a model")
    if args.global_batch_size % args.gradient_accumulation_steps:
        parser.error(f"--global_batch_size {args.global_batch_size} must be a multiple of "
                     f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
    if args.eval_only and not (args.model_name_or_path or args.resume_from_checkpoint) and args.dataset != "synthetic":
        parser.error("--eval_only needs --model_name_or_path or --resume_from_checkpoint")
    if args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        if not Path(args.resume_from_checkpoint).is_dir():
            parser.error(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no such folder (or pass latest)")
    try:
        check_output_dir_against_inputs(args)
    except ValueError as error:
        parser.error(str(error))
    if args.random_frame_jitter is None:
        args.random_frame_jitter = not args.cache_frames
    if args.random_frame_jitter and args.cache_frames:
        parser.error("--random_frame_jitter draws new frames every epoch; cached frames are drawn once: use "
                     "--no-cache_frames or --no-random_frame_jitter")
    if (args.hub_model_id or args.hub_revision or args.hub_create_pr or args.hub_private is not None) and not args.push_to_hub:
        parser.error("--hub_model_id / --hub_revision / --hub_create_pr / --hub_private take effect with --push_to_hub")
    if args.push_to_hub:
        if not args.hub_model_id:
            parser.error("--push_to_hub needs --hub_model_id (e.g. your-name/clip2video-msrvtt9k)")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(args.hub_model_id)
        except HFValidationError as error:
            parser.error(f"--hub_model_id {args.hub_model_id!r}: {error}")
        if "/" not in args.hub_model_id:
            parser.error(f"--hub_model_id {args.hub_model_id!r}: give the namespace, e.g. your-name/{args.hub_model_id}")
    if args.report_to not in ("auto", "none", "all"):
        import accelerate.utils as accelerate_utils

        available = getattr(accelerate_utils, f"is_{args.report_to}_available", None)
        if available is not None and not available():
            parser.error(f"--report_to {args.report_to}: its package is not installed; install it or pass "
                         "--report_to none")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What every model this job trains shares: the flags, the processes, the output folder and the data."""

    args: argparse.Namespace
    accelerator: Accelerator
    output_dir: Path
    fingerprint: dict  # `run_fingerprint(args)`, written with every checkpoint
    processor: CLIP2VideoProcessor
    train: datasets.Dataset | datasets.IterableDataset | None  # None with --eval_only
    evaluation: datasets.Dataset
    frame_cache: FrameCache | None
    # The videos of each split known to be bad before any training; each model starts from a copy (`restarted`).
    train_bad: BadVideos
    eval_bad: BadVideos


@dataclass
class ModelRun:
    """One model this job trained (or, with --eval_only, evaluated) and what it measured."""

    embedder: torch.nn.Module  # the prepared `ContrastiveEmbedder`
    metrics: dict  # of the last evaluation
    train_bad: BadVideos
    eval_bad: BadVideos  # the last evaluation's, every process's
    timings: dict


@dataclass
class Training:
    """One model's training, prepared by accelerate: from map-style data (`loader`) or a stream (`stream`)."""

    embedder: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    collator: VideoTextCollator
    loader: DataLoader | None
    stream: StreamingBatches | None
    total_steps: int  # optimizer steps
    num_epochs: float  # math.inf for a stream: --max_train_steps ends it
    loss_weight: float  # the global similarity's weight in the loss (1 without the Temporal Alignment Block)
    checkpointing: str  # --checkpointing_steps, or "no" for a model that is neither resumed nor published
    log_prefix: str  # tracker values are logged under it (the baseline's curves must not overwrite the main model's)


def train_model(
    run: Run, architecture: str | None, progress: TrainingProgress, checkpointing: str, log_prefix: str = ""
) -> ModelRun:
    """Trains one model, evaluating it after every epoch (with --eval_only: evaluates it only)."""
    args, accelerator = run.args, run.accelerator
    accelerator.free_memory()  # forget the models, optimizers and loaders of a previous run in this process
    set_seed(args.seed)
    model = build_model(args.model_name_or_path, args.num_frames, architecture)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_bad, eval_bad = run.train_bad.restarted(), run.eval_bad.restarted()
    num_workers = args.num_workers if args.num_workers is not None else (0 if run.frame_cache else os.cpu_count() or 1)
    evaluation_data = EvaluationData(
        accelerator, run.evaluation, VideoTextCollator(run.processor, args.max_text_length, run.frame_cache,
                                                       bad_videos=eval_bad),
        args.eval_batch_size, num_workers,
    )
    if accelerator.distributed_type == DistributedType.FSDP:
        make_logit_scale_shardable(model)
    embedder = ContrastiveEmbedder(model)
    fill_deepspeed_batch_sizes(accelerator, args.global_batch_size // args.gradient_accumulation_steps, args)

    if args.eval_only:
        embedder = accelerator.prepare(embedder)
        if args.resume_from_checkpoint:
            accelerator.load_state(resolve_checkpoint(args.resume_from_checkpoint, run.output_dir))
        started = time.perf_counter()
        metrics = evaluate(accelerator, embedder, evaluation_data, eval_bad, args.dual_softmax)
        return ModelRun(embedder, metrics, train_bad, eval_bad, {"evaluation_seconds": time.perf_counter() - started})

    training = prepare_training(run, model, embedder, train_bad, num_workers, checkpointing, log_prefix)
    if args.resume_from_checkpoint:
        resume(run, training, progress)
    progress_bar = tqdm(
        total=training.total_steps, initial=progress.optimizer_steps, disable=not accelerator.is_local_main_process,
        desc=f"training {architecture or 'clip2video'}",
    )
    metrics = None
    timings = {"training_seconds": 0.0, "evaluation_seconds": 0.0}
    while progress.epoch < training.num_epochs and progress.optimizer_steps < training.total_steps:
        started = time.perf_counter()
        train_one_epoch(run, training, progress, train_bad, progress_bar)
        timings["training_seconds"] += time.perf_counter() - started
        started = time.perf_counter()
        metrics = evaluate(accelerator, training.embedder, evaluation_data, eval_bad, args.dual_softmax)
        timings["evaluation_seconds"] += time.perf_counter() - started
        accelerator.log({f"{log_prefix}eval/{name}": value for name, value in metrics.items()},
                        step=progress.optimizer_steps)
        accelerator.print(
            f"epoch {progress.epoch}: text-to-video R@1 {metrics['t2v_R1']:.1f}, video-to-text R@1 "
            f"{metrics['v2t_R1']:.1f}" + (f" ({metrics['num_dropped_videos']} test videos left out)"
                                          if metrics["num_dropped_videos"] else "")
        )
        if checkpointing == "epoch":
            save_checkpoint(accelerator, run.output_dir, progress, run.fingerprint, training.stream)
    progress_bar.close()
    if metrics is None:  # resumed from the very end: nothing left to train
        metrics = evaluate(accelerator, training.embedder, evaluation_data, eval_bad, args.dual_softmax)
    return ModelRun(training.embedder, metrics, train_bad, eval_bad, timings)


def prepare_training(
    run: Run, model, embedder: ContrastiveEmbedder, train_bad: BadVideos, num_workers: int, checkpointing: str,
    log_prefix: str,
) -> Training:
    """The optimizer, the schedule and the training batches (a stream, or a loader over the rows whose video is not
    known to be bad), prepared by accelerate with the model."""
    args, accelerator, train = run.args, run.accelerator, run.train
    micro_batch_size = args.global_batch_size // args.gradient_accumulation_steps
    collator = VideoTextCollator(
        run.processor, args.max_text_length, run.frame_cache, random_frame_jitter=args.random_frame_jitter,
        jitter_seed=args.seed, dataset=None if args.streaming else train,
        candidates=None if args.streaming else usable_rows(train, train_bad), bad_videos=train_bad,
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.learning_rate, args.clip_learning_rate_scale, args.weight_decay),
        betas=(0.9, 0.98), eps=1e-6,
    )
    loader = stream = None
    if args.streaming:
        from datasets.distributed import split_dataset_by_node

        stream = StreamingBatches(
            split_dataset_by_node(train, accelerator.process_index, accelerator.num_processes),
            micro_batch_size // accelerator.num_processes, collator, args.seed, block_size=args.shuffle_block_size,
            num_threads=args.num_workers if args.num_workers else os.cpu_count() or 1,
            data_files=local_data_files(train_data_files(args)),
        )
        total_steps, num_epochs = args.max_train_steps, math.inf
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_proportion * total_steps), total_steps)
        embedder, optimizer, scheduler = accelerator.prepare(embedder, optimizer, scheduler)
    else:
        sampler = EpochShuffleSampler(len(train), args.seed, indices=collator.candidates)
        if args.distinct_captions_in_batch:
            batching = dict(batch_sampler=DistinctCaptionBatchSampler(train["caption"], micro_batch_size, sampler))
        else:
            batching = dict(batch_size=micro_batch_size, sampler=sampler, drop_last=True)
        # Workers are started anew each epoch (not persistent) so that they copy the collator with that epoch's number.
        loader = DataLoader(IndexedRows(train), collate_fn=collator, num_workers=num_workers, **batching)
        steps_per_epoch = len(loader) // args.gradient_accumulation_steps
        if steps_per_epoch == 0:
            raise ValueError(
                f"{len(sampler)} usable training pairs make no batch of {args.global_batch_size}: lower "
                "--global_batch_size"
            )
        total_steps = steps_per_epoch * args.num_train_epochs
        if args.max_train_steps:
            total_steps = min(total_steps, args.max_train_steps)
        num_epochs = math.ceil(total_steps / steps_per_epoch)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_proportion * total_steps), total_steps)
        embedder, optimizer, loader, scheduler = accelerator.prepare(embedder, optimizer, loader, scheduler)
    weight = model.config.global_similarity_weight if model.config.use_temporal_alignment_block else 1.0
    return Training(embedder, optimizer, scheduler, collator, loader, stream, total_steps, num_epochs, weight,
                    checkpointing, log_prefix)


def resume(run: Run, training: Training, progress: TrainingProgress):
    """Loads --resume_from_checkpoint into the prepared objects and `progress` (registered for checkpointing)."""
    accelerator = run.accelerator
    checkpoint = resolve_checkpoint(run.args.resume_from_checkpoint, run.output_dir)
    accelerator.load_state(checkpoint)
    accelerator.print(f"Resumed from {checkpoint}: epoch {progress.epoch}, step {progress.optimizer_steps}")
    if training.stream is not None:
        states = progress.stream_states
        if not states or len(states) != accelerator.num_processes:
            raise ValueError(
                f"{checkpoint} was saved by {len(states or [])} processes reading their own shards; resume a "
                f"stream with the same number of processes (this run has {accelerator.num_processes})"
            )
        training.stream.load_state_dict(states[accelerator.process_index])


def train_one_epoch(run: Run, training: Training, progress: TrainingProgress, train_bad: BadVideos, progress_bar):
    """One pass over the training data from where `progress` stands (a resumed epoch goes on from its batch), one
    optimizer step per --gradient_accumulation_steps batches, until the data or the schedule ends."""
    args, accelerator = run.args, run.accelerator
    embedder, optimizer, scheduler = training.embedder, training.optimizer, training.scheduler
    embedder.train()
    batches = epoch_batches(accelerator, training, progress)
    # Whole optimizer steps only, as the schedule counts them: the micro-batches left at the end of the loader (fewer
    # than --gradient_accumulation_steps) are left out like a last partial batch. accelerate would otherwise step on
    # them at the end of the loader: fewer pairs than --global_batch_size, and a step the schedule does not count.
    accumulation = args.gradient_accumulation_steps
    whole_steps = None if training.loader is None else len(training.loader) // accumulation * accumulation
    for batch in batches:
        if whole_steps is not None and progress.batches_done_in_epoch >= whole_steps:
            continue
        new_bad = batch.pop("bad_videos")
        batch.pop("valid", None)
        train_bad.add(new_bad)
        train_bad.rows_read += batch["input_ids"].shape[0] + len(new_bad)
        with accelerator.accumulate(embedder):
            embeddings = embedder(**batch)
            loss = global_contrastive_loss(embeddings, training.loss_weight)
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(embedder.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        progress.batches_done_in_epoch += 1
        if not accelerator.sync_gradients:
            continue
        clamp_logit_scale(embedder)
        progress.optimizer_steps += 1
        train_bad.check(accelerator)
        progress_bar.update(1)
        progress_bar.set_postfix(loss=f"{loss.item():.3f}", epoch=progress.epoch)
        prefix = training.log_prefix
        accelerator.log({f"{prefix}train/loss": loss.item(), f"{prefix}train/lr": scheduler.get_last_lr()[0],
                         f"{prefix}train/logit_scale": embeddings.logit_scale.detach().float().exp().item(),
                         f"{prefix}train/bad_videos": len(train_bad.videos)},
                        step=progress.optimizer_steps)
        if training.checkpointing.isdigit() and progress.optimizer_steps % int(training.checkpointing) == 0:
            save_checkpoint(accelerator, run.output_dir, progress, run.fingerprint, training.stream)
        if progress.optimizer_steps >= training.total_steps:
            break
    if training.stream is not None:
        batches.close()
    # An epoch cut short by the schedule is over too: the next run of the loop (a resume) starts a new one.
    progress.epoch += 1
    progress.batches_done_in_epoch = 0


def epoch_batches(accelerator, training: Training, progress: TrainingProgress):
    """This epoch's batches from where `progress` stands: the stream's, or the loader's in this epoch's order past
    the batches a resumed run already trained on."""
    if training.stream is not None:
        return streamed_batches(accelerator, training.stream, progress)
    training.loader.set_epoch(progress.epoch)
    training.collator.epoch = progress.epoch
    if progress.batches_done_in_epoch:
        return accelerator.skip_first_batches(training.loader, progress.batches_done_in_epoch)
    return training.loader


def train_data_files(args) -> list[str] | None:
    """The --data_files patterns of the training split."""
    return (split_data_files(args.data_files) or {}).get(args.train_split or DEFAULT_SPLITS["hub"][0])


def streamed_batches(accelerator, stream: StreamingBatches, progress: TrainingProgress):
    """This process's streamed batches, on the device, for as long as every process has one (processes read
    different shards and may run out at different times; all end the epoch together)."""
    batches = iter(stream)
    try:
        while True:
            item = next(batches, None)
            has_batch = torch.tensor([0 if item is None else 1], device=accelerator.device)
            if accelerator.num_processes > 1:
                # Every process has one: accelerate's reduce has no "min" (any other name sums), so count them.
                has_batch = (accelerator.reduce(has_batch, "sum") == accelerator.num_processes).long()
            if not int(has_batch.item()):
                batches.close()
                stream.state = {"epoch": progress.epoch + 1, "block": 0, "block_state": None, "position": 0}
                return
            batch, _ = item
            bad_videos = batch.pop("bad_videos")
            batch = send_to_device(batch, accelerator.device)
            batch["bad_videos"] = bad_videos
            yield batch
    finally:
        # Stops the decoding threads now, not when garbage collected: evaluation forks DataLoader workers, and a
        # fork taken while another thread decodes can deadlock in the child.
        batches.close()


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    job_started = time.perf_counter()
    report_to = args.report_to
    if report_to == "auto":
        report_to = "tensorboard" if is_tensorboard_available() else "trackio" if is_trackio_available() else "none"
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        # Without a GPU, accelerate runs the processes of `accelerate launch --multi_gpu` as independent single
        # processes unless told to use the CPU: then they form one gloo group (MULTI_CPU).
        cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if report_to == "none" else report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The data loader yields the global batch and each process takes its equal slice: the same pairs meet in
        # one contrastive loss whatever the number of processes.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and (
        accelerator.distributed_type != DistributedType.FSDP
    ):
        # accelerate shards with FSDP on accelerators only; on CPUs it silently runs the launch as plain DDP.
        accelerator.print(
            f"FSDP was asked for (e.g. --config_file training/configs/fsdp.yaml) but accelerate runs FSDP on GPUs "
            f"only: without one this run falls back to data parallel ({accelerator.distributed_type.value}, "
            f"{accelerator.num_processes} processes, each holding the whole model)."
        )
    if args.global_batch_size % (args.gradient_accumulation_steps * accelerator.num_processes):
        raise ValueError(
            f"--global_batch_size {args.global_batch_size} must split evenly into {args.gradient_accumulation_steps} "
            f"accumulation steps on {accelerator.num_processes} processes (equal batches on every process): pass a "
            f"multiple of {args.gradient_accumulation_steps * accelerator.num_processes}"
        )
    set_cpu_threads(accelerator, args.cpu_threads)

    # Everything that can fail without training fails first: the output folder, the Hub repository, the data.
    fingerprint = run_fingerprint(args)
    claim_output_dir(args, accelerator, fingerprint)
    hub_api = None
    if args.push_to_hub and accelerator.is_main_process:
        hub_api = prepare_hub_repo(args.hub_model_id, token=args.hub_token, private=args.hub_private,
                                   revision=args.hub_revision, create_pr=args.hub_create_pr)
    accelerator.wait_for_everyone()
    if report_to != "none":
        accelerator.init_trackers("clip2video", config={k: v for k, v in public_args(args).items() if v is not None})

    started = time.perf_counter()
    train, evaluation, eval_source = load_splits(args, accelerator)
    timings = {"data_seconds": time.perf_counter() - started}
    if train is not None:
        # Recorded in every checkpoint: a resume on other data is refused.
        fingerprint["data"] = data_identity(train, train_data_files(args))
        if args.resume_from_checkpoint:
            check_same_data(resolve_checkpoint(args.resume_from_checkpoint, output_dir), fingerprint["data"])
    config = model_config(args.model_name_or_path, args.num_frames, token=args.hub_token)
    processor = build_processor(args.model_name_or_path, args.num_frames, config)
    streaming = isinstance(train, datasets.IterableDataset)
    # The videos known to be bad before training: missing files, and with --cache_frames those that failed to decode.
    train_known = {} if train is None or streaming else missing_videos(train)
    eval_known = missing_videos(evaluation)
    frame_cache = None
    if args.cache_frames:
        started = time.perf_counter()
        frame_cache = build_frame_cache(args, accelerator, processor, [train, evaluation])
        timings["frame_cache_seconds"] = time.perf_counter() - started
        eval_keys = {video_key(video) for video in group_by_video(evaluation)[1]}
        eval_known.update({key: reason for key, reason in frame_cache.bad.items() if key in eval_keys})
        if train is not None:
            train_keys = {video_key(video) for video in train["video"]}
            for key, reason in frame_cache.bad.items():
                if key in train_keys:
                    train_known.setdefault(key, reason)  # a missing file is reported as missing
    train_bad = BadVideos("training", args.max_bad_videos,
                          None if train is None or streaming else len(set(train["video_id"])), train_known)
    train_bad.add(train_known.items(), known_at_start=True)
    eval_bad = BadVideos("test", args.max_bad_videos, len(set(evaluation["video_id"])), eval_known)
    if train is not None and not streaming:
        train_bad.check(accelerator, collective=False)
    accelerator.print(
        f"{eval_source.get('dataset_name') or eval_source['dataset']}: "
        f"{'a stream of' if streaming else 0 if train is None else len(train)} training pairs, {len(evaluation)} test "
        f"captions of {len(set(evaluation['video_id']))} videos"
        + (f"; {len(train_known)} training and {len(eval_known)} test videos missing or undecodable, left out"
           if train_known or eval_known else "")
    )

    run = Run(args, accelerator, output_dir, fingerprint, processor, train, evaluation, frame_cache, train_bad,
              eval_bad)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    trained = train_model(run, args.architecture, progress, args.checkpointing_steps)
    timings.update(trained.timings)
    runs = {args.architecture or "clip2video": {"metrics": trained.metrics, "timings": trained.timings}}
    # The final weights, gathered from every process (FSDP shards them): a collective, so before the main-only part.
    state_dict = accelerator.get_state_dict(trained.embedder)
    model = accelerator.unwrap_model(trained.embedder).model
    if args.mean_pooling_baseline and not args.eval_only:
        # A comparison, not a model to resume or publish: its own progress, never checkpointed; the same videos are
        # known to be bad.
        baseline = train_model(run, "mean_pooling", TrainingProgress(), checkpointing="no", log_prefix="mean_pooling/")
        runs["mean_pooling"] = {"metrics": baseline.metrics, "timings": baseline.timings}
    training_bad_videos = trained.train_bad.gathered(accelerator)
    eval_bad = trained.eval_bad.videos

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        started = time.perf_counter()
        video_ids, videos, caption_video_index = group_by_video(evaluation)
        evaluation_data = {
            **eval_source,
            "video_ids": video_ids,
            "video_paths": [video["path"] for video in videos],
            "caption_video_index": caption_video_index,
            "captions": list(evaluation["caption"]),
        }
        results = build_results(
            args.model_name_or_path, runs, evaluation_data,
            {"training": training_bad_videos, "evaluation": eval_bad}, public_args(args), fingerprint["fingerprint"],
            timings,
        )
        for split, bad in results["bad_videos"].items():
            for entry in bad[:50]:
                print(f"bad {split} video, skipped: {entry['video']}: {entry['reason']}")
            if len(bad) > 50:
                print(f"... and {len(bad) - 50} more {split} videos: see results.json")
        unwrapped_state = scalar_logit_scale({name.removeprefix("model."): tensor for name, tensor in state_dict.items()})
        timings["total_seconds"] = time.perf_counter() - job_started
        write_publishable_folder(output_dir, model, processor, results, state_dict=unwrapped_state)
        timings["saving_seconds"] = time.perf_counter() - started
        print_results_table(runs, eval_source, timings)
        if hub_api is not None:
            commit = push_folder(hub_api, args.hub_model_id, output_dir, revision=args.hub_revision,
                                 create_pr=args.hub_create_pr)
            print(f"pushed to {getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', commit)}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
