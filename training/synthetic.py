"""The embedded default data: synthetic clips of a coloured shape that moves, written as real mp4 files.

Each clip shows a square or a cross in one of ten colours that moves left, right, up or
down, grows or shrinks, on a dark background; its caption names all three, e.g. "a red cross moves left". Start
positions, sizes, speeds and backgrounds are random, so a clip's frames in any order (what mean pooling sees) look
the same for "moves left" and "moves right": retrieving the right clip needs the order of the frames.

The folder follows the own-videos format of `training.loaders.load_video_folder`:

    <data_dir>/train/metadata.csv, <data_dir>/train/videos/000000.mp4, ...
    <data_dir>/test/metadata.csv,  <data_dir>/test/videos/000000.mp4, ...
    <data_dir>/generation.json     the parameters; the data is regenerated only when they change

The test split has one clip per distinct caption (10 x 2 x 6 = 120), so text-to-video retrieval over it has 120
distinct queries and candidates.
"""

import csv
import json
import shutil
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (50, 80, 255),
    "yellow": (240, 230, 40),
    "white": (245, 245, 245),
    "purple": (170, 50, 220),
    "orange": (255, 140, 0),
    "cyan": (40, 220, 230),
    "pink": (255, 120, 200),
    "grey": (130, 130, 130),
}
# Two silhouettes that differ even at 32 px; colour and shape are the easy part, the motion the hard one.
SHAPES = ("square", "cross")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "grows", "shrinks")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class SyntheticConfig:
    num_train_clips: int = 4000
    frame_size: int = 32
    num_frames: int = 8
    # 2.5 fps is the paper's frame sampling rate, so the default video processor keeps every frame.
    frames_per_second: float = 2.5
    seed: int = 0


def all_captions() -> list[tuple[str, str, str, str]]:
    """(caption, colour, shape, motion) for every combination, in a fixed order."""
    return [
        (f"a {colour} {shape} {motion}", colour, shape, motion)
        for colour in COLOURS
        for shape in SHAPES
        for motion in MOTIONS
    ]


def _shape_mask(shape: str, centre_x: float, centre_y: float, radius: float, frame_size: int) -> np.ndarray:
    """Boolean [H, W] mask of the shape; coordinates are pixel centres."""
    ys, xs = np.mgrid[0:frame_size, 0:frame_size].astype(np.float32) + 0.5
    dx, dy = xs - centre_x, ys - centre_y
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "cross":
        arm = max(radius / 3, 1.0)
        return ((np.abs(dx) <= radius) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= radius) & (np.abs(dx) <= arm))
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(colour: str, shape: str, motion: str, rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """uint8 frames [T, H, W, 3] of one clip."""
    size, steps = config.frame_size, config.num_frames
    progress = np.linspace(0.0, 1.0, steps)
    if motion in ("grows", "shrinks"):
        small, large = rng.uniform(0.08, 0.13) * size, rng.uniform(0.3, 0.4) * size
        radii = small + (large - small) * progress
        if motion == "shrinks":
            radii = radii[::-1]
        margin = large
        centre_x = np.full(steps, rng.uniform(margin, size - margin))
        centre_y = np.full(steps, rng.uniform(margin, size - margin))
    else:
        radius = rng.uniform(0.17, 0.22) * size
        radii = np.full(steps, radius)
        travel = rng.uniform(0.4, 0.5) * size
        start = rng.uniform(radius, size - radius - travel)
        along = start + travel * progress
        if motion in ("moves left", "moves up"):
            along = along[::-1]
        across = np.full(steps, rng.uniform(radius, size - radius))
        centre_x, centre_y = (along, across) if motion in ("moves left", "moves right") else (across, along)
    background = rng.integers(0, 60, size=3)
    frames = np.empty((steps, size, size, 3), dtype=np.uint8)
    for step in range(steps):
        frames[step] = background
        frames[step][_shape_mask(shape, centre_x[step], centre_y[step], radii[step], size)] = COLOURS[colour]
    return frames


_converters = threading.local()


def _yuv_converter():
    """One RGB-to-YUV converter per thread, reused for every frame of every clip: letting the encoder convert sets up
    a new FFmpeg scaler per frame, which costs more than encoding a 32x32 frame."""
    from av.video.reformatter import VideoReformatter

    if not hasattr(_converters, "to_yuv"):
        _converters.to_yuv = VideoReformatter()
    return _converters.to_yuv


def write_mp4(path: Path, frames: np.ndarray, frames_per_second: float):
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 with PyAV."""
    import av

    to_yuv = _yuv_converter()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(frames_per_second).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"  # no chroma subsampling: 32 px clips keep their colours
        # x264's look-ahead runs in its own thread and its frame decisions depend on timing: under load the same
        # clip was encoded differently from run to run. Without it the files are the same bytes every time.
        stream.options = {"crf": "10", "preset": "veryfast", "x264-params": "rc-lookahead=0:mbtree=0:threads=1"}
        for frame in frames:
            yuv = to_yuv.reformat(av.VideoFrame.from_ndarray(frame, format="rgb24"), format="yuv444p")
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate_synthetic_dataset(data_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Writes the clips and metadata under `data_dir` unless the same configuration is already there."""
    data_dir = Path(data_dir)
    marker = data_dir / "generation.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(config):
        return data_dir
    if data_dir.exists():
        shutil.rmtree(data_dir)
    rng = np.random.default_rng(config.seed)
    captions = all_captions()
    plans = {
        "train": [captions[i] for i in rng.integers(0, len(captions), size=config.num_train_clips)],
        "test": captions,
    }
    for split, plan in plans.items():
        videos_dir = data_dir / split / "videos"
        videos_dir.mkdir(parents=True)
        rows = []
        for number, (caption, colour, shape, motion) in enumerate(plan):
            file_name = f"videos/{number:06d}.mp4"
            write_mp4(data_dir / split / file_name, render_clip(colour, shape, motion, rng, config), config.frames_per_second)
            rows.append({"file_name": file_name, "caption": caption, "colour": colour, "shape": shape, "motion": motion})
        with open(data_dir / split / "metadata.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    # Written last: an interrupted generation has no marker and is redone.
    marker.write_text(json.dumps(asdict(config), indent=2))
    return data_dir
