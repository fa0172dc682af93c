"""The run's training and test splits: which loader reads them (the synthetic data, a video folder, a published
dataset's annotations, or `datasets.load_dataset`), and which files each split reads."""

from pathlib import Path

import datasets

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
