"""Processor for CLIP2Video: the CLIP tokenizer for captions and `CLIP2VideoVideoProcessor` for videos."""

import html
import json
import re

from transformers import AutoTokenizer
from transformers.processing_utils import ProcessorMixin
from transformers.utils import IMAGE_PROCESSOR_NAME, PROCESSOR_NAME, VIDEO_PROCESSOR_NAME, cached_file, logging

from .video_processing_clip2video import CLIP2VideoVideoProcessor


logger = logging.get_logger(__name__)


class CLIP2VideoProcessor(ProcessorMixin):
    r"""
    Wraps a CLIP tokenizer and a [`CLIP2VideoVideoProcessor`] into one processor.

    `processor(text=captions, videos=videos, return_tensors="pt")` returns exactly the inputs of `CLIP2VideoModel`:
    `input_ids` and `attention_mask` `[batch, 32]`, `pixel_values_videos [batch, frames, 3, 224, 224]` and
    `video_mask [batch, frames]`. Text alone or videos alone work too.

    Captions are tokenised as in the original code: cleaned like OpenAI's `SimpleTokenizer` (`ftfy.fix_text` when ftfy
    is installed, HTML entities unescaped, whitespace collapsed), lower-cased byte-level BPE, start and end tokens, at
    most 32 tokens in all (30 word pieces), padded to 32. The ids of real tokens equal the original tokenizer's; padding
    uses the tokenizer's pad token (`<|endoftext|>` for CLIP checkpoints) where the authors wrote 0, which makes no
    difference to the model (padding comes after the end token, which is where CLIP reads the caption embedding, and
    its attention mask is 0).

    Args:
        video_processor ([`CLIP2VideoVideoProcessor`]): the video processor.
        tokenizer ([`CLIPTokenizer`]): a CLIP tokenizer, e.g. `processing.offline_clip_tokenizer()` or the one of
            `openai/clip-vit-base-patch32`.
    """

    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 32}

    def __init__(self, video_processor=None, tokenizer=None, **kwargs):
        super().__init__(video_processor, tokenizer, **kwargs)

    def __call__(self, text=None, videos=None, **kwargs):
        if text is not None:
            is_batch = isinstance(text, (list, tuple))
            text = [clean_caption(caption) for caption in text] if is_batch else clean_caption(text)
        return super().__call__(text=text, videos=videos, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved CLIP2Video processor, or build one from any CLIP checkpoint (e.g.
        `"openai/clip-vit-base-patch32"`): its tokenizer, and the paper's video processing at the checkpoint's image
        size and normalisation."""
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }

        def find(filename):
            return cached_file(
                pretrained_model_name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs
            )

        if find(PROCESSOR_NAME) or find(VIDEO_PROCESSOR_NAME):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

        image_settings = {}
        image_processor_file = find(IMAGE_PROCESSOR_NAME)
        if image_processor_file:
            with open(image_processor_file, encoding="utf-8") as file:
                image_config = json.load(file)
            keys = ("size", "crop_size", "image_mean", "image_std")
            image_settings = {key: image_config[key] for key in keys if image_config.get(key) is not None}
        video_processor = CLIP2VideoVideoProcessor(**image_settings)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return cls(video_processor=video_processor, tokenizer=tokenizer)

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs=None, **kwargs) -> dict[str, dict]:
        """`ProcessorMixin._merge_kwargs`, except that a keyword no modality accepts is an error (the base class logs
        it and drops it, so a misspelt `num_frame=4` would silently give 12 frames)."""
        kwargs_class = ModelProcessorKwargs or self.valid_processor_kwargs
        known = set(kwargs_class.__annotations__) | {"common_kwargs", "text", "images", "videos", "audio"}
        for modality, attribute in _MODALITIES.items():
            modality_kwargs = kwargs_class.__annotations__.get(modality)
            known |= set(getattr(modality_kwargs, "__annotations__", {}))
            valid_kwargs = getattr(getattr(self, attribute, None), "valid_kwargs", None)
            known |= set(getattr(valid_kwargs, "__annotations__", {}))
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown keyword argument(s): {', '.join(unknown)}.")
        return super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs=tokenizer_init_kwargs, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return self.tokenizer.model_input_names + self.video_processor.model_input_names


_MODALITIES = {
    "text_kwargs": "tokenizer",
    "images_kwargs": "image_processor",
    "videos_kwargs": "video_processor",
    "audio_kwargs": "feature_extractor",
}


def clean_caption(caption: str) -> str:
    """Clean a caption as OpenAI's CLIP tokenizer does before BPE (lower-casing is left to the tokenizer)."""
    if not isinstance(caption, str):
        raise ValueError(f"Captions must be strings, got {type(caption).__name__}.")
    try:
        import ftfy

        caption = ftfy.fix_text(caption)
    except ImportError:
        logger.warning_once(
            "ftfy is not installed: captions are not repaired with `ftfy.fix_text` as in the original CLIP tokenizer, "
            "so token ids can differ for text with curly quotes or broken unicode. `pip install ftfy` to match exactly."
        )
    caption = html.unescape(html.unescape(caption))
    return re.sub(r"\s+", " ", caption).strip()


CLIP2VideoProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CLIP2VideoProcessor"]
