"""The publishable output folder (model, processor, remote code, model card, results) and the results table."""

from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from clip2video.apps.publishing import add_pipelines_and_handler

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


def _model_card(results: dict, repo_id: str) -> ModelCard:
    source = results["test_split"]
    dataset_name = source["dataset"]
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
    card_data = ModelCardData(
        library_name="transformers",
        license="mit",
        tags=["clip2video", "video-text-retrieval", "custom_code"],
        model_name=repo_id,
        eval_results=eval_results,
    )
    args = results["args"]
    provenance = (
        f"trained from scratch on the embedded synthetic data" if results["model"].startswith("small")
        else f"trained from `{results['model']}`" if not args.get("eval_only") else f"evaluated from `{results['model']}`"
    )
    training = ", ".join(
        f"{name} {args[name]}"
        for name in ("num_train_epochs", "global_batch_size", "learning_rate", "clip_learning_rate_scale",
                     "weight_decay", "warmup_proportion", "num_frames", "max_text_length", "max_grad_norm", "seed")
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=repo_id,
        repo_id=repo_id,
        provenance=provenance,
        dataset_description=f"{dataset_name} {split} ({metrics['num_captions']} captions, {metrics['num_videos']} videos)",
        results_table=results_table(results["runs"]),
        training_description=f"{RUN_DESCRIPTIONS.get(main_run_name, main_run_name)}; {training}.",
    )


def write_publishable_folder(output_dir: Path, model, processor, results: dict, push_to_hub: bool, hub_model_id: str | None):
    """Writes model.safetensors + config.json + the modeling code, the processor and its code, README.md; pushes the
    folder (without checkpoints and logs) to `hub_model_id` when asked."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    add_pipelines_and_handler(output_dir)  # the two pipelines (custom_pipelines) and the Inference Endpoints handler
    repo_id = hub_model_id or output_dir.name
    _model_card(results, repo_id).save(output_dir / "README.md")
    if push_to_hub:
        api = HfApi()
        api.create_repo(hub_model_id, exist_ok=True)
        api.upload_folder(
            repo_id=hub_model_id, folder_path=str(output_dir), ignore_patterns=["checkpoints/*", "logs/*", "*.npy"],
            commit_message="Upload CLIP2Video model, processor and results from training/run.py",
        )
