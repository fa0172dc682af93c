"""The publishable output folder (model, processor, remote code, model card, results), the Hub repository it is
pushed to, and the results table.

The published files are written into a staging folder inside `output_dir` and moved into place one atomic rename
each once all are written (`publish_atomically`): the run's checkpoints and logs never move, and a run killed at
any step leaves either the previous published files or a complete staging folder that the next start finishes
publishing. `results.json` is part of it, so the push that follows uploads the results the commit message
announces. The Hub repository is created, and write access checked, by
`prepare_hub_repo` at the start of the run: a bad token or a foreign namespace fails before training.
"""

import json
import os
import warnings
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from clip2video.pipelines.publishing import save_publishable_checkpoint

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "template.md"
TABLE_METRICS = (
    ("t2v_R1", "T2V R@1"), ("t2v_R5", "R@5"), ("t2v_R10", "R@10"), ("t2v_MedianR", "MdR"), ("t2v_MeanR", "MnR"),
    ("v2t_R1", "V2T R@1"), ("v2t_R5", "R@5"), ("v2t_R10", "R@10"), ("v2t_MedianR", "MdR"), ("v2t_MeanR", "MnR"),
)
MODEL_INDEX_METRIC_TYPES = {
    "R1": "recall@1", "R5": "recall@5", "R10": "recall@10", "MedianR": "median_rank", "MeanR": "mean_rank"
}
RUN_DESCRIPTIONS = {
    "clip2video": "CLIP2Video (TDB + temporal transformer + TAB)",
    "mean_pooling": "mean pooling (no temporal modelling)",
}


def results_table(runs: dict) -> str:
    """A Markdown table, one row per trained model."""
    header = "| model | " + " | ".join(title for _, title in TABLE_METRICS) + " | train s |"
    lines = [header, "|" + "---|" * (len(TABLE_METRICS) + 2)]
    for name, run in runs.items():
        metrics = run["metrics"]
        cells = [f"{metrics[key]:.1f}" for key, _ in TABLE_METRICS]
        seconds = run["timings"].get("training_seconds")
        lines.append(
            f"| {RUN_DESCRIPTIONS.get(name, name)} | " + " | ".join(cells) + f" | {'-' if seconds is None else f'{seconds:.0f}'} |"
        )
    return "\n".join(lines)


def print_results_table(runs: dict, eval_source: dict, timings: dict):
    first = next(iter(runs.values()))["metrics"]
    print(
        f"\nRetrieval on {eval_source['dataset']} {eval_source.get('split', '')}: {first['num_captions']} captions, "
        f"{first['num_videos']} videos (R@K in %, ranks pessimistic on ties)\n"
    )
    print(results_table(runs))
    print("\n" + ", ".join(f"{name.replace('_seconds', '')} {seconds:.0f} s" for name, seconds in timings.items()))


# Datasets that `datasets.load_dataset` resolves locally (packaged builders), which are not Hub ids for a card.
PACKAGED_BUILDERS = {
    "videofolder", "imagefolder", "audiofolder", "parquet", "arrow", "csv", "json", "webdataset", "text", "pandas",
}
PIPELINE_TAG = "video-classification"  # the Hub's task for the zero-shot video classification pipeline
WIDGET_EXAMPLE = {
    "src": "https://huggingface.co/datasets/nielsr/video-demo/resolve/main/eating_spaghetti.mp4",
    "candidate_labels": "eating spaghetti, playing the guitar, riding a bike, cooking",
    "example_title": "Eating spaghetti",
}
PUBLISH_IGNORE_PATTERNS = ["checkpoints/*", "logs/*", "frame_cache/*", "*.npy", "run.json", ".publishing/*",
                           ".published.json"]
# The same rule for a plain `hf upload OUT` (or `upload_folder`) that does not pass PUBLISH_IGNORE_PATTERNS: the
# client sends the folder's .gitignore with its pre-upload request and the Hub skips the files it matches, so the
# optimizer states in checkpoints/ never leave the machine by accident.
HUB_GITIGNORE = "".join(
    f"{pattern[:-1] if pattern.endswith('/*') else pattern}\n" for pattern in PUBLISH_IGNORE_PATTERNS
)


def hub_dataset_ids(results: dict) -> list[str]:
    """The Hub ids of the data the model was trained and evaluated on, where known (`--dataset_name` user/name)."""
    source = results["test_split"]
    name = source.get("dataset_name")
    if name and "/" in name and name not in PACKAGED_BUILDERS and not os.path.exists(name):
        return [name]
    return []


def model_card(results: dict, repo_id: str) -> ModelCard:
    """The card: metadata (pipeline tag, base model, datasets, library, language, license, widget, the results as
    `model-index`) and the rendered template."""
    source = results["test_split"]
    dataset_name = source.get("dataset_name") or source["dataset"]
    split = source.get("split", "test")
    main_run_name, main_run = next(iter(results["runs"].items()))
    metrics = main_run["metrics"]
    eval_results = [
        EvalResult(
            task_type="text-to-video-retrieval" if key.startswith("t2v") else "video-to-text-retrieval",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=MODEL_INDEX_METRIC_TYPES[key.split("_", 1)[1]],
            metric_name=f"{'text-to-video' if key.startswith('t2v') else 'video-to-text'} {title.split()[-1]}",
            metric_value=round(float(metrics[key]), 2),
        )
        for key, title in TABLE_METRICS
    ]
    base_model = results.get("base_model")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license="mit",
        language=["en"],
        base_model=base_model,
        datasets=hub_dataset_ids(results) or None,
        tags=["clip2video", "video-text-retrieval", "text-to-video-retrieval", "zero-shot-video-classification",
              "custom_code"],
        widget=[WIDGET_EXAMPLE],
        model_name=repo_id,
        eval_results=eval_results,
    )
    args = results["args"]
    provenance = (
        "trained from scratch on the embedded synthetic data" if results["model"].startswith("small")
        else f"trained from `{results['model']}`" if not args.get("eval_only") else f"evaluated from `{results['model']}`"
    )
    training = ", ".join(
        f"{name} {args[name]}"
        for name in ("num_train_epochs", "global_batch_size", "learning_rate", "clip_learning_rate_scale",
                     "weight_decay", "warmup_proportion", "num_frames", "max_text_length", "max_grad_norm", "seed")
    )
    dropped = metrics.get("num_dropped_videos", 0)
    dataset_description = f"{dataset_name} {split} ({metrics['num_captions']} captions, {metrics['num_videos']} videos"
    dataset_description += f"; {dropped} videos that could not be decoded left out)" if dropped else ")"
    card = ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=repo_id,
        repo_id=repo_id,
        provenance=provenance,
        dataset_description=dataset_description,
        results_table=results_table(results["runs"]),
        training_description=f"{RUN_DESCRIPTIONS.get(main_run_name, main_run_name)}; {training}.",
    )
    check_card(card)
    return card


def check_card(card: ModelCard):
    """The checks that need no network: the metadata parses back (`ModelCard` reads the YAML and the model-index
    into `EvalResult`s) with the fields the Hub shows. (`ModelCard.validate` asks the Hub itself.)"""
    parsed = ModelCard(str(card))
    data = parsed.data
    missing = [field for field in ("library_name", "pipeline_tag", "license", "language") if not getattr(data, field, None)]
    if missing or not data.eval_results:
        raise ValueError(f"the generated model card lacks {missing or ['model-index results']}")


# The output folder also holds what a run keeps that is not published: these are never moved, replaced or removed
# by a publish, and a publish may not write them.
KEPT_NAMES = ("checkpoints", "logs", "frame_cache", "run.json")
STAGING_NAME = ".publishing"  # inside output_dir: the next publish, written whole before any of it is shown
STAGING_MARKER = ".clip2video-staging"  # the staging folder's first file: this project made the folder
MANIFEST_NAME = "publish.json"  # the staging folder's last file: the publish is complete and may be applied
PUBLISHED_RECORD = ".published.json"  # in output_dir: the files the last publish wrote (the next may replace them)
# What a publish writes (model, configurations, tokenizer, remote code, card, results): the only kinds of files an
# interrupted staging folder may be cleared of.
PUBLISHED_SUFFIXES = {".json", ".safetensors", ".py", ".md", ".txt", ".model", ".jinja"}
PUBLISHED_DOTFILES = {".gitignore"}  # no suffix of their own (Path(".gitignore").suffix is "")


class PublishInterrupted(RuntimeError):
    """A staging folder this project cannot finish or clear without deleting something it did not write."""


def _relative_files(folder: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file() or path.is_symlink()
    )


def _checked_name(name: str) -> str:
    """`name` as a published file may be named: relative, inside the folder, not one of the run's own files."""
    parts = Path(name).parts
    if (
        not parts or Path(name).is_absolute() or ".." in parts or parts[0] in KEPT_NAMES
        or parts[0] in (STAGING_NAME, PUBLISHED_RECORD)
    ):
        raise PublishInterrupted(f"{name!r} cannot be a published file (the run's own files are never replaced)")
    return name


def _write_json_atomically(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def published_files(output_dir: Path) -> list[str]:
    """The files the last publish wrote, as it recorded them (names checked: a hand-edited record names nothing
    outside the published set)."""
    try:
        files = json.loads((output_dir / PUBLISHED_RECORD).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    names = []
    for name in files if isinstance(files, list) else []:
        try:
            names.append(_checked_name(name) if isinstance(name, str) else None)
        except PublishInterrupted:
            continue
    return [name for name in names if name]


def _apply_publish(output_dir: Path, staging: Path) -> None:
    """Moves the staged files into `output_dir`, each with one `os.replace` (atomic), then removes the files of the
    previous publish that this one does not have, records the new set and clears the staging folder. Every step can
    be repeated: a publish killed anywhere in here is finished by running this again."""
    manifest = json.loads((staging / MANIFEST_NAME).read_text(encoding="utf-8"))
    files = [_checked_name(name) for name in manifest["files"]]
    for name in files:
        source, target = staging / name, output_dir / name
        if os.path.lexists(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        elif not target.is_file():
            raise PublishInterrupted(f"{staging}: {name} is neither staged nor published; publish again")
    for name in sorted(set(manifest.get("previous", [])) - set(files)):
        target = output_dir / _checked_name(name)
        if target.is_file() or target.is_symlink():
            target.unlink()
    # The record replaces the manifest in one step: from here on, the staging folder holds nothing to apply.
    os.replace(staging / MANIFEST_NAME, output_dir / PUBLISHED_RECORD)
    _clear_staging(staging)


def _clear_staging(staging: Path) -> None:
    """Removes the staging folder if it holds only what a publish writes, created after its marker (an
    interrupted write); anything else is left where it is and named."""
    marker = staging / STAGING_MARKER
    made = marker.stat().st_ctime_ns
    foreign = []
    for path in sorted(staging.rglob("*"), reverse=True):  # children before their folders
        if path == marker or (path.is_dir() and not path.is_symlink()):
            continue
        info = path.lstat()
        ours = path.is_file() and not path.is_symlink() and (
            path.suffix in PUBLISHED_SUFFIXES or path.name in PUBLISHED_DOTFILES or path.name.endswith(".partial")
        ) and info.st_ctime_ns >= made
        if not ours:
            foreign.append(path)
    if foreign:
        raise PublishInterrupted(
            f"{staging}, an interrupted publish, also holds files it did not write ("
            + ", ".join(str(path.relative_to(staging)) for path in foreign[:5])
            + "): nothing was deleted. Move them out of it and run again."
        )
    for path in sorted(staging.rglob("*"), reverse=True):
        if path != marker:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    marker.unlink()
    staging.rmdir()


def finish_interrupted_publish(output_dir: Path) -> str | None:
    """What a publish killed part-way left in `output_dir`: a complete staging folder is published (its manifest
    was written), an incomplete one cleared of the files it was writing. Returns what was done, or None."""
    staging = Path(output_dir) / STAGING_NAME
    if not os.path.lexists(staging):
        return None
    if staging.is_dir() and not staging.is_symlink() and not any(staging.iterdir()):
        staging.rmdir()  # killed between making it and marking it: it holds nothing
        return None
    if staging.is_symlink() or not staging.is_dir() or not (staging / STAGING_MARKER).is_file():
        raise PublishInterrupted(
            f"{staging} is in the way of publishing and was not made by training/run.py: move it away (nothing was "
            "deleted)"
        )
    if (staging / MANIFEST_NAME).is_file():
        _apply_publish(Path(output_dir), staging)
        return f"finished the publish of {output_dir} that was interrupted"
    _clear_staging(staging)
    return f"cleared the incomplete publish of {output_dir} that was interrupted (the published files are unchanged)"


def publish_atomically(output_dir: Path, write) -> None:
    """Runs `write(staging)` into `output_dir/.publishing`, then makes the files it wrote the published ones.

    Only the published files change: the run's checkpoints, logs, caches and run.json never move. The staging
    folder is complete when its manifest is written (after every file, flushed to disk); from then on each file is
    moved into place with its own atomic rename. Killed before the manifest, the published files are the previous
    ones and the next start clears the staging folder; killed after it, the next start (`finish_interrupted_publish`,
    called when a run claims its folder and before every publish) moves the rest. A staging folder is never deleted
    while it holds a file this project did not write.
    """
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    finish_interrupted_publish(output_dir)
    staging = output_dir / STAGING_NAME
    staging.mkdir()
    (staging / STAGING_MARKER).write_text("a publish of training/run.py in progress\n", encoding="utf-8")
    try:
        write(staging)
        files = [_checked_name(name) for name in _relative_files(staging) if name != STAGING_MARKER]
        for name in files:
            target = output_dir / name
            if target.is_dir() and not target.is_symlink():
                raise PublishInterrupted(f"{target} is a folder; the publish would write a file there")
            with open(staging / name, "rb") as file:
                os.fsync(file.fileno())
    except BaseException:
        try:
            _clear_staging(staging)
        except PublishInterrupted as error:  # left for the user; the write's own error is the one to report
            warnings.warn(str(error), stacklevel=2)
        raise
    _write_json_atomically(staging / MANIFEST_NAME, {"files": files, "previous": published_files(output_dir)})
    _apply_publish(output_dir, staging)


def write_publishable_folder(
    output_dir: Path,
    model,
    processor,
    results: dict,
    push_to_hub: bool = False,
    hub_model_id: str | None = None,
    *,
    state_dict: dict | None = None,
):
    """Writes model.safetensors + config.json + the modeling code, the processor and its code, the pipelines and
    endpoint handler, README.md and results.json, atomically (see the module docstring). `state_dict` (from
    `accelerator.get_state_dict`, e.g. of a sharded model) replaces the model's own tensors. With `push_to_hub`,
    creates `hub_model_id` and pushes the folder; `training/run.py` instead prepares the repository at the start
    (`prepare_hub_repo`) and pushes with `push_folder`."""
    output_dir = Path(output_dir)
    repo_id = hub_model_id or output_dir.name
    card = model_card(results, repo_id)  # checked before anything is written

    def write(folder: Path):
        save_publishable_checkpoint(folder, model, processor, state_dict=state_dict)
        card.save(folder / "README.md")
        (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (folder / ".gitignore").write_text(HUB_GITIGNORE, encoding="utf-8")

    publish_atomically(output_dir, write)
    if push_to_hub:
        api = HfApi()
        api.create_repo(hub_model_id, exist_ok=True)
        push_folder(api, hub_model_id, output_dir)


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
