"""Batches for training and evaluation: a resumable shuffle, the collator (decoding, skipping bad videos), streamed
batches, and what names a video value.

Videos are decoded by the processor inside the DataLoader workers, or read from a `FrameCache`
(`training/frame_cache.py`) when one is given. Which videos are bad is held by a `BadVideos`
(`training/bad_videos.py`) the collator is given.
"""

import collections
import concurrent.futures
import copy
import hashlib
import itertools
import os
import random
import tempfile
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from clip2video.training.bad_videos import BadVideos
from clip2video.training.loaders import as_video, unreadable_files_error

if TYPE_CHECKING:
    from clip2video.training.frame_cache import FrameCache


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the dataset drawn from `(seed, epoch)` only: the same order on every process and after a
    resume, whatever happened to the global random state."""

    def __init__(self, num_samples: int, seed: int, indices: list[int] | None = None):
        self.indices = list(range(num_samples)) if indices is None else list(indices)
        self.num_samples = len(self.indices)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter([self.indices[i] for i in torch.randperm(self.num_samples, generator=generator).tolist()])

    def __len__(self):
        return self.num_samples


class DistinctCaptionBatchSampler:
    """Batches of `batch_size` indices whose captions are all different, in an order drawn from `sampler`.

    InfoNCE takes every other caption of a batch as a negative. When two pairs of a batch share a caption (the
    synthetic set has 120 captions for thousands of clips: a random batch of 128 has ~50 such twins; MSVD repeats
    common sentences) each caption is pushed away from a video it describes exactly. Walking the shuffled order, each
    index goes to the oldest open batch without its caption; full batches are yielded. Exactly
    `len(sampler) // batch_size` batches per epoch: left-over indices fill the last batches, duplicates only then.
    `sampler` (an `EpochShuffleSampler`) is exposed so `set_epoch` reaches it through accelerate's wrappers.
    """

    drop_last = True

    def __init__(self, captions: list[str], batch_size: int, sampler: "EpochShuffleSampler"):
        self.captions, self.batch_size, self.sampler = captions, batch_size, sampler

    def __len__(self):
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        open_batches: list[tuple[list[int], set[str]]] = []  # oldest first
        for index in self.sampler:
            caption = self.captions[index]
            position = next((i for i, (_, seen) in enumerate(open_batches) if caption not in seen), None)
            if position is None:
                position = len(open_batches)
                open_batches.append(([], set()))
            batch, seen = open_batches[position]
            batch.append(index)
            seen.add(caption)
            if len(batch) == self.batch_size:
                del open_batches[position]
                yield batch
        leftovers = [index for batch, _ in open_batches for index in batch]
        for start in range(0, len(leftovers) - self.batch_size + 1, self.batch_size):
            yield leftovers[start : start + self.batch_size]


# Videos ----------------------------------------------------------------------------------------------------------


def video_key(video) -> str:
    """A stable name for a video value (a path, or a `{"path", "bytes"}` dict of `datasets.Video(decode=False)`):
    its path, or for embedded bytes a digest of them (webdataset and parquet rows may name no file)."""
    video = as_video(video)
    if video["bytes"]:
        return f"bytes:{hashlib.sha256(video['bytes']).hexdigest()[:32]}:{video['path'] or ''}"
    return video["path"]


def video_name(video) -> str:
    """How a video is named in logs and results.json: its path (or file name inside a shard)."""
    video = as_video(video)
    return video["path"] or video_key(video)


def row_video_name(row: dict) -> str:
    """How a row's video is named in reports: its file, or for embedded bytes the row's video id with the file name
    inside the shard (never the temporary file the bytes are decoded from)."""
    video = as_video(row["video"])
    if not video["bytes"] or not row.get("video_id"):
        return video_name(video)
    return f"video {row['video_id']!r}" + (f" ({video['path']})" if video["path"] else " (embedded bytes)")


class VideoDecodeError(ValueError):
    """A video (embedded bytes) that could not be decoded; the message names the video, not the temporary file."""


@contextmanager
def local_video_file(video):
    """A local path for a video value: the file itself, or a temporary copy of its embedded bytes (removed after)."""
    video = as_video(video)
    if not video["bytes"]:
        yield video["path"]
        return
    suffix = os.path.splitext(video["path"] or "")[1] or ".mp4"
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="clip2video_") as file:
        file.write(video["bytes"])
        file.flush()
        yield file.name


def decode_video(processor, video, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`(pixel_values_videos [1, T, 3, H, W], video_mask [1, T])` of one video value, frames padded to `num_frames`.
    Raises what the processor raises for a missing or undecodable file (the message names the video)."""
    with local_video_file(video) as path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video file not found: {path}")
        try:
            features = processor.video_processor(videos=[path], pad_to_max_frames=True, return_tensors="pt", **kwargs)
        except Exception as error:
            if path == as_video(video)["path"]:
                raise
            name = as_video(video)["path"] or "the embedded video"
            raise VideoDecodeError(failure_reason(error).replace(path, name)) from error
    return features["pixel_values_videos"], features["video_mask"]


def failure_reason(error: BaseException) -> str:
    """One line saying why a video was not used."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300] if isinstance(error, VideoDecodeError) else f"{type(error).__name__}: {text[:300]}"


class VideoTextCollator:
    """Rows of a loader's Dataset (`video`, `caption`) -> the model's inputs. Captions are tokenised once each and
    remembered (a split repeats them across epochs); frames come from the `FrameCache` when one is given, otherwise
    the processor decodes the files (or embedded bytes) here, inside the DataLoader worker.

    A video that cannot be decoded (missing, truncated, not a video) does not end the run. With `dataset` given (the
    training set; rows then carry their `index`), the pair is replaced by another pair of `dataset`, drawn from a
    sequence seeded by `(jitter_seed, epoch, index)` only among `candidates` (the indices not known to be bad), so
    the replacement is the same on every process and after a resume; the batch stays full. Without `dataset` (a
    streamed batch is refilled by its reader; evaluation drops the video) the row is marked invalid. Either way the
    batch reports `bad_videos`: `[(video name, reason), ...]`, and `valid`, a `[B]` bool tensor. The videos known to
    be bad (`bad_videos`, the split's `BadVideos`, and the frame cache's failures) are not decoded; one that fails is
    marked there, so that a later row of it is not decoded again (in this process: a worker marks its own copy).

    With `random_frame_jitter` (training from files, as the authors' loaders do) each inner sampled frame moves at
    random within its interval. The draw is seeded by `(jitter_seed, epoch, video, caption)` only, not by which
    worker decodes the pair or what it decoded before, so a resumed run sees the same frames as an uninterrupted one.
    Set `epoch` before each epoch's DataLoader iterator is created (workers take a copy of the collator then).
    """

    max_replacements = 32

    def __init__(
        self,
        processor,
        max_text_length: int,
        frame_cache: "FrameCache | None" = None,
        random_frame_jitter: bool = False,
        jitter_seed: int = 0,
        dataset=None,
        candidates: list[int] | None = None,
        bad_videos: BadVideos | None = None,
    ):
        if random_frame_jitter and frame_cache is not None:
            raise ValueError(
                "random_frame_jitter needs decoding from files; cached frames are sampled once, without it"
            )
        self.processor = processor
        self.max_text_length = max_text_length
        self.frame_cache = frame_cache
        self.random_frame_jitter = random_frame_jitter
        self.jitter_seed = jitter_seed
        self.dataset = dataset
        self.candidates = candidates if candidates is not None or dataset is None else list(range(len(dataset)))
        self.epoch = 0
        self.bad_videos = bad_videos if bad_videos is not None else BadVideos("decoded")
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        new = [caption for caption in dict.fromkeys(captions) if caption not in self._tokens]
        if new:
            encoded = self.processor(text=new, max_length=self.max_text_length, return_tensors="pt")
            for caption, ids, mask in zip(new, encoded["input_ids"], encoded["attention_mask"]):
                length = int(mask.sum())
                self._tokens[caption] = (ids[:length], mask[:length])
        width = max(self._tokens[caption][0].shape[0] for caption in captions)
        input_ids = torch.full((len(captions), width), self.processor.tokenizer.pad_token_id or 0, dtype=torch.long)
        attention_mask = torch.zeros(len(captions), width, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids, mask = self._tokens[caption]
            input_ids[row, : ids.shape[0]], attention_mask[row, : mask.shape[0]] = ids, mask
        return input_ids, attention_mask

    def video(self, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames of one row's video `([1, T, 3, H, W], [1, T])`; raises when it cannot be decoded."""
        key = video_key(row["video"])
        known = self._known_reason(key)
        if known:
            raise ValueError(known)
        if self.frame_cache is not None:
            return self.frame_cache([row["video"]])
        try:
            if not self.random_frame_jitter:
                return decode_video(self.processor, row["video"])
            seed_key = f"{self.jitter_seed}\0{self.epoch}\0{key}\0{row['caption']}".encode()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int.from_bytes(hashlib.sha256(seed_key).digest()[:8], "little"))
                return decode_video(self.processor, row["video"], random_frame_jitter=True)
        except Exception as error:  # noqa: BLE001 - one bad video must not end the run
            self.bad_videos.mark(key, failure_reason(error))
            raise

    def _known_reason(self, key: str) -> str | None:
        cached = self.frame_cache.bad.get(key) if self.frame_cache is not None else None
        return self.bad_videos.reason(key) or cached

    def _replacements(self, index: int):
        generator = random.Random(f"{self.jitter_seed}/{self.epoch}/{index}")
        for _ in range(self.max_replacements):
            candidate = self.candidates[generator.randrange(len(self.candidates))]
            yield candidate, self.dataset[candidate]

    def __call__(self, rows: list[dict]) -> dict:
        rows = list(rows)
        if self.frame_cache is not None and not any(self._known_reason(video_key(row["video"])) for row in rows):
            # Every frame is in the cache: one read for the batch.
            pixel_values_videos, video_mask = self.frame_cache([row["video"] for row in rows])
            input_ids, attention_mask = self.tokenize([row["caption"] for row in rows])
            return {
                "input_ids": input_ids, "attention_mask": attention_mask, "pixel_values_videos": pixel_values_videos,
                "video_mask": video_mask, "valid": torch.ones(len(rows), dtype=torch.bool), "bad_videos": [],
            }
        pixel_values, masks, valid, bad_videos = [], [], [], []
        for position, row in enumerate(rows):
            replacements, tried = None, []
            while True:
                try:
                    frames, mask = self.video(row)
                    valid.append(True)
                    break
                except Exception as error:  # noqa: BLE001 - one bad video must not end the run
                    reason = self._known_reason(video_key(row["video"])) or failure_reason(error)
                    bad_videos.append((row_video_name(row), reason))
                    if self.dataset is None or "index" not in row:
                        frames = mask = None
                        valid.append(False)
                        break
                    tried.append(f"row {row.get('replaced', row['index'])}")
                    replacements = replacements or self._replacements(row["index"])
                    try:
                        candidate, replacement = next(replacements)
                    except StopIteration:
                        named = "; ".join(f"{where}: {name}: {why}" for where, (name, why)
                                          in zip(tried[:5], bad_videos[-len(tried):][:5]))
                        raise RuntimeError(
                            f"{self.max_replacements} replacements in a row for a bad video of training row "
                            f"{row['index']} could not be decoded either: the training data looks broken wholesale "
                            f"(rows of the dataset, e.g. {named})"
                        ) from error
                    row = rows[position] = {**replacement, "index": row["index"], "replaced": candidate}
            pixel_values.append(frames)
            masks.append(mask)
        reference = next((frames for frames in pixel_values if frames is not None), None)
        if reference is None:  # no video of this batch decodes: zeros, all invalid
            reference_mask = torch.zeros(1, self.processor.video_processor.num_frames, dtype=torch.int64)
            size = self.processor.video_processor.crop_size
            height, width = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
            reference = torch.zeros(1, reference_mask.shape[1], 3, height, width)
        for position, frames in enumerate(pixel_values):
            if frames is None:  # a placeholder the caller drops (`valid`); one real frame keeps the model's checks
                pixel_values[position] = torch.zeros_like(reference)
                masks[position] = torch.zeros(reference.shape[:2], dtype=torch.int64)
                masks[position][:, 0] = 1
        input_ids, attention_mask = self.tokenize([row["caption"] for row in rows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values_videos": torch.cat(pixel_values),
            "video_mask": torch.cat(masks),
            "valid": torch.tensor(valid),
            "bad_videos": bad_videos,
        }


def usable_rows(dataset: datasets.Dataset, bad_videos: BadVideos) -> list[int]:
    """The rows of `dataset` whose video is not known to be bad before training (missing, or failed when the frames
    were cached): the only rows a training epoch draws."""
    if not bad_videos.known_before:
        return list(range(len(dataset)))
    return [index for index, video in enumerate(dataset["video"]) if video_key(video) not in bad_videos.known_before]


class IndexedRows(torch.utils.data.Dataset):
    """The rows of a `datasets.Dataset`, each with its `index` (which the collator's replacements are seeded by)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "index": index}


class StreamingBatches:
    """Full batches of decoded pairs read from a `datasets.IterableDataset`, resumable exactly.

    The stream (this process's shards) is read in blocks of `block_size` rows; each block is shuffled with a
    generator seeded by `(seed, epoch, block number)` and the shard order changes every epoch (`set_epoch`). The
    state of a batch is the dataset's own `state_dict()` at the start of its block, the block number and how many
    rows of the block were consumed: a resume reloads that state, reads the block again, shuffles it identically
    and skips the consumed rows, so it yields exactly the batches an uninterrupted run would. (datasets' own shuffle
    buffer loses its content on resume; a block is re-read instead, at most `block_size` rows.)

    A shard that cannot be read (cut short) stops the stream with an error naming it (`data_files`: the local
    shards). Videos are decoded by `collator` in `num_threads` threads, a bounded number of rows ahead. A row whose video
    cannot be decoded is skipped and the next row of the stream takes its place, so each batch is full; the bad
    videos of a batch are in its `bad_videos`. The epoch ends when fewer than `batch_size` rows are left.
    """

    def __init__(self, dataset, batch_size: int, collator, seed: int, block_size: int = 1000, num_threads: int = 1,
                 data_files: list[str] | None = None):
        self.dataset, self.batch_size, self.collator = dataset, batch_size, collator
        self.data_files = data_files or []  # the local shards, named when reading the stream fails
        self.seed, self.block_size, self.num_threads = seed, block_size, max(1, num_threads)
        self.state = {"epoch": 0, "block": 0, "block_state": None, "position": 0}

    def state_dict(self) -> dict:
        return copy.deepcopy(self.state)

    def load_state_dict(self, state: dict):
        self.state = copy.deepcopy(state)

    def _ordered_rows(self):
        """(row, state after it) in this epoch's order, from the saved state on."""
        epoch, block, block_state, skip = (self.state[key] for key in ("epoch", "block", "block_state", "position"))
        dataset = self.dataset.shuffle(seed=self.seed, buffer_size=1)  # shard order only; rows are shuffled by block
        dataset.set_epoch(epoch)
        if block_state is not None:
            with warnings.catch_warnings():  # "a shuffle buffer without its content": a 1-row buffer is empty
                warnings.simplefilter("ignore")
                logging_level = datasets.logging.get_verbosity()
                datasets.logging.set_verbosity_error()
                try:
                    dataset.load_state_dict(block_state)
                finally:
                    datasets.logging.set_verbosity(logging_level)
        rows = iter(dataset)
        while True:
            try:
                rows_in_block = list(itertools.islice(rows, self.block_size))
            except Exception as error:
                raise unreadable_files_error("the training stream", self.data_files, error) or error
            if not rows_in_block:
                return
            next_state = dataset.state_dict()
            order = np.random.default_rng([self.seed, epoch, block]).permutation(len(rows_in_block))
            for position in range(skip, len(rows_in_block)):
                state = {"epoch": epoch, "block": block, "block_state": block_state, "position": position + 1}
                yield rows_in_block[order[position]], state
            block, block_state, skip = block + 1, next_state, 0

    def _decode(self, row: dict):
        """The frames of a row, or why it cannot be decoded (run in a thread; the tokenizer is not)."""
        try:
            return self.collator.video(row)
        except Exception as error:  # noqa: BLE001 - one bad video must not end the run
            return failure_reason(error)

    def __iter__(self):
        """Yields `(batch, state)`; `state` is what `load_state_dict` takes to continue after this batch. At the end
        of the epoch the state moves to the start of the next one."""
        self.collator.epoch = self.state["epoch"]  # the training jitter's seed
        with concurrent.futures.ThreadPoolExecutor(self.num_threads) as executor:
            pending = collections.deque()
            rows = self._ordered_rows()
            lookahead = max(2 * self.batch_size, 2 * self.num_threads)
            batch_rows, frames, masks, bad_videos = [], [], [], []
            while True:
                while len(pending) < lookahead:
                    row, state = next(rows, (None, None))
                    if row is None:
                        break
                    pending.append((row, state, executor.submit(self._decode, row)))
                if not pending:
                    break
                row, state, future = pending.popleft()
                decoded = future.result()
                if isinstance(decoded, str):
                    bad_videos.append((row_video_name(row), decoded))
                    continue
                batch_rows.append(row)
                frames.append(decoded[0])
                masks.append(decoded[1])
                if len(batch_rows) == self.batch_size:
                    input_ids, attention_mask = self.collator.tokenize([row["caption"] for row in batch_rows])
                    batch = {
                        "input_ids": input_ids, "attention_mask": attention_mask,
                        "pixel_values_videos": torch.cat(frames), "video_mask": torch.cat(masks),
                        "bad_videos": bad_videos,
                    }
                    self.state = state
                    yield batch, self.state_dict()
                    batch_rows, frames, masks, bad_videos = [], [], [], []
            for _, _, future in pending:
                future.cancel()
        self.state = {"epoch": self.state["epoch"] + 1, "block": 0, "block_state": None, "position": 0}
