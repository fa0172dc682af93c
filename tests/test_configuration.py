"""`modeling_clip2video/configuration_clip2video.py`: a configuration out of range is refused with a `ValueError`
naming the field, at construction and when a checkpoint's `config.json` is loaded through `AutoModel` with remote
code, before any tensor is allocated (checked in a fresh process under a memory limit and a timeout)."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from transformers import AutoModel

from clip2video.modeling_clip2video import CLIP2VideoConfig
from tests.helpers.models import tiny_checkpoint_config


# (fields, what the message must say): each field out of its range, of the wrong type, or shapes that do not divide.
HOSTILE = [
    ({"temporal_num_layers": 100_000}, "temporal_num_layers must lie between 1 and 256"),
    ({"temporal_num_layers": 0}, "temporal_num_layers must lie between 1"),
    ({"max_frame_positions": 10**9}, "max_frame_positions must lie between 1 and 16384"),
    ({"alignment_num_centers": 10**9}, "alignment_num_centers must lie between 1 and 1024"),
    ({"alignment_num_centers": -1}, "alignment_num_centers must lie between"),
    ({"num_frames": 0}, "num_frames must lie between"),
    ({"projection_dim": -512}, "projection_dim must lie between"),
    ({"vision_config": {"patch_size": 0}}, "vision_config.patch_size must lie between 1"),
    ({"vision_config": {"patch_size": 10}}, r"vision_config.image_size \(224\) must be a multiple of vision_config.pa"),
    ({"vision_config": {"image_size": 10**6}}, "vision_config.image_size must lie between"),
    ({"vision_config": {"hidden_size": -768}}, "vision_config.hidden_size must lie between 1"),
    ({"vision_config": {"num_attention_heads": 0}}, "vision_config.num_attention_heads must lie between 1"),
    ({"vision_config": {"num_attention_heads": 7}}, r"vision_config.hidden_size \(768\) must be a multiple"),
    ({"vision_config": {"num_hidden_layers": 100_000}}, "vision_config.num_hidden_layers must lie between"),
    ({"vision_config": {"num_channels": 0}}, "vision_config.num_channels must lie between"),
    ({"vision_config": {"patch_size": [16, 16]}}, "vision_config.patch_size must be an integer"),
    ({"vision_config": {"layer_norm_eps": -1.0}}, r"vision_config.layer_norm_eps must be a finite number in \(0, 1\]"),
    ({"text_config": {"hidden_size": -512}}, "text_config.hidden_size must lie between 1"),
    ({"text_config": {"vocab_size": 10**10}}, "text_config.vocab_size must lie between"),
    ({"text_config": {"max_position_embeddings": 0}}, "text_config.max_position_embeddings must lie between"),
    ({"text_config": {"attention_dropout": math.nan}}, "text_config.attention_dropout must be a finite number"),
    ({"text_config": {"num_hidden_layers": 1.5}}, "text_config.num_hidden_layers must be an integer"),
    ({"text_config": {"hidden_size": True}}, "text_config.hidden_size must be an integer"),
    ({"global_similarity_weight": math.nan}, "global_similarity_weight must be a finite number in"),
    ({"temporal_layer_norm_eps": 0.0}, r"temporal_layer_norm_eps must be a finite number in \(0, 1\]"),
    ({"initializer_range": math.inf}, "initializer_range must be a finite number"),
    ({"logit_scale_init_value": 1000.0}, r"logit_scale_init_value must be a finite number in \[-88, 88\]"),
    # Each size within its range, the whole far too large: refused from the parameter count.
    ({"vision_config": {"hidden_size": 16384, "num_attention_heads": 16, "num_hidden_layers": 200,
                        "intermediate_size": 65536}}, "parameters, over the limit of 1e"),
]


@pytest.mark.parametrize("fields, message", HOSTILE)
def test_out_of_range_fields_are_value_errors_naming_them(fields, message):
    started = time.monotonic()
    with pytest.raises(ValueError, match=message):
        CLIP2VideoConfig(**fields)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "fields, field",
    [({"temporal_num_layers": "4"}, "temporal_num_layers"), ({"temporal_num_layers": 4.0}, "temporal_num_layers"),
     ({"use_temporal_alignment_block": "yes"}, "use_temporal_alignment_block"),
     ({"temporal_pooling": "max"}, "temporal_pooling"), ({"vision_config": [1, 2]}, "vision_config")],
)
def test_fields_of_the_wrong_type_are_value_errors_naming_them(fields, field):
    """`@strict`'s type checks run first; their error names the field and is a `ValueError` too."""
    from huggingface_hub.errors import StrictDataclassFieldValidationError

    with pytest.raises(ValueError, match=f"Validation error for field '{field}'") as error:
        CLIP2VideoConfig(**fields)
    assert isinstance(error.value, StrictDataclassFieldValidationError)


def test_every_checkpoint_shape_of_the_project_is_accepted():
    for config in (CLIP2VideoConfig(), tiny_checkpoint_config()):
        config.validate()
        assert CLIP2VideoConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    # The authors' VATEX setting and the largest CLIP tower (ViT-bigG/14) are inside the ranges.
    CLIP2VideoConfig(alignment_num_centers=7)
    CLIP2VideoConfig(
        vision_config={"hidden_size": 1664, "num_attention_heads": 16, "num_hidden_layers": 48, "patch_size": 14,
                       "intermediate_size": 8192},
        text_config={"hidden_size": 1280, "num_attention_heads": 20, "num_hidden_layers": 32,
                     "intermediate_size": 5120},
        projection_dim=1280,
    )


@pytest.mark.parametrize("alignment", [True, False])
def test_retrieval_embedding_dim_is_the_width_of_the_models_pooler_output(alignment):
    import torch

    from clip2video.modeling_clip2video import CLIP2VideoModel
    from tests.helpers.models import text_inputs, tiny_config, video_inputs

    torch.manual_seed(0)
    config = tiny_config(use_temporal_alignment_block=alignment)
    model = CLIP2VideoModel(config).eval()
    with torch.no_grad():
        videos = model.get_video_features(*video_inputs(batch=2)).pooler_output
        texts = model.get_text_features(*text_inputs()).pooler_output
    # What a vector store is built for: the width of both towers' retrieval embeddings, read from the config alone.
    assert videos.shape[1] == texts.shape[1] == config.retrieval_embedding_dim
    assert config.retrieval_embedding_dim == (2 if alignment else 1) * config.projection_dim


def test_a_value_set_after_construction_is_checked_when_the_model_is_built():
    from clip2video.modeling_clip2video import CLIP2VideoModel

    config = tiny_checkpoint_config()
    config.temporal_num_layers = 100_000
    with pytest.raises(ValueError, match="temporal_num_layers must lie between 1 and 256"):
        CLIP2VideoModel(config)


def hostile_checkpoint(folder, tiny_checkpoint, fields: dict):
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in fields.items():
        if isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("fields, message", [HOSTILE[0], HOSTILE[2], HOSTILE[7], HOSTILE[17]])
def test_automodel_with_remote_code_refuses_a_hostile_config_json(tmp_path, tiny_checkpoint, fields, message):
    folder = hostile_checkpoint(tmp_path / "checkpoint", tiny_checkpoint, fields)
    started = time.monotonic()
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_hostile_config_json_fails_fast_in_a_fresh_process_under_a_memory_limit(tmp_path, tiny_checkpoint):
    """What a user loading someone's checkpoint runs: a fresh interpreter, `AutoModel` with remote code, here with
    2 GiB of address space more than the loaded libraries take: each hostile config.json must end in the
    ValueError, not in a build until killed."""
    cases = HOSTILE[:4] + HOSTILE[7:8] + HOSTILE[-1:]
    folders = [str(hostile_checkpoint(tmp_path / f"c{index}", tiny_checkpoint, fields))
               for index, (fields, _) in enumerate(cases)]
    code = textwrap.dedent(
        f"""
        import resource
        import torch
        from transformers import AutoModel
        used = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + 2 * 2**30, resource.RLIM_INFINITY))
        for folder in {folders!r}:
            try:
                AutoModel.from_pretrained(folder, trust_remote_code=True)
                print("LOADED", folder)
            except ValueError as error:
                print("REFUSED", str(error).splitlines()[0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(cases), result.stdout
    for line, (_, message) in zip(lines, cases):
        assert line.startswith("REFUSED") and re.search(message, line), (line, message)
