"""`pipelines/publishing.py`: the one module that knows what a published folder carries."""

import json

import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.pipelines import custom_pipelines_config
from clip2video.pipelines.publishing import ENDPOINT_FILES, add_pipelines_and_handler, save_publishable_checkpoint
from clip2video.training.recipes import build_processor, small_synthetic_config


def test_one_write_equals_saving_then_adding_and_leaves_the_model_as_it_was(tmp_path):
    config = small_synthetic_config(4, "clip2video")
    torch.manual_seed(0)
    model = CLIP2VideoModel(config)
    processor = build_processor(None, 4, config)

    save_publishable_checkpoint(tmp_path / "once", model, processor)
    assert "custom_pipelines" not in model.config.to_dict()  # the caller's model does not keep the pipelines entry

    model.save_pretrained(tmp_path / "twice")
    processor.save_pretrained(tmp_path / "twice")
    add_pipelines_and_handler(tmp_path / "twice")

    once, twice = sorted(p.name for p in (tmp_path / "once").iterdir()), sorted(p.name for p in (tmp_path / "twice").iterdir())
    assert once == twice
    assert {"model.safetensors", "pipeline_clip2video.py", "modeling_clip2video.py", *ENDPOINT_FILES} <= set(once)
    written = json.loads((tmp_path / "once" / "config.json").read_text())
    assert written == json.loads((tmp_path / "twice" / "config.json").read_text())
    assert written["custom_pipelines"] == custom_pipelines_config()
    assert set(written["custom_pipelines"]) == {
        "text-to-video-retrieval", "zero-shot-video-classification", "video-classification"
    }
    for name in ENDPOINT_FILES:
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "twice" / name).read_bytes()


def test_a_state_dict_replaces_the_models_tensors(tmp_path):
    from safetensors.torch import load_file

    config = small_synthetic_config(4, "clip2video")
    model = CLIP2VideoModel(config)
    state = {name: torch.full_like(tensor, 0.5) for name, tensor in model.state_dict().items()}
    save_publishable_checkpoint(tmp_path / "folder", model, build_processor(None, 4, config), state_dict=state)
    saved = load_file(tmp_path / "folder" / "model.safetensors")
    assert all(torch.all(tensor == 0.5) for tensor in saved.values())
    assert not torch.all(model.text_projection.weight == 0.5)
