"""The CLIP2Video pipelines.

Importing this package registers both tasks with transformers, so that in this process
`pipeline("zero-shot-video-classification", model=model, processor=processor)` works with objects already loaded.
A checkpoint carries them through `clip2video.pipelines.publishing` (`save_publishable_checkpoint`, or
`complete_saved_checkpoint(folder)` for a folder already saved): anyone can then run
`pipeline("text-to-video-retrieval", model=folder, trust_remote_code=True)` without this repository.
"""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline_clip2video import (
    HUB_VIDEO_CLASSIFICATION_TASK,
    RETRIEVAL_TASK,
    ZERO_SHOT_TASK,
    CLIP2VideoTextToVideoRetrievalPipeline,
    CLIP2VideoZeroShotVideoClassificationPipeline,
)


PIPELINE_CLASSES = {
    ZERO_SHOT_TASK: CLIP2VideoZeroShotVideoClassificationPipeline,
    RETRIEVAL_TASK: CLIP2VideoTextToVideoRetrievalPipeline,
}

for _task, _pipeline_class in PIPELINE_CLASSES.items():
    PIPELINE_REGISTRY.register_pipeline(_task, pipeline_class=_pipeline_class, pt_model=AutoModel, type="multimodal")


__all__ = [
    "HUB_VIDEO_CLASSIFICATION_TASK",
    "CLIP2VideoTextToVideoRetrievalPipeline",
    "CLIP2VideoZeroShotVideoClassificationPipeline",
    "RETRIEVAL_TASK",
    "ZERO_SHOT_TASK",
]
