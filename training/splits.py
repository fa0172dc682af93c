"""The run's training and test splits: which loader reads them, the videos known to be missing before training,
the frame cache, and the count of videos that could not be used (with the cap that ends a run whose data is broken
wholesale)."""

import os
from pathlib import Path

import datasets
import torch
from accelerate.utils import gather_object

from clip2video.training.data import FrameCache, video_key, video_name
from clip2video.training.loaders import (
    check_video_ids,
    load_hub_dataset,
    load_lsmdc,
    load_msrvtt,
    load_msvd,
    load_vatex,
    load_video_folder,
)
from clip2video.training.synthetic import SyntheticConfig, generate_synthetic_dataset

DEFAULT_SPLITS = {
    "msrvtt": ("train_9k", "test_1k_a"),
    "msvd": ("train", "test"),
    "vatex": ("train", "test"),
    "lsmdc": ("train", "test"),
    "hub": ("train", "test"),
}
PUBLISHED_LOADERS = {"msrvtt": load_msrvtt, "msvd": load_msvd, "vatex": load_vatex, "lsmdc": load_lsmdc}


def split_data_files(patterns: list[str] | None):
    """`["train=a/*.tar", "test=b/*.tar"]` -> `{"train": [...], "test": [...]}`; plain patterns are the train split."""
    if not patterns:
        return None
    files: dict[str, list[str]] = {}
    for pattern in patterns:
        split, separator, rest = pattern.partition("=")
        if not separator or "/" in split or not split:
            split, rest = "train", pattern
        files.setdefault(split, []).append(rest)
    return files


def _files_of(files: dict[str, list[str]] | None, split: str) -> dict[str, list[str]] | None:
    """The data files of one split only: loading a split never reads (or caches) another split's files."""
    if files is None:
        return None
    if split not in files:
        raise ValueError(f"--data_files gives no files for the split {split!r} (it gives {sorted(files)}): add "
                         f'"{split}=PATTERN", or choose the split with --train_split / --eval_split')
    return {split: files[split]}


def _materialized(stream: datasets.IterableDataset) -> datasets.Dataset:
    def rows():
        yield from stream

    return datasets.Dataset.from_generator(rows, features=stream.features)


def load_splits(args, accelerator):
    """(train Dataset / IterableDataset or None, eval Dataset, description of the eval split for results.json)."""
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
    elif args.dataset == "hub":
        train_split = args.train_split or DEFAULT_SPLITS["hub"][0]
        eval_split = args.eval_split or DEFAULT_SPLITS["hub"][1]
        common = dict(
            name=args.dataset_config, data_dir=args.dataset_dir, revision=args.dataset_revision, token=args.hub_token,
            video_column=args.video_column, caption_column=args.caption_column, id_column=args.id_column,
        )
        files = split_data_files(args.data_files)
        with accelerator.main_process_first():  # the main process downloads and prepares; the others read the cache
            train = None
            if not args.eval_only:
                train = load_hub_dataset(args.dataset_name, split=train_split, streaming=args.streaming,
                                         data_files=_files_of(files, train_split), **common)
            if args.streaming and files is None:
                # Without per-split files, load_dataset would prepare (copy into its cache) every split, the
                # streamed training split included: the test split is read as a stream and only it is kept.
                evaluation = _materialized(load_hub_dataset(args.dataset_name, split=eval_split, streaming=True,
                                                            **common))
            else:
                evaluation = load_hub_dataset(args.dataset_name, split=eval_split,
                                              data_files=_files_of(files, eval_split), **common)
        source = {"dataset": "hub", "dataset_name": args.dataset_name, "config": args.dataset_config,
                  "split": eval_split}
    else:
        load = PUBLISHED_LOADERS[args.dataset]
        train_split = args.train_split or DEFAULT_SPLITS[args.dataset][0]
        eval_split = args.eval_split or DEFAULT_SPLITS[args.dataset][1]
        train = None if args.eval_only else load(args.annotations_dir, args.videos_dir, train_split, args.on_bad_row)
        evaluation = load(args.annotations_dir, args.videos_dir, eval_split, args.on_bad_row)
        source = {"dataset": args.dataset, "split": eval_split, "annotations_dir": args.annotations_dir}
    if args.max_eval_samples:
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))
    for name, split in (("training", train), ("evaluation", evaluation)):
        if isinstance(split, datasets.Dataset):
            check_video_ids(split, f"the {name} split")
    return train, evaluation, source


def missing_videos(dataset: datasets.Dataset) -> dict[str, str]:
    """Video key -> reason for the local files a split names that do not exist (checked once, before training)."""
    missing = {}
    table = dataset.select_columns(["video"]).with_format("arrow")
    for start in range(0, len(dataset), 10_000):
        column = table[start : start + 10_000].column("video").combine_chunks()
        for path, no_bytes in zip(column.field("path").to_pylist(), column.field("bytes").is_null().to_pylist()):
            if no_bytes and path and "://" not in path and not os.path.isfile(path):
                missing[path] = "FileNotFoundError: video file not found"
    return missing


def build_frame_cache(args, accelerator, processor, datasets_to_cache):
    videos = {}
    for dataset in datasets_to_cache:
        if dataset is not None:
            for video in dataset["video"]:
                videos.setdefault(video_key(video), video)
    cache_dir = Path(args.data_dir if args.dataset == "synthetic" else args.output_dir) / "frame_cache"
    with accelerator.main_process_first():
        return FrameCache.load_or_build(
            [videos[key] for key in sorted(videos)], processor, cache_dir, num_workers=os.cpu_count() or 1,
            build=accelerator.is_main_process,
        )


class BadVideos:
    """The videos a run could not use, with the reason, and the cap that ends the run when there are too many.

    `cap`: an absolute count (>= 1 or 0) or a fraction (< 1) of `total` videos (for a stream, of the rows read).
    Every process meets its own share of the videos: `check` sums the counts over processes (every process reaches
    the same decision, so none is left waiting in a collective)."""

    def __init__(self, split: str, cap: float, total: int | None):
        self.split, self.cap, self.total = split, cap, total
        self.videos: dict[str, str] = {}
        self.known_at_start = 0  # found before training, the same on every process
        self.rows_read = 0

    def add(self, bad_videos, known_at_start: bool = False):
        for name, reason in bad_videos:
            if name not in self.videos:
                self.videos[name] = reason
                self.known_at_start += known_at_start

    def limit(self, total: int) -> float:
        return self.cap if self.cap >= 1 or self.cap == 0 else self.cap * total

    def check(self, accelerator, collective: bool = True):
        """Raises when there are more bad videos than the cap allows. `collective`: every process calls it at the
        same point (training steps), and the counts met by each process are summed."""
        count, rows_read = len(self.videos) - self.known_at_start, self.rows_read
        if collective and accelerator.num_processes > 1:
            summed = accelerator.reduce(torch.tensor([count, rows_read], device=accelerator.device), "sum")
            count, rows_read = (int(value) for value in summed.tolist())
        count += self.known_at_start
        if self.total is None and rows_read < 100:  # a stream: a fraction of the first few rows means nothing yet
            return
        total = self.total or rows_read
        if count > self.limit(total):
            examples = "\n".join(f"  {name}: {reason}" for name, reason in list(self.videos.items())[:20])
            raise RuntimeError(
                f"{count} {self.split} videos could not be decoded, more than --max_bad_videos {self.cap:g} allows "
                f"(of {total} videos): the data looks broken wholesale. Some of them:\n{examples}\nFix or remove "
                "them, or raise --max_bad_videos."
            )

    def gathered(self, accelerator) -> dict[str, str]:
        """Every process's bad videos (a collective: call on every process)."""
        merged = {}
        for part in gather_object([self.videos]) if accelerator.num_processes > 1 else [self.videos]:
            merged.update(part)
        return dict(sorted(merged.items()))



def train_candidates(train: datasets.Dataset, train_bad: BadVideos) -> list[int]:
    """The training rows whose video is not known to be bad (missing, or failed when the frames were cached)."""
    if not train_bad.videos:
        return list(range(len(train)))
    return [index for index, video in enumerate(train["video"]) if video_name(video) not in train_bad.videos
            and video_key(video) not in train_bad.videos]
