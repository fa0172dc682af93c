"""What every published CLIP2Video folder carries besides the model and processor: the two pipelines and the
Inference Endpoints handler with its requirements.

    from clip2video.pipelines.publishing import add_pipelines_and_handler

    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    add_pipelines_and_handler(folder)

Library code (not remote code): training and the apps both reach it here. The handler and its `requirements.txt`
are data files of the endpoint app, copied as files (never imported), so this layer does not depend on the apps.
"""

import shutil
from pathlib import Path

from . import add_custom_pipelines

# `<package root>/apps/endpoint` both in the source tree and in the installed wheel (package data).
ENDPOINT_DIR = Path(__file__).resolve().parents[1] / "apps" / "endpoint"
# serve.py: the server of a custom container, which the Inference Endpoints toolkit's image needs for transformers 5.
ENDPOINT_FILES = ("handler.py", "requirements.txt", "serve.py")


def add_pipelines_and_handler(checkpoint_dir: str | Path) -> list[str]:
    """Adds to a saved checkpoint (model and processor already in it) the pipelines, registered in `config.json`
    under `custom_pipelines`, and the Inference Endpoints `handler.py` with its `requirements.txt` and `serve.py`.
    Returns the names of the files written.

    Raises:
        `FileNotFoundError`: the folder has no `config.json`, or the endpoint files are missing from the install.
    """
    checkpoint_dir = Path(checkpoint_dir)
    add_custom_pipelines(checkpoint_dir)
    written = ["pipeline_clip2video.py", "config.json"]
    for name in ENDPOINT_FILES:
        source = ENDPOINT_DIR / name
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: the install lacks the endpoint handler's files")
        shutil.copyfile(source, checkpoint_dir / name)
        written.append(name)
    return written
