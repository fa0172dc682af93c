"""What a published folder says about the model: `results.json` (`build_results`), the results table, and the model
card (`model_card`: Hub metadata with the results as `model-index`, rendered from the packaged template).
"""

import os
from importlib.resources import files

from huggingface_hub import EvalResult, ModelCard, ModelCardData

MODEL_CARD_TEMPLATE = "model_card_template.md"  # package data of this package
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



def build_results(
    model_name_or_path: str | None,
    runs: dict,
    test_split: dict,
    bad_videos: dict[str, dict[str, str]],
    args: dict,
    run_fingerprint: str,
    timings: dict,
) -> dict:
    """The contents of `results.json`: the model trained or evaluated (`model_name_or_path`, None for a small model
    trained from scratch), each run's metrics and timings, the test split as evaluated, the videos left out per split
    (`{split: {video: reason}}`), the run's arguments (secrets already redacted) and fingerprint, the job's timings.
    `base_model` (for the card) is the start model when it is a Hub id, not a local folder."""
    return {
        "model": model_name_or_path or "small CLIP2Video from scratch",
        "base_model": model_name_or_path if model_name_or_path and not os.path.isdir(model_name_or_path) else None,
        "runs": runs,
        "test_split": test_split,
        "bad_videos": {
            split: [{"video": name, "reason": reason} for name, reason in videos.items()]
            for split, videos in bad_videos.items()
        },
        "args": args,
        "run_fingerprint": run_fingerprint,
        "timings": timings,
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
        template_str=(files(__package__) / MODEL_CARD_TEMPLATE).read_text(encoding="utf-8"),
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
