"""What a published CLIP2Video folder carries, in one place: the model (weights, `config.json` listing the
pipelines, modeling code), the processor and its code, the two pipelines' code, and the Inference Endpoints handler
with its `requirements.txt` and the server of a custom container.

    from clip2video.pipelines.publishing import save_publishable_checkpoint

    save_publishable_checkpoint(folder, model, processor)

A folder saved without them (e.g. converted from the authors' release by remote code, which cannot import this
package) gets them with `add_pipelines_and_handler(folder)`.

Library code (not remote code): training and the apps both reach it here. The handler and its `requirements.txt`
are data files of the endpoint app, copied as files (never imported), so this layer does not depend on the apps.
"""

import shutil
from pathlib import Path

from . import add_custom_pipelines, copy_pipeline_code, custom_pipelines_config

# `<package root>/apps/endpoint` both in the source tree and in the installed wheel (package data).
ENDPOINT_DIR = Path(__file__).resolve().parents[1] / "apps" / "endpoint"
# serve.py: the server of a custom container, which the Inference Endpoints toolkit's image needs for transformers 5.
ENDPOINT_FILES = ("handler.py", "requirements.txt", "serve.py")


def save_publishable_checkpoint(folder: str | Path, model, processor, state_dict: dict | None = None) -> None:
    """Writes everything a published folder carries, each file once. `config.json` lists the pipelines under
    `custom_pipelines`, set on the model's configuration before saving as `Pipeline.save_pretrained` does (and
    restored after, so the caller's model is left as it was). `state_dict` (e.g. gathered from a sharded model)
    replaces the model's own tensors.

    Raises:
        `FileNotFoundError`: the endpoint files are missing from the install.
    """
    folder = Path(folder)
    endpoint_files = _endpoint_files()  # checked before anything is written
    # First: the configuration's save advertises only the pipelines whose code is in the folder.
    folder.mkdir(parents=True, exist_ok=True)
    copy_pipeline_code(folder)
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
    for source in endpoint_files:
        shutil.copyfile(source, folder / source.name)


def add_pipelines_and_handler(checkpoint_dir: str | Path) -> list[str]:
    """Adds to a checkpoint saved without them (model and processor already in it) the pipelines, registered in
    `config.json` under `custom_pipelines`, and the Inference Endpoints `handler.py` with its `requirements.txt` and
    `serve.py`. Returns the names of the files written.

    Raises:
        `FileNotFoundError`: the folder has no `config.json`, or the endpoint files are missing from the install.
    """
    checkpoint_dir = Path(checkpoint_dir)
    endpoint_files = _endpoint_files()
    add_custom_pipelines(checkpoint_dir)
    for source in endpoint_files:
        shutil.copyfile(source, checkpoint_dir / source.name)
    return ["pipeline_clip2video.py", "config.json", *ENDPOINT_FILES]


def _endpoint_files() -> list[Path]:
    sources = [ENDPOINT_DIR / name for name in ENDPOINT_FILES]
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: the install lacks the endpoint handler's files")
    return sources
