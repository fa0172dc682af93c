"""CLIP2Video processing: frame sampling and decoding, video processor, processor and an offline CLIP tokenizer."""

from .clip_tokenizer_offline import offline_clip_tokenizer
from .processing_clip2video import CLIP2VideoProcessor
from .video_processing_clip2video import CLIP2VideoVideoProcessor


__all__ = ["CLIP2VideoProcessor", "CLIP2VideoVideoProcessor", "offline_clip_tokenizer"]
