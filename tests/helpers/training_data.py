"""Small real video datasets in the formats users train from, for the training tests: a `videofolder`, parquet with
embedded video bytes, webdataset tar shards; and broken videos of the kinds met in the wild."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from clip2video.training.synthetic import COLOURS, MOTIONS, SyntheticConfig, render_clip, write_mp4

from tests.helpers.videos import mp4_bytes

CONFIG = SyntheticConfig(num_train_clips=0, frame_size=32, num_frames=4)


def clip_plans(count: int, seed: int):
    """(caption, frames) pairs: coloured squares that move, as the synthetic data, 32x32, 4 frames."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    plans = []
    for index in range(count):
        colour, motion = colours[index % len(colours)], MOTIONS[(index // len(colours)) % len(MOTIONS)]
        plans.append((f"a {colour} square {motion}", render_clip(colour, "square", motion, rng, CONFIG)))
    return plans


def write_videofolder(folder: Path, count: int, seed: int) -> Path:
    """`folder/metadata.csv` + `folder/videos/*.mp4`, the layout of datasets' videofolder."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rows = ["file_name,caption"]
    for index, (caption, frames) in enumerate(clip_plans(count, seed)):
        write_mp4(folder / "videos" / f"{index:04d}.mp4", frames, CONFIG.frames_per_second)
        rows.append(f"videos/{index:04d}.mp4,{caption}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_parquet(path: Path, count: int, seed: int) -> Path:
    """A parquet file written with pyarrow alone (as any other tool would): a `video` struct column of
    `{"bytes", "path"}` with the mp4 files embedded, and `caption`; no datasets metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    videos, captions = [], []
    for index, (caption, frames) in enumerate(clip_plans(count, seed)):
        videos.append({"bytes": mp4_bytes(frames, CONFIG.frames_per_second), "path": f"clip{index:04d}.mp4"})
        captions.append(caption)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"video": videos, "caption": captions}), path)
    return path


def write_shards(folder: Path, prefix: str, count: int, seed: int, num_shards: int) -> list[Path]:
    """WebVid-style webdataset shards: `<key>.mp4` and `<key>.json` (`{"caption": ...}`) per sample."""
    folder.mkdir(parents=True, exist_ok=True)
    plans = clip_plans(count, seed)
    shards = []
    for shard in range(num_shards):
        path = folder / f"{prefix}-{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(shard, count, num_shards):
                caption, frames = plans[index]
                key = f"{prefix}{index:06d}"
                data = mp4_bytes(frames, CONFIG.frames_per_second)
                for name, payload in ((f"{key}.mp4", data), (f"{key}.json", json.dumps({"caption": caption}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        shards.append(path)
    return shards


def break_videos(paths: list[Path]) -> dict[str, str]:
    """Three kinds of broken video: random bytes, a truncated mp4, an empty file. Returns path -> kind."""
    kinds = {}
    for path, kind in zip(paths, ("garbage", "truncated", "empty")):
        if kind == "garbage":
            path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
        elif kind == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
        else:
            path.write_bytes(b"")
        kinds[str(path.resolve())] = kind
    return kinds
