"""Video processor for CLIP2Video: from video files or frames to `pixel_values_videos` and `video_mask`."""

import math
import os

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .frame_sampling_clip2video import FRAME_EXTRACTION_FPS, select_source_frames, uniform_positions
from .video_decoding_clip2video import VIDEO_BACKENDS, FrameTable, read_video_frames


class CLIP2VideoVideoProcessorKwargs(VideosKwargs, total=False):
    """
    sampling_fps (`float`, *optional*, defaults to `self.sampling_fps`):
        Frames per second kept from the video, at most 5 (the rate the authors extract frames at). 2.5 for MSR-VTT
        (the authors' `feature_framerate=2`), 5 for MSVD and VATEX (`feature_framerate=1` in their test scripts).
    max_frames (`int`, *optional*, defaults to `self.max_frames`):
        At most this many frames per video, picked uniformly when more are sampled.
    random_frame_jitter (`bool`, *optional*, defaults to `self.random_frame_jitter`):
        Training-time augmentation of the authors: move every inner pick randomly within its interval.
    pad_to_max_frames (`bool`, *optional*, defaults to `self.pad_to_max_frames`):
        Pad the time axis to `max_frames`; otherwise to the longest video of the batch.
    return_timestamps (`bool`, *optional*, defaults to `self.return_timestamps`):
        Also return `video_timestamps [batch, frames]`: the time in seconds of every sampled frame, NaN for padding.
    video_backend (`str`, *optional*, defaults to `self.video_backend`):
        Decoder for video files: `"pyav"`, `"torchcodec"` or `"decord"`.
    """

    sampling_fps: float | int | None
    max_frames: int | None
    random_frame_jitter: bool | None
    pad_to_max_frames: bool | None
    return_timestamps: bool | None
    video_backend: str | None


# Inputs of `VideosKwargs` that this processor replaces with its own, clearer ones.
_REPLACED_KWARGS = {"fps": "sampling_fps", "num_frames": "max_frames", "do_sample_frames": "sampling_fps/max_frames"}


class CLIP2VideoVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into the inputs of `CLIP2VideoModel`, sampling frames as the CLIP2Video authors do.

    Frame sampling. The authors extract JPEG frames with `ffmpeg -r 5`, keep `floor(n * sampling_fps / 5)` of the `n`
    images uniformly (`np.linspace` rounded down) and, when more than `max_frames` remain, `max_frames` of them
    uniformly. This processor picks the same source frames from the video's own timestamps (packet times, time base
    and average rate, never an assumed frame rate; see `frame_sampling_clip2video`) and decodes only those. It
    differs from the authors' pipeline in two documented ways: a video never yields the same frame twice (ffmpeg
    repeats frames of videos slower than 5 fps), and a video too short to keep any image still yields its first frame.

    Videos can be file paths, `http(s)` URLs, arrays or tensors of frames `(frames, height, width, channels)` or
    `(frames, channels, height, width)` (uint8, 1, 3 or 4 channels), or lists of PIL images; one video or a batch.
    Frames given directly are taken as already extracted: all of them are kept, reduced uniformly to `max_frames` if
    more, unless `video_metadata` gives their frame rate (`{"fps": 30}`), in which case they are sampled like a file.

    Each frame is then prepared as in CLIP: RGB (grey repeated, alpha dropped like `PIL.Image.convert("RGB")`),
    shortest edge resized to 224 with bicubic resampling, centre crop 224, scaled to [0, 1] and normalised with the
    OpenAI CLIP mean and std.

    Returns a `BatchFeature` with:
        - `pixel_values_videos` (`[batch, frames, 3, 224, 224]` float32): zero for padded frames.
        - `video_mask` (`[batch, frames]` int64): 1 for real frames (which come first), 0 for padding.
        - `video_timestamps` (`[batch, frames]` float64, with `return_timestamps=True`): seconds, NaN for padding and
          for frames given without a frame rate.

    Raises:
        `FileNotFoundError`: a video path does not exist.
        `ValueError`: a file is not a video, is truncated or corrupt, or has no decodable frame (the message names the
            file and the reason), or frames have an unsupported shape or dtype.
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
    sampling_fps = FRAME_EXTRACTION_FPS / 2
    max_frames = 12
    random_frame_jitter = False
    pad_to_max_frames = True
    return_timestamps = False
    video_backend = "pyav"
    valid_kwargs = CLIP2VideoVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "video_mask"]

    def __init__(self, **kwargs: Unpack[CLIP2VideoVideoProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(self, videos, **kwargs: Unpack[CLIP2VideoVideoProcessorKwargs]) -> BatchFeature:
        for name, replacement in _REPLACED_KWARGS.items():
            if kwargs.get(name) is not None:
                raise ValueError(f"{type(self).__name__} does not use `{name}`; set `{replacement}` instead.")
        for name in self.valid_kwargs.__annotations__:
            kwargs.setdefault(name, getattr(self, name, None))
        sampling_fps, max_frames = kwargs["sampling_fps"], kwargs["max_frames"]
        if not 0 < sampling_fps <= FRAME_EXTRACTION_FPS:
            raise ValueError(f"`sampling_fps` must be in (0, {FRAME_EXTRACTION_FPS}], got {sampling_fps}.")
        if not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"`max_frames` must be a positive integer, got {max_frames}.")
        if kwargs["video_backend"] not in VIDEO_BACKENDS:
            backends = ", ".join(VIDEO_BACKENDS)
            raise ValueError(f"`video_backend` must be one of {backends}, got {kwargs['video_backend']!r}.")
        if kwargs["data_format"] not in (None, "channels_first"):
            raise ValueError("`pixel_values_videos` are always channels first.")

        videos = _as_video_list(videos)
        metadata = _as_metadata_list(kwargs["video_metadata"], len(videos))
        clips, timestamps = [], []
        for video, video_metadata in zip(videos, metadata):
            frames, frame_times = self._sample_video(video, video_metadata, kwargs)
            if kwargs["device"] is not None:
                frames = frames.to(kwargs["device"])
            clips.append(frames)
            timestamps.append(frame_times)

        image_kwargs = self._standardize_kwargs(
            **{
                name: kwargs[name]
                for name in (
                    "size", "crop_size", "default_to_square", "image_mean", "image_std", "do_resize", "resample",
                    "do_center_crop", "do_rescale", "rescale_factor", "do_normalize",
                )
            }
        )
        self._validate_preprocess_kwargs(**image_kwargs)
        image_kwargs.pop("pad_size")
        processed = self._preprocess(videos=clips, return_tensors=None, **image_kwargs)["pixel_values_videos"]

        num_slots = max_frames if kwargs["pad_to_max_frames"] else max(len(clip) for clip in processed)
        first = processed[0]
        pixel_values_videos = first.new_zeros((len(processed), num_slots, *first.shape[1:]), dtype=torch.float32)
        video_mask = torch.zeros((len(processed), num_slots), dtype=torch.int64)
        for index, clip in enumerate(processed):
            if clip.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"Frames of video {index} are {tuple(clip.shape[1:])} after resizing but {tuple(first.shape[1:])} "
                    "for video 0; keep `do_center_crop=True` to batch videos of different sizes."
                )
            pixel_values_videos[index, : len(clip)] = clip
            video_mask[index, : len(clip)] = 1
        data = {"pixel_values_videos": pixel_values_videos, "video_mask": video_mask}
        if kwargs["return_timestamps"]:
            video_timestamps = torch.full((len(processed), num_slots), math.nan, dtype=torch.float64)
            for index, frame_times in enumerate(timestamps):
                video_timestamps[index, : len(frame_times)] = torch.tensor(frame_times, dtype=torch.float64)
            data["video_timestamps"] = video_timestamps
        return BatchFeature(data=data, tensor_type=kwargs["return_tensors"])

    def _sample_video(self, video, metadata, kwargs) -> tuple[torch.Tensor, list[float]]:
        """Sampled frames of one video as a uint8 `[frames, 3, height, width]` tensor, and their times in seconds.

        The training jitter draws from torch's global generator, which `torch.manual_seed` and every DataLoader
        worker seed.
        """

        def select(table: FrameTable) -> list[int]:
            return select_source_frames(
                table.times,
                table.durations,
                table.average_fps,
                sampling_fps=kwargs["sampling_fps"],
                max_frames=kwargs["max_frames"],
                random_jitter=kwargs["random_frame_jitter"],
            )

        if isinstance(video, (str, os.PathLike)):
            decoded = read_video_frames(video, select, backend=kwargs["video_backend"])
            # Stacked channels-last, the layout torch's uint8 antialiased resize is fastest with.
            frames = torch.from_numpy(np.stack(decoded.frames)).permute(0, 3, 1, 2)
            return frames, decoded.timestamps

        frames = _frames_to_uint8_rgb(video, kwargs["input_data_format"])
        fps = metadata.get("fps") if metadata is not None else None
        if fps:
            num_frames = len(frames)
            chosen = select(FrameTable([i / fps for i in range(num_frames)], [1 / fps] * num_frames, float(fps)))
            return frames[chosen], [i / fps for i in chosen]
        # Frames given without their rate are taken as already extracted: keep all, reduced to `max_frames`.
        chosen = uniform_positions(
            len(frames), FRAME_EXTRACTION_FPS, kwargs["max_frames"], kwargs["random_frame_jitter"]
        )
        return frames[torch.from_numpy(chosen)], [math.nan] * len(chosen)

    def center_crop(self, image: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        # torchvision's CenterCrop (the authors' transform) rounds the offset to the nearest pixel.
        return tvF.center_crop(image, [size.height, size.width])


def _is_frame(item) -> bool:
    if _is_pil_image(item):
        return True
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim in (2, 3)


def _is_pil_image(item) -> bool:
    return type(item).__module__.startswith("PIL.")


def _as_video_list(videos) -> list:
    """One entry per video: a path or URL, a 4D array or tensor, or a list of frames."""
    if isinstance(videos, (str, os.PathLike)) or _is_pil_image(videos):
        return [videos if not _is_pil_image(videos) else [videos]]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
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
            if not (isinstance(item, (str, os.PathLike, list, tuple)) or (hasattr(item, "ndim") and item.ndim == 4)):
                raise ValueError(
                    f"Video {index} of the batch is a {type(item).__name__}; expected a path or URL, a 4D array or "
                    "tensor of frames, or a list of frames."
                )
        return list(videos)
    raise ValueError(f"Unsupported video input of type {type(videos).__name__}.")


def _as_metadata_list(video_metadata, num_videos: int) -> list:
    if video_metadata is None:
        return [None] * num_videos
    if isinstance(video_metadata, (dict, VideoMetadata)):
        video_metadata = [video_metadata]
    if len(video_metadata) != num_videos:
        raise ValueError(f"Got {num_videos} videos but {len(video_metadata)} `video_metadata` entries.")
    return [dict(metadata) if metadata is not None else None for metadata in video_metadata]


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
        return torch.stack(frames).permute(0, 3, 1, 2)
    video = _as_uint8_tensor(video)
    if input_data_format is None:
        input_data_format = "channels_last" if video.shape[-1] in (1, 3, 4) else "channels_first"
    if input_data_format != "channels_last":
        video = video.permute(0, 2, 3, 1)
    return _rgb_channels(video).permute(0, 3, 1, 2)


def _frame_to_rgb_hwc(frame, input_data_format=None) -> torch.Tensor:
    if _is_pil_image(frame):
        return torch.from_numpy(np.array(frame.convert("RGB")))
    frame = _as_uint8_tensor(frame)
    if frame.ndim == 2:
        return _rgb_channels(frame[..., None])
    if frame.ndim != 3:
        raise ValueError(f"A video frame must have 2 or 3 dimensions, got shape {tuple(frame.shape)}.")
    if input_data_format is None:
        input_data_format = "channels_last" if frame.shape[-1] in (1, 3, 4) else "channels_first"
    return _rgb_channels(frame if input_data_format == "channels_last" else frame.permute(1, 2, 0))


def _as_uint8_tensor(array) -> torch.Tensor:
    tensor = torch.as_tensor(array)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"Video frames must be uint8 (0-255), got {tensor.dtype}.")
    return tensor


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
