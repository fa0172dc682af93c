"""Decoding only the frames CLIP2Video samples from a video file.

Every backend works in two steps: read the timestamp of every frame without decoding it (the container index or its
packets), let the caller choose frames from those timestamps (`frame_sampling_clip2video.select_source_frames`), then
decode just the chosen frames. PyAV (which bundles FFmpeg) is the default; torchcodec and decord are used when asked
for and installed. All backend imports are inside `try` blocks so that the remote code loads without them.
"""

import bisect
import io
import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


VIDEO_BACKENDS = ("pyav", "torchcodec", "decord")


@dataclass
class FrameTable:
    """Timing of every frame of a video stream, in presentation order.

    Attributes:
        times (`list[float]`): presentation time of each frame in seconds, relative to the start of the file.
        durations (`list[float | None]`): duration of each frame in seconds as stored by the container, if known.
        average_fps (`float`): the stream's average frame rate.
    """

    times: list[float]
    durations: list[float | None]
    average_fps: float


@dataclass
class DecodedFrames:
    """Frames decoded from a video file.

    Attributes:
        frames (`list[np.ndarray]`): RGB uint8 frames of shape `(height, width, 3)`, turned upright where the file
            carries a display rotation.
        timestamps (`list[float]`): presentation time of each frame in seconds from the start of the file.
    """

    frames: list[np.ndarray]
    timestamps: list[float]


FrameSelector = Callable[[FrameTable], list[int]]


def is_url(video: str) -> bool:
    return video.startswith(("http://", "https://"))


def read_video_frames(video: str | os.PathLike, select_frames: FrameSelector, backend: str = "pyav") -> DecodedFrames:
    """Decode the frames `select_frames` picks from the timing of a video file or URL.

    Args:
        video (`str` or `os.PathLike`): local path, or `http(s)://` URL (downloaded to memory first).
        select_frames (`Callable[[FrameTable], list[int]]`): returns increasing indices into the frame table.
        backend (`str`, *optional*, defaults to `"pyav"`): one of `"pyav"`, `"torchcodec"`, `"decord"`.

    Raises:
        `FileNotFoundError`: the path does not exist.
        `ValueError`: the file is not a video, is truncated or corrupt, or none of its frames can be decoded; the
            message names the file and the reason.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}; choose one of {', '.join(VIDEO_BACKENDS)}.")
    name = os.fspath(video)
    if is_url(name):
        with urllib.request.urlopen(name) as response:
            source = io.BytesIO(response.read())
    else:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"Video file not found: {name}")
        if os.path.getsize(name) == 0:
            raise ValueError(f"Cannot read video {name}: the file is empty.")
        source = name
    reader = {"pyav": _read_with_pyav, "torchcodec": _read_with_torchcodec, "decord": _read_with_decord}[backend]
    decoded = reader(source, name, select_frames)
    if not decoded.frames:
        raise ValueError(f"Cannot read video {name}: no decodable frame.")
    return decoded


def _unreadable(name: str, error: Exception | None = None) -> ValueError:
    reason = f" ({error})" if error is not None else ""
    return ValueError(f"Cannot read video {name}: not a video file, or a truncated or corrupt one{reason}.")


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """Rotate a `(height, width, channels)` frame by its display rotation (degrees counter-clockwise, as FFmpeg and
    PyAV report it), the way `ffmpeg` auto-rotates before writing images."""
    quarter_turns = int(round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(frame, k=quarter_turns)) if quarter_turns else frame


def _import_pyav():
    # Imports inside `try` are optional for transformers' remote-code import check.
    try:
        import av
    except ImportError as error:
        raise ImportError("Decoding video files with backend='pyav' needs PyAV: `pip install av`.") from error
    return av


def _read_with_pyav(source, name: str, select_frames: FrameSelector) -> DecodedFrames:
    av = _import_pyav()
    try:
        container = av.open(source)
    except av.FFmpegError as error:
        raise _unreadable(name, error) from error
    with container:
        if not container.streams.video:
            raise ValueError(f"Cannot read video {name}: it has no video stream.")
        stream = container.streams.video[0]
        # Frame and slice threads: decoding is most of the time spent here.
        stream.thread_type = "AUTO"
        time_base = stream.time_base
        start = _pyav_start_pts(container, stream)

        packets = _pyav_packet_index(container, stream, name)
        if not packets:
            raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
        if stream.frames and len(packets) < stream.frames:
            raise ValueError(
                f"Cannot read video {name}: truncated or corrupt, its index lists {stream.frames} frames but only "
                f"{len(packets)} could be read."
            )
        if any(pts is None for pts, _, _ in packets):
            # Raw elementary streams (e.g. `.h264`) carry no timestamps: like ffmpeg, number the frames at the
            # stream's rate. Such streams cannot seek either, so they are decoded in one pass.
            fps = float(stream.guessed_rate or stream.average_rate or 25)
            times = [index / fps for index in range(len(packets))]
            chosen = select_frames(FrameTable(times=times, durations=[None] * len(times), average_fps=fps))
            frames = _pyav_decode_in_order(source, chosen, name)
            return DecodedFrames(frames=frames, timestamps=[times[i] for i in chosen])
        packets.sort()
        frame_pts = [pts for pts, _, _ in packets]
        keyframe_pts = sorted(pts for pts, _, is_keyframe in packets if is_keyframe) or frame_pts[:1]
        average_fps = float(stream.average_rate or stream.guessed_rate or 0) or _fps_from_pts(frame_pts, time_base)
        table = FrameTable(
            times=[float((pts - start) * time_base) for pts in frame_pts],
            durations=[float(duration * time_base) if duration else None for _, duration, _ in packets],
            average_fps=average_fps,
        )
        chosen = select_frames(table)
        frames = _pyav_decode_at(container, stream, [frame_pts[i] for i in chosen], keyframe_pts, name)
        return DecodedFrames(frames=frames, timestamps=[table.times[i] for i in chosen])


_converters = threading.local()


def _pyav_rgb(frame) -> np.ndarray:
    """The frame as upright RGB uint8 `(height, width, 3)`.

    `frame.to_ndarray(format="rgb24")` sets up a new FFmpeg scaler for every frame, which costs milliseconds (35 times
    the conversion of a 32x32 frame). One reformatter per thread keeps its scaler while the frame size and format stay
    the same; the pixels are identical."""
    if not hasattr(_converters, "reformatter"):
        _converters.reformatter = _import_pyav().video.reformatter.VideoReformatter()
    rgb = _converters.reformatter.reformat(frame, format="rgb24").to_ndarray()
    return upright(rgb, getattr(frame, "rotation", 0) or 0)


def _pyav_start_pts(container, stream) -> int:
    # ffmpeg measures time from the start of the file (the earliest stream), in microseconds.
    if container.start_time is not None:
        return int(round(container.start_time / 1_000_000 / stream.time_base))
    return stream.start_time or 0


def _pyav_packet_index(container, stream, name: str) -> list[tuple[int | None, int, bool]]:
    """(pts, duration, is_keyframe) of every video packet, read without decoding."""
    av = _import_pyav()

    index = []
    try:
        for packet in container.demux(stream):
            if packet.size:
                index.append((packet.pts, packet.duration, packet.is_keyframe))
    except av.FFmpegError as error:
        message = f"Cannot read video {name}: truncated or corrupt after {len(index)} frames ({error})."
        raise ValueError(message) from error
    return index


def _pyav_decode_in_order(source, chosen: list[int], name: str) -> list[np.ndarray]:
    """Decode a video without timestamps from its start, converting the frames at the chosen positions."""
    av = _import_pyav()
    if isinstance(source, io.BytesIO):
        source.seek(0)
    wanted = set(chosen)
    frames = []
    try:
        with av.open(source) as container:
            for position, frame in enumerate(container.decode(video=0)):
                if position in wanted:
                    frames.append(_pyav_rgb(frame))
                if len(frames) == len(wanted):
                    break
    except av.FFmpegError as error:
        raise ValueError(f"Cannot decode video {name}: corrupt data ({error}).") from error
    if len(frames) < len(wanted):
        raise ValueError(f"Cannot decode video {name}: only {len(frames)} of the frames listed could be decoded.")
    return frames


def _fps_from_pts(frame_pts: list[int], time_base) -> float:
    if len(frame_pts) < 2:
        return 1.0
    return float((len(frame_pts) - 1) / ((frame_pts[-1] - frame_pts[0]) * time_base))


def _pyav_decode_at(container, stream, wanted_pts: list[int], keyframe_pts: list[int], name: str) -> list[np.ndarray]:
    """Decode the frames with the given (increasing) pts, and as few others as possible.

    Before each wanted frame we jump to the last keyframe before it when that keyframe lies beyond the last decoded
    frame (everything in between would be decoded for nothing), otherwise we keep decoding forward. On the way, frames
    no other frame refers to (most B-frames) are skipped by the decoder unless wanted, and the frames that are decoded
    only as references are never converted to RGB.
    """
    av = _import_pyav()
    wanted = set(wanted_pts)
    codec = stream.codec_context

    def frames_from(keyframe):
        container.seek(keyframe, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            # Set per packet: the decoder reads it when the packet is submitted, also with frame threads.
            codec.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            yield from packet.decode()

    frames = []
    decoded = None
    last_pts = None
    for target in wanted_pts:
        keyframe = keyframe_pts[max(bisect.bisect_right(keyframe_pts, target) - 1, 0)]
        if decoded is None or last_pts is None or keyframe > last_pts:
            decoded = frames_from(keyframe)
        frame = None
        try:
            for frame in decoded:
                last_pts = frame.pts
                if frame.pts is not None and frame.pts >= target:
                    break
            else:
                frame = None
        except av.FFmpegError as error:
            raise ValueError(f"Cannot decode video {name}: corrupt data ({error}).") from error
        if frame is None or frame.pts != target:
            seconds = float((target - (stream.start_time or 0)) * stream.time_base)
            raise ValueError(
                f"Cannot decode video {name}: the frame at {seconds:.3f} s listed in the container is missing; "
                "the file is truncated or corrupt."
            )
        frames.append(_pyav_rgb(frame))
    return frames


def _read_with_torchcodec(source, name: str, select_frames: FrameSelector) -> DecodedFrames:
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as error:
        message = "backend='torchcodec' needs torchcodec and a system FFmpeg: `pip install torchcodec`."
        raise ImportError(message) from error

    try:
        decoder = VideoDecoder(source.getvalue() if isinstance(source, io.BytesIO) else source, seek_mode="exact")
    except (RuntimeError, ValueError) as error:  # torchcodec raises both
        raise _unreadable(name, error) from error
    metadata = decoder.metadata
    num_frames = metadata.num_frames or 0
    if num_frames == 0:
        raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
    average_fps = float(metadata.average_fps)
    # torchcodec exposes no per-frame timestamps without decoding: frames are taken as evenly spaced (exact for
    # constant frame rate videos).
    begin = float(metadata.begin_stream_seconds or 0.0)
    table = FrameTable(
        times=[begin + index / average_fps for index in range(num_frames)],
        durations=[1 / average_fps] * num_frames,
        average_fps=average_fps,
    )
    chosen = select_frames(table)
    try:
        batch = decoder.get_frames_at(indices=chosen)
    except (RuntimeError, IndexError) as error:
        raise ValueError(f"Cannot decode video {name}: truncated or corrupt ({error}).") from error
    frames = [frame.permute(1, 2, 0).numpy() for frame in batch.data]
    return DecodedFrames(frames=frames, timestamps=[float(t) for t in batch.pts_seconds])


def _read_with_decord(source, name: str, select_frames: FrameSelector) -> DecodedFrames:
    try:
        import decord
    except ImportError as error:
        raise ImportError("backend='decord' needs decord: `pip install decord`.") from error

    try:
        reader = decord.VideoReader(source, ctx=decord.cpu(0))
        num_frames = len(reader)
        start_end = reader.get_frame_timestamp(np.arange(num_frames)) if num_frames else np.zeros((0, 2))
    except RuntimeError as error:  # decord.DECORDError and decord's own RuntimeErrors
        raise _unreadable(name, error) from error
    if num_frames == 0:
        raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
    # decord opens some non-video files as one frame at an absurd time instead of failing.
    if not np.all(np.isfinite(start_end)) or start_end.max() > 1e7:
        raise _unreadable(name)
    table = FrameTable(
        times=[float(start) for start, _ in start_end],
        durations=[float(end - start) for start, end in start_end],
        average_fps=float(reader.get_avg_fps()),
    )
    chosen = select_frames(table)
    try:
        frames = list(reader.get_batch(chosen).asnumpy())
    except RuntimeError as error:
        raise ValueError(f"Cannot decode video {name}: truncated or corrupt ({error}).") from error
    return DecodedFrames(frames=frames, timestamps=[table.times[i] for i in chosen])
