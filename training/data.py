"""Batches for training and evaluation: a resumable shuffle, a decoded-frame cache, and the collator.

Videos are decoded by the processor inside the DataLoader workers. For a small set that is read many times (the
embedded synthetic data: decoding runs at about 200 clips/s on one core, training consumes several times that) the
decoded, processed frames can be computed once and kept in a memory-mapped float16 file (`FrameCache`).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the dataset drawn from `(seed, epoch)` only: the same order on every process and after a
    resume, whatever happened to the global random state."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

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


def _decode_chunk(args):
    """Processed frames of a few videos per call: the video processor's per-call overhead is shared."""
    processor, paths = args
    features = processor.video_processor(videos=paths, return_tensors="pt")
    return list(zip(features["pixel_values_videos"].to(torch.float16).numpy(), features["video_mask"].numpy()))


class FrameCache:
    """The processed frames `[T, 3, H, W]` (float16) and frame masks `[T]` of a fixed list of videos.

    Stored in `<cache_dir>/<key>.frames.npy` and `.masks.npy`, the key hashing the video paths, their sizes and
    modification times and the video processor's configuration, so a change to any of them decodes again.
    """

    def __init__(self, video_paths: list[str], frames: np.ndarray, masks: np.ndarray):
        self.position = {path: index for index, path in enumerate(video_paths)}
        self.frames, self.masks = frames, masks

    @staticmethod
    def key(video_paths: list[str], video_processor) -> str:
        digest = hashlib.sha256(json.dumps(video_processor.to_dict(), sort_keys=True, default=str).encode())
        for path in video_paths:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:24]

    @classmethod
    def load_or_build(cls, video_paths: list[str], processor, cache_dir: str | Path, num_workers: int = 0, build: bool = True):
        """Decodes every video once (in `num_workers` processes) unless the cache for exactly these inputs exists.
        With `build=False` only loads (the other processes of a distributed run wait for the main one)."""
        cache_dir = Path(cache_dir)
        key = cls.key(video_paths, processor.video_processor)
        frames_path, masks_path = cache_dir / f"{key}.frames.npy", cache_dir / f"{key}.masks.npy"
        if not masks_path.is_file() and build:
            cache_dir.mkdir(parents=True, exist_ok=True)
            jobs = [(processor, video_paths[start : start + 32]) for start in range(0, len(video_paths), 32)]
            if num_workers > 0:
                import multiprocessing

                with multiprocessing.get_context("fork").Pool(num_workers) as pool:
                    decoded = [video for chunk in pool.imap(_decode_chunk, jobs) for video in chunk]
            else:
                decoded = [video for job in jobs for video in _decode_chunk(job)]
            max_frames = max(mask.shape[0] for _, mask in decoded)
            frames = np.lib.format.open_memmap(
                frames_path, mode="w+", dtype=np.float16, shape=(len(decoded), max_frames, *decoded[0][0].shape[1:])
            )
            masks = np.zeros((len(decoded), max_frames), dtype=np.int64)
            for index, (video_frames, video_mask) in enumerate(decoded):
                frames[index, : video_frames.shape[0]] = video_frames
                masks[index, : video_mask.shape[0]] = video_mask
            frames.flush()
            del frames
            np.save(masks_path, masks)  # written last: its presence marks a complete cache
        return cls(video_paths, np.load(frames_path, mmap_mode="r"), np.load(masks_path))

    def __call__(self, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(pixel_values_videos [B, T, 3, H, W] float32, video_mask [B, T] int64)` for these videos."""
        indices = [self.position[path] for path in paths]
        frames = torch.from_numpy(np.ascontiguousarray(self.frames[indices])).float()
        return frames, torch.from_numpy(self.masks[indices])


class VideoTextCollator:
    """Rows of a loader's Dataset (`video`, `caption`) -> the model's inputs. Captions are tokenised once each and
    remembered (a split repeats them across epochs); frames come from the `FrameCache` when one is given, otherwise
    the processor decodes the files here, inside the DataLoader worker.

    With `random_frame_jitter` (training from files, as the authors' loaders do) each inner sampled frame moves at
    random within its interval. The draw is seeded by `(jitter_seed, epoch, video, caption)` only, not by which
    worker decodes the pair or what it decoded before, so a resumed run sees the same frames as an uninterrupted one.
    Set `epoch` before each epoch's DataLoader iterator is created (workers take a copy of the collator then).
    """

    def __init__(
        self,
        processor,
        max_text_length: int,
        frame_cache: FrameCache | None = None,
        random_frame_jitter: bool = False,
        jitter_seed: int = 0,
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
        self.epoch = 0
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

    def videos(self, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frame_cache is not None:
            return self.frame_cache(paths)
        features = self.processor.video_processor(videos=paths, return_tensors="pt")
        return features["pixel_values_videos"], features["video_mask"]

    def jittered_videos(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `videos`, with each pair's frames drawn with its own seed (see the class docstring)."""
        pixel_values, masks = [], []
        for row in rows:
            key = f"{self.jitter_seed}\0{self.epoch}\0{row['video']}\0{row['caption']}".encode()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
                features = self.processor.video_processor(
                    videos=[row["video"]], random_frame_jitter=True, pad_to_max_frames=True, return_tensors="pt"
                )
            pixel_values.append(features["pixel_values_videos"])
            masks.append(features["video_mask"])
        return torch.cat(pixel_values), torch.cat(masks)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = self.tokenize([row["caption"] for row in rows])
        if self.random_frame_jitter:
            pixel_values_videos, video_mask = self.jittered_videos(rows)
        else:
            pixel_values_videos, video_mask = self.videos([row["video"] for row in rows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values_videos": pixel_values_videos,
            "video_mask": video_mask,
        }
