"""Publishing a CLIP2Video folder: the one owner of what a published folder carries and how it gets there.

    from clip2video.pipelines.publishing import save_publishable_checkpoint

    save_publishable_checkpoint(folder, model, processor)        # model, processor, code, pipelines, endpoint files
    complete_saved_checkpoint(folder, processor, "card.md")        # the same for a folder a model was saved into alone
    write_publishable_folder(output_dir, model, processor, results)  # a training run: + card, results.json, atomically

    python -m clip2video.pipelines.publishing convert --checkpoint pytorch_model.bin.2 --output_dir OUT \\
        --model_card model_cards/clip2video-msrvtt-9k.md             # the authors' release, published in one call

- `folder`: the folder's contents (`save_publishable_checkpoint`, `complete_saved_checkpoint`,
  `write_publishable_folder`, the pipelines' `custom_pipelines` entry);
- `card`: `results.json` (`build_results`), the results table and the model card;
- `staging`: the atomic publish into a folder that also holds a run's own files (`publish_atomically`,
  `finish_interrupted_publish`);
- `hub`: the Hub repository, prepared before a run and pushed to after it.

Package data, found with `importlib.resources` (never by a path into another folder): `endpoint/` (the Inference
Endpoints `handler.py`, `serve.py` and `requirements.txt`, copied into every published folder; never imported here)
and `model_card_template.md`. Library code: training and the apps call it; it imports only the pipelines and the
remote code below it.
"""

from .card import build_results, check_card, model_card, print_results_table, results_table
from .folder import (
    ENDPOINT_FILES,
    complete_saved_checkpoint,
    custom_pipelines_config,
    save_publishable_checkpoint,
    write_publishable_folder,
)
from .hub import HUB_GITIGNORE, PUBLISH_IGNORE_PATTERNS, prepare_hub_repo, push_folder
from .staging import PublishInterrupted, finish_interrupted_publish, publish_atomically, published_files


__all__ = [
    "ENDPOINT_FILES",
    "HUB_GITIGNORE",
    "PUBLISH_IGNORE_PATTERNS",
    "PublishInterrupted",
    "build_results",
    "check_card",
    "complete_saved_checkpoint",
    "custom_pipelines_config",
    "finish_interrupted_publish",
    "model_card",
    "prepare_hub_repo",
    "print_results_table",
    "publish_atomically",
    "published_files",
    "push_folder",
    "results_table",
    "save_publishable_checkpoint",
    "write_publishable_folder",
]
