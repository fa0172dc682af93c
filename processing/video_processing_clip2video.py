"""Video processor for CLIP2Video: from videos in every form transformers and `datasets` produce to
`pixel_values_videos` and `video_mask`.

The hooks of `BaseVideoProcessor.preprocess` keep their meaning: `sample_frames` picks frames from metadata,
`_decode_and_sample_videos` decodes (only the frames the sampling rule picks) and samples, `_prepare_input_videos`
turns frames into uint8 RGB tensors on the device, `_preprocess` resizes, crops, normalises and pads the time axis.
What the input forms are lives in `video_inputs_clip2video`, decoding in `video_decoding_clip2video`."""

import dataclasses
import math
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict, validate_kwargs
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .frame_sampling_clip2video import FRAME_EXTRACTION_FPS, select_source_frames, uniform_positions
from .video_decoding_clip2video import (
    VIDEO_BACKENDS,
    DecodeLimits,
    FrameTable,
    is_torchcodec_decoder,
    read_video_frames,
)
from .video_inputs_clip2video import (
    as_metadata_list,
    as_video_list,
    checked_frame_rate,
    describe_input,
    dict_source,
    frames_metadata,
    frames_to_uint8_rgb,
    is_encoded_video,
    is_image_path_list,
    read_frame_image,
    source_positions,
    take_frames,
)


logger = logging.get_logger(__name__)

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


# Earlier names of `num_frames` and `fps`, still accepted at construction (with a warning) so that saved folders keep
# loading.
_CONSTRUCTION_ALIASES = {"max_frames": "num_frames", "sampling_fps": "fps"}


class SampledVideo(NamedTuple):
    """One video between the hooks of `preprocess`: its chosen frames and their presentation times in seconds (NaN
    for frames given without a frame rate).

    Attributes:
        frames: the chosen frames, in the form they were given or decoded to (an array, tensor or list of frames).
        timestamps (`list[float]`): one time per frame.
        data_format (`str`, *optional*): `"channels_last"` for frames this processor decoded; None for frames given
            by the caller, whose layout is the call's `input_data_format` (or inferred).
    """

    frames: Any
    timestamps: list[float]
    data_format: str | None = None


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
                logger.warning_once(
                    f"`{old_name}` is deprecated: the video processor's argument is `{name}`. Saved folders with "
                    f"`{old_name}` still load; save them again to write `{name}`."
                )
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

    def preprocess(self, videos, **kwargs: Unpack[CLIP2VideoVideoProcessorKwargs]) -> BatchFeature:
        """`BaseVideoProcessor.preprocess`, except that `_decode_and_sample_videos` also receives the call's
        sampling options, `video_backend` and `DecodeLimits` (the base class passes only `sample_indices_fn`, which
        takes metadata: encoded videos are sampled from their frame table, and decoded under the call's limits), as
        transformers' own processors whose hooks need more do (e.g. Ernie 4.5 VL). The options are checked before
        any video is read."""
        validate_kwargs(
            captured_kwargs=kwargs.keys(),
            valid_processor_keys=list(self.valid_kwargs.__annotations__.keys()) + ["return_tensors"],
        )
        validate_typed_dict(self.valid_kwargs, kwargs)
        kwargs = self._merge_and_standardize_kwargs(**kwargs)

        input_data_format = kwargs.pop("input_data_format")
        do_convert_rgb = kwargs.pop("do_convert_rgb")
        do_sample_frames = kwargs.pop("do_sample_frames")
        device = kwargs.pop("device")
        video_metadata = kwargs.pop("video_metadata")
        video_backend = kwargs.pop("video_backend")
        decode_limits = DecodeLimits.from_env(**{name: kwargs.pop(name, None) for name in _DECODE_LIMIT_FIELDS})
        _check_sampling_options(kwargs["num_frames"], kwargs["fps"])
        _check_backend(video_backend)

        sample_indices_fn = partial(self.sample_frames, **kwargs) if do_sample_frames else None
        videos, video_metadata = self._decode_and_sample_videos(
            videos,
            video_metadata=video_metadata,
            do_sample_frames=do_sample_frames,
            sample_indices_fn=sample_indices_fn,
            num_frames=kwargs["num_frames"],
            fps=kwargs["fps"],
            random_frame_jitter=kwargs["random_frame_jitter"],
            video_backend=video_backend,
            decode_limits=decode_limits,
        )
        videos = self._prepare_input_videos(
            videos=videos, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )

        self._validate_preprocess_kwargs(**kwargs)
        kwargs.pop("data_format")
        return_metadata = kwargs.pop("return_metadata")

        preprocessed_videos = self._preprocess(videos=videos, **kwargs)
        if return_metadata:
            preprocessed_videos["video_metadata"] = video_metadata
        return preprocessed_videos

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
        positions = source_positions(metadata)
        if metadata.fps:
            rate = checked_frame_rate(metadata.fps, positions[-1] + 1 if positions else 0, "The video")
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
        num_frames: int | None = None,
        fps: float | None = None,
        random_frame_jitter: bool | None = None,
        video_backend: str | None = None,
        decode_limits: DecodeLimits | None = None,
    ) -> tuple[list[SampledVideo], list[VideoMetadata]]:
        """Splits the input into videos, chooses their frames and decodes those (the base class's hook).

        Frames given directly are chosen by `sample_indices_fn` (`sample_frames`) from their metadata; encoded videos
        by the authors' rule on the timing of every frame, read from the file before anything is decoded, and only
        the chosen frames are decoded, under `decode_limits`; of frame images only the chosen ones are read. With
        `do_sample_frames=False` every frame is used: a video with more than `num_frames` is an error, raised for
        frames given directly before any video is read and for an encoded video before it is decoded.

        Args:
            num_frames, fps, random_frame_jitter, video_backend (*optional*, default to the processor's own):
                how encoded videos are sampled and decoded.
            decode_limits (`DecodeLimits`, *optional*, defaults to `DecodeLimits.from_env()`): the call's limits.

        Returns:
            `tuple[list[SampledVideo], list[VideoMetadata]]`: the chosen frames of each video with their times, and
            each video's metadata (encoded videos: of the file, filled in as they are decoded).
        """
        num_frames = self.num_frames if num_frames is None else num_frames
        fps = self.fps if fps is None else fps
        jitter = self.random_frame_jitter if random_frame_jitter is None else random_frame_jitter
        video_backend = self.video_backend if video_backend is None else video_backend
        limits = DecodeLimits.from_env() if decode_limits is None else decode_limits
        if do_sample_frames and sample_indices_fn is None:
            sample_indices_fn = partial(self.sample_frames, num_frames=num_frames, fps=fps, random_frame_jitter=jitter)
        inputs = as_video_list(videos)
        entries = as_metadata_list(video_metadata, len(inputs))

        # First every choice that needs no decoding, so that a frame count over `num_frames` is refused before any
        # video is read.
        chosen = []
        for index, (video, entry) in enumerate(zip(inputs, entries)):
            if is_encoded_video(video):
                if entry is not None:
                    raise ValueError(
                        f"Video {index} ({describe_input(video)}) is an encoded video whose frame rate and timestamps "
                        "are read from the file: `video_metadata` is only for videos given as frames (pass None for "
                        "it)."
                    )
                chosen.append((VideoMetadata(total_num_frames=0), None, None))
                continue
            if not is_image_path_list(video) and len(video) == 0:
                raise ValueError(f"Video {index} has no frames.")
            metadata = frames_metadata(entry, len(video), index)
            positions = source_positions(metadata)
            if do_sample_frames:
                indices = [int(i) for i in sample_indices_fn(metadata=metadata)]
            else:
                indices = list(range(len(video)))
            # As for files, `frames_indices` are the chosen frames' indices in the source video.
            metadata.frames_indices = [positions[i] for i in indices]
            rate = metadata.fps
            timestamps = [positions[i] / rate for i in indices] if rate else [math.nan] * len(indices)
            chosen.append((metadata, indices, timestamps))
        for index, (_, indices, _) in enumerate(chosen):
            if indices is not None and len(indices) > num_frames:
                raise _too_many_frames(index, len(indices), num_frames)

        sampled = []
        for index, (video, (metadata, indices, timestamps)) in enumerate(zip(inputs, chosen)):
            if indices is None:
                select = partial(_choose_from_table, index=index, name=describe_input(video), sample=do_sample_frames,
                                 num_frames=num_frames, fps=fps, jitter=jitter)
                sampled.append(_decode(video, index, metadata, select, video_backend, limits))
            elif is_image_path_list(video):
                images = [read_frame_image(video[i], limits) for i in indices]
                sampled.append(SampledVideo(images, timestamps, "channels_last"))
            else:
                sampled.append(SampledVideo(take_frames(video, indices), timestamps))
        return sampled, [metadata for metadata, _, _ in chosen]

    def _prepare_input_videos(
        self,
        videos: list[SampledVideo],
        do_convert_rgb: bool | None = None,
        input_data_format=None,
        device=None,
    ) -> list[SampledVideo]:
        """The chosen frames of each video as uint8 RGB tensors `[frames, 3, height, width]` on `device` (the base
        class's hook): floating point frames in [0, 1] and 16-bit frames become uint8, and with `do_convert_rgb`
        grey frames are repeated and alpha dropped (as `PIL.Image.convert("RGB")`); without it frames given with
        other than 3 channels are refused. Decoders output RGB already."""
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        prepared = []
        for video in videos:
            data_format = video.data_format or input_data_format
            frames = frames_to_uint8_rgb(video.frames, data_format, convert_rgb=do_convert_rgb)
            if device is not None:
                frames = frames.to(device)
            prepared.append(video._replace(frames=frames))
        return prepared

    def _preprocess(
        self,
        videos: list[SampledVideo],
        num_frames: int,
        fps: float,
        random_frame_jitter: bool,
        pad_to_max_frames: bool,
        return_timestamps: bool,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """Resizes, crops and normalises the frames (the base class's `_preprocess`) and pads the time axis to
        `num_frames` (or the longest video), with `video_mask` and, on request, `video_timestamps`."""
        processed = super()._preprocess(videos=[video.frames for video in videos], return_tensors=None, **kwargs)
        processed = processed["pixel_values_videos"]
        num_slots = num_frames if pad_to_max_frames else max(len(clip) for clip in processed)
        first = processed[0]
        one_by_one = []
        for index, (clip, video) in enumerate(zip(processed, videos)):
            if clip.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"Frames of video {index} are {tuple(clip.shape[1:])} after resizing but {tuple(first.shape[1:])} "
                    "for video 0; keep `do_center_crop=True` to batch videos of different sizes."
                )
            output = {
                "pixel_values_videos": clip[None].float(),
                "video_mask": torch.ones((1, len(clip)), dtype=torch.int64),
            }
            if return_timestamps:
                output["video_timestamps"] = torch.tensor(video.timestamps, dtype=torch.float64)[None]
            one_by_one.append(output)
        return BatchFeature(data=stack_videos(one_by_one, num_slots), tensor_type=return_tensors)

    def center_crop(self, image: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        # torchvision's CenterCrop (the authors' transform) rounds the offset to the nearest pixel.
        return tvF.center_crop(image, [size.height, size.width])


# ----------------------------------------------------------------------------------------------------------------------
# Sampling options


# Every video of a batch is padded to `num_frames` slots of float32 pixels (0.6 MB each at 224 px), allocated before
# any frame is decoded; the model's frame-position table has 77 rows. A larger request is refused before any work.
MAX_NUM_FRAMES = 1024


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


def _choose_from_table(
    table: FrameTable, index: int, name: str, sample: bool, num_frames: int, fps: float, jitter: bool
) -> list[int]:
    """The frames of an encoded video to decode, from the timing of all its frames: the sampling rule's or, without
    sampling, every frame (more than `num_frames` is an error, raised before anything is decoded). The training
    jitter draws from torch's global generator, which `torch.manual_seed` and every DataLoader worker seed."""
    if sample:
        return _select(table, num_frames, fps, jitter)
    if len(table.times) > num_frames:
        raise _too_many_frames(index, len(table.times), num_frames, name)
    return list(range(len(table.times)))


def _decode(video, index: int, metadata: VideoMetadata, select, backend: str, limits: DecodeLimits) -> SampledVideo:
    """Decodes the frames `select` chooses from an encoded video's frame table and fills in its metadata."""
    picked = {}

    def select_and_keep(table: FrameTable) -> list[int]:
        picked.update(table=table, indices=select(table))
        return picked["indices"]

    source = dict_source(video, index) if isinstance(video, dict) else video
    decoded = read_video_frames(source, select_and_keep, backend=backend, limits=limits)
    table = picked["table"]
    last_duration = table.durations[-1] or 1 / table.average_fps
    height, width = decoded.frames[0].shape[:2]
    metadata.update(
        {
            "total_num_frames": len(table.times),
            "fps": table.average_fps,
            "duration": table.times[-1] - table.times[0] + last_duration,
            "height": height,
            "width": width,
            # A torchcodec decoder is read by torchcodec, whatever the backend asked for.
            "video_backend": "torchcodec" if is_torchcodec_decoder(source) else backend,
            "frames_indices": picked["indices"],
        }
    )
    return SampledVideo(np.stack(decoded.frames), decoded.timestamps, "channels_last")



CLIP2VideoVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["CLIP2VideoVideoProcessor", "SampledVideo", "stack_videos"]
