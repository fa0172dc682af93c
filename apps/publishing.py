"""What every published CLIP2Video folder carries besides the model and processor: the pipelines and the
Inference Endpoints handler.

    from clip2video.apps.publishing import add_pipelines_and_handler

    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    add_pipelines_and_handler(folder)
"""

import shutil
from pathlib import Path

from clip2video.pipelines import add_custom_pipelines


ENDPOINT_DIR = Path(__file__).resolve().parent / "endpoint"


def add_pipelines_and_handler(checkpoint_dir: str | Path) -> list[str]:
    """Adds to a saved checkpoint (model and processor already in it) the two pipelines, registered in
    `config.json` under `custom_pipelines`, and the Inference Endpoints `handler.py` with its `requirements.txt`.
    Returns the names of the files written."""
    checkpoint_dir = Path(checkpoint_dir)
    add_custom_pipelines(checkpoint_dir)
    written = ["pipeline_clip2video.py", "config.json"]
    for name in ("handler.py", "requirements.txt"):
        shutil.copyfile(ENDPOINT_DIR / name, checkpoint_dir / name)
        written.append(name)
    return written
