"""The publishable output folder (model, processor, remote code, model card, results), the Hub repository it is
pushed to, and the results table.

The folder is written under a temporary name beside `output_dir` and renamed into place when complete, so a run
killed while saving never leaves a half-written model; `results.json` is part of it, so the push that follows
uploads the results the commit message announces. The Hub repository is created, and write access checked, by
`prepare_hub_repo` at the start of the run: a bad token or a foreign namespace fails before training.
"""

import json
import os
import shutil
import tempfile
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
PUBLISH_IGNORE_PATTERNS = ["checkpoints/*", "logs/*", "frame_cache/*", "*.npy", "run.json"]


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


def _stage_and_swap(output_dir: Path, write) -> None:
    """Runs `write(staging)` in a new folder beside `output_dir`, moves in what `output_dir` keeps that is not
    published (checkpoints, logs, caches), and renames the staging folder to `output_dir`."""
    output_dir = output_dir.resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in output_dir.parent.glob(f".{output_dir.name}.publishing-*"):  # of a run killed while saving
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.publishing-", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would be the published folder's mode
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    for entry in output_dir.iterdir():
        if not (staging / entry.name).exists():
            os.replace(entry, staging / entry.name)
    previous = output_dir.with_name(f".{output_dir.name}.previous-{os.getpid()}")
    os.replace(output_dir, previous)
    os.replace(staging, output_dir)
    shutil.rmtree(previous, ignore_errors=True)


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

    _stage_and_swap(output_dir, write)
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
