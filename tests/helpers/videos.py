"""Every video file the tests write, with PyAV: one writer (`write_video`) for frames of any content, codec, size,
rate, rotation and timing, and the frame contents the tests decode back (frames that show their own index, coloured
squares, smooth natural-looking images)."""

import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

WIDTH, HEIGHT = 64, 48
COLOURS = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230), "yellow": (240, 220, 20)}


# ----------------------------------------------------------------------------------------------------------------------
# Frame contents.


def index_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """An RGB frame showing `index` (< 2^16) in binary: 8 white or black vertical stripes per half of the picture,
    bits 0-7 in the top half, 8-15 in the bottom half, so that a decoded frame tells which source frame it is."""
    frame = np.zeros((height, width, 3), np.uint8)
    stripe = width // 8
    for bit in range(16):
        if (index >> bit) & 1:
            rows = slice(0, height // 2) if bit < 8 else slice(height // 2, height)
            frame[rows, stripe * (bit % 8) : stripe * (bit % 8 + 1)] = 255
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The index an `index_frame` shows, read from a decoded (lossy) copy of it: the mean of each stripe's inside."""
    grey = frame.astype(np.float32).mean(axis=-1)
    height, width = grey.shape
    stripe = width // 8
    index = 0
    for bit in range(16):
        rows = slice(2, height // 2 - 2) if bit < 8 else slice(height // 2 + 2, height - 2)
        if grey[rows, stripe * (bit % 8) + 2 : stripe * (bit % 8 + 1) - 2].mean() > 128:
            index |= 1 << bit
    return index


def natural_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (like camera footage, unlike white noise, which no two resamplers agree on), uint8
    (num_frames, height, width, 3)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_frames, 3, height // 8 + 2, width // 8 + 2, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (smooth.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def square_frames(colour, num_frames: int, size: int, moving: bool = True) -> list[np.ndarray]:
    """A `colour` square on grey, sliding right over the frames when `moving`."""
    frames = []
    for index in range(num_frames):
        frame = np.full((size, size, 3), 128, np.uint8)
        left = (index * (size // 2)) // max(num_frames - 1, 1) if moving else size // 4
        frame[size // 4 : 3 * size // 4, left : left + size // 2] = colour
        frames.append(frame)
    return frames


# ----------------------------------------------------------------------------------------------------------------------
# Writers.


def encode_and_mux(container, stream, frames) -> None:
    """Encodes each `av.VideoFrame` of `frames` into `stream`, muxes the packets into `container`, then flushes."""
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_video(
    path,
    num_frames: int,
    fps,
    codec: str = "libx264",
    width: int = WIDTH,
    height: int = HEIGHT,
    frames: Sequence[np.ndarray] | None = None,
    rotation: int | None = None,
    frame_times: Sequence[float] | None = None,
    time_base: Fraction = Fraction(1, 1000),
    pix_fmt: str = "yuv420p",
    container_options: dict[str, str] | None = None,
    **codec_options: str,
) -> str:
    """Encodes `num_frames` frames at `fps` with PyAV and returns the path as a string.

    The frames are `index_frame(i)` unless `frames` gives them (RGB (height, width, 3) uint8, or (height, width) for
    `pix_fmt="gray"`). `rotation` sets the display rotation (degrees, counter-clockwise); `frame_times` gives each
    frame's time in seconds, rounded to the encoder's `time_base` (a variable-rate clip), else frame i is at i / fps.
    `container_options` go to the muxer (e.g. `{"movflags": "faststart"}`), `codec_options` to the encoder
    (e.g. `g="25"`, `bf="0"`, `qscale="2"`)."""
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=fps, options=codec_options or None)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if frame_times is not None:
            stream.codec_context.time_base = time_base

        def video_frames():
            for index in range(num_frames):
                image = frames[index] if frames is not None else index_frame(index, width, height)
                frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "rgb24")
                if frame_times is not None:
                    frame.pts, frame.time_base = round(frame_times[index] / time_base), time_base
                yield frame

        encode_and_mux(container, stream, video_frames())
    return str(path)


def write_square_video(path, colour=(255, 0, 0), num_frames: int = 20, fps: int = 10, size: int = 48, moving=True):
    """An mp4 (H.264) of a `colour` square on grey (`square_frames`), `size` x `size` pixels."""
    frames = square_frames(colour, num_frames, size, moving)
    return write_video(path, num_frames, fps, width=size, height=size, frames=frames)


def write_square_videos(folder: Path, **kwargs) -> dict[str, str]:
    """One square video per colour of `COLOURS`, named after it (`folder/red.mp4`, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_square_video(folder / f"{name}.mp4", colour, **kwargs) for name, colour in COLOURS.items()}


def write_video_after_audio(path, num_frames: int, fps: int, video_start_frames: int) -> str:
    """An mp4 whose `index_frame` video stream starts `video_start_frames / fps` seconds after its (silent AAC)
    audio stream, which starts at 0."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(index), format="rgb24")
            frame.pts, frame.time_base = index + video_start_frames, Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for index in range(25):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 16000, index * 1024
            for packet in audio.encode(samples):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return str(path)


def write_audio_only(path, num_frames: int = 10) -> str:
    """A file with one silent AAC stream and no video stream (e.g. `speech.m4a`)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(num_frames):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def mp4_bytes(frames: np.ndarray, fps: float) -> bytes:
    """The bytes of an mp4 of uint8 (T, H, W, 3) `frames`, written by the synthetic data's own writer
    (`training.synthetic.write_mp4`), as video bytes embedded in parquet files and webdataset shards."""
    from clip2video.training.synthetic import write_mp4

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        write_mp4(path, frames, fps)
        return path.read_bytes()
