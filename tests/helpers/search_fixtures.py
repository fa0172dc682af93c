"""Building blocks of the video search tests (`tests/test_search*.py`, `test_demo_collection.py`): the indexing
command, the small folder of real videos they index, indexes written by the indexer's own commit over given
embeddings (no model), and a commit of an existing index with other options."""

import shutil
import subprocess
from pathlib import Path

import numpy as np

from clip2video.apps.search import VideoIndex
from clip2video.apps.search.index_build import IndexSpec, LoadedPart, VectorIndexOptions, commit
from tests.helpers.processes import run_module
from tests.helpers.videos import COLOURS, write_square_video


SYNTHETIC_MODEL = {"name": "synthetic", "hash": "0" * 32}


def run_indexer(*arguments, launch=None, env=None, check=True, prelude="") -> subprocess.CompletedProcess:
    """`python -m clip2video.apps.search.index_videos *arguments` (see `helpers.processes.run_module`)."""
    return run_module(
        "clip2video.apps.search.index_videos", *arguments, launch=launch, env=env, check=check, prelude=prelude
    )


def write_search_videos(folder: Path) -> None:
    """Five square videos of other colours, lengths and motions, two of them nested two levels deep, a 3-frame one,
    and a file with a video's name that is not one (`nested/broken.mp4`)."""
    (folder / "nested" / "deeper").mkdir(parents=True)
    write_square_video(folder / "red.mp4", COLOURS["red"], num_frames=30)
    write_square_video(folder / "green.mp4", COLOURS["green"], num_frames=20, moving=False)
    write_square_video(folder / "nested" / "blue.mp4", COLOURS["blue"], num_frames=25)
    write_square_video(folder / "nested" / "deeper" / "yellow.mp4", COLOURS["yellow"], num_frames=40)
    write_square_video(folder / "nested" / "short.mp4", (200, 200, 200), num_frames=3)
    (folder / "nested" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")


def part_of_empty_files(root: Path, names: list[str], embeddings: np.ndarray, frames_per_video: int = 2) -> LoadedPart:
    """A part holding `embeddings` for empty files `names` created in `root` (their real sizes and mtimes), each
    with `frames_per_video` frames (unit vectors of width 8) at 0, 1, ... seconds."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).touch()
    stats = [(root / name).stat() for name in names]
    count = len(names)
    return LoadedPart(
        name="in-memory", paths=list(names), sizes=np.array([s.st_size for s in stats]),
        mtimes_ns=np.array([s.st_mtime_ns for s in stats]), embeddings=embeddings,
        frame_offsets=np.arange(0, frames_per_video * count + 1, frames_per_video),
        frames=np.tile(np.eye(8, dtype=np.float32)[:frames_per_video], (count, 1)),
        frame_times=np.tile(np.arange(frames_per_video, dtype=np.float64), count),
    )


def synthetic_spec(root: Path, embedding_dim: int) -> IndexSpec:
    return IndexSpec(SYNTHETIC_MODEL, 100.0, embedding_dim, 8, root)


def synthetic_index(folder: Path, vectors: np.ndarray, **options) -> VideoIndex:
    """An index over given embeddings (one empty file `v000000.mp4`, ... and two frames per video under
    `folder/videos`), written by the indexer's commit with `VectorIndexOptions(**options)`."""
    root = folder / "videos"
    part = part_of_empty_files(root, [f"v{i:06d}.mp4" for i in range(len(vectors))], vectors)
    index_dir = folder / "index"
    index_dir.mkdir(parents=True)
    commit(index_dir, synthetic_spec(root, vectors.shape[1]), None, [part], VectorIndexOptions(**options))
    return VideoIndex(index_dir)


def recommit(index_dir: Path, **options) -> dict:
    """A new generation of the index in `index_dir` with the same videos, written by the indexer's commit with
    `VectorIndexOptions(**options)`: the metadata."""
    current = VideoIndex(index_dir, load_vectors=False)
    return commit(index_dir, IndexSpec.of(current), current, [], VectorIndexOptions(**options))


def rebuilt(index_dir: Path, destination: Path, **options) -> VideoIndex:
    """A copy of the index with another vector index / storage (`recommit`)."""
    shutil.copytree(index_dir, destination)
    recommit(destination, **options)
    return VideoIndex(destination)
