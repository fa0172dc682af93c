"""CLIP2Video processing: frame sampling and decoding, video processor, processor and an offline CLIP tokenizer.

The classes are imported when first used, so that `media_types_clip2video` (the video and image file endings) can be
read without torch."""

import importlib
from typing import TYPE_CHECKING


_EXPORTS = {
    "CLIP2VideoProcessor": ".processing_clip2video",
    "CLIP2VideoVideoProcessor": ".video_processing_clip2video",
    "offline_clip_tokenizer": ".clip_tokenizer_offline",
}

if TYPE_CHECKING:
    from .clip_tokenizer_offline import offline_clip_tokenizer
    from .processing_clip2video import CLIP2VideoProcessor
    from .video_processing_clip2video import CLIP2VideoVideoProcessor


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["CLIP2VideoProcessor", "CLIP2VideoVideoProcessor", "offline_clip_tokenizer"]
