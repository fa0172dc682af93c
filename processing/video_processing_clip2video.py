"""Video processor for CLIP2Video: from videos in every form transformers and `datasets` produce to
`pixel_values_videos` and `video_mask`."""

import dataclasses
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .frame_sampling_clip2video import FRAME_EXTRACTION_FPS, select_source_frames, uniform_positions
from .video_decoding_clip2video import (
    VIDEO_BACKENDS,
    DecodedFrames,
    DecodeLimits,
    FrameTable,
    describe_video,
    limit_error,
    read_video_frames,
)


# A string with one of these endings is a frame image, not a video: a list of them is one video.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The files that folders of videos are read for (search indexes, dataset folders): containers FFmpeg demuxes.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv",
)
_DECODE_LIMIT_FIELDS = tuple(field.name for field in dataclasses.fields(DecodeLimits))


class CLIP2VideoVideoProcessorKwargs(VideosKwargs, total=False):
    """
    num_frames (`int`, *optional*, defaults to `self.num_frames`, 12):
        At most this many frames per video (the authors' `max_frames`), picked uniformly when more are sampled. With
        `do_sample_frames=False`, a video with more frames is an error.
    fps (`float`, *optional*, defaults to `self.fps`, 2.5):
        Frames per second kept from the video, at most 5 (the rate the authors extract frames at). 2.5 for MSR-VTT
        (the authors' `feature_framerate=2`), 5 for MSVD and VATEX (`feature_framerate=1` in their test scripts).
    random_frame_jitter (`bool`, *optional*, defaults to `self.random_frame_jitter`):
        Training-time augmentation of the authors: move every inner pick randomly within its interval.
    pad_to_max_frames (`bool`, *optional*, defaults to `self.pad_to_max_frames`):
        Pad the time axis to `num_frames`; otherwise to the longest video of the batch.
    return_timestamps (`bool`, *optional*, defaults to `self.return_timestamps`):
        Also return `video_timestamps [batch, frames]`: the time in seconds of every sampled frame, NaN for padding.
    video_backend (`str`, *optional*, defaults to `self.video_backend`):
        Decoder for encoded videos: `"pyav"`, `"torchcodec"` or `"decord"`.
    max_input_bytes, max_frame_pixels, max_duration_seconds, max_source_frames, url_timeout_seconds,
    allow_private_urls, max_download_seconds, max_decoded_pixels (*optional*):
        Override the matching field of `DecodeLimits` (whose defaults and `CLIP2VIDEO_*` environment variables apply
        otherwise) for this call or, given at construction, for this processor.
    """

    random_frame_jitter: bool | None
    pad_to_max_frames: bool | None
    return_timestamps: bool | None
    video_backend: str | None
    max_input_bytes: int | None
    max_frame_pixels: int | None
    max_duration_seconds: int | float | None
    max_source_frames: int | None
    url_timeout_seconds: int | float | None
    allow_private_urls: bool | None
    max_download_seconds: int | float | None
    max_decoded_pixels: int | None


# Earlier names of `num_frames` and `fps`, still accepted at construction so that saved folders keep loading.
_CONSTRUCTION_ALIASES = {"max_frames": "num_frames", "sampling_fps": "fps"}


@dataclass
class _Video:
    """One video between the base class's hooks: frames given directly (`frames`, with the indices already chosen)
    or an encoded source decoded in `_preprocess`, where the call's decode limits and backend are known. `metadata`
    is the object `return_metadata=True` returns; encoded videos fill it in when decoded."""

    metadata: VideoMetadata
    index: int
    frames: Any = None
    image_paths: list | None = None
    encoded: Any = None
    sample: bool = True
    indices: list[int] | None = None
    timestamps: list[float] | None = None
    input_data_format: Any = None
    device: Any = None


class CLIP2VideoVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into the inputs of `CLIP2VideoModel`, sampling frames as the CLIP2Video authors do.

    Frame sampling (`do_sample_frames=True`, the default). The authors extract JPEG frames with `ffmpeg -r 5`, keep
    `floor(n * fps / 5)` of the `n` images uniformly (`np.linspace` rounded down) and, when more than `num_frames`
    remain, `num_frames` of them uniformly. This processor picks the same source frames from the video's own timestamps
    (packet times, time base and average rate, never an assumed frame rate; see `frame_sampling_clip2video`) and
    decodes only those. It differs from the authors' pipeline in two documented ways: a video never yields the same
    frame twice (ffmpeg repeats frames of videos slower than 5 fps), and a video too short to keep any image still
    yields its first frame. Frames given directly are sampled the same way from `video_metadata`'s `fps` (or
    `total_num_frames / duration`); without a frame rate they are taken as already extracted: all kept, reduced
    uniformly to `num_frames` if more. With `do_sample_frames=False` every frame is used, and a video with more than
    `num_frames` frames is an error (an encoded video's frame count is checked before anything is decoded).

    Inputs: one video or a batch (a list) of videos, each one of
        - a path, an `http(s)` URL, `bytes` or a binary file object of an encoded video, or the `{"path", "bytes"}`
          dict of a `datasets.Video(decode=False)` column;
        - a `torchcodec` `VideoDecoder` (what `datasets.Video()` decodes to);
        - frames: an array or tensor `(frames, height, width, channels)` or `(frames, channels, height, width)`,
          uint8 or floating point in [0, 1], 1, 3 or 4 channels (a 5D array is a batch), or a list of PIL images or of
          2D / 3D arrays;
        - a list of frame image paths (JPEG, PNG, ...; the authors' pre-extracted frames). A flat list of image paths
          is one video; a batch of such videos is a list of lists.

    Each frame is then prepared as in CLIP: RGB (grey repeated, alpha dropped like `PIL.Image.convert("RGB")`),
    shortest edge resized to 224 with bicubic resampling, centre crop 224, scaled to [0, 1] and normalised with the
    OpenAI CLIP mean and std.

    Returns a `BatchFeature` with:
        - `pixel_values_videos` (`[batch, frames, 3, 224, 224]` float32): zero for padded frames.
        - `video_mask` (`[batch, frames]` int64): 1 for real frames (which come first), 0 for padding.
        - `video_timestamps` (`[batch, frames]` float64, with `return_timestamps=True`): seconds, NaN for padding and
          for frames given without a frame rate.
        - `video_metadata` (with `return_metadata=True`): one `VideoMetadata` per video (`fps`, `total_num_frames`,
          `duration`, `width`, `height` of the source and `frames_indices` of the chosen frames).

    Raises:
        `FileNotFoundError`: a video path or frame image does not exist.
        `TypeError`: an unknown keyword argument (the base class's validation).
        `ValueError`: a file is not a video, is truncated or corrupt, is over a `DecodeLimits` limit, or has no
            decodable frame (the message names the input and the reason), frames have an unsupported shape or dtype,
            or an option is out of range.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 12
    fps = FRAME_EXTRACTION_FPS / 2
    random_frame_jitter = False
    pad_to_max_frames = True
    return_timestamps = False
    video_backend = "pyav"
    valid_kwargs = CLIP2VideoVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "video_mask"]

    def __init__(self, **kwargs: Unpack[CLIP2VideoVideoProcessorKwargs]):
        for old_name, name in _CONSTRUCTION_ALIASES.items():
            if old_name in kwargs:
                value = kwargs.pop(old_name)
                if value is not None and kwargs.get(name) is not None and kwargs[name] != value:
                    raise ValueError(f"Got {old_name}={value!r} and {name}={kwargs[name]!r}; `{old_name}` is `{name}`.")
                if value is not None:
                    kwargs[name] = value
        super().__init__(**kwargs)
        _check_sampling_options(self.num_frames, self.fps)
        _check_backend(self.video_backend)

    def _merge_and_standardize_kwargs(self, **kwargs) -> dict:
        # An argument given as None is an argument not given: `do_sample_frames=None` samples as the processor's
        # default does (transformers fills in only missing keys, which would leave None, taken as False).
        kwargs = {key: value for key, value in kwargs.items() if value is not None or getattr(self, key, None) is None}
        return super()._merge_and_standardize_kwargs(**kwargs)

    # ----------------------------------------------------------------------------------------------------------
    # Hooks of `BaseVideoProcessor.preprocess`: which frames, decoded how, prepared how.
    # ----------------------------------------------------------------------------------------------------------

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: int | float | None = None,
        random_frame_jitter: bool | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Indices of the frames kept among frames given directly: with `metadata.fps`, the authors' rule on those
        frames' times (`i / fps`, or `frames_indices[i] / fps` for frames sampled from a longer video, as
        `transformers.video_utils.load_video` returns them), as for a file; without it the frames are taken as already
        extracted, all kept and reduced uniformly to `num_frames`.

        Args:
            metadata (`VideoMetadata`): `total_num_frames`, if known `fps`, and `frames_indices` when the given
                frames are a subset of a longer video's.
            num_frames (`int`, *optional*, defaults to `self.num_frames`): at most this many frames.
            fps (`float`, *optional*, defaults to `self.fps`): frames per second kept, in (0, 5].
            random_frame_jitter (`bool`, *optional*, defaults to `self.random_frame_jitter`): the training jitter.

        Returns:
            `np.ndarray`: increasing int64 indices.
        """
        num_frames = self.num_frames if num_frames is None else num_frames
        fps = self.fps if fps is None else fps
        jitter = self.random_frame_jitter if random_frame_jitter is None else random_frame_jitter
        positions = _source_positions(metadata)
        if metadata.fps:
            rate = _checked_frame_rate(metadata.fps, positions[-1] + 1 if positions else 0, "The video")
            # Each given frame stays on screen until the next one (one source frame for the last).
            durations = [(after - before) / rate for before, after in zip(positions, positions[1:])] + [1 / rate]
            table = FrameTable([position / rate for position in positions], durations, rate)
            return np.asarray(_select(table, num_frames, fps, jitter), dtype=np.int64)
        _check_sampling_options(num_frames, fps)
        return uniform_positions(len(positions), FRAME_EXTRACTION_FPS, num_frames, jitter)

    def _decode_and_sample_videos(
        self,
        videos,
        video_metadata: VideoMetadata | dict | list | None,
        do_sample_frames: bool | None = None,
        sample_indices_fn=None,
    ) -> tuple[list[_Video], list[VideoMetadata]]:
        """Splits the input into videos and chooses the frames of those given as frames or image paths (nothing is
        decoded yet: encoded videos are decoded in `_preprocess`, under the call's `DecodeLimits`)."""
        inputs = _as_video_list(videos)
        entries = _as_metadata_list(video_metadata, len(inputs))
        prepared = []
        for index, (video, entry) in enumerate(zip(inputs, entries)):
            if _is_encoded_video(video):
                if entry is not None:
                    raise ValueError(
                        f"Video {index} ({_describe(video)}) is an encoded video whose frame rate and timestamps are "
                        "read from the file: `video_metadata` is only for videos given as frames (pass None for it)."
                    )
                metadata = VideoMetadata(total_num_frames=0)
                prepared.append(_Video(metadata=metadata, index=index, encoded=video, sample=bool(do_sample_frames)))
                continue
            image_paths = list(video) if _is_image_path_list(video) else None
            if image_paths is None and len(video) == 0:
                raise ValueError(f"Video {index} has no frames.")
            metadata = _frames_metadata(entry, len(video), index)
            positions = _source_positions(metadata)
            if do_sample_frames:
                indices = [int(i) for i in sample_indices_fn(metadata=metadata)]
            else:
                indices = list(range(len(video)))
            # As for files, `frames_indices` are the chosen frames' indices in the source video.
            metadata.frames_indices = [positions[i] for i in indices]
            rate = metadata.fps
            timestamps = [positions[i] / rate for i in indices] if rate else [math.nan] * len(indices)
            prepared.append(
                _Video(
                    metadata=metadata,
                    index=index,
                    frames=None if image_paths is not None else video,
                    image_paths=image_paths,
                    indices=indices,
                    timestamps=timestamps,
                )
            )
        return prepared, [video.metadata for video in prepared]

    def _prepare_input_videos(
        self, videos: list[_Video], do_convert_rgb: bool | None = None, input_data_format=None, device=None
    ) -> list[_Video]:
        # Frames are always converted to RGB (the model reads three channels); decoding waits for `_preprocess`.
        for video in videos:
            video.input_data_format, video.device = input_data_format, device
        return videos

    def _preprocess(
        self,
        videos: list[_Video],
        num_frames: int,
        fps: float,
        random_frame_jitter: bool,
        pad_to_max_frames: bool,
        return_timestamps: bool,
        video_backend: str,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        _check_sampling_options(num_frames, fps)
        _check_backend(video_backend)
        limits = DecodeLimits.from_env(**{name: kwargs.pop(name, None) for name in _DECODE_LIMIT_FIELDS})
        # Every frame count is checked before the first video is decoded.
        for video in videos:
            if video.indices is not None and len(video.indices) > num_frames:
                raise _too_many_frames(video.index, len(video.indices), num_frames)

        clips, timestamps = [], []
        for video in videos:
            if video.encoded is not None:
                decoded = self._decode(video, num_frames, fps, random_frame_jitter, video_backend, limits)
                frames = torch.from_numpy(np.stack(decoded.frames)).permute(0, 3, 1, 2)
                frame_times = decoded.timestamps
            elif video.image_paths is not None:
                chosen = [video.image_paths[i] for i in video.indices]
                frames = _frames_to_uint8_rgb([_read_image(path, limits) for path in chosen])
                frame_times = video.timestamps
            else:
                frames = _frames_to_uint8_rgb(_take(video.frames, video.indices), video.input_data_format)
                frame_times = video.timestamps
            if video.device is not None:
                frames = frames.to(video.device)
            clips.append(frames)
            timestamps.append(frame_times)

        processed = super()._preprocess(videos=clips, return_tensors=None, **kwargs)["pixel_values_videos"]
        num_slots = num_frames if pad_to_max_frames else max(len(clip) for clip in processed)
        first = processed[0]
        one_by_one = []
        for index, (clip, frame_times) in enumerate(zip(processed, timestamps)):
            if clip.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"Frames of video {index} are {tuple(clip.shape[1:])} after resizing but {tuple(first.shape[1:])} "
                    "for video 0; keep `do_center_crop=True` to batch videos of different sizes."
                )
            video = {
                "pixel_values_videos": clip[None].float(),
                "video_mask": torch.ones((1, len(clip)), dtype=torch.int64),
            }
            if return_timestamps:
                video["video_timestamps"] = torch.tensor(frame_times, dtype=torch.float64)[None]
            one_by_one.append(video)
        return BatchFeature(data=stack_videos(one_by_one, num_slots), tensor_type=return_tensors)

    def _decode(
        self, video: _Video, num_frames: int, fps: float, jitter: bool, backend: str, limits: DecodeLimits
    ) -> DecodedFrames:
        """Decodes the frames of an encoded video that the sampling rule (or, without sampling, every frame) picks,
        and fills in its metadata. The training jitter draws from torch's global generator, which
        `torch.manual_seed` and every DataLoader worker seed."""
        picked = {}

        def select(table: FrameTable) -> list[int]:
            if video.sample:
                indices = _select(table, num_frames, fps, jitter)
            elif len(table.times) > num_frames:
                raise _too_many_frames(video.index, len(table.times), num_frames, _describe(video.encoded))
            else:
                indices = list(range(len(table.times)))
            picked.update(table=table, indices=indices)
            return indices

        source = video.encoded
        if isinstance(source, dict):
            source = _dict_source(source, video.index)
        if _is_torchcodec_decoder(source):
            backend = "torchcodec"
            decoded = _read_torchcodec_decoder(source, select, limits)
        else:
            decoded = read_video_frames(source, select, backend=backend, limits=limits)
        table = picked["table"]
        last_duration = table.durations[-1] or 1 / table.average_fps
        height, width = decoded.frames[0].shape[:2]
        video.metadata.update(
            {
                "total_num_frames": len(table.times),
                "fps": table.average_fps,
                "duration": table.times[-1] - table.times[0] + last_duration,
                "height": height,
                "width": width,
                "video_backend": backend,
                "frames_indices": picked["indices"],
            }
        )
        return decoded

    def center_crop(self, image: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        # torchvision's CenterCrop (the authors' transform) rounds the offset to the nearest pixel.
        return tvF.center_crop(image, [size.height, size.width])


# ----------------------------------------------------------------------------------------------------------------------
# Sampling options


# Every video of a batch is padded to `num_frames` slots of float32 pixels (0.6 MB each at 224 px), allocated before
# any frame is decoded; the model's frame-position table has 77 rows. A larger request is refused before any work.
MAX_NUM_FRAMES = 1024
# The longest span of frames given directly (their times are index / fps): far beyond any video, within every integer.
MAX_FRAMES_SPAN_SECONDS = 1e9


def _check_sampling_options(num_frames, fps) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_NUM_FRAMES:
        raise ValueError(
            f"`num_frames` must be an integer from 1 to {MAX_NUM_FRAMES} (CLIP2Video scores at most 77 frames), "
            f"got {num_frames!r}."
        )
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= FRAME_EXTRACTION_FPS:
        raise ValueError(f"`fps` must be in (0, {FRAME_EXTRACTION_FPS}], got {fps!r}.")


def stack_videos(videos: list[dict[str, torch.Tensor]], num_frames: int | None = None) -> dict[str, torch.Tensor]:
    """Processed videos as one batch, the time axis padded to `num_frames` (default: the longest): padding frames
    are zeros with `video_mask` 0 and `video_timestamps` NaN. The one rule for padding time, used by the processor
    itself and by callers that process videos one at a time (e.g. to survive a video that fails to decode).

    Args:
        videos: each a dict of `pixel_values_videos` `[B_i, T_i, 3, H, W]`, `video_mask` `[B_i, T_i]` and optionally
            `video_timestamps` `[B_i, T_i]` (all videos or none), as the processor returns them.
        num_frames: the padded length, at least the longest `T_i`.

    Returns:
        `dict[str, torch.Tensor]`: the same keys, `[sum B_i, num_frames, ...]`.
    """
    longest = max(video["video_mask"].shape[1] for video in videos)
    num_frames = longest if num_frames is None else num_frames
    if num_frames < longest:
        raise ValueError(f"cannot pad {longest} frames to {num_frames}")
    padding = {"pixel_values_videos": 0, "video_mask": 0, "video_timestamps": math.nan}

    def pad(tensor: torch.Tensor, value: float) -> torch.Tensor:
        missing = num_frames - tensor.shape[1]
        if missing == 0:
            return tensor
        return torch.cat([tensor, tensor.new_full((tensor.shape[0], missing, *tensor.shape[2:]), value)], dim=1)

    return {
        key: torch.cat([pad(video[key], value) for video in videos]) for key, value in padding.items() if key in videos[0]
    }


def _check_backend(backend) -> None:
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"`video_backend` must be one of {', '.join(VIDEO_BACKENDS)}, got {backend!r}.")


def _select(table: FrameTable, num_frames: int, fps: float, jitter: bool) -> list[int]:
    _check_sampling_options(num_frames, fps)
    return select_source_frames(
        table.times, table.durations, table.nominal_fps, sampling_fps=fps, max_frames=num_frames, random_jitter=jitter
    )


def _too_many_frames(index: int, count: int, num_frames: int, name: str | None = None) -> ValueError:
    what = f"Video {index}" + (f" ({name})" if name else "")
    return ValueError(
        f"{what} has {count} frames but `num_frames` is {num_frames}: with `do_sample_frames=False` every frame is "
        "used. Sample them (`do_sample_frames=True`) or raise `num_frames`."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Input forms


def _is_pil_image(item) -> bool:
    return type(item).__module__.startswith("PIL.")


def _is_frame(item) -> bool:
    if _is_pil_image(item):
        return True
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3)


def _is_torchcodec_decoder(item) -> bool:
    return type(item).__module__.startswith("torchcodec.") and hasattr(item, "get_frames_at")


def _is_image_path(item) -> bool:
    return isinstance(item, (str, os.PathLike)) and os.fsdecode(os.fspath(item)).lower().endswith(IMAGE_EXTENSIONS)


def _is_image_path_list(item) -> bool:
    return isinstance(item, (list, tuple)) and len(item) > 0 and all(_is_image_path(path) for path in item)


def _is_encoded_video(item) -> bool:
    """A video still to be decoded: a path or URL, bytes, a binary file object, a `datasets.Video(decode=False)`
    dict, or a torchcodec decoder."""
    if isinstance(item, (str, os.PathLike)):
        return not _is_image_path(item)
    if isinstance(item, (bytes, bytearray, memoryview)) or _is_torchcodec_decoder(item):
        return True
    if isinstance(item, dict):
        return set(item) <= {"path", "bytes"} and bool(item)
    return callable(getattr(item, "read", None))


def _describe(video) -> str:
    if isinstance(video, dict):
        return describe_video(video.get("path") or video.get("bytes") or "<empty dict>")
    return describe_video(video)


def _as_video_list(videos) -> list:
    """One entry per video: an encoded video, a 4D array or tensor, a list of frames or a list of image paths."""
    if _is_encoded_video(videos) or _is_image_path_list(videos):
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
                _is_image_path_list(item) or (len(item) > 0 and all(_is_frame(frame) for frame in item))
            )
            is_array = isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4
            if not (_is_encoded_video(item) or is_frames or is_array):
                raise ValueError(
                    f"Video {index} of the batch is a {type(item).__name__}; expected a path or URL, bytes, a binary "
                    "file object, a {'path', 'bytes'} dict, a torchcodec decoder, a 4D array or tensor of frames, a "
                    "list of frames or a list of frame image paths."
                )
        return list(videos)
    raise ValueError(f"Unsupported video input of type {type(videos).__name__}.")


def _as_metadata_list(video_metadata, num_videos: int) -> list:
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


def _frames_metadata(entry: dict | None, count: int, index: int) -> VideoMetadata:
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
        _checked_frame_rate(fps, total, f"Video {index}")
    duration = total / fps if fps else entry.get("duration")
    return VideoMetadata(
        total_num_frames=total, fps=fps, duration=duration, video_backend=None, frames_indices=source_indices
    )


def _checked_frame_rate(fps, total: int, where: str) -> float:
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


def _source_positions(metadata: VideoMetadata) -> list[int]:
    """The source index of each given frame: `frames_indices` when the metadata has them, else 0, 1, ..."""
    if metadata.frames_indices is not None:
        return list(metadata.frames_indices)
    return list(range(metadata.total_num_frames))


def _dict_source(video: dict, index: int):
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


def _take(frames, indices: list[int]):
    if isinstance(frames, (list, tuple)):
        return [frames[i] for i in indices]
    return frames[torch.as_tensor(indices)] if isinstance(frames, torch.Tensor) else frames[np.asarray(indices)]


# ----------------------------------------------------------------------------------------------------------------------
# Decoding


def _read_image(path, limits: DecodeLimits) -> np.ndarray:
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


def _read_torchcodec_decoder(decoder, select_frames, limits: DecodeLimits) -> DecodedFrames:
    """The chosen frames of a torchcodec `VideoDecoder` (what `datasets.Video()` yields), from its metadata's frame
    count and average rate, within `limits`."""
    name = f"<{type(decoder).__name__} object>"
    metadata = decoder.metadata
    width, height = metadata.width or 0, metadata.height or 0
    if width * height > limits.max_frame_pixels:
        what = f"its frame size {width}x{height} in pixels"
        raise limit_error(name, what, width * height, "max_frame_pixels", limits.max_frame_pixels)
    num_frames = metadata.num_frames or 0
    average_fps = float(metadata.average_fps or 0)
    if num_frames == 0 or not 0 < average_fps < math.inf:
        raise ValueError(f"Cannot read video {name}: no frames or no frame rate in its metadata.")
    if num_frames > limits.max_source_frames:
        raise limit_error(name, "its frame count", num_frames, "max_source_frames", limits.max_source_frames)
    if num_frames / average_fps > limits.max_duration_seconds:
        duration = round(num_frames / average_fps, 3)
        limit = limits.max_duration_seconds
        raise limit_error(name, "its duration in seconds", duration, "max_duration_seconds", limit)
    begin = float(getattr(metadata, "begin_stream_seconds", None) or 0.0)
    table = FrameTable(
        times=[begin + index / average_fps for index in range(num_frames)],
        durations=[1 / average_fps] * num_frames,
        average_fps=average_fps,
    )
    batch = decoder.get_frames_at(indices=select_frames(table))
    data = batch.data
    if data.shape[1] in (1, 3) and tuple(data.shape[2:]) == (height, width):
        data = data.permute(0, 2, 3, 1)  # the decoder's default "NCHW" order
    frames = [frame.numpy() for frame in data]
    return DecodedFrames(frames=frames, timestamps=[float(t) for t in batch.pts_seconds])


# ----------------------------------------------------------------------------------------------------------------------
# Frames given directly


def _frames_to_uint8_rgb(video, input_data_format=None) -> torch.Tensor:
    """A video given as frames, as a uint8 RGB tensor `[frames, 3, height, width]` (channels-last in memory, the
    layout torch's uint8 antialiased resize is fastest with)."""
    if len(video) == 0:
        raise ValueError("Got a video with no frames.")
    if isinstance(video, (list, tuple)):
        frames = [_frame_to_rgb_hwc(frame, input_data_format) for frame in video]
        sizes = {tuple(frame.shape[:2]) for frame in frames}
        if len(sizes) > 1:
            raise ValueError(f"All frames of a video must have the same size, got {sorted(sizes)}.")
        return _with_a_size(torch.stack(frames).permute(0, 3, 1, 2))
    video = _as_uint8_tensor(video)
    if input_data_format is None:
        input_data_format = "channels_last" if video.shape[-1] in (1, 3, 4) else "channels_first"
    if input_data_format != "channels_last":
        video = video.permute(0, 2, 3, 1)
    return _with_a_size(_rgb_channels(video).permute(0, 3, 1, 2))


def _with_a_size(frames: torch.Tensor) -> torch.Tensor:
    """`[frames, 3, height, width]` frames, refused when they have no pixels (resizing would divide by zero)."""
    if frames.shape[-2] == 0 or frames.shape[-1] == 0:
        raise ValueError(f"Video frames must have a size, got {frames.shape[-2]}x{frames.shape[-1]} pixels.")
    return frames


def _frame_to_rgb_hwc(frame, input_data_format=None) -> torch.Tensor:
    if _is_pil_image(frame):
        return torch.from_numpy(_pil_to_rgb(frame, f"<PIL image of mode {frame.mode}>"))
    frame = _as_uint8_tensor(frame)
    if frame.ndim == 2:
        return _rgb_channels(frame[..., None])
    if frame.ndim != 3:
        raise ValueError(f"A video frame must have 2 or 3 dimensions, got shape {tuple(frame.shape)}.")
    if input_data_format is None:
        input_data_format = "channels_last" if frame.shape[-1] in (1, 3, 4) else "channels_first"
    return _rgb_channels(frame if input_data_format == "channels_last" else frame.permute(1, 2, 0))


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


def _rgb_channels(frames: torch.Tensor) -> torch.Tensor:
    """Channels-last grey, RGB or RGBA frames as RGB: grey repeated, alpha dropped (as `PIL.Image.convert("RGB")`)."""
    channels = frames.shape[-1]
    if channels == 1:
        return frames.expand(*frames.shape[:-1], 3)
    if channels == 3:
        return frames
    if channels == 4:
        return frames[..., :3]
    raise ValueError(
        f"Video frames must have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(frames.shape)}."
    )


CLIP2VideoVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["CLIP2VideoVideoProcessor"]
