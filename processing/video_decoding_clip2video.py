"""Decoding only the frames CLIP2Video samples from a video file.

Every backend works in two steps: read the timestamp of every frame without decoding it (the container index or its
packets), let the caller choose frames from those timestamps (`frame_sampling_clip2video.select_source_frames`), then
decode just the chosen frames. PyAV (which bundles FFmpeg) is the default; torchcodec and decord are used when asked
for and installed. All backend imports are inside `try` blocks so that the remote code loads without them.
"""

import bisect
import dataclasses
import io
import math
import os
import re
import stat
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, NamedTuple

import numpy as np
from transformers.utils import logging

from .url_fetching_clip2video import MAX_BYTES, MAX_TIMEOUT_SECONDS, fetch_url


logger = logging.get_logger(__name__)


VIDEO_BACKENDS = ("pyav", "torchcodec", "decord")

# Environment variable of every `DecodeLimits` field: `CLIP2VIDEO_` + the field name in capitals.
ENV_PREFIX = "CLIP2VIDEO_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# ASCII only: `str.isdigit()` and `int()` also take "²" or Arabic-Indic digits, `float()` "nan", "inf" and "1_0".
_INTEGER_TEXT = re.compile(r"\+?[0-9]+")
_NUMBER_TEXT = re.compile(r"\+?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# FFmpeg refuses frames whose padded size (w + 128) * (h + 128) reaches INT_MAX / 8 (`av_image_check_size`), and its
# `max_pixels` option is an int: a larger limit could never be used and would overflow the option.
MAX_FFMPEG_FRAME_PIXELS = (2**31 - 1) // 8


def parse_setting(variable: str, text: str | None, kind: type, default, minimum=None, maximum=None):
    """The value of one setting given as text (an environment variable), or `default` when it is unset or blank.

    The one parser of every `CLIP2VIDEO_*` variable: the processor's `DecodeLimits` and the endpoint's settings use it.
    `kind` is `bool` (1/0, true/false, yes/no, on/off, in any case), `int` (ASCII digits) or `float` (a finite
    decimal number); numbers must lie in `[minimum, maximum]`.

    Raises:
        `ValueError`: naming the variable, its text and what it must be.
    """
    if text is None or not text.strip():
        return default
    text = text.strip()
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"Environment variable {variable}={text!r} must be a boolean (1/0, true/false, yes/no).")
        return text.lower() in _TRUE
    pattern, what = (_INTEGER_TEXT, "an integer") if kind is int else (_NUMBER_TEXT, "a finite number")
    value = kind(text) if pattern.fullmatch(text) else None
    if value is None or not math.isfinite(value) or (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        if kind is int and minimum == 1:
            what, minimum = "a positive integer", None
        low = "" if minimum is None else f" at least {_number(minimum)}"
        high = "" if maximum is None else f"{' and' if low else ''} at most {_number(maximum)}"
        raise ValueError(f"Environment variable {variable}={text!r} must be {what}{low}{high}.")
    return value


def _number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class DecodeLimits:
    """Resources one video may take, checked before the work they bound starts.

    The defaults fit short clips (what CLIP2Video is trained and evaluated on) with room for full-length 4K videos of
    up to an hour. Raise a limit per call (`DecodeLimits.from_env(max_input_bytes=2**31)`, or the processor argument of
    the same name) or for a whole process with the environment variable `CLIP2VIDEO_<FIELD NAME IN CAPITALS>`, e.g.
    `CLIP2VIDEO_MAX_INPUT_BYTES=2147483648`. Every value is range-checked (the ceilings are the `maximum` of each
    field's metadata: what the decoder, sockets and timers can honour); one out of range is refused, naming it.

    Attributes:
        max_input_bytes (`int`, defaults to 256 MiB, at most 1 TiB): size of a file, URL body, bytes or file-like
            object.
        max_frame_pixels (`int`, defaults to 4096 * 4096, at most FFmpeg's 268,435,455): width * height of a frame,
            read from the stream header before anything is decoded (and enforced by the decoder for frames that
            change size mid-stream).
        max_duration_seconds (`float`, defaults to 4 hours): the longest video, and the largest span of timestamps
            (a file whose two frames are 10^9 s apart is refused here).
        max_source_frames (`int`, defaults to 1,000,000, at most 2^31 - 1): the most frames a video may have; their
            timestamps are what frame sampling maps to the authors' 5 fps grid (about 4.6 hours at 60 fps).
        url_timeout_seconds (`float`, defaults to 10, between 1 ms and a week): connect timeout and longest wait for
            any byte of a URL.
        allow_private_urls (`bool`, defaults to `False`): let URLs reach loopback, private, link-local, multicast and
            other non-public addresses. Only for trusted, local use: a server that fetches URLs its clients send must
            keep this off, or a client can make it request internal services.
        max_download_seconds (`float`, defaults to 120, between 1 ms and a week): the whole download of a URL,
            redirects included (a server that sends one byte every few seconds never trips `url_timeout_seconds`).
        max_decoded_pixels (`int`, defaults to 5 * 10^10, at most 2^62): width * height summed over every frame the
            decoder outputs for one video, the reference frames decoded on the way to a sampled frame included (PyAV
            backend). Sampling 12 frames of a 1080p video with a keyframe every 10 s decodes about 7 * 10^9; a file
            with one keyframe and a million large frames would otherwise keep a CPU busy for hours.
    """

    max_input_bytes: int = dataclasses.field(default=256 * 2**20, metadata={"maximum": MAX_BYTES})
    max_frame_pixels: int = dataclasses.field(default=4096 * 4096, metadata={"maximum": MAX_FFMPEG_FRAME_PIXELS})
    max_duration_seconds: float = dataclasses.field(default=4 * 3600.0, metadata={"minimum": 0.001})
    max_source_frames: int = dataclasses.field(default=1_000_000, metadata={"maximum": 2**31 - 1})
    url_timeout_seconds: float = dataclasses.field(
        default=10.0, metadata={"minimum": 0.001, "maximum": MAX_TIMEOUT_SECONDS}
    )
    allow_private_urls: bool = False
    max_download_seconds: float = dataclasses.field(
        default=120.0, metadata={"minimum": 0.001, "maximum": MAX_TIMEOUT_SECONDS}
    )
    max_decoded_pixels: int = dataclasses.field(default=50_000_000_000, metadata={"maximum": 2**62})

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (bool, "bool"):
                if not isinstance(value, bool):
                    raise ValueError(f"DecodeLimits.{field.name} must be True or False, got {value!r}.")
                continue
            if field.type in (int, "int"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"DecodeLimits.{field.name} must be a positive integer, got {value!r}.")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"DecodeLimits.{field.name} must be a positive finite number, got {value!r}.")
            minimum = field.metadata.get("minimum", 1 if field.type in (int, "int") else 0)
            maximum = field.metadata.get("maximum", math.inf)
            if not minimum <= value <= maximum:
                raise ValueError(
                    f"DecodeLimits.{field.name} must lie between {_number(minimum)} and {_number(maximum)}, got "
                    f"{value!r}."
                )

    @classmethod
    def from_env(cls, **overrides) -> "DecodeLimits":
        """The defaults, replaced by the `CLIP2VIDEO_*` environment variables that are set, replaced by the
        `overrides` that are not `None`.

        Raises:
            `ValueError`: an unknown override, or a value (from the environment or an override) of the wrong type or
                out of range; the message names the variable or field.
        """
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = set(overrides) - set(fields)
        if unknown:
            raise ValueError(f"Unknown decode limits {sorted(unknown)}; known: {sorted(fields)}.")
        values = {}
        for name, field in fields.items():
            kind = {"bool": bool, "int": int, "float": float}.get(getattr(field.type, "__name__", field.type))
            value = parse_setting(
                ENV_PREFIX + name.upper(), os.environ.get(ENV_PREFIX + name.upper()), kind, None,
                minimum=field.metadata.get("minimum", 1 if kind is int else None),
                maximum=field.metadata.get("maximum"),
            )
            if value is not None:
                values[name] = value
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)


def limit_error(name: str, what: str, value, field: str, limit) -> ValueError:
    """The error for an input over one of the `DecodeLimits`: names the input, the limit and how to raise it."""
    return ValueError(
        f"Cannot read video {name}: {what} {value} exceeds the limit of {limit} (`{field}`); if the input is trusted, "
        f"raise it with the processor argument `{field}=...` or the environment variable {ENV_PREFIX}{field.upper()}."
    )


@dataclass
class FrameTable:
    """Timing of every frame of a video stream, in presentation order.

    Attributes:
        times (`list[float]`): presentation time of each frame in seconds, relative to the start of the file.
        durations (`list[float | None]`): duration of each frame in seconds as FFmpeg's demuxer gives it, if known.
        average_fps (`float`): the stream's average frame rate (frames / duration), what metadata reports.
        nominal_fps (`float`, *optional*, defaults to `average_fps`): the rate `ffmpeg -r 5` assumes for a frame
            without a usable duration: FFmpeg's `r_frame_rate` as `av_guess_frame_rate` corrects it. It differs
            from the average for variable-rate videos (a 30 fps phone video that averages 20 fps); for constant-rate
            videos and tables built from one rate the two are equal.
    """

    times: list[float]
    durations: list[float | None]
    average_fps: float
    nominal_fps: float | None = None

    def __post_init__(self):
        if self.nominal_fps is None:
            self.nominal_fps = self.average_fps


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
VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

# `scheme://` at the start of a string: a URL, never a local path.
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MAX_NAME_LENGTH = 200


def is_url(video: str) -> bool:
    # URL schemes are case-insensitive (RFC 3986).
    return video[:8].lower().startswith(("http://", "https://"))


def is_torchcodec_decoder(video) -> bool:
    """Whether `video` is a torchcodec `VideoDecoder` (checked without importing torchcodec)."""
    return type(video).__module__.startswith("torchcodec.") and hasattr(video, "get_frames_at")


def describe_video(video) -> str:
    """How error messages name a video: its path or URL (shortened if very long), `<bytes of length N>` for bytes,
    the `.name` of a file object or `<TypeName object>`."""
    if isinstance(video, (str, os.PathLike)):
        name = os.fsdecode(os.fspath(video))
    elif isinstance(video, (bytes, bytearray, memoryview)):
        return f"<{type(video).__name__} of length {memoryview(video).nbytes}>"
    else:
        name = getattr(video, "name", None)
        name = os.fsdecode(name) if isinstance(name, (str, bytes)) else f"<{type(video).__name__} object>"
    if len(name) > _MAX_NAME_LENGTH:
        name = name[: _MAX_NAME_LENGTH - 3] + "..."
    return name


def read_video_frames(
    video: VideoSource,
    select_frames: FrameSelector,
    backend: str = "pyav",
    limits: DecodeLimits | None = None,
) -> DecodedFrames:
    """Decode the frames `select_frames` picks from the timing of a video, within `limits`.

    Args:
        video (`str`, `os.PathLike`, `bytes`, `bytearray`, `memoryview` or a binary file object): a local path, an
            `http(s)://` URL (fetched into memory by `url_fetching_clip2video.fetch_url`: timeouts, size cap,
            redirects and addresses checked), the bytes of a video file, a readable binary file object, or a
            torchcodec `VideoDecoder` (what `datasets.Video()` yields; read by torchcodec whatever `backend` says).
        select_frames (`Callable[[FrameTable], list[int]]`): returns increasing indices into the frame table.
        backend (`str`, *optional*, defaults to `"pyav"`): one of `"pyav"`, `"torchcodec"`, `"decord"`.
        limits (`DecodeLimits`, *optional*): defaults to `DecodeLimits.from_env()`.

    Raises:
        `FileNotFoundError`: the path does not exist.
        `ValueError`: the input is over a limit, is not a video, is truncated or corrupt, none of its frames can be
            decoded, or the URL cannot be fetched; the message names the input and the reason (and for a limit, how
            to raise it).
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}; choose one of {', '.join(VIDEO_BACKENDS)}.")
    if limits is None:
        limits = DecodeLimits.from_env()
    elif not isinstance(limits, DecodeLimits):
        raise ValueError(f"`limits` must be a DecodeLimits, got {type(limits).__name__}.")
    name = describe_video(video)
    if is_torchcodec_decoder(video):
        decoded = _read_torchcodec_decoder(video, name, select_frames, limits)
    else:
        source = _bounded_source(video, name, limits)
        reader = {"pyav": _read_with_pyav, "torchcodec": _read_with_torchcodec, "decord": _read_with_decord}[backend]
        decoded = reader(source, name, select_frames, limits)
    if not decoded.frames:
        raise ValueError(f"Cannot read video {name}: no decodable frame.")
    return decoded


def _bounded_source(video, name: str, limits: DecodeLimits) -> str | io.BytesIO:
    """A path to a regular file or the input's bytes in memory, within `limits.max_input_bytes`."""
    if isinstance(video, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(video))
        if is_url(path):
            content = fetch_url(
                path,
                max_bytes=limits.max_input_bytes,
                timeout=limits.url_timeout_seconds,
                total_timeout=limits.max_download_seconds,
                allow_private=limits.allow_private_urls,
            )
            return _in_memory(content, name, limits)
        if _URL_SCHEME.match(path):
            raise ValueError(f"Cannot read video {name}: only http:// and https:// URLs can be fetched.")
        if "\0" in path:
            raise ValueError(f"Cannot read video {name}: a path cannot contain a NUL character.")
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"Video file not found: {name}") from None
        except OSError as error:
            raise ValueError(f"Cannot read video {name}: {error.strerror or error}.") from None
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"Cannot read video {name}: not a regular file.")
        if status.st_size == 0:
            raise ValueError(f"Cannot read video {name}: the file is empty.")
        if status.st_size > limits.max_input_bytes:
            raise limit_error(name, "its size in bytes", status.st_size, "max_input_bytes", limits.max_input_bytes)
        return path
    if isinstance(video, (bytes, bytearray, memoryview)):
        return _in_memory(bytes(video) if not isinstance(video, bytes) else video, name, limits)
    if callable(getattr(video, "read", None)):
        try:
            # One byte more than the limit tells an input at the limit from one over it.
            content = video.read(limits.max_input_bytes + 1)
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read video {name}: {error}.") from None
        if not isinstance(content, (bytes, bytearray)):
            raise ValueError(f"Cannot read video {name}: the file object must be opened in binary mode.")
        return _in_memory(bytes(content), name, limits)
    raise ValueError(
        f"Cannot read video {name}: expected a path, an http(s) URL, bytes or a binary file object, got "
        f"{type(video).__name__}."
    )


def _in_memory(content: bytes, name: str, limits: DecodeLimits) -> io.BytesIO:
    if not content:
        raise ValueError(f"Cannot read video {name}: it is empty.")
    if len(content) > limits.max_input_bytes:
        message = "its size in bytes (at least)" if len(content) == limits.max_input_bytes + 1 else "its size in bytes"
        raise limit_error(name, message, len(content), "max_input_bytes", limits.max_input_bytes)
    return io.BytesIO(content)


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


class _PacketEntry(NamedTuple):
    """One video packet's timing, in the stream's time base, read without decoding."""

    pts: int | None
    dts: int | None
    duration: int
    is_keyframe: bool


def _read_with_pyav(source, name: str, select_frames: FrameSelector, limits: DecodeLimits) -> DecodedFrames:
    av = _import_pyav()
    try:
        return _read_with_pyav_unguarded(av, source, name, select_frames, limits)
    except av.FFmpegError as error:
        # Includes `av.error.MemoryError`: FFmpeg refusing an allocation is a property of the input.
        raise _unreadable(name, error) from error


def _read_with_pyav_unguarded(av, source, name: str, select_frames: FrameSelector, limits: DecodeLimits):
    # FFmpeg decodes a frame while probing some files (a 170 kB PNG-in-MOV of 12000x12000 pixels takes 1.6 s and
    # 180 MB just to open): `max_pixels` makes the probe refuse frames over the limit too.
    with av.open(source, metadata_errors="ignore", options=_pyav_options(limits)) as container:
        if not container.streams.video:
            raise ValueError(f"Cannot read video {name}: it has no video stream.")
        stream = container.streams.video[0]
        _check_pyav_header(container, stream, name, limits)
        _set_decoder_threads(stream)
        # The decoder itself refuses much larger frames, also when the size changes after the header.
        stream.codec_context.options = _pyav_options(limits, stream)
        start = _pyav_start_pts(container, stream)

        packets = _pyav_packet_index(container, stream, name, limits)
        if not packets:
            raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
        if stream.frames and _frames_read(container, stream, packets) < stream.frames:
            raise ValueError(
                f"Cannot read video {name}: truncated or corrupt, its index lists {stream.frames} frames but only "
                f"{len(packets)} could be read."
            )
        if any(packet.pts is None for packet in packets):
            # Raw elementary streams (e.g. `.h264`) carry no timestamps: like ffmpeg, number the frames at the
            # stream's rate. Such streams cannot seek either, so they are decoded in one pass.
            fps = float(stream.guessed_rate or stream.average_rate or 25)
            times = [index / fps for index in range(len(packets))]
            _check_time_span(times, name, limits)
            chosen = select_frames(FrameTable(times=times, durations=[None] * len(times), average_fps=fps))
            frames = _pyav_decode_in_order(av, source, chosen, name, limits)
            return DecodedFrames(frames=frames, timestamps=[times[i] for i in chosen])
        table, frame_pts = _pyav_frame_table(container, stream, packets, start)
        keyframe_pts = sorted(packet.pts for packet in packets if packet.is_keyframe) or frame_pts[:1]
        _check_time_span(table.times, name, limits)
        chosen = select_frames(table)
        frames = _pyav_decode_at(av, container, stream, [frame_pts[i] for i in chosen], keyframe_pts, name, limits)
        return DecodedFrames(frames=frames, timestamps=[table.times[i] for i in chosen])


def _set_decoder_threads(stream) -> None:
    """Frame and slice threads (decoding is most of the time spent here) where torch may use several threads too.

    A DataLoader worker has one torch thread (torch sets it: the workers already share the cores), as has a process
    under `OMP_NUM_THREADS=1`: there the decoder runs in the calling thread, since threads that wait for each other's
    frames only add work when every core is busy (a fifth more CPU time for 320x240 H.264, no gain in wall time)."""
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = os.cpu_count() or 1
    if threads > 1:
        stream.thread_type = "AUTO"
    else:
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1


def _frames_read(container, stream, packets: list[_PacketEntry]) -> int:
    """How many of the frames a stream's header counts the packets read account for.

    An AVI stores a frame dropped by a variable-rate source (a screen or webcam capture) as an empty chunk, which the
    header counts and the demuxer skips; its timestamps number the chunks, so the last one read says how many the
    file holds up to there (a truncated AVI still falls short)."""
    if container.format.name == "avi":
        numbers = [packet.dts for packet in packets if packet.dts is not None]
        if numbers:
            return max(numbers) + 1 - (stream.start_time or 0)
    return len(packets)


def _check_pyav_header(container, stream, name: str, limits: DecodeLimits) -> None:
    """Refuse, from the container and stream headers alone, a video over the limits."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        # The probe leaves the size unknown when the frame it decoded was over `max_pixels`.
        raise ValueError(
            f"Cannot read video {name}: its frames have no size ({width}x{height}), or are larger than the limit of "
            f"{limits.max_frame_pixels} pixels (`max_frame_pixels`, environment variable "
            f"{ENV_PREFIX}MAX_FRAME_PIXELS)."
        )
    _check_frame_size(width, height, name, limits)
    if stream.frames and stream.frames > limits.max_source_frames:
        raise limit_error(name, "its frame count", stream.frames, "max_source_frames", limits.max_source_frames)
    durations = []
    if container.duration:
        durations.append(container.duration / 1_000_000)
    if stream.duration and stream.time_base:
        durations.append(float(stream.duration * stream.time_base))
    for seconds in durations:
        if seconds > limits.max_duration_seconds:
            message = "its duration in seconds"
            raise limit_error(name, message, round(seconds, 3), "max_duration_seconds", limits.max_duration_seconds)


def _pyav_options(limits: DecodeLimits, stream=None) -> dict[str, str]:
    # FFmpeg checks `max_pixels` against its buffer, the width rounded up to its stride alignment (up to 64) times
    # the height: a 5000x4000 PNG frame fails at 20,100,000, a 2x40000 one at 80,000 x 1.25. A margin keeps frames
    # at the limit decodable: a quarter for ordinary frames and, once the header's size is known (and checked), the
    # aligned buffer of that size, so a narrow frame within the limit decodes; its memory is the frame's own
    # buffer. The exact limit is checked on the header and on every decoded frame.
    pixels = limits.max_frame_pixels + limits.max_frame_pixels // 4 + 65536
    if stream is not None:
        width, height = stream.codec_context.width, stream.codec_context.height
        pixels = max(pixels, (width + 128) * (height + 16))
    return {"max_pixels": str(pixels)}


def _check_frame_size(width: int, height: int, name: str, limits: DecodeLimits) -> None:
    if width * height > limits.max_frame_pixels:
        what = f"its frame size {width}x{height} in pixels"
        raise limit_error(name, what, width * height, "max_frame_pixels", limits.max_frame_pixels)


def _check_time_span(times: list[float], name: str, limits: DecodeLimits) -> None:
    """Timestamps must be finite and span at most `max_duration_seconds` (frames 10^9 s apart would otherwise
    describe a video of 5 * 10^9 images at 5 fps)."""
    # Every timestamp: `min` and `max` skip a NaN that is not first (NaN compares false).
    if not all(math.isfinite(time) for time in times):
        raise ValueError(f"Cannot read video {name}: its frame timestamps are not finite.")
    first, last = min(times), max(times)
    if last - first > limits.max_duration_seconds:
        what = "the span of its frame timestamps in seconds"
        raise limit_error(name, what, round(last - first, 3), "max_duration_seconds", limits.max_duration_seconds)


class _Converter:
    """One thread's RGB converter and the process that made it."""

    __slots__ = ("pid", "reformatter", "__weakref__")

    def __init__(self, reformatter):
        self.pid, self.reformatter = os.getpid(), reformatter


# Fork safety. A forked child gets a copy of every FFmpeg object of its parent but none of the threads behind them:
# a scaler with slice threads waits for them forever, in use and when freed (`sws_free_context` joins them), which hung
# DataLoader workers after one decode in the parent. So the converters are made without threads, a child never uses
# one its parent made (the process id is checked), and never frees one either: the converters alive at a fork are held
# from just before it, and in the child for good (CPython frees the thread-locals of the parent's other threads in the
# child, before `after_in_child` could intervene).
_converters = threading.local()
_live_converters: "weakref.WeakSet[_Converter]" = weakref.WeakSet()
_held_over_fork: list[_Converter] = []
_inherited_converters: list[_Converter] = []
# Held from just before a fork to just after it, so that no thread adds a converter while the set is copied.
_converters_lock = threading.Lock()


def _hold_converters_over_fork() -> None:
    _converters_lock.acquire()
    _held_over_fork[:] = list(_live_converters)


def _release_converters_in_parent() -> None:
    _held_over_fork.clear()
    _converters_lock.release()


def _keep_inherited_converters() -> None:
    _inherited_converters.extend(_held_over_fork)
    _held_over_fork.clear()
    _converters_lock.release()


os.register_at_fork(
    before=_hold_converters_over_fork,
    after_in_parent=_release_converters_in_parent,
    after_in_child=_keep_inherited_converters,
)


def _thread_converter():
    """This thread's `VideoReformatter`, made in this process."""
    converter = getattr(_converters, "converter", None)
    if converter is None or converter.pid != os.getpid():
        converter = _Converter(_import_pyav().video.reformatter.VideoReformatter())
        with _converters_lock:
            _live_converters.add(converter)
        _converters.converter = converter
    return converter.reformatter


def _pyav_rgb(frame, name: str, limits: DecodeLimits) -> np.ndarray:
    """The frame as upright RGB uint8 `(height, width, 3)`.

    `frame.to_ndarray(format="rgb24")` sets up a new FFmpeg scaler for every frame, which costs milliseconds (35 times
    the conversion of a 32x32 frame). One reformatter per thread keeps its scaler while the frame size and format stay
    the same; the pixels are identical. `threads=1`: no scaler threads, which a forked child would wait for."""
    if frame.width <= 0 or frame.height <= 0:
        raise ValueError(f"Cannot decode video {name}: a frame has no size ({frame.width}x{frame.height}).")
    _check_frame_size(frame.width, frame.height, name, limits)
    rgb = _thread_converter().reformat(frame, format="rgb24", threads=1).to_ndarray()
    return upright(rgb, getattr(frame, "rotation", 0) or 0)


def _pyav_start_pts(container, stream) -> int:
    # ffmpeg measures time from the start of the file (the earliest stream), in microseconds.
    if container.start_time is not None:
        return int(round(container.start_time / 1_000_000 / stream.time_base))
    return stream.start_time or 0


def _pyav_packet_index(container, stream, name: str, limits: DecodeLimits) -> list[_PacketEntry]:
    """Timing of every video packet in decoding order, read without decoding, at most `max_source_frames`."""
    av = _import_pyav()

    index = []
    try:
        for packet in container.demux(stream):
            if packet.size:
                if len(index) == limits.max_source_frames:
                    what = "its frame count (at least)"
                    raise limit_error(name, what, len(index) + 1, "max_source_frames", limits.max_source_frames)
                index.append(_PacketEntry(packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe))
    except av.FFmpegError as error:
        message = f"Cannot read video {name}: truncated or corrupt after {len(index)} frames ({error})."
        raise ValueError(message) from error
    return index


def _ffmpeg_packet_durations(container, stream, packets: list[_PacketEntry]) -> list[float | None]:
    """The duration in seconds of every packet (in `packets`' order) as FFmpeg 5.1 and earlier read it (the authors
    extracted their frames in 2021; the tests compare with the 5.1 command line), `None` where they read none.

    The FFmpeg bundled with PyAV is newer and reads MP4 / MOV tracks with composition offsets (B-frames) differently.
    FFmpeg 5.1's MOV demuxer takes a sample's duration from the file only for tracks without them; for the others
    libavformat guesses one from a frame rate (`ff_compute_frame_duration`): the codec's for H.264 and HEVC (none
    from 1000 fps up, what PyAV-written files with a fine time base declare; a duration that short never counts
    anyway), the stream's `r_frame_rate` for other codecs. Which frames `-r 5` writes changes only where the guess or
    the stored duration is over 0.1 s: videos under 10 fps and gaps in variable-rate videos.
    """
    time_base = stream.time_base
    stored = [_seconds(packet.duration, time_base) if packet.duration else None for packet in packets]
    reordered = any(
        packet.pts != packet.dts for packet in packets if packet.pts is not None and packet.dts is not None
    )
    if not reordered or "mov" not in container.format.name.split(","):
        return stored
    rate = stream.codec_context.framerate if stream.codec_context.name in ("h264", "hevc") else stream.base_rate
    if not rate or not time_base:
        return [None] * len(packets)
    # `av_rescale_rnd(..., AV_ROUND_DOWN)`: whole ticks of the stream's time base.
    ticks = math.floor(1 / (Fraction(rate) * Fraction(time_base)))
    return [float(ticks * time_base) if ticks else None] * len(packets)


def _pyav_decode_in_order(av, source, chosen: list[int], name: str, limits: DecodeLimits) -> list[np.ndarray]:
    """Decode a video without timestamps from its start, converting the frames at the chosen positions."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    wanted = set(chosen)
    frames = []
    budget = _DecodeBudget(name, limits)
    try:
        with av.open(source, metadata_errors="ignore", options=_pyav_options(limits)) as container:
            stream = container.streams.video[0]
            stream.codec_context.options = _pyav_options(limits, stream)
            for position, frame in enumerate(container.decode(stream)):
                budget.spend(frame)
                if position in wanted:
                    frames.append(_pyav_rgb(frame, name, limits))
                if len(frames) == len(wanted):
                    break
    except av.FFmpegError as error:
        raise ValueError(f"Cannot decode video {name}: corrupt data ({error}).") from error
    if len(frames) < len(wanted):
        raise ValueError(f"Cannot decode video {name}: only {len(frames)} of the frames listed could be decoded.")
    return frames


class _DecodeBudget:
    """Counts the pixels of every decoded frame against `limits.max_decoded_pixels`."""

    def __init__(self, name: str, limits: DecodeLimits):
        self.name, self.limit, self.spent = name, limits.max_decoded_pixels, 0

    def spend(self, frame) -> None:
        self.spent += frame.width * frame.height
        if self.spent > self.limit:
            what = "the pixels decoded to reach its sampled frames (at least)"
            raise limit_error(self.name, what, self.spent, "max_decoded_pixels", self.limit)


def _seconds(ticks: int, time_base: Fraction) -> float:
    """`float(ticks * time_base)` without a `Fraction` per frame (a tenth of the Python time of a short clip): Python
    divides integers with correct rounding, so the float is the same."""
    return ticks * time_base.numerator / time_base.denominator


def _fps_from_pts(frame_pts: list[int], time_base) -> float:
    if len(frame_pts) < 2 or frame_pts[-1] == frame_pts[0]:
        return 1.0
    return float((len(frame_pts) - 1) / ((frame_pts[-1] - frame_pts[0]) * time_base))


def _pyav_decode_at(
    av, container, stream, wanted_pts: list[int], keyframe_pts: list[int], name: str, limits: DecodeLimits
) -> list[np.ndarray]:
    """Decode the frames with the given (increasing) pts, and as few others as possible.

    Before each wanted frame we jump to the last keyframe before it when that keyframe lies beyond the last decoded
    frame (everything in between would be decoded for nothing), otherwise we keep decoding forward. On the way, frames
    no other frame refers to (most B-frames) are skipped by the decoder unless wanted, and the frames that are decoded
    only as references are never converted to RGB.
    """
    wanted = set(wanted_pts)
    codec = stream.codec_context

    budget = _DecodeBudget(name, limits)

    def frames_from(keyframe):
        container.seek(keyframe, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            # Set per packet: the decoder reads it when the packet is submitted, also with frame threads.
            codec.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            for frame in packet.decode():
                budget.spend(frame)
                yield frame

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
        frames.append(_pyav_rgb(frame, name, limits))
    return frames


def _read_with_torchcodec(source, name: str, select_frames: FrameSelector, limits: DecodeLimits) -> DecodedFrames:
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as error:
        message = "backend='torchcodec' needs torchcodec and a system FFmpeg: `pip install torchcodec`."
        raise ImportError(message) from error

    try:
        decoder = VideoDecoder(source.getvalue() if isinstance(source, io.BytesIO) else source, seek_mode="exact")
    except (RuntimeError, ValueError) as error:  # torchcodec raises both
        raise _unreadable(name, error) from error
    return _read_torchcodec_decoder(decoder, name, select_frames, limits, read_timing=source)


def _read_torchcodec_decoder(
    decoder, name: str, select_frames: FrameSelector, limits: DecodeLimits, read_timing=None
) -> DecodedFrames:
    """The chosen frames of a torchcodec `VideoDecoder`, the one torchcodec path: of a decoder made here from a
    video's bytes or path (`read_timing`: that source), or of one given (what `datasets.Video()` yields).

    With the source at hand, frames are chosen from the PyAV path's table (packet times, FFmpeg's durations, the
    nominal rate), so that the same frames are sampled from variable-rate videos; frame i of that table is
    torchcodec's frame i (both in presentation order), and the timestamps are the table's. torchcodec exposes no
    per-frame timestamps without decoding: otherwise frames are taken as evenly spaced at the average rate from the
    stream's start (exact for constant-rate videos only), and the timestamps are those of the decoded frames."""
    metadata = decoder.metadata
    width, height = metadata.width or 0, metadata.height or 0
    if width <= 0 or height <= 0:
        raise ValueError(f"Cannot read video {name}: its frames have no size ({width}x{height}).")
    _check_frame_size(width, height, name, limits)
    num_frames = metadata.num_frames or 0
    if num_frames == 0:
        raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
    if num_frames > limits.max_source_frames:
        raise limit_error(name, "its frame count", num_frames, "max_source_frames", limits.max_source_frames)
    average_fps = float(metadata.average_fps or 0)
    if not 0 < average_fps < math.inf:
        raise ValueError(f"Cannot read video {name}: its average frame rate {average_fps} is not positive.")
    timing = _pyav_frame_timing(read_timing, name, limits) if read_timing is not None else None
    if timing is not None and len(timing[0].times) == num_frames:
        table, _ = timing
    else:
        if read_timing is not None:
            logger.warning_once(
                "backend='torchcodec' without PyAV samples frames as if the frame rate were constant; install PyAV "
                "(`pip install av`) for the timestamps of variable-frame-rate videos."
            )
        begin = float(getattr(metadata, "begin_stream_seconds", None) or 0.0)
        table = FrameTable(
            times=[begin + index / average_fps for index in range(num_frames)],
            durations=[1 / average_fps] * num_frames,
            average_fps=average_fps,
        )
        timing = None
    _check_time_span(table.times, name, limits)
    chosen = select_frames(table)
    try:
        batch = decoder.get_frames_at(indices=chosen)
    except (RuntimeError, IndexError) as error:
        raise ValueError(f"Cannot decode video {name}: truncated or corrupt ({error}).") from error
    data = batch.data
    if data.shape[1] in (1, 3) and tuple(data.shape[2:]) == (height, width):
        data = data.permute(0, 2, 3, 1)  # the decoder's default "NCHW" order
    frames = [frame.numpy() for frame in data]
    if timing is not None:
        return DecodedFrames(frames=frames, timestamps=[table.times[index] for index in chosen])
    return DecodedFrames(frames=frames, timestamps=[float(t) for t in batch.pts_seconds])


def _pyav_frame_timing(source, name: str, limits: DecodeLimits) -> tuple[FrameTable, list[int]] | None:
    """The frame table the PyAV path samples from, and the frames' presentation timestamps in the stream's time base,
    read from the packets without decoding; None without PyAV, or for a stream without timestamps."""
    try:
        av = _import_pyav()
    except ImportError:
        return None
    if isinstance(source, io.BytesIO):
        source = io.BytesIO(source.getvalue())  # the caller's buffer keeps its position for torchcodec
    try:
        with av.open(source, metadata_errors="ignore", options=_pyav_options(limits)) as container:
            if not container.streams.video:
                raise ValueError(f"Cannot read video {name}: it has no video stream.")
            stream = container.streams.video[0]
            _check_pyav_header(container, stream, name, limits)
            start = _pyav_start_pts(container, stream)
            packets = _pyav_packet_index(container, stream, name, limits)
            if not packets or any(packet.pts is None for packet in packets):
                return None
            return _pyav_frame_table(container, stream, packets, start)
    except av.FFmpegError as error:
        raise _unreadable(name, error) from error


def _pyav_frame_table(container, stream, packets: list[_PacketEntry], start: int) -> tuple[FrameTable, list[int]]:
    """Frame times from the packets' presentation timestamps (relative to the stream's start), FFmpeg's packet
    durations and the nominal rate (`guessed_rate`, FFmpeg's `av_guess_frame_rate`), with the frames' timestamps in
    presentation order."""
    time_base = stream.time_base
    durations = _ffmpeg_packet_durations(container, stream, packets)
    order = sorted(range(len(packets)), key=lambda index: packets[index].pts)
    frame_pts = [packets[index].pts for index in order]
    average_fps = float(stream.average_rate or stream.guessed_rate or 0) or _fps_from_pts(frame_pts, time_base)
    table = FrameTable(
        times=[_seconds(pts - start, time_base) for pts in frame_pts],
        durations=[durations[index] for index in order],
        average_fps=average_fps,
        nominal_fps=float(stream.guessed_rate or 0) or average_fps,
    )
    return table, frame_pts


def _read_with_decord(source, name: str, select_frames: FrameSelector, limits: DecodeLimits) -> DecodedFrames:
    try:
        import decord
    except ImportError as error:
        raise ImportError("backend='decord' needs decord: `pip install decord`.") from error

    try:
        reader = decord.VideoReader(source, ctx=decord.cpu(0))
        num_frames = len(reader)
        if num_frames > limits.max_source_frames:
            raise limit_error(name, "its frame count", num_frames, "max_source_frames", limits.max_source_frames)
        start_end = reader.get_frame_timestamp(np.arange(num_frames)) if num_frames else np.zeros((0, 2))
    except RuntimeError as error:  # decord.DECORDError and decord's own RuntimeErrors
        raise _unreadable(name, error) from error
    if num_frames == 0:
        raise ValueError(f"Cannot read video {name}: its video stream has no frames.")
    # decord opens some non-video files as one frame at an absurd time instead of failing.
    if not np.all(np.isfinite(start_end)) or start_end.max() > 1e7:
        raise _unreadable(name)
    # decord exposes the frame size only through a decoded frame (it decodes the first one when opening anyway).
    height, width = reader.next().shape[:2]
    if width <= 0 or height <= 0:
        raise ValueError(f"Cannot read video {name}: its frames have no size ({width}x{height}).")
    _check_frame_size(width, height, name, limits)
    table = FrameTable(
        times=[float(start) for start, _ in start_end],
        durations=[float(end - start) for start, end in start_end],
        average_fps=float(reader.get_avg_fps()),
    )
    _check_time_span(table.times, name, limits)
    chosen = select_frames(table)
    try:
        frames = list(reader.get_batch(chosen).asnumpy())
    except RuntimeError as error:
        raise ValueError(f"Cannot decode video {name}: truncated or corrupt ({error}).") from error
    return DecodedFrames(frames=frames, timestamps=[table.times[i] for i in chosen])
