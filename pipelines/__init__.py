"""The CLIP2Video pipelines, and how a checkpoint folder gets them.

Importing this package registers both tasks with transformers, so that in this process
`pipeline("zero-shot-video-classification", model=model, processor=processor)` works with objects already loaded.
`pipelines.publishing.save_publishable_checkpoint` (or `add_custom_pipelines(folder)` for a folder already saved)
makes a checkpoint carry them: anyone can then run
`pipeline("text-to-video-retrieval", model=folder, trust_remote_code=True)` without this repository.
"""

import json
import shutil
from pathlib import Path

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline_clip2video import (
    HUB_VIDEO_CLASSIFICATION_TASK,
    RETRIEVAL_TASK,
    ZERO_SHOT_TASK,
    CLIP2VideoTextToVideoRetrievalPipeline,
    CLIP2VideoZeroShotVideoClassificationPipeline,
)


PIPELINE_CODE = Path(__file__).with_name("pipeline_clip2video.py")
PIPELINE_CLASSES = {
    ZERO_SHOT_TASK: CLIP2VideoZeroShotVideoClassificationPipeline,
    RETRIEVAL_TASK: CLIP2VideoTextToVideoRetrievalPipeline,
}

for _task, _pipeline_class in PIPELINE_CLASSES.items():
    PIPELINE_REGISTRY.register_pipeline(_task, pipeline_class=_pipeline_class, pt_model=AutoModel, type="multimodal")


def custom_pipelines_config() -> dict[str, dict]:
    """The `custom_pipelines` entry of a checkpoint's `config.json` that lists both tasks, in the format
    `Pipeline.save_pretrained` writes (which can only record one pipeline at a time).

    The zero-shot pipeline is listed a second time as `video-classification`: the Hub shows
    `pipeline("video-classification", model=..., trust_remote_code=True)` for a card with that `pipeline_tag`, and a
    checkpoint's `custom_pipelines` take precedence over transformers' own task of that name for this checkpoint only
    (in this process the task is not re-registered, so transformers' `video-classification` stays untouched).
    """
    checkpoint_tasks = {**PIPELINE_CLASSES, HUB_VIDEO_CLASSIFICATION_TASK: PIPELINE_CLASSES[ZERO_SHOT_TASK]}
    return {
        task: {"impl": f"{PIPELINE_CODE.stem}.{pipeline_class.__name__}", "pt": ["AutoModel"], "type": "multimodal"}
        for task, pipeline_class in checkpoint_tasks.items()
    }


def copy_pipeline_code(checkpoint_dir: str | Path) -> None:
    shutil.copyfile(PIPELINE_CODE, Path(checkpoint_dir) / PIPELINE_CODE.name)


def add_custom_pipelines(checkpoint_dir: str | Path) -> None:
    """Copy the pipelines' code into a checkpoint saved without them (e.g. one converted from the authors' release)
    and list both tasks under `custom_pipelines` in its `config.json`. A model not yet saved gets them from
    `pipelines.publishing.save_publishable_checkpoint`, which writes `config.json` once.

    Raises:
        `FileNotFoundError`: the folder has no `config.json` (save the model first).
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: save the model into {checkpoint_dir} first.")
    copy_pipeline_code(checkpoint_dir)
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["custom_pipelines"] = custom_pipelines_config()
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "HUB_VIDEO_CLASSIFICATION_TASK",
    "CLIP2VideoTextToVideoRetrievalPipeline",
    "CLIP2VideoZeroShotVideoClassificationPipeline",
    "RETRIEVAL_TASK",
    "ZERO_SHOT_TASK",
    "add_custom_pipelines",
    "copy_pipeline_code",
    "custom_pipelines_config",
]
