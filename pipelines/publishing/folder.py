"""What a published CLIP2Video folder carries, in one place: the model (weights, `config.json` listing the
pipelines, modeling code), the processor and its code, the two pipelines' code, and the Inference Endpoints handler
with its `requirements.txt` and the server of a custom container; for a training run also the model card,
`results.json` and a `.gitignore`.

The files copied into a folder are package data, found with `importlib.resources` (so a wheel install publishes the
same folder as the source tree): the pipelines' module of `clip2video.pipelines` and this package's `endpoint/`.
"""

import json
import os
from importlib.resources import files
from pathlib import Path

from .. import PIPELINE_CLASSES
from ..pipeline_clip2video import HUB_VIDEO_CLASSIFICATION_TASK, ZERO_SHOT_TASK
from .card import model_card
from .hub import HUB_GITIGNORE
from .staging import publish_atomically

PIPELINE_CODE = "pipeline_clip2video.py"  # of `clip2video.pipelines`, copied as remote code
# serve.py: the server of a custom container, which the Inference Endpoints toolkit's image needs for transformers 5.
ENDPOINT_FILES = ("handler.py", "requirements.txt", "serve.py")
# What `processor.save_pretrained` writes: a folder without it cannot be loaded by the pipelines or the handler.
PROCESSOR_CONFIG = "processor_config.json"


def custom_pipelines_config() -> dict[str, dict]:
    """The `custom_pipelines` entry of a checkpoint's `config.json` that lists both tasks, in the format
    `Pipeline.save_pretrained` writes (which can only record one pipeline at a time).

    The zero-shot pipeline is listed a second time as `video-classification`: the Hub shows
    `pipeline("video-classification", model=..., trust_remote_code=True)` for a card with that `pipeline_tag`, and a
    checkpoint's `custom_pipelines` take precedence over transformers' own task of that name for this checkpoint only
    (in this process the task is not re-registered, so transformers' `video-classification` stays untouched).
    """
    checkpoint_tasks = {**PIPELINE_CLASSES, HUB_VIDEO_CLASSIFICATION_TASK: PIPELINE_CLASSES[ZERO_SHOT_TASK]}
    module = Path(PIPELINE_CODE).stem
    return {
        task: {"impl": f"{module}.{pipeline_class.__name__}", "pt": ["AutoModel"], "type": "multimodal"}
        for task, pipeline_class in checkpoint_tasks.items()
    }


def _copied_files() -> dict[str, bytes]:
    """The code files a published folder carries besides the model's and the processor's, by name (read before
    anything is written, so that an install missing one fails first)."""
    sources = {PIPELINE_CODE: files("clip2video.pipelines") / PIPELINE_CODE}
    sources.update({name: files(__package__) / "endpoint" / name for name in ENDPOINT_FILES})
    missing = [name for name, source in sources.items() if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing from the install of {__package__}")
    return {name: source.read_bytes() for name, source in sources.items()}


def _write_atomically(path: Path, content: bytes) -> None:
    """Written beside and renamed: a kill mid-write never leaves a half file (a half `config.json` would lose the
    model's configuration). The partial file's name is fixed, so that running again overwrites and renames what a
    kill left."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def save_publishable_checkpoint(folder: str | Path, model, processor, state_dict: dict | None = None) -> None:
    """Writes everything a published folder carries but the card and results, each file once. `config.json` lists
    the pipelines under `custom_pipelines`, set on the model's configuration before saving as
    `Pipeline.save_pretrained` does (and restored after, so the caller's model is left as it was). `state_dict`
    (e.g. gathered from a sharded model) replaces the model's own tensors.

    Raises:
        `FileNotFoundError`: the pipelines' or the endpoint's files are missing from the install.
    """
    folder = Path(folder)
    copied = _copied_files()  # checked before anything is written
    # First: the configuration's save advertises only the pipelines whose code is in the folder.
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PIPELINE_CODE).write_bytes(copied.pop(PIPELINE_CODE))
    had_pipelines = hasattr(model.config, "custom_pipelines")
    previous = getattr(model.config, "custom_pipelines", None)
    model.config.custom_pipelines = custom_pipelines_config()
    try:
        model.save_pretrained(folder, state_dict=state_dict)
    finally:
        if had_pipelines:
            model.config.custom_pipelines = previous
        else:
            del model.config.custom_pipelines
    processor.save_pretrained(folder)
    for name, content in copied.items():
        (folder / name).write_bytes(content)


def complete_saved_checkpoint(
    folder: str | Path, processor=None, model_card_file: str | Path | None = None
) -> list[str]:
    """Completes a folder that a model was saved into alone (the converter's output, `model.save_pretrained`) into
    what `save_publishable_checkpoint` writes: the processor (`processor`, unless the folder already has one), the
    pipelines' code, listed in `config.json` under `custom_pipelines`, and the endpoint files; with
    `model_card_file` (e.g. `model_cards/clip2video-msvd.md`), that card as `README.md`. Each file is written beside
    and renamed, `config.json` last: a kill leaves the folder loadable, and running this again completes it.
    Returns the names of the files written besides the processor's.

    Raises:
        `FileNotFoundError`: the folder has no `config.json` (save the model first), neither a processor nor
            `processor` is given, `model_card_file` does not exist, or the install lacks the files to copy.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: save the model into {folder} first.")
    if processor is None and not (folder / PROCESSOR_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} has no {PROCESSOR_CONFIG}: give the processor to save with the model.")
    card = None if model_card_file is None else Path(model_card_file).read_bytes()
    copied = _copied_files()
    config = json.loads(config_file.read_text(encoding="utf-8"))
    written = []
    if processor is not None:
        processor.save_pretrained(folder)
    for name, content in copied.items():
        _write_atomically(folder / name, content)
        written.append(name)
    if card is not None:
        _write_atomically(folder / "README.md", card)
        written.append("README.md")
    config["custom_pipelines"] = custom_pipelines_config()
    _write_atomically(config_file, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return [*written, "config.json"]


def write_publishable_folder(
    output_dir: Path,
    model,
    processor,
    results: dict,
    hub_model_id: str | None = None,
    *,
    state_dict: dict | None = None,
):
    """Publishes a run into `output_dir`, atomically (see `staging.publish_atomically`): what
    `save_publishable_checkpoint` writes, the model card (for repository `hub_model_id`, else the folder's name),
    `results.json` and a `.gitignore` naming the run's own files. `state_dict` (from `accelerator.get_state_dict`,
    e.g. of a sharded model) replaces the model's own tensors. The push is separate (`hub.push_folder`), to a
    repository prepared at the start of the run (`hub.prepare_hub_repo`)."""
    output_dir = Path(output_dir)
    card = model_card(results, hub_model_id or output_dir.name)  # checked before anything is written

    def write(folder: Path):
        save_publishable_checkpoint(folder, model, processor, state_dict=state_dict)
        card.save(folder / "README.md")
        (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (folder / ".gitignore").write_text(HUB_GITIGNORE, encoding="utf-8")

    publish_atomically(output_dir, write)
