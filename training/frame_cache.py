"""The decoded-frame cache: every video of a small set that is read many times (the embedded synthetic data:
decoding runs at about 200 clips/s on one core, training consumes several times that) decoded once, its processed
frames kept in a memory-mapped float16 file."""

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from clip2video.training.data import decode_video, failure_reason, local_video_file, video_key
from clip2video.training.loaders import as_video


def _decode_chunk(args):
    """Processed frames of a few videos per call: the video processor's per-call overhead is shared. A chunk that
    fails is decoded video by video, so that only the bad videos are marked (frames None, the reason)."""
    processor, videos = args
    try:
        with ExitStack() as stack:
            paths = [stack.enter_context(local_video_file(video)) for video in videos]
            features = processor.video_processor(videos=paths, pad_to_max_frames=True, return_tensors="pt")
        return [
            (frames, mask, None)
            for frames, mask in zip(
                features["pixel_values_videos"].to(torch.float16).numpy(), features["video_mask"].numpy()
            )
        ]
    except Exception:  # noqa: BLE001 - find the bad ones below
        pass
    decoded = []
    for video in videos:
        try:
            frames, mask = decode_video(processor, video)
            decoded.append((frames[0].to(torch.float16).numpy(), mask[0].numpy(), None))
        except Exception as error:  # noqa: BLE001 - any failure of one video makes it a bad video, not a dead run
            decoded.append((None, None, failure_reason(error)))
    return decoded


class FrameCache:
    """The processed frames `[T, 3, H, W]` (float16) and frame masks `[T]` of a fixed list of videos, and the
    videos that could not be decoded (`bad`: video key -> reason).

    Stored in `<cache_dir>/<key>.frames.npy`, `.masks.npy` and `.bad.json`, the key hashing the videos (paths,
    sizes and modification times, or digests of embedded bytes) and the video processor's configuration, so a change
    to any of them decodes again.
    """

    def __init__(self, keys: list[str], frames: np.ndarray, masks: np.ndarray, bad: dict[str, str]):
        self.position = {key: index for index, key in enumerate(keys)}
        self.frames, self.masks, self.bad = frames, masks, bad

    @staticmethod
    def key(videos: list, video_processor) -> str:
        digest = hashlib.sha256(json.dumps(video_processor.to_dict(), sort_keys=True, default=str).encode())
        for video in videos:
            key = video_key(video)
            try:
                stat = os.stat(key)
                digest.update(f"{key}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:  # embedded bytes (the key is their digest) or a missing file
                digest.update(f"{key}\0missing\n".encode())
        return digest.hexdigest()[:24]

    @classmethod
    def load_or_build(cls, videos: list, processor, cache_dir: str | Path, num_workers: int = 0, build: bool = True):
        """Decodes every video once (in `num_workers` processes) unless the cache for exactly these inputs exists.
        With `build=False` only loads (the other processes of a distributed run wait for the main one)."""
        videos = [as_video(video) for video in videos]
        keys = [video_key(video) for video in videos]
        cache_dir = Path(cache_dir)
        key = cls.key(videos, processor.video_processor)
        frames_path, masks_path = cache_dir / f"{key}.frames.npy", cache_dir / f"{key}.masks.npy"
        bad_path = cache_dir / f"{key}.bad.json"
        if not masks_path.is_file() and build:
            cache_dir.mkdir(parents=True, exist_ok=True)
            jobs = [(processor, videos[start : start + 32]) for start in range(0, len(videos), 32)]
            if num_workers > 0:
                import multiprocessing

                # One torch thread per child, as DataLoader workers have: torch's OpenMP pool does not survive a
                # fork once the parent has used it, and a child entering it blocks for good.
                with multiprocessing.get_context("fork").Pool(
                    num_workers, initializer=torch.set_num_threads, initargs=(1,)
                ) as pool:
                    decoded = [video for chunk in pool.imap(_decode_chunk, jobs) for video in chunk]
            else:
                decoded = [video for job in jobs for video in _decode_chunk(job)]
            good = [(frames, mask) for frames, mask, _ in decoded if frames is not None]
            if not good:
                reasons = sorted({reason for _, _, reason in decoded})[:5]
                raise ValueError(f"none of the {len(videos)} videos could be decoded; for example: {reasons}")
            max_frames = max(mask.shape[0] for _, mask in good)
            frame_shape = good[0][0].shape[1:]
            frames = np.lib.format.open_memmap(
                frames_path, mode="w+", dtype=np.float16, shape=(len(decoded), max_frames, *frame_shape)
            )
            masks = np.zeros((len(decoded), max_frames), dtype=np.int64)
            for index, (video_frames, video_mask, _) in enumerate(decoded):
                if video_frames is not None:
                    frames[index, : video_frames.shape[0]] = video_frames
                    masks[index, : video_mask.shape[0]] = video_mask
            frames.flush()
            del frames
            bad = {keys[index]: reason for index, (_, _, reason) in enumerate(decoded) if reason is not None}
            bad_path.write_text(json.dumps(bad))
            np.save(masks_path, masks)  # written last: its presence marks a complete cache
        bad = json.loads(bad_path.read_text()) if bad_path.is_file() else {}
        return cls(keys, np.load(frames_path, mmap_mode="r"), np.load(masks_path), bad)

    def __call__(self, videos: list) -> tuple[torch.Tensor, torch.Tensor]:
        """`(pixel_values_videos [B, T, 3, H, W] float32, video_mask [B, T] int64)` for these videos."""
        indices = [self.position[video_key(video)] for video in videos]
        frames = torch.from_numpy(np.ascontiguousarray(self.frames[indices])).float()
        return frames, torch.from_numpy(self.masks[indices])


def build_frame_cache(args, accelerator, processor, datasets_to_cache) -> FrameCache:
    """The frame cache of every video of `datasets_to_cache` (None entries skipped), built by the main process
    (the others wait, then load it): under `--data_dir` for the synthetic data, else under `--output_dir`."""
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
