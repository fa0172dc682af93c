"""Smoke test of a non-editable install: run with the interpreter of an environment where only the built wheel (and
its dependencies) is installed, from a folder outside the repository.

It checks that no generic top-level name is installed, then publishes a tiny randomly initialised model the way a
training run does (model, processor, remote code, pipelines, endpoint handler and its requirements, model card) and
loads the published folder back through the Auto classes and a pipeline in this process.
"""

import importlib
import json
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch


def main() -> None:
    here = Path.cwd().resolve()
    repository = Path(__file__).resolve().parents[1]
    if here == repository or repository in here.parents:
        sys.exit(f"run this from a folder outside the repository ({repository}), not {here}")

    for generic_name in ("processing", "pipelines", "training", "apps", "modeling_clip2video", "model_cards"):
        try:
            importlib.import_module(generic_name)
        except ModuleNotFoundError:
            continue
        sys.exit(f"the install provides a generic top-level module {generic_name!r}")

    import clip2video.modeling_clip2video as modeling
    from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
    from clip2video.pipelines.publishing import write_publishable_folder

    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    if site_packages not in Path(modeling.__file__).resolve().parents:
        sys.exit(f"clip2video is imported from {modeling.__file__}, not from the installed wheel in {site_packages}")

    layer = dict(hidden_size=32, intermediate_size=64, num_attention_heads=1, num_hidden_layers=1)
    config = CLIP2VideoConfig(
        projection_dim=32,
        text_config=dict(**layer, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(**layer, image_size=32, patch_size=16),
        temporal_num_layers=1,
        num_frames=4,
    )
    torch.manual_seed(0)
    model = CLIP2VideoModel(config).eval()
    processor = CLIP2VideoProcessor(
        video_processor=CLIP2VideoVideoProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, num_frames=4
        ),
        tokenizer=offline_clip_tokenizer(),
    )
    metrics = {
        f"{direction}_{name}": value
        for direction in ("t2v", "v2t")
        for name, value in (("R1", 50.0), ("R5", 100.0), ("R10", 100.0), ("MedianR", 1.5), ("MeanR", 1.5))
    }
    metrics.update(num_captions=2, num_videos=2)
    results = {
        "model": "small (smoke test)",
        "args": dict(eval_only=False, num_train_epochs=1, global_batch_size=2, learning_rate=1e-3,
                     clip_learning_rate_scale=1.0, weight_decay=0.0, warmup_proportion=0.0, num_frames=4,
                     max_text_length=32, max_grad_norm=1.0, seed=0),
        "test_split": {"dataset": "synthetic", "split": "test"},
        "runs": {"clip2video": {"metrics": metrics, "timings": {"training_seconds": 1.0}}},
    }

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder) / "published"
        write_publishable_folder(folder, model, processor, results)
        written = {path.name for path in folder.iterdir()}
        expected = {"config.json", "model.safetensors", "README.md", "handler.py", "requirements.txt", "serve.py",
                    "pipeline_clip2video.py", "modeling_clip2video.py", "configuration_clip2video.py"}
        if not expected <= written:
            sys.exit(f"the published folder lacks {sorted(expected - written)} (it has {sorted(written)})")
        card = (folder / "README.md").read_text(encoding="utf-8")
        if "{{" in card or "model-index" not in card:
            sys.exit("the published model card was not rendered from the packaged template")
        if not (folder / "requirements.txt").read_text(encoding="utf-8").strip():
            sys.exit("the endpoint requirements.txt is empty")
        if "custom_pipelines" not in json.loads((folder / "config.json").read_text(encoding="utf-8")):
            sys.exit("config.json does not list the custom pipelines")

        from transformers import AutoModel, AutoProcessor

        loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        loaded_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        videos = [torch.randint(0, 256, (6, 40, 48, 3), dtype=torch.uint8) for _ in range(2)]
        inputs = loaded_processor(text=["a red circle", "a blue square"], videos=videos, return_tensors="pt")
        with torch.no_grad():
            expected_scores = model(**inputs).logits_per_text
            scores = loaded(**inputs).logits_per_text
        if not torch.allclose(scores, expected_scores, atol=1e-5):
            sys.exit(f"the published model scores differently: {scores} vs {expected_scores}")
    print(f"wheel smoke test passed: published and reloaded {sorted(written)}")


if __name__ == "__main__":
    main()
