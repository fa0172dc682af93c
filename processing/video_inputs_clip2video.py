"""The forms a video may take at the processor's input, and what each says about its frames: which inputs are one video
or a batch, which are still encoded, the `video_metadata` of videos given as frames, frame images read from files and
frames given as arrays, tensors or PIL images turned into uint8 RGB."""

import math
import os
import re
import stat

import numpy as np
import torch
from transformers.video_utils import VideoMetadata

from .media_types_clip2video import IMAGE_EXTENSIONS
from .video_decoding_clip2video import DecodeLimits, describe_video, is_torchcodec_decoder, limit_error


# The longest span of frames given directly (their times are index / fps): far beyond any video, within every integer.
MAX_FRAMES_SPAN_SECONDS = 1e9


# ----------------------------------------------------------------------------------------------------------------------
# Input forms


def _is_pil_image(item) -> bool:
    return type(item).__module__.startswith("PIL.")


def _is_frame(item) -> bool:
    if _is_pil_image(item):
        return True
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3)


def _is_image_path(item) -> bool:
    return isinstance(item, (str, os.PathLike)) and os.fsdecode(os.fspath(item)).lower().endswith(IMAGE_EXTENSIONS)


def is_image_path_list(item) -> bool:
    return isinstance(item, (list, tuple)) and len(item) > 0 and all(_is_image_path(path) for path in item)


def is_encoded_video(item) -> bool:
    """A video still to be decoded: a path or URL, bytes, a binary file object, a `datasets.Video(decode=False)`
    dict, or a torchcodec decoder."""
    if isinstance(item, (str, os.PathLike)):
        return not _is_image_path(item)
    if isinstance(item, (bytes, bytearray, memoryview)) or is_torchcodec_decoder(item):
        return True
    if isinstance(item, dict):
        return set(item) <= {"path", "bytes"} and bool(item)
    return callable(getattr(item, "read", None))


def describe_input(video) -> str:
    if isinstance(video, dict):
        return describe_video(video.get("path") or video.get("bytes") or "<empty dict>")
    return describe_video(video)


def as_video_list(videos) -> list:
    """One entry per video: an encoded video, a 4D array or tensor, a list of frames or a list of image paths."""
    if is_encoded_video(videos) or is_image_path_list(videos):
        return [videos]
    if _is_image_path(videos):
        raise ValueError(
            f"{describe_video(videos)} is an image; a video given as frame images is a list of their paths."
        )
    if _is_pil_image(videos):
        return [[videos]]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            if len(videos) == 0:
                raise ValueError(f"Got an empty batch of videos (an array of shape {tuple(videos.shape)}).")
            return list(videos)
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 3:
            return [[videos]]
        raise ValueError(f"A video array must have 4 dimensions (5 for a batch), got shape {tuple(videos.shape)}.")
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise ValueError("Got an empty list of videos.")
        if all(_is_frame(item) for item in videos):
            return [list(videos)]
        for index, item in enumerate(videos):
            if _is_image_path(item):
                raise ValueError(
                    f"Video {index} of the batch is the image {describe_video(item)}: a video given as frame images "
                    "is a list of their paths (a batch of such videos is a list of lists), never one image per video."
                )
            is_frames = isinstance(item, (list, tuple)) and (
                is_image_path_list(item) or (len(item) > 0 and all(_is_frame(frame) for frame in item))
            )
            is_array = isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4
            if not (is_encoded_video(item) or is_frames or is_array):
                raise ValueError(
                    f"Video {index} of the batch is a {type(item).__name__}; expected a path or URL, bytes, a binary "
                    "file object, a {'path', 'bytes'} dict, a torchcodec decoder, a 4D array or tensor of frames, a "
                    "list of frames or a list of frame image paths."
                )
        return list(videos)
    raise ValueError(f"Unsupported video input of type {type(videos).__name__}.")


def as_metadata_list(video_metadata, num_videos: int) -> list:
    """One metadata dict (or None) per video; a nested list (one list per sample, as transformers allows) is
    flattened."""
    if video_metadata is None:
        return [None] * num_videos
    if isinstance(video_metadata, (dict, VideoMetadata)):
        video_metadata = [video_metadata]
    if video_metadata and all(isinstance(entry, (list, tuple)) for entry in video_metadata):
        video_metadata = [entry for entries in video_metadata for entry in entries]
    if len(video_metadata) != num_videos:
        raise ValueError(f"Got {num_videos} videos but {len(video_metadata)} `video_metadata` entries.")
    return [dict(entry) if entry is not None else None for entry in video_metadata]


def frames_metadata(entry: dict | None, count: int, index: int) -> VideoMetadata:
    """The metadata of a video of `count` given frames: the frame rate is `entry["fps"]`, or
    `total_num_frames / duration`, or unknown. Frames sampled from a longer video (`total_num_frames` more than
    `count`) need `frames_indices`, one increasing source index per given frame, as `load_video` returns them."""
    entry = {key: value for key, value in (entry or {}).items() if value is not None}
    total = entry.get("total_num_frames", count)
    if not _is_integer(total):
        raise ValueError(f"Video {index}: `video_metadata` total_num_frames must be an integer, got {total!r}.")
    for key in ("fps", "duration"):
        value = entry.get(key)
        if value is not None and (not _is_number(value) or not 0 < value < math.inf):
            raise ValueError(f"Video {index}: `video_metadata` {key} must be a positive number, got {value!r}.")
    source_indices = entry.get("frames_indices")
    if isinstance(source_indices, (np.ndarray, torch.Tensor)):
        source_indices = source_indices.tolist()  # floats stay floats, and are refused below
    if source_indices is not None:
        if not isinstance(source_indices, (list, tuple)) or not all(
            _is_integer(position) for position in source_indices
        ):
            raise ValueError(
                f"Video {index}: `video_metadata` frames_indices must be a list of integers (one source frame index "
                f"per given frame), got {_shown(source_indices)}."
            )
        source_indices = [int(position) for position in source_indices]
        if (
            len(source_indices) != count
            or any(after <= before for before, after in zip(source_indices, source_indices[1:]))
            or source_indices[0] < 0
            or source_indices[-1] >= total
        ):
            raise ValueError(
                f"Video {index} has {count} frames but its `video_metadata` frames_indices are not {count} increasing "
                f"indices below total_num_frames={total}."
            )
    elif total != count:
        raise ValueError(
            f"Video {index} has {count} frames but its `video_metadata` says total_num_frames={total} without the "
            "frames_indices of the given frames."
        )
    fps = entry.get("fps")
    if fps is None and entry.get("duration"):
        fps = total / entry["duration"]
    if fps is not None:
        checked_frame_rate(fps, total, f"Video {index}")
    duration = total / fps if fps else entry.get("duration")
    return VideoMetadata(
        total_num_frames=total, fps=fps, duration=duration, video_backend=None, frames_indices=source_indices
    )


def checked_frame_rate(fps, total: int, where: str) -> float:
    """`fps` as a float, refused unless a positive finite number that keeps `total` frames within
    `MAX_FRAMES_SPAN_SECONDS` (their times are index / fps: fps 1e-300 would put them 10^300 s apart, past every
    integer type the sampling uses)."""
    if not (_is_number(fps) and 0 < fps < math.inf):
        raise ValueError(f"{where}: `video_metadata` fps must be a positive number, got {fps!r}.")
    if total / fps > MAX_FRAMES_SPAN_SECONDS:
        raise ValueError(
            f"{where}: `video_metadata` fps={fps!r} puts {total} frames {total / fps:.3g} s apart, over "
            f"{MAX_FRAMES_SPAN_SECONDS:.0e} s; give the frame rate in frames per second."
        )
    return float(fps)


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def source_positions(metadata: VideoMetadata) -> list[int]:
    """The source index of each given frame: `frames_indices` when the metadata has them, else 0, 1, ..."""
    if metadata.frames_indices is not None:
        return list(metadata.frames_indices)
    return list(range(metadata.total_num_frames))


def dict_source(video: dict, index: int):
    """The bytes (preferred, as `datasets` decodes) or the path of a `datasets.Video(decode=False)` value."""
    content, path = video.get("bytes"), video.get("path")
    if content is not None:
        if not isinstance(content, (bytes, bytearray, memoryview)):
            # A path in "bytes" is never opened as a path: what a dict's bytes say is what is decoded.
            raise ValueError(
                f"Video {index} is a {{'path', 'bytes'}} dict whose 'bytes' is a {type(content).__name__}, not bytes."
            )
        return content
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(
                f"Video {index} is a {{'path', 'bytes'}} dict whose 'path' is a {type(path).__name__}, not a path."
            )
        return path
    raise ValueError(f"Video {index} is a {{'path', 'bytes'}} dict with neither a path nor bytes.")


def take_frames(frames, indices: list[int]):
    if isinstance(frames, (list, tuple)):
        return [frames[i] for i in indices]
    return frames[torch.as_tensor(indices)] if isinstance(frames, torch.Tensor) else frames[np.asarray(indices)]


# ----------------------------------------------------------------------------------------------------------------------
# Frame images


def read_frame_image(path, limits: DecodeLimits) -> np.ndarray:
    """A frame image as RGB uint8 `(height, width, 3)`, upright (EXIF orientation applied, as transformers'
    `load_image` does): a regular file within `limits.max_input_bytes`, its size in pixels read from the header and
    checked against `limits.max_frame_pixels` before anything is decoded; high bit depths scaled (`_pil_to_rgb`)."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as error:
        raise ImportError("Reading frame images needs Pillow: `pip install pillow`.") from error
    name = describe_video(path)
    try:
        # Non-blocking: opening a FIFO must not wait for a writer (it is refused below, as every non-regular file).
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"Frame image not found: {name}") from None
    except OSError as error:
        raise ValueError(f"Cannot read frame image {name}: {error.strerror or error}.") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"Cannot read frame image {name}: not a regular file.")
        if status.st_size > limits.max_input_bytes:
            raise limit_error(name, "its size in bytes", status.st_size, "max_input_bytes", limits.max_input_bytes)
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        try:
            with Image.open(file) as image:
                width, height = image.size
                if width * height > limits.max_frame_pixels:
                    what = f"its size {width}x{height} in pixels"
                    raise limit_error(name, what, width * height, "max_frame_pixels", limits.max_frame_pixels)
                return _pil_to_rgb(ImageOps.exif_transpose(image), name)
        except Image.DecompressionBombError as error:
            # Pillow refuses from the header, before our check could: say it our way, naming our limit.
            found = re.search(r"\((\d+) pixels\)", str(error))
            pixels = int(found.group(1)) if found else Image.MAX_IMAGE_PIXELS * 2 + 1
            if pixels > limits.max_frame_pixels:
                limit = limits.max_frame_pixels
                raise limit_error(name, "its size in pixels", pixels, "max_frame_pixels", limit) from None
            raise ValueError(
                f"Cannot read frame image {name}: its {pixels} pixels are over Pillow's own limit "
                f"(`PIL.Image.MAX_IMAGE_PIXELS` = {Image.MAX_IMAGE_PIXELS}), below `max_frame_pixels`."
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"Cannot read frame image {name}: {error}") from None


def _pil_to_rgb(image, name: str) -> np.ndarray:
    """RGB uint8 `(height, width, 3)` of a PIL image of any mode. 16-bit grey (`I;16*`, and `I`, how Pillow holds 16-bit
    PNGs) is scaled to the nearest 8-bit value, `round(v * 255 / 65535)` (what torchcodec's `decode_image`, the
    image decoder transformers prefers, gives), where `convert("RGB")` would clip every value over 255 to white;
    floating point (`F`) must lie in [0, 1], as floating point frames do. Other modes (palette, grey with alpha, CMYK,
    YCbCr, 1-bit, ...) go through Pillow's `convert("RGB")`; Pillow reads 16-bit colour PNGs as 8-bit already."""
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"Cannot read frame image {name}: a {mode} image with values in [{values.min()}, {values.max()}], "
                "outside 16 bits (0-65535)."
            )
        grey = ((values + 128) // 257).astype(np.uint8)  # round(v / 257) exactly: v + 128.5 is never a multiple
    elif mode == "F":
        values = np.asarray(image)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"Cannot read frame image {name}: floating point pixels must lie in [0, 1].")
        grey = np.round(values * 255).astype(np.uint8)
    else:
        return np.array(image.convert("RGB"))
    return np.repeat(grey[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Frames given directly


def frames_to_uint8_rgb(video, input_data_format=None, convert_rgb: bool = True) -> torch.Tensor:
    """A video given as frames, as a uint8 RGB tensor `[frames, 3, height, width]` (channels-last in memory, the
    layout torch's uint8 antialiased resize is fastest with). With `convert_rgb`, grey frames are repeated and alpha is
    dropped; without it, frames must have 3 channels (PIL images: mode RGB)."""
    if len(video) == 0:
        raise ValueError("Got a video with no frames.")
    if isinstance(video, (list, tuple)):
        frames = [_frame_to_rgb_hwc(frame, input_data_format, convert_rgb) for frame in video]
        sizes = {tuple(frame.shape[:2]) for frame in frames}
        if len(sizes) > 1:
            raise ValueError(f"All frames of a video must have the same size, got {sorted(sizes)}.")
        return _with_a_size(torch.stack(frames).permute(0, 3, 1, 2))
    video = _as_uint8_tensor(video)
    if input_data_format is None:
        input_data_format = "channels_last" if video.shape[-1] in (1, 3, 4) else "channels_first"
    if input_data_format != "channels_last":
        video = video.permute(0, 2, 3, 1)
    return _with_a_size(_rgb_channels(video, convert_rgb).permute(0, 3, 1, 2))


def _with_a_size(frames: torch.Tensor) -> torch.Tensor:
    """`[frames, 3, height, width]` frames, refused when they have no pixels (resizing would divide by zero)."""
    if frames.shape[-2] == 0 or frames.shape[-1] == 0:
        raise ValueError(f"Video frames must have a size, got {frames.shape[-2]}x{frames.shape[-1]} pixels.")
    return frames


def _frame_to_rgb_hwc(frame, input_data_format=None, convert_rgb: bool = True) -> torch.Tensor:
    if _is_pil_image(frame):
        if not convert_rgb and frame.mode != "RGB":
            raise ValueError(
                f"Got a PIL image of mode {frame.mode} with `do_convert_rgb=False`: CLIP2Video reads RGB frames; pass "
                "RGB images or leave `do_convert_rgb=True`."
            )
        return torch.from_numpy(_pil_to_rgb(frame, f"<PIL image of mode {frame.mode}>"))
    frame = _as_uint8_tensor(frame)
    if frame.ndim == 2:
        return _rgb_channels(frame[..., None], convert_rgb)
    if frame.ndim != 3:
        raise ValueError(f"A video frame must have 2 or 3 dimensions, got shape {tuple(frame.shape)}.")
    if input_data_format is None:
        input_data_format = "channels_last" if frame.shape[-1] in (1, 3, 4) else "channels_first"
    return _rgb_channels(frame if input_data_format == "channels_last" else frame.permute(1, 2, 0), convert_rgb)


def _as_uint8_tensor(array) -> torch.Tensor:
    """uint8 frames as they are; uint16 frames scaled to the nearest 8-bit value; floating point frames in [0, 1]
    (decoded frames divided by 255) back to uint8, so they give the pixels of the uint8 frames exactly."""
    if isinstance(array, np.ndarray) and array.dtype.kind not in "uifb":
        raise ValueError(f"Video frames must be a numeric array (uint8 or float in [0, 1]), got dtype {array.dtype}.")
    if isinstance(array, torch.Tensor) and (array.device.type == "meta" or array.layout != torch.strided):
        raise ValueError(
            f"Video frames must be a dense tensor holding data, got one on the {array.device.type} device with layout "
            f"{array.layout}."
        )
    tensor = torch.as_tensor(array)
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.dtype == torch.uint16:  # 16-bit frames: the nearest 8-bit value, as for 16-bit frame images
        return ((tensor.to(torch.int32) + 128) // 257).to(torch.uint8)
    if tensor.is_floating_point():
        if tensor.numel() and not (torch.isfinite(tensor).all() and tensor.min() >= 0 and tensor.max() <= 1):
            raise ValueError(
                f"Floating point video frames must lie in [0, 1], got values in [{tensor.min().item()}, "
                f"{tensor.max().item()}]; pass uint8 frames for 0-255 values."
            )
        return (tensor.float() * 255).round_().to(torch.uint8)
    raise ValueError(
        f"Video frames must be uint8 (0-255), uint16 (0-65535) or floating point in [0, 1], got {tensor.dtype}."
    )


def _rgb_channels(frames: torch.Tensor, convert_rgb: bool = True) -> torch.Tensor:
    """Channels-last grey, RGB or RGBA frames as RGB: grey repeated, alpha dropped (as `PIL.Image.convert("RGB")`);
    without `convert_rgb` only RGB frames are taken."""
    channels = frames.shape[-1]
    if not convert_rgb and channels in (1, 4):
        raise ValueError(
            f"Video frames have {channels} channel(s) (shape {tuple(frames.shape)}) and `do_convert_rgb=False`: "
            "CLIP2Video reads RGB frames; pass RGB frames or leave `do_convert_rgb=True` (grey repeated, alpha "
            "dropped)."
        )
    if channels == 1:
        return frames.expand(*frames.shape[:-1], 3)
    if channels == 3:
        return frames
    if channels == 4:
        return frames[..., :3]
    raise ValueError(
        f"Video frames must have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(frames.shape)}."
    )
