"""CLIP2Video for transformers: `CLIP2VideoConfig` and `CLIP2VideoModel`.

Importing the package registers both with the Auto classes, so `save_pretrained` writes `auto_map` and copies this
code next to the weights, and `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where the package is
not installed.
"""

from transformers import AutoConfig, AutoModel

from .configuration_clip2video import CLIP2VideoConfig
from .modeling_clip2video import CLIP2VideoModel, CLIP2VideoOutput, CLIP2VideoTextOutput, CLIP2VideoVideoOutput


CLIP2VideoConfig.register_for_auto_class()
CLIP2VideoModel.register_for_auto_class("AutoModel")
AutoConfig.register(CLIP2VideoConfig.model_type, CLIP2VideoConfig, exist_ok=True)
AutoModel.register(CLIP2VideoConfig, CLIP2VideoModel, exist_ok=True)

__all__ = ["CLIP2VideoConfig", "CLIP2VideoModel", "CLIP2VideoOutput", "CLIP2VideoTextOutput", "CLIP2VideoVideoOutput"]
