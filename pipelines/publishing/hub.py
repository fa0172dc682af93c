"""The Hub repository a published folder is pushed to: created, and write access checked, at the start of a run
(`prepare_hub_repo`: a bad token or a foreign namespace fails before any work), then the folder pushed in one commit
(`push_folder`) without the run's own files.
"""

import json
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import validate_repo_id

PUBLISH_IGNORE_PATTERNS = ["checkpoints/*", "logs/*", "frame_cache/*", "*.npy", "run.json", ".publishing/*",
                           ".published.json"]
# The same rule for a plain `hf upload OUT` (or `upload_folder`) that does not pass PUBLISH_IGNORE_PATTERNS: the
# client sends the folder's .gitignore with its pre-upload request and the Hub skips the files it matches, so the
# optimizer states in checkpoints/ never leave the machine by accident.
HUB_GITIGNORE = "".join(
    f"{pattern[:-1] if pattern.endswith('/*') else pattern}\n" for pattern in PUBLISH_IGNORE_PATTERNS
)


def prepare_hub_repo(repo_id: str, token: str | None = None, private: bool | None = None, revision: str | None = None,
                     create_pr: bool = False, endpoint: str | None = None) -> HfApi:
    """Creates the repository (or finds it), checks the token may write to it, and creates the branch `revision`:
    at the start of a run, so that a bad token or id fails before training. Returns the API client to push with."""
    validate_repo_id(repo_id)
    if "/" not in repo_id:
        raise ValueError(f"--hub_model_id {repo_id!r}: give the namespace too, e.g. your-name/{repo_id}")
    api = HfApi(endpoint=endpoint, token=token)
    api.whoami()  # a missing or invalid token fails here, with the Hub's message
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.auth_check(repo_id, write=True)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api


def push_folder(api: HfApi, repo_id: str, folder: Path, revision: str | None = None, create_pr: bool = False,
                commit_message: str | None = None):
    """Uploads the published folder (not checkpoints, logs or caches) in one commit; returns the commit info."""
    results = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
    if commit_message is None:
        metrics = next(iter(results["runs"].values()))["metrics"]
        commit_message = (
            f"CLIP2Video from training/run.py: text-to-video R@1 {metrics['t2v_R1']:.1f} on "
            f"{results['test_split'].get('dataset_name') or results['test_split']['dataset']}"
        )
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), ignore_patterns=PUBLISH_IGNORE_PATTERNS,
        commit_message=commit_message, commit_description="Model, processor, remote code, card and results.json.",
        revision=revision, create_pr=create_pr,
    )
